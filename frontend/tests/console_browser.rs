//! The web console in a real browser: `tests/console_browser.py` drives headless Chromium
//! (Debian's `chromium` and `chromium-driver`, with Selenium) against the real binary over
//! HTTPS, with a test node that runs instances and a second node waiting for admission. It
//! signs in, makes and downloads a key pair, launches an instance from the form and watches
//! it run and print its console line, terminates it, checks another user sees none of it, that
//! a cross-site form without the CSRF token is refused and that a name with a script in it
//! stays text, approves the waiting node as the admin and sees the capacity bars grow, and
//! saves screenshots of the main pages at a phone's and a desktop's size under
//! `target/console-screenshots/`. Without Chromium the test fails and says how to install it.

mod common;
mod ec2_support;

use ec2_support::{start_frontend, user_with_password, TestNode, UNLISTED_MAC};
use std::path::{Path, PathBuf};

/// Fails, saying how to get it, unless the browser, its driver and Selenium are installed.
fn require_browser() {
    for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(bin).is_file(),
            "{bin} is missing: `just setup` installs Debian's chromium and chromium-driver \
             (scripts/apt-packages.txt)"
        );
    }
    let selenium = std::process::Command::new("python3")
        .args(["-c", "import selenium"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        selenium,
        "Python's selenium is missing: `just setup` installs it (scripts/pip-packages.txt)"
    );
}

/// `target/console-screenshots/`, created.
fn screenshot_dir() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory");
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_browser_signs_in_launches_watches_terminates_and_admits_a_node() {
    require_browser();
    let started = std::time::Instant::now();
    let fe = start_frontend(60);
    let password_file = fe.data_dir().join("admin-console-password");
    let (key, secret) = user_with_password(&fe, "alice", "alice's console password");
    user_with_password(&fe, "bob", "bob's console password");
    let _node = TestNode::start(&fe, "node-1", 2, 1024);
    // Keeps enrolling from an unlisted MAC: pending until the admin approves it in the browser.
    let waiting = "node-2";
    let _pending = TestNode::spawn(&fe, waiting, UNLISTED_MAC, 2, 1024);
    let downloads = tempfile::tempdir().unwrap();
    let shots = screenshot_dir();
    let out = fe.run_script(
        "console_browser.py",
        &[
            ("ALICE_PASSWORD", "alice's console password"),
            ("BOB_PASSWORD", "bob's console password"),
            ("ALICE_KEY", &key),
            ("ALICE_SECRET", &secret),
            ("ADMIN_PASSWORD_FILE", password_file.to_str().unwrap()),
            ("PENDING_NODE_ID", waiting),
            ("DOWNLOAD_DIR", downloads.path().to_str().unwrap()),
            ("SCREENSHOT_DIR", shots.to_str().unwrap()),
        ],
    );
    assert!(out.contains("ok console browser"), "{out}");
    for page in [
        "signin",
        "instances",
        "console-output",
        "keypairs",
        "credentials",
        "admin-nodes",
        "admin-users",
        "admin-audit",
    ] {
        for size in ["375x812", "1366x900"] {
            let shot = shots.join(format!("{page}-{size}.png"));
            let bytes = std::fs::read(&shot).unwrap_or_default();
            assert!(
                bytes.starts_with(b"\x89PNG"),
                "{} is no PNG",
                shot.display()
            );
        }
    }
    let audit = fe.admin(&["audit", "--limit", "1000"]);
    let ran = audit.lines().any(|l| {
        let f: Vec<&str> = l.split('\t').collect();
        f.get(1) == Some(&"alice") && f.get(2) == Some(&"RunInstances") && f.get(5) == Some(&"ok")
    });
    assert!(ran, "{audit}");
    println!("browser test took {:.1?}", started.elapsed());
}
