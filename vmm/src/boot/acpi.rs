//! ACPI tables, so a guest finds its CPUs and IOAPIC (MADT), its PCI root bridge (DSDT `PCI0`)
//! and how to power itself off (FADT PM1a control block at [`PM1A_CNT`], DSDT `_S5`).
//!
//! Layout in the BIOS area (reserved in the e820 map): RSDP at [`RSDP_ADDR`], FACS, DSDT, FADT,
//! MADT, XSDT. The AML is assembled here by hand: one root bridge with its resource windows and
//! the S5 sleep package; no _PRT (devices use MSI-X), no power button, no PM timer.

use vm_memory::{Bytes, GuestAddress};

use crate::devices::virtio::GuestMemoryMmap;
use crate::layout;

/// Where the RSDP lives (inside the 0xE0000-0xFFFFF range Linux scans, and in boot_params).
pub const RSDP_ADDR: u64 = 0xe_0000;
/// PM1a event block (status, enable), I/O port.
pub const PM1A_EVT: u16 = 0x600;
/// PM1a control block, I/O port.
pub const PM1A_CNT: u16 = 0x604;
/// The SLP_TYP value `_S5` names.
pub const S5_SLP_TYP: u16 = 5;
const SCI_IRQ: u16 = 9;
const OEM_ID: &[u8; 6] = b"MALLEE";

/// Writing the tables failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write ACPI table {0} into guest memory")]
pub struct AcpiError(pub &'static str);

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_sub(*b))
}

/// A system description table: header (checksummed on finish) and body.
fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(36 + body.len());
    t.extend_from_slice(signature);
    t.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
    t.push(revision);
    t.push(0);
    t.extend_from_slice(OEM_ID);
    t.extend_from_slice(b"MALLEEVM");
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(b"MLEE");
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

/// AML PkgLength for a payload of `len` bytes (the encoding counts its own bytes).
fn pkg_length(len: usize) -> Vec<u8> {
    if len + 1 < 0x40 {
        return vec![(len + 1) as u8];
    }
    for extra in 1..=3usize {
        let total = len + 1 + extra;
        if total < 1 << (4 + 8 * extra) {
            let mut v = vec![((extra as u8) << 6) | (total & 0xf) as u8];
            for i in 0..extra {
                v.push((total >> (4 + 8 * i)) as u8);
            }
            return v;
        }
    }
    unreachable!("AML objects here are small")
}

fn aml_pkg(op: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = op.to_vec();
    v.extend(pkg_length(body.len()));
    v.extend_from_slice(body);
    v
}

fn aml_name(name: &[u8; 4], value: &[u8]) -> Vec<u8> {
    let mut v = vec![0x08];
    v.extend_from_slice(name);
    v.extend_from_slice(value);
    v
}

fn word_space(kind: u8, type_flags: u8, min: u16, max: u16) -> Vec<u8> {
    let mut d = vec![0x88, 13, 0, kind, 0x0c, type_flags];
    for v in [0u16, min, max, 0, max - min + 1] {
        d.extend_from_slice(&v.to_le_bytes());
    }
    d
}

/// The `_CRS` buffer of the root bridge: bus 0-255, the config ports, all other I/O ports and
/// the BAR window.
fn root_resources() -> Vec<u8> {
    let mut r = word_space(2, 0, 0, 0xff);
    r.extend_from_slice(&[0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08]);
    r.extend(word_space(1, 3, 0, 0x0cf7));
    r.extend(word_space(1, 3, 0x0d00, 0xffff));
    let (min, max) = (layout::PCI_BAR_START as u32, layout::PCI_BAR_END as u32 - 1);
    let mut m = vec![0x87, 23, 0, 0, 0x0c, 0x01];
    for v in [0u32, min, max, 0, max - min + 1] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    r.extend(m);
    r.extend_from_slice(&[0x79, 0]);
    r
}

/// The DSDT body: `\_SB.PCI0` and `\_S5`.
pub fn dsdt_aml() -> Vec<u8> {
    let crs = root_resources();
    let mut buffer = vec![0x0b];
    buffer.extend_from_slice(&(crs.len() as u16).to_le_bytes());
    buffer.extend(crs);
    let mut dev = aml_name(b"_HID", &[0x0c, 0x41, 0xd0, 0x0a, 0x03]); // EisaId("PNP0A03")
    dev.extend(aml_name(b"_UID", &[0x00]));
    dev.extend(aml_name(b"_CRS", &aml_pkg(&[0x11], &buffer)));
    let mut device_body = b"PCI0".to_vec();
    device_body.extend(dev);
    let device = aml_pkg(&[0x5b, 0x82], &device_body);
    let mut scope_body = b"_SB_".to_vec();
    scope_body.extend(device);
    let mut aml = aml_pkg(&[0x10], &[&[0x5c][..], &scope_body].concat());
    let s5 = aml_pkg(&[0x12], &[0x04, 0x0a, S5_SLP_TYP as u8, 0x00, 0x00, 0x00]);
    aml.extend(aml_name(b"_S5_", &s5));
    aml
}

fn gas_io(bits: u8, port: u16) -> [u8; 12] {
    let mut g = [0u8; 12];
    g[0] = 1; // system I/O
    g[1] = bits;
    g[3] = if bits == 16 { 2 } else { 3 };
    g[4..6].copy_from_slice(&port.to_le_bytes());
    g
}

