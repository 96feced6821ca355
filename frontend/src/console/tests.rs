//! The console's gate and pages over a real store and the real EC2 room, without a socket:
//! sign-in, the rate limit, CSRF, sign-out, scoping to the signed-in user, the audit log, and
//! the admin pages (refused to users; node admission, users and the audit filter for admins).

use super::*;
use crate::cloud::{Changes, Ec2Config};
use crate::store::Role;

pub(super) const ADDR: &str = "192.0.2.10";

/// A store with alice and bob (users) and ops (an admin), each with the password
/// `<name> password`, the EC2 room and a console serving TLS (secure cookies). The other
/// console test modules share it.
pub(super) struct Fixture {
    _dir: tempfile::TempDir,
    pub(super) store: Arc<Store>,
    pub(super) ec2: Ec2,
    pub(super) console: Console,
}

pub(super) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let ec2 = Ec2::new(
        store.clone(),
        Ec2Config::default(),
        Arc::new(Changes::default()),
        "us-east-1",
        300,
    );
    let bundle = dir.path().join("mallee-ca.pem");
    std::fs::write(&bundle, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let console = Console::new(store.clone(), Some(bundle), "us-east-1");
    for (name, role) in [
        ("alice", Role::User),
        ("bob", Role::User),
        ("ops", Role::Admin),
    ] {
        store.create_user(name, role).unwrap();
        let hash = password::hash(&format!("{name} password")).unwrap();
        store.set_password_hash(name, &hash).unwrap();
    }
    Fixture {
        _dir: dir,
        store,
        ec2,
        console,
    }
}

impl Fixture {
    pub(super) fn ask(
        &self,
        method: Method,
        path: &str,
        cookies: &[String],
        form: &[(&str, &str)],
    ) -> Reply {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::HOST, "cloud.example:8773".parse().unwrap());
        if !cookies.is_empty() {
            headers.insert(http::header::COOKIE, cookies.join("; ").parse().unwrap());
        }
        let asked = Asked {
            method: &method,
            path,
            headers: &headers,
            form: Params::from_pairs(form),
            source: ADDR,
            now: crate::store::now_ms(),
        };
        self.console.answer(&self.ec2, &asked)
    }

    /// The sign-in form's token and its cookie.
    pub(super) fn sign_in_form(&self) -> (String, String) {
        let form = self.ask(Method::GET, "/signin", &[], &[]);
        assert_eq!(form.status, StatusCode::OK);
        let cookie = cookie_pair(&form.cookies[0]);
        let token = cookie.split_once('=').unwrap().1.to_string();
        (token, cookie)
    }

    pub(super) fn try_sign_in(&self, user: &str, password: &str) -> Reply {
        let (token, cookie) = self.sign_in_form();
        self.ask(
            Method::POST,
            "/signin",
            &[cookie],
            &[("csrf", &token), ("user", user), ("password", password)],
        )
    }

    /// Signs `user` in; the session cookie and the CSRF token of its pages.
    pub(super) fn sign_in(&self, user: &str) -> (String, String) {
        let r = self.try_sign_in(user, &format!("{user} password"));
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", body(&r));
        assert_eq!(r.location.as_deref(), Some("/_console/instances"));
        let set = &r.cookies[0];
        assert!(set.starts_with("__Host-mallee-session="), "{set}");
        assert!(set.contains("Secure; HttpOnly; SameSite=Strict"), "{set}");
        let cookie = cookie_pair(set);
        let page = self.ask(Method::GET, "/keypairs", std::slice::from_ref(&cookie), &[]);
        let html = body(&page);
        let csrf = html
            .split(r#"name="csrf" value=""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a CSRF field")
            .to_string();
        (cookie, csrf)
    }
}

/// `name=value` of a `Set-Cookie` value.
pub(super) fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

pub(super) fn body(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[test]
fn wrong_passwords_are_refused_then_rate_limited_and_the_right_one_signs_in() {
    let f = fixture();
    for _ in 0..limiter::MAX_FAILURES {
        let r = f.try_sign_in("alice", "not her password");
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(body(&r).contains("Wrong user name or password"));
        assert!(r.cookies.iter().all(|c| !c.contains("mallee-session")));
    }
    let r = f.try_sign_in("alice", "alice password");
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.retry_after.is_some_and(|s| s > 0 && s <= 300));
    assert!(
        body(&r).contains("Too many failed sign-ins"),
        "{}",
        body(&r)
    );
    // Another address, another name: not limited.
    let fresh = fixture();
    fresh.sign_in("bob");
    let log = f.store.audit_log(100, None).unwrap();
    let actions: Vec<(&str, &str, &str)> = log
        .rows
        .iter()
        .map(|r| {
            let (outcome, code) = r.entry.outcome.parts();
            (r.entry.action.as_str(), outcome, code.unwrap_or("-"))
        })
        .collect();
    assert_eq!(actions[0], ("ConsoleSignIn", "error", "Throttling"));
    assert_eq!(actions[1], ("ConsoleSignIn", "error", "AuthFailure"));
    assert_eq!(log.rows[0].entry.source, ADDR);
}

