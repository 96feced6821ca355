//! What a VM NIC's packet capture (the harness's `filter-dump` of every NIC) shows of 802.1Q:
//! which VLAN tags its frames carried, and which untagged frames carried IPv4 from or to an
//! address inside a given net — on a cloud's private segment, instance traffic must be tagged
//! and node ↔ frontend traffic not. And what a passive listener there could read: whether
//! given byte strings occur anywhere in the capture ([`find_bytes`], with [`base64_forms`] for
//! text that crosses base64-encoded), and whether the TCP traffic to a port is TLS
//! ([`tls_census`]).

use base64::Engine as _;
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::Path;

/// The census of one capture.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VlanCensus {
    /// Frames per 802.1Q tag.
    pub tagged: BTreeMap<u16, u64>,
    /// Untagged frames.
    pub untagged: u64,
    /// Untagged IPv4 frames with a source or destination inside the net asked about (the first
    /// few, as `source -> destination`).
    pub untagged_inside: Vec<String>,
    pub untagged_inside_count: u64,
}

const ETH_IPV4: u16 = 0x0800;
const ETH_VLAN: u16 = 0x8100;

/// Counts the frames of the pcap file at `path`; a record cut short at the end (QEMU still
/// writing) ends the count.
pub fn vlan_census(path: &Path, inside: Ipv4Net) -> Result<VlanCensus, pcap_file::PcapError> {
    let file = std::fs::File::open(path).map_err(pcap_file::PcapError::IoError)?;
    let mut reader = pcap_file::pcap::PcapReader::new(std::io::BufReader::new(file))?;
    let mut census = VlanCensus::default();
    while let Some(Ok(packet)) = reader.next_packet() {
        count(&packet.data, inside, &mut census);
    }
    Ok(census)
}

fn count(frame: &[u8], net: Ipv4Net, census: &mut VlanCensus) {
    let Some(ethertype) = frame.get(12..14) else {
        return;
    };
    let ethertype = u16::from_be_bytes([ethertype[0], ethertype[1]]);
    if ethertype == ETH_VLAN {
        if let Some(tci) = frame.get(14..16) {
            let tag = u16::from_be_bytes([tci[0], tci[1]]) & 0x0fff;
            *census.tagged.entry(tag).or_default() += 1;
        }
        return;
    }
    census.untagged += 1;
    if ethertype != ETH_IPV4 {
        return;
    }
    let Some(ip) = frame.get(14..34) else {
        return;
    };
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    if net.contains(&src) || net.contains(&dst) {
        census.untagged_inside_count += 1;
        if census.untagged_inside.len() < 5 {
            census.untagged_inside.push(format!("{src} -> {dst}"));
        }
    }
}

/// Where each of `needles` first occurs in the file at `path` (its byte offset; ASCII case
/// ignored), or `None`: a plain search over every byte, frame headers and payloads alike, so
/// a needle split across two frames is not found.
pub fn find_bytes(path: &Path, needles: &[&[u8]]) -> std::io::Result<Vec<Option<u64>>> {
    let lower: Vec<Vec<u8>> = needles.iter().map(|n| n.to_ascii_lowercase()).collect();
    let mut starts = [false; 256];
    for b in lower.iter().filter_map(|n| n.first()) {
        starts[usize::from(*b)] = true;
        starts[usize::from(b.to_ascii_uppercase())] = true;
    }
    let longest = lower.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut found = vec![None; needles.len()];
    let mut file = std::fs::File::open(path)?;
    let mut chunk = vec![0u8; 8 << 20];
    // `window` holds the file from offset `base` on; what a needle may still start in stays.
    let (mut window, mut base) = (Vec::new(), 0u64);
    loop {
        let n = file.read(&mut chunk)?;
        window.extend_from_slice(&chunk[..n]);
        let checked = match n {
            0 => window.len(),
            _ => window.len().saturating_sub(longest - 1),
        };
        for at in (0..checked).filter(|&at| starts[usize::from(window[at])]) {
            for (needle, slot) in lower.iter().zip(found.iter_mut()) {
                let hit = window
                    .get(at..at + needle.len())
                    .is_some_and(|w| w.eq_ignore_ascii_case(needle));
                if hit && slot.is_none() {
                    *slot = Some(base + at as u64);
                }
            }
        }
        window.drain(..checked);
        base += checked as u64;
        if n == 0 {
            return Ok(found);
        }
    }
}

/// What any standard base64 encoding of a text holding `text` contains, whatever the offset
/// of `text` in it: one run per alignment (offset mod 3), the characters that depend on
/// `text`'s bytes alone.
pub fn base64_forms(text: &[u8]) -> Vec<String> {
    (0..3usize)
        .map(|shift| {
            let mut shifted = vec![0u8; shift];
            shifted.extend_from_slice(text);
            let encoded = base64::engine::general_purpose::STANDARD.encode(&shifted);
            // Characters holding a bit of the padding before, or of what follows, differ.
            let first = (8 * shift).div_ceil(6);
            let last = 8 * shifted.len() / 6;
            encoded[first..last].to_string()
        })
        .collect()
}

