//! The storage controller process (`mallee-frontend storage`) against the `mallee-aoe`
//! user-space initiator over a veth pair made for each test: it serves what the exports file
//! lists to the MACs allowed and no one else, follows MAC list changes and removals, records a
//! failure per export (and retries it), and serves again after a kill -9. Needs root (veth,
//! AF_PACKET); no addresses are assigned.

use mallee_aoe::initiator::{discover, Initiator, InitiatorConfig};
use mallee_aoe::net::PacketSocket;
use mallee_aoe::target::{Backend, Target, TargetConfig};
use mallee_frontend::storage::{dirty, read_applied, write_exports};
use mallee_proto::storage::{Applied, Exports, VolumeExport, APPLIED_FILE, STORAGE_DIR};
use mallee_proto::Mac;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mallee-frontend");
/// How long anything the controller does may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);
/// How long a discovery listens for an answer that must not come.
const SILENCE: Duration = Duration::from_millis(1500);
/// A MAC no interface of the test has.
const STRANGER: Mac = Mac([0x02, 0x4d, 0x41, 0x4c, 0x00, 0x99]);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs `ip ARGS`, failing the test with its stderr.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("spawn ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A veth pair for one test, both ends up and without IPv6 (so nothing but our frames on
/// it); removed on drop. `target` is where the controller serves, `node` the initiator's end.
struct Veth {
    target: String,
    node: String,
}

impl Veth {
    fn new() -> Veth {
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let veth = Veth {
            target: format!("mst{id}t"),
            node: format!("mst{id}n"),
        };
        ip(&[
            "link",
            "add",
            &veth.target,
            "type",
            "veth",
            "peer",
            "name",
            &veth.node,
        ]);
        for end in [&veth.target, &veth.node] {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{end}/disable_ipv6"), "1");
            ip(&["link", "set", end, "up"]);
        }
        veth
    }

    fn mac(end: &str) -> Mac {
        let text = std::fs::read_to_string(format!("/sys/class/net/{end}/address")).unwrap();
        Mac::from_str(&text).unwrap()
    }

    fn node_mac(&self) -> Mac {
        Veth::mac(&self.node)
    }

    fn node_socket(&self) -> PacketSocket {
        PacketSocket::open(&self.node).expect("AF_PACKET on the node end (run as root)")
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.target])
            .status();
    }
}

/// A `mallee-frontend storage` process on a temporary data directory; killed on drop.
struct Controller {
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
}

impl Controller {
    fn start() -> Controller {
        let dir = tempfile::Builder::new()
            .prefix("mallee-storage-test")
            .tempdir()
            .unwrap();
        std::fs::write(
            dir.path().join("frontend.toml"),
            format!("data_dir = \"{}\"\n", dir.path().join("data").display()),
        )
        .unwrap();
        let mut c = Controller {
            dir,
            child: None,
            starts: 0,
        };
        c.spawn();
        c
    }

    fn storage(&self) -> PathBuf {
        self.dir.path().join("data").join(STORAGE_DIR)
    }

    fn log(&self) -> String {
        let log = self.dir.path().join(format!("storage-{}.log", self.starts));
        std::fs::read_to_string(log).unwrap_or_default()
    }

