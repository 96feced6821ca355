//! `mallee-vmm`: a minimal KVM virtual machine monitor, one process per instance.
//!
//! The library owns everything the binary wires together: configuration ([`config`]), the guest
//! address map ([`layout`]), the Linux boot path ([`boot`]), the KVM VM and its vCPU threads
//! ([`vm`], [`vcpu`]), the port-I/O and MMIO buses ([`bus`]), the devices ([`devices`]) and the
//! control socket ([`api`]). It deliberately does not own instance lifecycle policy: the node
//! agent decides what to do when a VMM exits.

pub mod api;
pub mod boot;
pub mod bus;
pub mod config;
pub mod devices;
pub mod exit;
pub mod instance;
pub mod layout;
pub mod vcpu;
pub mod vm;
