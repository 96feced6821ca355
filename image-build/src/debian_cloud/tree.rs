//! What turns the bootstrapped Debian tree into a cloud image, done from outside the tree
//! (nothing runs inside it): Mallee's files ([`config_files`]: fstab by label, cloud-init's
//! datasource list, sshd's host-key fallback, a neutral hostname); removing what must not ship
//! from the build host or be shared by instances ([`REMOVED`], the SSH host keys, the
//! machine id); locking any password left empty; moving the kernel and initramfs out of `/boot`
//! ([`take_kernel`]); and reading the installed package versions ([`installed_packages`]).
//! It does not choose packages or build file systems.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the tree has no kernel: no /vmlinuz or /boot/vmlinuz-* in {0} (is linux-image-cloud-amd64 in the package list?)")]
    NoKernel(String),
    #[error("the tree has no initramfs for kernel {0} (initramfs-tools did not run?)")]
    NoInitrd(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TreeError {
    let path = path.display().to_string();
    move |source| TreeError::Io { path, source }
}

/// A file Mallee writes into the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Relative to the tree's root.
    pub path: &'static str,
    pub mode: u32,
    pub content: String,
}

/// Files removed from the tree: the build host's resolver and name (mmdebstrap copies them in;
/// DHCP and cloud-init write the instance's own), and per-machine state that each instance must
/// make for itself.
pub const REMOVED: &[&str] = &[
    "etc/resolv.conf",
    "var/lib/dbus/machine-id",
    "var/lib/systemd/random-seed",
    "var/lib/systemd/credential.secret",
];
/// The prefix of the SSH host key files in `etc/ssh`, all removed: cloud-init's `ssh` module
/// makes each instance's (see [`SSH_HOST_KEYS_DROPIN`] for the fallback).
pub const SSH_HOST_KEY_PREFIX: &str = "ssh_host_";

/// `/etc/fstab`: the root by label, which both root.img and root-gpt.img carry.
pub fn fstab(label: &str) -> String {
    format!(
        "# Mallee debian-cloud: the root file system by its label (the same whole-disk in root.img\n\
         # and in the GPT partition of root-gpt.img).\n\
         LABEL={label} / ext4 defaults 0 1\n"
    )
}

/// cloud-init's settings: the datasource list as Debian's own EC2 images set it, the instance's
/// name in /etc/hosts, a locale that exists without generating one, and the SSH host key types.
pub const CLOUD_CFG: &str = "\
# Mallee: instances find their metadata as EC2's do. The VMM presents SMBIOS vendor
# \"Amazon EC2\" and a product UUID and serial that start with \"ec2\", so ds-identify picks Ec2
# from DMI alone (nothing on the kernel command line); the metadata service is 169.254.169.254.
datasource_list: [ Ec2, None ]
# The instance's hostname resolves (sudo looks it up).
manage_etc_hosts: true
# cloud-init's default, en_US.UTF-8, fails on Debian: its locale-gen ignores the name it is
# given and /etc/locale.gen lists none. C.UTF-8 is built into glibc.
locale: C.UTF-8
# The host keys sshd loads (cloud-init would make a DSA one too, which OpenSSH 9 ignores).
ssh_genkeytypes: [ rsa, ecdsa, ed25519 ]
# Network configuration for new instances only, no refetch in the init stage (`boot-legacy`).
# That refetch in cloud-init 22.4 takes an ephemeral DHCP lease and adds its classless routes
# itself; the VMM's DHCP routes 169.254.169.254 on-link (the guest reaches its metadata without
# its gateway), dhclient had already installed that route, and `ip route append` failing with
# `File exists` killed the stage at every boot: no user data, no SSH key. (Later cloud-init
# tolerates an existing route.)
updates:
  network:
    when: [ boot-new-instance ]
";

/// A drop-in for Debian's ssh.service, whose only pre-start step (`sshd -t`) fails without host
/// keys. cloud-init's `ssh` module (cloud-init.service runs before sshd.service, ssh.service's
/// alias) makes them on each instance's first boot; if cloud-init did not run, this makes any
/// missing ones so sshd still starts.
pub const SSH_HOST_KEYS_DROPIN: &str = "\
# Mallee: the image ships without SSH host keys. cloud-init makes each instance's before sshd
# starts; should it not have run, make the missing ones here rather than fail `sshd -t`.
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
";

