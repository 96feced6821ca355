//! `mallee-frontend` binary entry.
fn main() {}
