//! Orderly power-off, reboot and halt.
//!
//! Owns the shutdown sequence: SIGTERM to every process, a grace period while reaping, SIGKILL to
//! the rest, sync, unmount the API file systems, then reboot(2). It also maps signals to actions
//! (as sysvinit/systemd do): SIGTERM and SIGUSR2 power off, SIGINT (ctrl-alt-del) reboots,
//! SIGUSR1 halts. Only the first caller shuts down; later callers wait forever.

use crate::{mounts, reaper};
use rustix::system::{reboot, RebootCommand};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::info;

/// What the machine does at the end of shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    PowerOff,
    Reboot,
    Halt,
}

impl PowerAction {
    /// The action a signal to PID 1 asks for, if any.
    pub fn for_signal(signal: i32) -> Option<PowerAction> {
        match signal {
            libc::SIGTERM | libc::SIGUSR2 => Some(PowerAction::PowerOff),
            libc::SIGINT => Some(PowerAction::Reboot),
            libc::SIGUSR1 => Some(PowerAction::Halt),
            _ => None,
        }
    }

    fn command(self) -> RebootCommand {
        match self {
            PowerAction::PowerOff => RebootCommand::PowerOff,
            PowerAction::Reboot => RebootCommand::Restart,
            PowerAction::Halt => RebootCommand::Halt,
        }
    }
}

static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// Whether the shutdown sequence has begun: processes ending now were stopped by it (the node
/// agent then does not report its instances as failed; the frontend learns of the reboot from
/// the node's new boot id).
pub fn shutting_down() -> bool {
    SHUTTING_DOWN.load(Ordering::SeqCst)
}

fn signal_all(signal: i32) {
    // SAFETY: kill(2) with pid -1 signals every process but PID 1 itself; no memory involved.
    unsafe { libc::kill(-1, signal) };
}

/// Reaps until no children remain or `grace` passes; true when none remain.
fn reap_until_gone(grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !reaper::reap_all() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Terminates every process, syncs, unmounts and performs `action`. Never returns.
pub fn shutdown(action: PowerAction) -> ! {
    if SHUTTING_DOWN.swap(true, Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
    info!("{action:?}: terminating processes");
    signal_all(libc::SIGTERM);
    if !reap_until_gone(Duration::from_secs(5)) {
        info!("{action:?}: killing processes left after 5 s");
        signal_all(libc::SIGKILL);
        reap_until_gone(Duration::from_secs(2));
    }
    rustix::fs::sync();
    mounts::unmount_all();
    rustix::fs::sync();
    crate::log::line(mallee_proto::LogLevel::Info, &format!("{action:?}: now"));
    if let Err(e) = reboot(action.command()) {
        crate::log::line(
            mallee_proto::LogLevel::Error,
            &format!("reboot(2) failed: {e}; stopping here"),
        );
    }
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_map_to_documented_actions() {
        assert_eq!(
            PowerAction::for_signal(libc::SIGTERM),
            Some(PowerAction::PowerOff)
        );
        assert_eq!(
            PowerAction::for_signal(libc::SIGUSR2),
            Some(PowerAction::PowerOff)
        );
        assert_eq!(
            PowerAction::for_signal(libc::SIGINT),
            Some(PowerAction::Reboot)
        );
        assert_eq!(
            PowerAction::for_signal(libc::SIGUSR1),
            Some(PowerAction::Halt)
        );
        assert_eq!(PowerAction::for_signal(libc::SIGCHLD), None);
    }
}
