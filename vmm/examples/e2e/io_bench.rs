//! The guest half of `just bench ebs` and the line it reports in. With `ebs.secs=N` on its
//! kernel command line, the test guest serves its one volume slot (`/dev/vda`, empty at boot)
//! instead of running its checks: each time the node attaches a volume, the volume id (the
//! disk's serial) names the run, `SIDE.CASE`, and the guest runs CASE on it for N seconds,
//! prints one [`Outcome`] line, which the node-side runner (`ebs_node`) parses back with
//! [`Outcome::parse`], and waits for the node to detach it. The guest does not know what a
//! side means; it only echoes it.
//!
//! A case is `seq|rand`-`read|write`-`1M|4k`-`qdN`: N threads, each with one request in flight
//! (pread/pwrite), sequential threads sharing one cursor, random ones each with its own
//! generator. The disk is opened with O_DIRECT, so the guest's page cache serves nothing;
//! writes are also O_DSYNC, so the guest flushes the disk after each and a write counted is
//! durable wherever the VMM's disk keeps it. Only completed, successful requests count; the
//! first failed one fails the run. It owns no timing policy beyond the seconds it is given.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The disk measured: the volume slot's.
pub const DEVICE: &str = "vda";
/// O_DIRECT buffer alignment.
const ALIGN: usize = 4096;
/// The kernel command line key.
const SECS_KEY: &str = "ebs.secs=";
/// How long the guest waits for the node to attach or detach a volume.
const SLOT_WAIT: Duration = Duration::from_secs(600);

/// One measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub name: String,
    pub random: bool,
    pub write: bool,
    pub block: usize,
    pub depth: usize,
}

impl Case {
    /// Parses a case name such as `rand-write-4k-qd16`.
    pub fn parse(name: &str) -> Result<Case, String> {
        let bad = |why: &str| format!("case {name:?}: {why}");
        let parts: Vec<&str> = name.split('-').collect();
        let [pattern, op, size, depth] = parts[..] else {
            return Err(bad("not seq|rand-read|write-1M|4k-qdN"));
        };
        let random = match pattern {
            "seq" => false,
            "rand" => true,
            _ => return Err(bad("the pattern is seq or rand")),
        };
        let write = match op {
            "read" => false,
            "write" => true,
            _ => return Err(bad("the operation is read or write")),
        };
        let block = match size {
            "1M" => 1 << 20,
            "4k" => 4 << 10,
            _ => return Err(bad("the block is 1M or 4k")),
        };
        let depth = (depth.strip_prefix("qd"))
            .and_then(|d| d.parse().ok())
            .filter(|d| (1..=64).contains(d))
            .ok_or_else(|| bad("the depth is qd1 to qd64"))?;
        Ok(Case {
            name: name.to_string(),
            random,
            write,
            block,
            depth,
        })
    }
}

/// The volume id that names a run: `SIDE.CASE` (at most 20 bytes, the longest serial).
pub fn volume_id(side: &str, case: &str) -> String {
    format!("{side}.{case}")
}

/// What one run came to, as the guest prints it and the node reads it; `run` is the volume id.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done { run: String, mb_per_s: f64 },
    Failed { run: String, reason: String },
}

impl Outcome {
    const PREFIX: &'static str = "ebs-guest: ";

    pub fn line(&self) -> String {
        match self {
            Outcome::Done { run, mb_per_s } => {
                format!("{}{run} MB/s={mb_per_s:.2}", Self::PREFIX)
            }
            Outcome::Failed { run, reason } => format!("{}{run} FAIL {reason}", Self::PREFIX),
        }
    }

    /// The outcome in a console line (which may carry other output before it), if it is one.
    pub fn parse(line: &str) -> Option<Outcome> {
        let rest = &line[line.find(Self::PREFIX)? + Self::PREFIX.len()..];
        let (run, what) = rest.trim_end().split_once(' ')?;
        let run = run.to_string();
        if let Some(reason) = what.strip_prefix("FAIL ") {
            return Some(Outcome::Failed {
                run,
                reason: reason.to_string(),
            });
        }
        let mb_per_s = what.strip_prefix("MB/s=")?.parse().ok()?;
        Some(Outcome::Done { run, mb_per_s })
    }
}

/// The seconds per run the kernel command line asks for, if it asks.
pub fn requested(cmdline: &str) -> Option<Result<Duration, String>> {
    let secs = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(SECS_KEY))?;
    Some(
        secs.parse()
            .ok()
            .filter(|s: &f64| *s > 0.0 && *s <= 600.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("{SECS_KEY}{secs}: not 0 < seconds <= 600")),
    )
}

