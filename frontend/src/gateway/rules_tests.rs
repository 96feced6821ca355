use super::*;
use crate::cloud::config::NetworkConfig;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

fn network(group: &str, vlan: impl Into<Option<u16>>, slice: u32) -> Network {
    let subnet = NetworkConfig::default().slice(slice);
    Network {
        group_id: group.into(),
        group_name: "name; with \"quotes\"\nand a newline".into(),
        owner: "alice".into(),
        vlan: vlan.into(),
        slice,
        subnet,
        gateway: std::net::Ipv4Addr::from(u32::from(subnet.network()) + 1),
        created_ms: 0,
    }
}

fn rule(protocol: &str, from: Option<i64>, to: Option<i64>, source: Source) -> Rule {
    Rule {
        protocol: protocol.into(),
        from,
        to,
        source,
    }
}

fn group(id: &str, rules: Vec<Rule>) -> SecurityGroup {
    SecurityGroup {
        id: id.into(),
        owner: "alice".into(),
        name: "x\n}}} table evil".into(),
        description: String::new(),
        rules,
    }
}

fn from_group(id: &str) -> Source {
    Source::Group {
        id: id.into(),
        name: "b".into(),
        owner: "alice".into(),
    }
}

/// Group A lets B in on tcp 7000, anyone on 22, pings from 10/8, and a group with no
/// network (no instances) on udp; B has no rules.
fn sample() -> (Vec<Network>, Vec<SecurityGroup>) {
    let nets = vec![network("sg-a", 100, 0), network("sg-b", 101, 1)];
    let groups = vec![
        group(
            "sg-a",
            vec![
                rule("tcp", Some(7000), Some(7000), from_group("sg-b")),
                rule("tcp", Some(22), Some(22), Source::Cidr("0.0.0.0/0".into())),
                rule("icmp", Some(8), Some(-1), Source::Cidr("10.1.2.3/8".into())),
                rule("udp", Some(1), Some(2), from_group("sg-idle")),
                rule("-1", None, None, Source::Cidr("192.0.2.0/24".into())),
            ],
        ),
        group("sg-b", vec![]),
    ];
    (nets, groups)
}

const NAT: &[(Ipv4Addr, Ipv4Addr)] = &[
    (
        Ipv4Addr::new(172, 31, 0, 2),
        Ipv4Addr::new(198, 51, 100, 10),
    ),
    (
        Ipv4Addr::new(172, 31, 0, 34),
        Ipv4Addr::new(198, 51, 100, 11),
    ),
];

fn render(nets: &[Network], groups: &[SecurityGroup]) -> String {
    render_nat(nets, groups, NAT)
}

fn render_nat(nets: &[Network], groups: &[SecurityGroup], nat: &[(Ipv4Addr, Ipv4Addr)]) -> String {
    render_with(nets, groups, nat, &[])
}

fn render_with(
    nets: &[Network],
    groups: &[SecurityGroup],
    nat: &[(Ipv4Addr, Ipv4Addr)],
    members: &[Member],
) -> String {
    ruleset(&Inputs {
        private_interface: "eth1",
        subnet: NetworkConfig::default().subnet,
        nat,
        api_port: 8773,
        networks: nets,
        groups,
        members,
    })
}

/// Group `sg-web` (no network of its own) lets anyone in on tcp 80 and its members on 9000;
/// instance 172.31.0.5 is in sg-a and sg-web, 172.31.0.40 in sg-b and sg-web.
fn with_web() -> (Vec<Network>, Vec<SecurityGroup>, Vec<Member>) {
    let (nets, mut groups) = sample();
    groups.push(group(
        "sg-web",
        vec![
            rule("tcp", Some(80), Some(80), Source::Cidr("0.0.0.0/0".into())),
            rule("tcp", Some(9000), Some(9000), from_group("sg-web")),
        ],
    ));
    // sg-b lets sg-web's members in on udp 53.
    groups[1]
        .rules
        .push(rule("udp", Some(53), Some(53), from_group("sg-web")));
    let members = vec![
        Member {
            address: Ipv4Addr::new(172, 31, 0, 5),
            groups: vec!["sg-web".into()],
        },
        Member {
            address: Ipv4Addr::new(172, 31, 0, 40),
            groups: vec!["sg-web".into()],
        },
    ];
    (nets, groups, members)
}

