//! One NIC's DHCP client loop: a UDP socket on port 68 bound to the interface, driving
//! [`DhcpClient`] and applying its actions (address, default route, `/etc/resolv.conf`).
//!
//! Replies arrive before the interface has an address because every request asks the server to
//! broadcast (flag 0x8000) and Linux delivers limited broadcasts to a socket bound to the
//! device; no AF_PACKET socket is needed. Renewals go unicast to the server from the leased
//! address. The loop never ends; errors are logged and the state machine's timers retry.

use super::dhcp::{Action, Destination, DhcpClient, Lease};
use super::link::Netlink;
use super::Nic;
use crate::info;
use rustix::net::{bind, ipproto, socket, sockopt, AddressFamily, SocketAddrV4, SocketType};
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENT_PORT: u16 = 68;
const SERVER_PORT: u16 = 67;

/// Why the DHCP socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{step} on {nic}: {source}")]
    Setup {
        step: &'static str,
        nic: String,
        source: std::io::Error,
    },
}

fn dhcp_socket(nic: &str) -> Result<UdpSocket, SocketError> {
    let fail = |step| {
        move |e: rustix::io::Errno| SocketError::Setup {
            step,
            nic: nic.to_owned(),
            source: e.into(),
        }
    };
    let fd = socket(AddressFamily::INET, SocketType::DGRAM, Some(ipproto::UDP))
        .map_err(fail("socket"))?;
    sockopt::set_socket_reuseaddr(&fd, true).map_err(fail("SO_REUSEADDR"))?;
    sockopt::set_socket_broadcast(&fd, true).map_err(fail("SO_BROADCAST"))?;
    let name = nic.as_bytes();
    // SAFETY: `name` is a live byte slice for the call; the kernel copies at most `name.len()`
    // bytes from it, and `fd` is an open socket we own.
    let rc = unsafe {
        libc::setsockopt(
            rustix::fd::AsRawFd::as_raw_fd(&fd),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(SocketError::Setup {
            step: "SO_BINDTODEVICE",
            nic: nic.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    bind(&fd, &SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT))
        .map_err(fail("bind port 68"))?;
    Ok(UdpSocket::from(fd))
}

/// Waits (polling sysfs) until the NIC reports carrier, at most `patience`.
fn wait_for_carrier(nic: &str, patience: Duration) -> bool {
    let path = format!("/sys/class/net/{nic}/carrier");
    let deadline = Instant::now() + patience;
    loop {
        if std::fs::read_to_string(&path).is_ok_and(|s| s.trim() == "1") {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The text of `/etc/resolv.conf` for `dns`.
pub fn resolv_conf(dns: &[Ipv4Addr]) -> String {
    dns.iter().map(|ip| format!("nameserver {ip}\n")).collect()
}

fn write_resolv_conf(dns: &[Ipv4Addr]) -> std::io::Result<()> {
    std::fs::create_dir_all("/etc")?;
    std::fs::write("/etc/resolv.conf.tmp", resolv_conf(dns))?;
    std::fs::rename("/etc/resolv.conf.tmp", "/etc/resolv.conf")
}

fn configure(nl: &mut Netlink, nic: &Nic, lease: &Lease) -> Result<(), super::link::LinkError> {
    nl.add_address(nic.ifindex, lease.addr, lease.prefix)?;
    if let Some(router) = lease.router {
        nl.set_default_route(nic.ifindex, router)?;
    }
    Ok(())
}

fn apply(
    nl: &mut Netlink,
    nic: &Nic,
    action: Action,
    socket: &UdpSocket,
    on_ready: &(dyn Fn(String) + Send + Sync),
) {
    match action {
        Action::Send { bytes, to } => {
            let dest = match to {
                Destination::Broadcast => Ipv4Addr::BROADCAST,
                Destination::Unicast(server) => server,
            };
            if let Err(e) = socket.send_to(&bytes, (dest, SERVER_PORT)) {
                info!("{}: dhcp send to {dest}: {e}", nic.name);
            }
        }
        Action::Configure(lease) => {
            info!(
                "{}: lease {}/{} router {:?} dns {:?} from {} for {} s",
                nic.name,
                lease.addr,
                lease.prefix,
                lease.router,
                lease.dns,
                lease.server,
                lease.lease_time.as_secs()
            );
            if let Err(e) = configure(nl, nic, &lease) {
                info!("{}: configuring lease: {e}", nic.name);
                return;
            }
            if !lease.dns.is_empty() {
                if let Err(e) = write_resolv_conf(&lease.dns) {
                    info!("writing /etc/resolv.conf: {e}");
                }
            }
            on_ready(format!("{}/{}", lease.addr, lease.prefix));
        }
        Action::Deconfigure(lease) => {
            info!(
                "{}: dropping lease {}/{}",
                nic.name, lease.addr, lease.prefix
            );
            if let Err(e) = nl.del_address(nic.ifindex, lease.addr, lease.prefix) {
                info!("{}: {e}", nic.name);
            }
        }
    }
}

/// Runs the DHCP client of `nic` forever.
pub fn run(nic: Nic, hostname: String, on_ready: Arc<dyn Fn(String) + Send + Sync>) {
    let setup = || -> anyhow::Result<(Netlink, UdpSocket)> {
        let mut nl = Netlink::open()?;
        nl.set_up(nic.ifindex)?;
        Ok((nl, dhcp_socket(&nic.name)?))
    };
    let (mut nl, socket) = match setup() {
        Ok(pair) => pair,
        Err(e) => return info!("{}: network setup failed: {e:#}", nic.name),
    };
    if !wait_for_carrier(&nic.name, Duration::from_secs(5)) {
        info!("{}: no carrier after 5 s; trying DHCP anyway", nic.name);
    }
    let origin = Instant::now();
    let seed = nic.mac.iter().fold(
        origin.elapsed().as_nanos() as u64 ^ crate::log::boottime_ms(),
        |a, &b| a.rotate_left(8) ^ u64::from(b),
    );
    let mut dhcp = DhcpClient::new(nic.mac, Some(hostname), seed);
    let mut buf = vec![0u8; 1500];
    let mut state = dhcp.state_name();
    loop {
        let now = origin.elapsed();
        let result = if now >= dhcp.deadline() {
            dhcp.on_timeout(now)
        } else {
            let _ = socket.set_read_timeout(Some(dhcp.deadline() - now));
            match socket.recv_from(&mut buf) {
                Ok((n, _)) => dhcp.on_packet(origin.elapsed(), &buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    info!("{}: dhcp receive: {e}", nic.name);
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            }
        };
        if dhcp.state_name() != state {
            info!("{}: dhcp {state} -> {}", nic.name, dhcp.state_name());
            state = dhcp.state_name();
        }
        match result {
            Ok(actions) => {
                for action in actions {
                    apply(&mut nl, &nic, action, &socket, on_ready.as_ref());
                }
            }
            Err(e) => info!("{}: dhcp: {e}", nic.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_lists_each_server() {
        let dns = [Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)];
        assert_eq!(
            resolv_conf(&dns),
            "nameserver 10.0.2.3\nnameserver 1.1.1.1\n"
        );
    }
}
