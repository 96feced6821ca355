use super::*;
use mallee_proto::vmm::DiskSource;

#[test]
fn a_failure_report_is_the_reason() {
    let f = Failure::error("cannot start the VM: no kvm");
    assert_eq!(
        exit_reason(1, Some(&f), Some("ignored")),
        "mallee-vmm failed: cannot start the VM: no kvm"
    );
}

#[test]
fn without_a_report_the_exit_status_is_the_reason() {
    assert_eq!(exit_reason(0, None, None), "the guest powered off");
    assert_eq!(
        exit_reason(3, None, None),
        "mallee-vmm stopped through its API"
    );
    assert!(exit_reason(1, None, None).starts_with("mallee-vmm failed without a failure report"));
    assert!(exit_reason(137, None, None).contains("signal 9"));
    assert!(exit_reason(7, None, None).contains("status 7"));
}

#[test]
fn a_failure_without_a_report_quotes_the_end_of_the_vmm_log() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join(VMM_LOG);
    let mut text = "x".repeat(8000);
    text.push_str("\nqemu-peer: reading /cfg: No such file or directory\n\n");
    std::fs::write(&log, text).unwrap();
    let end = log_end(&log);
    assert_eq!(
        end.as_deref(),
        Some("qemu-peer: reading /cfg: No such file or directory")
    );
    assert_eq!(
        exit_reason(1, None, end.as_deref()),
        "mallee-vmm failed without a failure report; its log ends: \
         qemu-peer: reading /cfg: No such file or directory"
    );
    std::fs::write(&log, "y".repeat(1000)).unwrap();
    assert_eq!(log_end(&log).map(|l| l.len()), Some(300));
    assert_eq!(log_end(&tmp.path().join("absent")), None);
}

#[test]
fn a_failure_file_is_read_and_a_garbled_one_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(FAILURE);
    assert_eq!(read_failure(&path), None);
    let f = Failure::error("the VM failed: KVM internal error");
    std::fs::write(&path, mallee_proto::encode(&f)).unwrap();
    assert_eq!(read_failure(&path), Some(f));
    std::fs::write(&path, b"{\"exit\":").unwrap();
    assert_eq!(read_failure(&path), None);
}

fn spec(ephemeral_gib: u64) -> InstanceSpec {
    serde_json::from_value(serde_json::json!({
        "instance_id": "i-1", "goal": "running", "reboot_count": 0,
        "instance_type": "m1.small", "vcpus": 2, "memory_mib": 256,
        "image": {"image_id": "emi-1", "bucket": "b", "key": "k", "size": 1, "sha256": "00"},
        "kernel": null, "ramdisk": null, "user_data": null, "mac": "d0:0d:00:00:00:01",
        "metadata": mallee_proto::MetadataDocument::default(),
        "ephemeral_gib": ephemeral_gib,
    }))
    .unwrap()
}

/// The cache's files as the tests' launches have them: kernel `/k`, root image `/c/root`.
fn images(initrd: Option<&Path>) -> LaunchImages<'_> {
    LaunchImages {
        kernel: Path::new("/k"),
        initrd,
        root: Some(Path::new("/c/root")),
    }
}

#[test]
fn an_instance_store_root_without_its_image_is_a_launch_error() {
    let none = LaunchImages {
        root: None,
        ..images(None)
    };
    let e = vmm_config(&spec(0), Path::new("/i"), &none, None).unwrap_err();
    assert!(matches!(e, LaunchError::NoRootImage(_)), "{e}");
}

#[test]
fn the_vmm_config_names_the_instance_files() {
    let c = vmm_config(&spec(0), Path::new("/i"), &images(None), None).unwrap();
    assert_eq!(c.kernel, Path::new("/k"));
    assert_eq!((c.memory_mib, c.vcpus), (256, 2));
    assert_eq!(
        c.disks,
        [Disk {
            source: DiskSource::Overlay {
                base: "/c/root".into(),
                top: "/i/root.img".into()
            },
            serial: Some("root".into()),
            read_only: false,
        }],
        "no ephemeral disk asked for"
    );
    assert_eq!(c.console.as_deref(), Some(Path::new("/i/console.log")));
    assert_eq!(c.api_socket.as_deref(), Some(Path::new("/i/api.sock")));
    assert_eq!(
        c.failure_path.as_deref(),
        Some(Path::new("/i/vmm-failure.json"))
    );
    assert_eq!(c.initrd, None);
}

