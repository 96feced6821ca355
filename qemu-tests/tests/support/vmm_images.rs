//! Building the node images the `mallee-vmm` end-to-end test and benchmark boot: static builds
//! of the VMM and its helper programs (`vmm/examples/`), a guest initramfs (image-build's
//! [`NetbootSpec::guest`] with the `e2e_guest` example as `/init`), and a node image carrying the guest kernel and initramfs (and, for the benchmark,
//! QEMU with the shared libraries `ldd` lists and its firmware). Shared by
//! `tests/vmm_boot.rs` and `benches/vmm.rs`.

use std::path::Path;
use std::process::Command;

use mallee_image_build::netboot::{self, NetbootSpec};
use mallee_qemu_tests::{NetbootImage, TestDir};

const QEMU: &str = "/usr/bin/qemu-system-x86_64";
/// Firmware QEMU loads for `-M microvm` and `-M q35` with `-kernel` (from its search path).
const QEMU_FIRMWARE: &[&str] = &[
    "/usr/share/qemu/qboot.rom",
    "/usr/share/qemu/bios-microvm.bin",
    "/usr/share/qemu/linuxboot_dma.bin",
    "/usr/share/qemu/kvmvapic.bin",
    "/usr/share/seabios/bios-256k.bin",
];

pub use mallee_qemu_tests::build_static;

/// What goes on the node besides the standard node image.
pub struct NodeExtras<'a> {
    /// The program `mallee.run` starts (an example name), installed as `/bin/<name>`.
    pub runner: &'a str,
    /// Also carry QEMU, its libraries and firmware.
    pub qemu: bool,
}

fn add_qemu(fs: &mut mallee_image_build::initramfs::Initramfs) {
    let ldd = Command::new("ldd")
        .arg(QEMU)
        .output()
        .expect("run ldd (run `just setup`)");
    let text = String::from_utf8_lossy(&ldd.stdout);
    let mut files: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')))
        .map(str::to_string)
        .collect();
    files.push(QEMU.to_string());
    files.extend(QEMU_FIRMWARE.iter().map(|s| s.to_string()));
    for f in files {
        let bytes =
            std::fs::read(&f).unwrap_or_else(|e| panic!("read {f}: {e} (run `just setup`)"));
        fs.add_file(f.trim_start_matches('/'), 0o755, bytes)
            .unwrap_or_else(|e| panic!("add {f}: {e}"));
    }
}

/// The node image: standard node contents, the runner, the guest kernel and initramfs (whose
/// `/init` is the `e2e_guest` example) under `/vmm-e2e/`.
pub fn node_image(dir: &TestDir, bin: &Path, extras: &NodeExtras<'_>) -> NetbootImage {
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
    let out = dir.file("node");
    std::fs::create_dir_all(&out).expect("node dir");
    let (mut fs, _) = netboot::assemble(&spec, &kernel).expect("node initramfs");
    if extras.qemu {
        add_qemu(&mut fs);
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
