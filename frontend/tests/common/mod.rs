//! Test harness: runs the real `mallee-frontend` binary on a loopback port in a temporary data
//! directory, and runs the Python client scripts (AWS CLI, boto3) against it: over https with
//! the CA bundle it writes (its default), or plain HTTP when a test's config turns `[tls]` off.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_mallee-frontend");

/// A running frontend; killed on drop.
pub struct Frontend {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// `http`, or `https` when the config turns `[tls]` on.
    pub scheme: &'static str,
    extra: String,
    child: Option<Child>,
    starts: u32,
}

impl Frontend {
    /// Starts a frontend with a fresh data directory.
    pub fn start() -> Frontend {
        Frontend::start_with("")
    }

    /// Starts a frontend with a fresh data directory and `extra` appended to its config.
    pub fn start_with(extra: &str) -> Frontend {
        let dir = tempfile::Builder::new()
            .prefix("mallee-frontend-test")
            .tempdir()
            .unwrap();
        // The daemon drops root; it must be able to reach its data dir inside ours.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut f = Frontend {
            dir,
            port: 0,
            scheme: "http",
            extra: extra.to_string(),
            child: None,
            starts: 0,
        };
        // Port 0 at the first start: the kernel picks a port nobody holds, where a port found
        // free beforehand could be taken by another test's connection before the daemon binds
        // it. Restarts keep the port the first start got.
        f.write_config();
        f.spawn();
        f.write_config();
        f
    }

    fn write_config(&self) {
        std::fs::write(
            self.config(),
            format!(
                "listen = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\n{}",
                self.port,
                self.data_dir().display(),
                self.extra
            ),
        )
        .unwrap();
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("frontend.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    pub fn credentials(&self) -> PathBuf {
        self.data_dir().join("admin-credentials")
    }

    /// The CA bundle a frontend with `[tls]` on writes beside the credentials.
    pub fn ca_bundle(&self) -> PathBuf {
        self.data_dir().join("mallee-ca.pem")
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = self
            .dir
            .path()
            .join(format!("frontend-{}.log", self.starts));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(self.config())
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start mallee-frontend");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("listening on http")) {
                let (scheme, addr) = line
                    .rsplit_once("listening on ")
                    .and_then(|(_, url)| url.split_once("://"))
                    .unwrap_or_default();
                self.scheme = if scheme == "https" { "https" } else { "http" };
                self.port = addr
                    .trim()
                    .parse::<std::net::SocketAddr>()
                    .unwrap_or_else(|e| panic!("bound address in {line:?}: {e}"))
                    .port();
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("mallee-frontend exited ({status}) before listening:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "mallee-frontend not listening after 30 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's peak resident memory so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> u64 {
        let pid = self.child.as_ref().expect("frontend running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kib / 1024
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Runs `mallee-frontend admin ARGS` against the same data dir; returns stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        self.admin_with_stdin(args, "")
    }

    /// Runs `mallee-frontend admin ARGS` against the same data dir with `stdin` as its
    /// standard input (a password for `--password-stdin`); returns stdout.
    pub fn admin_with_stdin(&self, args: &[&str], stdin: &str) -> String {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(self.config())
            .arg("admin")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `program` with the environment a client of this frontend needs: the admin credentials,
    /// none of the caller's AWS settings, and over https the CA bundle wherever each client
    /// looks for it (botocore and the AWS CLI, Python's default `ssl` context behind urllib and
    /// http.client, curl). Every client process a test starts goes through here.
    pub fn client(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("AWS_SHARED_CREDENTIALS_FILE", self.credentials())
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("PYTHONUNBUFFERED", "1")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE");
        if self.scheme == "https" {
            let ca = self.ca_bundle();
            cmd.env("AWS_CA_BUNDLE", &ca)
                .env("SSL_CERT_FILE", &ca)
                .env("CURL_CA_BUNDLE", &ca);
        } else {
            for var in ["AWS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"] {
                cmd.env_remove(var);
            }
        }
        cmd
    }

    /// A `python3 tests/<script> ENDPOINT` command with the client environment set.
    pub fn python(&self, script: &str) -> Command {
        require_tool("python3");
        require_tool("aws");
        require_tool("curl");
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join(script);
        let mut cmd = self.client("python3");
        cmd.arg(path).arg(self.endpoint());
        cmd
    }

    /// A TLS client setup that trusts this frontend's CA bundle, for tests that speak HTTP from
    /// Rust; `None` when it serves plain HTTP.
    pub fn tls_client(&self) -> Option<Arc<rustls::ClientConfig>> {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        if self.scheme != "https" {
            return None;
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.ca_bundle()).expect("read the CA bundle") {
            roots
                .add(cert.expect("a certificate in the CA bundle"))
                .unwrap();
        }
        let provider = Arc::new(mallee_proto::tls::provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Some(Arc::new(config))
    }

    /// Runs a script to completion; panics with its output if it fails.
    pub fn run_script(&self, script: &str, extra_env: &[(&str, &str)]) -> String {
        let mut cmd = self.python(script);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{text}");
        assert!(
            out.status.success(),
            "{script} failed:\n{text}\n--- frontend log ---\n{}",
            self.log()
        );
        text
    }

    /// The current log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("frontend-{}.log", self.starts)),
        )
        .unwrap_or_default()
    }

    /// Drives a script that asks for crashes: on each `KILL` line, kill -9 and restart the
    /// frontend, then answer `RESTARTED`.
    pub fn run_crash_script(&mut self, script: &str) -> String {
        let mut child = self
            .python(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut transcript = String::new();
        for line in stdout.lines() {
            let line = line.unwrap();
            println!("{line}");
            transcript.push_str(&line);
            transcript.push('\n');
            if line.trim() == "KILL" {
                self.restart();
                writeln!(stdin, "RESTARTED").unwrap();
                stdin.flush().unwrap();
            }
        }
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "{script} failed:\n{transcript}\n--- frontend log ---\n{}",
            self.log()
        );
        transcript
    }
}

impl Drop for Frontend {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Fails with a pointer to `just setup` when a client tool is missing.
pub fn require_tool(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "{tool} is not installed: run `just setup`");
}
