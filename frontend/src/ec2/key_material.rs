//! Key material of EC2 key pairs: making a pair as CreateKeyPair does (RSA 2048 with its
//! private key as PKCS#1 PEM, or ed25519 with its private key in OpenSSH format), reading the
//! public keys ImportKeyPair takes (an OpenSSH line, an RFC 4716 block, or a DER / PEM
//! SubjectPublicKeyInfo; RSA of 1024 to 4096 bits and ed25519, as EC2 takes), and the
//! fingerprint EC2 shows for each:
//!
//! | key | made by CreateKeyPair | imported |
//! |---|---|---|
//! | RSA | SHA-1 of the private key as DER PKCS#8, colon hex | MD5 of the public key as DER SubjectPublicKeyInfo, colon hex |
//! | ed25519 | SHA-256 of the OpenSSH public key blob, base64 with `=` padding | the same |
//!
//! (`ssh-keygen -l` prints the ed25519 digest without the padding, and its `-E md5` hashes
//! the OpenSSH blob, not the DER key: neither is what EC2 shows.) No state and no API here:
//! `keypairs` stores the public half and answers; the private half is never kept.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use md5::Md5;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, Mpint};

/// The modulus size of the RSA keys CreateKeyPair makes (EC2's).
pub const RSA_BITS: usize = 2048;
/// The RSA sizes ImportKeyPair takes.
pub const RSA_IMPORT_BITS: std::ops::RangeInclusive<usize> = 1024..=4096;

/// The two kinds of key EC2 makes and takes (`KeyType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa,
    Ed25519,
}

impl KeyType {
    /// The `KeyType` value: `rsa` or `ed25519`.
    pub fn parse(s: &str) -> Option<KeyType> {
        match s {
            "rsa" => Some(KeyType::Rsa),
            "ed25519" => Some(KeyType::Ed25519),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Rsa => "rsa",
            KeyType::Ed25519 => "ed25519",
        }
    }
}

/// A public key and what EC2 shows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub key_type: KeyType,
    /// `ssh-rsa AAAA…` / `ssh-ed25519 AAAA…`, no comment: what an instance's metadata shows
    /// (followed by the key pair's name) and `DescribeKeyPairs` gives as `publicKey`.
    pub openssh: String,
    pub fingerprint: String,
}

/// A key pair CreateKeyPair just made.
pub struct NewKeyPair {
    pub public: PublicKey,
    /// The private key for the caller: PKCS#1 PEM (RSA) or OpenSSH (ed25519).
    pub private_pem: String,
}

/// Why a key could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is not an OpenSSH public key, an RFC 4716 public key or a DER public key")]
    Unreadable,
    #[error("{0} keys are not supported; use an RSA or ed25519 key")]
    UnsupportedAlgorithm(String),
    #[error("RSA keys of {0} bits are not supported; use 1024 to 4096 bits")]
    RsaSize(usize),
    #[error("making or encoding the key failed: {0}")]
    Encoding(String),
}

fn encoding(e: impl std::fmt::Display) -> KeyError {
    KeyError::Encoding(e.to_string())
}

/// Makes a key pair of `key_type` from the system's random source; `comment` goes into an
/// OpenSSH private key.
pub fn generate(key_type: KeyType, comment: &str) -> Result<NewKeyPair, KeyError> {
    let mut rng = rand::rngs::OsRng;
    match key_type {
        KeyType::Rsa => rsa_pair(&RsaPrivateKey::new(&mut rng, RSA_BITS).map_err(encoding)?),
        KeyType::Ed25519 => {
            let mut key =
                ssh_key::PrivateKey::random(&mut rng, Algorithm::Ed25519).map_err(encoding)?;
            key.set_comment(comment);
            ed25519_pair(&key)
        }
    }
}

/// What CreateKeyPair answers for the RSA key `key`.
fn rsa_pair(key: &RsaPrivateKey) -> Result<NewKeyPair, KeyError> {
    let pkcs8 = key.to_pkcs8_der().map_err(encoding)?;
    let private_pem = key.to_pkcs1_pem(LineEnding::LF).map_err(encoding)?;
    let public = PublicKey {
        key_type: KeyType::Rsa,
        openssh: rsa_openssh(&key.to_public_key())?,
        fingerprint: colon_hex(&Sha1::digest(pkcs8.as_bytes())),
    };
    Ok(NewKeyPair {
        public,
        private_pem: private_pem.to_string(),
    })
}

/// What CreateKeyPair answers for the ed25519 key `key`.
fn ed25519_pair(key: &ssh_key::PrivateKey) -> Result<NewKeyPair, KeyError> {
    let public = read_key_data(key.public_key().key_data())?;
    let private_pem = key.to_openssh(ssh_key::LineEnding::LF).map_err(encoding)?;
    Ok(NewKeyPair {
        public,
        private_pem: private_pem.to_string(),
    })
}

