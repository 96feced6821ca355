//! Tags: the key/value pairs users put on their resources (instances, volumes, snapshots,
//! images, security groups, key pairs, elastic IPs). It owns EC2's rules for them (at most 50
//! per resource, keys of 1–128 characters not starting with `aws:`, values of at most 256),
//! adding and removing them as CreateTags and DeleteTags do, which tag filters (`tag:KEY`,
//! `tag-key`, `tag-value`) a resource passes, and their records: one per tagged resource (kind
//! `tags`, keyed by the resource id, owned by the resource's owner), written in the
//! transaction that makes or changes the resource and removed with it ([`forget`]). Only a
//! resource's owner tags it, and only the owner sees the tags. The Query API's parameters and
//! XML are `ec2/tags.rs`; this module knows neither.

use super::model::{
    well_formed, Address, Image, Instance, KeyPair, SecurityGroup, Snapshot, Volume, ADDRESS,
    GROUP, IMAGE, IMAGE_PREFIXES, INSTANCE, KEY_PAIR, SNAPSHOT, VOLUME,
};
use crate::store::{CloudTx, StoreError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Record kind of a resource's tags, keyed by the resource id.
pub const TAGS: &str = "tags";
/// Tags one resource may have.
pub const MAX_TAGS: usize = 50;
/// Characters (not bytes) in a key, at least one.
pub const MAX_KEY_CHARS: usize = 128;
/// Characters in a value, which may be empty.
pub const MAX_VALUE_CHARS: usize = 256;
/// Keys AWS keeps for itself, in any letter case.
const RESERVED_PREFIX: &str = "aws:";

/// The kinds of resource that take tags here, named as EC2 names them (`resourceType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceType {
    Instance,
    Volume,
    Snapshot,
    Image,
    SecurityGroup,
    KeyPair,
    ElasticIp,
}

impl ResourceType {
    pub const ALL: [ResourceType; 7] = [
        ResourceType::Instance,
        ResourceType::Volume,
        ResourceType::Snapshot,
        ResourceType::Image,
        ResourceType::SecurityGroup,
        ResourceType::KeyPair,
        ResourceType::ElasticIp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ResourceType::Instance => "instance",
            ResourceType::Volume => "volume",
            ResourceType::Snapshot => "snapshot",
            ResourceType::Image => "image",
            ResourceType::SecurityGroup => "security-group",
            ResourceType::KeyPair => "key-pair",
            ResourceType::ElasticIp => "elastic-ip",
        }
    }

    pub fn parse(s: &str) -> Option<ResourceType> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }

    /// The id prefixes of its resources.
    fn prefixes(self) -> &'static [&'static str] {
        match self {
            ResourceType::Instance => &["i"],
            ResourceType::Volume => &["vol"],
            ResourceType::Snapshot => &["snap"],
            ResourceType::Image => IMAGE_PREFIXES,
            ResourceType::SecurityGroup => &["sg"],
            ResourceType::KeyPair => &["key"],
            ResourceType::ElasticIp => &["eipalloc"],
        }
    }

    /// The type a well-formed id names (`i-…`, `vol-…`, `eipalloc-…`, ...).
    pub fn of_id(id: &str) -> Option<ResourceType> {
        Self::ALL
            .into_iter()
            .find(|t| well_formed(id, t.prefixes()))
    }
}

/// Why a tag request was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum TagError {
    #[error("The ID '{0}' is not valid")]
    InvalidId(String),
    #[error("The {} '{id}' does not exist", .kind.name())]
    NotFound { kind: ResourceType, id: String },
    #[error("Tag keys are 1 to {MAX_KEY_CHARS} characters long; this one has {0}.")]
    KeyLength(usize),
    #[error("Tag values are at most {MAX_VALUE_CHARS} characters long; the value of tag '{key}' has {chars}.")]
    ValueLength { key: String, chars: usize },
    #[error("Value ({0}) for parameter key is invalid. Tag keys starting with 'aws:' are reserved for internal use")]
    Reserved(String),
    #[error("Duplicate tag key '{0}' specified.")]
    Duplicate(String),
    #[error("The maximum number of Tags for a resource has been reached: {resource} would have {count} tags, at most {MAX_TAGS} are allowed.")]
    TooMany { resource: String, count: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn check_key(key: &str) -> Result<(), TagError> {
    let chars = key.chars().count();
    if !(1..=MAX_KEY_CHARS).contains(&chars) {
        return Err(TagError::KeyLength(chars));
    }
    let reserved = key
        .get(..RESERVED_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_PREFIX));
    if reserved {
        return Err(TagError::Reserved(key.to_string()));
    }
    Ok(())
}

/// A resource's tags (or the tags a request names), by key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TagSet(BTreeMap<String, String>);

