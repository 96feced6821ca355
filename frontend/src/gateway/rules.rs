//! The gateway's nftables ruleset, rendered from the instance networks and their security
//! groups (pure: no I/O). Traffic leaving an instance network goes anywhere but the private
//! management segment; traffic entering one passes its group's ingress rules, checked on every
//! packet of the flow's original direction (so a revoked rule stops a flow at once) while
//! replies to flows the instances opened pass; instances reach the frontend itself only for
//! ping and the API. Traffic between instances of one network stays on its VLAN and never
//! crosses the gateway (as in Eucalyptus): a group's rules filter what comes from elsewhere.
//! An instance in more than one group sits on its first group's network; its other groups'
//! rules let traffic in to its address alone, and it counts as a member of each of its groups
//! where a rule names a source group (the union of its groups' rules, as in EC2).
//! Untagged networks (MANAGED-NOVLAN) share the private NIC, so there a network is told by its
//! subnet instead of its link; they share one layer-2 segment too, so a guest that sends
//! straight to another network's MAC bypasses the gateway, as in the original's NOVLAN mode.
//! Only ids and numbers are written, never a user's names, so nothing a user types can
//! become a rule.

use crate::cloud::model::{Rule, SecurityGroup, Source};
use crate::cloud::networks::Network;
use ipnet::Ipv4Net;
use mallee_proto::gateway::link_name;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;

/// What the rules are made from.
pub struct Inputs<'a> {
    /// The private NIC (nodes and the frontend's own services): instances never reach it.
    pub private_interface: &'a str,
    /// The private space all networks are cut from: instances without a public address
    /// reach the outside through the frontend's own address.
    pub subnet: Ipv4Net,
    /// `(private, public)` address of every instance with a public address.
    pub nat: &'a [(Ipv4Addr, Ipv4Addr)],
    /// The API port instances may reach on their gateway address.
    pub api_port: u16,
    pub networks: &'a [Network],
    pub groups: &'a [SecurityGroup],
    /// Every live instance in more than one group.
    pub members: &'a [Member],
}

/// A live instance in more than one group.
pub struct Member {
    /// Its private address (on its first group's network).
    pub address: Ipv4Addr,
    /// Its groups after the first.
    pub groups: Vec<String>,
}

/// Who is in each group, as address matches: its network's subnet, and the address of every
/// instance that has it as another group.
fn group_members<'a>(inputs: &'a Inputs<'_>) -> BTreeMap<&'a str, Vec<Ipv4Net>> {
    let mut members: BTreeMap<&str, Vec<Ipv4Net>> = BTreeMap::new();
    for n in inputs.networks {
        members.entry(&n.group_id).or_default().push(n.subnet);
    }
    for m in inputs.members {
        for g in &m.groups {
            let host = Ipv4Net::from(m.address);
            members.entry(g).or_default().push(host);
        }
    }
    members
}

/// The chain holding network `n`'s ingress rules: by VLAN tag, or by slice when untagged.
fn ingress_chain(n: &Network) -> String {
    match n.vlan {
        Some(vlan) => format!("ingress_{vlan}"),
        None => format!("ingress_s{}", n.slice),
    }
}

/// The nft match for packets leaving the gateway into network `n`: out of its VLAN link, or
/// (untagged, MANAGED-NOVLAN) out of the private NIC to its subnet.
fn into_network(n: &Network, private: &str) -> String {
    match n.vlan {
        Some(vlan) => format!("oifname \"{}\"", link_name(vlan)),
        None => format!("oifname \"{private}\" ip daddr {}", n.subnet),
    }
}

/// An nft set of `items` (`{ a, b }`), or the one item alone.
fn set(items: &[String]) -> String {
    match items {
        [one] => one.clone(),
        _ => format!("{{ {} }}", items.join(", ")),
    }
}

/// The matches for packets coming from instances, one per kind of network present: in on
/// the VLAN links, or in on the private NIC from an untagged network's subnet.
fn from_instances(inputs: &Inputs<'_>) -> Vec<String> {
    let (tagged, untagged): (Vec<&Network>, Vec<&Network>) =
        inputs.networks.iter().partition(|n| n.vlan.is_some());
    let links: Vec<String> = (tagged.iter().filter_map(|n| n.vlan))
        .map(|v| format!("\"{}\"", link_name(v)))
        .collect();
    let subnets: Vec<String> = untagged.iter().map(|n| n.subnet.to_string()).collect();
    let mut out = Vec::new();
    if !links.is_empty() {
        out.push(format!("iifname {}", set(&links)));
    }
    if !subnets.is_empty() {
        out.push(format!(
            "iifname \"{}\" ip saddr {}",
            inputs.private_interface,
            set(&subnets)
        ));
    }
    out
}

/// The nft match for a rule's protocol and ports (empty for every protocol).
fn protocol_match(rule: &Rule) -> String {
    let ports = |from: Option<i64>, to: Option<i64>| match (from, to) {
        (Some(f), Some(t)) if f == t => format!(" dport {f}"),
        (Some(f), Some(t)) if (f, t) != (0, 65535) => format!(" dport {f}-{t}"),
        _ => String::new(),
    };
    match rule.protocol.as_str() {
        p @ ("tcp" | "udp") => format!("{p}{}", ports(rule.from, rule.to)),
        "icmp" => {
            let mut m = "ip protocol icmp".to_string();
            if let Some(t) = rule.from.filter(|t| *t >= 0) {
                let _ = write!(m, " icmp type {t}");
                if let Some(c) = rule.to.filter(|c| *c >= 0) {
                    let _ = write!(m, " icmp code {c}");
                }
            }
            m
        }
        _ => String::new(),
    }
}

