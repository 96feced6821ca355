//! SMBIOS tables: what the guest's `/sys/class/dmi/id` says the machine is (vendor, product,
//! UUID, serial, asset tag), which is how cloud-init's `ds-identify` tells it runs on EC2
//! (product UUID and serial that start with `ec2` and are equal, vendor `Amazon EC2`).
//!
//! Layout in the BIOS area (reserved in the e820 map; Linux's `dmi_scan` looks there, 16 bytes at
//! a time, on a non-EFI boot): the 64-bit SMBIOS 3.0 entry point (`_SM3_`) at
//! [`layout::SMBIOS_START`], which Linux 3.19 and later take first; a 32-bit SMBIOS 2.8 entry
//! point (`_SM_` ... `_DMI_`) 32 bytes later for older guests and tools; then the one structure
//! table both name: BIOS (type 0), system (type 1), chassis (type 3), end of table (type 127).
//! Both versions are 2.6 or later, so Linux prints the UUID's first three fields from
//! little-endian bytes, as [`Uuid::to_bytes_le`] lays them out.
//!
//! This module does not choose the identity: the configuration's `smbios` section does (the node
//! agent's EC2 identity), else [`generic_identity`]. No processor, memory or slot structures:
//! guests take those from ACPI and the e820 map.

use vm_memory::{Bytes, GuestAddress};

use crate::devices::virtio::GuestMemoryMmap;
use crate::layout;
pub use mallee_proto::vmm::{SystemIdentity, Uuid};

/// The 64-bit entry point's address.
pub const ENTRY_POINT_64: u64 = layout::SMBIOS_START;
/// The 32-bit entry point's address (16-byte aligned, after the 64-bit one).
pub const ENTRY_POINT_32: u64 = layout::SMBIOS_START + 0x20;
/// The structure table's address.
pub const TABLE_ADDR: u64 = layout::SMBIOS_START + 0x40;
/// Room for the table: up to the end of the BIOS area.
pub const TABLE_MAX: usize = (layout::HIGH_RAM_START - TABLE_ADDR) as usize;
/// Longest string (SMBIOS's 64 significant characters, counted in bytes).
pub const MAX_STRING: usize = 64;
/// Vendor and product of the identity when the configuration names none.
pub const GENERIC_VENDOR: &str = "Mallee";
/// See [`GENERIC_VENDOR`].
pub const GENERIC_PRODUCT: &str = "mallee-vmm";

/// Lengths of the entry points and of each structure's formatted area (DSP0134 3.0.0: §5.2.1,
/// §5.2.2, §7.1 as of SMBIOS 2.4, §7.2 as of 2.4, §7.4 as of 2.7 with no contained elements,
/// §7.45).
const EP64_LEN: usize = 0x18;
const EP32_LEN: usize = 0x1f;
const BIOS_LEN: u8 = 0x18;
const SYSTEM_LEN: u8 = 0x1b;
const CHASSIS_LEN: u8 = 0x16;
const END_LEN: u8 = 0x04;

// The entry points do not run into each other or into the table.
const _: () = assert!(ENTRY_POINT_64 + EP64_LEN as u64 <= ENTRY_POINT_32);
const _: () = assert!(ENTRY_POINT_32 + EP32_LEN as u64 <= TABLE_ADDR);

const TYPE_BIOS: u8 = 0;
const TYPE_SYSTEM: u8 = 1;
const TYPE_CHASSIS: u8 = 3;
const TYPE_END: u8 = 127;

/// BIOS characteristics: PCI is supported.
const BIOS_PCI: u64 = 1 << 7;
/// BIOS characteristics extension byte 2: targeted content distribution, virtual machine.
const BIOS_EXT2_TCD_VM: u8 = (1 << 2) | (1 << 4);
/// Wake-up type: power switch.
const WAKE_POWER_SWITCH: u8 = 0x06;
/// Chassis type "Other": a VM has none of the enclosures the list names.
const CHASSIS_OTHER: u8 = 0x01;
/// Chassis boot-up, power supply and thermal state "Safe"; security status "None".
const CHASSIS_SAFE: u8 = 0x03;
const CHASSIS_SECURITY_NONE: u8 = 0x03;

