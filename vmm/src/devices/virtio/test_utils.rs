//! Test helpers: guest memory, a driver that programs a virtio-pci transport through its BAR the
//! way Linux does, descriptor-chain builders and a deadline wait on the used ring.

use std::time::{Duration, Instant};

use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_NEXT;
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::GuestAddress;

use super::pci::VirtioPci;
use super::{status, GuestMemoryMmap};
use crate::devices::pci::PciDevice;

/// One MiB of guest memory at address 0.
pub fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
}

/// A chain of (address, length, flags) descriptors linked in order from index 0.
pub fn chain(descs: &[(u64, u32, u32)]) -> Vec<RawDescriptor> {
    descs
        .iter()
        .enumerate()
        .map(|(i, (a, l, f))| {
            let more = i + 1 < descs.len();
            let flags = *f | if more { VRING_DESC_F_NEXT } else { 0 };
            RawDescriptor::from(SplitDescriptor::new(*a, *l, flags as u16, i as u16 + 1))
        })
        .collect()
}

/// Waits (with a deadline) until the device has used `n` chains of `vq`.
pub fn wait_used(vq: &MockSplitQueue<GuestMemoryMmap>, n: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while vq.used().idx().load() < n {
        assert!(
            Instant::now() < deadline,
            "device never completed the request"
        );
        std::thread::yield_now();
    }
}

/// A guest driver poking the transport's BAR.
pub struct Driver {
    /// The transport under test.
    pub dev: VirtioPci,
}

impl Driver {
    /// Writes a dword.
    pub fn w32(&mut self, off: u64, v: u32) {
        self.dev.bar_write(0, off, &v.to_le_bytes());
    }
    /// Writes a word.
    pub fn w16(&mut self, off: u64, v: u16) {
        self.dev.bar_write(0, off, &v.to_le_bytes());
    }
    /// Reads a dword.
    pub fn r32(&mut self, off: u64) -> u32 {
        let mut d = [0u8; 4];
        self.dev.bar_read(0, off, &mut d);
        u32::from_le_bytes(d)
    }
    /// Writes the status byte and reads it back.
    pub fn status(&mut self, s: u8) -> u8 {
        self.dev.bar_write(0, 0x14, &[s]);
        let mut d = [0u8];
        self.dev.bar_read(0, 0x14, &mut d);
        d[0]
    }
    /// Reads all 64 offered feature bits.
    pub fn features(&mut self) -> u64 {
        self.w32(0, 0);
        let lo = self.r32(4);
        self.w32(0, 1);
        u64::from(self.r32(4)) << 32 | u64::from(lo)
    }
    /// Acknowledges the device and writes `f` as the driver features; returns the status.
    pub fn ack(&mut self, f: u64) -> u8 {
        self.status(status::ACKNOWLEDGE | status::DRIVER);
        self.w32(8, 0);
        self.w32(0xc, f as u32);
        self.w32(8, 1);
        self.w32(0xc, (f >> 32) as u32);
        self.status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK)
    }
    /// Programs queue `index` from `vq` with MSI-X `vector` and enables it.
    pub fn setup_queue(&mut self, index: u16, vq: &MockSplitQueue<GuestMemoryMmap>, vector: u16) {
        self.w16(0x16, index);
        self.w16(0x18, 16);
        self.w16(0x1a, vector);
        for (off, a) in [
            (0x20, vq.desc_table_addr()),
            (0x28, vq.avail_addr()),
            (0x30, vq.used_addr()),
        ] {
            self.w32(off, a.0 as u32);
            self.w32(off + 4, (a.0 >> 32) as u32);
        }
        self.w16(0x1c, 1);
    }
    /// Sets DRIVER_OK.
    pub fn driver_ok(&mut self) {
        self.status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
    }
}
