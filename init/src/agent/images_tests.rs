use super::*;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Serves objects from memory; can break each transfer after `break_after` bytes and counts
/// requests and the offsets asked for. With `hold_until` set, a fetch starts only once that
/// many callers have `started` asking the cache, so they all ask while it is in progress.
#[derive(Default)]
struct Store {
    objects: HashMap<String, Vec<u8>>,
    requests: AtomicU32,
    break_after: AtomicU64,
    offsets: Mutex<Vec<u64>>,
    hold_until: u32,
    started: AtomicU32,
}

impl Fetch for Store {
    fn fetch(&self, image: &ImageRef, offset: u64, out: &mut dyn Write) -> Result<u64, String> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.offsets.lock().unwrap().push(offset);
        while self.started.load(Ordering::SeqCst) < self.hold_until {
            std::thread::yield_now();
        }
        let data = self.objects.get(&image.key).ok_or("no such object")?;
        let rest = &data[offset as usize..];
        let limit = self.break_after.load(Ordering::SeqCst);
        if limit > 0 && (rest.len() as u64) > limit {
            out.write_all(&rest[..limit as usize])
                .map_err(|e| e.to_string())?;
            return Err("connection reset".into());
        }
        out.write_all(rest).map_err(|e| e.to_string())?;
        Ok(rest.len() as u64)
    }
}

fn image(key: &str, data: &[u8]) -> ImageRef {
    ImageRef {
        image_id: format!("emi-{key}"),
        bucket: "images".into(),
        key: key.into(),
        size: data.len() as u64,
        sha256: format!("{:x}", Sha256::digest(data)),
    }
}

fn store(objs: &[(&str, Vec<u8>)]) -> Store {
    Store {
        objects: objs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        ..Default::default()
    }
}

#[test]
fn a_hit_is_not_fetched_again_and_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&[("a", vec![1; 1000])]);
    let c = Cache::open(dir.path(), 10_000, Storage::Ram).unwrap();
    let a = image("a", &s.objects["a"]);
    let p = c.get(&a, &s).unwrap();
    assert_eq!(std::fs::read(&p.path).unwrap(), s.objects["a"]);
    drop(p);
    c.get(&a, &s).unwrap();
    assert_eq!(s.requests.load(Ordering::SeqCst), 1);
    assert_eq!(c.downloads(), 1);
    assert_eq!(
        c.list(),
        vec![CachedImage {
            sha256: a.sha256.clone(),
            size: 1000
        }]
    );
    // A cache reopened on the same directory (a node with a disk) keeps the entry.
    let c2 = Cache::open(dir.path(), 10_000, Storage::Ram).unwrap();
    c2.get(&a, &s).unwrap();
    assert_eq!(s.requests.load(Ordering::SeqCst), 1);
}

#[test]
fn least_recently_used_unpinned_entries_are_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&[
        ("a", vec![1; 400]),
        ("b", vec![2; 400]),
        ("c", vec![3; 400]),
    ]);
    let (a, b, cc) = (
        image("a", &s.objects["a"]),
        image("b", &s.objects["b"]),
        image("c", &s.objects["c"]),
    );
    let c = Cache::open(dir.path(), 1000, Storage::Ram).unwrap();
    drop(c.get(&a, &s).unwrap());
    drop(c.get(&b, &s).unwrap());
    drop(c.get(&a, &s).unwrap()); // a is now the most recently used
    drop(c.get(&cc, &s).unwrap());
    let held: Vec<String> = c.list().into_iter().map(|i| i.sha256).collect();
    assert!(
        held.contains(&a.sha256) && held.contains(&cc.sha256),
        "{held:?}"
    );
    assert!(!held.contains(&b.sha256));
    assert!(!dir.path().join(&b.sha256).exists());
    // With both held, a third image cannot make room.
    let _pa = c.get(&a, &s).unwrap();
    let _pc = c.get(&cc, &s).unwrap();
    assert!(matches!(c.get(&b, &s), Err(ImageError::NoRoom { .. })));
}

#[test]
fn a_verified_unchanged_entry_is_not_hashed_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&[("a", vec![7; 5000])]);
    let a = image("a", &s.objects["a"]);
    let c = Cache::open(dir.path(), 1 << 20, Storage::Ram).unwrap();
    drop(c.get(&a, &s).unwrap());
    for _ in 0..3 {
        drop(c.get(&a, &s).unwrap());
    }
    assert_eq!(c.rehashes(), 0);
    assert_eq!(s.requests.load(Ordering::SeqCst), 1);
    // After the node restarts, the entry found on disk is hashed on its first use only.
    let c = Cache::open(dir.path(), 1 << 20, Storage::Ram).unwrap();
    for _ in 0..3 {
        drop(c.get(&a, &s).unwrap());
    }
    assert_eq!(c.rehashes(), 1);
    assert_eq!(s.requests.load(Ordering::SeqCst), 1);
}

/// Flips one byte of the cached file of `image`.
/// The cached file of `image` and its bytes with one of them flipped.
fn corrupted(dir: &std::path::Path, image: &ImageRef) -> (std::path::PathBuf, Vec<u8>) {
    let path = dir.join(&image.sha256);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[4000] ^= 0xff;
    (path, bytes)
}

