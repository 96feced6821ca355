//! Building the node images the `mallee-vmm` end-to-end test and benchmarks boot: static builds
//! of the VMM and its helper programs (`vmm/examples/`), a guest initramfs (image-build's
//! [`NetbootSpec::guest`] with the `e2e_guest` example as `/init`), and a node image carrying
//! the guest kernel and initramfs plus what a runner asks for: dynamically linked host programs
//! (QEMU with its firmware, `ip`, `vblade`) with the libraries `ldd` lists, and kernel modules
//! the runner loads itself (with parameters) instead of init at boot. Shared by
//! `tests/vmm_boot.rs`, `benches/vmm.rs`, `benches/ebs.rs` and `benches/net.rs`, each using part
//! of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use mallee_image_build::initramfs::Initramfs;
use mallee_image_build::kernel::KernelTree;
use mallee_image_build::kmod::Resolver;
use mallee_image_build::netboot::{self, NetbootSpec};
use mallee_qemu_tests::{DebianCloudImage, Images, NetbootImage, Nic, TestDir, Vm, VmConfig};
use std::process::Command;

/// QEMU, for the VMM benchmark's peer.
pub const QEMU: &str = "/usr/bin/qemu-system-x86_64";
/// iproute2's `ip`: veth pairs and network namespaces for the AoE checks.
pub const IP: &str = "/usr/sbin/ip";
/// nginx, the metadata benchmark's peer.
pub const NGINX: &str = "/usr/sbin/nginx";
/// Debian's `vblade`, the AoE target Eucalyptus used.
pub const VBLADE: &str = "/usr/sbin/vblade";
/// Modules the AoE checks load on the node: veth pairs and the Linux AoE initiator.
pub const AOE_MODULES: &[&str] = &["veth", "aoe"];

/// Firmware QEMU loads for `-M microvm` and `-M q35` with `-kernel` (from its search path).
const QEMU_FIRMWARE: &[&str] = &[
    "/usr/share/qemu/qboot.rom",
    "/usr/share/qemu/bios-microvm.bin",
    "/usr/share/qemu/linuxboot_dma.bin",
    "/usr/share/qemu/kvmvapic.bin",
    "/usr/share/seabios/bios-256k.bin",
];

/// Where the list of [`NodeExtras::modules`] is in the node image: `NAME PATH` lines in load
/// order, paths relative to `/lib/modules/<release>/` (the format of init's `load-order`).
pub const MODULE_LIST: &str = "vmm-e2e/modules";

pub use mallee_qemu_tests::build_static;

/// What goes on the node besides the standard node image.
pub struct NodeExtras<'a> {
    /// The program `mallee.run` starts (an example name), installed as `/bin/<name>`.
    pub runner: &'a str,
    /// Dynamically linked host programs, each at its host path with its libraries (and, for
    /// [`QEMU`], its firmware).
    pub programs: &'a [&'a str],
    /// Modules carried but not loaded at boot (with their dependencies), listed in
    /// [`MODULE_LIST`] for the runner.
    pub modules: &'a [&'a str],
}

fn add_programs(fs: &mut Initramfs, programs: &[&str]) {
    for p in programs {
        fs.add_dynamic_program(p.trim_start_matches('/'), Path::new(p))
            .unwrap_or_else(|e| panic!("add {p}: {e} (run `just setup`)"));
        if *p == QEMU {
            for f in QEMU_FIRMWARE {
                fs.add_host_file(f.trim_start_matches('/'), Path::new(f))
                    .unwrap_or_else(|e| panic!("add {f}: {e} (run `just setup`)"));
            }
        }
    }
}

fn add_modules(fs: &mut Initramfs, kernel: &KernelTree, modules: &[&str]) {
    let order = Resolver::new(kernel)
        .load_order(modules)
        .unwrap_or_else(|e| panic!("modules {modules:?}: {e}"));
    let mut list = String::new();
    for m in &order {
        let dest = format!("lib/modules/{}/{}", kernel.release(), m.path);
        fs.add_host_file(&dest, &kernel.modules_dir().join(&m.path))
            .unwrap_or_else(|e| panic!("add {dest}: {e}"));
        list.push_str(&format!("{} {}\n", m.name, m.path));
    }
    fs.add_file(MODULE_LIST, 0o644, list.into_bytes())
        .expect("add the module list");
}

/// The node image: standard node contents, the runner, the guest kernel and initramfs (whose
/// `/init` is the `e2e_guest` example) under `/vmm-e2e/`, and the extras.
pub fn node_image(dir: &TestDir, bin: &Path, extras: &NodeExtras<'_>) -> NetbootImage {
    node_image_with_files(dir, bin, extras, &[])
}

/// [`node_image`] with more host files: each `(path in the image, host file)`.
pub fn node_image_with_files(
    dir: &TestDir,
    bin: &Path,
    extras: &NodeExtras<'_>,
    files: &[(String, PathBuf)],
) -> NetbootImage {
    let kernel = mallee_image_build::pinned_kernel().expect("pinned kernel (run `just images`)");
    // The guest bundle's ramdisk spec (virtio_net among its modules) with the e2e guest as /init.
    let guest = NetbootSpec::guest(&bin.join("examples/e2e_guest"));
    let (guest_fs, _) = netboot::assemble(&guest, &kernel).expect("guest initramfs");
    let guest_img = dir.file("guest.img");
    guest_fs
        .write_gz(&guest_img)
        .expect("write guest initramfs");

    let mut spec = NetbootSpec::node(&bin.join("mallee-init"), &bin.join("mallee-vmm"));
    spec.binaries.push((
        format!("bin/{}", extras.runner),
        bin.join("examples").join(extras.runner),
    ));
    spec.files.push((
        "vmm-e2e/vmlinuz".into(),
        std::fs::read(kernel.vmlinuz()).expect("read vmlinuz"),
    ));
    spec.files.push((
        "vmm-e2e/guest.img".into(),
        std::fs::read(&guest_img).expect("read guest initramfs"),
    ));
    spec.host_files.extend(files.iter().cloned());
    write_node(dir, &kernel, &spec, extras.programs, extras.modules)
}

