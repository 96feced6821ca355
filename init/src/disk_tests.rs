use super::*;
use std::os::unix::fs::MetadataExt;

#[test]
fn disks_are_classified_by_their_first_bytes() {
    let mut head = vec![0u8; BLANK_PROBE];
    assert_eq!(classify(&head), DiskContent::Blank);
    head[1080] = 0x53;
    head[1081] = 0xEF;
    assert_eq!(classify(&head), DiskContent::Ext);
    head[1080] = 0;
    head[510] = 0x55; // an MBR boot signature: not ours to format
    assert_eq!(classify(&head), DiskContent::Other);
    assert_eq!(classify(&[]), DiskContent::Blank);
}

/// A head holding an ext superblock with `label` (raw bytes, up to 16) and `uuid`.
fn ext_head(label: &[u8], uuid: [u8; 16]) -> Vec<u8> {
    let mut head = vec![0u8; 4096];
    head[1080..1082].copy_from_slice(&[0x53, 0xEF]);
    head[1128..1144].copy_from_slice(&uuid);
    head[1144..1144 + label.len()].copy_from_slice(label);
    head
}

const UUID: [u8; 16] = [
    0x6b, 0x1e, 0x3a, 0x2c, 0, 1, 0x40, 2, 0x80, 3, 0xde, 0xad, 0xbe, 0xef, 0x00, 0xff,
];

#[test]
fn the_superblock_gives_label_and_uuid() {
    let head = ext_head(b"mallee-root", UUID);
    let id = ext_identity(&head).unwrap();
    assert_eq!(id.label, "mallee-root");
    assert_eq!(id.uuid_text(), "6b1e3a2c-0001-4002-8003-deadbeef00ff");
    assert_eq!(
        describe_head(&head),
        "ext file system label mallee-root uuid 6b1e3a2c-0001-4002-8003-deadbeef00ff"
    );
    // A label of all 16 bytes has no NUL.
    let id = ext_identity(&ext_head(b"0123456789abcdef", UUID)).unwrap();
    assert_eq!(id.label, "0123456789abcdef");
    // No label.
    let head = ext_head(b"", [0; 16]);
    assert_eq!(
        describe_head(&head),
        "ext file system label - uuid 00000000-0000-0000-0000-000000000000"
    );
}

#[test]
fn a_hostile_label_is_escaped_not_printed() {
    let id = ext_identity(&ext_head(b"a b\nready\xff\x1b", UUID)).unwrap();
    assert_eq!(id.label, r"a\x20b\x0aready\xff\x1b");
    assert!(!describe_head(&ext_head(b"x\ny", UUID)).contains('\n'));
}

#[test]
fn truncated_or_foreign_heads_give_no_identity() {
    let head = ext_head(b"mallee-root", UUID);
    // Magic present but the head ends inside the UUID or the label.
    assert_eq!(ext_identity(&head[..1082]), None);
    assert_eq!(ext_identity(&head[..1130]), None);
    assert_eq!(ext_identity(&head[..1150]), None);
    assert_eq!(describe_head(&head[..1150]), "ext file system");
    assert!(ext_identity(&head[..1160]).is_some());
    // No magic: blank, garbage, nothing.
    assert_eq!(ext_identity(&vec![0u8; 4096]), None);
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    assert_eq!(ext_identity(&garbage), None);
    assert_eq!(describe_head(&garbage), "other data");
    assert_eq!(ext_identity(&[]), None);
    assert_eq!(describe_head(&[]), "blank");
}

fn host_mke2fs(args: &[String]) {
    let ok = Command::new("mke2fs")
        .args(args)
        .status()
        .expect("mke2fs (e2fsprogs): run `just setup`")
        .success();
    assert!(ok, "mke2fs {args:?} failed");
}

#[test]
fn a_real_mke2fs_image_is_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    assert_eq!(probe(&img).unwrap(), DiskContent::Blank);
    host_mke2fs(&mke2fs_args(&img, "mallee-data", Init::Full));
    assert_eq!(probe(&img).unwrap(), DiskContent::Ext);
    // The label and UUID as e2fsprogs' own dumpe2fs reads them.
    let id = ext_identity(&read_head(&img).unwrap()).unwrap();
    assert_eq!(id.label, "mallee-data");
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(&img)
        .output()
        .expect("dumpe2fs (e2fsprogs): run `just setup`");
    let header = String::from_utf8_lossy(&out.stdout);
    assert!(
        header
            .lines()
            .any(|l| l.starts_with("Filesystem UUID:") && l.ends_with(&id.uuid_text())),
        "{} not in {header}",
        id.uuid_text()
    );
}

