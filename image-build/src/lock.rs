//! Package pins: which Debian packages the images are built from (the kernel in
//! `image-build/kernel.lock`, the UEFI boot loader and stub in `image-build/boot.lock`), each
//! with its exact version and SHA-256. The lock files are the single source of truth; `pin`
//! rewrites the kernel's.

use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot read package lock {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("package lock {path} is malformed: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("package lock: sha256 {0:?} is not 64 hex digits")]
    BadDigest(String),
    #[error("cannot write package lock {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// A pinned package: name, exact version, and the SHA-256 of its `.deb`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageLock {
    pub package: String,
    pub version: String,
    pub sha256: String,
}

impl PackageLock {
    pub fn load(path: &Path) -> Result<Self, LockError> {
        let text = std::fs::read_to_string(path).map_err(|source| LockError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            LockError::Parse { source, .. } => LockError::Parse {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self, LockError> {
        let lock: PackageLock = toml::from_str(text).map_err(|source| LockError::Parse {
            path: String::new(),
            source,
        })?;
        let ok = lock.sha256.len() == 64 && lock.sha256.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok {
            return Err(LockError::BadDigest(lock.sha256));
        }
        Ok(lock)
    }

    /// Writes the lock under `header` (comment lines saying what it pins and how to move it).
    pub fn store(&self, path: &Path, header: &str) -> Result<(), LockError> {
        let text = format!(
            "{header}{}",
            toml::to_string(self).expect("a lock always serializes")
        );
        std::fs::write(path, text).map_err(|source| LockError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    /// The file name `apt-get download` gives this package (`:` in epochs becomes `%3a`).
    pub fn deb_file_name(&self) -> String {
        format!(
            "{}_{}_amd64.deb",
            self.package,
            self.version.replace(':', "%3a")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_repository_lock() {
        let lock = PackageLock::parse(include_str!("../kernel.lock")).unwrap();
        assert!(lock.package.starts_with("linux-image-6.1.0-"));
        assert!(lock.deb_file_name().ends_with("_amd64.deb"));
    }

    #[test]
    fn rejects_a_short_digest() {
        let err = PackageLock::parse("package='a'\nversion='1'\nsha256='abc'\n").unwrap_err();
        assert!(matches!(err, LockError::BadDigest(_)));
    }

    #[test]
    fn store_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kernel.lock");
        let lock = PackageLock {
            package: "linux-image-6.1.0-1-amd64".into(),
            version: "6.1.1-1".into(),
            sha256: "0".repeat(64),
        };
        lock.store(&path, "# test\n").unwrap();
        assert_eq!(PackageLock::load(&path).unwrap(), lock);
    }
}
