//! Netboot bundles: `vmlinuz`, `initramfs` and `cmdline` for a role (the compute node, and the
//! frontend appliance carrying the node bundle it serves over PXE), the test instance's ramdisk
//! ([`NetbootSpec::guest`]), and the module lists `mallee-init` reads at boot.
//!
//! Module list files, under `/lib/modules/mallee/` in the initramfs (paths relative to
//! `/lib/modules/<release>/`; one record per line, fields separated by one space):
//! * `load-order`: `NAME PATH` — loaded unconditionally at boot, already in dependency order.
//! * `all`: `NAME PATH` — every module the image carries.
//! * `aliases`: `PATTERN NAME DEPS` — a modalias glob of a coldplug module, its name, and the
//!   modules to load before it in order, comma-separated (`-` when none).

use crate::initramfs::{Initramfs, InitramfsError, PackedSize};
use crate::kernel::KernelTree;
use crate::kmod::{Module, ModuleError, Resolver};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum NetbootError {
    #[error(transparent)]
    Module(#[from] ModuleError),
    #[error(transparent)]
    Initramfs(#[from] InitramfsError),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the {role} image takes no dynamic program {program} (a node carries only sbin/mke2fs, \
         a guest none; the frontend mke2fs and nft)"
    )]
    DynamicRefused { role: String, program: String },
    #[error("the frontend image needs the node bundle: {path} is missing (build the node first)")]
    NodeBundleMissing { path: String },
}

/// Modules every compute node loads at boot: virtio devices, the file system of its cache disk,
/// KVM, and the networking and storage pieces instances need. `af_packet` is built into
/// Debian's kernel and is skipped.
pub const NODE_BOOT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_rng",
    // ext4 and jbd2 ask the crypto API for crc32c (see FRONTEND_BOOT_MODULES).
    "crc32c_generic",
    "ext4",
    "irqbypass",
    "ccp",
    "kvm",
    "kvm_amd",
    "kvm_intel",
    "tun",
    "bridge",
    "8021q",
    "dm_thin_pool",
    "nf_tables",
    "af_packet",
];

/// NIC drivers loaded only when a PCI device needs them (coldplug by modalias), so a real rack
/// with Intel, Broadcom or Mellanox NICs boots.
pub const NODE_NIC_MODULES: &[&str] = &[
    "e1000",
    "e1000e",
    "igb",
    "ixgbe",
    "i40e",
    "bnxt_en",
    "mlx5_core",
];

/// The kernel command line a node boots with when nothing else (PXE) adds to it.
pub const NODE_CMDLINE: &str = "console=ttyS0 panic=10 mallee.role=node";

/// Modules the frontend appliance loads at boot: virtio devices, its data disk's file system,
/// and the networking pieces (VLANs, bridges, nftables) the cluster controller uses.
pub const FRONTEND_BOOT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_rng",
    // ext4 and jbd2 ask the crypto API for crc32c (metadata_csum, on by default in mke2fs);
    // a softdep only modprobe would follow, so it is listed here.
    "crc32c_generic",
    "ext4",
    "8021q",
    "bridge",
    "tun",
    "nf_tables",
    "af_packet",
];

/// The gateway's nftables modules on the frontend (init applies the daemon's ruleset with nft):
/// conntrack matches (`ct state`, `ct direction`, `ct status`), NAT chains with
/// dnat/snat/masquerade in table `ip mallee_nat`, and reject in table `inet mallee`. No modprobe
/// runs on the appliance, so the kernel's own requests for these fail: they are loaded at boot,
/// after [`FRONTEND_BOOT_MODULES`]. Their dependencies (nf_defrag_ipv4/6, nf_reject_ipv6,
/// nft_reject, libcrc32c) come from .modinfo.
pub const GATEWAY_MODULES: &[&str] = &[
    "nf_conntrack",
    "nf_nat",
    "nft_ct",
    "nft_nat",
    "nft_chain_nat",
    "nft_masq",
    "nf_reject_ipv4",
    "nft_reject_inet",
];

/// The frontend's command line: its data disk and private NIC are `mallee.data=` and
/// `mallee.private=` (defaults `/dev/vda` and `eth1:10.77.0.1/24`).
pub const FRONTEND_CMDLINE: &str = "console=ttyS0 panic=10 mallee.role=frontend";

