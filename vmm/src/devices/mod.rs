//! The emulated devices: legacy PC pieces on the port bus and virtio devices behind PCI.
//!
//! Each device lives in its own module and knows nothing of KVM; the VM wires their interrupts
//! (eventfds registered as irqfds) and their notifications (ioeventfds).

pub mod acpi_pm;
pub mod i8042;
pub mod pci;
pub mod serial;
pub mod virtio;
