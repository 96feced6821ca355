//! Fetching a pinned `.deb` with `apt-get download`, verified and cached per machine, and
//! unpacking it into the cache.
//!
//! The cache is `$XDG_CACHE_HOME/mallee/debs` (or `~/.cache/mallee/debs`), so every checkout on a
//! machine shares one download. A cached file whose digest does not match the lock is fetched
//! again; a fresh download that does not match is an error naming both digests.

use crate::lock::PackageLock;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot use cache dir {path}: {source}")]
    Cache {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "`apt-get download {0}` failed ({1}); run `apt-get update` (or `just setup`) and retry"
    )]
    AptGet(String, String),
    #[error("{file}: SHA-256 is {actual}, the lock says {expected}; the mirror changed the package or the lock is wrong (`just pin-kernel` moves the pin)")]
    DigestMismatch {
        file: String,
        actual: String,
        expected: String,
    },
    #[error("unpacking {deb}: {detail}")]
    Unpack { deb: String, detail: String },
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The per-machine cache directory for downloaded packages.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MALLEE_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("mallee")
}

/// SHA-256 of a file, hex-encoded, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let io = |source| FetchError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Returns the path of the verified `.deb`, downloading it only when the cache lacks it.
pub fn fetch_package(lock: &PackageLock, cache: &Path) -> Result<PathBuf, FetchError> {
    let dir = cache.join("debs");
    std::fs::create_dir_all(&dir).map_err(|source| FetchError::Cache {
        path: dir.display().to_string(),
        source,
    })?;
    let path = dir.join(lock.deb_file_name());
    if path.exists() && sha256_file(&path)? == lock.sha256 {
        eprintln!("image-build: {} {} (cached)", lock.package, lock.version);
        return Ok(path);
    }
    eprintln!(
        "image-build: downloading {}={} with apt-get",
        lock.package, lock.version
    );
    download(&format!("{}={}", lock.package, lock.version), &dir)?;
    let actual = sha256_file(&path)?;
    if actual != lock.sha256 {
        let _ = std::fs::remove_file(&path);
        return Err(FetchError::DigestMismatch {
            file: path.display().to_string(),
            actual,
            expected: lock.sha256.clone(),
        });
    }
    Ok(path)
}

/// Runs `apt-get download SPEC` in `dir`; apt prints its own progress.
pub fn download(spec: &str, dir: &Path) -> Result<(), FetchError> {
    let status = Command::new("apt-get")
        .args(["download", "-q", spec])
        // apt drops to the _apt user for downloads; a root-only cache dir makes it warn, not fail.
        .current_dir(dir)
        .status()
        .map_err(|e| FetchError::AptGet(spec.to_string(), e.to_string()))?;
    if !status.success() {
        return Err(FetchError::AptGet(spec.to_string(), status.to_string()));
    }
    Ok(())
}

/// Unpacks `deb`'s files into `dest` through `dest.partial`, renamed into place when complete
/// (marked by `dest/.complete`), so an interrupted unpack is never used.
pub fn unpack_deb(deb: &Path, dest: &Path) -> Result<(), FetchError> {
    let fail = |detail: String| FetchError::Unpack {
        deb: deb.display().to_string(),
        detail,
    };
    let tmp = dest.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| fail(e.to_string()))?;
    let mut child = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("running dpkg-deb: {e}")))?;
    let stdout = child.stdout.take().expect("piped");
    let mut archive = tar::Archive::new(stdout);
    archive.set_preserve_permissions(false);
    archive.unpack(&tmp).map_err(|e| fail(e.to_string()))?;
    let status = child.wait().map_err(|e| fail(e.to_string()))?;
    if !status.success() {
        return Err(fail(format!("dpkg-deb exited {status}")));
    }
    std::fs::write(tmp.join(".complete"), b"").map_err(|e| fail(e.to_string()))?;
    let _ = std::fs::remove_dir_all(dest);
    std::fs::rename(&tmp, dest).map_err(|e| fail(e.to_string()))?;
    Ok(())
}
