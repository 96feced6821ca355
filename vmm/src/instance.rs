//! One instance from its [`VmmConfig`]: open the disks, taps and console, build the VM, load
//! Linux, configure the vCPUs and run until the guest or the API ends it.
//!
//! This is the glue between configuration and the VM; each step's failure names what it was
//! doing and with which file.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;

use crate::api::Control;
use crate::boot::{self, cpuid, regs, BootError, BootSpec};
use crate::config::{TapSource, VmmConfig};
use crate::devices::virtio::block::slot::VolumeSlots;
use crate::devices::virtio::block::{self, Block};
use crate::devices::virtio::net::metadata::LiveMetadata;
use crate::devices::virtio::net::port::{Port, PortCounters};
use crate::devices::virtio::net::tap::Tap;
use crate::devices::virtio::net::Net;
use crate::devices::virtio::rng::Rng;
use crate::exit::Exit;
use crate::vm::{Vm, VmError};

/// Why an instance could not be started.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// Building the VM failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// Loading the kernel failed.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// Setting up a vCPU failed.
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    /// A disk image could not be opened.
    #[error("cannot open disk {path}: {err}")]
    Disk {
        /// The path.
        path: String,
        /// The error.
        err: std::io::Error,
    },
    /// A tap could not be opened.
    #[error("cannot open tap {tap}: {err}")]
    Tap {
        /// The tap name or fd.
        tap: String,
        /// The error.
        err: std::io::Error,
    },
    /// The serial output file could not be opened.
    #[error("cannot open serial output {path}: {err}")]
    Serial {
        /// The path.
        path: String,
        /// The error.
        err: std::io::Error,
    },
    /// KVM CPUID setup failed.
    #[error("cannot set up CPUID: {0}")]
    Cpuid(kvm_ioctls::Error),
    /// The VM stopped on a failure while running (a vCPU or KVM error).
    #[error("the VM failed: {0}")]
    Failed(String),
}

/// What outlives each VM built from the configuration: the API's handle, each NIC's counters,
/// what the metadata service serves (the API may replace it) and the volume slots (the API
/// attaches and detaches volumes; a restarted guest finds them as they were).
pub struct Shared<'a> {
    /// The API's handle: it can stop the VM.
    pub control: &'a Arc<Control>,
    /// Each NIC's counters, in configuration order.
    pub ports: &'a [Arc<PortCounters>],
    /// What the metadata service serves; `None`: no service.
    pub metadata: Option<&'a Arc<LiveMetadata>>,
    /// The volume slots (as many as `volume_slots` in the configuration).
    pub volume_slots: &'a VolumeSlots,
}

fn console(cfg: &VmmConfig) -> Result<Box<dyn Write + Send>, InstanceError> {
    match &cfg.console {
        None => Ok(Box::new(std::io::stdout())),
        Some(path) => {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|err| InstanceError::Serial {
                    path: path.display().to_string(),
                    err,
                })?;
            Ok(Box::new(f))
        }
    }
}

/// Builds the VM described by `cfg` (devices, kernel, vCPUs) and runs it to its end, with what
/// outlives it in `shared`. PCI slot order: disks, volume slots, NICs, rng. A VM that fails while
/// running is an error saying what failed, never `Ok(Exit::Error)`.
pub fn run(cfg: &VmmConfig, shared: &Shared<'_>) -> Result<Exit, InstanceError> {
    let Shared {
        control,
        ports,
        metadata,
        volume_slots,
    } = *shared;
    tracing::info!(
        "building the VM: {} MiB, {} vCPUs, {} disks, {} volume slots, {} NICs, kernel {}",
        cfg.memory_mib,
        cfg.vcpus,
        cfg.disks.len(),
        cfg.volume_slots,
        cfg.nics.len(),
        cfg.kernel.display()
    );
    let mut vm = Vm::new(cfg.memory_bytes())?;
    vm.add_serial(console(cfg)?)?;
    for d in &cfg.disks {
        let backend = block::open(&d.source, d.read_only).map_err(|err| InstanceError::Disk {
            path: d.source.to_string(),
            err,
        })?;
        tracing::debug!(
            "disk {} (serial {:?}, read-only {})",
            d.source,
            d.serial,
            d.read_only
        );
        let blk = Block::new(backend, d.read_only, d.serial.as_deref());
        vm.add_virtio(Box::new(blk))?;
    }
    for slot in volume_slots.iter() {
        vm.add_virtio(Box::new(Block::for_slot(slot.clone())))?;
    }
    for (n, counters) in cfg.nics.iter().zip(ports) {
        let tap = match &n.tap {
            TapSource::Name(name) => Tap::open(name),
            TapSource::Fd(fd) => Tap::from_fd(*fd),
        };
        let tap = tap.map_err(|err| InstanceError::Tap {
            tap: n.tap.to_string(),
            err,
        })?;
        tracing::debug!("NIC {} on tap {}", n.mac, n.tap);
        let port =
            Port::new(n.mac, n.address.clone(), counters.clone()).with_metadata(metadata.cloned());
        vm.add_virtio(Box::new(Net::new(tap, port)))?;
    }
    if cfg.rng {
        vm.add_virtio(Box::new(Rng::new()))?;
    }
    let entry = boot::load(
        &vm.mem,
        &BootSpec {
            kernel: &cfg.kernel,
            initrd: cfg.initrd.as_deref(),
            cmdline: &cfg.cmdline,
            vcpus: cfg.vcpus,
            smbios: cfg.smbios.as_ref(),
        },
    )?;
    let supported = vm
        .kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(InstanceError::Cpuid)?;
    let mut vcpus = Vec::new();
    for id in 0..cfg.vcpus {
        let fd = vm.create_vcpu(u64::from(id))?;
        fd.set_cpuid2(&cpuid::for_vcpu(&supported, id, cfg.vcpus))
            .map_err(InstanceError::Cpuid)?;
        regs::setup_lint(&fd)?;
        if id == 0 {
            regs::setup_long_mode(&fd, &vm.mem, entry.entry)?;
        }
        vcpus.push(fd);
    }
    control.attach(&vm.exit);
    match vm.run(vcpus) {
        Exit::Error => Err(InstanceError::Failed(
            (vm.exit.failure()).unwrap_or_else(|| "no reason recorded".into()),
        )),
        exit => Ok(exit),
    }
}
