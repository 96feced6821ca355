//! ATA over Ethernet (AoE v1, EtherType 0x88A2): wire format, target and user-space initiator.
//!
//! `wire` is the protocol as plain parse/emit over byte slices; `net` is the AF_PACKET socket
//! both ends share, `filter` what each end lets the kernel wake it for; `target` exports block backends; `initiator` is the synchronous block
//! client the VMM uses. Nothing here knows about the frontend or the VMM.

pub mod ata;
pub mod filter;
pub mod initiator;
pub mod net;
pub mod pattern;
pub mod target;
pub mod wire;

/// Parses `frame` and, when it parses, checks that emit → parse gives the same message.
/// The fuzz target and the bounded random-frame test both call this; it must never panic
/// on any input other than a round-trip mismatch (a real bug).
pub fn fuzz_parse(frame: &[u8]) {
    let Ok(msg) = wire::Message::parse(frame) else {
        return;
    };
    let mut buf = vec![0u8; msg.buffer_len()];
    let n = msg.emit(&mut buf).expect("a parsed message re-emits");
    let again = wire::Message::parse(&buf[..n]).expect("an emitted message parses");
    assert_eq!(again, msg, "parse/emit round trip");
}
