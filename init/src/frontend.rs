//! Role `frontend`: what PID 1 does on the frontend appliance besides the common boot.
//!
//! It mounts the data disk on `/var/lib/mallee` (through [`crate::disk`]: formatted only when
//! its first 128 KiB are all zero, so a disk holding anything is never overwritten), gives the private NIC
//! its static address, runs DHCP on every other NIC, writes the daemon's configuration (with the
//! site settings of the ESP's `mallee.toml` laid over it; or uses `/var/lib/mallee/frontend.toml`
//! whole when the operator put one there) and supervises
//! `mallee-frontend`: its output goes to the console, it is restarted with backoff when it
//! exits, and the readiness line is printed once it listens (after, with
//! `mallee.show_credentials=1` as the flashable image has it, what an admin needs from the
//! console: the admin credentials, the CA bundle and the pin of the daemon's TLS key, see
//! [`ClientFiles`]). Beside it, and supervised the
//! same way, runs `mallee-frontend storage`, the storage controller that serves (as root) the
//! volume exports the daemon lists. The gateway the daemon hands over
//! for instance networks is applied by [`crate::gateway`], started here.

use crate::appliance::{self, Slots};
use crate::cmdline::{DataDisk, PrivateNic, Settings};
use crate::disk::{self, DiskError};
use crate::net::{self, client::OnReady, link::Netlink, Nic};
use crate::partition::{self, PartitionError};
use crate::power::{self, PowerAction};
use crate::{gateway, log, reaper};
use mallee_proto::appliance::{Esp, SITE_CONFIG};
use mallee_proto::cmdline::PublicKeyPin;
use mallee_proto::LogLevel;
use serde::Serialize;
use std::io::{BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// Where the data disk is mounted.
pub const DATA_MOUNT: &str = "/var/lib/mallee";
const DAEMON: &str = "/bin/mallee-frontend";
/// Port of the EC2/S3 API.
pub const API_PORT: u16 = 8773;
/// The unprivileged uid:gid the daemon runs as (no NSS in the appliance: numeric).
const RUN_AS: (u32, u32) = (65534, 65534);

#[derive(Debug, thiserror::Error)]
pub enum FrontendBootError {
    #[error("data disk: {0}")]
    Disk(#[from] DiskError),
    #[error("data partition: {0}")]
    Partition(#[from] PartitionError),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("private NIC {interface}: {reason}")]
    Private { interface: String, reason: String },
}

/// How long the data partition of the flashable image may take to appear.
const LABEL_PATIENCE: Duration = Duration::from_secs(30);

/// Mounts the data disk on [`DATA_MOUNT`], formatting it first when blank. A partition named
/// by label (the flashable image's) that is still blank is first grown to the end of the disk
/// it was flashed onto; one holding anything is neither grown nor formatted.
pub fn mount_data(data: &DataDisk) -> Result<(), FrontendBootError> {
    let device = match data {
        DataDisk::Device(device) => device.clone(),
        DataDisk::Label(label) => {
            let part = partition::wait_for_label(label, LABEL_PATIENCE)?;
            if disk::probe(&part.device)? == disk::DiskContent::Blank {
                match partition::grow_to_disk_end(&part.disk, part.number)? {
                    Some(g) => info!(
                        "data partition {} grown from {} MiB to {} MiB (the end of {})",
                        part.device.display(),
                        g.before >> 20,
                        g.after >> 20,
                        part.disk.display()
                    ),
                    None => info!(
                        "data partition {} already reaches the end of {}",
                        part.device.display(),
                        part.disk.display()
                    ),
                }
            }
            part.device
        }
    };
    disk::mount_ext4(
        &device,
        Path::new(DATA_MOUNT),
        "mallee-data",
        disk::Init::Full,
    )?;
    Ok(())
}

/// Brings the private NIC up with its static address.
pub fn configure_private(nic: &PrivateNic) -> Result<(), FrontendBootError> {
    let err = |reason: String| FrontendBootError::Private {
        interface: nic.interface.clone(),
        reason,
    };
    let ifindex: u32 = std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", nic.interface))
        .map_err(|e| err(format!("no such interface ({e})")))?
        .trim()
        .parse()
        .map_err(|_| err("unreadable ifindex".into()))?;
    let mut nl = Netlink::open().map_err(|e| err(e.to_string()))?;
    nl.set_up(ifindex).map_err(|e| err(e.to_string()))?;
    nl.add_address(ifindex, nic.ip, nic.prefix)
        .map_err(|e| err(e.to_string()))
}

/// The part of the frontend daemon's TOML file the appliance sets (its `Config`; every other
/// field keeps the daemon's default).
#[derive(Debug, Serialize)]
struct DaemonConfig {
    listen: SocketAddr,
    data_dir: PathBuf,
    run_as: String,
    ec2: Ec2Section,
    pxe: PxeSection,
    /// Set when booted from a slot of the flashable image: upgrades are staged there.
    #[serde(skip_serializing_if = "Option::is_none")]
    appliance_dir: Option<PathBuf>,
    /// Where the daemon hands init the desired gateway ([`gateway::GATEWAY_DIR`]).
    gateway_dir: PathBuf,
}

/// The daemon's `[ec2]` table.
#[derive(Debug, Serialize)]
struct Ec2Section {
    cluster_secret: String,
}

/// The daemon's `[pxe]` table: the PXE service on the private NIC.
#[derive(Debug, Serialize)]
struct PxeSection {
    interface: String,
    server_ip: Ipv4Addr,
    prefix_len: u8,
    image_dir: PathBuf,
    tftp_root: PathBuf,
}

/// The daemon's configuration on this appliance: the API on every address, state on the data
/// disk, the PXE service on the private NIC with the node bundle and iPXE of this image.
pub fn daemon_config(private: &PrivateNic, secret: &str, appliance_dir: Option<&Path>) -> String {
    let config = DaemonConfig {
        listen: SocketAddr::from(([0, 0, 0, 0], API_PORT)),
        data_dir: Path::new(DATA_MOUNT).join("frontend"),
        run_as: format!("{}:{}", RUN_AS.0, RUN_AS.1),
        ec2: Ec2Section {
            cluster_secret: secret.to_owned(),
        },
        pxe: PxeSection {
            interface: private.interface.clone(),
            server_ip: private.ip,
            prefix_len: private.prefix,
            image_dir: PathBuf::from("/usr/share/mallee/node"),
            tftp_root: PathBuf::from("/usr/lib/ipxe"),
        },
        appliance_dir: appliance_dir.map(Path::to_path_buf),
        gateway_dir: PathBuf::from(gateway::GATEWAY_DIR),
    };
    // Strings, addresses and paths always serialize.
    let body = toml::to_string(&config).unwrap_or_default();
    format!(
        "# Written by mallee-init at boot. To change it, copy it to {DATA_MOUNT}/frontend.toml,\n\
         # edit that file and reboot.\n{body}"
    )
}

/// The enrollment secret, made on first boot and kept on the data disk.
fn cluster_secret() -> Result<String, FrontendBootError> {
    let path = format!("{DATA_MOUNT}/cluster-secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        if !s.trim().is_empty() {
            return Ok(s.trim().to_owned());
        }
    }
    let werr = |source| FrontendBootError::Write {
        path: path.clone(),
        source,
    };
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(werr)?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, format!("{secret}\n")).map_err(werr)?;
    Ok(secret)
}

/// The configuration file the daemon is started with.
fn config_file(settings: &Settings, slots: Option<&Slots>) -> Result<PathBuf, FrontendBootError> {
    let operator = PathBuf::from(DATA_MOUNT).join("frontend.toml");
    if operator.exists() {
        info!("using {}", operator.display());
        return Ok(operator);
    }
    let secret = cluster_secret()?;
    let path = PathBuf::from("/run/mallee/frontend.toml");
    let werr = |source| FrontendBootError::Write {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all("/run/mallee").map_err(werr)?;
    let appliance_dir = slots.map(|_| Path::new(appliance::DIR));
    let mut text = daemon_config(&settings.private, &secret, appliance_dir);
    if let Some(site) = slots.and_then(site_settings) {
        match with_site_settings(&text, &site) {
            Ok(merged) => {
                info!("using the site settings in the ESP's {SITE_CONFIG}");
                text = merged;
            }
            Err(e) => error!("the ESP's {SITE_CONFIG} is not TOML ({e}); it is ignored this boot: fix it and reboot"),
        }
    }
    std::fs::write(&path, text).map_err(werr)?;
    Ok(path)
}

/// The site settings file on the ESP of `slots`, when there is one.
fn site_settings(slots: &Slots) -> Option<String> {
    let esp = Esp::partition(&slots.esp, false)
        .inspect_err(|e| warn!("reading the ESP for {SITE_CONFIG}: {e}"))
        .ok()?;
    let bytes = esp.read(SITE_CONFIG).ok()?;
    match String::from_utf8(bytes) {
        Ok(text) => Some(text),
        Err(_) => {
            error!("the ESP's {SITE_CONFIG} is not UTF-8 text; it is ignored this boot");
            None
        }
    }
}

/// `written` (the daemon's config) with `site`'s keys laid over it: a table in both is merged
/// key by key, anything else in `site` replaces what was written.
pub fn with_site_settings(written: &str, site: &str) -> Result<String, toml::de::Error> {
    fn lay(base: &mut toml::Table, over: toml::Table) {
        for (key, value) in over {
            match (base.get_mut(&key), value) {
                (Some(toml::Value::Table(b)), toml::Value::Table(o)) => lay(b, o),
                (_, value) => drop(base.insert(key, value)),
            }
        }
    }
    let mut base: toml::Table = written.parse()?;
    lay(&mut base, site.parse()?);
    let header: String = (written.lines())
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let body = toml::to_string(&base).unwrap_or_default();
    Ok(format!(
        "{header}# With the site settings of the ESP's {SITE_CONFIG} laid over it.\n{body}"
    ))
}

/// Delay before restart `n` (0-based): 1, 2, 4, … 30 s.
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs((1u64 << n.min(5)).min(30))
}

/// Runs `mallee-frontend --config CONFIG ARGS` once (`ARGS` empty: the daemon); its stderr and
/// stdout go to the console and each stdout line is also handed to `on_line`. Returns its exit
/// code.
fn run_frontend(
    config: &Path,
    args: &[&str],
    level: LogLevel,
    on_line: impl Fn(&str) + Send + 'static,
) -> i32 {
    let name = std::iter::once("mallee-frontend")
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let (reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => {
            error!("{name}: pipe: {e}");
            return -1;
        }
    };
    let mut command = Command::new(DAEMON);
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(log::console_stdio())
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .env("RUST_LOG", level.name())
        .env("NO_COLOR", "1")
        .current_dir("/");
    let spawned = reaper::spawn_watched(&mut command);
    drop(command); // closes our copy of the pipe's write end
    let (pid, exited) = match spawned {
        Ok(x) => x,
        Err(e) => {
            error!("{name}: cannot start: {e}");
            return 127;
        }
    };
    info!("{name} started, pid {pid}");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if let Some(mut console) = log::console_handle() {
                let _ = writeln!(console, "{line}");
            }
            on_line(&line);
        }
    });
    exited.recv().unwrap_or(-1)
}

