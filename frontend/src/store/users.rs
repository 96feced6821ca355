//! Users, their access key pairs, and the AWS identity each one has: a 12-digit account id
//! and an IAM-style user id, both derived from the user's name (records name their owner, so
//! a record's account id needs no lookup, and a store made before ids existed needs no
//! migration). Each user is an account of its own, as each owns its resources alone.

use super::{now_ms, Reads, Store, StoreError};
use rand::distributions::{Alphanumeric, DistString};
use rand::Rng;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use sha2::{Digest, Sha256};

/// What a user may do: the admin sees everything; a node reads every bucket (images); a user
/// sees only what it owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    User,
    Node,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Node => "node",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            "node" => Some(Role::Node),
            _ => None,
        }
    }
}

/// A user and its key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub access_key: String,
    pub secret: String,
    pub role: Role,
    pub created_ms: i64,
}

impl User {
    /// The user's 12-digit account id (see [`account_id`]).
    pub fn account_id(&self) -> String {
        account_id(&self.name)
    }
}

const USER_COLUMNS: &str = "name, access_key, secret, role, created_ms";

/// [`USER_COLUMNS`] of the table aliased `alias` in a join.
pub(super) fn user_columns_of(alias: &str) -> String {
    (USER_COLUMNS.split(", "))
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn row_to_user(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    user_at(r, 0)
}

/// The user in the columns of `r` from `at` on, in [`USER_COLUMNS`] order.
pub(super) fn user_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<User> {
    let role: String = r.get(at + 3)?;
    Ok(User {
        name: r.get(at)?,
        access_key: r.get(at + 1)?,
        secret: r.get(at + 2)?,
        role: Role::parse(&role).unwrap_or(Role::User),
        created_ms: r.get(at + 4)?,
    })
}

fn name_digest(purpose: &str, name: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"mallee ");
    h.update(purpose.as_bytes());
    h.update([0]);
    h.update(name.as_bytes());
    h.finalize().into()
}

/// The account id of the user named `name`: twelve decimal digits, as AWS account ids are,
/// the same for that name in every store and release (a hash of it, so records of a deleted
/// user still show one). `Store::create_user` refuses a name whose id another user has.
pub fn account_id(name: &str) -> String {
    let d = name_digest("account", name);
    let n = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    format!("{:012}", n % 1_000_000_000_000)
}

/// The user's unique id as IAM shows it (`AIDA` and 17 characters of A–Z, 2–7, like an IAM
/// user's), derived from the name like [`account_id`].
pub fn iam_user_id(name: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let d = name_digest("user", name);
    let tail: String = d[..17]
        .iter()
        .map(|b| ALPHABET[usize::from(b % 32)] as char)
        .collect();
    format!("AIDA{tail}")
}

/// Whether `s` has the shape of an account id (twelve ASCII digits).
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn new_key_pair() -> (String, String) {
    let mut rng = rand::thread_rng();
    let access: String = (0..16)
        .map(|_| {
            let c = rng.gen_range(0..36u8);
            (if c < 10 { b'0' + c } else { b'A' + c - 10 }) as char
        })
        .collect();
    (
        format!("MKIA{access}"),
        Alphanumeric.sample_string(&mut rng, 40),
    )
}

impl Store {
    /// Creates a user with a fresh key pair.
    pub fn create_user(&self, name: &str, role: Role) -> Result<User, StoreError> {
        let (access_key, secret) = new_key_pair();
        let created_ms = now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let account = account_id(name);
        let names: Vec<String> = tx
            .prepare("SELECT name FROM users")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if let Some(other) = names
            .iter()
            .find(|n| *n != name && account_id(n) == account)
        {
            return Err(StoreError::AccountIdTaken {
                name: name.to_string(),
                account,
                other: other.clone(),
            });
        }
        let n = tx.execute(
            "INSERT OR IGNORE INTO users (name, access_key, secret, role, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![name, access_key, secret, role.as_str(), created_ms],
        )?;
        if n == 0 {
            return Err(StoreError::UserExists(name.to_string()));
        }
        tx.commit()?;
        Ok(User {
            name: name.to_string(),
            access_key,
            secret,
            role,
            created_ms,
        })
    }

