//! Our target against our initiator over a veth pair, including the faults the issue names:
//! lost frames, a target restarted mid-stream, a full backing disk, a disallowed MAC.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{in_ns, pattern, NetPair, TempDir};
use mallee_aoe::initiator::{Initiator, InitiatorConfig, InitiatorError};
use mallee_aoe::net::PacketSocket;
use mallee_aoe::target::{AccessControl, Backend, Target, TargetConfig};
use mallee_aoe::wire::{
    AoeError, Body, Command, HeaderRepr, Mac, Message, ReserveCommand, ReserveRepr,
};

fn start(pair: &NetPair, file: &Path, cfg: TargetConfig) -> Target {
    let backend = Backend::open(file).unwrap();
    in_ns(&pair.a, || {
        let sock = PacketSocket::open(&pair.a_if).unwrap();
        let cfg = TargetConfig {
            probe_timeout: Duration::from_millis(200),
            ..cfg
        };
        Target::start(sock, backend, cfg).unwrap()
    })
}

fn open(pair: &NetPair, cfg: InitiatorConfig) -> Result<Initiator, InitiatorError> {
    in_ns(&pair.b, || {
        Initiator::open(PacketSocket::open(&pair.b_if).unwrap(), 9, 1, cfg)
    })
}

fn addr() -> TargetConfig {
    TargetConfig {
        shelf: 9,
        slot: 1,
        ..Default::default()
    }
}

