//! Versioned schema migrations, applied in order inside one transaction each; the schema
//! version lives in SQLite's `user_version`.

use rusqlite::{Connection, TransactionBehavior};

const MIGRATIONS: &[&str] = &[
    // 1: users, buckets, objects, multipart uploads.
    "CREATE TABLE users (
        name TEXT PRIMARY KEY,
        access_key TEXT NOT NULL UNIQUE,
        secret TEXT NOT NULL,
        role TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE buckets (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE objects (
        bucket TEXT NOT NULL REFERENCES buckets(name),
        key TEXT NOT NULL,
        blob TEXT NOT NULL,
        size INTEGER NOT NULL,
        etag TEXT NOT NULL,
        md5 TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        content_type TEXT,
        metadata TEXT NOT NULL,
        modified_ms INTEGER NOT NULL,
        PRIMARY KEY (bucket, key)
    ) WITHOUT ROWID;
    CREATE TABLE uploads (
        upload_id TEXT PRIMARY KEY,
        bucket TEXT NOT NULL REFERENCES buckets(name),
        key TEXT NOT NULL,
        content_type TEXT,
        metadata TEXT NOT NULL,
        initiated_ms INTEGER NOT NULL
    );
    CREATE TABLE parts (
        upload_id TEXT NOT NULL REFERENCES uploads(upload_id),
        part_number INTEGER NOT NULL,
        blob TEXT NOT NULL,
        size INTEGER NOT NULL,
        etag TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        modified_ms INTEGER NOT NULL,
        PRIMARY KEY (upload_id, part_number)
    ) WITHOUT ROWID;",
    // 2: cloud records (images, instances, key pairs, groups, addresses, volumes, nodes...):
    // one JSON document per record, owner-scoped, names unique per kind and owner.
    "CREATE TABLE cloud (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        owner TEXT NOT NULL,
        name TEXT,
        body TEXT NOT NULL,
        PRIMARY KEY (kind, id)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX cloud_names ON cloud (kind, owner, name) WHERE name IS NOT NULL;
    CREATE INDEX cloud_owners ON cloud (kind, owner, id);",
    // 3: the audit log (`store::audit`): one row per recorded call, newest = highest id.
    // `resources` is a JSON array of strings; `code` is set when `outcome` is 'error'.
    "CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        user TEXT NOT NULL,
        action TEXT NOT NULL,
        resources TEXT NOT NULL,
        source TEXT NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'error')),
        code TEXT,
        request_id TEXT NOT NULL
    );",
    // 4: the web console (`console`): a user's password as an Argon2id PHC string (none: the
    // user cannot sign in), and signed-in sessions, each stored as the SHA-256 of its token.
    "ALTER TABLE users ADD COLUMN password_hash TEXT;
    CREATE TABLE console_sessions (
        token_sha256 TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        csrf TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        last_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX console_sessions_users ON console_sessions (user);",
    // 5: a disabled user (1) keeps its records and keys but cannot authenticate or sign in.
    "ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;",
    // 6: small objects' bytes (`inline_blobs`), by the blob id their object row names.
    "CREATE TABLE inline_blobs (id TEXT PRIMARY KEY, data BLOB NOT NULL);",
];

/// Brings the schema up to date; returns the version reached.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<usize> {
    let current: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(MIGRATIONS.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_is_a_no_op() {
        let mut c = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut c).unwrap(), MIGRATIONS.len());
        assert_eq!(migrate(&mut c).unwrap(), MIGRATIONS.len());
        let v: usize = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len());
    }
}
