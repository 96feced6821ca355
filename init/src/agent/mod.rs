//! The node agent (role node, started once the network is up when the command line names a
//! frontend, cluster and secret): enrolls with the cluster secret and its MACs (retrying with
//! backoff until the frontend admits it: a node it does not list waits for an admin, and a
//! node enrolling again presents the token it held), registers, then long-polls the desired
//! state and reconciles towards
//! it (the image cache and instance disks on the node's disk or in RAM, see [`storage`]),
//! while a reporter thread posts the actual state (every instance and the image cache) on
//! every change and as the heartbeat, and a console thread streams serial output. Everything
//! is level-triggered: a frontend restart or a lost message costs nothing. A refused token
//! sends the agent back to enrolling.

pub mod client;
mod console;
pub mod images;
mod instance_disks;
mod instances;
pub mod kernels;
pub mod network;
pub mod reconcile;
pub mod storage;
mod token;
mod volumes;

use client::{Client, ClientError};
use images::Fetch;
use instances::{Env, Instances};
use mallee_proto as proto;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// What the agent needs to know from the command line and the hardware.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub frontend: SocketAddr,
    pub cluster: String,
    pub secret: String,
    pub macs: Vec<mallee_proto::Mac>,
    pub state_dir: PathBuf,
    pub vmm: PathBuf,
    /// Where the image cache and instance disks go (`mallee.disk`).
    pub disk: crate::cmdline::NodeDisk,
    /// How much each VMM logs (`mallee.log`).
    pub log_level: mallee_proto::LogLevel,
    /// The SHA-256 of the frontend's public key (`mallee.frontend_key`): TLS, and only that
    /// key is accepted. `None`: plain HTTP.
    pub frontend_key: Option<[u8; 32]>,
}

/// Shared handle to the client (its token changes on re-enrollment).
type SharedClient = Arc<Mutex<Client>>;

fn current(c: &SharedClient) -> Client {
    c.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The node id: `node-` and the first NIC's MAC in hex.
pub fn node_id(macs: &[mallee_proto::Mac]) -> String {
    match macs.first() {
        Some(mac) => format!("node-{}", mac.hex()),
        None => "node-nonic".to_string(),
    }
}

/// `MemTotal` from /proc/meminfo text, in MiB.
pub fn mem_total_mib(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib / 1024)
        .unwrap_or(0)
}

