//! Zombie reaping for PID 1, with exit statuses handed to whoever waits for a child it spawned.
//!
//! PID 1 (also marked child subreaper) adopts every orphan; [`reap_all`] collects them all with
//! `waitpid(-1, WNOHANG)`. Because that steals exit statuses from `std::process::Child::wait`,
//! code that needs a child's status spawns it through [`spawn_watched`] and receives the status
//! on a channel. This module does not decide when to reap; the signal loop calls it on SIGCHLD.

use rustix::process::{waitpid, WaitOptions, WaitStatus};
use std::collections::HashMap;
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
pub fn spawn_watched(command: &mut Command) -> std::io::Result<(u32, Receiver<i32>)> {
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

    #[test]
    fn watched_child_status_arrives_after_reaping() {
        let (pid, rx) = spawn_watched(Command::new("sh").args(["-c", "exit 7"])).unwrap();
        assert!(pid > 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            reap_all();
            if let Ok(code) = rx.try_recv() {
                assert_eq!(code, 7);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "child never reaped");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