/// Runs `case` on `device` for `duration`: MB/s of completed requests (10^6 bytes over the
/// time until the last thread finished its last request).
pub fn run(device: &str, case: &Case, duration: Duration) -> Result<f64, String> {
    let mut flags = libc::O_DIRECT;
    if case.write {
        flags |= libc::O_DSYNC;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(case.write)
        .custom_flags(flags)
        .open(device)
        .map_err(|e| format!("open {device}: {e}"))?;
    let size = file
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("size of {device}: {e}"))?;
    let blocks = size / case.block as u64;
    if blocks == 0 {
        return Err(format!(
            "{device} ({size} bytes) holds no {} block",
            case.block
        ));
    }
    let cursor = AtomicU64::new(0);
    let start = Instant::now();
    let end = start + duration;
    let bytes = std::thread::scope(|s| {
        let workers: Vec<_> = (0..case.depth)
            .map(|t| {
                let (file, cursor) = (&file, &cursor);
                s.spawn(move || worker(file, case, blocks, cursor, end, t))
            })
            .collect();
        let mut total = 0;
        for w in workers {
            total += w
                .join()
                .map_err(|_| "an I/O thread panicked".to_string())??;
        }
        Ok::<u64, String>(total)
    })?;
    Ok(bytes as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// One thread's requests until `end`: the bytes they moved.
fn worker(
    file: &File,
    case: &Case,
    blocks: u64,
    cursor: &AtomicU64,
    end: Instant,
    thread: usize,
) -> Result<u64, String> {
    let mut raw = vec![0u8; case.block + ALIGN];
    let at = raw.as_ptr().align_offset(ALIGN);
    let buf = &mut raw[at..at + case.block];
    buf.fill(0x5a ^ thread as u8);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (thread as u64 + 1);
    let mut done = 0;
    while Instant::now() < end {
        let block = if case.random {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % blocks
        } else {
            cursor.fetch_add(1, Ordering::Relaxed) % blocks
        };
        let offset = block * case.block as u64;
        let result = if case.write {
            file.write_all_at(buf, offset)
        } else {
            file.read_exact_at(buf, offset)
        };
        result.map_err(|e| {
            let op = if case.write { "write" } else { "read" };
            format!("{op} of {} bytes at {offset}: {e}", case.block)
        })?;
        done += case.block as u64;
    }
    Ok(done)
}

/// The slot disk's size in sectors and its serial.
fn slot(dev: &str) -> (u64, String) {
    let read = |what: &str| {
        std::fs::read_to_string(format!("/sys/block/{dev}/{what}"))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    (read("size").parse().unwrap_or(0), read("serial"))
}

/// Waits up to [`SLOT_WAIT`] for the slot's size to satisfy `want`.
fn wait_slot(want: impl Fn(u64) -> bool) -> bool {
    let deadline = Instant::now() + SLOT_WAIT;
    while !want(slot(DEVICE).0) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// One attached volume's run.
fn run_volume(volume: &str, duration: Duration) -> Outcome {
    let failed = |reason: String| Outcome::Failed {
        run: volume.to_string(),
        reason,
    };
    let Some((_, name)) = volume.split_once('.') else {
        return failed("the volume id is not SIDE.CASE".into());
    };
    let case = match Case::parse(name) {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    match run(&format!("/dev/{DEVICE}"), &case, duration) {
        Ok(mb_per_s) => Outcome::Done {
            run: volume.to_string(),
            mb_per_s,
        },
        Err(e) => failed(e),
    }
}

/// When the command line asks for the benchmark: serves the volume slot, one run per attached
/// volume, until the node stops the VM or does not attach or detach within [`SLOT_WAIT`]; then
/// returns true (the caller powers off). False when it does not ask.
pub fn run_if_asked(wait_for: impl Fn(&str) -> bool) -> bool {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let Some(asked) = requested(&cmdline) else {
        return false;
    };
    let say = |o: Outcome| crate::common::say(&o.line());
    let duration = match asked {
        Ok(d) => d,
        Err(reason) => {
            say(Outcome::Failed {
                run: "-".into(),
                reason,
            });
            return true;
        }
    };
    if !wait_for(&format!("/dev/{DEVICE}")) {
        say(Outcome::Failed {
            run: "-".into(),
            reason: format!("no /dev/{DEVICE}"),
        });
        return true;
    }
    crate::common::say("ebs-guest: ready");
    loop {
        // An empty slot is one sector.
        if !wait_slot(|s| s > 1) {
            say(Outcome::Failed {
                run: "-".into(),
                reason: format!("nothing attached within {SLOT_WAIT:?}"),
            });
            return true;
        }
        let volume = slot(DEVICE).1;
        say(run_volume(&volume, duration));
        if !wait_slot(|s| s <= 1) {
            say(Outcome::Failed {
                run: volume,
                reason: format!("not detached within {SLOT_WAIT:?}"),
            });
            return true;
        }
    }
}