#[test]
fn an_instance_in_several_groups_gets_every_groups_rules_and_counts_as_their_member() {
    let (nets, groups, members) = with_web();
    let text = render_with(&nets, &groups, NAT, &members);
    // sg-a's own rules (as without members), then sg-web's, for its member's address alone.
    let a = "\t\tip saddr 192.0.2.0/24 accept
\t\tip daddr 172.31.0.5 tcp dport 80 accept
\t\tip daddr 172.31.0.5 ip saddr { 172.31.0.5/32, 172.31.0.40/32 } tcp dport 9000 accept
\t\tcounter drop
";
    assert!(text.contains(a), "{text}");
    let b = "\tchain ingress_101 {
\t\t# sg-b 172.31.0.32/27
\t\tct direction reply accept
\t\tct state related accept
\t\tip saddr { 172.31.0.5/32, 172.31.0.40/32 } udp dport 53 accept
\t\tip daddr 172.31.0.40 tcp dport 80 accept
\t\tip daddr 172.31.0.40 ip saddr { 172.31.0.5/32, 172.31.0.40/32 } tcp dport 9000 accept
\t\tcounter drop
\t}
";
    assert!(text.contains(b), "{text}");
    // Without members, sg-web's rules reach no one and sg-b's rule naming it matches nothing.
    let alone = render(&nets, &groups);
    assert!(
        !alone.contains("dport 80") && !alone.contains("dport 53"),
        "{alone}"
    );
}

#[test]
fn a_groups_rules_become_its_networks_ingress_chain() {
    let (nets, groups) = sample();
    let text = render(&nets, &groups);
    let expected = "\tchain ingress_100 {
\t\t# sg-a 172.31.0.0/27
\t\tct direction reply accept
\t\tct state related accept
\t\tip saddr 172.31.0.32/27 tcp dport 7000 accept
\t\ttcp dport 22 accept
\t\tip saddr 10.0.0.0/8 ip protocol icmp icmp type 8 accept
\t\tip saddr 192.0.2.0/24 accept
\t\tcounter drop
\t}
\tchain ingress_101 {
\t\t# sg-b 172.31.0.32/27
\t\tct direction reply accept
\t\tct state related accept
\t\tcounter drop
\t}
";
    assert!(text.contains(expected), "{text}");
    for line in [
        "\t\toifname \"mgw100\" jump ingress_100\n",
        "\t\toifname \"mgw101\" jump ingress_101\n",
        "\t\tiifname { \"mgw100\", \"mgw101\" } oifname != \"eth1\" accept\n",
        "\t\tiifname { \"mgw100\", \"mgw101\" } jump from_instances\n",
        "\t\ttcp dport 8773 accept\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from {text}");
    }
    // Users' names never reach the rules.
    assert!(!text.contains("evil") && !text.contains("quotes"), "{text}");
}

#[test]
fn public_addresses_are_dnated_in_and_snated_out_the_others_masqueraded() {
    let (nets, groups) = sample();
    let text = render(&nets, &groups);
    for line in [
        "\t\tdnat to ip daddr map { 198.51.100.10 : 172.31.0.2, 198.51.100.11 : 172.31.0.34 }\n",
        "\t\toifname != \"eth1\" oifname != \"mgw*\" snat to ip saddr map { 172.31.0.2 : 198.51.100.10, 172.31.0.34 : 198.51.100.11 }\n",
        "\t\toifname != \"eth1\" oifname != \"mgw*\" ip saddr 172.31.0.0/16 masquerade\n",
        "\t\toifname \"mgw*\" iifname != \"mgw*\" ct direction original ct status & dnat == 0 drop\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from {text}");
    }
    let none = render_nat(&nets, &groups, &[]);
    assert!(!none.contains("map {"), "{none}");
    assert!(none.contains("masquerade"), "{none}");
}

