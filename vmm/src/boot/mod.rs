//! Booting Linux directly in 64-bit mode: load the kernel (bzImage or ELF vmlinux), the initramfs
//! and the command line, write the zero page with the e820 map, the ACPI tables, the MP table and
//! the SMBIOS tables, and put the boot vCPU in long mode at the kernel's 64-bit entry point.
//!
//! Registers, GDT and page tables are in [`regs`], CPUID in [`cpuid`], ACPI in [`acpi`], the MP
//! table (for guests without ACPI) in [`mptable`], the machine's identity in [`smbios`].
//! Application processors are left to the guest's INIT/SIPI through KVM's local APIC.

pub mod acpi;
pub mod cpuid;
pub mod mptable;
pub mod regs;
pub mod smbios;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{self, KernelLoader};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use crate::devices::virtio::GuestMemoryMmap;
use crate::layout;

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const BOOT_FLAG_MAGIC: u16 = 0xaa55;
const HDR_MAGIC: u32 = 0x5372_6448;
const LOADER_UNDEFINED: u8 = 0xff;
const KERNEL_ALIGNMENT: u32 = 0x100_0000;
const DEFAULT_INITRD_MAX: u64 = 0x37ff_ffff;
/// Offset of the 64-bit entry point from a bzImage's protected-mode load address.
const BZIMAGE_64BIT_ENTRY: u64 = 0x200;

/// What went wrong preparing the guest to boot.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file could not be opened or read.
    #[error("cannot read kernel {path}: {err}")]
    KernelFile {
        /// The path.
        path: String,
        /// The error.
        err: std::io::Error,
    },
    /// The kernel is neither a loadable bzImage nor ELF.
    #[error("cannot load kernel: {0}")]
    Kernel(loader::Error),
    /// The initramfs file could not be read.
    #[error("cannot read initrd {path}: {err}")]
    InitrdFile {
        /// The path.
        path: String,
        /// The error.
        err: std::io::Error,
    },
    /// The initramfs does not fit in low memory next to the kernel.
    #[error("initrd of {0} bytes does not fit in guest memory")]
    InitrdTooLarge(u64),
    /// The command line is invalid or too long.
    #[error("bad kernel command line: {0}")]
    Cmdline(String),
    /// Writing boot structures into guest memory failed.
    #[error("cannot write {0} into guest memory")]
    GuestWrite(&'static str),
    /// The SMBIOS tables could not be built or written.
    #[error(transparent)]
    Smbios(#[from] smbios::SmbiosError),
}

/// Where the loaded kernel starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelEntry {
    /// The 64-bit entry point.
    pub entry: u64,
}

/// What to boot.
pub struct BootSpec<'a> {
    /// Kernel image path.
    pub kernel: &'a Path,
    /// Initramfs path.
    pub initrd: Option<&'a Path>,
    /// Command line.
    pub cmdline: &'a str,
    /// Number of vCPUs (for the MP table).
    pub vcpus: u8,
    /// What the SMBIOS tables say the machine is; `None`: [`smbios::generic_identity`].
    pub smbios: Option<&'a smbios::SystemIdentity>,
}

fn is_elf(file: &mut File) -> std::io::Result<bool> {
    let mut magic = [0u8; 4];
    file.seek(SeekFrom::Start(0))?;
    let n = file.read(&mut magic)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(n == 4 && magic == *b"\x7fELF")
}

