use super::*;
use mallee_proto::Mac;

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

/// Both steps `main` takes: parse the command line, then check the result.
fn load(s: &str) -> Result<VmmConfig, ConfigError> {
    let cfg = from_args(args(s))?;
    check(&cfg)?;
    Ok(cfg)
}

#[test]
fn cli_and_json_give_the_same_config() {
    let cli = load(
        "--kernel /k --initrd /i --cmdline console=ttyS0 --mem 256M --vcpus 2 \
         --disk /d.img,ro --disk /e.img,serial=vol-1 --net tap=tap0,mac=52:54:00:12:34:56 \
         --serial /s.log --log-level debug",
    )
    .unwrap();
    let json = from_json(
        r#"{"kernel":"/k","initrd":"/i","cmdline":"console=ttyS0","memory_mib":256,"vcpus":2,
            "disks":[{"source":{"file":"/d.img"},"read_only":true},
                     {"source":{"file":"/e.img"},"serial":"vol-1"}],
            "nics":[{"tap":{"name":"tap0"},"mac":"52:54:00:12:34:56"}],
            "console":"/s.log","log_level":"debug"}"#,
    )
    .unwrap();
    assert_eq!(cli, json);
    assert_eq!(cli.memory_bytes(), 256 << 20);
    assert!(cli.disks[0].read_only);
    assert_eq!(cli.disks[1].serial.as_deref(), Some("vol-1"));
    assert_eq!(cli.nics[0].mac, Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
}

#[test]
fn a_config_file_is_the_start_and_later_flags_change_it() {
    let path = std::env::temp_dir().join(format!("mallee-vmm-cfg-{}.json", std::process::id()));
    let mut cfg = VmmConfig::new("/k");
    cfg.vcpus = 2;
    std::fs::write(&path, serde_json::to_string(&cfg).unwrap()).unwrap();
    let read = load(&format!("--config {} --log-level trace", path.display())).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(read.vcpus, 2);
    assert_eq!(read.log_level, LogLevel::Trace);
}

#[test]
fn a_bad_mem_names_the_field_in_one_line() {
    let e = load("--kernel /k --mem lots").unwrap_err();
    assert_eq!(e.field, "mem");
    assert!(!e.to_string().contains('\n'));
}

#[test]
fn bad_flags_name_the_flag_and_bad_values_the_field() {
    for (a, field) in [
        ("--mem 256M", "kernel"),
        ("--kernel /k --mem 1000K", "mem"),
        ("--kernel /k --mem 8M", "memory_mib"),
        ("--kernel /k --mem 2048G", "memory_mib"),
        ("--kernel /k --vcpus 0", "vcpus"),
        ("--kernel /k --vcpus 65", "vcpus"),
        ("--kernel /k --disk ,ro", "disk"),
        ("--kernel /k --disk /d,rox", "disk"),
        (
            "--kernel /k --disk /d,serial=123456789012345678901",
            "disks",
        ),
        ("--kernel /k --net tap=t0", "net"),
        ("--kernel /k --net tap=t0,mac=zz", "net"),
        ("--kernel /k --net tap=t0,mac=01:00:00:00:00:00", "nics"),
        ("--kernel /k --net tap=,mac=52:54:00:00:00:01", "nics"),
        ("--kernel /k --net fd=-1,mac=52:54:00:00:00:01", "nics"),
        ("--kernel /k --net mac=52:54:00:00:00:01", "net"),
        ("--kernel /k --bogus 1", "bogus"),
        ("--kernel", "kernel"),
        ("--kernel /k --on-reboot sometimes", "on_reboot"),
        ("--kernel /k --log-level chatty", "log_level"),
    ] {
        let e = load(a).unwrap_err();
        assert_eq!(e.field, field, "{a}: {e}");
    }
}

#[test]
fn aoe_addresses_parse_and_broadcast_or_bad_ones_are_refused() {
    let c = load("--kernel /k --disk aoe:eth1:12.3,ro").unwrap();
    assert_eq!(
        c.disks[0].source,
        DiskSource::Aoe {
            iface: "eth1".into(),
            shelf: 12,
            slot: 3
        }
    );
    for (bad, field) in [
        ("aoe:eth1", "disk"),
        ("aoe:eth1:1", "disk"),
        ("aoe:eth1:x.1", "disk"),
        ("aoe::1.2", "disks"),
        ("aoe:eth1:65535.1", "disks"),
        ("aoe:eth1:1.255", "disks"),
    ] {
        let e = load(&format!("--kernel /k --disk {bad}")).unwrap_err();
        assert_eq!(e.field, field, "{bad}: {e}");
    }
}

#[test]
fn too_many_devices_are_refused() {
    let disks = " --disk /d".repeat(MAX_DEVICES + 1);
    assert_eq!(
        load(&format!("--kernel /k{disks}")).unwrap_err().field,
        "disks"
    );
}

