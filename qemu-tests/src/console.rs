//! A VM's serial console captured to a file, and waiting for patterns in it.
//!
//! Patterns are regexes matched against the whole history (not just new output), so a line
//! printed before the wait began still counts. Waits poll the file until a deadline.

use regex::Regex;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("timed out after {waited:?} waiting for /{pattern}/ on {path}; last lines:\n{tail}")]
    Timeout {
        pattern: String,
        path: String,
        waited: Duration,
        tail: String,
    },
    #[error("the VM exited ({status}) before /{pattern}/ appeared on {path}; last lines:\n{tail}")]
    Exited {
        pattern: String,
        path: String,
        status: String,
        tail: String,
    },
    #[error("bad pattern /{0}/: {1}")]
    BadPattern(String, regex::Error),
}

/// The console log of one VM.
#[derive(Debug, Clone)]
pub struct Console {
    path: PathBuf,
}

const POLL: Duration = Duration::from_millis(50);

impl Console {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything the VM printed so far (lossy UTF-8, `\r` dropped).
    pub fn text(&self) -> String {
        let bytes = std::fs::read(&self.path).unwrap_or_default();
        String::from_utf8_lossy(&bytes).replace('\r', "")
    }

    /// The last `n` lines, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let text = self.text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits until `pattern` matches the history; returns the capture groups (0 = whole match).
    /// `alive` is asked between polls and ends the wait early when the VM has exited.
    pub fn wait_for_while(
        &self,
        pattern: &str,
        timeout: Duration,
        mut alive: impl FnMut() -> Result<(), String>,
    ) -> Result<Vec<String>, ConsoleError> {
        let re = Regex::new(pattern).map_err(|e| ConsoleError::BadPattern(pattern.into(), e))?;
        let start = Instant::now();
        loop {
            let text = self.text();
            if let Some(caps) = re.captures(&text) {
                return Ok(caps
                    .iter()
                    .map(|m| m.map(|m| m.as_str().to_string()).unwrap_or_default())
                    .collect());
            }
            if let Err(status) = alive() {
                // One last read: the VM may have printed the line just before exiting.
                if let Some(caps) = re.captures(&self.text()) {
                    return Ok(caps
                        .iter()
                        .map(|m| m.map(|m| m.as_str().to_string()).unwrap_or_default())
                        .collect());
                }
                return Err(ConsoleError::Exited {
                    pattern: pattern.into(),
                    path: self.path.display().to_string(),
                    status,
                    tail: self.tail(30),
                });
            }
            if start.elapsed() >= timeout {
                return Err(ConsoleError::Timeout {
                    pattern: pattern.into(),
                    path: self.path.display().to_string(),
                    waited: start.elapsed(),
                    tail: self.tail(30),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// `wait_for_while` with no liveness check.
    pub fn wait_for(&self, pattern: &str, timeout: Duration) -> Result<Vec<String>, ConsoleError> {
        self.wait_for_while(pattern, timeout, || Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_history_written_before_the_wait() {
        let dir = std::env::temp_dir().join(format!("console-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.log");
        std::fs::write(
            &path,
            "boot\r\nmallee-init: ready role=node ip=10.0.2.15/24 boot_ms=812\r\n",
        )
        .unwrap();
        let caps = Console::new(&path)
            .wait_for(
                r"ready role=(\w+) ip=(\S+) boot_ms=(\d+)",
                Duration::from_secs(1),
            )
            .unwrap();
        assert_eq!(caps[1], "node");
        assert_eq!(caps[2], "10.0.2.15/24");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn times_out_with_the_tail_in_the_error() {
        let dir = std::env::temp_dir().join(format!("console-test2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.log");
        std::fs::write(&path, "kernel panic\n").unwrap();
        let err = Console::new(&path)
            .wait_for("ready", Duration::from_millis(120))
            .unwrap_err();
        assert!(err.to_string().contains("kernel panic"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_dead_vm_ends_the_wait() {
        let dir = std::env::temp_dir().join(format!("console-test3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.log");
        std::fs::write(&path, "").unwrap();
        let err = Console::new(&path)
            .wait_for_while("ready", Duration::from_secs(30), || Err("exit 1".into()))
            .unwrap_err();
        assert!(matches!(err, ConsoleError::Exited { .. }));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
