//! `mallee-aoe`: export a file over AoE, or check a segment by hand with the user-space
//! initiator (discover, read, write, verify, bench).

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mallee_aoe::initiator::{discover, Initiator, InitiatorConfig};
use mallee_aoe::net::PacketSocket;
use mallee_aoe::target::{Backend, Target, TargetConfig};

const USAGE: &str = "usage:
  mallee-aoe export IFACE SHELF SLOT FILE [WORKERS]
  mallee-aoe discover IFACE
  mallee-aoe read IFACE SHELF SLOT OFFSET LEN [OUTFILE]
  mallee-aoe write IFACE SHELF SLOT OFFSET INFILE
  mallee-aoe verify IFACE SHELF SLOT FILE
  mallee-aoe bench IFACE SHELF SLOT seq|rand read|write BLOCK_BYTES IN_FLIGHT SECONDS";

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    let s = args
        .get(i)
        .with_context(|| format!("missing {what}\n{USAGE}"))?;
    s.parse().map_err(|e| anyhow::anyhow!("{what} {s:?}: {e}"))
}

fn open(args: &[String]) -> Result<Initiator> {
    open_with(args, Duration::from_secs(10))
}

/// Opens the target named by IFACE SHELF SLOT; calls fail after `timeout` without progress.
fn open_with(args: &[String], timeout: Duration) -> Result<Initiator> {
    let iface: String = arg(args, 1, "IFACE")?;
    let shelf: u16 = arg(args, 2, "SHELF")?;
    let slot: u8 = arg(args, 3, "SLOT")?;
    let sock = PacketSocket::open(&iface)?;
    let cfg = InitiatorConfig {
        total_timeout: timeout,
        ..Default::default()
    };
    Initiator::open(sock, shelf, slot, cfg)
        .with_context(|| format!("open e{shelf}.{slot} on {iface}"))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("export") => export(&args),
        Some("discover") => {
            let sock = PacketSocket::open(&arg::<String>(&args, 1, "IFACE")?)?;
            for f in discover(&sock, 0xffff, 0xff, Duration::from_secs(1), None)? {
                println!(
                    "e{}.{} mac={} buffers={} sectors/frame={} firmware={:#x} config={:?}",
                    f.shelf,
                    f.slot,
                    f.mac,
                    f.buffer_count,
                    f.sector_count,
                    f.firmware_version,
                    String::from_utf8_lossy(&f.config)
                );
            }
            Ok(())
        }
        Some("read") => {
            let ini = open(&args)?;
            let offset: u64 = arg(&args, 4, "OFFSET")?;
            let len: usize = arg(&args, 5, "LEN")?;
            let mut buf = vec![0u8; len];
            ini.read_at(&mut buf, offset)?;
            match args.get(6) {
                Some(path) => {
                    std::fs::write(path, &buf).with_context(|| format!("write {path}"))?
                }
                None => std::io::stdout().write_all(&buf)?,
            }
            Ok(())
        }
        Some("write") => {
            let ini = open(&args)?;
            let offset: u64 = arg(&args, 4, "OFFSET")?;
            let path: String = arg(&args, 5, "INFILE")?;
            let mut buf = Vec::new();
            std::fs::File::open(&path)
                .with_context(|| format!("open {path}"))?
                .read_to_end(&mut buf)?;
            ini.write_at(&buf, offset)?;
            if let Err(e) = ini.flush() {
                eprintln!("mallee-aoe: warning: FLUSH CACHE EXT failed (vblade does not implement it): {e}");
            }
            println!("wrote {} bytes at {offset}", buf.len());
            Ok(())
        }
        Some("verify") => verify(&open(&args)?, Path::new(&arg::<String>(&args, 4, "FILE")?)),
        Some("bench") => bench(&args),
        _ => bail!("{USAGE}"),
    }
}

fn export(args: &[String]) -> Result<()> {
    let iface: String = arg(args, 1, "IFACE")?;
    let shelf: u16 = arg(args, 2, "SHELF")?;
    let slot: u8 = arg(args, 3, "SLOT")?;
    let file: String = arg(args, 4, "FILE")?;
    let mut cfg = TargetConfig {
        shelf,
        slot,
        ..Default::default()
    };
    if args.len() > 5 {
        cfg.workers = arg(args, 5, "WORKERS")?;
    }
    let backend = Backend::open(Path::new(&file))?;
    let sectors = backend.sectors();
    let target = Target::start(PacketSocket::open(&iface)?, backend, cfg)?;
    println!("mallee-aoe: exporting e{shelf}.{slot} on {iface} ({sectors} sectors from {file})");
    loop {
        std::thread::sleep(Duration::from_secs(60));
        eprintln!("mallee-aoe: {:?}", target.stats());
    }
}

fn verify(ini: &Initiator, path: &Path) -> Result<()> {
    let mut file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let len = file.metadata()?.len().min(ini.size());
    let mut want = vec![0u8; 1 << 20];
    let mut got = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = ((len - at) as usize).min(want.len()) & !511;
        if n == 0 {
            break;
        }
        file.read_exact(&mut want[..n])?;
        ini.read_at(&mut got[..n], at)?;
        if let Some(i) = (0..n).find(|&i| want[i] != got[i]) {
            bail!("mismatch at byte {}", at + i as u64);
        }
        at += n as u64;
    }
    println!("verified {at} bytes");
    Ok(())
}

fn bench(args: &[String]) -> Result<()> {
    // Slow peers (vblade -s at 16 MiB in flight) need long to drain the last requests.
    let ini = Arc::new(open_with(args, Duration::from_secs(300))?);
    let random = arg::<String>(args, 4, "seq|rand")? == "rand";
    let write = arg::<String>(args, 5, "read|write")? == "write";
    let block: usize = arg(args, 6, "BLOCK_BYTES")?;
    let threads: usize = arg(args, 7, "IN_FLIGHT")?;
    let secs: f64 = arg(args, 8, "SECONDS")?;
    let blocks = ini.size() / block as u64;
    let next = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (ini, next) = (Arc::clone(&ini), Arc::clone(&next));
            std::thread::spawn(move || -> Result<u64> {
                let mut buf = vec![t as u8; block];
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 + 1);
                let mut done = 0;
                while Instant::now() < end {
                    let i = if random {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        rng % blocks
                    } else {
                        next.fetch_add(1, Ordering::Relaxed) % blocks
                    };
                    let offset = i * block as u64;
                    if write {
                        ini.write_at(&buf, offset)?;
                    } else {
                        ini.read_at(&mut buf, offset)?;
                    }
                    done += block as u64;
                }
                Ok(done)
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w
            .join()
            .map_err(|_| anyhow::anyhow!("bench thread panicked"))??;
    }
    let mbps = total as f64 / start.elapsed().as_secs_f64() / 1e6;
    println!("MB/s={mbps:.2} retransmits={}", ini.stats().retransmits);
    Ok(())
}
