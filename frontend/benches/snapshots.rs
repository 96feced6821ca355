//! `just bench ebs` (its snapshot half): an EBS snapshot into Walrus, ours vs the way
//! Eucalyptus took one, in one run on the same volume. Ours is the storage keeper's path
//! ([`keeper::snapshot_idle`]): the volume's data copied at one instant, cut into 512 KiB
//! chunks stored once by SHA-256 (zeros not at all), and for a later snapshot only the chunks
//! the storage controller's dirty record names. Eucalyptus' storage controller copied the
//! whole LVM snapshot of the volume (`dd`) and uploaded that file to Walrus as one object,
//! every time. Both start with the volume out of the page cache and write into the same
//! Walrus store (the frontend's blob directory and SQLite). Prints
//! `bench: ebs snapshot-<n> ours=<MB/s> eucalyptus=<MB/s> ratio=<x>` (the volume's size over
//! the time taken; best of the rounds) and the bytes each stored for the second snapshot.
//!
//! Env: `SNAPSHOT_BENCH_GIB` (volume size, default 1), `SNAPSHOT_BENCH_DATA_MIB` (data written
//! before the first snapshot, default 256), `SNAPSHOT_BENCH_ROUNDS` (default 3).

use mallee_aoe::pattern::pattern;
use mallee_frontend::cloud::model::{Volume, VOLUME};
use mallee_frontend::cloud::volumes::backing_path;
use mallee_frontend::storage::keeper::{self, StorageSite};
use mallee_frontend::storage::{dirty, snapshots};
use mallee_frontend::store::{ObjectRow, Store};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number"))
    })
}

/// Drops `path` from the page cache, as a volume not read lately is.
fn uncache(path: &Path) {
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    let f = std::fs::File::open(path).expect("the backing file");
    f.sync_all().expect("sync the backing file");
    use std::os::fd::AsRawFd;
    posix_fadvise(f.as_raw_fd(), 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
        .expect("posix_fadvise");
}

/// Eucalyptus' snapshot: `dd` of the whole volume into a file, uploaded to Walrus as one
/// object. Returns the bytes stored.
fn eucalyptus_snapshot(store: &Store, volume: &Path, copy: &Path, key: &str) -> u64 {
    std::fs::copy(volume, copy).expect("dd the volume");
    let mut from = std::fs::File::open(copy).expect("the copy");
    let mut w = store.blobs().writer().expect("a blob");
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match from.read(&mut buf).expect("read the copy") {
            0 => break,
            n => w.write(&buf[..n]).expect("write the blob"),
        }
    }
    let blob = w.finish().expect("finish the blob");
    let etag = format!("\"{}\"", blob.md5_hex);
    let row = ObjectRow::new(key, &blob, etag, None, Vec::new());
    store
        .put_object("eucalyptus", &row)
        .expect("put the object");
    std::fs::remove_file(copy).expect("remove the copy");
    blob.size
}

/// One round on a fresh store: the first snapshot and, after `changed` chunks are written,
/// the second, each side's time; and the bytes each side's second snapshot stored.
struct Round {
    ours: [Duration; 2],
    eucalyptus: [Duration; 2],
    stored: (u64, u64),
    read: u64,
}

