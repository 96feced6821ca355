//! Group commit: changes asked for by many threads at once share one write transaction, and so
//! one fsync of the write-ahead log, each in a savepoint of its own so that one failing change
//! leaves the others in.
//!
//! Profiled on 4 KiB PUTs under 8 connections, the object row's commit and the audit entry's
//! commit queued one after the other on the writing connection, each paying for its own fsync.
//! Here a thread queues its change and then takes the writing connection; whoever gets it
//! first (the leader) runs every change queued by then in one transaction and hands each its
//! result after the commit. A thread whose change a leader already ran finds its result when
//! it gets the connection, and returns at once. No result is handed over before the commit it
//! depends on is known, so no caller hears of a change that is not durable.

use super::{Store, StoreError};
use rusqlite::Connection;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError};

/// A change waiting in the queue, type-erased.
trait Queued: Send {
    /// Runs the change in a savepoint of its own and keeps its result. `Err` when the
    /// savepoint could not be ended, so the group must not commit.
    fn run(&mut self, conn: &Connection) -> rusqlite::Result<()>;
    /// Hands the result to its caller once the group's commit is known (`Err`: why it failed).
    fn hand_over(self: Box<Self>, commit: Result<(), &str>);
}

/// Where a change's result waits for its caller.
type Slot<T> = Arc<Mutex<Option<Result<T, StoreError>>>>;

struct Pending<T, F> {
    change: Option<F>,
    result: Option<Result<T, StoreError>>,
    slot: Slot<T>,
}

impl<T, F> Queued for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let Some(change) = self.change.take() else {
            return Ok(());
        };
        sql(conn, "SAVEPOINT change")?;
        let result = catch_unwind(AssertUnwindSafe(|| change(conn)))
            .unwrap_or_else(|_| Err(StoreError::Commit("the change panicked".into())));
        if result.is_err() {
            sql(conn, "ROLLBACK TO change")?;
        }
        // Fails too when SQLite rolled the whole transaction back (a full disk, an I/O error).
        sql(conn, "RELEASE change")?;
        self.result = Some(result);
        Ok(())
    }

    fn hand_over(self: Box<Self>, commit: Result<(), &str>) {
        let result = match (commit, self.result) {
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(StoreError::Commit("the change did not run".into())),
            (Err(why), _) => Err(StoreError::Commit(why.to_string())),
        };
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
    }
}

/// Changes waiting for a leader.
#[derive(Default)]
pub(super) struct Queue(Mutex<Vec<Box<dyn Queued>>>);

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Box<dyn Queued>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn sql(conn: &Connection, statement: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(statement)?.execute([]).map(drop)
}

impl Store {
    /// Runs `change` in a write transaction shared with the changes other threads ask for at
    /// the same moment, and returns its result once that transaction is committed. `change`
    /// runs inside a savepoint of its own: its error (or panic) undoes only its own writes.
    /// Work that must follow the commit (removing replaced blobs) is the caller's, after this
    /// returns.
    pub(super) fn grouped<T: Send + 'static>(
        &self,
        change: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let slot: Slot<T> = Arc::default();
        self.group.lock().push(Box::new(Pending {
            change: Some(change),
            result: None,
            slot: slot.clone(),
        }));
        let conn = self.conn();
        let take = || slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(result) = take() {
            return result;
        }
        // Ours is still queued: lead every change queued so far, ours among them.
        let group = std::mem::take(&mut *self.group.lock());
        run_group(&conn, group);
        drop(conn);
        take().unwrap_or_else(|| Err(StoreError::Commit("the change was not run".into())))
    }
}

