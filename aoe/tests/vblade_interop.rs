//! Our initiator against vblade (Debian `vblade`) on a veth pair between two namespaces:
//! data written through one path is read back through the other.

mod common;

use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::{in_ns, pattern, NetPair, TempDir, Vblade};
use mallee_aoe::initiator::{Initiator, InitiatorConfig, InitiatorError};
use mallee_aoe::net::PacketSocket;

fn open(pair: &NetPair, shelf: u16, slot: u8) -> Initiator {
    in_ns(&pair.b, || {
        let sock = PacketSocket::open(&pair.b_if).unwrap();
        let cfg = InitiatorConfig {
            total_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        Initiator::open(sock, shelf, slot, cfg).unwrap()
    })
}

#[test]
fn writes_through_our_initiator_land_in_vblades_file() {
    let pair = NetPair::new(1500);
    let dir = TempDir::new("vblade-write");
    let file = dir.file("disk.img", 8 << 20);
    let _vblade = Vblade::start(&pair.a, &pair.a_if, 3, 7, &file, false);
    let ini = open(&pair, 3, 7);
    assert_eq!(ini.size(), 8 << 20);
    assert_eq!(
        ini.limits(),
        (16, 2),
        "vblade advertises 16 buffers, 2 sectors at MTU 1500"
    );
    let data = pattern(1 << 20, 1);
    ini.write_at(&data, 65536).unwrap();
    let on_disk = std::fs::read(&file).unwrap();
    assert_eq!(&on_disk[65536..65536 + data.len()], &data[..]);
    assert!(on_disk[..65536].iter().all(|&b| b == 0));
}

#[test]
fn data_written_into_vblades_file_reads_back_through_our_initiator() {
    let pair = NetPair::new(1500);
    let dir = TempDir::new("vblade-read");
    let file = dir.file("disk.img", 4 << 20);
    let data = pattern(300 * 512, 2);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .write_all_at(&data, 512 * 1001)
        .unwrap();
    let _vblade = Vblade::start(&pair.a, &pair.a_if, 1, 1, &file, true);
    let ini = open(&pair, 1, 1);
    let mut got = vec![0u8; data.len()];
    ini.read_at(&mut got, 512 * 1001).unwrap();
    assert_eq!(got, data);
}

#[test]
fn reads_past_vblades_end_are_refused_before_sending() {
    let pair = NetPair::new(1500);
    let dir = TempDir::new("vblade-end");
    let file = dir.file("disk.img", 1 << 20);
    let _vblade = Vblade::start(&pair.a, &pair.a_if, 2, 2, &file, false);
    let ini = open(&pair, 2, 2);
    let mut buf = vec![0u8; 1024];
    assert!(matches!(
        ini.read_at(&mut buf, (1 << 20) - 512),
        Err(InitiatorError::OutOfRange { .. })
    ));
    assert!(matches!(
        ini.read_at(&mut buf, 100),
        Err(InitiatorError::Unaligned { .. })
    ));
}

#[test]
fn our_target_refuses_an_address_vblade_already_answers() {
    let pair = NetPair::new(1500);
    let dir = TempDir::new("vblade-probe");
    let file = dir.file("disk.img", 1 << 20);
    let _vblade = Vblade::start(&pair.a, &pair.a_if, 4, 4, &file, false);
    // Wait until vblade answers, by discovering it.
    drop(open(&pair, 4, 4));
    let backend = mallee_aoe::target::Backend::open(&dir.file("ours.img", 1 << 20)).unwrap();
    let result = in_ns(&pair.b, || {
        let sock = PacketSocket::open(&pair.b_if).unwrap();
        let cfg = mallee_aoe::target::TargetConfig {
            shelf: 4,
            slot: 4,
            ..Default::default()
        };
        mallee_aoe::target::Target::start(sock, backend, cfg)
    });
    assert!(matches!(
        result,
        Err(mallee_aoe::target::TargetError::AddressInUse {
            shelf: 4,
            slot: 4,
            ..
        })
    ));
}
