//! End-to-end guest program: PID 1 of the test initramfs booted by `mallee-vmm` inside a nested
//! node. It loads the virtio modules the initramfs lists, checks the read-only disk's pattern,
//! writes the second disk's pattern, sends a marked frame on the NIC, prints a line per step and
//! powers the machine off through ACPI (which ends `mallee-vmm` with exit status 0).
//!
//! Built statically by the end-to-end test (`qemu-tests/tests/vmm_boot.rs`); not part of any
//! image.

#[path = "e2e/common.rs"]
mod common;

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{say, DISK_BYTES, ETHERTYPE, FRAME_MARKER, GUEST_MAC};

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

fn send_frame() -> Result<String, String> {
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
    let mac = std::fs::read_to_string(format!("/sys/class/net/{name}/address")).unwrap_or_default();
    let index = common::link_up(&name).map_err(|e| format!("{name} up: {e}"))?;
    let fd = common::packet_socket(index).map_err(|e| format!("packet socket: {e}"))?;
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&GUEST_MAC);
    frame.extend_from_slice(&ETHERTYPE.to_be_bytes());
    frame.extend_from_slice(FRAME_MARKER);
    frame.resize(60, 0);
    for _ in 0..5 {
        // SAFETY: the pointer and length describe `frame`; the socket is bound to the NIC.
        let n = unsafe { libc::send(fd, frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(format!("send: {}", std::io::Error::last_os_error()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(format!("{name} mac={}", mac.trim()))
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
    say("vmm-e2e-guest: up");
    let mut ok = step("modules", load_modules().map(|n| format!("{n} loaded")));
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
    ok &= step("frame", send_frame());
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
    // SAFETY: sync and reboot take no pointers; as PID 1 we power the machine off deliberately.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
}