fn round(dir: &Path, gib: u64, data_mib: u64, changed: &[u64], seed: u64) -> Round {
    let store = Store::open(&dir.join("db")).expect("the store");
    store
        .create_bucket("eucalyptus", "admin")
        .expect("the peer's bucket");
    let site = StorageSite {
        dir: dir.join("storage"),
        volumes: dir.join("volumes"),
        interface: String::new(),
    };
    for d in [&site.dir, &site.volumes] {
        std::fs::create_dir_all(d).expect("the storage directories");
    }
    let id = "vol-0000be0c";
    let v = Volume {
        id: id.into(),
        owner: "admin".into(),
        size_gib: gib,
        zone: "bench".into(),
        snapshot_id: None,
        state: "available".into(),
        created_ms: 0,
        attachment: None,
        dirty_base: None,
    };
    store
        .cloud(|tx| tx.put(VOLUME, &v.id, &v.owner, None, &v))
        .expect("the volume record");
    let path = backing_path(&site.volumes, id);
    let file = std::fs::File::create(&path).expect("the backing file");
    file.set_len(gib << 30).expect("size the backing file");
    for mib in 0..data_mib {
        file.write_all_at(&pattern(1 << 20, (seed + mib) << 1), mib << 20)
            .expect("write the volume's data");
    }
    let copy = dir.join("eucalyptus.copy");
    let mut ours = [Duration::ZERO; 2];
    let mut eucalyptus = [Duration::ZERO; 2];
    let mut stored = (0, 0);
    let mut read = 0;
    for n in 0..2 {
        if n == 1 {
            // A guest writes a few scattered chunks; the controller records them as it stops.
            let chunk = snapshots::CHUNK as u64;
            for (i, c) in changed.iter().enumerate() {
                let at = c * chunk;
                file.write_all_at(
                    &pattern(snapshots::CHUNK, (seed + 7000 + i as u64) << 1),
                    at,
                )
                .expect("write a chunk");
            }
            let mut record = dirty::DirtyRecord::new(chunk);
            record.add(changed);
            dirty::write(&site.dir, id, &record).expect("the dirty record");
        }
        uncache(&path);
        let started = Instant::now();
        let (_, taken) = keeper::snapshot_idle(&store, &site, id, &format!("snap-0000000{n}"))
            .unwrap_or_else(|e| panic!("our snapshot {n}: {e}"));
        ours[n] = started.elapsed();
        uncache(&path);
        let started = Instant::now();
        let peer = eucalyptus_snapshot(&store, &path, &copy, &format!("snap-{n}"));
        eucalyptus[n] = started.elapsed();
        if n == 1 {
            stored = (taken.stored_bytes, peer);
            read = taken.read_bytes;
        }
    }
    Round {
        ours,
        eucalyptus,
        stored,
        read,
    }
}

fn main() {
    // `cargo test --all-targets` runs harness-less benches without arguments; only `cargo bench`
    // (which passes --bench) should spend the time.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let gib = env_u64("SNAPSHOT_BENCH_GIB", 1);
    let data_mib = env_u64("SNAPSHOT_BENCH_DATA_MIB", 256);
    let rounds = env_u64("SNAPSHOT_BENCH_ROUNDS", 3).max(1);
    // Eight chunks spread over the data and past it (4 MiB changed).
    let last = (gib << 30) / snapshots::CHUNK as u64 - 1;
    let changed: Vec<u64> = (0..8).map(|i| i * last / 7).collect();
    let mut best: Option<Round> = None;
    for r in 0..rounds {
        let dir = tempfile::Builder::new()
            .prefix("mallee-snapshot-bench")
            .tempdir_in(std::env::var_os("TMPDIR").unwrap_or_else(|| "/var/tmp".into()))
            .expect("a directory for the round");
        eprintln!(
            "snapshot bench: round {}/{rounds}: {gib} GiB volume, {data_mib} MiB data",
            r + 1
        );
        let now = round(dir.path(), gib, data_mib, &changed, r * 1_000_003);
        eprintln!(
            "snapshot bench: ours {:.2} s + {:.2} s, eucalyptus {:.2} s + {:.2} s",
            now.ours[0].as_secs_f64(),
            now.ours[1].as_secs_f64(),
            now.eucalyptus[0].as_secs_f64(),
            now.eucalyptus[1].as_secs_f64()
        );
        best = Some(match best {
            None => now,
            Some(b) => Round {
                ours: [0, 1].map(|n| b.ours[n].min(now.ours[n])),
                eucalyptus: [0, 1].map(|n| b.eucalyptus[n].min(now.eucalyptus[n])),
                ..b
            },
        });
    }
    let b = best.expect("one round");
    let mbps = |d: Duration| (gib << 30) as f64 / 1e6 / d.as_secs_f64();
    for (n, name) in ["snapshot-first", "snapshot-second"].iter().enumerate() {
        let (o, e) = (mbps(b.ours[n]), mbps(b.eucalyptus[n]));
        println!(
            "bench: ebs {name} ours={o:.0} eucalyptus={e:.0} ratio={:.2} unit=MB/s-of-volume",
            o / e
        );
    }
    println!(
        "bench: ebs snapshot-second-stored ours={} eucalyptus={} unit=bytes (ours read {} bytes of the volume)",
        b.stored.0, b.stored.1, b.read
    );
}
