//! Networks around a cloud under test, each a host in a network namespace of its own behind a
//! bridge whose taps are VMs' NICs (a veth pair joins the bridge to the namespace; the taps keep
//! their names, so every boot of a VM finds its tap): the host's address, a DHCP server
//! (dnsmasq, itself the router) and helpers that connect and serve from inside the namespace.
//! Nothing leaves the bridge and the namespace.
//!
//! - [`Outside::new`]: the world outside the cloud, behind the frontend's public NIC: the host
//!   has `198.51.100.1/24` (TEST-NET-2, the net of the frontend's default public pool) and
//!   leases the frontend's public NIC its address, as a host on the Internet would.
//! - [`Outside::site`]: a site's own network that the frontend's private NIC and the nodes
//!   share (MANAGED-NOVLAN, SYSTEM): the host has [`SITE_IP`] and leases addresses only to
//!   instances, as the site's DHCP server in SYSTEM mode (the frontend's serves the nodes).

use crate::testdir::TestDir;
use crate::vm::Nic;
use mallee_proto::INSTANCE_MAC_PREFIX;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The outside host's address.
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// What dnsmasq leases the frontend's public NIC (out of the default pool `.10`–`.41`).
const DHCP_RANGE: &str = "198.51.100.100,198.51.100.150,255.255.255.0,1h";
/// The site host's address, on the frontend's private net (`10.77.0.0/24`).
pub const SITE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 250);
/// What the site's DHCP server leases instances: apart from the frontend's node pool.
pub const SITE_RANGE: (Ipv4Addr, Ipv4Addr) =
    (Ipv4Addr::new(10, 77, 0, 200), Ipv4Addr::new(10, 77, 0, 240));

