//! The unpacked kernel package: its `vmlinuz`, release string and module files.
//!
//! The `.deb` is unpacked once per machine into the cache (`kernels/<package>_<version>/`),
//! through a temporary directory renamed into place, so an interrupted unpack is never used.
//! Module *relationships* (dependencies, aliases) are `kmod`'s business, not this module's.

use crate::lock::PackageLock;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Unpack(#[from] crate::fetch::FetchError),
    #[error("{0}: no lib/modules/<release> directory; is this a linux-image package?")]
    NoModulesDir(String),
    #[error("{0}: no boot/vmlinuz-<release>")]
    NoVmlinuz(String),
    #[error("walking {path}: {source}")]
    Walk {
        path: String,
        source: std::io::Error,
    },
}

/// A kernel package unpacked on disk.
#[derive(Debug, Clone)]
pub struct KernelTree {
    root: PathBuf,
    release: String,
    /// Module name (with `_`, as the kernel names it) → path relative to `lib/modules/<release>/`.
    modules: BTreeMap<String, String>,
    builtin: BTreeSet<String>,
}

/// The kernel's own module naming: file names use `-` or `_` interchangeably, names use `_`.
pub fn module_name(file_or_name: &str) -> String {
    let base = file_or_name.rsplit('/').next().unwrap_or(file_or_name);
    base.trim_end_matches(".ko").replace('-', "_")
}

impl KernelTree {
    /// Unpacks `deb` into the cache (once) and indexes it.
    pub fn unpack(lock: &PackageLock, deb: &Path, cache: &Path) -> Result<Self, KernelError> {
        let dest = cache
            .join("kernels")
            .join(format!("{}_{}", lock.package, lock.version));
        if !dest.join(".complete").exists() {
            eprintln!("image-build: unpacking {} ...", lock.package);
            crate::fetch::unpack_deb(deb, &dest)?;
        }
        Self::open(&dest)
    }

    /// Indexes an already unpacked tree.
    pub fn open(root: &Path) -> Result<Self, KernelError> {
        let modules_dir = root.join("lib/modules");
        let release = std::fs::read_dir(&modules_dir)
            .ok()
            .and_then(|mut it| it.find_map(|e| e.ok()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .ok_or_else(|| KernelError::NoModulesDir(root.display().to_string()))?;
        let tree_root = modules_dir.join(&release);
        let mut modules = BTreeMap::new();
        walk_modules(&tree_root, &tree_root, &mut modules)?;
        let builtin = std::fs::read_to_string(tree_root.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .map(module_name)
            .collect();
        let tree = Self {
            root: root.to_path_buf(),
            release,
            modules,
            builtin,
        };
        if !tree.vmlinuz().exists() {
            return Err(KernelError::NoVmlinuz(root.display().to_string()));
        }
        Ok(tree)
    }

    /// `uname -r` of this kernel (`6.1.0-50-amd64`).
    pub fn release(&self) -> &str {
        &self.release
    }

    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }

    /// `lib/modules/<release>/` on disk.
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }

    /// Path of a module relative to `modules_dir`, if the package ships it as a file.
    pub fn module_path(&self, name: &str) -> Option<&str> {
        self.modules.get(&module_name(name)).map(String::as_str)
    }

    /// Whether the kernel has this module built in (so there is nothing to load).
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&module_name(name))
    }

    /// Every module name the package ships as a file.
    pub fn module_names(&self) -> Vec<String> {
        self.modules.keys().cloned().collect()
    }

    pub fn module_count(&self) -> usize {
        self.modules.len()
    }
}

fn walk_modules(
    base: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, String>,
) -> Result<(), KernelError> {
    let walk_err = |source| KernelError::Walk {
        path: dir.display().to_string(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(walk_err)? {
        let entry = entry.map_err(walk_err)?;
        let path = entry.path();
        if entry.file_type().map_err(walk_err)?.is_dir() {
            walk_modules(base, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "ko") {
            let rel = path
                .strip_prefix(base)
                .expect("walked below base")
                .to_string_lossy()
                .into_owned();
            out.insert(module_name(&rel), rel);
        }
    }
    Ok(())
}

/// `dpkg-deb --fsys-tarfile DEB | tar` into `dest`, via a temporary sibling directory.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_use_underscores() {
        assert_eq!(module_name("kernel/arch/x86/kvm/kvm-amd.ko"), "kvm_amd");
        assert_eq!(module_name("8021q"), "8021q");
        assert_eq!(module_name("dm-thin-pool"), "dm_thin_pool");
    }
}
