//! `just bench vmm`: in one nested node and one run, the same Debian kernel and test initramfs
//! booted by `mallee-vmm` and by `qemu-system-x86_64 -enable-kvm` (`-M microvm`, `-M q35`):
//! time from process start to the guest's init marker, and the monitor's memory overhead
//! (resident memory minus the guest RAM's resident pages). The node-side runner is
//! `vmm/examples/bench_node.rs`; this program builds the node image, boots it and prints
//! `bench: vmm <metric> ours=<v> qemu-<machine>=<v> ratio=<x>` (best of the runs).

#[path = "../tests/support/vmm_images.rs"]
mod vmm_images;

use std::collections::BTreeMap;
use std::time::Duration;

use mallee_qemu_tests::{Images, Nic, TestDir, VmConfig};
use vmm_images::NodeExtras;

fn main() {
    // `cargo test --all-targets` runs harness-less benches without arguments; only `cargo bench`
    // (which passes --bench) should spend half an hour booting nested VMs.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    Images::node().expect("node image (run `just images`)");
    let dir = TestDir::new("vmm_bench");
    let bin = vmm_images::build_static(&["e2e_guest", "bench_node"]);
    let image = vmm_images::node_image(
        &dir,
        &bin,
        &NodeExtras {
            runner: "bench_node",
            programs: &[vmm_images::QEMU],
            modules: &[],
        },
    );
    let mut vm = VmConfig::new("bench")
        .netboot(&image)
        .nested_kvm(true)
        .memory_mib(2048)
        .cpus(2)
        .nic(Nic::user())
        .cmdline("mallee.run=/bin/bench_node")
        .launch(&dir)
        .expect("start QEMU");
    vm.wait_for("bench-node: done", Duration::from_secs(1800))
        .unwrap_or_else(|e| panic!("{e}"));
    let line = regex::Regex::new(r"bench-node: (\S+) init_ms=(\d+) overhead_kib=(\d+)").unwrap();
    let mut best: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let console = vm.console().text();
    for c in line.captures_iter(&console) {
        let (ms, kib): (u64, u64) = (c[2].parse().unwrap(), c[3].parse().unwrap());
        let e = best.entry(c[1].to_string()).or_insert((u64::MAX, u64::MAX));
        *e = (e.0.min(ms), e.1.min(kib));
    }
    // A run that failed, on either side, fails the benchmark: never a ratio without it.
    let failed: Vec<&str> = (console.lines())
        .filter(|l| l.contains("bench-node:") && l.contains("FAIL"))
        .collect();
    assert!(failed.is_empty(), "runs failed:\n{}", failed.join("\n"));
    let ours = *best
        .get("ours")
        .expect("mallee-vmm never reached the init marker");
    for machine in ["qemu-microvm", "qemu-q35"] {
        let peer = best
            .get(machine)
            .unwrap_or_else(|| panic!("{machine} never reached the init marker: no figure"));
        for (metric, o, p) in [
            ("init_ms", ours.0, peer.0),
            ("overhead_kib", ours.1, peer.1),
        ] {
            let ratio = o as f64 / p.max(1) as f64;
            println!("bench: vmm {metric} ours={o} {machine}={p} ratio={ratio:.2}");
        }
    }
}
