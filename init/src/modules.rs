//! Kernel module lists in the initramfs and loading modules with `finit_module(2)`.
//!
//! Owns the file formats image-build writes under `/lib/modules/mallee/` and the loader that
//! follows them. It does not resolve dependencies itself: the lists arrive already ordered.
//!
//! # File formats (UTF-8 text, one record per line; blank lines and lines starting with `#` are
//! skipped; fields are separated by one or more spaces or tabs)
//!
//! * `/lib/modules/mallee/load-order` — modules loaded at every boot, in dependency order (each
//!   module after everything it depends on). Line: `NAME RELATIVE_PATH`, e.g.
//!   `virtio_net kernel/drivers/net/virtio_net.ko`. `NAME` is the module name as the kernel
//!   reports it (dashes and underscores are treated alike); `RELATIVE_PATH` is relative to
//!   `/lib/modules/<uname -r>/`. Modules are uncompressed `.ko` files.
//! * `/lib/modules/mallee/all` — every module shipped in the image (a superset of load-order),
//!   same line format `NAME RELATIVE_PATH`, any order. Used to find the file of a module named
//!   only by name (coldplug matches and their dependencies).
//! * `/lib/modules/mallee/aliases` — the PCI modaliases of modules shipped but not necessarily
//!   loaded. Line: `PATTERN NAME DEPS`, where `PATTERN` is the module's `alias=` glob exactly as
//!   modinfo prints it (e.g. `pci:v00008086d0000100Esv*sd*bc*sc*i*`; `*`, `?` and `[...]` are
//!   glob syntax), `NAME` the module, and `DEPS` the comma-separated names of the modules to load
//!   first, in load order (its whole dependency closure), or `-` when there are none. Every name
//!   in `NAME` and `DEPS` must appear in `all`.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Where the lists live inside the initramfs.
pub const LIST_DIR: &str = "/lib/modules/mallee";

/// Why a list line could not be used or a module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("{file} line {line}: {problem}: {text:?}")]
    BadLine {
        file: String,
        line: usize,
        problem: &'static str,
        text: String,
    },
    #[error("reading {path}: {source}")]
    ReadList {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("module {name}: not listed in {LIST_DIR}/all")]
    Unknown { name: String },
    #[error("module {name}: opening {path}: {source}")]
    Open {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("module {name}: finit_module failed: {source}{}", load_hint(*.source))]
    Load {
        name: String,
        source: rustix::io::Errno,
    },
}

/// A plain-words reading of a `finit_module` errno, appended to the error message.
pub fn load_hint(errno: rustix::io::Errno) -> &'static str {
    use rustix::io::Errno;
    match errno {
        Errno::EXIST => " (its init refused because another module holds the role, e.g. kvm_intel after kvm_amd)",
        Errno::NODEV => " (no device or CPU feature it needs)",
        Errno::NOEXEC => " (not a valid module for this kernel)",
        Errno::NOENT => " (a symbol or firmware it needs is missing; check the dependency order)",
        _ => "",
    }
}

/// Parsed records of a list file and the errors of the lines that were skipped.
pub type Parsed<T> = (Vec<T>, Vec<ModuleError>);

/// One `NAME RELATIVE_PATH` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleEntry {
    pub name: String,
    pub path: PathBuf,
}

/// One `PATTERN NAME DEPS` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasEntry {
    pub pattern: String,
    pub name: String,
    pub deps: Vec<String>,
}

/// Module names compare with dashes and underscores treated alike, as the kernel does.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn records(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

fn bad(file: &str, line: usize, problem: &'static str, text: &str) -> ModuleError {
    ModuleError::BadLine {
        file: file.to_owned(),
        line,
        problem,
        text: text.to_owned(),
    }
}

/// Parses a `load-order` or `all` file; bad lines are returned as errors and skipped.
pub fn parse_module_list(file: &str, text: &str) -> Parsed<ModuleEntry> {
    let (mut entries, mut errors) = (Vec::new(), Vec::new());
    for (line, record) in records(text) {
        let fields: Vec<&str> = record.split_whitespace().collect();
        match fields[..] {
            [name, path] if !path.starts_with('/') && !path.split('/').any(|c| c == "..") => {
                entries.push(ModuleEntry {
                    name: normalize(name),
                    path: PathBuf::from(path),
                })
            }
            [_, _] => errors.push(bad(file, line, "path must be relative, without ..", record)),
            _ => errors.push(bad(file, line, "expected NAME RELATIVE_PATH", record)),
        }
    }
    (entries, errors)
}

/// Parses an `aliases` file; bad lines are returned as errors and skipped.
pub fn parse_aliases(file: &str, text: &str) -> Parsed<AliasEntry> {
    let (mut entries, mut errors) = (Vec::new(), Vec::new());
    for (line, record) in records(text) {
        let fields: Vec<&str> = record.split_whitespace().collect();
        let (pattern, name, deps) = match fields[..] {
            [pattern, name] => (pattern, name, "-"),
            [pattern, name, deps] => (pattern, name, deps),
            _ => {
                errors.push(bad(file, line, "expected PATTERN NAME DEPS", record));
                continue;
            }
        };
        let deps = match deps {
            "-" => Vec::new(),
            list => list
                .split(',')
                .filter(|d| !d.is_empty())
                .map(normalize)
                .collect(),
        };
        entries.push(AliasEntry {
            pattern: pattern.to_owned(),
            name: normalize(name),
            deps,
        });
    }
    (entries, errors)
}

