//! Walrus driven by the clients users have: the AWS CLI and boto3, unmodified, against the
//! real `mallee-frontend` binary on a loopback port.

mod common;

use common::Frontend;

#[test]
fn aws_cli_copies_100_mib_up_and_down_lists_ranges_presigns_and_removes() {
    let fe = Frontend::start();
    let out = fe.run_script("s3_cli.py", &[]);
    assert!(out.contains("ok rm + rb"), "{out}");
    // Bodies stream: 100 MiB went up and down (10 parts at a time) without the server
    // holding anything like the object in memory.
    let peak = fe.peak_rss_mib();
    println!("server peak RSS: {peak} MiB");
    assert!(
        peak < 64,
        "server peak RSS {peak} MiB while moving a 100 MiB object"
    );
}

#[test]
fn boto3_objects_multipart_chunked_errors_and_user_isolation() {
    let fe = Frontend::start();
    let line = fe.admin(&["user", "create", "bob"]);
    let fields: Vec<&str> = line.trim().split('\t').collect();
    // name, role, access key, secret, account id
    assert_eq!(fields.len(), 5, "admin user create printed {line:?}");
    assert!(
        fields[4].len() == 12 && fields[4].bytes().all(|b| b.is_ascii_digit()),
        "{line:?}"
    );
    assert!(fe.admin(&["user", "list"]).contains("bob\tuser"));
    let out = fe.run_script(
        "s3_boto.py",
        &[("USER2_KEY", fields[2]), ("USER2_SECRET", fields[3])],
    );
    assert!(out.contains("ok delete bucket"), "{out}");
    fe.admin(&["user", "delete", "bob"]);
    assert!(!fe.admin(&["user", "list"]).contains("bob"));
}

#[test]
fn kill_9_during_multipart_and_put_loses_nothing_acknowledged_and_shows_nothing_partial() {
    let mut fe = Frontend::start();
    let out = fe.run_crash_script("s3_crash.py");
    assert!(out.contains("ok PutObject after restart"), "{out}");
    let tmp = std::fs::read_dir(fe.data_dir().join("tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp, 0, "temporary files left behind");
    // Three objects remain (kept, multi, partial): one blob each, no parts, no orphans.
    let mut blobs = 0;
    for sub in std::fs::read_dir(fe.data_dir().join("blobs")).unwrap() {
        blobs += std::fs::read_dir(sub.unwrap().path()).unwrap().count();
    }
    assert_eq!(blobs, 3, "blob files other than the three objects' remain");
}

#[test]
fn first_start_writes_admin_credentials_readable_only_by_owner() {
    use std::os::unix::fs::MetadataExt;
    let fe = Frontend::start();
    let meta = std::fs::metadata(fe.credentials()).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(fe.credentials()).unwrap();
    assert!(
        text.starts_with("[default]\naws_access_key_id = MKIA"),
        "{text}"
    );
    assert!(text.contains("aws_secret_access_key = "));
    if nix::unistd::Uid::effective().is_root() {
        assert_eq!(meta.uid(), 0, "credentials must stay root's");
        let data = std::fs::metadata(fe.data_dir().join("state.sqlite3")).unwrap();
        assert_ne!(data.uid(), 0, "the server must not run as root");
        assert_eq!(
            data.mode() & 0o077,
            0,
            "state must not be readable by others"
        );
    }
}
