//! Copy-on-write overlay tests on real files: reads through to the base, first writes copying
//! their clusters up, the map read back from the top's allocation, the base never written.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;

/// An empty top for `base`, as the node agent makes one: a hole of the base's size.
fn make_top(base: &Path, top: &Path) -> io::Result<()> {
    let f = File::create(top)?;
    f.set_len(std::fs::metadata(base)?.len())
}

/// A base of `size` bytes, every byte a function of its offset, and an empty top over it.
fn setup(size: usize) -> (tempfile::TempDir, PathBuf, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (base, top) = (dir.path().join("base.img"), dir.path().join("root.img"));
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8 + 1).collect();
    std::fs::write(&base, &data).unwrap();
    make_top(&base, &top).unwrap();
    (dir, base, top, data)
}

fn read_all(o: &Overlay) -> Vec<u8> {
    let mut buf = vec![0u8; o.size() as usize];
    o.read_at(&mut buf, 0).unwrap();
    buf
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn a_new_top_is_one_hole_and_reads_the_base() {
    let (_dir, base, top, data) = setup(1 << 20);
    assert_eq!(allocated(&top), 0, "a new top must hold no data");
    let o = Overlay::open(&base, &top, false).unwrap();
    assert_eq!(o.size(), data.len() as u64);
    assert_eq!(o.clusters_written(), 0);
    assert_eq!(read_all(&o), data);
    // An unaligned read inside one cluster and across several.
    let mut small = [0u8; 100];
    o.read_at(&mut small, 5000).unwrap();
    assert_eq!(small[..], data[5000..5100]);
}

#[test]
fn a_partial_first_write_copies_its_cluster_up_and_leaves_the_base_alone() {
    let (_dir, base, top, mut want) = setup(64 * 1024);
    let o = Overlay::open(&base, &top, false).unwrap();
    o.write_at(&[0xee; 512], CLUSTER + 100).unwrap();
    want[CLUSTER as usize + 100..CLUSTER as usize + 612].fill(0xee);
    assert_eq!(read_all(&o), want);
    assert_eq!(o.clusters_written(), 1);
    // The cluster's other bytes came from the base into the top.
    let top_bytes = std::fs::read(&top).unwrap();
    assert_eq!(
        top_bytes[CLUSTER as usize..2 * CLUSTER as usize],
        want[CLUSTER as usize..2 * CLUSTER as usize]
    );
    // A second write to that cluster goes straight to the top.
    o.write_at(&[0x11; 8], CLUSTER).unwrap();
    want[CLUSTER as usize..CLUSTER as usize + 8].fill(0x11);
    assert_eq!(read_all(&o), want);
    o.flush().unwrap();
    let (_, _, _, original) = setup(64 * 1024);
    assert_eq!(
        std::fs::read(&base).unwrap(),
        original,
        "the base was written"
    );
}

#[test]
fn a_write_across_clusters_and_the_base_s_unaligned_end() {
    // Three clusters and a 1000-byte tail.
    let size = 3 * CLUSTER as usize + 1000;
    let (_dir, base, top, mut want) = setup(size);
    let o = Overlay::open(&base, &top, false).unwrap();
    // Partly the first cluster, all of the second and third, partly the tail.
    let (at, len) = (3000usize, 2 * CLUSTER as usize + 1600);
    o.write_at(&vec![0x5a; len], at as u64).unwrap();
    want[at..at + len].fill(0x5a);
    assert_eq!(read_all(&o), want);
    assert_eq!(o.clusters_written(), 4);
    // The tail's last bytes, written alone.
    o.write_at(&[0x77; 10], size as u64 - 10).unwrap();
    want[size - 10..].fill(0x77);
    assert_eq!(read_all(&o), want);
}

#[test]
fn the_written_clusters_are_found_again_on_reopen() {
    let (_dir, base, top, mut want) = setup(256 * 1024);
    {
        let o = Overlay::open(&base, &top, false).unwrap();
        for c in [0u64, 7, 8, 40, 63] {
            o.write_at(&[c as u8 + 0x80; 300], c * CLUSTER + 2000)
                .unwrap();
            let at = (c * CLUSTER + 2000) as usize;
            want[at..at + 300].fill(c as u8 + 0x80);
        }
        o.flush().unwrap();
    }
    let o = Overlay::open(&base, &top, true).unwrap();
    assert_eq!(o.clusters_written(), 5);
    assert_eq!(read_all(&o), want);
    // A guest writing zeroes keeps them: zeroes in the top are data, not a hole.
    let o = Overlay::open(&base, &top, false).unwrap();
    o.write_zeroes(9 * CLUSTER, 2 * CLUSTER).unwrap();
    want[9 * CLUSTER as usize..11 * CLUSTER as usize].fill(0);
    drop(o);
    let o = Overlay::open(&base, &top, false).unwrap();
    assert_eq!(read_all(&o), want);
    assert!(!o.supports_discard());
}

#[test]
fn first_writes_to_one_cluster_from_many_threads_all_land() {
    // Eight threads each write their own 512-byte sector of every cluster, all at once: each
    // cluster's copy-up must happen once, before any of its sectors is written.
    let (_dir, base, top, mut want) = setup(128 * CLUSTER as usize);
    let o = Arc::new(Overlay::open(&base, &top, false).unwrap());
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let o = o.clone();
            std::thread::spawn(move || {
                for c in 0..128u64 {
                    o.write_at(&[0xa0 + t; 512], c * CLUSTER + u64::from(t) * 512)
                        .unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    for c in 0..128usize {
        for t in 0..8usize {
            let at = c * CLUSTER as usize + t * 512;
            want[at..at + 512].fill(0xa0 + t as u8);
        }
    }
    assert_eq!(read_all(&o), want);
}

#[test]
fn a_top_of_another_size_is_refused_with_what_to_do() {
    let (_dir, base, top, _) = setup(64 * 1024);
    std::fs::File::options()
        .write(true)
        .open(&top)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let err = Overlay::open(&base, &top, false).err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("make the top"), "{err}");
}

#[test]
fn random_reads_and_writes_match_a_plain_copy() {
    // A model disk (a plain Vec) and the overlay take the same writes; every read agrees,
    // also after reopening.
    let size = 96 * CLUSTER as usize + 512;
    let (_dir, base, top, mut model) = setup(size);
    let mut o = Overlay::open(&base, &top, false).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for round in 0..600 {
        let at = next(size);
        let len = 1 + next((size - at).min(3 * CLUSTER as usize));
        if next(2) == 0 {
            let byte = round as u8;
            o.write_at(&vec![byte; len], at as u64).unwrap();
            model[at..at + len].fill(byte);
        } else {
            let mut buf = vec![0u8; len];
            o.read_at(&mut buf, at as u64).unwrap();
            assert_eq!(
                buf[..],
                model[at..at + len],
                "read {len} at {at}, round {round}"
            );
        }
        if round % 200 == 199 {
            o.flush().unwrap();
            drop(o);
            o = Overlay::open(&base, &top, false).unwrap();
        }
    }
    assert_eq!(read_all(&o), model);
}
