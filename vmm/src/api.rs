//! The control socket: newline-delimited JSON requests on a unix socket, one JSON reply per
//! request. `{"op":"status"}` reports the VM; `{"op":"shutdown"}` stops it (exit status 3).
//!
//! Request handling is the plain function [`handle`]; the socket code only reads lines and
//! writes replies. Hotplug is not here yet.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::exit::ExitReason;
use crate::vm::latch::ExitLatch;

/// What the API can see of the VM.
pub struct ApiState {
    /// Set to stop the VM.
    pub exit: Arc<ExitLatch>,
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
        state: Some(
            state
                .exit
                .get()
                .map_or("running", ExitReason::name)
                .to_string(),
        ),
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
            state.exit.set(ExitReason::ApiShutdown);
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
        ApiState {
            exit: Arc::new(ExitLatch::new()),
            started: Instant::now(),
            vcpus: 2,
            mem_bytes: 256 << 20,
        }
    }

    #[test]
    fn status_then_shutdown_over_a_real_socket() {
        let path = std::env::temp_dir().join(format!("mallee-vmm-api-{}.sock", std::process::id()));
        let st = state();
        let exit = st.exit.clone();
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
        assert_eq!(st.exit.get(), None);
    }
}
