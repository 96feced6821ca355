//! Gratuitous ARP: after init adds a public address to the public NIC, one broadcast ARP
//! request whose sender and target are that address tells the segment's switches and routers
//! where it now lives. Only the announcement; init answers no ARP itself (the kernel does).

use std::net::Ipv4Addr;

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IP: u16 = 0x0800;
const ARPHRD_ETHER: u16 = 1;
const ARPOP_REQUEST: u16 = 1;
const BROADCAST: [u8; 6] = [0xff; 6];

/// The ARP payload (RFC 826, Ethernet/IPv4) announcing `address` at `mac`: a request with
/// sender = target = `address` and an unknown (zero) target hardware address (RFC 5227 §3).
pub fn gratuitous_arp(mac: [u8; 6], address: Ipv4Addr) -> [u8; 28] {
    let mut frame = [0u8; 28];
    frame[0..2].copy_from_slice(&ARPHRD_ETHER.to_be_bytes());
    frame[2..4].copy_from_slice(&ETH_P_IP.to_be_bytes());
    frame[4] = 6; // hardware address length
    frame[5] = 4; // protocol address length
    frame[6..8].copy_from_slice(&ARPOP_REQUEST.to_be_bytes());
    frame[8..14].copy_from_slice(&mac);
    frame[14..18].copy_from_slice(&address.octets());
    frame[24..28].copy_from_slice(&address.octets());
    frame
}

/// Broadcasts [`gratuitous_arp`] for `address` out of link `ifindex` (whose address is `mac`)
/// on an `AF_PACKET` datagram socket (the kernel adds the Ethernet header).
pub fn announce(ifindex: u32, mac: [u8; 6], address: Ipv4Addr) -> std::io::Result<()> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let protocol = i32::from(ETH_P_ARP.to_be());
    // SAFETY: socket takes plain integers; the descriptor is owned right below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and nothing else owns it; OwnedFd closes it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data, all fields set or zero.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_ARP.to_be();
    to.sll_ifindex = ifindex as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&BROADCAST);
    let frame = gratuitous_arp(mac, address);
    // SAFETY: the buffer and the address are valid for the lengths given, for the call only.
    let sent = unsafe {
        libc::sendto(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
