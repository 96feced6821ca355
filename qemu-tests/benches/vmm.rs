//! `just bench vmm`: in one nested node and one run, the same Debian kernel and test initramfs
//! booted by `mallee-vmm` and by `qemu-system-x86_64 -enable-kvm` (`-M microvm`, `-M q35`):
//! time from process start to the guest's init marker, and the monitor's memory overhead
//! (resident memory minus the guest RAM's resident pages). The node-side runner is
//! `vmm/examples/bench_node.rs`; this program unpacks the kernel as a node agent does (its
//! `vmlinux` goes into the node image beside the bzImage: `mallee-vmm` boots it, QEMU the
//! bzImage), builds the node image, boots it and prints, over three rounds in rotating order:
//!
//! * `bench: vmm <metric> ours=<v> qemu-<machine>=<v> ratio=<x>` — the medians of the runs;
//! * `bench: vmm phases <monitor> before_kernel_ms=<v> kernel_ms=<v>` — the medians of the time
//!   before the guest kernel's clock starts (VMM, firmware, decompressor) and of the kernel's own
//!   time to the init marker;
//! * `bench: vmm exits <monitor> exits=<v> io_exits=<v> ...` — KVM's exit counters, medians;
//! * `bench: vmm trace <monitor> exit|pio <what>=<count> ...` — one more, traced, boot's exits
//!   by reason and port I/O by port, the most frequent first.

#[path = "../tests/support/vmm_images.rs"]
mod vmm_images;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
    let kernel = mallee_image_build::pinned_kernel().expect("pinned kernel (run `just images`)");
    let vmlinux = dir.file("vmlinux");
    let started = Instant::now();
    mallee_init::agent::kernels::unpacked(&kernel.vmlinuz(), &vmlinux)
        .unwrap_or_else(|e| panic!("unpacking {}: {e}", kernel.vmlinuz().display()));
    println!(
        "bench: vmm unpack_ms={} (on the host, once per kernel image; a node does it on the \
         kernel's first launch)",
        started.elapsed().as_millis()
    );
    let image = vmm_images::node_image_with_files(
        &dir,
        &bin,
        &NodeExtras {
            runner: "bench_node",
            programs: &[vmm_images::QEMU],
            modules: &[],
        },
        &[("vmm-e2e/vmlinux".into(), vmlinux)],
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
    vm.wait_for("bench-node: done", Duration::from_secs(2400))
        .unwrap_or_else(|e| panic!("{e}"));
    let console = vm.console().text();
    // A run that failed, on either side, fails the benchmark: never a ratio without it.
    let failed: Vec<&str> = (console.lines())
        .filter(|l| l.contains("bench-node:") && l.contains("FAIL"))
        .collect();
    assert!(failed.is_empty(), "runs failed:\n{}", failed.join("\n"));
    let runs = Runs::parse(&console);
    let ours = runs.of("ours");
    let mut fastest = u64::MAX;
    for machine in ["qemu-microvm", "qemu-q35"] {
        let peer = runs.of(machine);
        fastest = fastest.min(peer.median("init_ms"));
        for metric in ["init_ms", "overhead_kib"] {
            let (o, p) = (ours.median(metric), peer.median(metric));
            let ratio = o as f64 / p.max(1) as f64;
            println!("bench: vmm {metric} ours={o} {machine}={p} ratio={ratio:.2}");
        }
    }
    let ratio = ours.median("init_ms") as f64 / fastest.max(1) as f64;
    println!("bench: vmm init_ms ours vs the fastest QEMU machine ratio={ratio:.2} (target 0.50)");
    for (monitor, r) in &runs.0 {
        let before = r.median_of(|v| v["init_ms"].saturating_sub(v["kernel_ms"]));
        println!(
            "bench: vmm phases {monitor} before_kernel_ms={before} kernel_ms={}",
            r.median("kernel_ms")
        );
        let exits: Vec<String> = (r.0[0].keys())
            .filter(|k| k.contains("exits") || *k == "insn_emulation")
            .map(|k| format!("{k}={}", r.median(k)))
            .collect();
        println!("bench: vmm exits {monitor} {}", exits.join(" "));
    }
    // The traced boots' breakdowns, as the node printed them.
    for line in console.lines() {
        if let Some(rest) = line.split("bench-node: trace ").nth(1) {
            println!("bench: vmm trace {rest}");
        }
    }
}

/// One monitor's runs, each its `name=value` figures.
struct Monitor(Vec<BTreeMap<String, u64>>);

impl Monitor {
    fn median_of(&self, f: impl Fn(&BTreeMap<String, u64>) -> u64) -> u64 {
        let mut v: Vec<u64> = self.0.iter().map(f).collect();
        v.sort_unstable();
        v[v.len() / 2]
    }

    fn median(&self, metric: &str) -> u64 {
        self.median_of(|r| r.get(metric).copied().unwrap_or(0))
    }
}

/// Every monitor's runs, from the node's `bench-node: <monitor> name=value ...` lines.
struct Runs(BTreeMap<String, Monitor>);

impl Runs {
    fn parse(console: &str) -> Runs {
        let mut runs: BTreeMap<String, Monitor> = BTreeMap::new();
        for line in console.lines() {
            let Some(rest) = line.split("bench-node: ").nth(1) else {
                continue;
            };
            let mut words = rest.split_whitespace();
            let Some(monitor) = words.next() else {
                continue;
            };
            let figures: BTreeMap<String, u64> = (words)
                .filter_map(|w| {
                    let (k, v) = w.split_once('=')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect();
            if figures.contains_key("init_ms") {
                let m = runs.entry(monitor.to_string()).or_insert(Monitor(vec![]));
                m.0.push(figures);
            }
        }
        Runs(runs)
    }

    fn of(&self, monitor: &str) -> &Monitor {
        self.0
            .get(monitor)
            .unwrap_or_else(|| panic!("{monitor} never reached the init marker: no figure"))
    }
}