/// Loads everything into `mem` and returns the entry point for the boot vCPU.
pub fn load(mem: &GuestMemoryMmap, spec: &BootSpec<'_>) -> Result<KernelEntry, BootError> {
    let kfile_err = |err| BootError::KernelFile {
        path: spec.kernel.display().to_string(),
        err,
    };
    let mut kernel = File::open(spec.kernel).map_err(kfile_err)?;
    let high = Some(GuestAddress(layout::HIGH_RAM_START));
    let (entry, header) = if is_elf(&mut kernel).map_err(kfile_err)? {
        let r = loader::Elf::load(mem, None, &mut kernel, high).map_err(BootError::Kernel)?;
        (r.kernel_load.raw_value(), None)
    } else {
        let r = loader::BzImage::load(mem, None, &mut kernel, high).map_err(BootError::Kernel)?;
        (
            r.kernel_load.raw_value() + BZIMAGE_64BIT_ENTRY,
            r.setup_header,
        )
    };

    let mut params = boot_params::default();
    if let Some(h) = header {
        params.hdr = h;
    } else {
        params.hdr.boot_flag = BOOT_FLAG_MAGIC;
        params.hdr.header = HDR_MAGIC;
        params.hdr.kernel_alignment = KERNEL_ALIGNMENT;
    }
    params.hdr.type_of_loader = LOADER_UNDEFINED;

    let mut cmdline =
        Cmdline::new(layout::CMDLINE_MAX).map_err(|e| BootError::Cmdline(e.to_string()))?;
    cmdline
        .insert_str(spec.cmdline)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    loader::load_cmdline(mem, GuestAddress(layout::CMDLINE), &cmdline)
        .map_err(|_| BootError::GuestWrite("the command line"))?;
    params.hdr.cmd_line_ptr = layout::CMDLINE as u32;
    params.hdr.cmdline_size = spec.cmdline.len() as u32 + 1;

    if let Some(path) = spec.initrd {
        let (addr, size) = load_initrd(mem, path, params.hdr.initrd_addr_max)?;
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }

    params.acpi_rsdp_addr =
        acpi::write(mem, spec.vcpus).map_err(|_| BootError::GuestWrite("the ACPI tables"))?;
    let e820 = e820_map(mem);
    params.e820_entries = e820.len() as u8;
    params.e820_table[..e820.len()].copy_from_slice(&e820);

    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(
        &BootParams::new::<boot_params>(&params, GuestAddress(layout::ZERO_PAGE)),
        mem,
    )
    .map_err(|_| BootError::GuestWrite("the zero page"))?;
    mptable::write(mem, spec.vcpus).map_err(|_| BootError::GuestWrite("the MP table"))?;
    smbios::write(mem, spec.smbios)?;
    Ok(KernelEntry { entry })
}

/// Places the initramfs at the top of low RAM (below the kernel's limit) and returns
/// (address, size).
fn load_initrd(mem: &GuestMemoryMmap, path: &Path, addr_max: u32) -> Result<(u64, u64), BootError> {
    let ferr = |err| BootError::InitrdFile {
        path: path.display().to_string(),
        err,
    };
    let mut file = File::open(path).map_err(ferr)?;
    let size = file.metadata().map_err(ferr)?.len();
    let max = if addr_max == 0 {
        DEFAULT_INITRD_MAX
    } else {
        u64::from(addr_max)
    };
    let low_end = mem
        .last_addr()
        .raw_value()
        .min(layout::PCI_MMIO_START - 1)
        .min(max);
    let addr = (low_end + 1)
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|a| *a >= layout::HIGH_RAM_START + (64 << 20).min(low_end / 2))
        .ok_or(BootError::InitrdTooLarge(size))?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|_| BootError::GuestWrite("the initrd"))?;
    Ok((addr, size))
}

/// The e820 map: conventional memory up to the EBDA, RAM from 1 MiB to the PCI hole, RAM above
/// 4 GiB.
pub fn e820_map(mem: &GuestMemoryMmap) -> Vec<boot_e820_entry> {
    let entry = |addr, size, kind| boot_e820_entry {
        addr,
        size,
        r#type: kind,
    };
    let mut map = vec![
        entry(0, layout::EBDA_START, E820_RAM),
        entry(
            layout::EBDA_START,
            layout::HIGH_RAM_START - layout::EBDA_START,
            E820_RESERVED,
        ),
    ];
    for region in mem.iter() {
        use vm_memory::GuestMemoryRegion;
        let start = region.start_addr().raw_value().max(layout::HIGH_RAM_START);
        let end = region.start_addr().raw_value() + region.len();
        if end > start {
            map.push(entry(start, end - start, E820_RAM));
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_covers_ram_and_skips_the_bios_area_and_pci_hole() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let map = e820_map(&mem);
        let ram: Vec<_> = map.iter().filter(|e| e.r#type == E820_RAM).collect();
        assert_eq!(ram.len(), 2);
        assert_eq!({ ram[1].addr }, layout::HIGH_RAM_START);
        assert_eq!({ ram[1].size }, (64 << 20) - layout::HIGH_RAM_START);
    }

    #[test]
    fn garbage_kernel_is_an_error_not_a_panic() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let path =
            std::env::temp_dir().join(format!("mallee-vmm-badkernel-{}", std::process::id()));
        std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
        let spec = BootSpec {
            kernel: &path,
            initrd: None,
            cmdline: "console=ttyS0",
            vcpus: 1,
            smbios: None,
        };
        assert!(matches!(load(&mem, &spec), Err(BootError::Kernel(_))));
        std::fs::remove_file(&path).unwrap();
    }
}
