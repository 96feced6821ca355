//! Benchmark runner inside a nested node (`mallee.run=`) for `just bench ebs`: one backing file
//! served two ways to the same test guest, through its volume slot (`/dev/vda`).
//!
//! * **ours**: `mallee-aoe`'s target, configured as the storage controller configures it (the
//!   node end's MAC as its mask list), on the storage end of one veth pair, and `mallee-vmm`'s
//!   in-VMM AoE initiator on the node end, attached as the node agent attaches a volume
//!   (`AttachVolume` with an AoE source).
//! * **eucalyptus** (the original's way): `vblade -s` on the storage end of a second veth pair,
//!   the Linux `aoe` driver (held to that pair's node end) on the node, and `mallee-vmm`
//!   serving `/dev/etherd/eX.Y` as a plain block-device disk.
//!
//! Both storage ends are in one network namespace. One guest boots once (kernel command line
//! `ebs.secs=`, see `e2e/io_bench.rs`); for each round, case and side (ours and eucalyptus
//! alternately, the order swapped every round) the runner drops the node's page cache, attaches
//! the side's volume to the slot with `SIDE.CASE` as its id, waits for the guest's result and
//! detaches it (closing `/dev/etherd/eX.Y`, whose cache the kernel then drops too). Prints
//! `ebs-node: <case> <side> MB/s=<x> round=<n>` per run for the host-side benchmark
//! (`qemu-tests/benches/ebs.rs`), and stops at the first run that fails (`ebs-node: <case>
//! <side> FAIL <reason>`, exit status 1).
//!
//! Kernel command line of the node: `ebs.secs=N` (seconds per run, default 5), `ebs.rounds=N`
//! (default 3). Built statically by that benchmark; not part of any image.

#[path = "e2e/aoe_node.rs"]
mod aoe_node;
#[path = "e2e/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "e2e/io_bench.rs"]
#[allow(dead_code)]
mod io_bench;
#[path = "e2e/vmm_api.rs"]
mod vmm_api;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aoe_node::{ExportSpec, Veth};
use common::say;
use io_bench::Outcome;
use mallee_proto::vmm::{DiskSource, Request};

/// Every case, in the order they run.
const CASES: &[&str] = &[
    "seq-read-1M-qd1",
    "seq-read-1M-qd16",
    "seq-write-1M-qd1",
    "seq-write-1M-qd16",
    "rand-read-4k-qd1",
    "rand-read-4k-qd16",
    "rand-write-4k-qd1",
    "rand-write-4k-qd16",
];
/// The storage ends' namespace, and each pair's (node end, storage end).
const NS: &str = "ebs-store";
const OURS_IFS: (&str, &str) = ("ebs-ours0", "ebs-ours1");
const PEER_IFS: (&str, &str) = ("ebs-euca0", "ebs-euca1");
/// The volume's backing file (in the node's RAM, as both targets see it).
const BACKING: &str = "/tmp/ebs-volume.img";
const VOLUME_MIB: usize = 384;
/// Plain Ethernet frames on both pairs: two sectors per AoE frame for either initiator.
const MTU: u32 = 1500;
/// Our export and vblade's.
const OURS: (u16, u8) = (1, 1);
const PEER: (u16, u8) = (1, 2);
const VBLADE: &str = "/usr/sbin/vblade";
/// One vCPU: the guest's threads only wait on the disk. (With two, and a guest booted per run,
/// a nested guest stalled on its second CPU for minutes, RCU stall reports on its console.)
const GUEST_VCPUS: u32 = 1;
/// The VMM's control socket.
const API: &str = "/tmp/ebs-vmm.sock";
/// How long a run may take beyond its own seconds (attach, the last requests, detach).
const RUN_SLACK: Duration = Duration::from_secs(180);
/// How long the guest may take to boot to its slot.
const BOOT_WAIT: Duration = Duration::from_secs(300);

/// The two ways of serving the volume.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Ours,
    Eucalyptus,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Ours => "ours",
            Side::Eucalyptus => "eucalyptus",
        }
    }

    /// The side in a volume id (which must fit the 20-byte serial).
    fn code(self) -> &'static str {
        match self {
            Side::Ours => "o",
            Side::Eucalyptus => "e",
        }
    }
}

/// What the run needs kept alive, and where each side's volume comes from.
struct Setup {
    target: mallee_aoe::target::Target,
    vblade: Child,
    ours: DiskSource,
    peer: DiskSource,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.vblade.kill();
        let _ = self.vblade.wait();
    }
}

