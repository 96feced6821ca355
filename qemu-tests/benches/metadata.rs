//! `just bench metadata`: in one nested node and one run, the Debian cloud image under
//! `mallee-vmm` times GETs of one metadata path from inside the guest, a new connection each as
//! cloud-init makes them, against the VMM's own metadata service and against nginx on the node
//! serving the same bytes on the guest's gateway (same guest, same tap and virtio-net), in
//! alternating rounds. The node-side runner is `vmm/examples/metadata_bench_node.rs`; this
//! program builds the node image, boots it and prints, from the median round of each,
//! `bench: metadata get req_s ours=X nginx=Y ratio=X/Y` and the same for p50 and p99 latency.

#[path = "../tests/support/vmm_images.rs"]
mod vmm_images;

use std::collections::BTreeMap;
use std::time::Duration;

use mallee_qemu_tests::{Images, TestDir};
use vmm_images::NodeExtras;

/// One round's figures: requests per second, p50 and p99 latency in µs.
type Round = (f64, f64, f64);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo test --all-targets` runs harness-less benches without arguments; only `cargo bench`
    // (which passes --bench) should spend minutes booting nested VMs.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    Images::node().expect("node image (run `just images`)");
    let dir = TestDir::new("metadata_bench");
    let bin = vmm_images::build_static(&["e2e_guest", "metadata_bench_node"]);
    let extras = NodeExtras {
        runner: "metadata_bench_node",
        programs: &[vmm_images::IP, vmm_images::NGINX],
        modules: &[],
    };
    let mut vm = vmm_images::debian_node(&dir, &bin, &extras, "bench", "");
    vm.wait_for("bench-node: done", Duration::from_secs(1800))
        .unwrap_or_else(|e| panic!("{e}"));
    let console = vm.console().text();
    if let Some(l) = console
        .lines()
        .find(|l| l.contains("bench-node: metadata FAIL"))
    {
        panic!("{l}\n{}", vm.console().tail(60));
    }
    let line = regex::Regex::new(
        r"bench-node: metadata (\S+) round=\d+ ok=(\d+) errors=(\d+) req_s=(\S+) p50_us=(\d+) p99_us=(\d+)",
    )
    .unwrap();
    let mut rounds: BTreeMap<String, Vec<Round>> = BTreeMap::new();
    for c in line.captures_iter(&console) {
        // Only successful replies count; a round with a failed request is no figure.
        assert_eq!(&c[3], "0", "failed requests: {}", &c[0]);
        assert!(c[2].parse::<u64>().unwrap() > 0, "no replies: {}", &c[0]);
        rounds.entry(c[1].to_string()).or_default().push((
            c[4].parse().unwrap(),
            c[5].parse().unwrap(),
            c[6].parse().unwrap(),
        ));
    }
    let figures = |who: &str| -> Round {
        let r = rounds
            .get(who)
            .unwrap_or_else(|| panic!("no rounds for {who}\n{}", vm.console().tail(60)));
        (
            median(r.iter().map(|r| r.0).collect()),
            median(r.iter().map(|r| r.1).collect()),
            median(r.iter().map(|r| r.2).collect()),
        )
    };
    let (ours, peer) = (figures("ours"), figures("nginx"));
    let n = rounds["ours"].len();
    println!(
        "bench: metadata get req_s ours={:.1} nginx={:.1} ratio={:.2} (median of {n} rounds, new connection per request, from inside the guest)",
        ours.0,
        peer.0,
        ours.0 / peer.0
    );
    for (name, o, p) in [("p50_us", ours.1, peer.1), ("p99_us", ours.2, peer.2)] {
        println!(
            "bench: metadata get {name} ours={o:.0} nginx={p:.0} ratio={:.2} (lower is better)",
            o / p.max(1.0)
        );
    }
}
