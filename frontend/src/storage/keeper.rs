//! The daemon's side of the storage controller. It makes the backing file of each `creating`
//! volume (sparse, its full size, or restored from its snapshot) and marks it `available`,
//! removes the backing files of volumes that no longer exist, hands the controller the exports
//! the cloud's state asks for ([`exports`]) whenever they change, and
//! takes snapshots: a `pending` snapshot's volume is withheld from the exports until the
//! controller says it no longer serves it (a node's writes stall and are retransmitted), copied
//! as it is at that instant (only the chunks its [`dirty`](super::dirty) record names when the
//! record is whole and the volume's last snapshot completed), exported again, and the copy cut
//! into chunks in Walrus ([`super::snapshots`]) on a thread of its own. A snapshot CreateImage holds is left alone
//! until its instance is stopped; each pass moves those holds ([`crate::cloud::images::advance`])
//! before and after the copies, and wakes the nodes when that starts an instance again.

use super::{dirty, read_applied, snapshots, write_exports};
use crate::cloud::images;
use crate::cloud::model::{Instance, INSTANCE};
use crate::cloud::model::{Snapshot, Volume, SNAPSHOT, VOLUME};
use crate::cloud::nodes::{Admission, Node, NODE};
use crate::cloud::volumes::{backing_files, backing_path};
use crate::cloud::Changes;
use crate::store::{CloudTx, Store, StoreError};
use mallee_proto::storage::Exports;
use mallee_proto::storage::VolumeExport;
use mallee_proto::Mac;
use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Where volumes live and are handed over.
#[derive(Debug, Clone)]
pub struct StorageSite {
    /// The storage directory the controller watches (`<data_dir>/storage`).
    pub dir: PathBuf,
    /// Where backing files live (`<data_dir>/volumes`).
    pub volumes: PathBuf,
    /// The NIC the exports are served on.
    pub interface: String,
}

/// The backing files' directory under the daemon's `data_dir`.
pub const VOLUMES_DIR: &str = "volumes";

/// How often the keeper looks again without a change (a backing file it could not make, a
/// snapshot whose volume the controller still serves).
pub const RETRY: Duration = Duration::from_secs(5);

/// How long one pass waits for the controller to stop serving a volume being snapshotted.
const WITHHOLD_WAIT: Duration = Duration::from_secs(10);

/// What was handed over last: the exports (generation 0) and the generation they were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handed {
    exports: Exports,
    generation: u64,
}

/// The exports the storage controller must serve: every attached volume (detaching ones too,
/// until their node has flushed and let go) at its shelf/slot, answering only the MACs of the
/// node its instance runs on. A volume whose instance has no node yet is not exported.
fn exports(tx: &CloudTx<'_>, dir: &Path) -> Result<Vec<VolumeExport>, StoreError> {
    let mut out = Vec::new();
    for v in tx.list::<Volume>(VOLUME, None)? {
        let Some(a) = &v.attachment else { continue };
        if v.state == "creating" {
            continue; // still being restored: nobody may read it yet
        }
        let Some(i) = tx.get::<Instance>(INSTANCE, &a.instance_id)? else {
            continue;
        };
        let node: Option<Node> = tx.get(NODE, &i.node)?;
        // A node rejected since is answered no more.
        let node = node.filter(|n| n.admission == Admission::Admitted);
        let allowed: Vec<Mac> = node.and_then(|n| n.info).map_or(Vec::new(), |n| n.macs);
        if allowed.is_empty() {
            continue;
        }
        out.push(VolumeExport {
            volume_id: v.id.clone(),
            path: backing_path(dir, &v.id),
            shelf: a.shelf,
            slot: a.slot,
            allowed,
        });
    }
    out.sort_by(|a, b| a.volume_id.cmp(&b.volume_id));
    Ok(out)
}

/// Snapshots whose chunks are being stored now (one thread each, one at a time).
static CHUNKING: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
/// Held while chunks are stored or freed: a chunk found present stays until its snapshot is
/// written.
static SNAPSHOT_WORK: Mutex<()> = Mutex::new(());
/// Held while an incremental snapshot's manifest is made from its base's, and while chunks are
/// freed: a base's chunks are either named by the new manifest or the base is gone whole.
static MANIFESTS: Mutex<()> = Mutex::new(());

fn copy_path(dir: &Path, snapshot_id: &str) -> PathBuf {
    dir.join(format!("{snapshot_id}.copy"))
}

