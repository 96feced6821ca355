//! `mallee-image-build`: builds the node and frontend netboot bundles, the flashable frontend
//! appliance, the test instance bundle, a Debian cloud image, and moves the kernel pin.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use mallee_image_build::initramfs::mib;
use mallee_image_build::{appliance, debian_cloud, fetch, guest, kernel, lock, netboot};
use std::path::PathBuf;
use std::process::Command;

#[derive(Parser)]
#[command(about = "Build Mallee's bootable images from the pinned Debian kernel")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the compute node bundle: OUT/{vmlinuz,initramfs,cmdline}.
    Node {
        /// Static mallee-init binary.
        #[arg(long)]
        init: PathBuf,
        /// Static mallee-vmm binary.
        #[arg(long)]
        vmm: PathBuf,
        /// mke2fs for the cache disk and ephemeral disks (copied with its libraries).
        #[arg(long, default_value = netboot::HOST_MKE2FS)]
        mke2fs: PathBuf,
        /// Output directory.
        #[arg(long, default_value_os_t = mallee_image_build::target_dir().join("images/node"))]
        out: PathBuf,
    },
    /// Build the frontend appliance: OUT/{vmlinuz,initramfs,cmdline}, carrying the node bundle.
    Frontend {
        /// Static mallee-init binary.
        #[arg(long)]
        init: PathBuf,
        /// Static mallee-frontend binary.
        #[arg(long)]
        frontend: PathBuf,
        /// The node bundle the frontend serves over PXE.
        #[arg(long, default_value_os_t = mallee_image_build::target_dir().join("images/node"))]
        node: PathBuf,
        /// iPXE binaries (Debian's `ipxe` package).
        #[arg(long, default_value = "/usr/lib/ipxe")]
        ipxe: PathBuf,
        /// mke2fs for the data disk (copied with its libraries).
        #[arg(long, default_value = netboot::HOST_MKE2FS)]
        mke2fs: PathBuf,
        /// Output directory.
        #[arg(long, default_value_os_t = mallee_image_build::target_dir().join("images/frontend"))]
        out: PathBuf,
    },
    /// Build the flashable frontend appliance: a GPT disk image with systemd-boot, a unified
    /// kernel image per slot (A and B) and a blank data partition, from the frontend bundle.
    Appliance {
        /// The frontend bundle (`images frontend` output).
        #[arg(long, default_value_os_t = mallee_image_build::target_dir().join("images/frontend"))]
        bundle: PathBuf,
        /// Size of the EFI system partition (room for both slots and an upgrade's).
        #[arg(long, default_value_t = 160)]
        esp_mib: u64,
        /// Size of the data partition as flashed (it grows to the disk on first boot).
        #[arg(long, default_value_t = 64)]
        data_mib: u64,
        /// The image's version (default: the workspace version and the commit's time, or
        /// $SOURCE_DATE_EPOCH's). An appliance upgrades only to a newer one.
        #[arg(long)]
        version: Option<String>,
        /// Words to add to each slot's kernel command line (e.g. another console).
        #[arg(long, default_value = "")]
        cmdline_append: String,
        /// The image file.
        #[arg(long, default_value_os_t = mallee_image_build::target_dir().join("images/mallee-frontend.img"))]
        out: PathBuf,
    },
    /// Build the test instance bundle: OUT/{initrd,root.img,root.id} (the kernel is the node's).
    Guest {
        /// Static mallee-init binary, the ramdisk's /init.
        #[arg(long)]
        init: PathBuf,
        /// Output directory.
        #[arg(long, default_value_os_t = mallee_image_build::target_dir().join("images/guest"))]
        out: PathBuf,
    },
    /// Build a Debian bookworm cloud image with mmdebstrap (cloud-init, EC2 datasource, its own
    /// kernel): OUT/{vmlinuz,initrd.img,root.img,root-gpt.img,image.txt}. Cached per machine.
    DebianCloud {
        /// Output directory.
        #[arg(long, default_value_os_t = mallee_image_build::target_dir().join("images/debian-cloud"))]
        out: PathBuf,
        /// The Debian archive to build from (default: the one host apt uses for bookworm).
        #[arg(long)]
        mirror: Option<String>,
        /// Build again even when the cache holds this recipe's image.
        #[arg(long)]
        rebuild: bool,
    },
    /// Move the kernel pin to the newest `linux-image-6.1.0-*-amd64` apt knows (or PACKAGE),
    /// download it and rewrite image-build/kernel.lock with its version and SHA-256.
    Pin {
        /// Exact package name, e.g. linux-image-6.1.0-50-amd64.
        package: Option<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Node {
            init,
            vmm,
            mke2fs,
            out,
        } => {
            let spec = netboot::NetbootSpec::node(&init, &vmm).with_mke2fs(&mke2fs);
            build("node", &spec, out)
        }
        Cmd::Frontend {
            init,
            frontend,
            node,
            ipxe,
            mke2fs,
            out,
        } => {
            let spec = netboot::NetbootSpec::frontend(&init, &frontend, &mke2fs, &node, &ipxe)?;
            build("frontend", &spec, out)
        }
        Cmd::Appliance {
            bundle,
            esp_mib,
            data_mib,
            out,
            version,
            cmdline_append,
        } => {
            let version = match version {
                Some(v) => v,
                None => appliance::version(source_epoch()?),
            };
            let spec = appliance::ApplianceSpec {
                bundle: &bundle,
                boot: &mallee_image_build::pinned_boot()?,
                esp_mib,
                data_mib,
                version: &version,
                cmdline_append: &cmdline_append,
            };
            build_appliance(&spec, &out)
        }
        Cmd::Guest { init, out } => build_guest(&init, out),
        Cmd::DebianCloud {
            out,
            mirror,
            rebuild,
        } => build_debian_cloud(debian_cloud::Options {
            out,
            mirror,
            rebuild,
            cache: fetch::cache_dir(),
        }),
        Cmd::Pin { package } => pin(package),
    }
}

