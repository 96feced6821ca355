//! DHCP lease records and where they persist.
//!
//! A [`Lease`] binds one address to one client MAC until a time (seconds since the Unix epoch).
//! [`LeaseStore`] is the persistence seam; [`SqliteLeaseStore`] keeps leases in one SQLite table
//! (`pxe_leases`), so the frontend's state database can hold them beside everything else. This
//! module decides nothing about allocation; that is the DHCP state machine's job.

use rusqlite::{params, Connection};
use std::net::Ipv4Addr;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum LeaseStoreError {
    #[error("lease database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("lease database row for {ip}: {what}")]
    BadRow { ip: String, what: String },
}

pub use mallee_proto::{BadMac, Mac};

/// Where a lease is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Offered in reply to DISCOVER, not yet requested.
    Offered,
    /// Acknowledged: the client owns the address until `expires_at`.
    Bound,
    /// A client reported the address in use by someone else (DECLINE); kept out of the pool.
    Declined,
}

impl LeaseState {
    fn as_str(self) -> &'static str {
        match self {
            LeaseState::Offered => "offered",
            LeaseState::Bound => "bound",
            LeaseState::Declined => "declined",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "offered" => Some(LeaseState::Offered),
            "bound" => Some(LeaseState::Bound),
            "declined" => Some(LeaseState::Declined),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub mac: Mac,
    pub state: LeaseState,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
}

impl Lease {
    pub fn is_live(&self, now: u64) -> bool {
        self.expires_at > now
    }
}

/// Persistence for leases: everything is written through, so a restarted server knows who owns
/// which address.
pub trait LeaseStore: Send {
    fn load(&mut self) -> Result<Vec<Lease>, LeaseStoreError>;
    fn put(&mut self, lease: &Lease) -> Result<(), LeaseStoreError>;
    fn remove(&mut self, ip: Ipv4Addr) -> Result<(), LeaseStoreError>;
}

/// Leases in the `pxe_leases` table of a SQLite database.
pub struct SqliteLeaseStore {
    conn: Connection,
}

impl SqliteLeaseStore {
    pub fn open(path: &Path) -> Result<Self, LeaseStoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // The frontend's state database is shared with the store's connections.
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Self::from_connection(conn)
    }

    /// A store that lives only as long as the value (tests, throwaway servers).
    pub fn in_memory() -> Result<Self, LeaseStoreError> {
        Self::from_connection(Connection::open_in_memory()?)
    }

    /// Keeps leases in an already open database (the frontend's state database), creating the
    /// `pxe_leases` table if it is missing.
    pub fn from_connection(conn: Connection) -> Result<Self, LeaseStoreError> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS pxe_leases (
                ip TEXT PRIMARY KEY,
                mac TEXT NOT NULL,
                state TEXT NOT NULL,
                expires_at INTEGER NOT NULL
            )",
        )?;
        Ok(Self { conn })
    }
}

impl LeaseStore for SqliteLeaseStore {
    fn load(&mut self) -> Result<Vec<Lease>, LeaseStoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT ip, mac, state, expires_at FROM pxe_leases ORDER BY ip")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut leases = Vec::new();
        for row in rows {
            let (ip, mac, state, expires_at) = row?;
            let bad = |what: String| LeaseStoreError::BadRow {
                ip: ip.clone(),
                what,
            };
            leases.push(Lease {
                ip: ip.parse().map_err(|_| bad("address".into()))?,
                mac: mac.parse().map_err(|e: BadMac| bad(e.to_string()))?,
                state: LeaseState::parse(&state).ok_or_else(|| bad(format!("state {state}")))?,
                expires_at: u64::try_from(expires_at).map_err(|_| bad("expiry".into()))?,
            });
        }
        Ok(leases)
    }

    fn put(&mut self, lease: &Lease) -> Result<(), LeaseStoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO pxe_leases (ip, mac, state, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![
                lease.ip.to_string(),
                lease.mac.to_string(),
                lease.state.as_str(),
                i64::try_from(lease.expires_at).unwrap_or(i64::MAX)
            ],
        )?;
        Ok(())
    }

    fn remove(&mut self, ip: Ipv4Addr) -> Result<(), LeaseStoreError> {
        self.conn
            .execute("DELETE FROM pxe_leases WHERE ip = ?1", [ip.to_string()])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parses_and_prints_back() {
        let mac: Mac = "52:54:00:AB:cd:01".parse().unwrap();
        assert_eq!(mac.0, [0x52, 0x54, 0, 0xab, 0xcd, 1]);
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:01");
        assert!("52:54:00:ab:cd".parse::<Mac>().is_err());
        assert!("52:54:00:ab:cd:01:02".parse::<Mac>().is_err());
        assert!("52:54:00:ab:cd:zz".parse::<Mac>().is_err());
    }

    #[test]
    fn leases_survive_reopening_the_database() {
        let dir = std::env::temp_dir().join(format!("mallee-leases-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        let _ = std::fs::remove_file(&path);
        let lease = Lease {
            ip: Ipv4Addr::new(10, 9, 0, 20),
            mac: Mac([2, 0, 0, 0, 0, 1]),
            state: LeaseState::Bound,
            expires_at: 1_800_000_000,
        };
        {
            let mut store = SqliteLeaseStore::open(&path).unwrap();
            store.put(&lease).unwrap();
            store
                .put(&Lease {
                    ip: Ipv4Addr::new(10, 9, 0, 21),
                    ..lease.clone()
                })
                .unwrap();
            store.remove(Ipv4Addr::new(10, 9, 0, 21)).unwrap();
        }
        let mut store = SqliteLeaseStore::open(&path).unwrap();
        assert_eq!(store.load().unwrap(), vec![lease]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn leases_live_in_the_frontends_state_database_beside_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let path = dir.path().join(crate::store::STATE_DB);
        let lease = Lease {
            ip: Ipv4Addr::new(10, 77, 0, 100),
            mac: Mac([2, 0, 0, 0, 0, 2]),
            state: LeaseState::Bound,
            expires_at: 1_800_000_000,
        };
        SqliteLeaseStore::open(&path).unwrap().put(&lease).unwrap();
        store.ensure_admin().unwrap();
        drop(store);
        // Reopening migrates the same file without touching the leases table, and back.
        let store = crate::store::Store::open(dir.path()).unwrap();
        assert!(store
            .list_users()
            .unwrap()
            .iter()
            .any(|u| u.name == "admin"));
        assert_eq!(
            SqliteLeaseStore::open(&path).unwrap().load().unwrap(),
            vec![lease]
        );
    }

    #[test]
    fn corrupt_row_is_an_error_not_a_panic() {
        let mut store = SqliteLeaseStore::in_memory().unwrap();
        store
            .conn
            .execute(
                "INSERT INTO pxe_leases VALUES ('10.0.0.1', 'nonsense', 'bound', 5)",
                [],
            )
            .unwrap();
        let err = store.load().unwrap_err();
        assert!(err.to_string().contains("nonsense"), "{err}");
    }
}