#[test]
fn an_ephemeral_disk_is_the_second_disk() {
    let c = vmm_config(&spec(5), Path::new("/i"), &images(None), None).unwrap();
    assert_eq!(c.disks.len(), 2);
    assert!(
        matches!(&c.disks[0].source, DiskSource::Overlay { top, .. } if top == Path::new("/i/root.img"))
    );
    assert_eq!(
        c.disks[1],
        Disk::file("/i/ephemeral0.img", Some("ephemeral0"))
    );
}

#[test]
fn an_ebs_backed_instance_boots_from_its_root_volume_over_aoe() {
    let mut ebs = spec(0);
    ebs.root_volume = Some(mallee_proto::VolumeAttachment {
        volume_id: "vol-0000abcd".into(),
        device: "/dev/vda".into(),
        shelf: 100,
        slot: 4,
    });
    let c = vmm_config(&ebs, Path::new("/i"), &images(None), Some("eth0")).unwrap();
    let aoe = DiskSource::Aoe {
        iface: "eth0".into(),
        shelf: 100,
        slot: 4,
    };
    assert_eq!(
        (&c.disks[0].source, c.disks[0].serial.as_deref()),
        (&aoe, Some("vol-0000abcd"))
    );
    let e = vmm_config(&ebs, Path::new("/i"), &images(None), None).unwrap_err();
    assert!(matches!(e, LaunchError::NoPrivateNic), "{e}");
}

#[test]
fn the_vmm_config_file_reads_back_as_the_same_config() {
    let c = vmm_config(
        &spec(5),
        Path::new("/i"),
        &images(Some(Path::new("/r"))),
        None,
    )
    .unwrap();
    let read: VmmConfig = mallee_proto::decode(&mallee_proto::encode(&c)).unwrap();
    assert_eq!(read, c);
}

#[test]
fn the_smbios_identity_is_ec2s_and_derived_from_the_instance_id() {
    let c = vmm_config(&spec(0), Path::new("/i"), &images(None), None).unwrap();
    let id = c.smbios.unwrap();
    assert_eq!(id.manufacturer, "Amazon EC2");
    assert_eq!(id.product, "m1.small");
    assert_eq!(id.asset_tag.as_deref(), Some("i-1"));
    let text = id.uuid.to_string();
    assert!(text.starts_with("ec2"), "{text}");
    // ds-identify: product_uuid and product_serial start with ec2 and are equal, ignoring case.
    assert_eq!(id.serial.as_deref(), Some(text.as_str()));
    assert_eq!(id.uuid.get_version_num(), 8);
    assert_eq!(id.uuid.get_variant(), uuid::Variant::RFC4122);
    // Fixed for an instance id, different for another.
    assert_eq!(smbios_identity(&spec(0)), smbios_identity(&spec(5)));
    let mut other = spec(0);
    other.instance_id = "i-2".into();
    assert_ne!(smbios_identity(&other).uuid, id.uuid);
    // The derivation, pinned: SHA-256("i-1") begins f105b11d-f43d-5d32-1f5c-773ef904af97.
    assert_eq!(text, "ec25b11d-f43d-8d32-9f5c-773ef904af97");
}

