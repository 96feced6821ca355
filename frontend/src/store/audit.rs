//! The audit log's table: one row per recorded call (when, who, what, on which resources, from
//! where, how it ended), read newest first a page at a time, and kept to the newest
//! [`AUDIT_KEEP`] rows. Which calls are recorded, and the console line that goes with each, are
//! `crate::audit`'s; how an admin reads the log is the API's and the CLI's.

use super::{Store, StoreError};
use rusqlite::params;
use std::sync::atomic::Ordering;

/// How a recorded call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Refused or failed, with the error code the client was given.
    Err {
        code: String,
    },
}

impl Outcome {
    /// Its name as the table and every reader give it (`ok` or `error`), and the error code.
    pub fn parts(&self) -> (&'static str, Option<&str>) {
        match self {
            Outcome::Ok => ("ok", None),
            Outcome::Err { code } => ("error", Some(code)),
        }
    }
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// When the call was answered (milliseconds since the Unix epoch).
    pub at_ms: i64,
    /// The authenticated user, `-` when the request's signature did not check out.
    pub user: String,
    /// The API's name for the call (`RunInstances`, `PutObject`, `CreateUser`).
    pub action: String,
    /// The ids (or `bucket/key`, names) of what it touched or made.
    pub resources: Vec<String>,
    /// The client's address, or `local` for the admin CLI.
    pub source: String,
    pub outcome: Outcome,
    /// The request id the client was given (empty for the admin CLI).
    pub request_id: String,
}

/// A stored entry and its id (ids grow with time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub entry: AuditEntry,
}

/// A page of the log, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditPage {
    pub rows: Vec<AuditRow>,
    /// When older rows remain: the `before` cursor of the next page.
    pub next: Option<i64>,
}

/// How many of the newest entries are kept; older ones are dropped as new ones come.
pub const AUDIT_KEEP: i64 = 100_000;

/// Entries are pruned on every this many-th write of a process (its first included).
const PRUNE_EVERY: u64 = 1_000;

const COLUMNS: &str = "id, at_ms, user, action, resources, source, outcome, code, request_id";

fn row_to_audit(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
    let resources: String = r.get(4)?;
    let outcome: String = r.get(6)?;
    let code: Option<String> = r.get(7)?;
    let outcome = match outcome.as_str() {
        "ok" => Outcome::Ok,
        _ => Outcome::Err {
            code: code.unwrap_or_default(),
        },
    };
    Ok(AuditRow {
        id: r.get(0)?,
        entry: AuditEntry {
            at_ms: r.get(1)?,
            user: r.get(2)?,
            action: r.get(3)?,
            resources: serde_json::from_str(&resources).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    4,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?,
            source: r.get(5)?,
            outcome,
            request_id: r.get(8)?,
        },
    })
}

/// Drops all but the newest `keep` entries (ids are never reused: AUTOINCREMENT).
fn prune(conn: &rusqlite::Connection, keep: i64) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM audit WHERE id <= (SELECT max(id) FROM audit) - ?1",
        [keep],
    )
}

impl Store {
    /// Appends `entry` (committed with the changes other requests make at the same moment:
    /// [`Store::grouped`]); returns its id. Every [`PRUNE_EVERY`]-th write keeps the table to the
    /// newest [`AUDIT_KEEP`] entries.
    pub fn record_audit(&self, entry: &AuditEntry) -> Result<i64, StoreError> {
        let resources = serde_json::to_string(&entry.resources)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let prune_now =
            (self.audit_writes.fetch_add(1, Ordering::Relaxed)).is_multiple_of(PRUNE_EVERY);
        let entry = entry.clone();
        self.grouped(move |conn| {
            let (outcome, code) = entry.outcome.parts();
            conn.prepare_cached(
                "INSERT INTO audit (at_ms, user, action, resources, source, outcome, code, request_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                entry.at_ms,
                entry.user,
                entry.action,
                resources,
                entry.source,
                outcome,
                code,
                entry.request_id
            ])?;
            let id = conn.last_insert_rowid();
            if prune_now {
                prune(conn, AUDIT_KEEP)?;
            }
            Ok(id)
        })
    }

    /// Up to `limit` entries older than `before` (all when `None`), newest first.
    pub fn audit_log(&self, limit: usize, before: Option<i64>) -> Result<AuditPage, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM audit WHERE id < ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let take = limit.saturating_add(1).min(i64::MAX as usize) as i64;
        let mut rows = stmt
            .query_map(params![before.unwrap_or(i64::MAX), take], row_to_audit)?
            .collect::<Result<Vec<_>, _>>()?;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|r| r.id)
        } else {
            None
        };
        Ok(AuditPage { rows, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: i64, outcome: Outcome) -> AuditEntry {
        AuditEntry {
            at_ms: 1_000 + n,
            user: format!("u{n}"),
            action: "CreateVolume".into(),
            resources: vec![format!("vol-{n}"), "a,b".into()],
            source: "192.0.2.7".into(),
            outcome,
            request_id: format!("r{n}"),
        }
    }

    #[test]
    fn entries_read_back_newest_first_as_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ok = entry(1, Outcome::Ok);
        let failed = entry(
            2,
            Outcome::Err {
                code: "InvalidGroup.NotFound".into(),
            },
        );
        store.record_audit(&ok).unwrap();
        store.record_audit(&failed).unwrap();
        let page = store.audit_log(10, None).unwrap();
        let got: Vec<&AuditEntry> = page.rows.iter().map(|r| &r.entry).collect();
        assert_eq!(got, vec![&failed, &ok]);
        assert_eq!(page.next, None);
    }

    #[test]
    fn pages_follow_the_cursor_to_the_oldest_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for n in 0..5 {
            store.record_audit(&entry(n, Outcome::Ok)).unwrap();
        }
        let mut users = Vec::new();
        let mut before = None;
        loop {
            let page = store.audit_log(2, before).unwrap();
            assert!(page.rows.len() <= 2);
            users.extend(page.rows.iter().map(|r| r.entry.user.clone()));
            match page.next {
                Some(n) => before = Some(n),
                None => break,
            }
        }
        assert_eq!(users, ["u4", "u3", "u2", "u1", "u0"]);
    }

    #[test]
    fn pruning_keeps_only_the_newest_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for n in 0..5 {
            store.record_audit(&entry(n, Outcome::Ok)).unwrap();
        }
        assert_eq!(prune(&store.conn(), 2).unwrap(), 3);
        let page = store.audit_log(10, None).unwrap();
        let users: Vec<&str> = page.rows.iter().map(|r| r.entry.user.as_str()).collect();
        assert_eq!(users, ["u4", "u3"]);
    }
}
