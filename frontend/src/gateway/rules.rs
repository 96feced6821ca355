//! The gateway's nftables ruleset, rendered from the instance networks and their security
//! groups (pure: no I/O). Traffic leaving an instance network goes anywhere but the private
//! management segment; traffic entering one passes its group's ingress rules, checked on every
//! packet of the flow's original direction (so a revoked rule stops a flow at once) while
//! replies to flows the instances opened pass; instances reach the frontend itself only for
//! ping and the API. Traffic between instances of one network stays on its VLAN and never
//! crosses the gateway (as in Eucalyptus): a group's rules filter what comes from elsewhere.
//! Only ids and numbers are written, never a user's names, so nothing a user types can
//! become a rule.

use crate::cloud::model::{Rule, SecurityGroup, Source};
use crate::cloud::networks::Network;
use ipnet::Ipv4Net;
use mallee_proto::gateway::link_name;
use std::collections::BTreeMap;
use std::fmt::Write;

/// What the rules are made from.
pub struct Inputs<'a> {
    /// The private NIC (nodes and the frontend's own services): instances never reach it.
    pub private_interface: &'a str,
    /// The API port instances may reach on their gateway address.
    pub api_port: u16,
    pub networks: &'a [Network],
    pub groups: &'a [SecurityGroup],
}

/// The chain holding network `n`'s ingress rules.
fn ingress_chain(vlan: u16) -> String {
    format!("ingress_{vlan}")
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
/// when it matches nothing now (a source group without a network: it has no instances).
fn source_match(source: &Source, subnets: &BTreeMap<&str, Ipv4Net>) -> Option<String> {
    let net = match source {
        Source::Cidr(c) => c.parse::<Ipv4Net>().ok()?.trunc(),
        Source::Group { id, .. } => *subnets.get(id.as_str())?,
    };
    Some(if net.prefix_len() == 0 {
        String::new()
    } else {
        format!("ip saddr {net}")
    })
}

/// The rule lines of one network's ingress chain.
fn ingress_rules(rules: &[Rule], subnets: &BTreeMap<&str, Ipv4Net>) -> Vec<String> {
    rules
        .iter()
        .filter_map(|r| {
            let parts: Vec<String> = [source_match(&r.source, subnets)?, protocol_match(r)]
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
    let tagged: Vec<(&Network, u16)> = (inputs.networks.iter())
        .filter_map(|n| n.vlan.map(|v| (n, v)))
        .collect();
    let subnets: BTreeMap<&str, Ipv4Net> = (inputs.networks.iter())
        .map(|n| (n.group_id.as_str(), n.subnet))
        .collect();
    let links: Vec<String> = tagged
        .iter()
        .map(|(_, v)| format!("\"{}\"", link_name(*v)))
        .collect();
    let mut s = String::from("table inet mallee {\n");
    s += "\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n";
    s += "\t\tct state invalid drop\n";
    for (_, v) in &tagged {
        let _ = writeln!(
            s,
            "\t\toifname \"{}\" jump {}",
            link_name(*v),
            ingress_chain(*v)
        );
    }
    if !links.is_empty() {
        let _ = writeln!(
            s,
            "\t\tiifname {{ {} }} oifname != \"{}\" accept",
            links.join(", "),
            inputs.private_interface
        );
    }
    s += "\t}\n";
    s += "\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n";
    if !links.is_empty() {
        let _ = writeln!(
            s,
            "\t\tiifname {{ {} }} jump from_instances",
            links.join(", ")
        );
    }
    s += "\t}\n";
    s += "\tchain from_instances {\n\t\tct state established,related accept\n";
    s += "\t\ticmp type echo-request accept\n";
    let _ = writeln!(s, "\t\ttcp dport {} accept", inputs.api_port);
    s += "\t\tcounter drop\n\t}\n";
    for (net, v) in &tagged {
        let _ = writeln!(s, "\tchain {} {{", ingress_chain(*v));
        let _ = writeln!(s, "\t\t# {} {}", net.group_id, net.subnet);
        s += "\t\tct direction reply accept\n\t\tct state related accept\n";
        let group = inputs.groups.iter().find(|g| g.id == net.group_id);
        for line in ingress_rules(group.map_or(&[], |g| &g.rules), &subnets) {
            let _ = writeln!(s, "\t\t{line}");
        }
        s += "\t\tcounter drop\n\t}\n";
    }
    s += "}\n";
    s
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