/// The node image `just bench net` boots: a standard node (init, the agent) whose
/// `/bin/mallee-vmm` is the `qemu_peer` example, which runs each instance under the real VMM
/// (`/bin/mallee-vmm-ours`) or, when its user data asks, under QEMU (carried with its firmware;
/// `vhost_net` loaded at boot for QEMU's vhost-net).
pub fn peer_node_image(dir: &TestDir, bin: &Path) -> NetbootImage {
    let kernel = mallee_image_build::pinned_kernel().expect("pinned kernel (run `just images`)");
    let mut spec = NetbootSpec::node(&bin.join("mallee-init"), &bin.join("examples/qemu_peer"));
    spec.binaries
        .push(("bin/mallee-vmm-ours".into(), bin.join("mallee-vmm")));
    spec.boot_modules.push("vhost_net".into());
    write_node(dir, &kernel, &spec, &[QEMU], &[])
}

/// Writes `spec` for `kernel`, with `programs` and carried `modules` ([`NodeExtras`]), as the
/// node image in `dir/node`.
fn write_node(
    dir: &TestDir,
    kernel: &KernelTree,
    spec: &NetbootSpec,
    programs: &[&str],
    modules: &[&str],
) -> NetbootImage {
    let out = dir.file("node");
    std::fs::create_dir_all(&out).expect("node dir");
    let (mut fs, _) = netboot::assemble(spec, kernel).expect("node initramfs");
    add_programs(&mut fs, programs);
    if !modules.is_empty() {
        add_modules(&mut fs, kernel, modules);
    }
    fs.write_gz(&out.join("initramfs"))
        .expect("write node initramfs");
    std::fs::copy(kernel.vmlinuz(), out.join("vmlinuz")).expect("copy vmlinuz");
    NetbootImage {
        vmlinuz: out.join("vmlinuz"),
        initramfs: out.join("initramfs"),
        cmdline: spec.cmdline.clone(),
    }
}

/// The Debian cloud image `just images` built, and a fresh sparse copy of its `root.img` in the
/// test directory for the guest to write to.
pub fn debian_image(dir: &TestDir) -> (DebianCloudImage, PathBuf) {
    let image = Images::debian_cloud().unwrap_or_else(|e| panic!("{e:#}"));
    let root = dir.file("debian-root.img");
    let status = Command::new("cp")
        .arg("--sparse=always")
        .arg(&image.root)
        .arg(&root)
        .status()
        .expect("run cp");
    assert!(
        status.success(),
        "copying {}: {status}",
        image.root.display()
    );
    (image, root)
}

/// A fresh ed25519 key pair made on the host; its public half, which the guest gets through
/// the metadata service. A pair left by an earlier boot of the same test (its retry after a
/// wedged node) is replaced: ssh-keygen would ask before overwriting it, and fail.
pub fn ssh_key(dir: &TestDir) -> PathBuf {
    let key = dir.file("id_ed25519");
    for old in [key.clone(), dir.file("id_ed25519.pub")] {
        match std::fs::remove_file(&old) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                panic!("remove {}: {e}", old.display())
            }
            _ => {}
        }
    }
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "mallee-e2e", "-f"])
        .arg(&key)
        .status()
        .expect("run ssh-keygen");
    assert!(status.success(), "ssh-keygen: {status}");
    dir.file("id_ed25519.pub")
}

/// What `vmm/examples/e2e/cloud_image.rs` finds under `/vmm-e2e/debian` on the node: the Debian
/// image's kernel and initrd and a fresh SSH public key, as `(path in the image, host file)`.
pub fn debian_files(dir: &TestDir, debian: &DebianCloudImage) -> Vec<(String, PathBuf)> {
    vec![
        ("vmm-e2e/debian/vmlinuz".into(), debian.vmlinuz.clone()),
        ("vmm-e2e/debian/initrd.img".into(), debian.initrd.clone()),
        ("vmm-e2e/debian/id.pub".into(), ssh_key(dir)),
    ]
}

/// A nested node named `name` for `vmm/examples/e2e/cloud_image.rs`: the node image with
/// `extras` and [`debian_files`], and a fresh copy of the Debian image's root file system as
/// its disk `vda` (the Debian guest's disk, so no cache disk: `mallee.disk=none`); the runner
/// starts with `cmdline` added to the node's command line.
pub fn debian_node(
    dir: &TestDir,
    bin: &Path,
    extras: &NodeExtras<'_>,
    name: &str,
    cmdline: &str,
) -> Vm {
    let (debian, root) = debian_image(dir);
    let image = node_image_with_files(dir, bin, extras, &debian_files(dir, &debian));
    VmConfig::new(name)
        .netboot(&image)
        .nested_kvm(true)
        // The Debian guest takes 512 MiB, and its kernel and initrd ~27 MB of the node's.
        .memory_mib(2048)
        .cpus(2)
        .nic(Nic::user())
        .disk(root)
        .cmdline(&format!(
            "mallee.run=/bin/{} mallee.disk=none {cmdline}",
            extras.runner
        ))
        .launch(dir)
        .expect("start QEMU")
}
