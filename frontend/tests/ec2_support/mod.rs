//! Support for the EC2 tests: a frontend started with an `[ec2]` configuration, a test node
//! that speaks the real node protocol (`mallee-proto` JSON over HTTPS on loopback, trusting the
//! frontend's CA bundle; plain HTTP when the frontend is configured without TLS) from a
//! thread, a stand-in for the storage controller's answers, and a driver for scripts that ask
//! the harness to act (`KILL`, `PAUSE`, `RESUME`).

#![allow(dead_code)]

use crate::common::Frontend;
use base64::Engine;
use mallee_proto::{
    ActualState, CacheSummary, CachedImage, ConsoleReport, DesiredState, EnrollRequest,
    EnrollResponse, Goal, InstanceReport, InstanceSpec, MetadataOptions, NodeInfo, Observed,
    Storage,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SECRET: &str = "test-cluster-secret";
pub const ZONE: &str = "zone-a";
/// The MAC test nodes enroll from unless told otherwise: listed in `admit_macs`, so they are
/// admitted at once.
pub const LISTED_MAC: &str = "52:54:00:12:34:56";
/// A MAC the test config does not list: a node enrolling from it waits for an admin.
pub const UNLISTED_MAC: &str = "52:54:00:99:00:01";

/// Starts a frontend with `[ec2]` settings for tests ([`LISTED_MAC`] admitted).
pub fn start_frontend(deadline_secs: u64) -> Frontend {
    Frontend::start_with(&format!(
        "\n[ec2]\nclusters = [\"{ZONE}\"]\ncluster_secret = \"{SECRET}\"\n\
         admit_macs = [\"{LISTED_MAC}\"]\n\
         node_deadline_secs = {deadline_secs}\nlong_poll_secs = 1\n"
    ))
}

/// `POST /_node/enroll` of `id` from `mac` (presenting `token`): (status, token or the
/// frontend's message).
pub fn enroll(fe: &Frontend, id: &str, mac: &str, token: Option<&str>) -> (u16, String) {
    let req = EnrollRequest {
        node_id: id.into(),
        cluster: ZONE.into(),
        secret: SECRET.into(),
        macs: vec![mac.parse().unwrap()],
        token: token.map(str::to_string),
    };
    let (status, body) = http(
        fe,
        "POST",
        mallee_proto::PATH_ENROLL,
        None,
        &mallee_proto::encode(&req),
    )
    .unwrap();
    let text = match status {
        200 => mallee_proto::decode::<EnrollResponse>(&body).map(|r| r.token),
        _ => mallee_proto::decode::<mallee_proto::ErrorBody>(&body).map(|e| e.error),
    };
    (
        status,
        text.unwrap_or_else(|e| panic!("{status}: {e}: {body:?}")),
    )
}

/// One node-protocol exchange with `fe` (see [`NodeLink::http`]).
pub fn http(
    fe: &Frontend,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    NodeLink::to(fe).http(method, path, token, body)
}

/// How a test node reaches the frontend: its loopback port, and when it serves https a TLS
/// client that trusts the CA bundle it wrote (a real node pins its key instead; the pin is
/// tested in `tls`).
#[derive(Clone)]
pub struct NodeLink {
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl NodeLink {
    pub fn to(fe: &Frontend) -> NodeLink {
        NodeLink {
            port: fe.port,
            tls: fe.tls_client(),
        }
    }

    /// One HTTP/1.1 exchange (Connection: close); returns (status, body).
    pub fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(15)))?;
        match &self.tls {
            None => exchange(tcp, method, path, token, body),
            Some(config) => {
                let name = rustls::pki_types::ServerName::from(std::net::Ipv4Addr::LOCALHOST);
                let tls = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(std::io::Error::other)?;
                exchange(
                    rustls::StreamOwned::new(tls, tcp),
                    method,
                    path,
                    token,
                    body,
                )
            }
        }
    }
}

fn exchange(
    mut s: impl Read + Write,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(&[head.as_bytes(), body].concat())?;
    s.flush()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    Ok((status, raw[split + 4..].to_vec()))
}

/// What the node learned, for assertions.
#[derive(Default)]
pub struct Seen {
    /// Every instance spec ever received, by id (latest wins).
    pub specs: BTreeMap<String, InstanceSpec>,
    /// The latest desired state.
    pub desired: Vec<String>,
    pub enrollments: u32,
    pub reports: u32,
    /// The last refusal the frontend answered (status and message), for nodes kept out.
    pub refused: Option<String>,
    /// Requests answered 401 (the token was replaced or revoked).
    pub unauthorized: u32,
    /// Each instance's goals in the order the node was handed them (repeats left out).
    pub goals: BTreeMap<String, Vec<Goal>>,
}

