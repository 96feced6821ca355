//! The ACPI PM1a event and control registers (ports 0x600-0x605): how a guest with ACPI powers
//! off. Writing SLP_EN with the `_S5` sleep type ends the VM with
//! [`crate::exit::Exit::PowerOff`]. ACPI is always on (SCI_EN reads set); no event ever
//! fires, so status reads zero, and the enable register keeps what the guest writes (ACPICA checks
//! that the global-lock enable bit sticks).

use crate::boot::acpi::S5_SLP_TYP;
use crate::bus::BusDevice;

const SCI_EN: u16 = 1;
const SLP_EN: u16 = 1 << 13;

/// PM1a_EVT_BLK (4 bytes) followed by PM1a_CNT_BLK (2 bytes).
pub struct AcpiPm {
    enable: u16,
    control: u16,
    on_poweroff: Box<dyn Fn() + Send>,
}

impl AcpiPm {
    /// A block calling `on_poweroff` when the guest enters S5.
    pub fn new(on_poweroff: Box<dyn Fn() + Send>) -> AcpiPm {
        AcpiPm {
            enable: 0,
            control: SCI_EN,
            on_poweroff,
        }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let [e0, e1] = self.enable.to_le_bytes();
        let [c0, c1] = self.control.to_le_bytes();
        let regs = [0, 0, e0, e1, c0, c1];
        for (i, b) in data.iter_mut().enumerate() {
            *b = regs.get(offset as usize + i).copied().unwrap_or(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset < 4 {
            // Status bits are write-one-to-clear and never set; enable bits are kept.
            let mut bytes = self.enable.to_le_bytes();
            for (i, v) in data.iter().enumerate() {
                let at = offset as usize + i;
                if (2..4).contains(&at) {
                    bytes[at - 2] = *v;
                }
            }
            self.enable = u16::from_le_bytes(bytes);
            return;
        }
        let mut bytes = self.control.to_le_bytes();
        for (i, v) in data.iter().enumerate() {
            if let Some(b) = bytes.get_mut(offset as usize - 4 + i) {
                *b = *v;
            }
        }
        let value = u16::from_le_bytes(bytes);
        self.control = (value & !SLP_EN) | SCI_EN;
        if value & SLP_EN != 0 && (value >> 10) & 0x7 == S5_SLP_TYP {
            (self.on_poweroff)();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn s5_with_slp_en_powers_off_and_other_writes_do_not() {
        let hit = Arc::new(AtomicBool::new(false));
        let h = hit.clone();
        let mut pm = AcpiPm::new(Box::new(move || h.store(true, Ordering::SeqCst)));
        let mut d = [0u8; 2];
        pm.read(4, &mut d);
        assert_eq!(u16::from_le_bytes(d) & SCI_EN, SCI_EN);
        pm.write(4, &(S5_SLP_TYP << 10).to_le_bytes());
        assert!(!hit.load(Ordering::SeqCst), "SLP_TYP alone does nothing");
        pm.write(4, &(3 << 10 | SLP_EN).to_le_bytes());
        assert!(!hit.load(Ordering::SeqCst), "S3 is not poweroff");
        pm.write(4, &(S5_SLP_TYP << 10 | SLP_EN).to_le_bytes());
        assert!(hit.load(Ordering::SeqCst));
    }

    #[test]
    fn enable_register_keeps_what_the_guest_writes() {
        let mut pm = AcpiPm::new(Box::new(|| {}));
        pm.write(0, &[0xff, 0xff, 0x20, 0x01]);
        let mut d = [0u8; 4];
        pm.read(0, &mut d);
        assert_eq!(d, [0, 0, 0x20, 0x01]);
    }
}