/// Makes the backing file of `v` unless it exists: sparse, `size_gib` long, or the snapshot it
/// is made from.
fn make_backing(store: &Store, dir: &Path, v: &Volume) -> Result<(), String> {
    let path = backing_path(dir, &v.id);
    let len = v.size_gib << 30;
    if let Some(snap) = &v.snapshot_id {
        let _work = SNAPSHOT_WORK.lock().unwrap_or_else(|e| e.into_inner());
        return snapshots::restore(store, snap, &path, len).map_err(|e| e.to_string());
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| e.to_string())?;
    if file.metadata().map_err(|e| e.to_string())?.len() != len {
        file.set_len(len).map_err(|e| e.to_string())?;
    }
    file.sync_all().map_err(|e| e.to_string())
}

/// Copies chunks `indices` (lowest first) of `src` into a new sparse `dest` of the same length.
fn copy_chunks(src: &Path, dest: &Path, indices: &[u64]) -> std::io::Result<()> {
    let from = std::fs::File::open(src)?;
    let len = from.metadata()?.len();
    let to = std::fs::File::create(dest)?;
    to.set_len(len)?;
    let mut buf = vec![0u8; snapshots::CHUNK];
    for &index in indices {
        let at = index * snapshots::CHUNK as u64;
        if at >= len {
            break;
        }
        let n = (len - at).min(snapshots::CHUNK as u64) as usize;
        from.read_exact_at(&mut buf[..n], at)?;
        to.write_all_at(&buf[..n], at)?;
    }
    to.sync_all()
}

/// How a snapshot's copy was made.
#[derive(Debug, PartialEq, Eq)]
pub enum Copied {
    /// Every chunk with data.
    Whole,
    /// Only the chunks written since `base`.
    Since { base: String, chunks: usize },
}

/// The chunks written to `v` since its dirty base, when that base is a completed snapshot and
/// the dirty record names every write.
fn written_since_base(store: &Store, site: &StorageSite, v: &Volume) -> Option<(String, Vec<u64>)> {
    let base = v.dirty_base.clone()?;
    let snap: Snapshot = store.cloud(|tx| tx.get(SNAPSHOT, &base)).ok()??;
    if snap.state != "completed" {
        return None;
    }
    match dirty::read(&site.dir, &v.id) {
        Ok(None) => Some((base, Vec::new())), // nothing written since
        Ok(Some(r)) if r.complete() && r.chunk_bytes == snapshots::CHUNK as u64 => {
            Some((base, r.chunks().collect()))
        }
        Ok(Some(_)) => None,
        Err(e) => {
            tracing::warn!(volume = %v.id, "reading the dirty record: {e}");
            None
        }
    }
}

/// Copies volume `v` for snapshot `s`, which it is withheld for: only the chunks written since
/// its dirty base when it can ([`snapshots::begin_incremental`] names the others), else whole.
/// Then the copy is the base the next snapshot counts from.
fn copy_for_snapshot(
    store: &Store,
    site: &StorageSite,
    v: &Volume,
    s: &Snapshot,
) -> Result<Copied, String> {
    // As the store has it now: an earlier copy in this pass may have moved its base.
    let v = &(store.cloud(|tx| tx.get::<Volume>(VOLUME, &v.id)))
        .map_err(|e| e.to_string())?
        .unwrap_or_else(|| v.clone());
    let src = backing_path(&site.volumes, &v.id);
    let copy = copy_path(&site.volumes, &s.id);
    let incremental = written_since_base(store, site, v).and_then(|(base, chunks)| {
        let _manifests = MANIFESTS.lock().unwrap_or_else(|e| e.into_inner());
        let size = v.size_gib << 30;
        match snapshots::begin_incremental(store, &s.id, &v.id, size, &base, &chunks) {
            Ok(()) => Some((base, chunks)),
            Err(e) => {
                tracing::info!(snapshot = %s.id, volume = %v.id, "reading the whole volume: {e}");
                None
            }
        }
    });
    let made = match &incremental {
        Some((_, chunks)) => copy_chunks(&src, &copy, chunks),
        None => {
            // A manifest an earlier try began would make the chunker read too little.
            forget_begun(store, &s.id)?;
            sparse_copy(&src, &copy)
        }
    };
    if let Err(e) = made {
        let _ = std::fs::remove_file(&copy);
        forget_begun(store, &s.id)?;
        return Err(format!("copying volume {}: {e}", v.id));
    }
    // The copy is the new base: recorded before the record is cleared, so a crash between
    // leaves a record of more chunks than changed, never fewer.
    store
        .cloud(|tx| {
            if let Some(mut now) = tx.get::<Volume>(VOLUME, &v.id)? {
                now.dirty_base = Some(s.id.clone());
                tx.put(VOLUME, &now.id, &now.owner, None, &now)?;
            }
            if let Some(mut snap) = tx.get::<Snapshot>(SNAPSHOT, &s.id)? {
                snap.copied = true;
                tx.put(SNAPSHOT, &snap.id, &snap.owner, None, &snap)?;
            }
            Ok::<_, StoreError>(())
        })
        .map_err(|e| e.to_string())?;
    if let Err(e) = dirty::clear(&site.dir, &v.id) {
        tracing::warn!(volume = %v.id, "clearing the dirty record: {e}");
    }
    Ok(match incremental {
        Some((base, chunks)) => Copied::Since {
            base,
            chunks: chunks.len(),
        },
        None => Copied::Whole,
    })
}