#[test]
fn the_guest_boots_the_root_its_spec_names_and_the_first_disk_without_one() {
    let with = |root: &str| InstanceSpec {
        root_device: Some(root.parse().unwrap()),
        ..spec(0)
    };
    let cmdline = |s: &InstanceSpec, initrd: Option<&Path>| {
        let c = vmm_config(s, Path::new("/i"), &images(initrd), None).unwrap();
        c.cmdline
    };
    let partuuid = with("PARTUUID=01234567-89ab-cdef-0123-456789abcdef");
    assert_eq!(
        cmdline(&partuuid, None),
        "console=ttyS0 root=PARTUUID=01234567-89ab-cdef-0123-456789abcdef"
    );
    let mbr = with("PARTUUID=0badcafe-02");
    assert_eq!(
        cmdline(&mbr, None),
        "console=ttyS0 root=PARTUUID=0badcafe-02"
    );
    assert_eq!(cmdline(&spec(0), None), "console=ttyS0 root=/dev/vda");
    assert_eq!(
        cmdline(&spec(0), Some(Path::new("/r"))),
        "console=ttyS0 root=/dev/vda"
    );
}

#[test]
fn a_file_system_uuid_is_the_root_only_with_an_initramfs_to_resolve_it() {
    let s = InstanceSpec {
        root_device: Some("UUID=5f1a2b3c-4d5e-4f60-8172-839405a6b7c8".parse().unwrap()),
        ..spec(0)
    };
    let with_initrd = vmm_config(&s, Path::new("/i"), &images(Some(Path::new("/r"))), None);
    assert_eq!(
        with_initrd.unwrap().cmdline,
        "console=ttyS0 root=UUID=5f1a2b3c-4d5e-4f60-8172-839405a6b7c8"
    );
    let bare = vmm_config(&s, Path::new("/i"), &images(None), None).unwrap();
    assert_eq!(bare.cmdline, "console=ttyS0 root=/dev/vda");
}

#[test]
fn more_vcpus_than_the_vmm_counts_is_a_launch_error() {
    let mut big = spec(0);
    big.vcpus = 1000;
    let e = vmm_config(&big, Path::new("/i"), &images(None), None).unwrap_err();
    assert!(matches!(e, LaunchError::TooManyVcpus(1000)), "{e}");
}

/// A control socket that answers each line with `reply`, recording what it read.
fn fake_vmm_socket(path: &Path, reply: Reply) -> std::thread::JoinHandle<String> {
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        (&s).write_all(&encode_line(&reply)).unwrap();
        line
    })
}

#[test]
fn a_stop_sends_a_typed_shutdown_and_reads_the_reply() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join(API_SOCKET);
    let done = Reply {
        ok: true,
        state: Some(mallee_proto::vmm::VmState::Stopping(Exit::ApiShutdown)),
        vcpus: Some(1),
        memory_mib: Some(256),
        uptime_ms: Some(10),
        error: None,
        nics: Vec::new(),
        volume_slots: Vec::new(),
        metadata_options: None,
    };
    let vmm = fake_vmm_socket(&sock, done);
    api_shutdown(&sock).unwrap();
    let sent: Request = mallee_proto::decode(vmm.join().unwrap().as_bytes()).unwrap();
    assert_eq!(sent, Request::Shutdown);

    std::fs::remove_file(&sock).unwrap();
    let vmm = fake_vmm_socket(&sock, Reply::error("bad request"));
    let e = api_shutdown(&sock).unwrap_err();
    assert!(
        matches!(e, ControlError::Refused(ref why) if why == "bad request"),
        "{e}"
    );
    vmm.join().unwrap();
}

