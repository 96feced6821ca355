//! `just bench launch`: how long a user waits from RunInstances to an SSH login in the Debian
//! cloud image, and how much of that the cloud adds beyond the guest's own boot. One cloud as
//! `just demo` brings it up (the flashed appliance, its public side on the outside host, one
//! PXE-booted node), the image uploaded and registered once, then launched three times in a
//! row, each instance terminated before the next: first (the node has never fetched the
//! image) and twice cached (DescribeNodes shows no new download). Each launch is timed from
//! just before the `run-instances` call to the first SSH login from the outside host, and
//! that same login reads the guest's `/proc/uptime`: the peer, measured in the same run.
//! Prints `bench: launch debian-ssh ...` lines (the cached one the best of the cached runs)
//! and each launch's RunInstances → running time. A launch that does not end in a login
//! fails the benchmark; it never becomes a ratio. Each launch is also broken into its phases,
//! from the node agent's console lines as they arrive (`launching`, `prepared in` with its
//! images, disks and network steps, `running`) and the guest's own uptime at the login:
//! `bench: launch debian-ssh phases(...)` lines.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mallee_qemu_tests::console::Console;
use regex::Regex;

use mallee_qemu_tests::cloud::{self, Frontend, NODE_READY};
use mallee_qemu_tests::outside::Outside;
use mallee_qemu_tests::{Images, Nic, Segment, TestDir, Vm};

/// How many launches after the first, with the image in the node's cache.
const CACHED_RUNS: usize = 2;
/// The bound on each of: RunInstances → running, running → SSH login.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(900);

/// One launch, from just before the `run-instances` call.
struct Launch {
    to_login: Duration,
    /// The guest's `/proc/uptime` at that login.
    guest_up: Duration,
    phases: Phases,
}

/// When the node agent's lines about a launch appeared on its console, from just before the
/// `run-instances` call, and the steps its `prepared in` line names (ms).
#[derive(Default, Clone)]
struct Phases {
    told: Option<Duration>,
    prepared: Option<Duration>,
    vmm_started: Option<Duration>,
    images_ms: u64,
    disks_ms: u64,
    network_ms: u64,
}

/// Watches a console, from its present end, for the first launch's agent lines, stamping each
/// as it arrives (polled every 20 ms) until stopped.
struct PhaseWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Phases>,
}

