//! `mallee-frontend`: the cloud controller daemon. Modules: `config` (TOML), `store` (SQLite
//! state and object files), `auth` (SigV4, shared by every API), `walrus` (S3), `admin` (CLI).
//! The EC2 API, scheduler and PXE service join as their own modules.

pub mod auth;
pub mod config;