/// What is wrong with an identity, or with putting its tables into guest memory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmbiosError {
    /// A string the tables would carry is empty, too long or holds a control character.
    #[error("SMBIOS {field} `{value}` is not 1-{MAX_STRING} bytes without control characters")]
    BadString {
        /// The identity's field.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// The structure table does not fit in the BIOS area.
    #[error("the SMBIOS table of {0} bytes does not fit in {TABLE_MAX} bytes")]
    TooLarge(usize),
    /// Guest memory does not cover the BIOS area.
    #[error("cannot write the SMBIOS {what} at {addr:#x} into guest memory")]
    GuestWrite {
        /// The entry point or the table.
        what: &'static str,
        /// Its guest address.
        addr: u64,
    },
}

/// The identity of a VM whose configuration names none: this VMM as vendor and product, a nil
/// UUID (which SMBIOS and Linux take as "not set"), no serial or asset tag. Valid tables rather
/// than none, so every VM boots through the same path and a guest's DMI tools work, without
/// claiming to be a cloud whose metadata service may not be there.
pub fn generic_identity() -> SystemIdentity {
    SystemIdentity {
        manufacturer: GENERIC_VENDOR.into(),
        product: GENERIC_PRODUCT.into(),
        uuid: Uuid::nil(),
        serial: None,
        asset_tag: None,
    }
}

fn check_string(field: &'static str, value: &str) -> Result<(), SmbiosError> {
    if value.is_empty() || value.len() > MAX_STRING || value.chars().any(char::is_control) {
        return Err(SmbiosError::BadString {
            field,
            value: value.into(),
        });
    }
    Ok(())
}

/// Checks that every string of `id` can be an SMBIOS string (a NUL would end it early; an
/// empty one cannot be told from "no string").
pub fn check(id: &SystemIdentity) -> Result<(), SmbiosError> {
    check_string("manufacturer", &id.manufacturer)?;
    check_string("product", &id.product)?;
    if let Some(s) = &id.serial {
        check_string("serial", s)?;
    }
    if let Some(s) = &id.asset_tag {
        check_string("asset_tag", s)?;
    }
    Ok(())
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_sub(*b))
}

/// One structure being built: its formatted area, header first, then its string set.
struct Structure {
    formatted: Vec<u8>,
    strings: Vec<u8>,
    count: u8,
}

impl Structure {
    /// A zeroed formatted area of `length` bytes with its header (handle: the type in the high
    /// byte, so each of these structures has its own).
    fn new(kind: u8, length: u8) -> Structure {
        let mut formatted = vec![0u8; usize::from(length)];
        formatted[0] = kind;
        formatted[1] = length;
        formatted[2..4].copy_from_slice(&(u16::from(kind) << 8).to_le_bytes());
        Structure {
            formatted,
            strings: Vec::new(),
            count: 0,
        }
    }