#[test]
fn lazy_formatting_of_a_big_sparse_file_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ephemeral0.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(5 << 30)
        .unwrap();
    let args = mke2fs_args(&img, "ephemeral0", Init::Lazy);
    assert!(args.contains(&"lazy_itable_init=1,lazy_journal_init=1".to_string()));
    host_mke2fs(&args);
    assert_eq!(probe(&img).unwrap(), DiskContent::Ext);
    let meta = std::fs::metadata(&img).unwrap();
    assert_eq!(meta.len(), 5 << 30);
    let used = meta.blocks() * 512;
    assert!(used < 64 << 20, "formatting wrote {used} bytes");
}

/// Writes a fake `/sys/block/<name>` the way the kernel lays it out.
fn fake_disk(root: &Path, name: &str, sectors: u64, removable: bool, ro: bool, parts: &[&str]) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("size"), format!("{sectors}\n")).unwrap();
    std::fs::write(dir.join("removable"), if removable { "1\n" } else { "0\n" }).unwrap();
    std::fs::write(dir.join("ro"), if ro { "1\n" } else { "0\n" }).unwrap();
    std::fs::create_dir_all(dir.join("queue")).unwrap();
    for p in parts {
        std::fs::create_dir_all(dir.join(p)).unwrap();
        std::fs::write(dir.join(p).join("partition"), "1\n").unwrap();
    }
}

const GIB_SECTORS: u64 = 2 << 20;

#[test]
fn auto_picks_the_first_big_blank_fixed_writable_disk() {
    let sys = tempfile::tempdir().unwrap();
    let root = sys.path();
    fake_disk(root, "loop0", 8 * GIB_SECTORS, false, false, &[]);
    fake_disk(root, "sr0", 8 * GIB_SECTORS, true, true, &[]);
    fake_disk(root, "sda", 8 * GIB_SECTORS, false, false, &["sda1"]);
    fake_disk(root, "sdb", 8 * GIB_SECTORS, true, false, &[]);
    fake_disk(root, "vda", GIB_SECTORS / 2, false, false, &[]);
    fake_disk(root, "vdb", 4 * GIB_SECTORS, false, true, &[]);
    fake_disk(root, "nvme0n1", 4 * GIB_SECTORS, false, false, &[]);
    fake_disk(root, "vdc", 2 * GIB_SECTORS, false, false, &[]);
    let (chosen, skipped) = choose_auto(root);
    let chosen = chosen.expect("a disk");
    assert_eq!(chosen.name, "vdc");
    assert_eq!(chosen.bytes, 2 << 30);
    assert_eq!(chosen.device(), Path::new("/dev/vdc"));
    assert_eq!(
        skipped,
        [
            ("sda".to_string(), "has partitions"),
            ("sdb".to_string(), "removable"),
            ("vda".to_string(), "smaller than 1 GiB"),
            ("vdb".to_string(), "read-only"),
        ]
    );
}

#[test]
fn auto_finds_nvme_and_nothing_in_an_empty_tree() {
    let sys = tempfile::tempdir().unwrap();
    assert_eq!(choose_auto(sys.path()).0, None);
    assert_eq!(choose_auto(&sys.path().join("missing")).0, None);
    fake_disk(sys.path(), "nvme0n1", 4 * GIB_SECTORS, false, false, &[]);
    std::fs::write(sys.path().join("nvme0n1/serial"), "S3X  \n").unwrap();
    let disk = choose_auto(sys.path()).0.unwrap();
    assert_eq!(disk.name, "nvme0n1");
    assert_eq!(disk.serial.as_deref(), Some("S3X"));
}

#[test]
fn disk_names_are_whole_disks_only() {
    for yes in ["vda", "sdb", "xvdc", "nvme0n1", "nvme12n3", "sdaa"] {
        assert!(is_disk_name(yes), "{yes}");
    }
    for no in [
        "vda1",
        "loop0",
        "ram0",
        "dm-0",
        "md0",
        "sr0",
        "nvme0",
        "nvme0n1p1",
        "vd",
    ] {
        assert!(!is_disk_name(no), "{no}");
    }
}

#[test]
fn a_disk_holding_data_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    let mut data = vec![0u8; 1 << 20];
    data[510] = 0x55;
    data[511] = 0xAA; // an MBR: someone's disk
    std::fs::write(&img, &data).unwrap();
    let err = mount_ext4(&img, &dir.path().join("mnt"), "mallee-node", Init::Lazy).unwrap_err();
    assert!(matches!(err, DiskError::Foreign { .. }), "{err}");
    assert!(err.to_string().contains("never written"), "{err}");
    assert_eq!(std::fs::read(&img).unwrap(), data);
    assert!(!dir.path().join("mnt").exists());
}