impl TagSet {
    /// Tags a request names, each checked against EC2's rules; a key named twice is refused,
    /// as are more than [`MAX_TAGS`].
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<TagSet, TagError> {
        let mut set = BTreeMap::new();
        for (key, value) in pairs {
            check_key(&key)?;
            let chars = value.chars().count();
            if chars > MAX_VALUE_CHARS {
                return Err(TagError::ValueLength { key, chars });
            }
            if set.contains_key(&key) {
                return Err(TagError::Duplicate(key));
            }
            set.insert(key, value);
        }
        if set.len() > MAX_TAGS {
            return Err(TagError::TooMany {
                resource: "the request".into(),
                count: set.len(),
            });
        }
        Ok(TagSet(set))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// (key, value) in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Adds `tags`, overwriting the values of keys it has (CreateTags); refused when the
    /// resource `resource` would end up with more than [`MAX_TAGS`].
    pub fn add(&mut self, tags: &TagSet, resource: &str) -> Result<(), TagError> {
        let new = tags.0.keys().filter(|k| !self.0.contains_key(*k)).count();
        let count = self.0.len() + new;
        if count > MAX_TAGS {
            return Err(TagError::TooMany {
                resource: resource.to_string(),
                count,
            });
        }
        for (k, v) in &tags.0 {
            self.0.insert(k.clone(), v.clone());
        }
        Ok(())
    }

    /// Removes what `which` names (DeleteTags); `None`: every tag.
    pub fn remove(&mut self, which: Option<&[Removal]>) {
        let Some(which) = which else {
            self.0.clear();
            return;
        };
        for r in which {
            let matches = match (&r.value, self.0.get(&r.key)) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(want), Some(have)) => want == have,
            };
            if matches {
                self.0.remove(&r.key);
            }
        }
    }

    /// Whether a resource with these tags passes the Describe filter `name` when it is a tag
    /// filter, `matches` telling whether a value matches the filter's values (with EC2's
    /// wildcards): `tag:KEY` (it has tag KEY with a matching value), `tag-key` (a matching key)
    /// or `tag-value` (a matching value). `None`: `name` is not a tag filter.
    pub fn passes(&self, name: &str, matches: impl Fn(&str) -> bool) -> Option<bool> {
        if let Some(key) = name.strip_prefix("tag:") {
            return Some(self.get(key).is_some_and(matches));
        }
        match name {
            "tag-key" => Some(self.0.keys().any(|k| matches(k))),
            "tag-value" => Some(self.0.values().any(|v| matches(v))),
            _ => None,
        }
    }
}

/// One tag DeleteTags names: its key, and the value it must have to go (`None`: any value;
/// `Some("")`: only an empty one), as AWS does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub key: String,
    pub value: Option<String>,
}

impl Removal {
    /// A checked removal: keys AWS reserves cannot be deleted either.
    pub fn new(key: String, value: Option<String>) -> Result<Removal, TagError> {
        check_key(&key)?;
        Ok(Removal { key, value })
    }
}

/// The stored tags of one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    resource_id: String,
    resource_type: ResourceType,
    tags: TagSet,
}

/// One tag of one resource, as DescribeTags lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagDescription {
    pub resource_id: String,
    pub resource_type: ResourceType,
    pub key: String,
    pub value: String,
}

/// The tags of some of an owner's resources, by resource id.
#[derive(Debug, Clone, Default)]
pub struct TagIndex(HashMap<String, TagSet>);

static NO_TAGS: TagSet = TagSet(BTreeMap::new());

impl TagIndex {
    /// The tags of resource `id` (none when untagged).
    pub fn of(&self, id: &str) -> &TagSet {
        self.0.get(id).unwrap_or(&NO_TAGS)
    }

    /// `tags` on each of `ids` (resources just made with the same tags).
    pub fn same(ids: impl IntoIterator<Item = String>, tags: &TagSet) -> TagIndex {
        TagIndex(ids.into_iter().map(|id| (id, tags.clone())).collect())
    }
}

/// A record of `kind` whose owner is `owner`.
fn owned_record<T: DeserializeOwned>(
    tx: &CloudTx<'_>,
    kind: &str,
    id: &str,
    owner: &str,
    owner_of: impl Fn(&T) -> &str,
) -> Result<bool, StoreError> {
    Ok(tx
        .get::<T>(kind, id)?
        .is_some_and(|r| owner_of(&r) == owner))
}

