//! The virtio-pci common configuration structure (virtio 1.2 section 4.1.4.3): feature
//! negotiation, device status and per-queue setup, as a register file over the driver's view.
//!
//! It records what the driver programs; the transport decides when to activate or reset.

use virtio_queue::{Queue, QueueT};

/// MSI-X "no vector".
pub const NO_VECTOR: u16 = 0xffff;

/// Driver-visible state of the common configuration.
pub struct CommonConfig {
    /// device_feature_select.
    pub device_feature_select: u32,
    /// driver_feature_select.
    pub driver_feature_select: u32,
    /// Features the driver wrote.
    pub driver_features: u64,
    /// device_status.
    pub status: u8,
    /// config_msix_vector.
    pub config_vector: u16,
    /// queue_select.
    pub queue_select: u16,
    /// The queues as programmed.
    pub queues: Vec<Queue>,
    /// queue_msix_vector per queue.
    pub queue_vectors: Vec<u16>,
}

/// What a common-config write asks the transport to do.
#[derive(Debug, PartialEq, Eq)]
pub enum CommonAction {
    /// Nothing beyond recording the value.
    None,
    /// The driver wrote a new device status.
    Status(u8),
}

impl CommonConfig {
    /// Fresh state for queues of the given maximum sizes.
    pub fn new(max_sizes: &[u16]) -> CommonConfig {
        CommonConfig {
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            config_vector: NO_VECTOR,
            queue_select: 0,
            queues: max_sizes
                .iter()
                .map(|m| Queue::new(*m).expect("queue sizes are powers of two"))
                .collect(),
            queue_vectors: vec![NO_VECTOR; max_sizes.len()],
        }
    }

    fn queue(&self) -> Option<&Queue> {
        self.queues.get(usize::from(self.queue_select))
    }

    /// Reads `data.len()` bytes at `offset`; `device_features` is what the device offers.
    pub fn read(&self, offset: u64, data: &mut [u8], device_features: u64) {
        let q = self.queue();
        let value: u64 = match offset {
            0x00 => u64::from(self.device_feature_select),
            0x04 => match self.device_feature_select {
                0 => device_features & 0xffff_ffff,
                1 => device_features >> 32,
                _ => 0,
            },
            0x08 => u64::from(self.driver_feature_select),
            0x0c => match self.driver_feature_select {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            0x10 => u64::from(self.config_vector),
            0x12 => self.queues.len() as u64,
            0x14 => u64::from(self.status),
            0x15 => 0,
            0x16 => u64::from(self.queue_select),
            0x18 => q.map_or(0, |q| u64::from(q.size())),
            0x1a => self
                .queue_vectors
                .get(usize::from(self.queue_select))
                .map_or(u64::from(NO_VECTOR), |v| u64::from(*v)),
            0x1c => q.map_or(0, |q| u64::from(q.ready())),
            0x1e => u64::from(self.queue_select),
            0x20 => q.map_or(0, |q| q.desc_table() & 0xffff_ffff),
            0x24 => q.map_or(0, |q| q.desc_table() >> 32),
            0x28 => q.map_or(0, |q| q.avail_ring() & 0xffff_ffff),
            0x2c => q.map_or(0, |q| q.avail_ring() >> 32),
            0x30 => q.map_or(0, |q| q.used_ring() & 0xffff_ffff),
            0x34 => q.map_or(0, |q| q.used_ring() >> 32),
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(i).copied().unwrap_or(0);
        }
    }

    /// Writes `data` at `offset`. Queue setup writes are ignored once the driver is running.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> CommonAction {
        let mut bytes = [0u8; 8];
        let n = data.len().min(8);
        bytes[..n].copy_from_slice(&data[..n]);
        let v = u64::from_le_bytes(bytes);
        let (lo, hi) = (
            Some(v as u32),
            (data.len() == 8).then_some((v >> 32) as u32),
        );
        let qsel = usize::from(self.queue_select);
        let running = self.status & super::super::status::DRIVER_OK != 0;
        match offset {
            0x00 => self.device_feature_select = v as u32,
            0x08 => self.driver_feature_select = v as u32,
            0x0c => match self.driver_feature_select {
                0 => {
                    self.driver_features = (self.driver_features & !0xffff_ffff) | (v & 0xffff_ffff)
                }
                1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (v << 32),
                _ => {}
            },
            0x10 => self.config_vector = v as u16,
            0x14 => return CommonAction::Status(v as u8),
            0x16 => self.queue_select = v as u16,
            _ if running => {}
            0x1a => {
                if let Some(vec) = self.queue_vectors.get_mut(qsel) {
                    *vec = v as u16;
                }
            }
            _ => {
                if let Some(q) = self.queues.get_mut(qsel) {
                    match offset {
                        0x18 => q.set_size(v as u16),
                        0x1c => q.set_ready(v & 1 == 1),
                        0x20 => q.set_desc_table_address(lo, hi),
                        0x24 => q.set_desc_table_address(None, lo),
                        0x28 => q.set_avail_ring_address(lo, hi),
                        0x2c => q.set_avail_ring_address(None, lo),
                        0x30 => q.set_used_ring_address(lo, hi),
                        0x34 => q.set_used_ring_address(None, lo),
                        _ => {}
                    }
                }
            }
        }
        CommonAction::None
    }
}
