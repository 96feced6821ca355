//! `mallee-frontend`: the cloud controller daemon. Layers, imports pointing down only:
//! API rooms (`ec2/` EC2 Query API, `identity` STS/IAM caller identity on the same endpoint,
//! `walrus/` S3, `nodes/` the node protocol's HTTP side, `pxe/` node boot) → `cloud/` (the core: domain model, state transitions, node capacity and
//! reconciliation) → `store/` (SQLite state and object files). Beside them: `http` (plumbing the
//! API rooms share), `auth` (SigV4, one entry point), `scheduler` (pure placement), `config`
//! (TOML), `server` (the listener), `tls` (the listener's CA, certificate and renewal), `audit`
//! (which calls the audit log records, and writing an entry), `admin` (CLI), `privilege`
//! (dropping root), `appliance` (the flashable appliance's A/B slots and staged upgrades).

pub mod admin;
pub mod appliance;
pub mod audit;
pub mod auth;
pub mod cloud;
pub mod config;
pub mod console;
pub mod ec2;
pub mod gateway;
pub mod handover;
pub mod http;
pub mod identity;
pub mod nodes;
pub mod privilege;
pub mod pxe;
pub mod scheduler;
pub mod server;
pub mod storage;
pub mod store;
pub mod tls;
pub mod walrus;
