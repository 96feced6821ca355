//! Builds Mallee's bootable artifacts from the pinned Debian kernel and our static binaries.
//!
//! `lock` (the pin) → `fetch` (apt-get download, verified, cached) → `kernel` (unpacked tree)
//! → `kmod` (module dependency closure) → `initramfs` (`cpio` + gzip) → `netboot` (bundles).
//! `uefi` (systemd-boot, unified kernel images) and `appliance` turn the frontend bundle into
//! the flashable GPT disk image. `rootfs` makes small ext4 root images; `guest` is the test instance bundle (ramdisk + root
//! image) that end-to-end tests upload. Tests use the same pieces to build custom guest images
//! (`netboot::NetbootSpec`). `debian_cloud` is a real Debian cloud image (mmdebstrap, cloud-init,
//! its own kernel) as unpartitioned and GPT root disks.

pub mod appliance;
pub mod cpio;
pub mod debian_cloud;
pub mod elf;
pub mod fetch;
pub mod guest;
pub mod initramfs;
pub mod kernel;
pub mod kmod;
pub mod lock;
pub mod netboot;
pub mod rootfs;
pub mod uefi;

use std::path::{Path, PathBuf};

/// The repository's kernel lock file.
pub fn default_lock_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kernel.lock")
}

/// The comment `pin` writes at the top of the kernel lock.
pub const KERNEL_LOCK_HEADER: &str =
    "# The pinned Debian kernel for the node and frontend images.\n\
     # Move the pin with `just pin-kernel` (mallee-image-build pin), which rewrites this file.\n";

/// The repository's UEFI boot loader lock file (systemd-boot and its kernel stub).
pub fn boot_lock_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("boot.lock")
}

/// The workspace's `target/` directory (honouring `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The target triple our static binaries are built for (`+crt-static` works on it).
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Where `just images` (scripts/images.sh) leaves the static binaries that go into images:
/// `target/x86_64-unknown-linux-gnu/image/` (the stripped `image` profile).
pub fn static_bin_dir() -> PathBuf {
    target_dir().join(STATIC_TARGET).join("image")
}

/// Fetches (once per machine) and unpacks the pinned UEFI boot loader and stub.
pub fn pinned_boot() -> anyhow::Result<uefi::BootFiles> {
    let lock = lock::PackageLock::load(&boot_lock_path())?;
    let cache = fetch::cache_dir();
    let deb = fetch::fetch_package(&lock, &cache)?;
    Ok(uefi::BootFiles::unpack(&lock, &deb, &cache)?)
}

/// Fetches (once per machine) and unpacks the pinned kernel.
pub fn pinned_kernel() -> anyhow::Result<kernel::KernelTree> {
    let lock = lock::PackageLock::load(&default_lock_path())?;
    let cache = fetch::cache_dir();
    let deb = fetch::fetch_package(&lock, &cache)?;
    Ok(kernel::KernelTree::unpack(&lock, &deb, &cache)?)
}
