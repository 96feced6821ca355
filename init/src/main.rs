//! `mallee-init`: PID 1 of the Mallee appliances (being written).

fn main() -> std::process::ExitCode {
    eprintln!("mallee-init: not implemented yet");
    std::process::ExitCode::FAILURE
}
