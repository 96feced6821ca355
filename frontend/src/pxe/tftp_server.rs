//! The TFTP service: a UDP socket taking read requests, one task per transfer on its own port
//! (RFC 1350's transfer identifier), files served read-only from one directory.
//!
//! Names are resolved under the root with `..`, absolute paths and symlinks leading outside
//! refused. The protocol itself (packets, options, retransmission) is [`super::tftp`].

use super::events::{EventLog, PxeEvent};
use super::tftp::{ErrorCode, Packet, ReadTransfer, Step};
use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use tokio::net::UdpSocket;

#[derive(Debug, thiserror::Error)]
pub enum TftpRequestError {
    #[error("TFTP path `{0}` leaves the served directory")]
    Traversal(String),
    #[error("TFTP file `{0}` not found")]
    NotFound(String),
    #[error("TFTP mode `{0}` not supported (octet and netascii only)")]
    Mode(String),
}

impl TftpRequestError {
    fn packet(&self) -> Packet {
        let code = match self {
            TftpRequestError::Traversal(_) => ErrorCode::AccessViolation,
            TftpRequestError::NotFound(_) => ErrorCode::FileNotFound,
            TftpRequestError::Mode(_) => ErrorCode::IllegalOperation,
        };
        Packet::error(code, &self.to_string())
    }
}

/// The file `name` names under `root`, if it is a regular file inside it.
pub fn resolve(root: &Path, name: &str) -> Result<PathBuf, TftpRequestError> {
    let relative = Path::new(name.trim_start_matches('/'));
    let plain = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !plain || name.contains('\0') || name.contains('\\') {
        return Err(TftpRequestError::Traversal(name.into()));
    }
    let root = root
        .canonicalize()
        .map_err(|_| TftpRequestError::NotFound(name.into()))?;
    let path = root
        .join(relative)
        .canonicalize()
        .map_err(|_| TftpRequestError::NotFound(name.into()))?;
    if !path.starts_with(&root) {
        return Err(TftpRequestError::Traversal(name.into()));
    }
    if !path.is_file() {
        return Err(TftpRequestError::NotFound(name.into()));
    }
    Ok(path)
}

/// Serves read requests arriving on `socket` from files under `root`, until the task is dropped.
pub async fn run(socket: UdpSocket, root: PathBuf, events: EventLog) {
    let local_ip = socket
        .local_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("tftp: receive: {e}");
                continue;
            }
        };
        match Packet::parse(&buf[..n]) {
            Ok(Packet::Rrq {
                filename,
                mode,
                options,
            }) => {
                let root = root.clone();
                let events = events.clone();
                tokio::spawn(async move {
                    match transfer(local_ip, peer, &root, &filename, &mode, &options).await {
                        Ok(()) => events.push(PxeEvent::TftpSent {
                            file: filename,
                            peer,
                        }),
                        Err(e) => tracing::warn!("tftp: {peer} {filename}: {e}"),
                    }
                });
            }
            Ok(Packet::Wrq { .. }) => {
                let refuse = Packet::error(ErrorCode::AccessViolation, "read-only server");
                let _ = socket.send_to(&refuse.emit(), peer).await;
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("tftp: {peer}: {e}"),
        }
    }
}

/// One RRQ, from a fresh socket (the server's transfer identifier) to the last ACK.
async fn transfer(
    local_ip: IpAddr,
    peer: SocketAddr,
    root: &Path,
    filename: &str,
    mode: &str,
    options: &[(String, String)],
) -> std::io::Result<()> {
    let socket = UdpSocket::bind((local_ip, 0)).await?;
    socket.connect(peer).await?;
    let opened = if mode.eq_ignore_ascii_case("octet") || mode.eq_ignore_ascii_case("netascii") {
        resolve(root, filename)
    } else {
        Err(TftpRequestError::Mode(mode.into()))
    };
    let path = match opened {
        Ok(path) => path,
        Err(e) => {
            socket.send(&e.packet().emit()).await?;
            return Err(std::io::Error::other(e.to_string()));
        }
    };
    let file = std::io::BufReader::new(std::fs::File::open(&path)?);
    let (mut t, first) = ReadTransfer::start(file, options)?;
    let timeout = Duration::from_secs(u64::from(t.options().timeout_secs));
    socket.send(&first).await?;
    let mut buf = vec![0u8; 2048];
    loop {
        let step = match tokio::time::timeout(timeout, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => t.on_packet(&buf[..n])?,
            // ICMP port unreachable from the client shows up here: it went away.
            Ok(Err(e)) => return Err(e),
            Err(_) => t.on_timeout(),
        };
        match step {
            Step::Send(p) => {
                socket.send(&p).await?;
            }
            Step::Wait => {}
            Step::Done => return Ok(()),
            Step::Abort(why) => return Err(std::io::Error::other(why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mallee-tftp-root-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("undionly.kpxe"), b"x").unwrap();
        std::fs::write(dir.join("sub/file"), b"y").unwrap();
        let _ = std::os::unix::fs::symlink("/etc/passwd", dir.join("escape"));
        dir
    }

    #[test]
    fn plain_names_resolve_inside_root() {
        let r = root();
        assert!(resolve(&r, "undionly.kpxe").is_ok());
        assert!(resolve(&r, "/sub/file").is_ok());
        assert!(resolve(&r, "./sub/file").is_ok());
    }

    #[test]
    fn traversal_is_refused() {
        let r = root();
        for name in [
            "../etc/passwd",
            "sub/../../etc/passwd",
            "..",
            "escape",
            "a\\..\\b",
        ] {
            assert!(
                matches!(resolve(&r, name), Err(TftpRequestError::Traversal(_))),
                "{name}"
            );
        }
        assert!(matches!(
            resolve(&r, "missing"),
            Err(TftpRequestError::NotFound(_))
        ));
        assert!(matches!(
            resolve(&r, "sub"),
            Err(TftpRequestError::NotFound(_))
        ));
    }
}
