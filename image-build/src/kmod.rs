//! Kernel module metadata and load order: reads each `.ko`'s `.modinfo` section (the `.deb`
//! ships no `modules.dep`) and orders a module set so every module follows its dependencies.
//!
//! Owns dependency closure and ordering; which modules a given image wants is `image`'s choice.

use crate::kernel::{module_name, KernelTree};
use object::{Object, ObjectSection};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("module {0} is neither shipped as a file nor built into the kernel")]
    Unknown(String),
    #[error("{path}: not a readable ELF module: {detail}")]
    BadElf { path: String, detail: String },
    #[error("{0}: no .modinfo section")]
    NoModinfo(String),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("dependency cycle through module {0}")]
    Cycle(String),
}

/// What `.modinfo` says about one module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    pub name: String,
    pub depends: Vec<String>,
    /// `softdep=pre:` entries: modules (or aliases) to load first when they exist, such as
    /// `crc32c` for `libcrc32c`, which otherwise asks a user-space modprobe that is not there.
    pub soft_pre: Vec<String>,
    pub aliases: Vec<String>,
}

/// Parses the NUL-separated `key=value` records of a `.modinfo` section.
pub fn parse_modinfo(section: &[u8]) -> ModInfo {
    let mut info = ModInfo::default();
    for record in section.split(|&b| b == 0) {
        let Ok(record) = std::str::from_utf8(record) else {
            continue;
        };
        let Some((key, value)) = record.split_once('=') else {
            continue;
        };
        match key {
            "name" => info.name = value.to_string(),
            "depends" => {
                info.depends = value
                    .split(',')
                    .filter(|d| !d.is_empty())
                    .map(module_name)
                    .collect()
            }
            "alias" => info.aliases.push(value.to_string()),
            "softdep" => info.soft_pre.extend(soft_pre(value)),
            _ => {}
        }
    }
    info
}

/// The names after `pre:` in a softdep value (`pre: a b post: c` → `a`, `b`).
fn soft_pre(value: &str) -> Vec<String> {
    let mut pre = Vec::new();
    let mut in_pre = false;
    for word in value.split_whitespace() {
        match word {
            "pre:" => in_pre = true,
            "post:" => in_pre = false,
            name if in_pre => pre.push(name.to_string()),
            _ => {}
        }
    }
    pre
}

/// Reads `.modinfo` out of a module file's bytes.
pub fn modinfo_of(path: &str, bytes: &[u8]) -> Result<ModInfo, ModuleError> {
    let elf = object::File::parse(bytes).map_err(|e| ModuleError::BadElf {
        path: path.to_string(),
        detail: e.to_string(),
    })?;
    let section = elf
        .section_by_name(".modinfo")
        .ok_or_else(|| ModuleError::NoModinfo(path.to_string()))?;
    let data = section.data().map_err(|e| ModuleError::BadElf {
        path: path.to_string(),
        detail: e.to_string(),
    })?;
    let mut info = parse_modinfo(data);
    if info.name.is_empty() {
        info.name = module_name(path);
    }
    Ok(info)
}

/// A module chosen for an image: where it lives and what it needs first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    /// Relative to `lib/modules/<release>/`.
    pub path: String,
    pub info: ModInfo,
}

/// Resolves module sets against one kernel tree, reading each `.ko` at most once.
pub struct Resolver<'k> {
    kernel: &'k KernelTree,
    cache: BTreeMap<String, Module>,
    /// alias → module names, built on first need by reading every module of the package.
    alias_index: Option<BTreeMap<String, Vec<String>>>,
}

impl<'k> Resolver<'k> {
    pub fn new(kernel: &'k KernelTree) -> Self {
        Self {
            kernel,
            cache: BTreeMap::new(),
            alias_index: None,
        }
    }