/// A `key=N` setting from the node's kernel command line.
fn setting(key: &str, default: u64) -> u64 {
    std::fs::read_to_string("/proc/cmdline")
        .unwrap_or_default()
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn write_backing() -> Result<(), String> {
    let mut f = File::create(BACKING).map_err(|e| format!("{BACKING}: {e}"))?;
    let chunk = mallee_aoe::pattern::pattern(1 << 20, 0xeb5);
    for _ in 0..VOLUME_MIB {
        f.write_all(&chunk)
            .map_err(|e| format!("write {BACKING}: {e}"))?;
    }
    Ok(())
}

/// Both storage ends up and the Linux driver attached to vblade's export.
fn set_up() -> Result<Setup, String> {
    // The driver is held to the eucalyptus pair's node end (made next) and never sees ours.
    aoe_node::load_modules(&[("aoe", &format!("aoe_iflist={}", PEER_IFS.0))])?;
    let ours = Veth::new(NS, OURS_IFS.0, OURS_IFS.1, MTU)?;
    let peer = Veth::new(NS, PEER_IFS.0, PEER_IFS.1, MTU)?;
    write_backing()?;
    let target = aoe_node::serve(
        &ours,
        &ExportSpec {
            backing: Path::new(BACKING),
            shelf: OURS.0,
            slot: OURS.1,
            allowed: vec![aoe_node::mac_of(&ours.outer)?],
        },
    )?;
    let log = File::create("/tmp/vblade.log").map_err(|e| format!("vblade log: {e}"))?;
    let (shelf, slot) = (PEER.0.to_string(), PEER.1.to_string());
    let vblade = aoe_node::spawn_in_ns(
        &peer.ns,
        Command::new(VBLADE)
            .args(["-s", &shelf, &slot, &peer.inner, BACKING])
            .stdout(Stdio::null())
            .stderr(log),
    )?;
    let device = aoe_node::etherd_device(PEER.0, PEER.1);
    let mut setup = Setup {
        target,
        vblade,
        ours: DiskSource::Aoe {
            iface: ours.outer.clone(),
            shelf: OURS.0,
            slot: OURS.1,
        },
        peer: DiskSource::File(PathBuf::from(&device)),
    };
    let sysfs = format!("/sys/block/etherd!e{}.{}/size", PEER.0, PEER.1);
    let want = (VOLUME_MIB as u64) << 11;
    let sectors = || {
        std::fs::read_to_string(&sysfs)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let found = aoe_node::discover_until(Duration::from_secs(60), || {
        Path::new(&device).exists() && sectors() == Some(want)
    })?;
    if !found {
        let exited = setup.vblade.try_wait().ok().flatten();
        let log = std::fs::read_to_string("/tmp/vblade.log").unwrap_or_default();
        return Err(format!(
            "the Linux aoe driver has no {device} of {want} sectors after 60 s (sectors {:?}; \
             vblade exited {exited:?}, said {:?})",
            sectors(),
            log.trim()
        ));
    }
    Ok(setup)
}

/// Drops the node's clean page cache.
fn drop_caches() -> Result<(), String> {
    // SAFETY: sync takes no arguments.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", b"3").map_err(|e| format!("drop_caches: {e}"))
}

/// The guest's VMM: one volume slot, its outcomes arriving on `outcomes`.
struct Guest {
    vmm: Child,
    outcomes: mpsc::Receiver<Outcome>,
}

impl Guest {
    fn boot(secs: u64) -> Result<Guest, String> {
        let cmdline = format!("{} ebs.secs={secs}", common::GUEST_CMDLINE);
        let stderr = File::create("/tmp/vmm.stderr").map_err(|e| format!("vmm stderr: {e}"))?;
        let mut vmm = common::guest_vmm(&cmdline, 256, GUEST_VCPUS)
            .args(["--volume-slots", "1", "--api-socket", API])
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("spawn mallee-vmm: {e}"))?;
        let out = vmm.stdout.take().ok_or("no stdout from mallee-vmm")?;
        let mut console =
            File::create("/tmp/guest.console").map_err(|e| format!("guest console: {e}"))?;
        let (tx, outcomes) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = writeln!(console, "{line}");
                if line.contains("ebs-guest: ready") {
                    let _ = ready_tx.send(());
                } else if let Some(o) = Outcome::parse(&line) {
                    let _ = tx.send(o);
                }
            }
        });
        let mut guest = Guest { vmm, outcomes };
        if ready.recv_timeout(BOOT_WAIT).is_err() {
            return Err(format!(
                "the guest never reached its volume slot in {BOOT_WAIT:?}: {}",
                guest.said()
            ));
        }
        if let Ok(o) = guest.outcomes.try_recv() {
            return Err(format!("the guest gave up: {o:?}"));
        }
        Ok(guest)
    }

    /// The last lines of the VMM's stderr and of the guest's console.
    fn said(&mut self) -> String {
        let tail = |path: &str| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let mut last: Vec<String> = text.lines().rev().take(6).map(str::to_string).collect();
            last.reverse();
            last
        };
        let state = self.vmm.try_wait().ok().flatten();
        format!(
            "mallee-vmm {state:?}, stderr {:?}, guest console {:?}",
            tail("/tmp/vmm.stderr"),
            tail("/tmp/guest.console")
        )
    }

    /// Attaches `source` as volume `id`, waits for the guest's result, detaches it.
    fn run(&mut self, id: &str, source: &DiskSource, secs: u64) -> Result<f64, String> {
        let reply = vmm_api::call(
            API,
            &Request::AttachVolume {
                slot: 0,
                volume_id: id.to_string(),
                source: source.clone(),
                read_only: false,
            },
        )?;
        if !reply.ok {
            return Err(format!("attach {source}: {:?}", reply.error));
        }
        let limit = Duration::from_secs(secs) + RUN_SLACK;
        let outcome = self.outcomes.recv_timeout(limit);
        let detach = vmm_api::call(API, &Request::DetachVolume { slot: 0 });
        let mb_per_s = match outcome {
            Ok(Outcome::Done { run, mb_per_s }) if run == id => mb_per_s,
            Ok(other) => return Err(format!("guest: {other:?}")),
            Err(_) => return Err(format!("no result within {limit:?}: {}", self.said())),
        };
        match detach {
            Ok(r) if r.ok => Ok(mb_per_s),
            Ok(r) => Err(format!("detach: {:?}", r.error)),
            Err(e) => Err(format!("detach: {e}")),
        }
    }

    /// Stops the VM through the API (exit status 3).
    fn stop(mut self) -> Result<(), String> {
        vmm_api::call(API, &Request::Shutdown)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.vmm.try_wait() {
                Ok(Some(s)) if s.code() == Some(3) => return Ok(()),
                Ok(Some(s)) => return Err(format!("mallee-vmm ended {s}: {}", self.said())),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = self.vmm.kill();
                    return Err("mallee-vmm did not stop within 60 s".into());
                }
            }
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.vmm.kill();
        let _ = self.vmm.wait();
    }
}

