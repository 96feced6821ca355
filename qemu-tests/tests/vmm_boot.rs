//! End to end: a nested-KVM node (QEMU TCG with svm) runs `mallee-vmm`, which boots the pinned
//! Debian kernel with a test initramfs. The guest checks a read-only virtio-blk disk with a known
//! pattern, writes a pattern to a second disk, sends a marked frame over virtio-net; the node-side
//! program sees the frame on the tap, gets the VMM's exit status (2: the guest reset) and reads
//! the second disk back. Both programs (`vmm/examples/e2e_{guest,node}.rs`) print one line per
//! check; this test reads them from the node's console.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mallee_image_build::netboot::{self, NetbootSpec};
use mallee_qemu_tests::{Images, NetbootImage, Nic, TestDir, VmConfig};

const TRIPLE: &str = "x86_64-unknown-linux-gnu";
const GUEST_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "virtio_net", "virtio_rng"];

/// Builds the static `mallee-vmm` and the two e2e programs the way `just images` builds binaries.
fn build_static() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            TRIPLE,
            "-p",
            "mallee-vmm",
        ])
        .args([
            "--bin",
            "mallee-vmm",
            "--example",
            "e2e_guest",
            "--example",
            "e2e_node",
        ])
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "static build of mallee-vmm and the e2e programs failed"
    );
    mallee_image_build::target_dir()
        .join(TRIPLE)
        .join("release")
}

/// The node image with the VMM, the e2e programs, the guest kernel and the guest initramfs.
fn node_image(dir: &TestDir, bin: &Path) -> NetbootImage {
    let kernel = mallee_image_build::pinned_kernel().expect("pinned kernel (run `just images`)");
    let guest = NetbootSpec {
        role: "node".into(),
        boot_modules: GUEST_MODULES.iter().map(|s| s.to_string()).collect(),
        coldplug_modules: Vec::new(),
        binaries: vec![("init".into(), bin.join("examples/e2e_guest"))],
        files: Vec::new(),
        host_files: Vec::new(),
        dynamic_programs: Vec::new(),
        cmdline: String::new(),
    };
    let (guest_fs, _) = netboot::assemble(&guest, &kernel).expect("guest initramfs");
    let guest_img = dir.file("guest.img");
    guest_fs
        .write_gz(&guest_img)
        .expect("write guest initramfs");

    let mut spec = NetbootSpec::node(&bin.join("mallee-init"), &bin.join("mallee-vmm"));
    spec.binaries
        .push(("bin/vmm-e2e-node".into(), bin.join("examples/e2e_node")));
    spec.files.push((
        "vmm-e2e/vmlinuz".into(),
        std::fs::read(kernel.vmlinuz()).expect("read vmlinuz"),
    ));
    spec.files.push((
        "vmm-e2e/guest.img".into(),
        std::fs::read(&guest_img).expect("read guest initramfs"),
    ));
    let out = dir.file("node");
    netboot::build(&spec, &kernel, &out).expect("node image");
    NetbootImage {
        vmlinuz: out.join("vmlinuz"),
        initramfs: out.join("initramfs"),
        cmdline: std::fs::read_to_string(out.join("cmdline"))
            .unwrap()
            .trim()
            .to_string(),
    }
}

#[test]
fn vmm_boots_debian_kernel_with_disks_and_net_in_a_nested_node() {
    Images::node().expect("node image");
    let dir = TestDir::new("vmm_boot");
    let bin = build_static();
    let image = node_image(&dir, &bin);
    let mut vm = VmConfig::new("node")
        .netboot(&image)
        .nested_kvm(true)
        .memory_mib(1536)
        .cpus(2)
        .nic(Nic::user())
        .cmdline("mallee.run=/bin/vmm-e2e-node")
        .launch(&dir)
        .expect("start QEMU");

    let done = vm
        .wait_for(
            r"mallee-init: run /bin/vmm-e2e-node exit=(\d+)",
            Duration::from_secs(900),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let console = vm.console().text();
    let tail = vm.console().tail(60);
    for line in [
        "vmm-e2e-guest: up",
        "vmm-e2e-guest: modules ok",
        "vmm-e2e-guest: disk1 ok",
        "vmm-e2e-guest: disk2 ok",
        "vmm-e2e-guest: frame ok",
        "vmm-e2e-guest: rng ok virtio_rng",
        "vmm-e2e-node: vmm exit=2",
        "vmm-e2e-node: frame seen on tap=true",
        "vmm-e2e-node: disk2 pattern ok=true",
        "vmm-e2e-node: PASS",
    ] {
        assert!(
            console.contains(line),
            "missing `{line}`; console tail:\n{tail}"
        );
    }
    assert_eq!(&done[1], "0", "node program failed; console tail:\n{tail}");
    if let Some(l) = console
        .lines()
        .find(|l| l.contains("vmm-e2e-node: vmm exit="))
    {
        println!("{l}");
    }
}
