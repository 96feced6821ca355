//! `debian-cloud`: a real Debian bookworm cloud image, built from Debian's archive by
//! `mmdebstrap` (no root loop mounts, nothing run on the host but mmdebstrap's own chroot) and
//! laid out for Mallee: `vmlinuz` and `initrd.img` (the image's own kernel, to register as the
//! kernel and ramdisk images), `root.img` (an unpartitioned ext4 root, label [`LABEL`]),
//! `root-gpt.img` (the same file system as the one partition of a GPT disk) and `image.txt`
//! (`key=value` facts tests read: label, UUIDs, sizes, package versions).
//!
//! This module owns the [`Recipe`] (suite, packages, dpkg filters, archives, our files) and its
//! cache: a build is kept per machine under `$XDG_CACHE_HOME/mallee/debian-cloud/<key>/`, the key
//! being a hash of the recipe, so a second run copies the finished artifacts in seconds.
//! [`bootstrap`] runs mmdebstrap, [`tree`] configures the tree for a cloud (cloud-init with the
//! EC2 datasource, no host keys or machine id, kernel out of /boot), [`disk`] makes the ext4 and
//! GPT images, [`sources`] finds the host apt's mirror.

pub mod bootstrap;
pub mod disk;
pub mod sources;
pub mod tree;

use crate::initramfs::mib;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use uuid::Uuid;

/// The Debian release.
pub const SUITE: &str = "bookworm";
/// mmdebstrap's variant: Essential: yes packages and apt, then [`PACKAGES`] with their
/// dependencies (not recommendations).
pub const VARIANT: &str = "minbase";
/// The ext4 label of the root file system, in both images (fstab mounts it by this).
pub const LABEL: &str = "debian-root";
/// Bumped whenever the build changes in a way the recipe's text does not show.
const RECIPE_VERSION: u32 = 1;

/// What goes on top of minbase. cloud-init pulls in python3-requests, isc-dhcp-client and gdisk
/// (its Depends); sudo is only its Recommends, and the default user's sudo rule needs it.
pub const PACKAGES: &[&str] = &[
    "cloud-guest-utils", // growpart, for cloud-init to grow root-gpt.img's partition
    "cloud-init",
    "dbus",     // systemctl for users, hostnamectl, logind
    "ifupdown", // cloud-init renders the network as /etc/network/interfaces.d (Debian's way)
    "isc-dhcp-client",
    "libpam-systemd",          // logind sessions for SSH logins
    "linux-image-cloud-amd64", // virtio built in
    "netbase",
    "openssh-server",
    "sudo",
    "systemd-sysv",
    "udev",
    "zstd", // initramfs-tools compresses with it
];

/// dpkg filters: no documentation (but the copyright files), manuals or translations.
/// `/usr/share/i18n` stays: cloud-init's locale module runs locale-gen.
pub const DPKG_OPTIONS: &[&str] = &[
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
];

/// The line cloud-init's final stage prints on the console (its `final_message` default,
/// followed by the version, time, datasource and uptime).
pub const READY_PREFIX: &str = "Cloud-init v.";

