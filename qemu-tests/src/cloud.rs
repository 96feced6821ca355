//! A whole Mallee cloud under QEMU: the frontend appliance VM (the flashable image written onto
//! its disk file and booted under UEFI firmware, public NIC on QEMU user networking with the API
//! forwarded to a host port, private NIC on a [`Segment`]) and diskless node VMs that PXE-boot from it over that segment. Shared by the
//! end-to-end tests and `just demo`; the AWS CLI reaches the API through the forwarded port,
//! over HTTPS verified with the CA bundle the appliance prints (see [`crate::client`]).

use crate::client::{self, ClientEnv};
use crate::{Images, Nic, Segment, TestDir, Vm, VmConfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The API port inside the frontend.
pub const API_PORT: u16 = 8773;
/// The frontend's address on the private segment (its default `mallee.private`).
pub const PRIVATE_IP: &str = "10.77.0.1";
/// The frontend's readiness line: public address.
pub const FRONTEND_READY: &str =
    r"mallee-init: ready role=frontend ip=(\d+\.\d+\.\d+\.\d+)/(\d+) boot_ms=(\d+)";
/// A node's readiness line: the address our DHCP server leased it.
pub const NODE_READY: &str =
    r"mallee-init: ready role=node ip=(\d+\.\d+\.\d+\.\d+)/(\d+) boot_ms=(\d+)";
/// The MACs the harness gives its compute node VMs ([`node_config`], [`node_on`]). Every site
/// settings file it writes ([`site_settings`], and the one [`flash_appliance`] starts with)
/// lists them in `[ec2] admit_macs`, so its nodes are admitted as they enroll: the frontend
/// keeps any other node pending until an admin approves it.
pub const NODE_MACS: [&str; 3] = [
    "52:54:00:77:00:01",
    "52:54:00:77:00:02",
    "52:54:00:77:01:01",
];

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error(transparent)]
    Image(#[from] anyhow::Error),
    #[error(transparent)]
    Vm(#[from] crate::VmError),
    #[error("the frontend did not come up: {0}")]
    Frontend(crate::ConsoleError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("aws {args}: {reason}")]
    Aws { args: String, reason: String },
}

/// A running frontend and what a client needs to reach it.
pub struct Frontend {
    pub vm: Vm,
    /// `https://127.0.0.1:PORT`.
    pub endpoint: String,
    /// An AWS credentials file with the admin key pair (written in the test directory).
    pub credentials: PathBuf,
    /// The CA bundle that verifies the API's certificate (written in the test directory).
    pub ca_bundle: PathBuf,
    /// The pin of the frontend's TLS key, `sha256:HEX`, as a node's `mallee.frontend_key=`
    /// needs it (the PXE service puts it on its nodes' command line itself).
    pub frontend_key: String,
    pub access_key: String,
    /// The admin's first web console password, as the appliance prints it.
    pub console_password: String,
}

/// A free TCP port on the host's loopback, for a daemon (QEMU's forwarding, a frontend) that
/// binds it next. It comes from below the kernel's ephemeral range, so no test's outgoing
/// connection can take it in between; the start differs per process and call, so concurrent
/// tests rarely try the same one, and one that is held is skipped.
pub fn free_port() -> Result<u16, CloudError> {
    use std::sync::atomic::{AtomicU16, Ordering};
    const LOW: u16 = 20000;
    const SPAN: u16 = 12000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::process::id() as u16).wrapping_mul(7919);
    let mut last = None;
    for _ in 0..64 {
        let step = NEXT.fetch_add(97, Ordering::Relaxed);
        let port = LOW + seed.wrapping_add(step) % SPAN;
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(_) => return Ok(port),
            Err(e) => last = Some(e),
        }
    }
    Err(CloudError::Io {
        what: format!("finding a free port in {LOW}-{}", LOW + SPAN),
        source: last.expect("at least one try"),
    })
}

/// Creates a sparse data disk of `mib` MiB unless it exists (a second boot keeps its data).
pub fn data_disk(path: &Path, mib: u64) -> Result<(), CloudError> {
    if path.exists() {
        return Ok(());
    }
    std::fs::File::create(path)
        .and_then(|f| f.set_len(mib << 20))
        .map_err(|source| CloudError::Io {
            what: format!("creating {}", path.display()),
            source,
        })
}

