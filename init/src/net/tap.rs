//! Persistent taps for instances: the node agent makes each instance's tap (a virtio-net header
//! on every frame, as `mallee-vmm` opens it) and marks it persistent, so it stays a bridge port
//! across the VMM's restarts; the VMM attaches by name. Removed with [`super::link`]'s
//! `del_link`.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const IFF_TAP: i16 = 0x2;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Makes the persistent tap `name` (or takes the one of that name that exists).
pub fn create_persistent(name: &str) -> io::Result<()> {
    if name.is_empty() || name.len() > super::link::MAX_IFNAME || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a tap name"),
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    ifr[16..18].copy_from_slice(&(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR).to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq (40 bytes), which `ifr` provides.
    check(unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, ifr.as_mut_ptr()) })?;
    // SAFETY: TUNSETPERSIST takes its argument by value.
    check(unsafe { libc::ioctl(file.as_raw_fd(), TUNSETPERSIST, 1 as libc::c_ulong) })
}
