//! `mallee-init`: PID 1 of the Mallee appliances. The binary only calls [`main`]; the modules
//! are a library so that the fuzz targets (`init/fuzz`) reach the parsers of untrusted input.
//!
//! Boot order: block the signals PID 1 handles (so they queue for [`signal_loop`]), install the
//! panic hook (print, count down 10 s, orderly reboot), mount the API file systems, open the
//! console, read `mallee.*` from `/proc/cmdline`, load modules and coldplug, log the disks
//! ([`disk::log_inventory`]), report KVM, set the
//! hostname, bring the network up, print the readiness line once the first lease is configured
//! (role frontend: once the data disk is mounted and `mallee-frontend` listens, see [`frontend`])
//! (and start the `mallee.run` program if asked), then reap children and wait for power signals
//! forever. `main` never returns.

pub mod agent;
pub mod appliance;
pub mod cmdline;
pub mod coldplug;
pub mod disk;
pub mod frontend;
pub mod gateway;
pub mod guest;
pub mod guest_disks;
pub mod log;
pub mod modules;
pub mod mounts;
pub mod net;
pub mod partition;
pub mod power;
pub mod reaper;
pub mod run;

use cmdline::Settings;
use mallee_proto::LogLevel;
use power::{shutdown, PowerAction};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::Duration;
use tracing::{error, info, warn};

/// The signals PID 1 acts on; all are blocked in every thread and taken with sigwaitinfo.
const HANDLED_SIGNALS: [i32; 5] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

fn handled_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before any use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, exclusively borrowed sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for signal in HANDLED_SIGNALS {
        // SAFETY: as above; the signal numbers are valid constants.
        unsafe { libc::sigaddset(&mut set, signal) };
    }
    set
}

/// Blocks the handled signals in this thread (threads spawned later inherit the mask; programs
/// init starts must reset it, see [`run`]).
fn block_signals() {
    let set = handled_set();
    // SAFETY: `set` is initialised; the old mask is not requested.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Waits for signals forever: SIGCHLD reaps, the others shut down.
fn signal_loop() -> ! {
    let set = handled_set();
    loop {
        reaper::reap_all();
        // SAFETY: `set` is initialised and the info pointer may be null.
        let signal = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if let Some(action) = PowerAction::for_signal(signal) {
            info!("signal {signal}: {action:?}");
            shutdown(action);
        }
    }
}

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|panic| {
        if net::dhcp::decoding_untrusted() {
            return; // caught by decode_untrusted and reported as an error value
        }
        log::line(
            LogLevel::Error,
            &format!("PANIC: {panic}").replace('\n', " "),
        );
        for left in (1..=10).rev() {
            log::line(LogLevel::Error, &format!("rebooting in {left} s"));
            std::thread::sleep(Duration::from_secs(1));
        }
        shutdown(PowerAction::Reboot);
    }));
}

/// Points fds 0, 1 and 2 at /dev/console (the kernel may have had no console node to open).
fn attach_stdio_to_console() {
    if let Some(console) = log::console_handle() {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors; `console` stays open across the call.
            unsafe { libc::dup2(rustix::fd::AsRawFd::as_raw_fd(&console), fd) };
        }
    }
}

fn load_modules() {
    let kver = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let base = PathBuf::from("/lib/modules").join(&kver);
    let (order, mut errors) = modules::read_list("load-order", modules::parse_module_list);
    let (mut all, e2) = modules::read_list("all", modules::parse_module_list);
    let (aliases, e3) = modules::read_list("aliases", modules::parse_aliases);
    errors.extend(e2.into_iter().chain(e3));
    for e in &errors {
        warn!("{e}");
    }
    all.extend(order.iter().cloned());
    let mut loader = modules::ModuleLoader::new(base, &all);
    let mut failed = 0;
    for entry in &order {
        if let Err(e) = loader.load(&entry.name) {
            warn!("{e}");
            failed += 1;
        }
    }
    info!(
        "modules: {} listed, {} failed (kernel {kver})",
        order.len(),
        failed
    );
    coldplug::coldplug(&mut loader, &aliases);
    disk::log_inventory(Path::new("/sys/block"));
}

/// Why /dev/kvm is missing, as far as we can tell.
fn kvm_unavailable_reason() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or("");
    let has = |f: &str| flags.split_whitespace().any(|w| w == f);
    if !has("vmx") && !has("svm") {
        "CPU has neither vmx nor svm".to_owned()
    } else if !Path::new("/sys/module/kvm").exists() {
        "module kvm not loaded".to_owned()
    } else if !Path::new("/sys/module/kvm_amd").exists()
        && !Path::new("/sys/module/kvm_intel").exists()
    {
        format!(
            "neither kvm_amd nor kvm_intel loaded (cpu has {})",
            if has("svm") { "svm" } else { "vmx" }
        )
    } else {
        "kvm modules loaded but /dev/kvm is missing".to_owned()
    }
}

