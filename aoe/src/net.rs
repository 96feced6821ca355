//! The AF_PACKET socket both ends use: bound to one interface and to EtherType 0x88A2, with
//! the interface's MAC address and MTU. Sending and receiving are safe from several threads
//! at once (each received frame goes to exactly one caller). Frames this host sent itself
//! and frames for other hosts are filtered out here.

use crate::wire::{Mac, ETHERTYPE_AOE};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// What went wrong opening or using the packet socket.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("interface name {0:?} is invalid")]
    BadName(String),
    #[error("interface {name}: {source}")]
    Interface { name: String, source: io::Error },
    #[error("AF_PACKET socket: {0} (needs root or CAP_NET_RAW)")]
    Socket(io::Error),
    #[error("send on {iface}: {source}")]
    Send { iface: String, source: io::Error },
    #[error("receive on {iface}: {source}")]
    Recv { iface: String, source: io::Error },
    #[error("socket filter on {iface}: {source}")]
    Filter { iface: String, source: io::Error },
}

/// Attaches a classic BPF program (`crate::filter`) to socket `fd`: frames it drops are never
/// queued on the socket.
pub(crate) fn attach_filter(fd: RawFd, program: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: u16::try_from(program.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `program`, which outlives the call (the kernel copies it).
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An AF_PACKET raw socket for AoE frames on one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    iface: String,
    ifindex: i32,
    mac: Mac,
    mtu: usize,
}

fn ifreq_for(name: &str) -> Result<libc::ifreq, NetError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(NetError::BadName(name.to_owned()));
    }
    // SAFETY: ifreq is a plain C struct for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

impl PacketSocket {
    /// Opens a socket bound to `iface` in the calling thread's network namespace.
    pub fn open(iface: &str) -> Result<Self, NetError> {
        let cname = CString::new(iface).map_err(|_| NetError::BadName(iface.to_owned()))?;
        let if_err = |source| NetError::Interface {
            name: iface.to_owned(),
            source,
        };
        // SAFETY: cname is a valid NUL-terminated string for the duration of the call.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(if_err(io::Error::last_os_error()));
        }
        let proto = ETHERTYPE_AOE.to_be() as libc::c_int;
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        if raw < 0 {
            return Err(NetError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: raw is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let mut req = ifreq_for(iface)?;
        // SAFETY: req is a valid ifreq naming the interface; the kernel fills ifru_hwaddr.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
            return Err(if_err(io::Error::last_os_error()));
        }
        // SAFETY: SIOCGIFHWADDR succeeded, so ifru_hwaddr is the active union member.
        let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
        let mut mac = [0u8; 6];
        for (dst, src) in mac.iter_mut().zip(hw.sa_data.iter()) {
            *dst = *src as u8;
        }
        let mut req = ifreq_for(iface)?;
        // SAFETY: as above; the kernel fills ifru_mtu.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFMTU, &mut req) } < 0 {
            return Err(if_err(io::Error::last_os_error()));
        }
        // SAFETY: SIOCGIFMTU succeeded, so ifru_mtu is the active union member.
        let mtu = unsafe { req.ifr_ifru.ifru_mtu }.max(0) as usize;

