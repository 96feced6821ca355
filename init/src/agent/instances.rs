//! Instance supervision: one `mallee-vmm` per instance, started with `--config vmm.json` (a
//! [`VmmConfig`], the contract type in `mallee-proto`) in the instance's directory (`root.img`
//! and `ephemeral0.img`, see [`super::instance_disks`]; `console.log`, the serial port;
//! `api.sock`, the VMM's control socket; `vmm.log`, its stderr; `vmm-failure.json`, the
//! [`Failure`] it leaves when it fails). A launch fetches the images through the cache, pins the
//! kernel, ramdisk and root image (the root disk's base) while the instance lives, and runs the VMM on its own thread until it
//! exits. A stop sends [`Request::Shutdown`] through the socket, then kills the VMM after a
//! deadline. A VMM that exits on its own makes the instance `failed` with the reason its exit
//! status ([`Exit`]) and failure report give (a guest reset restarts it instead). New metadata
//! for a running instance goes to its VMM as [`Request::SetMetadata`] and into `vmm.json`, so a
//! restarted VMM serves it too; the report names the options the VMM confirmed. Every VMM has
//! [`volumes::SLOTS`] empty volume slots; volumes are attached and detached through the socket
//! ([`Request::AttachVolume`], [`Request::DetachVolume`]), and a new VMM holds none until
//! given them again.

