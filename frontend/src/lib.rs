//! The `mallee-frontend` library: the services the frontend daemon runs.

pub mod pxe;
