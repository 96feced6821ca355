//! Cloud records (EC2 resources, nodes): each a JSON document in the `cloud` table, keyed by
//! kind and id, scoped by owner, with an optional name unique per kind and owner. All access
//! goes through [`Store::cloud`], which runs a closure in one IMMEDIATE transaction, so a
//! check-then-write (capacity, name uniqueness, address allocation) is atomic. What the
//! documents mean is the EC2 and node modules' business, not this one's.

use super::{Store, StoreError};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A transaction over the cloud records.
pub struct CloudTx<'a> {
    tx: rusqlite::Transaction<'a>,
}

fn corrupt(kind: &str, id: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("{kind} {id}: {e}"))
}

impl Store {
    /// Runs `f` in one transaction: committed if it returns `Ok`, rolled back otherwise.
    pub fn cloud<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&CloudTx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let ctx = CloudTx { tx };
        let out = f(&ctx)?;
        ctx.tx.commit().map_err(StoreError::from)?;
        Ok(out)
    }
}

impl CloudTx<'_> {
    /// The record `kind`/`id`.
    pub fn get<T: DeserializeOwned>(&self, kind: &str, id: &str) -> Result<Option<T>, StoreError> {
        let body: Option<String> = self
            .tx
            .query_row(
                "SELECT body FROM cloud WHERE kind = ?1 AND id = ?2",
                params![kind, id],
                |r| r.get(0),
            )
            .optional()?;
        body.map(|b| serde_json::from_str(&b).map_err(|e| corrupt(kind, id, e)))
            .transpose()
    }

    /// The record of `kind` that `owner` named `name`.
    pub fn by_name<T: DeserializeOwned>(
        &self,
        kind: &str,
        owner: &str,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        let body: Option<String> = self
            .tx
            .query_row(
                "SELECT body FROM cloud WHERE kind = ?1 AND owner = ?2 AND name = ?3",
                params![kind, owner, name],
                |r| r.get(0),
            )
            .optional()?;
        body.map(|b| serde_json::from_str(&b).map_err(|e| corrupt(kind, name, e)))
            .transpose()
    }

    /// Every record of `kind` (of `owner` when given), in id order.
    pub fn list<T: DeserializeOwned>(
        &self,
        kind: &str,
        owner: Option<&str>,
    ) -> Result<Vec<T>, StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT id, body FROM cloud WHERE kind = ?1 AND (?2 IS NULL OR owner = ?2) ORDER BY id",
        )?;
        let rows = stmt.query_map(params![kind, owner], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, body) = row?;
            out.push(serde_json::from_str(&body).map_err(|e| corrupt(kind, &id, e))?);
        }
        Ok(out)
    }

    /// Sums of the integer fields `sums` of the records of `kind`, grouped by the string field
    /// `group`, skipping records whose field `skip.0` is one of `skip.1`. Field names are JSON
    /// object keys of the documents; SQLite reads them without building the records.
    pub fn sum_by(
        &self,
        kind: &str,
        group: &str,
        sums: [&str; 2],
        skip: (&str, &[&str]),
    ) -> Result<Vec<(String, [i64; 2])>, StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT json_extract(body, '$.' || ?2) AS g,
                    SUM(json_extract(body, '$.' || ?3)), SUM(json_extract(body, '$.' || ?4))
             FROM cloud WHERE kind = ?1 AND coalesce(json_extract(body, '$.' || ?5)
                 NOT IN (SELECT value FROM json_each(?6)), 1)
             GROUP BY g",
        )?;
        let skipped = serde_json::to_string(skip.1).map_err(|e| corrupt(kind, "sum_by", e))?;
        let rows = stmt.query_map(
            params![kind, group, sums[0], sums[1], skip.0, skipped],
            |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                    [
                        r.get::<_, Option<i64>>(1)?.unwrap_or(0),
                        r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                    ],
                ))
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Inserts or updates a record; fails if another record of the kind and owner has `name`.
    pub fn put<T: Serialize>(
        &self,
        kind: &str,
        id: &str,
        owner: &str,
        name: Option<&str>,
        value: &T,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(value).map_err(|e| corrupt(kind, id, e))?;
        self.tx.execute(
            "INSERT INTO cloud (kind, id, owner, name, body) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (kind, id) DO UPDATE
             SET owner = excluded.owner, name = excluded.name, body = excluded.body",
            params![kind, id, owner, name, body],
        )?;
        Ok(())
    }

    /// Removes a record; true if it existed.
    pub fn delete(&self, kind: &str, id: &str) -> Result<bool, StoreError> {
        let n = self.tx.execute(
            "DELETE FROM cloud WHERE kind = ?1 AND id = ?2",
            params![kind, id],
        )?;
        Ok(n > 0)
    }

    /// The next value (from 1) of the persistent counter `name`.
    pub fn next_counter(&self, name: &str) -> Result<u64, StoreError> {
        let n: u64 = self.get("counter", name)?.unwrap_or(0) + 1;
        self.put("counter", name, "", None, &n)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_are_owner_scoped_and_roll_back_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .cloud(|tx| {
                tx.put("thing", "t-2", "bob", Some("b"), &vec![2])?;
                tx.put("thing", "t-1", "alice", Some("a"), &vec![1])?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let failed: Result<(), StoreError> = store.cloud(|tx| {
            tx.put("thing", "t-3", "bob", None, &vec![3])?;
            Err(StoreError::Corrupt("abort".into()))
        });
        assert!(failed.is_err());
        store
            .cloud(|tx| {
                let all: Vec<Vec<i32>> = tx.list("thing", None)?;
                assert_eq!(all, vec![vec![1], vec![2]]);
                let bobs: Vec<Vec<i32>> = tx.list("thing", Some("bob"))?;
                assert_eq!(bobs, vec![vec![2]]);
                assert_eq!(
                    tx.by_name::<Vec<i32>>("thing", "alice", "a")?,
                    Some(vec![1])
                );
                assert!(tx
                    .put("thing", "t-9", "alice", Some("a"), &vec![9])
                    .is_err());
                tx.put(
                    "sized",
                    "s-1",
                    "u",
                    None,
                    &serde_json::json!({"at": "a", "n": 2, "m": 5, "st": "on"}),
                )?;
                tx.put(
                    "sized",
                    "s-2",
                    "u",
                    None,
                    &serde_json::json!({"at": "a", "n": 3, "m": 1, "st": "on"}),
                )?;
                tx.put(
                    "sized",
                    "s-3",
                    "u",
                    None,
                    &serde_json::json!({"at": "a", "n": 9, "m": 9, "st": "off"}),
                )?;
                tx.put(
                    "sized",
                    "s-4",
                    "u",
                    None,
                    &serde_json::json!({"at": "b", "n": 1, "m": 1, "st": "on"}),
                )?;
                let sums = tx.sum_by("sized", "at", ["n", "m"], ("st", &["off"]))?;
                assert_eq!(sums, vec![("a".into(), [5, 6]), ("b".into(), [1, 1])]);
                // A record without the skip field is counted; several values are skipped.
                tx.put(
                    "sized",
                    "s-5",
                    "u",
                    None,
                    &serde_json::json!({"at": "c", "n": 1, "m": 2}),
                )?;
                let sums = tx.sum_by("sized", "at", ["n", "m"], ("st", &["off", "on"]))?;
                assert_eq!(sums, vec![("c".into(), [1, 2])]);
                assert_eq!(tx.next_counter("c")?, 1);
                assert_eq!(tx.next_counter("c")?, 2);
                assert!(tx.delete("thing", "t-1")?);
                assert_eq!(tx.get::<Vec<i32>>("thing", "t-1")?, None);
                Ok::<_, StoreError>(())
            })
            .unwrap();
    }
}
