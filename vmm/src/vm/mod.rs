//! The KVM virtual machine: guest memory, the in-kernel irqchip and PIT, the buses and the
//! devices on them, and the vCPU threads, until something records an exit reason.
//!
//! [`Vm`] wires devices to KVM (ioeventfds for virtio notifications, irqfds for interrupts, GSI
//! routes for MSI-X) and leaves what runs in the guest to the caller: the Linux boot path in
//! [`crate::boot`], or a tiny test program in the integration tests.

pub mod latch;
pub mod ram;
pub mod routes;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VcpuFd, VmFd};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use self::latch::ExitLatch;
use self::routes::GsiRoutes;
use crate::bus::{Bus, BusOverlapError};
use crate::devices::acpi_pm::AcpiPm;
use crate::devices::i8042::I8042;
use crate::devices::pci::root::{PciConfigIo, PciMmio, PciRoot, PciSlotsFullError};
use crate::devices::serial::SerialDevice;
use crate::devices::virtio::pci::{VirtioPci, VirtioPciError, BAR_SIZE};
use crate::devices::virtio::{GuestMemoryMmap, VirtioDevice};
use crate::exit::Exit;
use crate::layout;

/// What failed while building the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// /dev/kvm could not be opened or a VM created.
    #[error("cannot open /dev/kvm or create a VM: {0}")]
    Kvm(kvm_ioctls::Error),
    /// A KVM VM-level setup call failed.
    #[error("KVM {what} failed: {err}")]
    Setup {
        /// Which call.
        what: &'static str,
        /// The error.
        err: kvm_ioctls::Error,
    },
    /// A region of the guest memory just made has no host address (a bug, never the guest).
    #[error("guest memory of {0} bytes has a region without a host address")]
    Memory(u64),
    /// Guest RAM could not be mapped.
    #[error(transparent)]
    Ram(#[from] ram::RamError),
    /// An eventfd could not be created.
    #[error("cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
    /// Two devices claim the same addresses.
    #[error(transparent)]
    Overlap(#[from] BusOverlapError),
    /// No PCI slot or BAR space left.
    #[error(transparent)]
    PciFull(#[from] PciSlotsFullError),
    /// A virtio transport could not be built.
    #[error(transparent)]
    VirtioPci(#[from] VirtioPciError),
    /// Interrupt routes could not be installed.
    #[error("cannot install interrupt routes: {0}")]
    Routes(std::io::Error),
}

fn setup(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |err| VmError::Setup { what, err }
}

/// A VM being assembled, then run.
pub struct Vm {
    /// The KVM system handle (CPUID queries).
    pub kvm: Kvm,
    /// The VM.
    pub fd: Arc<VmFd>,
    /// Guest RAM.
    pub mem: GuestMemoryMmap,
    /// Port I/O bus.
    pub io_bus: Bus,
    /// MMIO bus.
    pub mmio_bus: Bus,
    /// Set by whoever ends the VM.
    pub exit: Arc<ExitLatch>,
    routes: Arc<GsiRoutes>,
    pci: Arc<Mutex<PciRoot>>,
    next_bar: u64,
    next_gsi: u32,
}

impl Vm {
    /// A VM with `mem_bytes` of RAM, an in-kernel irqchip and PIT, the PCI root, the i8042 and
    /// the ACPI power-management block.
    pub fn new(mem_bytes: u64) -> Result<Vm, VmError> {
        let kvm = Kvm::new().map_err(VmError::Kvm)?;
        let fd = Arc::new(kvm.create_vm().map_err(VmError::Kvm)?);
        fd.set_tss_address(layout::KVM_TSS as usize)
            .map_err(setup("set_tss_address"))?;
        fd.set_identity_map_address(layout::KVM_IDENTITY_MAP)
            .map_err(setup("set_identity_map_address"))?;
        fd.create_irq_chip().map_err(setup("create_irq_chip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(setup("create_pit2"))?;
        let ranges: Vec<_> = layout::ram_ranges(mem_bytes)
            .into_iter()
            .map(|(a, l)| (GuestAddress(a), l as usize))
            .collect();
        let mem = ram::guest_ram(&ranges)?;
        for (slot, region) in mem.iter().enumerate() {
            let host = mem
                .get_host_address(region.start_addr())
                .map_err(|_| VmError::Memory(mem_bytes))?;
            let region = kvm_userspace_memory_region {
                slot: slot as u32,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
                flags: 0,
            };
            // SAFETY: the region is a live mapping owned by `mem`, which the Vm keeps (and the
            // device threads keep clones of) for as long as the VM fd exists.
            unsafe { fd.set_user_memory_region(region) }
                .map_err(setup("set_user_memory_region"))?;
        }
        let routes = Arc::new(GsiRoutes::new(fd.clone()));
        routes.commit().map_err(VmError::Routes)?;
        let pci = Arc::new(Mutex::new(PciRoot::new()));
        let mut vm = Vm {
            kvm,
            fd,
            mem,
            io_bus: Bus::new(),
            mmio_bus: Bus::new(),
            exit: Arc::new(ExitLatch::new()),
            routes,
            pci: pci.clone(),
            next_bar: layout::PCI_BAR_START,
            next_gsi: layout::MSI_GSI_START,
        };
        vm.io_bus.insert(
            Arc::new(Mutex::new(PciConfigIo(pci.clone()))),
            u64::from(layout::PCI_CONFIG_ADDRESS),
            8,
        )?;
        vm.mmio_bus.insert(
            Arc::new(Mutex::new(PciMmio {
                root: pci,
                base: layout::PCI_BAR_START,
            })),
            layout::PCI_BAR_START,
            layout::PCI_BAR_END - layout::PCI_BAR_START,
        )?;
        let exit = vm.exit.clone();
        let pm = AcpiPm::new(Box::new(move || exit.set(Exit::PowerOff)));
        vm.io_bus.insert(
            Arc::new(Mutex::new(pm)),
            u64::from(crate::boot::acpi::PM1A_EVT),
            6,
        )?;
        let exit = vm.exit.clone();
        let i8042 = I8042::new(Box::new(move || {
            tracing::info!("the guest reset the machine (i8042 reset pulse)");
            exit.set(Exit::Reboot)
        }));
        vm.io_bus.insert(
            Arc::new(Mutex::new(i8042)),
            u64::from(layout::I8042_DATA),
            5,
        )?;
        Ok(vm)
    }

    /// Adds COM1 writing to `out`, interrupting on IRQ 4.
    pub fn add_serial(&mut self, out: Box<dyn Write + Send>) -> Result<(), VmError> {
        let irq = EventFd::new(EFD_NONBLOCK).map_err(VmError::EventFd)?;
        self.fd
            .register_irqfd(&irq, layout::SERIAL_IRQ)
            .map_err(setup("register_irqfd"))?;
        let dev = SerialDevice::new(irq, out);
        self.io_bus
            .insert(Arc::new(Mutex::new(dev)), u64::from(layout::SERIAL_PORT), 8)?;
        Ok(())
    }

    /// Puts a virtio device on the PCI bus; returns its slot.
    pub fn add_virtio(&mut self, device: Box<dyn VirtioDevice>) -> Result<usize, VmError> {
        let bar = self.next_bar;
        if bar + u64::from(BAR_SIZE) > layout::PCI_BAR_END {
            return Err(VmError::PciFull(PciSlotsFullError));
        }
        let vectors = device.queue_max_sizes().len() as u32 + 1;
        let transport = VirtioPci::new(
            device,
            self.mem.clone(),
            bar as u32,
            self.next_gsi,
            self.routes.clone(),
        )?;
        for (addr, evt) in transport.notify_eventfds() {
            self.fd
                .register_ioevent(evt, &IoEventAddress::Mmio(addr), NoDatamatch)
                .map_err(setup("register_ioevent"))?;
        }
        for (gsi, evt) in transport.interrupt_eventfds() {
            self.fd
                .register_irqfd(evt, gsi)
                .map_err(setup("register_irqfd"))?;
        }
        let slot = crate::bus::lock(&self.pci).add(Arc::new(Mutex::new(transport)))?;
        self.next_bar += u64::from(BAR_SIZE);
        self.next_gsi += vectors;
        Ok(slot)
    }

    /// Creates vCPU `id`.
    pub fn create_vcpu(&self, id: u64) -> Result<VcpuFd, VmError> {
        self.fd.create_vcpu(id).map_err(setup("create_vcpu"))
    }

    /// Runs `vcpus` (already configured) on a thread each until an exit reason is recorded, then
    /// stops them all and returns the reason.
    pub fn run(&self, vcpus: Vec<VcpuFd>) -> Exit {
        let io = Arc::new(self.io_bus.clone());
        let mmio = Arc::new(self.mmio_bus.clone());
        crate::vcpu::install_kick_handler();
        let mut threads = Vec::new();
        for (i, fd) in vcpus.into_iter().enumerate() {
            let ctx = crate::vcpu::VcpuContext {
                io: io.clone(),
                mmio: mmio.clone(),
                exit: self.exit.clone(),
            };
            match std::thread::Builder::new()
                .name(format!("vcpu{i}"))
                .spawn(move || crate::vcpu::run(fd, ctx))
            {
                Ok(t) => threads.push(t),
                Err(e) => self.exit.fail(format!("cannot start vCPU thread {i}: {e}")),
            }
        }
        let reason = self.exit.wait();
        crate::vcpu::stop_all(threads);
        reason
    }

    /// The raw VM fd (for tests that poke KVM directly).
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}