/// Removes the manifest an incremental snapshot `id` began, if it has one (only after a copy
/// that failed: freeing waits for any snapshot being stored).
fn forget_begun(store: &Store, id: &str) -> Result<(), String> {
    match snapshots::manifest(store, id) {
        Err(snapshots::SnapshotError::NoManifest(_)) => Ok(()),
        _ => free_snapshot(store, id)
            .map(drop)
            .map_err(|e| e.to_string()),
    }
}

/// Copies `src` to `dest` as it is, holes kept as holes (only data regions are read).
fn sparse_copy(src: &Path, dest: &Path) -> std::io::Result<()> {
    let mut from = std::fs::File::open(src)?;
    let len = from.metadata()?.len();
    let to = std::fs::File::create(dest)?;
    to.set_len(len)?;
    let mut buf = vec![0u8; 1 << 20];
    for (start, end) in snapshots::data_extents(&from)? {
        from.seek(SeekFrom::Start(start))?;
        let mut pos = start;
        while pos < end {
            let n = ((end - pos) as usize).min(buf.len());
            from.read_exact(&mut buf[..n])?;
            to.write_all_at(&buf[..n], pos)?;
            pos += n as u64;
        }
    }
    to.sync_all()
}

/// An EBS-backed instance whose root volume could not be made never runs: it is terminated
/// with the reason, which lets its root volume go (deleted with it).
fn fail_launch(
    tx: &crate::store::CloudTx<'_>,
    instance: &str,
    volume: &str,
    why: &str,
) -> Result<(), StoreError> {
    use crate::cloud::model::{Instance, Reason, State, INSTANCE};
    let Some(mut i) = tx.get::<Instance>(INSTANCE, instance)? else {
        return Ok(());
    };
    tracing::error!(
        instance,
        volume,
        "EBS-backed launch failed: its root volume could not be made: {why}"
    );
    i.reason = Some(Reason {
        code: "Server.InternalError".into(),
        message: format!(
            "Server.InternalError: the root volume {volume} could not be made from its snapshot: {why}"
        ),
    });
    i.goal = mallee_proto::Goal::Terminated;
    i.set_state(State::Terminated, crate::store::now_ms());
    crate::cloud::instances::release_on_termination(tx, &mut i)?;
    tx.put(INSTANCE, &i.id, &i.owner, None, &i)
}

