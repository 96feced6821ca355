//! Tests of the tag rules and records over a real store in a temporary directory (no socket).

use super::*;
use crate::cloud::reconcile::tests::{attached_volume, instance};
use crate::store::Store;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

fn set(pairs: &[(&str, &str)]) -> Result<TagSet, TagError> {
    TagSet::from_pairs(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn many(n: usize, prefix: &str) -> TagSet {
    TagSet::from_pairs(
        (0..n)
            .map(|i| (format!("{prefix}{i}"), String::new()))
            .collect(),
    )
    .unwrap()
}

#[test]
fn keys_are_1_to_128_characters_values_at_most_256_counted_in_characters() {
    assert!(set(&[(&"k".repeat(128), &"v".repeat(256))]).is_ok());
    // 128 two-byte characters: 256 bytes, still 128 characters.
    assert!(set(&[(&"é".repeat(128), &"é".repeat(256))]).is_ok());
    assert!(matches!(
        set(&[(&"k".repeat(129), "")]),
        Err(TagError::KeyLength(129))
    ));
    assert!(matches!(set(&[("", "v")]), Err(TagError::KeyLength(0))));
    assert!(matches!(
        set(&[("k", &"v".repeat(257))]),
        Err(TagError::ValueLength { chars: 257, .. })
    ));
    assert!(set(&[("empty", "")]).unwrap().get("empty") == Some(""));
}

#[test]
fn keys_starting_with_aws_colon_in_any_case_are_reserved() {
    for key in ["aws:cloudformation:stack", "AWS:x", "Aws:"] {
        assert!(
            matches!(set(&[(key, "v")]), Err(TagError::Reserved(_))),
            "{key}"
        );
        assert!(
            matches!(Removal::new(key.into(), None), Err(TagError::Reserved(_))),
            "{key}"
        );
    }
    assert!(set(&[("awsome", "v"), ("my:aws:", "v")]).is_ok());
}

#[test]
fn a_key_named_twice_or_more_than_50_tags_in_one_request_is_refused() {
    assert!(matches!(set(&[("a", "1"), ("a", "2")]), Err(TagError::Duplicate(k)) if k == "a"));
    assert!(
        TagSet::from_pairs((0..50).map(|i| (format!("k{i}"), String::new())).collect()).is_ok()
    );
    let e = TagSet::from_pairs((0..51).map(|i| (format!("k{i}"), String::new())).collect());
    assert!(matches!(e, Err(TagError::TooMany { count: 51, .. })));
}

#[test]
fn adding_overwrites_values_and_refuses_a_51st_key() {
    let mut tags = many(49, "old");
    tags.add(&set(&[("old0", "new value")]).unwrap(), "i-1")
        .unwrap();
    assert_eq!((tags.len(), tags.get("old0")), (49, Some("new value")));
    // One new key and one overwritten: 50.
    tags.add(&set(&[("new", ""), ("old1", "x")]).unwrap(), "i-1")
        .unwrap();
    assert_eq!(tags.len(), 50);
    let before = tags.clone();
    let e = tags
        .add(&set(&[("one-more", "")]).unwrap(), "i-1")
        .unwrap_err();
    assert!(
        matches!(e, TagError::TooMany { ref resource, count: 51 } if resource == "i-1"),
        "{e}"
    );
    assert_eq!(tags, before, "nothing added");
    tags.add(&set(&[("old2", "still fine")]).unwrap(), "i-1")
        .unwrap();
}

#[test]
fn removal_without_a_value_takes_any_value_with_one_only_that_value() {
    let mut tags = set(&[("a", "1"), ("b", ""), ("c", "3"), ("d", "4")]).unwrap();
    let r = |k: &str, v: Option<&str>| Removal::new(k.into(), v.map(str::to_string)).unwrap();
    tags.remove(Some(&[
        r("a", None),
        r("b", Some("x")),
        r("c", Some("")),
        r("d", Some("4")),
        r("absent", None),
    ]));
    assert_eq!(tags, set(&[("b", ""), ("c", "3")]).unwrap());
    tags.remove(Some(&[r("b", Some("")), r("c", Some("3 "))]));
    assert_eq!(tags, set(&[("c", "3")]).unwrap());
    tags.remove(None);
    assert!(tags.is_empty());
}

#[test]
fn tag_filters_are_tag_key_tag_value_and_tag_colon_key() {
    let tags = set(&[("Name", "web"), ("env", "prod")]).unwrap();
    let is = |want: &'static str| move |v: &str| v == want;
    assert_eq!(tags.passes("tag:Name", is("web")), Some(true));
    assert_eq!(tags.passes("tag:Name", is("prod")), Some(false));
    assert_eq!(tags.passes("tag:Missing", |_| true), Some(false));
    assert_eq!(tags.passes("tag:env", is("prod")), Some(true));
    assert_eq!(tags.passes("tag-key", is("env")), Some(true));
    assert_eq!(tags.passes("tag-key", is("prod")), Some(false));
    assert_eq!(tags.passes("tag-value", is("prod")), Some(true));
    assert_eq!(tags.passes("tag-value", is("env")), Some(false));
    assert_eq!(tags.passes("instance-id", |_| true), None);
    assert_eq!(tags.passes("tagkey", |_| true), None);
}

#[test]
fn ids_name_their_resource_type_by_prefix() {
    let cases = [
        ("i-0123456789abcdef0", Some(ResourceType::Instance)),
        ("vol-0123456789abcdef0", Some(ResourceType::Volume)),
        ("snap-0123456789abcdef0", Some(ResourceType::Snapshot)),
        ("emi-01234567", Some(ResourceType::Image)),
        ("ami-01234567", Some(ResourceType::Image)),
        ("sg-0123456789abcdef0", Some(ResourceType::SecurityGroup)),
        ("key-0123456789abcdef0", Some(ResourceType::KeyPair)),
        ("eipalloc-0123456789abcdef0", Some(ResourceType::ElasticIp)),
        ("i-xyz", None),
        ("vpc-01234567", None),
        ("web", None),
    ];
    for (id, want) in cases {
        assert_eq!(ResourceType::of_id(id), want, "{id}");
    }
    for t in ResourceType::ALL {
        assert_eq!(ResourceType::parse(t.name()), Some(t));
    }
}

/// Alice's instance `i-00000001`, volume `vol-00000001` and elastic IP; Bob's instance.
fn resources(store: &Store) {
    store
        .cloud(|tx| {
            let mut i = instance();
            i.owner = "alice".into();
            tx.put(INSTANCE, &i.id, &i.owner, None, &i)?;
            let mut bobs = instance();
            bobs.id = "i-00000002".into();
            bobs.owner = "bob".into();
            tx.put(INSTANCE, &bobs.id, &bobs.owner, None, &bobs)?;
            let v = Volume {
                owner: "alice".into(),
                ..attached_volume("vol-00000001", "/dev/sdf")
            };
            tx.put(VOLUME, &v.id, &v.owner, None, &v)?;
            let a = Address {
                public_ip: "198.51.100.10".into(),
                allocation_id: "eipalloc-00000001".into(),
                owner: "alice".into(),
                instance_id: None,
                association_id: None,
            };
            tx.put(ADDRESS, &a.public_ip, &a.owner, None, &a)?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn all_tags(store: &Store, owner: &str) -> Vec<(String, String, String)> {
    store
        .cloud(|tx| described(tx, owner))
        .unwrap()
        .into_iter()
        .map(|d| (d.resource_id, d.key, d.value))
        .collect()
}

#[test]
fn create_tags_checks_every_resource_first_and_changes_nothing_when_one_fails() {
    let (_d, store) = store();
    resources(&store);
    let tags = set(&[("Name", "web")]).unwrap();
    for (bad, what) in [
        ("vol-00000009", "missing volume"),
        ("i-00000002", "bob's instance"),
        ("bogus", "malformed"),
    ] {
        let e = store
            .cloud(|tx| create(tx, "alice", &ids(&["i-00000001", bad]), &tags))
            .unwrap_err();
        match (what, &e) {
            ("missing volume", TagError::NotFound { kind, id }) => {
                assert_eq!((*kind, id.as_str()), (ResourceType::Volume, bad))
            }
            ("bob's instance", TagError::NotFound { kind, .. }) => {
                assert_eq!(*kind, ResourceType::Instance)
            }
            ("malformed", TagError::InvalidId(id)) => assert_eq!(id, "bogus"),
            _ => panic!("{what}: {e}"),
        }
        assert!(
            all_tags(&store, "alice").is_empty(),
            "{what}: something was written"
        );
    }
    let ok = ids(&["i-00000001", "vol-00000001", "eipalloc-00000001"]);
    store.cloud(|tx| create(tx, "alice", &ok, &tags)).unwrap();
    assert_eq!(all_tags(&store, "alice").len(), 3);
    assert!(all_tags(&store, "bob").is_empty(), "tags are their owner's");
}

#[test]
fn the_fifty_tag_limit_holds_per_resource_across_requests() {
    let (_d, store) = store();
    resources(&store);
    let one = ids(&["i-00000001"]);
    store
        .cloud(|tx| create(tx, "alice", &one, &many(50, "k")))
        .unwrap();
    let e = store
        .cloud(|tx| create(tx, "alice", &one, &set(&[("k50", "")]).unwrap()))
        .unwrap_err();
    assert!(matches!(e, TagError::TooMany { count: 51, .. }), "{e}");
    // Overwriting keeps the count.
    store
        .cloud(|tx| create(tx, "alice", &one, &set(&[("k0", "v")]).unwrap()))
        .unwrap();
    assert_eq!(all_tags(&store, "alice").len(), 50);
}

#[test]
fn indexes_list_one_type_and_descriptions_come_in_resource_then_key_order() {
    let (_d, store) = store();
    resources(&store);
    let tags = set(&[("b", "2"), ("a", "1")]).unwrap();
    store
        .cloud(|tx| create(tx, "alice", &ids(&["vol-00000001", "i-00000001"]), &tags))
        .unwrap();
    let got = all_tags(&store, "alice");
    let want: Vec<(String, String, String)> = [
        ("i-00000001", "a", "1"),
        ("i-00000001", "b", "2"),
        ("vol-00000001", "a", "1"),
        ("vol-00000001", "b", "2"),
    ]
    .iter()
    .map(|(i, k, v)| (i.to_string(), k.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, want);
    let volumes = store
        .cloud(|tx| index(tx, "alice", ResourceType::Volume))
        .unwrap();
    assert_eq!(volumes.of("vol-00000001"), &tags);
    assert!(volumes.of("i-00000001").is_empty(), "another type");
    let d = store.cloud(|tx| described(tx, "alice")).unwrap();
    assert_eq!(d[0].resource_type, ResourceType::Instance);
    assert_eq!(d[2].resource_type, ResourceType::Volume);
}

#[test]
fn deleting_every_tag_removes_the_record_and_forget_goes_with_the_resource() {
    let (_d, store) = store();
    resources(&store);
    let both = ids(&["i-00000001", "vol-00000001"]);
    store
        .cloud(|tx| create(tx, "alice", &both, &set(&[("a", "1"), ("b", "")]).unwrap()))
        .unwrap();
    let r = |k: &str, v: Option<&str>| Removal::new(k.into(), v.map(str::to_string)).unwrap();
    store
        .cloud(|tx| {
            delete(
                tx,
                "alice",
                &ids(&["i-00000001"]),
                Some(&[r("a", None), r("b", Some(""))]),
            )
        })
        .unwrap();
    let gone = store
        .cloud(|tx| tx.get::<serde_json::Value>(TAGS, "i-00000001"))
        .unwrap();
    assert!(gone.is_none(), "an emptied record is removed: {gone:?}");
    let e = store
        .cloud(|tx| delete(tx, "alice", &ids(&["i-00000002"]), None))
        .unwrap_err();
    assert!(matches!(e, TagError::NotFound { .. }), "bob's: {e}");
    store
        .cloud(|tx| {
            tx.delete(VOLUME, "vol-00000001")?;
            forget(tx, "vol-00000001")
        })
        .unwrap();
    assert!(all_tags(&store, "alice").is_empty());
}

#[test]
fn a_volume_deleted_on_termination_takes_its_tags_along() {
    let (_d, store) = store();
    resources(&store);
    store
        .cloud(|tx| {
            create(
                tx,
                "alice",
                &ids(&["vol-00000001"]),
                &set(&[("a", "1")]).unwrap(),
            )?;
            let mut v: Volume = tx.get(VOLUME, "vol-00000001")?.unwrap();
            if let Some(a) = v.attachment.as_mut() {
                a.delete_on_termination = true;
            }
            tx.put(VOLUME, &v.id, &v.owner, None, &v)?;
            let mut i: Instance = tx.get(INSTANCE, "i-00000001")?.unwrap();
            crate::cloud::instances::release_on_termination(tx, &mut i)?;
            Ok::<_, TagError>(())
        })
        .unwrap();
    let v = store
        .cloud(|tx| tx.get::<Volume>(VOLUME, "vol-00000001"))
        .unwrap();
    assert!(v.is_none(), "deleted on termination");
    assert!(all_tags(&store, "alice").is_empty());
}
