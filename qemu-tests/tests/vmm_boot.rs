//! End to end: a nested-KVM node (QEMU TCG with svm) runs `mallee-vmm`, which boots the pinned
//! Debian kernel with a test initramfs. The guest checks a read-only virtio-blk disk with a known
//! pattern, writes a pattern to a second disk, sends a marked frame over virtio-net; the node-side
//! program sees the frame on the tap, gets the VMM's exit status (0: the guest powered off through
//! ACPI) and reads the second disk back. Both programs (`vmm/examples/e2e_{guest,node}.rs`) print
//! one line per check; this test reads them from the node's console.

#[path = "support/vmm_images.rs"]
mod vmm_images;

use std::time::Duration;

use mallee_qemu_tests::{Images, Nic, TestDir, VmConfig};
use vmm_images::NodeExtras;

#[test]
fn vmm_boots_debian_kernel_with_disks_and_net_in_a_nested_node() {
    Images::node().expect("node image");
    let dir = TestDir::new("vmm_boot");
    let bin = vmm_images::build_static(&["e2e_guest", "e2e_node"]);
    let image = vmm_images::node_image(
        &dir,
        &bin,
        &NodeExtras {
            runner: "e2e_node",
            qemu: false,
        },
    );
    let mut vm = VmConfig::new("node")
        .netboot(&image)
        .nested_kvm(true)
        .memory_mib(1536)
        .cpus(2)
        .nic(Nic::user())
        .cmdline("mallee.run=/bin/e2e_node")
        .launch(&dir)
        .expect("start QEMU");

    let done = vm
        .wait_for(
            r"mallee-init: run /bin/e2e_node exit=(\d+)",
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
        "vmm-e2e-node: vmm exit=0",
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
