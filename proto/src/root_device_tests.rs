//! Images built byte by byte as the specs lay them out (ext superblock, protective MBR + GPT,
//! MBR), hostile and truncated ones, and images the real tools (`mke2fs`, `sfdisk`) made.

use super::*;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::root_device_fixtures::*;

fn located(img: &[u8]) -> Option<String> {
    locate(img).unwrap().map(|r| r.to_string())
}

#[test]
fn a_whole_disk_ext_file_system_is_named_by_its_uuid() {
    let root = locate(&whole_disk_ext()[..]).unwrap().unwrap();
    assert_eq!(root, RootDevice::FsUuid(uuid(FS_UUID)));
    assert_eq!(root.to_string(), format!("UUID={FS_UUID}"));
    assert!(root.needs_initramfs());
}

#[test]
fn an_ext_file_system_without_a_uuid_names_nothing() {
    let mut img = whole_disk_ext();
    img[1024 + 104..1024 + 120].fill(0);
    assert_eq!(located(&img), None);
}

#[test]
fn a_gpt_root_partition_is_named_by_its_partuuid_decoded_mixed_endian() {
    let img = gpt_image(&[
        part(ESP_ON_DISK, nth_guid(1), 64, 127, false),
        part(LINUX_FS_ON_DISK, nth_guid(2), 128, 1023, true),
        part(ROOT_X86_64_ON_DISK, PART_UUID_ON_DISK, 1024, 2047, false),
    ]);
    let root = locate(&img[..]).unwrap().unwrap();
    assert_eq!(root, RootDevice::GptPartition(uuid(PART_UUID)));
    assert_eq!(root.to_string(), format!("PARTUUID={PART_UUID}"));
    assert!(!root.needs_initramfs());
}

#[test]
fn without_a_root_type_the_first_linux_filesystem_partition_holding_ext_is_root() {
    let img = gpt_image(&[
        part(LINUX_FS_ON_DISK, nth_guid(1), 64, 1023, false), // larger, but no ext
        part(LINUX_FS_ON_DISK, PART_UUID_ON_DISK, 1024, 1535, true),
        part(LINUX_FS_ON_DISK, nth_guid(3), 1536, 2047, true),
    ]);
    assert_eq!(located(&img), Some(format!("PARTUUID={PART_UUID}")));
}

#[test]
fn without_ext_anywhere_the_largest_linux_filesystem_partition_is_root() {
    let img = gpt_image(&[
        part(ESP_ON_DISK, nth_guid(1), 64, 4095, false),
        part(LINUX_FS_ON_DISK, nth_guid(2), 4096, 4351, false),
        part(LINUX_FS_ON_DISK, PART_UUID_ON_DISK, 4352, 6143, false),
        part(LINUX_FS_ON_DISK, nth_guid(4), 6144, 7935, false), // as large, later
    ]);
    assert_eq!(located(&img), Some(format!("PARTUUID={PART_UUID}")));
}

#[test]
fn a_gpt_with_no_linux_partition_names_nothing() {
    let img = gpt_image(&[part(ESP_ON_DISK, nth_guid(1), 64, 127, false)]);
    assert_eq!(located(&img), None);
}

#[test]
fn a_gpt_whose_header_or_entries_crc_is_wrong_names_nothing() {
    let good = gpt_image(&[part(ROOT_X86_64_ON_DISK, PART_UUID_ON_DISK, 64, 127, false)]);
    assert!(located(&good).is_some());
    let mut bad_header = good.clone();
    bad_header[512 + 16] ^= 1;
    assert_eq!(located(&bad_header), None);
    let mut bad_entries = good.clone();
    bad_entries[1024 + 40] ^= 1; // the partition's last LBA, CRC left as it was
    assert_eq!(located(&bad_entries), None);
    // A protective MBR without a GPT behind it is not read as an MBR disk.
    let mut no_header = good;
    no_header[512..1024].fill(0);
    assert_eq!(located(&no_header), None);
}

#[test]
fn a_gpt_header_asking_for_too_many_or_odd_entries_or_a_table_past_the_end_names_nothing() {
    let img = gpt_image(&[part(ROOT_X86_64_ON_DISK, PART_UUID_ON_DISK, 64, 127, false)]);
    for (at, value) in [
        (80, u32::MAX as u64), // entry count
        (80, 1025),            // 1025 × 128 bytes > 64 KiB
        (84, 100),             // entry size below 128
        (84, 1 << 20),         // entry size far too large
        (72, 1 << 40),         // table far past the end of the image
        (72, u64::MAX / 256),  // table LBA whose byte offset overflows
        (72, 0),               // table over the MBR
        (12, 4096),            // header size past its sector
    ] {
        let mut hostile = img.clone();
        let width = if at == 72 { 8 } else { 4 };
        put(&mut hostile, 512 + at, &value.to_le_bytes()[..width]);
        reseal_header(&mut hostile);
        assert_eq!(locate(&hostile[..]).unwrap(), None, "field {at} = {value}");
    }
}

