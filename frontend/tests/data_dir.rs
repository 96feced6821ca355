//! The daemon started as root with a data directory its unprivileged user cannot reach (under
//! a 0700 directory, as a new user might place it) refuses to start and says what to change,
//! instead of listening and failing every PUT.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mallee-frontend");

/// `mallee-frontend serve` with `config`, its output in `log` (made anew).
fn serve(config: &Path, log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("serve")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap()
}

#[test]
fn a_data_dir_the_daemon_user_cannot_reach_fails_the_start_with_what_to_change() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root (the daemon drops root to reach this case)");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = home.path().join("data");
    let config = home.path().join("frontend.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nrun_as = \"65534\"\n",
            data.display()
        ),
    )
    .unwrap();
    let log = home.path().join("frontend.log");
    let mut child = serve(&config, &log);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "still running after 30 s:\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{text}");
    assert!(!text.contains("listening on"), "said it listens:\n{text}");
    assert!(
        text.contains("cannot create a file in data_dir")
            && text.contains("uid 65534")
            && text.contains("chmod o+x"),
        "{text}"
    );
    // Let the same user through and it starts.
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let mut child = serve(&config, &log);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("listening on") {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("exited ({status}) with its data_dir reachable:\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "not listening after 30 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
