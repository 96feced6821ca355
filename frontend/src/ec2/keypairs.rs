//! Key pairs: CreateKeyPair (RSA by default, ed25519 on request; the private half is returned
//! once and never stored), ImportKeyPair (the clients send the key base64), DescribeKeyPairs,
//! DeleteKeyPair. Making and reading keys, and their fingerprints, are `key_material`'s.

use super::key_material::{self, KeyError, KeyType, PublicKey};
use super::params::filter_matches;
use super::tags;
use super::xml::{self, time};
use super::{Call, Ec2, Ec2Error};
use crate::cloud::model::{new_id, KeyPair, KEY_PAIR};
use crate::cloud::tags::{self as tagging, ResourceType};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

impl From<KeyError> for Ec2Error {
    fn from(e: KeyError) -> Ec2Error {
        match e {
            KeyError::Encoding(_) => Ec2Error::internal(e),
            // EC2's answer to any key it cannot take, with what was wrong.
            e => Ec2Error::client(
                "InvalidKey.Format",
                format!("Key is not in valid OpenSSH public key format: {e}"),
            ),
        }
    }
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

fn store_new(ec2: &Ec2, c: &Call<'_>, name: &str, key: &PublicKey) -> Result<KeyPair, Ec2Error> {
    check_name(name)?;
    let kp = KeyPair {
        id: new_id("key", 17),
        owner: c.user.name.clone(),
        name: name.to_string(),
        fingerprint: key.fingerprint.clone(),
        key_type: key.key_type.as_str().to_string(),
        public_key: key.openssh.clone(),
        created_ms: c.now,
    };
    let tag_set = tags::specified_for(c.p, ResourceType::KeyPair)?;
    ec2.store.cloud(|tx| {
        if tx.by_name::<KeyPair>(KEY_PAIR, &kp.owner, name)?.is_some() {
            return Err(Ec2Error::client(
                "InvalidKeyPair.Duplicate",
                format!("The keypair '{name}' already exists."),
            ));
        }
        tx.put(KEY_PAIR, &kp.id, &kp.owner, Some(name), &kp)?;
        tagging::attach(tx, &kp.owner, &kp.id, ResourceType::KeyPair, &tag_set)?;
        Ok(kp.clone())
    })
}

/// The key type CreateKeyPair was asked for (`rsa` when none), once its format is one made
/// here.
fn requested_type(c: &Call<'_>) -> Result<KeyType, Ec2Error> {
    let kind = c.p.get("KeyType").unwrap_or("rsa");
    let kind = KeyType::parse(kind)
        .ok_or_else(|| Ec2Error::invalid("KeyType", kind, "Use rsa or ed25519."))?;
    match c.p.get("KeyFormat").unwrap_or("pem") {
        "pem" => Ok(kind),
        "ppk" => Err(Ec2Error::client(
            "UnsupportedOperation",
            "KeyFormat ppk (PuTTY) is not supported here; create the key as pem and convert it with puttygen.",
        )),
        other => Err(Ec2Error::invalid("KeyFormat", other, "Use pem or ppk.")),
    }
}

pub fn create(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let name = c.p.req("KeyName")?;
    check_name(name)?;
    let kind = requested_type(c)?;
    let pair = key_material::generate(kind, name)?;
    let kp = store_new(ec2, c, name, &pair.public)?;
    let mut x = xml::response(c.action, c.rid);
    x.field("keyPairId", &kp.id)
        .field("keyName", &kp.name)
        .field("keyFingerprint", &kp.fingerprint)
        .field("keyMaterial", &pair.private_pem);
    tags::render(&mut x, &tags::specified_for(c.p, ResourceType::KeyPair)?);
    Ok(x.finish())
}

pub fn import(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let name = c.p.req("KeyName")?;
    let material = c.p.req("PublicKeyMaterial")?;
    let decoded = B64.decode(material.trim()).map_err(|_| {
        Ec2Error::client(
            "InvalidKey.Format",
            "Key is not in valid OpenSSH public key format: PublicKeyMaterial is not base64",
        )
    })?;
    let key = key_material::read_public(&decoded)?;
    let kp = store_new(ec2, c, name, &key)?;
    let mut x = xml::response(c.action, c.rid);
    x.field("keyFingerprint", &kp.fingerprint)
        .field("keyName", &kp.name)
        .field("keyPairId", &kp.id);
    tags::render(&mut x, &tags::specified_for(c.p, ResourceType::KeyPair)?);
    Ok(x.finish())
}

pub fn describe(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let names = c.p.list("KeyName");
    let ids = c.p.list("KeyPairId");
    let filters = c.p.filters()?;
    let with_public = c.p.bool("IncludePublicKey")?.unwrap_or(false);
    let (all, tag_index) = ec2.store.cloud(|tx| {
        let all: Vec<KeyPair> = tx.list(KEY_PAIR, Some(&c.user.name))?;
        let tag_index = tagging::index(tx, &c.user.name, ResourceType::KeyPair)?;
        Ok::<_, Ec2Error>((all, tag_index))
    })?;
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
                _ => tags::tag_filter(f, tag_index.of(&k.id)).unwrap_or(false),
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
        tags::render(x, tag_index.of(&k.id));
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
            tagging::forget(tx, &k.id)?;
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
    use crate::ec2::params::Params;
    use crate::store::{Role, User};

    fn requested(query: &str) -> Result<KeyType, Ec2Error> {
        let user = User {
            name: "u".into(),
            access_key: "AK".into(),
            secret: "s".into(),
            role: Role::User,
            created_ms: 0,
        };
        let p = Params::parse(query);
        let c = Call {
            user: &user,
            p: &p,
            rid: "r",
            action: "CreateKeyPair",
            now: 0,
        };
        requested_type(&c)
    }

    #[test]
    fn create_key_pair_makes_rsa_unless_asked_for_ed25519_and_only_pem() {
        assert_eq!(requested("KeyName=k"), Ok(KeyType::Rsa));
        assert_eq!(
            requested("KeyType=ed25519&KeyFormat=pem"),
            Ok(KeyType::Ed25519)
        );
        let code = |q| requested(q).unwrap_err().code;
        assert_eq!(code("KeyFormat=ppk"), "UnsupportedOperation");
        assert_eq!(code("KeyType=dsa"), "InvalidParameterValue");
        assert_eq!(code("KeyFormat=der"), "InvalidParameterValue");
    }

    #[test]
    fn unreadable_keys_are_invalid_key_format_and_say_why() {
        let e = Ec2Error::from(KeyError::RsaSize(512));
        assert_eq!((e.status, e.code.as_str()), (400, "InvalidKey.Format"));
        assert!(e.message.contains("512 bits"), "{e}");
        assert_eq!(Ec2Error::from(KeyError::Encoding("x".into())).status, 500);
    }
}