#[test]
fn partitions_starting_past_the_end_or_at_absurd_lbas_are_probed_without_harm() {
    let img = gpt_image(&[
        part(LINUX_FS_ON_DISK, nth_guid(1), u64::MAX / 2, u64::MAX, false),
        part(
            LINUX_FS_ON_DISK,
            PART_UUID_ON_DISK,
            1 << 40,
            (1 << 40) + 1,
            false,
        ),
    ]);
    // The first is the largest; neither can be read, and neither read fails.
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&nth_guid(1));
    assert_eq!(
        locate(&img[..]).unwrap(),
        Some(RootDevice::GptPartition(Uuid::from_bytes_le(bytes)))
    );
}

#[test]
fn an_mbr_disk_names_its_first_linux_partition_as_the_kernel_does() {
    let img = mbr_image(&[(0x82, 2048, 2048), (0x83, 4096, 8192), (0x83, 12288, 100)]);
    let root = locate(&img[..]).unwrap().unwrap();
    assert_eq!(
        root,
        RootDevice::MbrPartition {
            signature: 0x1234_5678,
            number: 2
        }
    );
    assert_eq!(root.to_string(), "PARTUUID=12345678-02");
}

#[test]
fn an_mbr_without_a_linux_partition_or_with_bad_boot_flags_names_nothing() {
    assert_eq!(located(&mbr_image(&[(0x07, 2048, 2048)])), None);
    assert_eq!(located(&mbr_image(&[(0x83, 2048, 0)])), None);
    let mut flagged = mbr_image(&[(0x83, 2048, 2048)]);
    flagged[446] = 0x12;
    assert_eq!(located(&flagged), None);
}

#[test]
fn garbage_empty_and_truncated_images_name_nothing_and_never_panic() {
    assert_eq!(located(&[]), None);
    assert_eq!(located(&[0u8; 1 << 16]), None);
    // A fixed xorshift stream: the same "random" images every run.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..64 {
        let img: Vec<u8> = (0..9000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let _ = locate(&img[..]).unwrap();
    }
    let gpt = gpt_image(&[part(LINUX_FS_ON_DISK, PART_UUID_ON_DISK, 64, 127, true)]);
    for len in [
        0,
        100,
        511,
        512,
        1000,
        1023,
        1024,
        5000,
        17 * 1024,
        64 * 512 + 1100,
    ] {
        let cut = &gpt[..len.min(gpt.len())];
        let whole_table = len >= 1024 + 128 * 128;
        assert_eq!(locate(cut).unwrap().is_some(), whole_table, "cut at {len}");
    }
    let ext = whole_disk_ext();
    assert_eq!(located(&ext[..1100]), None, "superblock cut short");
}

#[test]
fn read_errors_other_than_the_end_of_the_image_are_errors() {
    struct Failing;
    impl ReadAt for Failing {
        fn read_exact_at(&self, _: &mut [u8], _: u64) -> io::Result<()> {
            Err(io::Error::other("disk on fire"))
        }
    }
    assert!(locate(&Failing).is_err());
}

#[test]
fn the_text_round_trips_and_nothing_else_parses() {
    for text in [
        format!("UUID={FS_UUID}"),
        format!("PARTUUID={PART_UUID}"),
        "PARTUUID=12345678-01".to_string(),
        "PARTUUID=00000000-04".to_string(),
    ] {
        let r: RootDevice = text.parse().unwrap();
        assert_eq!(r.to_string(), text);
    }
    assert_eq!(
        "PARTUUID=ABCDEF01-02"
            .parse::<RootDevice>()
            .unwrap()
            .to_string(),
        "PARTUUID=abcdef01-02"
    );
    for bad in [
        "",
        "/dev/vda",
        "LABEL=root",
        "UUID=",
        "UUID=5f1a2b3c4d5e4f608172839405a6b7c8",
        "UUID={5f1a2b3c-4d5e-4f60-8172-839405a6b7c8}",
        "UUID=urn:uuid:5f1a2b3c-4d5e-4f60-8172-839405a6b7c8",
        "UUID=5f1a2b3c-4d5e-4f60-8172-839405a6b7c8 init=/bin/sh",
        "PARTUUID=12345678-01 init=/bin/sh",
        "PARTUUID=12345678-00",
        "PARTUUID=12345678-05",
        "PARTUUID=+2345678-01",
        "PARTUUID=1234567-001",
        "PARTUUID=12345678-1",
        "uuid=5f1a2b3c-4d5e-4f60-8172-839405a6b7c8",
    ] {
        assert!(bad.parse::<RootDevice>().is_err(), "{bad:?} parsed");
    }
}

