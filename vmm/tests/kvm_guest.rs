//! Tiny hand-assembled guest programs on the host's `/dev/kvm`, run through the real VM, buses
//! and devices: port I/O to the serial device, PCI configuration reads through 0xCF8/0xCFC, MMIO
//! exits into a virtio-pci BAR and the i8042 reset that ends the VM.
//!
//! The host's KVM runs small real- and protected-mode programs but not Linux; the Linux boot is
//! tested in a nested QEMU guest.

use kvm_bindings::kvm_segment;
use kvm_ioctls::VcpuFd;
use mallee_vmm::devices::serial::SharedBuffer;
use mallee_vmm::devices::virtio::block::backend::MemBackend;
use mallee_vmm::devices::virtio::block::Block;
use mallee_vmm::exit::Exit;
use mallee_vmm::vm::Vm;
use vm_memory::{Bytes, GuestAddress};

const LOAD: u64 = 0x1000;

fn require_kvm() {
    assert!(
        std::path::Path::new("/dev/kvm").exists(),
        "/dev/kvm is missing: these tests need KVM (run `just setup` on a KVM-capable host)"
    );
}

enum Mode {
    Real,
    Protected,
}

fn setup_vcpu(vcpu: &VcpuFd, mode: Mode) {
    let mut sregs = vcpu.get_sregs().unwrap();
    match mode {
        Mode::Real => {
            sregs.cs.base = 0;
            sregs.cs.selector = 0;
        }
        Mode::Protected => {
            let code = kvm_segment {
                base: 0,
                limit: 0xffff_ffff,
                selector: 0x8,
                type_: 0xb,
                present: 1,
                dpl: 0,
                db: 1,
                s: 1,
                l: 0,
                g: 1,
                avl: 0,
                unusable: 0,
                padding: 0,
            };
            let data = kvm_segment {
                selector: 0x10,
                type_: 0x3,
                ..code
            };
            sregs.cs = code;
            sregs.ds = data;
            sregs.es = data;
            sregs.ss = data;
            sregs.fs = data;
            sregs.gs = data;
            sregs.cr0 |= 1;
        }
    }
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = LOAD;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();
}

/// Runs `code` at 0x1000 on one vCPU with a serial device and one 42-sector virtio disk.
fn run_program(code: &[u8], mode: Mode) -> (Exit, Vec<u8>) {
    require_kvm();
    let mut vm = Vm::new(16 << 20).expect("create a VM on /dev/kvm");
    let console = SharedBuffer::default();
    vm.add_serial(Box::new(console.clone())).unwrap();
    let disk = MemBackend::new(vec![0; 42 * 512]);
    let slot = vm
        .add_virtio(Box::new(Block::new(Box::new(disk), false, None)))
        .unwrap();
    assert_eq!(slot, 1, "first device after the host bridge");
    vm.mem.write_slice(code, GuestAddress(LOAD)).unwrap();
    let vcpu = vm.create_vcpu(0).unwrap();
    setup_vcpu(&vcpu, mode);
    let reason = vm.run(vec![vcpu]);
    (reason, console.contents())
}

