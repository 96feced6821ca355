//! The exit latch: the first component to decide the VM is over records why (and, for a
//! failure, what failed), and the main thread, waiting on it, wakes up.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Condvar, Mutex};

use crate::bus::lock;
use crate::exit::Exit;

/// Records the first exit reason and wakes waiters.
#[derive(Default)]
pub struct ExitLatch {
    /// 0 while running, else the exit's status + 1 (read on every vCPU exit, so an atomic).
    reason: AtomicU8,
    /// What failed, when the first reason was a failure recorded with [`ExitLatch::fail`].
    failure: Mutex<Option<String>>,
    mutex: Mutex<()>,
    cv: Condvar,
}

impl ExitLatch {
    /// A latch with no reason yet.
    pub fn new() -> ExitLatch {
        ExitLatch::default()
    }

    /// Records `reason` unless one is already recorded; true if it was the first.
    fn record(&self, reason: Exit) -> bool {
        let _g = lock(&self.mutex);
        let first = self
            .reason
            .compare_exchange(0, reason.code() + 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        self.cv.notify_all();
        first
    }

    /// Records `reason` unless one is already recorded.
    pub fn set(&self, reason: Exit) {
        self.record(reason);
    }

    /// Records a failure saying what failed, unless a reason is already recorded.
    pub fn fail(&self, message: String) {
        let mut failure = lock(&self.failure);
        if self.record(Exit::Error) {
            *failure = Some(message);
        }
    }

    /// The recorded reason, if any.
    pub fn get(&self) -> Option<Exit> {
        match self.reason.load(Ordering::SeqCst) {
            0 => None,
            v => Exit::from_code(i32::from(v) - 1),
        }
    }

    /// What failed, if the VM ended with a failure recorded by [`ExitLatch::fail`].
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    /// Blocks until a reason is recorded.
    pub fn wait(&self) -> Exit {
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
        latch.set(Exit::Reboot);
        latch.fail("too late".into());
        assert_eq!(t.join().unwrap(), Exit::Reboot);
        assert_eq!(latch.get(), Some(Exit::Reboot));
        assert_eq!(latch.failure(), None, "a later failure is not the reason");
    }

    #[test]
    fn every_exit_round_trips_through_the_latch() {
        for exit in Exit::ALL {
            let latch = ExitLatch::new();
            assert_eq!(latch.get(), None);
            latch.set(exit);
            assert_eq!(latch.get(), Some(exit));
        }
    }

    #[test]
    fn a_failure_keeps_its_message() {
        let latch = ExitLatch::new();
        latch.fail("KVM_RUN failed: EFAULT".into());
        latch.fail("second".into());
        assert_eq!(latch.get(), Some(Exit::Error));
        assert_eq!(latch.failure().as_deref(), Some("KVM_RUN failed: EFAULT"));
    }
}
