//! Network bring-up: find the wired NICs, set lo and each NIC up, and run one DHCP client per NIC.
//!
//! A wired NIC is an interface under `/sys/class/net` with a `device` link (so not lo, bridges,
//! veths or taps), ARP type 1 (Ethernet) and no `wireless` directory. The first lease any NIC
//! gets makes that NIC the uplink (default route, DNS) and is announced through `on_ready`. What
//! the leases change on the system is in [`client`]; a node's uplink bridge in [`bridge`]; the
//! netlink messages in [`link`]; the routing table as the kernel shows it in [`route`]; the
//! protocol in [`dhcp`]. A NIC the kernel's `ip=` gives a static address (a guest no DHCP server
//! answers) runs no DHCP client and is the uplink: [`static_ip`].

pub mod bridge;
pub mod client;
pub mod dhcp;
pub mod lease;
pub mod link;
pub mod route;
pub mod static_ip;
pub mod tap;

/// For tests that need root (network namespaces, veth pairs): true when they can run; else
/// says on stderr that `test` is skipped and why.
#[cfg(test)]
pub(crate) fn root_or_skip(test: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!(
            "skipped {test}: it needs root (network namespaces); run the tests as root, as CI does"
        );
    }
    root
}

/// Runs `f` on a thread of its own in a fresh network namespace (only lo, down), as test
/// `test` (skipped without root).
#[cfg(test)]
pub(crate) fn in_private_netns(test: &str, f: impl FnOnce() + Send + 'static) {
    if !root_or_skip(test) {
        return;
    }
    std::thread::spawn(|| {
        // SAFETY: only the network namespace is unshared; file descriptor tables stay shared.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
            .expect("unshare(CLONE_NEWNET) needs root: run the tests as root");
        f()
    })
    .join()
    .unwrap();
}

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// An Ethernet interface backed by a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub ifindex: u32,
    pub mac: Mac,
}

pub use mallee_proto::Mac;

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The wired NICs under `root` (normally `/sys/class/net`), sorted by name.
pub fn wired_nics(root: &Path) -> Vec<Nic> {
    let Ok(dir) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut nics: Vec<Nic> = dir
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            let wired = path.join("device").exists()
                && !path.join("wireless").exists()
                && read_trimmed(&path.join("type")).as_deref() == Some("1");
            if !wired {
                return None;
            }
            Some(Nic {
                name: entry.file_name().to_string_lossy().into_owned(),
                ifindex: read_trimmed(&path.join("ifindex"))?.parse().ok()?,
                mac: read_trimmed(&path.join("address"))?.parse().ok()?,
            })
        })
        .collect();
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    nics
}

/// How many PCI network controllers (class 0x02xxxx) are under `root` (normally
/// `/sys/bus/pci/devices`).
pub fn pci_network_controllers(root: &Path) -> usize {
    let Ok(dir) = std::fs::read_dir(root) else {
        return 0;
    };
    dir.flatten()
        .filter(|e| read_trimmed(&e.path().join("class")).is_some_and(|c| c.starts_with("0x02")))
        .count()
}

/// Polls `/sys/class/net` until a wired NIC shows up or `patience` passes (drivers may probe
/// asynchronously after their module loads). A machine with no PCI network controller (an
/// instance without a NIC) is not waited for.
pub fn wait_for_nics(patience: Duration) -> Vec<Nic> {
    if pci_network_controllers(Path::new("/sys/bus/pci/devices")) == 0 {
        let nics = wired_nics(Path::new("/sys/class/net"));
        if nics.is_empty() {
            info!("no PCI network controller: not waiting for a NIC");
        }
        return nics;
    }
    let deadline = Instant::now() + patience;
    loop {
        let nics = wired_nics(Path::new("/sys/class/net"));
        if !nics.is_empty() || Instant::now() >= deadline {
            return nics;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sets lo and every NIC up and starts a DHCP client thread per NIC, except on the NIC
/// `static_ip` (the kernel's `ip=`) configures, which is the uplink from the start. `on_ready`
/// receives `ADDR/PREFIX` of the static address and of each lease the uplink NIC configures
/// (the caller keeps only the first).
pub fn start(
    nics: &[Nic],
    hostname: &str,
    static_ip: Option<&crate::cmdline::StaticIp>,
    on_ready: client::OnReady,
) {
    match link::Netlink::open() {
        Ok(mut nl) => {
            if let Err(e) = nl.set_up(1) {
                warn!("lo: {e}");
            }
        }
        Err(e) => warn!("lo: {e}"),
    }
    let config = client::ClientConfig {
        hostname: hostname.to_owned(),
        resolv_conf: "/etc/resolv.conf".into(),
        uplink: Arc::new(client::Uplink::default()),
    };
    let configured = static_ip.and_then(|s| static_ip::start(nics, s, &config, &on_ready));
    let never = Arc::new(AtomicBool::new(false));
    for nic in nics.iter().filter(|n| configured.as_ref() != Some(&n.name)) {
        let (nic, config, on_ready, never) =
            (nic.clone(), config.clone(), on_ready.clone(), never.clone());
        std::thread::spawn(move || client::run(nic, config, on_ready, never));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_controllers_are_counted_by_pci_class() {
        let dir = tempfile::tempdir().unwrap();
        for (slot, class) in [
            ("0000:00:02.0", "0x020000"),
            ("0000:00:03.0", "0x010000"),
            ("0000:00:04.0", "0x020000\n"),
        ] {
            std::fs::create_dir(dir.path().join(slot)).unwrap();
            std::fs::write(dir.path().join(slot).join("class"), class).unwrap();
        }
        std::fs::create_dir(dir.path().join("0000:00:05.0")).unwrap();
        assert_eq!(pci_network_controllers(dir.path()), 2);
        assert_eq!(pci_network_controllers(&dir.path().join("missing")), 0);
    }

    #[test]
    fn only_device_backed_ethernet_interfaces_are_wired() {
        let root = std::env::temp_dir().join(format!("mallee-init-nics-{}", std::process::id()));
        let make = |name: &str, device: bool, kind: &str, wireless: bool| {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("type"), kind).unwrap();
            std::fs::write(dir.join("ifindex"), "7\n").unwrap();
            std::fs::write(dir.join("address"), "52:54:00:12:34:56\n").unwrap();
            if device {
                std::fs::create_dir_all(dir.join("device")).unwrap();
            }
            if wireless {
                std::fs::create_dir_all(dir.join("wireless")).unwrap();
            }
        };
        make("lo", false, "772\n", false);
        make("br0", false, "1\n", false);
        make("wlan0", true, "1\n", true);
        make("eth0", true, "1\n", false);
        let nics = wired_nics(&root);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            nics,
            vec![Nic {
                name: "eth0".into(),
                ifindex: 7,
                mac: Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56])
            }]
        );
    }
}