#[test]
fn real_mode_port_io_reaches_serial_and_pci_config() {
    #[rustfmt::skip]
    let code = [
        0xba, 0xf8, 0x03,                   // mov dx, 0x3f8
        0xb0, b'O', 0xee,                   // mov al, 'O'; out dx, al
        0xb0, b'K', 0xee,                   // mov al, 'K'; out dx, al
        0x66, 0xb8, 0x00, 0x00, 0x00, 0x80, // mov eax, 0x80000000 (bus 0 slot 0 reg 0)
        0xba, 0xf8, 0x0c, 0x66, 0xef,       // mov dx, 0xcf8; out dx, eax
        0xba, 0xfc, 0x0c, 0x66, 0xed,       // mov dx, 0xcfc; in eax, dx
        0xba, 0xf8, 0x03, 0xee,             // mov dx, 0x3f8; out dx, al
        0x66, 0xc1, 0xe8, 0x08, 0xee,       // shr eax, 8; out dx, al
        0x66, 0xc1, 0xe8, 0x08, 0xee,
        0x66, 0xc1, 0xe8, 0x08, 0xee,
        0x66, 0xb8, 0x00, 0x08, 0x00, 0x80, // mov eax, 0x80000800 (slot 1)
        0xba, 0xf8, 0x0c, 0x66, 0xef,
        0xba, 0xfc, 0x0c, 0x66, 0xed,
        0xba, 0xf8, 0x03, 0xee,
        0x66, 0xc1, 0xe8, 0x08, 0xee,
        0x66, 0xc1, 0xe8, 0x08, 0xee,
        0x66, 0xc1, 0xe8, 0x08, 0xee,
        0xb0, 0xfe, 0xe6, 0x64,             // mov al, 0xfe; out 0x64, al (i8042 reset)
        0xf4,                               // hlt (not reached)
    ];
    let (reason, out) = run_program(&code, Mode::Real);
    assert_eq!(reason, Exit::Reboot);
    assert_eq!(&out[..2], b"OK");
    // Host bridge 8086:0d57, then virtio-blk 1af4:1042 (modern virtio, device type 2).
    assert_eq!(&out[2..6], &[0x86, 0x80, 0x57, 0x0d]);
    assert_eq!(&out[6..10], &[0xf4, 0x1a, 0x42, 0x10]);
}

#[test]
fn protected_mode_mmio_reaches_the_virtio_bar() {
    #[rustfmt::skip]
    let code = [
        0xb8, 0x04, 0x08, 0x00, 0x80,       // mov eax, 0x80000804 (slot 1 command)
        0x66, 0xba, 0xf8, 0x0c, 0xef,       // mov dx, 0xcf8; out dx, eax
        0x66, 0xba, 0xfc, 0x0c,             // mov dx, 0xcfc
        0x66, 0xb8, 0x06, 0x00, 0x66, 0xef, // mov ax, 6 (memory + master); out dx, ax
        0xa1, 0x00, 0x20, 0x00, 0xd0,       // mov eax, [0xd0002000] (blk capacity)
        0x66, 0xba, 0xf8, 0x03, 0xee,       // mov dx, 0x3f8; out dx, al
        0xc1, 0xe8, 0x08, 0xee,             // shr eax, 8; out dx, al
        0xbb, 0x10, 0x40, 0x00, 0xd0,       // mov ebx, 0xd0004010 (MSI-X entry 1)
        0xc7, 0x03, 0x78, 0x56, 0x34, 0x12, // mov dword [ebx], 0x12345678
        0x8b, 0x03, 0xee,                   // mov eax, [ebx]; out dx, al
        0xa1, 0x00, 0x00, 0xff, 0xcf,       // mov eax, [0xcfff0000] (nobody there)
        0xee,                               // out dx, al
        0xb0, 0xfe, 0xe6, 0x64,             // i8042 reset
        0xf4,
    ];
    let (reason, out) = run_program(&code, Mode::Protected);
    assert_eq!(reason, Exit::Reboot);
    assert_eq!(out, vec![42, 0, 0x78, 0xff]);
}

#[test]
fn ports_nobody_owns_read_as_all_ones() {
    #[rustfmt::skip]
    let code = [
        0xba, 0xf8, 0x02, 0xec,             // mov dx, 0x2f8 (no COM2); in al, dx
        0xba, 0xf8, 0x03, 0xee,             // mov dx, 0x3f8; out dx, al
        0xe4, 0x64, 0xee,                   // in al, 0x64 (i8042 status: empty); out dx, al
        0xb0, 0xfe, 0xe6, 0x64,             // i8042 reset
        0xf4,
    ];
    let (reason, out) = run_program(&code, Mode::Real);
    assert_eq!(reason, Exit::Reboot);
    assert_eq!(out, vec![0xff, 0x00]);
}
