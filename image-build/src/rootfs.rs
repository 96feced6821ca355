//! Small ext4 root images for test instances, made reproducibly from a staged file tree.
//!
//! The tree is staged in a directory beside the output and packed with `mke2fs -d`
//! (e2fsprogs ≥ 1.47, which walks directories in sorted order). Reproducible means the same
//! [`RootImageSpec`] gives the same bytes: the file system UUID and directory hash seed are
//! derived from the spec (`-U`, `-E hash_seed=`), mke2fs's clock is pinned with
//! `E2FSPROGS_FAKE_TIME`, and what `-d` copies from the staging directory that the build cannot
//! pin (owners, and the ctime/atime the host gives the staged files) is reset with `debugfs`
//! afterwards. It does not make bootable systems: the guest's PID 1 lives in its ramdisk.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::netboot::HOST_MKE2FS;

/// Where `debugfs` is on the build host (Debian's e2fsprogs, beside mke2fs).
pub const HOST_DEBUGFS: &str = "/usr/sbin/debugfs";
/// The time every inode and the superblock carry (seconds since the epoch).
pub const FIXED_TIME: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RootImageError {
    #[error("{0:?} is not a clean relative path inside the image")]
    BadPath(String),
    #[error("the ext4 label {0:?} is longer than 16 bytes")]
    LabelTooLong(String),
    #[error("staging {path}: {source}")]
    Stage {
        path: String,
        source: std::io::Error,
    },
    #[error("running {program} ({source}): run `just setup` (e2fsprogs)")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} on {path} failed: {reason}")]
    Tool {
        program: String,
        path: String,
        reason: String,
    },
}

/// What goes into one root image.
#[derive(Debug, Clone)]
pub struct RootImageSpec {
    /// The ext4 volume label (at most 16 bytes).
    pub label: String,
    pub size_mib: u64,
    /// `(path in the image, mode, bytes)`; parent directories are implied (mode 0755).
    pub files: Vec<(String, u32, Vec<u8>)>,
}

/// What a build produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootImageReport {
    pub path: PathBuf,
    pub label: String,
    /// The file system UUID, `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub uuid: String,
    pub bytes: u64,
    pub files: usize,
}

impl RootImageSpec {
    /// A UUID derived from the spec (`domain` separates the volume UUID from the hash seed),
    /// shaped as a version 4 UUID.
    pub fn derived_uuid(&self, domain: &str) -> String {
        let mut h = Sha256::new();
        h.update(domain.as_bytes());
        h.update([0]);
        h.update(self.label.as_bytes());
        h.update(self.size_mib.to_le_bytes());
        let mut files: Vec<_> = self.files.iter().collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, mode, bytes) in files {
            h.update([0]);
            h.update(path.as_bytes());
            h.update(mode.to_le_bytes());
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
        let mut b: [u8; 16] = h.finalize()[..16].try_into().expect("16 of 32 bytes");
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        format_uuid(&b)
    }

    /// The volume UUID this spec's image carries.
    pub fn uuid(&self) -> String {
        self.derived_uuid("mallee root image uuid")
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in lower-case hex.
pub fn format_uuid(b: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*b).hyphenated().to_string()
}

fn clean(path: &str) -> Result<String, RootImageError> {
    let p = path.trim_start_matches('/');
    let ok = !p.is_empty()
        && p.split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains(char::is_whitespace));
    ok.then(|| p.to_string())
        .ok_or_else(|| RootImageError::BadPath(path.to_string()))
}

/// Writes the spec's files under `stage`; returns every staged path (directories too), sorted.
fn stage_tree(spec: &RootImageSpec, stage: &Path) -> Result<Vec<String>, RootImageError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |path: &Path| {
        let path = path.display().to_string();
        move |source| RootImageError::Stage { path, source }
    };
    let mut paths = std::collections::BTreeSet::new();
    for (path, mode, bytes) in &spec.files {
        let rel = clean(path)?;
        let mut parent = String::new();
        for part in rel
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |s| s.1)
        {
            parent = if parent.is_empty() {
                part.to_string()
            } else {
                format!("{parent}/{part}")
            };
            paths.insert(parent.clone());
        }
        let dest = stage.join(&rel);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(err(dir))?;
        }
        std::fs::write(&dest, bytes).map_err(err(&dest))?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(*mode))
            .map_err(err(&dest))?;
        paths.insert(rel);
    }
    for dir in paths.iter().filter(|p| stage.join(p).is_dir()) {
        let full = stage.join(dir);
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(0o755))
            .map_err(err(&full))?;
    }
    Ok(paths.into_iter().collect())
}