/// A node agent stand-in on a thread: enrolls, registers (with a boot id the test may change),
/// long-polls, and reports every desired instance as running (or failed, when its user data
/// says `fail-launch`) with the metadata options it was handed (the ones it first had while
/// `hold_metadata` is set, as a VMM that has not taken new ones yet), and an image cache that
/// "downloads" each image once.
pub struct TestNode {
    pub seen: Arc<Mutex<Seen>>,
    pub paused: Arc<AtomicBool>,
    /// Set by the node's thread while it is paused and no round is under way.
    idle: Arc<AtomicBool>,
    /// Keep reporting the metadata options each instance had when this was set.
    pub hold_metadata: Arc<AtomicBool>,
    /// The boot id it registers with (`/proc/sys/kernel/random/boot_id` on a real node).
    pub boot_id: Arc<Mutex<String>>,
    rejoin: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Agent {
    link: NodeLink,
    id: String,
    mac: mallee_proto::Mac,
    cpus: u32,
    memory_mib: u64,
    token: Option<String>,
    /// The token it presents when it enrolls (the last it got, as the real agent does).
    held: Option<String>,
    generation: String,
    seen: Arc<Mutex<Seen>>,
    boot_id: Arc<Mutex<String>>,
    /// Images fetched once, and the instances already started (cache hits are counted once
    /// per instance).
    fetched: BTreeSet<String>,
    started: BTreeSet<String>,
    cache: CacheSummary,
    /// The metadata options each instance's "VMM" serves.
    served: BTreeMap<String, MetadataOptions>,
    hold_metadata: Arc<AtomicBool>,
}

impl Agent {
    fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<T, String> {
        let (status, body) = (self.link)
            .http(method, path, self.token.as_deref(), body)
            .map_err(|e| e.to_string())?;
        if status == 401 {
            self.seen.lock().unwrap().unauthorized += 1;
            return Err("unauthorized".into());
        }
        if status != 200 {
            let why = format!("{path}: {status} {}", String::from_utf8_lossy(&body));
            self.seen.lock().unwrap().refused = Some(why.clone());
            return Err(why);
        }
        mallee_proto::decode(&body).map_err(|e| e.to_string())
    }

    fn enroll(&mut self) -> Result<(), String> {
        self.token = None;
        let req = EnrollRequest {
            node_id: self.id.clone(),
            cluster: ZONE.into(),
            secret: SECRET.into(),
            macs: vec![self.mac],
            token: self.held.clone(),
        };
        let r: EnrollResponse = self.call(
            "POST",
            mallee_proto::PATH_ENROLL,
            &mallee_proto::encode(&req),
        )?;
        self.held = Some(r.token.clone());
        self.token = Some(r.token);
        let info = NodeInfo {
            node_id: self.id.clone(),
            cluster: ZONE.into(),
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            disk_gib: 100,
            macs: vec![self.mac],
            agent_version: "test-node".into(),
            boot_id: self.boot_id.lock().unwrap().clone(),
        };
        let _: serde_json::Value = self.call(
            "POST",
            mallee_proto::PATH_REGISTER,
            &mallee_proto::encode(&info),
        )?;
        self.seen.lock().unwrap().enrollments += 1;
        Ok(())
    }

    fn observe(spec: &InstanceSpec) -> Option<(Observed, Option<String>)> {
        let data = spec
            .user_data
            .as_deref()
            .and_then(|u| base64::engine::general_purpose::STANDARD.decode(u).ok())
            .unwrap_or_default();
        match spec.goal {
            Goal::Running if String::from_utf8_lossy(&data).contains("fail-launch") => Some((
                Observed::Failed,
                Some("refused by the test node: user data asked for fail-launch".into()),
            )),
            Goal::Running => Some((Observed::Running, None)),
            Goal::Stopped => Some((Observed::Stopped, None)),
            Goal::Terminated => None,
        }
    }