    /// Every user, by name.
    pub fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))?;
        let users = stmt.query_map([], row_to_user)?.collect::<Result<_, _>>()?;
        Ok(users)
    }

    /// The user named `name`.
    pub fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"))?;
        Ok(stmt.query_row([name], row_to_user).optional()?)
    }

    /// The user whose account id is `account`.
    pub fn user_by_account(&self, account: &str) -> Result<Option<User>, StoreError> {
        if !is_account_id(account) {
            return Ok(None);
        }
        Ok(self
            .list_users()?
            .into_iter()
            .find(|u| u.account_id() == account))
    }

    /// Deletes a user and ends its console sessions (its buckets stay, owned by the name,
    /// visible to the admin).
    pub fn delete_user(&self, name: &str) -> Result<(), StoreError> {
        self.change_user(name, "DELETE FROM users WHERE name = ?1", &[], true)
    }

    /// Runs `sql` (with `name` as `?1` and `more` after it) on `name`'s row in one
    /// transaction, `NoSuchUser` when it touches none; with `end_sessions`, the user's console
    /// sessions go in the same transaction.
    fn change_user(
        &self,
        name: &str,
        sql: &str,
        more: &[&dyn rusqlite::ToSql],
        end_sessions: bool,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut args: Vec<&dyn rusqlite::ToSql> = vec![&name];
        args.extend_from_slice(more);
        if tx.execute(sql, args.as_slice())? == 0 {
            return Err(StoreError::NoSuchUser(name.to_string()));
        }
        if end_sessions {
            tx.execute("DELETE FROM console_sessions WHERE user = ?1", [name])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Sets the console password of `name` (`hash`: an Argon2id PHC string) and ends its
    /// console sessions, so a reset password locks out whoever held the old one.
    pub fn set_password_hash(&self, name: &str, hash: &str) -> Result<(), StoreError> {
        let sql = "UPDATE users SET password_hash = ?2 WHERE name = ?1";
        self.change_user(name, sql, &[&hash], true)
    }

    /// The console password hash of `name`; `None` when there is no such user or it has no
    /// password.
    pub fn password_hash(&self, name: &str) -> Result<Option<String>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached("SELECT password_hash FROM users WHERE name = ?1")?;
        let hash: Option<Option<String>> = stmt.query_row([name], |r| r.get(0)).optional()?;
        Ok(hash.flatten())
    }

    /// Gives `name` a fresh access key and secret in place of its old ones, which stop
    /// working at once (every request looks its key up here); the user with the new pair.
    pub fn rotate_access_key(&self, name: &str) -> Result<User, StoreError> {
        let (access_key, secret) = new_key_pair();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE users SET access_key = ?2, secret = ?3 WHERE name = ?1",
            params![name, access_key, secret],
        )?;
        if n == 0 {
            return Err(StoreError::NoSuchUser(name.to_string()));
        }
        let user = tx.query_row(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"),
            [name],
            row_to_user,
        )?;
        tx.commit()?;
        Ok(user)
    }

    /// The user holding `access_key`, unless it is disabled: a disabled user's key finds no
    /// one, so every API refuses it as it refuses a key that does not exist (as AWS answers
    /// an inactive key).
    pub fn user_by_access_key(&self, access_key: &str) -> Result<Option<User>, StoreError> {
        user_by_access_key(&self.reader(), access_key)
    }

    /// Disables `name` (its keys and console sign-in stop working and its console sessions
    /// end, all at once) or enables it again with the same keys; nothing of it is deleted.
    pub fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<(), StoreError> {
        let sql = "UPDATE users SET disabled = ?2 WHERE name = ?1";
        self.change_user(name, sql, &[&disabled], disabled)
    }

    /// Whether `name` is disabled (`false` when there is no such user).
    pub fn user_disabled(&self, name: &str) -> Result<bool, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached("SELECT disabled FROM users WHERE name = ?1")?;
        let disabled: Option<bool> = stmt.query_row([name], |r| r.get(0)).optional()?;
        Ok(disabled.unwrap_or(false))
    }

    /// Creates the `admin` user if there is none; returns it when newly created.
    pub fn ensure_admin(&self) -> Result<Option<User>, StoreError> {
        let exists: bool = self.conn().query_row(
            "SELECT EXISTS(SELECT 1 FROM users WHERE name = 'admin')",
            [],
            |r| r.get(0),
        )?;
        if exists {
            return Ok(None);
        }
        self.create_user("admin", Role::Admin).map(Some)
    }
}

