//! The web console's signed-in sessions (`console_sessions`): one row per session, keyed by
//! the SHA-256 of its token (the token itself is only ever in the user's cookie), with the
//! session's CSRF token and when it was last used. A session is only good while its user
//! exists, is not disabled, and it has been used within the idle limit the caller gives. Making tokens and
//! checking them against requests is `console::session`'s.

use super::users::{user_at, user_columns_of};
use super::{Store, StoreError, User};
use rusqlite::{params, OptionalExtension, TransactionBehavior};

/// A live session: whose it is and the CSRF token its forms carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: User,
    pub csrf: String,
}

impl Store {
    /// Records a new session of `user` under the digest of its token, and forgets every
    /// session unused for `idle_ms` (so abandoned ones do not pile up).
    pub fn create_session(
        &self,
        token_sha256: &str,
        user: &str,
        csrf: &str,
        now_ms: i64,
        idle_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM console_sessions WHERE last_ms <= ?1",
            [now_ms - idle_ms],
        )?;
        tx.execute(
            "INSERT INTO console_sessions (token_sha256, user, csrf, created_ms, last_ms) VALUES (?1, ?2, ?3, ?4, ?4)",
            params![token_sha256, user, csrf, now_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The session under `token_sha256` when its user still exists, is not disabled, and it was used less than
    /// `idle_ms` ago; marks it used now. An idle one is deleted.
    pub fn session(
        &self,
        token_sha256: &str,
        now_ms: i64,
        idle_ms: i64,
    ) -> Result<Option<Session>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found = tx
            .query_row(
                &format!(
                    "SELECT s.csrf, s.last_ms, {} FROM console_sessions s JOIN users u ON u.name = s.user WHERE s.token_sha256 = ?1 AND u.disabled = 0",
                    user_columns_of("u")
                ),
                [token_sha256],
                |r| {
                    let csrf: String = r.get(0)?;
                    let last: i64 = r.get(1)?;
                    let user = user_at(r, 2)?;
                    Ok((csrf, last, user))
                },
            )
            .optional()?;
        let session = match found {
            Some((csrf, last, user)) if now_ms - last < idle_ms => {
                tx.execute(
                    "UPDATE console_sessions SET last_ms = ?2 WHERE token_sha256 = ?1",
                    params![token_sha256, now_ms],
                )?;
                Some(Session { user, csrf })
            }
            Some(_) => {
                tx.execute(
                    "DELETE FROM console_sessions WHERE token_sha256 = ?1",
                    [token_sha256],
                )?;
                None
            }
            None => None,
        };
        tx.commit()?;
        Ok(session)
    }

    /// Ends the session under `token_sha256` (nothing when there is none).
    pub fn delete_session(&self, token_sha256: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "DELETE FROM console_sessions WHERE token_sha256 = ?1",
            [token_sha256],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Role;

    const IDLE: i64 = 1_000;

    #[test]
    fn a_session_lives_while_used_within_the_idle_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create_user("alice", Role::User).unwrap();
        store
            .create_session("digest", "alice", "csrf1", 0, IDLE)
            .unwrap();
        let s = store.session("digest", 900, IDLE).unwrap().unwrap();
        assert_eq!((s.user.name.as_str(), s.csrf.as_str()), ("alice", "csrf1"));
        // Used at 900: still good at 1800, gone at 2800.
        assert!(store.session("digest", 1_800, IDLE).unwrap().is_some());
        assert!(store.session("digest", 2_800, IDLE).unwrap().is_none());
        assert!(store.session("digest", 2_801, 1_000_000).unwrap().is_none());
        assert!(store.session("other", 0, IDLE).unwrap().is_none());
    }

    #[test]
    fn a_new_session_sweeps_away_idle_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create_user("alice", Role::User).unwrap();
        store.create_session("old", "alice", "x", 0, IDLE).unwrap();
        store
            .create_session("new", "alice", "x", 5_000, IDLE)
            .unwrap();
        // Asked with a longer limit, the old one would still be good had it not been swept.
        assert!(store.session("old", 5_001, 1_000_000).unwrap().is_none());
        assert!(store.session("new", 5_001, 1_000_000).unwrap().is_some());
    }

    #[test]
    fn deleting_the_session_or_its_user_or_resetting_the_password_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create_user("alice", Role::User).unwrap();
        for token in ["a", "b", "c"] {
            store.create_session(token, "alice", "x", 0, IDLE).unwrap();
        }
        store.delete_session("a").unwrap();
        assert!(store.session("a", 1, IDLE).unwrap().is_none());
        assert!(store.session("b", 1, IDLE).unwrap().is_some());
        store.set_password_hash("alice", "$argon2id$...").unwrap();
        assert!(store.session("b", 1, IDLE).unwrap().is_none());
        store.create_session("d", "alice", "x", 0, IDLE).unwrap();
        store.delete_user("alice").unwrap();
        assert!(store.session("d", 1, IDLE).unwrap().is_none());
        // A user made again under the same name does not inherit old sessions.
        store.create_user("alice", Role::User).unwrap();
        assert!(store.session("c", 1, IDLE).unwrap().is_none());
        assert!(store.session("d", 1, IDLE).unwrap().is_none());
    }

    #[test]
    fn disabling_a_user_ends_its_sessions_and_none_of_a_disabled_user_is_live() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create_user("alice", Role::User).unwrap();
        store.create_session("a", "alice", "x", 0, IDLE).unwrap();
        store.set_user_disabled("alice", true).unwrap();
        assert!(store.session("a", 1, IDLE).unwrap().is_none());
        // A row made while disabled (or one that survived) is not live either...
        store.create_session("b", "alice", "x", 0, IDLE).unwrap();
        assert!(store.session("b", 1, IDLE).unwrap().is_none());
        // ...and enabling the user does not bring back the sessions disabling ended.
        store.set_user_disabled("alice", false).unwrap();
        assert!(store.session("a", 2, IDLE).unwrap().is_none());
        assert!(store.session("b", 2, IDLE).unwrap().is_some());
    }
}
