//! End-to-end node program: run by `mallee-init` (`mallee.run=`) inside a nested QEMU node. It
//! makes two disk images (one with a known pattern, one blank), a persistent tap it watches with
//! an AF_PACKET socket, runs `mallee-vmm` on the Debian kernel and the test initramfs with an
//! address for the guest, then checks what the guest did: its frame on the tap, and neither its
//! forged frames nor its DHCP (which the VMM answers), the exit status (0: the guest powered off),
//! the pattern on the second disk. Once the guest's frame went by (its network step is done), it
//! attaches a volume file to the VMM's volume slot through the API, waits for the guest to write
//! its marker to it, and detaches it.
//!
//! Before the VMM starts, it checks the Linux `aoe` driver against our target on a veth pair
//! (storage end in its own namespace): of two exports, the driver reads the one whose MAC list
//! names its interface (the bytes must be the known pattern) and never gets a device for the
//! one allowing only another MAC, which drops each of the driver's queries unanswered.
//!
//! After those checks, when the test put the Debian cloud image on the node (`/vmm-e2e/debian`
//! and the disk `/dev/vda`), it boots that image under a second `mallee-vmm` and checks what
//! cloud-init did from the VMM's SMBIOS tables and metadata service (`e2e/cloud_image.rs`).
//!
//! Built statically by the end-to-end test (`qemu-tests/tests/vmm_boot.rs`); not part of any
//! image.

#[path = "e2e/aoe_node.rs"]
#[allow(dead_code)]
mod aoe_node;
#[path = "e2e/cloud_image.rs"]
mod cloud_image;
#[path = "e2e/common.rs"]
mod common;
#[path = "e2e/kernel_aoe.rs"]
mod kernel_aoe;
#[path = "e2e/vmm_api.rs"]
mod vmm_api;

use std::fs::File;
use std::io::Read;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    say, FORGED_MARKER, FRAME_MARKER, GATEWAY, GUEST_IP, GUEST_MAC, HOSTNAME, PREFIX_LEN,
    VOLUME_BYTES, VOLUME_ID, VOLUME_MARKER,
};
use mallee_proto::vmm::{DiskSource, Reply, Request};

const TAP: &str = "vmtap0";
const API: &str = "/tmp/vmm.sock";
const VOLUME: &str = "/tmp/vol.img";
/// The guest's serial console: a file, shown line by line once the VMM exits, so the guest's
/// bytes never land inside this program's lines on the node's one console.
const GUEST_CONSOLE: &str = "/tmp/guest.console";
/// The guest's SMBIOS identity, as the node agent gives an EC2 instance's (the serial in
/// upper case, as Xen-era EC2 had it: ds-identify compares the two ignoring case).
const SMBIOS: &str = "manufacturer=Amazon EC2,product=m1.small,\
uuid=ec2e2e01-2345-8678-9abc-def012345678,serial=EC2E2E01-2345-8678-9ABC-DEF012345678,\
asset-tag=i-e2e00001";
/// What went by on the tap.
#[derive(Default)]
struct Seen {
    /// The guest's marked frame, from its MAC.
    good: bool,
    /// Any of its forged frames.
    forged: bool,
    /// Any DHCP datagram (the VMM answers the guest's; none may leave it).
    dhcp: bool,
}

/// Watches the tap until `stop`; `guest_sent` is set once the guest's marked frame went by.
fn sniff(fd: i32, stop: Arc<AtomicBool>, guest_sent: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        let Some(n) = common::recv_frame(fd, &mut buf).filter(|n| *n > 14) else {
            continue;
        };
        let f = &buf[..n];
        let has = |m: &[u8]| f.windows(m.len()).any(|w| w == m);
        seen.good |= f[6..12] == GUEST_MAC && has(FRAME_MARKER);
        if seen.good {
            guest_sent.store(true, Ordering::SeqCst);
        }
        seen.forged |= has(FORGED_MARKER);
        // IPv4 without options, UDP, port 67 or 68 on either side.
        let udp = f.len() >= 38 && f[12..14] == [0x08, 0x00] && f[23] == 17;
        let ports = udp.then(|| [&f[34..36], &f[36..38]]);
        seen.dhcp |=
            ports.is_some_and(|p| p.iter().any(|p| [[0, 67], [0, 68]].contains(&[p[0], p[1]])));
    }
    seen
}