/// Flashes the appliance image onto a disk of `mib` MiB at `path` (a sparse copy, as `dd` onto a
/// bigger disk), unless it exists: a second boot keeps its data. Its ESP gets the site settings
/// that admit the harness's nodes ([`NODE_MACS`]); [`site_settings`] replaces them with more.
pub fn flash_appliance(path: &Path, mib: u64) -> Result<(), CloudError> {
    if path.exists() {
        return Ok(());
    }
    let image = Images::appliance()?;
    let io = |source| CloudError::Io {
        what: format!("flashing {} onto {}", image.display(), path.display()),
        source,
    };
    let copied = Command::new("cp")
        .arg("--sparse=always")
        .arg(&image)
        .arg(path)
        .status()
        .map_err(io)?;
    if !copied.success() {
        return Err(io(std::io::Error::other(format!("cp exited {copied}"))));
    }
    let disk = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io)?;
    let len = disk.metadata().map_err(io)?.len().max(mib << 20);
    disk.set_len(len).map_err(io)?;
    drop(disk);
    site_settings(path, "")
}

/// Boots the frontend VM `name` from its flashed disk (see [`flash_appliance`]) under UEFI and
/// waits for its readiness line and what the appliance prints on its console for an admin: the
/// admin credentials, the CA bundle and the pin of its key.
pub fn start_frontend(
    dir: &TestDir,
    name: &str,
    segment: &Segment,
    disk: &Path,
    timeout: Duration,
) -> Result<Frontend, CloudError> {
    start_frontend_with(dir, name, Nic::segment(segment), disk, None, timeout)
}

/// [`start_frontend`] with its private NIC, `eth1`, on `private` (a segment, or a site network
/// of [`crate::outside`]) and a third NIC, `eth2`, on `public` (the outside world of
/// [`crate::outside`], where the frontend's public addresses live).
pub fn start_frontend_with(
    dir: &TestDir,
    name: &str,
    private: Nic,
    disk: &Path,
    public: Option<Nic>,
    timeout: Duration,
) -> Result<Frontend, CloudError> {
    let port = free_port()?;
    let mut config = VmConfig::new(name)
        .uefi()
        .memory_mib(1024)
        .nic(Nic::user_forwarding(&[(port, API_PORT)]))
        .nic(private)
        .disk(disk.to_path_buf());
    if let Some(nic) = public {
        config = config.nic(nic);
    }
    let mut vm = config.launch(dir)?;
    vm.wait_for(FRONTEND_READY, timeout)
        .map_err(CloudError::Frontend)?;
    // Printed before the readiness line.
    let printed = |pattern: &str| {
        vm.console()
            .wait_for(pattern, Duration::from_secs(1))
            .map_err(CloudError::Frontend)
    };
    let key = |field: &str| {
        printed(&format!(r"admin-credentials: {field} = (\S+)")).map(|c| c[1].clone())
    };
    let access_key = key("aws_access_key_id")?;
    let secret = key("aws_secret_access_key")?;
    let frontend_key = printed(client::FRONTEND_KEY_LINE)?[1].clone();
    let console_password = printed(r"admin-console-password: (\S+)")?[1].clone();
    printed(&regex::escape(client::CA_BUNDLE_END))?;
    let bundle = client::ca_bundle_in(&vm.console().text()).ok_or_else(|| CloudError::Io {
        what: format!("reading the CA bundle on {}", vm.console().path().display()),
        source: std::io::Error::other("no whole certificate in its ca-bundle lines"),
    })?;
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).map_err(|source| CloudError::Io {
            what: format!("writing {}", path.display()),
            source,
        })
    };
    let credentials = dir.file(&format!("{name}-credentials"));
    write(
        &credentials,
        format!("[default]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret}\n"),
    )?;
    let ca_bundle = dir.file(&format!("{name}-ca.pem"));
    write(&ca_bundle, bundle)?;
    Ok(Frontend {
        vm,
        endpoint: format!("https://127.0.0.1:{port}"),
        credentials,
        ca_bundle,
        frontend_key,
        access_key,
        console_password,
    })
}

/// A diskless node VM that network-boots (its NIC's iPXE ROM) from the segment; `mac` one of
/// [`NODE_MACS`] for the frontend to admit it as it enrolls.
pub fn node_config(name: &str, segment: &Segment, mac: &str) -> VmConfig {
    node_on(name, Nic::segment(segment).mac(mac))
}

