//! `mallee-vmm`: runs one instance. Arguments (or `--config FILE` with the same fields as JSON)
//! describe the VM; the exit status says how it ended: 0 guest poweroff, 1 error, 2 guest reboot,
//! 3 shutdown through the API.

use std::process::ExitCode;

use anyhow::Context;
use mallee_vmm::config::VmConfig;
use mallee_vmm::exit::ExitReason;

const USAGE: &str = "usage: mallee-vmm --kernel K [--initrd I] [--cmdline C] [--mem 256M] \
[--vcpus N] [--disk PATH[,ro][,serial=S]]... [--net tap=NAME|fd=N,mac=M]... [--serial FILE] \
[--api-socket PATH] [--no-rng] | --config FILE.json";

fn run() -> anyhow::Result<ExitReason> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(ExitReason::PowerOff);
    }
    let cfg = VmConfig::from_args(args)?;
    mallee_vmm::instance::run(&cfg).context("cannot start the VM")
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
