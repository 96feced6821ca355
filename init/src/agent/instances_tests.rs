use super::*;

#[test]
fn exit_statuses_read_as_reasons() {
    assert_eq!(exit_reason(0, ""), "the guest powered off");
    assert!(exit_reason(1, "mallee-vmm: no kvm").ends_with("no kvm"));
    assert!(exit_reason(137, "").contains("signal 9"));
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

#[test]
fn the_vmm_config_names_the_instance_files() {
    let v = vmm_config(&spec(0), Path::new("/i"), Path::new("/k"), None);
    assert_eq!(v["mem"], "256M");
    assert_eq!(v["disk"][0], "/i/root.img,serial=root");
    assert_eq!(
        v["disk"].as_array().unwrap().len(),
        1,
        "no ephemeral disk asked for"
    );
    assert_eq!(v["serial"], "/i/console.log");
    assert!(v["initrd"].is_null());
}

#[test]
fn an_ephemeral_disk_is_the_second_disk() {
    let v = vmm_config(&spec(5), Path::new("/i"), Path::new("/k"), None);
    let disks = v["disk"].as_array().unwrap();
    assert_eq!(disks.len(), 2);
    assert_eq!(disks[0], "/i/root.img,serial=root");
    assert_eq!(disks[1], "/i/ephemeral0.img,serial=ephemeral0");
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
        cache: cache.unwrap(),
        fetch: Arc::new(Objects(vec![("k", kernel.clone()), ("r", root.clone())])),
        stop_deadline: Duration::from_secs(1),
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
