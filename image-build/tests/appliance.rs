//! The flashable appliance image built from the pinned kernel and boot loader: reproducible, a
//! GPT that gptman reads back (ESP first, then the data partition by its label), an ESP that
//! fatfs reads back with systemd-boot on the removable-media path and one unified kernel image
//! per slot whose PE sections carry exactly the bundle's kernel, initramfs and a slot command
//! line.

use mallee_image_build::appliance::{self, ApplianceSpec, DATA_PARTLABEL};
use mallee_proto::appliance::{Esp, Slot};
use object::{Object, ObjectSection};
use std::io::Read;
use std::path::Path;

/// A frontend bundle with the real kernel and a stand-in initramfs.
fn bundle(dir: &Path) {
    let kernel = mallee_image_build::pinned_kernel().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(kernel.vmlinuz(), dir.join("vmlinuz")).unwrap();
    std::fs::write(dir.join("initramfs"), vec![0x5a; 3 << 20]).unwrap();
    std::fs::write(dir.join("cmdline"), "console=ttyS0 mallee.role=frontend\n").unwrap();
}

#[test]
fn the_image_is_reproducible_and_reads_back_as_gpt_fat_and_uki() {
    let tmp = tempfile::tempdir().unwrap();
    let b = tmp.path().join("bundle");
    bundle(&b);
    let boot = mallee_image_build::pinned_boot().unwrap();
    let spec = ApplianceSpec {
        bundle: &b,
        boot: &boot,
        esp_mib: 64,
        data_mib: 16,
        version: "0.1.0.1764860000",
        cmdline_append: "",
    };
    let (a_img, b_img) = (tmp.path().join("a.img"), tmp.path().join("b.img"));
    let report = appliance::build(&spec, &a_img).unwrap();
    appliance::build(&spec, &b_img).unwrap();
    let bytes = std::fs::read(&a_img).unwrap();
    assert!(bytes == std::fs::read(&b_img).unwrap(), "two builds differ");
    assert_eq!(bytes.len() as u64, report.bytes);
    assert_eq!(report.bytes, (1 + 64 + 16 + 1) << 20);

    // The partition table: protective MBR, ESP then data, 1 MiB aligned.
    assert_eq!(&bytes[510..512], &[0x55, 0xaa]);
    assert_eq!(bytes[450], 0xee, "no protective MBR partition");
    let gpt = gptman::GPT::find_from(&mut std::fs::File::open(&a_img).unwrap()).unwrap();
    let parts: Vec<_> = gpt.iter().filter(|(_, p)| p.is_used()).collect();
    assert_eq!(parts.len(), 2);
    let (esp, data) = (parts[0].1, parts[1].1);
    assert_eq!(esp.partition_name.as_str(), "mallee-esp");
    assert_eq!(data.partition_name.as_str(), DATA_PARTLABEL);
    assert_eq!(
        (esp.starting_lba, esp.ending_lba + 1),
        (2048, 2048 + 64 * 2048)
    );
    assert_eq!(data.starting_lba, esp.ending_lba + 1);
    assert_eq!(data.ending_lba + 1 - data.starting_lba, 16 * 2048);
    let data_at = (data.starting_lba * 512) as usize;
    assert!(
        bytes[data_at..data_at + (16 << 20)].iter().all(|&b| b == 0),
        "the data partition is not blank (mallee-init would refuse to format it)"
    );

    // The ESP.
    let esp_bytes =
        bytes[(esp.starting_lba * 512) as usize..((esp.ending_lba + 1) * 512) as usize].to_vec();
    let fs =
        fatfs::FileSystem::new(std::io::Cursor::new(esp_bytes), fatfs::FsOptions::new()).unwrap();
    let read = |path: &str| {
        let mut out = Vec::new();
        (fs.root_dir().open_file(path))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .read_to_end(&mut out)
            .unwrap();
        out
    };
    assert_eq!(
        read("EFI/BOOT/BOOTX64.EFI"),
        std::fs::read(&boot.loader).unwrap()
    );
    assert_eq!(
        String::from_utf8(read("loader/loader.conf")).unwrap(),
        appliance::loader_conf(Slot::A)
    );
    let vmlinuz = std::fs::read(b.join("vmlinuz")).unwrap();
    let initramfs = std::fs::read(b.join("initramfs")).unwrap();
    for slot in Slot::ALL {
        let uki = read(&format!("EFI/Linux/mallee-{slot}.efi"));
        let pe = object::read::pe::PeFile64::parse(&*uki).unwrap();
        let section = |name: &str| {
            let s = pe
                .section_by_name(name)
                .unwrap_or_else(|| panic!("no {name}"));
            s.data().unwrap().to_vec()
        };
        // PE pads raw section data to the file alignment.
        assert_eq!(&section(".linux")[..vmlinuz.len()], &vmlinuz[..]);
        assert_eq!(&section(".initrd")[..initramfs.len()], &initramfs[..]);
        let cmdline = String::from_utf8(section(".cmdline")).unwrap();
        assert!(
            cmdline.starts_with(&format!(
                "console=ttyS0 mallee.role=frontend mallee.data=PARTLABEL={DATA_PARTLABEL} mallee.slot={slot}"
            )),
            "{cmdline:?}"
        );
        let osrel = String::from_utf8(section(".osrel")).unwrap();
        assert!(
            osrel.contains(&format!("VERSION_ID={}", report.version)),
            "{osrel}"
        );
    }

    // What the appliance's upgrade reads: the ESP found by its GPT name, each slot's image
    // naming its own slot and carrying the version and build id.
    let esp = Esp::in_image(&a_img, false).unwrap();
    for slot in Slot::ALL {
        let mallee_proto::appliance::SlotImage { file, uki, .. } =
            esp.slot_image(slot).unwrap().expect("slot image");
        assert_eq!((file.slot, file.tries), (slot, None));
        assert_eq!(uki.slot(), Some(slot));
        assert_eq!(uki.os_release.version_id, "0.1.0.1764860000");
        assert_eq!(uki.os_release.build_id, report.build_id);
    }
}

#[test]
fn an_esp_too_small_for_the_slots_is_an_error_naming_the_size() {
    let tmp = tempfile::tempdir().unwrap();
    let b = tmp.path().join("bundle");
    bundle(&b);
    let boot = mallee_image_build::pinned_boot().unwrap();
    let spec = ApplianceSpec {
        bundle: &b,
        boot: &boot,
        esp_mib: 8,
        data_mib: 16,
        version: "0.1.0.1",
        cmdline_append: "",
    };
    let err = appliance::build(&spec, &tmp.path().join("x.img")).unwrap_err();
    assert!(err.to_string().contains("--esp-mib"), "{err}");
}