/// A diskless node VM that network-boots through `nic`.
pub fn node_on(name: &str, nic: Nic) -> VmConfig {
    VmConfig::new(name)
        .nested_kvm(true)
        .memory_mib(1024)
        .nic(nic.boot())
}

/// Puts `settings` into the flashed appliance on `disk` (not running) as the site settings
/// file an operator would add to its ESP after flashing, with the harness's nodes admitted
/// (see [`with_node_macs`]).
pub fn site_settings(disk: &Path, settings: &str) -> Result<(), CloudError> {
    use mallee_proto::appliance::{Esp, SITE_CONFIG};
    let io = |e: mallee_proto::appliance::ApplianceError| CloudError::Io {
        what: format!("writing {SITE_CONFIG} into the ESP of {}", disk.display()),
        source: std::io::Error::other(e.to_string()),
    };
    let esp = Esp::in_image(disk, true).map_err(io)?;
    esp.write(SITE_CONFIG, with_node_macs(settings).as_bytes())
        .map_err(io)?;
    esp.close().map_err(io)
}

/// `settings` (site settings TOML) with `admit_macs` listing [`NODE_MACS`] at the top of its
/// `[ec2]` table (a table added at the end when it has none); unchanged when it sets
/// `admit_macs` itself.
pub fn with_node_macs(settings: &str) -> String {
    if settings.contains("admit_macs") {
        return settings.to_string();
    }
    let list: Vec<String> = NODE_MACS.iter().map(|m| format!("\"{m}\"")).collect();
    let line = format!("admit_macs = [{}]\n", list.join(", "));
    let mut out = String::new();
    let mut added = false;
    for l in settings.lines() {
        out.push_str(l);
        out.push('\n');
        if !added && l.trim() == "[ec2]" {
            out.push_str(&line);
            added = true;
        }
    }
    if !added {
        out.push_str("[ec2]\n");
        out.push_str(&line);
    }
    out
}

impl Frontend {
    /// What every client the harness runs against this frontend gets in its environment.
    pub fn client_env(&self) -> ClientEnv {
        ClientEnv {
            credentials: self.credentials.clone(),
            ca_bundle: self.ca_bundle.clone(),
        }
    }

