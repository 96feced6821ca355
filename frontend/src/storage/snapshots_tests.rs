//! Snapshots cut into chunks, stored once, restored byte for byte and freed when unused.

use super::*;
use std::os::unix::fs::FileExt;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

/// A sparse 8 MiB volume with data in chunks 1 and 5 (chunk 5 a copy of chunk 1).
fn volume(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("vol.img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(8 << 20).unwrap();
    let data: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
    f.write_all_at(&data, CHUNK as u64).unwrap();
    f.write_all_at(&data, 5 * CHUNK as u64).unwrap();
    path
}

#[test]
fn zero_chunks_are_not_stored_and_identical_chunks_are_stored_once() {
    let (dir, store) = store();
    let src = volume(dir.path());
    let mut seen = Vec::new();
    let t = take(&store, &src, "snap-1", "vol-1", |p| seen.push(p)).unwrap();
    assert_eq!((t.chunks, t.new_chunks), (2, 1));
    assert!(t.stored_bytes >= CHUNK as u64 && t.stored_bytes < 2 * CHUNK as u64);
    assert_eq!(seen.last(), Some(&100));
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    let m = manifest(&store, "snap-1").unwrap();
    assert_eq!(m.size_bytes, 8 << 20);
    assert_eq!(m.chunks.iter().map(|c| c.0).collect::<Vec<_>>(), [1, 5]);
}

#[test]
fn a_later_snapshot_stores_only_the_changed_chunks_and_each_restores_its_own_time() {
    let (dir, store) = store();
    let src = volume(dir.path());
    take(&store, &src, "snap-1", "vol-1", |_| {}).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
    f.write_all_at(b"changed", 3 * CHUNK as u64 + 10).unwrap();
    let second = take(&store, &src, "snap-2", "vol-1", |_| {}).unwrap();
    assert_eq!((second.chunks, second.new_chunks), (3, 1));
    assert!(second.stored_bytes < CHUNK as u64 + 4096, "{second:?}");
    let first = dir.path().join("r1.img");
    restore(&store, "snap-1", &first, 16 << 20).unwrap();
    let r = std::fs::read(&first).unwrap();
    assert_eq!(r.len(), 16 << 20, "restored into a larger volume");
    assert_eq!(
        &r[..8 << 20],
        &{
            let mut orig = std::fs::read(&src).unwrap();
            orig[3 * CHUNK + 10..3 * CHUNK + 17].fill(0);
            orig
        }[..]
    );
    let now = dir.path().join("r2.img");
    restore(&store, "snap-2", &now, 8 << 20).unwrap();
    assert_eq!(std::fs::read(&now).unwrap(), std::fs::read(&src).unwrap());
}

#[test]
fn deleting_frees_only_chunks_no_other_snapshot_names() {
    let (dir, store) = store();
    let src = volume(dir.path());
    take(&store, &src, "snap-1", "vol-1", |_| {}).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
    f.write_all_at(&[7u8; 100], 0).unwrap();
    take(&store, &src, "snap-2", "vol-1", |_| {}).unwrap();
    assert_eq!(
        delete(&store, "snap-1").unwrap(),
        0,
        "snap-2 still names its chunk"
    );
    let freed = delete(&store, "snap-2").unwrap();
    assert_eq!(freed, 2 * CHUNK as u64);
    assert!(object_keys(&store, "").unwrap().is_empty());
    assert_eq!(
        delete(&store, "snap-2").unwrap(),
        0,
        "deleting twice frees nothing"
    );
}

#[test]
fn a_damaged_chunk_fails_the_restore_and_a_users_bucket_of_that_name_is_refused() {
    let (dir, store) = store();
    let src = volume(dir.path());
    take(&store, &src, "snap-1", "vol-1", |_| {}).unwrap();
    let sha = manifest(&store, "snap-1").unwrap().chunks[0].1.clone();
    let row = store.object(BUCKET, &chunk_key(&sha)).unwrap().unwrap();
    std::fs::write(store.blobs().path(&row.blob), b"rot").unwrap();
    let e = restore(&store, "snap-1", &dir.path().join("r.img"), 8 << 20).unwrap_err();
    assert!(matches!(e, SnapshotError::BadChunk { .. }), "{e}");
    let (_d, other) = self::store();
    other.create_bucket(BUCKET, "mallory").unwrap();
    assert!(matches!(
        ensure_bucket(&other),
        Err(SnapshotError::BucketTaken(_))
    ));
}

#[test]
fn an_incremental_snapshot_reads_only_the_written_chunks_and_restores_whole() {
    let (dir, store) = store();
    let src = volume(dir.path());
    let first = take(&store, &src, "snap-1", "vol-1", |_| {}).unwrap();
    assert_eq!(first.read_bytes, 2 * CHUNK as u64);
    // Chunk 5 rewritten with zeros, chunk 6 written: the copy holds only those.
    let f = (std::fs::OpenOptions::new().read(true).write(true))
        .open(&src)
        .unwrap();
    f.write_all_at(&vec![0; CHUNK], 5 * CHUNK as u64).unwrap();
    f.write_all_at(b"new", 6 * CHUNK as u64).unwrap();
    let copy = dir.path().join("copy.img");
    let c = std::fs::File::create(&copy).unwrap();
    c.set_len(8 << 20).unwrap();
    for i in [5u64, 6] {
        let mut buf = vec![0; CHUNK];
        f.read_exact_at(&mut buf, i * CHUNK as u64).unwrap();
        c.write_all_at(&buf, i * CHUNK as u64).unwrap();
    }
    begin_incremental(&store, "snap-2", "vol-1", 8 << 20, "snap-1", &[5, 6]).unwrap();
    // Pending: not restorable, and the base's chunks outlive the base.
    let r = dir.path().join("r.img");
    assert!(matches!(
        restore(&store, "snap-2", &r, 8 << 20),
        Err(SnapshotError::NotCompleted(_))
    ));
    assert_eq!(delete(&store, "snap-1").unwrap(), 0, "snap-2 names chunk 1");
    let second = take(&store, &copy, "snap-2", "vol-1", |_| {}).unwrap();
    assert_eq!(second.read_bytes, 2 * CHUNK as u64);
    assert_eq!((second.chunks, second.new_chunks), (2, 1));
    let m = manifest(&store, "snap-2").unwrap();
    assert_eq!(m.pending, None);
    assert_eq!(m.chunks.iter().map(|c| c.0).collect::<Vec<_>>(), [1, 6]);
    restore(&store, "snap-2", &r, 8 << 20).unwrap();
    assert_eq!(std::fs::read(&r).unwrap(), std::fs::read(&src).unwrap());
}

#[test]
fn a_base_of_another_size_or_not_completed_is_refused() {
    let (dir, store) = store();
    let src = volume(dir.path());
    take(&store, &src, "snap-1", "vol-1", |_| {}).unwrap();
    let bad = begin_incremental(&store, "snap-2", "vol-1", 16 << 20, "snap-1", &[]);
    assert!(matches!(bad, Err(SnapshotError::BadBase { .. })), "{bad:?}");
    begin_incremental(&store, "snap-2", "vol-1", 8 << 20, "snap-1", &[0]).unwrap();
    let bad = begin_incremental(&store, "snap-3", "vol-1", 8 << 20, "snap-2", &[]);
    assert!(matches!(bad, Err(SnapshotError::BadBase { .. })), "{bad:?}");
    let gone = begin_incremental(&store, "snap-3", "vol-1", 8 << 20, "snap-9", &[]);
    assert!(
        matches!(gone, Err(SnapshotError::NoManifest(_))),
        "{gone:?}"
    );
}
