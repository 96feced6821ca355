//! Benchmark runner inside a nested node (`mallee.run=`): boots the same kernel and initramfs
//! under `mallee-vmm` and, when the node image carries QEMU, under `qemu-system-x86_64
//! -enable-kvm` with `-M microvm` and `-M q35`, in rounds whose order rotates, and reports for
//! each run the time from process start to the guest's init marker, the monitor's memory
//! overhead (resident memory minus the guest RAM mapping's resident pages, from
//! /proc/PID/smaps, sampled at the marker), the guest kernel's own clock at the marker (the
//! rest is the VMM, firmware and decompressor before the kernel) and KVM's exit counters for
//! the run (debugfs, read at the marker while the VM is the only one alive). After the timed
//! rounds, one traced boot per monitor breaks its exits down by reason and its port I/O by
//! port (tracefs `kvm_exit`, `kvm_pio`).
//!
//! `mallee-vmm` boots the kernel the way a node agent does once it has the kernel in its cache:
//! unpacked (`/vmm-e2e/vmlinux`, made on the host from the same bzImage) when the image has it.
//! QEMU boots the bzImage, as it ordinarily does.
//!
//! Prints `bench-node: <monitor> init_ms=N overhead_kib=N kernel_ms=N exits=N io_exits=N ...`
//! lines for the host-side benchmark (`qemu-tests/benches/vmm.rs`) to read. Built statically
//! by that benchmark; not in any image.

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
/// The guest's kernel unpacked (its ELF `vmlinux`), where the image carries it: what a node
/// agent boots once it has unpacked the kernel into its cache.
const VMLINUX: &str = "/vmm-e2e/vmlinux";
const INITRD: &str = common::GUEST_INITRD;
const QEMU: &str = "/usr/bin/qemu-system-x86_64";
/// Rounds; each boots every monitor once, the order rotating so none always goes first.
const RUNS: usize = 3;
/// KVM's statistics, summed over the live VMs (one at a time here).
const KVM_STATS: &str = "/sys/kernel/debug/kvm";
/// The exit counters reported, by reason.
const EXITS: [&str; 7] = [
    "exits",
    "io_exits",
    "mmio_exits",
    "halt_exits",
    "irq_exits",
    "irq_window_exits",
    "insn_emulation",
];

/// The kernel's tracing file system, for KVM's `kvm_exit` and `kvm_pio` events.
const TRACING: &str = "/sys/kernel/tracing";

/// Mounts the pseudo file system `fstype` on `target` unless `present` (a file it holds) is
/// there already.
fn mount_unless(present: &str, fstype: &std::ffi::CStr, target: &std::ffi::CStr) {
    if std::path::Path::new(present).exists() {
        return;
    }
    // SAFETY: valid NUL-terminated strings; no data argument.
    unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
}

fn trace_set(file: &str, value: &str) -> std::io::Result<()> {
    std::fs::write(format!("{TRACING}/{file}"), value)
}

