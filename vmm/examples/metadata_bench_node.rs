//! Benchmark runner inside a nested node (`mallee.run=`) for `just bench metadata`: boots the
//! Debian cloud image under `mallee-vmm` (as `e2e/cloud_image.rs` does for the end-to-end test)
//! with user data that, from inside the guest, times GETs of one metadata path, each on a new
//! connection as cloud-init makes them, against the VMM's own metadata service and against the
//! peer: nginx on the node, on the guest's gateway address behind the same tap and virtio-net,
//! serving a file with the same bytes. Rounds alternate between the two.
//!
//! Prints `bench-node: metadata <ours|nginx> round=N ok=N errors=N req_s=X p50_us=N p99_us=N`
//! lines and `bench-node: done` for the host-side benchmark (`qemu-tests/benches/metadata.rs`).
//! Built statically by that benchmark; not in any image.

#[path = "e2e/cloud_image.rs"]
#[allow(dead_code)]
mod cloud_image;
#[path = "e2e/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "e2e/vmm_api.rs"]
mod vmm_api;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::say;

/// The peer's document root and working directory on the node.
const PEER_ROOT: &str = "/tmp/imds-peer";
const NGINX_DIR: &str = "/tmp/nginx";
const NGINX: &str = "/usr/sbin/nginx";
/// The path both servers answer: the instance id, 10 bytes.
const PATH: &str = "/latest/meta-data/instance-id";
/// Seconds per round and target, and rounds per target.
const SECS: u32 = 8;
const ROUNDS: u32 = 3;

/// nginx as it is ordinarily run for static files: a worker per CPU, sendfile, no access log.
fn nginx_conf() -> String {
    format!(
        "daemon off;\nuser root root;\nworker_processes auto;\nerror_log {NGINX_DIR}/error.log;\n\
         pid {NGINX_DIR}/nginx.pid;\nevents {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  default_type text/plain;\n\
         \x20 client_body_temp_path {NGINX_DIR}/body;\n  proxy_temp_path {NGINX_DIR}/proxy;\n\
         \x20 fastcgi_temp_path {NGINX_DIR}/fastcgi;\n  uwsgi_temp_path {NGINX_DIR}/uwsgi;\n\
         \x20 scgi_temp_path {NGINX_DIR}/scgi;\n\
         \x20 server {{ listen 80 reuseport; root {PEER_ROOT}; }}\n}}\n"
    )
}

/// Starts nginx with the same bytes at [`PATH`] as the metadata service answers, and waits
/// until it accepts connections.
fn start_peer() -> Result<Child, String> {
    let file = format!("{PEER_ROOT}{PATH}");
    let parent = std::path::Path::new(&file).parent().ok_or("path")?;
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    std::fs::write(&file, cloud_image::INSTANCE_ID).map_err(|e| format!("{file}: {e}"))?;
    std::fs::create_dir_all(NGINX_DIR).map_err(|e| format!("{NGINX_DIR}: {e}"))?;
    // nginx looks its user up; the node image has no account database.
    for (path, line) in [
        ("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("/etc/group", "root:x:0:\n"),
    ] {
        if !std::path::Path::new(path).exists() {
            std::fs::write(path, line).map_err(|e| format!("{path}: {e}"))?;
        }
    }
    let conf = format!("{NGINX_DIR}/nginx.conf");
    std::fs::write(&conf, nginx_conf()).map_err(|e| format!("{conf}: {e}"))?;
    let mut child = Command::new(NGINX)
        .args(["-p", NGINX_DIR, "-e", &format!("{NGINX_DIR}/error.log")])
        .args(["-c", &conf])
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn {NGINX}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", 80)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(format!("{NGINX_DIR}/error.log")).unwrap_or_default();
            return Err(format!("nginx exited ({status}): {}", log.trim()));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("nginx did not listen on port 80 within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child)
}

/// The guest's half: a Python script (the image's own interpreter, which cloud-init runs on)
/// that prints one `mallee-imds-bench` line per round and target on the serial console.
fn user_data() -> String {
    format!(
        r#"#!/usr/bin/python3
import http.client, time
TARGETS = [("ours", "169.254.169.254"), ("nginx", "{gateway}")]
WANT = b"{want}"
out = open("/dev/ttyS0", "w")
def one(host):
    c = http.client.HTTPConnection(host, 80, timeout=5)
    try:
        c.request("GET", "{path}")
        r = c.getresponse()
        return r.status == 200 and r.read() == WANT
    finally:
        c.close()
for name, host in TARGETS:
    for _ in range(20):
        one(host)
for rnd in range({rounds}):
    for name, host in TARGETS:
        lat, errors, start = [], 0, time.monotonic()
        while time.monotonic() - start < {secs}:
            t = time.perf_counter()
            try:
                ok = one(host)
            except OSError:
                ok = False
            if ok:
                lat.append(time.perf_counter() - t)
            else:
                errors += 1
        elapsed = time.monotonic() - start
        lat.sort()
        q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] * 1e6 if lat else 0
        print(f"mallee-imds-bench {{name}} round={{rnd}} ok={{len(lat)}} errors={{errors}} "
              f"req_s={{len(lat) / elapsed:.1f}} p50_us={{q(0.5):.0f}} p99_us={{q(0.99):.0f}}",
              file=out, flush=True)
print("mallee-imds-bench done", file=out, flush=True)
"#,
        gateway = cloud_image::GATEWAY,
        want = cloud_image::INSTANCE_ID,
        path = PATH,
        rounds = ROUNDS,
        secs = SECS,
    )
}

fn bench() -> Result<(), String> {
    let mut peer = start_peer()?;
    let run = cloud_image::boot(&user_data(), || ());
    let _ = peer.kill();
    let _ = peer.wait();
    let run = run?;
    run.booted
        .map_err(|e| format!("the guest did not boot: {e}"))?;
    let lines: Vec<&str> = run
        .console
        .lines()
        .filter_map(|l| {
            l.split_once("mallee-imds-bench ")
                .map(|(_, rest)| rest.trim_end())
        })
        .collect();
    if !lines.contains(&"done") {
        return Err("the guest's benchmark did not finish".into());
    }
    for l in lines.iter().filter(|l| **l != "done") {
        say(&format!("bench-node: metadata {l}"));
    }
    Ok(())
}

fn main() {
    if let Err(e) = bench() {
        say(&format!("bench-node: metadata FAIL {e}"));
    }
    say("bench-node: done");
}
