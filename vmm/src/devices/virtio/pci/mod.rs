//! The modern (virtio 1.x) PCI transport: one PCI function per virtio device, one 32-bit memory
//! BAR holding the common configuration, ISR, device configuration, notification area and the
//! MSI-X table, described to the driver by vendor capabilities.
//!
//! The transport negotiates features, collects queue setup, activates the device when the driver
//! sets DRIVER_OK and resets it when the driver writes status 0. Queue notifications arrive on
//! per-queue eventfds (the VM registers them as ioeventfds on the notify addresses; a write that
//! reaches the BAR handler signals the same eventfd), interrupts leave on per-vector eventfds.

pub mod common;
pub mod msix;

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use self::common::{CommonAction, CommonConfig};
use self::msix::{MsiRouter, MsixTable};
use super::config_change::ConfigChange;
use super::{status, ActiveQueue, GuestMemoryMmap, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::devices::pci::config::{ConfigSpace, PciId};
use crate::devices::pci::PciDevice;

/// Size of BAR 0.
pub const BAR_SIZE: u32 = 0x8000;
/// Offsets of the regions inside BAR 0.
pub const COMMON_OFFSET: u64 = 0x0000;
/// ISR status.
pub const ISR_OFFSET: u64 = 0x1000;
/// Device-specific configuration.
pub const DEVICE_OFFSET: u64 = 0x2000;
/// Queue notifications (`NOTIFY_MULTIPLIER` bytes per queue).
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// MSI-X table.
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
/// MSI-X pending bit array.
pub const MSIX_PBA_OFFSET: u64 = 0x6000;
/// Bytes between queue notification addresses.
pub const NOTIFY_MULTIPLIER: u32 = 4;
const REGION: u64 = 0x1000;

const VENDOR_VIRTIO: u16 = 0x1af4;
const CAP_VENDOR: u8 = 0x09;
const CAP_MSIX: u8 = 0x11;

/// Cannot set up a transport.
#[derive(Debug, thiserror::Error)]
pub enum VirtioPciError {
    /// Creating an eventfd failed.
    #[error("cannot create an eventfd: {0}")]
    EventFd(#[from] std::io::Error),
}

/// A virtio device on PCI.
pub struct VirtioPci {
    config: ConfigSpace,
    device: Box<dyn VirtioDevice>,
    common: CommonConfig,
    notify: Vec<EventFd>,
    vectors: Vec<EventFd>,
    msix: MsixTable,
    mem: GuestMemoryMmap,
    active: bool,
    config_change: ConfigChange,
}

/// Offset of `config_generation` in the common configuration.
const CONFIG_GENERATION: u64 = 0x15;

fn class_of(device_type: u16) -> u32 {
    match device_type {
        1 => 0x02_0000,
        2 => 0x01_8000,
        _ => 0xff_0000,
    }
}

fn vendor_cap(cfg_type: u8, offset: u64, length: u32, extra: Option<u32>) -> Vec<u8> {
    // Body after cap_vndr/cap_next: cap_len, cfg_type, bar, id, padding[2], offset, length.
    let len = if extra.is_some() { 20 } else { 16 };
    let mut b = vec![len, cfg_type, 0, 0, 0, 0];
    b.extend_from_slice(&(offset as u32).to_le_bytes());
    b.extend_from_slice(&length.to_le_bytes());
    if let Some(x) = extra {
        b.extend_from_slice(&x.to_le_bytes());
    }
    b
}

impl VirtioPci {
    /// Wraps `device` with its BAR at `bar_addr`, MSI-X vectors routed from `gsi_base`.
    pub fn new(
        mut device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        bar_addr: u32,
        gsi_base: u32,
        router: Arc<dyn MsiRouter>,
    ) -> Result<VirtioPci, VirtioPciError> {
        let dtype = device.device_type();
        let mut config = ConfigSpace::new(&PciId {
            vendor: VENDOR_VIRTIO,
            device: 0x1040 + dtype,
            class: class_of(dtype),
            revision: 1,
            subsystem_vendor: VENDOR_VIRTIO,
            subsystem: 0x40,
        });
        config.add_memory_bar(0, bar_addr, BAR_SIZE);
        let nq = device.queue_max_sizes().len();
        let notify_len = (nq as u32) * NOTIFY_MULTIPLIER;
        config.add_capability(CAP_VENDOR, &vendor_cap(1, COMMON_OFFSET, 0x38, None), &[]);
        config.add_capability(
            CAP_VENDOR,
            &vendor_cap(2, NOTIFY_OFFSET, notify_len, Some(NOTIFY_MULTIPLIER)),
            &[],
        );
        config.add_capability(CAP_VENDOR, &vendor_cap(3, ISR_OFFSET, 1, None), &[]);
        config.add_capability(CAP_VENDOR, &vendor_cap(4, DEVICE_OFFSET, 0x1000, None), &[]);
        let vectors = (nq + 1) as u16;
        let mut msix_body = (vectors - 1).to_le_bytes().to_vec();
        msix_body.extend_from_slice(&(MSIX_TABLE_OFFSET as u32).to_le_bytes());
        msix_body.extend_from_slice(&(MSIX_PBA_OFFSET as u32).to_le_bytes());
        // Message control: MSI-X enable (bit 15) and function mask (bit 14) are writable.
        config.add_capability(CAP_MSIX, &msix_body, &[0, 0xc0]);
        let common = CommonConfig::new(device.queue_max_sizes());
        let notify = (0..nq)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()?;
        let vector_evts = (0..vectors)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()?;
        let config_change = ConfigChange::new(
            (vector_evts.iter().map(EventFd::try_clone)).collect::<Result<Vec<_>, _>>()?,
        );
        device.set_config_change(config_change.clone());
        Ok(VirtioPci {
            config,
            device,
            common,
            notify,
            vectors: vector_evts,
            msix: MsixTable::new(vectors, gsi_base, router),
            mem,
            active: false,
            config_change,
        })
    }

    /// The per-queue notification eventfds with the guest address each is written at.
    pub fn notify_eventfds(&self) -> Vec<(u64, &EventFd)> {
        let base = self.config.bar_address(0).map_or(0, |(a, _)| a);
        self.notify
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let off = NOTIFY_OFFSET + i as u64 * u64::from(NOTIFY_MULTIPLIER);
                (base + off, e)
            })
            .collect()
    }

    /// The per-vector interrupt eventfds with their GSIs.
    pub fn interrupt_eventfds(&self) -> Vec<(u32, &EventFd)> {
        self.vectors
            .iter()
            .enumerate()
            .map(|(i, e)| (self.msix.gsi(i as u16), e))
            .collect()
    }

    /// The device's current status byte.
    pub fn device_status(&self) -> u8 {
        self.common.status
    }

    fn set_status(&mut self, new: u8) {
        if new == 0 {
            self.reset();
            return;
        }
        let mut new = new;
        let offered = self.device.features();
        let acked = self.common.driver_features;
        if new & status::FEATURES_OK != 0
            && (acked & !offered != 0 || acked & VIRTIO_F_VERSION_1 == 0)
        {
            // Refuse: the driver reads the status back and sees FEATURES_OK missing.
            new &= !status::FEATURES_OK;
        }
        let was_ok = self.common.status & status::DRIVER_OK != 0;
        self.common.status = new;
        if new & status::DRIVER_OK != 0 && !was_ok && !self.active {
            if let Err(e) = self.activate() {
                tracing::error!("virtio device {}: {e}", self.device.device_type());
                self.common.status |= status::NEEDS_RESET;
            }
        }
    }

    fn activate(&mut self) -> Result<(), super::ActivateError> {
        let mut queues = Vec::new();
        let sizes = self.device.queue_max_sizes().to_vec();
        for (i, max) in sizes.iter().enumerate() {
            let fresh = Queue::new(*max).expect("queue sizes are powers of two");
            let queue = std::mem::replace(&mut self.common.queues[i], fresh);
            let vector = self.common.queue_vectors[i];
            let irq = match self.vectors.get(usize::from(vector)) {
                Some(e) => Some(e.try_clone()?),
                None => None,
            };
            queues.push(ActiveQueue {
                queue,
                notify: self.notify[i].try_clone()?,
                irq,
            });
        }
        self.device
            .activate(self.mem.clone(), self.common.driver_features, queues)?;
        self.active = true;
        Ok(())
    }

    fn reset(&mut self) {
        self.device.reset();
        self.common = CommonConfig::new(self.device.queue_max_sizes());
        self.config_change.set_vector(self.common.config_vector);
        self.active = false;
    }
}