/// One such network.
struct Spec {
    /// One letter naming its links and namespace apart from another network's.
    kind: char,
    address: Ipv4Addr,
    prefix: u8,
    /// How many VM taps the bridge has.
    taps: usize,
    /// dnsmasq's DHCP arguments.
    dhcp: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutsideError {
    #[error("`{command}` failed: {reason}")]
    Command { command: String, reason: String },
    #[error("entering network namespace {ns}: {source}")]
    Enter { ns: String, source: std::io::Error },
    #[error("no SSH login to {login} in {secs} s: {last}")]
    NoLogin {
        login: String,
        secs: u64,
        /// ssh's exit status and error output on the last try.
        last: String,
    },
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

/// The namespace, the bridge, taps and veth pair, and the DHCP server; all removed when dropped.
pub struct Outside {
    ns: String,
    /// Names in this namespace: the bridge, the VMs' taps, the veth end on the bridge.
    bridge: String,
    taps: Vec<String>,
    veth: String,
    dnsmasq: Child,
}

impl Outside {
    /// The world outside the cloud, with one tap: the frontend's public NIC. `dir` keeps
    /// dnsmasq's log.
    pub fn new(dir: &TestDir) -> Result<Outside, OutsideError> {
        Outside::make(
            dir,
            Spec {
                kind: 'o',
                address: OUTSIDE_IP,
                prefix: 24,
                taps: 1,
                dhcp: vec![format!("--dhcp-range={DHCP_RANGE}")],
            },
        )
    }

    /// A site's network with `taps` taps (the frontend's private NIC, the nodes' NICs), whose
    /// DHCP server answers only instances' MACs (the frontend's answers the nodes).
    pub fn site(dir: &TestDir, taps: usize) -> Result<Outside, OutsideError> {
        let [p0, p1] = INSTANCE_MAC_PREFIX;
        let (first, last) = SITE_RANGE;
        Outside::make(
            dir,
            Spec {
                kind: 's',
                address: SITE_IP,
                prefix: 24,
                taps,
                dhcp: vec![
                    format!("--dhcp-range={first},{last},255.255.255.0,1h"),
                    format!("--dhcp-host={p0:02x}:{p1:02x}:*:*:*:*,set:instance"),
                    "--dhcp-ignore=tag:!instance".into(),
                ],
            },
        )
    }

    /// Makes it all and starts the DHCP server.
    fn make(dir: &TestDir, spec: Spec) -> Result<Outside, OutsideError> {
        let tag = std::process::id() % 100_000;
        let k = spec.kind;
        let ns = format!("mallee-{k}{tag}");
        let bridge = format!("m{k}b{tag}");
        let taps: Vec<String> = (0..spec.taps).map(|i| format!("m{k}t{i}{tag}")).collect();
        let (veth, inner) = (format!("m{k}v{tag}"), format!("m{k}i{tag}"));
        let _ = run(&["ip", "netns", "del", &ns]);
        for link in taps.iter().chain([&bridge, &veth]) {
            let _ = run(&["ip", "link", "del", link]);
        }
        run(&["ip", "netns", "add", &ns])?;
        let mut outside = Outside {
            ns: ns.clone(),
            bridge: bridge.clone(),
            taps: taps.clone(),
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
        for tap in &taps {
            run(&["ip", "tuntap", "add", "dev", tap, "mode", "tap"])?;
        }
        run(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", &inner,
        ])?;
        run(&["ip", "link", "set", &inner, "netns", &ns])?;
        for link in taps.iter().chain([&veth]) {
            run(&["ip", "link", "set", link, "master", &bridge])?;
            run(&["ip", "link", "set", link, "up"])?;
        }
        run(&["ip", "link", "set", &bridge, "up"])?;
        let addr = format!("{}/{}", spec.address, spec.prefix);
        run(&["ip", "-n", &ns, "addr", "add", &addr, "dev", &inner])?;
        run(&["ip", "-n", &ns, "link", "set", &inner, "up"])?;
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        let log_path = dir.file(&format!("{ns}-dnsmasq.log"));
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
            .args(&spec.dhcp)
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

    /// The first VM NIC on this network (the frontend's public NIC on the outside's).
    pub fn nic(&self) -> Nic {
        self.nic_at(0)
    }

    /// VM NIC `i` on this network.
    pub fn nic_at(&self, i: usize) -> Nic {
        Nic::tap(&self.taps[i])
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

    /// Runs `f` on the outside host (a thread in its namespace) and waits for it; `None` when
    /// `f` panicked.
    pub fn within<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<Option<T>, OutsideError> {
        Ok(self.inside(f)?.join().ok().flatten())
    }

    /// The outside host's network namespace (`ip netns exec NAME ...` runs a program there).
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// `program` run on the outside host (in its namespace, `ip netns exec`), e.g. `ssh`.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, program]);
        cmd
    }

    /// What the outside host knows of its neighbours and routes (`ip neigh`, `ip route`), for a
    /// failure message: whether an unreachable address failed ARP here or beyond.
    pub fn network_state(&self) -> String {
        let show = |what: &str| {
            let out = Command::new("ip")
                .args(["-n", &self.ns, what, "show"])
                .output();
            match out {
                Ok(o) => format!("ip {what}:\n{}", String::from_utf8_lossy(&o.stdout)),
                Err(e) => format!("ip {what}: {e}\n"),
            }
        };
        show("neigh") + &show("route")
    }

    /// `ssh` from the outside host to `login` (`user@address`) with private key `key`, running
    /// `remote`: batch mode (no prompts), host keys neither checked nor kept (each instance
    /// makes its own), a 5 s connect timeout.
    pub fn ssh(&self, key: &Path, login: &str, remote: &str) -> Command {
        let mut cmd = self.command("ssh");
        cmd.arg("-i")
            .arg(key)
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
                "-o",
                "LogLevel=ERROR",
            ])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args([login, remote]);
        cmd
    }

    /// Logs in with [`Outside::ssh`] until a login works (sshd comes up with the guest, and a new
    /// address's NAT with the frontend), feeding `input` to `remote`'s stdin; what it printed.
    /// Tries every 2 s until `timeout` has passed.
    pub fn ssh_until(
        &self,
        key: &Path,
        login: &str,
        remote: &str,
        input: &str,
        timeout: Duration,
    ) -> Result<String, OutsideError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let mut child = self
                .ssh(key, login, remote)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| OutsideError::Command {
                    command: format!("ssh {login} {remote}"),
                    reason: format!("{e} (run `just setup`: openssh-client)"),
                })?;
            // A login that fails early closes its stdin: nothing more to feed it then.
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(input.as_bytes());
            }
            let out = child
                .wait_with_output()
                .map_err(|e| OutsideError::Command {
                    command: format!("ssh {login} {remote}"),
                    reason: e.to_string(),
                })?;
            if out.status.success() {
                return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
            }
            if std::time::Instant::now() >= deadline {
                return Err(OutsideError::NoLogin {
                    login: login.to_string(),
                    secs: timeout.as_secs(),
                    last: format!(
                        "{} {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                });
            }
            std::thread::sleep(Duration::from_secs(2));
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
        for link in self.taps.iter().chain([&self.veth, &self.bridge]) {
            let _ = run(&["ip", "link", "del", link]);
        }
        let _ = run(&["ip", "netns", "del", &self.ns]);
    }
}
