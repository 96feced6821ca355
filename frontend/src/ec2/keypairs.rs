//! Key pairs: CreateKeyPair generates a real ed25519 key (the private half is returned once,
//! in OpenSSH format, and never stored), ImportKeyPair takes an OpenSSH public key line (the
//! clients send it base64), DescribeKeyPairs, DeleteKeyPair.

use super::params::filter_matches;
use super::xml::{self, time};
use super::{Call, Ec2, Ec2Error};
use crate::cloud::model::{new_id, KeyPair, KEY_PAIR};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};

fn ssh_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

fn read_ssh_string(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let s = b.get(4..4 + len)?;
    Some((s, &b[4 + len..]))
}

/// A new ed25519 key: (OpenSSH private key PEM, OpenSSH public key line).
pub fn generate_ed25519(comment: &str) -> (String, String) {
    let signing = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let public = signing.verifying_key().to_bytes();
    let mut pub_blob = Vec::new();
    ssh_string(&mut pub_blob, b"ssh-ed25519");
    ssh_string(&mut pub_blob, &public);
    let check: u32 = rand::random();
    let mut private = Vec::new();
    private.extend_from_slice(&check.to_be_bytes());
    private.extend_from_slice(&check.to_be_bytes());
    ssh_string(&mut private, b"ssh-ed25519");
    ssh_string(&mut private, &public);
    let mut pair = signing.to_bytes().to_vec();
    pair.extend_from_slice(&public);
    ssh_string(&mut private, &pair);
    ssh_string(&mut private, comment.as_bytes());
    let mut pad = 1u8;
    while private.len() % 8 != 0 {
        private.push(pad);
        pad += 1;
    }
    let mut file = b"openssh-key-v1\0".to_vec();
    ssh_string(&mut file, b"none");
    ssh_string(&mut file, b"none");
    ssh_string(&mut file, b"");
    file.extend_from_slice(&1u32.to_be_bytes());
    ssh_string(&mut file, &pub_blob);
    ssh_string(&mut file, &private);
    let body = B64.encode(&file);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(70)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect();
    let pem = format!(
        "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
        lines.join("\n")
    );
    let line = format!("ssh-ed25519 {} {comment}", B64.encode(&pub_blob));
    (pem, line)
}

/// Checks an OpenSSH public key line; returns (key type, fingerprint, normalized line).
pub fn parse_public_key(text: &str) -> Option<(String, String, String)> {
    let mut fields = text.split_whitespace();
    let kind = fields.next()?;
    let blob = B64.decode(fields.next()?).ok()?;
    let (inner, rest) = read_ssh_string(&blob)?;
    let known = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
    ];
    if inner != kind.as_bytes() || !known.contains(&kind) || rest.is_empty() {
        return None;
    }
    let key_type = if kind == "ssh-ed25519" {
        "ed25519"
    } else if kind == "ssh-rsa" {
        "rsa"
    } else {
        "ecdsa"
    };
    let fingerprint = B64.encode(Sha256::digest(&blob));
    Some((
        key_type.to_string(),
        fingerprint,
        format!("{kind} {}", B64.encode(&blob)),
    ))
}

fn check_name(name: &str) -> Result<(), Ec2Error> {
    if name.len() > 255 || !name.is_ascii() {
        return Err(Ec2Error::invalid(
            "KeyName",
            name,
            "Key names are up to 255 ASCII characters.",
        ));
    }
    Ok(())
}

fn store_new(
    ec2: &Ec2,
    c: &Call<'_>,
    name: &str,
    kind: &str,
    fp: &str,
    line: &str,
) -> Result<KeyPair, Ec2Error> {
    check_name(name)?;
    let kp = KeyPair {
        id: new_id("key", 17),
        owner: c.user.name.clone(),
        name: name.to_string(),
        fingerprint: fp.to_string(),
        key_type: kind.to_string(),
        public_key: line.to_string(),
        created_ms: c.now,
    };
    ec2.store.cloud(|tx| {
        if tx.by_name::<KeyPair>(KEY_PAIR, &kp.owner, name)?.is_some() {
            return Err(Ec2Error::client(
                "InvalidKeyPair.Duplicate",
                format!("The keypair '{name}' already exists."),
            ));
        }
        tx.put(KEY_PAIR, &kp.id, &kp.owner, Some(name), &kp)?;
        Ok(kp.clone())
    })
}