fn build(role: &str, spec: &netboot::NetbootSpec, out: PathBuf) -> Result<()> {
    let kernel = mallee_image_build::pinned_kernel()?;
    eprintln!(
        "image-build: kernel {} ({} modules in the package)",
        kernel.release(),
        kernel.module_count()
    );
    let report = netboot::build(spec, &kernel, &out)?;
    println!(
        "image-build: {role} bundle in {}\n  vmlinuz   {:>7.1} MiB  (Debian {})\n  initramfs {:>7.1} MiB  gzip ({:.1} MiB cpio, {} entries, {} modules)\n  cmdline   {}",
        report.out_dir.display(),
        mib(report.vmlinuz_bytes),
        report.kernel_release,
        mib(report.initramfs.compressed),
        mib(report.initramfs.uncompressed),
        report.initramfs.files,
        report.modules,
        spec.cmdline
    );
    Ok(())
}

/// The source's time: $SOURCE_DATE_EPOCH, else the time of the checkout's last commit.
fn source_epoch() -> Result<u64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"));
    }
    let out = std::process::Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().parse()?),
        _ => anyhow::bail!(
            "no git history to date the appliance's version: set SOURCE_DATE_EPOCH or pass --version"
        ),
    }
}

fn build_appliance(spec: &appliance::ApplianceSpec, out: &std::path::Path) -> Result<()> {
    let (esp_mib, data_mib) = (spec.esp_mib, spec.data_mib);
    eprintln!(
        "image-build: systemd-boot {} from Debian",
        spec.boot.version
    );
    let report = appliance::build(spec, out)?;
    println!(
        "image-build: appliance {} ({:.0} MiB raw GPT, version {} build {}, disk {})\n  ESP       {esp_mib:>5} MiB FAT32 (each slot's unified kernel image {:.1} MiB)",
        report.path.display(),
        mib(report.bytes),
        report.version,
        report.build_id,
        report.disk_guid,
        mib(report.uki_bytes),
    );
    for (name, bytes) in &report.esp_files {
        println!("    {name:<28} {:>7.1} MiB", mib(*bytes));
    }
    println!(
        "  data      {data_mib:>5} MiB blank, label {} (grows to the disk on first boot)",
        appliance::DATA_PARTLABEL
    );
    Ok(())
}

