//! The exit latch: the first component to decide the VM is over records why, and the main
//! thread, waiting on it, wakes up.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Condvar, Mutex};

use crate::bus::lock;
use crate::exit::ExitReason;

/// Records the first exit reason and wakes waiters.
#[derive(Default)]
pub struct ExitLatch {
    reason: AtomicU8,
    mutex: Mutex<()>,
    cv: Condvar,
}

impl ExitLatch {
    /// A latch with no reason yet.
    pub fn new() -> ExitLatch {
        ExitLatch::default()
    }

    /// Records `reason` unless one is already recorded.
    pub fn set(&self, reason: ExitReason) {
        let _g = lock(&self.mutex);
        let _ = self
            .reason
            .compare_exchange(0, reason.to_u8(), Ordering::SeqCst, Ordering::SeqCst);
        self.cv.notify_all();
    }

    /// The recorded reason, if any.
    pub fn get(&self) -> Option<ExitReason> {
        ExitReason::from_u8(self.reason.load(Ordering::SeqCst))
    }

    /// Blocks until a reason is recorded.
    pub fn wait(&self) -> ExitReason {
        let mut g = lock(&self.mutex);
        loop {
            if let Some(r) = self.get() {
                return r;
            }
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn first_reason_wins_and_wakes_the_waiter() {
        let latch = Arc::new(ExitLatch::new());
        let l = latch.clone();
        let t = std::thread::spawn(move || l.wait());
        latch.set(ExitReason::Reboot);
        latch.set(ExitReason::Error);
        assert_eq!(t.join().unwrap(), ExitReason::Reboot);
        assert_eq!(latch.get(), Some(ExitReason::Reboot));
    }
}
