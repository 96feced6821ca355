//! The uplink rule on its own; then the client against a real DHCP server: dnsmasq in one network
//! namespace, our client in another, joined by a veth pair the test creates (and removes on
//! drop). That one needs root (skipped without), `ip` (iproute2) and dnsmasq.

use super::*;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::channel;

#[test]
fn first_nic_to_claim_is_the_uplink_until_it_releases() {
    let uplink = Uplink::default();
    assert!(uplink.claim("eth1"));
    assert!(!uplink.claim("eth0"));
    assert!(uplink.claim("eth1"), "renewal keeps the role");
    uplink.release("eth0");
    assert!(!uplink.claim("eth0"), "only the holder can release");
    uplink.release("eth1");
    assert!(uplink.claim("eth0"));
}

#[test]
fn resolv_conf_lists_each_server() {
    let dns = [Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)];
    assert_eq!(
        resolv_conf(&dns),
        "nameserver 10.0.2.3\nnameserver 1.1.1.1\n"
    );
}

fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}; run `just setup`"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces joined by a veth pair; deleted (with the pair) on drop.
struct Segment {
    server_ns: String,
    client_ns: String,
}

impl Drop for Segment {
    fn drop(&mut self) {
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nic_in(ns: &str, name: &str) -> Nic {
    let line = tool("ip", &["-n", ns, "-o", "link", "show", name]);
    let ifindex = line.split(':').next().unwrap().trim().parse().unwrap();
    let mac = line
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap();
    Nic {
        name: name.to_owned(),
        ifindex,
        mac: mac.parse().unwrap(),
    }
}

#[test]
fn gets_and_renews_a_lease_from_dnsmasq_and_configures_address_route_and_dns() {
    if !crate::net::root_or_skip("gets_and_renews_a_lease_from_dnsmasq") {
        return;
    }
    let id = std::process::id() % 100_000;
    let seg = Segment {
        server_ns: format!("mi-dhcps-{id}"),
        client_ns: format!("mi-dhcpc-{id}"),
    };
    let (server_if, client_if) = (format!("mis{id}"), format!("mic{id}"));
    tool("ip", &["netns", "add", &seg.server_ns]);
    tool("ip", &["netns", "add", &seg.client_ns]);
    tool(
        "ip",
        &[
            "link",
            "add",
            &server_if,
            "netns",
            &seg.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &client_if,
            "netns",
            &seg.client_ns,
        ],
    );
    tool(
        "ip",
        &[
            "-n",
            &seg.server_ns,
            "addr",
            "add",
            "10.231.0.1/24",
            "dev",
            &server_if,
        ],
    );
    tool(
        "ip",
        &["-n", &seg.server_ns, "link", "set", &server_if, "up"],
    );
    let dir = std::env::temp_dir().join(format!("mallee-init-dhcp-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let dnsmasq = Command::new("ip")
        .args([
            "netns",
            "exec",
            &seg.server_ns,
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",
        ])
        .arg(format!("--interface={server_if}"))
        .args([
            "--bind-interfaces",
            "--dhcp-range=10.231.0.50,10.231.0.99,255.255.255.0,2m",
        ])
        .args([
            "--dhcp-option=option:router,10.231.0.1",
            "--dhcp-option=option:dns-server,10.231.0.1",
            // T1 (renewal) and T2 (rebinding) well inside the shortest lease dnsmasq gives,
            // so the renewal comes after seconds, not the 60 s of T1 = lease / 2.
            "--dhcp-option=option:T1,5",
            "--dhcp-option=option:T2,100",
        ])
        .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
        .arg(format!("--pid-file={}", dir.join("pid").display()))
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("dnsmasq: {e}; run `just setup`"));
    let _dnsmasq = KillOnDrop(dnsmasq);

    let nic = nic_in(&seg.client_ns, &client_if);
    let config = ClientConfig {
        hostname: "t1".into(),
        resolv_conf: dir.join("resolv.conf"),
        uplink: Arc::new(Uplink::default()),
    };
    let (tx, rx) = channel();
    let tx = std::sync::Mutex::new(tx);
    let on_ready: OnReady = Arc::new(move |ip| {
        let _ = tx.lock().unwrap().send(ip);
    });
    let stop = Arc::new(AtomicBool::new(false));
    let ns_path = format!("/run/netns/{}", seg.client_ns);
    let client = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(ns_path).unwrap();
            rustix::thread::move_into_link_name_space(
                rustix::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            run(nic, config, on_ready, stop);
        })
    };

    let ip = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("no lease from dnsmasq within 60 s");
    // At T1 (5 s, set above) the client renews; the ACK configures the lease again.
    let renewed = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("lease not renewed at T1");
    assert_eq!(renewed, ip);
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let (addr, prefix) = ip.split_once('/').unwrap();
    let addr: Ipv4Addr = addr.parse().unwrap();
    assert_eq!(prefix, "24");
    assert!(
        (50..=99).contains(&addr.octets()[3]) && addr.octets()[..3] == [10, 231, 0],
        "{ip}"
    );
    let addrs = tool(
        "ip",
        &[
            "-n",
            &seg.client_ns,
            "-4",
            "-o",
            "addr",
            "show",
            "dev",
            &client_if,
        ],
    );
    assert!(addrs.contains(&format!("inet {ip} ")), "{addrs}");
    let routes = tool(
        "ip",
        &["-n", &seg.client_ns, "-4", "route", "show", "default"],
    );
    assert!(routes.contains("default via 10.231.0.1"), "{routes}");
    let resolv = std::fs::read_to_string(dir.join("resolv.conf")).unwrap();
    assert_eq!(resolv, "nameserver 10.231.0.1\n");
    let leases = std::fs::read_to_string(dir.join("leases")).unwrap();
    assert!(
        leases.contains(&addr.to_string()) && leases.contains(" t1 "),
        "{leases}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
