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

    pub fn node() -> anyhow::Result<NetbootImage> {
        Self::netboot("node")
    }
}