/// The type of resource `id`, once it is known to exist and belong to `owner`.
pub fn owned_resource(tx: &CloudTx<'_>, owner: &str, id: &str) -> Result<ResourceType, TagError> {
    let kind = ResourceType::of_id(id).ok_or_else(|| TagError::InvalidId(id.to_string()))?;
    let found = match kind {
        ResourceType::Instance => owned_record(tx, INSTANCE, id, owner, |r: &Instance| &r.owner)?,
        ResourceType::Volume => owned_record(tx, VOLUME, id, owner, |r: &Volume| &r.owner)?,
        ResourceType::Snapshot => owned_record(tx, SNAPSHOT, id, owner, |r: &Snapshot| &r.owner)?,
        ResourceType::Image => owned_record(tx, IMAGE, id, owner, |r: &Image| &r.owner)?,
        ResourceType::SecurityGroup => {
            owned_record(tx, GROUP, id, owner, |r: &SecurityGroup| &r.owner)?
        }
        ResourceType::KeyPair => owned_record(tx, KEY_PAIR, id, owner, |r: &KeyPair| &r.owner)?,
        // Elastic IPs are keyed by address; their allocation id is what tags name.
        ResourceType::ElasticIp => tx
            .list::<Address>(ADDRESS, Some(owner))?
            .iter()
            .any(|a| a.allocation_id == id),
    };
    match found {
        true => Ok(kind),
        false => Err(TagError::NotFound {
            kind,
            id: id.to_string(),
        }),
    }
}

fn load(tx: &CloudTx<'_>, id: &str, kind: ResourceType) -> Result<Record, StoreError> {
    Ok(tx.get::<Record>(TAGS, id)?.unwrap_or(Record {
        resource_id: id.to_string(),
        resource_type: kind,
        tags: TagSet::default(),
    }))
}

fn save(tx: &CloudTx<'_>, owner: &str, r: &Record) -> Result<(), StoreError> {
    if r.tags.is_empty() {
        tx.delete(TAGS, &r.resource_id)?;
    } else {
        tx.put(TAGS, &r.resource_id, owner, None, r)?;
    }
    Ok(())
}

/// CreateTags: adds `tags` to each of `owner`'s resources `ids`. Every id is checked before
/// Applies `change` to the tags of each of `owner`'s resources `ids`, once all are known to be
/// theirs (one that is not fails the whole call before anything changes).
fn change_each(
    tx: &CloudTx<'_>,
    owner: &str,
    ids: &[String],
    mut change: impl FnMut(&mut Record, &str) -> Result<(), TagError>,
) -> Result<(), TagError> {
    let kinds = ids
        .iter()
        .map(|id| owned_resource(tx, owner, id))
        .collect::<Result<Vec<_>, _>>()?;
    for (id, kind) in ids.iter().zip(kinds) {
        let mut r = load(tx, id, kind)?;
        change(&mut r, id)?;
        save(tx, owner, &r)?;
    }
    Ok(())
}

/// anything is written, so a refusal (the caller's transaction rolls back) changes nothing.
pub fn create(
    tx: &CloudTx<'_>,
    owner: &str,
    ids: &[String],
    tags: &TagSet,
) -> Result<(), TagError> {
    change_each(tx, owner, ids, |r, id| r.tags.add(tags, id))
}

/// DeleteTags: removes what `which` names (`None`: every tag) from each of `owner`'s
/// resources `ids`; a tag a resource does not have is no error.
pub fn delete(
    tx: &CloudTx<'_>,
    owner: &str,
    ids: &[String],
    which: Option<&[Removal]>,
) -> Result<(), TagError> {
    change_each(tx, owner, ids, |r, _| {
        r.tags.remove(which);
        Ok(())
    })
}

/// Tags resource `id` of `owner`, made in this transaction (TagSpecifications); `tags` were
/// checked when the request was read.
pub fn attach(
    tx: &CloudTx<'_>,
    owner: &str,
    id: &str,
    kind: ResourceType,
    tags: &TagSet,
) -> Result<(), StoreError> {
    save(
        tx,
        owner,
        &Record {
            resource_id: id.to_string(),
            resource_type: kind,
            tags: tags.clone(),
        },
    )
}

/// Removes the tags of resource `id`, deleted in this transaction.
pub fn forget(tx: &CloudTx<'_>, id: &str) -> Result<(), StoreError> {
    tx.delete(TAGS, id)?;
    Ok(())
}

/// The tags of `owner`'s resources of type `kind`.
pub fn index(tx: &CloudTx<'_>, owner: &str, kind: ResourceType) -> Result<TagIndex, StoreError> {
    Ok(TagIndex(
        tx.list::<Record>(TAGS, Some(owner))?
            .into_iter()
            .filter(|r| r.resource_type == kind)
            .map(|r| (r.resource_id, r.tags))
            .collect(),
    ))
}

/// Every tag of `owner`'s resources, by resource id, then key.
pub fn described(tx: &CloudTx<'_>, owner: &str) -> Result<Vec<TagDescription>, StoreError> {
    let mut out = Vec::new();
    for r in tx.list::<Record>(TAGS, Some(owner))? {
        for (key, value) in r.tags.iter() {
            out.push(TagDescription {
                resource_id: r.resource_id.clone(),
                resource_type: r.resource_type,
                key: key.to_string(),
                value: value.to_string(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "tags_tests.rs"]
mod tests;
