//! Disabling users through the console without a socket: the admin's Disable and Enable
//! buttons (CSRF-checked, never on oneself), a disabled user's session and sign-in refused,
//! and a stranger learning no more from a disabled user's sign-in than from a wrong password.

use super::tests::{body, fixture};
use super::*;

#[test]
fn the_admin_disables_a_user_whose_session_ends_and_enables_them_again() {
    let f = fixture();
    let (alice, _) = f.sign_in("alice");
    let (ops, csrf) = f.sign_in("ops");
    let disable = |form: &[(&str, &str)]| {
        f.ask(
            Method::POST,
            "/admin/users/disable",
            std::slice::from_ref(&ops),
            form,
        )
    };
    // Without the token nothing changes.
    assert_eq!(disable(&[("name", "alice")]).status, StatusCode::FORBIDDEN);
    assert!(!f.store.user_disabled("alice").unwrap());
    let r = disable(&[("csrf", &csrf), ("name", "alice")]);
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", body(&r));
    assert!(f.store.user_disabled("alice").unwrap());
    let r = f.ask(Method::GET, "/instances", std::slice::from_ref(&alice), &[]);
    assert_eq!(r.location.as_deref(), Some("/_console/signin"));
    let page = body(&f.ask(Method::GET, "/admin/users", std::slice::from_ref(&ops), &[]));
    assert!(page.contains("/_console/admin/users/enable"), "{page}");
    let r = f.ask(
        Method::POST,
        "/admin/users/enable",
        std::slice::from_ref(&ops),
        &[("csrf", &csrf), ("name", "alice")],
    );
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", body(&r));
    // Enabled again, she signs in with the same password.
    f.sign_in("alice");
}

#[test]
fn an_admin_cannot_disable_themself_and_a_user_cannot_disable_anyone() {
    let f = fixture();
    let (ops, csrf) = f.sign_in("ops");
    let r = f.ask(
        Method::POST,
        "/admin/users/disable",
        &[ops],
        &[("csrf", &csrf), ("name", "ops")],
    );
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(body(&r).contains("cannot disable yourself"), "{}", body(&r));
    assert!(!f.store.user_disabled("ops").unwrap());
    let (alice, csrf) = f.sign_in("alice");
    let r = f.ask(
        Method::POST,
        "/admin/users/disable",
        &[alice],
        &[("csrf", &csrf), ("name", "ops")],
    );
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!f.store.user_disabled("ops").unwrap());
}

#[test]
fn a_disabled_users_sign_in_says_so_only_to_whoever_knows_the_password() {
    let f = fixture();
    f.store.set_user_disabled("alice", true).unwrap();
    let wrong = f.try_sign_in("alice", "not her password");
    let nobody = f.try_sign_in("mallory", "not her password");
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(nobody.status, StatusCode::UNAUTHORIZED);
    let words = |r: &Reply| {
        let page = body(r);
        assert!(!page.contains("disabled"), "{page}");
        page.contains("Wrong user name or password")
    };
    assert!(words(&wrong) && words(&nobody));
    let right = f.try_sign_in("alice", "alice password");
    assert_eq!(right.status, StatusCode::FORBIDDEN);
    assert!(right.cookies.iter().all(|c| !c.contains("mallee-session=")));
    assert!(
        body(&right).contains("Your account is disabled"),
        "{}",
        body(&right)
    );
}