/// Serves fixed objects by key.
struct Objects(Vec<(&'static str, Vec<u8>)>);

impl Fetch for Objects {
    fn fetch(
        &self,
        image: &mallee_proto::ImageRef,
        offset: u64,
        out: &mut dyn Write,
    ) -> Result<u64, String> {
        let (_, data) = (self.0.iter().find(|(k, _)| *k == image.key)).ok_or("no such object")?;
        out.write_all(&data[offset as usize..])
            .map_err(|e| e.to_string())?;
        Ok(data.len() as u64 - offset)
    }
}

fn image_ref(key: &str, data: &[u8]) -> mallee_proto::ImageRef {
    use sha2::Digest;
    mallee_proto::ImageRef {
        image_id: format!("e-{key}"),
        bucket: "b".into(),
        key: key.into(),
        size: data.len() as u64,
        sha256: format!("{:x}", sha2::Sha256::digest(data)),
    }
}

#[test]
fn a_launch_whose_disks_do_not_fit_fails_with_a_reason_and_leaves_no_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (kernel, root) = (vec![7u8; 4096], vec![1u8; 8192]);
    let cache = Cache::open(
        &tmp.path().join("images"),
        1 << 20,
        mallee_proto::Storage::Ram,
    );
    let instances = Instances::new(Env {
        root: tmp.path().join("instances"),
        disks_share_cache: false,
        vmm: PathBuf::from("/nonexistent/mallee-vmm"),
        log_level: mallee_proto::LogLevel::Debug,
        cache: cache.unwrap(),
        fetch: Arc::new(Objects(vec![("k", kernel.clone()), ("r", root.clone())])),
        stop_deadline: Duration::from_secs(1),
        network: None,
    });
    // A 1 PiB ephemeral disk: its file system metadata alone needs terabytes.
    let mut big = spec(1 << 20);
    big.kernel = Some(image_ref("k", &kernel));
    big.image = image_ref("r", &root);
    instances.apply(Action::Launch(Box::new(big)));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = 0;
    let report = loop {
        let r = instances.report();
        if r[0].state == Observed::Failed {
            break r[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "launch neither failed nor ran: {r:?}"
        );
        seen = instances.wait_change(seen, Duration::from_millis(200));
    };
    let why = report.reason.unwrap_or_default();
    assert!(
        why.contains("not enough room for the instance disks"),
        "{why}"
    );
    assert!(
        !tmp.path().join("instances/i-1").exists(),
        "half-made directory left"
    );
}

/// Instances under a temporary root, nothing fetched or run.
fn instances_in(root: &Path) -> Instances {
    Instances::new(Env {
        root: root.join("instances"),
        disks_share_cache: false,
        vmm: PathBuf::from("/nonexistent/mallee-vmm"),
        log_level: mallee_proto::LogLevel::Debug,
        cache: Cache::open(&root.join("images"), 1 << 20, mallee_proto::Storage::Ram).unwrap(),
        fetch: Arc::new(Objects(vec![])),
        stop_deadline: Duration::from_secs(1),
        network: None,
    })
}

/// `i-1` running under a VMM (pid 1, never signalled here) that serves `serving`, with its
/// `vmm.json` in place; returns the instance directory.
fn running_instance(instances: &Instances, serving: &InstanceMetadata) -> PathBuf {
    let dir = instances.env.root.join("i-1");
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg = vmm_config(&spec(0), &dir, &images(None), None).unwrap();
    cfg.metadata = Some(serving.clone());
    std::fs::write(dir.join(VMM_CONFIG), mallee_proto::encode(&cfg)).unwrap();
    let record = Record {
        root_volume: None,
        local: Local {
            state: Observed::Running,
            stopping: false,
            reboot_count: 0,
            serving: Some(serving.clone()),
            volumes: Default::default(),
        },
        target: Observed::Terminated,
        reason: None,
        pid: Some(1),
        rebooting: false,
        dir: dir.clone(),
        networked: false,
        address_taken: false,
        address: None,
        started: Some(Instant::now()),
    };
    instances.lock().insert("i-1".into(), record);
    dir
}

fn ok_reply(options: Option<mallee_proto::MetadataOptions>) -> Reply {
    Reply {
        ok: true,
        state: Some(mallee_proto::vmm::VmState::Running),
        vcpus: Some(1),
        memory_mib: Some(256),
        uptime_ms: Some(10),
        nics: Vec::new(),
        volume_slots: Vec::new(),
        metadata_options: options,
        error: None,
    }
}

#[test]
fn new_metadata_goes_to_the_running_vmm_and_into_its_config_and_the_report_names_its_options() {
    use mallee_proto::{HttpEndpoint, MetadataOptions};
    let tmp = tempfile::tempdir().unwrap();
    let instances = instances_in(tmp.path());
    let old = InstanceMetadata::default();
    let dir = running_instance(&instances, &old);
    assert_eq!(
        instances.report()[0].metadata_options,
        Some(MetadataOptions::default())
    );
    let mut new = old.clone();
    new.document.public_ipv4 = Some("198.51.100.9".into());
    new.options.http_endpoint = HttpEndpoint::Disabled;
    let vmm = fake_vmm_socket(&dir.join(API_SOCKET), ok_reply(Some(new.options)));
    instances.apply(Action::SetMetadata("i-1".into(), Box::new(new.clone())));
    let sent: Request = mallee_proto::decode(vmm.join().unwrap().as_bytes()).unwrap();
    assert_eq!(
        sent,
        Request::SetMetadata {
            metadata: Box::new(new.clone())
        }
    );
    assert_eq!(instances.locals()["i-1"].serving.as_ref(), Some(&new));
    assert_eq!(instances.report()[0].metadata_options, Some(new.options));
    let cfg = read_config(&dir.join(VMM_CONFIG)).unwrap();
    assert_eq!(cfg.metadata, Some(new), "a restarted VMM serves it too");
    assert_eq!(
        cfg.kernel,
        Path::new("/k"),
        "the rest of the config is kept"
    );
}

#[test]
fn a_vmm_that_refuses_or_confirms_other_options_keeps_what_it_served() {
    use mallee_proto::{HttpTokens, MetadataOptions};
    let tmp = tempfile::tempdir().unwrap();
    let instances = instances_in(tmp.path());
    let old = InstanceMetadata::default();
    let dir = running_instance(&instances, &old);
    let mut new = old.clone();
    new.options.http_tokens = HttpTokens::Required;
    let sock = dir.join(API_SOCKET);
    for reply in [
        Reply::error("the VM was started without a metadata service"),
        ok_reply(Some(MetadataOptions::default())),
    ] {
        let vmm = fake_vmm_socket(&sock, reply);
        instances.apply(Action::SetMetadata("i-1".into(), Box::new(new.clone())));
        vmm.join().unwrap();
        std::fs::remove_file(&sock).unwrap();
        assert_eq!(instances.locals()["i-1"].serving.as_ref(), Some(&old));
        assert_eq!(
            instances.report()[0].metadata_options,
            Some(MetadataOptions::default())
        );
        let cfg = read_config(&dir.join(VMM_CONFIG)).unwrap();
        assert_eq!(cfg.metadata, Some(old.clone()));
    }
    // No VMM listening at all: nothing changes either.
    instances.apply(Action::SetMetadata("i-1".into(), Box::new(new)));
    assert_eq!(instances.locals()["i-1"].serving.as_ref(), Some(&old));
}

/// SYSTEM: a networked guest whose VMM gives no address is asked about until its VMM has seen
/// it use one; the report then carries that address (the site's DHCP server chose it).
#[test]
fn the_address_a_system_guest_uses_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let instances = instances_in(tmp.path());
    let dir = running_instance(&instances, &InstanceMetadata::default());
    instances.lock().get_mut("i-1").unwrap().networked = true;
    let sock = dir.join(API_SOCKET);
    let nic = |address: Option<std::net::Ipv4Addr>| mallee_proto::vmm::NicStatus {
        mac: mallee_proto::instance_mac(1),
        address_taken: address.is_some(),
        address,
        dhcp_answered: 0,
        dropped: Default::default(),
    };
    let vmm = fake_vmm_socket(
        &sock,
        Reply {
            nics: vec![nic(None)],
            ..ok_reply(None)
        },
    );
    let report = instances.report();
    vmm.join().unwrap();
    std::fs::remove_file(&sock).unwrap();
    assert_eq!((report[0].address_taken, report[0].address), (false, None));
    let leased = std::net::Ipv4Addr::new(10, 77, 0, 201);
    let vmm = fake_vmm_socket(
        &sock,
        Reply {
            nics: vec![nic(Some(leased))],
            ..ok_reply(None)
        },
    );
    let report = instances.report();
    vmm.join().unwrap();
    assert_eq!(
        (report[0].address_taken, report[0].address),
        (true, Some(leased))
    );
    // Known now: the VMM is not asked again (nothing listens), and the report keeps it.
    assert_eq!(instances.report()[0].address, Some(leased));
}
