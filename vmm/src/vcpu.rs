//! The vCPU loop: run the vCPU, route its port-I/O and MMIO exits to the buses, and turn
//! shutdown, reset and failure exits into an exit reason.
//!
//! Stopping: once a reason is recorded, every vCPU thread is sent a signal (with a no-op handler)
//! until it has left KVM_RUN and seen the latch. Devices are never run on a vCPU thread beyond the
//! register access itself.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::bus::Bus;
use crate::exit::Exit;
use crate::vm::latch::ExitLatch;

/// What a vCPU thread shares with the rest of the VM.
pub struct VcpuContext {
    /// Port bus.
    pub io: Arc<Bus>,
    /// MMIO bus.
    pub mmio: Arc<Bus>,
    /// Where to record why the VM ends.
    pub exit: Arc<ExitLatch>,
}

/// The signal used to kick vCPUs out of KVM_RUN.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the no-op handler so the kick signal interrupts KVM_RUN instead of killing us.
pub fn install_kick_handler() {
    // Registering the same handler twice is harmless; failure leaves the default action, which
    // only matters if we later kick, and then the process is ending anyway.
    let _ = register_signal_handler(kick_signal(), kick_handler);
}

/// What one exit means for the loop.
#[derive(Debug, PartialEq, Eq)]
pub enum ExitAction {
    /// Keep running.
    Continue,
    /// End the VM.
    Stop(Exit),
    /// The guest faulted while delivering a double fault: the machine resets, as a PC does. The
    /// loop logs where the vCPU was, because a guest seldom resets this way on purpose.
    TripleFault,
    /// End the VM with a failure saying what went wrong.
    Fail(String),
}

/// Handles one exit.
pub fn handle_exit(exit: VcpuExit<'_>, ctx: &VcpuContext) -> ExitAction {
    match exit {
        VcpuExit::IoIn(port, data) => {
            ctx.io.read(u64::from(port), data);
        }
        VcpuExit::IoOut(port, data) => {
            ctx.io.write(u64::from(port), data);
        }
        VcpuExit::MmioRead(addr, data) => {
            ctx.mmio.read(addr, data);
        }
        VcpuExit::MmioWrite(addr, data) => {
            ctx.mmio.write(addr, data);
        }
        VcpuExit::Shutdown => return ExitAction::TripleFault,
        VcpuExit::SystemEvent(kind, _) => {
            return ExitAction::Stop(match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => Exit::PowerOff,
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => Exit::Reboot,
                _ => Exit::Error,
            });
        }
        VcpuExit::Hlt => return ExitAction::Stop(Exit::PowerOff),
        VcpuExit::FailEntry(reason, cpu) => {
            return ExitAction::Fail(format!(
                "vCPU {cpu} failed to enter the guest (reason {reason:#x})"
            ));
        }
        VcpuExit::InternalError => return ExitAction::Fail("KVM internal error".into()),
        VcpuExit::IrqWindowOpen | VcpuExit::Intr => {}
        other => return ExitAction::Fail(format!("unexpected vCPU exit {other:?}")),
    }
    ExitAction::Continue
}

/// The vCPU thread body.
pub fn run(mut fd: VcpuFd, ctx: VcpuContext) {
    while ctx.exit.get().is_none() {
        match fd.run() {
            Ok(exit) => match handle_exit(exit, &ctx) {
                ExitAction::Continue => {}
                ExitAction::Stop(reason) => ctx.exit.set(reason),
                ExitAction::TripleFault => {
                    tracing::warn!("guest triple fault, resetting it: {}", where_it_was(&fd));
                    ctx.exit.set(Exit::Reboot)
                }
                ExitAction::Fail(message) => ctx.exit.fail(message),
            },
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => ctx.exit.fail(format!("KVM_RUN failed: {e}")),
        }
    }
}

/// The vCPU's instruction and stack pointers and control registers, for a log line.
fn where_it_was(fd: &VcpuFd) -> String {
    let regs = fd
        .get_regs()
        .map(|r| format!("rip={:#x} rsp={:#x} rflags={:#x}", r.rip, r.rsp, r.rflags));
    let sregs = fd.get_sregs().map(|s| {
        format!(
            "cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} cs={:#x} idt={:#x}/{:#x}",
            s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.cs.selector, s.idt.base, s.idt.limit
        )
    });
    match (regs, sregs) {
        (Ok(r), Ok(s)) => format!("{r} {s}"),
        (r, s) => format!("registers unreadable ({:?}, {:?})", r.err(), s.err()),
    }
}

/// Kicks every thread until it has finished, then joins it.
pub fn stop_all(threads: Vec<JoinHandle<()>>) {
    for t in threads {
        while !t.is_finished() {
            let _ = t.kill(kick_signal());
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = t.join();
    }
}