#[derive(Debug, thiserror::Error)]
pub enum DebianCloudError {
    #[error("debian-cloud must run as root: mmdebstrap's root mode keeps the tree's owners for mke2fs -d (run it with sudo)")]
    NotRoot,
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    #[error(transparent)]
    Tree(#[from] tree::TreeError),
    #[error(transparent)]
    Disk(#[from] disk::DiskError),
    #[error("the cached build {0} lacks {1}; delete that directory (or pass --rebuild)")]
    Cache(String, &'static str),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DebianCloudError {
    let path = path.display().to_string();
    move |source| DebianCloudError::Io { path, source }
}

/// Everything a build depends on; the cache key is a hash of its [`Recipe::text`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub suite: String,
    pub variant: String,
    pub packages: Vec<String>,
    pub dpkg_options: Vec<String>,
    /// One-line `deb` entries ([`sources::image_sources`]).
    pub sources: Vec<String>,
    pub files: Vec<tree::TreeFile>,
    /// `mmdebstrap --version`.
    pub tool: String,
}

impl Recipe {
    /// The image's recipe from `sources`, with `tool` the mmdebstrap version. An archive over
    /// https needs ca-certificates in the image, for apt there to reach it.
    pub fn new(sources: Vec<String>, tool: String) -> Self {
        let mut packages: Vec<String> = PACKAGES.iter().map(|p| p.to_string()).collect();
        if sources.iter().any(|s| s.contains(" https://")) {
            packages.push("ca-certificates".into());
        }
        packages.sort();
        Recipe {
            suite: SUITE.into(),
            variant: VARIANT.into(),
            packages,
            dpkg_options: DPKG_OPTIONS.iter().map(|o| o.to_string()).collect(),
            sources,
            files: tree::config_files(LABEL),
            tool,
        }
    }

    /// The recipe as lines, in a fixed order (kept beside the cached build as `recipe.txt`).
    pub fn text(&self) -> String {
        let mut t = format!(
            "recipe=mallee debian-cloud {RECIPE_VERSION}\ntool={}\nsuite={}\nvariant={}\nlabel={LABEL}\nheadroom_percent={}\n",
            self.tool,
            self.suite,
            self.variant,
            disk::HEADROOM_PERCENT
        );
        for p in &self.packages {
            t.push_str(&format!("package={p}\n"));
        }
        for o in &self.dpkg_options {
            t.push_str(&format!("dpkgopt={o}\n"));
        }
        for s in &self.sources {
            t.push_str(&format!("source={s}\n"));
        }
        for f in &self.files {
            let digest = hex::encode(Sha256::digest(f.content.as_bytes()));
            t.push_str(&format!("file={} {:o} sha256:{digest}\n", f.path, f.mode));
        }
        for r in tree::REMOVED {
            t.push_str(&format!("remove={r}\n"));
        }
        t.push_str(&format!("remove=etc/ssh/{}*\n", tree::SSH_HOST_KEY_PREFIX));
        t
    }

    /// The cache key: the start of the SHA-256 of [`Recipe::text`].
    pub fn key(&self) -> String {
        hex::encode(Sha256::digest(self.text().as_bytes()))[..16].to_string()
    }

    /// A GUID for `what` (file system, hash seed, disk, partition) derived from the key, so a
    /// rebuild of the same recipe carries the same ones.
    pub fn guid(&self, what: &str) -> Uuid {
        let d = Sha256::new()
            .chain_update(self.key())
            .chain_update([0])
            .chain_update(what)
            .finalize();
        uuid::Builder::from_random_bytes(d[..16].try_into().expect("16 of 32 bytes")).into_uuid()
    }

    pub fn gpt_layout(&self, fs_bytes: u64) -> disk::GptLayout {
        disk::GptLayout {
            disk_guid: self.guid("disk"),
            partition_guid: self.guid("partition"),
            partition_name: LABEL.into(),
            fs_bytes,
        }
    }
}

/// The facts `image.txt` records, as `key=value` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    pub key: String,
    pub fs_uuid: Uuid,
    pub layout: disk::GptLayout,
    pub kernel_release: String,
    pub tree_bytes: u64,
    pub vmlinuz_bytes: u64,
    pub initrd_bytes: u64,
    pub tool: String,
    pub mirror: String,
    /// Every installed package and its version.
    pub packages: BTreeMap<String, String>,
}

impl ImageFacts {
    fn package(&self, name: &str) -> &str {
        self.packages.get(name).map_or("", String::as_str)
    }