/// Reads a public key as ImportKeyPair receives it (the material after the client's base64
/// is undone): an OpenSSH line, an RFC 4716 block, a PEM `PUBLIC KEY`, or DER (raw or
/// base64).
pub fn read_public(material: &[u8]) -> Result<PublicKey, KeyError> {
    if material.first() == Some(&0x30) {
        return read_der(material);
    }
    let text = std::str::from_utf8(material)
        .map_err(|_| KeyError::Unreadable)?
        .trim();
    if text.starts_with("---- BEGIN SSH2 PUBLIC KEY ----") {
        let blob = rfc4716_blob(text).ok_or(KeyError::Unreadable)?;
        let key = ssh_key::PublicKey::from_bytes(&blob).map_err(|_| KeyError::Unreadable)?;
        return read_key_data(key.key_data());
    }
    if text.starts_with("-----BEGIN PUBLIC KEY-----") {
        let der = pem_body(text).ok_or(KeyError::Unreadable)?;
        return read_der(&der);
    }
    if let Some(der) = B64.decode(text).ok().filter(|d| d.first() == Some(&0x30)) {
        return read_der(&der);
    }
    // The algorithm named in front is checked against the blob's own.
    let key = ssh_key::PublicKey::from_openssh(text).map_err(|_| {
        match text.split_whitespace().next() {
            Some(kind)
                if kind.contains("ecdsa") || kind.contains("dss") || kind.contains("sk-") =>
            {
                KeyError::UnsupportedAlgorithm(kind.to_string())
            }
            _ => KeyError::Unreadable,
        }
    })?;
    read_key_data(key.key_data())
}

/// The RSA or ed25519 key in `data`, fingerprinted as an imported key.
fn read_key_data(data: &KeyData) -> Result<PublicKey, KeyError> {
    match data {
        KeyData::Ed25519(ed) => {
            let openssh = ssh_key::PublicKey::new(data.clone(), "")
                .to_openssh()
                .map_err(encoding)?;
            Ok(ed25519_public(&ed.0, openssh))
        }
        KeyData::Rsa(rsa) => {
            let positive = |m: &Mpint| {
                m.as_positive_bytes()
                    .map(BigUint::from_bytes_be)
                    .ok_or(KeyError::Unreadable)
            };
            let n = positive(&rsa.n)?;
            if !RSA_IMPORT_BITS.contains(&n.bits()) {
                return Err(KeyError::RsaSize(n.bits()));
            }
            let key = RsaPublicKey::new(n, positive(&rsa.e)?).map_err(|_| KeyError::Unreadable)?;
            imported_rsa(&key)
        }
        other => Err(KeyError::UnsupportedAlgorithm(
            other.algorithm().as_str().to_string(),
        )),
    }
}

/// An RSA public key as ImportKeyPair keeps it.
fn imported_rsa(key: &RsaPublicKey) -> Result<PublicKey, KeyError> {
    let bits = key.n().bits();
    if !RSA_IMPORT_BITS.contains(&bits) {
        return Err(KeyError::RsaSize(bits));
    }
    let spki = key.to_public_key_der().map_err(encoding)?;
    Ok(PublicKey {
        key_type: KeyType::Rsa,
        openssh: rsa_openssh(key)?,
        fingerprint: colon_hex(&Md5::digest(spki.as_bytes())),
    })
}

/// An ed25519 public key (its 32 bytes) with its OpenSSH line.
fn ed25519_public(key: &[u8], openssh: String) -> PublicKey {
    // The OpenSSH blob: string "ssh-ed25519", string key.
    let mut blob = Vec::with_capacity(51);
    for part in [b"ssh-ed25519".as_slice(), key] {
        blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
        blob.extend_from_slice(part);
    }
    PublicKey {
        key_type: KeyType::Ed25519,
        openssh,
        fingerprint: B64.encode(Sha256::digest(&blob)),
    }
}

/// A DER SubjectPublicKeyInfo holding an RSA or ed25519 key.
fn read_der(der: &[u8]) -> Result<PublicKey, KeyError> {
    use rsa::pkcs8::spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};
    const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
    let info = SubjectPublicKeyInfoRef::try_from(der).map_err(|_| KeyError::Unreadable)?;
    if info.algorithm.oid == ED25519 {
        let raw = info
            .subject_public_key
            .as_bytes()
            .filter(|k| k.len() == 32)
            .ok_or(KeyError::Unreadable)?;
        let data = KeyData::Ed25519(ssh_key::public::Ed25519PublicKey(
            raw.try_into().map_err(|_| KeyError::Unreadable)?,
        ));
        return read_key_data(&data);
    }
    let key = RsaPublicKey::from_public_key_der(der).map_err(|_| {
        KeyError::UnsupportedAlgorithm(format!("DER key of algorithm {}", info.algorithm.oid))
    })?;
    imported_rsa(&key)
}

/// `ssh-rsa AAAA…` for `key`.
fn rsa_openssh(key: &RsaPublicKey) -> Result<String, KeyError> {
    let mpint = |n: &BigUint| Mpint::from_positive_bytes(&n.to_bytes_be()).map_err(encoding);
    let data = KeyData::Rsa(ssh_key::public::RsaPublicKey {
        e: mpint(key.e())?,
        n: mpint(key.n())?,
    });
    ssh_key::PublicKey::new(data, "")
        .to_openssh()
        .map_err(encoding)
}

/// The key blob of an RFC 4716 block: header lines (`Tag: value`, continued by a trailing
/// backslash) are skipped, the rest is base64.
fn rfc4716_blob(text: &str) -> Option<Vec<u8>> {
    let mut lines = text.lines().map(str::trim);
    lines.next()?;
    let mut body = String::new();
    let mut continued = false;
    for line in lines {
        if line.starts_with("---- END SSH2 PUBLIC KEY ----") {
            return B64.decode(body).ok();
        }
        if continued || line.contains(':') {
            continued = line.ends_with('\\');
            continue;
        }
        body.push_str(line);
    }
    None
}

/// The DER inside a PEM block.
fn pem_body(text: &str) -> Option<Vec<u8>> {
    let body: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    B64.decode(body).ok()
}

/// `aa:bb:…`, as `openssl dgst -c` prints a digest.
fn colon_hex(digest: &[u8]) -> String {
    digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
#[path = "key_material_tests.rs"]
mod tests;
