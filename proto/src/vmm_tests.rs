use super::*;

#[test]
fn a_config_example_parses_with_defaults_for_what_it_leaves_out() {
    let cfg: VmmConfig = serde_json::from_str(
        r#"{
            "kernel": "/images/vmlinuz",
            "initrd": "/images/initrd.img",
            "memory_mib": 512,
            "vcpus": 2,
            "disks": [
                {"source": {"file": "/i/root.img"}, "serial": "root"},
                {"source": {"aoe": {"iface": "eth1", "shelf": 12, "slot": 3}}, "read_only": true}
            ],
            "nics": [{"tap": {"name": "tap0"}, "mac": "d0:0d:00:00:00:01"}],
            "console": "/i/console.log",
            "api_socket": "/i/api.sock",
            "failure_path": "/i/vmm-failure.json",
            "log_level": "debug"
        }"#,
    )
    .unwrap();
    assert_eq!(cfg.memory_bytes(), 512 << 20);
    assert_eq!(cfg.cmdline, DEFAULT_CMDLINE);
    assert_eq!(cfg.disks[0], Disk::file("/i/root.img", Some("root")));
    assert_eq!(
        cfg.disks[1].source,
        DiskSource::Aoe {
            iface: "eth1".into(),
            shelf: 12,
            slot: 3
        }
    );
    assert!(cfg.disks[1].read_only);
    assert_eq!(cfg.nics[0].mac, Mac([0xd0, 0x0d, 0, 0, 0, 1]));
    assert_eq!(cfg.nics[0].tap, TapSource::Name("tap0".into()));
    assert!(cfg.rng, "rng defaults to on");
    assert_eq!(cfg.on_reboot, OnReboot::Exit);
    assert_eq!(cfg.log_level, LogLevel::Debug);
}

