//! `just bench ebs`: in one nested node and one run, one backing file served to the same test
//! guest two ways, measured inside the guest (O_DIRECT, writes O_DSYNC): ours (`mallee-aoe`'s
//! target with the storage controller's MAC list → `mallee-vmm`'s in-VMM AoE initiator) and
//! Eucalyptus' (`vblade -s` → the Linux `aoe` driver → `mallee-vmm` serving `/dev/etherd/eX.Y`
//! as a plain disk), each on its own veth pair inside the node, attached in turn (alternating
//! per case) to the volume slot of one guest that boots once. The node-side runner is
//! `vmm/examples/ebs_node.rs`, the guest's half `vmm/examples/e2e/io_bench.rs`; this program
//! builds the node image, boots it, echoes the runner's progress and prints
//! `bench: ebs <case> ours=<MB/s> eucalyptus=<MB/s> ratio=<x>` (best of the rounds). A run that
//! fails on either side fails the benchmark with its reason.
//!
//! Env: `EBS_BENCH_SECS` (seconds per case and side, default 5), `EBS_BENCH_ROUNDS` (default 3).

#[path = "../tests/support/vmm_images.rs"]
mod vmm_images;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mallee_qemu_tests::{env_u64, Images, Nic, TestDir, VmConfig};
use vmm_images::NodeExtras;

/// The whole run may take at most this long (node boot, the image, every guest).
const DEADLINE: Duration = Duration::from_secs(60 * 60);

fn main() {
    // `cargo test --all-targets` runs harness-less benches without arguments; only `cargo bench`
    // (which passes --bench) should spend minutes in nested VMs.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let (secs, rounds) = (env_u64("EBS_BENCH_SECS", 5), env_u64("EBS_BENCH_ROUNDS", 3));
    let started = Instant::now();
    Images::node().expect("node image (run `just images`)");
    let dir = TestDir::new("ebs_bench");
    let bin = vmm_images::build_static(&["e2e_guest", "ebs_node"]);
    let image = vmm_images::node_image(
        &dir,
        &bin,
        &NodeExtras {
            runner: "ebs_node",
            programs: &[vmm_images::IP, vmm_images::VBLADE],
            modules: vmm_images::AOE_MODULES,
        },
    );
    let mut vm = VmConfig::new("ebs")
        .netboot(&image)
        .nested_kvm(true)
        .memory_mib(2560)
        .cpus(2)
        .nic(Nic::user())
        .cmdline(&format!(
            "mallee.run=/bin/ebs_node ebs.secs={secs} ebs.rounds={rounds}"
        ))
        .launch(&dir)
        .expect("start QEMU");
    eprintln!(
        "bench-ebs: node booting ({:.0} s so far); console {}",
        started.elapsed().as_secs_f64(),
        vm.console().path().display()
    );

    let exit = regex::Regex::new(r"mallee-init: run /bin/ebs_node exit=(\d+)").unwrap();
    let result = regex::Regex::new(r"ebs-node: (\S+) (ours|eucalyptus) MB/s=([\d.]+)").unwrap();
    let mut shown = 0;
    let code = loop {
        let console = vm.console().text();
        let progress: Vec<&str> = console
            .lines()
            .filter(|l| l.contains("ebs-node:"))
            .collect();
        for line in &progress[shown..] {
            eprintln!(
                "bench-ebs: [{:>4.0} s] {}",
                started.elapsed().as_secs_f64(),
                line.trim()
            );
        }
        shown = progress.len();
        if let Some(c) = exit.captures(&console) {
            break c[1].to_string();
        }
        assert!(
            vm.is_running(),
            "the node stopped before its runner finished:\n{}",
            vm.console().tail(40)
        );
        assert!(
            started.elapsed() < DEADLINE,
            "no end after {DEADLINE:?}:\n{}",
            vm.console().tail(40)
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    let console = vm.console().text();
    if let Some(failed) = console
        .lines()
        .find(|l| l.contains("ebs-node:") && l.contains(" FAIL "))
    {
        panic!("bench: ebs failed: {}", failed.trim());
    }
    assert_eq!(
        code,
        "0",
        "the node runner failed:\n{}",
        vm.console().tail(40)
    );

    // Best of the rounds for each case and side, cases in the order they ran.
    let mut order: Vec<String> = Vec::new();
    let mut best: BTreeMap<(String, String), f64> = BTreeMap::new();
    for c in result.captures_iter(&console) {
        if !order.contains(&c[1].to_string()) {
            order.push(c[1].to_string());
        }
        let v: f64 = c[3].parse().unwrap();
        let e = best
            .entry((c[1].to_string(), c[2].to_string()))
            .or_insert(0.0);
        *e = e.max(v);
    }
    assert!(!order.is_empty(), "no results:\n{}", vm.console().tail(40));
    for case in &order {
        let side = |s: &str| {
            *best
                .get(&(case.clone(), s.to_string()))
                .unwrap_or_else(|| panic!("bench: ebs {case}: no {s} result"))
        };
        let (ours, peer) = (side("ours"), side("eucalyptus"));
        assert!(peer > 0.0, "bench: ebs {case}: eucalyptus moved nothing");
        println!(
            "bench: ebs {case} ours={ours:.2} eucalyptus={peer:.2} ratio={:.2}",
            ours / peer
        );
    }
    eprintln!(
        "bench-ebs: {} cases in {:.0} s",
        order.len(),
        started.elapsed().as_secs_f64()
    );
}