/// Every file Mallee writes into the tree, for an image whose root file system is `label`.
pub fn config_files(label: &str) -> Vec<TreeFile> {
    vec![
        TreeFile {
            path: "etc/fstab",
            mode: 0o644,
            content: fstab(label),
        },
        // cloud-init sets the instance's name; until then, the name Debian's cloud images use.
        TreeFile {
            path: "etc/hostname",
            mode: 0o644,
            content: "localhost\n".into(),
        },
        // The machine id is made at boot: empty, not absent, so systemd writes it in place.
        TreeFile {
            path: "etc/machine-id",
            mode: 0o444,
            content: String::new(),
        },
        TreeFile {
            path: "etc/cloud/cloud.cfg.d/01_mallee.cfg",
            mode: 0o644,
            content: CLOUD_CFG.into(),
        },
        TreeFile {
            path: "etc/systemd/system/ssh.service.d/mallee-host-keys.conf",
            mode: 0o644,
            content: SSH_HOST_KEYS_DROPIN.into(),
        },
    ]
}

/// `shadow` with every empty password field replaced by `*` (no password can log in), and the
/// names of the accounts that had one.
pub fn lock_empty_passwords(shadow: &str) -> (String, Vec<String>) {
    let mut locked = Vec::new();
    let mut out = String::with_capacity(shadow.len() + 8);
    for line in shadow.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        let mut fields: Vec<&str> = body.split(':').collect();
        if fields.len() > 1 && !fields[0].is_empty() && fields[1].is_empty() {
            locked.push(fields[0].to_string());
            fields[1] = "*";
        }
        out.push_str(&fields.join(":"));
        out.push_str(nl);
    }
    (out, locked)
}

/// Writes [`config_files`], removes [`REMOVED`] and the SSH host keys, and locks empty
/// passwords. Returns the accounts whose empty password it locked.
pub fn configure(tree: &Path, label: &str) -> Result<Vec<String>, TreeError> {
    use std::os::unix::fs::PermissionsExt;
    for file in config_files(label) {
        let dest = tree.join(file.path);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        // A symlink (or a read-only file) in the way is replaced, not written through.
        let _ = std::fs::remove_file(&dest);
        std::fs::write(&dest, &file.content).map_err(io(&dest))?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(file.mode))
            .map_err(io(&dest))?;
    }
    for rel in REMOVED {
        remove_if_present(&tree.join(rel))?;
    }
    let ssh = tree.join("etc/ssh");
    for entry in std::fs::read_dir(&ssh).map_err(io(&ssh))? {
        let entry = entry.map_err(io(&ssh))?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(SSH_HOST_KEY_PREFIX)
        {
            remove_if_present(&entry.path())?;
        }
    }
    let shadow = tree.join("etc/shadow");
    let text = std::fs::read_to_string(&shadow).map_err(io(&shadow))?;
    let (text, locked) = lock_empty_passwords(&text);
    if !locked.is_empty() {
        std::fs::write(&shadow, text).map_err(io(&shadow))?;
    }
    Ok(locked)
}

fn remove_if_present(path: &Path) -> Result<(), TreeError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// The kernel and initramfs taken out of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFiles {
    /// The kernel release, e.g. `6.1.0-57-cloud-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
}

/// Follows the symlink `rel` inside `tree` (absolute targets are the tree's, not the host's)
/// to a regular file, at most 8 links deep.
fn resolve_in_tree(tree: &Path, rel: &str) -> Option<PathBuf> {
    let mut rel = PathBuf::from(rel.trim_start_matches('/'));
    for _ in 0..8 {
        let path = tree.join(&rel);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if meta.is_file() {
            return Some(path);
        }
        let target = std::fs::read_link(&path).ok()?;
        rel = if target.is_absolute() {
            target.strip_prefix("/").ok()?.to_path_buf()
        } else {
            rel.parent().unwrap_or(Path::new("")).join(target)
        };
        if rel
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return None;
        }
    }
    None
}

