//! TFTP packet round trips and the read-transfer state machine, driven as a client would.

use super::*;
use std::io::Cursor;

fn opts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn rfc1350_rrq_bytes_parse_and_emit_back() {
    // RRQ "undionly.kpxe" octet, blksize 1468, tsize 0 as iPXE sends it.
    let wire = b"\x00\x01undionly.kpxe\x00octet\x00blksize\x001468\x00tsize\x000\x00";
    let p = Packet::parse(wire).unwrap();
    assert_eq!(
        p,
        Packet::Rrq {
            filename: "undionly.kpxe".into(),
            mode: "octet".into(),
            options: opts(&[("blksize", "1468"), ("tsize", "0")]),
        }
    );
    assert_eq!(p.emit(), wire.to_vec());
}

#[test]
fn every_packet_kind_round_trips() {
    let packets = [
        Packet::Wrq {
            filename: "x".into(),
            mode: "octet".into(),
        },
        Packet::Data {
            block: 65535,
            data: vec![1, 2, 3],
        },
        Packet::Data {
            block: 7,
            data: vec![],
        },
        Packet::Ack { block: 9 },
        Packet::error(ErrorCode::FileNotFound, "no such file"),
        Packet::Oack {
            options: opts(&[("tsize", "1234")]),
        },
    ];
    for p in packets {
        assert_eq!(Packet::parse(&p.emit()).unwrap(), p);
    }
}

#[test]
fn malformed_packets_are_errors() {
    assert_eq!(Packet::parse(b"\x00\x01"), Err(TftpPacketError::Short(2)));
    assert_eq!(
        Packet::parse(b"\x00\x09\x00\x00"),
        Err(TftpPacketError::Opcode(9))
    );
    assert_eq!(
        Packet::parse(b"\x00\x01file\x00octet"),
        Err(TftpPacketError::BadString)
    );
    assert_eq!(
        Packet::parse(b"\x00\x01file\x00octet\x00blksize\x00"),
        Err(TftpPacketError::OptionWithoutValue("blksize".into()))
    );
    assert_eq!(
        Packet::parse(b"\x00\x01\xff\xfe\x00octet\x00"),
        Err(TftpPacketError::BadString)
    );
}

#[test]
fn negotiation_clamps_blksize_and_reports_tsize() {
    let (n, oack) = negotiate(
        &opts(&[
            ("BLKSIZE", "65464"),
            ("tsize", "0"),
            ("timeout", "3"),
            ("foo", "1"),
        ]),
        4242,
    );
    assert_eq!(n.blksize, MAX_BLKSIZE);
    assert_eq!(n.timeout_secs, 3);
    assert_eq!(
        oack,
        opts(&[("blksize", "1468"), ("tsize", "4242"), ("timeout", "3")])
    );
    let (n, oack) = negotiate(&opts(&[("blksize", "4"), ("timeout", "0")]), 1);
    assert_eq!(n.blksize, DEFAULT_BLKSIZE);
    assert!(oack.is_empty());
}

/// Runs a transfer to completion as a well-behaved client; returns the received bytes.
fn receive(file: Vec<u8>, requested: &[(&str, &str)]) -> (Vec<u8>, usize) {
    let (mut t, first) = ReadTransfer::start(Cursor::new(file), &opts(requested)).unwrap();
    let mut got = Vec::new();
    let mut packet = first;
    let mut datagrams = 0;
    loop {
        datagrams += 1;
        let ack = match Packet::parse(&packet).unwrap() {
            Packet::Oack { .. } => 0,
            Packet::Data { block, data } => {
                got.extend_from_slice(&data);
                block
            }
            other => panic!("unexpected {other:?}"),
        };
        match t.on_packet(&Packet::Ack { block: ack }.emit()).unwrap() {
            Step::Send(p) => packet = p,
            Step::Done => return (got, datagrams),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn transfer_without_options_sends_512_byte_blocks() {
    let file: Vec<u8> = (0..1300u32).map(|i| i as u8).collect();
    let (got, datagrams) = receive(file.clone(), &[]);
    assert_eq!(got, file);
    assert_eq!(datagrams, 3);
}

#[test]
fn exact_multiple_of_blksize_ends_with_empty_block() {
    let file = vec![7u8; 1024];
    let (got, datagrams) = receive(file.clone(), &[]);
    assert_eq!(got, file);
    assert_eq!(datagrams, 3, "two full blocks and an empty one");
}

#[test]
fn options_start_with_oack_and_use_the_negotiated_block_size() {
    let file = vec![1u8; 3000];
    let (got, datagrams) = receive(file.clone(), &[("blksize", "1468"), ("tsize", "0")]);
    assert_eq!(got, file);
    assert_eq!(datagrams, 1 + 3, "OACK then 1468+1468+64");
}

#[test]
fn block_numbers_wrap_past_65535() {
    let file: Vec<u8> = (0..(70_000u32 * 8)).map(|i| (i / 8) as u8).collect();
    let (got, datagrams) = receive(file.clone(), &[("blksize", "8")]);
    assert_eq!(got.len(), file.len());
    assert_eq!(got, file);
    assert_eq!(datagrams, 1 + 70_001);
}

#[test]
fn timeout_resends_then_gives_up() {
    let (mut t, first) = ReadTransfer::start(Cursor::new(vec![0u8; 10]), &[]).unwrap();
    for _ in 0..MAX_RETRIES {
        assert_eq!(t.on_timeout(), Step::Send(first.clone()));
    }
    assert!(matches!(t.on_timeout(), Step::Abort(_)));
}

#[test]
fn duplicate_and_stray_acks_are_ignored_error_aborts() {
    let (mut t, _) = ReadTransfer::start(Cursor::new(vec![0u8; 2000]), &[]).unwrap();
    assert!(matches!(
        t.on_packet(&Packet::Ack { block: 1 }.emit()).unwrap(),
        Step::Send(_)
    ));
    // Sorcerer's apprentice: a duplicate ACK 1 must not trigger another send.
    assert_eq!(
        t.on_packet(&Packet::Ack { block: 1 }.emit()).unwrap(),
        Step::Wait
    );
    assert_eq!(t.on_packet(b"junk").unwrap(), Step::Wait);
    assert!(matches!(
        t.on_packet(&Packet::error(ErrorCode::NotDefined, "bye").emit())
            .unwrap(),
        Step::Abort(_)
    ));
}

#[test]
fn mutated_requests_never_panic_and_reparse_the_same() {
    let rrq = b"\x00\x01undionly.kpxe\x00octet\x00blksize\x001468\x00tsize\x000\x00".to_vec();
    let mut x: u32 = 0x9e37_79b9;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    for _ in 0..5_000 {
        let mut bytes = rrq.clone();
        bytes.truncate(2 + next() as usize % (rrq.len() - 1));
        for _ in 0..next() % 3 {
            let i = next() as usize % bytes.len();
            bytes[i] = next() as u8;
        }
        if let Ok(p) = Packet::parse(&bytes) {
            assert_eq!(Packet::parse(&p.emit()), Ok(p.clone()));
            if let Packet::Rrq { options, .. } = p {
                let (mut t, _) =
                    ReadTransfer::start(Cursor::new(vec![0u8; 3000]), &options).unwrap();
                t.on_packet(&bytes).unwrap();
            }
        }
    }
}
