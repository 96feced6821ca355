//! What a VM NIC's packet capture (the harness's `filter-dump` of every NIC) shows of 802.1Q:
//! which VLAN tags its frames carried, and which untagged frames carried IPv4 from or to an
//! address inside a given net — on a cloud's private segment, instance traffic must be tagged
//! and node ↔ frontend traffic not.

use ipnet::Ipv4Net;
use std::collections::BTreeMap;
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

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("capture-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
