//! Port-I/O and MMIO dispatch: which device owns which address range.
//!
//! A [`Bus`] maps non-overlapping ranges to [`BusDevice`]s; a vCPU exit looks the address up and
//! calls the device with the offset into its range. Accesses nobody owns read as all ones and
//! writes vanish, as on real hardware. The bus does not know about PCI BARs: the PCI root owns the
//! whole BAR window and dispatches inside it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device reachable through a bus.
pub trait BusDevice: Send {
    /// Reads `data.len()` bytes at `offset` into the device's range.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Writes `data` at `offset` into the device's range.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A shared, lockable device on a bus.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Inserting a range that overlaps one already on the bus.
#[derive(Debug, thiserror::Error)]
#[error("bus range {base:#x}+{len:#x} overlaps an existing device")]
pub struct BusOverlapError {
    /// The rejected range's base.
    pub base: u64,
    /// The rejected range's length.
    pub len: u64,
}

/// An address space (ports or MMIO) of device ranges.
#[derive(Default, Clone)]
pub struct Bus {
    ranges: BTreeMap<u64, (u64, SharedDevice)>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Bus {
        Bus::default()
    }

    /// Adds `device` at `[base, base + len)`.
    pub fn insert(
        &mut self,
        device: SharedDevice,
        base: u64,
        len: u64,
    ) -> Result<(), BusOverlapError> {
        let end = base.checked_add(len).ok_or(BusOverlapError { base, len })?;
        let overlaps_prev = self
            .ranges
            .range(..end)
            .next_back()
            .is_some_and(|(b, (l, _))| b + l > base);
        if len == 0 || overlaps_prev {
            return Err(BusOverlapError { base, len });
        }
        self.ranges.insert(base, (len, device));
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, &SharedDevice)> {
        let (base, (len, dev)) = self.ranges.range(..=addr).next_back()?;
        let off = addr - base;
        (off + size as u64 <= *len).then_some((off, dev))
    }

    /// Dispatches a read; returns false (and fills all ones) when nobody owns the address.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((off, dev)) => {
                lock(dev).read(off, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Dispatches a write; returns false when nobody owns the address.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((off, dev)) => {
                lock(dev).write(off, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device, carrying on with the inner state if another thread panicked while holding it
/// (a device's registers stay meaningful; stopping the whole VM for it would be worse).
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_offset_and_rejects_overlap() {
        let mut bus = Bus::new();
        let dev = Arc::new(Mutex::new(Echo(Vec::new())));
        bus.insert(dev.clone(), 0x100, 8).unwrap();
        assert!(bus.insert(dev.clone(), 0x104, 8).is_err());
        assert!(bus.insert(dev.clone(), 0xfc, 8).is_err());
        bus.insert(dev.clone(), 0x108, 8).unwrap();
        let mut b = [0u8; 2];
        assert!(bus.read(0x103, &mut b));
        assert_eq!(b, [3, 3]);
        assert!(!bus.read(0x10f, &mut b), "straddles the end of the range");
        assert_eq!(b, [0xff, 0xff]);
        assert!(bus.write(0x101, &[9]));
        assert_eq!(dev.lock().unwrap().0, vec![(1, vec![9])]);
        assert!(!bus.write(0x200, &[1]));
    }
}
