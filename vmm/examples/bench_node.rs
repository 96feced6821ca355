//! Benchmark runner inside a nested node (`mallee.run=`): boots the same kernel and initramfs
//! under `mallee-vmm` and, when the node image carries QEMU, under `qemu-system-x86_64
//! -enable-kvm` with `-M microvm` and `-M q35`, and reports for each run the time from process
//! start to the guest's init marker and the monitor's memory overhead (resident memory minus the
//! guest RAM mapping's resident pages, from /proc/PID/smaps, sampled at the marker).
//!
//! Prints `bench-node: <monitor> init_ms=N overhead_kib=N` lines for the host-side benchmark
//! (`qemu-tests/benches/vmm.rs`) to read. Built statically by that benchmark; not in any image.

#[path = "e2e/common.rs"]
#[allow(dead_code)]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::say;

const MARKER: &str = "vmm-e2e-guest: up";
const MEM_MIB: u64 = 256;
const CMDLINE: &str = common::GUEST_CMDLINE;
const KERNEL: &str = common::GUEST_KERNEL;
const INITRD: &str = common::GUEST_INITRD;
const QEMU: &str = "/usr/bin/qemu-system-x86_64";
const RUNS: usize = 2;

/// (total resident KiB, resident KiB of the guest RAM mapping); `None` when smaps cannot be
/// read or shows no mapping the size of the guest's RAM (the overhead is then unmeasurable).
fn rss(pid: u32) -> Option<(u64, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let (mut total, mut guest, mut size) = (0, None, 0);
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        match (f.next(), f.next().and_then(|v| v.parse::<u64>().ok())) {
            (Some("Size:"), Some(v)) => size = v,
            (Some("Rss:"), Some(v)) => {
                total += v;
                if size == MEM_MIB * 1024 {
                    guest = Some(guest.unwrap_or(0).max(v));
                }
            }
            _ => {}
        }
    }
    Some((total, guest?))
}

fn command(monitor: &str) -> Command {
    let mem = format!("{MEM_MIB}M");
    match monitor {
        "ours" => common::guest_vmm(CMDLINE, MEM_MIB, 2),
        machine => {
            // QEMU is dynamically linked; its libraries and loader are in the node image.
            let mut c = Command::new(QEMU);
            c.args(["-L", "/usr/share/qemu", "-L", "/usr/share/seabios"])
                .args([
                    "-M",
                    &machine["qemu-".len()..],
                    "-enable-kvm",
                    "-cpu",
                    "host",
                ])
                .args(["-m", &mem, "-smp", "2", "-nodefaults", "-no-user-config"])
                .args(["-display", "none", "-serial", "stdio", "-no-reboot"])
                .args(["-kernel", KERNEL, "-initrd", INITRD, "-append", CMDLINE]);
            c
        }
    }
}

/// One boot: returns (ms to marker, overhead KiB).
fn run(monitor: &str) -> Result<(u128, u64), String> {
    let started = Instant::now();
    let err_path = format!("/tmp/{monitor}.stderr");
    let err_file = std::fs::File::create(&err_path).map_err(|e| format!("{err_path}: {e}"))?;
    let mut child: Child = command(monitor)
        .stdout(Stdio::piped())
        .stderr(err_file)
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains(MARKER) {
                let _ = tx.send(());
            }
        }
    });
    let seen = rx.recv_timeout(Duration::from_secs(300));
    let elapsed = started.elapsed().as_millis();
    let mem = rss(child.id());
    let _ = child.kill();
    let _ = child.wait();
    seen.map_err(|_| {
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        format!("no init marker within 300 s; stderr: {tail:?}")
    })?;
    let (total, guest) = mem.ok_or(format!(
        "no {MEM_MIB} MiB guest RAM mapping in /proc/PID/smaps: the overhead cannot be measured"
    ))?;
    Ok((elapsed, total.saturating_sub(guest)))
}

fn main() {
    let mut monitors = vec!["ours"];
    if std::path::Path::new(QEMU).exists() {
        monitors.extend(["qemu-microvm", "qemu-q35"]);
    }
    for _ in 0..RUNS {
        for m in &monitors {
            match run(m) {
                Ok((ms, kib)) => say(&format!("bench-node: {m} init_ms={ms} overhead_kib={kib}")),
                Err(e) => say(&format!("bench-node: {m} FAIL {e}")),
            }
        }
    }
    say("bench-node: done");
}
