//! The Intel MultiProcessor Specification 1.4 table: how a guest without ACPI finds its CPUs,
//! the IOAPIC and the legacy interrupt wiring.
//!
//! Layout: the floating pointer at the start of the EBDA, the configuration table right after it
//! (it may run past the EBDA into the reserved BIOS area, which the e820 map keeps from the guest
//! allocator). Entries: one processor per vCPU, an ISA bus, the IOAPIC, ISA IRQs 0-15 routed to
//! the same IOAPIC pins, and the two local interrupt lines.

use vm_memory::{Bytes, GuestAddress};

use crate::devices::virtio::GuestMemoryMmap;
use crate::layout;

const APIC_VERSION: u8 = 0x14;
const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;
const IOAPIC_ID_OFFSET: u8 = 1;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

/// Writing the table into guest memory failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the MP table at {0:#x}")]
pub struct MpTableError(pub u64);

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_sub(*b))
}

/// The configuration table (header and entries) for `vcpus` CPUs.
pub fn config_table(vcpus: u8) -> Vec<u8> {
    let mut entries = Vec::new();
    for id in 0..vcpus {
        let mut e = vec![
            0u8,
            id,
            APIC_VERSION,
            CPU_ENABLED | if id == 0 { CPU_BSP } else { 0 },
        ];
        e.extend_from_slice(&0x600u32.to_le_bytes()); // signature: family 6
        e.extend_from_slice(&0x201u32.to_le_bytes()); // features: FPU, APIC
        e.extend_from_slice(&[0; 8]);
        entries.push(e);
    }
    entries.push(b"\x01\x00ISA   ".to_vec());
    let ioapic_id = vcpus + IOAPIC_ID_OFFSET;
    let mut ioapic = vec![2u8, ioapic_id, APIC_VERSION, 1];
    ioapic.extend_from_slice(&(layout::IOAPIC_BASE as u32).to_le_bytes());
    entries.push(ioapic);
    for irq in 0..16u8 {
        // ISA IRQ n -> IOAPIC pin n: KVM's default routes send GSI n to both the PIC and pin n.
        entries.push(vec![3, INT_TYPE_INT, 0, 0, 0, irq, ioapic_id, irq]);
    }
    entries.push(vec![4, INT_TYPE_EXTINT, 0, 0, 0, 0, 0, 0]);
    entries.push(vec![4, INT_TYPE_NMI, 0, 0, 0, 0, 0xff, 1]);

    let count = entries.len() as u16;
    let body: Vec<u8> = entries.concat();
    let length = 44 + body.len() as u16;
    let mut t = Vec::with_capacity(length as usize);
    t.extend_from_slice(b"PCMP");
    t.extend_from_slice(&length.to_le_bytes());
    t.push(4); // spec revision 1.4
    t.push(0); // checksum, below
    t.extend_from_slice(b"MALLEE  ");
    t.extend_from_slice(b"000000000000");
    t.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    t.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    t.extend_from_slice(&count.to_le_bytes());
    t.extend_from_slice(&(layout::LAPIC_BASE as u32).to_le_bytes());
    t.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    t.push(0); // extended table checksum
    t.push(0); // reserved
    t.extend_from_slice(&body);
    t[7] = checksum(&t);
    t
}

/// The 16-byte floating pointer naming the configuration table at `table_addr`.
pub fn floating_pointer(table_addr: u32) -> [u8; 16] {
    let mut f = [0u8; 16];
    f[0..4].copy_from_slice(b"_MP_");
    f[4..8].copy_from_slice(&table_addr.to_le_bytes());
    f[8] = 1; // length in 16-byte units
    f[9] = 4; // spec revision
    f[10] = checksum(&f);
    f
}

/// Writes the floating pointer and table for `vcpus` CPUs at the EBDA.
pub fn write(mem: &GuestMemoryMmap, vcpus: u8) -> Result<(), MpTableError> {
    let fp_addr = layout::EBDA_START;
    let table_addr = fp_addr + 16;
    let table = config_table(vcpus);
    mem.write_slice(&floating_pointer(table_addr as u32), GuestAddress(fp_addr))
        .map_err(|_| MpTableError(fp_addr))?;
    mem.write_slice(&table, GuestAddress(table_addr))
        .map_err(|_| MpTableError(table_addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_pointer_checksum_to_zero() {
        for vcpus in [1, 2, 64] {
            let t = config_table(vcpus);
            assert_eq!(t.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
            assert_eq!(u16::from_le_bytes([t[4], t[5]]) as usize, t.len());
            // processors (20 bytes each) + bus + ioapic + 16 irqs + 2 lints
            assert_eq!(u16::from_le_bytes([t[34], t[35]]), u16::from(vcpus) + 20);
        }
        let f = floating_pointer(0x9fc10);
        assert_eq!(f.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
    }

    #[test]
    fn table_fits_below_one_megabyte() {
        let t = config_table(crate::config::MAX_VCPUS);
        assert!(layout::EBDA_START + 16 + (t.len() as u64) < layout::HIGH_RAM_START);
    }
}
