//! Zombie reaping for PID 1, with exit statuses handed to whoever waits for a child it spawned.
//!
//! PID 1 (also marked child subreaper) adopts every orphan; [`reap_all`] collects them all with
//! `waitpid(-1, WNOHANG)`. Because that steals exit statuses from `std::process::Child::wait`,
//! code that needs a child's status spawns it through [`spawn_watched`] and receives the status
//! on a channel. This module does not decide when to reap; the signal loop calls it on SIGCHLD.

use rustix::process::{waitpid, WaitOptions, WaitStatus};
use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

static WATCHED: Mutex<Option<HashMap<i32, Sender<i32>>>> = Mutex::new(None);

/// Shell-style exit code: the exit status, or 128 + the signal that killed the process.
pub fn exit_code(status: WaitStatus) -> i32 {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => -1,
    }
}

/// Spawns `command` and returns its pid and a channel that receives its exit code once reaped.
/// The program starts with an empty signal mask: init's threads block the signals init waits
/// for, and `Command` would otherwise keep that mask across exec (the program would then
/// ignore SIGTERM at shutdown).
pub fn spawn_watched(command: &mut Command) -> std::io::Result<(u32, Receiver<i32>)> {
    // SAFETY: the closure runs between fork and exec and only calls sigemptyset and
    // sigprocmask, which are async-signal-safe, on a local set.
    unsafe {
        command.pre_exec(|| {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
    // Holding the lock across spawn means the child cannot be reaped before it is registered.
    let mut watched = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
    let child = command.spawn()?;
    let (tx, rx) = channel();
    watched
        .get_or_insert_with(HashMap::new)
        .insert(child.id() as i32, tx);
    Ok((child.id(), rx))
}

/// Reaps every exited child. Returns `false` when no children are left at all (ECHILD).
pub fn reap_all() -> bool {
    let mut watched = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        match waitpid(None, WaitOptions::NOHANG) {
            Ok(Some((pid, status))) => {
                let pid = pid.as_raw_nonzero().get();
                if let Some(tx) = watched.as_mut().and_then(|w| w.remove(&pid)) {
                    let _ = tx.send(exit_code(status));
                }
            }
            Ok(None) => return true,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_code(rx: &Receiver<i32>) -> i32 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            reap_all();
            if let Ok(code) = rx.try_recv() {
                return code;
            }
            assert!(std::time::Instant::now() < deadline, "child never reaped");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn spawned_program_starts_with_no_signals_blocked() {
        // Block SIGTERM in this thread, as init's threads do.
        // SAFETY: plain sigset manipulation on locals; only this test thread's mask changes.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        let script = "grep -q '^SigBlk:[[:space:]]*0*$' /proc/self/status";
        let (_, rx) = spawn_watched(Command::new("sh").args(["-c", script])).unwrap();
        assert_eq!(wait_code(&rx), 0, "child inherited a blocked signal");
    }

    #[test]
    fn watched_child_status_arrives_after_reaping() {
        let (pid, rx) = spawn_watched(Command::new("sh").args(["-c", "exit 7"])).unwrap();
        assert!(pid > 0);
        assert_eq!(wait_code(&rx), 7);
    }
}
