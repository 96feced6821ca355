//! Our target against the Linux kernel's AoE initiator (Debian's `aoe.ko`) inside a QEMU
//! guest. The host kernel has no aoe module, so: a tap device in a network namespace this test
//! creates, our target on it, QEMU's second NIC on the other side of the tap (fd passed in),
//! and `aoe-guest-check` (built static) run by `mallee-init` in the guest. The guest reads
//! what the host wrote into the backing file and writes a pattern the host then finds there.

mod common;

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{in_ns, pattern, sh};
use mallee_aoe::net::PacketSocket;
use mallee_aoe::target::{Backend, Target, TargetConfig};
use mallee_image_build::netboot::{
    self, NetbootSpec, NODE_BOOT_MODULES, NODE_CMDLINE, NODE_NIC_MODULES,
};
use mallee_qemu_tests::{NetbootImage, Nic, TestDir, VmConfig};

const MIB: usize = 1 << 20;
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// A network namespace holding one tap device; removed on drop.
struct TapNs {
    ns: String,
    tap: String,
    fd: OwnedFd,
}

impl TapNs {
    fn new() -> Self {
        let id = format!("{}{}", std::process::id() % 100_000, rand_suffix());
        let (ns, tap) = (format!("mallee-aoek-{id}"), format!("mak{id}"));
        sh(&["ip", "netns", "add", &ns]);
        let fd = in_ns(&ns, || open_tap(&tap));
        sh(&["ip", "-n", &ns, "link", "set", &tap, "up"]);
        TapNs { ns, tap, fd }
    }
}

impl Drop for TapNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 1000)
        .unwrap_or(0)
}

/// Creates tap `name` in the calling thread's namespace; the fd is inheritable by QEMU.
fn open_tap(name: &str) -> OwnedFd {
    let file = File::options()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .expect("open /dev/net/tun");
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads a valid ifreq naming the device to create.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &req) };
    assert_eq!(
        rc,
        0,
        "TUNSETIFF {name}: {}",
        std::io::Error::last_os_error()
    );
    let fd = OwnedFd::from(file);
    // SAFETY: clears FD_CLOEXEC on a descriptor we own, so QEMU inherits it.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) };
    assert_eq!(rc, 0);
    fd
}

/// The static `aoe-guest-check`, built into its own target dir (build scripts stay dynamic).
fn guest_check_binary() -> PathBuf {
    let dir = mallee_image_build::target_dir().join("aoe-guest");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--target",
            TRIPLE,
            "-p",
            "mallee-aoe",
            "--bin",
            "aoe-guest-check",
        ])
        .arg("--target-dir")
        .arg(&dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "building the static aoe-guest-check failed"
    );
    dir.join(TRIPLE).join("release/aoe-guest-check")
}

fn guest_image(dir: &Path) -> NetbootImage {
    let init = mallee_image_build::static_bin_dir().join("mallee-init");
    assert!(
        init.exists(),
        "no static mallee-init at {}: run `just images`",
        init.display()
    );
    let mut boot: Vec<String> = NODE_BOOT_MODULES.iter().map(|s| s.to_string()).collect();
    boot.push("aoe".into());
    let spec = NetbootSpec {
        role: "node".into(),
        boot_modules: boot,
        coldplug_modules: NODE_NIC_MODULES.iter().map(|s| s.to_string()).collect(),
        binaries: vec![
            ("init".into(), init),
            ("bin/aoe-guest-check".into(), guest_check_binary()),
        ],
        files: Vec::new(),
        host_files: Vec::new(),
        dynamic_programs: Vec::new(),
        cmdline: format!("{NODE_CMDLINE} mallee.run=/bin/aoe-guest-check"),
    };
    let kernel = mallee_image_build::pinned_kernel().expect("pinned kernel (run `just setup`)");
    let out = dir.join("image");
    netboot::build(&spec, &kernel, &out).expect("build guest image");
    NetbootImage {
        vmlinuz: out.join("vmlinuz"),
        initramfs: out.join("initramfs"),
        cmdline: spec.cmdline,
    }
}

#[test]
fn linux_aoe_driver_reads_and_writes_through_our_target() {
    let dir = TestDir::new("aoe_kernel_initiator");
    let image = guest_image(dir.path());
    let disk = dir.file("disk.img");
    let mut contents = pattern(MIB, 7);
    contents.resize(8 * MIB, 0);
    std::fs::write(&disk, &contents).unwrap();

    let tap = TapNs::new();
    let backend = Backend::open(&disk).unwrap();
    let target = in_ns(&tap.ns, || {
        let sock = PacketSocket::open(&tap.tap).unwrap();
        let cfg = TargetConfig {
            shelf: 7,
            slot: 3,
            probe_timeout: Duration::from_millis(200),
            ..Default::default()
        };
        Target::start(sock, backend, cfg).unwrap()
    });

    let fd = tap.fd.as_raw_fd();
    let mut vm = VmConfig::new("guest")
        .netboot(&image)
        .memory_mib(512)
        .nic(Nic::user())
        .arg("-netdev")
        .arg(&format!("tap,id=aoenet,fd={fd}"))
        .arg("-device")
        .arg("virtio-net-pci,netdev=aoenet")
        .launch(&dir)
        .expect("start QEMU");
    let verdict = vm
        .wait_for(r"aoe-guest-check: (ok|FAILED.*)", Duration::from_secs(240))
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.console().tail(40)));
    assert_eq!(verdict[1], "ok", "{}", vm.console().tail(40));

    let on_disk = std::fs::read(&disk).unwrap();
    assert_eq!(
        &on_disk[MIB..2 * MIB],
        &pattern(MIB, 8)[..],
        "guest's write reached the file"
    );
    let stats = target.stats();
    assert!(
        stats.bytes_read >= MIB as u64 && stats.bytes_written >= MIB as u64,
        "{stats:?}"
    );
}
