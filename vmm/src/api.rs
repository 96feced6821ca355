//! The control socket: newline-delimited JSON requests on a unix socket, one JSON reply per
//! request. `{"op":"status"}` reports the VM; `{"op":"shutdown"}` stops it (exit status 3).
//!
//! Request handling is the plain function [`handle`]; the socket code only reads lines and
//! writes replies. Hotplug is not here yet.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::bus::lock;
use crate::exit::ExitReason;
use crate::vm::latch::ExitLatch;

/// The link between the API and whichever VM is running: a stop request outlives restarts (a
/// guest rebooting under `--on-reboot restart` gets a new VM and a new exit latch).
#[derive(Default)]
pub struct Control {
    stop: AtomicBool,
    current: Mutex<Option<Arc<ExitLatch>>>,
}

impl Control {
    /// No VM attached, no stop requested.
    pub fn new() -> Control {
        Control::default()
    }

    /// Makes `latch` the running VM's; a stop already requested stops it at once.
    pub fn attach(&self, latch: &Arc<ExitLatch>) {
        *lock(&self.current) = Some(latch.clone());
        if self.stop_requested() {
            latch.set(ExitReason::ApiShutdown);
        }
    }

    /// Asks the running VM (and any later one) to stop.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(l) = lock(&self.current).as_ref() {
            l.set(ExitReason::ApiShutdown);
        }
    }

    /// Whether a stop was requested.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn state(&self) -> &'static str {
        if self.stop_requested() {
            return ExitReason::ApiShutdown.name();
        }
        lock(&self.current)
            .as_ref()
            .and_then(|l| l.get())
            .map_or("running", ExitReason::name)
    }
}

/// What the API can see of the VM.
pub struct ApiState {
    /// Stops the VM.
    pub control: Arc<Control>,
    /// When the VMM started.
    pub started: Instant,
    /// vCPU count.
    pub vcpus: u8,
    /// Guest RAM.
    pub mem_bytes: u64,
}

/// A request.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Report state.
    Status,
    /// Stop the VM.
    Shutdown,
}

/// A reply.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reply {
    /// Whether the request was understood and done.
    pub ok: bool,
    /// `running`, or the exit reason once the VM is stopping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// vCPU count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u8>,
    /// Guest RAM in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_bytes: Option<u64>,
    /// Milliseconds since the VMM started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
    /// Why a request failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The control socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on API socket {path}: {err}")]
pub struct ApiSocketError {
    /// The socket path.
    pub path: String,
    /// The error.
    pub err: std::io::Error,
}

fn state_reply(state: &ApiState) -> Reply {
    Reply {
        ok: true,
        state: Some(state.control.state().to_string()),
        vcpus: Some(state.vcpus),
        mem_bytes: Some(state.mem_bytes),
        uptime_ms: Some(state.started.elapsed().as_millis() as u64),
        error: None,
    }
}

/// Answers one request line.
pub fn handle(line: &str, state: &ApiState) -> Reply {
    match serde_json::from_str::<Request>(line) {
        Ok(Request::Status) => state_reply(state),
        Ok(Request::Shutdown) => {
            state.control.request_stop();
            state_reply(state)
        }
        Err(e) => Reply {
            ok: false,
            state: None,
            vcpus: None,
            mem_bytes: None,
            uptime_ms: None,
            error: Some(format!("bad request: {e}")),
        },
    }
}

fn serve_client(stream: UnixStream, state: &ApiState) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else {
            return;
        };
        if line.trim().is_empty() {
            continue;
        }
        let reply = handle(&line, state);
        let mut text = serde_json::to_string(&reply).unwrap_or_else(|_| "{\"ok\":false}".into());
        text.push('\n');
        if out.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}

/// Listens on `path` (replacing a stale socket) and serves clients on a background thread.
pub fn serve(path: &Path, state: ApiState) -> Result<(), ApiSocketError> {
    let err = |err| ApiSocketError {
        path: path.display().to_string(),
        err,
    };
    if path.exists() {
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    let state = Arc::new(state);
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = state.clone();
                let _ = std::thread::Builder::new()
                    .name("api-client".into())
                    .spawn(move || serve_client(stream, &state));
            }
        })
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ApiState {
        let control = Arc::new(Control::new());
        control.attach(&Arc::new(ExitLatch::new()));
        ApiState {
            control,
            started: Instant::now(),
            vcpus: 2,
            mem_bytes: 256 << 20,
        }
    }

    #[test]
    fn status_then_shutdown_over_a_real_socket() {
        let path = std::env::temp_dir().join(format!("mallee-vmm-api-{}.sock", std::process::id()));
        let st = state();
        let control = st.control.clone();
        let exit = Arc::new(ExitLatch::new());
        control.attach(&exit);
        serve(&path, st).unwrap();
        let mut s = UnixStream::connect(&path).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        s.write_all(b"{\"op\":\"status\"}\n").unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let reply: Reply = serde_json::from_str(&line).unwrap();
        assert_eq!(reply.state.as_deref(), Some("running"));
        assert_eq!(reply.vcpus, Some(2));
        s.write_all(b"{\"op\":\"shutdown\"}\n").unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert_eq!(exit.wait(), ExitReason::ApiShutdown);
        // A VM attached later (a restart) stops at once.
        let next = Arc::new(ExitLatch::new());
        control.attach(&next);
        assert_eq!(next.get(), Some(ExitReason::ApiShutdown));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn garbage_gets_an_error_reply() {
        let st = state();
        for bad in ["", "{", "{\"op\":\"reboot\"}", "[1,2]", "{\"status\":1}"] {
            let r = handle(bad, &st);
            assert!(!r.ok, "{bad}");
            assert!(r.error.is_some());
        }
        assert!(!st.control.stop_requested());
    }
}
