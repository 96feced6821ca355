//! Socket filters (classic BPF) that wake a packet socket only for the AoE frames its owner
//! serves: a target for requests to its shelf/slot (or to a broadcast address), an initiator for
//! its target's responses. Without them every AoE frame on the segment is copied to every
//! socket bound to the EtherType (each of the storage controller's exports has one) and wakes
//! its thread, to be parsed and dropped; vblade filters the same way (its `bpf.c`).
//!
//! The programs read the frame as a raw packet socket sees it, Ethernet header first.

use libc::sock_filter;

/// The AoE header's version-and-flags byte (version in the high nibble).
const VER_FLAGS: u32 = 14;
/// The response flag in it.
const FLAG_RESPONSE: u32 = 0x08;
/// The shelf (major), big-endian 16 bits.
const SHELF: u32 = 16;
/// The slot (minor).
const SLOT: u32 = 18;

/// Returned to keep the whole frame.
const ACCEPT: u32 = u32::MAX;
/// Returned to drop it before it is queued.
const DROP: u32 = 0;

const LD_B: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
const LD_H: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

fn op(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// A conditional jump; `jt` and `jf` count instructions skipped after this one.
fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Requests (the response flag clear) addressed to `shelf`/`slot`, either possibly the
/// broadcast 0xffff/0xff. A frame too short to hold the fields is dropped (the kernel fails a
/// load past the end), as `wire` would refuse it.
pub fn requests_to(shelf: u16, slot: u8) -> Vec<sock_filter> {
    vec![
        op(LD_B, VER_FLAGS),               // 0
        jump(JSET, FLAG_RESPONSE, 7, 0),   // 1: a response → 9
        op(LD_H, SHELF),                   // 2
        jump(JEQ, u32::from(shelf), 1, 0), // 3: ours → 5
        jump(JEQ, 0xffff, 0, 4),           // 4: broadcast → 5, else → 9
        op(LD_B, SLOT),                    // 5
        jump(JEQ, u32::from(slot), 1, 0),  // 6: ours → 8
        jump(JEQ, 0xff, 0, 1),             // 7: broadcast → 8, else → 9
        op(RET, ACCEPT),                   // 8
        op(RET, DROP),                     // 9
    ]
}

/// Responses (the response flag set) from `shelf`/`slot`.
pub fn responses_from(shelf: u16, slot: u8) -> Vec<sock_filter> {
    vec![
        op(LD_B, VER_FLAGS),               // 0
        jump(JSET, FLAG_RESPONSE, 0, 5),   // 1: a request → 7
        op(LD_H, SHELF),                   // 2
        jump(JEQ, u32::from(shelf), 0, 3), // 3: another shelf → 7
        op(LD_B, SLOT),                    // 4
        jump(JEQ, u32::from(slot), 0, 1),  // 5: another slot → 7
        op(RET, ACCEPT),                   // 6
        op(RET, DROP),                     // 7
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Body, Command, ConfigCommand, ConfigRepr, HeaderRepr, Mac, Message};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// A datagram socket pair, `filter` attached to the receiving end: the kernel runs the
    /// same program over each datagram as over a raw packet socket's frame (Ethernet first).
    struct Filtered {
        tx: OwnedFd,
        rx: OwnedFd,
    }

    impl Filtered {
        fn new(filter: &[sock_filter]) -> Filtered {
            let mut fds = [0; 2];
            // SAFETY: `fds` has room for the two descriptors socketpair writes.
            let rc = unsafe {
                libc::socketpair(
                    libc::AF_UNIX,
                    libc::SOCK_DGRAM | libc::SOCK_NONBLOCK,
                    0,
                    fds.as_mut_ptr(),
                )
            };
            assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
            // SAFETY: both descriptors were just made and nothing else owns them.
            let (tx, rx) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            crate::net::attach_filter(rx.as_raw_fd(), filter).expect("attach the filter");
            Filtered { tx, rx }
        }

        /// Whether `frame` passes the filter.
        fn passes(&self, frame: &[u8]) -> bool {
            // SAFETY: `frame` is readable for its length.
            let sent =
                unsafe { libc::send(self.tx.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            assert_eq!(sent, frame.len() as isize);
            let mut buf = [0u8; 2048];
            // SAFETY: `buf` is writable for its length.
            let got =
                unsafe { libc::recv(self.rx.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            got >= 0 && buf[..got as usize] == *frame
        }
    }

    fn frame(shelf: u16, slot: u8, response: bool) -> Vec<u8> {
        let mut header = HeaderRepr::request(shelf, slot, Command::QueryConfig, 7);
        header.response = response;
        let msg = Message {
            dst: Mac::BROADCAST,
            src: Mac([2, 0, 0, 0, 0, 1]),
            header,
            body: Body::Config(ConfigRepr::request(ConfigCommand::Read, &[])),
        };
        let mut buf = vec![0u8; msg.buffer_len()];
        let n = msg.emit(&mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn a_target_is_woken_by_requests_to_it_or_to_a_broadcast_address_only() {
        let f = Filtered::new(&requests_to(9, 1));
        assert!(f.passes(&frame(9, 1, false)));
        assert!(f.passes(&frame(0xffff, 0xff, false)), "query to everyone");
        assert!(f.passes(&frame(9, 0xff, false)), "every slot of the shelf");
        assert!(f.passes(&frame(0xffff, 1, false)), "slot 1 of every shelf");
        assert!(
            !f.passes(&frame(9, 1, true)),
            "a response, its own among them"
        );
        assert!(!f.passes(&frame(9, 2, false)), "another slot");
        assert!(!f.passes(&frame(8, 1, false)), "another shelf");
        assert!(
            !f.passes(&frame(0x0109, 1, false)),
            "shelf compared as 16 bits"
        );
        assert!(
            !f.passes(&frame(9, 1, false)[..18]),
            "too short for the slot"
        );
    }

    #[test]
    fn an_initiator_is_woken_by_its_targets_responses_only() {
        let f = Filtered::new(&responses_from(9, 1));
        assert!(f.passes(&frame(9, 1, true)));
        assert!(
            !f.passes(&frame(9, 1, false)),
            "a request, its own among them"
        );
        assert!(!f.passes(&frame(9, 2, true)), "another target's response");
        assert!(!f.passes(&frame(10, 1, true)), "another shelf's");
        assert!(
            !f.passes(&frame(9, 1, true)[..16]),
            "too short for the shelf"
        );
    }
}