#[test]
fn its_json_is_its_text_and_bad_text_does_not_parse() {
    let r = RootDevice::MbrPartition {
        signature: 0xdead_beef,
        number: 1,
    };
    assert_eq!(
        serde_json::to_string(&r).unwrap(),
        "\"PARTUUID=deadbeef-01\""
    );
    assert_eq!(
        serde_json::from_str::<RootDevice>("\"PARTUUID=deadbeef-01\"").unwrap(),
        r
    );
    let e = serde_json::from_str::<RootDevice>("\"/dev/vda quiet init=/bin/sh\"").unwrap_err();
    assert!(e.to_string().contains("not a root device"), "{e}");
}

/// Runs a tool from /usr/sbin, `None` when this machine has not got it.
fn tool(name: &str, args: &[&str], stdin: Option<&str>) -> Option<()> {
    let path = Path::new("/usr/sbin").join(name);
    if !path.exists() {
        eprintln!("skipped: no {}", path.display());
        return None;
    }
    let mut child = Command::new(&path)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{name} {args:?}: {status}");
    Some(())
}

fn sized_file(bytes: u64) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(bytes).unwrap();
    f
}

#[test]
fn a_real_mke2fs_image_is_named_by_the_uuid_it_was_given() {
    let f = sized_file(8 << 20);
    let path = f.path().to_str().unwrap();
    let args = ["-q", "-F", "-t", "ext4", "-L", "x", "-U", FS_UUID, path];
    let Some(()) = tool("mke2fs", &args, None) else {
        return;
    };
    let root = locate(f.as_file()).unwrap();
    assert_eq!(root, Some(RootDevice::FsUuid(uuid(FS_UUID))));
}

#[test]
fn real_sfdisk_tables_name_the_partitions_the_kernel_would() {
    let gpt = sized_file(8 << 20);
    let script = format!(
        "label: gpt\nstart=2048, size=2048, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n\
         start=4096, size=8192, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid={}\n",
        PART_UUID.to_uppercase()
    );
    let args = [
        "--no-reread",
        "--no-tell-kernel",
        "-q",
        gpt.path().to_str().unwrap(),
    ];
    let Some(()) = tool("sfdisk", &args, Some(&script)) else {
        return;
    };
    let root = locate(gpt.as_file()).unwrap();
    assert_eq!(
        root.map(|r| r.to_string()),
        Some(format!("PARTUUID={PART_UUID}"))
    );

    let mbr = sized_file(8 << 20);
    let script = "label: dos\nlabel-id: 0x0badcafe\nstart=2048, size=2048, type=82\n\
                  start=4096, size=8192, type=83\n";
    let args = [
        "--no-reread",
        "--no-tell-kernel",
        "-q",
        mbr.path().to_str().unwrap(),
    ];
    tool("sfdisk", &args, Some(script)).unwrap();
    let root = locate(mbr.as_file()).unwrap();
    assert_eq!(
        root.map(|r| r.to_string()),
        Some("PARTUUID=0badcafe-02".into())
    );
}

#[test]
fn a_real_linux_filesystem_partition_holding_mke2fs_ext4_is_root() {
    let disk = sized_file(16 << 20);
    let path = disk.path().to_str().unwrap().to_string();
    // A bigger partition first that holds no file system, then the one mke2fs formats.
    let script = format!(
        "label: gpt\nstart=2048, size=12288, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n\
         start=14336, size=8192, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid={PART_UUID}\n"
    );
    let args = ["--no-reread", "--no-tell-kernel", "-q", path.as_str()];
    let Some(()) = tool("sfdisk", &args, Some(&script)) else {
        return;
    };
    let offset = format!("offset={}", 14336 * 512);
    let mke2fs = [
        "-q", "-F", "-t", "ext4", "-E", &offset, "-U", FS_UUID, &path, "4M",
    ];
    let Some(()) = tool("mke2fs", &mke2fs, None) else {
        return;
    };
    let root = locate(disk.as_file()).unwrap();
    assert_eq!(
        root.map(|r| r.to_string()),
        Some(format!("PARTUUID={PART_UUID}"))
    );
}