    fn round(&mut self) -> Result<(), String> {
        if self.token.is_none() {
            self.enroll()?;
        }
        let path = format!(
            "{}?generation={}",
            mallee_proto::PATH_DESIRED,
            self.generation
        );
        let desired: DesiredState = self.call("GET", &path, b"")?;
        self.generation = desired.generation.clone();
        let mut reports = Vec::new();
        let mut cache = Vec::new();
        for spec in &desired.instances {
            if !cache
                .iter()
                .any(|c: &CachedImage| c.sha256 == spec.image.sha256)
            {
                cache.push(CachedImage {
                    sha256: spec.image.sha256.clone(),
                    size: spec.image.size,
                });
            }
            if self.started.insert(spec.instance_id.clone()) {
                if self.fetched.insert(spec.image.sha256.clone()) {
                    self.cache.downloads += 1;
                    self.cache.used_bytes += spec.image.size;
                } else {
                    self.cache.hits += 1;
                }
            }
            if let Some((state, reason)) = Self::observe(spec) {
                let held = self.hold_metadata.load(Ordering::SeqCst);
                let served = match self.served.get(&spec.instance_id) {
                    Some(options) if held => *options,
                    _ => spec.metadata_options,
                };
                self.served.insert(spec.instance_id.clone(), served);
                reports.push(InstanceReport {
                    instance_id: spec.instance_id.clone(),
                    state,
                    reason,
                    reboot_count: spec.reboot_count,
                    // A real node's VMM says so once the guest's DHCP was answered; this one's
                    // guests take their address at once.
                    address_taken: state == Observed::Running
                        && spec.network.as_ref().is_some_and(|n| n.address.is_some()),
                    address: None,
                    metadata_options: (state == Observed::Running).then_some(served),
                    // Its VMMs take every volume they are given at once.
                    volumes: if state == Observed::Running {
                        (spec.root_volume.iter().chain(&spec.volumes))
                            .map(|v| v.volume_id.clone())
                            .collect()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
        let actual = ActualState {
            instances: reports.clone(),
            image_cache: cache,
            cache: self.cache.clone(),
        };
        let _: serde_json::Value = self.call(
            "POST",
            mallee_proto::PATH_REPORT,
            &mallee_proto::encode(&actual),
        )?;
        for r in reports.iter().filter(|r| r.state == Observed::Running) {
            let console = ConsoleReport {
                instance_id: r.instance_id.clone(),
                output: format!(
                    "mallee test node: booted {} (reboots {})\n",
                    r.instance_id, r.reboot_count
                ),
            };
            let _: serde_json::Value = self.call(
                "POST",
                mallee_proto::PATH_CONSOLE,
                &mallee_proto::encode(&console),
            )?;
        }
        let mut seen = self.seen.lock().unwrap();
        seen.reports += 1;
        seen.desired = desired
            .instances
            .iter()
            .map(|s| s.instance_id.clone())
            .collect();
        for spec in desired.instances {
            let goals = seen.goals.entry(spec.instance_id.clone()).or_default();
            if goals.last() != Some(&spec.goal) {
                goals.push(spec.goal);
            }
            seen.specs.insert(spec.instance_id.clone(), spec);
        }
        Ok(())
    }
}

impl TestNode {
    /// A node enrolling from [`LISTED_MAC`] (admitted at once); returns once it registered.
    pub fn start(fe: &Frontend, id: &str, cpus: u32, memory_mib: u64) -> TestNode {
        let node = TestNode::spawn(fe, id, LISTED_MAC, cpus, memory_mib);
        node.wait("the node to register", |s| s.reports > 0);
        node
    }

    /// A node enrolling from `mac`, retrying while it is refused; returns at once.
    pub fn spawn(fe: &Frontend, id: &str, mac: &str, cpus: u32, memory_mib: u64) -> TestNode {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let paused = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let rejoin = Arc::new(AtomicBool::new(false));
        let boot_id = Arc::new(Mutex::new("test-boot-1".to_string()));
        let hold_metadata = Arc::new(AtomicBool::new(false));
        let mut agent = Agent {
            link: NodeLink::to(fe),
            id: id.into(),
            mac: mac.parse().unwrap(),
            cpus,
            memory_mib,
            token: None,
            held: None,
            generation: String::new(),
            seen: seen.clone(),
            boot_id: boot_id.clone(),
            fetched: BTreeSet::new(),
            started: BTreeSet::new(),
            cache: CacheSummary {
                storage: Storage::Disk,
                budget_bytes: 1 << 30,
                ..CacheSummary::default()
            },
            served: BTreeMap::new(),
            hold_metadata: hold_metadata.clone(),
        };
        let idle = Arc::new(AtomicBool::new(false));
        let (p, s, r, i) = (paused.clone(), stop.clone(), rejoin.clone(), idle.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let pause = p.load(Ordering::SeqCst);
                i.store(pause, Ordering::SeqCst);
                if pause {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                if r.swap(false, Ordering::SeqCst) {
                    agent.token = None;
                }
                if let Err(e) = agent.round() {
                    if e == "unauthorized" {
                        agent.token = None;
                    }
                    // The frontend is restarting or refused us: back off a little and retry.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        TestNode {
            seen,
            paused,
            idle,
            hold_metadata,
            boot_id,
            rejoin,
            stop,
            thread: Some(thread),
        }
    }

    /// Enrolls and registers again, with `boot_id` when given (a reboot: a real node comes
    /// back without its instances, which this one only forgets to report until the frontend
    /// hands them back), else with the same one (the agent enrolling again); returns once
    /// registered. It presents the token it held, as the agent does when it enrolls again
    /// (a node that really rebooted has none and gets in once its old record is marked down:
    /// `a_rebooted_node_is_let_in_once_its_old_record_is_down`).
    pub fn rejoin(&self, boot_id: Option<&str>) {
        if let Some(b) = boot_id {
            *self.boot_id.lock().unwrap() = b.to_string();
        }
        let before = self.seen.lock().unwrap().enrollments;
        self.rejoin.store(true, Ordering::SeqCst);
        self.wait("the node to register again", |s| s.enrollments > before);
    }

    /// Stops reporting and returns once no round (long poll, report) is under way, so nothing
    /// the frontend asks from now on is seen until [`TestNode::resume`].
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.idle.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "timed out pausing the node");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }

    /// Polls the node's view until `cond` holds (30 s deadline).
    pub fn wait(&self, what: &str, cond: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond(&self.seen.lock().unwrap()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs a script that prints requests for the harness: each line `act` answers with
/// `Some(reply)` is answered on the script's stdin. Returns the transcript.
pub fn run_driven(
    fe: &mut Frontend,
    script: &str,
    env: &[(&str, &str)],
    mut act: impl FnMut(&mut Frontend, &str) -> Option<String>,
) -> String {
    let mut cmd = fe.python(script);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut transcript = String::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        println!("{line}");
        transcript.push_str(&line);
        transcript.push('\n');
        if let Some(reply) = act(fe, line.trim()) {
            writeln!(stdin, "{reply}").unwrap();
            stdin.flush().unwrap();
        }
    }
    let status = child.wait().unwrap();
    let err = err_thread.join().unwrap_or_default();
    assert!(
        status.success(),
        "{script} failed:\n{transcript}\n{err}\n--- frontend log ---\n{}",
        fe.log()
    );
    transcript
}

/// `admin user create NAME` → (access key, secret).
pub fn new_user(fe: &Frontend, name: &str) -> (String, String) {
    keys_of(&fe.admin(&["user", "create", name]))
}

/// `admin user create NAME --password-stdin` with `password` for the web console → (access
/// key, secret).
pub fn user_with_password(fe: &Frontend, name: &str, password: &str) -> (String, String) {
    keys_of(&fe.admin_with_stdin(
        &["user", "create", name, "--password-stdin"],
        &format!("{password}\n"),
    ))
}

/// The access key and secret in `user create`'s line.
fn keys_of(line: &str) -> (String, String) {
    let f: Vec<&str> = line.trim().split('\t').collect();
    (f[2].to_string(), f[3].to_string())
}

/// Stands in for the storage controller (`mallee-frontend storage` needs root and an
/// AF_PACKET socket on the nodes' segment): answers each exports file the daemon hands over as
/// served, as the controller's `applied.json`, so the storage keeper can withhold an attached
/// volume and snapshot it. Serves nothing over AoE. While `paused`, it answers nothing (a
/// controller that has not caught up yet).
pub struct StorageStandIn {
    pub paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StorageStandIn {
    pub fn start(fe: &Frontend) -> StorageStandIn {
        use mallee_proto::storage::{Applied, ExportState, Exports, APPLIED_FILE, EXPORTS_FILE};
        let dir = fe.data_dir().join(mallee_proto::storage::STORAGE_DIR);
        let paused = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (paused.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut answered = None;
            while !s.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
                if p.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(text) = std::fs::read(dir.join(EXPORTS_FILE)) else {
                    continue;
                };
                let Ok(want) = serde_json::from_slice::<Exports>(&text) else {
                    continue; // caught mid-rename: read it again
                };
                if answered == Some(want.generation) {
                    continue;
                }
                let applied = Applied {
                    generation: want.generation,
                    exports: (want.exports.iter())
                        .map(|e| ExportState {
                            volume_id: e.volume_id.clone(),
                            shelf: e.shelf,
                            slot: e.slot,
                            error: None,
                        })
                        .collect(),
                    error: None,
                };
                let temp = dir.join(".applied.json.stand-in");
                std::fs::write(&temp, serde_json::to_vec(&applied).unwrap()).unwrap();
                std::fs::rename(&temp, dir.join(APPLIED_FILE)).unwrap();
                answered = Some(want.generation);
            }
        });
        StorageStandIn {
            paused,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for StorageStandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
