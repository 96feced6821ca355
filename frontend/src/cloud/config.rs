//! Configuration of the cloud: clusters (zones), the node enrollment secret and the MACs of
//! nodes admitted without an admin, address pools and node timing (the `[ec2]` table of the
//! daemon's TOML file, read by the EC2 API, the scheduler and the node protocol alike), the
//! instance networks (the `[network]` table) and the volume exports (the `[storage]` table).
//! Parsing, checking and defaults only.

use ipnet::Ipv4Net;
use mallee_proto::Mac;
use serde::{Deserialize, Deserializer, Serialize};
use std::net::Ipv4Addr;

/// The `[ec2]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ec2Config {
    /// Cluster names; each is one availability zone.
    pub clusters: Vec<String>,
    /// Secret a node presents (from its kernel command line) to enroll.
    pub cluster_secret: String,
    /// MACs of the nodes admitted as soon as they enroll; any other node waits for an admin
    /// (`admin node approve`, ApproveNode).
    #[serde(deserialize_with = "admit_macs")]
    pub admit_macs: Vec<Mac>,
    /// Elastic IP pool.
    pub public_ips: Vec<Ipv4Addr>,
    /// A node that has not reported for this long is marked down.
    pub node_deadline_secs: u64,
    /// How long the desired-state long poll is held.
    pub long_poll_secs: u64,
}

impl Default for Ec2Config {
    fn default() -> Self {
        Ec2Config {
            clusters: vec!["cluster1".to_string()],
            cluster_secret: "mallee-cluster-secret".to_string(),
            admit_macs: Vec::new(),
            public_ips: (10..42).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect(),
            node_deadline_secs: 60,
            long_poll_secs: 20,
        }
    }
}

/// `admit_macs`: each entry a NIC's MAC (`52:54:00:12:34:56`); the error names the entry that
/// is not.
fn admit_macs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Mac>, D::Error> {
    let texts = Vec::<String>::deserialize(d)?;
    (texts.iter().enumerate())
        .map(|(n, text)| {
            let bad = |why: String| {
                serde::de::Error::custom(format!("admit_macs entry {} ({text:?}): {why}", n + 1))
            };
            let mac: Mac = text
                .parse()
                .map_err(|e: mallee_proto::BadMac| bad(e.to_string()))?;
            if mac.is_multicast() {
                return Err(bad("a multicast address is never a NIC's own".into()));
            }
            Ok(mac)
        })
        .collect()
}

/// How instances are networked (Eucalyptus's `VNET_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum NetMode {
    /// A network per security group: its own VLAN tag and subnet slice, the frontend its
    /// gateway, NAT for public addresses, the group's rules enforced.
    #[serde(rename = "MANAGED")]
    Managed,
    /// The same addressing, NAT and rules on one untagged instance bridge.
    #[serde(rename = "MANAGED-NOVLAN")]
    ManagedNoVlan,
    /// Taps bridged onto the node's NIC; the site's DHCP server hands out addresses.
    #[serde(rename = "SYSTEM")]
    System,
}

impl NetMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetMode::Managed => "MANAGED",
            NetMode::ManagedNoVlan => "MANAGED-NOVLAN",
            NetMode::System => "SYSTEM",
        }
    }
}

/// An inclusive range of 802.1Q tags, written `"100-199"` (or one tag, `"100"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VlanRange {
    pub first: u16,
    pub last: u16,
}

impl std::fmt::Display for VlanRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl From<VlanRange> for String {
    fn from(r: VlanRange) -> String {
        r.to_string()
    }
}

impl TryFrom<String> for VlanRange {
    type Error = String;

    fn try_from(s: String) -> Result<VlanRange, String> {
        let (first, last) = parse_range(&s, "VLAN range", "a tag", 1..=4094, "100-199")?;
        Ok(VlanRange { first, last })
    }
}

/// `"A-B"` (or `"A"`) as an inclusive range within `valid`; errors name `what` and show
/// `example`.
fn parse_range(
    s: &str,
    what: &str,
    one: &str,
    valid: std::ops::RangeInclusive<u16>,
    example: &str,
) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let number = |t: &str| {
        t.trim()
            .parse::<u16>()
            .ok()
            .filter(|n| valid.contains(n))
            .ok_or_else(|| {
                format!(
                    "{what} {s:?}: {t:?} is not {one} in {}-{} (write \"{example}\")",
                    valid.start(),
                    valid.end()
                )
            })
    };
    let (first, last) = (number(a)?, number(b)?);
    if first > last {
        return Err(format!("{what} {s:?} runs backwards"));
    }
    Ok((first, last))
}

/// The `[storage]` table: where the storage controller exports attached volumes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// The NIC AoE exports are served on; unset: the `[pxe]` private NIC.
    pub interface: Option<String>,
    /// The AoE shelves exports may use (each slot but 255 of each).
    pub shelves: ShelfRange,
}

/// The AoE shelves volume exports may use, written `"100-109"` (or one shelf, `"100"`); every
/// slot of a shelf but 255 (the broadcast slot) is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ShelfRange {
    pub first: u16,
    pub last: u16,
}

