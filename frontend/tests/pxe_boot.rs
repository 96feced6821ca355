//! End to end: a diskless QEMU node network-boots from our PXE service. Its NIC's iPXE ROM gets
//! our DHCP offer (detected as iPXE, so it is sent straight to HTTP), fetches `boot.ipxe`, the
//! kernel and the initramfs; the Linux kernel starts with the node command line we built, and
//! `mallee-init` leases the same address again from our DHCP server and reports ready.
//!
//! The service and QEMU share a tap device inside a network namespace this test creates; nothing
//! outside that namespace is touched.

mod pxe_common;

use mallee_frontend::pxe::events::PxeEvent;
use mallee_frontend::pxe::http::NodeParams;
use mallee_frontend::pxe::leases::{LeaseState, LeaseStore, Mac, SqliteLeaseStore};
use mallee_frontend::pxe::PxeConfig;
use mallee_qemu_tests::{Images, Nic, TestDir, VmConfig};
use pxe_common::{wait_until, RunningPxe, TapNamespace};
use std::net::Ipv4Addr;
use std::time::Duration;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
const OVMF: &str = "/usr/share/qemu/OVMF.fd";
const NODE_MAC: &str = "52:54:00:21:30:01";
const READY: &str = r"mallee-init: ready role=node ip=(\d+\.\d+\.\d+\.\d+)/(\d+) boot_ms=(\d+)";

fn served(pxe: &RunningPxe, want_path: &str) -> bool {
    pxe.events
        .snapshot()
        .iter()
        .any(|(_, e)| matches!(e, PxeEvent::Http { path, status: 200, .. } if path == want_path))
}

/// The service for one test, inside `net`, with leases in `dir`.
fn start_pxe(dir: &TestDir, net: &TapNamespace) -> RunningPxe {
    let image = Images::node().unwrap_or_else(|e| panic!("{e}"));
    let image_dir = image.vmlinuz.parent().unwrap().to_path_buf();
    let mut config = PxeConfig::new(
        &net.tap,
        SERVER,
        image_dir,
        NodeParams {
            frontend: format!("{SERVER}:8773").parse().unwrap(),
            cluster: "pxe-test".into(),
            enrollment_secret: "pxe-test-secret".into(),
            bridge: false,
            frontend_key: None,
        },
    );
    config.lease_db = dir.file("leases.db");
    RunningPxe::start(config, Some(&net.name))
}

/// The first DHCP ACK to `mac` whose boot file satisfies `pred`: (address, boot file).
fn wait_for_ack(
    pxe: &RunningPxe,
    mac: Mac,
    pred: impl Fn(&Option<String>) -> bool,
) -> (Ipv4Addr, Option<String>) {
    wait_until("DHCP ACK to the node", Duration::from_secs(180), || {
        pxe.events
            .snapshot()
            .into_iter()
            .find_map(|(_, e)| match e {
                PxeEvent::Dhcp {
                    kind,
                    mac: m,
                    ip,
                    boot_file,
                } if kind == "Ack" && m == mac && pred(&boot_file) => Some((ip, boot_file)),
                _ => None,
            })
    })
}