/// The TCP traffic to and from one port in a capture (untagged IPv4 frames), by how each
/// segment's payload begins: TLS records or plain HTTP.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TlsCensus {
    /// TCP segments with a payload, to the port and from it.
    pub segments_to: u64,
    pub segments_from: u64,
    /// Segments to the port opening a TLS handshake record with a ClientHello
    /// (`16 03 xx LL LL 01`).
    pub client_hellos: u64,
    /// Segments from the port opening a TLS handshake record (the ServerHello's).
    pub server_handshakes: u64,
    /// Segments opening a TLS application-data record (`17 03 03`), to the port and from it.
    pub app_data_to: u64,
    pub app_data_from: u64,
    /// Segments to the port that open as an HTTP request does (`GET `, `POST `, ...).
    pub plain_http_to: u64,
}

const IP_TCP: u8 = 6;

/// Counts the TCP segments to and from `port` in the pcap file at `path`; a record cut short at
/// the end (QEMU still writing) ends the count.
pub fn tls_census(path: &Path, port: u16) -> Result<TlsCensus, pcap_file::PcapError> {
    let file = std::fs::File::open(path).map_err(pcap_file::PcapError::IoError)?;
    let mut reader = pcap_file::pcap::PcapReader::new(std::io::BufReader::new(file))?;
    let mut census = TlsCensus::default();
    while let Some(Ok(packet)) = reader.next_packet() {
        if let Some((from, to, payload)) = tcp_payload(&packet.data) {
            classify(from, to, payload, port, &mut census);
        }
    }
    Ok(census)
}