#[test]
fn a_sign_in_without_the_form_token_is_refused() {
    let f = fixture();
    let r = f.ask(
        Method::POST,
        "/signin",
        &[],
        &[
            ("csrf", "guess"),
            ("user", "alice"),
            ("password", "alice password"),
        ],
    );
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.cookies.iter().all(|c| !c.contains("mallee-session")));
}

#[test]
fn pages_need_a_session_and_posts_its_csrf_token() {
    let f = fixture();
    let r = f.ask(Method::GET, "/instances", &[], &[]);
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location.as_deref(), Some("/_console/signin"));
    let bogus = ["__Host-mallee-session=forged".to_string()];
    assert_eq!(
        f.ask(Method::GET, "/instances", &bogus, &[]).status,
        StatusCode::SEE_OTHER
    );
    let (cookie, csrf) = f.sign_in("alice");
    let cookies = [cookie];
    assert_eq!(
        f.ask(Method::GET, "/instances", &cookies, &[]).status,
        StatusCode::OK
    );
    for form in [
        vec![("name", "k1")],
        vec![("name", "k1"), ("csrf", "wrong")],
    ] {
        let r = f.ask(Method::POST, "/keypairs", &cookies, &form);
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", body(&r));
    }
    let r = f.ask(
        Method::POST,
        "/keypairs",
        &[],
        &[("name", "k1"), ("csrf", &csrf)],
    );
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let pairs: Vec<crate::cloud::model::KeyPair> = f
        .store
        .cloud(|tx| tx.list(crate::cloud::model::KEY_PAIR, None))
        .unwrap();
    assert!(pairs.is_empty(), "{pairs:?}");
}

