//! The control socket: newline-delimited JSON requests on a unix socket, one JSON reply per
//! request, in the contract types of `mallee-proto` ([`Request`], [`Reply`]).
//! `{"op":"status"}` reports the VM; `{"op":"shutdown"}` stops it (exit status 3);
//! `{"op":"set_metadata",...}` replaces what the metadata service serves and how, while the guest
//! runs (every reply names the options served from then on); `{"op":"attach_volume",...}` and
//! `{"op":"detach_volume","slot":N}` put a volume into a volume slot and take it out (every reply
//! lists what each slot holds).
//!
//! Request handling is the plain function [`handle`]; the socket code only reads lines and
//! writes replies. Each client has its own thread, so an attach waiting for an AoE target does
//! not hold up other clients.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mallee_proto::vmm::{encode_line, Reply, Request, VmState};
use mallee_proto::Mac;

use crate::bus::lock;
use crate::config;
use crate::devices::virtio::block::{self, slot::VolumeSlots};
use crate::devices::virtio::net::metadata::LiveMetadata;
use crate::devices::virtio::net::port::PortCounters;
use crate::exit::Exit;
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
            latch.set(Exit::ApiShutdown);
        }
    }

    /// Asks the running VM (and any later one) to stop.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(l) = lock(&self.current).as_ref() {
            l.set(Exit::ApiShutdown);
        }
    }

    /// Whether a stop was requested.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn state(&self) -> VmState {
        if self.stop_requested() {
            return VmState::Stopping(Exit::ApiShutdown);
        }
        lock(&self.current)
            .as_ref()
            .and_then(|l| l.get())
            .map_or(VmState::Running, VmState::Stopping)
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
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Each NIC's MAC and port counters, in configuration order.
    pub nics: Vec<(Mac, Arc<PortCounters>)>,
    /// What the metadata service serves; `None`: the VM has no service.
    pub metadata: Option<Arc<LiveMetadata>>,
    /// The volume slots, in slot order.
    pub volume_slots: VolumeSlots,
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
        state: Some(state.control.state()),
        vcpus: Some(state.vcpus),
        memory_mib: Some(state.memory_mib),
        uptime_ms: Some(state.started.elapsed().as_millis() as u64),
        nics: state.nics.iter().map(|(mac, c)| c.status(*mac)).collect(),
        volume_slots: state.volume_slots.status(),
        metadata_options: state.metadata.as_ref().map(|m| m.options()),
        error: None,
    }
}

/// Answers one request line.
pub fn handle(line: &str, state: &ApiState) -> Reply {
    match serde_json::from_str::<Request>(line) {
        Ok(Request::Status) => state_reply(state),
        Ok(Request::Shutdown) => {
            tracing::info!("stop requested through the API");
            state.control.request_stop();
            state_reply(state)
        }
        Ok(Request::SetMetadata { metadata }) => {
            let Some(live) = &state.metadata else {
                return Reply::error("the VM was started without a metadata service");
            };
            if let Err(e) = config::check_metadata(&metadata) {
                return Reply::error(e.to_string());
            }
            let o = metadata.options;
            tracing::info!(
                "metadata replaced through the API: tokens {}, endpoint {}, hop limit {}",
                o.http_tokens.name(),
                o.http_endpoint.name(),
                o.http_put_response_hop_limit
            );
            live.replace(*metadata);
            state_reply(state)
        }
        Ok(Request::AttachVolume {
            slot,
            volume_id,
            source,
            read_only,
        }) => {
            if let Err(e) = config::check_disk_source("source", &source) {
                return Reply::error(e.to_string());
            }
            let attached = (state.volume_slots.get(slot)).and_then(|s| {
                s.attach(&volume_id, read_only, &source.to_string(), || {
                    block::open(&source, read_only)
                })
            });
            slot_reply(attached.map(drop), state)
        }
        Ok(Request::DetachVolume { slot }) => {
            let detached = (state.volume_slots.get(slot)).and_then(|s| s.detach());
            slot_reply(detached.map(drop), state)
        }
        Err(e) => {
            tracing::warn!("API: bad request: {e}");
            Reply::error(format!("bad request: {e}"))
        }
    }
}

