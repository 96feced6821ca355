//! `mallee-vmm`: runs one instance. Arguments (or `--config FILE` with the same fields as JSON)
//! describe the VM; the exit status says how it ended: 0 guest poweroff, 1 error, 2 guest reboot,
//! 3 shutdown through the API.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use mallee_vmm::api::{self, ApiState, Control};
use mallee_vmm::config::{OnReboot, VmConfig};
use mallee_vmm::exit::ExitReason;

const USAGE: &str = "usage: mallee-vmm --kernel K [--initrd I] [--cmdline C] [--mem 256M] \
[--vcpus N] [--disk PATH[,ro][,serial=S]]... [--net tap=NAME|fd=N,mac=M]... [--serial FILE] \
[--api-socket PATH] [--no-rng] [--on-reboot exit|restart] | --config FILE.json";

fn run() -> anyhow::Result<ExitReason> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(ExitReason::PowerOff);
    }
    let started = Instant::now();
    let cfg = VmConfig::from_args(args)?;
    let control = Arc::new(Control::new());
    if let Some(path) = &cfg.api_socket {
        let state = ApiState {
            control: control.clone(),
            started,
            vcpus: cfg.vcpus,
            mem_bytes: cfg.mem_bytes,
        };
        api::serve(path, state)?;
    }
    loop {
        let reason = mallee_vmm::instance::run(&cfg, &control).context("cannot start the VM")?;
        if control.stop_requested() {
            return Ok(ExitReason::ApiShutdown);
        }
        if reason != ExitReason::Reboot || cfg.on_reboot == OnReboot::Exit {
            return Ok(reason);
        }
        eprintln!("mallee-vmm: guest rebooted; restarting it (--on-reboot restart)");
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(reason) => {
            eprintln!("mallee-vmm: guest stopped: {}", reason.name());
            ExitCode::from(reason.exit_code())
        }
        Err(e) => {
            eprintln!("mallee-vmm: {e:#}");
            ExitCode::from(ExitReason::Error.exit_code())
        }
    }
}
