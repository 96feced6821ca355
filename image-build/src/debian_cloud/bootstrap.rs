//! Running `mmdebstrap` for the cloud image: its command line ([`args`]: variant, packages,
//! dpkg path filters, archives, and hooks that keep the downloaded `.deb`s in a per-machine
//! cache so a rebuild downloads only what changed), and the guard around its root-mode tree:
//! a tree is never deleted while anything is still mounted under it ([`remove_tree`]). It does
//! not configure the tree.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("mmdebstrap is not installed ({0}): install it with `just setup` (or `apt-get install mmdebstrap`)")]
    Missing(std::io::Error),
    #[error("mmdebstrap failed ({status}); its messages are above. If apt could not fetch from {mirror}, the Debian mirror is unreachable: check the network, or pass --mirror with one that is reachable")]
    Failed { status: String, mirror: String },
    #[error("{path} still has mounts under it ({mounts}); an interrupted mmdebstrap left them: unmount them (umount -R) before building again")]
    Mounted { path: String, mounts: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// What one mmdebstrap run makes.
#[derive(Debug, Clone)]
pub struct Bootstrap<'a> {
    pub suite: &'a str,
    pub variant: &'a str,
    pub packages: &'a [String],
    pub dpkg_options: &'a [&'a str],
    /// One-line `deb` entries; the tree's `/etc/apt/sources.list` is made of them.
    pub sources: &'a [String],
    /// The directory made (must not exist).
    pub tree: &'a Path,
    /// `.deb`s from earlier builds, offered to apt before it downloads.
    pub debs_in: &'a Path,
    /// Where every `.deb` the tree was installed from is linked, for the next build.
    pub debs_out: &'a Path,
}

/// `mmdebstrap --version`'s answer, e.g. `mmdebstrap 1.3.5`.
pub fn version() -> Result<String, BootstrapError> {
    let out = Command::new("mmdebstrap")
        .arg("--version")
        .output()
        .map_err(BootstrapError::Missing)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `s` quoted for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A shell loop linking (else copying) every `.deb` in `from` into `to`.
fn link_debs(from: &str, to: &str) -> String {
    format!(
        "for f in {from}/*.deb; do [ -e \"$f\" ] || continue; ln -f \"$f\" {to}/ 2>/dev/null || cp -f \"$f\" {to}/ || exit 1; done"
    )
}

/// mmdebstrap's arguments for `b`.
pub fn args(b: &Bootstrap) -> Vec<String> {
    let archives = "\"$1/var/cache/apt/archives\"";
    let debs_in = sh_quote(&b.debs_in.display().to_string());
    let debs_out = sh_quote(&b.debs_out.display().to_string());
    let mut args = vec![
        format!("--variant={}", b.variant),
        format!("--include={}", b.packages.join(",")),
        "--aptopt=Acquire::Retries \"3\"".to_string(),
        // Keep the essential packages' .debs until the customize hook has linked them out.
        "--skip=essential/unlink".to_string(),
        format!(
            "--setup-hook=mkdir -p {archives} && {}",
            link_debs(&debs_in, archives)
        ),
        format!(
            "--customize-hook=mkdir -p {debs_out} && {}",
            link_debs(archives, &debs_out)
        ),
    ];
    args.extend(b.dpkg_options.iter().map(|o| format!("--dpkgopt={o}")));
    args.push(b.suite.to_string());
    args.push(b.tree.display().to_string());
    args.extend(b.sources.iter().cloned());
    args
}

/// Runs mmdebstrap (its progress goes to our stderr).
pub fn run(b: &Bootstrap) -> Result<(), BootstrapError> {
    let status = Command::new("mmdebstrap")
        .args(args(b))
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(BootstrapError::Missing)?;
    if !status.success() {
        let mirror = (b.sources.first())
            .and_then(|s| s.split_whitespace().nth(1))
            .unwrap_or("the mirror")
            .to_string();
        return Err(BootstrapError::Failed {
            status: status.to_string(),
            mirror,
        });
    }
    Ok(())
}

/// The mount points at or under `path`, from `mountinfo` (the text of /proc/self/mountinfo).
pub fn mounts_under(mountinfo: &str, path: &Path) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        // mountinfo escapes space, tab, newline and backslash as octal.
        .map(|p| {
            PathBuf::from(
                p.replace("\\040", " ")
                    .replace("\\011", "\t")
                    .replace("\\012", "\n")
                    .replace("\\134", "\\"),
            )
        })
        .filter(|p| p.starts_with(path))
        .collect()
}

/// Deletes a tree mmdebstrap made, refusing while anything is mounted under it (deleting through
/// a bind mount of the host's /dev or /proc would reach the host).
pub fn remove_tree(path: &Path) -> Result<(), BootstrapError> {
    if !path.exists() {
        return Ok(());
    }
    let abs = std::fs::canonicalize(path).map_err(|source| BootstrapError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts = mounts_under(&info, &abs);
    if !mounts.is_empty() {
        return Err(BootstrapError::Mounted {
            path: abs.display().to_string(),
            mounts: mounts
                .iter()
                .map(|m| m.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    std::fs::remove_dir_all(&abs).map_err(|source| BootstrapError::Io {
        path: abs.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bootstrap<'a>(packages: &'a [String], sources: &'a [String]) -> Bootstrap<'a> {
        Bootstrap {
            suite: "bookworm",
            variant: "minbase",
            packages,
            dpkg_options: &["path-exclude=/usr/share/man/*"],
            sources,
            tree: Path::new("/c/k.partial/tree"),
            debs_in: Path::new("/c/debs"),
            debs_out: Path::new("/c/it's new"),
        }
    }

    #[test]
    fn the_command_line_ends_with_suite_tree_and_archives() {
        let packages = vec!["cloud-init".to_string(), "sudo".to_string()];
        let sources = vec!["deb http://m/debian bookworm main".to_string()];
        let a = args(&bootstrap(&packages, &sources));
        assert!(a.contains(&"--variant=minbase".to_string()));
        assert!(a.contains(&"--include=cloud-init,sudo".to_string()));
        assert!(a.contains(&"--dpkgopt=path-exclude=/usr/share/man/*".to_string()));
        assert_eq!(
            &a[a.len() - 3..],
            [
                "bookworm",
                "/c/k.partial/tree",
                "deb http://m/debian bookworm main"
            ]
        );
    }

    #[test]
    fn the_deb_cache_hooks_quote_their_paths() {
        let (p, s) = (vec!["x".to_string()], vec![]);
        let a = args(&bootstrap(&p, &s));
        let setup = a.iter().find(|x| x.starts_with("--setup-hook=")).unwrap();
        assert!(setup.contains("for f in '/c/debs'/*.deb"), "{setup}");
        let custom = a
            .iter()
            .find(|x| x.starts_with("--customize-hook="))
            .unwrap();
        assert!(custom.contains(r"mkdir -p '/c/it'\''s new'"), "{custom}");
        assert!(custom.contains("for f in \"$1/var/cache/apt/archives\"/*.deb"));
    }

    #[test]
    fn mounts_under_a_tree_are_found_with_escaped_names() {
        let info = "22 1 8:1 / / rw - ext4 /dev/vda rw\n\
            40 22 0:5 / /c/k\\040x/tree/proc rw - proc proc rw\n\
            41 22 0:6 / /c/k\\040xy rw - tmpfs t rw\n";
        assert_eq!(
            mounts_under(info, Path::new("/c/k x")),
            [PathBuf::from("/c/k x/tree/proc")]
        );
        assert!(mounts_under(info, Path::new("/elsewhere")).is_empty());
    }
}