/// One more boot of `monitor` with KVM's `kvm_exit` and `kvm_pio` events traced (not timed:
/// tracing slows it): its exits by reason and its port I/O by direction and port, the most
/// frequent first, as `bench-node: trace <monitor> exit|pio name=count ...` lines.
fn trace(monitor: &str) -> Result<Vec<String>, String> {
    let set = |file: &str, value: &str| {
        trace_set(file, value).map_err(|e| format!("{TRACING}/{file}: {e}"))
    };
    set("tracing_on", "0")?;
    set("buffer_size_kb", "32768")?;
    set("trace", "")?;
    set("events/kvm/kvm_exit/enable", "1")?;
    set("events/kvm/kvm_pio/enable", "1")?;
    set("tracing_on", "1")?;
    let ran = run(monitor);
    set("tracing_on", "0")?;
    ran?;
    let text = std::fs::read_to_string(format!("{TRACING}/trace"))
        .map_err(|e| format!("{TRACING}/trace: {e}"))?;
    set("trace", "")?;
    let mut exits: std::collections::HashMap<String, u64> = Default::default();
    let mut pio: std::collections::HashMap<String, u64> = Default::default();
    let mut lost = String::new();
    for line in text.lines() {
        if let Some(rest) = line.split("entries-in-buffer/entries-written: ").nth(1) {
            let (kept, written) = rest.split_once('/').unwrap_or((rest, rest));
            let written = written.split_whitespace().next().unwrap_or(written);
            if kept != written {
                lost = format!(" (the trace kept {kept} of {written} events)");
            }
        } else if let Some(rest) = line.split("kvm_exit: ").nth(1) {
            let reason = rest
                .split("reason ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next());
            *exits.entry(reason.unwrap_or("?").to_string()).or_default() += 1;
        } else if let Some(rest) = line.split("kvm_pio: ").nth(1) {
            // "pio_write at 0x3f8 size 1 count 1 val 0x41"
            let mut w = rest.split_whitespace();
            let (dir, port) = (w.next().unwrap_or("?"), w.nth(1).unwrap_or("?"));
            let dir = dir.trim_start_matches("pio_");
            *pio.entry(format!("{dir}:{port}")).or_default() += 1;
        }
    }
    let top = |counts: std::collections::HashMap<String, u64>, n: usize| {
        let mut v: Vec<(String, u64)> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        (v.iter().take(n))
            .map(|(k, c)| format!("{k}={c}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    Ok(vec![
        format!("bench-node: trace {monitor} exit {}{lost}", top(exits, 12)),
        format!("bench-node: trace {monitor} pio {}", top(pio, 16)),
    ])
}

/// KVM's exit counters now, `name=value` each; empty when debugfs has none.
fn exit_counts() -> String {
    (EXITS.iter())
        .filter_map(|name| {
            let v = std::fs::read_to_string(format!("{KVM_STATS}/{name}")).ok()?;
            Some(format!("{name}={}", v.trim()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

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
        "ours" => {
            let unpacked = std::path::Path::new(VMLINUX).exists();
            let kernel = if unpacked { VMLINUX } else { KERNEL };
            common::guest_vmm_booting(kernel, CMDLINE, MEM_MIB, 2)
        }
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

/// One boot: ms to the marker, overhead KiB, the guest kernel's ms at the marker, and KVM's
/// exit counters.
fn run(monitor: &str) -> Result<(u128, u64, u64, String), String> {
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
            if let Some(rest) = line.split(MARKER).nth(1) {
                let kernel_ms = (rest.trim().strip_prefix("kernel_ms="))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                let _ = tx.send(kernel_ms);
            }
        }
    });
    let seen = rx.recv_timeout(Duration::from_secs(300));
    let elapsed = started.elapsed().as_millis();
    let mem = rss(child.id());
    let exits = exit_counts();
    let _ = child.kill();
    let _ = child.wait();
    let kernel_ms = seen.map_err(|_| {
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        format!("no init marker within 300 s; stderr: {tail:?}")
    })?;
    let (total, guest) = mem.ok_or(format!(
        "no {MEM_MIB} MiB guest RAM mapping in /proc/PID/smaps: the overhead cannot be measured"
    ))?;
    Ok((elapsed, total.saturating_sub(guest), kernel_ms, exits))
}

fn main() {
    mount_unless(KVM_STATS, c"debugfs", c"/sys/kernel/debug");
    let mut monitors = vec!["ours"];
    if std::path::Path::new(QEMU).exists() {
        monitors.extend(["qemu-microvm", "qemu-q35"]);
    }
    for round in 0..RUNS {
        let mut order = monitors.clone();
        order.rotate_left(round % monitors.len());
        for m in &order {
            match run(m) {
                Ok((ms, kib, kernel_ms, exits)) => say(&format!(
                    "bench-node: {m} init_ms={ms} overhead_kib={kib} kernel_ms={kernel_ms} {exits}"
                )),
                Err(e) => say(&format!("bench-node: {m} FAIL {e}")),
            }
        }
    }
    mount_unless(
        &format!("{TRACING}/events"),
        c"tracefs",
        c"/sys/kernel/tracing",
    );
    for m in &monitors {
        match trace(m) {
            Ok(lines) => lines.iter().for_each(|l| say(l)),
            Err(e) => say(&format!("bench-node: trace {m} unavailable: {e}")),
        }
    }
    say("bench-node: done");
}