/// Runs `once` again and again on a thread of its own, with [`backoff`] between runs (reset
/// after a run that lasted a minute); `exited` sees each exit code before the delay.
fn supervise(
    name: &'static str,
    mut once: impl FnMut() -> i32 + Send + 'static,
    mut exited: impl FnMut(i32) + Send + 'static,
) {
    std::thread::spawn(move || {
        let mut restarts = 0u32;
        loop {
            let started = Instant::now();
            let code = once();
            exited(code);
            if started.elapsed() > Duration::from_secs(60) {
                restarts = 0;
            }
            let delay = backoff(restarts);
            warn!(
                "{name} exited code={code}; restarting in {} s",
                delay.as_secs()
            );
            std::thread::sleep(delay);
            restarts += 1;
        }
    });
}

/// The CA bundle's file name, beside the admin credentials file (the daemon's
/// `tls::CA_BUNDLE_FILE`).
const CA_BUNDLE_FILE: &str = "mallee-ca.pem";
/// The admin's first web console password's file name, beside the admin credentials file
/// (the daemon's `config::CONSOLE_PASSWORD_FILE`).
const CONSOLE_PASSWORD_FILE: &str = "admin-console-password";
/// The daemon's `data_dir` when its config names none.
const DAEMON_DATA_DIR: &str = "/var/lib/mallee";
/// The line the daemon prints, before it listens, with the pin of its TLS key.
const DAEMON_PIN_LINE: &str = "mallee-frontend: nodes pin ";