fn report_kvm() {
    if Path::new("/dev/kvm").exists() {
        info!("kvm available");
    } else {
        info!("kvm unavailable: {}", kvm_unavailable_reason());
    }
}

/// The system's name: `mallee.hostname`, else the hostname field of a static `ip=`, else one
/// made of the first NIC's MAC.
fn hostname(settings: &Settings, nics: &[net::Nic]) -> String {
    (settings.hostname.clone())
        .or_else(|| static_ip_hostname(settings))
        .or_else(|| nics.first().map(|n| cmdline::hostname_from_mac(n.mac.0)))
        .unwrap_or_else(|| "mallee".to_owned())
}

fn set_hostname(settings: &Settings, nics: &[net::Nic]) -> String {
    let name = hostname(settings, nics);
    if let Err(e) = rustix::system::sethostname(name.as_bytes()) {
        warn!("sethostname {name}: {e}");
    }
    name
}

/// The hostname field of the kernel's `ip=`, when it gives a static address with one.
fn static_ip_hostname(settings: &Settings) -> Option<String> {
    settings.static_ip.as_ref()?.hostname.clone()
}

/// Where the test guest takes its user data from: `mallee.user_data` (its id the `ip=`
/// hostname, or the system's) when the command line has it, else the metadata service.
fn user_data_source(settings: &Settings, hostname: &str) -> guest::UserDataSource {
    match &settings.user_data {
        Some(user_data) => guest::UserDataSource::CommandLine {
            id: static_ip_hostname(settings).unwrap_or_else(|| hostname.to_owned()),
            user_data: user_data.clone(),
        },
        None => guest::UserDataSource::MetadataService,
    }
}

/// The node agent's settings, when this is a node whose command line names a frontend; an
/// error (logged here, at boot) when it also carries a malformed `mallee.frontend_key`: such a
/// node runs no agent, rather than one that talks to the frontend unpinned.
fn agent_config(settings: &Settings, nics: &[net::Nic]) -> Result<Option<agent::AgentConfig>, ()> {
    let (Some(frontend), Some(cluster), Some(secret)) = (
        settings.frontend,
        settings.cluster.clone(),
        settings.secret.clone(),
    ) else {
        return Ok(None);
    };
    if settings.role != cmdline::Role::Node {
        return Ok(None);
    }
    let frontend_key = match &settings.frontend_key {
        cmdline::FrontendKey::Unpinned => None,
        cmdline::FrontendKey::Pinned(pin) => Some(pin.0),
        cmdline::FrontendKey::Malformed(why) => {
            error!(
                "{why}; the node agent will not start (it does not talk to the frontend unpinned)"
            );
            return Err(());
        }
    };
    Ok(Some(agent::AgentConfig {
        frontend,
        cluster,
        secret,
        macs: nics.iter().map(|n| n.mac).collect(),
        state_dir: PathBuf::from("/var/lib/mallee"),
        vmm: PathBuf::from("/bin/mallee-vmm"),
        disk: settings.disk.clone(),
        log_level: settings.log,
        frontend_key,
    }))
}

/// The readiness callback: prints the one readiness line and starts `mallee.run` and the node
/// agent (or, on an instance, the test guest's probes), once.
fn readiness(settings: &Settings, nics: &[net::Nic], hostname: &str) -> net::client::OnReady {
    let (role, run, test_panic) = (settings.role, settings.run.clone(), settings.test_panic);
    let agent = agent_config(settings, nics);
    let user_data = user_data_source(settings, hostname);
    let once = Once::new();
    Arc::new(move |ip: String| {
        once.call_once(|| {
            let boot_ms = log::boottime_ms();
            let boot_id = agent::boot_id();
            info!("ready role={role} ip={ip} boot_ms={boot_ms} boot_id={boot_id}");
            if let Some(path) = run.clone() {
                run::start(path);
            }
            match agent.clone() {
                Ok(Some(cfg)) => agent::start(cfg),
                // An instance's PID 1 (the test guest): its metadata, if a VMM serves it.
                Ok(None) if role == cmdline::Role::Node && ip != "none" => {
                    guest::start(user_data.clone())
                }
                // A node with a malformed pin (said at boot): nothing.
                Ok(None) | Err(()) => {}
            }
            if test_panic {
                std::thread::spawn(|| panic!("mallee.test_panic=1 asked for a panic"));
            }
        })
    })
}

