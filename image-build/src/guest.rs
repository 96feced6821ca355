//! The test instance bundle the end-to-end tests and the demo upload as an image: `initrd`
//! (`mallee-init` as `/init` with the guest's modules, [`NetbootSpec::guest`]) and `root.img`
//! (a small ext4 file system, [`crate::rootfs`], holding [`MARKER_PATH`]), plus `root.id`, the
//! root image's label and UUID as `key=value` lines, which tests compare with what the guest's
//! `mallee-init` reads from its root disk. The kernel is the node bundle's `vmlinuz`.

use crate::initramfs::{InitramfsError, PackedSize};
use crate::kernel::KernelTree;
use crate::netboot::{self, NetbootError, NetbootSpec};
use crate::rootfs::{self, RootImageError, RootImageReport, RootImageSpec};
use std::path::Path;

/// The root image's ext4 label.
pub const ROOT_LABEL: &str = "mallee-root";
/// The root image's size.
pub const ROOT_MIB: u64 = 32;
/// The file naming the image and its build, inside the root image.
pub const MARKER_PATH: &str = "etc/mallee-image";

#[derive(Debug, thiserror::Error)]
pub enum GuestBundleError {
    #[error(transparent)]
    Netboot(#[from] NetbootError),
    #[error(transparent)]
    Initramfs(#[from] InitramfsError),
    #[error(transparent)]
    Root(#[from] RootImageError),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct GuestReport {
    pub initrd: PackedSize,
    pub modules: usize,
    pub root: RootImageReport,
}

/// The root image for kernel release `release`: [`MARKER_PATH`] names the image, the builder
/// and the kernel it was built with.
pub fn root_spec(release: &str) -> RootImageSpec {
    let marker = format!(
        "name=mallee-guest-root\nbuilder=mallee-image-build {}\nkernel={release}\n",
        env!("CARGO_PKG_VERSION")
    );
    RootImageSpec {
        label: ROOT_LABEL.into(),
        size_mib: ROOT_MIB,
        files: vec![(MARKER_PATH.into(), 0o644, marker.into_bytes())],
    }
}

/// Builds `out_dir/{initrd,root.img,root.id}` with `init` as the ramdisk's `/init`.
pub fn build(
    init: &Path,
    kernel: &KernelTree,
    out_dir: &Path,
) -> Result<GuestReport, GuestBundleError> {
    let werr = |path: &Path| {
        let path = path.display().to_string();
        move |source| GuestBundleError::Write { path, source }
    };
    std::fs::create_dir_all(out_dir).map_err(werr(out_dir))?;
    eprintln!(
        "image-build: resolving guest modules for kernel {}",
        kernel.release()
    );
    let (fs, modules) = netboot::assemble(&NetbootSpec::guest(init), kernel)?;
    let initrd = fs.write_gz(&out_dir.join("initrd"))?;
    let root = rootfs::build(&root_spec(kernel.release()), &out_dir.join("root.img"))?;
    let id = out_dir.join("root.id");
    std::fs::write(&id, format!("label={}\nuuid={}\n", root.label, root.uuid))
        .map_err(werr(&id))?;
    Ok(GuestReport {
        initrd,
        modules,
        root,
    })
}
