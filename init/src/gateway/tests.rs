use super::nft::{check_ruleset, transaction, NftError};
use super::*;
use crate::net::link::{ifindex, AddressInfo};
use mallee_proto::gateway::{GatewayLink, PublicSide};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;

const HOST_NFT: &str = "/usr/sbin/nft";

/// Runs a command outside PID 1 (no reaper loop in tests): a plain `wait` on a thread.
fn spawn_waited(command: &mut Command) -> std::io::Result<Receiver<i32>> {
    let mut child = command.spawn()?;
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let code = child.wait().map_or(-1, |s| s.code().unwrap_or(-1));
        let _ = tx.send(code);
    });
    Ok(rx)
}

/// A ruleset shaped like the daemon's: a filter table with a forward chain matching on
/// conntrack, and a NAT table with DNAT/SNAT maps and masquerading.
const SAMPLE: &str = "table inet mallee {
\tchain forward {
\t\ttype filter hook forward priority filter; policy drop;
\t\tct state invalid drop
\t\toifname \"mgw*\" iifname != \"mgw*\" ct direction original ct status & dnat == 0 drop
\t\toifname \"mgw100\" jump in_100
\t\tiifname { \"mgw100\" } oifname != \"eth1\" accept
\t}
\tchain in_100 {
\t\t# sg-1 172.31.0.0/27
\t\tct direction reply accept
\t\tct state related accept
\t\tip saddr 0.0.0.0/0 tcp dport 22 accept
\t\tip protocol icmp icmp type echo-request accept
\t\tcounter drop
\t}
}
table ip mallee_nat {
\tchain prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tdnat to ip daddr map { 10.0.2.100 : 172.31.0.2 }
\t}
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\toifname != \"eth1\" oifname != \"mgw*\" snat to ip saddr map { 172.31.0.2 : 10.0.2.100 }
\t\toifname != \"eth1\" oifname != \"mgw*\" ip saddr 172.31.0.0/16 masquerade
\t}
}
";

#[test]
fn the_transaction_replaces_our_tables_then_adds_the_ruleset() {
    assert_eq!(
        transaction("table inet mallee {\n}\n"),
        "table inet mallee\ndelete table inet mallee\n\
         table ip mallee_nat\ndelete table ip mallee_nat\n\
         table inet mallee {\n}\n"
    );
    assert_eq!(
        transaction(""),
        "table inet mallee\ndelete table inet mallee\n\
         table ip mallee_nat\ndelete table ip mallee_nat\n",
        "an empty ruleset still deletes our tables"
    );
}

#[test]
fn the_daemons_kind_of_ruleset_is_accepted() {
    check_ruleset(SAMPLE).unwrap();
    check_ruleset("").unwrap();
    check_ruleset("table ip mallee_nat{\n}\nadd table inet mallee\n").unwrap();
}

#[test]
fn include_is_refused() {
    for text in [
        "include \"/etc/nftables.conf\"\n",
        "table inet mallee {\n\tinclude \"/tmp/x\"\n}\n",
        "table inet mallee { chain c { counter } }; include \"x\"",
    ] {
        assert!(
            matches!(check_ruleset(text), Err(NftError::Include)),
            "{text}"
        );
    }
}