impl Reads<'_> {
    /// [`Store::user_by_access_key`], in this read.
    pub fn user_by_access_key(&self, access_key: &str) -> Result<Option<User>, StoreError> {
        user_by_access_key(self.conn, access_key)
    }
}

fn user_by_access_key(conn: &Connection, access_key: &str) -> Result<Option<User>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE access_key = ?1 AND disabled = 0"
    ))?;
    let user = stmt.query_row([access_key], row_to_user).optional()?;
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_twelve_digits_and_stable_for_a_name() {
        let a = account_id("alice");
        assert!(is_account_id(&a), "{a}");
        assert_eq!(a, account_id("alice"));
        assert_ne!(a, account_id("bob"));
        assert!(!is_account_id("12345678901"));
        assert!(!is_account_id("12345678901x"));
    }

    #[test]
    fn the_derivation_of_ids_never_changes() {
        // A change here would change every owner id of a running cloud. Computed apart from
        // this code, with Python's hashlib:
        //   d = sha256(b"mallee account\0admin").digest()
        //   "%012d" % (int.from_bytes(d[:8], "big") % 10**12)
        //   d = sha256(b"mallee user\0admin").digest()
        //   "AIDA" + "".join("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[b % 32] for b in d[:17])
        assert_eq!(account_id("admin"), "924102936198");
        assert_eq!(iam_user_id("admin"), "AIDAOWOHI4WYQ24DT2G2O");
    }

    #[test]
    fn iam_user_ids_look_like_aws_ones() {
        let id = iam_user_id("alice");
        assert_eq!(id.len(), 21);
        assert!(id.starts_with("AIDA"));
        assert!(id[4..]
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
        assert_ne!(id, iam_user_id("bob"));
    }

    #[test]
    fn a_rotated_key_replaces_the_old_one_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = store.create_user("carol", Role::User).unwrap();
        let new = store.rotate_access_key("carol").unwrap();
        assert_ne!(new.access_key, old.access_key);
        assert_ne!(new.secret, old.secret);
        assert_eq!((new.name.as_str(), new.role), ("carol", Role::User));
        assert_eq!(store.user_by_access_key(&old.access_key).unwrap(), None);
        assert_eq!(
            store.user_by_access_key(&new.access_key).unwrap(),
            Some(new)
        );
        assert!(matches!(
            store.rotate_access_key("dave"),
            Err(StoreError::NoSuchUser(_))
        ));
    }

    #[test]
    fn a_disabled_users_key_finds_no_one_until_it_is_enabled_with_the_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let carol = store.create_user("carol", Role::User).unwrap();
        assert!(!store.user_disabled("carol").unwrap());
        store.set_user_disabled("carol", true).unwrap();
        assert!(store.user_disabled("carol").unwrap());
        assert_eq!(store.user_by_access_key(&carol.access_key).unwrap(), None);
        // Nothing of it is gone: found by name, listed, its password kept.
        assert_eq!(store.user_by_name("carol").unwrap(), Some(carol.clone()));
        assert_eq!(store.list_users().unwrap(), std::slice::from_ref(&carol));
        store.set_user_disabled("carol", false).unwrap();
        assert!(!store.user_disabled("carol").unwrap());
        assert_eq!(
            store.user_by_access_key(&carol.access_key).unwrap(),
            Some(carol)
        );
        assert!(matches!(
            store.set_user_disabled("dave", true),
            Err(StoreError::NoSuchUser(_))
        ));
        assert!(!store.user_disabled("dave").unwrap());
    }

    #[test]
    fn users_are_found_by_name_and_by_account_id_with_their_creation_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let made = store.create_user("carol", Role::User).unwrap();
        assert!(made.created_ms > 0);
        let by_name = store.user_by_name("carol").unwrap().unwrap();
        assert_eq!(by_name, made);
        let by_account = store.user_by_account(&made.account_id()).unwrap();
        assert_eq!(by_account.as_ref(), Some(&made));
        assert_eq!(store.user_by_account("000000000000").unwrap(), None);
        assert_eq!(store.user_by_account("carol").unwrap(), None);
        assert_eq!(store.user_by_name("dave").unwrap(), None);
    }
}
