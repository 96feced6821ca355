//! The cloud core: the domain model and its state transitions, with no HTTP in it. It owns the
//! records (`model`: images, key pairs, groups, instances, addresses, volumes, snapshots), the
//! compute nodes with their capacity and usage (`nodes`, usage derived in one place) and who
//! may be one (`admission`: pending, approved, admitted, rejected), how node
//! reports move instances through their states (`reconcile`), the lifecycle transitions users
//! ask for and what a terminated instance lets go of (`instances`), the attributes users change
//! after launch (`instance_attributes`), images made from instances and the state images show (`images`), the tags on resources (`tags`), writing launched
//! instances (`launch`), public addresses from the pool (`public`), the change signal nodes wait on (`changes`), who may use a bucket (`access`) and
//! volume attachments and the exports they need (`volumes`), and the cloud's configuration. Its functions take the store (or a transaction) and plain values.
//!
//! Imports point one way: the API rooms (`ec2/` Query API, `nodes/` node protocol, `walrus/`)
//! call into this core, and the core calls the store (and the pure `scheduler`); nothing here
//! imports an API room. Networks (the cluster controller: VLANs, gateway/NAT, elastic IPs,
//! group rules) and volume exports (the storage controller: AoE targets) are to be new rooms
//! beside `ec2/`, reconcilers driven from this core's state, not parts of it.

pub mod access;
pub mod admission;
pub mod changes;
pub mod config;
pub mod images;
pub mod instance_attributes;
pub mod instances;
pub mod launch;
pub mod model;
pub mod networks;
pub mod nodes;
pub mod public;
pub mod reconcile;
pub mod tags;
pub mod volumes;

pub use changes::Changes;
pub use config::{Ec2Config, NetMode, NetworkConfig, StorageConfig};
