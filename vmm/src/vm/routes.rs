//! The VM's GSI routing table: the default PIC/IOAPIC routes for the legacy pins plus one MSI
//! route per virtio MSI-X vector, pushed to KVM as a whole whenever a route changes.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;

use crate::bus::lock;
use crate::devices::virtio::pci::msix::MsiRouter;
use crate::layout::IOAPIC_PINS;

/// The routing table, kept in step with KVM.
pub struct GsiRoutes {
    vm: Arc<VmFd>,
    msi: Mutex<BTreeMap<u32, (u64, u32)>>,
}

fn irqchip(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    e.u.irqchip.irqchip = chip;
    e.u.irqchip.pin = pin;
    e
}

fn msi(gsi: u32, addr: u64, data: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    e.u.msi.address_lo = addr as u32;
    e.u.msi.address_hi = (addr >> 32) as u32;
    e.u.msi.data = data;
    e
}

impl GsiRoutes {
    /// A table with the default legacy routes (KVM's own defaults, restated).
    pub fn new(vm: Arc<VmFd>) -> GsiRoutes {
        GsiRoutes {
            vm,
            msi: Mutex::new(BTreeMap::new()),
        }
    }

    /// Pushes the whole table to KVM.
    pub fn commit(&self) -> io::Result<()> {
        let mut entries = Vec::new();
        for pin in 0..IOAPIC_PINS {
            if pin < 16 {
                let chip = if pin < 8 {
                    KVM_IRQCHIP_PIC_MASTER
                } else {
                    KVM_IRQCHIP_PIC_SLAVE
                };
                entries.push(irqchip(pin, chip, pin % 8));
            }
            entries.push(irqchip(pin, KVM_IRQCHIP_IOAPIC, pin));
        }
        for (gsi, (addr, data)) in lock(&self.msi).iter() {
            entries.push(msi(*gsi, *addr, *data));
        }
        let routing = KvmIrqRouting::from_entries(&entries)
            .map_err(|e| io::Error::other(format!("routing table: {e:?}")))?;
        self.vm
            .set_gsi_routing(&routing)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }
}

impl MsiRouter for GsiRoutes {
    fn set_msi_route(&self, gsi: u32, addr: u64, data: u32) -> io::Result<()> {
        lock(&self.msi).insert(gsi, (addr, data));
        self.commit()
    }
}
