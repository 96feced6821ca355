//! Console passwords: hashing with Argon2id (the `argon2` crate's defaults, stored as a PHC
//! string with its salt and parameters), checking a password against a stored hash, what a
//! new password must be, and the random initial password the admin gets on first boot. It
//! does not store anything (`store::users` does) or decide who may sign in (`console`).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::distributions::{Alphanumeric, DistString};
use std::sync::LazyLock;

/// The fewest characters a password may have.
pub const MIN_LEN: usize = 10;
/// The most: a bound on the work one sign-in costs.
pub const MAX_LEN: usize = 256;

/// Why a password cannot be set.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("a password needs {MIN_LEN} to {MAX_LEN} characters (got {0})")]
    Length(usize),
    #[error("hashing the password: {0}")]
    Hash(argon2::password_hash::Error),
}

/// The Argon2id PHC string of `password` with a fresh random salt, once it is long enough.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let len = password.chars().count();
    if !(MIN_LEN..=MAX_LEN).contains(&len) {
        return Err(PasswordError::Length(len));
    }
    let salt = SaltString::generate(&mut OsRng);
    let phc = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(PasswordError::Hash)?;
    Ok(phc.to_string())
}

/// A hash no password matches, checked against when a user has none, so a sign-in takes as
/// long whether or not the user exists.
static DECOY: LazyLock<String> = LazyLock::new(|| {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(
            Alphanumeric
                .sample_string(&mut rand::rngs::OsRng, 32)
                .as_bytes(),
            &salt,
        )
        .map(|h| h.to_string())
        .unwrap_or_default()
});

/// Whether `password` matches `stored` (a PHC string); `None` (no user, or no password set)
/// matches nothing but costs the same.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    if password.len() > MAX_LEN * 4 {
        return false;
    }
    let (phc, real) = match stored {
        Some(s) => (s, true),
        None => (DECOY.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let matched = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    matched && real
}

/// A random password for the admin's first sign-in: 24 letters and digits (~142 bits).
pub fn generate() -> String {
    Alphanumeric.sample_string(&mut rand::rngs::OsRng, 24)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_password_verifies_and_others_do_not() {
        let phc = hash("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert!(verify("correct horse battery", Some(&phc)));
        assert!(!verify("correct horse batterY", Some(&phc)));
        assert!(!verify("", Some(&phc)));
        assert!(!verify("correct horse battery", Some("not a phc string")));
    }

    #[test]
    fn the_same_password_hashes_differently_each_time() {
        assert_ne!(hash("0123456789").unwrap(), hash("0123456789").unwrap());
    }

    #[test]
    fn without_a_stored_hash_nothing_matches() {
        assert!(!verify("", None));
        assert!(!verify("anything at all", None));
    }

    #[test]
    fn short_and_huge_passwords_are_refused() {
        assert!(matches!(hash("short"), Err(PasswordError::Length(5))));
        assert!(matches!(
            hash(&"x".repeat(300)),
            Err(PasswordError::Length(300))
        ));
    }

    #[test]
    fn generated_passwords_are_long_random_and_hashable() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert!(verify(&a, Some(&hash(&a).unwrap())));
    }
}