/// The `--net` options that give the guest its address.
fn guest_address() -> String {
    let ip = |a: [u8; 4]| std::net::Ipv4Addr::from(a);
    format!(
        "ip={}/{PREFIX_LEN},gw={},dns={},hostname={HOSTNAME}",
        ip(GUEST_IP),
        ip(GATEWAY),
        ip(GATEWAY)
    )
}

/// One request to the VMM's API.
fn api(request: &Request) -> Result<Reply, String> {
    vmm_api::call(API, request)
}

/// Waits up to `secs` for `done`.
fn wait_until(secs: u64, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// The volume's course: attach once the guest is past its network step, wait for the guest's
/// marker on the volume, detach. Returns whether all three happened as they should; gives up
/// when `vmm_gone` (the VMM exited).
fn volume(guest_sent: &AtomicBool, vmm_gone: &AtomicBool) -> bool {
    let gone = || vmm_gone.load(Ordering::SeqCst);
    if !wait_until(600, || guest_sent.load(Ordering::SeqCst) || gone()) || gone() {
        say("vmm-e2e-node: the guest never reached its volume step");
        return false;
    }
    let attach = api(&Request::AttachVolume {
        slot: 0,
        volume_id: VOLUME_ID.into(),
        source: DiskSource::File(VOLUME.into()),
        read_only: false,
    });
    let attached = attach.as_ref().is_ok_and(|r| {
        r.ok && r.volume_slots.first().is_some_and(|s| {
            s.volume_id.as_deref() == Some(VOLUME_ID) && s.size_bytes == VOLUME_BYTES as u64
        })
    });
    say(&format!(
        "vmm-e2e-node: attach {VOLUME_ID} ok={attached} {attach:?}"
    ));
    if !attached {
        return false;
    }
    let marker = || {
        let mut head = [0u8; 512];
        File::open(VOLUME)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok_and(|_| head.starts_with(VOLUME_MARKER))
    };
    let written = wait_until(300, || marker() || gone()) && marker();
    say(&format!("vmm-e2e-node: volume written by guest={written}"));
    let detach = api(&Request::DetachVolume { slot: 0 });
    let detached = detach.as_ref().is_ok_and(|r| {
        r.ok && r
            .volume_slots
            .first()
            .is_some_and(|s| s.volume_id.is_none() && s.size_bytes == 0)
    });
    say(&format!("vmm-e2e-node: detach ok={detached} {detach:?}"));
    written && detached
}

/// Whether a guest console shows the guest died before its init ran: nothing from the init and
/// no kernel panic (which is a failure to report, not to retry).
fn died_early(console: &str) -> bool {
    !console.contains("vmm-e2e-guest:") && !console.contains("Kernel panic")
}

/// Runs `mallee-vmm` on the test guest until it exits (or 300 s pass), then shows the guest's
/// console; returns the exit status and that console.
fn boot_guest(mac: &str) -> Result<(std::process::ExitStatus, String), String> {
    say("vmm-e2e-node: starting mallee-vmm");
    let started = Instant::now();
    let _ = std::fs::remove_file(GUEST_CONSOLE);
    let mut child = common::guest_vmm(common::GUEST_CMDLINE, 256, 2)
        .args([
            "--disk",
            "/tmp/disk1.img,ro,serial=e2e-disk1",
            "--disk",
            "/tmp/disk2.img",
        ])
        .args(["--net", &format!("tap={TAP},mac={mac},{}", guest_address())])
        .args(["--volume-slots", "1"])
        .args(["--api-socket", API])
        .args(["--serial", GUEST_CONSOLE])
        .args(["--smbios", SMBIOS])
        .spawn()
        .map_err(|e| format!("spawn mallee-vmm: {e}"))?;
    // The guest is done in about 10 s; a VMM still running after this is stuck.
    let deadline = started + Duration::from_secs(300);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                break Err("mallee-vmm did not finish in 300 s".to_string());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => break Err(format!("wait: {e}")),
        }
    };
    // The guest's console, whole lines, also when the VMM had to be stopped.
    let guest = std::fs::read(GUEST_CONSOLE).map_err(|e| format!("{GUEST_CONSOLE}: {e}"))?;
    let guest = String::from_utf8_lossy(&guest).into_owned();
    guest.lines().for_each(say);
    let status = status?;
    say(&format!(
        "vmm-e2e-node: vmm exit={} after {} ms",
        status.code().unwrap_or(-1),
        started.elapsed().as_millis()
    ));
    Ok((status, guest))
}

