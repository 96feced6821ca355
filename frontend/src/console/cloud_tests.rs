//! `cloud`'s handlers over a real store and the real EC2 room, without a socket: each change
//! is the EC2 action as the signed-in user (audited as them from the client's address),
//! EC2's refusal is the page's message, one user's pages show nothing of another's, and a
//! rotated access key replaces the old one.

use super::super::tests::{audited, body, fixture, Fixture, ADDR};
use super::super::{session, Reply};
use crate::cloud::model::{SecurityGroup, Source, Volume, GROUP, VOLUME};
use http::{Method, StatusCode};

/// A signed-in user's cookie and CSRF token.
struct Signed {
    cookie: String,
    csrf: String,
}

impl Fixture {
    /// A session of `user` as a sign-in makes one.
    fn session(&self, user: &str) -> Signed {
        let token = session::new_token();
        let csrf = format!("csrf-of-{user}");
        let now = crate::store::now_ms();
        (self.store)
            .create_session(&session::digest(&token), user, &csrf, now, session::IDLE_MS)
            .unwrap();
        Signed {
            cookie: format!("{}={token}", self.console.cookies.session_name()),
            csrf,
        }
    }

    fn ask_as(&self, method: Method, path: &str, who: &Signed, form: &[(&str, &str)]) -> Reply {
        self.ask(method, path, std::slice::from_ref(&who.cookie), form)
    }

    fn get(&self, path: &str, who: &Signed) -> String {
        let r = self.ask_as(Method::GET, path, who, &[]);
        assert_eq!(r.status, StatusCode::OK, "{}", body(&r));
        body(&r)
    }

    /// POSTs `form` with `who`'s CSRF token.
    fn post(&self, path: &str, who: &Signed, form: &[(&str, &str)]) -> Reply {
        let mut form = form.to_vec();
        form.push(("csrf", &who.csrf));
        self.ask_as(Method::POST, path, who, &form)
    }

    fn groups_of(&self, owner: &str) -> Vec<SecurityGroup> {
        self.store.cloud(|tx| tx.list(GROUP, Some(owner))).unwrap()
    }

    fn volumes_of(&self, owner: &str) -> Vec<Volume> {
        self.store.cloud(|tx| tx.list(VOLUME, Some(owner))).unwrap()
    }
}

#[test]
fn a_group_and_its_rule_are_made_as_the_ec2_calls_escaped_and_seen_only_by_their_owner() {
    let f = fixture();
    let alice = f.session("alice");
    let evil = "<script>g</script>";
    let r = f.post(
        "/groups",
        &alice,
        &[("name", evil), ("description", "web <b>tier</b>")],
    );
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", body(&r));
    assert_eq!(r.location.as_deref(), Some("/_console/groups"));
    let made = f.groups_of("alice");
    let g = made.iter().find(|g| g.name == evil).expect("the group");
    let form = [
        ("group", g.id.as_str()),
        ("protocol", "tcp"),
        ("from", "22"),
        ("to", ""),
        ("cidr", "10.0.0.0/8"),
    ];
    let r = f.post("/groups/authorize", &alice, &form);
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", body(&r));
    let g = f
        .groups_of("alice")
        .into_iter()
        .find(|x| x.id == g.id)
        .unwrap();
    assert_eq!(g.rules.len(), 1);
    assert_eq!((g.rules[0].from, g.rules[0].to), (Some(22), Some(22)));
    assert_eq!(g.rules[0].source, Source::Cidr("10.0.0.0/8".into()));
    // The same rule again: EC2's refusal, on the page.
    let again = f.post("/groups/authorize", &alice, &form);
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(
        body(&again).contains("The rule was not added"),
        "{}",
        body(&again)
    );
    assert!(body(&again).contains("already exists"), "{}", body(&again));
    let page = f.get("/groups", &alice);
    assert!(page.contains("&lt;script&gt;g&lt;/script&gt;"), "{page}");
    assert!(page.contains("web &lt;b&gt;tier&lt;/b&gt;"), "{page}");
    assert!(!page.contains("<script>"), "{page}");
    assert!(
        page.contains("default") && page.contains("10.0.0.0/8"),
        "{page}"
    );
    // Bob sees none of it and cannot delete it.
    let bob = f.session("bob");
    let page = f.get("/groups", &bob);
    assert!(
        !page.contains(&g.id) && !page.contains("&lt;script&gt;"),
        "{page}"
    );
    let r = f.post("/groups/delete", &bob, &[("group", &g.id)]);
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", body(&r));
    assert!(f.groups_of("alice").iter().any(|x| x.id == g.id));
    // Revoke with the fields the page gives, then delete.
    let r = f.post("/groups/revoke", &alice, &form);
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", body(&r));
    let r = f.post("/groups/delete", &alice, &[("group", &g.id)]);
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", body(&r));
    assert!(!f.groups_of("alice").iter().any(|x| x.id == g.id));
    assert_eq!(
        audited(&f, "CreateSecurityGroup"),
        [("alice".into(), ADDR.into(), "ok")]
    );
    let deleted = audited(&f, "DeleteSecurityGroup");
    assert_eq!(
        deleted,
        [
            ("alice".into(), ADDR.into(), "ok"),
            ("bob".into(), ADDR.into(), "error")
        ]
    );
    assert_eq!(audited(&f, "AuthorizeSecurityGroupIngress").len(), 2);
    assert_eq!(audited(&f, "RevokeSecurityGroupIngress").len(), 1);
}

