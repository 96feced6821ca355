//! End to end: the node netboot bundle boots under QEMU (TCG, nested-KVM CPU), `mallee-init`
//! gets a DHCP address from QEMU's user network, loads KVM, and reports ready.

use mallee_qemu_tests::{Images, Nic, TestDir, VmConfig};
use std::time::Duration;

const READY: &str = r"mallee-init: ready role=node ip=(\d+\.\d+\.\d+\.\d+)/(\d+) boot_ms=(\d+)";

#[test]
fn node_boots_to_ready_with_dhcp_address_and_kvm() {
    let image = Images::node().expect("node image");
    let dir = TestDir::new("node_boot");
    let mut vm = VmConfig::new("node")
        .netboot(&image)
        .nested_kvm(true)
        .memory_mib(1024)
        .nic(Nic::user())
        // A second NIC of a real-rack model: its driver is not loaded at boot, only coldplugged
        // by PCI modalias (8086:100e -> e1000).
        .nic(Nic::user().model("e1000"))
        .launch(&dir)
        .expect("start QEMU");

    let ready = vm
        .wait_for(READY, Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e}"));
    let wall = vm.started().elapsed();
    // QEMU's user network hands out 10.0.2.15/24 to the first client.
    assert_eq!(ready[1], "10.0.2.15", "DHCP address from slirp");
    assert_eq!(ready[2], "24");

    // /dev/kvm appeared after kvm_amd loaded; init says so before readiness.
    let console = vm.console().text();
    assert!(
        console.contains("mallee-init: kvm available"),
        "no `kvm available` line before readiness in {}",
        vm.console().path().display()
    );
    assert!(
        console.contains(": loaded e1000"),
        "the e1000 NIC's driver was not coldplugged: {}",
        vm.console().tail(30)
    );
    // Every boot module loads, except the KVM module of the other CPU vendor.
    let failures: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("finit_module failed") && !l.contains("module kvm_intel:"))
        .collect();
    assert!(failures.is_empty(), "modules failed to load: {failures:#?}");
    assert!(
        !console.contains("Kernel panic"),
        "kernel panicked: {}",
        vm.console().tail(20)
    );
    mallee_qemu_tests::report_figure(&format!(
        "figure: node boot, QEMU start to ready {:.1} s (guest boot_ms={})",
        wall.as_secs_f64(),
        ready[3]
    ));
}
