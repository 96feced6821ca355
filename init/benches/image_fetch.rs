//! `just bench tls`: a node fetching an image from the frontend, over TLS (the default, the
//! frontend's key pinned) vs plain HTTP (`[tls] enabled = false`), in one run. Two real frontends
//! run in this process on 127.0.0.1, the same code but for TLS: each its own store in a temporary
//! directory, its own tokio runtime and `server::serve` with the daemon's APIs. Each has an
//! admitted node, a Walrus object (`images/bench.img`, random bytes, the same on both) registered
//! as an image, and an instance of it placed on that node, all made through the core the API
//! uses (admission, node registration, EC2 RegisterImage and RunInstances), so
//! `GET /_node/object/images/bench.img` serves it to the node's token. The node agent's own
//! blocking [`Client`] (pinned to the key on the TLS side) fetches it into a sink.
//!
//! Each side is fetched once first, its SHA-256 checked (untimed), then `ROUNDS` times each,
//! alternating sides (and which goes first), every fetch's length checked. A failed or short
//! fetch stops the bench with an error, never a figure. Prints the medians and their ratio
//! (`tls / plain`), the best of each, the cipher suite the agent's TLS configuration negotiates
//! with the frontend, and the CPU time per GiB of the fetching thread (the client) and of the
//! rest of the process (the servers), which says which side TLS costs. Figures are printed, as
//! the other benches' are, not recorded.
//!
//! Env: `MALLEE_BENCH_TLS_MIB` (object size, default 256).

use anyhow::{bail, ensure, Context};
use mallee_frontend::cloud::{admission, nodes, Changes, Ec2Config};
use mallee_frontend::config::HttpLimits;
use mallee_frontend::ec2::params::Params;
use mallee_frontend::ec2::{Call, Ec2};
use mallee_frontend::identity::Identity;
use mallee_frontend::nodes::NodeApi;
use mallee_frontend::server::{self, Apis};
use mallee_frontend::store::{now_ms, ObjectRow, Role, Store, User};
use mallee_frontend::tls::{server_names, ServerTls, TlsFiles};
use mallee_frontend::walrus::Walrus;
use mallee_init::agent::client::{pin, Client};
use mallee_proto::cmdline::PublicKeyPin;
use mallee_proto::{EnrollRequest, NodeInfo};
use rustix::time::{clock_gettime, ClockId};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;
const BUCKET: &str = "images";
const KEY: &str = "bench.img";
const NODE: &str = "bench-node";
/// The node's NIC, in the frontends' `admit_macs`.
const NODE_MAC: &str = "52:54:00:7b:00:01";
/// How long one read or write of a fetch may stall.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn main() -> anyhow::Result<()> {
    // `cargo test --all-targets` runs harness-less benches without arguments; only `cargo bench`
    // (which passes --bench) should spend the time.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let mib = match std::env::var("MALLEE_BENCH_TLS_MIB") {
        Ok(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("MALLEE_BENCH_TLS_MIB={v:?} is not a positive number"))?,
        Err(_) => 256,
    };
    let base = std::env::var_os("TMPDIR").unwrap_or_else(|| "/var/tmp".into());
    let tls = Frontend::start(Path::new(&base), mib, true).context("the TLS frontend")?;
    let plain = Frontend::start(Path::new(&base), mib, false).context("the plain frontend")?;
    ensure!(
        tls.sha256 == plain.sha256,
        "the two objects differ ({} vs {})",
        tls.sha256,
        plain.sha256
    );
    let cipher = negotiated_suite(&tls)?;
    for side in [&tls, &plain] {
        side.fetch_verified()?;
    }
    let (mut tls_samples, mut plain_samples) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let order = match round % 2 {
            0 => [(&tls, &mut tls_samples), (&plain, &mut plain_samples)],
            _ => [(&plain, &mut plain_samples), (&tls, &mut tls_samples)],
        };
        let mut line = format!("bench-tls: round {}/{ROUNDS}:", round + 1);
        for (side, samples) in order {
            let s = side.fetch_timed()?;
            line.push_str(&format!(
                " {}={:.0} MiB/s (cpu s: client {:.3} server {:.3})",
                side.name,
                mib as f64 / s.secs,
                s.client,
                s.server
            ));
            samples.push(s);
        }
        eprintln!("{line}");
    }
    for side in [tls, plain] {
        side.stop()?;
    }
    let rates = |v: &[Sample]| v.iter().map(|s| mib as f64 / s.secs).collect::<Vec<_>>();
    let (mut tls_mibs, mut plain_mibs) = (rates(&tls_samples), rates(&plain_samples));
    let (t, p) = (median(&mut tls_mibs), median(&mut plain_mibs));
    let (tb, pb) = (best(&tls_mibs), best(&plain_mibs));
    // CPU seconds per GiB fetched, median: who pays for TLS.
    let per_gib = |v: &[Sample], f: fn(&Sample) -> f64| {
        median(
            &mut v
                .iter()
                .map(|s| f(s) * 1024.0 / mib as f64)
                .collect::<Vec<_>>(),
        )
    };
    println!(
        "bench: tls image-fetch MiB/s tls={t:.0} plain={p:.0} ratio={:.2} (target >= 0.9) \
         median of {ROUNDS} fetches of {mib} MiB; cipher {cipher}",
        t / p
    );
    println!(
        "bench: tls image-fetch-best MiB/s tls={tb:.0} plain={pb:.0} ratio={:.2}",
        tb / pb
    );
    println!(
        "bench: tls image-fetch-cpu s/GiB client tls={:.2} plain={:.2} server tls={:.2} plain={:.2}",
        per_gib(&tls_samples, |s| s.client),
        per_gib(&plain_samples, |s| s.client),
        per_gib(&tls_samples, |s| s.server),
        per_gib(&plain_samples, |s| s.server),
    );
    Ok(())
}