/// Percent-encodes an object key for a URL path (`/` kept).
pub fn encode_path(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Fetches image objects over the node-authenticated object endpoint.
struct NodeFetch(SharedClient);

impl Fetch for NodeFetch {
    fn fetch(
        &self,
        image: &proto::ImageRef,
        offset: u64,
        out: &mut dyn Write,
    ) -> Result<u64, String> {
        let path = format!(
            "/_node/object/{}/{}",
            encode_path(&image.bucket),
            encode_path(&image.key)
        );
        let range = [("Range", format!("bytes={offset}-"))];
        let extra: &[(&str, String)] = if offset > 0 { &range } else { &[] };
        let started = Instant::now();
        let c = current(&self.0);
        let mut reply = (c.send("GET", &path, extra, &[], Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        if offset > 0 && reply.head.status != 206 {
            return Err(format!(
                "asked for a range, got status {}",
                reply.head.status
            ));
        }
        let n = reply.copy_to(out).map_err(|e| e.to_string())?;
        let secs = started.elapsed().as_secs_f64().max(1e-6);
        info!(
            "agent: fetched {}/{} bytes {offset}+{n} in {:.0} ms ({:.1} MiB/s)",
            image.bucket,
            image.key,
            secs * 1000.0,
            n as f64 / secs / (1 << 20) as f64
        );
        Ok(n)
    }
}

fn node_info(cfg: &AgentConfig, disk_gib: u64) -> proto::NodeInfo {
    proto::NodeInfo {
        node_id: node_id(&cfg.macs),
        cluster: cfg.cluster.clone(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_mib: mem_total_mib(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default()),
        disk_gib,
        macs: cfg.macs.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        boot_id: boot_id(),
    }
}

/// The NIC the frontend is reached through, which carries the instance networks' VLANs.
fn private_nic(frontend: SocketAddr) -> Option<String> {
    let std::net::IpAddr::V4(ip) = frontend.ip() else {
        return None;
    };
    let table = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let nic = network::route_interface(&table, ip);
    match &nic {
        Some(nic) => info!("agent: instance networks ride on {nic}, the NIC towards the frontend"),
        None => warn!("agent: no route to the frontend {ip}: instances with networks will fail"),
    }
    nic
}

/// The kernel's random id of this boot (empty when /proc does not say).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The enrollment this node sends: its id, cluster, secret and MACs (what the frontend's
/// admission list names), and `held`, the token it holds (none after a boot): a node that
/// enrolls again proves with it that it is the live node holding its id.
fn enroll_request(cfg: &AgentConfig, node_id: &str, held: Option<String>) -> proto::EnrollRequest {
    proto::EnrollRequest {
        node_id: node_id.to_string(),
        cluster: cfg.cluster.clone(),
        secret: cfg.secret.clone(),
        macs: cfg.macs.clone(),
        token: held,
    }
}

/// The last reason a request to the frontend failed (joining, reporting), so a node kept
/// waiting (for admission, say) logs each new answer of the frontend once rather than every few
/// seconds.
#[derive(Debug, Default)]
struct LastFailure(Option<String>);

impl LastFailure {
    /// Whether `why` differs from the failure before it (and remembers it).
    fn is_new(&mut self, why: &str) -> bool {
        let new = self.0.as_deref() != Some(why);
        self.0 = Some(why.to_string());
        new
    }
}

/// Longest wait between two attempts to join.
const JOIN_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Enrolls and registers, retrying with backoff until the frontend accepts (a node it has not
/// admitted is refused until an admin approves it or lists its MAC).
fn join(cfg: &AgentConfig, disk_gib: u64, client: &SharedClient) -> proto::RegisterResponse {
    let info = node_info(cfg, disk_gib);
    // Joining again after a refused request: the token held until then.
    let mut held = current(client).token;
    let mut last = LastFailure::default();
    let mut wait = Duration::from_millis(500);
    loop {
        let mut attempt = || -> Result<proto::RegisterResponse, ClientError> {
            let mut c = current(client).without_token();
            let req = enroll_request(cfg, &info.node_id, held.clone());
            let t = Duration::from_secs(10);
            let e: proto::EnrollResponse = c.call("POST", proto::PATH_ENROLL, Some(&req), t)?;
            // Should registering fail (or the node reboot), the next enrollment proves the id
            // is still ours.
            held = Some(e.token.clone());
            if let Err(err) = token::save(&cfg.state_dir, &e.token) {
                warn!("agent: cannot keep the node token in {}: {err}; after a reboot this node waits until its old self is marked down", cfg.state_dir.display());
            }
            c.token = Some(e.token);
            let r = c.call("POST", proto::PATH_REGISTER, Some(&info), t)?;
            *client.lock().unwrap_or_else(|e| e.into_inner()) = c;
            Ok(r)
        };
        match attempt() {
            Ok(r) => {
                info!(
                    "agent: registered as {} with {} ({} cpus, {} MiB)",
                    info.node_id, cfg.frontend, info.cpus, info.memory_mib
                );
                return r;
            }
            Err(e) => {
                let why = e.to_string();
                if last.is_new(&why) {
                    warn!(
                        "agent: joining {}: {why}; retrying every {} s at most (logged again when the answer changes)",
                        cfg.frontend,
                        JOIN_BACKOFF_MAX.as_secs()
                    );
                }
            }
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(JOIN_BACKOFF_MAX);
    }
}

/// Posts the actual state on every change, and at least every `every` (the heartbeat).
fn report_loop(instances: Instances, client: SharedClient, every: Duration) {
    let mut seen = 0;
    // A node refused for a while (rejected, waiting to enroll again) says so once.
    let mut last = LastFailure::default();
    loop {
        if crate::power::shutting_down() {
            return info!("agent: node shutting down; reports stop");
        }
        let actual = proto::ActualState {
            instances: instances.report(),
            image_cache: instances.cache().list(),
            cache: instances.cache().summary(),
        };
        let r: Result<serde_json::Value, _> = current(&client).call(
            "POST",
            proto::PATH_REPORT,
            Some(&actual),
            Duration::from_secs(10),
        );
        match r {
            Ok(_) => last = LastFailure::default(),
            Err(e) => {
                let why = e.to_string();
                if last.is_new(&why) {
                    warn!("agent: report: {why} (logged again when the answer changes)");
                }
            }
        }
        // A guest about to take its address is looked at every second, so the frontend's
        // status check passes soon after it does.
        let wait = match instances.awaiting_address() {
            true => every.min(Duration::from_secs(1)),
            false => every,
        };
        seen = instances.wait_change(seen, wait);
    }
}

fn run(cfg: AgentConfig) {
    let client = match Client::for_frontend(cfg.frontend, cfg.frontend_key) {
        Ok(c) => c,
        Err(e) => return error!("agent: {e}; agent not started"),
    };
    let client: SharedClient = Arc::new(Mutex::new(client));
    let mem = mem_total_mib(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default());
    let store = match storage::open(&cfg.disk, &cfg.state_dir, mem) {
        Ok(s) => s,
        Err(e) => return error!("agent: cannot open the image cache: {e}; agent not started"),
    };
    let disk_gib = store.disk_gib;
    // The token of this node's last boot, when its disk kept one (see `token`).
    client.lock().unwrap_or_else(|e| e.into_inner()).token = token::load(&cfg.state_dir);
    let instances = Instances::new(Env {
        root: store.instances,
        disks_share_cache: store.shared_with_cache,
        vmm: cfg.vmm.clone(),
        cache: store.cache,
        fetch: Arc::new(NodeFetch(client.clone())),
        stop_deadline: Duration::from_secs(10),
        log_level: cfg.log_level,
        network: private_nic(cfg.frontend).map(|nic| Arc::new(network::Plumbing::new(&nic))),
    });
    let timing = join(&cfg, disk_gib, &client);
    let every = Duration::from_secs(timing.report_every_secs.clamp(1, 30));
    let (i2, c2) = (instances.clone(), client.clone());
    std::thread::spawn(move || report_loop(i2, c2, every));
    let (i3, c3) = (instances.clone(), client.clone());
    std::thread::spawn(move || console::stream(i3, c3, Duration::from_secs(1)));
    let poll = Duration::from_secs(timing.long_poll_secs + 15);
    let mut generation = String::new();
    let mut failures = 0u32;
    loop {
        let path = format!("{}?generation={generation}", proto::PATH_DESIRED);
        match current(&client).call::<(), proto::DesiredState>("GET", &path, None, poll) {
            Ok(desired) => {
                failures = 0;
                generation = desired.generation;
                for action in reconcile::plan(&desired.instances, &instances.locals()) {
                    instances.apply(action);
                }
            }
            Err(e) if e.unauthorized() => {
                warn!("agent: token refused; enrolling again");
                join(&cfg, disk_gib, &client);
            }
            Err(e) => {
                failures += 1;
                warn!("agent: desired state: {e}");
                std::thread::sleep(Duration::from_millis(500 << failures.min(4)));
            }
        }
    }
}

/// Starts the agent on its own thread.
pub fn start(cfg: AgentConfig) {
    info!(
        "agent: starting for frontend {} cluster {}",
        cfg.frontend, cfg.cluster
    );
    if cfg.frontend_key.is_none() {
        warn!(
            "agent: no mallee.frontend_key on the command line: the node protocol to {} is \
             plain HTTP, unencrypted and unauthenticated",
            cfg.frontend
        );
    }
    std::thread::spawn(move || run(cfg));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_facts_come_from_mac_and_meminfo() {
        assert_eq!(
            node_id(&[mallee_proto::Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56])]),
            "node-525400123456"
        );
        assert_eq!(node_id(&[]), "node-nonic");
        assert_eq!(
            mem_total_mib("MemTotal:       1530000 kB\nMemFree: 1 kB"),
            1494
        );
        assert_eq!(mem_total_mib("garbage"), 0);
        assert_eq!(encode_path("a b/c+d.img"), "a%20b/c%2Bd.img");
    }

    fn config(macs: &[&str]) -> AgentConfig {
        AgentConfig {
            frontend: "10.77.0.1:8773".parse().unwrap(),
            cluster: "cluster1".into(),
            secret: "s".into(),
            macs: macs.iter().map(|m| m.parse().unwrap()).collect(),
            state_dir: PathBuf::from("/run/mallee"),
            vmm: PathBuf::from("/bin/mallee-vmm"),
            disk: crate::cmdline::NodeDisk::default(),
            log_level: mallee_proto::LogLevel::default(),
            frontend_key: None,
        }
    }

    #[test]
    fn the_enrollment_names_every_mac_and_the_token_held() {
        let cfg = config(&["52:54:00:12:34:56", "52:54:00:12:34:57"]);
        let first = enroll_request(&cfg, "node-525400123456", None);
        assert_eq!(first.macs, cfg.macs);
        assert_eq!((first.cluster.as_str(), first.token), ("cluster1", None));
        let again = enroll_request(&cfg, "node-525400123456", Some("t1".into()));
        assert_eq!(again.token.as_deref(), Some("t1"));
    }

    #[test]
    fn a_failure_to_join_is_new_only_when_the_frontends_answer_changes() {
        let mut last = LastFailure::default();
        let waiting = "frontend answered 403: node node-1 is waiting for admission";
        assert!(last.is_new(waiting));
        assert!(!last.is_new(waiting));
        assert!(last.is_new("cannot reach the frontend at 10.77.0.1:8773: refused"));
        assert!(last.is_new(waiting));
    }
}
