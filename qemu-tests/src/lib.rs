//! The QEMU harness for Mallee's end-to-end tests: per-test directories, virtual machines under
//! TCG, private L2 segments between them, console matching with deadlines, and a whole cloud
//! (frontend appliance + PXE-booted nodes, [`cloud`]).
//!
//! It installs nothing (`just setup` does) and never sleeps for a fixed time: every wait is a
//! condition polled until a deadline. VMs die with the `Vm` value (or the test process).

pub mod capture;
pub mod client;
pub mod cloud;
pub mod console;
pub mod ebs;
pub mod images;
pub mod outside;
pub mod segment;
pub mod testdir;
pub mod vm;

pub use client::ClientEnv;
pub use console::{Console, ConsoleError};
pub use images::{build_static, DebianCloudImage, GuestImage, Images, NetbootImage};
pub use segment::Segment;
pub use testdir::TestDir;
pub use vm::{Nic, Vm, VmConfig, VmError};

/// Records a measured figure (boot time, throughput) in `target/qemu-tests/figures.txt`, which
/// `just test` prints after the run, a failed one too: timings are reported, never asserted. The
/// line is not printed to the test's own output: a failing test's output then opens with its
/// panic message, and CI's excerpt of it shows why it failed, not the figures before.
pub fn report_figure(line: &str) {
    use std::io::Write;
    let path = testdir::root().join("figures.txt");
    let _ = std::fs::create_dir_all(testdir::root());
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// A benchmark's whole-number setting from environment variable `name`, or `default` when it is
/// unset; a value that is not a whole number stops the benchmark, naming it.
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}