#[test]
fn a_post_without_the_csrf_token_changes_nothing() {
    let f = fixture();
    let alice = f.session("alice");
    for path in ["/groups", "/volumes", "/addresses"] {
        let form = [
            ("name", "g"),
            ("description", "d"),
            ("size", "1"),
            ("zone", "cluster1"),
        ];
        let r = f.ask_as(Method::POST, path, &alice, &form);
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
    }
    assert!(f.groups_of("alice").is_empty());
    assert!(f.volumes_of("alice").is_empty());
    assert!(audited(&f, "AllocateAddress").is_empty());
}

#[test]
fn volumes_and_snapshots_are_made_as_the_ec2_calls_with_the_stored_states() {
    let f = fixture();
    let alice = f.session("alice");
    let r = f.post("/volumes", &alice, &[("size", "2"), ("zone", "cluster1")]);
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", body(&r));
    let v = f.volumes_of("alice").pop().expect("the volume");
    assert_eq!((v.size_gib, v.state.as_str()), (2, "creating"));
    // Still creating: EC2 refuses a snapshot, and the page says why.
    let r = f.post("/snapshots", &alice, &[("volume", &v.id)]);
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        body(&r).contains("The snapshot was not created"),
        "{}",
        body(&r)
    );
    assert!(body(&r).contains("'creating' state"), "{}", body(&r));
    // The storage keeper's part, done here by hand: the volume is made.
    let mut made = v.clone();
    made.state = "available".into();
    f.store
        .cloud(|tx| tx.put(VOLUME, &made.id, &made.owner, None, &made))
        .unwrap();
    let r = f.post(
        "/snapshots",
        &alice,
        &[("volume", &v.id), ("description", "<i>nightly</i>")],
    );
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", body(&r));
    let page = f.get("/volumes", &alice);
    for part in [
        v.id.as_str(),
        "2 GiB",
        "cluster1",
        "available",
        "pending",
        "0%",
    ] {
        assert!(page.contains(part), "{part} not in {page}");
    }
    assert!(page.contains("&lt;i&gt;nightly&lt;/i&gt;"), "{page}");
    // A size EC2 refuses.
    let r = f.post("/volumes", &alice, &[("size", "0"), ("zone", "cluster1")]);
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(body(&r).contains("Size is 1..1024 GiB"), "{}", body(&r));
    let bob = f.session("bob");
    let page = f.get("/volumes", &bob);
    assert!(!page.contains(&v.id), "{page}");
    assert!(page.contains("You have no volumes") && page.contains("You have no snapshots"));
    let r = f.post("/volumes/delete", &bob, &[("volume", &v.id)]);
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(f.volumes_of("alice").len(), 1);
    let r = f.post("/volumes/delete", &alice, &[("volume", &v.id)]);
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", body(&r));
    assert!(f.volumes_of("alice").is_empty());
    assert_eq!(
        audited(&f, "CreateVolume"),
        [
            ("alice".into(), ADDR.into(), "error"),
            ("alice".into(), ADDR.into(), "ok")
        ]
    );
    assert_eq!(audited(&f, "CreateSnapshot").len(), 2);
}

