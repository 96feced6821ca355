//! PCI: a single root bus with a host bridge, reached through configuration mechanism 1
//! (ports 0xCF8/0xCFC), and the memory BARs of the devices on it.
//!
//! [`config`] owns one function's 256-byte configuration space (read-only and writable bits, BAR
//! sizing, capability lists); [`root`] owns the bus: slots, the address port, config dispatch and
//! BAR dispatch. Devices implement [`PciDevice`]. There is one function per slot and no bridges.

pub mod config;
pub mod root;

/// A function on the root bus.
pub trait PciDevice: Send {
    /// Reads configuration dword `reg` (byte offset `reg * 4`).
    fn config_read(&mut self, reg: usize) -> u32;
    /// Writes `data` at byte `offset` within configuration dword `reg`.
    fn config_write(&mut self, reg: usize, offset: usize, data: &[u8]);
    /// The memory BARs the device currently decodes: (index, guest address, size).
    fn memory_bars(&self) -> Vec<(usize, u64, u64)>;
    /// Reads from memory BAR `bar` at `offset`.
    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]);
    /// Writes to memory BAR `bar` at `offset`.
    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]);
}

/// Vendor ID of Intel (the host bridge).
pub const VENDOR_INTEL: u16 = 0x8086;
/// Class code of a host bridge (base 06, sub 00).
pub const CLASS_HOST_BRIDGE: u32 = 0x06_0000;
