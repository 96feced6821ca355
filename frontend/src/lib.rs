//! `mallee-frontend`: the cloud controller daemon. Modules: `config` (TOML), `store` (SQLite
//! state and object files), `auth` (SigV4, shared by every API), `walrus` (S3), `server`
//! (HTTP), `admin` (CLI), `privilege` (dropping root). The EC2 API, the scheduler and the PXE
//! service join as modules of their own (`ec2/`, `scheduler/`, `pxe/`); `nodes` is the node
//! protocol's HTTP side.

pub mod admin;
pub mod auth;
pub mod config;
pub mod ec2;
pub mod http;
pub mod nodes;
pub mod privilege;
pub mod pxe;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod walrus;
