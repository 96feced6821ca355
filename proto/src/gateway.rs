//! The frontend's gateway, the daemon ↔ `mallee-init` contract on the appliance: the daemon
//! (unprivileged) writes the whole desired gateway — the gateway address of each active instance
//! network (on a VLAN link of its own, or on the private NIC itself when untagged), the public
//! addresses, and the nftables ruleset — as [`Gateway`] into
//! its gateway directory; init (root) applies it and answers with [`Applied`]. Level-triggered:
//! each file is the complete state, so a restarted daemon or a rebooted appliance converges by
//! writing or reading it again.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The desired gateway, in the gateway directory (written whole, then renamed into place).
pub const GATEWAY_FILE: &str = "gateway.json";
/// What init applied last, beside it.
pub const APPLIED_FILE: &str = "applied.json";
/// Prefix of every link the gateway owns; init removes those no longer wanted.
pub const LINK_PREFIX: &str = "mgw";
/// The nftables tables the ruleset may define (init refuses any other).
pub const TABLES: &[&str] = &["inet mallee", "ip mallee_nat"];

/// Everything the frontend's kernel should do for instance networks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gateway {
    /// Bumped by the daemon on every change; [`Applied::generation`] echoes it.
    pub generation: u64,
    /// The NIC that carries instance networks (the private NIC).
    pub interface: String,
    /// One gateway per active instance network.
    pub links: Vec<GatewayLink>,
    /// Public addresses the frontend answers for (DNAT/SNAT of instances' public addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<PublicSide>,
    /// The nftables ruleset (`nft -f` syntax) defining tables among [`TABLES`] only, with no
    /// `include`. init prefixes it with `table T` + `delete table T` for each of [`TABLES`] and
    /// feeds the whole to one `nft -f`: one transaction that replaces the previous rules or,
    /// failing, leaves them as they were.
    pub ruleset: String,
}

/// An instance network's gateway: `address/prefix` on the 802.1Q link of [`Gateway::interface`]
/// tagged `vlan`, named [`link_name`] (MANAGED), or on the interface itself beside its own
/// addresses when `vlan` is `None` (MANAGED-NOVLAN).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayLink {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    pub address: Ipv4Addr,
    pub prefix: u8,
}

/// The public addresses, each added as a /32 and announced with a gratuitous ARP on the public
/// NIC: the one named, or else (`None`) the NIC whose own subnet holds the address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicSide {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    pub addresses: Vec<Ipv4Addr>,
}

/// init's answer: which generation is in the kernel, or why it is not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub generation: u64,
    /// `None` when everything of `generation` was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The name of the link for `vlan` (`mgw100`): short enough for any NIC name (IFNAMSIZ).
pub fn link_name(vlan: u16) -> String {
    format!("{LINK_PREFIX}{vlan}")
}

/// The VLAN tag of a link the gateway owns, from its name.
pub fn link_vlan(name: &str) -> Option<u16> {
    name.strip_prefix(LINK_PREFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_round_trip_and_others_are_not_ours() {
        assert_eq!(link_name(4094), "mgw4094");
        assert_eq!(link_vlan(&link_name(100)), Some(100));
        assert_eq!(link_vlan("eth0"), None);
        assert_eq!(link_vlan("mgwx"), None);
    }

    #[test]
    fn a_gateway_round_trips_through_json() {
        let g = Gateway {
            generation: 7,
            interface: "eth1".into(),
            links: vec![GatewayLink {
                vlan: Some(100),
                address: Ipv4Addr::new(172, 31, 0, 1),
                prefix: 27,
            }],
            public: Some(PublicSide {
                interface: Some("eth0".into()),
                addresses: vec![Ipv4Addr::new(10, 0, 2, 100)],
            }),
            ruleset: "table inet mallee {\n}\n".into(),
        };
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(serde_json::from_str::<Gateway>(&json).unwrap(), g);
        let a: Applied = serde_json::from_str(r#"{"generation":7}"#).unwrap();
        assert_eq!(a.error, None);
    }
}
