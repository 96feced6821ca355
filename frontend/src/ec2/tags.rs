//! Tags in the Query API: CreateTags, DeleteTags and DescribeTags (filters `key`, `value`,
//! `resource-id`, `resource-type`, `tag:KEY`; MaxResults/NextToken), the `TagSpecification.N`
//! parameters of the calls that make resources, the tag filters every Describe call shares
//! ([`tag_filter`]) and the `tagSet` element of each tagged resource. The rules (limits, who
//! may tag what, what DeleteTags removes) are `cloud::tags`.

use super::params::{filter_matches, Filter, Params};
use super::xml::{self, Xml};
use super::{Call, Ec2, Ec2Error};
use crate::cloud::tags::{self, Removal, ResourceType, TagError, TagSet};
use std::collections::BTreeMap;

impl From<TagError> for Ec2Error {
    fn from(e: TagError) -> Ec2Error {
        let code = match &e {
            TagError::Store(e) => return Ec2Error::internal(e),
            TagError::InvalidId(_) => "InvalidID",
            TagError::NotFound { kind, .. } => match kind {
                ResourceType::Instance => "InvalidInstanceID.NotFound",
                ResourceType::Volume => "InvalidVolume.NotFound",
                ResourceType::Snapshot => "InvalidSnapshot.NotFound",
                ResourceType::Image => "InvalidAMIID.NotFound",
                ResourceType::SecurityGroup => "InvalidGroup.NotFound",
                ResourceType::KeyPair => "InvalidKeyPair.NotFound",
                ResourceType::ElasticIp => "InvalidAllocationID.NotFound",
            },
            TagError::TooMany { .. } => "TagLimitExceeded",
            TagError::KeyLength(_)
            | TagError::ValueLength { .. }
            | TagError::Reserved(_)
            | TagError::Duplicate(_) => "InvalidParameterValue",
        };
        Ec2Error::client(code, e.to_string())
    }
}

/// The tags `prefix.N.Key` / `prefix.N.Value` name (an absent value is the empty one, as AWS
/// sets it), checked.
fn named_tags(p: &Params, prefix: &str) -> Result<TagSet, Ec2Error> {
    let pairs = p
        .structs(prefix)
        .into_iter()
        .map(|t| {
            let key = t
                .get("Key")
                .ok_or_else(|| Ec2Error::missing(&format!("{prefix}.Key")))?;
            Ok((key.to_string(), t.get("Value").unwrap_or("").to_string()))
        })
        .collect::<Result<Vec<_>, Ec2Error>>()?;
    Ok(TagSet::from_pairs(pairs)?)
}

/// The tags `TagSpecification.N` asks to put on what this call makes, by resource type. A type
/// not in `allowed` (what the call makes here) is refused as AWS refuses it, as is a type named
/// twice or a specification without tags; nothing is made then.
pub fn specified(
    p: &Params,
    allowed: &[ResourceType],
) -> Result<BTreeMap<ResourceType, TagSet>, Ec2Error> {
    let mut out = BTreeMap::new();
    for spec in p.structs("TagSpecification") {
        let name = spec
            .get("ResourceType")
            .ok_or_else(|| Ec2Error::missing("TagSpecification.ResourceType"))?;
        let kind = ResourceType::parse(name)
            .filter(|k| allowed.contains(k))
            .ok_or_else(|| {
                Ec2Error::client(
                    "InvalidParameterValue",
                    format!("'{name}' is not a valid taggable resource type for this operation."),
                )
            })?;
        let set = named_tags(&spec, "Tag")?;
        if set.is_empty() {
            return Err(Ec2Error::client(
                "InvalidParameterValue",
                "Tag specification must have at least one tag",
            ));
        }
        if out.insert(kind, set).is_some() {
            return Err(Ec2Error::client(
                "InvalidParameterValue",
                format!("The resource type '{name}' is named in more than one tag specification."),
            ));
        }
    }
    Ok(out)
}

/// The tags `TagSpecification.N` asks for the one resource type `kind` a call makes (none
/// when it asks for none).
pub fn specified_for(p: &Params, kind: ResourceType) -> Result<TagSet, Ec2Error> {
    Ok(specified(p, &[kind])?.remove(&kind).unwrap_or_default())
}

/// Whether a resource with `tags` passes `f` when `f` is a tag filter (`tag:KEY`, `tag-key`,
/// `tag-value`); `None` when it is some other filter. Every Describe call of a tagged resource
/// asks this for the filters it does not know itself.
pub fn tag_filter(f: &Filter, tags: &TagSet) -> Option<bool> {
    tags.passes(&f.name, |v| filter_matches(f, v))
}