fn run() -> Result<(), String> {
    std::fs::create_dir_all("/tmp").map_err(|e| e.to_string())?;
    let kernel_aoe_ok = match kernel_aoe::check() {
        Ok(k) => {
            k.lines().iter().for_each(|l| say(l));
            k.ok()
        }
        Err(e) => {
            say(&format!("vmm-e2e-node: kernel aoe FAIL {e}"));
            false
        }
    };
    std::fs::write("/tmp/disk1.img", common::disk_image(1)).map_err(|e| e.to_string())?;
    std::fs::write("/tmp/disk2.img", vec![0u8; common::DISK_BYTES]).map_err(|e| e.to_string())?;
    std::fs::write(VOLUME, vec![0u8; VOLUME_BYTES]).map_err(|e| e.to_string())?;
    common::make_persistent_tap(TAP).map_err(|e| format!("tap: {e}"))?;
    let index = common::link_up(TAP).map_err(|e| format!("tap up: {e}"))?;
    let fd = common::packet_socket(index).map_err(|e| format!("packet socket: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let guest_sent = Arc::new(AtomicBool::new(false));
    let sniffer = {
        let (stop, guest_sent) = (stop.clone(), guest_sent.clone());
        std::thread::spawn(move || sniff(fd, stop, guest_sent))
    };
    let vmm_gone = Arc::new(AtomicBool::new(false));
    let volume = {
        let vmm_gone = vmm_gone.clone();
        std::thread::spawn(move || volume(&guest_sent, &vmm_gone))
    };

    let mac = GUEST_MAC
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let mut status = boot_guest(&mac);
    // A triple fault before the guest's init printed anything has been seen once in CI (the L0
    // here is TCG emulating SVM for the nested node) and never reproduced; a VMM bug that does it
    // would do it again, so one more boot is allowed, said on the console, and no third.
    if status
        .as_ref()
        .is_ok_and(|(s, console)| s.code() == Some(2) && died_early(console))
    {
        say("vmm-e2e-node: RETRY the guest reset before its init ran; booting it once more");
        status = boot_guest(&mac);
    }
    vmm_gone.store(true, Ordering::SeqCst);
    let (status, _) = status?;
    stop.store(true, Ordering::SeqCst);
    let seen = sniffer.join().unwrap_or_default();
    let volume_ok = volume.join().unwrap_or(false);
    say(&format!(
        "vmm-e2e-node: volume attach and detach ok={volume_ok}"
    ));
    say(&format!("vmm-e2e-node: frame seen on tap={}", seen.good));
    say(&format!(
        "vmm-e2e-node: forged frames on tap={}",
        seen.forged
    ));
    say(&format!("vmm-e2e-node: dhcp on tap={}", seen.dhcp));
    let mut disk2 = Vec::new();
    File::open("/tmp/disk2.img")
        .and_then(|mut f| f.read_to_end(&mut disk2))
        .map_err(|e| format!("read disk2: {e}"))?;
    let pattern_ok = disk2 == common::disk_image(2);
    say(&format!("vmm-e2e-node: disk2 pattern ok={pattern_ok}"));
    let net_ok = seen.good && !seen.forged && !seen.dhcp;
    if status.code() == Some(0) && net_ok && pattern_ok && volume_ok && kernel_aoe_ok {
        Ok(())
    } else {
        Err("checks failed".into())
    }
}

/// The Debian cloud image step ([`cloud_image`]), when the test put the image on the node.
fn debian() -> Result<(), String> {
    if !std::path::Path::new(cloud_image::DIR).exists() {
        return Ok(());
    }
    match cloud_image::check() {
        Ok(true) => Ok(()),
        Ok(false) => Err("debian cloud image checks failed".into()),
        Err(e) => Err(format!("debian cloud image: {e}")),
    }
}

fn main() -> ExitCode {
    // The Debian step runs whatever the first checks found: its lines help either way.
    let first = run();
    if let Err(e) = &first {
        say(&format!("vmm-e2e-node: FAIL {e}"));
    }
    let second = debian();
    if let Err(e) = &second {
        say(&format!("vmm-e2e-node: FAIL {e}"));
    }
    if first.is_ok() && second.is_ok() {
        say("vmm-e2e-node: PASS");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
