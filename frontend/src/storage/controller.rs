//! The served exports and the one function that changes them, [`reconcile`]: it carries out a
//! [`plan`](super::plan) with `mallee-aoe` targets — one per volume, each on its own AF_PACKET
//! socket, probing the segment before it claims its shelf/slot — and says what came of each
//! wanted export. A failure is that export's alone, recorded in its
//! [`ExportState`](mallee_proto::storage::ExportState).
//!
//! Stopping a target joins its threads: a write already taken by a pool thread finishes (and,
//! since the target acknowledges a write only once it is durable, is on stable storage), frames
//! still queued are dropped unanswered (the initiator retries elsewhere or times out). The
//! backing file is synced once more after that, and the chunks the export wrote are added to
//! the volume's [`dirty`](super::dirty) record. A new MAC list is swapped into the running
//! target's access control; no restart.

use super::dirty::{self, DirtyRecord};
use super::plan::{plan, Refusal};
use super::snapshots::CHUNK;
use super::StorageError;
use mallee_aoe::net::{NetError, PacketSocket};
use mallee_aoe::target::{AccessControl, Backend, BackendError, Target, TargetConfig, TargetError};
use mallee_proto::handoff::NO_FOLLOW;
use mallee_proto::storage::{Applied, ExportState, Exports, VolumeExport};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{info, warn};

/// Why one export could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("backing file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("backing file {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("backing file {path} belongs to uid {uid}; only files of uid {owner}, who wrote the exports, are exported")]
    ForeignOwner { path: PathBuf, uid: u32, owner: u32 },
    #[error("backing file {path}: {source}")]
    Backend { path: PathBuf, source: BackendError },
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("recording which chunks the export writes: {0}; free space in the data directory")]
    Record(StorageError),
}

impl ExportError {
    /// Whether trying again later may succeed (everything but a backing file that is not the
    /// writer's own regular file, which only a new exports file changes).
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            ExportError::NotAFile { .. } | ExportError::ForeignOwner { .. }
        )
    }
}

/// One volume being served.
#[derive(Debug)]
struct Served {
    spec: VolumeExport,
    target: Target,
    /// The backing file as checked (the target has its own descriptor of the same file).
    file: File,
    /// Where the volume's dirty record is kept, and the record as the export started.
    record: Option<(PathBuf, DirtyRecord)>,
}

impl Served {
    /// Stops the target (see the module documentation), syncs the file and closes the dirty
    /// record with the chunks the export wrote.
    fn stop(self) {
        let Served {
            spec,
            target,
            file,
            record,
        } = self;
        let export = target.stop();
        let synced = file.sync_all();
        if let Err(e) = &synced {
            warn!(volume = %spec.volume_id, "syncing {} after stopping: {e}", spec.path.display());
        }
        if let (Some((dir, mut record)), Some(map)) = (record, export.backend.dirty()) {
            record.add(&map.chunks());
            record.open = false;
            // Writes the sync could not vouch for are on no record the snapshot may trust.
            record.lost |= synced.is_err();
            if let Err(e) = dirty::write(&dir, &spec.volume_id, &record) {
                warn!(volume = %spec.volume_id, "closing the dirty record (it stays open: the next snapshot reads the whole volume): {e}");
            }
        }
        info!(volume = %spec.volume_id, shelf = spec.shelf, slot = spec.slot, "export stopped");
    }
}

/// The exports this process serves, by volume id, and the interface they are on.
#[derive(Debug)]
pub struct Running {
    interface: String,
    served: BTreeMap<String, Served>,
    probe_timeout: Duration,
    /// Where dirty records are kept (the storage directory); `None`: no records.
    records: Option<PathBuf>,
}

impl Default for Running {
    fn default() -> Self {
        Running {
            interface: String::new(),
            served: BTreeMap::new(),
            probe_timeout: TargetConfig::default().probe_timeout,
            records: None,
        }
    }
}

/// What one [`reconcile`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub applied: Applied,
    /// Some export failed in a way that may pass (the address is answered by another target,
    /// the file is missing, …): reconcile again after a while.
    pub retry: bool,
}

impl Running {
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a new target listens for another one answering its address.
    pub fn with_probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// Keeps each export's dirty record in `dir`.
    pub fn with_records(mut self, dir: &Path) -> Self {
        self.records = Some(dir.to_owned());
        self
    }

    /// The exports served now.
    pub fn served(&self) -> impl Iterator<Item = &VolumeExport> {
        self.served.values().map(|s| &s.spec)
    }

    /// Stops every target.
    pub fn stop_all(&mut self) {
        for (_, served) in std::mem::take(&mut self.served) {
            served.stop();
        }
    }
}

