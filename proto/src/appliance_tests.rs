use super::*;

#[test]
fn slot_file_names_round_trip_with_systemd_boot_counters() {
    for (name, slot, tries) in [
        ("mallee-a.efi", Slot::A, None),
        ("mallee-b+3.efi", Slot::B, Some((3, 0))),
        ("mallee-b+2-1.efi", Slot::B, Some((2, 1))),
        ("mallee-a+0-3.efi", Slot::A, Some((0, 3))),
    ] {
        let f = SlotFile::parse(name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(f.slot, slot, "{name}");
        assert_eq!(f.tries.map(|t| (t.left, t.done)), tries, "{name}");
        assert_eq!(f.name(), name);
    }
    // FAT keeps upper-case short names; the boot manager compares without case.
    assert_eq!(SlotFile::parse("MALLEE-A.EFI").unwrap().slot, Slot::A);
    assert!(SlotFile::parse("mallee-b+0-3.efi").unwrap().failed());
    assert!(SlotFile::parse("mallee-b+1-2.efi").unwrap().trying());
    assert!(!SlotFile::parse("mallee-b.efi").unwrap().trying());
    for bad in [
        "mallee-c.efi",
        "mallee-a.conf",
        "linux.efi",
        "mallee-a+.efi",
        "mallee-a+x.efi",
        "mallee-a+1-.efi",
        "mallee-a+99999.efi",
        "mallee-a.efi.new",
    ] {
        assert_eq!(SlotFile::parse(bad), None, "{bad}");
    }
}

#[test]
fn versions_order_as_the_boot_manager_sorts_them() {
    use std::cmp::Ordering::*;
    assert_eq!(version_cmp("0.1.0.1764860000", "0.1.0.1764860000"), Equal);
    assert_eq!(version_cmp("0.1.0.1764860001", "0.1.0.1764860000"), Greater);
    assert_eq!(version_cmp("0.1.0.99", "0.1.0.100"), Less);
    assert_eq!(version_cmp("0.1.0.100.1", "0.1.0.100"), Greater);
    assert_eq!(version_cmp("0.2.0.1", "0.1.9.9"), Greater);
}

#[test]
fn os_release_fields_are_read_quoted_or_not() {
    let os = OsRelease::parse(
        "NAME=\"Mallee frontend\"\nID=mallee\nVERSION_ID=0.1.0.5\nBUILD_ID=\"abc\"\n",
    );
    assert_eq!(
        os,
        OsRelease {
            id: "mallee".into(),
            version_id: "0.1.0.5".into(),
            build_id: "abc".into()
        }
    );
}

#[test]
fn anything_but_a_pe_image_is_refused_as_a_uki() {
    let e = Uki::parse("x", b"MZ not really").unwrap_err();
    assert!(matches!(e, ApplianceError::NotUki(..)), "{e}");
}

/// A blank FAT file standing in for an ESP partition.
fn esp_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("esp.fat");
    let mut f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.set_len(8 << 20).unwrap();
    fatfs::format_volume(&mut f, fatfs::FormatVolumeOptions::new()).unwrap();
    let fs = fatfs::FileSystem::new(&mut f, fatfs::FsOptions::new()).unwrap();
    fs.root_dir().create_dir("EFI").unwrap();
    fs.root_dir().create_dir(UKI_DIR).unwrap();
    fs.unmount().unwrap();
    path
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("mallee-proto-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn install_counts_tries_and_mark_good_drops_the_counter() {
    let dir = temp_dir("esp");
    let path = esp_file(&dir);
    let esp = Esp::partition(&path, true).unwrap();
    esp.write(&format!("{UKI_DIR}/mallee-a.efi"), b"slot a")
        .unwrap();
    esp.write(&format!("{UKI_DIR}/mallee-b+0-3.efi"), b"old b")
        .unwrap();
    let name = esp.install(Slot::B, b"new b", 3).unwrap();
    assert_eq!(name, "mallee-b+3.efi");
    let names: Vec<String> = esp.slot_files().unwrap().into_iter().map(|f| f.0).collect();
    assert_eq!(names, ["mallee-a.efi", "mallee-b+3.efi"]);
    // Every file carries a valid DOS date: UEFI's FAT driver refuses to rename one without.
    let linux = esp.fs.root_dir().open_dir(UKI_DIR).unwrap();
    for e in linux.iter().map(Result::unwrap).filter(|e| e.is_file()) {
        let m = e.modified().date;
        assert!(
            (1..=12).contains(&m.month) && (1..=31).contains(&m.day),
            "{}: {m:?}",
            e.file_name()
        );
    }
    drop(linux);
    esp.mark_good(Slot::B).unwrap();
    assert_eq!(
        esp.read(&format!("{UKI_DIR}/mallee-b.efi")).unwrap(),
        b"new b"
    );
    assert_eq!(
        esp.read(&format!("{UKI_DIR}/mallee-a.efi")).unwrap(),
        b"slot a"
    );
    esp.close().unwrap();

    // Read back through a read-only handle: listing and reading write nothing.
    let before = std::fs::read(&path).unwrap();
    let esp = Esp::partition(&path, false).unwrap();
    let files = esp.slot_files().unwrap();
    assert_eq!(files.len(), 2);
    assert!(files.iter().all(|(_, f)| f.tries.is_none()));
    drop(esp);
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_file_without_a_partition_table_is_not_an_image() {
    let dir = temp_dir("nogpt");
    let path = dir.join("junk.img");
    std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    assert!(matches!(
        Esp::in_image(&path, false),
        Err(ApplianceError::NoGpt(_))
    ));
    let _ = std::fs::remove_dir_all(dir);
}