/// Where a rule lets traffic in from, as an nft address match: `Some("")` for anywhere, `None`
/// when it matches nothing now (a source group without instances).
fn source_match(source: &Source, members: &BTreeMap<&str, Vec<Ipv4Net>>) -> Option<String> {
    let nets = match source {
        Source::Cidr(c) => vec![c.parse::<Ipv4Net>().ok()?.trunc()],
        Source::Group { id, .. } => members.get(id.as_str())?.clone(),
    };
    Some(if nets.iter().any(|n| n.prefix_len() == 0) {
        String::new()
    } else {
        let nets: Vec<String> = nets.iter().map(Ipv4Net::to_string).collect();
        format!("ip saddr {}", set(&nets))
    })
}

/// The rule lines for `rules`, each starting with `to` (empty: the whole network).
fn ingress_rules(to: &str, rules: &[Rule], members: &BTreeMap<&str, Vec<Ipv4Net>>) -> Vec<String> {
    rules
        .iter()
        .filter_map(|r| {
            let parts: Vec<String> = [
                to.to_string(),
                source_match(&r.source, members)?,
                protocol_match(r),
            ]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect();
            Some(
                format!("{} accept", parts.join(" "))
                    .trim_start()
                    .to_string(),
            )
        })
        .collect()
}

/// The whole ruleset (table `inet mallee`) for `inputs`.
pub fn ruleset(inputs: &Inputs<'_>) -> String {
    let private = inputs.private_interface;
    let members = group_members(inputs);
    let untagged: Vec<String> = (inputs.networks.iter())
        .filter(|n| n.vlan.is_none())
        .map(|n| n.subnet.to_string())
        .collect();
    let sources = from_instances(inputs);
    let mut s = String::from("table inet mallee {\n");
    s += "\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n";
    s += "\t\tct state invalid drop\n";
    // From outside the instance networks only what was addressed to a public address (and
    // so DNATed) may enter one: private addresses are not reachable from the sides.
    let undnated = "ct direction original ct status & dnat == 0 drop";
    let _ = writeln!(
        s,
        "\t\toifname \"{LINKS}\" iifname != \"{LINKS}\" {undnated}"
    );
    if !untagged.is_empty() {
        let to = format!("ip daddr {}", set(&untagged));
        let _ = writeln!(s, "\t\t{to} iifname != \"{private}\" {undnated}");
        let from = format!("ip saddr != {}", set(&untagged));
        let _ = writeln!(s, "\t\t{to} {from} {undnated}");
    }
    for n in inputs.networks {
        let _ = writeln!(
            s,
            "\t\t{} jump {}",
            into_network(n, private),
            ingress_chain(n)
        );
    }
    for from in &sources {
        let _ = writeln!(s, "\t\t{from} oifname != \"{private}\" accept");
    }
    s += "\t}\n";
    s += "\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n";
    for from in &sources {
        let _ = writeln!(s, "\t\t{from} jump from_instances");
    }
    s += "\t}\n";
    s += "\tchain from_instances {\n\t\tct state established,related accept\n";
    s += "\t\ticmp type echo-request accept\n";
    let _ = writeln!(s, "\t\ttcp dport {} accept", inputs.api_port);
    s += "\t\tcounter drop\n\t}\n";
    for net in inputs.networks {
        let _ = writeln!(s, "\tchain {} {{", ingress_chain(net));
        let _ = writeln!(s, "\t\t# {} {}", net.group_id, net.subnet);
        s += "\t\tct direction reply accept\n\t\tct state related accept\n";
        let rules_of = |id: &str| {
            let group = inputs.groups.iter().find(|g| g.id == id);
            group.map_or(&[][..], |g| &g.rules)
        };
        let mut lines = ingress_rules("", rules_of(&net.group_id), &members);
        for m in inputs
            .members
            .iter()
            .filter(|m| net.subnet.contains(&m.address))
        {
            let to = format!("ip daddr {}", m.address);
            for g in &m.groups {
                lines.extend(ingress_rules(&to, rules_of(g), &members));
            }
        }
        for line in lines {
            let _ = writeln!(s, "\t\t{line}");
        }
        s += "\t\tcounter drop\n\t}\n";
    }
    s += "}\n";
    if !inputs.networks.is_empty() {
        s += &nat(inputs);
    }
    s
}

/// Interface pattern of every gateway link.
const LINKS: &str = "mgw*";

/// The `ip mallee_nat` table: each public address DNATed to its instance, each instance's
/// traffic to the outside SNATed to its public address, the others' masqueraded behind the
/// frontend's. The outside is anything but the private NIC and the gateway links.
fn nat(inputs: &Inputs<'_>) -> String {
    let pairs = |f: &dyn Fn(&(Ipv4Addr, Ipv4Addr)) -> String| {
        inputs.nat.iter().map(f).collect::<Vec<_>>().join(", ")
    };
    let outside = format!(
        "oifname != \"{}\" oifname != \"{LINKS}\"",
        inputs.private_interface
    );
    let mut s = String::from("table ip mallee_nat {\n");
    s += "\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n";
    if !inputs.nat.is_empty() {
        let map = pairs(&|(private, public)| format!("{public} : {private}"));
        let _ = writeln!(s, "\t\tdnat to ip daddr map {{ {map} }}");
    }
    s += "\t}\n";
    s += "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n";
    if !inputs.nat.is_empty() {
        let map = pairs(&|(private, public)| format!("{private} : {public}"));
        let _ = writeln!(s, "\t\t{outside} snat to ip saddr map {{ {map} }}");
    }
    let _ = writeln!(
        s,
        "\t\t{outside} ip saddr {} masquerade",
        inputs.subnet.trunc()
    );
    s += "\t}\n}\n";
    s
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
