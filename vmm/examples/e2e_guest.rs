//! End-to-end guest program: PID 1 of the test initramfs booted by `mallee-vmm` inside a nested
//! node. It loads the virtio modules the initramfs lists, prints what the SMBIOS tables told
//! Linux (`/sys/class/dmi/id`), checks the read-only disk's pattern,
//! writes the second disk's pattern, takes its address from its VMM's DHCP, sends a marked frame
//! from it and frames forged with another MAC and another address, then watches the empty volume
//! slot `vdc` until the node attaches a volume (`disk vdc size=N serial=S`), writes a marker to
//! it, and watches it go back to one empty sector when the node detaches it; it prints a line per step and
//! powers the machine off through ACPI (which ends `mallee-vmm` with exit status 0).
//!
//! With `ebs.secs=` on its command line it is instead the guest half of `just bench ebs`: after
//! its modules it runs one I/O case per volume the node attaches to its volume slot
//! (`e2e/io_bench.rs`), then powers off.
//!
//! Built statically by the end-to-end test (`qemu-tests/tests/vmm_boot.rs`) and the benchmarks;
//! not part of any image.

#[path = "e2e/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "e2e/io_bench.rs"]
#[allow(dead_code)]
mod io_bench;

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    say, DISK_BYTES, FORGED_MARKER, FRAME_MARKER, GATEWAY, GUEST_IP, GUEST_MAC, HOSTNAME,
    PREFIX_LEN, VOLUME_BYTES, VOLUME_ID, VOLUME_MARKER,
};
use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use mallee_proto::Mac;
use mallee_vmm::devices::virtio::net::port::udp_frame;
use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, UdpPacket};

fn mount(src: &str, target: &str, fstype: &str) {
    let _ = std::fs::create_dir_all(target);
    let (s, t, f) = (
        CString::new(src).unwrap(),
        CString::new(target).unwrap(),
        CString::new(fstype).unwrap(),
    );
    // SAFETY: all pointers are valid NUL-terminated strings; no data argument.
    unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
}

fn console_to_stdio() {
    if let Ok(c) = OpenOptions::new().write(true).open("/dev/console") {
        // SAFETY: dup2 onto stdout/stderr of this process with a valid fd.
        unsafe {
            libc::dup2(c.as_raw_fd(), 1);
            libc::dup2(c.as_raw_fd(), 2);
        }
    }
}

fn load_modules() -> Result<usize, String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_err(|e| format!("osrelease: {e}"))?;
    let list = std::fs::read_to_string("/lib/modules/mallee/load-order")
        .map_err(|e| format!("load-order: {e}"))?;
    let mut n = 0;
    for line in list.lines() {
        let Some((name, path)) = line.split_once(' ') else {
            continue;
        };
        let full = format!("/lib/modules/{}/{path}", release.trim());
        let f = File::open(&full).map_err(|e| format!("{full}: {e}"))?;
        let params = CString::new("").unwrap();
        // SAFETY: finit_module reads the module from the fd and the empty parameter string.
        let rc =
            unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) };
        let err = std::io::Error::last_os_error();
        if rc != 0 && err.raw_os_error() != Some(libc::EEXIST) {
            return Err(format!("finit_module {name}: {err}"));
        }
        n += 1;
    }
    Ok(n)
}

fn wait_for(path: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !Path::new(path).exists() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn check_disk1() -> Result<(), String> {
    let serial = std::fs::read_to_string("/sys/block/vda/serial").unwrap_or_default();
    if serial.trim() != "e2e-disk1" {
        return Err(format!("vda serial is {serial:?}"));
    }
    let ro = std::fs::read_to_string("/sys/block/vda/ro").unwrap_or_default();
    if ro.trim() != "1" {
        return Err(format!("vda ro is {ro:?}"));
    }
    let mut buf = vec![0u8; DISK_BYTES];
    File::open("/dev/vda")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("read /dev/vda: {e}"))?;
    match buf
        .iter()
        .enumerate()
        .find(|(i, b)| **b != common::pattern(1, *i))
    {
        Some((i, b)) => Err(format!("vda byte {i} is {b:#x}")),
        None => Ok(()),
    }
}

fn write_disk2() -> Result<(), String> {
    let mut f = OpenOptions::new()
        .write(true)
        .open("/dev/vdb")
        .map_err(|e| format!("open /dev/vdb: {e}"))?;
    f.write_all(&common::disk_image(2))
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("write /dev/vdb: {e}"))
}

fn nic() -> Option<String> {
    std::fs::read_dir("/sys/class/net")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n != "lo")
}