    /// `image.txt`: the image's facts, then `package.NAME=VERSION` for every installed package.
    pub fn render(&self) -> String {
        let linux_image = format!("linux-image-{}", self.kernel_release);
        let l = &self.layout;
        let mut t = String::new();
        let mut kv = |k: &str, v: &dyn std::fmt::Display| t.push_str(&format!("{k}={v}\n"));
        kv("name", &"debian-cloud");
        kv("suite", &SUITE);
        kv("build_key", &self.key);
        kv("label", &LABEL);
        kv("fs_uuid", &self.fs_uuid);
        kv("partition_uuid", &l.partition_guid);
        kv("disk_guid", &l.disk_guid);
        kv("partition_type", &disk::LINUX_ROOT_X86_64);
        kv("partition_offset", &disk::PARTITION_OFFSET);
        kv("root_bytes", &l.fs_bytes);
        kv("root_gpt_bytes", &l.disk_bytes());
        kv("tree_bytes", &self.tree_bytes);
        kv("vmlinuz_bytes", &self.vmlinuz_bytes);
        kv("initrd_bytes", &self.initrd_bytes);
        kv("kernel_release", &self.kernel_release);
        kv("linux_image", &linux_image);
        kv("linux_image_version", &self.package(&linux_image));
        kv("cloud_init_version", &self.package("cloud-init"));
        kv("openssh_server_version", &self.package("openssh-server"));
        kv("systemd_version", &self.package("systemd"));
        kv("default_user", &"debian");
        kv("cmdline", &format!("console=ttyS0 root=LABEL={LABEL}"));
        kv(
            "cmdline_gpt",
            &format!("console=ttyS0 root=PARTUUID={}", l.partition_guid),
        );
        kv("ready_prefix", &READY_PREFIX);
        kv("mirror", &self.mirror);
        kv("tool", &self.tool);
        kv("packages", &self.packages.len());
        for (p, v) in &self.packages {
            kv(&format!("package.{p}"), v);
        }
        t
    }
}

/// `key=value` lines as a map (later keys win); other lines are ignored.
pub fn parse_image_txt(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// How a build is asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub out: PathBuf,
    /// The Debian archive (default: the host apt's for [`SUITE`]).
    pub mirror: Option<String>,
    /// Build even when the cache holds this recipe's image.
    pub rebuild: bool,
    /// The per-machine cache (normally [`crate::fetch::cache_dir`]).
    pub cache: PathBuf,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Report {
    pub out: PathBuf,
    pub facts: BTreeMap<String, String>,
    /// Whether the cache held the build.
    pub cached: bool,
    pub cache_dir: PathBuf,
    pub seconds: f64,
}

/// The files a finished build leaves in its cache directory (and copies to `--out`, with
/// `root-gpt.img` made from `root.img`).
const CACHED: &[&str] = &["vmlinuz", "initrd.img", "root.img", "image.txt"];
const COMPLETE: &str = ".complete";

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Builds (or takes from the cache) the image and writes it to `opts.out`.
pub fn build(opts: &Options) -> Result<Report, DebianCloudError> {
    let start = Instant::now();
    let tool = bootstrap::version()?;
    let host = sources::host_sources(Path::new("/etc/apt"));
    let recipe = Recipe::new(
        sources::image_sources(&host, SUITE, opts.mirror.as_deref()),
        tool,
    );
    let key = recipe.key();
    let root = opts.cache.join("debian-cloud");
    let dir = root.join(&key);
    let cached = dir.join(COMPLETE).exists() && !opts.rebuild;
    if cached {
        eprintln!(
            "image-build: debian-cloud {key} is cached in {}",
            dir.display()
        );
    } else {
        if !is_root() {
            return Err(DebianCloudError::NotRoot);
        }
        build_into_cache(&recipe, &root, &dir)?;
    }
    for name in CACHED {
        if !dir.join(name).exists() {
            return Err(DebianCloudError::Cache(dir.display().to_string(), name));
        }
    }
    let facts_text = std::fs::read_to_string(dir.join("image.txt")).map_err(io(&dir))?;
    let facts = parse_image_txt(&facts_text);
    let fs_bytes = std::fs::metadata(dir.join("root.img"))
        .map_err(io(&dir))?
        .len();
    write_out(&recipe, &dir, fs_bytes, &opts.out)?;
    Ok(Report {
        out: opts.out.clone(),
        facts,
        cached,
        cache_dir: dir,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Copies the cached build into `out` and makes `root-gpt.img` there from its `root.img`.
fn write_out(
    recipe: &Recipe,
    dir: &Path,
    fs_bytes: u64,
    out: &Path,
) -> Result<(), DebianCloudError> {
    let t = Instant::now();
    std::fs::create_dir_all(out).map_err(io(out))?;
    for name in CACHED {
        disk::copy_file_sparse(&dir.join(name), &out.join(name))?;
    }
    disk::gpt_image(
        &dir.join("root.img"),
        &recipe.gpt_layout(fs_bytes),
        &out.join("root-gpt.img"),
    )?;
    eprintln!(
        "image-build: copied to {} and wrote root-gpt.img in {:.1} s",
        out.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Bootstraps, configures and packs the image into `dir` (through `dir.partial`, renamed when
/// complete).
fn build_into_cache(recipe: &Recipe, root: &Path, dir: &Path) -> Result<(), DebianCloudError> {
    let start = Instant::now();
    let partial = dir.with_extension("partial");
    bootstrap::remove_tree(&partial)?;
    std::fs::create_dir_all(&partial).map_err(io(&partial))?;
    std::fs::write(partial.join("recipe.txt"), recipe.text()).map_err(io(&partial))?;
    let tree_dir = partial.join("tree");
    let (debs, debs_new) = (root.join("debs"), root.join("debs.new"));
    let _ = std::fs::remove_dir_all(&debs_new);
    eprintln!(
        "image-build: debian-cloud {}: mmdebstrap {} {} + {} packages from {}",
        recipe.key(),
        recipe.suite,
        recipe.variant,
        recipe.packages.len(),
        recipe.sources.join(", ")
    );
    let dpkg: Vec<&str> = recipe.dpkg_options.iter().map(String::as_str).collect();
    bootstrap::run(&bootstrap::Bootstrap {
        suite: &recipe.suite,
        variant: &recipe.variant,
        packages: &recipe.packages,
        dpkg_options: &dpkg,
        sources: &recipe.sources,
        tree: &tree_dir,
        debs_in: &debs,
        debs_out: &debs_new,
    })?;
    // Keep exactly this build's .debs for the next one.
    if debs_new.is_dir() {
        let _ = std::fs::remove_dir_all(&debs);
        std::fs::rename(&debs_new, &debs).map_err(io(&debs))?;
    }
    eprintln!(
        "image-build: tree bootstrapped in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let locked = tree::configure(&tree_dir, LABEL)?;
    if !locked.is_empty() {
        eprintln!(
            "image-build: locked the empty passwords of {}",
            locked.join(", ")
        );
    }
    let packages = tree::installed_packages(&tree_dir)?;
    let kernel = tree::take_kernel(&tree_dir, &partial)?;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).map_err(io(p));
    let (vmlinuz_bytes, initrd_bytes) = (size(&kernel.vmlinuz)?, size(&kernel.initrd)?);
    eprintln!(
        "image-build: configured the tree ({} packages); kernel {} ({:.1} MiB) and initrd.img ({:.1} MiB) moved out of /boot",
        packages.len(),
        kernel.release,
        mib(vmlinuz_bytes),
        mib(initrd_bytes)
    );

    let t_fs = Instant::now();
    let measured = disk::measure(&tree_dir).map_err(io(&tree_dir))?;
    let (size_mib, inodes) = disk::fs_geometry(measured);
    let spec = disk::Ext4Spec {
        label: LABEL.into(),
        uuid: recipe.guid("fs"),
        hash_seed: recipe.guid("hash seed"),
        size_mib,
        inodes,
    };
    let image = partial.join("root.img");
    eprintln!(
        "image-build: packing {:.0} MiB in {} inodes into root.img: {size_mib} MiB ext4, {inodes} inodes, label {LABEL}, uuid {}",
        mib(measured.bytes),
        measured.inodes,
        spec.uuid
    );
    disk::make_ext4(&spec, &tree_dir, &image)?;
    eprintln!(
        "image-build: root.img made and checked (e2fsck -fn) in {:.1} s (configuring took {:.1} s)",
        t_fs.elapsed().as_secs_f64(),
        (t_fs - t).as_secs_f64()
    );

    let facts = ImageFacts {
        key: recipe.key(),
        fs_uuid: spec.uuid,
        layout: recipe.gpt_layout(size_mib * disk::MIB),
        kernel_release: kernel.release,
        tree_bytes: measured.bytes,
        vmlinuz_bytes,
        initrd_bytes,
        tool: recipe.tool.clone(),
        mirror: recipe
            .sources
            .first()
            .and_then(|s| s.split_whitespace().nth(1))
            .unwrap_or(sources::DEFAULT_MIRROR)
            .to_string(),
        packages,
    };
    std::fs::write(partial.join("image.txt"), facts.render()).map_err(io(&partial))?;
    bootstrap::remove_tree(&tree_dir)?;
    std::fs::write(partial.join(COMPLETE), b"").map_err(io(&partial))?;
    bootstrap::remove_tree(dir)?;
    std::fs::rename(&partial, dir).map_err(io(dir))?;
    eprintln!(
        "image-build: built in {:.1} s, cached in {}",
        start.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe() -> Recipe {
        Recipe::new(
            vec!["deb http://deb.debian.org/debian bookworm main".into()],
            "mmdebstrap 1.3.5".into(),
        )
    }

    #[test]
    fn the_key_is_stable_for_the_same_recipe() {
        assert_eq!(recipe().key(), recipe().key());
        assert_eq!(recipe().key().len(), 16);
    }

    #[test]
    fn the_key_changes_with_each_input() {
        let base = recipe().key();
        let mut changes: Vec<Recipe> = Vec::new();
        let mut r = recipe();
        r.suite = "trixie".into();
        changes.push(r);
        let mut r = recipe();
        r.packages.push("vim".into());
        changes.push(r);
        let mut r = recipe();
        r.dpkg_options.pop();
        changes.push(r);
        let mut r = recipe();
        r.sources[0] = "deb http://other/debian bookworm main".into();
        changes.push(r);
        let mut r = recipe();
        r.files[0].content.push('\n');
        changes.push(r);
        let mut r = recipe();
        r.files[0].mode = 0o600;
        changes.push(r);
        let mut r = recipe();
        r.tool = "mmdebstrap 1.4.0".into();
        changes.push(r);
        for (i, r) in changes.iter().enumerate() {
            assert_ne!(r.key(), base, "change {i} kept the key");
        }
    }

    #[test]
    fn an_https_archive_brings_ca_certificates() {
        let r = Recipe::new(
            vec!["deb https://m/debian bookworm main".into()],
            "t".into(),
        );
        assert!(r.packages.contains(&"ca-certificates".to_string()));
        assert!(!recipe().packages.contains(&"ca-certificates".to_string()));
    }

    #[test]
    fn guids_follow_the_key_and_differ_by_purpose() {
        let r = recipe();
        assert_eq!(r.guid("disk"), recipe().guid("disk"));
        assert_ne!(r.guid("disk"), r.guid("partition"));
        assert_eq!(r.guid("fs").get_version_num(), 4);
        let mut other = recipe();
        other.packages.push("vim".into());
        assert_ne!(other.guid("partition"), r.guid("partition"));
    }

    #[test]
    fn image_txt_names_what_tests_read() {
        let r = recipe();
        let facts = ImageFacts {
            key: r.key(),
            fs_uuid: r.guid("fs"),
            layout: r.gpt_layout(600 * disk::MIB),
            kernel_release: "6.1.0-9-cloud-amd64".into(),
            tree_bytes: 1,
            vmlinuz_bytes: 2,
            initrd_bytes: 3,
            tool: r.tool.clone(),
            mirror: "http://deb.debian.org/debian".into(),
            packages: [
                ("cloud-init", "22.4.2-1+deb12u4"),
                ("linux-image-6.1.0-9-cloud-amd64", "6.1.1-1"),
            ]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        };
        let m = parse_image_txt(&facts.render());
        assert_eq!(m["label"], "debian-root");
        assert_eq!(m["fs_uuid"], r.guid("fs").to_string());
        assert_eq!(m["partition_uuid"], r.guid("partition").to_string());
        assert_eq!(m["partition_type"], "4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
        assert_eq!(m["root_bytes"], (600 * disk::MIB).to_string());
        assert_eq!(m["root_gpt_bytes"], (602 * disk::MIB).to_string());
        assert_eq!(m["linux_image"], "linux-image-6.1.0-9-cloud-amd64");
        assert_eq!(m["linux_image_version"], "6.1.1-1");
        assert_eq!(m["cloud_init_version"], "22.4.2-1+deb12u4");
        assert_eq!(m["package.cloud-init"], "22.4.2-1+deb12u4");
        assert_eq!(
            m["cmdline_gpt"],
            format!("console=ttyS0 root=PARTUUID={}", r.guid("partition"))
        );
        assert_eq!(m["packages"], "2");
    }
}
