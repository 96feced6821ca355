//! Test fixtures for the PXE service: a network namespace with a tap device (removed on drop)
//! and the service running on its own thread and runtime, optionally inside that namespace.

#![allow(dead_code)]

use mallee_frontend::pxe::{self, events::EventLog, PxeConfig};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs `cmd`, failing the test with its output (and how to get the tool) if it fails.
pub fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}; run `just setup`"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace named for this process, holding one tap device with an address.
pub struct TapNamespace {
    pub name: String,
    pub tap: String,
}

impl TapNamespace {
    /// Namespace `mpxe-<pid>-<n>` with `tap0` at `cidr` (e.g. `10.213.0.1/24`), up.
    pub fn new(cidr: &str) -> Self {
        let name = format!(
            "mpxe-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self {
            name,
            tap: "tap0".into(),
        };
        let ip = |args: &[&str]| run(Command::new("ip").args(["-n", &ns.name]).args(args));
        ip(&["link", "set", "lo", "up"]);
        ip(&["tuntap", "add", "dev", &ns.tap, "mode", "tap"]);
        ip(&["addr", "add", cidr, "dev", &ns.tap]);
        ip(&["link", "set", &ns.tap, "up"]);
        ns
    }
}

impl Drop for TapNamespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The PXE service on its own thread (inside `netns` if given), stopped on drop.
pub struct RunningPxe {
    pub http_addr: SocketAddr,
    pub tftp_addr: SocketAddr,
    pub boot_script_url: String,
    pub events: EventLog,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RunningPxe {
    pub fn start(config: PxeConfig, netns: Option<&str>) -> Self {
        let netns = netns.map(|n| format!("/run/netns/{n}"));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Some(path) = netns {
                let fd = std::fs::File::open(&path).expect("open netns");
                // Only this thread (and the runtime it builds) moves into the namespace.
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&fd),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .expect("setns into the test namespace");
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                match pxe::serve(config).await {
                    Ok(handle) => {
                        ready_tx
                            .send(Ok((
                                handle.http_addr,
                                handle.tftp_addr,
                                handle.boot_script_url.clone(),
                                handle.events.clone(),
                            )))
                            .ok();
                        let _ = stop_rx.await;
                        drop(handle);
                    }
                    Err(e) => {
                        ready_tx.send(Err(e.to_string())).ok();
                    }
                }
            });
        });
        let (http_addr, tftp_addr, boot_script_url, events) = ready_rx
            .recv()
            .expect("PXE thread died")
            .unwrap_or_else(|e| panic!("starting the PXE service: {e}"));
        Self {
            http_addr,
            tftp_addr,
            boot_script_url,
            events,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for RunningPxe {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` at the deadline.
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
