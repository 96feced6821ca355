//! The audit log against the real binary, over real HTTPS and SQLite: `tests/ec2_audit.py`
//! makes changes and reads through EC2 and S3 as another user and reads DescribeAuditLog as
//! the admin; the admin CLI's own changes are recorded too, `admin audit` prints the log,
//! `scripts/mallee-admin` reads it, and each entry is also a console line.

mod common;
mod ec2_support;

use ec2_support::{new_user, start_frontend};

#[test]
fn changes_are_audited_with_user_resources_source_and_outcome_and_only_admins_read_them() {
    let fe = start_frontend(60);
    let (key, secret) = new_user(&fe, "bob");
    let out = fe.run_script(
        "ec2_audit.py",
        &[("USER2_KEY", &key), ("USER2_SECRET", &secret)],
    );
    assert!(out.contains("ok bob refused"), "{out}");

    // The CLI's change, and bob's from the script, in `admin audit` (newest first).
    let lines = fe.admin(&["audit", "--limit", "1000"]);
    let fields: Vec<Vec<&str>> = lines.lines().map(|l| l.split('\t').collect()).collect();
    let cli = fields.last().expect("admin audit printed nothing");
    assert_eq!(
        cli[1..7],
        ["admin-cli", "CreateUser", "bob", "local", "ok", "-"],
        "{lines}"
    );
    assert!(
        fields.iter().any(|f| f[1..7]
            == [
                "bob",
                "PutObject",
                "audited-bucket/a/b.txt",
                "127.0.0.1",
                "ok",
                "-"
            ]),
        "{lines}"
    );
    assert_eq!(fe.admin(&["audit", "--limit", "2"]).lines().count(), 2);

    // On the console too, with the target `audit` (the log is coloured: look at the words).
    let log = fe.log();
    assert!(
        log.lines().any(|l| l.contains("audit")
            && l.contains("recorded")
            && l.contains("bob")
            && l.contains("DeleteSecurityGroup")
            && l.contains("InvalidGroup.NotFound")),
        "{log}"
    );

    // `scripts/mallee-admin` calls it as it calls the other admin actions.
    let tool = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/mallee-admin");
    let out = fe
        .client("python3")
        .arg(tool)
        .arg(fe.endpoint())
        .arg(fe.credentials())
        .args(["DescribeAuditLog", "MaxResults=5"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let events = doc["auditEventSet"].as_array().expect("auditEventSet list");
    assert_eq!(events.len(), 5, "{doc}");
    assert!(doc["nextToken"].is_string(), "{doc}");
}