fn quick() -> InitiatorConfig {
    InitiatorConfig {
        total_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

/// A target that withholds every `responses`-th reply and an initiator that drops every
/// `requests`-th request it sends, retransmitting after 5 ms at the least.
fn lossy(pair: &NetPair, file: &Path, responses: u64, requests: u64) -> (Target, Initiator) {
    let target = start(
        pair,
        file,
        TargetConfig {
            drop_response_one_in: responses,
            ..addr()
        },
    );
    let cfg = InitiatorConfig {
        drop_request_one_in: requests,
        min_rto: Duration::from_millis(5),
        ..quick()
    };
    (target, open(pair, cfg).unwrap())
}

#[test]
fn jumbo_frames_carry_more_sectors_and_concurrent_callers_get_their_data() {
    let pair = NetPair::new(9000);
    let dir = TempDir::new("ours-jumbo");
    let file = dir.file("disk.img", 16 << 20);
    let target = start(&pair, &file, addr());
    let ini = Arc::new(open(&pair, quick()).unwrap());
    assert_eq!(ini.limits(), (64, 17));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let ini = Arc::clone(&ini);
            std::thread::spawn(move || {
                let data = pattern(256 << 10, t + 10);
                ini.write_at(&data, t << 20).unwrap();
                let mut back = vec![0u8; data.len()];
                ini.read_at(&mut back, t << 20).unwrap();
                assert_eq!(back, data);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    ini.flush().unwrap();
    let on_disk = std::fs::read(&file).unwrap();
    for t in 0..8u64 {
        let at = (t << 20) as usize;
        assert_eq!(
            &on_disk[at..at + (256 << 10)],
            &pattern(256 << 10, t + 10)[..]
        );
    }
    assert!(target.stats().bytes_written >= 8 * (256 << 10));
}

#[test]
fn lost_requests_and_responses_are_retransmitted_and_data_is_intact() {
    let pair = NetPair::new(1500);
    let dir = TempDir::new("ours-loss");
    let file = dir.file("disk.img", 4 << 20);
    let (target, ini) = lossy(&pair, &file, 7, 5);
    let data = pattern(1 << 20, 3);
    ini.write_at(&data, 0).unwrap();
    let mut back = vec![0u8; data.len()];
    ini.read_at(&mut back, 0).unwrap();
    assert_eq!(back, data);
    assert_eq!(&std::fs::read(&file).unwrap()[..data.len()], &data[..]);
    assert!(ini.stats().retransmits > 0 && ini.stats().dropped_by_hook > 0);
    assert!(target.stats().dropped_by_hook > 0);
}

/// Sixteen callers at once, of requests from 4 KiB (4 frames) to 1 MiB (16 times the window),
/// frames lost both ways: the receiving turn passes between them as their calls end or
/// wait for a window slot, and every call completes with its own bytes.
#[test]
fn concurrent_calls_of_any_size_with_losses_each_get_their_own_bytes() {
    let pair = NetPair::new(1500);
    let dir = TempDir::new("ours-many");
    let file = dir.file("disk.img", 32 << 20);
    let (target, ini) = lossy(&pair, &file, 13, 11);
    let ini = Arc::new(ini);
    let threads: Vec<_> = (0..16u64)
        .map(|t| {
            let ini = Arc::clone(&ini);
            std::thread::spawn(move || {
                for round in 0..6u64 {
                    let len = [4, 24, 96, 1024][((t + round) % 4) as usize] << 10;
                    let at = (t << 21) + (round % 2) * (1 << 20);
                    let data = pattern(len, t * 100 + round);
                    ini.write_at(&data, at).unwrap();
                    let mut back = vec![0u8; len];
                    ini.read_at(&mut back, at).unwrap();
                    assert_eq!(back, data, "caller {t} round {round}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(ini.stats().retransmits > 0 && target.stats().dropped_by_hook > 0);
}

#[test]
fn target_restarted_mid_write_stream_loses_nothing() {
    let pair = NetPair::new(1500);
    let dir = TempDir::new("ours-restart");
    let file = dir.file("disk.img", 8 << 20);
    let target = start(&pair, &file, addr());
    let ini = Arc::new(open(&pair, quick()).unwrap());
    let data = Arc::new(pattern(4 << 20, 4));
    let chunks_done = Arc::new(AtomicUsize::new(0));
    // The writer pauses after its first chunks until the target has been stopped, so the stop
    // always lands mid-stream (without the pause a fast writer could finish first).
    let (paused_tx, paused_rx) = std::sync::mpsc::channel();
    let (stopped_tx, stopped_rx) = std::sync::mpsc::channel::<()>();
    let writer = {
        let (ini, data, done) = (
            Arc::clone(&ini),
            Arc::clone(&data),
            Arc::clone(&chunks_done),
        );
        std::thread::spawn(move || {
            for (i, chunk) in data.chunks(64 << 10).enumerate() {
                if i == 4 {
                    paused_tx.send(()).unwrap();
                    stopped_rx.recv().unwrap();
                }
                ini.write_at(chunk, (i * chunk.len()) as u64).unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    paused_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("writer made no progress");
    assert_eq!(chunks_done.load(Ordering::Relaxed), 4);
    target.stop();
    // The first write after the stop goes out while no target answers: it must retransmit
    // until the restarted one does.
    stopped_tx.send(()).unwrap();
    let restarted = start(&pair, &file, addr());
    writer.join().unwrap();
    assert_eq!(chunks_done.load(Ordering::Relaxed), 64);
    assert!(
        restarted.stats().bytes_written > 0,
        "writes continued against the new target"
    );
    assert_eq!(&std::fs::read(&file).unwrap()[..data.len()], &data[..]);
}

/// A tmpfs of 256 KiB mounted for one test, unmounted on drop.
struct SmallTmpfs(TempDir);

impl SmallTmpfs {
    fn new() -> Self {
        let dir = TempDir::new("ours-full");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
            .arg(&dir.0)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs (tests run as root)");
        SmallTmpfs(dir)
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.0 .0)
            .status();
    }
}

#[test]
fn full_backing_disk_gives_the_caller_an_ata_error_and_keeps_serving() {
    let pair = NetPair::new(1500);
    let fs = SmallTmpfs::new();
    let file = fs.0.file("disk.img", 4 << 20);
    let target = start(&pair, &file, addr());
    let ini = open(&pair, quick()).unwrap();
    let small = pattern(64 << 10, 5);
    ini.write_at(&small, 0).unwrap();
    let err = ini.write_at(&pattern(1 << 20, 6), 1 << 20).unwrap_err();
    assert!(
        matches!(err, InitiatorError::Ata { status, .. } if status & 0x01 != 0),
        "{err}"
    );
    let mut back = vec![0u8; small.len()];
    ini.read_at(&mut back, 0).unwrap();
    assert_eq!(back, small, "earlier data intact after the failed write");
    assert!(target.stats().errors > 0);
}

#[test]
fn frames_from_a_disallowed_mac_are_ignored_and_counted() {
    let pair = NetPair::new(1500);
    let dir = TempDir::new("ours-acl");
    let file = dir.file("disk.img", 1 << 20);
    let acl = AccessControl {
        mask: vec![Mac([2, 0, 0, 0, 0, 0x42])],
        ..Default::default()
    };
    let target = start(&pair, &file, TargetConfig { acl, ..addr() });
    let cfg = InitiatorConfig {
        total_timeout: Duration::from_millis(600),
        ..Default::default()
    };
    let err = open(&pair, cfg).unwrap_err();
    assert!(
        matches!(err, InitiatorError::NoTarget { shelf: 9, slot: 1 }),
        "{err}"
    );
    assert!(target.stats().dropped_acl > 0);
    assert_eq!(target.stats().frames_out, 0);
}

#[test]
fn second_target_for_the_same_address_is_refused() {
    let pair = NetPair::new(1500);
    let dir = TempDir::new("ours-probe");
    let _first = start(&pair, &dir.file("a.img", 1 << 20), addr());
    let backend = Backend::open(&dir.file("b.img", 1 << 20)).unwrap();
    let err = in_ns(&pair.b, || {
        let sock = PacketSocket::open(&pair.b_if).unwrap();
        Target::start(sock, backend, addr()).unwrap_err()
    });
    assert!(err.to_string().contains("already answered"), "{err}");
}

/// Sends one raw request from a socket in the initiator's namespace and returns the reply.
fn exchange_raw(sock: &PacketSocket, dst: Mac, command: Command, body: Body) -> Vec<u8> {
    let msg = Message {
        dst,
        src: sock.mac(),
        header: HeaderRepr::request(9, 1, command, 0x8000_7777),
        body,
    };
    let mut buf = vec![0u8; 1514];
    let n = msg.emit(&mut buf).unwrap();
    sock.send(&buf[..n]).unwrap();
    sock.set_recv_timeout(Duration::from_millis(100)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(n) = sock.recv(&mut buf).unwrap() {
            let reply = Message::parse(&buf[..n]).unwrap();
            if reply.header.response && reply.header.tag == 0x8000_7777 {
                return buf[..n].to_vec();
            }
        }
    }
    panic!("no reply to {command:?}");
}

#[test]
fn remote_reservation_over_the_wire_locks_out_others_until_released() {
    let pair = NetPair::new(1500);
    let dir = TempDir::new("ours-reserve");
    let file = dir.file("disk.img", 1 << 20);
    let acl = AccessControl {
        remote_edit: true,
        ..Default::default()
    };
    let target = start(&pair, &file, TargetConfig { acl, ..addr() });
    let ini = open(&pair, quick()).unwrap();
    let target_mac = ini.target().mac;
    let sock = in_ns(&pair.b, || PacketSocket::open(&pair.b_if).unwrap());
    let set = |macs: Vec<Mac>| {
        let body = Body::Reserve(ReserveRepr {
            command: ReserveCommand::ForceSet,
            macs,
        });
        let reply = exchange_raw(&sock, target_mac, Command::ReserveRelease, body);
        let msg = Message::parse(&reply).unwrap();
        assert_eq!(msg.header.error, None);
        match msg.body {
            Body::Reserve(r) => r.macs,
            other => panic!("not a reserve reply: {other:?}"),
        }
    };
    let someone_else = Mac([2, 0, 0, 0, 0, 0x99]);
    assert_eq!(set(vec![someone_else]), vec![someone_else]);
    let mut buf = vec![0u8; 4096];
    let err = ini.read_at(&mut buf, 0).unwrap_err();
    assert!(
        matches!(
            err,
            InitiatorError::Aoe {
                error: AoeError::TargetReserved,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(set(vec![]), vec![]);
    ini.read_at(&mut buf, 0).unwrap();
    assert!(target.stats().errors >= 1);
}
