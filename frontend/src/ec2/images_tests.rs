//! RegisterImage reading an image's root from its bytes, through the EC2 dispatcher over a real
//! store in a temporary directory (no socket): a Walrus object, a snapshot through its
//! manifest, an image with no layout known; and the root reaching the node's instance spec.

use super::*;
use crate::cloud::model::{Instance, Snapshot, INSTANCE, SNAPSHOT};
use crate::cloud::{nodes, reconcile, Changes, Ec2Config};
use crate::storage::snapshots;
use crate::store::{Role, Store};
use mallee_proto::root_device_fixtures::{
    gpt_image, part, LINUX_FS_ON_DISK, PART_UUID, PART_UUID_ON_DISK, ROOT_X86_64_ON_DISK,
};
use std::sync::Arc;

/// A 64 KiB disk whose GPT has one "Linux root (x86-64)" partition, [`PART_UUID`].
fn root_typed_disk() -> Vec<u8> {
    let mut disk = gpt_image(&[part(ROOT_X86_64_ON_DISK, PART_UUID_ON_DISK, 64, 127, false)]);
    disk.resize(64 << 10, 0);
    disk
}

/// A cloud of one user `u` with bucket `images` and one registered node `n1`.
struct Cloud {
    _dir: tempfile::TempDir,
    ec2: Ec2,
    user: User,
}

fn cloud() -> Cloud {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let user = store.create_user("u", Role::User).unwrap();
    store.create_bucket("images", "u").unwrap();
    let cfg = Ec2Config::default();
    let (node, _) = crate::cloud::nodes::tests::admitted(&store, "n1", &cfg.clusters[0]);
    let info = mallee_proto::NodeInfo {
        node_id: "n1".into(),
        cluster: node.cluster.clone(),
        cpus: 4,
        memory_mib: 4096,
        disk_gib: 10,
        macs: vec![],
        agent_version: "t".into(),
        boot_id: "b1".into(),
    };
    nodes::register(&store, &node, info, 2).unwrap();
    let ec2 = Ec2::new(store, cfg, Arc::new(Changes::default()), "mallee", 300);
    Cloud {
        _dir: dir,
        ec2,
        user,
    }
}

impl Cloud {
    fn store(&self) -> &Store {
        &self.ec2.store
    }

    /// Stores `data` as object `images/<key>`, of image type `kind` when given.
    fn object(&self, key: &str, data: &[u8], kind: Option<&str>) {
        let mut w = self.store().blobs().writer().unwrap();
        w.write(data).unwrap();
        let blob = w.finish().unwrap();
        let meta = (kind.iter())
            .map(|k| (KIND_META.to_string(), k.to_string()))
            .collect();
        let row = ObjectRow::new(key, &blob, format!("\"{}\"", blob.md5_hex), None, meta);
        self.store().put_object("images", &row).unwrap();
    }

    /// Dispatches EC2 `action` with `params`; returns the answer's `<field>`.
    fn call(&self, action: &str, params: &[(&str, &str)], field: &str) -> String {
        let p = Params::from_pairs(params);
        let c = Call {
            user: &self.user,
            p: &p,
            rid: "r",
            action,
            now: 5,
        };
        let xml = self
            .ec2
            .dispatch(&c)
            .unwrap_or_else(|e| panic!("{action}: {e:?}"));
        let open = format!("<{field}>");
        let start = xml
            .find(&open)
            .unwrap_or_else(|| panic!("no {field} in {xml}"))
            + open.len();
        let end = start + xml[start..].find('<').unwrap();
        xml[start..end].to_string()
    }

    fn register(&self, name: &str, location: &str) -> String {
        let params = [("Name", name), ("ImageLocation", location)];
        self.call("RegisterImage", &params, "imageId")
    }

    fn image(&self, id: &str) -> Image {
        self.store().cloud(|tx| tx.get(IMAGE, id)).unwrap().unwrap()
    }

    /// RunInstances of `image`: the instance spec node `n1` is handed.
    fn launch(&self, image: &str) -> mallee_proto::InstanceSpec {
        let id = self.call("RunInstances", &[("ImageId", image)], "instanceId");
        let specs = nodes::desired(self.store(), "n1").unwrap();
        specs.into_iter().find(|s| s.instance_id == id).unwrap()
    }
}

#[test]
fn an_image_whose_object_is_partitioned_boots_its_instances_from_the_root_partition() {
    let c = cloud();
    c.object("root.img", &root_typed_disk(), None);
    let id = c.register("gpt", "images/root.img");
    let root = format!("PARTUUID={PART_UUID}");
    assert_eq!(
        c.image(&id).root_device.map(|r| r.to_string()),
        Some(root.clone())
    );
    let spec = c.launch(&id);
    assert_eq!(spec.root_device.map(|r| r.to_string()), Some(root));
}