impl PciDevice for VirtioPci {
    fn config_read(&mut self, reg: usize) -> u32 {
        self.config.read(reg)
    }

    fn config_write(&mut self, reg: usize, offset: usize, data: &[u8]) {
        self.config.write(reg, offset, data);
    }

    fn memory_bars(&self) -> Vec<(usize, u64, u64)> {
        if !self.config.memory_enabled() {
            return Vec::new();
        }
        self.config
            .bar_address(0)
            .map(|(a, s)| vec![(0, a, s)])
            .unwrap_or_default()
    }

    fn bar_read(&mut self, _bar: usize, offset: u64, data: &mut [u8]) {
        let features = self.device.features();
        match offset / REGION * REGION {
            COMMON_OFFSET => {
                self.common.read(offset, data, features);
                // The generation byte follows the status byte; the device moves it on.
                if let Some(b) = (CONFIG_GENERATION.checked_sub(offset))
                    .filter(|_| offset >= 0x14)
                    .and_then(|i| data.get_mut(i as usize))
                {
                    *b = self.config_change.generation();
                }
            }
            // No INTx: only the configuration bit is ever set (the driver learns of queue
            // interrupts through MSI-X alone); reading clears it.
            ISR_OFFSET => {
                data.fill(0);
                if let (0, Some(b)) = (offset - ISR_OFFSET, data.first_mut()) {
                    *b = self.config_change.take_isr();
                }
            }
            DEVICE_OFFSET => self.device.read_config(offset - DEVICE_OFFSET, data),
            MSIX_TABLE_OFFSET | 0x5000 => self.msix.read(offset - MSIX_TABLE_OFFSET, data),
            _ => data.fill(0),
        }
    }

    fn bar_write(&mut self, _bar: usize, offset: u64, data: &[u8]) {
        match offset / REGION * REGION {
            COMMON_OFFSET => {
                if let CommonAction::Status(s) = self.common.write(offset, data) {
                    self.set_status(s);
                }
                self.config_change.set_vector(self.common.config_vector);
            }
            DEVICE_OFFSET => self.device.write_config(offset - DEVICE_OFFSET, data),
            NOTIFY_OFFSET => {
                let q = (offset - NOTIFY_OFFSET) / u64::from(NOTIFY_MULTIPLIER);
                if let Some(e) = self.notify.get(q as usize) {
                    let _ = e.write(1);
                }
            }
            MSIX_TABLE_OFFSET | 0x5000 => {
                for v in self.msix.write(offset - MSIX_TABLE_OFFSET, data) {
                    if let Some(e) = self.vectors.get(usize::from(v)) {
                        let _ = e.write(1);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
#[path = "pci_tests.rs"]
mod tests;