/// PID 1: boots the appliance, then reaps and waits for power signals; never returns.
pub fn main() {
    log::install();
    block_signals();
    install_panic_hook();
    for e in mounts::mount_all() {
        log::line(LogLevel::Error, &e.to_string());
    }
    log::open_sinks();
    attach_stdio_to_console();
    info!("starting, pid {}", std::process::id());
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        warn!("PR_SET_CHILD_SUBREAPER: {e}");
    }
    // Ctrl-alt-del sends SIGINT to PID 1 instead of rebooting at once.
    if let Err(e) = rustix::system::reboot(rustix::system::RebootCommand::CadOff) {
        warn!("reboot(CAD_OFF): {e}");
    }
    let settings = cmdline::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    log::set_level(settings.log);
    for warning in &settings.warnings {
        warn!("{warning}");
    }
    info!("role={}", settings.role);
    load_modules();
    report_kvm();
    let mut nics = net::wait_for_nics(Duration::from_secs(5));
    if let (cmdline::Role::Node, Some(mac)) = (settings.role, settings.bridge) {
        match net::bridge::bridge_uplink(&nics, mac) {
            Ok(bridged) => nics = bridged,
            Err(e) => error!("uplink bridge: {e}; instances that share the node's segment (MANAGED-NOVLAN, SYSTEM) cannot be plugged"),
        }
    }
    let hostname = set_hostname(&settings, &nics);
    let names: Vec<&str> = nics.iter().map(|n| n.name.as_str()).collect();
    info!("hostname {hostname}, wired NICs: {names:?}");
    let on_ready = readiness(&settings, &nics, &hostname);
    if nics.is_empty() {
        info!("no wired NIC found; continuing without network");
        on_ready("none".to_owned());
    }
    match settings.role {
        cmdline::Role::Node => net::start(&nics, &hostname, settings.static_ip.as_ref(), on_ready),
        cmdline::Role::Frontend => frontend::start(&settings, &nics, &hostname, on_ready),
    }
    signal_loop();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_on_the_command_line_is_used_with_the_ip_hostname_as_id() {
        let settings = cmdline::parse(
            "ip=10.0.2.15:::255.255.255.0:peer1::off mallee.user_data=bmV0YmVuY2ggNTIwMQo=",
        );
        assert_eq!(
            user_data_source(&settings, "mallee-525400123456"),
            guest::UserDataSource::CommandLine {
                id: "peer1".into(),
                user_data: b"netbench 5201\n".to_vec()
            }
        );
        let without_ip = cmdline::parse("mallee.user_data=");
        assert_eq!(
            user_data_source(&without_ip, "mallee-525400123456"),
            guest::UserDataSource::CommandLine {
                id: "mallee-525400123456".into(),
                user_data: vec![]
            }
        );
        assert_eq!(
            user_data_source(&cmdline::parse("ip=dhcp"), "h"),
            guest::UserDataSource::MetadataService
        );
    }

    #[test]
    fn the_ip_hostname_names_the_system_unless_mallee_hostname_does() {
        let nics = [net::Nic {
            name: "eth0".into(),
            ifindex: 2,
            mac: net::Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
        }];
        let name = |cmdline: &str| hostname(&cmdline::parse(cmdline), &nics);
        assert_eq!(name("ip=10.0.2.15::::peer1.example"), "peer1");
        assert_eq!(name("ip=10.0.2.15::::peer1 mallee.hostname=n1"), "n1");
        assert_eq!(name("ip=dhcp"), "mallee-525400123456");
        assert_eq!(hostname(&cmdline::parse(""), &[]), "mallee");
    }

    #[test]
    fn the_frontend_key_reaches_the_agent_and_a_malformed_one_starts_no_agent() {
        let node = "mallee.frontend=10.0.2.2:8773 mallee.cluster=c mallee.secret=s";
        let config = |cmdline: &str| agent_config(&cmdline::parse(cmdline), &[]);
        let unpinned = config(node).unwrap().unwrap();
        assert_eq!(unpinned.frontend_key, None);
        let pin = format!("sha256:{}", "ab".repeat(32));
        let pinned = config(&format!("{node} mallee.frontend_key={pin}"))
            .unwrap()
            .unwrap();
        assert_eq!(pinned.frontend_key, Some([0xab; 32]));
        // Neither an unpinned agent nor the test guest's probes: nothing.
        assert!(config(&format!("{node} mallee.frontend_key=ab")).is_err());
        // A test guest (no frontend on its command line) is not a node with a bad pin.
        assert!(config("mallee.frontend_key=ab").unwrap().is_none());
    }
}