fn run(program: &str, args: &[String], path: &Path) -> Result<(), RootImageError> {
    let out = Command::new(program)
        .args(args)
        .env("E2FSPROGS_FAKE_TIME", FIXED_TIME.to_string())
        .output()
        .map_err(|source| RootImageError::Spawn {
            program: program.to_string(),
            source,
        })?;
    // debugfs reports a failed request on stderr but exits 0: any line but its banner fails.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .collect();
    if !out.status.success() || (program.ends_with("debugfs") && !complaints.is_empty()) {
        return Err(RootImageError::Tool {
            program: program.to_string(),
            path: path.display().to_string(),
            reason: format!("{}: {}", out.status, complaints.join("; ")),
        });
    }
    Ok(())
}

/// The `mke2fs` arguments for `spec` packing `stage` into `image`.
pub fn mke2fs_args(spec: &RootImageSpec, stage: &Path, image: &Path) -> Vec<String> {
    [
        "-q",
        "-F",
        "-t",
        "ext4",
        "-L",
        &spec.label,
        "-U",
        &spec.uuid(),
        "-E",
        &format!(
            "hash_seed={},root_owner=0:0",
            spec.derived_uuid("mallee root image hash seed")
        ),
        "-d",
        &stage.display().to_string(),
        &image.display().to_string(),
        &format!("{}M", spec.size_mib),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Builds `image` from `spec` (staged in `image` + `.stage`, removed after; the image is
/// written as `.partial` and renamed into place), reporting progress on stderr.
pub fn build(spec: &RootImageSpec, image: &Path) -> Result<RootImageReport, RootImageError> {
    if spec.label.len() > 16 {
        return Err(RootImageError::LabelTooLong(spec.label.clone()));
    }
    let stage_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| RootImageError::Stage { path, source }
    };
    let stage = image.with_extension("stage");
    let partial = image.with_extension("partial");
    let _ = std::fs::remove_dir_all(&stage);
    let _ = std::fs::remove_file(&partial);
    std::fs::create_dir_all(&stage).map_err(stage_err(&stage))?;
    let paths = stage_tree(spec, &stage)?;
    eprintln!(
        "image-build: root image {} MiB ext4 (label {}, uuid {}): {} paths",
        spec.size_mib,
        spec.label,
        spec.uuid(),
        paths.len()
    );
    let made = run(HOST_MKE2FS, &mke2fs_args(spec, &stage, &partial), &partial);
    let _ = std::fs::remove_dir_all(&stage);
    made?;
    // Pin what -d copied from the staging directory: times and owners of every staged inode.
    let t = format!("@{FIXED_TIME}");
    let mut requests = String::new();
    for p in &paths {
        for (field, value) in [
            ("uid", "0"),
            ("gid", "0"),
            ("atime", &t),
            ("mtime", &t),
            ("ctime", &t),
            ("crtime", &t),
        ] {
            requests.push_str(&format!("sif /{p} {field} {value}\n"));
        }
    }
    let script = image.with_extension("debugfs");
    std::fs::write(&script, requests).map_err(stage_err(&script))?;
    let args = ["-w", "-f"]
        .iter()
        .map(|s| s.to_string())
        .chain([script.display().to_string(), partial.display().to_string()])
        .collect::<Vec<_>>();
    let pinned = run(HOST_DEBUGFS, &args, &partial);
    let _ = std::fs::remove_file(&script);
    pinned?;
    std::fs::rename(&partial, image).map_err(stage_err(image))?;
    eprintln!("image-build: wrote {}", image.display());
    Ok(RootImageReport {
        path: image.to_path_buf(),
        label: spec.label.clone(),
        uuid: spec.uuid(),
        bytes: spec.size_mib << 20,
        files: spec.files.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RootImageSpec {
        RootImageSpec {
            label: "t".into(),
            size_mib: 8,
            files: vec![("etc/a".into(), 0o644, b"a".to_vec())],
        }
    }

    #[test]
    fn the_uuid_follows_the_content_and_is_version_4() {
        let a = spec();
        let mut b = spec();
        b.files[0].2 = b"b".to_vec();
        assert_eq!(a.uuid(), spec().uuid());
        assert_ne!(a.uuid(), b.uuid());
        assert_ne!(a.uuid(), a.derived_uuid("other"));
        let u = a.uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
    }

    #[test]
    fn bad_paths_and_long_labels_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec();
        s.files.push(("../x".into(), 0o644, vec![]));
        let err = build(&s, &dir.path().join("r.img")).unwrap_err();
        assert!(matches!(err, RootImageError::BadPath(_)), "{err}");
        let mut s = spec();
        s.label = "seventeen-bytes-x".into();
        let err = build(&s, &dir.path().join("r.img")).unwrap_err();
        assert!(matches!(err, RootImageError::LabelTooLong(_)), "{err}");
        assert!(!dir.path().join("r.img").exists());
    }
}
