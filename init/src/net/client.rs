//! One NIC's DHCP client loop: a UDP socket on port 68 bound to the interface, driving
//! [`DhcpClient`] and applying its actions (address; on the [`Uplink`] NIC also the default
//! route, `/etc/resolv.conf` and the readiness callback).
//!
//! Replies arrive before the interface has an address because every request asks the server to
//! broadcast (flag 0x8000) and Linux delivers limited broadcasts to a socket bound to the
//! device; no AF_PACKET socket is needed. Renewals go unicast to the server from the leased
//! address. The loop runs until its stop flag is set (never, in PID 1); errors are logged and the
//! state machine's timers retry.

use super::dhcp::{Action, Destination, DhcpClient};
use super::lease::Lease;
use super::link::Netlink;
use super::Nic;
use rustix::net::{bind, ipproto, socket, sockopt, AddressFamily, SocketAddrV4, SocketType};
use std::io::ErrorKind;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

const CLIENT_PORT: u16 = 68;
const SERVER_PORT: u16 = 67;

/// What a client needs besides its NIC.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Sent to the server (option 12).
    pub hostname: String,
    /// Written from the DNS servers of the uplink's lease (normally `/etc/resolv.conf`).
    pub resolv_conf: PathBuf,
    /// Shared by all clients of one machine.
    pub uplink: Arc<Uplink>,
}

/// Which NIC owns the default route, DNS and the readiness report: the first to get a lease,
/// until it loses that lease. Other NICs only get their addresses.
#[derive(Debug, Default)]
pub struct Uplink(Mutex<Option<String>>);

impl Uplink {
    /// True if `nic` is (now) the uplink.
    pub fn claim(&self, nic: &str) -> bool {
        let mut owner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        owner.get_or_insert_with(|| nic.to_owned()) == nic
    }

    /// Gives up the uplink role if `nic` holds it.
    pub fn release(&self, nic: &str) {
        let mut owner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if owner.as_deref() == Some(nic) {
            *owner = None;
        }
    }
}

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