/// Moves the kernel `/vmlinuz` points at (else the one `/boot/vmlinuz-*`) and its initramfs out
/// of the tree into `dest/vmlinuz` and `dest/initrd.img` (they are served beside the root image,
/// so the root file system need not carry them). The `/vmlinuz` and `/initrd.img` links stay,
/// for the kernel package's own upgrades.
pub fn take_kernel(tree: &Path, dest: &Path) -> Result<KernelFiles, TreeError> {
    let no_kernel = || TreeError::NoKernel(tree.display().to_string());
    let vmlinuz = match resolve_in_tree(tree, "vmlinuz") {
        Some(p) => p,
        None => {
            let boot = tree.join("boot");
            let mut found: Vec<PathBuf> = std::fs::read_dir(&boot)
                .map_err(io(&boot))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
                })
                .collect();
            found.sort();
            found.pop().ok_or_else(no_kernel)?
        }
    };
    let name = vmlinuz.file_name().ok_or_else(no_kernel)?.to_string_lossy();
    let release = name
        .strip_prefix("vmlinuz-")
        .ok_or_else(no_kernel)?
        .to_string();
    let initrd = resolve_in_tree(tree, "initrd.img")
        .filter(|p| p.ends_with(format!("initrd.img-{release}")))
        .or_else(|| {
            let p = tree.join("boot").join(format!("initrd.img-{release}"));
            p.is_file().then_some(p)
        })
        .ok_or_else(|| TreeError::NoInitrd(release.clone()))?;
    let files = KernelFiles {
        release,
        vmlinuz: dest.join("vmlinuz"),
        initrd: dest.join("initrd.img"),
    };
    for (from, to) in [(&vmlinuz, &files.vmlinuz), (&initrd, &files.initrd)] {
        if std::fs::rename(from, to).is_err() {
            std::fs::copy(from, to).map_err(io(to))?;
            std::fs::remove_file(from).map_err(io(from))?;
        }
    }
    Ok(files)
}

/// `Package → Version` of every package dpkg's status file says is installed.
pub fn parse_dpkg_status(status: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for stanza in status.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        if let (Some(p), Some(v), Some("install ok installed")) =
            (field("Package"), field("Version"), field("Status"))
        {
            out.insert(p.to_string(), v.to_string());
        }
    }
    out
}

