//! Per-test working directories under `target/qemu-tests/<test>/`.
//!
//! A directory holds everything one test produces (consoles, pcaps, service logs). It is emptied
//! when the test starts and removed when the test passes; a failing (panicking) test keeps it
//! and prints where it is. A slot lock bounds how many VM tests run at once on this machine.

use std::fs::File;
use std::path::{Path, PathBuf};

/// A test's directory and its slot on the machine.
pub struct TestDir {
    path: PathBuf,
    name: String,
    _slot: File,
}

/// How many VM tests may run at once (`MALLEE_QEMU_SLOTS`, default 2: TCG is CPU-bound and the
/// machine has 2 cores).
fn slots() -> usize {
    std::env::var("MALLEE_QEMU_SLOTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(2)
}

pub fn root() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("qemu-tests")
}

impl TestDir {
    /// Creates (emptied) `target/qemu-tests/<name>/`, first waiting for a free VM slot.
    pub fn new(name: &str) -> Self {
        let root = root();
        std::fs::create_dir_all(&root).expect("create target/qemu-tests");
        let slot = acquire_slot(&root);
        let path = root.join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create test dir");
        Self {
            path,
            name: name.to_string(),
            _slot: slot,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "qemu-tests: {} failed; consoles, pcaps and logs kept in {}",
                self.name,
                self.path.display()
            );
        } else if std::env::var_os("MALLEE_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Takes an exclusive lock on one of `slots()` lock files, blocking until one is free.
fn acquire_slot(root: &Path) -> File {
    use rustix::fs::{flock, FlockOperation};
    let n = slots();
    let files: Vec<File> = (0..n)
        .map(|i| {
            File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(root.join(format!(".slot-{i}")))
                .expect("open slot lock")
        })
        .collect();
    for f in &files {
        if flock(f, FlockOperation::NonBlockingLockExclusive).is_ok() {
            return f.try_clone().expect("dup slot lock");
        }
    }
    eprintln!("qemu-tests: waiting for one of {n} VM slots");
    let f = &files[std::process::id() as usize % n];
    flock(f, FlockOperation::LockExclusive).expect("lock slot");
    f.try_clone().expect("dup slot lock")
}
