//! The root bus: 32 slots of single-function devices, a host bridge in slot 0, configuration
//! mechanism 1 on ports 0xCF8-0xCFF and dispatch of the BAR window to whichever device decodes
//! the address.
//!
//! Config accesses to empty slots, other buses or other functions read as all ones, which is how
//! a guest learns nothing is there.

use std::sync::{Arc, Mutex};

use super::config::{ConfigSpace, PciId};
use super::{PciDevice, CLASS_HOST_BRIDGE, VENDOR_INTEL};
use crate::bus::{lock, BusDevice};

/// Slots on the bus.
pub const SLOTS: usize = 32;

/// A shared PCI function.
pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

/// No free slot for another device.
#[derive(Debug, thiserror::Error)]
#[error("all {SLOTS} PCI slots are in use")]
pub struct PciSlotsFullError;

/// The root bus and its configuration address latch.
pub struct PciRoot {
    slots: Vec<Option<SharedPciDevice>>,
    address: u32,
}

struct HostBridge(ConfigSpace);

impl PciDevice for HostBridge {
    fn config_read(&mut self, reg: usize) -> u32 {
        self.0.read(reg)
    }
    fn config_write(&mut self, reg: usize, offset: usize, data: &[u8]) {
        self.0.write(reg, offset, data)
    }
    fn memory_bars(&self) -> Vec<(usize, u64, u64)> {
        Vec::new()
    }
    fn bar_read(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff)
    }
    fn bar_write(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl PciRoot {
    /// A bus with only the host bridge (slot 0).
    pub fn new() -> PciRoot {
        let bridge = HostBridge(ConfigSpace::new(&PciId {
            vendor: VENDOR_INTEL,
            device: 0x0d57,
            class: CLASS_HOST_BRIDGE,
            revision: 0,
            subsystem_vendor: 0,
            subsystem: 0,
        }));
        let mut slots = vec![None; SLOTS];
        slots[0] = Some(Arc::new(Mutex::new(bridge)) as SharedPciDevice);
        PciRoot { slots, address: 0 }
    }

    /// Puts `dev` in the lowest free slot and returns the slot number.
    pub fn add(&mut self, dev: SharedPciDevice) -> Result<usize, PciSlotsFullError> {
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(PciSlotsFullError)?;
        self.slots[slot] = Some(dev);
        Ok(slot)
    }

    /// The device a configuration address selects (enable bit set, bus 0, function 0).
    fn selected(&self) -> Option<(&SharedPciDevice, usize)> {
        let a = self.address;
        let enabled = a & 0x8000_0000 != 0;
        let bus = (a >> 16) & 0xff;
        let slot = ((a >> 11) & 0x1f) as usize;
        let function = (a >> 8) & 0x7;
        let reg = ((a >> 2) & 0x3f) as usize;
        if !enabled || bus != 0 || function != 0 {
            return None;
        }
        Some((self.slots[slot].as_ref()?, reg))
    }

    /// Reads config data at `offset` (0-3) into the selected dword.
    fn read_data(&self, offset: usize, data: &mut [u8]) {
        let value = match self.selected() {
            Some((dev, reg)) => lock(dev).config_read(reg),
            None => 0xffff_ffff,
        };
        let bytes = value.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(offset + i).copied().unwrap_or(0xff);
        }
    }

    fn write_data(&self, offset: usize, data: &[u8]) {
        if offset + data.len() > 4 {
            return;
        }
        if let Some((dev, reg)) = self.selected() {
            lock(dev).config_write(reg, offset, data);
        }
    }

    /// The device and BAR decoding guest address `addr`, with the offset into the BAR.
    fn bar_at(&self, addr: u64) -> Option<(SharedPciDevice, usize, u64)> {
        self.slots.iter().flatten().find_map(|dev| {
            let bars = lock(dev).memory_bars();
            bars.into_iter()
                .find(|(_, base, size)| addr >= *base && addr - base < *size)
                .map(|(bar, base, _)| (dev.clone(), bar, addr - base))
        })
    }
}

/// Ports 0xCF8-0xCFF: the address register and the data window.
pub struct PciConfigIo(pub Arc<Mutex<PciRoot>>);

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let root = lock(&self.0);
        if offset < 4 {
            // Only whole-dword reads of the address register are meaningful.
            let bytes = root.address.to_le_bytes();
            for (i, b) in data.iter_mut().enumerate() {
                *b = bytes.get(offset as usize + i).copied().unwrap_or(0xff);
            }
        } else {
            root.read_data(offset as usize - 4, data);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut root = lock(&self.0);
        if offset == 0 && data.len() == 4 {
            root.address = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        } else if offset >= 4 {
            root.write_data(offset as usize - 4, data);
        }
    }
}

/// The BAR window on the MMIO bus: forwards to the device whose BAR holds the address.
pub struct PciMmio {
    /// The bus.
    pub root: Arc<Mutex<PciRoot>>,
    /// Guest address of the window's start (bus offsets are relative to it).
    pub base: u64,
}

impl BusDevice for PciMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let hit = lock(&self.root).bar_at(self.base + offset);
        match hit {
            Some((dev, bar, off)) => lock(&dev).bar_read(bar, off, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let hit = lock(&self.root).bar_at(self.base + offset);
        if let Some((dev, bar, off)) = hit {
            lock(&dev).bar_write(bar, off, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_read(io: &mut PciConfigIo, slot: u32, reg: u32) -> u32 {
        io.write(0, &(0x8000_0000 | slot << 11 | reg << 2).to_le_bytes());
        let mut d = [0u8; 4];
        io.read(4, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn host_bridge_answers_and_empty_slots_read_all_ones() {
        let root = Arc::new(Mutex::new(PciRoot::new()));
        let mut io = PciConfigIo(root);
        assert_eq!(cfg_read(&mut io, 0, 0), 0x0d57_8086);
        assert_eq!(cfg_read(&mut io, 0, 2) >> 8, CLASS_HOST_BRIDGE);
        assert_eq!(cfg_read(&mut io, 5, 0), 0xffff_ffff);
        // The address register reads back what was written (Linux's type-1 probe checks it).
        io.write(0, &0x8000_0000u32.to_le_bytes());
        let mut d = [0u8; 4];
        io.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x8000_0000);
    }
}