    /// Runs the AWS CLI against this frontend; returns its stdout.
    pub fn aws(&self, args: &[&str]) -> Result<String, CloudError> {
        let err = |reason: String| CloudError::Aws {
            args: args.join(" "),
            reason,
        };
        let mut cli = Command::new("aws");
        cli.arg("--endpoint-url")
            .arg(&self.endpoint)
            .arg("--output")
            .arg("json")
            .args(args);
        let out = self
            .client_env()
            .apply(&mut cli)
            .output()
            .map_err(|e| err(format!("cannot run the AWS CLI ({e}); run `just setup`")))?;
        if !out.status.success() {
            return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// How many `m1.small` instances the up nodes could hold in all (the `max` of
    /// `describe-availability-zones verbose`, one cluster): above 0 once a node registered.
    pub fn capacity(&self) -> Result<u32, CloudError> {
        let out = self.aws(&[
            "ec2",
            "describe-availability-zones",
            "--zone-names",
            "verbose",
            "--query",
            "AvailabilityZones[?ZoneName=='|- m1.small'].Messages[0].Message",
            "--output",
            "text",
        ])?;
        Ok(parse_capacity(&out))
    }

    /// The shell commands a person types to use this cloud.
    pub fn cli_hint(&self) -> String {
        format!(
            "{}\n\
             aws --endpoint-url {ep} ec2 describe-availability-zones\n\
             aws --endpoint-url {ep} ec2 describe-instances\n\
             aws --endpoint-url {ep} s3 ls\n\
             scripts/mallee-admin {ep} {creds} DescribeNodes",
            self.client_env().exports(),
            ep = self.endpoint,
            creds = self.credentials.display()
        )
    }
}

/// The `max` of a verbose zone message `free / max  cpu  ram  disk`; 0 when unreadable.
pub fn parse_capacity(message: &str) -> u32 {
    match message.split_whitespace().collect::<Vec<_>>().as_slice() {
        [_free, "/", max, ..] => max.parse().unwrap_or(0),
        _ => 0,
    }
}

/// The line the test guest prints on its serial console once its init runs: the guest bundle's
/// ramdisk is `mallee-init`, which reports ready once its NIC took the address its VMM's DHCP
/// answer gave (`ip=172.31.0.2/27 boot_ms=...`; `ip=none` for an instance without a network).
pub const GUEST_MARKER: &str = "mallee-init: ready role=node ip=";

/// The registered test image: kernel, ramdisk and machine image ids.
pub struct TestImage {
    pub eki: String,
    pub eri: String,
    pub emi: String,
    /// The line its guest logs for its root disk ([`crate::GuestImage::root_disk_line`]).
    pub root_disk_line: String,
}

/// The AWS CLI's JSON output, parsed.
pub fn json(text: &str) -> Result<serde_json::Value, CloudError> {
    serde_json::from_str(text).map_err(|e| CloudError::Aws {
        args: "(output)".into(),
        reason: format!("not JSON ({e}): {text}"),
    })
}

impl Frontend {
    /// Uploads the guest bundle image-build made (the node's Debian kernel, the `mallee-init`
    /// ramdisk and the ext4 root image, [`Images::guest`]) to Walrus bucket `bucket` and
    /// registers them.
    pub fn upload_test_image(&self, bucket: &str) -> anyhow::Result<TestImage> {
        let guest = Images::guest()?;
        let [eki, eri, emi] =
            self.upload_image(bucket, &guest.vmlinuz, &guest.initrd, &guest.root)?;
        Ok(TestImage {
            eki,
            eri,
            emi,
            root_disk_line: guest.root_disk_line(),
        })
    }

    /// Makes bucket `bucket`, uploads `kernel`, `ramdisk` and `root` into it with the AWS CLI
    /// (their kind in the `mallee-image-type` metadata) and registers them: their ids, `[eki,
    /// eri, emi]`, the machine image booting that kernel and ramdisk.
    pub fn upload_image(
        &self,
        bucket: &str,
        kernel: &Path,
        ramdisk: &Path,
        root: &Path,
    ) -> anyhow::Result<[String; 3]> {
        self.aws(&["s3", "mb", &format!("s3://{bucket}")])?;
        for (file, key, kind) in [
            (kernel, "vmlinuz", "kernel"),
            (ramdisk, "initrd", "ramdisk"),
            (root, "root.img", "machine"),
        ] {
            let file = file.display().to_string();
            let meta = format!("mallee-image-type={kind}");
            let dest = format!("s3://{bucket}/{key}");
            self.aws(&["s3", "cp", &file, &dest, "--metadata", &meta])?;
        }
        let register = |args: &[&str]| -> anyhow::Result<String> {
            let mut all = vec!["ec2", "register-image"];
            all.extend_from_slice(args);
            let v = json(&self.aws(&all)?)?;
            v["ImageId"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow::anyhow!("register-image gave no ImageId: {v}"))
        };
        let loc = |key: &str| format!("{bucket}/{key}");
        let eki = register(&[
            "--name",
            &format!("{bucket}-kernel"),
            "--image-location",
            &loc("vmlinuz"),
        ])?;
        let eri = register(&[
            "--name",
            &format!("{bucket}-initrd"),
            "--image-location",
            &loc("initrd"),
        ])?;
        let emi = register(&[
            "--name",
            &format!("{bucket}-machine"),
            "--image-location",
            &loc("root.img"),
            "--kernel-id",
            &eki,
            "--ramdisk-id",
            &eri,
            "--architecture",
            "x86_64",
        ])?;
        Ok([eki, eri, emi])
    }

    /// CreateKeyPair `name` (RSA, the CLI's default): its private key written to `pem`, readable
    /// by its owner only (as `ssh -i` wants it).
    pub fn create_key_pair(&self, name: &str, pem: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let v = json(&self.aws(&["ec2", "create-key-pair", "--key-name", name])?)?;
        let key = v["KeyMaterial"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("create-key-pair gave no KeyMaterial: {v}"))?;
        std::fs::write(pem, key)?;
        std::fs::set_permissions(pem, std::fs::Permissions::from_mode(0o600))?;
        Ok(())
    }

    /// What an SSH login into the Debian cloud image needs, as a user would set it up: the
    /// image uploaded and registered (its EMI returned), key pair `key` created with its private
    /// key in `pem`, and TCP 22 opened in the default group to the outside network.
    pub fn debian_with_ssh(
        &self,
        image: &crate::DebianCloudImage,
        key: &str,
        pem: &Path,
    ) -> anyhow::Result<String> {
        let [_, _, emi] = self.upload_image(
            "debian-cloud",
            &image.vmlinuz,
            &image.initrd,
            &image.root_gpt,
        )?;
        self.create_key_pair(key, pem)?;
        let outside = format!("{}/24", crate::outside::OUTSIDE_IP);
        self.tcp_ingress(
            "authorize-security-group-ingress",
            "default",
            22,
            &["--cidr", &outside],
        )?;
        Ok(emi)
    }

    /// RunInstances of `count` m1.small instances of `emi`; their ids.
    pub fn run_instances(&self, emi: &str, count: u32) -> anyhow::Result<Vec<String>> {
        self.run_instances_with(emi, count, &[])
    }

    /// RunInstances of `count` instances of `emi` with more CLI arguments (groups, user data,
    /// an `--instance-type`: m1.small without one); their ids.
    pub fn run_instances_with(
        &self,
        emi: &str,
        count: u32,
        more: &[&str],
    ) -> anyhow::Result<Vec<String>> {
        let n = count.to_string();
        let mut args = vec!["ec2", "run-instances", "--image-id", emi, "--count", &n];
        if !more.contains(&"--instance-type") {
            args.extend_from_slice(&["--instance-type", "m1.small"]);
        }
        args.extend_from_slice(more);
        let v = json(&self.aws(&args)?)?;
        let ids: Vec<String> = v["Instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["InstanceId"].as_str().map(str::to_string))
            .collect();
        anyhow::ensure!(ids.len() == count as usize, "run-instances gave {v}");
        Ok(ids)
    }

    /// The instance's state name and the node it was placed on (if the API tells).
    pub fn instance_state(&self, id: &str) -> anyhow::Result<String> {
        let v = json(&self.aws(&["ec2", "describe-instances", "--instance-ids", id])?)?;
        v["Reservations"][0]["Instances"][0]["State"]["Name"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("no state for {id}: {v}"))
    }

    /// The private address DescribeInstances shows for `id`.
    pub fn private_ip(&self, id: &str) -> anyhow::Result<String> {
        self.instance_field(id, "PrivateIpAddress")
    }

    /// CreateSecurityGroup `name` with `description`.
    pub fn create_group(&self, name: &str, description: &str) -> Result<(), CloudError> {
        self.aws(&[
            "ec2",
            "create-security-group",
            "--group-name",
            name,
            "--description",
            description,
        ])
        .map(drop)
    }

    /// `verb` (`authorize-security-group-ingress` or `revoke-…`) the rule letting TCP `port`
    /// into `group` from `source` (`["--cidr", NET]` or `["--source-group", GROUP]`).
    pub fn tcp_ingress(
        &self,
        verb: &str,
        group: &str,
        port: u16,
        source: &[&str],
    ) -> Result<(), CloudError> {
        let port = port.to_string();
        let mut args = vec!["ec2", verb, "--group-name", group, "--protocol", "tcp"];
        args.extend_from_slice(&["--port", &port]);
        args.extend_from_slice(source);
        self.aws(&args).map(drop)
    }

    /// AllocateAddress: the elastic IP.
    pub fn allocate_address(&self) -> anyhow::Result<String> {
        let v = json(&self.aws(&["ec2", "allocate-address"])?)?;
        v["PublicIp"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("allocate-address gave no PublicIp: {v}"))
    }

    /// AssociateAddress of elastic IP `eip` with instance `id` (re-association allowed).
    pub fn associate_address(&self, eip: &str, id: &str) -> Result<(), CloudError> {
        let args = [
            "--public-ip",
            eip,
            "--instance-id",
            id,
            "--allow-reassociation",
        ];
        let mut all = vec!["ec2", "associate-address"];
        all.extend_from_slice(&args);
        self.aws(&all).map(drop)
    }

    /// The instance's public address (DescribeInstances `PublicIpAddress`).
    pub fn public_ip(&self, id: &str) -> anyhow::Result<String> {
        self.instance_field(id, "PublicIpAddress")
    }

    fn instance_field(&self, id: &str, field: &str) -> anyhow::Result<String> {
        let v = json(&self.aws(&["ec2", "describe-instances", "--instance-ids", id])?)?;
        v["Reservations"][0]["Instances"][0][field]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("no {field} for {id}: {v}"))
    }

    /// Polls until `id` is in `state`; fails early on `terminated` when waiting for another.
    pub fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let now = self.instance_state(id)?;
            if now == state {
                return Ok(());
            }
            if now == "terminated" {
                let why = match self.state_reason(id) {
                    Ok(Some((code, message))) => format!("{code}: {message}"),
                    Ok(None) => "no state reason".into(),
                    Err(e) => format!("no state reason: {e:#}"),
                };
                anyhow::bail!("{id} is terminated, not {state} ({why})");
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{id} is {now}, not {state}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// GetConsoleOutput (decoded by the CLI).
    pub fn console_output(&self, id: &str) -> anyhow::Result<String> {
        let v = json(&self.aws(&["ec2", "get-console-output", "--instance-id", id])?)?;
        Ok(v["Output"].as_str().unwrap_or_default().to_string())
    }

    /// Polls GetConsoleOutput until it contains `needle`.
    pub fn wait_console(
        &self,
        id: &str,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        self.wait_console_after(id, 0, needle, timeout)
            .map(|(out, _)| out)
    }

    /// Polls GetConsoleOutput until `needle` appears at or after byte `from` of it; the output
    /// and where `needle` ends (to wait for what comes after it next).
    pub fn wait_console_after(
        &self,
        id: &str,
        from: usize,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<(String, usize)> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let out = self.console_output(id)?;
            if let Some(at) = out.get(from..).and_then(|rest| rest.find(needle)) {
                let end = from + at + needle.len();
                return Ok((out, end));
            }
            if std::time::Instant::now() >= deadline {
                // The tail: where the guest stopped is what tells why (CI shows only part of
                // a long message).
                let lines: Vec<&str> = out.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                anyhow::bail!(
                    "{id}: no {needle:?} in its console output after byte {from} \
                     ({} bytes); its last lines:\n{tail}",
                    out.len()
                );
            }
            std::thread::sleep(Duration::from_millis(1000));
        }
    }
}

/// One compute node as the admin-only `DescribeNodes` action reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    pub id: String,
    pub zone: String,
    /// `up` or `down`.
    pub state: String,
    /// `admitted`, `pending`, `approved` or `rejected`.
    pub admission: String,
    pub boot_id: String,
    pub instances: Vec<String>,
    /// Where its image cache lives: `ram` (a diskless node) or `disk`.
    pub storage: String,
    pub budget_bytes: u64,
    pub used_bytes: u64,
    /// Image downloads and cache hits since the node booted.
    pub downloads: u64,
    pub hits: u64,
}

/// The operator's DescribeNodes tool (botocore SigV4; prints the response as JSON).
const ADMIN_PY: &str = include_str!("../../scripts/mallee-admin");

/// The `NodeReport`s in `DescribeNodes`' JSON form (see `ADMIN_PY`).
pub fn parse_nodes(doc: &serde_json::Value) -> anyhow::Result<Vec<NodeReport>> {
    let text = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    let num = |v: &serde_json::Value, k: &str| -> anyhow::Result<u64> {
        let t = text(v, k);
        t.parse()
            .map_err(|e| anyhow::anyhow!("DescribeNodes {k} {t:?}: {e}"))
    };
    let set = |v: &serde_json::Value, k: &str| -> Vec<serde_json::Value> {
        v[k].as_array().cloned().unwrap_or_default()
    };
    set(doc, "nodeSet")
        .iter()
        .map(|n| {
            let cache = &n["imageCache"];
            Ok(NodeReport {
                id: text(n, "nodeId"),
                zone: text(n, "zone"),
                state: text(n, "state"),
                admission: text(n, "admission"),
                boot_id: text(n, "bootId"),
                instances: set(n, "instanceSet")
                    .iter()
                    .map(|i| text(i, "instanceId"))
                    .collect(),
                storage: text(cache, "storage"),
                budget_bytes: num(cache, "budgetBytes")?,
                used_bytes: num(cache, "usedBytes")?,
                downloads: num(cache, "downloads")?,
                hits: num(cache, "hits")?,
            })
        })
        .collect()
}

impl Frontend {
    /// Runs `scripts/mallee-admin ENDPOINT CREDENTIALS args...` with the admin credentials
    /// (and the CA bundle in `AWS_CA_BUNDLE`); its JSON output.
    pub fn admin(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut script = Command::new("python3");
        script
            .arg("-c")
            .arg(ADMIN_PY)
            .arg(&self.endpoint)
            .arg(&self.credentials)
            .args(args);
        let out = self
            .client_env()
            .apply(&mut script)
            .env("MALLEE_UPGRADE_WAIT_SECS", "900")
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run python3 ({e}); run `just setup`"))?;
        anyhow::ensure!(
            out.status.success(),
            "mallee-admin {} failed (its error is above)",
            args.join(" ")
        );
        Ok(json(&String::from_utf8_lossy(&out.stdout))?)
    }

