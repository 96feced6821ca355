//! Just enough of the i8042 keyboard controller for a guest to reset the machine.
//!
//! Linux reboots by pulsing the reset line (command 0xFE on port 0x64); that ends the VM with
//! [`crate::exit::Exit::Reboot`]. There is no keyboard: the status register reads empty and
//! the data port reads zero.

use crate::bus::BusDevice;

/// The reset-pulse command.
pub const CMD_RESET_CPU: u8 = 0xfe;

/// The controller at ports 0x60..=0x64, calling `on_reset` when the guest resets the CPU.
pub struct I8042 {
    on_reset: Box<dyn Fn() + Send>,
}

impl I8042 {
    /// A controller that calls `on_reset` for a reset pulse.
    pub fn new(on_reset: Box<dyn Fn() + Send>) -> I8042 {
        I8042 { on_reset }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status (offset 4): no data, input buffer empty. Data (offset 0): nothing pending.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 4 && data.first() == Some(&CMD_RESET_CPU) {
            (self.on_reset)();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn reset_command_calls_back_and_other_writes_do_not() {
        let hit = Arc::new(AtomicBool::new(false));
        let h = hit.clone();
        let mut dev = I8042::new(Box::new(move || h.store(true, Ordering::SeqCst)));
        dev.write(0, &[CMD_RESET_CPU]);
        dev.write(4, &[0x20]);
        assert!(!hit.load(Ordering::SeqCst));
        dev.write(4, &[CMD_RESET_CPU]);
        assert!(hit.load(Ordering::SeqCst));
    }
}
