//! Benchmark runner inside a nested node (`mallee.run=`): boots the same kernel and initramfs
//! under `mallee-vmm` and, when the node image carries QEMU, under `qemu-system-x86_64
//! -enable-kvm` with `-M microvm` and `-M q35`, in rounds whose order rotates, and reports for
//! each run the time from process start to the guest's init marker, the monitor's memory
//! overhead (resident memory minus the guest RAM mapping's resident pages, from
//! /proc/PID/smaps, sampled at the marker), the guest kernel's own clock at the marker (the
//! rest is the VMM, firmware and decompressor before the kernel) and KVM's exit counters for
//! the run (debugfs, read at the marker while the VM is the only one alive).
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

/// Mounts debugfs for KVM's counters unless it is there.
fn mount_debugfs() {
    if std::path::Path::new(KVM_STATS).exists() {
        return;
    }
    let (src, target, fstype) = (c"debugfs", c"/sys/kernel/debug", c"debugfs");
    // SAFETY: valid NUL-terminated strings; no data argument.
    unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
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
    mount_debugfs();
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
    say("bench-node: done");
}