/// `tagSet` of a resource, left out when it has no tags (as EC2 does).
pub fn render(x: &mut Xml, tags: &TagSet) {
    if tags.is_empty() {
        return;
    }
    let items: Vec<(&str, &str)> = tags.iter().collect();
    x.set("tagSet", &items, |x, (k, v)| {
        x.field("key", k).field("value", v);
    });
}

fn resource_ids(p: &Params) -> Result<Vec<String>, Ec2Error> {
    let ids = p.list("ResourceId");
    match ids.is_empty() {
        true => Err(Ec2Error::missing("ResourceId")),
        false => Ok(ids),
    }
}

pub fn create(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let ids = resource_ids(c.p)?;
    let tags = named_tags(c.p, "Tag")?;
    if tags.is_empty() {
        return Err(Ec2Error::missing("Tag"));
    }
    ec2.store
        .cloud(|tx| tags::create(tx, &c.user.name, &ids, &tags))?;
    Ok(xml::ok(c.action, c.rid))
}

pub fn delete(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let ids = resource_ids(c.p)?;
    let which =
        c.p.structs("Tag")
            .into_iter()
            .map(|t| {
                let key = t.get("Key").ok_or_else(|| Ec2Error::missing("Tag.Key"))?;
                Ok(Removal::new(
                    key.to_string(),
                    t.get("Value").map(str::to_string),
                )?)
            })
            .collect::<Result<Vec<_>, Ec2Error>>()?;
    // No tags named: every tag of the resources goes, as AWS does.
    let which = (!which.is_empty()).then_some(which.as_slice());
    ec2.store
        .cloud(|tx| tags::delete(tx, &c.user.name, &ids, which))?;
    Ok(xml::ok(c.action, c.rid))
}

/// Where a DescribeTags page starts: after this resource id and key.
fn token(resource_id: &str, key: &str) -> String {
    hex::encode(serde_json::to_vec(&(resource_id, key)).unwrap_or_default())
}

fn after(t: &str) -> Result<(String, String), Ec2Error> {
    hex::decode(t)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| Ec2Error::invalid("NextToken", t, "The token is not valid."))
}

fn keeps(d: &tags::TagDescription, f: &Filter) -> Result<bool, Ec2Error> {
    Ok(match f.name.as_str() {
        "key" => filter_matches(f, &d.key),
        "value" => filter_matches(f, &d.value),
        "resource-id" => filter_matches(f, &d.resource_id),
        "resource-type" => filter_matches(f, d.resource_type.name()),
        name => match name.strip_prefix("tag:") {
            Some(key) => d.key == key && filter_matches(f, &d.value),
            None => {
                return Err(Ec2Error::invalid(
                    "Filter.Name",
                    name,
                    "The filter is not supported: use key, value, resource-id, resource-type or tag:KEY.",
                ))
            }
        },
    })
}