/// Makes the backing files of `creating` volumes and marks them `available` (or fails them);
/// removes the files of volumes the store no longer has and copies no pending snapshot needs.
fn keep_files(store: &Store, site: &StorageSite) -> Result<(), StoreError> {
    let dir = &site.volumes;
    let all = store.cloud(|tx| tx.list::<Volume>(VOLUME, None))?;
    for v in all.iter().filter(|v| v.state == "creating") {
        let made = make_backing(store, dir, v);
        if let Err(e) = &made {
            tracing::error!(volume = %v.id, "making the backing file in {}: {e}", dir.display());
            if v.snapshot_id.is_none() {
                continue; // retried
            }
        }
        store.cloud(|tx| {
            if let (Err(why), Some(a)) = (&made, v.attachment.as_ref().filter(|a| a.root)) {
                return fail_launch(tx, &a.instance_id, &v.id, why);
            }
            if let Some(mut now) = tx.get::<Volume>(VOLUME, &v.id)? {
                if now.state == "creating" {
                    if made.is_ok() {
                        // Restored: its snapshot is what later writes count from.
                        now.dirty_base = now.snapshot_id.clone();
                    }
                    now.state = match (&made, &now.attachment) {
                        (Err(_), _) => "error",
                        (Ok(()), Some(_)) => "in-use", // an EBS-backed instance's root
                        (Ok(()), None) => "available",
                    }
                    .into();
                    tx.put(VOLUME, &now.id, &now.owner, None, &now)?;
                    tracing::info!(volume = %now.id, size_gib = now.size_gib, snapshot = ?now.snapshot_id, state = %now.state, "volume made");
                }
            }
            Ok::<_, StoreError>(())
        })?;
    }
    // Listed after the records: a volume created since has its record before its file.
    let files = backing_files(dir).unwrap_or_default();
    let (known, pending) = store.cloud(|tx| {
        let known: BTreeSet<String> = (tx.list::<Volume>(VOLUME, None)?.into_iter())
            .map(|v| v.id)
            .collect();
        let pending: BTreeSet<String> = (tx.list::<Snapshot>(SNAPSHOT, None)?.into_iter())
            .filter(|s| s.state == "pending")
            .map(|s| s.id)
            .collect();
        Ok::<_, StoreError>((known, pending))
    })?;
    for id in files.iter().filter(|id| !known.contains(*id)) {
        match std::fs::remove_file(backing_path(dir, id)) {
            Ok(()) => tracing::info!(volume = %id, "volume deleted: backing file removed"),
            Err(e) => tracing::error!(volume = %id, "removing the backing file: {e}"),
        }
        if let Err(e) = dirty::clear(&site.dir, id) {
            tracing::error!(volume = %id, "removing the dirty record: {e}");
        }
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(snap) = name.to_str().and_then(|n| n.strip_suffix(".copy")) else {
            continue;
        };
        if !pending.contains(snap) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Hands over the exports the state asks for, less the volumes in `withheld`, unless they
/// equal what `last` handed over.
fn hand_over(
    store: &Store,
    site: &StorageSite,
    withheld: &BTreeSet<String>,
    last: Option<Handed>,
) -> Option<Handed> {
    let want = match store.cloud(|tx| exports(tx, &site.volumes)) {
        Ok(mut exports) => {
            exports.retain(|e| !withheld.contains(&e.volume_id));
            Exports {
                generation: 0,
                interface: site.interface.clone(),
                exports,
            }
        }
        Err(e) => {
            tracing::error!("storage: reading the state: {e}");
            return last;
        }
    };
    if last.as_ref().is_some_and(|l| l.exports == want) {
        return last;
    }
    let generation = crate::handover::now_ms();
    let stamped = Exports {
        generation,
        ..want.clone()
    };
    match write_exports(&site.dir, &stamped) {
        Ok(()) => {
            tracing::info!(
                generation,
                exports = stamped.exports.len(),
                "volume exports handed to the storage controller"
            );
            Some(Handed {
                exports: want,
                generation,
            })
        }
        Err(e) => {
            tracing::error!("storage: {e}");
            last
        }
    }
}

/// Whether nothing can be writing to `volume` now: it is attached to nothing, or the
/// controller answered for `handed` (which does not export it) and serves it no more. Waits
/// up to [`WITHHOLD_WAIT`] for the controller to answer.
fn quiet(site: &StorageSite, volume: &Volume, handed: Option<&Handed>) -> bool {
    if volume.attachment.is_none() {
        return true;
    }
    let Some(handed) = handed else { return false };
    let until = Instant::now() + WITHHOLD_WAIT;
    loop {
        if let Ok(Some(a)) = read_applied(&site.dir) {
            if a.generation == handed.generation && a.export(&volume.id).is_none() {
                return true;
            }
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50)); // polling the controller's answer file
    }
}

fn save_snapshot(store: &Store, id: &str, f: impl FnOnce(&mut Snapshot)) {
    let r = store.cloud(|tx| {
        if let Some(mut s) = tx.get::<Snapshot>(SNAPSHOT, id)? {
            f(&mut s);
            tx.put(SNAPSHOT, &s.id, &s.owner, None, &s)?;
        }
        Ok::<_, StoreError>(())
    });
    if let Err(e) = r {
        tracing::error!(snapshot = %id, "storage: saving the snapshot: {e}");
    }
}

/// Cuts the copy of pending snapshot `s` into Walrus on a thread of its own (unless one is at
/// it), then marks it `completed` (or `error`) and removes the copy.
fn chunk(store: Arc<Store>, site: &StorageSite, s: &Snapshot) {
    if !CHUNKING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(s.id.clone())
    {
        return;
    }
    let (id, volume, copy) = (
        s.id.clone(),
        s.volume_id.clone(),
        copy_path(&site.volumes, &s.id),
    );
    std::thread::spawn(move || {
        let _ = store_copy(&store, &copy, &id, &volume);
        CHUNKING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    });
}

/// Cuts `copy`, snapshot `id`'s copy of `volume`, into Walrus (its progress saved as it goes),
/// marks the snapshot `completed` (or `error`) and removes the copy.
fn store_copy(
    store: &Store,
    copy: &Path,
    id: &str,
    volume: &str,
) -> Result<snapshots::Taken, snapshots::SnapshotError> {
    let started = Instant::now();
    let result = {
        let _work = SNAPSHOT_WORK.lock().unwrap_or_else(|e| e.into_inner());
        snapshots::take(store, copy, id, volume, |pct| {
            save_snapshot(store, id, |s| s.progress = pct.min(99))
        })
    };
    match &result {
        Ok(t) => {
            tracing::info!(snapshot = %id, volume = %volume, chunks = t.chunks, new_chunks = t.new_chunks, read_bytes = t.read_bytes, stored_bytes = t.stored_bytes, ms = started.elapsed().as_millis() as u64, "snapshot completed");
            save_snapshot(store, id, |s| {
                s.state = "completed".into();
                s.progress = 100;
                s.stored_bytes = t.stored_bytes;
            });
        }
        Err(e) => {
            tracing::error!(snapshot = %id, "snapshot failed: {e}");
            save_snapshot(store, id, |s| {
                s.state = "error".into();
                s.state_message = Some(e.to_string());
            });
        }
    }
    let _ = std::fs::remove_file(copy);
    result
}

/// Moves CreateImage's holds one step, waking the nodes when an instance starts again.
fn advance_images(store: &Store, changes: &Changes) {
    match store.cloud(|tx| images::advance(tx, crate::store::now_ms())) {
        Ok(true) => changes.bump(),
        Ok(false) => {}
        Err(e) => tracing::error!("storage: moving CreateImage's holds: {e}"),
    }
}

/// One pass: files, snapshots' copies, the exports; returns what is handed over.
fn keep(
    store: &Arc<Store>,
    site: &StorageSite,
    changes: &Changes,
    mut last: Option<Handed>,
) -> Option<Handed> {
    if let Err(e) = keep_files(store, site) {
        tracing::error!("storage: {e}");
    }
    advance_images(store, changes);
    let (pending, volumes) = match store.cloud(|tx| {
        let snaps = tx.list::<Snapshot>(SNAPSHOT, None)?;
        Ok::<_, StoreError>((snaps, tx.list::<Volume>(VOLUME, None)?))
    }) {
        Ok((snaps, vols)) => (
            snaps
                .into_iter()
                .filter(|s| s.state == "pending" && !s.held)
                .collect::<Vec<_>>(),
            vols,
        ),
        Err(e) => {
            tracing::error!("storage: reading the state: {e}");
            return last;
        }
    };
    let uncopied: Vec<&Snapshot> = pending.iter().filter(|s| !s.copied).collect();
    if !uncopied.is_empty() {
        let withheld = uncopied.iter().map(|s| s.volume_id.clone()).collect();
        last = hand_over(store, site, &withheld, last);
        for s in uncopied {
            let Some(v) = volumes.iter().find(|v| v.id == s.volume_id) else {
                save_snapshot(store, &s.id, |s| {
                    s.state = "error".into();
                    s.state_message = Some("its volume was deleted before it was copied".into());
                });
                continue;
            };
            if !quiet(site, v, last.as_ref()) {
                tracing::info!(snapshot = %s.id, volume = %v.id, "snapshot waits for the storage controller to stop serving the volume");
                continue;
            }
            let started = Instant::now();
            match copy_for_snapshot(store, site, v, s) {
                Ok(copied) => {
                    tracing::info!(snapshot = %s.id, volume = %v.id, ?copied, ms = started.elapsed().as_millis() as u64, "volume copied at this instant for its snapshot");
                }
                Err(e) => tracing::error!(snapshot = %s.id, "{e}"),
            }
        }
    }
    // Everything copied is exported again.
    let still: BTreeSet<String> = (store.cloud(|tx| tx.list::<Snapshot>(SNAPSHOT, None)))
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.state == "pending" && !s.copied && !s.held)
        .map(|s| s.volume_id)
        .collect();
    last = hand_over(store, site, &still, last);
    for s in (store.cloud(|tx| tx.list::<Snapshot>(SNAPSHOT, None)))
        .unwrap_or_default()
        .iter()
        .filter(|s| s.state == "pending" && s.copied)
    {
        chunk(store.clone(), site, s);
    }
    advance_images(store, changes); // copies made: holds released, instances started again
    last
}