fn build_guest(init: &std::path::Path, out: PathBuf) -> Result<()> {
    let kernel = mallee_image_build::pinned_kernel()?;
    let report = guest::build(init, &kernel, &out)?;
    println!(
        "image-build: guest bundle in {}\n  initrd    {:>7.1} MiB  gzip ({:.1} MiB cpio, {} entries, {} modules)\n  root.img  {:>7.1} MiB  ext4 label {} uuid {}",
        out.display(),
        mib(report.initrd.compressed),
        mib(report.initrd.uncompressed),
        report.initrd.files,
        report.modules,
        mib(report.root.bytes),
        report.root.label,
        report.root.uuid
    );
    Ok(())
}

fn build_debian_cloud(opts: debian_cloud::Options) -> Result<()> {
    let report = debian_cloud::build(&opts)?;
    let f = |k: &str| report.facts.get(k).map_or("?", String::as_str);
    let size = |k: &str| f(k).parse::<u64>().map_or(0.0, mib);
    println!(
        "image-build: debian-cloud image in {} ({}, {:.1} s; key {})\n  vmlinuz       {:>7.1} MiB  {} {}\n  initrd.img    {:>7.1} MiB\n  root.img      {:>7.1} MiB  ext4 label {} uuid {} ({:.0} MiB of files)\n  root-gpt.img  {:>7.1} MiB  GPT, partition 1 at 1 MiB, PARTUUID {}\n  cloud-init {}, openssh-server {}, {} packages (image.txt)",
        report.out.display(),
        if report.cached { "from the cache" } else { "built" },
        report.seconds,
        f("build_key"),
        size("vmlinuz_bytes"),
        f("linux_image"),
        f("linux_image_version"),
        size("initrd_bytes"),
        size("root_bytes"),
        f("label"),
        f("fs_uuid"),
        size("tree_bytes"),
        size("root_gpt_bytes"),
        f("partition_uuid"),
        f("cloud_init_version"),
        f("openssh_server_version"),
        f("packages"),
    );
    Ok(())
}

fn pin(package: Option<String>) -> Result<()> {
    let package = match package {
        Some(p) => p,
        None => newest_kernel_package()?,
    };
    let version = candidate_version(&package)?;
    let cache = fetch::cache_dir();
    let dir = cache.join("debs");
    std::fs::create_dir_all(&dir)?;
    fetch::download(&format!("{package}={version}"), &dir)?;
    let mut new = lock::PackageLock {
        package,
        version,
        sha256: String::new(),
    };
    new.sha256 = fetch::sha256_file(&dir.join(new.deb_file_name()))?;
    let deb = dir.join(new.deb_file_name());
    kernel::KernelTree::unpack(&new, &deb, &cache).context("the new package does not unpack")?;
    let path = mallee_image_build::default_lock_path();
    new.store(&path, mallee_image_build::KERNEL_LOCK_HEADER)?;
    println!(
        "pinned {} {} sha256 {} in {}",
        new.package,
        new.version,
        new.sha256,
        path.display()
    );
    Ok(())
}

fn apt_output(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The highest ABI of bookworm's generic signed kernel that apt knows.
fn newest_kernel_package() -> Result<String> {
    let list = apt_output(&[
        "apt-cache",
        "search",
        "--names-only",
        "^linux-image-6.1.0-[0-9]+-amd64$",
    ])?;
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| {
            let abi: u32 = name
                .strip_prefix("linux-image-6.1.0-")?
                .strip_suffix("-amd64")?
                .parse()
                .ok()?;
            Some((abi, name.to_string()))
        })
        .max()
        .map(|(_, name)| name)
        .context("apt knows no linux-image-6.1.0-*-amd64; run `apt-get update`")
}

fn candidate_version(package: &str) -> Result<String> {
    let policy = apt_output(&["apt-cache", "policy", package])?;
    policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate: "))
        .filter(|v| *v != "(none)")
        .map(str::to_string)
        .with_context(|| format!("apt has no candidate version of {package}"))
}