#[test]
fn an_image_with_no_layout_known_registers_and_boots_the_first_disk_as_it_did() {
    let c = cloud();
    c.object("noise.img", &[0xa5; 4096], None);
    let id = c.register("noise", "images/noise.img");
    assert_eq!(c.image(&id).root_device, None);
    assert_eq!(c.launch(&id).root_device, None);
    // Kernels and ramdisks are not read at all.
    c.object("vmlinuz", &root_typed_disk(), Some("kernel"));
    let eki = c.register("kernel", "images/vmlinuz");
    assert_eq!(c.image(&eki).root_device, None);
}

#[test]
fn an_image_record_from_before_roots_were_read_still_launches_without_one() {
    let c = cloud();
    c.object("old.img", &root_typed_disk(), None);
    let id = c.register("old", "images/old.img");
    // As stored before images had a root: the field absent from the record's JSON.
    let mut body = serde_json::to_value(c.image(&id)).unwrap();
    body.as_object_mut().unwrap().remove("root_device");
    let img: Image = serde_json::from_value(body).unwrap();
    c.store()
        .cloud(|tx| tx.put(IMAGE, &img.id, &img.owner, Some(&img.name), &img))
        .unwrap();
    assert_eq!(c.image(&id).root_device, None);
    assert_eq!(c.launch(&id).root_device, None);
}

#[test]
fn a_real_mke2fs_image_boots_its_instances_by_its_file_system_uuid() {
    let mke2fs = std::path::Path::new("/usr/sbin/mke2fs");
    if !mke2fs.exists() {
        eprintln!("skipped: no {}", mke2fs.display());
        return;
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    file.as_file().set_len(8 << 20).unwrap();
    let uuid = "5f1a2b3c-4d5e-4f60-8172-839405a6b7c8";
    let status = std::process::Command::new(mke2fs)
        .args(["-q", "-F", "-t", "ext4", "-L", "x", "-U", uuid])
        .arg(file.path())
        .status()
        .unwrap();
    assert!(status.success(), "mke2fs: {status}");
    let c = cloud();
    c.object("ext4.img", &std::fs::read(file.path()).unwrap(), None);
    let id = c.register("ext4", "images/ext4.img");
    let spec = c.launch(&id);
    assert_eq!(
        spec.root_device.map(|r| r.to_string()),
        Some(format!("UUID={uuid}"))
    );
}

#[test]
fn an_ebs_image_reads_its_root_through_the_snapshot_manifest() {
    let c = cloud();
    // Two "Linux filesystem" partitions: a larger one with no file system, then the root,
    // whose superblock is 1 MiB + 1 KiB in: in the third 512 KiB chunk, after a chunk of zeros
    // (never stored). Only reading that superblock through the manifest finds the root.
    let mut disk = gpt_image(&[
        part(LINUX_FS_ON_DISK, [0x77; 16], 64, 2047, false),
        part(LINUX_FS_ON_DISK, PART_UUID_ON_DISK, 2048, 2559, true),
    ]);
    disk.resize(3 << 20, 0);
    let source = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(source.path(), &disk).unwrap();
    let snap_id = "snap-0000abcd";
    let taken = snapshots::take(c.store(), source.path(), snap_id, "vol-0000abcd", |_| {});
    assert_eq!(
        taken.unwrap().chunks,
        2,
        "the chunks of zeros are not stored"
    );
    let snap = Snapshot {
        state: "completed".into(),
        progress: 100,
        copied: true,
        ..Snapshot::pending(
            snap_id.into(),
            "u",
            &crate::cloud::reconcile::tests::attached_volume("vol-0000abcd", "/dev/vda"),
            "",
            1,
        )
    };
    c.store()
        .cloud(|tx| tx.put(SNAPSHOT, snap_id, "u", None, &snap))
        .unwrap();
    c.object("vmlinuz", b"kernel", Some("kernel"));
    let eki = c.register("kernel", "images/vmlinuz");
    let params = [
        ("Name", "ebs"),
        ("KernelId", eki.as_str()),
        ("BlockDeviceMapping.1.DeviceName", "/dev/vda"),
        ("BlockDeviceMapping.1.Ebs.SnapshotId", snap_id),
    ];
    let id = c.call("RegisterImage", &params, "imageId");
    let root = format!("PARTUUID={PART_UUID}");
    assert_eq!(
        c.image(&id).root_device.map(|r| r.to_string()),
        Some(root.clone())
    );
    // The instance (pending until its root volume is made) carries it to its spec.
    let instance = c.call("RunInstances", &[("ImageId", id.as_str())], "instanceId");
    let i: Instance = (c.store().cloud(|tx| tx.get(INSTANCE, &instance)))
        .unwrap()
        .unwrap();
    let spec = reconcile::spec(&i).unwrap();
    assert_eq!(spec.root_device.map(|r| r.to_string()), Some(root));
}