/// Snapshot `snapshot_id` of volume `volume_id`, which no export serves, taken at once on the
/// caller's thread: the keeper's copy and its chunking thread's work, without their passes
/// (tests and the snapshot benchmark). Returns how it was copied and what was stored.
pub fn snapshot_idle(
    store: &Store,
    site: &StorageSite,
    volume_id: &str,
    snapshot_id: &str,
) -> Result<(Copied, snapshots::Taken), String> {
    let v: Volume = (store.cloud(|tx| tx.get(VOLUME, volume_id)))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no volume {volume_id}"))?;
    let s = Snapshot::pending(snapshot_id.into(), &v.owner, &v, "", crate::store::now_ms());
    (store.cloud(|tx| tx.put(SNAPSHOT, &s.id, &s.owner, None, &s))).map_err(|e| e.to_string())?;
    let copied = copy_for_snapshot(store, site, &v, &s)?;
    let copy = copy_path(&site.volumes, snapshot_id);
    let taken = store_copy(store, &copy, snapshot_id, volume_id).map_err(|e| e.to_string())?;
    Ok((copied, taken))
}

/// Frees the chunks of snapshot `id` no other snapshot uses (DeleteSnapshot), on the caller's
/// thread; returns the bytes freed.
pub fn free_snapshot(store: &Store, id: &str) -> Result<u64, snapshots::SnapshotError> {
    let _work = SNAPSHOT_WORK.lock().unwrap_or_else(|e| e.into_inner());
    let _manifests = MANIFESTS.lock().unwrap_or_else(|e| e.into_inner());
    snapshots::delete(store, id)
}

