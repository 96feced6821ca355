//! End to end, the two network modes whose instances share the site's own segment, on one
//! cloud: the frontend appliance and a PXE-booted node on a site network (a bridge with a host
//! in a namespace that runs the site's DHCP server for instances only), and a host outside on
//! the frontend's public side. The operator's settings reach the flashed appliance the way an
//! operator would put them there: a `mallee.toml` on its ESP.
//!
//! MANAGED-NOVLAN: the node boots with its NIC in its uplink bridge; two instances of two
//! groups on it take their addresses from their VMMs on the untagged segment; one reaches the
//! other only through the frontend's gateway, and only while the other's group lets it in; the
//! outside host reaches an instance's public address once its group lets the outside in, and
//! sees the instance as that public address. SYSTEM (the same frontend rebooted with the mode
//! changed, the same node): an instance takes its address from the site's DHCP server, not the
//! frontend's, DescribeInstances shows it once the node saw the guest use it, the guest finds
//! its metadata service through the site's router, and the site's host reaches it directly.

use mallee_qemu_tests::cloud::{self, Frontend, NODE_READY};
use mallee_qemu_tests::outside::{Outside, OUTSIDE_IP, SITE_RANGE};
use mallee_qemu_tests::{report_figure, TestDir, Vm};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// The port probe guests serve their instance id on.
const PROBE_PORT: u16 = 7000;
/// The port the outside host answers `seen <address>` on.
const SEEN_PORT: u16 = 7001;
const WAIT: Duration = Duration::from_secs(300);

#[test]
fn novlan_and_system_instances_share_the_sites_segment() {
    let dir = TestDir::new("modes");
    let site = Outside::site(&dir, 2).unwrap_or_else(|e| panic!("{e}"));
    let outside = Outside::new(&dir).unwrap_or_else(|e| panic!("{e}"));
    outside
        .serve_seen(SEEN_PORT)
        .unwrap_or_else(|e| panic!("{e}"));
    let disk = dir.file("frontend-disk.img");
    cloud::flash_appliance(&disk, 1536).unwrap();
    cloud::site_settings(&disk, "[network]\nmode = \"MANAGED-NOVLAN\"\n").unwrap();
    let fe = boot_frontend(&dir, "frontend", &site, &outside, &disk);
    assert!(
        fe.vm
            .console()
            .text()
            .contains("using the site settings in the ESP's mallee.toml"),
        "{}",
        fe.vm.console().tail(30)
    );

    // The node boots bridged: the PXE service told it which NIC (iPXE filled in its MAC).
    // Two vCPUs: room for the two instances at once.
    let mut node = cloud::node_on("node1", site.nic_at(1).mac("52:54:00:77:01:01"))
        .cpus(2)
        .launch(&dir)
        .expect("start the node VM");
    node.wait_for(NODE_READY, WAIT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        node.console()
            .text()
            .contains("mallee.bridge=52:54:00:77:01:01"),
        "iPXE did not fill in the boot NIC's MAC: {}",
        node.console().tail(40)
    );
    wait_registered(&fe, &node);
    let image = fe
        .upload_test_image("mode-images")
        .unwrap_or_else(|e| panic!("{e:#}"));

    novlan(&fe, &outside, &node, &image.emi);

    // SYSTEM: the same cloud, the frontend rebooted with the mode changed on its ESP.
    drop(fe);
    cloud::site_settings(&disk, "[network]\nmode = \"SYSTEM\"\n").unwrap();
    let fe = boot_frontend(&dir, "frontend2", &site, &outside, &disk);
    system(&fe, &site, &node, &image.emi);
}