#[test]
fn node_network_boots_kernel_from_our_dhcp_and_http() {
    let dir = TestDir::new("pxe_boot");
    let net = TapNamespace::new(&format!("{SERVER}/24"));
    let pxe = start_pxe(&dir, &net);

    let mut vm = VmConfig::new("node")
        .netns(&net.name)
        .nested_kvm(true)
        .memory_mib(1024)
        .nic(Nic::tap(&net.tap).mac(NODE_MAC).boot())
        .launch(&dir)
        .expect("start QEMU");

    // DHCP: the ROM is iPXE, so the ACK carries the HTTP script, not a TFTP chainload.
    let mac: Mac = NODE_MAC.parse().unwrap();
    let (ip, boot_file) = wait_until("DHCP ACK to the node", Duration::from_secs(120), || {
        pxe.events
            .snapshot()
            .into_iter()
            .find_map(|(_, e)| match e {
                PxeEvent::Dhcp {
                    kind,
                    mac: m,
                    ip,
                    boot_file,
                } if kind == "Ack" && m == mac => Some((ip, boot_file)),
                _ => None,
            })
    });
    assert_eq!(boot_file.as_deref(), Some(pxe.boot_script_url.as_str()));
    assert!(
        (Ipv4Addr::new(10, 213, 0, 100)..=Ipv4Addr::new(10, 213, 0, 199)).contains(&ip),
        "address {ip} outside the pool"
    );

    for path in ["/boot.ipxe", "/node/vmlinuz", "/node/initramfs"] {
        wait_until(
            &format!("HTTP GET {path}"),
            Duration::from_secs(180),
            || served(&pxe, path).then_some(()),
        );
    }
    vm.wait_for(r"Linux version 6\.1\.", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}"));
    let cmdline = vm
        .wait_for(r"Command line: (.*)", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    for want in [
        "mallee.role=node",
        "mallee.frontend=10.213.0.1:8773",
        "mallee.cluster=pxe-test",
        "mallee.secret=pxe-test-secret",
    ] {
        assert!(
            cmdline[1].contains(want),
            "kernel command line: {}",
            cmdline[1]
        );
    }
    // mallee-init's own DHCP client (no PXE options) gets the same address, without a boot file.
    let ready = vm
        .wait_for(READY, Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ready[1],
        ip.to_string(),
        "init's address differs from the ROM's lease"
    );
    assert_eq!(ready[2], "24");
    let acks_without_boot_file = pxe
        .events
        .snapshot()
        .iter()
        .filter(|(_, e)| {
            matches!(e, PxeEvent::Dhcp { kind, mac: m, boot_file: None, .. }
                if kind == "Ack" && *m == mac)
        })
        .count();
    assert!(acks_without_boot_file >= 1, "no plain ACK for mallee-init");
    // The lease is in the database, bound to the node.
    let leases = SqliteLeaseStore::open(&dir.file("leases.db"))
        .and_then(|mut s| s.load())
        .expect("read the lease database");
    assert!(
        leases
            .iter()
            .any(|l| l.mac == mac && l.ip == ip && l.state == LeaseState::Bound),
        "no bound lease for {mac} at {ip}: {leases:?}"
    );
    assert!(
        !pxe.events
            .snapshot()
            .iter()
            .any(|(_, e)| matches!(e, PxeEvent::TftpSent { .. })),
        "an iPXE ROM was chainloaded over TFTP instead of going straight to HTTP"
    );
    mallee_qemu_tests::report_figure(&format!(
        "figure: pxe boot (iPXE ROM, DHCP + HTTP), QEMU start to mallee-init ready {:.1} s",
        vm.started().elapsed().as_secs_f64()
    ));
}

/// UEFI firmware's own PXE client (OVMF, NIC option ROM disabled) does not speak HTTP: it is sent
/// `snponly.efi` over TFTP, which is iPXE, which then gets the HTTP script and boots the node.
#[test]
fn uefi_pxe_client_is_chainloaded_into_ipxe_over_tftp() {
    assert!(
        std::path::Path::new(OVMF).exists(),
        "no {OVMF}: run `just setup` (Debian package ovmf)"
    );
    let dir = TestDir::new("pxe_boot_uefi");
    let net = TapNamespace::new(&format!("{SERVER}/24"));
    let pxe = start_pxe(&dir, &net);
    let mac: Mac = NODE_MAC.parse().unwrap();
    let mut vm = VmConfig::new("node")
        .netns(&net.name)
        .memory_mib(1024)
        .nic(Nic::tap(&net.tap).mac(NODE_MAC).boot())
        .arg("-bios")
        .arg(OVMF)
        // No iPXE option ROM: OVMF's own virtio-net driver and PXE client boot the NIC.
        .arg("-global")
        .arg("virtio-net-pci.romfile=")
        .launch(&dir)
        .expect("start QEMU");

    let (_, first) = wait_for_ack(&pxe, mac, |f| f.as_deref() == Some("snponly.efi"));
    assert_eq!(first.as_deref(), Some("snponly.efi"));
    wait_until(
        "TFTP transfer of snponly.efi",
        Duration::from_secs(180),
        || {
            pxe.events.find(|e| matches!(e, PxeEvent::TftpSent { file, .. } if file.trim_start_matches('/') == "snponly.efi"))
        },
    );
    let (ip, _) = wait_for_ack(&pxe, mac, |f| {
        f.as_deref() == Some(pxe.boot_script_url.as_str())
    });
    for path in ["/boot.ipxe", "/node/vmlinuz", "/node/initramfs"] {
        wait_until(
            &format!("HTTP GET {path}"),
            Duration::from_secs(180),
            || served(&pxe, path).then_some(()),
        );
    }
    let ready = vm
        .wait_for(READY, Duration::from_secs(240))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ready[1], ip.to_string());
    mallee_qemu_tests::report_figure(&format!(
        "figure: pxe boot (OVMF UEFI PXE, TFTP snponly.efi, then HTTP), QEMU start to \
         mallee-init ready {:.1} s",
        vm.started().elapsed().as_secs_f64()
    ));
}