        let addr = sockaddr_ll(ifindex as i32, Mac::default());
        // SAFETY: addr is a fully initialised sockaddr_ll and the length matches its type.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(if_err(io::Error::last_os_error()));
        }
        let sock = PacketSocket {
            fd,
            iface: iface.to_owned(),
            ifindex: ifindex as i32,
            mac: Mac(mac),
            mtu,
        };
        // Deep buffers so a window of jumbo frames is not dropped; FORCE works as root,
        // the plain option is the unprivileged fallback (both best effort).
        for (force, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            if sock.set_int_opt(force, 8 << 20).is_err() {
                let _ = sock.set_int_opt(plain, 8 << 20);
            }
        }
        Ok(sock)
    }

    fn set_int_opt(&self, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
        // SAFETY: value outlives the call and the length is that of c_int.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Lets only the frames `program` accepts reach this socket (`crate::filter`).
    pub fn set_filter(&self, program: &[libc::sock_filter]) -> Result<(), NetError> {
        attach_filter(self.fd.as_raw_fd(), program).map_err(|source| NetError::Filter {
            iface: self.iface.clone(),
            source,
        })
    }

    /// Sets how long `recv` waits before returning `None`.
    pub fn set_recv_timeout(&self, timeout: Duration) -> Result<(), NetError> {
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros().max(1) as libc::suseconds_t,
        };
        // SAFETY: tv outlives the call and the length is that of timeval.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(self.recv_err(io::Error::last_os_error()));
        }
        Ok(())
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }

    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// The interface MTU (payload bytes after the Ethernet header).
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Sends one whole frame (Ethernet header included).
    pub fn send(&self, frame: &[u8]) -> Result<(), NetError> {
        // SAFETY: frame is a valid readable buffer of frame.len() bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(NetError::Send {
                iface: self.iface.clone(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Receives one frame addressed to this host (or broadcast) into `buf`; `None` when the
    /// receive timeout passes first. Frames longer than `buf` are truncated to it.
    pub fn recv(&self, buf: &mut [u8]) -> Result<Option<usize>, NetError> {
        loop {
            let mut from = sockaddr_ll(0, Mac::default());
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buf is writable for buf.len() bytes; from/len describe a sockaddr_ll.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                return match err.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Ok(None),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(self.recv_err(err)),
                };
            }
            let pkttype = from.sll_pkttype;
            if pkttype == libc::PACKET_OUTGOING || pkttype == libc::PACKET_OTHERHOST {
                continue;
            }
            return Ok(Some(n as usize));
        }
    }

    /// Receives up to `bufs.len()` frames with one `recvmmsg`: waits (up to the receive
    /// timeout) for the first, then takes whatever else is already queued. Returns how many
    /// entries of `lens` were filled; a length of 0 marks a frame filtered out (sent by this
    /// host or for another host).
    pub fn recv_batch(&self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> Result<usize, NetError> {
        self.recv_many(bufs, lens, libc::MSG_WAITFORONE)
    }

    /// As [`Self::recv_batch`], without waiting: only frames already queued (0 when none).
    pub fn recv_queued(&self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> Result<usize, NetError> {
        self.recv_many(bufs, lens, libc::MSG_DONTWAIT)
    }

    fn recv_many(
        &self,
        bufs: &mut [Vec<u8>],
        lens: &mut [usize],
        flags: libc::c_int,
    ) -> Result<usize, NetError> {
        let count = bufs.len().min(lens.len());
        let mut addrs: Vec<libc::sockaddr_ll> =
            (0..count).map(|_| sockaddr_ll(0, Mac::default())).collect();
        let mut iovs: Vec<libc::iovec> = bufs[..count]
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .zip(addrs.iter_mut())
            .map(|(iov, addr)| {
                // SAFETY: mmsghdr is a plain C struct; all-zero is a valid empty header.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = (addr as *mut libc::sockaddr_ll).cast();
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: every header points at a live iovec over a buffer of the stated length and
        // at a live sockaddr_ll; the vectors outlive the call and are not moved during it.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                count as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(self.recv_err(err)),
            };
        }
        let n = n as usize;
        for i in 0..n {
            let pkttype = addrs[i].sll_pkttype;
            let foreign = pkttype == libc::PACKET_OUTGOING || pkttype == libc::PACKET_OTHERHOST;
            lens[i] = if foreign { 0 } else { msgs[i].msg_len as usize };
        }
        Ok(n)
    }

    /// Sends several whole frames with one `sendmmsg`; returns how many were sent.
    pub fn send_batch(&self, frames: &[&[u8]]) -> Result<usize, NetError> {
        let mut iovs: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: mmsghdr is a plain C struct; all-zero is a valid empty header.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut sent = 0;
        while sent < msgs.len() {
            // SAFETY: each header points at a live iovec over a frame the kernel only reads;
            // the vectors outlive the call.
            let n = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    msgs[sent..].as_mut_ptr(),
                    (msgs.len() - sent) as libc::c_uint,
                    0,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NetError::Send {
                    iface: self.iface.clone(),
                    source: err,
                });
            }
            sent += n as usize;
        }
        Ok(sent)
    }

    fn recv_err(&self, source: io::Error) -> NetError {
        NetError::Recv {
            iface: self.iface.clone(),
            source,
        }
    }
}

fn sockaddr_ll(ifindex: i32, mac: Mac) -> libc::sockaddr_ll {
    let mut addr = [0u8; 8];
    addr[..6].copy_from_slice(&mac.0);
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ETHERTYPE_AOE.to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: addr,
    }
}