/// Takes `running` to `desired`: stops what is no longer wanted, gives changed MAC lists to
/// their targets, starts what is missing (in parallel: each start probes the segment). Only
/// regular files owned by `owner` (the uid that wrote the exports file) are exported, so the
/// writer cannot have root export a file it could not open itself.
pub fn reconcile(running: &mut Running, desired: &Exports, owner: u32) -> Outcome {
    let specs: BTreeMap<String, VolumeExport> = (running.served.iter())
        .map(|(id, s)| (id.clone(), s.spec.clone()))
        .collect();
    let plan = plan(&running.interface, &specs, desired);
    for id in &plan.stop {
        if let Some(served) = running.served.remove(id) {
            served.stop();
        }
    }
    for (id, allowed) in plan.relist {
        if let Some(served) = running.served.get_mut(&id) {
            let acl = &served.target.export().acl;
            acl.lock().unwrap_or_else(|p| p.into_inner()).mask = allowed.clone();
            info!(volume = %id, ?allowed, "export answers a new MAC list");
            served.spec.allowed = allowed;
        }
    }
    running.interface = desired.interface.clone();
    let (interface, probe) = (running.interface.as_str(), running.probe_timeout);
    let records = running.records.as_deref();
    let started: Vec<(VolumeExport, Result<Served, ExportError>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (plan.start.into_iter())
            .map(|spec| {
                s.spawn(move || {
                    let served = start(interface, &spec, owner, probe, records);
                    (spec.clone(), served)
                })
            })
            .collect();
        (handles.into_iter())
            .filter_map(|h| h.join().ok())
            .collect()
    });
    let mut failed: HashMap<String, ExportError> = HashMap::new();
    for (spec, result) in started {
        match result {
            Ok(served) => {
                info!(volume = %spec.volume_id, shelf = spec.shelf, slot = spec.slot,
                    interface, "export serving");
                running.served.insert(spec.volume_id.clone(), served);
            }
            Err(e) => {
                warn!(volume = %spec.volume_id, "export not served: {e}");
                failed.insert(spec.volume_id, e);
            }
        }
    }
    let refused: HashMap<usize, Refusal> = plan.refused.into_iter().collect();
    let exports = (desired.exports.iter().enumerate())
        .map(|(i, e)| {
            let error = match (refused.get(&i), failed.get(&e.volume_id)) {
                (Some(why), _) => Some(why.to_string()),
                (None, Some(e)) => Some(e.to_string()),
                (None, None) if running.served.contains_key(&e.volume_id) => None,
                // A start thread that panicked left no result.
                (None, None) => Some("the export's start failed".to_owned()),
            };
            ExportState {
                volume_id: e.volume_id.clone(),
                shelf: e.shelf,
                slot: e.slot,
                error,
            }
        })
        .collect();
    Outcome {
        retry: failed.values().any(ExportError::is_transient),
        applied: Applied {
            generation: desired.generation,
            exports,
            error: None,
        },
    }
}

/// Opens the backing file (no symlink at its end, no FIFO), checks it is `owner`'s regular
/// file and serves it at the export's address on `interface`, with its dirty record in
/// `records` marked open first.
fn start(
    interface: &str,
    spec: &VolumeExport,
    owner: u32,
    probe_timeout: Duration,
    records: Option<&Path>,
) -> Result<Served, ExportError> {
    let path = &spec.path;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(NO_FOLLOW)
        .open(path)
        .map_err(|source| ExportError::Open {
            path: path.clone(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| ExportError::Open {
        path: path.clone(),
        source,
    })?;
    if !meta.is_file() {
        return Err(ExportError::NotAFile { path: path.clone() });
    }
    if meta.uid() != owner {
        return Err(ExportError::ForeignOwner {
            path: path.clone(),
            uid: meta.uid(),
            owner,
        });
    }
    // The target opens the very file checked, through our descriptor, not the path again
    // (which its owner could have swapped for a symlink meanwhile).
    let reopen = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let mut backend = Backend::open(Path::new(&reopen)).map_err(|source| ExportError::Backend {
        path: path.clone(),
        source,
    })?;
    let socket = PacketSocket::open(interface)?;
    let record = match records {
        Some(dir) => {
            let record = open_record(dir, &spec.volume_id)?;
            backend = backend.with_dirty_map(record.chunk_bytes);
            Some((dir.to_owned(), record))
        }
        None => None,
    };
    let cfg = TargetConfig {
        shelf: spec.shelf,
        slot: spec.slot,
        probe_timeout,
        acl: AccessControl {
            mask: spec.allowed.clone(),
            reserve: Vec::new(),
            remote_edit: false,
        },
        ..TargetConfig::default()
    };
    let target = Target::start(socket, backend, cfg).inspect_err(|_| {
        // Nothing was served: the record is as closed as it was.
        if let Some((dir, record)) = &record {
            let closed = DirtyRecord {
                open: false,
                ..record.clone()
            };
            let _ = dirty::write(dir, &spec.volume_id, &closed);
        }
    })?;
    Ok(Served {
        spec: spec.clone(),
        target,
        file,
        record,
    })
}

/// Marks the dirty record of `volume_id` open before its export writes anything: one still
/// open (its export never stopped), unreadable or in other chunks is lost from now on.
fn open_record(dir: &Path, volume_id: &str) -> Result<DirtyRecord, ExportError> {
    let mut record = match dirty::read(dir, volume_id) {
        Ok(Some(r)) => r,
        Ok(None) => DirtyRecord::new(CHUNK as u64),
        Err(e) => {
            warn!(volume = %volume_id, "the dirty record does not read, it is lost: {e}");
            DirtyRecord {
                lost: true,
                ..DirtyRecord::new(CHUNK as u64)
            }
        }
    };
    if record.open || record.chunk_bytes != CHUNK as u64 {
        record = DirtyRecord {
            lost: true,
            ..DirtyRecord::new(CHUNK as u64)
        };
    }
    record.open = true;
    dirty::write(dir, volume_id, &record).map_err(ExportError::Record)?;
    Ok(record)
}
