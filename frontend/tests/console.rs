//! The web console against the real binary over real HTTPS and SQLite: first boot gives the
//! admin a console password in a file (never in the log), `admin user create
//! --password-stdin` gives users theirs, and `tests/console_http.py` drives the console as a
//! browser would (sign-in, rate limit, CSRF, key pairs seen by boto3, escaping, isolation
//! between users, an instance on a test node listed, its console and Terminate, credentials,
//! sign-out), and `tests/console_admin.py` its admin pages (a user refused them; the admin sees
//! the test node's capacity, approves a node waiting for admission, which then enrolls, creates
//! a user who signs in, filters the audit log, and disables and enables a user), and `tests/console_cloud.py` the images,
//! security groups, volumes and snapshots, elastic IPs and key rotation pages (boto3 sees what
//! they made, another user none of it). The console's changes are in the audit log
//! as the signed-in user from the client's address.

mod common;
mod ec2_support;

use ec2_support::{enroll, start_frontend, user_with_password, TestNode, UNLISTED_MAC};
use std::os::unix::fs::PermissionsExt;

#[test]
fn users_sign_in_manage_key_pairs_see_only_their_own_and_changes_are_audited() {
    let fe = start_frontend(60);
    let password_file = fe.data_dir().join("admin-console-password");
    let mode = std::fs::metadata(&password_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let admin_password = std::fs::read_to_string(&password_file).unwrap();
    let log = fe.log();
    assert!(
        log.contains("/_console/") && log.contains("admin-console-password"),
        "{log}"
    );
    assert!(!log.contains(admin_password.trim()), "{log}");

    let (key, secret) = user_with_password(&fe, "alice", "alice's console password");
    user_with_password(&fe, "bob", "bob's console password");
    let (dora_key, dora_secret) = user_with_password(&fe, "dora", "dora's console password");
    let _node = TestNode::start(&fe, "node-1", 2, 1024);
    let waiting = "node-525400990001";
    let (status, why) = enroll(&fe, waiting, UNLISTED_MAC, None);
    assert_eq!(status, 403, "{why}");
    // First, while no sign-in failed yet from this address (the rate limit counts them).
    let out = fe.run_script(
        "console_admin.py",
        &[
            ("ALICE_PASSWORD", "alice's console password"),
            ("ADMIN_PASSWORD_FILE", password_file.to_str().unwrap()),
            ("NODE_ID", "node-1"),
            ("PENDING_NODE_ID", waiting),
        ],
    );
    assert!(out.contains("ok console admin"), "{out}");
    // Approved in the console: its next enrollment gets a token.
    let (status, token) = enroll(&fe, waiting, UNLISTED_MAC, None);
    assert_eq!(status, 200, "{token}");
    assert!(!token.is_empty());
    // Before console_http.py, whose last sign-ins fail on purpose (the rate limit).
    let out = fe.run_script(
        "console_cloud.py",
        &[
            ("ALICE_PASSWORD", "alice's console password"),
            ("BOB_PASSWORD", "bob's console password"),
            ("ALICE_KEY", &key),
            ("ALICE_SECRET", &secret),
            ("DORA_PASSWORD", "dora's console password"),
            ("DORA_KEY", &dora_key),
            ("DORA_SECRET", &dora_secret),
        ],
    );
    assert!(out.contains("ok console cloud"), "{out}");
    let out = fe.run_script(
        "console_http.py",
        &[
            ("ALICE_PASSWORD", "alice's console password"),
            ("BOB_PASSWORD", "bob's console password"),
            ("ALICE_KEY", &key),
            ("ALICE_SECRET", &secret),
            ("ADMIN_PASSWORD_FILE", password_file.to_str().unwrap()),
        ],
    );
    assert!(out.contains("ok console"), "{out}");

    let audit = fe.admin(&["audit", "--limit", "1000"]);
    let rows: Vec<Vec<&str>> = audit.lines().map(|l| l.split('\t').collect()).collect();
    let has = |user: &str, action: &str, resource: &str, outcome: &str| {
        rows.iter().any(|r| {
            r[1] == user
                && r[2] == action
                && r[3].split(',').next() == Some(resource)
                && r[4] == "127.0.0.1"
                && r[5] == outcome
        })
    };
    assert!(
        has("alice", "CreateKeyPair", "console-key", "ok"),
        "{audit}"
    );
    assert!(has("alice", "ConsoleSignIn", "alice", "ok"), "{audit}");
    assert!(has("alice", "ConsoleSignOut", "alice", "ok"), "{audit}");
    assert!(has("-", "ConsoleSignIn", "alice", "error"), "{audit}");
    // Bob's attempt on alice's key pair went to EC2 as bob and removed nothing of hers.
    assert!(has("bob", "DeleteKeyPair", "console-key", "ok"), "{audit}");
    // The admin's console changes, as the admin from the client's address.
    assert!(has("admin", "ApproveNode", waiting, "ok"), "{audit}");
    assert!(has("admin", "CreateUser", "carol", "ok"), "{audit}");
    assert!(has("admin", "CreateLoginProfile", "carol", "ok"), "{audit}");
    assert!(has("carol", "ConsoleSignIn", "carol", "ok"), "{audit}");
    // Erin disabled and enabled again in the console; the admin's try at disabling themself.
    assert!(has("admin", "DisableUser", "erin", "ok"), "{audit}");
    assert!(has("admin", "EnableUser", "erin", "ok"), "{audit}");
    assert!(has("admin", "DisableUser", "admin", "error"), "{audit}");
    assert!(has("-", "ConsoleSignIn", "erin", "error"), "{audit}");
    // The console's other resources: the EC2 actions, as alice from her address.
    let did = |user: &str, action: &str, outcome: &str| {
        rows.iter()
            .any(|r| r[1] == user && r[2] == action && r[4] == "127.0.0.1" && r[5] == outcome)
    };
    for action in [
        "CreateSecurityGroup",
        "AuthorizeSecurityGroupIngress",
        "RevokeSecurityGroupIngress",
        "CreateVolume",
        "CreateSnapshot",
        "DeleteSnapshot",
        "AllocateAddress",
        "ReleaseAddress",
        "DeregisterImage",
    ] {
        assert!(did("alice", action, "ok"), "{action}: {audit}");
    }
    assert!(did("bob", "DeleteSecurityGroup", "error"), "{audit}");
    assert!(has("dora", "RotateAccessKey", "dora", "ok"), "{audit}");
    assert!(!audit.contains("console password"), "{audit}");
}
