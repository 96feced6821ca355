use smbioslib::{
    SMBiosData, SMBiosEntryPoint32, SMBiosEntryPoint64, SMBiosInformation,
    SMBiosSystemChassisInformation, SMBiosSystemInformation, SMBiosVersion, SystemUuidData,
};

use super::*;
use crate::boot::{acpi, mptable};

const UUID: &str = "ec2f1a7e-3c4d-8e5f-9a6b-7c8d9e0f1a2b";

fn ec2() -> SystemIdentity {
    SystemIdentity {
        manufacturer: "Amazon EC2".into(),
        product: "m1.small".into(),
        uuid: UUID.parse().unwrap(),
        serial: Some(UUID.into()),
        asset_tag: Some("i-0123456789abcdef0".into()),
    }
}

fn sums_to_zero(b: &[u8]) -> bool {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x)) == 0
}

/// The UUID as Linux's `dmi_save_uuid` prints it for SMBIOS 2.6 and later (`%pUl`: the first
/// three fields little-endian).
fn linux_product_uuid(d: &[u8]) -> String {
    let hex = |idx: &[usize]| {
        idx.iter()
            .map(|i| format!("{:02x}", d[*i]))
            .collect::<String>()
    };
    format!(
        "{}-{}-{}-{}-{}",
        hex(&[3, 2, 1, 0]),
        hex(&[5, 4]),
        hex(&[7, 6]),
        hex(&[8, 9]),
        hex(&[10, 11, 12, 13, 14, 15])
    )
}

fn parsed(t: &Table) -> SMBiosData {
    SMBiosData::from_vec_and_version(
        t.bytes.clone(),
        Some(SMBiosVersion {
            major: 3,
            minor: 0,
            revision: 0,
        }),
    )
}

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap()
}

#[test]
fn structures_have_the_specs_lengths() {
    let id = ec2();
    for (bytes, kind, len) in [
        (bios(&id), TYPE_BIOS, 0x18),
        (system(&id), TYPE_SYSTEM, 0x1b),
        (chassis(&id), TYPE_CHASSIS, 0x16),
        (end_of_table(), TYPE_END, 0x04),
    ] {
        assert_eq!((bytes[0], bytes[1]), (kind, len));
        // Each ends its string set with two NULs.
        assert_eq!(&bytes[bytes.len() - 2..], &[0, 0]);
    }
    let t = table(&id).unwrap();
    assert_eq!(entry_point_64(TABLE_ADDR, 1).len(), 0x18);
    assert_eq!(entry_point_32(TABLE_ADDR as u32, &t).len(), 0x1f);
}

#[test]
fn structure_without_strings_ends_with_two_nuls() {
    assert_eq!(end_of_table(), vec![127, 4, 0x00, 0x7f, 0, 0]);
}

#[test]
fn handles_are_unique() {
    let t = table(&ec2()).unwrap();
    let data = parsed(&t);
    let mut handles: Vec<u16> = data.iter().map(|s| s.header.handle().0).collect();
    assert_eq!(handles.len(), 4);
    handles.sort_unstable();
    handles.dedup();
    assert_eq!(handles.len(), 4);
}

#[test]
fn entry_points_checksum_to_zero_and_name_the_table() {
    let t = table(&ec2()).unwrap();
    let ep64 = entry_point_64(TABLE_ADDR, t.bytes.len() as u32);
    let ep32 = entry_point_32(TABLE_ADDR as u32, &t);
    assert!(sums_to_zero(&ep64));
    assert!(sums_to_zero(&ep32));
    assert!(
        sums_to_zero(&ep32[0x10..]),
        "the intermediate (_DMI_) checksum"
    );

    let e = SMBiosEntryPoint64::try_from(ep64.to_vec()).unwrap();
    assert_eq!((e.major_version(), e.minor_version()), (3, 0));
    assert_eq!(e.structure_table_address(), TABLE_ADDR);
    assert_eq!(e.structure_table_maximum_size() as usize, t.bytes.len());

    let e = SMBiosEntryPoint32::try_from(ep32.to_vec()).unwrap();
    assert_eq!((e.major_version(), e.minor_version()), (2, 8));
    assert_eq!(u64::from(e.structure_table_address()), TABLE_ADDR);
    assert_eq!(e.structure_table_length() as usize, t.bytes.len());
    assert_eq!(e.number_of_smbios_structures(), 4);
    // The system structure, with the longest strings, is the largest.
    assert_eq!(e.maximum_structure_size() as usize, system(&ec2()).len());
}