/// What the daemon writes for its clients, where its config puts it: the admin credentials
/// (`credentials_file`, else `<data_dir>/admin-credentials`) and, with `[tls]` on (the
/// default), the CA bundle that verifies its certificate, beside them. Read from the config
/// file the daemon is started with, so an operator's own `frontend.toml` is followed too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFiles {
    pub credentials: PathBuf,
    /// `None` when the config turns TLS off.
    pub ca_bundle: Option<PathBuf>,
}

impl ClientFiles {
    /// The files `config` (the daemon's TOML) names, with the daemon's defaults for what it
    /// leaves out; a file that does not parse gives the defaults (the daemon then refuses it
    /// and says why).
    pub fn of_config(config: &str) -> ClientFiles {
        let table: toml::Table = config.parse().unwrap_or_default();
        let path = |key: &str| table.get(key).and_then(|v| v.as_str()).map(PathBuf::from);
        let data_dir = path("data_dir").unwrap_or_else(|| PathBuf::from(DAEMON_DATA_DIR));
        let credentials =
            path("credentials_file").unwrap_or_else(|| data_dir.join("admin-credentials"));
        let tls = (table.get("tls"))
            .and_then(|t| t.get("enabled"))
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        ClientFiles {
            ca_bundle: tls.then(|| credentials.with_file_name(CA_BUNDLE_FILE)),
            credentials,
        }
    }