    /// The compute nodes, from `DescribeNodes` signed with the admin credentials.
    pub fn describe_nodes(&self) -> anyhow::Result<Vec<NodeReport>> {
        parse_nodes(&self.admin(&["DescribeNodes"])?)
    }

    /// The node `id` as DescribeNodes reports it.
    pub fn node(&self, id: &str) -> anyhow::Result<NodeReport> {
        self.describe_nodes()?
            .into_iter()
            .find(|n| n.id == id)
            .ok_or_else(|| anyhow::anyhow!("DescribeNodes does not list {id}"))
    }

    /// The instance's `stateReason` code, if DescribeInstances gives one.
    pub fn state_reason(&self, id: &str) -> anyhow::Result<Option<(String, String)>> {
        let v = json(&self.aws(&["ec2", "describe-instances", "--instance-ids", id])?)?;
        let r = &v["Reservations"][0]["Instances"][0]["StateReason"];
        Ok(r["Code"].as_str().map(|c| {
            (
                c.to_string(),
                r["Message"].as_str().unwrap_or_default().to_string(),
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_capacity, parse_nodes, with_node_macs, NODE_MACS};

    #[test]
    fn site_settings_admit_the_harness_nodes_in_their_ec2_table() {
        let line =
            "admit_macs = [\"52:54:00:77:00:01\", \"52:54:00:77:00:02\", \"52:54:00:77:01:01\"]";
        assert_eq!(with_node_macs(""), format!("[ec2]\n{line}\n"));
        assert_eq!(
            with_node_macs("[network]\nmode = \"SYSTEM\"\n"),
            format!("[network]\nmode = \"SYSTEM\"\n[ec2]\n{line}\n")
        );
        // Into the table already there (a second `[ec2]` header would not parse).
        assert_eq!(
            with_node_macs("[ec2]\ncluster_secret = \"s\"\n[network]\nmode = \"SYSTEM\""),
            format!("[ec2]\n{line}\ncluster_secret = \"s\"\n[network]\nmode = \"SYSTEM\"\n")
        );
        let own = "[ec2]\nadmit_macs = []\n";
        assert_eq!(with_node_macs(own), own);
        assert_eq!(NODE_MACS.len(), 3);
    }

    #[test]
    fn capacity_is_read_from_the_verbose_zone_message() {
        assert_eq!(parse_capacity("0003 / 0004    1     512     5\n"), 4);
        assert_eq!(parse_capacity("0000 / 0000    1     512     5"), 0);
        assert_eq!(parse_capacity("None\n"), 0);
    }

    #[test]
    fn nodes_are_read_from_describe_nodes_json() {
        let doc = serde_json::json!({"requestId": "r", "nodeSet": [{
            "nodeId": "node-1", "zone": "cluster1", "state": "up", "admission": "admitted", "bootId": "b",
            "instanceSet": [{"instanceId": "i-1", "state": "running"}],
            "imageCache": {"storage": "ram", "budgetBytes": "100", "usedBytes": "10",
                           "downloads": "3", "hits": "6", "imageSet": ""}}]});
        let nodes = parse_nodes(&doc).unwrap();
        assert_eq!(nodes.len(), 1);
        let n = &nodes[0];
        assert_eq!(
            (
                n.id.as_str(),
                n.admission.as_str(),
                n.storage.as_str(),
                n.downloads,
                n.hits
            ),
            ("node-1", "admitted", "ram", 3, 6)
        );
        assert_eq!(n.instances, vec!["i-1".to_string()]);
        let empty = serde_json::json!({"requestId": "r", "nodeSet": ""});
        assert!(parse_nodes(&empty).unwrap().is_empty());
        let bad = serde_json::json!({"nodeSet": [{"imageCache": {"downloads": "many"}}]});
        assert!(parse_nodes(&bad).is_err());
    }
}