/// One frontend serving on 127.0.0.1 from its own store, and the node that fetches from it.
struct Frontend {
    name: &'static str,
    /// The node agent's client with the node's token (pinned to the key when TLS is on).
    client: Client,
    pin: Option<PublicKeyPin>,
    path: String,
    size: u64,
    /// Of the object as stored (hex).
    sha256: String,
    rt: tokio::runtime::Runtime,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
    stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

impl Frontend {
    /// The frontend with TLS (its own CA in its data directory) or without, an object of `mib`
    /// MiB, and a node admitted and told to run an instance of it.
    fn start(base: &Path, mib: u64, tls: bool) -> anyhow::Result<Frontend> {
        let name = if tls { "tls" } else { "plain" };
        let dir = tempfile::Builder::new()
            .prefix("mallee-tls-bench")
            .tempdir_in(base)
            .with_context(|| format!("a directory in {}", base.display()))?;
        let data = dir.path().join("data");
        let store = Arc::new(Store::open(&data)?);
        let cfg = Ec2Config {
            admit_macs: vec![NODE_MAC.parse()?],
            ..Ec2Config::default()
        };
        let changes = Arc::new(Changes::default());
        let ec2 = Ec2::new(store.clone(), cfg.clone(), changes.clone(), "mallee", 300);
        let user = store.create_user("bench", Role::User)?;
        store.create_bucket(BUCKET, &user.name)?;
        let (size, sha256) = put_object(&store, mib)?;
        let token = admit_node(&store, &cfg)?;
        let image = ec2_call(
            &ec2,
            &user,
            "RegisterImage",
            &[
                ("Name", "bench"),
                ("ImageLocation", &format!("{BUCKET}/{KEY}")),
            ],
            "imageId",
        )?;
        let instance = ec2_call(
            &ec2,
            &user,
            "RunInstances",
            &[("ImageId", &image)],
            "instanceId",
        )?;
        let specs = nodes::desired(&store, NODE)?;
        ensure!(
            specs
                .iter()
                .any(|s| s.instance_id == instance && s.image.key == KEY),
            "instance {instance} of {image} was not placed on {NODE}"
        );

        let (acceptor, pin) = match tls {
            true => {
                let names = server_names(&[], [LOOPBACK]);
                let (server_tls, identity) = ServerTls::start(TlsFiles::new(&data, names, 30))?;
                (Some(server_tls.acceptor()), Some(identity.pin))
            }
            false => (None, None),
        };
        let apis = Arc::new(Apis {
            walrus: Walrus::new(store.clone(), "mallee", 300),
            ec2,
            identity: Identity::new(store.clone(), 300),
            nodes: Arc::new(NodeApi {
                store,
                cfg,
                changes,
            }),
            console: None,
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let listeners = server::Listeners::bind(SocketAddr::new(LOOPBACK, 0))?;
        let addr = listeners.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = rt.spawn(server::serve(
            listeners,
            apis,
            HttpLimits::default(),
            acceptor,
            async move {
                let _ = stopped.await;
            },
        ));
        let mut client = Client::for_frontend(addr, pin.map(|p| p.0))?;
        client.token = Some(token);
        eprintln!("bench-tls: {name} frontend on {addr}: {mib} MiB object, instance {instance}");
        Ok(Frontend {
            name,
            client,
            pin,
            path: format!(
                "{}{BUCKET}/{KEY}",
                mallee_frontend::nodes::object::PATH_OBJECT
            ),
            size,
            sha256,
            rt,
            serving,
            stop,
            _dir: dir,
        })
    }

    /// One whole fetch into `sink`; fails unless every byte of the object arrived.
    fn fetch(&self, sink: &mut dyn Write) -> anyhow::Result<()> {
        let mut reply = (self.client)
            .send("GET", &self.path, &[], &[], IO_TIMEOUT)
            .with_context(|| format!("{} fetch of {}", self.name, self.path))?;
        let got = reply
            .copy_to(sink)
            .with_context(|| format!("{} fetch of {}", self.name, self.path))?;
        ensure!(
            got == self.size,
            "{} fetch: {got} of {} bytes",
            self.name,
            self.size
        );
        Ok(())
    }

    /// An untimed fetch whose SHA-256 must be the object's.
    fn fetch_verified(&self) -> anyhow::Result<()> {
        let mut sink = HashSink(Sha256::new());
        self.fetch(&mut sink)?;
        let got = hex(&sink.0.finalize());
        ensure!(
            got == self.sha256,
            "{} fetch: SHA-256 {got}, the object's is {}",
            self.name,
            self.sha256
        );
        Ok(())
    }

    /// A fetch into a sink: its time, and the CPU time the client and the servers spent.
    fn fetch_timed(&self) -> anyhow::Result<Sample> {
        let (process, thread) = (
            cpu_secs(ClockId::ProcessCPUTime),
            cpu_secs(ClockId::ThreadCPUTime),
        );
        let started = Instant::now();
        self.fetch(&mut std::io::sink())?;
        let secs = started.elapsed().as_secs_f64();
        let client = cpu_secs(ClockId::ThreadCPUTime) - thread;
        let server = cpu_secs(ClockId::ProcessCPUTime) - process - client;
        Ok(Sample {
            secs,
            client,
            server,
        })
    }

    /// Stops the server (it drains) and removes its directory.
    fn stop(self) -> anyhow::Result<()> {
        drop(self.stop);
        let serving = self.serving;
        let served = (self.rt)
            .block_on(async move { tokio::time::timeout(server::DRAIN * 2, serving).await });
        match served {
            Ok(Ok(r)) => r.with_context(|| format!("the {} server", self.name)),
            Ok(Err(e)) => bail!("the {} server task: {e}", self.name),
            Err(_) => bail!("the {} server did not stop", self.name),
        }
    }
}

/// Stores `mib` MiB of pseudo-random bytes (the same for every call) as `BUCKET/KEY` the way a
/// Walrus PUT does; returns its size and SHA-256.
fn put_object(store: &Store, mib: u64) -> anyhow::Result<(u64, String)> {
    let mut w = store.blobs().writer()?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for word in chunk.chunks_exact_mut(8) {
            // xorshift64: incompressible enough for a transfer, and cheap.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        w.write(&chunk)?;
    }
    let blob = w.finish()?;
    let row = ObjectRow::new(
        KEY,
        &blob,
        format!("\"{}\"", blob.md5_hex),
        None,
        Vec::new(),
    );
    store.put_object(BUCKET, &row)?;
    Ok((blob.size, blob.sha256_hex))
}

/// Enrolls node [`NODE`] from its listed MAC (admitted at once) and registers it with room for
/// an instance; returns its token.
fn admit_node(store: &Store, cfg: &Ec2Config) -> anyhow::Result<String> {
    let mac = NODE_MAC.parse()?;
    let req = EnrollRequest {
        node_id: NODE.into(),
        cluster: cfg.clusters[0].clone(),
        secret: cfg.cluster_secret.clone(),
        macs: vec![mac],
        token: None,
    };
    let token = admission::enroll(store, cfg, &req, "127.0.0.1", now_ms())?;
    let node = nodes::authenticate(store, &token)?;
    let info = NodeInfo {
        node_id: NODE.into(),
        cluster: node.cluster.clone(),
        cpus: 4,
        memory_mib: 4096,
        disk_gib: 20,
        macs: vec![mac],
        agent_version: "bench".into(),
        boot_id: "bench-boot".into(),
    };
    nodes::register(store, &node, info, now_ms())?;
    Ok(token)
}

/// Runs EC2 `action` as `user`, as the API does once it has authenticated the request; returns
/// the answer's `<field>`.
fn ec2_call(
    ec2: &Ec2,
    user: &User,
    action: &str,
    params: &[(&str, &str)],
    field: &str,
) -> anyhow::Result<String> {
    let p = Params::from_pairs(params);
    let call = Call {
        user,
        p: &p,
        rid: "bench",
        action,
        now: now_ms(),
    };
    let xml = ec2
        .run(&call)
        .map_err(|e| anyhow::anyhow!("{action}: {}: {}", e.code, e.message))?;
    let open = format!("<{field}>");
    let value = xml
        .split_once(&open)
        .and_then(|(_, rest)| rest.split_once('<'))
        .map(|(v, _)| v.to_string());
    value.with_context(|| format!("{action}: no <{field}> in {xml}"))
}

/// The cipher suite and protocol version the node agent's TLS configuration (the same
/// [`pin::config`] its [`Client`] uses) negotiates with the TLS frontend.
fn negotiated_suite(side: &Frontend) -> anyhow::Result<String> {
    let addr = side.client.addr;
    let key = side.pin.context("the TLS frontend has no pin")?;
    let config = pin::config(key)?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(config, name)?;
    let tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    let suite = tls
        .conn
        .negotiated_cipher_suite()
        .context("no cipher suite")?;
    let version = tls.conn.protocol_version().context("no protocol version")?;
    tls.conn.send_close_notify();
    let _ = tls.flush();
    let aes = match mallee_proto::tls::aes_in_hardware() {
        true => "AES in hardware",
        false => "no AES instructions: ChaCha20 preferred",
    };
    Ok(format!("{:?} ({version:?}, {aes})", suite.suite()))
}

/// One timed fetch: seconds of wall clock, and CPU seconds of the fetching thread (the node
/// agent's client) and of the rest of the process (the servers' runtimes, mostly the one
/// serving).
struct Sample {
    secs: f64,
    client: f64,
    server: f64,
}

/// CPU seconds `clock` has counted.
fn cpu_secs(clock: ClockId) -> f64 {
    let t = clock_gettime(clock);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// A sink that hashes what is written to it.
struct HashSink(Sha256);

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}
