//! How a device tells its driver that the device configuration changed (a volume slot's disk
//! grew or shrank): the ISR's configuration bit, the configuration generation counter and the
//! interrupt on the driver's configuration vector (virtio 1.2 sections 2.5.1, 4.1.4.5).
//!
//! The transport makes one [`ConfigChange`] per device and hands a clone to the device; the
//! device calls [`ConfigChange::notify`] after it changed its configuration space, from any
//! thread. This module does not know what changed: the device's `read_config` says that.

use std::sync::atomic::{AtomicU16, AtomicU8, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

/// ISR status bit 1: the device configuration changed.
pub const ISR_CONFIG: u8 = 1 << 1;

/// MSI-X "no vector".
const NO_VECTOR: u16 = 0xffff;

struct Shared {
    isr: AtomicU8,
    generation: AtomicU8,
    vector: AtomicU16,
    vectors: Vec<EventFd>,
}

/// A device's handle on its configuration-change interrupt (cheap to clone).
#[derive(Clone)]
pub struct ConfigChange(Arc<Shared>);

impl ConfigChange {
    /// A handle that interrupts through `vectors` (the transport's per-vector eventfds, in
    /// vector order) once the driver has chosen a configuration vector.
    pub fn new(vectors: Vec<EventFd>) -> ConfigChange {
        ConfigChange(Arc::new(Shared {
            isr: AtomicU8::new(0),
            generation: AtomicU8::new(0),
            vector: AtomicU16::new(NO_VECTOR),
            vectors,
        }))
    }

    /// Records that the configuration changed and interrupts the driver: the generation moves
    /// on (a driver reading a multi-byte field across the change reads it again), the ISR gets
    /// its configuration bit, and the configuration vector fires if the driver set one.
    pub fn notify(&self) {
        let s = &self.0;
        s.generation.fetch_add(1, Ordering::SeqCst);
        s.isr.fetch_or(ISR_CONFIG, Ordering::SeqCst);
        let vector = s.vector.load(Ordering::SeqCst);
        if let Some(irq) = s.vectors.get(usize::from(vector)) {
            // A failed write means the counter is saturated: an interrupt is pending anyway.
            let _ = irq.write(1);
        }
    }

    /// The configuration vector the driver programmed (`0xffff`: none).
    pub fn set_vector(&self, vector: u16) {
        self.0.vector.store(vector, Ordering::SeqCst);
    }

    /// The ISR byte, cleared by the read as the driver's ISR read clears it.
    pub fn take_isr(&self) -> u8 {
        self.0.isr.swap(0, Ordering::SeqCst)
    }

    /// The configuration generation the driver reads.
    pub fn generation(&self) -> u8 {
        self.0.generation.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    fn notify_sets_the_isr_bit_moves_the_generation_and_fires_the_chosen_vector() {
        let vectors: Vec<EventFd> = (0..2)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let fds: Vec<EventFd> = vectors.iter().map(|e| e.try_clone().unwrap()).collect();
        let change = ConfigChange::new(fds);
        change.notify();
        assert!(vectors[0].read().is_err(), "no vector chosen: no interrupt");
        change.set_vector(0);
        change.notify();
        assert_eq!(vectors[0].read().unwrap(), 1);
        assert!(vectors[1].read().is_err());
        assert_eq!(change.generation(), 2);
        assert_eq!(change.take_isr(), ISR_CONFIG);
        assert_eq!(change.take_isr(), 0, "reading the ISR clears it");
    }
}
