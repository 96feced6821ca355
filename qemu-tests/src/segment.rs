//! A private L2 segment joining several VMs without root: QEMU's socket netdev on a multicast
//! group bound to loopback (`-netdev socket,mcast=GROUP:PORT,localaddr=127.0.0.1`).
//!
//! Each `Segment` gets its own group and port, so parallel tests never share a segment. Every
//! member's NIC sees every frame, so a pcap taken at any one member shows the whole segment.

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One virtual Ethernet segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub group: Ipv4Addr,
    pub port: u16,
}

impl Segment {
    /// A segment no other test on this machine is using: the port is one the kernel just handed
    /// out as free, the group is derived from this process and a per-process counter.
    pub fn new() -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("allocate a UDP port on loopback");
        let pid = std::process::id();
        let group = Ipv4Addr::new(230, (pid >> 8) as u8, pid as u8, (n % 250 + 1) as u8);
        Self { group, port }
    }

    /// The `-netdev` argument for one member.
    pub fn netdev_arg(&self, id: &str) -> String {
        format!(
            "socket,id={id},mcast={}:{},localaddr=127.0.0.1",
            self.group, self.port
        )
    }
}

impl Default for Segment {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_segments_differ() {
        let (a, b) = (Segment::new(), Segment::new());
        assert_ne!((a.group, a.port), (b.group, b.port));
        assert!(a.group.is_multicast());
    }
}