#[test]
fn an_address_is_allocated_and_released_as_the_ec2_calls_and_only_its_owner_sees_it() {
    let f = fixture();
    let alice = f.session("alice");
    let r = f.post("/addresses", &alice, &[]);
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", body(&r));
    let page = f.get("/addresses", &alice);
    assert!(page.contains("198.51.100.10"), "{page}");
    let alloc = page
        .split(r#"name="allocation" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("an allocation id")
        .to_string();
    let bob = f.session("bob");
    assert!(!f.get("/addresses", &bob).contains("198.51.100.10"));
    let r = f.post("/addresses/release", &bob, &[("allocation", &alloc)]);
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", body(&r));
    // No instance to associate with: EC2 says what is missing.
    let r = f.post("/addresses/associate", &alice, &[("allocation", &alloc)]);
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", body(&r));
    assert!(body(&r).contains("InstanceId"), "{}", body(&r));
    let r = f.post("/addresses/release", &alice, &[("allocation", &alloc)]);
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", body(&r));
    assert!(f
        .get("/addresses", &alice)
        .contains("You have no elastic IPs"));
    assert_eq!(
        audited(&f, "ReleaseAddress"),
        [
            ("alice".into(), ADDR.into(), "ok"),
            ("bob".into(), ADDR.into(), "error")
        ]
    );
}

fn image(id: &str, owner: &str, public: bool) -> crate::cloud::model::Image {
    crate::cloud::model::Image {
        id: id.into(),
        owner: owner.into(),
        name: "<b>root</b>".into(),
        description: None,
        kind: crate::cloud::model::ImageKind::Machine,
        bucket: "b".into(),
        key: "k".into(),
        size: 1,
        sha256: String::new(),
        architecture: "x86_64".into(),
        kernel_id: None,
        ramdisk_id: None,
        public,
        launch_users: Vec::new(),
        created_ms: 0,
        root_snapshot: None,
        source_instance: None,
        root_device: None,
    }
}

#[test]
fn images_list_what_describe_images_lists_and_only_the_owner_deregisters() {
    let f = fixture();
    let alice = f.session("alice");
    let own = image("emi-0000a11c", "alice", false);
    let public = image("emi-0000beef", "bob", true);
    let private = image("emi-0000dead", "bob", false);
    f.store
        .cloud(|tx| {
            for i in [&own, &public, &private] {
                tx.put(crate::cloud::model::IMAGE, &i.id, &i.owner, None, i)?;
            }
            Ok::<_, crate::store::StoreError>(())
        })
        .unwrap();
    let page = f.get("/images", &alice);
    assert!(
        page.contains(&own.id) && page.contains(&public.id),
        "{page}"
    );
    assert!(!page.contains(&private.id), "{page}");
    assert!(page.contains("&lt;b&gt;root&lt;/b&gt;"), "{page}");
    assert_eq!(
        page.matches("/_console/images/deregister").count(),
        1,
        "{page}"
    );
    let r = f.post("/images/deregister", &alice, &[("image", &public.id)]);
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", body(&r));
    assert!(body(&r).contains("The image was not deregistered"));
    let r = f.post("/images/deregister", &alice, &[("image", &own.id)]);
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", body(&r));
    assert!(!f.get("/images", &alice).contains(&own.id));
}

#[test]
fn rotating_the_key_replaces_it_at_once_offers_the_new_file_and_is_audited() {
    let f = fixture();
    let alice = f.session("alice");
    let old = f.store.user_by_name("alice").unwrap().unwrap();
    assert!(f
        .get("/credentials/rotate", &alice)
        .contains(&old.access_key));
    let r = f.ask_as(Method::POST, "/credentials/rotate", &alice, &[]);
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(f.store.user_by_name("alice").unwrap(), Some(old.clone()));
    let r = f.post("/credentials/rotate", &alice, &[]);
    assert_eq!(r.status, StatusCode::OK, "{}", body(&r));
    assert_eq!(r.attachment.as_deref(), Some("credentials"));
    let new = f.store.user_by_name("alice").unwrap().unwrap();
    assert_ne!(new.access_key, old.access_key);
    assert_eq!(body(&r), crate::admin::credentials_text(&new));
    assert_eq!(f.store.user_by_access_key(&old.access_key).unwrap(), None);
    // The session goes on, with the new key on its pages.
    assert!(f
        .get("/credentials/rotate", &alice)
        .contains(&new.access_key));
    assert_eq!(
        audited(&f, "RotateAccessKey"),
        [("alice".into(), ADDR.into(), "ok")]
    );
}