/// The installed packages of the tree, from its `var/lib/dpkg/status`.
pub fn installed_packages(tree: &Path) -> Result<BTreeMap<String, String>, TreeError> {
    let path = tree.join("var/lib/dpkg/status");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    Ok(parse_dpkg_status(&text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn fstab_mounts_the_root_by_label_with_a_boot_time_check() {
        let lines: Vec<_> = fstab("debian-root")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        assert_eq!(lines, ["LABEL=debian-root / ext4 defaults 0 1"]);
    }

    #[test]
    fn cloud_init_looks_for_ec2_then_none_with_a_locale_that_exists() {
        let settings: Vec<_> = CLOUD_CFG
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .collect();
        assert_eq!(
            settings,
            [
                "datasource_list: [ Ec2, None ]",
                "manage_etc_hosts: true",
                "locale: C.UTF-8",
                "ssh_genkeytypes: [ rsa, ecdsa, ed25519 ]",
                "updates:",
                "  network:",
                "    when: [ boot-new-instance ]"
            ]
        );
    }

    #[test]
    fn the_ssh_dropin_makes_missing_host_keys_before_checking_the_config() {
        let pre: Vec<_> = SSH_HOST_KEYS_DROPIN
            .lines()
            .filter_map(|l| l.strip_prefix("ExecStartPre="))
            .collect();
        assert_eq!(
            pre,
            ["", "/usr/bin/ssh-keygen -A", "/usr/sbin/sshd -t"],
            "reset, keygen, then Debian's own check"
        );
    }

    #[test]
    fn empty_passwords_are_locked_and_others_kept() {
        let shadow =
            "root::20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\nu:!:1::::::\nv:$y$hash:1::::::";
        let (out, locked) = lock_empty_passwords(shadow);
        assert_eq!(locked, ["root"]);
        assert_eq!(
            out,
            "root:*:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\nu:!:1::::::\nv:$y$hash:1::::::"
        );
    }

    fn tree_with_kernel() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for d in ["boot", "etc/ssh", "var/lib/dbus"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("boot/vmlinuz-6.1.0-9-cloud-amd64"), b"kernel").unwrap();
        std::fs::write(root.join("boot/initrd.img-6.1.0-9-cloud-amd64"), b"initrd").unwrap();
        symlink("boot/vmlinuz-6.1.0-9-cloud-amd64", root.join("vmlinuz")).unwrap();
        symlink(
            "/boot/initrd.img-6.1.0-9-cloud-amd64",
            root.join("initrd.img"),
        )
        .unwrap();
        std::fs::write(root.join("etc/ssh/ssh_host_ed25519_key"), b"k").unwrap();
        std::fs::write(root.join("etc/ssh/ssh_host_ed25519_key.pub"), b"k").unwrap();
        std::fs::write(root.join("etc/ssh/sshd_config"), b"c").unwrap();
        std::fs::write(root.join("etc/resolv.conf"), b"nameserver 10.0.0.1\n").unwrap();
        std::fs::write(root.join("etc/hostname"), b"buildhost\n").unwrap();
        std::fs::write(root.join("etc/machine-id"), b"0123\n").unwrap();
        symlink("/etc/machine-id", root.join("var/lib/dbus/machine-id")).unwrap();
        std::fs::write(root.join("etc/shadow"), "root::1:0:99999:7:::\n").unwrap();
        t
    }

    #[test]
    fn configure_writes_our_files_and_removes_host_state() {
        let t = tree_with_kernel();
        let root = t.path();
        let locked = configure(root, "debian-root").unwrap();
        assert_eq!(locked, ["root"]);
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
        assert_eq!(read("etc/fstab"), fstab("debian-root"));
        assert_eq!(read("etc/hostname"), "localhost\n");
        assert_eq!(read("etc/machine-id"), "");
        assert_eq!(read("etc/cloud/cloud.cfg.d/01_mallee.cfg"), CLOUD_CFG);
        assert_eq!(read("etc/shadow"), "root:*:1:0:99999:7:::\n");
        assert!(!root.join("etc/resolv.conf").exists());
        assert!(std::fs::symlink_metadata(root.join("var/lib/dbus/machine-id")).is_err());
        let ssh: Vec<_> = std::fs::read_dir(root.join("etc/ssh"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(ssh, ["sshd_config"]);
    }

    #[test]
    fn the_kernel_follows_the_links_and_leaves_boot() {
        let t = tree_with_kernel();
        let out = tempfile::tempdir().unwrap();
        let k = take_kernel(t.path(), out.path()).unwrap();
        assert_eq!(k.release, "6.1.0-9-cloud-amd64");
        assert_eq!(std::fs::read(&k.vmlinuz).unwrap(), b"kernel");
        assert_eq!(std::fs::read(&k.initrd).unwrap(), b"initrd");
        assert_eq!(std::fs::read_dir(t.path().join("boot")).unwrap().count(), 0);
    }

    #[test]
    fn a_link_out_of_the_tree_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("boot")).unwrap();
        symlink("../../etc/passwd", t.path().join("vmlinuz")).unwrap();
        let err = take_kernel(t.path(), t.path()).unwrap_err();
        assert!(matches!(err, TreeError::NoKernel(_)), "{err}");
    }

    #[test]
    fn dpkg_status_lists_installed_packages_only() {
        let status = "Package: cloud-init\nStatus: install ok installed\nVersion: 22.4.2-1+deb12u4\n\n\
            Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
            Package: linux-image-6.1.0-9-cloud-amd64\nStatus: install ok installed\nPriority: optional\nVersion: 6.1.1-1\n";
        let got = parse_dpkg_status(status);
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            [
                ("cloud-init".to_string(), "22.4.2-1+deb12u4".to_string()),
                (
                    "linux-image-6.1.0-9-cloud-amd64".to_string(),
                    "6.1.1-1".to_string()
                )
            ]
        );
    }
}
