//! The MSI-X table of a virtio-pci function and the hook that turns its entries into interrupt
//! routes (KVM GSI routes in the VM).
//!
//! Each vector has a fixed GSI (`gsi_base + vector`) and an eventfd registered as that GSI's
//! irqfd; programming an entry re-routes the GSI to the entry's message. Per-vector masking is
//! recorded but delivery is not held back, and there is no pending bit: an interrupt raised while
//! an entry was masked or half-written went to the old message, so every write that leaves an
//! entry unmasked asks for its vector to be raised again. A spurious virtio interrupt is
//! harmless; a lost one hangs the driver (with `VIRTIO_F_EVENT_IDX` the device never signals that
//! queue again).

use std::io;
use std::sync::Arc;

/// Installs MSI routes for GSIs.
pub trait MsiRouter: Send + Sync {
    /// Routes `gsi` to the MSI message `addr`/`data`.
    fn set_msi_route(&self, gsi: u32, addr: u64, data: u32) -> io::Result<()>;
}

/// A router that does nothing (tests without a VM).
pub struct NoRouter;

impl MsiRouter for NoRouter {
    fn set_msi_route(&self, _gsi: u32, _addr: u64, _data: u32) -> io::Result<()> {
        Ok(())
    }
}

/// Bytes per table entry.
pub const ENTRY_BYTES: u64 = 16;

/// The table: address low, address high, data, vector control per entry.
pub struct MsixTable {
    entries: Vec<[u32; 4]>,
    gsi_base: u32,
    router: Arc<dyn MsiRouter>,
}

impl MsixTable {
    /// A table of `vectors` masked entries routed from `gsi_base`.
    pub fn new(vectors: u16, gsi_base: u32, router: Arc<dyn MsiRouter>) -> MsixTable {
        MsixTable {
            entries: vec![[0, 0, 0, 1]; usize::from(vectors)],
            gsi_base,
            router,
        }
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no vectors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The GSI of `vector`.
    pub fn gsi(&self, vector: u16) -> u32 {
        self.gsi_base + u32::from(vector)
    }

    /// Reads the table (dword or qword accesses).
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        for (i, b) in data.iter_mut().enumerate() {
            let off = offset + i as u64;
            let entry = (off / ENTRY_BYTES) as usize;
            let word = ((off % ENTRY_BYTES) / 4) as usize;
            if let Some(e) = self.entries.get(entry) {
                *b = e[word].to_le_bytes()[(off % 4) as usize];
            }
        }
    }

    /// Writes the table and re-routes every entry the write touched; returns the touched vectors
    /// that are now unmasked, which the caller raises once (the pending bit's stand-in).
    #[must_use = "an interrupt sent through the old message may be lost: raise these vectors"]
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Vec<u16> {
        let mut touched = Vec::new();
        for (i, b) in data.iter().enumerate() {
            let off = offset + i as u64;
            let entry = (off / ENTRY_BYTES) as usize;
            let word = ((off % ENTRY_BYTES) / 4) as usize;
            let Some(e) = self.entries.get_mut(entry) else {
                continue;
            };
            let mut bytes = e[word].to_le_bytes();
            bytes[(off % 4) as usize] = *b;
            e[word] = u32::from_le_bytes(bytes);
            if !touched.contains(&entry) {
                touched.push(entry);
            }
        }
        let mut raise = Vec::new();
        for entry in touched {
            let e = self.entries[entry];
            let addr = u64::from(e[1]) << 32 | u64::from(e[0]);
            // A failed route leaves the previous one; the guest sees a late or lost interrupt,
            // not a crashed VMM.
            let _ = self
                .router
                .set_msi_route(self.gsi_base + entry as u32, addr, e[2]);
            if e[3] & 1 == 0 {
                raise.push(entry as u16);
            }
        }
        raise
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Recorder(Mutex<Vec<(u32, u64, u32)>>);
    impl MsiRouter for Recorder {
        fn set_msi_route(&self, gsi: u32, addr: u64, data: u32) -> io::Result<()> {
            self.0.lock().unwrap().push((gsi, addr, data));
            Ok(())
        }
    }

    #[test]
    fn programming_an_entry_routes_its_gsi() {
        let rec = Arc::new(Recorder(Mutex::new(Vec::new())));
        let mut t = MsixTable::new(3, 30, rec.clone());
        assert!(t.write(16, &0xfee0_1000u32.to_le_bytes()).is_empty());
        assert!(t.write(24, &0x4041u32.to_le_bytes()).is_empty());
        let last = *rec.0.lock().unwrap().last().unwrap();
        assert_eq!(last, (31, 0xfee0_1000, 0x4041));
        let mut d = [0u8; 4];
        t.read(28, &mut d);
        assert_eq!(u32::from_le_bytes(d), 1, "entries start masked");
        assert!(t.write(1000, &[1, 2, 3, 4]).is_empty());
        t.read(1000, &mut d);
        assert_eq!(d, [0; 4]);
    }

    #[test]
    fn an_entry_left_unmasked_is_raised_again() {
        let mut t = MsixTable::new(3, 30, Arc::new(NoRouter));
        // Linux masks, rewrites address and data, then unmasks: the unmask asks for a raise.
        assert!(t.write(16, &0xfee0_1000u32.to_le_bytes()).is_empty());
        assert!(t.write(24, &0x4041u32.to_le_bytes()).is_empty());
        assert_eq!(t.write(28, &0u32.to_le_bytes()), vec![1]);
        // A rewrite of an unmasked entry (no masking around it) also does.
        assert_eq!(t.write(24, &0x4042u32.to_le_bytes()), vec![1]);
        // A qword write over two entries raises those it leaves unmasked.
        assert_eq!(t.write(28, &[0, 0, 0, 0, 0, 0, 0, 0]), vec![1]);
        assert!(t.write(28, &1u32.to_le_bytes()).is_empty());
    }
}
