//! A reproducible initramfs: a sorted file tree packed as cpio newc and gzip-compressed.
//!
//! Reproducible means the same inputs give the same bytes: entries are sorted by path, every
//! parent directory is implied, owners are root, mtimes are zero (cpio and gzip header alike).
//! The kernel decompresses gzip on every Debian kernel (`CONFIG_RD_GZIP=y`).

use crate::cpio::{CpioWriter, Entry, EntryKind};
use crate::elf::{check_static, StaticCheckError};
use flate2::{Compression, GzBuilder};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    NotStatic(#[from] StaticCheckError),
    #[error("{0:?} is not a clean relative path inside the archive")]
    BadPath(String),
    #[error("listing the libraries of {path} with ldd: {reason}")]
    Ldd { path: String, reason: String },
}

/// Sizes of what was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedSize {
    pub files: usize,
    pub uncompressed: u64,
    pub compressed: u64,
}

/// The file tree of an initramfs, kept sorted by path.
#[derive(Debug, Default, Clone)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    /// The skeleton every Mallee initramfs has: mount points and `/dev/console`, which the
    /// kernel opens for PID 1 before devtmpfs is mounted.
    pub fn with_skeleton() -> Self {
        let mut fs = Self::default();
        for dir in ["dev", "proc", "sys", "run", "tmp", "etc", "root", "var"] {
            fs.add_dir(dir).expect("static paths are clean");
        }
        fs.insert(Entry {
            path: "dev/console".into(),
            perm: 0o600,
            kind: EntryKind::CharDevice { major: 5, minor: 1 },
        })
        .expect("static path");
        fs
    }

    pub fn add_dir(&mut self, path: &str) -> Result<(), InitramfsError> {
        self.insert(Entry {
            path: clean(path)?,
            perm: 0o755,
            kind: EntryKind::Directory,
        })
    }

    pub fn add_file(
        &mut self,
        path: &str,
        perm: u32,
        bytes: Vec<u8>,
    ) -> Result<(), InitramfsError> {
        self.insert(Entry {
            path: clean(path)?,
            perm,
            kind: EntryKind::File(bytes),
        })
    }

    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), InitramfsError> {
        self.insert(Entry {
            path: clean(path)?,
            perm: 0o777,
            kind: EntryKind::Symlink(target.to_string()),
        })
    }

    /// Adds one of our executables, refusing anything with an ELF interpreter.
    pub fn add_static_binary(&mut self, path: &str, source: &Path) -> Result<(), InitramfsError> {
        let bytes = std::fs::read(source).map_err(|e| InitramfsError::Read {
            path: source.display().to_string(),
            source: e,
        })?;
        check_static(&source.display().to_string(), &bytes)?;
        self.add_file(path, 0o755, bytes)
    }

    /// Adds a dynamically linked host program at `path` with everything `ldd` says it loads
    /// (libraries and the ELF interpreter, each at its host path). For host tools no static
    /// build exists of (`mke2fs`, QEMU); returns the library paths added.
    pub fn add_dynamic_program(
        &mut self,
        path: &str,
        source: &Path,
    ) -> Result<Vec<String>, InitramfsError> {
        let ldd_err = |reason: String| InitramfsError::Ldd {
            path: source.display().to_string(),
            reason,
        };
        let out = std::process::Command::new("ldd")
            .arg(source)
            .output()
            .map_err(|e| ldd_err(e.to_string()))?;
        if !out.status.success() {
            return Err(ldd_err(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        let libs = parse_ldd(&String::from_utf8_lossy(&out.stdout));
        if libs.is_empty() {
            return Err(ldd_err("no libraries listed (a static program?)".into()));
        }
        let bytes = std::fs::read(source).map_err(|e| InitramfsError::Read {
            path: source.display().to_string(),
            source: e,
        })?;
        self.add_file(path, 0o755, bytes)?;
        for lib in &libs {
            let bytes = std::fs::read(lib).map_err(|e| InitramfsError::Read {
                path: lib.clone(),
                source: e,
            })?;
            self.add_file(lib, 0o755, bytes)?;
        }
        Ok(libs)
    }

    /// Copies a host file in (modules, data).
    pub fn add_host_file(&mut self, path: &str, source: &Path) -> Result<(), InitramfsError> {
        let bytes = std::fs::read(source).map_err(|e| InitramfsError::Read {
            path: source.display().to_string(),
            source: e,
        })?;
        self.add_file(path, 0o644, bytes)
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_start_matches('/'))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, entry: Entry) -> Result<(), InitramfsError> {
        // Imply parents so the kernel never meets a file whose directory does not exist yet.
        let mut parent = String::new();
        let parts: Vec<&str> = entry.path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.entries.entry(parent.clone()).or_insert_with(|| Entry {
                path: parent.clone(),
                perm: 0o755,
                kind: EntryKind::Directory,
            });
        }
        self.entries.insert(entry.path.clone(), entry);
        Ok(())
    }

    /// The uncompressed cpio archive.
    pub fn to_cpio(&self) -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        for entry in self.entries.values() {
            w.append(entry).expect("writing to a Vec cannot fail");
        }
        w.finish().expect("writing to a Vec cannot fail").0
    }

    /// Packs and gzips to `dest` (through a temporary file renamed into place), reporting
    /// progress on stderr.
    pub fn write_gz(&self, dest: &Path) -> Result<PackedSize, InitramfsError> {
        let werr = |source| InitramfsError::Write {
            path: dest.display().to_string(),
            source,
        };
        let cpio = self.to_cpio();
        eprintln!(
            "image-build: packing {} entries ({:.1} MiB) into {}",
            self.entries.len(),
            mib(cpio.len() as u64),
            dest.display()
        );
        let tmp = dest.with_extension("partial");
        let file = std::fs::File::create(&tmp).map_err(werr)?;
        let mut gz = GzBuilder::new()
            .mtime(0)
            .operating_system(3)
            .write(std::io::BufWriter::new(file), Compression::best());
        let chunk = (cpio.len() / 10).max(1 << 20);
        for (i, part) in cpio.chunks(chunk).enumerate() {
            gz.write_all(part).map_err(werr)?;
            let done = ((i + 1) * chunk).min(cpio.len());
            eprintln!(
                "image-build:   compressed {:>3}%",
                done * 100 / cpio.len().max(1)
            );
        }
        let file = gz
            .finish()
            .map_err(werr)?
            .into_inner()
            .map_err(|e| werr(e.into_error()))?;
        file.sync_all().map_err(werr)?;
        let compressed = file.metadata().map_err(werr)?.len();
        std::fs::rename(&tmp, dest).map_err(werr)?;
        Ok(PackedSize {
            files: self.entries.len(),
            uncompressed: cpio.len() as u64,
            compressed,
        })
    }
}