/// The source port, destination port and payload of an untagged IPv4 TCP frame.
fn tcp_payload(frame: &[u8]) -> Option<(u16, u16, &[u8])> {
    if frame.get(12..14)? != ETH_IPV4.to_be_bytes() {
        return None;
    }
    let ip = frame.get(14..)?;
    let header = usize::from(ip.first()? & 0x0f) * 4;
    if *ip.get(9)? != IP_TCP {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let tcp = ip.get(header..total.min(ip.len()))?;
    let offset = usize::from(tcp.get(12)? >> 4) * 4;
    let from = u16::from_be_bytes([tcp[0], tcp[1]]);
    let to = u16::from_be_bytes([tcp[2], tcp[3]]);
    Some((from, to, tcp.get(offset..)?))
}

fn classify(from: u16, to: u16, payload: &[u8], port: u16, census: &mut TlsCensus) {
    if payload.is_empty() || (from != port && to != port) {
        return;
    }
    let handshake = payload.starts_with(&[0x16, 0x03]);
    let app_data = payload.starts_with(&[0x17, 0x03, 0x03]);
    if to == port {
        census.segments_to += 1;
        census.client_hellos += u64::from(handshake && payload.get(5) == Some(&0x01));
        census.app_data_to += u64::from(app_data);
        let methods: [&[u8]; 5] = [b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE "];
        census.plain_http_to += u64::from(methods.iter().any(|m| payload.starts_with(m)));
    } else {
        census.segments_from += 1;
        census.server_handshakes += u64::from(handshake);
        census.app_data_from += u64::from(app_data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcap::{PcapPacket, PcapWriter};
    use std::time::Duration;

    fn ipv4_frame(tag: Option<u16>, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend([0x52, 0x54, 0, 0, 0, 1]);
        if let Some(tag) = tag {
            f.extend(ETH_VLAN.to_be_bytes());
            f.extend(tag.to_be_bytes());
        }
        f.extend(ETH_IPV4.to_be_bytes());
        let mut ip = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0];
        ip.extend(src);
        ip.extend(dst);
        f.extend(ip);
        f
    }

    #[test]
    fn tags_are_counted_and_untagged_instance_traffic_is_caught() {
        let dir = tempfile_dir();
        let path = dir.join("t.pcap");
        let mut w = PcapWriter::new(std::fs::File::create(&path).unwrap()).unwrap();
        for frame in [
            ipv4_frame(Some(100), [172, 31, 0, 2], [172, 31, 0, 34]),
            ipv4_frame(Some(101), [172, 31, 0, 34], [172, 31, 0, 2]),
            ipv4_frame(Some(100), [172, 31, 0, 2], [172, 31, 0, 1]),
            ipv4_frame(None, [10, 77, 0, 100], [10, 77, 0, 1]),
            ipv4_frame(None, [172, 31, 0, 3], [10, 77, 0, 1]),
        ] {
            let p = PcapPacket::new(Duration::ZERO, frame.len() as u32, &frame);
            w.write_packet(&p).unwrap();
        }
        drop(w);
        // A record cut short, as when QEMU is still writing.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend([1, 2, 3]);
        std::fs::write(&path, bytes).unwrap();
        let c = vlan_census(&path, "172.31.0.0/16".parse().unwrap()).unwrap();
        assert_eq!(c.tagged, BTreeMap::from([(100, 2), (101, 1)]));
        assert_eq!((c.untagged, c.untagged_inside_count), (2, 1));
        assert_eq!(c.untagged_inside, ["172.31.0.3 -> 10.77.0.1"]);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tcp_frame(from: u16, to: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend([0x52, 0x54, 0, 0, 0, 1]);
        f.extend(ETH_IPV4.to_be_bytes());
        let total = (20 + 20 + payload.len()) as u16;
        let mut ip = vec![0x45, 0];
        ip.extend(total.to_be_bytes());
        ip.extend([0, 0, 0, 0, 64, IP_TCP, 0, 0, 10, 77, 0, 100, 10, 77, 0, 1]);
        f.extend(ip);
        let mut tcp = Vec::new();
        tcp.extend(from.to_be_bytes());
        tcp.extend(to.to_be_bytes());
        tcp.extend([0; 8]);
        tcp.extend([5 << 4, 0x18, 0, 0, 0, 0, 0, 0]);
        f.extend(tcp);
        f.extend(payload);
        // Ethernet padding after a short IP packet is not payload.
        f.extend([0; 6]);
        f
    }

    fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
        let mut w = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
        for frame in frames {
            let p = PcapPacket::new(Duration::ZERO, frame.len() as u32, frame);
            w.write_packet(&p).unwrap();
        }
    }

    #[test]
    fn tls_records_and_plain_http_to_a_port_are_told_apart() {
        let dir = tempfile_dir();
        let path = dir.join("tls.pcap");
        let hello = [0x16, 0x03, 0x01, 0x00, 0xf0, 0x01, 0x00];
        write_pcap(
            &path,
            &[
                tcp_frame(40000, 8773, &hello),
                tcp_frame(8773, 40000, &[0x16, 0x03, 0x03, 0x00, 0x7a, 0x02]),
                tcp_frame(40000, 8773, &[0x17, 0x03, 0x03, 0x00, 0x20]),
                tcp_frame(8773, 40000, &[0x17, 0x03, 0x03, 0x01, 0x00]),
                tcp_frame(8773, 40000, &[0x42; 40]),
                tcp_frame(40001, 8773, b"POST /_node/enroll HTTP/1.1\r\n"),
                tcp_frame(40002, 8069, b"GET /boot.ipxe HTTP/1.1\r\n"),
                tcp_frame(40000, 8773, b""),
                ipv4_frame(None, [10, 77, 0, 100], [10, 77, 0, 1]),
            ],
        );
        let c = tls_census(&path, 8773).unwrap();
        assert_eq!(
            c,
            TlsCensus {
                segments_to: 3,
                segments_from: 3,
                client_hellos: 1,
                server_handshakes: 1,
                app_data_to: 1,
                app_data_from: 1,
                plain_http_to: 1,
            }
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn byte_strings_are_found_anywhere_in_the_file_in_either_case() {
        let dir = tempfile_dir();
        let path = dir.join("bytes.pcap");
        let mut bytes = vec![0u8; 20 << 20];
        // Across the reader's 8 MiB chunks, and at the very end.
        let at = (8 << 20) - 3;
        bytes[at..at + 7].copy_from_slice(b"/_NODE/");
        bytes.extend(b"authorization: Bearer");
        std::fs::write(&path, &bytes).unwrap();
        let found =
            find_bytes(&path, &[b"/_node/", b"Authorization: Bearer", b"\"token\""]).unwrap();
        let end = (bytes.len() - 21) as u64;
        assert_eq!(found, [Some(at as u64), Some(end), None]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_text_is_found_in_the_base64_of_anything_around_it() {
        let text = b"mallee-marker-0123456789abcdef";
        let forms = base64_forms(text);
        assert_eq!(forms.len(), 3);
        let b64 = &base64::engine::general_purpose::STANDARD;
        for before in ["", "a", "ab", "serve 7000\n# ", "xyzw"] {
            for after in ["", "\n", "!!"] {
                let mut whole = before.as_bytes().to_vec();
                whole.extend_from_slice(text);
                whole.extend_from_slice(after.as_bytes());
                let encoded = b64.encode(&whole);
                assert!(
                    forms.iter().any(|f| encoded.contains(f.as_str())),
                    "{before:?} {after:?}: {encoded} holds none of {forms:?}"
                );
            }
        }
        assert!(forms.iter().all(|f| f.len() >= 4 * text.len() / 3 - 3));
    }

    fn tempfile_dir() -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("capture-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