/// Runs `group` in one transaction, commits it and hands every change its result.
fn run_group(conn: &Connection, mut group: Vec<Box<dyn Queued>>) {
    let commit = (|| {
        sql(conn, "BEGIN IMMEDIATE")?;
        let ran = group.iter_mut().try_for_each(|change| change.run(conn));
        let done = ran.and_then(|()| sql(conn, "COMMIT"));
        if done.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        done
    })()
    .map_err(|e| e.to_string());
    for change in group {
        change.hand_over(commit.as_ref().map(|_| ()).map_err(String::as_str));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{test_store_with_bucket, ObjectRow};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn row(key: &str) -> ObjectRow {
        ObjectRow {
            key: key.into(),
            blob: format!("blob-{key}"),
            size: 1,
            etag: "e".into(),
            md5: "m".into(),
            sha256: "s".into(),
            content_type: None,
            metadata: vec![],
            modified_ms: 0,
        }
    }

    /// Counts the writing connection's commits from now on.
    fn count_commits(store: &Store) -> Arc<AtomicUsize> {
        let commits = Arc::new(AtomicUsize::new(0));
        let c = commits.clone();
        store.conn().commit_hook(Some(move || {
            c.fetch_add(1, Ordering::SeqCst);
            false
        }));
        commits
    }

    /// A change a test asks for through the store, as a request would.
    type Change<'a, T> = Box<dyn FnOnce(&Store) -> Result<T, StoreError> + Send + 'a>;

    /// Runs each of `changes` on a thread of its own while the writing connection is held,
    /// lets go of it once all of them are queued, and returns their results in order.
    fn queued_together<T: Send>(
        store: &Store,
        changes: Vec<Change<'_, T>>,
    ) -> Vec<Result<T, StoreError>> {
        let n = changes.len();
        std::thread::scope(|s| {
            let held = store.conn();
            let threads: Vec<_> = changes
                .into_iter()
                .map(|change| s.spawn(move || change(store)))
                .collect();
            while store.group.lock().len() < n {
                std::thread::yield_now();
            }
            drop(held);
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        })
    }

    #[test]
    fn changes_asked_for_together_share_one_commit() {
        let (_dir, store) = test_store_with_bucket();
        let commits = count_commits(&store);
        let changes = (0..8)
            .map(|i| {
                Box::new(move |s: &Store| s.put_object("b", &row(&format!("k{i}")))) as Change<_>
            })
            .collect();
        for result in queued_together(&store, changes) {
            result.unwrap();
        }
        assert_eq!(commits.load(Ordering::SeqCst), 1);
        for i in 0..8 {
            assert!(store.object("b", &format!("k{i}")).unwrap().is_some());
        }
    }

    #[test]
    fn a_failing_or_panicking_change_undoes_only_its_own_writes() {
        let (_dir, store) = test_store_with_bucket();
        let commits = count_commits(&store);
        let changes: Vec<Change<()>> = vec![
            Box::new(|s| s.put_object("b", &row("kept"))),
            Box::new(|s| s.put_object("no-such-bucket", &row("lost"))),
            Box::new(|s| {
                s.grouped(|conn| {
                    insert_row(conn, "half")?;
                    panic!("a bug in a change");
                })
            }),
            Box::new(|s| {
                s.grouped(|conn| {
                    insert_row(conn, "undone")?;
                    Err(StoreError::Corrupt("refused after writing".into()))
                })
            }),
        ];
        let results = queued_together(&store, changes);
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(StoreError::NoSuchBucket(_))));
        assert!(matches!(&results[2], Err(StoreError::Commit(why)) if why.contains("panicked")));
        assert!(matches!(results[3], Err(StoreError::Corrupt(_))));
        assert_eq!(commits.load(Ordering::SeqCst), 1);
        assert!(store.object("b", "kept").unwrap().is_some());
        for gone in ["lost", "half", "undone"] {
            assert_eq!(store.object("b", gone).unwrap(), None, "{gone}");
        }
    }

    #[test]
    fn a_group_that_cannot_commit_tells_every_change_and_keeps_nothing() {
        let (_dir, store) = test_store_with_bucket();
        let changes: Vec<Change<()>> = vec![
            Box::new(|s| s.put_object("b", &row("first"))),
            // Ends the group's transaction under it, as SQLite itself does on a full disk.
            Box::new(|s| s.grouped(|conn| Ok(conn.execute_batch("ROLLBACK")?))),
            Box::new(|s| s.put_object("b", &row("last"))),
        ];
        for result in queued_together(&store, changes) {
            assert!(matches!(result, Err(StoreError::Commit(_))), "{result:?}");
        }
        assert_eq!(store.object("b", "first").unwrap(), None);
        assert_eq!(store.object("b", "last").unwrap(), None);
        // The connection is usable again.
        store.put_object("b", &row("after")).unwrap();
        assert!(store.object("b", "after").unwrap().is_some());
    }

    fn insert_row(conn: &Connection, key: &str) -> Result<(), StoreError> {
        crate::store::buckets::insert_object(conn, "b", &row(key)).map(drop)
    }
}