#[test]
fn no_networks_still_make_a_ruleset_without_empty_sets() {
    let text = render(&[], &[]);
    assert!(
        !text.contains("{ }") && !text.contains("iifname {"),
        "{text}"
    );
    assert!(text.contains("policy drop"), "{text}");
}

#[test]
fn port_ranges_and_every_port() {
    let r = |f, t| protocol_match(&rule("udp", Some(f), Some(t), from_group("x")));
    assert_eq!(r(53, 53), "udp dport 53");
    assert_eq!(r(1000, 2000), "udp dport 1000-2000");
    assert_eq!(r(0, 65535), "udp");
    let icmp = |f, t| protocol_match(&rule("icmp", Some(f), Some(t), from_group("x")));
    assert_eq!(icmp(-1, -1), "ip protocol icmp");
    assert_eq!(icmp(3, 4), "ip protocol icmp icmp type 3 icmp code 4");
}

/// MANAGED-NOVLAN: the networks share the private NIC, so each is told by its subnet; the
/// same ingress rules, the same NAT.
fn untagged() -> (Vec<Network>, Vec<SecurityGroup>) {
    let (mut nets, groups) = sample();
    for n in &mut nets {
        n.vlan = None;
    }
    (nets, groups)
}

#[test]
fn untagged_networks_are_told_by_subnet_on_the_private_nic() {
    let (nets, groups) = untagged();
    let text = render(&nets, &groups);
    for line in [
        "\t\toifname \"eth1\" ip daddr 172.31.0.0/27 jump ingress_s0\n",
        "\t\toifname \"eth1\" ip daddr 172.31.0.32/27 jump ingress_s1\n",
        "\t\tip daddr { 172.31.0.0/27, 172.31.0.32/27 } iifname != \"eth1\" ct direction original ct status & dnat == 0 drop\n",
        "\t\tip daddr { 172.31.0.0/27, 172.31.0.32/27 } ip saddr != { 172.31.0.0/27, 172.31.0.32/27 } ct direction original ct status & dnat == 0 drop\n",
        "\t\tiifname \"eth1\" ip saddr { 172.31.0.0/27, 172.31.0.32/27 } oifname != \"eth1\" accept\n",
        "\t\tiifname \"eth1\" ip saddr { 172.31.0.0/27, 172.31.0.32/27 } jump from_instances\n",
        "\tchain ingress_s0 {\n\t\t# sg-a 172.31.0.0/27\n",
        "\t\tip saddr 172.31.0.32/27 tcp dport 7000 accept\n",
        "\t\tdnat to ip daddr map { 198.51.100.10 : 172.31.0.2, 198.51.100.11 : 172.31.0.34 }\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from {text}");
    }
    // The drops that keep the sides out come before any jump into a network.
    let drop = text.find("iifname != \"eth1\" ct direction").unwrap();
    assert!(drop < text.find("jump ingress_s0").unwrap(), "{text}");
    assert!(!text.contains("iifname {"), "{text}");
}

/// The kernel's own parser accepts the rendered ruleset (`nft -c`: checked, not applied), in
/// the transaction init wraps it in. Skipped where nft is not installed.
#[test]
fn nft_accepts_the_ruleset() {
    let nft = "/usr/sbin/nft";
    if !std::path::Path::new(nft).exists() || !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root and {nft} (Debian's nftables)");
        return;
    }
    let (nets, groups) = sample();
    let (flat, flat_groups) = untagged();
    let (web, web_groups, members) = with_web();
    for text in [
        render_with(&web, &web_groups, NAT, &members),
        render(&nets, &groups),
        render(&flat, &flat_groups),
        render(&flat[..1], &flat_groups),
        render_nat(&nets, &groups, &[]),
        render(&[], &[]),
    ] {
        let text = format!(
            "table inet mallee\ndelete table inet mallee\ntable ip mallee_nat\ndelete table ip mallee_nat\n{text}"
        );
        let mut child = Command::new(nft)
            .args(["-c", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft refused:\n{}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