fn boot_frontend(
    dir: &TestDir,
    name: &str,
    site: &Outside,
    outside: &Outside,
    disk: &std::path::Path,
) -> Frontend {
    let nic = site.nic_at(0);
    cloud::start_frontend_with(dir, name, nic, disk, Some(outside.nic()), WAIT)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn wait_registered(fe: &Frontend, node: &Vm) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while fe.capacity().unwrap_or_else(|e| panic!("{e}")) == 0 {
        assert!(
            Instant::now() < deadline,
            "the node never registered: {}",
            node.console().tail(20)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs one instance of `emi` with user data `probes` (and more CLI arguments); its id, once
/// its guest is up, and the address the guest took.
fn launch(fe: &Frontend, node: &Vm, emi: &str, probes: &str, more: &[&str]) -> (String, String) {
    let mut args = vec!["--user-data", probes];
    args.extend_from_slice(more);
    let id = fe
        .run_instances_with(emi, 1, &args)
        .unwrap_or_else(|e| panic!("{e:#}"))[0]
        .clone();
    let out = fe
        .wait_console(&id, cloud::GUEST_MARKER, WAIT)
        .unwrap_or_else(|e| panic!("{e:#}; node: {}", node.console().tail(30)));
    let line = out
        .lines()
        .find_map(|l| l.split(cloud::GUEST_MARKER).nth(1))
        .expect("the marker line");
    let ip = line.split('/').next().unwrap_or_default().to_string();
    (id, ip)
}

fn terminate(fe: &Frontend, id: &str) {
    fe.aws(&["ec2", "terminate-instances", "--instance-ids", id])
        .unwrap_or_else(|e| panic!("{e}"));
    fe.wait_state(id, "terminated", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e:#}"));
}

fn ingress(fe: &Frontend, verb: &str, group: &str, source: &[&str]) {
    fe.tcp_ingress(verb, group, PROBE_PORT, source)
        .unwrap_or_else(|e| panic!("{e}"));
}

fn novlan(fe: &Frontend, outside: &Outside, node: &Vm, emi: &str) {
    assert!(
        node.console()
            .text()
            .contains("is a port of mbr0, which takes its place"),
        "the node did not bridge its NIC: {}",
        node.console().tail(40)
    );
    let serve = format!("serve {PROBE_PORT}\nconnect {OUTSIDE_IP}:{SEEN_PORT}");
    let (a, a_ip) = launch(fe, node, emi, &serve, &[]);
    assert_eq!(
        fe.private_ip(&a).unwrap_or_else(|e| panic!("{e:#}")),
        a_ip,
        "the guest did not take the address DescribeInstances shows"
    );
    fe.create_group("probes", "instances that probe the default group")
        .unwrap_or_else(|e| panic!("{e}"));
    let target = format!("{a_ip}:{PROBE_PORT}");
    let probe = format!("connect {target}");
    let (b, b_ip) = launch(fe, node, emi, &probe, &["--security-groups", "probes"]);
    // Two networks, each told by its subnet: no VLAN tag anywhere.
    let nets = fe
        .admin(&["DescribeNetworks"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let set = nets["networkSet"].as_array().cloned().unwrap_or_default();
    assert!(
        set.len() == 2 && set.iter().all(|n| n["vlan"].is_null()),
        "{nets}"
    );
    let answered = format!("probe: {target} answered {a}");
    let unreachable = format!("probe: {target} unreachable");
    let (_, at) = fe
        .wait_console_after(&b, 0, &unreachable, WAIT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    // Through the gateway only as the default group allows.
    ingress(
        fe,
        "authorize-security-group-ingress",
        "default",
        &["--source-group", "probes"],
    );
    let started = Instant::now();
    let (_, at) = fe
        .wait_console_after(&b, at, &answered, WAIT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    report_figure(&format!(
        "figure: modes, MANAGED-NOVLAN {b_ip} -> {a_ip} through the gateway {:.2} s after authorize",
        started.elapsed().as_secs_f64()
    ));
    ingress(
        fe,
        "revoke-security-group-ingress",
        "default",
        &["--source-group", "probes"],
    );
    fe.wait_console_after(&b, at, &unreachable, WAIT)
        .unwrap_or_else(|e| panic!("{e:#}"));

    // From outside, at the public address, once the default group lets the outside in; going
    // out, the instance is seen as its public address.
    let public = fe.public_ip(&a).unwrap_or_else(|e| panic!("{e:#}"));
    let to = SocketAddrV4::new(public.parse().expect("an address"), PROBE_PORT);
    let reach = || outside.connect(to).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        reach().is_err(),
        "the outside reached {public} before any rule"
    );
    let outside_net = format!("{OUTSIDE_IP}/24");
    ingress(
        fe,
        "authorize-security-group-ingress",
        "default",
        &["--cidr", &outside_net],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match reach() {
            Ok(id) if id == a => break,
            other => assert!(
                Instant::now() < deadline,
                "outside -> {public}: {other:?}\n{}\nthe frontend's gateway:\n{}\nthe node:\n{}\n\
                 {a}'s console:\n{}",
                outside.network_state(),
                gateway_lines(fe),
                node.console().tail(30),
                console_tail(fe, &a)
            ),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    fe.wait_console(
        &a,
        &format!("probe: {OUTSIDE_IP}:{SEEN_PORT} answered seen {public}"),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    terminate(fe, &a);
    terminate(fe, &b);
}

/// The last 20 lines of `id`'s console (GetConsoleOutput): whether its guest is still alive.
fn console_tail(fe: &Frontend, id: &str) -> String {
    match fe.console_output(id) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        }
        Err(e) => format!("no console output: {e:#}"),
    }
}

/// The frontend console's gateway lines (what init applied, added and announced), the last 40.
fn gateway_lines(fe: &Frontend) -> String {
    let text = fe.vm.console().text();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("gateway")).collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn system(fe: &Frontend, site: &Outside, node: &Vm, emi: &str) {
    wait_registered(fe, node);
    let serve = format!("serve {PROBE_PORT}");
    let (c, ip) = launch(fe, node, emi, &serve, &[]);
    let ip: Ipv4Addr = ip.parse().expect("the guest's address");
    let (first, last) = SITE_RANGE;
    assert!(
        (first..=last).contains(&ip),
        "{c} took {ip}, not an address of the site's DHCP range {first}-{last}"
    );
    // The API shows the site's address once the node saw the guest use it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = fe.private_ip(&c).unwrap_or_default();
        if shown == ip.to_string() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "DescribeInstances shows {shown:?}, not {ip}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The site's host reaches it directly on the site's segment.
    let to = SocketAddrV4::new(ip, PROBE_PORT);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match site.connect(to).unwrap_or_else(|e| panic!("{e}")) {
            Ok(id) if id == c => break,
            other => assert!(Instant::now() < deadline, "site host -> {ip}: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    terminate(fe, &c);
}