impl Default for ShelfRange {
    fn default() -> Self {
        ShelfRange {
            first: 100,
            last: 109,
        }
    }
}

impl std::fmt::Display for ShelfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl From<ShelfRange> for String {
    fn from(r: ShelfRange) -> String {
        r.to_string()
    }
}

impl TryFrom<String> for ShelfRange {
    type Error = String;

    fn try_from(s: String) -> Result<ShelfRange, String> {
        let (first, last) = parse_range(&s, "AoE shelf range", "a shelf", 0..=65534, "100-109")?;
        Ok(ShelfRange { first, last })
    }
}

/// The `[network]` table, every field defaulted and checked as it is read.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "NetworkToml")]
pub struct NetworkConfig {
    pub mode: NetMode,
    /// Tags MANAGED mode may give networks; no other tag is ever used.
    pub vlans: VlanRange,
    /// The private address space the networks' slices are cut from (`VNET_SUBNET`).
    pub subnet: Ipv4Net,
    /// Addresses per network (`VNET_ADDRSPERNET`): a power of two, 8 or more. The first
    /// address of a slice is its network, the next the frontend's gateway, the last broadcast.
    pub addrs_per_net: u32,
    /// DNS servers the guests are told of by their DHCP answer.
    pub dns: Vec<Ipv4Addr>,
    /// The frontend's NIC for public addresses; unset: the NIC whose subnet holds each.
    pub public_interface: Option<String>,
}

/// `[network]` as written, before it is checked.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct NetworkToml {
    mode: NetMode,
    vlans: VlanRange,
    subnet: Ipv4Net,
    addrs_per_net: u32,
    dns: Vec<Ipv4Addr>,
    public_interface: Option<String>,
}

impl Default for NetworkToml {
    fn default() -> Self {
        NetworkToml {
            mode: NetMode::Managed,
            vlans: VlanRange {
                first: 100,
                last: 199,
            },
            subnet: Ipv4Net::new(Ipv4Addr::new(172, 31, 0, 0), 16).expect("a /16"),
            addrs_per_net: 32,
            dns: Vec::new(),
            public_interface: None,
        }
    }
}

impl TryFrom<NetworkToml> for NetworkConfig {
    type Error = String;

    fn try_from(t: NetworkToml) -> Result<NetworkConfig, String> {
        let n = t.addrs_per_net;
        if !n.is_power_of_two() || n < 8 {
            return Err(format!(
                "addrs_per_net = {n}: it must be a power of two, 8 or more"
            ));
        }
        if t.subnet.network() != t.subnet.addr() {
            return Err(format!(
                "subnet = \"{}\" has host bits set; write \"{}\"",
                t.subnet,
                t.subnet.trunc()
            ));
        }
        let size = 1u64 << (32 - u32::from(t.subnet.prefix_len()));
        if u64::from(n) > size {
            return Err(format!(
                "addrs_per_net = {n} is more than subnet {} holds ({size})",
                t.subnet
            ));
        }
        Ok(NetworkConfig {
            mode: t.mode,
            vlans: t.vlans,
            subnet: t.subnet,
            addrs_per_net: n,
            dns: t.dns,
            public_interface: t.public_interface,
        })
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig::try_from(NetworkToml::default()).expect("the defaults are valid")
    }
}

impl NetworkConfig {
    /// How many networks the subnet holds.
    pub fn slices(&self) -> u32 {
        let size = 1u64 << (32 - u32::from(self.subnet.prefix_len()));
        (size / u64::from(self.addrs_per_net)).min(u64::from(u32::MAX)) as u32
    }

    /// Slice `index` of the subnet.
    pub fn slice(&self, index: u32) -> Ipv4Net {
        let base = u32::from(self.subnet.network()) + index * self.addrs_per_net;
        let prefix = 32 - self.addrs_per_net.trailing_zeros() as u8;
        Ipv4Net::new(Ipv4Addr::from(base), prefix).expect("prefix from a power of two")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admit_macs_default_to_none_and_parse_in_either_case() {
        assert!(Ec2Config::default().admit_macs.is_empty());
        let c = crate::config::Config::parse(
            "[ec2]\nadmit_macs = [\"52:54:00:12:34:56\", \"52-54-00-AB-CD-EF\"]\n",
        )
        .unwrap();
        let shown: Vec<String> = c.ec2.admit_macs.iter().map(Mac::to_string).collect();
        assert_eq!(shown, ["52:54:00:12:34:56", "52:54:00:ab:cd:ef"]);
    }

    #[test]
    fn a_bad_admit_macs_entry_is_a_config_error_naming_it() {
        for (text, says) in [
            (
                "[\"52:54:00:12:34:56\", \"52:54:00:12:34\"]",
                "admit_macs entry 2 (\"52:54:00:12:34\"): `52:54:00:12:34` is not a MAC address",
            ),
            (
                "[\"01:00:5e:00:00:01\"]",
                "admit_macs entry 1 (\"01:00:5e:00:00:01\"): a multicast",
            ),
            ("\"52:54:00:12:34:56\"", "a sequence"),
        ] {
            let e = crate::config::Config::parse(&format!("[ec2]\nadmit_macs = {text}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
