//! virtio-blk requests served by an AoE target: vblade exports a file in one network namespace,
//! the VMM's AoE backend (mallee-aoe's initiator) reaches it over a veth pair from another, and
//! guest reads and writes go through the same request code a guest's do.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};

use mallee_vmm::devices::virtio::block::aoe::AoeDisk;
use mallee_vmm::devices::virtio::block::backend::BlockBackend;
use mallee_vmm::devices::virtio::block::request::{self, status, types, Disk, RequestHeader};
use mallee_vmm::devices::virtio::GuestMemoryMmap;
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| {
            panic!("{}: {e} (run `just setup`)", args[0]);
        });
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair, removed on drop.
struct Pair {
    a: String,
    b: String,
    a_if: String,
    b_if: String,
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Pair {
    fn new() -> Pair {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = format!("{}{n}", std::process::id() % 100_000);
        let p = Pair {
            a: format!("mvmm-aoe-{id}-a"),
            b: format!("mvmm-aoe-{id}-b"),
            a_if: format!("mv{id}a"),
            b_if: format!("mv{id}b"),
        };
        sh(&["ip", "netns", "add", &p.a]);
        sh(&["ip", "netns", "add", &p.b]);
        let (ia, ib) = (&p.a_if, &p.b_if);
        sh(&["ip", "link", "add", ia, "type", "veth", "peer", "name", ib]);
        sh(&["ip", "link", "set", ia, "netns", &p.a]);
        sh(&["ip", "link", "set", ib, "netns", &p.b]);
        sh(&["ip", "-n", &p.a, "link", "set", ia, "up"]);
        sh(&["ip", "-n", &p.b, "link", "set", ib, "up"]);
        p
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

struct Vblade(Child);

impl Drop for Vblade {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chain(descs: &[(u64, u32, u32)]) -> Vec<RawDescriptor> {
    descs
        .iter()
        .enumerate()
        .map(|(i, (a, l, f))| {
            let more = if i + 1 < descs.len() {
                VRING_DESC_F_NEXT
            } else {
                0
            };
            RawDescriptor::from(SplitDescriptor::new(
                *a,
                *l,
                (*f | more) as u16,
                i as u16 + 1,
            ))
        })
        .collect()
}

fn run_request(
    mem: &GuestMemoryMmap,
    disk: &mut Disk<AoeDisk>,
    kind: u32,
    sector: u64,
    len: u32,
) -> u8 {
    let hdr = RequestHeader {
        kind,
        reserved: 0,
        sector,
    };
    mem.write_obj(hdr, GuestAddress(0x8000)).unwrap();
    let vq = MockSplitQueue::new(mem, 16);
    let data_flags = if kind == types::IN {
        VRING_DESC_F_WRITE
    } else {
        0
    };
    let descs = chain(&[
        (0x8000, 16, 0),
        (0x10000, len, data_flags),
        (0x9000, 1, VRING_DESC_F_WRITE),
    ]);
    let c = vq.build_multiple_desc_chains(&descs).unwrap();
    request::process(mem, c, disk)
        .status
        .expect("request answered")
}

fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(format!("/run/netns/{ns}")).expect("open netns");
            // SAFETY: setns on a valid namespace fd affects only this (scoped) thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {ns}");
            f()
        })
        .join()
        .expect("namespace thread panicked")
    })
}

fn export_file(name: &str) -> (std::path::PathBuf, Vec<u8>) {
    let id = std::process::id() % 100_000;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{id}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let image = dir.join("export.img");
    let content: Vec<u8> = (0..(1u32 << 20)).map(|i| (i / 512) as u8 ^ 0x5a).collect();
    std::fs::write(&image, &content).unwrap();
    (image, content)
}

/// 1 MiB of guest memory and a writable virtio-blk disk on `backend`.
fn guest(backend: AoeDisk) -> (GuestMemoryMmap, Disk<AoeDisk>) {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let disk = Disk {
        backend,
        read_only: false,
        serial: [0; 20],
        discard: false,
    };
    (mem, disk)
}

/// Reads through the guest path, writes, checks the export file, and a read past the end.
fn exercise(backend: AoeDisk, image: &std::path::Path, content: &[u8], flush: bool) {
    assert_eq!(backend.size(), content.len() as u64);
    let (mem, mut disk) = guest(backend);
    assert_eq!(run_request(&mem, &mut disk, types::IN, 9, 4096), status::OK);
    let mut got = vec![0u8; 4096];
    mem.read_slice(&mut got, GuestAddress(0x10000)).unwrap();
    assert_eq!(got, content[9 * 512..9 * 512 + 4096]);
    mem.write_slice(&[0xc3; 1024], GuestAddress(0x10000))
        .unwrap();
    assert_eq!(
        run_request(&mem, &mut disk, types::OUT, 100, 1024),
        status::OK
    );
    if flush {
        assert_eq!(run_request(&mem, &mut disk, types::FLUSH, 0, 0), status::OK);
    }
    let on_disk = std::fs::read(image).unwrap();
    assert!(
        on_disk[100 * 512..102 * 512].iter().all(|b| *b == 0xc3),
        "write reached the export"
    );
    assert_eq!(
        run_request(&mem, &mut disk, types::IN, 2048, 512),
        status::IOERR,
        "past the end"
    );
}

