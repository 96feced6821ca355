//! The frontend's PXE service on the private NIC: DHCP (handing plain PXE ROMs an iPXE binary
//! and iPXE the HTTP script), read-only TFTP for the iPXE binaries, and HTTP for `boot.ipxe`,
//! the node kernel and initramfs.
//!
//! [`serve`] binds the three sockets (DHCP on one interface with `SO_BINDTODEVICE`) and runs
//! them as tokio tasks until the returned [`PxeHandle`] is dropped. The protocol logic lives in
//! plain state machines ([`dhcp`], [`tftp`]) that tests drive without sockets.

pub mod boot;
pub mod dhcp;
pub mod events;
pub mod http;
pub mod leases;
pub mod pool;
pub mod ra;
pub mod tftp;
pub mod tftp_server;

use boot::BootFiles;
use dhcp::DhcpServer;
use dhcproto::v4::MessageType;
use events::{EventLog, PxeEvent};
use http::{NodeBoot, NodeParams};
use leases::{LeaseStore, LeaseStoreError, Mac, SqliteLeaseStore};
use pool::{Pool, PoolConfig, PoolError};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum PxeError {
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("reading the node image's {path}: {source}")]
    Image {
        path: String,
        source: std::io::Error,
    },
    #[error("creating the lease directory {path}: {source}")]
    LeaseDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cmdline(#[from] http::NodeCmdlineError),
    #[error(transparent)]
    Leases(#[from] LeaseStoreError),
    #[error(transparent)]
    Pool(#[from] PoolError),
}

/// Everything the PXE service needs. `PxeConfig::new` gives working defaults for a segment.
#[derive(Debug, Clone)]
pub struct PxeConfig {
    /// The private NIC the DHCP server answers on.
    pub interface: String,
    /// The frontend's address on that NIC: server identifier, router, next-server.
    pub server_ip: Ipv4Addr,
    pub prefix_len: u8,
    pub range_start: Ipv4Addr,
    pub range_end: Ipv4Addr,
    pub lease_secs: u32,
    pub reservations: HashMap<Mac, Ipv4Addr>,
    pub dhcp_port: u16,
    pub tftp_port: u16,
    /// 0 picks a free port (tests).
    pub http_port: u16,
    /// Where `undionly.kpxe`, `ipxe.efi` and `snponly.efi` are (Debian's `ipxe` package).
    pub tftp_root: PathBuf,
    pub bios_file: String,
    pub uefi_file: String,
    /// `vmlinuz`, `initramfs` and `cmdline` of the node netboot bundle.
    pub node_image: PathBuf,
    pub node: NodeParams,
    /// SQLite database holding the `pxe_leases` table.
    pub lease_db: PathBuf,
    /// Answer IPv6 router solicitations with an empty advertisement, so iPXE does not wait
    /// for an IPv6 router that does not exist (see [`ra`]).
    pub answer_router_solicitations: bool,
}

impl PxeConfig {
    /// Defaults for a /24 around `server_ip`: pool .100–.199, one-hour leases, standard ports,
    /// HTTP on 8069, iPXE binaries from `/usr/lib/ipxe`, leases in
    /// `/var/lib/mallee/state.sqlite3` (the frontend's state database, table `pxe_leases`).
    pub fn new(
        interface: &str,
        server_ip: Ipv4Addr,
        node_image: PathBuf,
        node: NodeParams,
    ) -> Self {
        let [a, b, c, _] = server_ip.octets();
        Self {
            interface: interface.to_string(),
            server_ip,
            prefix_len: 24,
            range_start: Ipv4Addr::new(a, b, c, 100),
            range_end: Ipv4Addr::new(a, b, c, 199),
            lease_secs: 3600,
            reservations: HashMap::new(),
            dhcp_port: 67,
            tftp_port: 69,
            http_port: 8069,
            tftp_root: PathBuf::from("/usr/lib/ipxe"),
            bios_file: "undionly.kpxe".into(),
            uefi_file: "snponly.efi".into(),
            lease_db: PathBuf::from("/var/lib/mallee/state.sqlite3"),
            answer_router_solicitations: true,
            node_image,
            node,
        }
    }
}

/// The running service; dropping it stops every task.
pub struct PxeHandle {
    pub http_addr: SocketAddr,
    pub tftp_addr: SocketAddr,
    pub boot_script_url: String,
    pub events: EventLog,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for PxeHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts DHCP, TFTP and HTTP with leases in `config.lease_db`. Must run inside a tokio runtime.
pub async fn serve(config: PxeConfig) -> Result<PxeHandle, PxeError> {
    if let Some(dir) = config.lease_db.parent() {
        std::fs::create_dir_all(dir).map_err(|source| PxeError::LeaseDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let store = SqliteLeaseStore::open(&config.lease_db)?;
    serve_with_store(config, Box::new(store)).await
}

/// [`serve`] with leases kept in `store` (the frontend passes its state database).
pub async fn serve_with_store(
    config: PxeConfig,
    store: Box<dyn LeaseStore>,
) -> Result<PxeHandle, PxeError> {
    let bind_err = |what, addr: String| move |source| PxeError::Bind { what, addr, source };
    let ip = config.server_ip;

    let http_at = SocketAddrV4::new(ip, config.http_port);
    let http_listener = TcpListener::bind(http_at)
        .await
        .map_err(bind_err("HTTP", http_at.to_string()))?;
    let http_addr = http_listener
        .local_addr()
        .map_err(bind_err("HTTP", http_at.to_string()))?;
    let base_url = format!("http://{http_addr}");

    let base_cmdline = read_image_file(&config, "cmdline")?;
    let cmdline = http::node_cmdline(&base_cmdline, &config.node)?;
    let node_boot = NodeBoot {
        script: http::boot_script(&base_url, &cmdline),
        vmlinuz: config.node_image.join("vmlinuz"),
        initramfs: config.node_image.join("initramfs"),
    };
    for f in [&node_boot.vmlinuz, &node_boot.initramfs] {
        std::fs::metadata(f).map_err(|source| PxeError::Image {
            path: f.display().to_string(),
            source,
        })?;
    }

    let tftp_at = SocketAddrV4::new(ip, config.tftp_port);
    let tftp_socket = UdpSocket::bind(tftp_at)
        .await
        .map_err(bind_err("TFTP", tftp_at.to_string()))?;
    let tftp_addr = tftp_socket
        .local_addr()
        .map_err(bind_err("TFTP", tftp_at.to_string()))?;

    let dhcp_socket = dhcp_socket(&config.interface, config.dhcp_port).map_err(bind_err(
        "DHCP",
        format!("{}:{}", config.interface, config.dhcp_port),
    ))?;
    let boot_script_url = format!("{base_url}/boot.ipxe");
    let pool = Pool::new(
        PoolConfig {
            server_ip: ip,
            prefix_len: config.prefix_len,
            range_start: config.range_start,
            range_end: config.range_end,
            lease_secs: config.lease_secs,
            reservations: config.reservations.clone(),
        },
        store,
    )?;
    let dhcp = DhcpServer::new(
        pool,
        BootFiles {
            ipxe_script_url: boot_script_url.clone(),
            bios: config.bios_file.clone(),
            uefi: config.uefi_file.clone(),
        },
    );

    let events = EventLog::default();
    let ra_socket = if config.answer_router_solicitations {
        Some(ra::socket(&config.interface).map_err(bind_err(
            "ICMPv6 (router solicitations)",
            config.interface.clone(),
        ))?)
    } else {
        None
    };
    let router = http::router(node_boot, events.clone());
    let mut tasks = vec![
        tokio::spawn(async move {
            if let Err(e) = axum::serve(http_listener, router).await {
                tracing::error!("pxe http: {e}");
            }
        }),
        tokio::spawn(tftp_server::run(
            tftp_socket,
            config.tftp_root.clone(),
            events.clone(),
        )),
        tokio::spawn(run_dhcp(dhcp_socket, dhcp, events.clone())),
    ];
    if let Some((fd, index)) = ra_socket {
        tasks.push(tokio::spawn(ra::run(fd, index)));
    }
    tracing::info!(
        "pxe: DHCP on {}:{}, TFTP on {tftp_addr}, HTTP on {http_addr}",
        config.interface,
        config.dhcp_port
    );
    Ok(PxeHandle {
        http_addr,
        tftp_addr,
        boot_script_url,
        events,
        tasks,
    })
}

fn read_image_file(config: &PxeConfig, name: &str) -> Result<String, PxeError> {
    let path = config.node_image.join(name);
    std::fs::read_to_string(&path).map_err(|source| PxeError::Image {
        path: path.display().to_string(),
        source,
    })
}

/// UDP `0.0.0.0:port` receiving only from `interface`, allowed to broadcast.
fn dhcp_socket(interface: &str, port: u16) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    s.bind_device(Some(interface.as_bytes()))?;
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

async fn run_dhcp(socket: UdpSocket, mut server: DhcpServer, events: EventLog) {
    let mut buf = vec![0u8; 1500];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("dhcp: receive: {e}");
                continue;
            }
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        match server.handle_bytes(&buf[..n], now) {
            Ok(Some(reply)) => {
                let sent = match reply.to_bytes() {
                    Ok(bytes) => socket.send_to(&bytes, reply.to.socket_addr()).await,
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                };
                match sent {
                    Ok(_) => events.push(PxeEvent::Dhcp {
                        kind: format!("{:?}", reply.kind().unwrap_or(MessageType::Unknown(0))),
                        mac: Mac(reply.message.chaddr().try_into().unwrap_or_default()),
                        ip: reply.message.yiaddr(),
                        boot_file: reply.boot_file(),
                    }),
                    Err(e) => tracing::warn!("dhcp: reply to {:?}: {e}", reply.to),
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!("dhcp: from {peer}: {e}"),
        }
    }
}
