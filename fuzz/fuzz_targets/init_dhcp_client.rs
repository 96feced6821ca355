//! The DHCP client's state machine fed replies a hostile segment could send: each input is a
//! run of `[time step, length, packet bytes]` records. Packets are made to look like replies to
//! this client's last transaction (op, hlen, xid, chaddr patched in), so the fuzzer reaches the
//! offer, ack, renew and nak paths instead of stopping at the xid check. No panic.
#![no_main]

use mallee_init::net::dhcp::{Action, DhcpClient};
use std::time::Duration;

const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut client = DhcpClient::new(MAC, Some("node".into()), 7);
    let mut now = Duration::ZERO;
    let mut xid = [0u8; 4];
    let remember = |actions: Vec<Action>, xid: &mut [u8; 4]| {
        for a in actions {
            if let Action::Send { bytes, .. } = a {
                if let Some(x) = bytes.get(4..8) {
                    xid.copy_from_slice(x);
                }
            }
        }
    };
    let mut rest = data;
    while let [step, len, tail @ ..] = rest {
        now += Duration::from_secs(u64::from(*step));
        if now >= client.deadline() {
            if let Ok(actions) = client.on_timeout(now) {
                remember(actions, &mut xid);
            }
        }
        let n = usize::from(*len).min(tail.len());
        let mut packet = tail[..n].to_vec();
        rest = &tail[n..];
        if packet.len() >= 34 {
            packet[0] = 2; // BOOTREPLY
            packet[2] = 6; // hlen
            packet[4..8].copy_from_slice(&xid);
            packet[28..34].copy_from_slice(&MAC);
        }
        if let Ok(actions) = client.on_packet(now, &packet) {
            remember(actions, &mut xid);
        }
    }
});