#[test]
fn a_key_pair_is_made_as_the_ec2_call_downloaded_once_audited_and_seen_only_by_its_owner() {
    let f = fixture();
    let (alice, csrf) = f.sign_in("alice");
    let alice = [alice];
    let name = "<script>k</script>";
    let form = [("name", name), ("type", "ed25519"), ("csrf", csrf.as_str())];
    let r = f.ask(Method::POST, "/keypairs", &alice, &form);
    assert_eq!(r.status, StatusCode::OK, "{}", body(&r));
    assert_eq!(r.attachment.as_deref(), Some("_script_k__script_.pem"));
    assert!(body(&r).starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    // Listed (escaped), without its private half.
    let page = body(&f.ask(Method::GET, "/keypairs", &alice, &[]));
    assert!(page.contains("&lt;script&gt;k&lt;/script&gt;"), "{page}");
    assert!(!page.contains("<script>"));
    assert!(!page.contains("PRIVATE KEY"));
    // The same name again: EC2's refusal, as a message.
    let again = f.ask(Method::POST, "/keypairs", &alice, &form);
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(body(&again).contains("already exists"), "{}", body(&again));
    // Bob sees none of it.
    let (bob, bob_csrf) = f.sign_in("bob");
    let bob = [bob];
    let page = body(&f.ask(Method::GET, "/keypairs", &bob, &[]));
    assert!(page.contains("You have no key pairs"), "{page}");
    let del = [("name", name), ("csrf", bob_csrf.as_str())];
    f.ask(Method::POST, "/keypairs/delete", &bob, &del);
    assert!(body(&f.ask(Method::GET, "/keypairs", &alice, &[])).contains("&lt;script&gt;"));
    let log = f.store.audit_log(100, None).unwrap();
    let created = log
        .rows
        .iter()
        .find(|r| r.entry.action == "CreateKeyPair" && r.entry.outcome == crate::store::Outcome::Ok)
        .expect("CreateKeyPair audited");
    assert_eq!(created.entry.user, "alice");
    assert_eq!(created.entry.source, ADDR);
    assert_eq!(created.entry.resources[0], name);
}

#[test]
fn signing_out_or_deleting_the_user_ends_the_session() {
    let f = fixture();
    let (cookie, csrf) = f.sign_in("alice");
    let cookies = [cookie];
    let r = f.ask(Method::POST, "/signout", &cookies, &[("csrf", &csrf)]);
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.cookies[0].contains("Max-Age=0"));
    assert_eq!(
        f.ask(Method::GET, "/keypairs", &cookies, &[])
            .location
            .as_deref(),
        Some("/_console/signin")
    );
    let (cookie, _) = f.sign_in("bob");
    f.store.delete_user("bob").unwrap();
    let r = f.ask(Method::GET, "/keypairs", &[cookie], &[]);
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[test]
fn credentials_are_the_users_own_with_region_endpoint_and_ca_bundle() {
    let f = fixture();
    let (cookie, _) = f.sign_in("alice");
    let cookies = [cookie];
    let alice = f.store.user_by_name("alice").unwrap().unwrap();
    let file = f.ask(Method::GET, "/credentials/aws-credentials", &cookies, &[]);
    assert_eq!(body(&file), crate::admin::credentials_text(&alice));
    let env = body(&f.ask(Method::GET, "/credentials/mallee-env.sh", &cookies, &[]));
    for line in [
        format!("export AWS_ACCESS_KEY_ID={}", alice.access_key),
        format!("export AWS_SECRET_ACCESS_KEY={}", alice.secret),
        "export AWS_DEFAULT_REGION=us-east-1".to_string(),
        "export AWS_ENDPOINT_URL=https://cloud.example:8773".to_string(),
        "export AWS_CA_BUNDLE=".to_string(),
    ] {
        assert!(env.contains(&line), "{line} not in {env}");
    }
    let ca = f.ask(Method::GET, "/credentials/mallee-ca.pem", &cookies, &[]);
    assert!(body(&ca).starts_with("-----BEGIN CERTIFICATE-----"));
    let missing = f.ask(Method::GET, "/credentials/other", &cookies, &[]);
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[test]
fn another_users_instance_is_not_found_for_terminate_or_console() {
    let f = fixture();
    let mut i = crate::cloud::reconcile::tests::instance();
    i.id = "i-0123456789abcdef0".into();
    i.owner = "alice".into();
    f.store
        .cloud(|tx| tx.put(crate::cloud::model::INSTANCE, &i.id, &i.owner, None, &i))
        .unwrap();
    let (bob, csrf) = f.sign_in("bob");
    let bob = [bob];
    assert!(!body(&f.ask(Method::GET, "/instances", &bob, &[])).contains(&i.id));
    let path = format!("/instances/{}/console", i.id);
    let r = f.ask(Method::GET, &path, &bob, &[]);
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", body(&r));
    let path = format!("/instances/{}/terminate", i.id);
    let r = f.ask(Method::POST, &path, &bob, &[("csrf", &csrf)]);
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", body(&r));
    let (alice, csrf) = f.sign_in("alice");
    let alice = [alice];
    assert!(body(&f.ask(Method::GET, "/instances", &alice, &[])).contains(&i.id));
    let r = f.ask(Method::POST, &path, &alice, &[("csrf", &csrf)]);
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", body(&r));
    let now: crate::cloud::model::Instance = f
        .store
        .cloud(|tx| tx.get(crate::cloud::model::INSTANCE, &i.id))
        .unwrap()
        .unwrap();
    assert_ne!(now.state, crate::cloud::model::State::Running);
    let log = f.store.audit_log(100, None).unwrap();
    let users: Vec<(&str, &str)> = log
        .rows
        .iter()
        .filter(|r| r.entry.action == "TerminateInstances")
        .map(|r| (r.entry.user.as_str(), r.entry.outcome.parts().0))
        .collect();
    assert_eq!(users, [("alice", "ok"), ("bob", "error")]);
}

/// Enrolls node `id` from an unlisted MAC, so it waits for an admin.
fn pending_node(f: &Fixture, id: &str) {
    let cfg = Ec2Config::default();
    let req = mallee_proto::EnrollRequest {
        node_id: id.into(),
        cluster: cfg.clusters[0].clone(),
        secret: cfg.cluster_secret.clone(),
        macs: vec!["52:54:00:99:00:01".parse().unwrap()],
        token: None,
    };
    let refused = crate::cloud::admission::enroll(&f.store, &cfg, &req, "10.77.0.150", 1_000);
    assert!(refused.is_err());
}

fn node_admission(f: &Fixture, id: &str) -> String {
    let nodes = crate::cloud::admission::list(&f.store).unwrap();
    let n = nodes.iter().find(|n| n.id == id).expect("the node");
    n.admission_name().to_string()
}

const ADMIN_PAGES: [&str; 4] = [
    "/admin/nodes",
    "/admin/users",
    "/admin/networks",
    "/admin/audit",
];

#[test]
fn a_user_is_refused_every_admin_page_and_her_admin_posts_change_nothing() {
    let f = fixture();
    pending_node(&f, "node-1");
    let (alice, csrf) = f.sign_in("alice");
    let alice = [alice];
    let own = body(&f.ask(Method::GET, "/instances", &alice, &[]));
    assert!(!own.contains("/_console/admin/"), "{own}");
    for path in ADMIN_PAGES {
        let r = f.ask(Method::GET, path, &alice, &[]);
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        assert!(body(&r).contains("for the cloud's admins"), "{}", body(&r));
    }
    let r = f.ask(
        Method::POST,
        "/admin/nodes/node-1/approve",
        &alice,
        &[("csrf", &csrf)],
    );
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(node_admission(&f, "node-1"), "pending");
    let form = [
        ("csrf", csrf.as_str()),
        ("name", "mallory"),
        ("role", "admin"),
        ("password", "mallory password"),
    ];
    let r = f.ask(Method::POST, "/admin/users", &alice, &form);
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(f.store.user_by_name("mallory").unwrap().is_none());
    let form = [
        ("csrf", csrf.as_str()),
        ("name", "bob"),
        ("password", "taken over!"),
    ];
    let r = f.ask(Method::POST, "/admin/users/password", &alice, &form);
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    f.sign_in("bob");
}

#[test]
fn an_admin_sees_every_admin_page_and_an_admin_post_needs_the_csrf_token() {
    let f = fixture();
    pending_node(&f, "node-1");
    let (ops, _) = f.sign_in("ops");
    let ops = [ops];
    let r = f.ask(
        Method::POST,
        "/admin/nodes/node-1/approve",
        &ops,
        &[("csrf", "wrong")],
    );
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(node_admission(&f, "node-1"), "pending");
    for path in ADMIN_PAGES {
        let r = f.ask(Method::GET, path, &ops, &[]);
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", body(&r));
    }
}

#[test]
fn the_admin_approves_a_pending_node_as_approve_node_audited_as_the_admin() {
    let f = fixture();
    pending_node(&f, "node-1");
    let (ops, csrf) = f.sign_in("ops");
    let ops = [ops];
    let page = body(&f.ask(Method::GET, "/admin/nodes", &ops, &[]));
    for part in [
        "/_console/admin/nodes",
        "node-1",
        "pending",
        "10.77.0.150",
        "52:54:00:99:00:01",
        "/_console/admin/nodes/node-1/approve",
    ] {
        assert!(page.contains(part), "{part} not in {page}");
    }
    let r = f.ask(
        Method::POST,
        "/admin/nodes/node-1/approve",
        &ops,
        &[("csrf", &csrf)],
    );
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", body(&r));
    assert_eq!(node_admission(&f, "node-1"), "approved");
    let page = body(&f.ask(Method::GET, "/admin/nodes", &ops, &[]));
    assert!(!page.contains("/node-1/approve"), "{page}");
    // An unknown node: EC2's refusal as a message.
    let r = f.ask(
        Method::POST,
        "/admin/nodes/node-9/approve",
        &ops,
        &[("csrf", &csrf)],
    );
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", body(&r));
    assert!(body(&r).contains("node-9 was not changed"), "{}", body(&r));
    let log = f.store.audit_log(100, None).unwrap();
    let approved: Vec<(&str, &str, &str)> = log
        .rows
        .iter()
        .filter(|r| r.entry.action == "ApproveNode")
        .map(|r| {
            (
                r.entry.user.as_str(),
                r.entry.source.as_str(),
                r.entry.outcome.parts().0,
            )
        })
        .collect();
    assert_eq!(approved, [("ops", ADDR, "error"), ("ops", ADDR, "ok")]);
}

#[test]
fn the_admin_creates_a_user_who_signs_in_and_resets_a_password_audited_as_the_admin() {
    let f = fixture();
    let (ops, csrf) = f.sign_in("ops");
    let ops = [ops];
    let form = [
        ("csrf", csrf.as_str()),
        ("name", "carol"),
        ("role", "user"),
        ("password", "carol password"),
    ];
    let r = f.ask(Method::POST, "/admin/users", &ops, &form);
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", body(&r));
    f.sign_in("carol");
    let again = f.ask(Method::POST, "/admin/users", &ops, &form);
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(
        body(&again).contains("The user was not created"),
        "{}",
        body(&again)
    );
    let short = [
        ("csrf", csrf.as_str()),
        ("name", "dave"),
        ("role", "user"),
        ("password", "x"),
    ];
    let r = f.ask(Method::POST, "/admin/users", &ops, &short);
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(f.store.user_by_name("dave").unwrap().is_none());
    // Bob's new password works; his old one no longer does.
    let (bob, _) = f.sign_in("bob");
    let form = [
        ("csrf", csrf.as_str()),
        ("name", "bob"),
        ("password", "bob's new password"),
    ];
    let r = f.ask(Method::POST, "/admin/users/password", &ops, &form);
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", body(&r));
    assert_eq!(
        f.ask(Method::GET, "/instances", &[bob], &[]).status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        f.try_sign_in("bob", "bob password").status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        f.try_sign_in("bob", "bob's new password").status,
        StatusCode::SEE_OTHER
    );
    let page = body(&f.ask(Method::GET, "/admin/users", &ops, &[]));
    let carol = f.store.user_by_name("carol").unwrap().unwrap();
    assert!(
        page.contains(&carol.account_id()) && page.contains("carol"),
        "{page}"
    );
    let log = f.store.audit_log(100, None).unwrap();
    let by_ops: Vec<(&str, &str, &str)> = log
        .rows
        .iter()
        .filter(|r| r.entry.user == "ops" && r.entry.action != "ConsoleSignIn")
        .map(|r| {
            (
                r.entry.action.as_str(),
                r.entry.resources[0].as_str(),
                r.entry.outcome.parts().0,
            )
        })
        .collect();
    assert_eq!(
        by_ops,
        [
            ("UpdateLoginProfile", "bob", "ok"),
            ("CreateUser", "carol", "error"),
            ("CreateLoginProfile", "carol", "ok"),
            ("CreateUser", "carol", "ok"),
        ]
    );
    assert!(log
        .rows
        .iter()
        .filter(|r| r.entry.user == "ops")
        .all(|r| r.entry.source == ADDR));
}

#[test]
fn the_audit_filter_shows_only_matching_entries() {
    let f = fixture();
    f.sign_in("alice");
    f.try_sign_in("bob", "wrong");
    let (ops, _) = f.sign_in("ops");
    let ops = [ops];
    let query = [
        ("user", "alice"),
        ("action", "ConsoleSignIn"),
        ("outcome", "ok"),
    ];
    let page = body(&f.ask(Method::GET, "/admin/audit", &ops, &query));
    assert_eq!(page.matches("<tr>").count() - 1, 1, "{page}");
    assert!(page.contains(r#"value="alice""#), "{page}");
    let errors = body(&f.ask(Method::GET, "/admin/audit", &ops, &[("outcome", "error")]));
    assert_eq!(errors.matches("<tr>").count() - 1, 1, "{errors}");
    assert!(
        errors.contains("AuthFailure") && !errors.contains(r#"class="state ok""#),
        "{errors}"
    );
    let all = body(&f.ask(Method::GET, "/admin/audit", &ops, &[]));
    assert_eq!(all.matches("<tr>").count() - 1, 3, "{all}");
    let none = body(&f.ask(
        Method::GET,
        "/admin/audit",
        &ops,
        &[("user", "<b>nobody</b>")],
    ));
    assert!(
        none.contains("No entry matches") && none.contains("&lt;b&gt;nobody"),
        "{none}"
    );
}

#[test]
fn the_audit_filter_reads_past_a_batch_and_stops_at_its_limit() {
    let f = fixture();
    for n in 0..1_200 {
        let user = if n % 2 == 0 { "even" } else { "odd" };
        let entry = crate::store::AuditEntry {
            at_ms: n,
            user: user.into(),
            action: "CreateVolume".into(),
            resources: vec![format!("vol-{n}")],
            source: ADDR.into(),
            outcome: crate::store::Outcome::Ok,
            request_id: String::new(),
        };
        crate::audit::record(&f.store, &entry);
    }
    let filter = admin_pages::AuditFilter {
        user: "even".into(),
        ..Default::default()
    };
    let rows = admin::filtered_audit(&f.store, &filter, 550).unwrap();
    assert_eq!(rows.len(), 550);
    assert!(rows.iter().all(|r| r.entry.user == "even"));
    assert_eq!(rows[0].entry.resources[0], "vol-1198");
    assert_eq!(rows[549].entry.resources[0], "vol-100");
    let all = admin::filtered_audit(&f.store, &filter, 5_000).unwrap();
    assert_eq!(all.len(), 600);
}

#[test]
fn a_password_reset_names_its_user_in_the_form_so_any_name_works() {
    let f = fixture();
    let (ops, csrf) = f.sign_in("ops");
    let ops = [ops];
    let name = "o'neil/x?y";
    let form = [
        ("csrf", csrf.as_str()),
        ("name", name),
        ("role", "user"),
        ("password", "first password"),
    ];
    assert_eq!(
        f.ask(Method::POST, "/admin/users", &ops, &form).status,
        StatusCode::SEE_OTHER
    );
    let page = body(&f.ask(Method::GET, "/admin/users", &ops, &[]));
    assert!(
        page.contains(r#"<input type="hidden" name="name" value="o'neil/x?y">"#),
        "{page}"
    );
    let form = [
        ("csrf", csrf.as_str()),
        ("name", name),
        ("password", "second password"),
    ];
    let r = f.ask(Method::POST, "/admin/users/password", &ops, &form);
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", body(&r));
    assert_eq!(
        f.try_sign_in(name, "second password").status,
        StatusCode::SEE_OTHER
    );
    let form = [
        ("csrf", csrf.as_str()),
        ("name", "nobody"),
        ("password", "third password"),
    ];
    let r = f.ask(Method::POST, "/admin/users/password", &ops, &form);
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", body(&r));
    assert!(
        body(&r).contains("The password of nobody was not set"),
        "{}",
        body(&r)
    );
}

/// Alice's machine image `emi-…0`, available (its object is in Walrus since it was
/// registered), and a node with room for an instance.
fn alice_image_and_a_node(f: &Fixture) -> String {
    let img = crate::cloud::model::Image {
        id: "emi-0123456789abcdef0".into(),
        owner: "alice".into(),
        name: "<b>root</b>".into(),
        description: None,
        kind: crate::cloud::model::ImageKind::Machine,
        bucket: "alice-img".into(),
        key: "root.img".into(),
        size: 4096,
        sha256: String::new(),
        architecture: "x86_64".into(),
        kernel_id: None,
        ramdisk_id: None,
        public: false,
        launch_users: Vec::new(),
        created_ms: 0,
        root_snapshot: None,
        source_instance: None,
        root_device: None,
    };
    f.store
        .cloud(|tx| {
            tx.put(
                crate::cloud::model::IMAGE,
                &img.id,
                &img.owner,
                Some(&img.name),
                &img,
            )
        })
        .unwrap();
    crate::cloud::nodes::tests::node_in(&f.store, "n1", &Ec2Config::default().clusters[0]);
    img.id
}

fn instances_of(f: &Fixture, owner: &str) -> Vec<crate::cloud::model::Instance> {
    f.store
        .cloud(|tx| tx.list(crate::cloud::model::INSTANCE, Some(owner)))
        .unwrap()
}

#[test]
fn the_instances_page_offers_only_the_users_images_key_pairs_and_groups() {
    let f = fixture();
    let image = alice_image_and_a_node(&f);
    let (alice, csrf) = f.sign_in("alice");
    let alice = [alice];
    let form = [("name", "alice-key"), ("csrf", csrf.as_str())];
    f.ask(Method::POST, "/keypairs", &alice, &form);
    let page = body(&f.ask(Method::GET, "/instances", &alice, &[]));
    for part in [
        r#"action="/_console/instances""#,
        &format!(r#"<option value="{image}">&lt;b&gt;root&lt;/b&gt;"#),
        r#"<option value="alice-key">"#,
        r#"<option value="default">default</option>"#,
        r#"<option value="m1.small">"#,
    ] {
        assert!(page.contains(part), "{part} not in {page}");
    }
    let (bob, _) = f.sign_in("bob");
    let page = body(&f.ask(Method::GET, "/instances", &[bob], &[]));
    assert!(
        !page.contains(&image) && !page.contains("alice-key"),
        "{page}"
    );
    assert!(page.contains("No image is available to you yet"), "{page}");
}

#[test]
fn the_launch_form_runs_one_instance_as_run_instances_audited_as_the_user() {
    let f = fixture();
    let image = alice_image_and_a_node(&f);
    let (alice, csrf) = f.sign_in("alice");
    let alice = [alice];
    f.ask(
        Method::POST,
        "/keypairs",
        &alice,
        &[("name", "k"), ("csrf", csrf.as_str())],
    );
    let form = [
        ("csrf", csrf.as_str()),
        ("image", image.as_str()),
        ("type", "c1.medium"),
        ("key", "k"),
        ("group", "default"),
        ("user_data", "hello from the console"),
    ];
    let r = f.ask(Method::POST, "/instances", &alice, &form);
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", body(&r));
    assert_eq!(r.location.as_deref(), Some("/_console/instances"));
    let made = instances_of(&f, "alice");
    assert_eq!(made.len(), 1, "{made:?}");
    let i = &made[0];
    assert_eq!(
        (i.image_id.as_str(), i.instance_type.as_str()),
        (image.as_str(), "c1.medium")
    );
    assert_eq!(i.key_name.as_deref(), Some("k"));
    assert_eq!(
        i.user_data.as_deref(),
        Some("aGVsbG8gZnJvbSB0aGUgY29uc29sZQ==")
    );
    assert!(body(&f.ask(Method::GET, "/instances", &alice, &[])).contains(&i.id));
    let log = f.store.audit_log(100, None).unwrap();
    let run = (log.rows.iter())
        .find(|r| r.entry.action == "RunInstances")
        .expect("RunInstances audited");
    assert_eq!(
        (run.entry.user.as_str(), run.entry.source.as_str()),
        ("alice", ADDR)
    );
    assert_eq!(run.entry.outcome, crate::store::Outcome::Ok);
}

#[test]
fn a_refused_launch_shows_ec2s_message_keeps_the_form_and_makes_nothing() {
    let f = fixture();
    let image = alice_image_and_a_node(&f);
    let (bob, csrf) = f.sign_in("bob");
    let bob = [bob];
    // Alice's private image is not bob's to run.
    let form = [
        ("csrf", csrf.as_str()),
        ("image", image.as_str()),
        ("type", "m1.small"),
        ("user_data", "<script>x</script>"),
    ];
    let r = f.ask(Method::POST, "/instances", &bob, &form);
    let page = body(&r);
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("The instance was not launched: "), "{page}");
    assert!(page.contains(&image), "{page}");
    assert!(
        page.contains("&lt;script&gt;x&lt;/script&gt;</textarea>"),
        "{page}"
    );
    assert!(!page.contains("<script>"), "{page}");
    // User data that is too big: EC2's limit, in its words.
    let (alice, csrf) = f.sign_in("alice");
    let alice = [alice];
    let big = "x".repeat(16_385);
    let form = [
        ("csrf", csrf.as_str()),
        ("image", image.as_str()),
        ("user_data", big.as_str()),
    ];
    let r = f.ask(Method::POST, "/instances", &alice, &form);
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", body(&r));
    assert!(body(&r).contains("User data is limited to 16384 bytes."));
    // No token: refused before EC2 is asked.
    let form = [("image", image.as_str())];
    let r = f.ask(Method::POST, "/instances", &alice, &form);
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(instances_of(&f, "alice").is_empty() && instances_of(&f, "bob").is_empty());
    let log = f.store.audit_log(100, None).unwrap();
    let runs: Vec<(&str, &str)> = (log.rows.iter())
        .filter(|r| r.entry.action == "RunInstances")
        .map(|r| (r.entry.user.as_str(), r.entry.outcome.parts().0))
        .collect();
    assert_eq!(runs, [("alice", "error"), ("bob", "error")]);
}

/// Alice's `i-…1` in `state` (EBS-backed when `ebs`), in the zone of a node with room.
fn alice_instance(f: &Fixture, state: crate::cloud::model::State, ebs: bool) -> String {
    let zone = &Ec2Config::default().clusters[0];
    crate::cloud::nodes::tests::node_in(&f.store, "n1", zone);
    let mut i = crate::cloud::reconcile::tests::instance();
    i.id = "i-0123456789abcdef1".into();
    i.owner = "alice".into();
    i.zone = zone.clone();
    i.state = state;
    i.root_volume = ebs.then(|| "vol-0123456789abcdef0".to_string());
    f.store
        .cloud(|tx| tx.put(crate::cloud::model::INSTANCE, &i.id, &i.owner, None, &i))
        .unwrap();
    i.id
}

fn instance_now(f: &Fixture, id: &str) -> crate::cloud::model::Instance {
    f.store
        .cloud(|tx| tx.get(crate::cloud::model::INSTANCE, id))
        .unwrap()
        .unwrap()
}

/// Who ran `action` and how it went, newest first.
pub(super) fn audited(f: &Fixture, action: &str) -> Vec<(String, String, &'static str)> {
    let log = f.store.audit_log(100, None).unwrap();
    (log.rows.iter())
        .filter(|r| r.entry.action == action)
        .map(|r| {
            let outcome = if r.entry.outcome == crate::store::Outcome::Ok {
                "ok"
            } else {
                "error"
            };
            (r.entry.user.clone(), r.entry.source.clone(), outcome)
        })
        .collect()
}

#[test]
fn reboot_of_a_running_instance_is_reboot_instances_audited_as_the_user() {
    use crate::cloud::model::State;
    let f = fixture();
    let id = alice_instance(&f, State::Running, false);
    let (alice, csrf) = f.sign_in("alice");
    let alice = [alice];
    let page = body(&f.ask(Method::GET, "/instances", &alice, &[]));
    assert!(
        page.contains(&format!(r#"action="/_console/instances/{id}/reboot""#)),
        "{page}"
    );
    let path = format!("/instances/{id}/reboot");
    let r = f.ask(Method::POST, &path, &alice, &[("csrf", &csrf)]);
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", body(&r));
    assert_eq!(r.location.as_deref(), Some("/_console/instances"));
    let now = instance_now(&f, &id);
    assert_eq!((now.state, now.reboot_count), (State::Running, 1));
    assert_eq!(
        audited(&f, "RebootInstances"),
        [("alice".to_string(), ADDR.to_string(), "ok")]
    );
}

#[test]
fn bob_cannot_reboot_stop_or_start_alices_instance() {
    use crate::cloud::model::State;
    let f = fixture();
    let id = alice_instance(&f, State::Running, true);
    let (bob, csrf) = f.sign_in("bob");
    let bob = [bob];
    for verb in ["reboot", "stop", "start"] {
        let path = format!("/instances/{id}/{verb}");
        let r = f.ask(Method::POST, &path, &bob, &[("csrf", &csrf)]);
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{verb}: {}", body(&r));
        assert!(body(&r).contains(&id), "{}", body(&r));
    }
    let now = instance_now(&f, &id);
    assert_eq!((now.state, now.reboot_count), (State::Running, 0));
    assert_eq!(
        audited(&f, "RebootInstances"),
        [("bob".to_string(), ADDR.to_string(), "error")]
    );
}

#[test]
fn stop_of_an_instance_store_instance_shows_ec2s_refusal_and_changes_nothing() {
    use crate::cloud::model::State;
    let f = fixture();
    let id = alice_instance(&f, State::Running, false);
    let (alice, csrf) = f.sign_in("alice");
    let alice = [alice];
    let page = body(&f.ask(Method::GET, "/instances", &alice, &[]));
    assert!(!page.contains(&format!("/{id}/stop")), "{page}");
    let path = format!("/instances/{id}/stop");
    let r = f.ask(Method::POST, &path, &alice, &[("csrf", &csrf)]);
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", body(&r));
    let why = format!(
        "The instance '{id}' does not have an 'ebs' root device type and cannot be stopped."
    );
    assert!(body(&r).contains(&why), "{}", body(&r));
    assert_eq!(instance_now(&f, &id).state, State::Running);
    assert_eq!(
        audited(&f, "StopInstances"),
        [("alice".to_string(), ADDR.to_string(), "error")]
    );
}

#[test]
fn an_ebs_backed_instance_stops_and_starts_again_from_the_console() {
    use crate::cloud::model::State;
    let f = fixture();
    let id = alice_instance(&f, State::Running, true);
    let (alice, csrf) = f.sign_in("alice");
    let alice = [alice];
    let page = body(&f.ask(Method::GET, "/instances", &alice, &[]));
    assert!(page.contains(&format!("/{id}/stop")), "{page}");
    let stop = format!("/instances/{id}/stop");
    let r = f.ask(Method::POST, &stop, &alice, &[("csrf", &csrf)]);
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", body(&r));
    assert_eq!(instance_now(&f, &id).state, State::Stopping);
    // Starting before it stopped: EC2's refusal, nothing changed.
    let start = format!("/instances/{id}/start");
    let r = f.ask(Method::POST, &start, &alice, &[("csrf", &csrf)]);
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", body(&r));
    let why = format!("The instance '{id}' is not in a state from which it can be started.");
    assert!(body(&r).contains(&why), "{}", body(&r));
    assert_eq!(instance_now(&f, &id).state, State::Stopping);
    // Once the node reports it stopped, Start is offered and places it again.
    let mut stopped = instance_now(&f, &id);
    stopped.state = State::Stopped;
    f.store
        .cloud(|tx| tx.put(crate::cloud::model::INSTANCE, &id, "alice", None, &stopped))
        .unwrap();
    let page = body(&f.ask(Method::GET, "/instances", &alice, &[]));
    assert!(
        page.contains(&format!("/{id}/start")) && !page.contains(&format!("/{id}/stop")),
        "{page}"
    );
    let r = f.ask(Method::POST, &start, &alice, &[("csrf", &csrf)]);
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", body(&r));
    assert_eq!(instance_now(&f, &id).state, State::Pending);
    assert_eq!(
        audited(&f, "StartInstances"),
        [
            ("alice".to_string(), ADDR.to_string(), "ok"),
            ("alice".to_string(), ADDR.to_string(), "error")
        ]
    );
}

#[test]
fn an_instance_post_without_the_csrf_token_or_with_an_unknown_verb_changes_nothing() {
    use crate::cloud::model::State;
    let f = fixture();
    let id = alice_instance(&f, State::Running, false);
    let (alice, csrf) = f.sign_in("alice");
    let alice = [alice];
    let reboot = format!("/instances/{id}/reboot");
    let r = f.ask(Method::POST, &reboot, &alice, &[("csrf", "wrong")]);
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = f.ask(
        Method::POST,
        &format!("/instances/{id}/hibernate"),
        &alice,
        &[("csrf", &csrf)],
    );
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", body(&r));
    assert_eq!(instance_now(&f, &id).reboot_count, 0);
    assert!(audited(&f, "RebootInstances").is_empty());
}
