//! Guest RAM: anonymous mappings aligned to 2 MiB and advised for transparent huge pages, so
//! that KVM can back the guest with 2 MiB pages in its nested page tables. Each first touch of
//! guest memory is then one fault per 2 MiB instead of one per 4 KiB; under nested
//! virtualization every such fault is an exit, and a plain mapping cost a booting guest about
//! 20,000 of them (`just bench vmm`'s trace) where QEMU, which aligns and advises its RAM the
//! same way, took about 1,000.
//!
//! KVM maps a huge page only where guest-physical and host-virtual addresses agree modulo
//! 2 MiB, so each region's mapping starts on a 2 MiB boundary (every RAM range starts on one).
//! The mappings are made here, not by vm-memory (which cannot align them), and live as long as
//! the process: a VMM process runs one VM.

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestAddress, GuestRegionMmap};

use crate::devices::virtio::GuestMemoryMmap;

/// The huge page size the mappings are aligned to.
pub const HUGE_PAGE: usize = 2 << 20;

/// Why guest RAM could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum RamError {
    #[error("cannot map {bytes} bytes of guest RAM: {source}")]
    Map {
        bytes: usize,
        source: std::io::Error,
    },
    #[error("guest RAM at {0:#x}: {1}")]
    Region(u64, String),
}

/// An anonymous read-write mapping of `len` bytes starting on a [`HUGE_PAGE`] boundary,
/// advised for transparent huge pages (where the kernel has them; the advice failing only
/// leaves small pages).
fn aligned_mapping(len: usize) -> Result<*mut u8, RamError> {
    let map_err = |source| RamError::Map { bytes: len, source };
    let reserve = len
        .checked_add(HUGE_PAGE)
        .ok_or_else(|| map_err(std::io::Error::from_raw_os_error(libc::ENOMEM)))?;
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    // SAFETY: a fresh anonymous mapping at an address the kernel picks; nothing else refers to
    // it yet.
    let raw = unsafe { libc::mmap(std::ptr::null_mut(), reserve, prot, flags, -1, 0) };
    if raw == libc::MAP_FAILED {
        return Err(map_err(std::io::Error::last_os_error()));
    }
    let start = raw as usize;
    let aligned = start.next_multiple_of(HUGE_PAGE);
    let (head, tail) = (aligned - start, reserve - (aligned - start) - len);
    // SAFETY: both ranges lie inside the mapping just made and outside the part kept; no
    // reference to them exists.
    unsafe {
        if head > 0 {
            libc::munmap(raw, head);
        }
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
        libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
    Ok(aligned as *mut u8)
}

/// Guest memory for `ranges` of (guest-physical start, length), each region on its own
/// aligned, huge-page-advised mapping.
pub fn guest_ram(ranges: &[(GuestAddress, usize)]) -> Result<GuestMemoryMmap, RamError> {
    let regions = (ranges.iter())
        .map(|&(start, len)| {
            let addr = aligned_mapping(len)?;
            let region = |e: String| RamError::Region(start.0, e);
            // SAFETY: `addr` and `len` are exactly the mapping made above, which is never
            // unmapped (it lives as long as the process).
            let builder = unsafe {
                MmapRegionBuilder::new(len)
                    .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
                    .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS)
                    .with_raw_mmap_pointer(addr)
            };
            let mapping = builder.build().map_err(|e| region(e.to_string()))?;
            GuestRegionMmap::new(mapping, start).ok_or_else(|| region("overflows".into()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    GuestMemoryMmap::from_regions(regions).map_err(|e| RamError::Region(0, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    #[test]
    fn every_region_starts_on_a_huge_page_and_holds_what_is_written() {
        let ranges = [(GuestAddress(0), 6 << 20), (GuestAddress(1 << 32), 4 << 20)];
        let mem = guest_ram(&ranges).unwrap();
        for (start, len) in ranges {
            let host = mem.get_host_address(start).unwrap() as usize;
            assert_eq!(host % HUGE_PAGE, 0, "region at {start:?}");
            let last = GuestAddress(start.0 + len as u64 - 8);
            mem.write_obj(0x1122_3344_5566_7788u64, last).unwrap();
            assert_eq!(mem.read_obj::<u64>(last).unwrap(), 0x1122_3344_5566_7788);
            assert_eq!(
                mem.read_obj::<u64>(start).unwrap(),
                0,
                "fresh RAM reads zero"
            );
        }
        assert!(mem.get_host_address(GuestAddress(6 << 20)).is_err());
    }
}