    /// Starts the process and waits for its readiness line.
    fn spawn(&mut self) {
        self.starts += 1;
        let log = self.dir.path().join(format!("storage-{}.log", self.starts));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(self.dir.path().join("frontend.toml"))
            .arg("storage")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start mallee-frontend storage");
        self.child = Some(child);
        wait_for("the storage controller's readiness line", || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("controller exited ({status}):\n{}", self.log());
            }
            (self
                .log()
                .contains("mallee-frontend: storage controller serving"))
            .then_some(())
        });
    }

    /// SIGTERM, as init's shutdown sends: the process stops its exports and exits 0.
    fn terminate(&mut self) {
        let mut c = self.child.take().expect("a running controller");
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = c.wait().unwrap();
        assert!(status.success(), "{status}:\n{}", self.log());
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn write(&self, exports: &Exports) {
        write_exports(&self.storage(), exports).unwrap();
    }

    /// Waits until the controller answers `generation`, with every export's state as `ok`.
    fn applied(&self, generation: u64, ok: impl Fn(&Applied) -> bool) -> Applied {
        wait_for(&format!("generation {generation} applied"), || {
            let applied = read_applied(&self.storage()).ok().flatten()?;
            (applied.generation == generation && ok(&applied)).then_some(applied)
        })
    }

    /// Waits until `generation` is applied with every export served.
    fn all_served(&self, generation: u64) -> Applied {
        let applied = self.applied(generation, |_| true);
        let failed: Vec<_> = (applied.exports.iter())
            .filter(|e| e.error.is_some())
            .collect();
        assert!(failed.is_empty(), "{failed:?}\n{}", self.log());
        applied
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `f` until it gives a value; fails the test after [`PATIENCE`].
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A sparse backing file of `mib` MiB.
fn backing_file(dir: &Path, name: &str, mib: u64) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    path
}

fn export(id: &str, path: &Path, slot: u8, allowed: Mac) -> VolumeExport {
    VolumeExport {
        volume_id: id.into(),
        path: path.to_owned(),
        shelf: 42,
        slot,
        allowed: vec![allowed],
    }
}

/// Whether shelf 42 `slot` answers a Query Config from the node end within [`SILENCE`].
fn answers(veth: &Veth, slot: u8) -> bool {
    let found = discover(&veth.node_socket(), 42, slot, SILENCE, Some(1)).unwrap();
    !found.is_empty()
}

fn initiator(veth: &Veth, slot: u8) -> Initiator {
    let cfg = InitiatorConfig {
        total_timeout: Duration::from_secs(10),
        ..InitiatorConfig::default()
    };
    Initiator::open(veth.node_socket(), 42, slot, cfg).expect("the export answers")
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn exports_serve_only_allowed_macs_follow_changes_and_survive_a_kill() {
    let veth = Veth::new();
    let mut ctl = Controller::start();
    let files = tempfile::tempdir().unwrap();
    let vol1 = backing_file(files.path(), "vol-1", 64);
    let vol2 = backing_file(files.path(), "vol-2", 8);
    let node = veth.node_mac();
    let mut exports = Exports {
        generation: 1,
        interface: veth.target.clone(),
        exports: vec![
            export("vol-1", &vol1, 1, node),
            export("vol-2", &vol2, 2, STRANGER),
        ],
    };
    ctl.write(&exports);
    ctl.all_served(1);

    // Written through AoE, read back through AoE, and in the backing file.
    let data = pattern(256 << 10, 7);
    let offset = 3 << 20;
    {
        let ini = initiator(&veth, 1);
        assert_eq!(ini.size(), 64 << 20);
        ini.write_at(&data, offset).unwrap();
        ini.flush().unwrap();
        let mut back = vec![0u8; data.len()];
        ini.read_at(&mut back, offset).unwrap();
        assert!(back == data, "read back through AoE differs");
    }
    let mut on_disk = vec![0u8; data.len()];
    std::fs::File::open(&vol1)
        .unwrap()
        .read_exact_at(&mut on_disk, offset)
        .unwrap();
    assert!(
        on_disk == data,
        "the backing file does not hold the pattern"
    );

    // An export allowing another MAC does not answer this one.
    assert!(!answers(&veth, 2), "vol-2 answered a MAC it does not allow");

    // A new MAC list reaches the running target.
    exports.generation = 2;
    exports.exports[1].allowed = vec![STRANGER, node];
    ctl.write(&exports);
    ctl.all_served(2);
    assert!(answers(&veth, 2), "vol-2 ignores its new MAC list");

    // A removed export stops answering.
    exports.generation = 3;
    let removed = exports.exports.remove(0);
    ctl.write(&exports);
    ctl.all_served(3);
    assert!(!answers(&veth, 1), "vol-1 still answers after its removal");
    // Its dirty record, open while it was served, now names the one chunk written (3 MiB is
    // 512 KiB chunk 6) and nothing else.
    let storage = ctl.storage();
    let record = || dirty::read(&storage, "vol-1").unwrap().unwrap();
    let closed = record();
    assert!(closed.complete(), "{closed:?}");
    assert_eq!(closed.ranges, [(6, 7)]);

    // Back again, then the controller dies hard: a new one serves the same data.
    exports.generation = 4;
    exports.exports.push(removed);
    ctl.write(&exports);
    ctl.all_served(4);
    assert!(record().open && !record().lost, "{:?}", record());
    // Told to stop, it closes the record first: nothing is lost.
    ctl.terminate();
    assert!(record().complete(), "{:?}", record());
    assert!(ctl.log().contains("stopping every export"), "{}", ctl.log());
    std::fs::remove_file(ctl.storage().join(APPLIED_FILE)).unwrap();
    ctl.spawn();
    ctl.all_served(4);
    assert!(record().open && !record().lost, "{:?}", record());
    ctl.kill9();
    std::fs::remove_file(ctl.storage().join(APPLIED_FILE)).unwrap();
    ctl.spawn();
    ctl.all_served(4);
    let ini = initiator(&veth, 1);
    let mut back = vec![0u8; data.len()];
    ini.read_at(&mut back, offset).unwrap();
    assert!(back == data, "data lost across the controller's restart");
    // What the killed one's export wrote was never recorded: the record is lost for good.
    let lost = record();
    assert!(lost.open && lost.lost, "{lost:?}");
}

#[test]
fn a_failing_export_is_recorded_alone_and_retried() {
    let veth = Veth::new();
    let ctl = Controller::start();
    let files = tempfile::tempdir().unwrap();
    let good = backing_file(files.path(), "good", 8);
    let missing = files.path().join("missing");
    let foreign = backing_file(files.path(), "foreign", 8);
    std::os::unix::fs::chown(&foreign, Some(4242), None).unwrap();
    // Someone else on the segment already answers shelf 42 slot 3.
    let squatter = Target::start(
        veth.node_socket(),
        Backend::open(&backing_file(files.path(), "squatter", 1)).unwrap(),
        TargetConfig {
            shelf: 42,
            slot: 3,
            workers: 1,
            probe_timeout: Duration::from_millis(100),
            ..TargetConfig::default()
        },
    )
    .unwrap();
    let node = veth.node_mac();
    let mut exports = Exports {
        generation: 1,
        interface: veth.target.clone(),
        exports: vec![
            export("vol-good", &good, 1, node),
            export("vol-missing", &missing, 2, node),
            export("vol-taken", &good, 3, node),
            export("vol-foreign", &foreign, 4, node),
        ],
    };
    exports.exports[2].path = backing_file(files.path(), "taken", 8);
    ctl.write(&exports);
    let applied = ctl.applied(1, |_| true);
    let error = |id: &str| applied.export(id).unwrap().error.clone();
    assert_eq!(error("vol-good"), None, "{}", ctl.log());
    let missing_error = error("vol-missing").expect("a missing file is an error");
    assert!(missing_error.contains("No such file"), "{missing_error}");
    let taken = error("vol-taken").expect("an address in use is an error");
    assert!(taken.contains("already answered"), "{taken}");
    let foreign_error = error("vol-foreign").expect("a foreign file is an error");
    assert!(foreign_error.contains("uid 4242"), "{foreign_error}");
    assert!(answers(&veth, 1), "the good export is not served");

    // Once the file exists and the address is free, the same generation is served whole but
    // for the foreign file, without a new exports file.
    drop(squatter);
    backing_file(files.path(), "missing", 8);
    let applied = ctl.applied(1, |a| {
        ["vol-missing", "vol-taken"]
            .iter()
            .all(|id| a.export(id).is_some_and(|e| e.error.is_none()))
    });
    assert!(applied.export("vol-foreign").unwrap().error.is_some());
    assert!(answers(&veth, 2) && answers(&veth, 3));
}