#[test]
fn guest_reads_and_writes_reach_a_vblade_export() {
    let pair = Pair::new();
    let (image, content) = export_file("aoe-vblade");
    let _vblade = Vblade(
        Command::new("ip")
            .args([
                "netns", "exec", &pair.a, "vblade", "-s", "7", "3", &pair.a_if,
            ])
            .arg(&image)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn vblade (run `just setup`)"),
    );
    let backend =
        in_ns(&pair.b, || AoeDisk::open(&pair.b_if, 7, 3)).expect("AoE target found and opened");
    // vblade does not implement FLUSH CACHE EXT (the guest gets IOERR for a flush); `-s` makes
    // its writes synchronous instead.
    exercise(backend, &image, &content, false);
}

#[test]
fn guest_flushes_reach_the_mallee_aoe_target() {
    let pair = Pair::new();
    let (image, content) = export_file("aoe-mallee");
    let (_target, disk) = mallee_export(&pair, &image, 4);
    exercise(disk, &image, &content, true);
}

/// `image` exported by the mallee-aoe target as shelf 7 `slot` in `pair`'s first namespace,
/// and the VMM's AoE disk on it from the second.
fn mallee_export(
    pair: &Pair,
    image: &std::path::Path,
    slot: u8,
) -> (mallee_aoe::target::Target, AoeDisk) {
    use mallee_aoe::net::PacketSocket;
    use mallee_aoe::target::{Backend, Target, TargetConfig};
    let backend = Backend::open(image).unwrap();
    let target = in_ns(&pair.a, || {
        let sock = PacketSocket::open(&pair.a_if).unwrap();
        let cfg = TargetConfig {
            shelf: 7,
            slot,
            probe_timeout: std::time::Duration::from_millis(200),
            ..TargetConfig::default()
        };
        Target::start(sock, backend, cfg).expect("start the AoE target")
    });
    let disk =
        in_ns(&pair.b, || AoeDisk::open(&pair.b_if, 7, slot)).expect("AoE target found and opened");
    (target, disk)
}

/// A tmpfs of 256 KiB mounted for one test, unmounted on drop: a data disk that fills.
struct SmallTmpfs(std::path::PathBuf);

impl SmallTmpfs {
    fn new(name: &str) -> SmallTmpfs {
        let id = std::process::id() % 100_000;
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{id}"));
        let _ = Command::new("umount").arg(&dir).status();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let at = dir.to_str().unwrap();
        sh(&["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", at]);
        SmallTmpfs(dir)
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The volume's backing disk fills while the guest writes: the write the target could not store
/// reaches the guest as a virtio-blk I/O error (the target's ATA error, not a stall and not a
/// success), what the guest wrote before reads back intact, and the disk keeps serving.
#[test]
fn a_full_backing_disk_is_an_io_error_to_the_guest_and_loses_nothing() {
    let pair = Pair::new();
    let fs = SmallTmpfs::new("aoe-full");
    // A sparse 4 MiB volume on a 256 KiB file system.
    let image = fs.0.join("volume.img");
    File::create(&image).unwrap().set_len(4 << 20).unwrap();
    let (target, backend) = mallee_export(&pair, &image, 5);
    let (mem, mut disk) = guest(backend);
    // 64 KiB fits and is flushed.
    let first: Vec<u8> = (0..64 << 10).map(|i: u32| (i % 251) as u8).collect();
    mem.write_slice(&first, GuestAddress(0x10000)).unwrap();
    assert_eq!(
        run_request(&mem, &mut disk, types::OUT, 0, first.len() as u32),
        status::OK
    );
    assert_eq!(run_request(&mem, &mut disk, types::FLUSH, 0, 0), status::OK);
    // Writes of 256 KiB each, further on, until the file system is full.
    mem.write_slice(&[0xee; 256 << 10], GuestAddress(0x10000))
        .unwrap();
    let failed = (1..8u64).find_map(|i| {
        let got = run_request(&mem, &mut disk, types::OUT, i * 512, 256 << 10);
        (got != status::OK).then_some(got)
    });
    assert_eq!(
        failed,
        Some(status::IOERR),
        "a write to a full disk must fail as an I/O error"
    );
    // What was stored before is intact, through the guest's path and on the disk.
    assert_eq!(
        run_request(&mem, &mut disk, types::IN, 0, first.len() as u32),
        status::OK,
        "the disk still serves reads after the failed write"
    );
    let mut back = vec![0u8; first.len()];
    mem.read_slice(&mut back, GuestAddress(0x10000)).unwrap();
    assert!(back == first, "earlier data changed after the failed write");
    assert!(std::fs::read(&image).unwrap()[..first.len()] == first[..]);
    assert!(target.stats().errors > 0, "the target counted no error");
}
