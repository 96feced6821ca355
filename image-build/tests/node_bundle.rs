//! The node bundle built from the pinned Debian kernel: reproducible, dependency-ordered, with
//! ext4 and mke2fs for its disks, and refusing any other dynamic binary.

use mallee_image_build::elf::minimal_static_elf;
use mallee_image_build::netboot::{self, NetbootSpec};
use std::path::Path;

fn fake_binaries(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let init = dir.join("mallee-init");
    let vmm = dir.join("mallee-vmm");
    std::fs::write(&init, minimal_static_elf(b"init")).unwrap();
    std::fs::write(&vmm, minimal_static_elf(b"vmm")).unwrap();
    (init, vmm)
}

#[test]
fn building_twice_gives_identical_bytes() {
    let kernel = mallee_image_build::pinned_kernel().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (init, vmm) = fake_binaries(tmp.path());
    let spec = NetbootSpec::node(&init, &vmm);
    netboot::build(&spec, &kernel, &tmp.path().join("a")).unwrap();
    netboot::build(&spec, &kernel, &tmp.path().join("b")).unwrap();
    for f in ["initramfs", "vmlinuz", "cmdline"] {
        let a = std::fs::read(tmp.path().join("a").join(f)).unwrap();
        let b = std::fs::read(tmp.path().join("b").join(f)).unwrap();
        assert!(a == b, "{f} differs between two builds");
    }
}

#[test]
fn load_order_puts_dependencies_first_and_nics_are_coldplug_only() {
    let kernel = mallee_image_build::pinned_kernel().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (init, vmm) = fake_binaries(tmp.path());
    let (fs, modules) = netboot::assemble(&NetbootSpec::node(&init, &vmm), &kernel).unwrap();
    assert!(fs.contains("init") && fs.contains("bin/mallee-vmm") && fs.contains("dev/console"));
    assert!(modules > 20, "only {modules} modules");

    let cpio = fs.to_cpio();
    let text = String::from_utf8_lossy(&cpio);
    let file = |name: &str| -> String {
        // Each list file is the data right after its name in the archive.
        let at = text.find(name).unwrap_or_else(|| panic!("{name} missing"));
        let start = text[at..].find('\0').unwrap() + at;
        let data = text[start..].trim_start_matches('\0');
        data[..data.find('\0').unwrap_or(data.len())].to_string()
    };
    let order: Vec<String> = file("lib/modules/mallee/load-order")
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    let pos = |m: &str| {
        order
            .iter()
            .position(|x| x == m)
            .unwrap_or_else(|| panic!("{m} not in load order {order:?}"))
    };
    assert!(pos("kvm") < pos("kvm_amd"));
    assert!(pos("irqbypass") < pos("kvm"));
    assert!(pos("virtio_pci") < pos("virtio_net"));
    // libcrc32c's softdep: the crc32c provider must load first or nf_tables/dm-thin fail.
    assert!(pos("crc32c_generic") < pos("libcrc32c"));
    assert!(pos("libcrc32c") < pos("nf_tables"));
    assert!(
        !order.iter().any(|m| m == "e1000"),
        "NICs are coldplugged, not always loaded"
    );
    assert!(
        !order.iter().any(|m| m == "af_packet"),
        "af_packet is built in"
    );

    let aliases = file("lib/modules/mallee/aliases");
    // QEMU's e1000 (8086:100e) must be matched by some e1000 alias.
    assert!(aliases
        .lines()
        .any(|l| l.starts_with("pci:v00008086d0000100E") && l.split(' ').nth(1) == Some("e1000")));
    assert!(aliases
        .lines()
        .any(|l| l.split(' ').nth(1) == Some("mlx5_core")));
}

#[test]
fn a_dynamic_binary_is_refused() {
    let kernel = mallee_image_build::pinned_kernel().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (init, _) = fake_binaries(tmp.path());
    let spec = NetbootSpec::node(&init, Path::new("/bin/true"));
    let err = netboot::build(&spec, &kernel, tmp.path()).unwrap_err();
    assert!(err.to_string().contains("ELF interpreter"), "{err}");
}

#[test]
fn the_node_image_carries_mke2fs_and_ext4() {
    let kernel = mallee_image_build::pinned_kernel().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (init, vmm) = fake_binaries(tmp.path());
    let spec = NetbootSpec::node(&init, &vmm).with_mke2fs(Path::new("/usr/sbin/mke2fs"));
    assert_eq!(spec.dynamic_programs.len(), 1);
    let (fs, _) = netboot::assemble(&spec, &kernel).unwrap();
    assert!(fs.contains("sbin/mke2fs") && fs.contains("lib64/ld-linux-x86-64.so.2"));
    let cpio = String::from_utf8_lossy(&fs.to_cpio()).into_owned();
    assert!(
        cpio.contains("ext4 kernel/fs/ext4/ext4.ko"),
        "ext4 not loaded at boot"
    );
}

#[test]
fn the_node_image_refuses_other_dynamic_programs() {
    let kernel = mallee_image_build::pinned_kernel().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (init, vmm) = fake_binaries(tmp.path());
    let mut spec = NetbootSpec::node(&init, &vmm);
    spec.dynamic_programs
        .push(("bin/true".into(), "/bin/true".into()));
    let err = netboot::assemble(&spec, &kernel).unwrap_err();
    assert!(
        matches!(err, netboot::NetbootError::DynamicRefused { .. }),
        "{err}"
    );
}

#[test]
fn the_frontend_carries_the_node_bundle_mke2fs_and_ext4() {
    let kernel = mallee_image_build::pinned_kernel().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (init, vmm) = fake_binaries(tmp.path());
    let node = tmp.path().join("node");
    let missing = NetbootSpec::frontend(
        &init,
        &vmm,
        Path::new("/usr/sbin/mke2fs"),
        &node,
        Path::new("/usr/lib/ipxe"),
    );
    assert!(matches!(
        missing,
        Err(netboot::NetbootError::NodeBundleMissing { .. })
    ));
    netboot::build(&NetbootSpec::node(&init, &vmm), &kernel, &node).unwrap();
    let spec = NetbootSpec::frontend(
        &init,
        &vmm,
        Path::new("/usr/sbin/mke2fs"),
        &node,
        Path::new("/usr/lib/ipxe"),
    )
    .unwrap();
    let (fs, _) = netboot::assemble(&spec, &kernel).unwrap();
    for path in [
        "init",
        "bin/mallee-frontend",
        "sbin/mke2fs",
        "usr/share/mallee/node/vmlinuz",
        "usr/share/mallee/node/initramfs",
        "usr/share/mallee/node/cmdline",
        "lib64/ld-linux-x86-64.so.2",
    ] {
        assert!(fs.contains(path), "{path} missing from the frontend image");
    }
    let cpio = String::from_utf8_lossy(&fs.to_cpio()).into_owned();
    assert!(
        cpio.contains("ext4 kernel/fs/ext4/ext4.ko"),
        "ext4 not loaded at boot"
    );
    assert!(
        cpio.contains("jbd2 kernel/fs/jbd2/jbd2.ko"),
        "ext4's dependency jbd2 missing"
    );
}