fn send(fd: i32, frame: &[u8]) -> Result<(), String> {
    // SAFETY: the pointer and length describe `frame`; the socket is bound to the NIC.
    let n = unsafe { libc::send(fd, frame.as_ptr().cast(), frame.len(), 0) };
    if n < 0 {
        return Err(format!("send: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The DHCP reply to `req` (same xid) among the frames arriving on `fd`, sending `req` again
/// each second as a client does, for up to 20 s.
fn dhcp_exchange(fd: i32, req: &Message) -> Result<Message, String> {
    let frame = udp_frame(
        (Mac(GUEST_MAC), Mac([0xff; 6])),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        (68, 67),
        &req.to_vec().map_err(|e| e.to_string())?,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        send(fd, &frame)?;
        let resend = Instant::now() + Duration::from_secs(1);
        while Instant::now() < resend {
            let Some(n) = common::recv_frame(fd, &mut buf) else {
                continue;
            };
            let Ok(eth) = EthernetFrame::new_checked(&buf[..n]) else {
                continue;
            };
            if eth.ethertype() != EthernetProtocol::Ipv4 {
                continue;
            }
            let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
                continue;
            };
            if ip.next_header() != IpProtocol::Udp {
                continue;
            }
            let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
                continue;
            };
            if udp.dst_port() != 68 {
                continue;
            }
            if let Ok(m) = Message::from_bytes(udp.payload()) {
                if m.opcode() == Opcode::BootReply && m.xid() == req.xid() {
                    return Ok(m);
                }
            }
        }
    }
    Err(format!("no DHCP reply to xid {:#x} in 20 s", req.xid()))
}

fn dhcp_message(mtype: MessageType, requested: Option<Ipv4Addr>) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest)
        .set_htype(HType::Eth)
        .set_xid(0x6d61_6c6c)
        .set_flags(Flags::default().set_broadcast())
        .set_chaddr(&GUEST_MAC);
    m.opts_mut().insert(DhcpOption::MessageType(mtype));
    if let Some(ip) = requested {
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    }
    m
}

/// Takes the address the VMM offers (DISCOVER, OFFER, REQUEST, ACK), checks it and its options,
/// then sends a marked frame from it and frames forged from another MAC and another address.
fn network() -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let name = loop {
        if let Some(n) = nic() {
            break n;
        }
        if Instant::now() > deadline {
            return Err("no NIC appeared".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let index = common::link_up(&name).map_err(|e| format!("{name} up: {e}"))?;
    let fd = common::packet_socket(index).map_err(|e| format!("packet socket: {e}"))?;
    let offer = dhcp_exchange(fd, &dhcp_message(MessageType::Discover, None))?;
    let me = Ipv4Addr::from(GUEST_IP);
    if offer.opts().msg_type() != Some(MessageType::Offer) || offer.yiaddr() != me {
        return Err(format!(
            "offer {:?} of {}",
            offer.opts().msg_type(),
            offer.yiaddr()
        ));
    }
    let ack = dhcp_exchange(fd, &dhcp_message(MessageType::Request, Some(me)))?;
    if ack.opts().msg_type() != Some(MessageType::Ack) || ack.yiaddr() != me {
        return Err(format!(
            "ack {:?} of {}",
            ack.opts().msg_type(),
            ack.yiaddr()
        ));
    }
    let mask = match ack.opts().get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(m)) if u32::from(*m).count_ones() == u32::from(PREFIX_LEN) => {
            *m
        }
        other => return Err(format!("no subnet mask: {other:?}")),
    };
    let gw = match ack.opts().get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) if r.first() == Some(&Ipv4Addr::from(GATEWAY)) => r[0],
        other => return Err(format!("router {other:?}")),
    };
    match ack.opts().get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h)) if h == HOSTNAME => {}
        other => return Err(format!("hostname {other:?}")),
    }
    let to = Mac([0xff; 6]);
    let ports = (40000, 40001);
    let forged_mac = Mac([0x52, 0x54, 0x00, 0x66, 0x66, 0x66]);
    let forged_ip = Ipv4Addr::new(10, 77, 0, 66);
    for _ in 0..5 {
        send(
            fd,
            &udp_frame((Mac(GUEST_MAC), to), me, gw, ports, FRAME_MARKER),
        )?;
        send(
            fd,
            &udp_frame((forged_mac, to), me, gw, ports, FORGED_MARKER),
        )?;
        send(
            fd,
            &udp_frame((Mac(GUEST_MAC), to), forged_ip, gw, ports, FORGED_MARKER),
        )?;
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(format!(
        "{name} took {me} mask {mask} gw {gw} host {HOSTNAME}"
    ))
}