fn slot_reply(done: Result<(), block::slot::SlotError>, state: &ApiState) -> Reply {
    match done {
        Ok(()) => state_reply(state),
        Err(e) => {
            tracing::warn!("API: {e}");
            Reply::error(e.to_string())
        }
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
        if out.write_all(&encode_line(&handle(&line, state))).is_err() {
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
    use mallee_proto::vmm::InstanceMetadata;
    use mallee_proto::{HttpEndpoint, HttpTokens, MetadataOptions};

    fn state() -> ApiState {
        let control = Arc::new(Control::new());
        control.attach(&Arc::new(ExitLatch::new()));
        ApiState {
            control,
            started: Instant::now(),
            vcpus: 2,
            memory_mib: 256,
            nics: vec![(Mac([2, 0, 0, 0, 0, 7]), Arc::default())],
            metadata: Some(Arc::new(LiveMetadata::new(Default::default()))),
            volume_slots: VolumeSlots::new(1),
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
        s.write_all(&encode_line(&Request::Status)).unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let reply: Reply = serde_json::from_str(&line).unwrap();
        assert_eq!(reply.state, Some(VmState::Running));
        assert_eq!(reply.vcpus, Some(2));
        assert_eq!(reply.nics.len(), 1, "each NIC's counters");
        assert_eq!(reply.nics[0].mac, Mac([2, 0, 0, 0, 0, 7]));
        s.write_all(&encode_line(&Request::Shutdown)).unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        let reply: Reply = serde_json::from_str(&line).unwrap();
        assert_eq!(reply.state, Some(VmState::Stopping(Exit::ApiShutdown)));
        assert_eq!(exit.wait(), Exit::ApiShutdown);
        // A VM attached later (a restart) stops at once.
        let next = Arc::new(ExitLatch::new());
        control.attach(&next);
        assert_eq!(next.get(), Some(Exit::ApiShutdown));
        std::fs::remove_file(&path).unwrap();
    }

    fn set(options: MetadataOptions) -> String {
        let metadata = InstanceMetadata {
            user_data: Some("aGk=".into()),
            options,
            ..Default::default()
        };
        String::from_utf8(encode_line(&Request::SetMetadata {
            metadata: Box::new(metadata),
        }))
        .unwrap()
    }

    #[test]
    fn set_metadata_replaces_the_content_and_the_reply_names_the_options() {
        let st = state();
        let live = st.metadata.clone().unwrap();
        assert_eq!(
            handle(r#"{"op":"status"}"#, &st).metadata_options,
            Some(MetadataOptions::default())
        );
        let wanted = MetadataOptions {
            http_tokens: HttpTokens::Required,
            http_endpoint: HttpEndpoint::Disabled,
            http_put_response_hop_limit: 3,
        };
        let before = live.version();
        let reply = handle(&set(wanted), &st);
        assert!(reply.ok, "{reply:?}");
        assert_eq!(reply.metadata_options, Some(wanted));
        assert_ne!(live.version(), before, "the ports must see a new version");
        let (_, now) = live.current();
        assert_eq!(
            (now.options, now.user_data.as_deref()),
            (wanted, Some("aGk="))
        );
        assert_eq!(
            reply.state,
            Some(VmState::Running),
            "the guest keeps running"
        );
    }

    #[test]
    fn set_metadata_refuses_a_bad_hop_limit_and_a_vm_without_a_service() {
        let st = state();
        let live = st.metadata.clone().unwrap();
        for hops in [0, 65] {
            let bad = MetadataOptions {
                http_put_response_hop_limit: hops,
                ..Default::default()
            };
            let reply = handle(&set(bad), &st);
            assert!(
                !reply.ok && reply.error.as_deref().unwrap().contains("hop limit"),
                "{reply:?}"
            );
        }
        assert_eq!(live.version(), 0, "nothing replaced");
        let none = ApiState {
            metadata: None,
            ..state()
        };
        let reply = handle(&set(MetadataOptions::default()), &none);
        assert!(!reply.ok, "{reply:?}");
        assert_eq!(handle(r#"{"op":"status"}"#, &none).metadata_options, None);
    }

    fn call(st: &ApiState, request: &Request) -> Reply {
        handle(
            std::str::from_utf8(&encode_line(request)).unwrap().trim(),
            st,
        )
    }

    #[test]
    fn attach_and_detach_a_file_volume_and_status_shows_the_slot() {
        let st = state();
        let path = std::env::temp_dir().join(format!("mallee-vmm-api-vol-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        let attach = |volume_id: &str| Request::AttachVolume {
            slot: 0,
            volume_id: volume_id.into(),
            source: mallee_proto::vmm::DiskSource::File(path.clone()),
            read_only: false,
        };
        let reply = call(&st, &attach("vol-1"));
        assert!(reply.ok, "{reply:?}");
        let slot = &reply.volume_slots[0];
        assert_eq!(
            (slot.slot, slot.volume_id.as_deref(), slot.size_bytes),
            (0, Some("vol-1"), 1 << 20)
        );
        assert_eq!(call(&st, &Request::Status).volume_slots, reply.volume_slots);
        let again = call(&st, &attach("vol-2"));
        assert!(
            !again.ok
                && again
                    .error
                    .as_deref()
                    .unwrap()
                    .contains("already holds volume vol-1"),
            "{again:?}"
        );
        let reply = call(&st, &Request::DetachVolume { slot: 0 });
        assert!(reply.ok, "{reply:?}");
        assert_eq!(reply.volume_slots[0].volume_id, None);
        assert_eq!(reply.volume_slots[0].size_bytes, 0);
        let again = call(&st, &Request::DetachVolume { slot: 0 });
        assert!(
            !again.ok && again.error.as_deref().unwrap().contains("is empty"),
            "{again:?}"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn attach_refuses_a_missing_slot_a_missing_file_and_a_broadcast_aoe_address() {
        use mallee_proto::vmm::DiskSource;
        let st = state();
        let attach = |slot, source| Request::AttachVolume {
            slot,
            volume_id: "vol-1".into(),
            source,
            read_only: false,
        };
        let cases = [
            (
                attach(1, DiskSource::File("/x".into())),
                "volume slot 1 does not exist",
            ),
            (
                attach(0, DiskSource::File("/no/such/vol".into())),
                "cannot open /no/such/vol",
            ),
            (
                attach(
                    0,
                    DiskSource::Aoe {
                        iface: "eth1".into(),
                        shelf: u16::MAX,
                        slot: 1,
                    },
                ),
                "broadcast AoE address",
            ),
            (
                Request::DetachVolume { slot: 9 },
                "volume slot 9 does not exist",
            ),
        ];
        for (request, why) in cases {
            let reply = call(&st, &request);
            assert!(
                !reply.ok && reply.error.as_deref().unwrap().contains(why),
                "{request:?}: {reply:?}"
            );
        }
        assert_eq!(call(&st, &Request::Status).volume_slots[0].volume_id, None);
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