    fn put(&mut self, offset: usize, bytes: &[u8]) {
        self.formatted[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    /// Puts `s` in the string set and its number at `offset`; `None` leaves the number 0 (no
    /// string). The strings were checked: non-empty, no NUL.
    fn string(&mut self, offset: usize, s: Option<&str>) {
        if let Some(s) = s {
            self.count += 1;
            self.formatted[offset] = self.count;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
        }
    }

    /// The structure: formatted area, strings, and the NUL that ends the set (two NULs when
    /// there are no strings).
    fn finish(mut self) -> Vec<u8> {
        if self.strings.is_empty() {
            self.strings.push(0);
        }
        self.strings.push(0);
        self.formatted.extend(self.strings);
        self.formatted
    }
}

fn bios(id: &SystemIdentity) -> Vec<u8> {
    let mut s = Structure::new(TYPE_BIOS, BIOS_LEN);
    s.string(0x04, Some(&id.manufacturer));
    s.string(0x05, Some(env!("CARGO_PKG_VERSION")));
    // 0x06 starting segment 0 (no legacy BIOS), 0x08 no release date, 0x09 ROM size 64 KiB.
    s.put(0x0a, &BIOS_PCI.to_le_bytes());
    s.put(0x13, &[BIOS_EXT2_TCD_VM]);
    // System BIOS release 1.0; no embedded controller.
    s.put(0x14, &[1, 0, 0xff, 0xff]);
    s.finish()
}

fn system(id: &SystemIdentity) -> Vec<u8> {
    let mut s = Structure::new(TYPE_SYSTEM, SYSTEM_LEN);
    s.string(0x04, Some(&id.manufacturer));
    s.string(0x05, Some(&id.product));
    s.string(0x07, id.serial.as_deref());
    s.put(0x08, &id.uuid.to_bytes_le());
    s.put(0x18, &[WAKE_POWER_SWITCH]);
    s.finish()
}

fn chassis(id: &SystemIdentity) -> Vec<u8> {
    let mut s = Structure::new(TYPE_CHASSIS, CHASSIS_LEN);
    s.string(0x04, Some(&id.manufacturer));
    s.put(0x05, &[CHASSIS_OTHER]);
    s.string(0x08, id.asset_tag.as_deref());
    s.put(
        0x09,
        &[
            CHASSIS_SAFE,
            CHASSIS_SAFE,
            CHASSIS_SAFE,
            CHASSIS_SECURITY_NONE,
        ],
    );
    // 0x0d OEM-defined 0, 0x11 height unspecified, 0x12 power cords unspecified, 0x13 no
    // contained elements of 3 bytes each, 0x15 no SKU.
    s.put(0x14, &[3]);
    s.finish()
}

fn end_of_table() -> Vec<u8> {
    Structure::new(TYPE_END, END_LEN).finish()
}

/// The structure table for `id`.
pub struct Table {
    /// The structures, back to back.
    pub bytes: Vec<u8>,
    /// How many structures.
    pub count: u16,
    /// The largest structure, strings included (the 32-bit entry point gives it).
    pub max_structure: u16,
}

/// Builds the structure table for `id`.
pub fn table(id: &SystemIdentity) -> Result<Table, SmbiosError> {
    check(id)?;
    let structures = [bios(id), system(id), chassis(id), end_of_table()];
    let bytes = structures.concat();
    if bytes.len() > TABLE_MAX {
        return Err(SmbiosError::TooLarge(bytes.len()));
    }
    Ok(Table {
        count: structures.len() as u16,
        max_structure: structures.iter().map(Vec::len).max().unwrap_or(0) as u16,
        bytes,
    })
}

/// The SMBIOS 3.0 entry point for a table of `len` bytes at `addr`.
pub fn entry_point_64(addr: u64, len: u32) -> [u8; EP64_LEN] {
    let mut e = [0u8; EP64_LEN];
    e[0..5].copy_from_slice(b"_SM3_");
    e[6] = EP64_LEN as u8;
    e[7..10].copy_from_slice(&[3, 0, 0]); // version 3.0.0
    e[10] = 1; // entry point revision: 3.0
    e[12..16].copy_from_slice(&len.to_le_bytes());
    e[16..24].copy_from_slice(&addr.to_le_bytes());
    e[5] = checksum(&e);
    e
}

/// The SMBIOS 2.8 entry point for `table` at `addr`.
pub fn entry_point_32(addr: u32, table: &Table) -> [u8; EP32_LEN] {
    let mut e = [0u8; EP32_LEN];
    e[0..4].copy_from_slice(b"_SM_");
    e[5] = EP32_LEN as u8;
    e[6..8].copy_from_slice(&[2, 8]);
    e[8..10].copy_from_slice(&table.max_structure.to_le_bytes());
    // 0x0a entry point revision 0, 0x0b formatted area: zeros.
    e[16..21].copy_from_slice(b"_DMI_");
    e[22..24].copy_from_slice(&(table.bytes.len() as u16).to_le_bytes());
    e[24..28].copy_from_slice(&addr.to_le_bytes());
    e[28..30].copy_from_slice(&table.count.to_le_bytes());
    e[30] = 0x28; // BCD revision 2.8
    e[21] = checksum(&e[16..]);
    e[4] = checksum(&e);
    e
}

/// Writes both entry points and the table for `id` (or [`generic_identity`]) into the BIOS area.
pub fn write(mem: &GuestMemoryMmap, id: Option<&SystemIdentity>) -> Result<(), SmbiosError> {
    let generic = generic_identity();
    let table = table(id.unwrap_or(&generic))?;
    let ep64 = entry_point_64(TABLE_ADDR, table.bytes.len() as u32);
    let ep32 = entry_point_32(TABLE_ADDR as u32, &table);
    for (what, addr, bytes) in [
        ("3.0 entry point", ENTRY_POINT_64, &ep64[..]),
        ("2.8 entry point", ENTRY_POINT_32, &ep32[..]),
        ("table", TABLE_ADDR, &table.bytes[..]),
    ] {
        mem.write_slice(bytes, GuestAddress(addr))
            .map_err(|_| SmbiosError::GuestWrite { what, addr })?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "smbios_tests.rs"]
mod tests;