/// The volume slot's disk: its size in sectors and its serial (empty when GET_ID fails, as it
/// does on an empty slot).
fn slot_disk(dev: &str) -> (u64, String) {
    let size = std::fs::read_to_string(format!("/sys/block/{dev}/size")).unwrap_or_default();
    let serial = std::fs::read_to_string(format!("/sys/block/{dev}/serial")).unwrap_or_default();
    (size.trim().parse().unwrap_or(0), serial.trim().to_string())
}

/// Waits up to 180 s for the slot's size to satisfy `want`, printing the disk line once it does.
fn watch_slot(dev: &str, want: impl Fn(u64) -> bool) -> Result<(u64, String), String> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (size, serial) = slot_disk(dev);
        if want(size) {
            say(&format!(
                "vmm-e2e-guest: disk {dev} size={size} serial={serial}"
            ));
            return Ok((size, serial));
        }
        if Instant::now() > deadline {
            return Err(format!("{dev} stayed at {size} sectors"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The volume slot: empty at boot; the node attaches a volume once it saw the network step's
/// frame; the guest writes the marker the node waits for before it detaches the volume.
fn volume() -> Result<String, String> {
    let dev = "vdc";
    if !wait_for(&format!("/dev/{dev}")) {
        return Err(format!("no /dev/{dev}"));
    }
    // An empty slot is one sector (so udev hears of the attach; see `media::NoMedium`).
    let (size, serial) = watch_slot(dev, |s| s > 1)?;
    if size != (VOLUME_BYTES / 512) as u64 || serial != VOLUME_ID {
        return Err(format!("{dev} has {size} sectors, serial {serial:?}"));
    }
    let mut f = OpenOptions::new()
        .write(true)
        .open(format!("/dev/{dev}"))
        .map_err(|e| format!("open /dev/{dev}: {e}"))?;
    let mut sector = [0u8; 512];
    sector[..VOLUME_MARKER.len()].copy_from_slice(VOLUME_MARKER);
    f.write_all(&sector)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("write /dev/{dev}: {e}"))?;
    drop(f);
    watch_slot(dev, |s| s == 1)?;
    Ok(format!("attached {size} sectors serial {serial}, detached"))
}

/// Prints the DMI identity cloud-init's `ds-identify` reads, one `dmi NAME=VALUE` line each.
fn dmi() -> Result<String, String> {
    for name in [
        "sys_vendor",
        "product_name",
        "product_uuid",
        "product_serial",
        "chassis_asset_tag",
    ] {
        let path = format!("/sys/class/dmi/id/{name}");
        let value = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        say(&format!("vmm-e2e-guest: dmi {name}={}", value.trim_end()));
    }
    Ok(String::new())
}

fn step(name: &str, r: Result<String, String>) -> bool {
    match r {
        Ok(detail) => {
            say(&format!("vmm-e2e-guest: {name} ok {detail}"));
            true
        }
        Err(e) => {
            say(&format!("vmm-e2e-guest: {name} FAIL {e}"));
            false
        }
    }
}

fn main() {
    mount("devtmpfs", "/dev", "devtmpfs");
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    console_to_stdio();
    // The kernel's own clock at the marker: how long the kernel took to reach userspace,
    // apart from what ran before it (the VMM, firmware, the decompressor).
    let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let secs: f64 = (uptime.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    say(&format!(
        "vmm-e2e-guest: up kernel_ms={}",
        (secs * 1000.0) as u64
    ));
    let mut ok = step("modules", load_modules().map(|n| format!("{n} loaded")));
    if io_bench::run_if_asked(wait_for) {
        power_off();
        return;
    }
    ok &= step("dmi", dmi());
    ok &= step(
        "disk1",
        if wait_for("/dev/vda") {
            check_disk1().map(|_| String::new())
        } else {
            Err("no /dev/vda".into())
        },
    );
    ok &= step(
        "disk2",
        if wait_for("/dev/vdb") {
            write_disk2().map(|_| String::new())
        } else {
            Err("no /dev/vdb".into())
        },
    );
    ok &= step("network", network());
    ok &= step("volume", volume());
    ok &= step(
        "rng",
        if wait_for("/sys/class/misc/hw_random") {
            std::fs::read_to_string("/sys/class/misc/hw_random/rng_current")
                .map(|s| s.trim().to_string())
                .map_err(|e| e.to_string())
        } else {
            Err("no hw_random".into())
        },
    );
    say(&format!("vmm-e2e-guest: done ok={ok}"));
    power_off();
}

fn power_off() {
    // SAFETY: sync and reboot take no pointers; as PID 1 we power the machine off deliberately.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
}