/// The absolute library paths in `ldd` output: `name => /path (addr)` and the interpreter's
/// `/path (addr)`; the vDSO and unresolved names are skipped.
pub fn parse_ldd(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let target = line.split_once("=>").map_or(line, |(_, t)| t.trim());
            let path = target.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_string())
        })
        .collect()
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn clean(path: &str) -> Result<String, InitramfsError> {
    let p = path.trim_start_matches('/');
    let ok = !p.is_empty()
        && !p.ends_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(p.to_string())
    } else {
        Err(InitramfsError::BadPath(path.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_implied_and_sorted() {
        let mut fs = Initramfs::default();
        fs.add_file("lib/modules/x.ko", 0o644, vec![1]).unwrap();
        assert!(fs.contains("lib"));
        assert!(fs.contains("/lib/modules"));
        let order: Vec<_> = fs.entries.keys().cloned().collect();
        assert_eq!(order, ["lib", "lib/modules", "lib/modules/x.ko"]);
    }

    #[test]
    fn ldd_output_gives_libraries_and_interpreter() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f)\n\tlibgone.so => not found\n\t/lib64/ld-linux-x86-64.so.2 (0x7f)\n";
        assert_eq!(
            parse_ldd(text),
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }

    #[test]
    fn a_dynamic_program_brings_its_libraries() {
        let mut fs = Initramfs::default();
        let libs = fs
            .add_dynamic_program("sbin/mke2fs", Path::new("/usr/sbin/mke2fs"))
            .expect("mke2fs (e2fsprogs) on the host: run `just setup`");
        assert!(fs.contains("sbin/mke2fs"));
        assert!(libs.iter().any(|l| l.contains("libext2fs")), "{libs:?}");
        assert!(libs.iter().any(|l| l.contains("ld-linux")), "{libs:?}");
        for lib in &libs {
            assert!(fs.contains(lib), "{lib}");
        }
    }

    #[test]
    fn escaping_paths_are_refused() {
        let mut fs = Initramfs::default();
        assert!(fs.add_file("../etc/passwd", 0o644, vec![]).is_err());
        assert!(fs.add_file("a//b", 0o644, vec![]).is_err());
    }

    #[test]
    fn insertion_order_does_not_change_the_bytes() {
        let mut a = Initramfs::with_skeleton();
        a.add_file("b", 0o644, vec![2]).unwrap();
        a.add_file("a", 0o644, vec![1]).unwrap();
        let mut b = Initramfs::with_skeleton();
        b.add_file("a", 0o644, vec![1]).unwrap();
        b.add_file("b", 0o644, vec![2]).unwrap();
        assert_eq!(a.to_cpio(), b.to_cpio());
    }

    #[test]
    fn gz_output_is_identical_across_writes() {
        let dir = tempfile::tempdir().unwrap();
        let mut fs = Initramfs::with_skeleton();
        fs.add_file("init", 0o755, vec![7; 5000]).unwrap();
        fs.write_gz(&dir.path().join("one")).unwrap();
        fs.write_gz(&dir.path().join("two")).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("one")).unwrap(),
            std::fs::read(dir.path().join("two")).unwrap()
        );
    }
}