fn fadt(dsdt: u64, facs: u64) -> Vec<u8> {
    let mut b = vec![0u8; 276 - 36];
    let mut put =
        |off: usize, bytes: &[u8]| b[off - 36..off - 36 + bytes.len()].copy_from_slice(bytes);
    put(36, &(facs as u32).to_le_bytes());
    put(40, &(dsdt as u32).to_le_bytes());
    put(46, &SCI_IRQ.to_le_bytes());
    put(56, &u32::from(PM1A_EVT).to_le_bytes());
    put(64, &u32::from(PM1A_CNT).to_le_bytes());
    put(88, &[4, 2]); // PM1_EVT_LEN, PM1_CNT_LEN
                      // IAPC_BOOT_ARCH: no VGA, no CMOS RTC, and no 8042 to probe (the i8042 here only resets).
                      // MSI stays allowed.
    put(109, &(0x4u16 | 0x20).to_le_bytes());
    // Flags: WBINVD, no fixed power/sleep buttons.
    put(112, &(0x1u32 | 0x10 | 0x20).to_le_bytes());
    put(131, &[3]); // FADT minor version (6.3)
    put(132, &facs.to_le_bytes());
    put(140, &dsdt.to_le_bytes());
    put(148, &gas_io(32, PM1A_EVT));
    put(172, &gas_io(16, PM1A_CNT));
    sdt(b"FACP", 6, &b)
}

fn madt(vcpus: u8) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(layout::LAPIC_BASE as u32).to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT: legacy PICs present
    for id in 0..vcpus {
        b.extend_from_slice(&[0, 8, id, id, 1, 0, 0, 0]);
    }
    b.extend_from_slice(&[1, 12, vcpus, 0]);
    b.extend_from_slice(&(layout::IOAPIC_BASE as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    // SCI on IRQ 9: level triggered, active high.
    b.extend_from_slice(&[2, 10, 0, SCI_IRQ as u8]);
    b.extend_from_slice(&u32::from(SCI_IRQ).to_le_bytes());
    b.extend_from_slice(&0x000du16.to_le_bytes());
    // NMI on LINT1 of every processor.
    b.extend_from_slice(&[4, 6, 0xff, 0, 0, 1]);
    sdt(b"APIC", 5, &b)
}

fn facs() -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[0..4].copy_from_slice(b"FACS");
    f[4..8].copy_from_slice(&64u32.to_le_bytes());
    f[32] = 2; // version
    f
}

fn rsdp(xsdt: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(36);
    r.extend_from_slice(b"RSD PTR ");
    r.push(0);
    r.extend_from_slice(OEM_ID);
    r.push(2);
    r.extend_from_slice(&0u32.to_le_bytes());
    r.extend_from_slice(&36u32.to_le_bytes());
    r.extend_from_slice(&xsdt.to_le_bytes());
    r.extend_from_slice(&[0; 4]);
    r[8] = checksum(&r[..20]);
    r[32] = checksum(&r);
    r
}

/// Writes all tables for `vcpus` CPUs; returns the RSDP address.
pub fn write(mem: &GuestMemoryMmap, vcpus: u8) -> Result<u64, AcpiError> {
    let align = |a: u64, n: u64| a.div_ceil(n) * n;
    let facs_addr = RSDP_ADDR + 0x40;
    let dsdt_addr = facs_addr + 64;
    let dsdt = sdt(b"DSDT", 2, &dsdt_aml());
    let fadt_addr = align(dsdt_addr + dsdt.len() as u64, 8);
    let fadt = fadt(dsdt_addr, facs_addr);
    let madt_addr = align(fadt_addr + fadt.len() as u64, 8);
    let madt = madt(vcpus);
    let xsdt_addr = align(madt_addr + madt.len() as u64, 8);
    let xsdt = sdt(
        b"XSDT",
        1,
        &[fadt_addr.to_le_bytes(), madt_addr.to_le_bytes()].concat(),
    );
    for (name, addr, bytes) in [
        ("RSDP", RSDP_ADDR, rsdp(xsdt_addr)),
        ("FACS", facs_addr, facs()),
        ("DSDT", dsdt_addr, dsdt),
        ("FADT", fadt_addr, fadt),
        ("MADT", madt_addr, madt),
        ("XSDT", xsdt_addr, xsdt),
    ] {
        mem.write_slice(&bytes, GuestAddress(addr))
            .map_err(|_| AcpiError(name))?;
    }
    Ok(RSDP_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums_to_zero(b: &[u8]) -> bool {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x)) == 0
    }

    #[test]
    fn tables_checksum_and_have_their_lengths() {
        let dsdt = sdt(b"DSDT", 2, &dsdt_aml());
        for t in [dsdt, fadt(0xe0080, 0xe0040), madt(4)] {
            assert!(sums_to_zero(&t));
            assert_eq!(
                u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize,
                t.len()
            );
        }
        assert_eq!(fadt(0, 0).len(), 276);
        let r = rsdp(0xe0200);
        assert!(sums_to_zero(&r[..20]) && sums_to_zero(&r));
    }

    #[test]
    fn pkg_length_encodes_one_and_two_byte_forms() {
        assert_eq!(pkg_length(5), vec![6]);
        // 100 bytes of payload + 2 bytes of length = 102 = 0x66: low nibble 6, then 0x06.
        assert_eq!(pkg_length(100), vec![0x46, 0x06]);
    }

    #[test]
    fn s5_package_is_the_standard_encoding() {
        let aml = dsdt_aml();
        let s5 = [
            0x08, b'_', b'S', b'5', b'_', 0x12, 0x07, 0x04, 0x0a, 0x05, 0, 0, 0,
        ];
        assert!(aml.windows(s5.len()).any(|w| w == s5));
    }

    #[test]
    fn madt_lists_every_cpu_and_the_ioapic() {
        let m = madt(3);
        let body = &m[44..];
        assert_eq!(
            body.iter().step_by(8).take(3).filter(|t| **t == 0).count(),
            3
        );
        assert_eq!(&body[24..26], &[1, 12]);
    }
}