use super::images::{Cache, Fetch, ImageError, Pinned};
use super::instance_disks::{self as disks, InstanceDiskError};
use super::kernels;
use super::network::{NetworkError, Plumbing};
use super::reconcile::{self, Action, Local};
use super::storage;
use super::volumes::{self, Held, Stage};
use crate::reaper;
use mallee_proto::vmm::{
    encode_line, Disk, DiskSource, Exit, Failure, InstanceMetadata, Nic, Reply, Request,
    SystemIdentity, TapSource, VmmConfig,
};
use mallee_proto::{InstanceReport, InstanceSpec, Observed};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Why an instance could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("image {0} names no kernel (only kernel + ramdisk boot is supported)")]
    NoKernel(String),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("instance directory {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(transparent)]
    Disk(#[from] InstanceDiskError),
    #[error("cannot start mallee-vmm: {0}")]
    Spawn(std::io::Error),
    #[error("{0} vCPUs are more than mallee-vmm can run")]
    TooManyVcpus(u32),
    #[error("instance network: {0}")]
    Network(#[from] NetworkError),
    #[error("the instance has a network but this node found no private NIC to carry it")]
    NoPrivateNic,
    #[error("image {0}: no root image on the node to lay the instance's root disk over")]
    NoRootImage(String),
}

/// Why the VMM's control socket did not take a request.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed reply: {0}")]
    Reply(#[from] mallee_proto::ProtoError),
    #[error("refused: {0}")]
    Refused(String),
}

// The files of an instance's directory that the agent and its VMM share.
const CONSOLE: &str = "console.log";
const API_SOCKET: &str = "api.sock";
const VMM_CONFIG: &str = "vmm.json";
const VMM_LOG: &str = "vmm.log";
const FAILURE: &str = "vmm-failure.json";

/// Where instances live and what runs them.
pub struct Env {
    pub root: PathBuf,
    /// True when `root` is on the cache's file system (see [`storage::room_for_instances`]).
    pub disks_share_cache: bool,
    pub vmm: PathBuf,
    pub cache: Cache,
    pub fetch: Arc<dyn Fetch + Send + Sync>,
    pub stop_deadline: Duration,
    /// How much each VMM logs (`mallee.log`).
    pub log_level: mallee_proto::LogLevel,
    /// The instance links; `None` when the node found no private NIC.
    pub network: Option<Arc<Plumbing>>,
}

struct Record {
    local: Local,
    target: Observed,
    reason: Option<String>,
    pid: Option<u32>,
    rebooting: bool,
    dir: PathBuf,
    /// It has a NIC: its guest takes an address, from its VMM or (SYSTEM) the site's DHCP.
    networked: bool,
    /// Its guest took that address since the VMM last started (the VMM's status says so).
    address_taken: bool,
    /// The address the VMM saw the guest use, when the VMM did not hand it out (SYSTEM).
    address: Option<std::net::Ipv4Addr>,
    /// When its VMM last started.
    started: Option<Instant>,
    /// EBS-backed: the volume its VMM boots from (held whenever the VMM runs).
    root_volume: Option<String>,
}

/// How long after its VMM starts a guest is watched closely for taking its address; after
/// that the ordinary report interval asks (the frontend fails its check at 5 minutes anyway).
const ADDRESS_WATCH: Duration = Duration::from_secs(300);

impl Record {
    /// A running guest not yet known to have taken its address.
    fn waiting_for_address(&self) -> bool {
        self.networked && !self.address_taken && self.pid.is_some()
    }
}

/// How long a launch's steps on the node took, in milliseconds: the kernel, ramdisk and image
/// from the cache (fetched on a miss), the instance's disks, and its tap and VMM configuration.
#[derive(Default)]
struct Phases {
    images_ms: u128,
    disks_ms: u128,
    network_ms: u128,
}

/// The node's instances; cheap to clone.
#[derive(Clone)]
pub struct Instances {
    env: Arc<Env>,
    table: Arc<Mutex<BTreeMap<String, Record>>>,
    changed: Arc<(Mutex<u64>, Condvar)>,
}

/// Why the VMM stopped, in words: its failure report when it left one, else what its exit
/// status means (a status outside the contract: a signal, or a crash). A failure without a
/// report quotes the last line of the VMM's log (`log_end`), which nobody off the node can read.
pub fn exit_reason(code: i32, failure: Option<&Failure>, log_end: Option<&str>) -> String {
    if let Some(f) = failure {
        return f.reason();
    }
    match Exit::from_code(code) {
        Some(Exit::Error) => match log_end {
            Some(line) => format!(
                "{} without a failure report; its log ends: {line}",
                Exit::Error.meaning()
            ),
            None => format!(
                "{} without a failure report, and its log is empty",
                Exit::Error.meaning()
            ),
        },
        Some(exit) => exit.meaning().to_string(),
        None if code > 128 => format!("mallee-vmm was killed by signal {}", code - 128),
        None => format!("mallee-vmm exited with status {code}"),
    }
}

/// The last non-empty line of the log at `path` (from its last 4 KiB, at most 300 characters).
fn log_end(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    Some(line.chars().take(300).collect())
}

/// The VMM's failure report, if it left a readable one.
fn read_failure(path: &Path) -> Option<Failure> {
    mallee_proto::decode(&std::fs::read(path).ok()?).ok()
}

/// What the guest's SMBIOS tables say, as EC2's do, so an unmodified cloud image's cloud-init
/// (`ds-identify`) picks its EC2 datasource without a kernel command-line override: vendor
/// `Amazon EC2`, the instance type as product, a UUID that starts with `ec2` and its text as
/// serial, the instance id as chassis asset tag. The UUID is the instance id's SHA-256, first 16
/// bytes, with its first 12 bits set to `ec2`, version 8 (custom) and the RFC 4122 variant: the
/// same instance has the same UUID on every node and every start.
pub fn smbios_identity(spec: &InstanceSpec) -> SystemIdentity {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(spec.instance_id.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[0] = 0xec;
    bytes[1] = 0x20 | (bytes[1] & 0x0f);
    let uuid = uuid::Builder::from_custom_bytes(bytes).into_uuid();
    SystemIdentity {
        manufacturer: "Amazon EC2".into(),
        product: spec.instance_type.clone(),
        uuid,
        serial: Some(uuid.to_string()),
        asset_tag: Some(spec.instance_id.clone()),
    }
}

/// The kernel command line: the serial console, and the root the frontend read from the image
/// (`UUID=` only when there is an initramfs to resolve it: the kernel alone knows only
/// `PARTUUID=`), else the first disk as a whole. The root's text is hex digits and dashes
/// (`RootDevice` holds numbers only), so nothing from the image reaches the line as words.
pub fn kernel_cmdline(spec: &InstanceSpec, has_initrd: bool) -> String {
    let root = (spec.root_device.as_ref()).filter(|r| has_initrd || !r.needs_initramfs());
    match root {
        Some(r) => format!("console=ttyS0 root={r}"),
        None => "console=ttyS0 root=/dev/vda".into(),
    }
}

/// The cache's files a launch boots from.
pub struct LaunchImages<'a> {
    /// The kernel.
    pub kernel: &'a Path,
    /// The ramdisk, when the image has one.
    pub initrd: Option<&'a Path>,
    /// The root image the instance's copy-on-write root disk lies over (`None` when the root
    /// is an EBS volume).
    pub root: Option<&'a Path>,
}

/// The VMM's config: `root.img` over the cached root image is the first disk (the guest's
/// `/dev/vda`, serial `root`; see [`disks::make_root`]) — or, EBS-backed, the root volume over
/// AoE on `aoe_interface` (serial the volume id) — the ephemeral disk, when the instance type
/// has one, the second (`/dev/vdb`, serial `ephemeral0`); the SMBIOS identity is
/// [`smbios_identity`], the command line [`kernel_cmdline`].
pub fn vmm_config(
    spec: &InstanceSpec,
    dir: &Path,
    images: &LaunchImages<'_>,
    aoe_interface: Option<&str>,
) -> Result<VmmConfig, LaunchError> {
    let root = match (&spec.root_volume, images.root) {
        (None, Some(base)) => Disk {
            source: DiskSource::Overlay {
                base: base.to_path_buf(),
                top: dir.join(disks::ROOT),
            },
            serial: Some("root".into()),
            read_only: false,
        },
        (None, None) => return Err(LaunchError::NoRootImage(spec.image.image_id.clone())),
        (Some(v), _) => Disk {
            source: volumes::source(v, aoe_interface.ok_or(LaunchError::NoPrivateNic)?),
            serial: Some(v.volume_id.clone()),
            read_only: false,
        },
    };
    let mut disks = vec![root];
    if spec.ephemeral_gib > 0 {
        let path = dir.join(disks::EPHEMERAL);
        disks.push(Disk::file(path, Some(disks::EPHEMERAL_LABEL)));
    }
    Ok(VmmConfig {
        initrd: images.initrd.map(Path::to_path_buf),
        cmdline: kernel_cmdline(spec, images.initrd.is_some()),
        memory_mib: spec.memory_mib,
        vcpus: u8::try_from(spec.vcpus).map_err(|_| LaunchError::TooManyVcpus(spec.vcpus))?,
        disks,
        volume_slots: volumes::SLOTS,
        console: Some(dir.join(CONSOLE)),
        api_socket: Some(dir.join(API_SOCKET)),
        failure_path: Some(dir.join(FAILURE)),
        smbios: Some(smbios_identity(spec)),
        ..VmmConfig::new(images.kernel)
    })
}

/// The VMM config at `path`, if it reads as one.
fn read_config(path: &Path) -> Option<VmmConfig> {
    mallee_proto::decode(&std::fs::read(path).ok()?).ok()
}

/// Puts `metadata` into the VMM config at `path`, replacing the file whole (a rename), so a
/// VMM starting meanwhile reads the old config or the new one, never half of one.
fn write_config_metadata(path: &Path, metadata: &InstanceMetadata) -> std::io::Result<()> {
    let mut cfg = read_config(path)
        .ok_or_else(|| std::io::Error::other(format!("{} is not a VMM config", path.display())))?;
    cfg.metadata = Some(metadata.clone());
    let tmp = path.with_extension("json.new");
    std::fs::write(&tmp, mallee_proto::encode(&cfg))?;
    std::fs::rename(&tmp, path)
}

/// Sends `request` to a VMM's control socket and reads its answer; `None` when the VMM closed
/// the socket without one.
fn api_call(socket: &Path, request: &Request) -> Result<Option<Reply>, ControlError> {
    api_call_within(socket, request, Duration::from_secs(2))
}

/// [`api_call`] for requests that take the VMM a while (a volume's AoE target to find).
fn api_call_within(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Option<Reply>, ControlError> {
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(&encode_line(request))?;
    let mut line = String::new();
    if BufReader::new(s).read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let reply: Reply = mallee_proto::decode(line.as_bytes())?;
    if !reply.ok {
        return Err(ControlError::Refused(reply.error.unwrap_or_default()));
    }
    Ok(Some(reply))
}

/// Asks a VMM to stop through its control socket (it may stop before it answers).
fn api_shutdown(socket: &Path) -> Result<(), ControlError> {
    api_call(socket, &Request::Shutdown).map(|_| ())
}

/// A VMM's status (its guest's NICs among it).
fn api_status(socket: &Path) -> Result<Reply, ControlError> {
    api_call(socket, &Request::Status)?
        .ok_or_else(|| ControlError::Refused("the VMM closed the socket".into()))
}

impl Instances {
    pub fn new(env: Env) -> Instances {
        Instances {
            env: Arc::new(env),
            table: Arc::default(),
            changed: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Record>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes whoever waits in [`Instances::wait_change`].
    pub fn notify(&self) {
        let (m, cv) = &*self.changed;
        *m.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        cv.notify_all();
    }

    /// Waits until something changed after `seen` or `timeout` passes; returns the counter.
    pub fn wait_change(&self, seen: u64, timeout: Duration) -> u64 {
        let (m, cv) = &*self.changed;
        let g = m.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = cv
            .wait_timeout_while(g, timeout, |n| *n == seen)
            .unwrap_or_else(|e| e.into_inner());
        *g
    }

    pub fn cache(&self) -> &Cache {
        &self.env.cache
    }

    pub fn locals(&self) -> BTreeMap<String, Local> {
        self.lock()
            .iter()
            .map(|(k, r)| (k.clone(), r.local.clone()))
            .collect()
    }

    /// Whether a guest started in the last [`ADDRESS_WATCH`] has not yet taken its address.
    pub fn awaiting_address(&self) -> bool {
        (self.lock().values()).any(|r| {
            r.waiting_for_address() && r.started.is_some_and(|t| t.elapsed() < ADDRESS_WATCH)
        })
    }

    /// Every instance the node knows, for the report. Running guests not yet known to have
    /// taken their address are asked about through their VMM's socket first.
    pub fn report(&self) -> Vec<InstanceReport> {
        let waiting: Vec<(String, PathBuf)> = (self.lock().iter())
            .filter(|(_, r)| r.waiting_for_address())
            .map(|(id, r)| (id.clone(), r.dir.join(API_SOCKET)))
            .collect();
        for (id, socket) in waiting {
            match api_status(&socket) {
                Ok(reply) if reply.nics.iter().any(|n| n.address_taken) => {
                    let seen = reply.nics.iter().find_map(|n| n.address);
                    match seen {
                        Some(ip) => info!("agent: {id}'s guest took address {ip}"),
                        None => info!("agent: {id}'s guest took its address"),
                    }
                    self.set(&id, |r| {
                        r.address_taken = r.pid.is_some();
                        r.address = seen;
                    });
                }
                Ok(_) => {}
                Err(e) => warn!("agent: {id}: control socket: {e}"),
            }
        }
        (self.lock().iter())
            .map(|(id, r)| InstanceReport {
                instance_id: id.clone(),
                state: r.local.state,
                reason: r.reason.clone(),
                reboot_count: r.local.reboot_count,
                address_taken: r.address_taken,
                address: r.address.filter(|_| r.address_taken),
                metadata_options: (r.local.serving.as_ref())
                    .filter(|_| r.pid.is_some())
                    .map(|m| m.options),
                volumes: match r.pid {
                    Some(_) => (r.root_volume.iter().cloned())
                        .chain(volumes::reported(&r.local.volumes))
                        .collect(),
                    None => Vec::new(),
                },
            })
            .collect()
    }

    /// Console files of the known instances.
    pub fn consoles(&self) -> Vec<(String, PathBuf)> {
        (self.lock().iter())
            .map(|(id, r)| (id.clone(), r.dir.join(CONSOLE)))
            .collect()
    }

    /// Starts doing `action`.
    pub fn apply(&self, action: Action) {
        match action {
            Action::Launch(spec) => self.launch(*spec),
            Action::Stop(id, target) => self.stop(&id, target, false),
            Action::Reboot(id, count) => {
                if let Some(r) = self.lock().get_mut(&id) {
                    r.local.reboot_count = count;
                }
                self.stop(&id, Observed::Running, true);
            }
            Action::Forget(id) => {
                if let Some(r) = self.lock().remove(&id) {
                    let _ = std::fs::remove_dir_all(&r.dir);
                }
                self.notify();
            }
            Action::SetMetadata(id, metadata) => self.set_metadata(&id, *metadata),
            Action::AttachVolume(id, volume) => self.attach_volume(&id, volume),
            Action::DetachVolume(id, volume) => self.detach_volume(&id, &volume),
        }
    }

    /// Gives the running VMM of `id` the volume in its lowest free slot, on a thread of its own
    /// (finding the AoE target may take the VMM seconds). A refusal leaves the slot free; the
    /// next desired state asks again.
    fn attach_volume(&self, id: &str, volume: mallee_proto::VolumeAttachment) {
        let Some(interface) = self.env.network.as_ref().map(|p| p.uplink().to_string()) else {
            return warn!(
                "agent: {id}: no private NIC to reach volume {} on",
                volume.volume_id
            );
        };
        let (pid, socket, slot) = {
            let mut t = self.lock();
            let Some(r) = t.get_mut(id) else { return };
            let Some(pid) = r.pid else { return };
            if r.local.volumes.contains_key(&volume.volume_id) {
                return;
            }
            let Some(slot) = volumes::free_slot(&r.local.volumes) else {
                return warn!("agent: {id}: no free volume slot for {}", volume.volume_id);
            };
            let held = Held {
                slot,
                stage: Stage::Attaching,
            };
            r.local.volumes.insert(volume.volume_id.clone(), held);
            (pid, r.dir.join(API_SOCKET), slot)
        };
        let me = self.clone();
        let id = id.to_string();
        std::thread::spawn(move || {
            let request = volumes::attach_request(slot, &volume, &interface);
            let vid = volume.volume_id;
            let result = api_call_within(&socket, &request, volumes::API_TIMEOUT);
            me.set(&id, |r| {
                if r.pid != Some(pid) {
                    return; // another VMM now: it holds nothing yet
                }
                match result {
                    Ok(Some(_)) => {
                        info!(
                            "agent: {id}: volume {vid} attached in slot {slot} (AoE {interface})"
                        );
                        if let Some(h) = r.local.volumes.get_mut(&vid) {
                            h.stage = Stage::Attached;
                        }
                    }
                    Ok(None) | Err(_) => {
                        let why = match result {
                            Err(e) => e.to_string(),
                            _ => "the VMM closed its socket".into(),
                        };
                        warn!("agent: {id}: attaching volume {vid}: {why}");
                        r.local.volumes.remove(&vid);
                    }
                }
            });
        });
    }

    /// Has the running VMM of `id` flush the volume and let it go, on a thread of its own. A
    /// VMM that cannot be reached keeps it as attached; the next desired state asks again.
    fn detach_volume(&self, id: &str, volume_id: &str) {
        let (pid, socket, slot) = {
            let mut t = self.lock();
            let Some(r) = t.get_mut(id) else { return };
            let Some(pid) = r.pid else { return };
            let Some(h) = r.local.volumes.get_mut(volume_id) else {
                return;
            };
            if h.stage != Stage::Attached {
                return; // still being attached (asked again later), or already going
            }
            h.stage = Stage::Detaching;
            (pid, r.dir.join(API_SOCKET), h.slot)
        };
        let (me, id, vid) = (self.clone(), id.to_string(), volume_id.to_string());
        std::thread::spawn(move || {
            let result = api_call_within(
                &socket,
                &Request::DetachVolume { slot },
                volumes::API_TIMEOUT,
            );
            me.set(&id, |r| {
                if r.pid != Some(pid) {
                    return;
                }
                match result {
                    Ok(Some(_)) => {
                        info!("agent: {id}: volume {vid} flushed and detached from slot {slot}");
                        r.local.volumes.remove(&vid);
                    }
                    other => {
                        let why = match other {
                            Err(e) => e.to_string(),
                            _ => "the VMM closed its socket".into(),
                        };
                        warn!("agent: {id}: detaching volume {vid}: {why}");
                        if let Some(h) = r.local.volumes.get_mut(&vid) {
                            h.stage = Stage::Attached;
                        }
                    }
                }
            });
        });
    }

    /// Has the running VMM of `id` serve `metadata` (it answers with the options it serves
    /// from then on), then writes it into `vmm.json` for the VMM's next start. A VMM that
    /// refuses or cannot be reached keeps what it served; the next desired state asks again.
    fn set_metadata(&self, id: &str, metadata: InstanceMetadata) {
        let Some((pid, dir)) = (self.lock().get(id)).and_then(|r| Some((r.pid?, r.dir.clone())))
        else {
            return;
        };
        let request = Request::SetMetadata {
            metadata: Box::new(metadata.clone()),
        };
        let served = match api_call(&dir.join(API_SOCKET), &request) {
            Ok(Some(reply)) => reply.metadata_options,
            Ok(None) => return warn!("agent: {id}: the VMM closed its socket on set_metadata"),
            Err(e) => return warn!("agent: {id}: control socket: {e}"),
        };
        if served != Some(metadata.options) {
            return warn!("agent: {id}: the VMM serves options {served:?} after set_metadata");
        }
        if let Err(e) = write_config_metadata(&dir.join(VMM_CONFIG), &metadata) {
            warn!("agent: {id}: the VMM serves the new metadata but its next start would not: {e}");
        }
        let o = metadata.options;
        info!(
            "agent: {id}: metadata updated (tokens {}, endpoint {}, hop limit {})",
            o.http_tokens.name(),
            o.http_endpoint.name(),
            o.http_put_response_hop_limit
        );
        self.set(id, |r| {
            if r.pid == Some(pid) {
                r.local.serving = Some(metadata);
            }
        });
    }

    fn set(&self, id: &str, f: impl FnOnce(&mut Record)) {
        if let Some(r) = self.lock().get_mut(id) {
            f(r);
        }
        self.notify();
    }

    fn launch(&self, spec: InstanceSpec) {
        let id = spec.instance_id.clone();
        let dir = self.env.root.join(&id);
        self.lock().insert(
            id.clone(),
            Record {
                local: Local {
                    state: Observed::Pending,
                    stopping: false,
                    reboot_count: spec.reboot_count,
                    serving: None,
                    volumes: volumes::Slots::new(),
                },
                target: Observed::Terminated,
                reason: None,
                pid: None,
                rebooting: false,
                dir,
                networked: spec.network.is_some(),
                address_taken: false,
                address: None,
                started: None,
                root_volume: spec.root_volume.as_ref().map(|v| v.volume_id.clone()),
            },
        );
        self.notify();
        info!("agent: launching {id}");
        let me = self.clone();
        std::thread::spawn(move || me.supervise(spec));
    }

    /// Fetches the images and lays out the instance directory; returns the config path and the
    /// pins to hold while the instance lives (the root image among them: the root disk reads
    /// through to it).
    fn prepare(
        &self,
        spec: &InstanceSpec,
        dir: &Path,
        phases: &mut Phases,
    ) -> Result<(PathBuf, Vec<Pinned>), LaunchError> {
        let io = |e| LaunchError::Io(dir.to_path_buf(), e);
        let mut lap = Instant::now();
        let mut took = move || {
            let ms = lap.elapsed().as_millis();
            lap = Instant::now();
            ms
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let kref = (spec.kernel.as_ref())
            .ok_or_else(|| LaunchError::NoKernel(spec.image.image_id.clone()))?;
        let (cache, fetch) = (&self.env.cache, &*self.env.fetch);
        let kernel = cache.get(kref, fetch)?;
        // Unpacked once per kernel image; what cannot be unpacked boots as it is.
        let boot_kernel = kernels::unpacked(&kernel.path, &cache.derived(&kernel, "vmlinux"))
            .unwrap_or_else(|e| {
                warn!(
                    "agent: {}: booting kernel {} as it is: {e}",
                    spec.instance_id, kref.sha256
                );
                kernel.path.clone()
            });
        let ramdisk = match &spec.ramdisk {
            Some(r) => Some(cache.get(r, fetch)?),
            None => None,
        };
        self.check_room(spec)?;
        // EBS-backed: the root volume is the root disk; there is no image to lay it over.
        let root = match spec.root_volume {
            None => Some(cache.get(&spec.image, fetch)?),
            Some(_) => None,
        };
        phases.images_ms = took();
        if let Some(root) = &root {
            disks::make_root(&root.path, dir)?;
        }
        if spec.ephemeral_gib > 0 {
            disks::make_ephemeral(dir, spec.ephemeral_gib)?;
        }
        phases.disks_ms = took();
        let uplink = self.env.network.as_ref().map(|p| p.uplink());
        let images = LaunchImages {
            kernel: &boot_kernel,
            initrd: ramdisk.as_ref().map(|p| p.path.as_path()),
            root: root.as_ref().map(|p| p.path.as_path()),
        };
        let mut cfg = vmm_config(spec, dir, &images, uplink)?;
        cfg.log_level = self.env.log_level;
        if let Some(net) = &spec.network {
            let plumbing = self.env.network.as_ref().ok_or(LaunchError::NoPrivateNic)?;
            let tap = plumbing.plug(&spec.instance_id, spec.mac, net)?;
            cfg.nics.push(Nic {
                tap: TapSource::Name(tap),
                mac: spec.mac,
                address: net.address.clone(),
            });
        }
        // Even without a NIC (nothing to answer on), so the options are the VMM's to confirm.
        cfg.metadata = Some(reconcile::metadata(spec));
        let path = dir.join(VMM_CONFIG);
        std::fs::write(&path, mallee_proto::encode(&cfg)).map_err(io)?;
        phases.network_ms = took();
        Ok((
            path,
            [Some(kernel), ramdisk, root]
                .into_iter()
                .flatten()
                .collect(),
        ))
    }

    /// Fails unless the instance's disks can be made in the room left for instances.
    fn check_room(&self, spec: &InstanceSpec) -> Result<(), LaunchError> {
        let root = &self.env.root;
        let avail = storage::available_bytes(root).map_err(|e| LaunchError::Io(root.clone(), e))?;
        let summary = self.env.cache.summary();
        let cache =
            (self.env.disks_share_cache).then_some((summary.budget_bytes, summary.used_bytes));
        let free = storage::room_for_instances(avail, cache);
        let needed = disks::creation_bytes(spec.ephemeral_gib);
        Ok(disks::check_room(root, needed, free)?)
    }

    fn spawn_vmm(
        &self,
        cfg: &Path,
        dir: &Path,
    ) -> Result<(u32, std::sync::mpsc::Receiver<i32>), LaunchError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(VMM_LOG))
            .map_err(|e| LaunchError::Io(dir.to_path_buf(), e))?;
        let err = log
            .try_clone()
            .map_err(|e| LaunchError::Io(dir.to_path_buf(), e))?;
        let _ = std::fs::remove_file(dir.join(API_SOCKET));
        let _ = std::fs::remove_file(dir.join(FAILURE)); // a report is about this run only
        let mut cmd = Command::new(&self.env.vmm);
        cmd.arg("--config")
            .arg(cfg)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        reaper::spawn_watched(&mut cmd).map_err(LaunchError::Spawn)
    }

    /// The instance's whole life on the node, on its own thread. Its launch's phases are
    /// logged (`launching`, `prepared in`, `running`), for `just bench launch` to break down.
    fn supervise(&self, spec: InstanceSpec) {
        let id = spec.instance_id.clone();
        let dir = self.env.root.join(&id);
        let started = Instant::now();
        info!("agent: {id} launching");
        let mut phases = Phases::default();
        let (cfg, _pins) = match self.prepare(&spec, &dir, &mut phases) {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir); // nothing half-made stays behind
                return self.ended(&id, Some(e.to_string()));
            }
        };
        info!(
            "agent: {id} prepared in {} ms: images {} ms, disks {} ms, network and config {} ms (image downloads so far: {})",
            started.elapsed().as_millis(),
            phases.images_ms,
            phases.disks_ms,
            phases.network_ms,
            self.env.cache.downloads()
        );
        loop {
            if self.lock().get(&id).is_none_or(|r| r.local.stopping) {
                return self.ended(&id, None);
            }
            // The file as this VMM reads it: a restart serves what set_metadata last wrote.
            let serving = read_config(&cfg).and_then(|c| c.metadata);
            let (pid, exited) = match self.spawn_vmm(&cfg, &dir) {
                Ok(s) => s,
                Err(e) => return self.ended(&id, Some(e.to_string())),
            };
            info!("agent: {id} running, mallee-vmm pid {pid}");
            self.set(&id, |r| {
                r.pid = Some(pid);
                r.local.serving = serving;
                r.local.volumes.clear(); // a new VMM holds no volume until given it
                r.local.state = Observed::Running;
                r.address_taken = false; // a new VMM: the guest takes its address again
                r.started = Some(Instant::now());
            });
            let code = exited.recv().unwrap_or(-1);
            info!("agent: {id} mallee-vmm exited with status {code}");
            let mut t = self.lock();
            let Some(r) = t.get_mut(&id) else { return };
            r.pid = None;
            r.local.serving = None;
            r.local.volumes.clear();
            let reset = Exit::from_code(code) == Some(Exit::Reboot);
            if r.rebooting || (reset && !r.local.stopping) {
                r.rebooting = false;
                r.local.stopping = false;
                continue;
            }
            let stopped = r.local.stopping;
            drop(t);
            if !stopped && Exit::from_code(code) == Some(Exit::PowerOff) {
                return self.shut_down(&id);
            }
            let why = (!stopped).then(|| {
                let failure = read_failure(&dir.join(FAILURE));
                exit_reason(
                    code,
                    failure.as_ref(),
                    log_end(&dir.join(VMM_LOG)).as_deref(),
                )
            });
            return self.ended(&id, why);
        }
    }

    /// The guest powered itself off, unasked: the instance stays down (`shut-down`) until the
    /// frontend, told so, stops or terminates it; its disks and tap go as for any end but a
    /// stop (an EBS-backed instance's root is a volume, which stays).
    fn shut_down(&self, id: &str) {
        info!("agent: {id}: the guest powered itself off");
        self.set(id, |r| {
            r.target = Observed::ShutDown;
            r.reason = Some("the guest powered itself off".into());
        });
        self.ended(id, None);
    }

    /// The instance is down: the stop target when a stop was asked for, else `failed`.
    fn ended(&self, id: &str, failure: Option<String>) {
        if crate::power::shutting_down() {
            // The node is going down: the VMM was stopped with everything else, the instance
            // did not fail. It stays as last reported; the frontend hears of the reboot.
            return info!("agent: {id} stopped by the node's shutdown");
        }
        if let Some(why) = &failure {
            warn!("agent: {id} failed: {why}");
        }
        let mut gone = false;
        self.set(id, |r| {
            r.pid = None;
            r.local.serving = None;
            r.local.volumes.clear();
            match failure {
                Some(why) if !r.local.stopping => {
                    r.local.state = Observed::Failed;
                    r.reason = Some(why);
                }
                _ => r.local.state = r.target,
            }
            r.local.stopping = false;
            if r.local.state != Observed::Stopped {
                let _ = std::fs::remove_file(r.dir.join(disks::ROOT));
                let _ = std::fs::remove_file(r.dir.join(disks::EPHEMERAL));
                let _ = std::fs::remove_file(r.dir.join(API_SOCKET));
                gone = true;
            }
        });
        // A stopped instance keeps its tap for its next start; any other end lets it go.
        if let (true, Some(plumbing)) = (gone, &self.env.network) {
            plumbing.unplug(id);
        }
    }

    /// Asks the VMM to stop, then kills it after the deadline.
    fn stop(&self, id: &str, target: Observed, reboot: bool) {
        let (pid, socket) = {
            let mut t = self.lock();
            let Some(r) = t.get_mut(id) else { return };
            if reboot {
                r.rebooting = true;
            } else {
                r.local.stopping = true;
                r.target = target;
            }
            if r.pid.is_none() {
                // Not started yet: a reboot is moot; a stop is seen before the VMM starts.
                r.rebooting = false;
            }
            (r.pid, r.dir.join(API_SOCKET))
        };
        self.notify();
        let Some(pid) = pid else { return };
        info!("agent: stopping {id} (mallee-vmm pid {pid})");
        let (me, id, deadline) = (self.clone(), id.to_string(), self.env.stop_deadline);
        std::thread::spawn(move || {
            if let Err(e) = api_shutdown(&socket) {
                warn!("agent: {id}: control socket: {e}");
            }
            let until = Instant::now() + deadline;
            while Instant::now() < until {
                if me.lock().get(&id).is_none_or(|r| r.pid != Some(pid)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            warn!("agent: {id}: mallee-vmm did not stop in {deadline:?}; killing it");
            // SAFETY: kill(2) with a pid this process started and has not yet reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        });
    }
}

#[cfg(test)]
#[path = "instances_tests.rs"]
mod tests;