    /// Looks a module up; `Ok(None)` when it is built into the kernel.
    pub fn module(&mut self, name: &str) -> Result<Option<Module>, ModuleError> {
        let name = module_name(name);
        if let Some(m) = self.cache.get(&name) {
            return Ok(Some(m.clone()));
        }
        let Some(path) = self.kernel.module_path(&name) else {
            if self.kernel.is_builtin(&name) {
                return Ok(None);
            }
            return Err(ModuleError::Unknown(name));
        };
        let full = self.kernel.modules_dir().join(path);
        let bytes = std::fs::read(&full).map_err(|source| ModuleError::Read {
            path: full.display().to_string(),
            source,
        })?;
        let info = modinfo_of(path, &bytes)?;
        let module = Module {
            name: name.clone(),
            path: path.to_string(),
            info,
        };
        self.cache.insert(name, module.clone());
        Ok(Some(module))
    }

    /// The closure of `wanted` in load order: dependencies first, then the module, in the order
    /// `wanted` lists them. Built-in modules are left out; an unknown module is an error.
    pub fn load_order(&mut self, wanted: &[&str]) -> Result<Vec<Module>, ModuleError> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for name in wanted {
            self.visit(&module_name(name), &mut Vec::new(), &mut done, &mut order)?;
        }
        Ok(order)
    }

    /// The module that provides `name`: itself if it is a module, else the module with that
    /// exact alias (preferring the portable `*_generic` one, as `crc32c_generic` over the
    /// SSE4.2-only `crc32c_intel`). `None` when nothing provides it or it is built in.
    fn provider(&mut self, name: &str) -> Result<Option<String>, ModuleError> {
        let as_module = module_name(name);
        if self.kernel.module_path(&as_module).is_some() {
            return Ok(Some(as_module));
        }
        if self.alias_index.is_none() {
            let mut index: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for module_name in self.kernel.module_names() {
                if let Some(m) = self.module(&module_name)? {
                    for alias in &m.info.aliases {
                        index.entry(alias.clone()).or_default().push(m.name.clone());
                    }
                }
            }
            self.alias_index = Some(index);
        }
        let providers = self
            .alias_index
            .as_ref()
            .and_then(|i| i.get(name))
            .cloned()
            .unwrap_or_default();
        Ok(providers
            .iter()
            .find(|p| p.ends_with("_generic"))
            .or(providers.first())
            .cloned())
    }

    fn visit(
        &mut self,
        name: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        order: &mut Vec<Module>,
    ) -> Result<(), ModuleError> {
        if done.contains(name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            return Err(ModuleError::Cycle(name.to_string()));
        }
        let Some(module) = self.module(name)? else {
            done.insert(name.to_string());
            return Ok(());
        };
        path.push(name.to_string());
        for soft in &module.info.soft_pre {
            // Optional by definition: a softdep nothing provides is left out.
            if let Some(provider) = self.provider(soft)? {
                self.visit(&provider, path, done, order)?;
            }
        }
        for dep in &module.info.depends {
            self.visit(dep, path, done, order)?;
        }
        path.pop();
        done.insert(name.to_string());
        order.push(module);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_records_are_split_on_nul() {
        let section = b"license=GPL\0depends=kvm,ccp\0alias=pci:v00008086d0000100Esv*sd*bc*sc*i*\0name=kvm_amd\0\0\0";
        let info = parse_modinfo(section);
        assert_eq!(info.name, "kvm_amd");
        assert_eq!(info.depends, ["kvm", "ccp"]);
        assert_eq!(info.aliases, ["pci:v00008086d0000100Esv*sd*bc*sc*i*"]);
    }

    #[test]
    fn softdep_pre_names_are_kept_and_post_ignored() {
        let info = parse_modinfo(b"softdep=pre: crc32c sha256 post: foo\0name=libcrc32c\0");
        assert_eq!(info.soft_pre, ["crc32c", "sha256"]);
    }

    #[test]
    fn empty_depends_means_none() {
        assert!(parse_modinfo(b"depends=\0name=tun\0").depends.is_empty());
    }

    #[test]
    fn garbage_is_not_an_elf_module() {
        let err = modinfo_of("x.ko", b"not an elf").unwrap_err();
        assert!(matches!(err, ModuleError::BadElf { .. }));
    }
}
