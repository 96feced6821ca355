//! `mallee-vmm`: runs one instance. `--config FILE` (the node agent's JSON [`VmmConfig`]) or
//! the equivalent flags describe the VM; the exit status says how it ended: 0 guest poweroff,
//! 1 error (with a failure report at `failure_path`, when configured), 2 guest reboot,
//! 3 shutdown through the API. Diagnostics go to stderr through `tracing`.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use mallee_vmm::api::{self, ApiState, Control};
use mallee_vmm::config::{self, LogLevel, OnReboot, VmmConfig, USAGE};
use mallee_vmm::devices::virtio::block::slot::VolumeSlots;
use mallee_vmm::devices::virtio::net::metadata::LiveMetadata;
use mallee_vmm::devices::virtio::net::port::PortCounters;
use mallee_vmm::exit::{self as vm_exit, Exit, Failure};
use mallee_vmm::instance::{self, InstanceError};
use tracing::level_filters::LevelFilter;

/// Logs to stderr at `level` and above, timestamps counted from the VMM's start.
fn init_logging(level: LogLevel) {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(LevelFilter::from(level))
        .with_ansi(std::io::stderr().is_terminal())
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .init();
}

/// Serves the API (if configured) and runs the VM, again after each guest reboot under
/// `on_reboot: restart`, until it ends.
fn run(cfg: &VmmConfig, started: Instant) -> anyhow::Result<Exit> {
    let control = Arc::new(Control::new());
    let ports: Vec<Arc<PortCounters>> = cfg.nics.iter().map(|_| Arc::default()).collect();
    let metadata = (cfg.metadata.clone()).map(|m| Arc::new(LiveMetadata::new(m)));
    let slots = VolumeSlots::new(cfg.volume_slots);
    if let Some(path) = &cfg.api_socket {
        let state = ApiState {
            control: control.clone(),
            started,
            vcpus: cfg.vcpus,
            memory_mib: cfg.memory_mib,
            nics: cfg.nics.iter().map(|n| n.mac).zip(ports.clone()).collect(),
            metadata: metadata.clone(),
            volume_slots: slots.clone(),
        };
        api::serve(path, state)?;
    }
    let shared = instance::Shared {
        control: &control,
        ports: &ports,
        metadata: metadata.as_ref(),
        volume_slots: &slots,
    };
    let exit = run_vms(cfg, &shared);
    for (nic, counters) in cfg.nics.iter().zip(&ports) {
        let s = counters.status(nic.mac);
        tracing::info!(
            "NIC {}: address taken {}, {} DHCP answers, dropped {}",
            nic.mac,
            s.address_taken,
            s.dhcp_answered,
            s.dropped
        );
    }
    exit
}

/// Runs the VM, again after each guest reboot under `on_reboot: restart` (serving the metadata
/// the API last set, with the volumes the API attached), until it ends.
fn run_vms(cfg: &VmmConfig, shared: &instance::Shared<'_>) -> anyhow::Result<Exit> {
    let control = shared.control;
    loop {
        let exit = instance::run(cfg, shared).map_err(|e| match e {
            // The VM ran and then failed: its message says so already.
            InstanceError::Failed(_) => anyhow::Error::from(e),
            e => anyhow::Error::from(e).context("cannot start the VM"),
        })?;
        if control.stop_requested() {
            return Ok(Exit::ApiShutdown);
        }
        if exit != Exit::Reboot || cfg.on_reboot == OnReboot::Exit {
            return Ok(exit);
        }
        tracing::info!("guest rebooted; restarting it (on_reboot: restart)");
    }
}

/// Logs the failure, leaves its report at `failure_path` for the node agent, and gives the
/// error exit status.
fn fail(failure_path: Option<&Path>, e: &anyhow::Error) -> ExitCode {
    let failure = Failure::error(format!("{e:#}"));
    tracing::error!("{}", failure.message);
    if let Some(path) = failure_path {
        if let Err(io) = vm_exit::write_failure(path, &failure) {
            tracing::error!("cannot write the failure report {}: {io}", path.display());
        }
    }
    ExitCode::from(failure.exit.code())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let started = Instant::now();
    let cfg = config::from_args(args);
    init_logging(cfg.as_ref().map_or(LogLevel::default(), |c| c.log_level));
    let cfg = match cfg {
        Ok(cfg) => cfg,
        Err(e) => return fail(None, &e.into()),
    };
    let ended =
        (config::check(&cfg).map_err(anyhow::Error::from)).and_then(|()| run(&cfg, started));
    match ended {
        Ok(exit) => {
            tracing::info!("guest stopped: {}", exit.name());
            ExitCode::from(exit.code())
        }
        Err(e) => fail(cfg.failure_path.as_deref(), &e),
    }
}