/// Modules a test instance's ramdisk loads at boot: the VMM's virtio-pci disks, NIC and RNG.
/// With a NIC the guest's `mallee-init` reports ready once DHCP (answered by its VMM) gave it
/// its address; without one (a VMM with no `--net`), at once with `ip=none`.
pub const GUEST_BOOT_MODULES: &[&str] = &["virtio_pci", "virtio_net", "virtio_blk", "virtio_rng"];

/// Where `mke2fs` is on the build host (Debian's e2fsprogs).
pub const HOST_MKE2FS: &str = "/usr/sbin/mke2fs";
/// Where `nft` is on the build host (Debian's nftables); the frontend carries it as `sbin/nft`
/// for init to apply the gateway's rules.
pub const HOST_NFT: &str = "/usr/sbin/nft";
/// The one dynamic program a node image may carry, at this path: `mke2fs`, which formats a
/// node's blank cache disk and each instance's ephemeral disk. Everything else on a node is
/// static (a node's programs must not depend on a library set nobody tests).
pub const NODE_DYNAMIC_PROGRAMS: &[&str] = &["sbin/mke2fs"];

/// iPXE binaries the frontend serves over TFTP to plain PXE ROMs (Debian's `ipxe`).
pub const IPXE_FILES: &[&str] = &["undionly.kpxe", "snponly.efi", "ipxe.efi"];

/// What goes into one netboot bundle.
#[derive(Debug, Clone)]
pub struct NetbootSpec {
    /// `node`, `frontend` or `guest`: a node carries only [`NODE_DYNAMIC_PROGRAMS`] dynamically
    /// linked, a guest nothing dynamic.
    pub role: String,
    pub boot_modules: Vec<String>,
    pub coldplug_modules: Vec<String>,
    /// `(path in the initramfs, host path)` of static binaries; `init` must be among them.
    pub binaries: Vec<(String, PathBuf)>,
    /// Extra data files `(path in the initramfs, bytes)`.
    pub files: Vec<(String, Vec<u8>)>,
    /// Host files copied in `(path in the initramfs, host path)`.
    pub host_files: Vec<(String, PathBuf)>,
    /// Dynamically linked host programs, copied with their libraries (on a node only those in
    /// [`NODE_DYNAMIC_PROGRAMS`]).
    pub dynamic_programs: Vec<(String, PathBuf)>,
    pub cmdline: String,
}

impl NetbootSpec {
    /// The compute node: `mallee-init` as `/init`, `mallee-vmm` beside it, and the build host's
    /// `mke2fs` ([`HOST_MKE2FS`]; [`NetbootSpec::with_mke2fs`] picks another).
    pub fn node(init: &Path, vmm: &Path) -> Self {
        Self {
            role: "node".into(),
            boot_modules: NODE_BOOT_MODULES.iter().map(|s| s.to_string()).collect(),
            coldplug_modules: NODE_NIC_MODULES.iter().map(|s| s.to_string()).collect(),
            binaries: vec![
                ("init".into(), init.to_path_buf()),
                ("bin/mallee-vmm".into(), vmm.to_path_buf()),
            ],
            files: Vec::new(),
            host_files: Vec::new(),
            dynamic_programs: vec![("sbin/mke2fs".into(), PathBuf::from(HOST_MKE2FS))],
            cmdline: NODE_CMDLINE.to_string(),
        }
    }

    /// A test instance's ramdisk: `init` (static; `mallee-init` for the guest bundle) as
    /// `/init` and [`GUEST_BOOT_MODULES`]. Its command line comes from whoever boots it (the
    /// node agent's VMM config), so `cmdline` is only a default.
    pub fn guest(init: &Path) -> Self {
        Self {
            role: "guest".into(),
            boot_modules: GUEST_BOOT_MODULES.iter().map(|s| s.to_string()).collect(),
            coldplug_modules: Vec::new(),
            binaries: vec![("init".into(), init.to_path_buf())],
            files: Vec::new(),
            host_files: Vec::new(),
            dynamic_programs: Vec::new(),
            cmdline: "console=ttyS0".into(),
        }
    }

    /// The same spec with `mke2fs` taken from `path`.
    pub fn with_mke2fs(mut self, path: &Path) -> Self {
        self.dynamic_programs
            .retain(|(dest, _)| dest != "sbin/mke2fs");
        self.dynamic_programs
            .push(("sbin/mke2fs".into(), path.to_path_buf()));
        self
    }

