//! The controller process's loop: looks at the exports file every [`POLL`], reconciles when it
//! changed (or, after an export failed in a way that may pass, every [`RETRY`]) and answers
//! with the applied file. A file that cannot be read or parsed leaves what is served as it is
//! and says so in the answer. SIGTERM or SIGINT (init's shutdown) stops every export first,
//! so their writes are durable and their dirty records closed.

use super::controller::{reconcile, Running};
use super::files::{read_exports, write_applied};
use mallee_proto::handoff::Version;
use mallee_proto::storage::{Applied, Exports};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// How often the exports file is looked at.
pub const POLL: Duration = Duration::from_millis(200);
/// How soon an export that failed to start is tried again.
pub const RETRY: Duration = Duration::from_secs(2);

/// The storage controller of one storage directory.
#[derive(Debug)]
pub struct Controller {
    dir: PathBuf,
    running: Running,
    /// The version last acted on; `None` before the first look, or when the file is missing.
    seen: Option<Option<Version>>,
    retry_at: Option<Instant>,
    last: Applied,
}

impl Controller {
    /// The controller of `dir`, serving nothing yet. The directory is the daemon's: it makes
    /// it (root making it could leave it root's, unwritable by the daemon); until then nothing
    /// is wanted and nothing is answered.
    pub fn new(dir: &Path) -> Self {
        Controller {
            dir: dir.to_owned(),
            running: Running::new().with_records(dir),
            seen: None,
            retry_at: None,
            last: Applied::default(),
        }
    }

    /// Replaces the served state (a probe timeout of its own, for instance).
    pub fn with_running(mut self, running: Running) -> Self {
        self.running = running.with_records(&self.dir);
        self
    }

    /// One look at the exports file: reconciles and answers when it changed or a retry is
    /// due. Returns the answer when one was written.
    pub fn step(&mut self) -> Option<Applied> {
        let path = self.dir.join(mallee_proto::storage::EXPORTS_FILE);
        let now = match std::fs::symlink_metadata(&path) {
            Ok(meta) => Some(Version::of(&meta)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                warn!("storage: {}: {e}", path.display());
                return None;
            }
        };
        let due = self.retry_at.is_some_and(|at| Instant::now() >= at);
        if self.seen == Some(now) && !due {
            return None;
        }
        let (desired, owner, version) = match now {
            // Nothing wanted: serve nothing.
            None => (Exports::default(), 0, None),
            Some(_) => match read_exports(&self.dir) {
                Ok((exports, meta)) => (exports, meta.uid(), Some(Version::of(&meta))),
                Err(e) => {
                    error!(
                        "storage: {e}; serving generation {} still",
                        self.last.generation
                    );
                    self.seen = Some(now);
                    self.retry_at = None;
                    let answer = Applied {
                        error: Some(e.to_string()),
                        ..self.last.clone()
                    };
                    self.answer(&answer);
                    return Some(answer);
                }
            },
        };
        let outcome = reconcile(&mut self.running, &desired, owner);
        self.seen = Some(version);
        self.retry_at = outcome.retry.then(|| Instant::now() + RETRY);
        let failed = (outcome.applied.exports.iter())
            .filter(|e| e.error.is_some())
            .count();
        info!(
            "storage: generation {} applied: {} exports, {failed} not served",
            desired.generation,
            outcome.applied.exports.len()
        );
        self.last = outcome.applied.clone();
        self.answer(&outcome.applied);
        Some(outcome.applied)
    }

    fn answer(&self, applied: &Applied) {
        if !self.dir.is_dir() {
            return;
        }
        if let Err(e) = write_applied(&self.dir, applied) {
            error!("storage: answering: {e}");
        }
    }

    /// Looks at the exports file every [`POLL`] until SIGTERM or SIGINT, then stops every
    /// export and returns.
    pub fn run(mut self) -> std::io::Result<()> {
        let stop = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(signal, Arc::clone(&stop))?;
        }
        while !stop.load(Ordering::Relaxed) {
            self.step();
            std::thread::sleep(POLL);
        }
        info!("storage: told to stop; stopping every export");
        self.running.stop_all();
        Ok(())
    }
}

/// Runs the storage controller of `dir` until it is told to stop.
pub fn run(dir: &Path) -> std::io::Result<()> {
    Controller::new(dir).run()
}