#[test]
fn strings_read_back_as_configured() {
    let t = table(&ec2()).unwrap();
    let data = parsed(&t);
    let sys = data.first::<SMBiosSystemInformation>().unwrap();
    assert_eq!(sys.manufacturer().ok().as_deref(), Some("Amazon EC2"));
    assert_eq!(sys.product_name().ok().as_deref(), Some("m1.small"));
    assert_eq!(sys.serial_number().ok().as_deref(), Some(UUID));
    // No version: string number 0, which smbioslib reads as "".
    assert_eq!(sys.version().ok().as_deref(), Some(""));
    let chassis = data.first::<SMBiosSystemChassisInformation>().unwrap();
    assert_eq!(chassis.manufacturer().ok().as_deref(), Some("Amazon EC2"));
    assert_eq!(
        chassis.asset_tag_number().ok().as_deref(),
        Some("i-0123456789abcdef0")
    );
    let bios = data.first::<SMBiosInformation>().unwrap();
    assert_eq!(bios.vendor().ok().as_deref(), Some("Amazon EC2"));
    assert_eq!(
        bios.version().ok().as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        (
            bios.system_bios_major_release(),
            bios.system_bios_minor_release()
        ),
        (Some(1), Some(0))
    );
}

#[test]
fn uuid_reads_as_configured_the_way_linux_prints_it() {
    let sys = system(&ec2());
    let raw = &sys[0x08..0x18];
    let linux = linux_product_uuid(raw);
    assert_eq!(linux, UUID);
    assert!(linux.starts_with("ec2"));
    // What ds-identify compares: uuid and serial start with ec2 and are equal, ignoring case.
    let serial = ec2().serial.unwrap();
    assert!(linux.eq_ignore_ascii_case(&serial));
    // The big-endian reading (SMBIOS before 2.6) would not start with ec2.
    assert_eq!(&raw[..4], &[0x7e, 0x1a, 0x2f, 0xec]);

    let t = table(&ec2()).unwrap();
    let parsed = parsed(&t);
    match parsed.first::<SMBiosSystemInformation>().unwrap().uuid() {
        Some(SystemUuidData::Uuid(u)) => assert_eq!(u.to_string(), UUID),
        other => panic!("uuid {other:?}"),
    }
}

#[test]
fn absent_serial_and_asset_tag_have_no_string() {
    let id = SystemIdentity {
        serial: None,
        asset_tag: None,
        ..ec2()
    };
    let sys = system(&id);
    assert_eq!(sys[0x07], 0, "serial: no string");
    let chassis = chassis(&id);
    assert_eq!(chassis[0x08], 0, "asset tag: no string");
    let t = table(&id).unwrap();
    let data = parsed(&t);
    let sys = data.first::<SMBiosSystemInformation>().unwrap();
    assert_eq!(sys.serial_number().ok().as_deref(), Some(""));
    // The strings that are there still read back.
    assert_eq!(sys.product_name().ok().as_deref(), Some("m1.small"));
}

#[test]
fn bad_strings_are_refused_naming_the_field() {
    for (id, field) in [
        (
            SystemIdentity {
                product: String::new(),
                ..ec2()
            },
            "product",
        ),
        (
            SystemIdentity {
                manufacturer: "Amazon\0EC2".into(),
                ..ec2()
            },
            "manufacturer",
        ),
        (
            SystemIdentity {
                serial: Some("x".repeat(MAX_STRING + 1)),
                ..ec2()
            },
            "serial",
        ),
        (
            SystemIdentity {
                asset_tag: Some("i-1\n".into()),
                ..ec2()
            },
            "asset_tag",
        ),
    ] {
        match table(&id) {
            Err(SmbiosError::BadString { field: f, .. }) => assert_eq!(f, field),
            Err(e) => panic!("{field}: {e}"),
            Ok(_) => panic!("{field}: accepted"),
        }
    }
    let longest = SystemIdentity {
        product: "p".repeat(MAX_STRING),
        ..ec2()
    };
    assert!(table(&longest).is_ok());
}

