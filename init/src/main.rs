//! The `mallee-init` binary: PID 1, all of it in the library ([`mallee_init::main`]).

fn main() {
    mallee_init::main()
}
