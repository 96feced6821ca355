//! The boot vCPU's long-mode state: a flat GDT, identity page tables for the first 4 GiB,
//! control registers, general registers, FPU, and the local APIC's LINT pins.
//!
//! This is the state Linux's 64-bit boot protocol asks for: paging on with an identity map,
//! `__BOOT_CS`-style flat segments, RSI pointing at the zero page, interrupts off.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use crate::devices::virtio::GuestMemoryMmap;
use crate::layout;

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;
const BOOT_STACK: u64 = 0x8ff0;
const PAGE_PRESENT_RW: u64 = 0x3;
const PAGE_PS: u64 = 0x80;

/// A failed vCPU register setup.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// Writing the GDT or page tables into guest memory failed.
    #[error("cannot write {0} into guest memory")]
    GuestWrite(&'static str),
    /// A KVM register call failed.
    #[error("KVM {what} failed: {err}")]
    Kvm {
        /// Which call.
        what: &'static str,
        /// The error.
        err: kvm_ioctls::Error,
    },
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> RegsError {
    move |err| RegsError::Kvm { what, err }
}

/// A GDT descriptor from flags, base and limit (the layout the CPU reads).
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((u64::from(base) & 0xff00_0000) << 32)
        | ((u64::from(flags) & 0xf0ff) << 40)
        | ((u64::from(limit) & 0x000f_0000) << 32)
        | ((u64::from(base) & 0x00ff_ffff) << 16)
        | (u64::from(limit) & 0x0000_ffff)
}

/// The KVM segment-cache form of a GDT entry.
pub fn segment(entry: u64, index: u8) -> kvm_segment {
    let bit = |shift: u32, mask: u64| ((entry >> shift) & mask) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24),
        limit: {
            let raw = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
            if bit(55, 1) == 1 {
                (raw << 12) | 0xfff
            } else {
                raw
            }
        },
        selector: u16::from(index) * 8,
        type_: bit(40, 0xf),
        present: bit(47, 1),
        dpl: bit(45, 0x3),
        db: bit(54, 1),
        s: bit(44, 1),
        l: bit(53, 1),
        g: bit(55, 1),
        avl: bit(52, 1),
        unusable: u8::from(bit(47, 1) == 0),
        padding: 0,
    }
}

/// The boot GDT: null, 64-bit code, data, TSS.
pub fn boot_gdt() -> [u64; 4] {
    [
        0,
        gdt_entry(0xa09b, 0, 0xfffff),
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x808b, 0, 0xfffff),
    ]
}

/// Writes the identity map of the first 4 GiB (2 MiB pages) and returns the PML4 address.
pub fn write_page_tables(mem: &GuestMemoryMmap) -> Result<u64, RegsError> {
    let w = |v: u64, a: u64| {
        mem.write_obj(v, GuestAddress(a))
            .map_err(|_| RegsError::GuestWrite("the page tables"))
    };
    let pml4 = layout::PML4;
    let pdpt = pml4 + 0x1000;
    let pd = pml4 + 0x2000;
    w(pdpt | PAGE_PRESENT_RW, pml4)?;
    for i in 0..4u64 {
        w((pd + i * 0x1000) | PAGE_PRESENT_RW, pdpt + i * 8)?;
    }
    for i in 0..(4 * 512u64) {
        w((i << 21) | PAGE_PRESENT_RW | PAGE_PS, pd + i * 8)?;
    }
    Ok(pml4)
}

/// Puts `vcpu` in long mode at `entry` with RSI at the zero page.
pub fn setup_long_mode(vcpu: &VcpuFd, mem: &GuestMemoryMmap, entry: u64) -> Result<(), RegsError> {
    let gdt = boot_gdt();
    for (i, e) in gdt.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(layout::BOOT_GDT + i as u64 * 8))
            .map_err(|_| RegsError::GuestWrite("the GDT"))?;
    }
    mem.write_obj(0u64, GuestAddress(layout::BOOT_IDT))
        .map_err(|_| RegsError::GuestWrite("the IDT"))?;
    let pml4 = write_page_tables(mem)?;

    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(kvm("get_sregs"))?;
    sregs.gdt.base = layout::BOOT_GDT;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.idt.base = layout::BOOT_IDT;
    sregs.idt.limit = 7;
    let code = segment(gdt[1], 1);
    let data = segment(gdt[2], 2);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(gdt[3], 3);
    sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
    sregs.cr3 = pml4;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.efer |= EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs).map_err(kvm("set_sregs"))?;

    let regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: BOOT_STACK,
        rbp: BOOT_STACK,
        rsi: layout::ZERO_PAGE,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm("set_regs"))?;

    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("set_fpu"))?;
    Ok(())
}

/// Sets LINT0 to ExtINT and LINT1 to NMI, as firmware does, so the legacy PIC and NMIs reach
/// the boot CPU.
pub fn setup_lint(vcpu: &VcpuFd) -> Result<(), RegsError> {
    const LVT_LINT0: usize = 0x350;
    const LVT_LINT1: usize = 0x360;
    const MODE_EXTINT: u32 = 0x7;
    const MODE_NMI: u32 = 0x4;
    let mut lapic = vcpu.get_lapic().map_err(kvm("get_lapic"))?;
    for (reg, mode) in [(LVT_LINT0, MODE_EXTINT), (LVT_LINT1, MODE_NMI)] {
        let bytes: Vec<u8> = lapic.regs[reg..reg + 4].iter().map(|b| *b as u8).collect();
        let v = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let v = (v & !0x700) | (mode << 8);
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            lapic.regs[reg + i] = *b as _;
        }
    }
    vcpu.set_lapic(&lapic).map_err(kvm("set_lapic"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_segment_is_64_bit_flat_and_present() {
        let cs = segment(boot_gdt()[1], 1);
        assert_eq!((cs.l, cs.present, cs.type_, cs.selector), (1, 1, 0xb, 8));
        assert_eq!(cs.limit, 0xffff_ffff);
        let tss = segment(boot_gdt()[3], 3);
        assert_eq!(tss.type_, 0xb, "busy 64-bit TSS");
    }

    #[test]
    fn page_tables_identity_map_4g_with_2m_pages() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let pml4 = write_page_tables(&mem).unwrap();
        let pd = pml4 + 0x2000;
        let e: u64 = mem.read_obj(GuestAddress(pd + 8 * 1000)).unwrap();
        assert_eq!(e & !0xfff, 1000 << 21);
        assert_eq!(e & 0x83, 0x83);
    }
}
