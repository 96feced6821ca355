//! The frontend's gateway, applied as root: init's side of [`mallee_proto::gateway`]. It makes
//! the gateway directory for the unprivileged daemon at boot, turns on IPv4 forwarding, watches
//! the directory for the daemon's [`GATEWAY_FILE`] and applies the whole desired state each time
//! it changes — the `mgw*` VLAN links and their addresses, the public /32 addresses (each
//! announced by a gratuitous ARP, [`arp`]), the nftables tables in one transaction ([`nft`]) —
//! then answers with [`APPLIED_FILE`]. A failed apply is tried again after [`RETRY`].
//!
//! It does not decide what the gateway should be (the daemon's cluster controller does), and it
//! touches no link, address or table the contract does not name: `mgw*` links, the public
//! addresses this process added, and the tables of [`mallee_proto::gateway::TABLES`].

pub mod arp;
mod links;
pub mod nft;

use crate::net::link::{LinkError, Netlink};
use crate::reaper;
use mallee_proto::gateway::{Applied, Gateway, APPLIED_FILE, GATEWAY_FILE};
use mallee_proto::handoff::{read_bounded, replace, HandoffError, Version};
use nft::{NftError, Spawn};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// The gateway directory on the appliance (the daemon's `gateway_dir`).
pub const GATEWAY_DIR: &str = "/run/mallee/gateway";
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
/// How soon a failed apply is tried again.
pub const RETRY: Duration = Duration::from_secs(5);
/// How often the file is looked at when inotify is unavailable.
const POLL: Duration = Duration::from_millis(200);
/// How often it is looked at anyway while inotify watches (a safety net, one `stat`).
const RECHECK: Duration = Duration::from_secs(10);
/// The largest gateway file read.
const MAX_FILE: u64 = 16 << 20;
/// Where [`APPLIED_FILE`] is written before it is renamed into place.
const APPLIED_TEMP: &str = ".applied.json.init-tmp";

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Handoff(#[from] HandoffError),
    #[error("{path} is not a gateway: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("watching {path}: {source}")]
    Watch {
        path: String,
        source: rustix::io::Errno,
    },
    #[error(transparent)]
    Netlink(#[from] LinkError),
    #[error("link {name}: {source}")]
    Link { name: String, source: LinkError },
    #[error("no interface {0}")]
    NoInterface(String),
    #[error("VLAN {0} is listed twice")]
    DuplicateVlan(u16),
    #[error("{address}/{prefix} on {link}: {source}")]
    Address {
        link: String,
        address: Ipv4Addr,
        prefix: u8,
        source: LinkError,
    },
    #[error("gratuitous ARP for {address} on {interface}: {source}")]
    Arp {
        interface: String,
        address: Ipv4Addr,
        source: std::io::Error,
    },
    #[error("nftables: {0}")]
    Nft(#[from] NftError),
}

impl GatewayError {
    /// A refusal of what the daemon asked for: trying the same file again cannot help.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            GatewayError::DuplicateVlan(_)
                | GatewayError::Nft(
                    NftError::Include | NftError::ForeignTable(_) | NftError::WholeRuleset
                )
        )
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> GatewayError + '_ {
    move |source| GatewayError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Makes `dir` for the daemon, owned by its `uid:gid` and readable by all (init reads it, the
/// daemon writes it).
pub fn prepare(dir: &Path, (uid, gid): (u32, u32)) -> Result<(), GatewayError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(io_err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io_err(dir))
}

/// Lets the kernel route between the instance networks and the outside.
pub fn enable_forwarding() -> Result<(), GatewayError> {
    std::fs::write(IP_FORWARD, "1\n").map_err(io_err(Path::new(IP_FORWARD)))
}

/// No ICMP redirects from `interface` (nor from any, since the kernel ORs `all` in): untagged
/// networks (MANAGED-NOVLAN) share the private NIC, so traffic between them leaves by the
/// interface it came in on, and a redirect would tell a guest to bypass the gateway — and its
/// security group rules — by sending straight to the other network. Best effort: logged.
fn no_redirects(interface: &str) {
    for conf in ["all", "default", interface] {
        let path = format!("/proc/sys/net/ipv4/conf/{conf}/send_redirects");
        if let Err(e) = std::fs::write(&path, "0\n") {
            warn!("gateway: {path}: {e}");
        }
    }
}

/// Watches `dir` on a thread of its own for as long as init runs, applying with `nft` at
/// [`nft::NFT`] run through PID 1's reaper.
pub fn start(dir: PathBuf) {
    let applier = Applier::new(Path::new(nft::NFT), spawn_reaped);
    std::thread::spawn(move || watch(&dir, applier, &AtomicBool::new(false)));
}

fn spawn_reaped(command: &mut Command) -> std::io::Result<std::sync::mpsc::Receiver<i32>> {
    reaper::spawn_watched(command).map(|(_, exited)| exited)
}

/// Reads the gateway file at `path` without following a symlink or blocking on a FIFO the
/// directory's owner may have put there.
fn read_gateway(path: &Path) -> Result<(Gateway, Version), GatewayError> {
    let (text, meta) = read_bounded(path, MAX_FILE)?;
    let gateway = serde_json::from_slice(&text).map_err(|source| GatewayError::Parse {
        path: path.display().to_string(),
        source,
    })?;
    Ok((gateway, Version::of(&meta)))
}

/// Writes `applied` as [`APPLIED_FILE`] in `dir`: a fresh temporary file (never one the
/// directory's owner prepared), mode 0644, renamed into place.
pub fn write_applied(dir: &Path, applied: &Applied) -> Result<(), GatewayError> {
    // Serializing two plain fields cannot fail.
    let text = serde_json::to_string(applied).unwrap_or_default() + "\n";
    Ok(replace(dir, APPLIED_TEMP, APPLIED_FILE, text.as_bytes())?)
}

/// What one look at the gateway file came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub applied: Applied,
    /// The apply failed and should be tried again ([`RETRY`]); a file that does not parse, or
    /// that is refused ([`GatewayError::is_refusal`]), waits for a change instead.
    pub retry: bool,
    version: Option<Version>,
}

/// Applies gateways, remembering the addresses it added beside links' own (the only ones it
/// removes).
pub struct Applier {
    nft: PathBuf,
    spawn: Spawn,
    added: BTreeSet<links::Added>,
}

impl Applier {
    pub fn new(nft: &Path, spawn: Spawn) -> Self {
        Applier {
            nft: nft.to_path_buf(),
            spawn,
            added: BTreeSet::new(),
        }
    }

    /// Reads the gateway file in `dir`, applies it and writes the answer beside it.
    pub fn handle(&mut self, dir: &Path) -> Outcome {
        let outcome = match read_gateway(&dir.join(GATEWAY_FILE)) {
            Ok((gateway, version)) => {
                let errors = self.apply(&gateway);
                let generation = gateway.generation;
                let retry = errors.iter().any(|e| !e.is_refusal());
                let error = if errors.is_empty() {
                    info!("gateway: generation {generation} applied");
                    None
                } else {
                    let joined = (errors.iter())
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ");
                    let then = if retry {
                        format!("retrying in {RETRY:?}")
                    } else {
                        "waiting for a change".to_owned()
                    };
                    warn!("gateway: generation {generation}: {joined}; {then}");
                    Some(joined)
                };
                Outcome {
                    retry,
                    applied: Applied { generation, error },
                    version: Some(version),
                }
            }
            Err(e) => {
                warn!("gateway: {e}; nothing applied");
                Outcome {
                    applied: Applied {
                        generation: 0,
                        error: Some(e.to_string()),
                    },
                    retry: false,
                    version: None,
                }
            }
        };
        if let Err(e) = write_applied(dir, &outcome.applied) {
            error!("gateway: answering: {e}");
        }
        outcome
    }

    /// Applies the whole of `gateway`: every part is tried; the failures come back.
    pub fn apply(&mut self, gateway: &Gateway) -> Vec<GatewayError> {
        let mut errors = Vec::new();
        match Netlink::open() {
            Ok(mut nl) => {
                errors.extend(links::apply_links(&mut nl, gateway));
                errors.extend(links::apply_added(&mut nl, gateway, &mut self.added));
                no_redirects(&gateway.interface);
            }
            Err(e) => errors.push(e.into()),
        }
        if let Err(e) = nft::apply(&self.nft, &gateway.ruleset, self.spawn) {
            errors.push(e.into());
        }
        errors
    }
}

/// An inotify watch for renames and writes in a directory.
struct Inotify(std::os::fd::OwnedFd);

impl Inotify {
    fn watch(dir: &Path) -> Result<Self, GatewayError> {
        use rustix::fs::inotify;
        let err = |source| GatewayError::Watch {
            path: dir.display().to_string(),
            source,
        };
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
            .map_err(err)?;
        let events = inotify::WatchFlags::CLOSE_WRITE | inotify::WatchFlags::MOVED_TO;
        inotify::add_watch(&fd, dir, events).map_err(err)?;
        Ok(Inotify(fd))
    }

    /// Waits up to `timeout` for an event, then drains them all (which file changed does not
    /// matter: the caller compares versions).
    fn wait(&self, timeout: Duration) {
        let mut pollfd = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd, for the duration of the call.
        unsafe { libc::poll(&mut pollfd, 1, ms) };
        let mut buf = [0u8; 4096];
        while rustix::io::read(&self.0, &mut buf).is_ok_and(|n| n > 0) {}
    }
}

/// Applies the gateway file in `dir` whenever it changes (inotify, or a look every 200 ms
/// without it), and again every [`RETRY`] while applying fails, until `stop` is set.
pub fn watch(dir: &Path, mut applier: Applier, stop: &AtomicBool) {
    let inotify = Inotify::watch(dir)
        .inspect_err(|e| warn!("gateway: {e}; looking every {POLL:?} instead"))
        .ok();
    let file = dir.join(GATEWAY_FILE);
    let mut seen: Option<Version> = None;
    let mut retry_at: Option<Instant> = None;
    info!("gateway: watching {}", dir.display());
    while !stop.load(Ordering::Relaxed) {
        let now = std::fs::symlink_metadata(&file)
            .ok()
            .map(|m| Version::of(&m));
        let due = retry_at.is_some_and(|at| Instant::now() >= at);
        if now.is_some() && (now != seen || due) {
            let outcome = applier.handle(dir);
            seen = outcome.version.or(now);
            retry_at = outcome.retry.then(|| Instant::now() + RETRY);
        }
        let mut timeout = if inotify.is_some() { RECHECK } else { POLL };
        if let Some(at) = retry_at {
            timeout = timeout.min(at.saturating_duration_since(Instant::now()));
        }
        match &inotify {
            Some(inotify) => inotify.wait(timeout),
            None => std::thread::sleep(timeout),
        }
    }
}

#[cfg(test)]
mod tests;
