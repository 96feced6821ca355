//! `mallee-vmm`: the per-instance KVM VMM (not yet implemented).

fn main() -> std::process::ExitCode {
    eprintln!("mallee-vmm: not implemented yet (see the mallee-vmm issue)");
    std::process::ExitCode::FAILURE
}
