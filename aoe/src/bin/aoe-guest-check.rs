//! Guest half of the kernel-initiator interop test (`tests/kernel_initiator.rs`), run by
//! `mallee-init` as `mallee.run` inside a QEMU guest with Debian's `aoe.ko` loaded: waits for
//! the Linux driver to find target e7.3, checks the first MiB against the pattern the host
//! wrote, writes another pattern into the second MiB through the kernel block device, and
//! prints `aoe-guest-check: ok` or the reason it failed.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use mallee_aoe::pattern::pattern;

const DEVICE: &str = "/dev/etherd/e7.3";
const MIB: usize = 1 << 20;

fn check() -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !Path::new(DEVICE).exists() {
        if Instant::now() > deadline {
            return Err(format!("{DEVICE} did not appear within 60 s"));
        }
        // Ask the driver to broadcast a Query Config on every interface again.
        if let Ok(mut d) = OpenOptions::new().write(true).open("/dev/etherd/discover") {
            let _ = d.write_all(b"\n");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("aoe-guest-check: found {DEVICE}");
    let mut dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(DEVICE)
        .map_err(|e| format!("open {DEVICE}: {e}"))?;
    let mut first = vec![0u8; MIB];
    dev.read_exact(&mut first)
        .map_err(|e| format!("read: {e}"))?;
    if first != pattern(MIB, 7) {
        let at = first.iter().zip(pattern(MIB, 7)).position(|(a, b)| *a != b);
        return Err(format!(
            "first MiB differs from the host's pattern at byte {at:?}"
        ));
    }
    println!("aoe-guest-check: read 1 MiB matches");
    dev.seek(SeekFrom::Start(MIB as u64))
        .map_err(|e| format!("seek: {e}"))?;
    dev.write_all(&pattern(MIB, 8))
        .map_err(|e| format!("write: {e}"))?;
    dev.sync_all().map_err(|e| format!("fsync: {e}"))?;
    println!("aoe-guest-check: wrote 1 MiB");
    Ok(())
}

fn main() {
    match check() {
        Ok(()) => println!("aoe-guest-check: ok"),
        Err(e) => {
            println!("aoe-guest-check: FAILED: {e}");
            std::process::exit(1);
        }
    }
}
