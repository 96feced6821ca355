//! Label lookup against a made-up sysfs tree; growing a GPT image file as if flashed onto a
//! bigger disk, read back with gptman.

use super::*;

const MIB: u64 = 1 << 20;

/// An image of `mib` MiB with a 4 MiB ESP and a data partition after it.
fn image(path: &Path, mib: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    f.set_len(mib * MIB).unwrap();
    let mut gpt = gptman::GPT::new_from(&mut f, 512, [7; 16]).unwrap();
    gpt.align = 2048;
    let part = |n: u8, first: u64, last: u64, name: &str| gptman::GPTPartitionEntry {
        partition_type_guid: [1; 16],
        unique_partition_guid: [n; 16],
        starting_lba: first,
        ending_lba: last,
        attribute_bits: 0,
        partition_name: name.into(),
    };
    gpt[1] = part(1, 2048, 2048 + 4 * 2048 - 1, "mallee-esp");
    gpt[2] = part(2, 5 * 2048, 5 * 2048 + 2 * 2048 - 1, "mallee-data");
    gpt.write_into(&mut f).unwrap();
    gptman::GPT::write_protective_mbr_into(&mut f, 512).unwrap();
}

fn read(path: &Path) -> gptman::GPT {
    gptman::GPT::find_from(&mut std::fs::File::open(path).unwrap()).unwrap()
}

#[test]
fn the_data_partition_grows_to_a_bigger_disk_and_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    image(&disk, 8);
    // Flashed onto a 64 MiB disk: the tail is past the image's backup table.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    let g = grow_to_disk_end(&disk, 2).unwrap().expect("it grew");
    assert_eq!(g.before, 2 * MIB);
    // 64 MiB less the 5 MiB before it and the last MiB, where the backup table now is.
    assert_eq!(g.after, (64 - 5 - 1) * MIB);
    let gpt = read(&disk);
    assert_eq!(gpt[2].ending_lba + 1, 63 * 2048);
    assert_eq!(gpt[1].ending_lba + 1, 5 * 2048, "the ESP moved");
    assert_eq!(gpt.header.backup_lba, 64 * 2048 - 1);
    assert_eq!(gpt[2].partition_name.as_str(), "mallee-data");
    // Nothing more to gain on the same disk.
    assert_eq!(grow_to_disk_end(&disk, 2).unwrap(), None);
}

#[test]
fn only_the_last_partition_may_grow() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    image(&disk, 16);
    let err = grow_to_disk_end(&disk, 1).unwrap_err();
    assert!(
        matches!(err, PartitionError::NotLast { number: 1, .. }),
        "{err}"
    );
    assert!(matches!(
        grow_to_disk_end(&disk, 3).unwrap_err(),
        PartitionError::NotLast { number: 3, .. }
    ));
}

#[test]
fn a_disk_without_a_gpt_is_an_error_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0x42; 4 << 20]).unwrap();
    assert!(matches!(
        grow_to_disk_end(&disk, 2).unwrap_err(),
        PartitionError::Gpt { .. }
    ));
    assert!(std::fs::read(&disk).unwrap().iter().all(|&b| b == 0x42));
}

#[test]
fn labels_are_found_in_sysfs_with_their_disk() {
    let dir = tempfile::tempdir().unwrap();
    let block = dir.path().join("block");
    let class = dir.path().join("class");
    std::fs::create_dir_all(&class).unwrap();
    for (disk, part, n, label) in [
        ("vda", "vda1", 1, "mallee-esp"),
        ("vda", "vda2", 2, "mallee-data"),
    ] {
        let p = block.join(disk).join(part);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(
            p.join("uevent"),
            format!("MAJOR=254\nMINOR={n}\nDEVNAME={part}\nDEVTYPE=partition\nPARTN={n}\nPARTNAME={label}\n"),
        )
        .unwrap();
        std::os::unix::fs::symlink(&p, class.join(part)).unwrap();
    }
    std::fs::write(block.join("vda/uevent"), "DEVNAME=vda\nDEVTYPE=disk\n").unwrap();
    std::os::unix::fs::symlink(block.join("vda"), class.join("vda")).unwrap();
    assert_eq!(
        find_by_label(&class, "mallee-data"),
        Some(Partition {
            device: "/dev/vda2".into(),
            disk: "/dev/vda".into(),
            number: 2,
        })
    );
    assert_eq!(find_by_label(&class, "nope"), None);
}
