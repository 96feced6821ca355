//! The PXE service's TFTP and HTTP sides against a real client (curl) on loopback: the iPXE
//! binaries come back byte for byte with and without TFTP options, traversal is refused, the
//! boot script carries the node parameters, and kernel/initramfs downloads resume with `Range`.

mod pxe_common;

use mallee_frontend::pxe::events::PxeEvent;
use mallee_frontend::pxe::http::NodeParams;
use mallee_frontend::pxe::PxeConfig;
use pxe_common::{wait_until, RunningPxe};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const IPXE_DIR: &str = "/usr/lib/ipxe";

/// A node image directory with a 3 MiB "initramfs" of varied bytes.
fn image_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mallee-pxe-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cmdline"), "console=ttyS0 mallee.role=node\n").unwrap();
    std::fs::write(dir.join("vmlinuz"), b"not really a kernel").unwrap();
    let blob: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("initramfs"), blob).unwrap();
    dir
}

fn start(name: &str) -> (RunningPxe, PathBuf) {
    assert!(
        Path::new(IPXE_DIR).join("undionly.kpxe").exists(),
        "no {IPXE_DIR}/undionly.kpxe: run `just setup` (Debian package ipxe)"
    );
    let dir = image_dir(name);
    let mut config = PxeConfig::new(
        "lo",
        Ipv4Addr::LOCALHOST,
        dir.clone(),
        NodeParams {
            frontend: "127.0.0.1:8773".parse().unwrap(),
            cluster: "zone-a".into(),
            enrollment_secret: "enroll-me".into(),
            bridge: false,
            frontend_key: None,
        },
    );
    config.dhcp_port = 0;
    config.tftp_port = 0;
    config.http_port = 0;
    config.lease_db = dir.join("leases.db");
    (RunningPxe::start(config, None), dir)
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .output()
        .expect("run curl (run `just setup`)")
}

#[test]
fn tftp_sends_ipxe_binaries_byte_for_byte_with_and_without_options() {
    let (pxe, dir) = start("tftp");
    let port = pxe.tftp_addr.port();
    for (file, extra) in [
        ("undionly.kpxe", vec!["--tftp-no-options"]),
        ("undionly.kpxe", vec!["--tftp-blksize", "1468"]),
        ("snponly.efi", vec!["--tftp-blksize", "1024"]),
    ] {
        let out = dir.join("got");
        let url = format!("tftp://127.0.0.1:{port}/{file}");
        let mut args = vec![url.as_str(), "-o", out.to_str().unwrap()];
        args.extend(extra.iter().copied());
        let r = curl(&args);
        assert!(
            r.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        let want = std::fs::read(Path::new(IPXE_DIR).join(file)).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), want, "{file} {extra:?}");
    }
    wait_until("TFTP events", Duration::from_secs(5), || {
        let sent = pxe
            .events
            .snapshot()
            .iter()
            .filter(|(_, e)| matches!(e, PxeEvent::TftpSent { .. }))
            .count();
        (sent == 3).then_some(())
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn tftp_refuses_paths_outside_its_directory() {
    let (pxe, dir) = start("traversal");
    let port = pxe.tftp_addr.port();
    for path in ["../../etc/passwd", "/../etc/hostname", "missing.efi"] {
        let url = format!("tftp://127.0.0.1:{port}/{path}");
        let r = curl(&["--path-as-is", &url]);
        assert!(!r.status.success(), "{path} was served");
        assert!(r.stdout.is_empty(), "{path} returned data");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn http_serves_script_and_resumable_files() {
    let (pxe, dir) = start("http");
    let base = format!("http://{}", pxe.http_addr);

    let script = curl(&[&pxe.boot_script_url]);
    let script = String::from_utf8(script.stdout).unwrap();
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    let kernel_line = script.lines().find(|l| l.starts_with("kernel ")).unwrap();
    assert!(kernel_line.starts_with(&format!("kernel {base}/node/vmlinuz console=ttyS0")));
    for want in [
        "mallee.frontend=127.0.0.1:8773",
        "mallee.cluster=zone-a",
        "mallee.secret=enroll-me",
    ] {
        assert!(kernel_line.contains(want), "{kernel_line}");
    }
    assert!(script.contains(&format!("initrd --name initramfs {base}/node/initramfs")));

    let full = std::fs::read(dir.join("initramfs")).unwrap();
    let url = format!("{base}/node/initramfs");
    let part = curl(&["-r", "1000-1999", "-w", "%{http_code}", "-o", "-", &url]);
    let (body, code) = part.stdout.split_at(part.stdout.len() - 3);
    assert_eq!(code, b"206");
    assert_eq!(body, &full[1000..2000]);

    // A download cut off half way resumes where it stopped.
    let out = dir.join("resumed");
    std::fs::write(&out, &full[..full.len() / 2]).unwrap();
    let r = curl(&["-C", "-", "-o", out.to_str().unwrap(), &url]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(std::fs::read(&out).unwrap() == full, "resumed file differs");

    let missing = curl(&[
        "-w",
        "%{http_code}",
        "-o",
        "/dev/null",
        &format!("{base}/node/../../etc/passwd"),
    ]);
    assert_ne!(missing.stdout, b"200");
    let events = pxe.events.snapshot();
    assert!(events.iter().any(|(_, e)| matches!(
        e,
        PxeEvent::Http { path, status: 206, range: true } if path == "/node/initramfs"
    )));
    let _ = std::fs::remove_dir_all(dir);
}
