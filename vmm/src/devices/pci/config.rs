//! One PCI function's configuration space: a 256-byte image, a per-byte write mask, 32-bit memory
//! BARs that answer sizing probes, and a capability-list builder.
//!
//! It knows nothing of what the capabilities mean; a device intercepts writes to its own
//! capabilities (MSI-X control) by reading the image back after [`ConfigSpace::write`].

/// Offset of the command register.
pub const COMMAND: usize = 0x04;
/// Command bit: memory space decoding enabled.
pub const COMMAND_MEMORY: u16 = 0x2;
/// Command bit: bus mastering enabled.
pub const COMMAND_MASTER: u16 = 0x4;
const STATUS_CAP_LIST: u16 = 0x10;
const BAR0: usize = 0x10;
const CAP_PTR: usize = 0x34;
const FIRST_CAP: usize = 0x40;

/// A type-0 configuration space.
pub struct ConfigSpace {
    bytes: [u8; 256],
    writable: [u8; 256],
    bar_sizes: [u64; 6],
    next_cap: usize,
    last_cap: Option<usize>,
}

/// Identity of a function.
pub struct PciId {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Class code (base, sub, prog-if).
    pub class: u32,
    /// Revision.
    pub revision: u8,
    /// Subsystem vendor ID.
    pub subsystem_vendor: u16,
    /// Subsystem ID.
    pub subsystem: u16,
}

impl ConfigSpace {
    /// A space with `id` and nothing else.
    pub fn new(id: &PciId) -> ConfigSpace {
        let mut c = ConfigSpace {
            bytes: [0; 256],
            writable: [0; 256],
            bar_sizes: [0; 6],
            next_cap: FIRST_CAP,
            last_cap: None,
        };
        c.set_u16(0, id.vendor);
        c.set_u16(2, id.device);
        c.bytes[8] = id.revision;
        c.bytes[9] = id.class as u8;
        c.bytes[10] = (id.class >> 8) as u8;
        c.bytes[11] = (id.class >> 16) as u8;
        c.set_u16(0x2c, id.subsystem_vendor);
        c.set_u16(0x2e, id.subsystem);
        // Command: I/O, memory, bus master, INTx disable are writable.
        c.writable[COMMAND] = 0x07;
        c.writable[COMMAND + 1] = 0x04;
        // Interrupt line is scratch for the OS.
        c.writable[0x3c] = 0xff;
        c
    }

    fn set_u16(&mut self, off: usize, v: u16) {
        self.bytes[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    /// Sets bytes of the image directly (device-side writes, not subject to the mask).
    pub fn set_bytes(&mut self, off: usize, data: &[u8]) {
        if let Some(dst) = self.bytes.get_mut(off..off + data.len()) {
            dst.copy_from_slice(data);
        }
    }

    /// Reads bytes of the image.
    pub fn bytes(&self, off: usize, len: usize) -> &[u8] {
        self.bytes.get(off..off + len).unwrap_or(&[])
    }

    /// Adds 32-bit non-prefetchable memory BAR `index` of power-of-two `size` at `addr`.
    pub fn add_memory_bar(&mut self, index: usize, addr: u32, size: u32) {
        debug_assert!(size.is_power_of_two() && size >= 16 && addr.is_multiple_of(size));
        self.bar_sizes[index] = u64::from(size);
        let off = BAR0 + 4 * index;
        self.bytes[off..off + 4].copy_from_slice(&addr.to_le_bytes());
        self.writable[off..off + 4].copy_from_slice(&(!(size - 1)).to_le_bytes());
    }

    /// The current address of memory BAR `index`, if it has one.
    pub fn bar_address(&self, index: usize) -> Option<(u64, u64)> {
        let size = *self.bar_sizes.get(index)?;
        if size == 0 {
            return None;
        }
        let off = BAR0 + 4 * index;
        let raw = u32::from_le_bytes(self.bytes[off..off + 4].try_into().ok()?);
        Some((u64::from(raw & !0xf), size))
    }

    /// Whether memory decoding is on.
    pub fn memory_enabled(&self) -> bool {
        self.bytes[COMMAND] as u16 & COMMAND_MEMORY != 0
    }

    /// Appends a capability with ID `id` and body `body` (after the ID and next bytes); returns
    /// its offset. `writable` marks which body bytes the guest may change.
    pub fn add_capability(&mut self, id: u8, body: &[u8], writable: &[u8]) -> usize {
        let off = self.next_cap;
        let len = (2 + body.len()).next_multiple_of(4);
        assert!(off + len <= 256, "capabilities overflow the config space");
        self.bytes[off] = id;
        self.bytes[off + 2..off + 2 + body.len()].copy_from_slice(body);
        for (i, w) in writable.iter().enumerate() {
            self.writable[off + 2 + i] = *w;
        }
        match self.last_cap {
            Some(prev) => self.bytes[prev + 1] = off as u8,
            None => {
                self.bytes[CAP_PTR] = off as u8;
                let status = u16::from_le_bytes([self.bytes[6], self.bytes[7]]) | STATUS_CAP_LIST;
                self.set_u16(6, status);
            }
        }
        self.last_cap = Some(off);
        self.next_cap = off + len;
        off
    }

    /// Reads dword `reg`.
    pub fn read(&self, reg: usize) -> u32 {
        let off = reg * 4;
        match self.bytes.get(off..off + 4) {
            Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            None => 0xffff_ffff,
        }
    }

    /// Writes `data` at byte `offset` of dword `reg`, honouring the write mask.
    pub fn write(&mut self, reg: usize, offset: usize, data: &[u8]) {
        let base = reg * 4 + offset;
        for (i, v) in data.iter().enumerate() {
            let Some(mask) = self.writable.get(base + i).copied() else {
                return;
            };
            let b = &mut self.bytes[base + i];
            *b = (*b & !mask) | (v & mask);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> ConfigSpace {
        ConfigSpace::new(&PciId {
            vendor: 0x1af4,
            device: 0x1042,
            class: 0x01_8000,
            revision: 1,
            subsystem_vendor: 0x1af4,
            subsystem: 0x40,
        })
    }

    #[test]
    fn bar_sizing_probe_reads_back_the_size_mask() {
        let mut c = space();
        c.add_memory_bar(0, 0xd000_0000, 0x8000);
        c.write(4, 0, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(c.read(4), 0xffff_8000);
        c.write(4, 0, &0xd000_8000u32.to_le_bytes());
        assert_eq!(c.bar_address(0), Some((0xd000_8000, 0x8000)));
    }

    #[test]
    fn identity_is_read_only_and_capabilities_chain() {
        let mut c = space();
        c.write(0, 0, &[0, 0, 0, 0]);
        assert_eq!(c.read(0), 0x1042_1af4);
        let a = c.add_capability(0x09, &[1, 2], &[]);
        let b = c.add_capability(0x11, &[0; 10], &[0, 0xc0]);
        assert_eq!(c.bytes(0x34, 1)[0] as usize, a);
        assert_eq!(c.bytes(a + 1, 1)[0] as usize, b);
        assert_ne!(c.read(1) >> 16 & 0x10, 0, "capability list bit");
        c.write(b / 4, 3, &[0xff]);
        assert_eq!(c.bytes(b + 3, 1)[0], 0xc0);
    }
}