    /// The frontend appliance: `mallee-init` as `/init`, `mallee-frontend`, `mke2fs` for its
    /// data disk, `nft` ([`HOST_NFT`]) for the gateway's rules, the node bundle in `/usr/share/mallee/node` and the iPXE binaries found in
    /// `ipxe_dir` in `/usr/lib/ipxe`.
    pub fn frontend(
        init: &Path,
        frontend: &Path,
        mke2fs: &Path,
        node_bundle: &Path,
        ipxe_dir: &Path,
    ) -> Result<Self, NetbootError> {
        let mut host_files = Vec::new();
        for name in ["vmlinuz", "initramfs", "cmdline"] {
            let path = node_bundle.join(name);
            if !path.exists() {
                return Err(NetbootError::NodeBundleMissing {
                    path: path.display().to_string(),
                });
            }
            host_files.push((format!("usr/share/mallee/node/{name}"), path));
        }
        for name in IPXE_FILES {
            let path = ipxe_dir.join(name);
            if path.exists() {
                host_files.push((format!("usr/lib/ipxe/{name}"), path));
            }
        }
        Ok(Self {
            role: "frontend".into(),
            boot_modules: (FRONTEND_BOOT_MODULES.iter())
                .chain(GATEWAY_MODULES)
                .map(|s| s.to_string())
                .collect(),
            coldplug_modules: NODE_NIC_MODULES.iter().map(|s| s.to_string()).collect(),
            binaries: vec![
                ("init".into(), init.to_path_buf()),
                ("bin/mallee-frontend".into(), frontend.to_path_buf()),
            ],
            files: Vec::new(),
            host_files,
            dynamic_programs: vec![
                ("sbin/mke2fs".into(), mke2fs.to_path_buf()),
                ("sbin/nft".into(), PathBuf::from(HOST_NFT)),
            ],
            cmdline: FRONTEND_CMDLINE.to_string(),
        })
    }
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct NetbootReport {
    pub out_dir: PathBuf,
    pub kernel_release: String,
    pub vmlinuz_bytes: u64,
    pub initramfs: PackedSize,
    pub modules: usize,
}

/// Assembles the initramfs tree for `spec` (no I/O beyond reading inputs).
pub fn assemble(
    spec: &NetbootSpec,
    kernel: &KernelTree,
) -> Result<(Initramfs, usize), NetbootError> {
    let mut fs = Initramfs::with_skeleton();
    for (dest, src) in &spec.binaries {
        fs.add_static_binary(dest, src)?;
    }
    for (dest, bytes) in &spec.files {
        fs.add_file(dest, 0o644, bytes.clone())?;
    }
    for (dest, src) in &spec.host_files {
        fs.add_host_file(dest, src)?;
    }
    for (dest, src) in &spec.dynamic_programs {
        let allowed = match spec.role.as_str() {
            "node" => NODE_DYNAMIC_PROGRAMS,
            "guest" => &[],
            _ => &[dest.as_str()],
        };
        if !allowed.contains(&dest.as_str()) {
            return Err(NetbootError::DynamicRefused {
                role: spec.role.clone(),
                program: src.display().to_string(),
            });
        }
        fs.add_dynamic_program(dest, src)?;
    }

    let mut resolver = Resolver::new(kernel);
    let boot: Vec<&str> = spec.boot_modules.iter().map(String::as_str).collect();
    let boot_order = resolver.load_order(&boot)?;
    let mut all: BTreeMap<String, Module> = BTreeMap::new();
    for m in &boot_order {
        all.insert(m.name.clone(), m.clone());
    }
    let mut aliases = String::new();
    for name in &spec.coldplug_modules {
        let order = resolver.load_order(&[name.as_str()])?;
        let Some((module, deps)) = order.split_last() else {
            continue; // built in: nothing to coldplug
        };
        let deps = if deps.is_empty() {
            "-".to_string()
        } else {
            deps.iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        for pattern in &module.info.aliases {
            aliases.push_str(&format!("{pattern} {} {deps}\n", module.name));
        }
        for m in order {
            all.insert(m.name.clone(), m);
        }
    }

    let release = kernel.release();
    for m in all.values() {
        fs.add_host_file(
            &format!("lib/modules/{release}/{}", m.path),
            &kernel.modules_dir().join(&m.path),
        )?;
    }
    let line = |m: &Module| format!("{} {}\n", m.name, m.path);
    fs.add_file(
        "lib/modules/mallee/load-order",
        0o644,
        boot_order.iter().map(line).collect::<String>().into_bytes(),
    )?;
    fs.add_file(
        "lib/modules/mallee/all",
        0o644,
        all.values().map(line).collect::<String>().into_bytes(),
    )?;
    fs.add_file("lib/modules/mallee/aliases", 0o644, aliases.into_bytes())?;
    Ok((fs, all.len()))
}

/// Builds `out_dir/{vmlinuz,initramfs,cmdline}`.
pub fn build(
    spec: &NetbootSpec,
    kernel: &KernelTree,
    out_dir: &Path,
) -> Result<NetbootReport, NetbootError> {
    let werr = |path: &Path| {
        let path = path.display().to_string();
        move |source| NetbootError::Write { path, source }
    };
    std::fs::create_dir_all(out_dir).map_err(werr(out_dir))?;
    eprintln!(
        "image-build: resolving modules for kernel {}",
        kernel.release()
    );
    let (fs, modules) = assemble(spec, kernel)?;
    let initramfs = fs.write_gz(&out_dir.join("initramfs"))?;

    let vmlinuz = out_dir.join("vmlinuz");
    let tmp = out_dir.join("vmlinuz.partial");
    std::fs::copy(kernel.vmlinuz(), &tmp).map_err(werr(&tmp))?;
    std::fs::rename(&tmp, &vmlinuz).map_err(werr(&vmlinuz))?;
    let cmdline = out_dir.join("cmdline");
    std::fs::write(&cmdline, format!("{}\n", spec.cmdline)).map_err(werr(&cmdline))?;
    let vmlinuz_bytes = std::fs::metadata(&vmlinuz).map_err(werr(&vmlinuz))?.len();
    Ok(NetbootReport {
        out_dir: out_dir.to_path_buf(),
        kernel_release: kernel.release().to_string(),
        vmlinuz_bytes,
        initramfs,
        modules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::minimal_static_elf;

    /// The frontend carries nft with every library it loads, and the netfilter modules the
    /// gateway's ruleset needs resolve in the pinned kernel and load after their dependencies.
    #[test]
    fn the_frontend_carries_nft_and_the_gateways_netfilter_modules() {
        if !Path::new(HOST_NFT).exists() {
            eprintln!("skipped: {HOST_NFT} is absent (Debian's nftables: run `just setup`)");
            return;
        }
        let kernel = crate::pinned_kernel().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let (init, frontend) = (tmp.path().join("init"), tmp.path().join("frontend"));
        std::fs::write(&init, minimal_static_elf(b"init")).unwrap();
        std::fs::write(&frontend, minimal_static_elf(b"frontend")).unwrap();
        let node = tmp.path().join("node");
        std::fs::create_dir(&node).unwrap();
        for name in ["vmlinuz", "initramfs", "cmdline"] {
            std::fs::write(node.join(name), name).unwrap();
        }
        let spec = NetbootSpec::frontend(
            &init,
            &frontend,
            Path::new(HOST_MKE2FS),
            &node,
            Path::new("/usr/lib/ipxe"),
        )
        .unwrap();
        let (fs, _) = assemble(&spec, &kernel).unwrap();
        assert!(fs.contains("sbin/nft") && fs.contains("sbin/mke2fs"));
        let ldd = std::process::Command::new("ldd")
            .arg(HOST_NFT)
            .output()
            .unwrap();
        for lib in crate::initramfs::parse_ldd(&String::from_utf8_lossy(&ldd.stdout)) {
            assert!(fs.contains(&lib), "{lib} (loaded by nft) missing");
        }
        let cpio = String::from_utf8_lossy(&fs.to_cpio()).into_owned();
        // The load-order list is the data right after its name in the archive.
        let at = cpio.find("lib/modules/mallee/load-order").unwrap();
        let data = cpio[at..]
            .split('\0')
            .find(|d| d.contains(" kernel/"))
            .unwrap();
        let names: Vec<&str> = data.lines().filter_map(|l| l.split(' ').next()).collect();
        let order = |name: &str| {
            (names.iter())
                .position(|n| *n == name)
                .unwrap_or_else(|| panic!("{name} not loaded at boot: {names:?}"))
        };
        for module in GATEWAY_MODULES {
            assert!(
                order("nf_tables") < order(module),
                "{module} before nf_tables"
            );
        }
        assert!(order("nf_conntrack") < order("nft_ct"));
        assert!(order("nf_nat") < order("nft_nat"));
        assert!(order("nf_reject_ipv6") < order("nft_reject_inet"));
    }
}