    /// The admin's first web console password, beside the credentials.
    pub fn console_password(&self) -> PathBuf {
        self.credentials.with_file_name(CONSOLE_PASSWORD_FILE)
    }
}

/// The pin of the daemon's TLS key, when `line` (of its stdout) announces it.
pub fn daemon_pin(line: &str) -> Option<PublicKeyPin> {
    line.strip_prefix(DAEMON_PIN_LINE)?.trim().parse().ok()
}

/// Prints on the console what an admin needs to use the cloud, each line under a prefix a
/// client copies it by: the admin credentials (`admin-credentials: `), the admin's web console
/// password until it is changed (`admin-console-password: `, sign in at `/_console/`), the CA
/// bundle that
/// verifies the API's certificate (`ca-bundle: `, a PEM line each) and the pin of the
/// frontend's key (`frontend-key: `, what a node booted other than by this frontend's PXE
/// service needs as `mallee.frontend_key=`).
fn show_credentials(files: &ClientFiles, pin: Option<PublicKeyPin>) {
    let show = |prefix: &str, path: &Path| match std::fs::read_to_string(path) {
        Ok(text) => {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                info!("{prefix}: {line}");
            }
        }
        Err(e) => warn!("{prefix}: reading {}: {e}", path.display()),
    };
    show("admin-credentials", &files.credentials);
    show("admin-console-password", &files.console_password());
    match &files.ca_bundle {
        Some(bundle) => show("ca-bundle", bundle),
        None => warn!("ca-bundle: none, the daemon serves plain http ([tls] enabled = false)"),
    }
    if let Some(pin) = pin {
        info!("frontend-key: {pin}");
    }
}

/// Makes the gateway directory for the daemon, turns on forwarding and starts applying what
/// the daemon writes there.
fn start_gateway() {
    if let Err(e) = gateway::enable_forwarding() {
        warn!("gateway: {e}; instance traffic is not forwarded");
    }
    let dir = PathBuf::from(gateway::GATEWAY_DIR);
    match gateway::prepare(&dir, RUN_AS) {
        Ok(()) => gateway::start(dir),
        Err(e) => warn!("gateway: {e}; instance networks get no gateway this boot"),
    }
}

/// Starts everything; returns at once (the work runs on threads, so PID 1's signal loop can
/// reap `mke2fs` and the daemon meanwhile).
pub fn start(settings: &Settings, nics: &[Nic], hostname: &str, on_ready: OnReady) {
    let (settings, nics, hostname) = (settings.clone(), nics.to_vec(), hostname.to_owned());
    std::thread::spawn(move || boot(&settings, &nics, &hostname, on_ready));
}

