//! Users and their access key pairs.

use super::{now_ms, Store, StoreError};
use rand::distributions::{Alphanumeric, DistString};
use rand::Rng;
use rusqlite::{params, OptionalExtension};

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
}

fn row_to_user(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let role: String = r.get(3)?;
    Ok(User {
        name: r.get(0)?,
        access_key: r.get(1)?,
        secret: r.get(2)?,
        role: Role::parse(&role).unwrap_or(Role::User),
    })
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
        let conn = self.conn();
        let n = conn.execute(
            "INSERT OR IGNORE INTO users (name, access_key, secret, role, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![name, access_key, secret, role.as_str(), now_ms()],
        )?;
        if n == 0 {
            return Err(StoreError::UserExists(name.to_string()));
        }
        Ok(User {
            name: name.to_string(),
            access_key,
            secret,
            role,
        })
    }

    /// Every user, by name.
    pub fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare("SELECT name, access_key, secret, role FROM users ORDER BY name")?;
        let users = stmt.query_map([], row_to_user)?.collect::<Result<_, _>>()?;
        Ok(users)
    }

    /// Deletes a user (its buckets stay, owned by the name, visible to the admin).
    pub fn delete_user(&self, name: &str) -> Result<(), StoreError> {
        let n = self
            .conn()
            .execute("DELETE FROM users WHERE name = ?1", [name])?;
        if n == 0 {
            return Err(StoreError::NoSuchUser(name.to_string()));
        }
        Ok(())
    }

    /// The user holding `access_key`.
    pub fn user_by_access_key(&self, access_key: &str) -> Result<Option<User>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT name, access_key, secret, role FROM users WHERE access_key = ?1",
        )?;
        let user = stmt.query_row([access_key], row_to_user).optional()?;
        Ok(user)
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
