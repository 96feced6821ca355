//! The QEMU harness for Mallee's end-to-end tests: per-test directories, virtual machines under
//! TCG, private L2 segments between them, and console matching with deadlines.
//!
//! It installs nothing (`just setup` does) and never sleeps for a fixed time: every wait is a
//! condition polled until a deadline. VMs die with the `Vm` value (or the test process).

pub mod console;
pub mod images;
pub mod segment;
pub mod testdir;
pub mod vm;

pub use console::{Console, ConsoleError};
pub use images::{Images, NetbootImage};
pub use segment::Segment;
pub use testdir::TestDir;
pub use vm::{Nic, Vm, VmConfig, VmError};
