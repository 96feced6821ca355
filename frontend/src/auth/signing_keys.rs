//! A bounded memo of SigV4 derived signing keys: deriving one takes four HMACs (a fifth signs
//! the request), and a client signs every request of a day with the same key. An entry is found
//! by access key, date, region and service, and serves only while the secret it was derived
//! from is the secret the caller passes — the one it just looked up for this request — compared
//! by SHA-256 digest in constant time. So the store stays the one authority on keys: a
//! deleted, disabled or rotated key is refused by that lookup before this memo is asked, and a
//! new secret never meets a key derived from the old one. No secret is kept here. It does not
//! look anything up or check any signature itself. The derivation ([`signing_key`]) lives here
//! too; `sigv4` re-exports it.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use subtle::ConstantTimeEq;

/// Entries the process-wide memo holds at most (a few per active access key and day).
pub const CAPACITY: usize = 1024;

/// Derived signing keys by `access-key/date/region/service`.
pub struct SigningKeys {
    entries: Mutex<HashMap<String, Entry>>,
    capacity: usize,
}

struct Entry {
    /// SHA-256 of the secret `key` was derived from.
    secret_sha256: [u8; 32],
    key: [u8; 32],
}

impl SigningKeys {
    /// An empty memo holding at most `capacity` keys (at least one).
    pub fn new(capacity: usize) -> SigningKeys {
        SigningKeys {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The signing key of `secret` (held by `access_key`) for `date`, `region` and
    /// `service`: the same as [`signing_key`], derived only when no entry of this secret has it.
    pub fn get(
        &self,
        access_key: &str,
        secret: &str,
        date: &str,
        region: &str,
        service: &str,
    ) -> [u8; 32] {
        let secret_sha256: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let id = format!("{access_key}/{date}/{region}/{service}");
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = entries.get(&id) {
            if bool::from(e.secret_sha256.ct_eq(&secret_sha256)) {
                return e.key;
            }
        }
        let key = signing_key(secret, date, region, service);
        // Full: start again (a day's worth of active keys refills it with one derivation each).
        if entries.len() >= self.capacity && !entries.contains_key(&id) {
            entries.clear();
        }
        entries.insert(id, Entry { secret_sha256, key });
        key
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// HMAC-SHA256.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The derived signing key for one day, region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac_sha256(&k, region.as_bytes());
    let k = hmac_sha256(&k, service.as_bytes());
    hmac_sha256(&k, b"aws4_request")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    #[test]
    fn a_memoized_key_is_the_derived_key() {
        let keys = SigningKeys::new(8);
        let derived = signing_key(SECRET, "20150830", "us-east-1", "iam");
        assert_eq!(
            keys.get("AK", SECRET, "20150830", "us-east-1", "iam"),
            derived
        );
        assert_eq!(
            keys.get("AK", SECRET, "20150830", "us-east-1", "iam"),
            derived
        );
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn another_secret_for_the_same_access_key_gets_its_own_key() {
        let keys = SigningKeys::new(8);
        let old = keys.get("AK", SECRET, "20150830", "us-east-1", "s3");
        let new = keys.get("AK", "rotated", "20150830", "us-east-1", "s3");
        assert_ne!(old, new);
        assert_eq!(new, signing_key("rotated", "20150830", "us-east-1", "s3"));
        // The old secret's key is gone, not served to the new secret or kept beside it.
        assert_eq!(keys.len(), 1);
        assert_eq!(keys.get("AK", SECRET, "20150830", "us-east-1", "s3"), old);
    }

    #[test]
    fn date_region_and_service_each_name_another_key() {
        let keys = SigningKeys::new(8);
        let base = keys.get("AK", SECRET, "20150830", "us-east-1", "s3");
        for (date, region, service) in [
            ("20150831", "us-east-1", "s3"),
            ("20150830", "eu-west-1", "s3"),
            ("20150830", "us-east-1", "ec2"),
        ] {
            let k = keys.get("AK", SECRET, date, region, service);
            assert_ne!(k, base);
            assert_eq!(k, signing_key(SECRET, date, region, service));
        }
        assert_eq!(keys.len(), 4);
    }

    #[test]
    fn it_never_holds_more_than_its_capacity() {
        let keys = SigningKeys::new(3);
        for i in 0..10 {
            let key = keys.get(&format!("AK{i}"), SECRET, "20150830", "us-east-1", "s3");
            assert_eq!(key, signing_key(SECRET, "20150830", "us-east-1", "s3"));
            assert!(keys.len() <= 3, "{} entries", keys.len());
        }
        assert!(!keys.is_empty());
    }
}