#[test]
fn volume_slots_are_counted_against_the_device_limit_and_capped() {
    assert_eq!(load("--kernel /k").unwrap().volume_slots, 0);
    let c = load(&format!("--kernel /k --volume-slots {MAX_VOLUME_SLOTS}")).unwrap();
    assert_eq!(c.volume_slots, MAX_VOLUME_SLOTS);
    assert_eq!(
        from_json(r#"{"kernel":"/k","volume_slots":2}"#)
            .unwrap()
            .volume_slots,
        2
    );
    let over = MAX_VOLUME_SLOTS + 1;
    for bad in [format!("{over}"), "300".into(), "x".into()] {
        let e = load(&format!("--kernel /k --volume-slots {bad}")).unwrap_err();
        assert_eq!(e.field, "volume_slots", "{bad}: {e}");
    }
    let disks = " --disk /d".repeat(MAX_DEVICES - usize::from(MAX_VOLUME_SLOTS) + 1);
    let e = load(&format!(
        "--kernel /k{disks} --volume-slots {MAX_VOLUME_SLOTS}"
    ))
    .unwrap_err();
    assert_eq!(e.field, "volume_slots", "{e}");
}

#[test]
fn on_reboot_defaults_to_exit_and_takes_restart() {
    let c = load("--kernel /k").unwrap();
    assert_eq!(c.on_reboot, OnReboot::Exit);
    assert_eq!(c.memory_mib, DEFAULT_MEMORY_MIB);
    let c = load("--kernel /k --on-reboot restart").unwrap();
    assert_eq!(c.on_reboot, OnReboot::Restart);
    let c = from_json(r#"{"kernel":"/k","on_reboot":"restart"}"#).unwrap();
    assert_eq!(c.on_reboot, OnReboot::Restart);
}

#[test]
fn json_errors_name_the_field() {
    for (json, field) in [
        (r#"{"kernel":"/k","memory":"1G"}"#, "memory"),
        (r#"{"kernel":"/k","vcpus":[1]}"#, "vcpus"),
        (r#"{"kernel":"/k","vcpus":300}"#, "vcpus"),
        (r#"{"vcpus":1}"#, "kernel"),
        (
            r#"{"kernel":"/k","disks":[{"source":{"tape":"/t"}}]}"#,
            "disks",
        ),
        (
            r#"{"kernel":"/k","nics":[{"tap":{"fd":3},"mac":"zz"}]}"#,
            "nics",
        ),
        ("[1]", "config"),
    ] {
        let e = from_json(json).unwrap_err();
        assert_eq!(e.field, field, "{json}: {e}");
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}

#[test]
fn the_readme_example_is_a_config_this_vmm_accepts() {
    let readme = include_str!("../../README.md");
    let example = (readme.split("```json\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("README has a ```json example");
    let cfg = from_json(example).unwrap();
    check(&cfg).unwrap();
    assert_eq!(cfg.disks.len(), 2);
    assert_eq!(cfg.nics.len(), 1);
}

#[test]
fn a_nic_takes_the_guests_address_and_bad_ones_are_refused() {
    let cfg = load(
        "--kernel /k --net tap=t0,mac=52:54:00:00:00:01,ip=10.7.0.5/24,gw=10.7.0.1,dns=10.7.0.1,dns=9.9.9.9,hostname=i-0abc",
    )
    .unwrap();
    let a = cfg.nics[0].address.as_ref().unwrap();
    assert_eq!(a.address, std::net::Ipv4Addr::new(10, 7, 0, 5));
    assert_eq!((a.prefix_len, a.dns.len()), (24, 2));
    assert_eq!(a.hostname.as_deref(), Some("i-0abc"));
    for (bad, says) in [
        ("ip=10.7.0.5", "/prefix"),
        ("ip=10.7.0.5/31", "/31"),
        ("ip=10.7.0.0/24", "network or broadcast"),
        ("ip=10.7.0.255/24", "network or broadcast"),
        ("ip=10.7.0.5/24,gw=10.8.0.1", "gateway"),
        ("ip=10.7.0.5/24,gw=10.7.0.5", "gateway"),
        ("ip=10.7.0.5/24,hostname=a.b", "host name"),
        ("ip=10.7.0.5/24,dns=ten", "IPv4 address"),
        ("gw=10.7.0.1", "need ip="),
    ] {
        let e = load(&format!(
            "--kernel /k --net tap=t0,mac=52:54:00:00:00:01,{bad}"
        ))
        .unwrap_err();
        assert!(e.reason.contains(says), "{bad}: {e}");
    }
}

#[test]
fn an_smbios_identity_from_the_flag_is_the_one_from_json() {
    let uuid = "ec2a0b1c-2d3e-8f40-9152-637485960a1b";
    let mut flags = args("--kernel /k --smbios");
    flags.push(format!(
        "manufacturer=Amazon EC2,product=m1.small,uuid={uuid},serial={uuid},asset-tag=i-1"
    ));
    let cli = from_args(flags).unwrap();
    check(&cli).unwrap();
    let json = from_json(&format!(
        r#"{{"kernel":"/k","smbios":{{"manufacturer":"Amazon EC2","product":"m1.small",
            "uuid":"{uuid}","serial":"{uuid}","asset_tag":"i-1"}}}}"#
    ))
    .unwrap();
    assert_eq!(cli, json);
}

#[test]
fn a_bad_smbios_identity_names_the_field() {
    for flag in [
        "manufacturer=A,product=p",
        "manufacturer=A,product=p,uuid=ec2-not-a-uuid",
        "manufacturer=A,product=p,uuid=ec2a0b1c-2d3e-8f40-9152-637485960a1b,colour=red",
        "manufacturer=,product=p,uuid=ec2a0b1c-2d3e-8f40-9152-637485960a1b",
    ] {
        let e = load(&format!("--kernel /k --smbios {flag}")).unwrap_err();
        assert_eq!(e.field, "smbios", "{flag}: {e}");
    }
    let long = "x".repeat(65);
    let e = from_json(&format!(
        r#"{{"kernel":"/k","smbios":{{"manufacturer":"A","product":"{long}",
            "uuid":"ec2a0b1c-2d3e-8f40-9152-637485960a1b"}}}}"#
    ))
    .and_then(|c| check(&c))
    .unwrap_err();
    assert_eq!(e.field, "smbios");
    assert!(e.reason.contains("product"), "{e}");
}