/// Linux's `dmi_scan_machine` without EFI: 16-byte steps through 0xF0000-0xFFFFF, a valid
/// `_SM3_` anywhere first, then `_SM_` followed by `_DMI_`.
fn linux_scan(mem: &GuestMemoryMmap) -> (Option<u64>, Option<u64>) {
    let mut area = vec![0u8; 0x1_0000];
    mem.read_slice(&mut area, GuestAddress(layout::SMBIOS_START))
        .unwrap();
    let at = |off: usize, anchor: &[u8], len: usize| {
        area[off..].starts_with(anchor)
            && off + len <= area.len()
            && sums_to_zero(&area[off..][..len])
    };
    let sm3 = (0..area.len() - 24)
        .step_by(16)
        .find(|o| at(*o, b"_SM3_", usize::from(area[*o + 6])));
    let sm = (0..area.len() - 32)
        .step_by(16)
        .find(|o| at(*o, b"_SM_", usize::from(area[*o + 5])) && at(*o + 16, b"_DMI_", 15));
    let addr = |o: usize| layout::SMBIOS_START + o as u64;
    (sm3.map(addr), sm.map(addr))
}

#[test]
fn linux_finds_both_entry_points_in_the_bios_area() {
    let mem = memory();
    write(&mem, Some(&ec2())).unwrap();
    assert_eq!(
        linux_scan(&mem),
        (Some(ENTRY_POINT_64), Some(ENTRY_POINT_32))
    );
    let mut ep = [0u8; 24];
    mem.read_slice(&mut ep, GuestAddress(ENTRY_POINT_64))
        .unwrap();
    let e = SMBiosEntryPoint64::try_from(ep.to_vec()).unwrap();
    let mut t = vec![0u8; e.structure_table_maximum_size() as usize];
    mem.read_slice(&mut t, GuestAddress(e.structure_table_address()))
        .unwrap();
    let data = SMBiosData::from_vec_and_version(t, None);
    let sys = data.first::<SMBiosSystemInformation>().unwrap();
    assert_eq!(sys.product_name().ok().as_deref(), Some("m1.small"));
}

#[test]
fn no_identity_gives_the_generic_one_without_a_uuid() {
    let mem = memory();
    write(&mem, None).unwrap();
    let t = table(&generic_identity()).unwrap();
    let mut written = vec![0u8; t.bytes.len()];
    mem.read_slice(&mut written, GuestAddress(TABLE_ADDR))
        .unwrap();
    assert_eq!(written, t.bytes);
    let data = parsed(&t);
    let sys = data.first::<SMBiosSystemInformation>().unwrap();
    assert_eq!(sys.manufacturer().ok().as_deref(), Some(GENERIC_VENDOR));
    assert_eq!(sys.product_name().ok().as_deref(), Some(GENERIC_PRODUCT));
    // All zeros: "not set", which Linux does not show as a product_uuid.
    assert!(matches!(
        sys.uuid(),
        Some(SystemUuidData::IdNotPresentButSettable)
    ));
}

#[test]
fn lies_between_the_acpi_tables_and_the_kernel() {
    let mem = memory();
    let rsdp = acpi::write(&mem, 64).unwrap();
    // The XSDT is the last table written; its length is at offset 4.
    let xsdt: u64 = mem.read_obj(GuestAddress(rsdp + 24)).unwrap();
    let xsdt_len: u32 = mem.read_obj(GuestAddress(xsdt + 4)).unwrap();
    assert!(xsdt + u64::from(xsdt_len) <= layout::SMBIOS_START);
    let mp_end = layout::EBDA_START + 16 + mptable::config_table(64).len() as u64;
    assert!(mp_end <= layout::SMBIOS_START);
    let t = table(&ec2()).unwrap();
    assert!(TABLE_ADDR + t.bytes.len() as u64 <= layout::HIGH_RAM_START);
}

#[test]
fn memory_without_the_bios_area_is_an_error() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x8_0000)]).unwrap();
    assert_eq!(
        write(&mem, None),
        Err(SmbiosError::GuestWrite {
            what: "3.0 entry point",
            addr: ENTRY_POINT_64
        })
    );
}