#[test]
fn tables_other_than_ours_are_refused() {
    for (text, table) in [
        ("table ip filter {\n}\n", "ip filter"),
        ("table mallee {\n}\n", "mallee"),
        ("table inet mallee {\n} table ip evil {\n}\n", "ip evil"),
        (
            "table inet mallee {\n}\n}\ntable bridge mallee {\n}\n",
            "bridge mallee",
        ),
        ("add table inet other\n", "inet other"),
        ("delete table inet filter\n", "inet filter"),
        ("table inet mallee { }; flush table ip nat", "ip nat"),
    ] {
        match check_ruleset(text) {
            Err(NftError::ForeignTable(t)) => assert_eq!(t, table, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
    assert!(matches!(
        check_ruleset("flush ruleset\n"),
        Err(NftError::WholeRuleset)
    ));
}

#[test]
fn a_gratuitous_arp_names_the_address_as_sender_and_target() {
    let frame = arp::gratuitous_arp([2, 0, 0, 0, 0, 9], Ipv4Addr::new(10, 0, 2, 100));
    #[rustfmt::skip]
    let expected = [
        0, 1, 8, 0, 6, 4, 0, 1, // Ethernet, IPv4, lengths, request
        2, 0, 0, 0, 0, 9, 10, 0, 2, 100, // sender MAC and address
        0, 0, 0, 0, 0, 0, 10, 0, 2, 100, // unknown target MAC, the same address
    ];
    assert_eq!(frame, expected);
}

fn read_applied(dir: &Path) -> Applied {
    let text = std::fs::read_to_string(dir.join(APPLIED_FILE)).unwrap();
    serde_json::from_str(&text).expect(&text)
}

#[test]
fn bad_json_is_answered_with_generation_zero_and_nothing_applied() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(GATEWAY_FILE), "{\"generation\": 4, ").unwrap();
    // Applying anything would fail on this nft; the answer must be the parse error.
    let mut applier = Applier::new(Path::new("/nonexistent/nft"), spawn_waited);
    let outcome = applier.handle(dir.path());
    assert!(!outcome.retry, "a bad file waits for a change");
    let applied = read_applied(dir.path());
    assert_eq!(applied, outcome.applied);
    assert_eq!(applied.generation, 0);
    let error = applied.error.unwrap();
    assert!(error.contains("is not a gateway"), "{error}");
    assert!(!error.contains("nft"), "nothing was applied: {error}");
    let mode = std::fs::metadata(dir.path().join(APPLIED_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
}

#[test]
fn a_gateway_file_that_is_a_symlink_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("elsewhere.json");
    std::fs::write(
        &elsewhere,
        r#"{"generation":1,"interface":"x","links":[],"ruleset":""}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.path().join(GATEWAY_FILE)).unwrap();
    let mut applier = Applier::new(Path::new("/nonexistent/nft"), spawn_waited);
    let applied = applier.handle(dir.path()).applied;
    assert_eq!(applied.generation, 0);
    assert!(applied.error.is_some());
}

#[test]
fn the_answer_never_writes_through_a_link_at_its_temporary_name() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join(APPLIED_TEMP)).unwrap();
    let applied = Applied {
        generation: 9,
        error: None,
    };
    write_applied(dir.path(), &applied).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(read_applied(dir.path()), applied);
}

fn host_nft() -> Option<&'static Path> {
    let nft = Path::new(HOST_NFT);
    if nft.exists() {
        Some(nft)
    } else {
        eprintln!("skipped: {HOST_NFT} is absent (Debian's nftables)");
        None
    }
}

/// The real nft parses and checks (`-c`: nothing is committed) the transaction init builds.
#[test]
fn nft_accepts_the_transaction_in_check_mode() {
    let Some(nft) = host_nft() else { return };
    nft::run(nft, &["-c", "-f", "-"], &transaction(SAMPLE), spawn_waited)
        .unwrap_or_else(|e| panic!("{e}\n{}", transaction(SAMPLE)));
    nft::run(nft, &["-c", "-f", "-"], &transaction(""), spawn_waited).unwrap();
}

#[test]
fn nfts_complaint_becomes_the_error() {
    let Some(nft) = host_nft() else { return };
    let bad = "table inet mallee {\n\tchain c {\n\t\tnonsense here\n\t}\n}\n";
    match nft::run(nft, &["-c", "-f", "-"], &transaction(bad), spawn_waited) {
        Err(NftError::Failed { code, stderr, .. }) => {
            assert_ne!(code, 0);
            assert!(stderr.contains("nonsense"), "{stderr}");
        }
        other => panic!("{other:?}"),
    }
}