/// Keeps backing files, snapshots and the handed-over exports equal to what the state asks
/// for: at start and after every change of the cloud's state.
pub async fn run(store: Arc<Store>, site: StorageSite, changes: Arc<Changes>) {
    let changed: watch::Receiver<u64> = changes.subscribe_network();
    for dir in [&site.dir, &site.volumes] {
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::error!("storage: creating {}: {e}", dir.display());
        }
    }
    if let Err(e) = snapshots::ensure_bucket(&store) {
        tracing::error!("storage: {e}");
    }
    crate::handover::run("storage", changed, Some(RETRY), move |last| {
        keep(&store, &site, &changes, last)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::model::Attachment;

    fn volume(id: &str, state: &str) -> Volume {
        Volume {
            id: id.into(),
            owner: "alice".into(),
            size_gib: 2,
            zone: "zone-a".into(),
            snapshot_id: None,
            state: state.into(),
            created_ms: 0,
            attachment: None,
            dirty_base: None,
        }
    }

    /// A store and a storage site (its directories made) in a temporary directory.
    fn site() -> (tempfile::TempDir, Arc<Store>, StorageSite) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
        let site = StorageSite {
            dir: dir.path().join("storage"),
            volumes: dir.path().join("volumes"),
            interface: "eth1".into(),
        };
        std::fs::create_dir_all(&site.dir).unwrap();
        std::fs::create_dir_all(&site.volumes).unwrap();
        (dir, store, site)
    }

    #[test]
    fn creating_volumes_get_sparse_files_and_deleted_ones_lose_them() {
        let (_dir, store, site) = site();
        let v = volume("vol-0123456789abcdef0", "creating");
        store
            .cloud(|tx| tx.put(VOLUME, &v.id, &v.owner, None, &v))
            .unwrap();
        std::fs::write(backing_path(&site.volumes, "vol-00000000000000000"), b"x").unwrap();
        let record = dirty::DirtyRecord::new(snapshots::CHUNK as u64);
        dirty::write(&site.dir, "vol-00000000000000000", &record).unwrap();
        let changes = Changes::default();
        let handed = keep(&store, &site, &changes, None).expect("handed over");
        assert!(handed.exports.exports.is_empty());
        let file = std::fs::metadata(backing_path(&site.volumes, &v.id)).unwrap();
        assert_eq!(file.len(), 2 << 30);
        use std::os::unix::fs::MetadataExt;
        assert!(file.blocks() * 512 < 1 << 20, "sparse, not written out");
        let now: Volume = store.cloud(|tx| tx.get(VOLUME, &v.id)).unwrap().unwrap();
        assert_eq!(now.state, "available");
        assert!(!backing_path(&site.volumes, "vol-00000000000000000").exists());
        let gone = dirty::read(&site.dir, "vol-00000000000000000").unwrap();
        assert_eq!(gone, None, "a deleted volume's dirty record goes with it");
        // Unchanged state: nothing written again.
        let before = std::fs::read(site.dir.join(mallee_proto::storage::EXPORTS_FILE)).unwrap();
        keep(&store, &site, &changes, Some(handed));
        let after = std::fs::read(site.dir.join(mallee_proto::storage::EXPORTS_FILE)).unwrap();
        assert_eq!(before, after);
        // A volume attached to an instance on no known node is not exported (no MAC to allow).
        let mut attached = now.clone();
        attached.attachment = Some(Attachment {
            instance_id: "i-0123456789abcdef0".into(),
            device: "/dev/sdf".into(),
            shelf: 100,
            ..Default::default()
        });
        store
            .cloud(|tx| tx.put(VOLUME, &attached.id, &attached.owner, None, &attached))
            .unwrap();
        assert!(keep(&store, &site, &changes, None)
            .unwrap()
            .exports
            .exports
            .is_empty());
    }

    /// An available 2 GiB volume `id` in the store, its backing file sparse and open to write.
    fn volume_on_disk(store: &Store, site: &StorageSite, id: &str) -> (Volume, std::fs::File) {
        let v = volume(id, "available");
        store
            .cloud(|tx| tx.put(VOLUME, &v.id, &v.owner, None, &v))
            .unwrap();
        let file = std::fs::File::create(backing_path(&site.volumes, &v.id)).unwrap();
        file.set_len(2 << 30).unwrap();
        (v, file)
    }

    fn snapshot_now(store: &Store, site: &StorageSite, v: &Volume, id: &str) -> (Copied, u64) {
        let (copied, taken) = snapshot_idle(store, site, &v.id, id).unwrap();
        (copied, taken.read_bytes)
    }

    #[test]
    fn a_snapshot_reads_only_what_the_dirty_record_names_when_it_can() {
        let (_dir, store, site) = site();
        let (v, file) = volume_on_disk(&store, &site, "vol-0000d1e7");
        let chunk = snapshots::CHUNK as u64;
        file.write_all_at(&[1; 4096], 0).unwrap();
        file.write_all_at(&[2; 4096], 100 * chunk).unwrap();
        // The first snapshot has no base: every chunk with data.
        let (how, read) = snapshot_now(&store, &site, &v, "snap-00000001");
        assert_eq!((how, read), (Copied::Whole, 2 * chunk));
        // Nothing written since (no record): nothing read.
        let (how, read) = snapshot_now(&store, &site, &v, "snap-00000002");
        assert_eq!(read, 0);
        assert!(matches!(how, Copied::Since { chunks: 0, .. }), "{how:?}");
        // Chunk 7 written, as the controller records it.
        file.write_all_at(&[3; 10], 7 * chunk).unwrap();
        let mut record = dirty::DirtyRecord::new(chunk);
        record.add(&[7]);
        dirty::write(&site.dir, &v.id, &record).unwrap();
        let (how, read) = snapshot_now(&store, &site, &v, "snap-00000003");
        assert_eq!(read, chunk);
        assert_eq!(
            how,
            Copied::Since {
                base: "snap-00000002".into(),
                chunks: 1
            }
        );
        assert_eq!(dirty::read(&site.dir, &v.id).unwrap(), None, "cleared");
        let restored = site.volumes.join("r.img");
        snapshots::restore(&store, "snap-00000003", &restored, 2 << 30).unwrap();
        let mut buf = vec![0; 4096];
        for (at, byte) in [(0, 1), (100 * chunk, 2), (7 * chunk, 3)] {
            std::fs::File::open(&restored)
                .unwrap()
                .read_exact_at(&mut buf[..10], at)
                .unwrap();
            assert_eq!(buf[..10], [byte; 10], "at {at}");
        }
        // A record left open (its controller ended without stopping the export): whole again.
        record.open = true;
        dirty::write(&site.dir, &v.id, &record).unwrap();
        let (how, read) = snapshot_now(&store, &site, &v, "snap-00000004");
        assert_eq!((how, read), (Copied::Whole, 3 * chunk));
        // A base that is not completed: whole.
        let s5 = Snapshot::pending("snap-00000005".into(), "alice", &v, "", 0);
        store
            .cloud(|tx| tx.put(SNAPSHOT, &s5.id, &s5.owner, None, &s5))
            .unwrap();
        let v: Volume = store.cloud(|tx| tx.get(VOLUME, &v.id)).unwrap().unwrap();
        copy_for_snapshot(&store, &site, &v, &s5).unwrap();
        let (how, _) = snapshot_now(&store, &site, &v, "snap-00000006");
        assert_eq!(how, Copied::Whole, "snap-00000005 is still pending");
    }

    /// Two snapshots of one volume copied in the same pass, from the volume as the pass read
    /// it: the second counts from the first, not from the base they both saw.
    #[test]
    fn a_second_copy_in_one_pass_counts_from_the_first() {
        let (_dir, store, site) = site();
        let (v, file) = volume_on_disk(&store, &site, "vol-0000d1e8");
        let chunk = snapshots::CHUNK as u64;
        file.write_all_at(&[1; 10], 0).unwrap();
        snapshot_now(&store, &site, &v, "snap-00000010");
        // Chunk 9 written and recorded; two snapshots asked for; the pass read the volume once.
        file.write_all_at(&[9; 10], 9 * chunk).unwrap();
        let mut record = dirty::DirtyRecord::new(chunk);
        record.add(&[9]);
        dirty::write(&site.dir, &v.id, &record).unwrap();
        let seen: Volume = store.cloud(|tx| tx.get(VOLUME, &v.id)).unwrap().unwrap();
        let (s1, s2) = (
            Snapshot::pending("snap-00000011".into(), "alice", &v, "", 0),
            Snapshot::pending("snap-00000012".into(), "alice", &v, "", 0),
        );
        for s in [&s1, &s2] {
            store
                .cloud(|tx| tx.put(SNAPSHOT, &s.id, &s.owner, None, s))
                .unwrap();
            copy_for_snapshot(&store, &site, &seen, s).unwrap();
            let copy = copy_path(&site.volumes, &s.id);
            snapshots::take(&store, &copy, &s.id, &v.id, |_| {}).unwrap();
            save_snapshot(&store, &s.id, |s| s.state = "completed".into());
        }
        let restored = site.volumes.join("r.img");
        snapshots::restore(&store, "snap-00000012", &restored, 2 << 30).unwrap();
        let mut buf = [0u8; 10];
        std::fs::File::open(&restored)
            .unwrap()
            .read_exact_at(&mut buf, 9 * chunk)
            .unwrap();
        assert_eq!(
            buf, [9; 10],
            "the second snapshot lost what the first one holds"
        );
    }

    #[test]
    fn a_held_snapshot_is_not_copied_until_its_hold_lets_it_go() {
        let (_dir, store, site) = site();
        let v = volume("vol-0000beef", "creating");
        let mut s = Snapshot::pending("snap-00000000000000001".into(), "alice", &v, "", 0);
        s.held = true;
        store
            .cloud(|tx| {
                tx.put(VOLUME, &v.id, &v.owner, None, &v)?;
                tx.put(SNAPSHOT, &s.id, &s.owner, None, &s)
            })
            .unwrap();
        let changes = Changes::default();
        let copied = || {
            let s: Snapshot = store.cloud(|tx| tx.get(SNAPSHOT, &s.id)).unwrap().unwrap();
            s.copied
        };
        keep(&store, &site, &changes, None);
        assert!(
            !copied(),
            "held: CreateImage waits for its instance to stop"
        );
        store
            .cloud(|tx| {
                let mut s: Snapshot = tx.get(SNAPSHOT, &s.id)?.unwrap();
                s.held = false;
                tx.put(SNAPSHOT, &s.id, &s.owner, None, &s)
            })
            .unwrap();
        keep(&store, &site, &changes, None);
        assert!(copied(), "unattached and no longer held: copied at once");
    }

    #[test]
    fn a_copy_has_the_same_bytes_and_keeps_the_holes() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("v.img");
        let f = std::fs::File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(&[9u8; 3 << 20], 40 << 20).unwrap();
        let dest = dir.path().join("v.copy");
        sparse_copy(&src, &dest).unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dest).unwrap());
        let blocks = std::fs::metadata(&dest).unwrap().blocks() * 512;
        assert!(
            blocks < 8 << 20,
            "{blocks} bytes allocated for 3 MiB of data"
        );
    }

    #[test]
    fn a_root_volume_that_cannot_be_restored_fails_its_launch_and_goes() {
        use crate::cloud::model::{Instance, State, INSTANCE};
        let (_dir, store, site) = site();
        let mut i = crate::cloud::reconcile::tests::instance();
        i.root_volume = Some("vol-0000beef".into());
        let mut v = crate::cloud::reconcile::tests::attached_volume("vol-0000beef", "/dev/vda");
        v.state = "creating".into();
        v.snapshot_id = Some("snap-00000000".into()); // no manifest: nothing to restore
        let a = v.attachment.as_mut().unwrap();
        (a.root, a.delete_on_termination) = (true, true);
        store
            .cloud(|tx| {
                tx.put(INSTANCE, &i.id, &i.owner, None, &i)?;
                tx.put(VOLUME, &v.id, &v.owner, None, &v)
            })
            .unwrap();
        keep_files(&store, &site).unwrap();
        let (i, v) = store
            .cloud(|tx| {
                Ok::<_, StoreError>((
                    tx.get::<Instance>(INSTANCE, "i-00000001")?.unwrap(),
                    tx.get::<Volume>(VOLUME, "vol-0000beef")?,
                ))
            })
            .unwrap();
        assert_eq!(i.state, State::Terminated);
        assert!(i.reason.unwrap().message.contains("could not be made"));
        assert_eq!(v, None, "deleted with its instance");
    }
}