pub fn describe(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let filters = c.p.filters()?;
    let max = c.p.int("MaxResults")?;
    if let Some(m) = max.filter(|m| !(5..=1000).contains(m)) {
        return Err(Ec2Error::invalid(
            "MaxResults",
            &m.to_string(),
            "MaxResults must be 5..1000.",
        ));
    }
    let start = match c.p.get("NextToken").filter(|t| !t.is_empty()) {
        Some(t) => Some(after(t)?),
        None => None,
    };
    let all = ec2.store.cloud(|tx| tags::described(tx, &c.user.name))?;
    let mut shown = Vec::new();
    for d in &all {
        if start
            .as_ref()
            .is_some_and(|(id, key)| (d.resource_id.as_str(), d.key.as_str()) <= (id, key))
        {
            continue;
        }
        let mut keep = true;
        for f in &filters {
            keep &= keeps(d, f)?;
        }
        if keep {
            shown.push(d);
        }
    }
    let mut next = None;
    if let Some(m) = max.map(|m| m as usize) {
        if shown.len() > m {
            shown.truncate(m);
            next = shown.last().map(|d| token(&d.resource_id, &d.key));
        }
    }
    let mut x = xml::response(c.action, c.rid);
    x.set("tagSet", &shown, |x, d| {
        x.field("resourceId", &d.resource_id)
            .field("resourceType", d.resource_type.name())
            .field("key", &d.key)
            .field("value", &d.value);
    });
    x.opt("nextToken", next);
    Ok(x.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(name: &str, values: &[&str]) -> Filter {
        Filter {
            name: name.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn tag_filters_match_keys_values_and_pairs_with_wildcards_and_leave_others_alone() {
        let tags = TagSet::from_pairs(vec![
            ("Name".into(), "web-1".into()),
            ("env".into(), "".into()),
        ])
        .unwrap();
        assert_eq!(
            tag_filter(&filter("tag:Name", &["web-*"]), &tags),
            Some(true)
        );
        assert_eq!(tag_filter(&filter("tag:Name", &["db"]), &tags), Some(false));
        assert_eq!(
            tag_filter(&filter("tag:name", &["web-1"]), &tags),
            Some(false),
            "keys are case-sensitive"
        );
        assert_eq!(
            tag_filter(&filter("tag:env", &[""]), &tags),
            Some(true),
            "an empty value matches \"\""
        );
        assert_eq!(tag_filter(&filter("tag-key", &["e?v"]), &tags), Some(true));
        assert_eq!(
            tag_filter(&filter("tag-key", &["web-1"]), &tags),
            Some(false)
        );
        assert_eq!(
            tag_filter(&filter("tag-value", &["web-1"]), &tags),
            Some(true)
        );
        assert_eq!(
            tag_filter(&filter("tag-value", &["Name"]), &tags),
            Some(false)
        );
        assert_eq!(tag_filter(&filter("instance-id", &["i-1"]), &tags), None);
        let none = TagSet::default();
        assert_eq!(tag_filter(&filter("tag-key", &["*"]), &none), Some(false));
    }

    #[test]
    fn tag_specifications_take_only_the_types_the_call_makes() {
        let p = Params::from_pairs(&[
            ("TagSpecification.1.ResourceType", "instance"),
            ("TagSpecification.1.Tag.1.Key", "Name"),
            ("TagSpecification.1.Tag.1.Value", "web"),
            ("TagSpecification.2.ResourceType", "volume"),
            ("TagSpecification.2.Tag.1.Key", "empty"),
        ]);
        let both = [ResourceType::Instance, ResourceType::Volume];
        let specs = specified(&p, &both).unwrap();
        assert_eq!(specs[&ResourceType::Instance].get("Name"), Some("web"));
        assert_eq!(
            specs[&ResourceType::Volume].get("empty"),
            Some(""),
            "no value: empty"
        );
        let e = specified(&p, &[ResourceType::Instance]).unwrap_err();
        assert_eq!(e.code, "InvalidParameterValue");
        assert!(
            e.message
                .contains("'volume' is not a valid taggable resource type"),
            "{e}"
        );
        for bad in [
            vec![
                ("TagSpecification.1.ResourceType", "vpc"),
                ("TagSpecification.1.Tag.1.Key", "a"),
            ],
            vec![("TagSpecification.1.ResourceType", "instance")],
            vec![
                ("TagSpecification.1.ResourceType", "instance"),
                ("TagSpecification.1.Tag.1.Key", "a"),
                ("TagSpecification.2.ResourceType", "instance"),
                ("TagSpecification.2.Tag.1.Key", "b"),
            ],
            vec![
                ("TagSpecification.1.ResourceType", "instance"),
                ("TagSpecification.1.Tag.1.Key", "aws:x"),
            ],
        ] {
            let e = specified(&Params::from_pairs(&bad), &both).unwrap_err();
            assert_eq!(e.code, "InvalidParameterValue", "{bad:?}: {e}");
        }
        assert!(specified_for(&Params::default(), ResourceType::Volume)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn tag_errors_carry_the_codes_aws_gives() {
        let code = |e: TagError| Ec2Error::from(e).code;
        assert_eq!(code(TagError::InvalidId("x".into())), "InvalidID");
        let nf = |kind| {
            code(TagError::NotFound {
                kind,
                id: "x".into(),
            })
        };
        assert_eq!(nf(ResourceType::Instance), "InvalidInstanceID.NotFound");
        assert_eq!(nf(ResourceType::ElasticIp), "InvalidAllocationID.NotFound");
        assert_eq!(nf(ResourceType::Image), "InvalidAMIID.NotFound");
        assert_eq!(
            code(TagError::TooMany {
                resource: "i".into(),
                count: 51
            }),
            "TagLimitExceeded"
        );
        assert_eq!(
            code(TagError::Reserved("aws:x".into())),
            "InvalidParameterValue"
        );
    }

    #[test]
    fn describe_tags_tokens_round_trip_and_garbage_is_refused() {
        assert_eq!(
            after(&token("i-1", "a\u{0}b")).unwrap(),
            ("i-1".into(), "a\u{0}b".into())
        );
        assert_eq!(after("zz").unwrap_err().code, "InvalidParameterValue");
    }
}
