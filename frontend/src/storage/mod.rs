//! The storage controller: serves the cloud's EBS volumes over AoE, beside the API rooms. The
//! daemon (unprivileged; its side is [`keeper`]) hands over the volumes to export as
//! [`mallee_proto::storage::Exports`] with [`write_exports`] and reads the answer with
//! [`read_applied`]; the controller process
//! (`mallee-frontend storage`, root: AoE needs an AF_PACKET socket) watches that file with
//! [`Controller`], starts and stops `mallee-aoe` targets to match ([`controller::reconcile`],
//! planned by the pure [`plan`]) and answers with [`mallee_proto::storage::Applied`].
//!
//! It does not decide which volume is exported to which node (the core does), and it keeps no
//! state of its own: a restarted controller serves again whatever the exports file says.

pub mod controller;
pub mod dirty;
mod files;
pub mod keeper;
pub mod plan;
pub mod snapshots;
mod watch;

pub use controller::{reconcile, ExportError, Outcome, Running};
pub use files::{read_applied, write_exports};
pub use watch::{run, Controller, POLL, RETRY};

use std::path::{Path, PathBuf};

/// Reading or writing the storage directory failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Handoff(#[from] mallee_proto::handoff::HandoffError),
    #[error("{path} does not parse: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_owned(),
        source,
    }
}
