//! End to end: the real `mallee-frontend` on the host's loopback, serving HTTPS with its own CA,
//! one compute node booted under QEMU (TCG with svm, user networking: the node reaches the host
//! as 10.0.2.2, a blank 2 GiB disk it must format and keep its image cache and instance disks
//! on) whose `mallee-init` runs the node agent, speaking TLS to the frontend key pinned on its
//! command line (`mallee.frontend_key=`, the pin the daemon prints). boto3, verifying the API
//! with the CA bundle the daemon wrote, uploads the guest bundle image-build made (the pinned
//! Debian kernel, a ramdisk with our `mallee-init` as the guest's PID 1, whose readiness line is the
//! marker, and a small ext4 root image) to Walrus, registers them and runs an instance twice: each time it must reach
//! `running`, show the marker in GetConsoleOutput and end `terminated`; the second launch must
//! not fetch any image again (the node's log of its cache). Between the two, the frontend is
//! killed (-9) and restarted: the running instance stays `running` and is then terminated as
//! usual. Last, an image whose kernel is garbage must end `terminated` with the VMM's failure
//! as the reason. Each instance's guest must see its m1.small ephemeral disk: the guest's
//! `mallee-init` logs its disks at boot, and `vdb` must be 5 GiB, serial `ephemeral0`, holding
//! an ext file system, and `vda` the root image with its label and UUID, and must take the
//! private address DescribeInstances shows from its VMM's DHCP answer (the node plugs its tap
//! into its group's VLAN bridge). Last, the node is power-cycled with a command line pinning
//! another key: its cache is kept, and its agent refuses the frontend, saying on its console
//! which key it was shown and which it pins, and never registers. Timings go to
//! `report_figure`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mallee_image_build::netboot::{self, NetbootSpec};
use mallee_proto::cmdline::{Key, PublicKeyPin};
use mallee_qemu_tests::client::{self, ClientEnv};
use mallee_qemu_tests::{report_figure, Images, NetbootImage, Nic, TestDir, VmConfig};

const CLUSTER: &str = "zone-a";
const SECRET: &str = "node-agent-test-secret";
/// The node's NIC: one of the harness's node MACs, which the frontend's config admits.
const NODE_MAC: &str = mallee_qemu_tests::cloud::NODE_MACS[0];
const MARKER: &str = mallee_qemu_tests::cloud::GUEST_MARKER;
/// What the guest's `mallee-init` logs about an m1.small's ephemeral disk (5 GiB, formatted by
/// the node with label ephemeral0; its UUID is random).
const EPHEMERAL_LINE: &str =
    "disk vdb: 5368709120 bytes, serial ephemeral0, ext file system label ephemeral0 uuid ";
/// The node's disk: blank, big enough for `mallee.disk=auto` (at least 1 GiB).
const NODE_DISK_MIB: u64 = 2048;

fn require_tool(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "{tool} is not installed: run `just setup`");
}

/// The frontend on 127.0.0.1:<free port> (HTTPS, the default) with a cluster secret, admitting
/// the node's MAC; killed and its data removed on drop.
struct Frontend {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    starts: u32,
}

