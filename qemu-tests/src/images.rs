//! Locating the images `just images` built, with an error that says how to build them.

use std::path::{Path, PathBuf};

/// A kernel + initramfs + command line bundle on disk.
#[derive(Debug, Clone)]
pub struct NetbootImage {
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
    pub cmdline: String,
}

/// The `target/images` directory.
pub struct Images;

impl Images {
    pub fn dir() -> PathBuf {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
            .join("images")
    }

    /// `target/images/<role>/{vmlinuz,initramfs,cmdline}`.
    pub fn netboot(role: &str) -> anyhow::Result<NetbootImage> {
        let dir = Self::dir().join(role);
        let vmlinuz = dir.join("vmlinuz");
        let initramfs = dir.join("initramfs");
        let cmdline = std::fs::read_to_string(dir.join("cmdline"));
        match cmdline {
            Ok(cmdline) if vmlinuz.exists() && initramfs.exists() => Ok(NetbootImage {
                vmlinuz,
                initramfs,
                cmdline: cmdline.trim().to_string(),
            }),
            _ => anyhow::bail!(
                "no {role} image in {}: run `just images` first",
                dir.display()
            ),
        }
    }

    /// The flashable frontend disk image, `target/images/mallee-frontend.img`.
    pub fn appliance() -> anyhow::Result<PathBuf> {
        Self::file("mallee-frontend.img")
    }

    /// A later build of the appliance (`test/mallee-frontend-next.img`), to upgrade to.
    pub fn appliance_next() -> anyhow::Result<PathBuf> {
        Self::file("test/mallee-frontend-next.img")
    }

    /// A later build whose kernel panics at boot (`test/mallee-frontend-broken.img`).
    pub fn appliance_broken() -> anyhow::Result<PathBuf> {
        Self::file("test/mallee-frontend-broken.img")
    }

    fn file(name: &str) -> anyhow::Result<PathBuf> {
        let path = Self::dir().join(name);
        if !path.exists() {
            anyhow::bail!("no {}: run `just images` first", path.display());
        }
        Ok(path)
    }

    pub fn node() -> anyhow::Result<NetbootImage> {
        Self::netboot("node")
    }

    /// The test instance: `target/images/guest/{initrd,root.img,root.id}` and the node
    /// bundle's kernel, which it boots.
    pub fn guest() -> anyhow::Result<GuestImage> {
        let vmlinuz = Self::node()?.vmlinuz;
        let dir = Self::dir().join("guest");
        let (initrd, root) = (dir.join("initrd"), dir.join("root.img"));
        let missing = || {
            anyhow::anyhow!(
                "no guest image in {}: run `just images` first",
                dir.display()
            )
        };
        let id = std::fs::read_to_string(dir.join("root.id")).map_err(|_| missing())?;
        let root_bytes = std::fs::metadata(&root).map_err(|_| missing())?.len();
        if !initrd.exists() {
            return Err(missing());
        }
        let field = |key: &str| {
            id.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
                .ok_or_else(|| anyhow::anyhow!("{}: no {key}=", dir.join("root.id").display()))
        };
        Ok(GuestImage {
            vmlinuz,
            initrd,
            root,
            root_bytes,
            root_label: field("label")?,
            root_uuid: field("uuid")?,
        })
    }
}

impl Images {
    /// The Debian cloud image, `target/images/debian-cloud/` (`just images` builds it with
    /// `mallee-image-build debian-cloud`).
    pub fn debian_cloud() -> anyhow::Result<DebianCloudImage> {
        let dir = Self::dir().join("debian-cloud");
        let facts = std::fs::read_to_string(dir.join("image.txt")).map_err(|_| {
            anyhow::anyhow!(
                "no Debian cloud image in {}: run `just images` first",
                dir.display()
            )
        })?;
        let facts = mallee_image_build::debian_cloud::parse_image_txt(&facts);
        let image = DebianCloudImage {
            vmlinuz: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            root: dir.join("root.img"),
            root_gpt: dir.join("root-gpt.img"),
            facts,
        };
        for f in [&image.vmlinuz, &image.initrd, &image.root, &image.root_gpt] {
            anyhow::ensure!(f.exists(), "no {}: run `just images` first", f.display());
        }
        Ok(image)
    }
}

/// The Debian cloud image as image-build made it: its own kernel and initramfs, the root file
/// system alone (`root`) and as the one partition of a GPT disk (`root_gpt`), and the facts of
/// its `image.txt` (label, UUIDs, package versions, the line cloud-init ends its boot with).
#[derive(Debug, Clone)]
pub struct DebianCloudImage {
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    pub root: PathBuf,
    pub root_gpt: PathBuf,
    pub facts: std::collections::BTreeMap<String, String>,
}

impl DebianCloudImage {
    /// One fact of `image.txt` (empty when it has none).
    pub fn fact(&self, key: &str) -> &str {
        self.facts.get(key).map_or("", String::as_str)
    }
}

/// The test instance image as image-build made it.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub vmlinuz: PathBuf,
    /// `mallee-init` as `/init` with the guest's modules.
    pub initrd: PathBuf,
    /// A small ext4 file system.
    pub root: PathBuf,
    pub root_bytes: u64,
    pub root_label: String,
    pub root_uuid: String,
}

impl GuestImage {
    /// The line the guest's `mallee-init` logs for its root disk (`vda`, the VMM's serial
    /// `root`) when the root image's bytes reached it: size, label and UUID from its superblock.
    pub fn root_disk_line(&self) -> String {
        format!(
            "disk vda: {} bytes, serial root, ext file system label {} uuid {}",
            self.root_bytes, self.root_label, self.root_uuid
        )
    }
}

/// Builds the static `examples` (of mallee-vmm) the way `just images` builds binaries; returns
/// the directory they are in, beside the binaries `just images` built (naming examples builds
/// only them: run `just images` after changing `mallee-init` or `mallee-vmm`). The package set
/// is `scripts/images.sh`'s: the same set resolves the same features, so the shared crates are
/// not built again (a different set rebuilt every shared crate, 1.5 min of CI; adding `--bins`
/// rebuilt the binaries themselves with the examples' dev-dependency features).
pub fn build_static(examples: &[&str]) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = std::process::Command::new(env!("CARGO"));
    // What `cargo test` tells its test about the test's own package is not the build's
    // business: ring's build script tracks CARGO_MANIFEST_DIR, so inheriting it rebuilt the
    // whole TLS stack and everything above it.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let about_the_test = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|p| name.starts_with(p))
            || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR"].contains(&name.as_ref());
        if about_the_test {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd.current_dir(&root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args(["build", "--profile", "image", "--locked", "--target"])
        .arg(mallee_image_build::STATIC_TARGET)
        .args([
            "-p",
            "mallee-init",
            "-p",
            "mallee-vmm",
            "-p",
            "mallee-frontend",
        ]);
    for e in examples {
        cmd.args(["--example", e]);
    }
    let status = cmd.status().expect("run cargo");
    assert!(
        status.success(),
        "static build of mallee-init, mallee-vmm, mallee-frontend and {examples:?} failed"
    );
    mallee_image_build::static_bin_dir()
}