pub fn create(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let name = c.p.req("KeyName")?;
    match c.p.get("KeyType").unwrap_or("ed25519") {
        "ed25519" => {}
        other => {
            return Err(Ec2Error::invalid(
                "KeyType",
                other,
                "Only ed25519 keys are generated; import an RSA key with ImportKeyPair.",
            ))
        }
    }
    if c.p.get("KeyFormat").is_some_and(|f| f != "pem") {
        return Err(Ec2Error::invalid(
            "KeyFormat",
            c.p.get("KeyFormat").unwrap_or(""),
            "Only pem is supported.",
        ));
    }
    let (pem, line) = generate_ed25519(name);
    let (kind, fp, line) = parse_public_key(&line)
        .ok_or_else(|| Ec2Error::internal("generated key does not parse"))?;
    let kp = store_new(ec2, c, name, &kind, &fp, &line)?;
    let mut x = xml::response(c.action, c.rid);
    x.field("keyPairId", &kp.id)
        .field("keyName", &kp.name)
        .field("keyFingerprint", &kp.fingerprint)
        .field("keyMaterial", pem);
    Ok(x.finish())
}

pub fn import(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let name = c.p.req("KeyName")?;
    let material = c.p.req("PublicKeyMaterial")?;
    let bad = || {
        Ec2Error::client(
            "InvalidKey.Format",
            "Key is not in valid OpenSSH public key format",
        )
    };
    let decoded = B64.decode(material.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (kind, fp, line) = parse_public_key(&text).ok_or_else(bad)?;
    let kp = store_new(ec2, c, name, &kind, &fp, &line)?;
    let mut x = xml::response(c.action, c.rid);
    x.field("keyFingerprint", &kp.fingerprint)
        .field("keyName", &kp.name)
        .field("keyPairId", &kp.id);
    Ok(x.finish())
}

pub fn describe(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let names = c.p.list("KeyName");
    let ids = c.p.list("KeyPairId");
    let filters = c.p.filters()?;
    let with_public = c.p.bool("IncludePublicKey")?.unwrap_or(false);
    let all: Vec<KeyPair> = ec2
        .store
        .cloud(|tx| tx.list(KEY_PAIR, Some(&c.user.name)))?;
    for n in &names {
        if !all.iter().any(|k| &k.name == n) {
            return Err(Ec2Error::client(
                "InvalidKeyPair.NotFound",
                format!("The key pair '{n}' does not exist"),
            ));
        }
    }
    for i in &ids {
        if !all.iter().any(|k| &k.id == i) {
            return Err(Ec2Error::client(
                "InvalidKeyPair.NotFound",
                format!("The key pair '{i}' does not exist"),
            ));
        }
    }
    let shown: Vec<&KeyPair> = all
        .iter()
        .filter(|k| names.is_empty() || names.contains(&k.name))
        .filter(|k| ids.is_empty() || ids.contains(&k.id))
        .filter(|k| {
            filters.iter().all(|f| match f.name.as_str() {
                "key-name" => filter_matches(f, &k.name),
                "key-pair-id" => filter_matches(f, &k.id),
                "fingerprint" => filter_matches(f, &k.fingerprint),
                "key-type" => filter_matches(f, &k.key_type),
                _ => false,
            })
        })
        .collect();
    let mut x = xml::response(c.action, c.rid);
    x.set("keySet", &shown, |x, k| {
        x.field("keyPairId", &k.id)
            .field("keyFingerprint", &k.fingerprint)
            .field("keyName", &k.name)
            .field("keyType", &k.key_type)
            .field("createTime", time(k.created_ms));
        if with_public {
            x.field("publicKey", &k.public_key);
        }
    });
    Ok(x.finish())
}

pub fn delete(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let name = c.p.get("KeyName");
    let id = c.p.get("KeyPairId");
    if name.is_none() && id.is_none() {
        return Err(Ec2Error::missing("KeyName"));
    }
    let owner = &c.user.name;
    let removed = ec2.store.cloud(|tx| {
        let found: Option<KeyPair> = match (name, id) {
            (Some(n), _) => tx.by_name(KEY_PAIR, owner, n)?,
            (None, Some(i)) => tx
                .get::<KeyPair>(KEY_PAIR, i)?
                .filter(|k| &k.owner == owner),
            _ => None,
        };
        if let Some(k) = &found {
            tx.delete(KEY_PAIR, &k.id)?;
        }
        Ok::<_, Ec2Error>(found)
    })?;
    let mut x = xml::response(c.action, c.rid);
    x.field("return", "true");
    x.opt("keyPairId", removed.map(|k| k.id));
    Ok(x.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_openssh_and_their_public_half_parses() {
        let (pem, line) = generate_ed25519("k1");
        assert!(pem.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let raw = B64.decode(body).unwrap();
        assert!(raw.starts_with(b"openssh-key-v1\0"));
        let (kind, fp, _) = parse_public_key(&line).unwrap();
        assert_eq!(kind, "ed25519");
        assert_eq!(B64.decode(fp).unwrap().len(), 32);
    }

    #[test]
    fn public_keys_whose_blob_disagrees_with_their_type_are_refused() {
        let (_, line) = generate_ed25519("k");
        let blob = line.split(' ').nth(1).unwrap();
        assert!(parse_public_key(&format!("ssh-rsa {blob}")).is_none());
        assert!(parse_public_key("ssh-ed25519 !!!").is_none());
        assert!(parse_public_key("").is_none());
    }
}