impl Frontend {
    fn start(bin: &Path) -> Frontend {
        let port = mallee_qemu_tests::cloud::free_port().expect("free port");
        // The daemon drops root: its data dir must be reachable by its user.
        let dir = std::env::temp_dir().join(format!("mallee-node-agent-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            dir.join("frontend.toml"),
            format!(
                "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n[ec2]\nclusters = [\"{CLUSTER}\"]\n\
                 cluster_secret = \"{SECRET}\"\nadmit_macs = [\"{NODE_MAC}\"]\n\
                 node_deadline_secs = 60\nlong_poll_secs = 5\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let mut fe = Frontend {
            bin: bin.to_path_buf(),
            dir,
            port,
            child: None,
            starts: 0,
        };
        fe.spawn();
        fe
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).unwrap();
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(self.dir.join("frontend.toml"))
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start mallee-frontend");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.log().contains("listening on") {
            assert!(
                Instant::now() < deadline,
                "frontend not listening:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// kill -9, then start again on the same port and data.
    fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("frontend-{}.log", self.starts))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `https://127.0.0.1:PORT`.
    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The admin credentials and the CA bundle the daemon wrote into its data directory.
    fn client_env(&self) -> ClientEnv {
        ClientEnv {
            credentials: self.dir.join("data/admin-credentials"),
            ca_bundle: self.dir.join("data/mallee-ca.pem"),
        }
    }

    /// The pin of the daemon's TLS key, from the line it prints before it listens.
    fn pin(&self) -> PublicKeyPin {
        let log = self.log();
        let pin = regex::Regex::new(client::DAEMON_PIN_LINE)
            .unwrap()
            .captures(&log)
            .unwrap_or_else(|| panic!("the frontend printed no key pin:\n{log}"));
        pin[1].parse().unwrap()
    }
}

impl Drop for Frontend {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The node image, from this tree's binaries.
fn node_image(dir: &TestDir, bin: &Path) -> NetbootImage {
    let kernel = mallee_image_build::pinned_kernel().expect("pinned kernel (run `just images`)");
    let spec = NetbootSpec::node(&bin.join("mallee-init"), &bin.join("mallee-vmm"));
    let out = dir.file("node");
    netboot::build(&spec, &kernel, &out).expect("node image");
    NetbootImage {
        vmlinuz: out.join("vmlinuz"),
        initramfs: out.join("initramfs"),
        cmdline: std::fs::read_to_string(out.join("cmdline"))
            .unwrap()
            .trim()
            .to_string(),
    }
}

/// `text` without ANSI colour sequences (`ESC [ ... m`, as the frontend's log has them).
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn an_instance_runs_on_a_qemu_node_under_the_agent_and_a_relaunch_uses_the_cache() {
    Images::node().expect("node image");
    require_tool("python3");
    let dir = TestDir::new("node_agent");
    let bin = mallee_qemu_tests::build_static(&[]);
    // The static frontend the appliance carries, run on the host.
    let fe_bin = bin.join("mallee-frontend");
    let node_image = node_image(&dir, &bin);
    let guest = Images::guest().expect("guest image");
    let node_disk = dir.file("node-disk.img");
    mallee_qemu_tests::cloud::data_disk(&node_disk, NODE_DISK_MIB).expect("node disk");
    let mut fe = Frontend::start(&fe_bin);
    // What the frontend's PXE service would put on the command line: the key's pin too.
    let (pin, port) = (fe.pin(), fe.port);
    let cmdline_pinning = |pin: PublicKeyPin| {
        format!(
            "mallee.frontend=10.0.2.2:{port} mallee.cluster={CLUSTER} mallee.secret={SECRET} {}",
            Key::FrontendKey.arg(pin)
        )
    };
    let boot_node = |name: &str, cmdline: &str| {
        VmConfig::new(name)
            .netboot(&node_image)
            .nested_kvm(true)
            .memory_mib(1536)
            .cpus(2)
            .nic(Nic::user().mac(NODE_MAC))
            .disk(node_disk.clone())
            .cmdline(cmdline)
            .launch(&dir)
            .expect("start QEMU")
    };
    let mut node = boot_node("node", &cmdline_pinning(pin));
    let fail = |what: &str, node: &mallee_qemu_tests::Vm, fe: &Frontend| -> ! {
        panic!(
            "{what}\n--- node console tail ---\n{}\n--- frontend log tail ---\n{}",
            node.console().tail(80),
            fe.log()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    if let Err(e) = node.wait_for(
        r"mallee-init: agent: registered as (node-[0-9a-f]+)",
        Duration::from_secs(300),
    ) {
        fail(&format!("node did not register: {e}"), &node, &fe);
    }
    let registered = node.started().elapsed();
    // The blank disk was formatted and holds the cache (it is the node's only disk: vda).
    let cache_line = r"agent: image cache on /dev/vda \(ext4, budget (\d+) MiB";
    match node.console().wait_for(cache_line, Duration::from_secs(1)) {
        Ok(c) => {
            let budget: u64 = c[1].parse().unwrap();
            assert!(
                budget > NODE_DISK_MIB * 4 / 10 && budget <= NODE_DISK_MIB / 2,
                "cache budget {budget} MiB on a {NODE_DISK_MIB} MiB disk"
            );
        }
        Err(e) => fail(
            &format!("the cache is not on the node's disk: {e}"),
            &node,
            &fe,
        ),
    }
    // It registered with that disk's size (the frontend logs what a node registers with,
    // possibly a moment after it answered).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fe.log().contains("node registered") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        without_colours(&fe.log()).contains(&format!("disk_gib={}", NODE_DISK_MIB >> 10)),
        "the node did not register its {NODE_DISK_MIB} MiB disk:\n{}",
        fe.log()
    );
    let console = node.console().text();
    assert!(
        console.contains("disk /dev/vda is blank: formatting ext4 (label mallee-node)"),
        "the node's blank disk was not formatted"
    );
    assert!(
        !console.contains("no mallee.frontend_key on the command line"),
        "the agent does not speak TLS: {}",
        node.console().tail(40)
    );
    if let Some(ms) = console
        .lines()
        .find_map(|l| l.split("disk /dev/vda formatted in ").nth(1))
    {
        report_figure(&format!(
            "figure: node agent, mke2fs of the node's {NODE_DISK_MIB} MiB disk {ms}"
        ));
    }
    report_figure(&format!(
        "figure: node agent, QEMU start to registered {:.1} s",
        registered.as_secs_f64()
    ));

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node_agent.py");
    let mut python = Command::new("python3");
    python
        .arg(&script)
        .arg(fe.endpoint())
        .arg(&guest.vmlinuz)
        .arg(&guest.initrd)
        .arg(&guest.root);
    let mut child = fe
        .client_env()
        .apply(&mut python)
        .env("MARKER", MARKER)
        .env("EPHEMERAL_LINE", EPHEMERAL_LINE)
        .env("TIMEOUT", "900")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut transcript = String::new();
    let mut stdin = child.stdin.take().unwrap();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        println!("{line}");
        transcript.push_str(&line);
        transcript.push('\n');
        if line == "KILL" {
            fe.restart();
            let _ = writeln!(stdin, "RESTARTED");
            let _ = stdin.flush();
        }
    }
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
    let status = child.wait().unwrap();
    if !status.success() {
        fail(
            &format!("node_agent.py failed:\n{transcript}{err}"),
            &node,
            &fe,
        );
    }
    assert!(transcript.contains("ok done"), "{transcript}");
    assert!(
        transcript.contains("ok running after frontend restart"),
        "{transcript}"
    );
    assert!(
        transcript.contains("ok failed launch reported"),
        "{transcript}"
    );
    // Both guests took the private address DescribeInstances shows, from their VMM's DHCP.
    for launch in ["first", "cached"] {
        assert!(
            transcript.contains(&format!("ok address {launch} 172.31.0.")),
            "{transcript}"
        );
        assert!(
            transcript.contains(&format!("ok reachability {launch}")),
            "{transcript}"
        );
        assert!(
            transcript.contains(&format!("ok metadata {launch}")),
            "{transcript}"
        );
    }
    // Both good launches' guests saw their ephemeral disk (the script prints the guest's lines).
    let seen = |line: &str| {
        (transcript.lines())
            .filter(|l| l.starts_with("guest-disk ") && l.contains(line))
            .count()
    };
    assert_eq!(seen(EPHEMERAL_LINE), 2, "guest disk lines:\n{transcript}");
    // And their root disk: the image-build root image's size, label and UUID, read by the
    // guest from the superblock on its vda.
    let root_line = guest.root_disk_line();
    assert_eq!(
        seen(&root_line),
        2,
        "no `{root_line}` from both guests:\n{transcript}"
    );

    // The node fetched each image once: the two good launches were both prepared after three
    // downloads (kernel, ramdisk, root); the bad image added two more.
    let console = node.console().text();
    let prepared: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("agent: i-") && l.contains("prepared in"))
        .collect();
    let counts: Vec<&str> = prepared
        .iter()
        .filter_map(|l| l.rsplit("so far: ").next())
        .collect();
    assert_eq!(counts, ["3)", "3)", "5)"], "{}", prepared.join("\n"));
    let fetches: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("agent: fetched images/"))
        .collect();
    for key in ["vmlinuz", "initrd", "root.img", "bad-vmlinuz", "tiny.img"] {
        let n = (fetches.iter())
            .filter(|l| l.contains(&format!("images/{key} ")))
            .count();
        assert_eq!(n, 1, "{key} fetched {n} times:\n{}", fetches.join("\n"));
    }
    for l in transcript.lines() {
        if let Some(rest) = l.strip_prefix("figure ") {
            let (name, secs) = rest.split_once(' ').unwrap_or((rest, "?"));
            let line = match name.split_once('-') {
                Some((launch, "terminated")) => {
                    format!("TerminateInstances to terminated ({launch} launch) {secs} s")
                }
                Some((launch, state)) => {
                    format!("RunInstances to {state} ({launch} launch) {secs} s")
                }
                None => format!("{name} {secs} s"),
            };
            report_figure(&format!("figure: node agent, {line}"));
        }
    }
    // Every launch laid its root disk over the cached image (no copy: the VMM reads through to
    // the image, which stays as fetched: the cached launch re-verified it, fetching nothing).
    let tops: Vec<&str> = (console.lines())
        .filter(|l| l.contains("/root.img made over "))
        .collect();
    assert_eq!(
        tops.len(),
        prepared.len(),
        "root disk tops made:\n{}",
        tops.join("\n")
    );
    for l in &tops {
        if let Some(made) = l.split("/root.img made over ").nth(1) {
            report_figure(&format!(
                "figure: node agent, copy-on-write root disk over {made}"
            ));
        }
    }
    for l in console.lines() {
        if let Some(ms) = l.split("ephemeral0.img 5 GiB formatted in ").nth(1) {
            report_figure(&format!(
                "figure: node agent, mke2fs of a 5 GiB ephemeral disk (on the node's disk) {ms}"
            ));
        }
    }
    for l in fetches.iter().take(3) {
        if let Some(i) = l.find("agent: fetched") {
            report_figure(&format!("figure: node agent image fetch: {}", &l[i + 7..]));
        }
    }

    // Power-cycle the node (QEMU stopped and started again on the same disk and MAC): its disk
    // is mounted as it is, and every image cached before is kept (re-verified on first use).
    // This boot's command line pins another key (one bit off the frontend's): the agent must
    // refuse the frontend it reaches and say why.
    drop(node);
    let mut wrong = pin;
    wrong.0[31] ^= 1;
    let mut node = boot_node("node-again", &cmdline_pinning(wrong));
    let kept = r"agent: image cache on /dev/vda \(ext4, budget \d+ MiB, (\d+) cached images kept";
    let kept: usize = match node.wait_for(kept, Duration::from_secs(300)) {
        Ok(c) => c[1].parse().unwrap(),
        Err(e) => fail(&format!("no cache after the power cycle: {e}"), &node, &fe),
    };
    assert_eq!(
        kept,
        fetches.len(),
        "cached images kept across the power cycle"
    );
    let console = node.console().text();
    assert!(
        console.contains("disk /dev/vda: ext file system found") && !console.contains("formatting"),
        "the node's disk was not reused as it was:\n{}",
        node.console().tail(40)
    );
    let refused = r"agent: joining \S+: the frontend at \S+ presented key (sha256:[0-9a-f]{64}) but this node's command line pins (sha256:[0-9a-f]{64}); the node refuses it";
    let keys = match node.wait_for(refused, Duration::from_secs(120)) {
        Ok(c) => c,
        Err(e) => fail(
            &format!("the node did not refuse a frontend with another key: {e}"),
            &node,
            &fe,
        ),
    };
    assert_eq!(
        (keys[1].as_str(), keys[2].as_str()),
        (pin.to_string().as_str(), wrong.to_string().as_str()),
        "the keys the refusal names"
    );
    assert!(
        !node.console().text().contains("agent: registered as"),
        "a node pinning another key registered:\n{}",
        node.console().tail(40)
    );
}
