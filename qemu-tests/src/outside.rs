//! The world outside a cloud under test: a network namespace of its own behind the frontend
//! VM's public NIC (a tap on a bridge that a veth pair joins to the namespace, so every boot of
//! the frontend finds its tap by name). The namespace has `198.51.100.1/24` (TEST-NET-2, the
//! net of the frontend's default public pool), a DHCP server (dnsmasq, itself the router) that
//! gives the frontend's public NIC its address, and helpers that connect and serve from inside
//! it, as a host on the Internet would. Nothing leaves the bridge and the namespace.

use crate::testdir::TestDir;
use crate::vm::Nic;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The outside host's address.
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const PREFIX: u8 = 24;
/// What dnsmasq leases the frontend's public NIC (out of the default pool `.10`–`.41`).
const DHCP_RANGE: &str = "198.51.100.100,198.51.100.150,255.255.255.0,1h";

#[derive(Debug, thiserror::Error)]
pub enum OutsideError {
    #[error("`{command}` failed: {reason}")]
    Command { command: String, reason: String },
    #[error("entering network namespace {ns}: {source}")]
    Enter { ns: String, source: std::io::Error },
}

fn run(args: &[&str]) -> Result<(), OutsideError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| OutsideError::Command {
            command: args.join(" "),
            reason: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(OutsideError::Command {
            command: args.join(" "),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The namespace, the bridge, tap and veth pair, and the DHCP server; all removed when dropped.
pub struct Outside {
    ns: String,
    /// Names in this namespace: the bridge, the frontend's tap, the veth end on the bridge.
    bridge: String,
    tap: String,
    veth: String,
    dnsmasq: Child,
}

impl Outside {
    /// Makes it all and starts the DHCP server; `dir` keeps dnsmasq's log.
    pub fn new(dir: &TestDir) -> Result<Outside, OutsideError> {
        let tag = std::process::id() % 100_000;
        let ns = format!("mallee-out{tag}");
        let (bridge, tap) = (format!("mob{tag}"), format!("mot{tag}"));
        let (veth, inner) = (format!("mov{tag}"), format!("moi{tag}"));
        let _ = run(&["ip", "netns", "del", &ns]);
        for link in [&bridge, &tap, &veth] {
            let _ = run(&["ip", "link", "del", link]);
        }
        run(&["ip", "netns", "add", &ns])?;
        let mut outside = Outside {
            ns: ns.clone(),
            bridge: bridge.clone(),
            tap: tap.clone(),
            veth: veth.clone(),
            // Replaced below; a placeholder that has already exited.
            dnsmasq: Command::new("true")
                .spawn()
                .map_err(|e| OutsideError::Command {
                    command: "true".into(),
                    reason: e.to_string(),
                })?,
        };
        run(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        run(&["ip", "tuntap", "add", "dev", &tap, "mode", "tap"])?;
        run(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", &inner,
        ])?;
        run(&["ip", "link", "set", &inner, "netns", &ns])?;
        for link in [&tap, &veth] {
            run(&["ip", "link", "set", link, "master", &bridge])?;
            run(&["ip", "link", "set", link, "up"])?;
        }
        run(&["ip", "link", "set", &bridge, "up"])?;
        let addr = format!("{OUTSIDE_IP}/{PREFIX}");
        run(&["ip", "-n", &ns, "addr", "add", &addr, "dev", &inner])?;
        run(&["ip", "-n", &ns, "link", "set", &inner, "up"])?;
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        let log_path = dir.file("outside-dnsmasq.log");
        let log = std::fs::File::create(&log_path).map_err(|e| OutsideError::Command {
            command: format!("creating {}", log_path.display()),
            reason: e.to_string(),
        })?;
        outside.dnsmasq = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "dnsmasq",
                "--keep-in-foreground",
                "--port=0",
            ])
            .arg(format!("--interface={inner}"))
            .args([
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--leasefile-ro",
            ])
            .arg(format!("--dhcp-range={DHCP_RANGE}"))
            .args(["--log-dhcp", "--log-facility=-"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| OutsideError::Command {
                command: "dnsmasq".into(),
                reason: format!("{e} (run `just setup`)"),
            })?;
        Ok(outside)
    }

    /// The frontend's public NIC: on this tap.
    pub fn nic(&self) -> Nic {
        Nic::tap(&self.tap)
    }

    /// Runs `f` on a thread inside the namespace (sockets it opens stay there); `None` from
    /// the handle when `f` panicked.
    fn inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Option<T>>, OutsideError> {
        let enter = |source| OutsideError::Enter {
            ns: self.ns.clone(),
            source,
        };
        let file = std::fs::File::open(format!("/run/netns/{}", self.ns)).map_err(enter)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let entered = rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            );
            let ok = entered.is_ok();
            let _ = tx.send(entered);
            // Never run `f` in the test's own namespace.
            ok.then(f)
        });
        match rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(e)) => Err(enter(e.into())),
            Err(_) => Err(enter(std::io::Error::other("the thread died"))),
        }
    }

    /// One TCP connection from the outside host to `to`: the first line it answers.
    pub fn connect(&self, to: SocketAddrV4) -> Result<std::io::Result<String>, OutsideError> {
        let handle = self.inside(move || {
            let timeout = Duration::from_secs(2);
            let mut stream = TcpStream::connect_timeout(&SocketAddr::V4(to), timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            let mut line = String::new();
            BufReader::new(&mut stream).read_line(&mut line)?;
            Ok(line.trim_end().to_string())
        })?;
        Ok((handle.join().ok().flatten())
            .unwrap_or_else(|| Err(std::io::Error::other("the connecting thread panicked"))))
    }

    /// Serves on `port` of the outside host until the process ends: each connection is answered
    /// with `seen <source address>` (what the outside sees an instance as).
    pub fn serve_seen(&self, port: u16) -> Result<(), OutsideError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let _handle = self.inside(move || {
            let listener = match TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)) {
                Ok(l) => l,
                Err(e) => return drop(tx.send(Err(e))),
            };
            let _ = tx.send(Ok(()));
            for mut conn in listener.incoming().flatten() {
                if let Ok(peer) = conn.peer_addr() {
                    let _ = writeln!(conn, "seen {}", peer.ip());
                }
            }
        })?;
        rx.recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the thread died")))
            .map_err(|e| OutsideError::Command {
                command: format!("binding tcp {port} in {}", self.ns),
                reason: e.to_string(),
            })
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.dnsmasq.kill();
        let _ = self.dnsmasq.wait();
        for link in [&self.tap, &self.veth, &self.bridge] {
            let _ = run(&["ip", "link", "del", link]);
        }
        let _ = run(&["ip", "netns", "del", &self.ns]);
    }
}