/// Waits (polling sysfs) until the NIC reports carrier, at most `patience`. An interface this
/// sysfs does not show (another network namespace) is not waited for.
fn wait_for_carrier(nic: &str, patience: Duration) -> bool {
    let path = format!("/sys/class/net/{nic}/carrier");
    let deadline = Instant::now() + patience;
    loop {
        match std::fs::read_to_string(&path) {
            Ok(s) if s.trim() == "1" => return true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
            _ if Instant::now() >= deadline => return false,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The text of `/etc/resolv.conf` for `dns`.
pub fn resolv_conf(dns: &[Ipv4Addr]) -> String {
    dns.iter().map(|ip| format!("nameserver {ip}\n")).collect()
}

/// Writes [`resolv_conf`] of `dns` to `path` (through a temporary file renamed over it).
pub fn write_resolv_conf(path: &Path, dns: &[Ipv4Addr]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, resolv_conf(dns))?;
    std::fs::rename(&tmp, path)
}

/// Called with `ADDR/PREFIX` each time a lease is configured.
pub type OnReady = Arc<dyn Fn(String) + Send + Sync>;

/// The I/O half of one NIC's client: socket, netlink and where results go.
struct Client {
    nic: Nic,
    config: ClientConfig,
    nl: Netlink,
    socket: UdpSocket,
    on_ready: OnReady,
}

impl Client {
    /// Sets the address; the uplink NIC also gets the default route and DNS.
    fn configure(&mut self, lease: &Lease, uplink: bool) -> Result<(), super::link::LinkError> {
        self.nl
            .add_address(self.nic.ifindex, lease.addr, lease.prefix)?;
        if let Some(router) = lease.router.filter(|_| uplink) {
            self.nl.set_default_route(self.nic.ifindex, router)?;
        }
        for (dst, prefix, via) in &lease.routes {
            self.nl.add_route(self.nic.ifindex, (*dst, *prefix), *via)?;
        }
        Ok(())
    }

    fn apply(&mut self, action: Action) {
        let name = self.nic.name.clone();
        match action {
            Action::Send { bytes, to } => {
                let dest = match to {
                    Destination::Broadcast => Ipv4Addr::BROADCAST,
                    Destination::Unicast(server) => server,
                };
                if let Err(e) = self.socket.send_to(&bytes, (dest, SERVER_PORT)) {
                    warn!("{name}: dhcp send to {dest}: {e}");
                }
            }
            Action::Configure(lease) => {
                info!(
                    "{name}: lease {}/{} router {:?} dns {:?} from {} for {} s",
                    lease.addr,
                    lease.prefix,
                    lease.router,
                    lease.dns,
                    lease.server,
                    lease.lease_time.as_secs()
                );
                let uplink = self.config.uplink.claim(&name);
                if let Err(e) = self.configure(&lease, uplink) {
                    return warn!("{name}: configuring lease: {e}");
                }
                if !uplink {
                    return info!("{name}: not the uplink; default route and DNS stay as they are");
                }
                if !lease.dns.is_empty() {
                    if let Err(e) = write_resolv_conf(&self.config.resolv_conf, &lease.dns) {
                        warn!("writing {}: {e}", self.config.resolv_conf.display());
                    }
                }
                (self.on_ready)(format!("{}/{}", lease.addr, lease.prefix));
            }
            Action::Deconfigure(lease) => {
                info!("{name}: dropping lease {}/{}", lease.addr, lease.prefix);
                self.config.uplink.release(&name);
                if let Err(e) = self
                    .nl
                    .del_address(self.nic.ifindex, lease.addr, lease.prefix)
                {
                    warn!("{name}: {e}");
                }
            }
        }
    }

    /// Waits for the next datagram until `deadline` (at most 1 s, so `stop` is noticed).
    fn receive(&self, buf: &mut [u8], wait: Duration) -> Option<usize> {
        let _ = self
            .socket
            .set_read_timeout(Some(wait.min(Duration::from_secs(1))));
        match self.socket.recv_from(buf) {
            Ok((n, _)) => Some(n),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                None
            }
            Err(e) => {
                warn!("{}: dhcp receive: {e}", self.nic.name);
                std::thread::sleep(Duration::from_secs(1));
                None
            }
        }
    }
}

/// Runs the DHCP client of `nic` until `stop` is set (in PID 1: forever).
pub fn run(nic: Nic, config: ClientConfig, on_ready: OnReady, stop: Arc<AtomicBool>) {
    let setup = || -> anyhow::Result<(Netlink, UdpSocket)> {
        let mut nl = Netlink::open()?;
        nl.set_up(nic.ifindex)?;
        Ok((nl, dhcp_socket(&nic.name)?))
    };
    let (nl, socket) = match setup() {
        Ok(pair) => pair,
        Err(e) => return warn!("{}: network setup failed: {e:#}", nic.name),
    };
    if !wait_for_carrier(&nic.name, Duration::from_secs(5)) {
        info!("{}: no carrier after 5 s; trying DHCP anyway", nic.name);
    }
    let origin = Instant::now();
    let seed = nic.mac.0.iter().fold(
        crate::log::boottime_ms() ^ u64::from(std::process::id()),
        |a, &b| a.rotate_left(8) ^ u64::from(b),
    );
    let mut dhcp = DhcpClient::new(nic.mac.0, Some(config.hostname.clone()), seed);
    let mut client = Client {
        nic,
        config,
        nl,
        socket,
        on_ready,
    };
    let mut buf = vec![0u8; 1500];
    let mut state = dhcp.state_name();
    while !stop.load(Ordering::Relaxed) {
        let now = origin.elapsed();
        let result = if now >= dhcp.deadline() {
            dhcp.on_timeout(now)
        } else {
            match client.receive(&mut buf, dhcp.deadline() - now) {
                Some(n) => dhcp.on_packet(origin.elapsed(), &buf[..n]),
                None => continue,
            }
        };
        if dhcp.state_name() != state {
            info!("{}: dhcp {state} -> {}", client.nic.name, dhcp.state_name());
            state = dhcp.state_name();
        }
        match result {
            Ok(actions) => actions.into_iter().for_each(|action| client.apply(action)),
            Err(e) => warn!("{}: dhcp: {e}", client.nic.name),
        }
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