impl PhaseWatch {
    fn start(console: &Console, asked: Instant) -> PhaseWatch {
        let console = Console::new(console.path());
        let from = console.text().len();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let launching = Regex::new(r"agent: (i-[0-9a-f]+) launching").unwrap();
            let mut p = Phases::default();
            while !stopped.load(Ordering::SeqCst) {
                let text = console.text();
                let new = text.get(from..).unwrap_or_default();
                if let Some(c) = launching.captures(new) {
                    let id = &c[1];
                    p.told.get_or_insert_with(|| asked.elapsed());
                    let prepared = Regex::new(&format!(
                        r"agent: {id} prepared in \d+ ms: images (\d+) ms, disks (\d+) ms, network and config (\d+) ms"
                    ))
                    .unwrap();
                    if let Some(c) = prepared.captures(new) {
                        if p.prepared.is_none() {
                            p.prepared = Some(asked.elapsed());
                            p.images_ms = c[1].parse().unwrap_or(0);
                            p.disks_ms = c[2].parse().unwrap_or(0);
                            p.network_ms = c[3].parse().unwrap_or(0);
                        }
                    }
                    if new.contains(&format!("agent: {id} running, mallee-vmm pid")) {
                        p.vmm_started.get_or_insert_with(|| asked.elapsed());
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            p
        });
        PhaseWatch { stop, thread }
    }

    fn finish(self) -> Phases {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the phase watcher")
    }
}

fn main() {
    // `cargo test --all-targets` runs harness-less benches without arguments; only `cargo bench`
    // (which passes --bench) should spend a quarter of an hour booting a cloud.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let image = Images::debian_cloud().expect("the Debian cloud image (run `just images`)");
    Images::appliance().expect("flashable image (run `just images`)");
    let started = Instant::now();
    let dir = TestDir::new("launch_bench");
    let segment = Segment::new();
    let disk = dir.file("frontend-disk.img");
    cloud::flash_appliance(&disk, 3072).expect("flash the appliance");
    let outside = Outside::new(&dir).unwrap_or_else(|e| panic!("{e}"));
    let fe = cloud::start_frontend_with(
        &dir,
        "frontend",
        Nic::segment(&segment),
        &disk,
        Some(outside.nic()),
        Duration::from_secs(600),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut node = cloud::node_config("node1", &segment, "52:54:00:77:00:01")
        .memory_mib(3072)
        .launch(&dir)
        .expect("start the node");
    node.wait_for(NODE_READY, Duration::from_secs(600))
        .unwrap_or_else(|e| panic!("the node did not boot: {e}"));
    eprintln!(
        "bench-launch: frontend and node up after {:.0} s; consoles in {}",
        started.elapsed().as_secs_f64(),
        dir.path().display()
    );

    let pem = dir.file("bench.pem");
    let emi = fe
        .debian_with_ssh(&image, "bench", &pem)
        .unwrap_or_else(|e| panic!("{e:#}"));
    wait_for_capacity(&fe);

    let first = launch(&fe, &outside, &node, &emi, &pem, "first");
    let fetched = fe.describe_nodes().unwrap_or_else(|e| panic!("{e:#}"));
    let cached: Vec<Launch> = (1..=CACHED_RUNS)
        .map(|n| launch(&fe, &outside, &node, &emi, &pem, &format!("cached {n}")))
        .collect();
    let after = fe.describe_nodes().unwrap_or_else(|e| panic!("{e:#}"));
    let downloads = |nodes: &[cloud::NodeReport]| nodes.iter().map(|n| n.downloads).sum::<u64>();
    assert!(
        downloads(&fetched) > 0 && downloads(&after) == downloads(&fetched),
        "the cached launches were not served from the node's cache: after the first {fetched:?}, after the cached ones {after:?}"
    );

    print_line("first_ms", &first);
    let best = (cached.iter())
        .min_by_key(|l| l.to_login)
        .expect("at least one cached launch");
    print_line(&format!("cached(best of {CACHED_RUNS}) cached_ms"), best);
    print_phases("first", &first);
    print_phases(&format!("cached(best of {CACHED_RUNS})"), best);
    eprintln!(
        "bench-launch: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

/// Polls until the node has registered and the cloud can place an instance.
fn wait_for_capacity(fe: &Frontend) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while fe.capacity().unwrap_or_else(|e| panic!("{e}")) == 0 {
        assert!(
            Instant::now() < deadline,
            "the node never gave the cloud capacity"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs one c1.medium instance of `emi` with key pair `bench`, waits for `running` and for an
/// SSH login that reads `/proc/uptime`, then terminates it and waits for `terminated`.
fn launch(
    fe: &Frontend,
    outside: &Outside,
    node: &Vm,
    emi: &str,
    pem: &Path,
    what: &str,
) -> Launch {
    let failed = |e: &dyn std::fmt::Display| -> ! {
        panic!(
            "bench: launch {what} failed: {e}\nnode console (last lines):\n{}",
            node.console().tail(30)
        )
    };
    let asked = Instant::now();
    let watch = PhaseWatch::start(node.console(), asked);
    let id = fe
        .run_instances_with(
            emi,
            1,
            &["--instance-type", "c1.medium", "--key-name", "bench"],
        )
        .unwrap_or_else(|e| failed(&format!("{e:#}")))
        .remove(0);
    fe.wait_state(&id, "running", LAUNCH_TIMEOUT)
        .unwrap_or_else(|e| failed(&format!("{e:#}")));
    let to_running = asked.elapsed();
    let public = fe
        .public_ip(&id)
        .unwrap_or_else(|e| failed(&format!("{e:#}")));
    let out = outside
        .ssh_until(
            pem,
            &format!("debian@{public}"),
            "cat /proc/uptime",
            "",
            LAUNCH_TIMEOUT,
        )
        .unwrap_or_else(|e| failed(&e));
    let to_login = asked.elapsed();
    let guest_up = uptime(&out).unwrap_or_else(|| failed(&format!("/proc/uptime said {out:?}")));
    let phases = watch.finish();
    println!(
        "launch: {what} {id}: RunInstances -> running {:.1} s, -> SSH login {:.1} s; guest up {:.1} s at the login",
        to_running.as_secs_f64(),
        to_login.as_secs_f64(),
        guest_up.as_secs_f64()
    );
    fe.aws(&["ec2", "terminate-instances", "--instance-ids", &id])
        .unwrap_or_else(|e| failed(&e));
    fe.wait_state(&id, "terminated", Duration::from_secs(300))
        .unwrap_or_else(|e| failed(&format!("{e:#}")));
    Launch {
        to_login,
        guest_up,
        phases,
    }
}

/// The first field of `/proc/uptime` (seconds since the guest's kernel started).
fn uptime(proc_uptime: &str) -> Option<Duration> {
    let secs: f64 = proc_uptime.split_whitespace().next()?.parse().ok()?;
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

/// `bench: launch debian-ssh <key>=<login ms> guest_up_ms=.. added_ms=.. ratio=..`.
fn print_line(key: &str, l: &Launch) {
    let total = l.to_login.as_millis() as i64;
    let up = l.guest_up.as_millis() as i64;
    println!(
        "bench: launch debian-ssh {key}={total} guest_up_ms={up} added_ms={} ratio={:.2}",
        total - up,
        total as f64 / up as f64
    );
}

/// `bench: launch debian-ssh phases(<which>) told_ms=.. prepared_ms=.. (images_ms=.. disks_ms=..
/// network_ms=..) vmm_started_ms=.. guest_started_ms=.. login_ms=..`, all from RunInstances;
/// the guest started when its uptime at the login says. A phase whose line never came is an
/// error, not a figure.
fn print_phases(which: &str, l: &Launch) {
    let p = &l.phases;
    let ms = |d: Option<Duration>, what: &str| {
        d.unwrap_or_else(|| panic!("bench: launch {which}: no `{what}` line on the node console"))
            .as_millis()
    };
    println!(
        "bench: launch debian-ssh phases({which}) told_ms={} prepared_ms={} images_ms={} disks_ms={} network_ms={} vmm_started_ms={} guest_started_ms={} login_ms={}",
        ms(p.told, "launching"),
        ms(p.prepared, "prepared in"),
        p.images_ms,
        p.disks_ms,
        p.network_ms,
        ms(p.vmm_started, "running, mallee-vmm pid"),
        l.to_login.saturating_sub(l.guest_up).as_millis(),
        l.to_login.as_millis(),
    );
}