/// Reads and parses one list file under [`LIST_DIR`]; a missing file is an empty list.
pub fn read_list<T>(file: &str, parse: fn(&str, &str) -> Parsed<T>) -> Parsed<T> {
    let path = Path::new(LIST_DIR).join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(file, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), Vec::new()),
        Err(source) => (Vec::new(), vec![ModuleError::ReadList { path, source }]),
    }
}

/// Loads modules from `/lib/modules/<kver>/`, remembering what it loaded.
pub struct ModuleLoader {
    base: PathBuf,
    paths: HashMap<String, PathBuf>,
    loaded: HashSet<String>,
}

impl ModuleLoader {
    /// A loader for the running kernel's module tree that knows the files in `known`.
    pub fn new(base: PathBuf, known: &[ModuleEntry]) -> Self {
        let paths = known
            .iter()
            .map(|e| (e.name.clone(), e.path.clone()))
            .collect();
        ModuleLoader {
            base,
            paths,
            loaded: HashSet::new(),
        }
    }

    /// Loads one module by name (its file from the known list). Already loaded (EEXIST, or
    /// present in `/sys/module`) counts as success.
    pub fn load(&mut self, name: &str) -> Result<(), ModuleError> {
        let name = normalize(name);
        if self.loaded.contains(&name) || Path::new("/sys/module").join(&name).exists() {
            self.loaded.insert(name);
            return Ok(());
        }
        let relative = self
            .paths
            .get(&name)
            .ok_or_else(|| ModuleError::Unknown { name: name.clone() })?;
        let path = self.base.join(relative);
        let file = File::open(&path).map_err(|source| ModuleError::Open {
            name: name.clone(),
            path,
            source,
        })?;
        match rustix::system::finit_module(&file, c"", 0) {
            // EEXIST means "already loaded" only if the kernel lists the module; kvm_intel's
            // init returns EEXIST when kvm_amd is the loaded vendor module.
            Err(rustix::io::Errno::EXIST) if !Path::new("/sys/module").join(&name).exists() => {
                Err(ModuleError::Load {
                    name,
                    source: rustix::io::Errno::EXIST,
                })
            }
            Ok(()) | Err(rustix::io::Errno::EXIST) => {
                self.loaded.insert(name);
                Ok(())
            }
            Err(source) => Err(ModuleError::Load { name, source }),
        }
    }

    /// Loads `deps` in order, then `name`; stops at the first failure.
    pub fn load_with_deps(&mut self, name: &str, deps: &[String]) -> Result<(), ModuleError> {
        for dep in deps {
            self.load(dep)?;
        }
        self.load(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_list_lines_parse_and_bad_lines_are_reported() {
        let text = "# comment\n\nvirtio_pci kernel/drivers/virtio/virtio_pci.ko\n\
                    kvm-amd\tkernel/arch/x86/kvm/kvm-amd.ko\nlonely\n\
                    evil /abs/evil.ko\nup ../x.ko\n";
        let (entries, errors) = parse_module_list("load-order", text);
        assert_eq!(
            entries,
            vec![
                ModuleEntry {
                    name: "virtio_pci".into(),
                    path: "kernel/drivers/virtio/virtio_pci.ko".into()
                },
                ModuleEntry {
                    name: "kvm_amd".into(),
                    path: "kernel/arch/x86/kvm/kvm-amd.ko".into()
                },
            ]
        );
        assert_eq!(errors.len(), 3);
        assert!(
            errors[0].to_string().contains("load-order line 5"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn alias_lines_parse_with_and_without_deps() {
        let text = "pci:v00008086d0000100Esv*sd*bc*sc*i* e1000 -\n\
                    pci:v000015B3d*sv*sd*bc*sc*i* mlx5_core mlxfw,pci-hyperv-intf\n\
                    pci:v00001AF4d00001041sv*sd*bc*sc*i* virtio_net\n\
                    too many fields here\n";
        let (entries, errors) = parse_aliases("aliases", text);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].deps, Vec::<String>::new());
        assert_eq!(entries[1].name, "mlx5_core");
        assert_eq!(entries[1].deps, vec!["mlxfw", "pci_hyperv_intf"]);
        assert_eq!(entries[2].deps, Vec::<String>::new());
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn load_failure_message_names_module_errno_and_hint() {
        let err = ModuleError::Load {
            name: "kvm_intel".into(),
            source: rustix::io::Errno::EXIST,
        };
        let text = err.to_string();
        assert!(
            text.starts_with("module kvm_intel: finit_module failed: File exists"),
            "{text}"
        );
        assert!(text.contains("another module holds the role"), "{text}");
    }

    #[test]
    fn unknown_module_is_an_error_not_a_panic() {
        let mut loader = ModuleLoader::new(PathBuf::from("/nonexistent"), &[]);
        let err = loader.load("surely_not_a_module_name").unwrap_err();
        assert!(matches!(err, ModuleError::Unknown { .. }), "{err}");
    }
}
