//! The console's gate and pages over a real store and the real EC2 room, without a socket:
//! sign-in, the rate limit, CSRF, sign-out, scoping to the signed-in user and the audit log.

use super::*;
use crate::cloud::{Changes, Ec2Config};
use crate::store::Role;

const ADDR: &str = "192.0.2.10";

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    ec2: Ec2,
    console: Console,
}

fn fixture() -> Fixture {
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
    for name in ["alice", "bob"] {
        store.create_user(name, Role::User).unwrap();
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
    fn ask(&self, method: Method, path: &str, cookies: &[String], form: &[(&str, &str)]) -> Reply {
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
    fn sign_in_form(&self) -> (String, String) {
        let form = self.ask(Method::GET, "/signin", &[], &[]);
        assert_eq!(form.status, StatusCode::OK);
        let cookie = cookie_pair(&form.cookies[0]);
        let token = cookie.split_once('=').unwrap().1.to_string();
        (token, cookie)
    }

    fn try_sign_in(&self, user: &str, password: &str) -> Reply {
        let (token, cookie) = self.sign_in_form();
        self.ask(
            Method::POST,
            "/signin",
            &[cookie],
            &[("csrf", &token), ("user", user), ("password", password)],
        )
    }

    /// Signs `user` in; the session cookie and the CSRF token of its pages.
    fn sign_in(&self, user: &str) -> (String, String) {
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
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

fn body(r: &Reply) -> String {
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