#[test]
fn an_entry_corrupted_while_the_node_was_down_is_fetched_again_on_first_use() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&[("a", vec![7; 5000])]);
    let a = image("a", &s.objects["a"]);
    drop(
        Cache::open(dir.path(), 1 << 20, Storage::Ram)
            .unwrap()
            .get(&a, &s)
            .unwrap(),
    );
    let (path, bytes) = corrupted(dir.path(), &a);
    std::fs::write(&path, bytes).unwrap();
    let c = Cache::open(dir.path(), 1 << 20, Storage::Ram).unwrap();
    let p = c.get(&a, &s).unwrap();
    assert_eq!(std::fs::read(&p.path).unwrap(), s.objects["a"]);
    assert_eq!(s.requests.load(Ordering::SeqCst), 2);
}

#[test]
fn an_entry_replaced_under_the_cache_is_hashed_again_and_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&[("a", vec![7; 5000])]);
    let a = image("a", &s.objects["a"]);
    let c = Cache::open(dir.path(), 1 << 20, Storage::Ram).unwrap();
    drop(c.get(&a, &s).unwrap());
    // Another file (another inode) put in its place, as a copy or a rename over it would.
    let (path, bytes) = corrupted(dir.path(), &a);
    let other = dir.path().join("other");
    std::fs::write(&other, bytes).unwrap();
    std::fs::rename(&other, &path).unwrap();
    let p = c.get(&a, &s).unwrap();
    assert_eq!(c.rehashes(), 1);
    assert_eq!(std::fs::read(&p.path).unwrap(), s.objects["a"]);
    assert_eq!(s.requests.load(Ordering::SeqCst), 2);
}

#[test]
fn a_broken_transfer_resumes_from_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    let s = store(&[("a", data.clone())]);
    s.break_after.store(4096, Ordering::SeqCst);
    let a = image("a", &data);
    let c = Cache::open(dir.path(), 1 << 20, Storage::Ram).unwrap();
    let p = c.get(&a, &s).unwrap();
    assert_eq!(std::fs::read(&p.path).unwrap(), data);
    assert_eq!(*s.offsets.lock().unwrap(), vec![0, 4096, 8192]);
}

#[test]
fn wrong_bytes_from_the_store_are_refused_and_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&[("a", vec![1; 100])]);
    let mut a = image("a", &[2; 100]);
    let c = Cache::open(dir.path(), 1 << 20, Storage::Ram).unwrap();
    assert!(matches!(c.get(&a, &s), Err(ImageError::Mismatch { .. })));
    assert!(c.list().is_empty());
    a.sha256 = "../../etc/passwd".into();
    assert!(matches!(c.get(&a, &s), Err(ImageError::BadDigest(_))));
}

#[test]
fn concurrent_requests_for_one_image_fetch_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = store(&[("a", vec![9; 100_000])]);
    s.hold_until = 4;
    let a = image("a", &s.objects["a"]);
    let c = Cache::open(dir.path(), 1 << 20, Storage::Ram).unwrap();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    s.started.fetch_add(1, Ordering::SeqCst);
                    c.get(&a, &s).map(|p| p.path.clone())
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().unwrap(), dir.path().join(&a.sha256));
        }
    });
    assert_eq!(s.requests.load(Ordering::SeqCst), 1);
}

#[test]
fn files_derived_from_an_entry_go_with_it_and_orphans_go_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&[("a", vec![1; 600]), ("b", vec![2; 600])]);
    let (a, b) = (image("a", &s.objects["a"]), image("b", &s.objects["b"]));
    let c = Cache::open(dir.path(), 1000, Storage::Ram).unwrap();
    let pa = c.get(&a, &s).unwrap();
    let derived = c.derived(&pa, "vmlinux");
    assert_eq!(derived, dir.path().join(format!("{}.vmlinux", a.sha256)));
    std::fs::write(&derived, b"unpacked").unwrap();
    drop(pa);
    // b needs a's room: a goes, and what was made from it.
    drop(c.get(&b, &s).unwrap());
    assert!(!dir.path().join(&a.sha256).exists());
    assert!(!derived.exists());

    // At open: a derived file whose entry is gone and a half-written one are removed; a
    // download to resume and a live entry's derived file stay.
    let pb = c.get(&b, &s).unwrap();
    let kept = c.derived(&pb, "vmlinux");
    std::fs::write(&kept, b"unpacked").unwrap();
    let orphan = dir.path().join(format!("{}.vmlinux", a.sha256));
    let half = dir.path().join(format!("{}.vmlinux.tmp42", b.sha256));
    let part = dir.path().join(format!("{}.part", a.sha256));
    for f in [&orphan, &half, &part] {
        std::fs::write(f, b"x").unwrap();
    }
    drop(pb);
    Cache::open(dir.path(), 1000, Storage::Ram).unwrap();
    assert!(kept.exists() && part.exists());
    assert!(!orphan.exists() && !half.exists());
}
