//! `mallee-frontend`: cloud controller, Walrus, scheduler and PXE service (not yet implemented).

fn main() -> std::process::ExitCode {
    eprintln!("mallee-frontend: not implemented yet (see the frontend issues)");
    std::process::ExitCode::FAILURE
}