fn boot(settings: &Settings, nics: &[Nic], hostname: &str, on_ready: OnReady) {
    if let Some(slot) = settings.slot {
        info!("booted from slot {slot} of the flashable image");
    }
    if let Err(e) = mount_data(&settings.data) {
        warn!("{e}; state lives in RAM this boot and is lost at power-off");
        let _ = std::fs::create_dir_all(DATA_MOUNT);
    }
    let slots = settings.slot.and_then(|slot| {
        appliance::boot(slot, Path::new(appliance::DIR), RUN_AS)
            .inspect_err(|e| warn!("A/B slots: {e}; upgrades are off this boot"))
            .ok()
    });
    if let Err(e) = configure_private(&settings.private) {
        warn!("{e}");
    }
    start_gateway();
    let public: Vec<Nic> = nics
        .iter()
        .filter(|n| n.name != settings.private.interface)
        .cloned()
        .collect();
    let lease: Arc<Mutex<Option<String>>> = Arc::default();
    let lease_seen = lease.clone();
    net::start(
        &public,
        hostname,
        None,
        Arc::new(move |ip| {
            lease_seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(ip);
        }),
    );
    let level = settings.log;
    let config = match config_file(settings, slots.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}; mallee-frontend not started");
            return;
        }
    };
    let private = settings.private.clone();
    let show = settings.show_credentials;
    // Read once the daemon has written them, from the config it runs with.
    let config_text = std::fs::read_to_string(&config).unwrap_or_default();
    let client_files = ClientFiles::of_config(&config_text);
    // The pin the daemon announced last (it prints it before it listens).
    let pin: Arc<Mutex<Option<PublicKeyPin>>> = Arc::default();
    let pin_shown = pin.clone();
    let (tx, rx) = channel::<()>();
    let (serving_tx, serving_rx) = channel::<()>();
    if let Some(slots) = slots.clone().filter(|s| s.trial) {
        // A slot on trial that does not serve in time is rebooted: the boot manager counts the
        // try, and after the last one boots the old slot again.
        std::thread::spawn(move || {
            if serving_rx.recv_timeout(appliance::TRIAL_PATIENCE).is_err() {
                appliance::trial_timed_out(&slots, Path::new(appliance::DIR));
                power::shutdown(PowerAction::Reboot);
            }
        });
    }
    let trial = slots.clone().filter(|s| s.trial);
    std::thread::spawn(move || {
        // The first listening line makes the appliance ready (public address when it has one).
        if rx.recv().is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let ip = loop {
            let got = lease.lock().unwrap_or_else(|e| e.into_inner()).clone();
            match got {
                Some(ip) => break ip,
                None if Instant::now() >= deadline || public.is_empty() => {
                    break format!("{}/{}", private.ip, private.prefix)
                }
                None => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        if show {
            let pin = *pin_shown.lock().unwrap_or_else(|e| e.into_inner());
            show_credentials(&client_files, pin);
        }
        on_ready(ip);
        let _ = serving_tx.send(());
        if let Some(slots) = trial {
            if let Err(e) = appliance::mark_good(&slots, Path::new(appliance::DIR)) {
                error!("upgrade: marking slot {} good: {e}", slots.slot);
            }
        }
        while rx.recv().is_ok() {} // later restarts need no second readiness line
    });
    // The storage controller stays root (AoE needs AF_PACKET sockets) and serves the volumes
    // the daemon lists in <data_dir>/storage.
    let storage_config = config.clone();
    supervise(
        "mallee-frontend storage",
        move || run_frontend(&storage_config, &["storage"], level, |_| {}),
        |_| {},
    );
    supervise(
        "mallee-frontend",
        move || {
            let (tx, pin) = (tx.clone(), pin.clone());
            run_frontend(&config, &[], level, move |line| {
                if let Some(announced) = daemon_pin(line) {
                    *pin.lock().unwrap_or_else(|e| e.into_inner()) = Some(announced);
                }
                if line.starts_with("mallee-frontend: listening on") {
                    let _ = tx.send(());
                }
            })
        },
        move |code| {
            if code != mallee_proto::appliance::UPGRADE_STAGED_EXIT {
                return;
            }
            let Some(slots) = &slots else { return };
            match appliance::install_staged(slots, Path::new(appliance::DIR)) {
                Ok(up) => {
                    info!(
                        "upgrade: rebooting to try version {} in slot {}",
                        up.version, up.slot
                    );
                    power::shutdown(PowerAction::Reboot);
                }
                Err(e) => error!("upgrade: {e}; the running slot stays"),
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        let secs: Vec<u64> = (0..8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    /// What init writes is read by the daemon's own parser, which refuses unknown fields.
    #[test]
    fn site_settings_are_laid_over_the_written_config_key_by_key() {
        let private = PrivateNic::default();
        let written = daemon_config(&private, "s", None);
        let site = "[network]\nmode = \"MANAGED-NOVLAN\"\nvlans = \"300-310\"\n[pxe]\nrange_start = \"10.77.0.100\"\n\
                    [ec2]\nadmit_macs = [\"52:54:00:77:00:01\"]\n";
        let merged = with_site_settings(&written, site).unwrap();
        let config = mallee_frontend::config::Config::parse(&merged).expect(&merged);
        assert_eq!(
            config.network.mode,
            mallee_frontend::cloud::NetMode::ManagedNoVlan
        );
        assert_eq!(config.network.vlans.to_string(), "300-310");
        let pxe = config.pxe.expect("[pxe] kept");
        // Laid over, not replaced: the table's other keys are still the written ones.
        assert_eq!(pxe.interface, private.interface);
        assert_eq!(pxe.range_start, Some("10.77.0.100".parse().unwrap()));
        // The nodes the site admits reach the daemon beside the secret init wrote.
        assert_eq!(config.ec2.cluster_secret, "s");
        let admitted: Vec<String> = config
            .ec2
            .admit_macs
            .iter()
            .map(|m| m.to_string())
            .collect();
        assert_eq!(admitted, ["52:54:00:77:00:01"]);
        assert!(merged.starts_with("# Written by mallee-init"), "{merged}");
        assert!(with_site_settings(&written, "[network\nmode = 1").is_err());
    }

    #[test]
    fn the_daemon_reads_the_written_config() {
        let private = PrivateNic::parse("ens5:10.1.0.1/16").unwrap();
        let text = daemon_config(&private, "a\"secret\\with quotes", None);
        let config = mallee_frontend::config::Config::parse(&text).expect(&text);
        assert_eq!(config.appliance_dir, None);
        let dir = Path::new(appliance::DIR);
        let with_slots = daemon_config(&private, "s", Some(dir));
        let parsed = mallee_frontend::config::Config::parse(&with_slots).expect(&with_slots);
        assert_eq!(parsed.appliance_dir.as_deref(), Some(dir));
        assert_eq!(config.listen, SocketAddr::from(([0, 0, 0, 0], API_PORT)));
        assert_eq!(config.data_dir, Path::new(DATA_MOUNT).join("frontend"));
        assert_eq!(config.run_as, "65534:65534");
        assert_eq!(
            config.gateway_dir.as_deref(),
            Some(Path::new(gateway::GATEWAY_DIR))
        );
        assert_eq!(config.ec2.cluster_secret, "a\"secret\\with quotes");
        let pxe = config.pxe.expect("a [pxe] table");
        assert_eq!(pxe.interface, "ens5");
        assert_eq!(pxe.server_ip, Ipv4Addr::new(10, 1, 0, 1));
        assert_eq!(pxe.prefix_len, 16);
        assert!(pxe.image_dir.ends_with("mallee/node"));
    }

    /// Init finds the credentials and CA bundle where the daemon's own config code puts them.
    #[test]
    fn client_files_are_where_the_daemon_writes_them() {
        assert_eq!(CA_BUNDLE_FILE, mallee_frontend::tls::CA_BUNDLE_FILE);
        assert_eq!(
            CONSOLE_PASSWORD_FILE,
            mallee_frontend::config::CONSOLE_PASSWORD_FILE
        );
        let written = daemon_config(&PrivateNic::default(), "s", None);
        let appliance = ClientFiles::of_config(&written);
        assert_eq!(
            appliance,
            ClientFiles {
                credentials: PathBuf::from("/var/lib/mallee/frontend/admin-credentials"),
                ca_bundle: Some(PathBuf::from("/var/lib/mallee/frontend/mallee-ca.pem")),
            }
        );
        for text in [
            written.as_str(),
            "",
            "data_dir = \"/srv/mallee\"\n",
            "credentials_file = \"/root/.aws/credentials\"\n[tls]\nenabled = true\n",
            "data_dir = \"/srv/mallee\"\n[tls]\nenabled = false\n",
        ] {
            let daemon = mallee_frontend::config::Config::parse(text).expect(text);
            let files = ClientFiles::of_config(text);
            assert_eq!(files.credentials, daemon.credentials_path(), "{text}");
            let bundle = daemon.tls.enabled.then(|| daemon.ca_bundle_path());
            assert_eq!(files.ca_bundle, bundle, "{text}");
            assert_eq!(files.console_password(), daemon.console_password_path());
        }
        // A config the daemon refuses: the defaults (it will not start to write anything).
        assert_eq!(ClientFiles::of_config("[tls"), ClientFiles::of_config(""));
    }

    #[test]
    fn the_pin_is_read_from_the_daemons_line_only() {
        let pin = PublicKeyPin([0xab; 32]);
        assert_eq!(
            daemon_pin(&format!("mallee-frontend: nodes pin {pin}")),
            Some(pin)
        );
        assert_eq!(
            daemon_pin(&format!("mallee-frontend: listening on {pin}")),
            None
        );
        assert_eq!(daemon_pin("mallee-frontend: nodes pin sha256:abcd"), None);
    }
}
