//! The guest physical address map and the fixed port numbers and interrupt lines.
//!
//! One place for every fixed address so the boot code, the e820 map, the MP table and the device
//! placement agree. RAM fills `[0, PCI_MMIO_START)` and continues at 4 GiB when there is more.

/// The boot GDT (four 8-byte entries).
pub const BOOT_GDT: u64 = 0x500;
/// The empty boot IDT.
pub const BOOT_IDT: u64 = 0x520;
/// The Linux zero page (`boot_params`).
pub const ZERO_PAGE: u64 = 0x7000;
/// The boot PML4; the PDPT follows at +0x1000 and four page directories at +0x2000..+0x6000.
pub const PML4: u64 = 0x9000;
/// The kernel command line.
pub const CMDLINE: u64 = 0x20000;
/// Room for the command line (Linux's COMMAND_LINE_SIZE on x86_64 is 2048).
pub const CMDLINE_MAX: usize = 2048;
/// The start of the extended BIOS data area; the MP table lives here.
pub const EBDA_START: u64 = 0x9_fc00;
/// The end of conventional memory (the VGA hole follows).
pub const LOW_RAM_END: u64 = 0xa_0000;
/// The SMBIOS entry points and structure table, in the BIOS area Linux scans for them
/// (0xF0000-0xFFFFF; the ACPI tables are below, from 0xE0000).
pub const SMBIOS_START: u64 = 0xf_0000;
/// Where bzImage and ELF kernels are loaded.
pub const HIGH_RAM_START: u64 = 0x10_0000;
/// Start of the 32-bit hole for PCI BARs, the IOAPIC and the local APIC.
pub const PCI_MMIO_START: u64 = 0xc000_0000;
/// Where BARs are allocated from (inside the hole).
pub const PCI_BAR_START: u64 = 0xd000_0000;
/// End of the BAR window.
pub const PCI_BAR_END: u64 = 0xfe00_0000;
/// The IOAPIC's MMIO base (fixed by KVM's in-kernel IOAPIC).
pub const IOAPIC_BASE: u64 = 0xfec0_0000;
/// The local APIC's MMIO base.
pub const LAPIC_BASE: u64 = 0xfee0_0000;
/// RAM above the hole starts here.
pub const HIGH_RAM_4G: u64 = 1 << 32;
/// The TSS KVM needs on Intel (three pages just below the IOAPIC... placed before the BIOS area).
pub const KVM_TSS: u64 = 0xfffb_d000;
/// The identity map page KVM needs on Intel.
pub const KVM_IDENTITY_MAP: u64 = 0xfffb_c000;

/// The COM1 port base.
pub const SERIAL_PORT: u16 = 0x3f8;
/// COM1's interrupt line.
pub const SERIAL_IRQ: u32 = 4;
/// The i8042 data port.
pub const I8042_DATA: u16 = 0x60;
/// The i8042 command/status port.
pub const I8042_CMD: u16 = 0x64;
/// PCI configuration mechanism 1 address port.
pub const PCI_CONFIG_ADDRESS: u16 = 0xcf8;
/// First GSI handed to MSI routes (after the IOAPIC's 24 pins).
pub const MSI_GSI_START: u32 = 24;
/// Number of IOAPIC pins.
pub const IOAPIC_PINS: u32 = 24;

/// The guest RAM ranges for `mem_bytes` of RAM: below the PCI hole, then above 4 GiB.
pub fn ram_ranges(mem_bytes: u64) -> Vec<(u64, u64)> {
    if mem_bytes <= PCI_MMIO_START {
        vec![(0, mem_bytes)]
    } else {
        vec![
            (0, PCI_MMIO_START),
            (HIGH_RAM_4G, mem_bytes - PCI_MMIO_START),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_range() {
        assert_eq!(ram_ranges(256 << 20), vec![(0, 256 << 20)]);
    }

    #[test]
    fn large_memory_skips_the_pci_hole() {
        let r = ram_ranges(4 << 30);
        assert_eq!(r[0], (0, PCI_MMIO_START));
        assert_eq!(r[1], (HIGH_RAM_4G, (4 << 30) - PCI_MMIO_START));
    }
}