#[test]
fn a_config_with_only_a_kernel_is_the_default_config() {
    let cfg: VmmConfig = serde_json::from_str(r#"{"kernel":"/k"}"#).unwrap();
    assert_eq!(cfg, VmmConfig::new("/k"));
    assert_eq!(cfg.memory_mib, DEFAULT_MEMORY_MIB);
    assert_eq!(cfg.log_level, LogLevel::Info);
}

#[test]
fn a_config_round_trips_through_json() {
    let mut cfg = VmmConfig::new("/k");
    cfg.disks.push(Disk::file("/d.img", None));
    cfg.nics.push(Nic {
        tap: TapSource::Fd(3),
        mac: Mac([2, 0, 0, 0, 0, 1]),
        address: Some(GuestAddress {
            address: "10.1.0.5".parse().unwrap(),
            prefix_len: 24,
            gateway: Some("10.1.0.1".parse().unwrap()),
            dns: vec!["10.1.0.1".parse().unwrap()],
            hostname: Some("i-0123".into()),
        }),
    });
    cfg.on_reboot = OnReboot::Restart;
    cfg.failure_path = Some("/f.json".into());
    cfg.metadata = Some(InstanceMetadata {
        document: crate::MetadataDocument {
            instance_id: "i-0123".into(),
            ..Default::default()
        },
        user_data: Some("aGk=".into()),
        options: crate::MetadataOptions {
            http_tokens: crate::HttpTokens::Required,
            http_endpoint: crate::HttpEndpoint::Disabled,
            http_put_response_hop_limit: 2,
        },
    });
    let text = serde_json::to_string(&cfg).unwrap();
    assert!(text.contains(r#""tap":{"fd":3}"#), "{text}");
    assert!(text.contains(r#""on_reboot":"restart""#), "{text}");
    assert_eq!(serde_json::from_str::<VmmConfig>(&text).unwrap(), cfg);
}

#[test]
fn an_smbios_identity_has_its_uuid_as_text_and_leaves_out_what_is_absent() {
    let cfg: VmmConfig = serde_json::from_str(
        r#"{"kernel":"/k","smbios":{"manufacturer":"Amazon EC2","product":"m1.small",
            "uuid":"ec2a0b1c-2d3e-8f40-9152-637485960a1b",
            "serial":"ec2a0b1c-2d3e-8f40-9152-637485960a1b","asset_tag":"i-0123"}}"#,
    )
    .unwrap();
    let id = cfg.smbios.clone().unwrap();
    assert_eq!(id.uuid.to_string(), "ec2a0b1c-2d3e-8f40-9152-637485960a1b");
    assert_eq!(id.asset_tag.as_deref(), Some("i-0123"));
    assert_eq!(
        serde_json::from_str::<VmmConfig>(&serde_json::to_string(&cfg).unwrap()).unwrap(),
        cfg
    );

    let bare = SystemIdentity {
        serial: None,
        asset_tag: None,
        ..id
    };
    let text = serde_json::to_string(&bare).unwrap();
    assert!(
        !text.contains("serial") && !text.contains("asset_tag"),
        "{text}"
    );
    assert!(
        text.contains(r#""uuid":"ec2a0b1c-2d3e-8f40-9152-637485960a1b""#),
        "{text}"
    );
    assert!(serde_json::from_str::<SystemIdentity>(
        r#"{"manufacturer":"x","product":"y","uuid":"not-a-uuid"}"#
    )
    .is_err());
}

#[test]
fn unknown_config_fields_are_refused() {
    let e = serde_json::from_str::<VmmConfig>(r#"{"kernel":"/k","memory":"1G"}"#).unwrap_err();
    assert!(e.to_string().contains("memory"), "{e}");
}

#[test]
fn exit_codes_map_both_ways() {
    for (code, exit) in [
        (0, Exit::PowerOff),
        (1, Exit::Error),
        (2, Exit::Reboot),
        (3, Exit::ApiShutdown),
    ] {
        assert_eq!(Exit::from_code(code), Some(exit));
        assert_eq!(i32::from(exit.code()), code);
    }
    for unknown in [-1, 4, 137] {
        assert_eq!(Exit::from_code(unknown), None, "{unknown}");
    }
}

#[test]
fn a_failure_round_trips_and_reads_as_a_reason() {
    let f = Failure::error("cannot start the VM: no kvm");
    let text = serde_json::to_string(&f).unwrap();
    assert_eq!(
        text,
        r#"{"exit":"error","message":"cannot start the VM: no kvm"}"#
    );
    assert_eq!(serde_json::from_str::<Failure>(&text).unwrap(), f);
    assert_eq!(f.reason(), "mallee-vmm failed: cannot start the VM: no kvm");
}

#[test]
fn metadata_without_options_gets_ec2s_defaults_and_unknown_options_are_refused() {
    let document = serde_json::to_value(crate::MetadataDocument::default()).unwrap();
    let m: InstanceMetadata =
        serde_json::from_value(serde_json::json!({ "document": document })).unwrap();
    assert_eq!(m.options, crate::MetadataOptions::default());
    let mut v = serde_json::to_value(&m).unwrap();
    v["options"]["http_protocol_ipv6"] = "enabled".into();
    assert!(serde_json::from_value::<InstanceMetadata>(v).is_err());
}

#[test]
fn requests_are_tagged_by_op() {
    assert_eq!(encode_line(&Request::Shutdown), b"{\"op\":\"shutdown\"}\n");
    assert_eq!(
        serde_json::from_str::<Request>(r#"{"op":"status"}"#).unwrap(),
        Request::Status
    );
    assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
}

#[test]
fn every_request_round_trips() {
    let set = Request::SetMetadata {
        metadata: Box::new(InstanceMetadata {
            user_data: Some("aGk=".into()),
            options: crate::MetadataOptions {
                http_put_response_hop_limit: 7,
                ..Default::default()
            },
            ..Default::default()
        }),
    };
    for request in [Request::Status, Request::Shutdown, set] {
        let line = encode_line(&request);
        let back: Request = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, request, "{}", String::from_utf8_lossy(&line));
    }
    let text = String::from_utf8(encode_line(&Request::SetMetadata {
        metadata: Box::default(),
    }))
    .unwrap();
    assert!(
        text.starts_with(r#"{"op":"set_metadata","metadata":{"document":"#),
        "{text}"
    );
    let extra = text.replace(r#""metadata":{"#, r#""metadata":{"colour":1,"#);
    assert!(serde_json::from_str::<Request>(&extra).is_err());
}

#[test]
fn a_reply_round_trips_with_its_state_as_a_name() {
    let reply = Reply {
        ok: true,
        state: Some(VmState::Stopping(Exit::ApiShutdown)),
        vcpus: Some(2),
        memory_mib: Some(256),
        uptime_ms: Some(5),
        nics: vec![NicStatus {
            mac: Mac([2, 0, 0, 0, 0, 1]),
            address_taken: true,
            address: Some(std::net::Ipv4Addr::new(10, 77, 0, 201)),
            dhcp_answered: 2,
            dropped: Dropped {
                mac: 1,
                ..Dropped::default()
            },
        }],
        volume_slots: vec![
            VolumeSlotStatus {
                slot: 0,
                volume_id: Some("vol-0a1b2c3d".into()),
                size_bytes: 1 << 30,
            },
            VolumeSlotStatus {
                slot: 1,
                volume_id: None,
                size_bytes: 0,
            },
        ],
        metadata_options: Some(crate::MetadataOptions {
            http_tokens: crate::HttpTokens::Required,
            ..Default::default()
        }),
        error: None,
    };
    let text = serde_json::to_string(&reply).unwrap();
    assert!(text.contains(r#""state":"api-shutdown""#), "{text}");
    assert!(text.contains(r#""http_tokens":"required""#), "{text}");
    assert_eq!(serde_json::from_str::<Reply>(&text).unwrap(), reply);
    let running: Reply = serde_json::from_str(r#"{"ok":true,"state":"running"}"#).unwrap();
    assert_eq!(running.state, Some(VmState::Running));
    assert!(serde_json::from_str::<Reply>(r#"{"ok":true,"state":"dozing"}"#).is_err());
    let refused = Reply::error("bad request");
    assert_eq!(
        serde_json::to_string(&refused).unwrap(),
        r#"{"ok":false,"error":"bad request"}"#
    );
}

#[test]
fn a_guest_address_knows_its_netmask_and_subnet() {
    let a = GuestAddress {
        address: "10.1.2.5".parse().unwrap(),
        prefix_len: 22,
        gateway: None,
        dns: vec![],
        hostname: None,
    };
    assert_eq!(
        a.netmask(),
        "255.255.252.0".parse::<std::net::Ipv4Addr>().unwrap()
    );
    assert!(a.contains("10.1.3.254".parse().unwrap()));
    assert!(!a.contains("10.1.4.1".parse().unwrap()));
}

#[test]
fn volume_slots_default_to_none_and_are_left_out_when_zero() {
    let cfg: VmmConfig = serde_json::from_str(r#"{"kernel":"/k"}"#).unwrap();
    assert_eq!(cfg.volume_slots, 0);
    let text = serde_json::to_string(&cfg).unwrap();
    assert!(!text.contains("volume_slots"), "{text}");
    let cfg: VmmConfig = serde_json::from_str(r#"{"kernel":"/k","volume_slots":2}"#).unwrap();
    assert_eq!(cfg.volume_slots, 2);
    let text = serde_json::to_string(&cfg).unwrap();
    assert!(text.contains(r#""volume_slots":2"#), "{text}");
    assert_eq!(serde_json::from_str::<VmmConfig>(&text).unwrap(), cfg);
}

#[test]
fn attach_and_detach_requests_have_their_documented_shapes() {
    let attach = Request::AttachVolume {
        slot: 1,
        volume_id: "vol-0a1b2c3d".into(),
        source: DiskSource::Aoe {
            iface: "eth1".into(),
            shelf: 7,
            slot: 2,
        },
        read_only: false,
    };
    assert_eq!(
        String::from_utf8(encode_line(&attach)).unwrap(),
        concat!(
            r#"{"op":"attach_volume","slot":1,"volume_id":"vol-0a1b2c3d","#,
            r#""source":{"aoe":{"iface":"eth1","shelf":7,"slot":2}},"read_only":false}"#,
            "\n"
        )
    );
    let detach = Request::DetachVolume { slot: 1 };
    assert_eq!(
        encode_line(&detach),
        b"{\"op\":\"detach_volume\",\"slot\":1}\n"
    );
    let file = Request::AttachVolume {
        slot: 0,
        volume_id: "vol-1".into(),
        source: DiskSource::File("/v/vol-1.img".into()),
        read_only: true,
    };
    for request in [attach, detach, file] {
        let line = encode_line(&request);
        let back: Request = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, request, "{}", String::from_utf8_lossy(&line));
    }
    let short: Request = serde_json::from_str(
        r#"{"op":"attach_volume","slot":0,"volume_id":"v","source":{"file":"/f"}}"#,
    )
    .unwrap();
    assert!(
        matches!(
            short,
            Request::AttachVolume {
                read_only: false,
                ..
            }
        ),
        "read_only defaults to false"
    );
    assert!(serde_json::from_str::<Request>(r#"{"op":"detach_volume"}"#).is_err());
    assert!(serde_json::from_str::<Request>(r#"{"op":"detach_volume","slot":256}"#).is_err());
}

#[test]
fn an_empty_slot_in_a_reply_has_no_volume_id() {
    let empty = VolumeSlotStatus {
        slot: 3,
        volume_id: None,
        size_bytes: 0,
    };
    let text = serde_json::to_string(&empty).unwrap();
    assert_eq!(text, r#"{"slot":3,"size_bytes":0}"#);
    assert_eq!(
        serde_json::from_str::<VolumeSlotStatus>(&text).unwrap(),
        empty
    );
    let reply: Reply = serde_json::from_str(
        r#"{"ok":true,"volume_slots":[{"slot":0,"volume_id":"vol-9","size_bytes":512}]}"#,
    )
    .unwrap();
    assert_eq!(reply.volume_slots[0].volume_id.as_deref(), Some("vol-9"));
    assert_eq!(reply.volume_slots[0].size_bytes, 512);
}
