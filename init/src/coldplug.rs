//! Coldplug: loading drivers for PCI devices that have none after the boot modules are in.
//!
//! Owns the scan of `/sys/bus/pci/devices/*` (devices without a `driver` link), the match of each
//! device's `modalias` against the alias globs from [`crate::modules`], and the glob matcher
//! itself (fnmatch without flags: `*`, `?`, `[...]` with ranges and `!`/`^` negation). It does
//! not watch for hotplug events.

use crate::modules::{AliasEntry, ModuleLoader};
use std::path::Path;

/// Matches `text` against the glob `pattern` as fnmatch(3) does with no flags.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: pattern index after it, text index it consumed to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match_class(pattern, p, text[t]),
            Some(&c) if c == text[t] => Some(p + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((after_star, consumed))) => {
                p = after_star;
                t = consumed + 1;
                star = Some((after_star, consumed + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the bracket expression starting at `pattern[open] == b'['`. Returns the
/// index after the closing `]` on a match. An unterminated class never matches.
fn match_class(pattern: &[u8], open: usize, c: u8) -> Option<usize> {
    let mut i = open + 1;
    let negate = matches!(pattern.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *pattern.get(i)?;
        if lo == b']' && !first {
            break;
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = pattern[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
    (matched != negate).then_some(i + 1)
}

/// A PCI device without a driver and the modalias it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnboundDevice {
    pub address: String,
    pub modalias: String,
}

/// Lists PCI devices under `root` (normally `/sys/bus/pci/devices`) that have no driver bound.
pub fn unbound_pci_devices(root: &Path) -> Vec<UnboundDevice> {
    let Ok(dir) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut devices: Vec<UnboundDevice> = dir
        .flatten()
        .filter(|e| !e.path().join("driver").exists())
        .filter_map(|e| {
            let modalias = std::fs::read_to_string(e.path().join("modalias")).ok()?;
            Some(UnboundDevice {
                address: e.file_name().to_string_lossy().into_owned(),
                modalias: modalias.trim().to_owned(),
            })
        })
        .collect();
    devices.sort_by(|a, b| a.address.cmp(&b.address));
    devices
}

/// The alias entries whose pattern matches `modalias`, in file order.
pub fn matching_aliases<'a>(aliases: &'a [AliasEntry], modalias: &str) -> Vec<&'a AliasEntry> {
    aliases
        .iter()
        .filter(|a| glob_match(a.pattern.as_bytes(), modalias.as_bytes()))
        .collect()
}

/// Loads a driver (with its dependencies) for every unbound PCI device that an alias matches.
pub fn coldplug(loader: &mut ModuleLoader, aliases: &[AliasEntry]) {
    let devices = unbound_pci_devices(Path::new("/sys/bus/pci/devices"));
    tracing::info!("coldplug: {} PCI devices without a driver", devices.len());
    for device in devices {
        for alias in matching_aliases(aliases, &device.modalias) {
            match loader.load_with_deps(&alias.name, &alias.deps) {
                Ok(()) => tracing::info!("coldplug {}: loaded {}", device.address, alias.name),
                Err(e) => tracing::warn!("coldplug {}: {e}", device.address),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        glob_match(p.as_bytes(), t.as_bytes())
    }

    #[test]
    fn pci_modalias_matches_its_driver_pattern() {
        let alias = "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00";
        assert!(m("pci:v00008086d0000100Esv*sd*bc*sc*i*", alias));
        assert!(!m("pci:v00008086d000010D3sv*sd*bc*sc*i*", alias));
        assert!(m("pci:v*d*sv*sd*bc02sc00i*", alias));
        assert!(!m("pci:v*d*sv*sd*bc03sc*i*", alias));
    }

    #[test]
    fn star_question_and_literals() {
        assert!(m("*", ""));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(m("a*b*c", "abbc"));
        assert!(!m("a*b*c", "abca"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(!m("abc", "abcd"));
        assert!(m("**x", "x"));
    }

    #[test]
    fn bracket_classes_ranges_and_negation() {
        assert!(m("v[0-9]x", "v7x"));
        assert!(!m("v[0-9]x", "vax"));
        assert!(m("v[!0-9]x", "vax"));
        assert!(m("v[^ab]x", "vcx"));
        assert!(m("[]]", "]"));
        assert!(m("[a-]", "-"));
        assert!(!m("[abc", "a"), "unterminated class never matches");
    }

    #[test]
    fn matching_aliases_keeps_file_order() {
        let a = |p: &str, n: &str| AliasEntry {
            pattern: p.into(),
            name: n.into(),
            deps: vec![],
        };
        let aliases = vec![a("pci:v1*", "one"), a("pci:v2*", "two"), a("pci:*", "any")];
        let names: Vec<_> = matching_aliases(&aliases, "pci:v1x")
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(names, vec!["one", "any"]);
    }
}
