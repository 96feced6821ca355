//! `mallee-image-build` (being written).

fn main() {}
