//! The `mallee.run=/path` test hook: run one program once the node is ready, then power off.
//!
//! The program inherits `/dev/console` as stdout and stderr (so its output streams straight to
//! the console), stdin is `/dev/null`. When it ends, init prints `mallee-init: run /path exit=N`
//! (N is the exit status, or 128 + signal) and powers off. The program starts with no
//! signals blocked (see [`reaper::spawn_watched`]). A program that cannot be started is
//! reported as exit 127. This module owns nothing else.

use crate::power::{shutdown, PowerAction};
use crate::{log, reaper};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tracing::{info, warn};

fn run_program(path: &Path) -> i32 {
    let mut command = Command::new(path);
    command
        .stdin(Stdio::null())
        .stdout(log::console_stdio())
        .stderr(log::console_stdio())
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .env("HOME", "/")
        .current_dir("/");
    match reaper::spawn_watched(&mut command) {
        Ok((pid, exited)) => {
            info!("run {}: started pid {pid}", path.display());
            exited.recv().unwrap_or(-1)
        }
        Err(e) => {
            warn!("run {}: cannot start: {e}", path.display());
            127
        }
    }
}

/// Starts the program on its own thread; when it ends, reports and powers off.
pub fn start(path: PathBuf) {
    std::thread::spawn(move || {
        let code = run_program(&path);
        info!("run {} exit={code}", path.display());
        shutdown(PowerAction::PowerOff);
    });
}
