//! A tap device with a virtio-net header on every frame: opened by name through
//! `/dev/net/tun`, or adopted from an inherited fd, with offloads switched on only when asked.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: i16 = 0x2;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;

/// The tap driver checksums what the guest left partial.
pub const TUN_F_CSUM: u32 = 0x1;
/// The tap accepts and delivers TCPv4 segmentation offload frames.
pub const TUN_F_TSO4: u32 = 0x2;
/// The tap accepts and delivers TCPv6 segmentation offload frames.
pub const TUN_F_TSO6: u32 = 0x4;

/// Bytes of virtio_net_hdr_v1 in front of every frame.
pub const VNET_HDR_LEN: usize = 12;

/// An open tap.
pub struct Tap {
    file: File,
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Tap {
    /// Opens (creating if needed) the tap called `name`.
    pub fn open(name: &str) -> io::Result<Tap> {
        if name.is_empty() || name.len() >= 16 || name.contains('\0') {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad tap name"));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let mut ifr = [0u8; 40];
        ifr[..name.len()].copy_from_slice(name.as_bytes());
        ifr[16..18].copy_from_slice(&(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR).to_ne_bytes());
        // SAFETY: TUNSETIFF reads and writes a struct ifreq (40 bytes), which `ifr` provides.
        check(unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, ifr.as_mut_ptr()) })?;
        Tap::setup(file)
    }

    /// Adopts an already-configured tap fd (opened with IFF_VNET_HDR by the parent).
    pub fn from_fd(fd: RawFd) -> io::Result<Tap> {
        // SAFETY: F_GETFL only reads the descriptor's flags; it fails cleanly on a bad fd.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        check(flags)?;
        // SAFETY: as above; setting O_NONBLOCK on a valid fd.
        check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
        // SAFETY: the caller hands us ownership of `fd` (it came from the command line and
        // nothing else in this process uses it).
        let file = unsafe { File::from_raw_fd(fd) };
        Tap::setup(file)
    }

    fn setup(file: File) -> io::Result<Tap> {
        let size: libc::c_int = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer.
        check(unsafe { libc::ioctl(file.as_raw_fd(), TUNSETVNETHDRSZ, &size) })?;
        Ok(Tap { file })
    }

    /// Sets which offloads the tap may deliver to us (TUN_F_* bits).
    pub fn set_offload(&self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        check(unsafe { libc::ioctl(self.file.as_raw_fd(), TUNSETOFFLOAD, flags as libc::c_ulong) })
    }

    /// Reads one frame (with its header); `WouldBlock` when none is waiting.
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        use std::io::Read;
        (&self.file).read(buf)
    }

    /// Writes one frame (with its header).
    pub fn write_frame(&self, buf: &[u8]) -> io::Result<usize> {
        use std::io::Write;
        (&self.file).write(buf)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
