//! What the end-to-end programs agree on: disk patterns, the frame markers, the guest's MAC and
//! the address its VMM hands out, the hot-attached volume.

/// The test guest's kernel and initramfs on the node.
pub const GUEST_KERNEL: &str = "/vmm-e2e/vmlinuz";
pub const GUEST_INITRD: &str = "/vmm-e2e/guest.img";
/// The test guest's kernel command line: console on the serial port, a panic resets at once.
pub const GUEST_CMDLINE: &str = "console=ttyS0 panic=-1 reboot=k quiet loglevel=4";

/// `mallee-vmm` booting the test guest with `cmdline`, `mem_mib` MiB and `vcpus`; callers add
/// disks, NICs, sockets and where its output goes.
pub fn guest_vmm(cmdline: &str, mem_mib: u64, vcpus: u32) -> std::process::Command {
    guest_vmm_booting(GUEST_KERNEL, cmdline, mem_mib, vcpus)
}

/// [`guest_vmm`] booting `kernel` (a bzImage, or the ELF `vmlinux` a node unpacks from it).
pub fn guest_vmm_booting(
    kernel: &str,
    cmdline: &str,
    mem_mib: u64,
    vcpus: u32,
) -> std::process::Command {
    let mut c = std::process::Command::new("/bin/mallee-vmm");
    c.args(["--kernel", kernel, "--initrd", GUEST_INITRD])
        .args(["--cmdline", cmdline])
        .args([
            "--mem",
            &format!("{mem_mib}M"),
            "--vcpus",
            &vcpus.to_string(),
        ]);
    c
}

/// Bytes in each test disk.
pub const DISK_BYTES: usize = 1 << 20;
/// The payload the guest sends and the node looks for on the tap.
pub const FRAME_MARKER: &[u8] = b"mallee-e2e-frame";
/// The guest NIC's MAC.
pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xe2, 0xe0, 0x01];
/// What the guest writes at the start of the hot-attached volume before the node detaches it.
pub const VOLUME_MARKER: &[u8] = b"mallee-e2e-volume";
/// The hot-attached volume's id (its serial in the guest).
pub const VOLUME_ID: &str = "vol-e2e0001";
/// The hot-attached volume's size.
pub const VOLUME_BYTES: usize = 2 << 20;
/// The payload of the frames the guest forges (another MAC, another source address): the node
/// must never see it on the tap.
pub const FORGED_MARKER: &[u8] = b"mallee-e2e-forged";
/// The guest's address, which its VMM's DHCP gives it (`--net ...,ip=`).
pub const GUEST_IP: [u8; 4] = [10, 77, 0, 5];
/// The subnet's prefix length and gateway.
pub const PREFIX_LEN: u8 = 24;
pub const GATEWAY: [u8; 4] = [10, 77, 0, 1];
/// The guest's host name in the DHCP answer.
pub const HOSTNAME: &str = "vmm-e2e";

/// Byte `i` of disk `disk` (1: written by the node, read by the guest; 2: written by the guest).
pub fn pattern(disk: u8, i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 9) ^ (usize::from(disk) * 0x5a)) as u8
}

/// The whole pattern of `disk`.
pub fn disk_image(disk: u8) -> Vec<u8> {
    (0..DISK_BYTES).map(|i| pattern(disk, i)).collect()
}

/// Writes one line to the console (stdout), flushed.
pub fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Sets a network interface up.
pub fn link_up(name: &str) -> std::io::Result<i32> {
    // SAFETY: plain socket creation.
    let ctl = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if ctl < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: SIOCGIFINDEX/SIOCGIFFLAGS/SIOCSIFFLAGS read and write a 40-byte struct ifreq.
    let index = unsafe {
        if libc::ioctl(ctl, libc::SIOCGIFINDEX, ifr.as_mut_ptr()) < 0 {
            libc::close(ctl);
            return Err(std::io::Error::last_os_error());
        }
        let index = i32::from_ne_bytes([ifr[16], ifr[17], ifr[18], ifr[19]]);
        ifr[16..20].fill(0);
        libc::ioctl(ctl, libc::SIOCGIFFLAGS, ifr.as_mut_ptr());
        let flags = i16::from_ne_bytes([ifr[16], ifr[17]]) | libc::IFF_UP as i16;
        ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
        let rc = libc::ioctl(ctl, libc::SIOCSIFFLAGS, ifr.as_mut_ptr());
        libc::close(ctl);
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        index
    };
    Ok(index)
}

/// A raw AF_PACKET socket bound to interface `index`.
pub fn packet_socket(index: i32) -> std::io::Result<i32> {
    let proto = 0x0003u16.to_be(); // ETH_P_ALL
                                   // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = index;
    // SAFETY: the pointer and length describe `sll`.
    let rc = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Waits up to 100 ms for one frame on packet socket `fd`; its length, or `None`.
pub fn recv_frame(fd: i32, buf: &mut [u8]) -> Option<usize> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
        return None;
    }
    // SAFETY: the pointer and length describe `buf`.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    (n > 0).then_some(n as usize)
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;

/// Makes the tap `name` (with a virtio-net header, no packet info) and keeps it after this
/// process lets go of it, for a `mallee-vmm` to open by name.
pub fn make_persistent_tap(name: &str) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    let flags: i16 = 0x2 | 0x1000 | 0x4000; // IFF_TAP | IFF_NO_PI | IFF_VNET_HDR
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF takes a 40-byte ifreq; TUNSETPERSIST takes an int by value.
    unsafe {
        if libc::ioctl(fd, TUNSETIFF, ifr.as_mut_ptr()) < 0
            || libc::ioctl(fd, TUNSETPERSIST, 1 as libc::c_ulong) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