/// `nft list tables` in the calling thread's network namespace.
fn nft_tables(nft: &Path) -> String {
    let out = Command::new(nft).args(["list", "tables"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn gateway(generation: u64, public: Vec<Ipv4Addr>, ruleset: &str) -> Gateway {
    Gateway {
        generation,
        interface: "gwpriv".into(),
        links: vec![GatewayLink {
            vlan: Some(100),
            address: Ipv4Addr::new(172, 31, 0, 1),
            prefix: 27,
        }],
        public: Some(PublicSide {
            interface: Some("gwpub".into()),
            addresses: public,
        }),
        ruleset: ruleset.into(),
    }
}

/// Whether this kernel makes 802.1Q links (the test machine's may not: no 8021q).
fn kernel_has_vlans(nl: &mut Netlink, parent: u32) -> bool {
    match nl.new_vlan("vlanprobe", parent, 4000) {
        Ok(()) => {
            nl.del_link(ifindex("vlanprobe").unwrap()).unwrap();
            true
        }
        Err(e) => {
            eprintln!("note: this kernel makes no VLAN links ({e}); their part is not checked");
            false
        }
    }
}

/// The whole apply against the real kernel and nft in a private network namespace: links
/// (where the kernel has VLANs), public addresses, tables; then an empty gateway undoes it.
#[test]
fn a_gateway_is_applied_and_an_empty_one_undoes_it() {
    let Some(nft) = host_nft() else { return };
    crate::net::in_private_netns(
        "a_gateway_is_applied_and_an_empty_one_undoes_it",
        move || {
            let mut nl = Netlink::open().unwrap();
            for name in ["gwpriv", "gwpub", "mgw7"] {
                nl.new_bridge(name, None).unwrap();
                nl.set_up(ifindex(name).unwrap()).unwrap();
            }
            let (public_nic, lease) = (ifindex("gwpub").unwrap(), Ipv4Addr::new(10, 0, 2, 15));
            nl.add_address(public_nic, lease, 24).unwrap();
            let vlans = kernel_has_vlans(&mut nl, ifindex("gwpriv").unwrap());
            let public = Ipv4Addr::new(10, 0, 2, 100);
            let mut applier = Applier::new(nft, spawn_waited);

            let errors = applier.apply(&gateway(1, vec![public, lease], SAMPLE));
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            assert_eq!(ifindex("mgw7"), None, "a stale gateway link is removed");
            let addresses = nl.addresses().unwrap();
            let on_public = |a: &AddressInfo| a.ifindex == public_nic;
            assert!(addresses
                .iter()
                .filter(|a| on_public(a))
                .any(|a| (a.address, a.prefix) == (public, 32)));
            assert!(nft_tables(nft).contains("table inet mallee"), "{text:?}");
            assert!(nft_tables(nft).contains("table ip mallee_nat"));
            if vlans {
                assert!(errors.is_empty(), "{text:?}");
                let link = nl
                    .links()
                    .unwrap()
                    .into_iter()
                    .find(|l| l.name == "mgw100")
                    .unwrap();
                assert_eq!((link.vlan, link.parent), (Some(100), ifindex("gwpriv")));
                let held: Vec<_> = addresses
                    .iter()
                    .filter(|a| a.ifindex == link.ifindex)
                    .collect();
                assert_eq!(held.len(), 1);
                assert_eq!(
                    (held[0].address, held[0].prefix),
                    (Ipv4Addr::new(172, 31, 0, 1), 27)
                );
            } else {
                assert_eq!(errors.len(), 1, "{text:?}");
                assert!(text[0].contains("mgw100"), "{text:?}");
            }
            // Applying the same again changes nothing and fails nowhere new.
            assert_eq!(
                applier
                    .apply(&gateway(2, vec![public, lease], SAMPLE))
                    .len(),
                errors.len()
            );

            let empty = Gateway {
                generation: 3,
                interface: "gwpriv".into(),
                ..Gateway::default()
            };
            assert!(applier.apply(&empty).is_empty());
            let addresses = nl.addresses().unwrap();
            let left: Vec<_> = addresses
                .iter()
                .filter(|a| on_public(a))
                .map(|a| a.address)
                .collect();
            assert_eq!(left, [lease], "only the address init added is removed");
            assert_eq!(ifindex("mgw100"), None);
            assert_eq!(nft_tables(nft).trim(), "", "no gateway tables are left");

            let refused = applier.apply(&Gateway {
                ruleset: "table ip filter {\n}\n".into(),
                ..empty
            });
            assert!(matches!(
                refused[..],
                [GatewayError::Nft(NftError::ForeignTable(_))]
            ));
        },
    );
}

/// A ruleset init refuses is answered with the reason and not tried again; a failure that may
/// pass (here: no such interface) is.
#[test]
fn a_refusal_waits_for_a_change_and_a_failure_is_retried() {
    let Some(nft) = host_nft() else { return };
    crate::net::in_private_netns(
        "a_refusal_waits_for_a_change_and_a_failure_is_retried",
        move || {
            let dir = tempfile::tempdir().unwrap();
            let mut applier = Applier::new(nft, spawn_waited);
            let mut g = Gateway {
                generation: 5,
                interface: "lo".into(),
                ruleset: "table ip filter {\n}\n".into(),
                ..Gateway::default()
            };
            std::fs::write(
                dir.path().join(GATEWAY_FILE),
                serde_json::to_string(&g).unwrap(),
            )
            .unwrap();
            let refused = applier.handle(dir.path());
            assert!(!refused.retry);
            assert_eq!(refused.applied.generation, 5);
            assert!(refused.applied.error.unwrap().contains("ip filter"));

            g.generation = 6;
            g.ruleset.clear();
            g.public = Some(PublicSide {
                interface: Some("nosuchnic".into()),
                addresses: vec![Ipv4Addr::new(192, 0, 2, 1)],
            });
            std::fs::write(
                dir.path().join(GATEWAY_FILE),
                serde_json::to_string(&g).unwrap(),
            )
            .unwrap();
            let failed = applier.handle(dir.path());
            assert!(failed.retry);
            assert_eq!(read_applied(dir.path()), failed.applied);
            assert!(failed.applied.error.unwrap().contains("nosuchnic"));
        },
    );
}

/// The watcher answers each new generation the daemon renames into place.
#[test]
fn the_watcher_applies_each_file_renamed_into_place() {
    let Some(nft) = host_nft() else { return };
    crate::net::in_private_netns(
        "the_watcher_applies_each_file_renamed_into_place",
        move || {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().to_path_buf();
            let stop = Arc::new(AtomicBool::new(false));
            let (watched, stopper) = (path.clone(), stop.clone());
            std::thread::spawn(move || watch(&watched, Applier::new(nft, spawn_waited), &stopper));
            for generation in [3, 4] {
                let g = Gateway {
                    generation,
                    interface: "lo".into(),
                    ruleset: "table inet mallee {\n}\n".into(),
                    ..Gateway::default()
                };
                let temp = path.join("gateway.json.tmp");
                std::fs::write(&temp, serde_json::to_string(&g).unwrap()).unwrap();
                std::fs::rename(&temp, path.join(GATEWAY_FILE)).unwrap();
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let got = std::fs::read_to_string(path.join(APPLIED_FILE))
                        .ok()
                        .and_then(|t| serde_json::from_str::<Applied>(&t).ok());
                    if got.as_ref().is_some_and(|a| a.generation == generation) {
                        assert_eq!(got.unwrap().error, None);
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "generation {generation} never answered"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            stop.store(true, Ordering::Relaxed);
        },
    );
}

/// A public address goes on the NIC named, or else on the NIC whose own subnet holds it (never
/// a gateway link, never by a /32 it was given).
#[test]
fn public_addresses_find_their_home_by_subnet() {
    use crate::net::link::{AddressInfo, LinkInfo};
    let link = |ifindex, name: &str| LinkInfo {
        ifindex,
        name: name.into(),
        parent: None,
        vlan: None,
        mac: Some([2, 0, 0, 0, 0, ifindex as u8]),
    };
    let links = [link(2, "eth0"), link(4, "eth2"), link(9, "mgw100")];
    let at = |ifindex, a: [u8; 4], prefix| AddressInfo {
        ifindex,
        address: Ipv4Addr::from(a),
        prefix,
    };
    let addresses = [
        at(2, [10, 0, 2, 15], 24),
        at(4, [198, 51, 100, 120], 24),
        at(4, [203, 0, 113, 7], 32),
        at(9, [172, 31, 0, 1], 27),
    ];
    let home = |named, a: [u8; 4]| {
        super::links::home_for_tests(named, Ipv4Addr::from(a), &links, &addresses)
            .map(|l| l.name.clone())
    };
    assert_eq!(home(None, [198, 51, 100, 10]).as_deref(), Some("eth2"));
    assert_eq!(home(None, [10, 0, 2, 99]).as_deref(), Some("eth0"));
    assert_eq!(home(None, [203, 0, 113, 8]), None);
    assert_eq!(home(None, [172, 31, 0, 9]), None);
    assert_eq!(
        home(Some("eth0"), [198, 51, 100, 10]).as_deref(),
        Some("eth0")
    );
    assert_eq!(home(Some("nope"), [198, 51, 100, 10]), None);
}

/// MANAGED-NOVLAN: an untagged network's gateway address goes on the private NIC beside the
/// NIC's own, which stays when the network goes; the NIC sends no ICMP redirects (they would
/// steer guests around the gateway's rules).
#[test]
fn untagged_gateway_addresses_sit_beside_the_nics_own() {
    let Some(nft) = host_nft() else { return };
    crate::net::in_private_netns(
        "untagged_gateway_addresses_sit_beside_the_nics_own",
        move || {
            let mut nl = Netlink::open().unwrap();
            nl.new_bridge("gwpriv", None).unwrap();
            let private = ifindex("gwpriv").unwrap();
            nl.set_up(private).unwrap();
            let own = Ipv4Addr::new(10, 77, 0, 1);
            nl.add_address(private, own, 24).unwrap();
            let untagged = |generation, links: Vec<GatewayLink>| Gateway {
                generation,
                interface: "gwpriv".into(),
                links,
                public: None,
                ruleset: SAMPLE.into(),
            };
            let net = |third: u8| GatewayLink {
                vlan: None,
                address: Ipv4Addr::new(172, 31, 0, third),
                prefix: 27,
            };
            let mut applier = Applier::new(nft, spawn_waited);
            let held = |nl: &mut Netlink| -> Vec<(Ipv4Addr, u8)> {
                let mut v: Vec<_> = (nl.addresses().unwrap().into_iter())
                    .filter(|a| a.ifindex == private)
                    .map(|a| (a.address, a.prefix))
                    .collect();
                v.sort();
                v
            };
            let errors = applier.apply(&untagged(1, vec![net(1), net(33)]));
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(
                held(&mut nl),
                [
                    (own, 24),
                    (Ipv4Addr::new(172, 31, 0, 1), 27),
                    (Ipv4Addr::new(172, 31, 0, 33), 27)
                ]
            );
            let redirects =
                std::fs::read_to_string("/proc/sys/net/ipv4/conf/gwpriv/send_redirects");
            assert_eq!(redirects.unwrap().trim(), "0");
            assert!(applier.apply(&untagged(2, vec![net(33)])).is_empty());
            assert_eq!(
                held(&mut nl),
                [(own, 24), (Ipv4Addr::new(172, 31, 0, 33), 27)]
            );
            assert!(applier.apply(&untagged(3, vec![])).is_empty());
            assert_eq!(held(&mut nl), [(own, 24)], "the NIC's own address stays");
        },
    );
}