fn run() -> Result<(), String> {
    let (secs, rounds) = (setting("ebs.secs", 5), setting("ebs.rounds", 3));
    say(&format!(
        "ebs-node: {} cases x 2 sides x {rounds} rounds, {secs} s each, {VOLUME_MIB} MiB volume",
        CASES.len()
    ));
    let setup = set_up().map_err(|e| format!("setup FAIL {e}"))?;
    say(&format!(
        "ebs-node: ours={} eucalyptus={} (vblade -s)",
        setup.ours, setup.peer
    ));
    let mut guest = Guest::boot(secs).map_err(|e| format!("guest FAIL {e}"))?;
    say("ebs-node: guest ready");
    for round in 0..rounds {
        for case in CASES {
            let mut order = [Side::Ours, Side::Eucalyptus];
            if round % 2 == 1 {
                order.reverse();
            }
            for side in order {
                drop_caches()?;
                let source = match side {
                    Side::Ours => &setup.ours,
                    Side::Eucalyptus => &setup.peer,
                };
                let started = Instant::now();
                let id = io_bench::volume_id(side.code(), case);
                let mb_per_s = guest.run(&id, source, secs).map_err(|e| {
                    let stats = setup.target.stats();
                    format!("{case} {} FAIL {e}; our target {stats:?}", side.name())
                })?;
                say(&format!(
                    "ebs-node: {case} {} MB/s={mb_per_s:.2} round={round} wall_ms={}",
                    side.name(),
                    started.elapsed().as_millis()
                ));
            }
        }
    }
    guest.stop()
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            say("ebs-node: done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(&format!("ebs-node: {e}"));
            ExitCode::FAILURE
        }
    }
}
