//! DHCPv4 client as a plain state machine (RFC 2131 §4.4): no sockets, no clock.
//!
//! The caller feeds it timeouts ([`DhcpClient::on_timeout`] once `now >= deadline()`) and
//! received datagrams ([`DhcpClient::on_packet`]); it answers with [`Action`]s: datagrams to send
//! (broadcast or unicast to the server) and leases to configure or remove. States: INIT →
//! SELECTING (DISCOVER, wait for OFFER) → REQUESTING (REQUEST, wait for ACK/NAK) → BOUND →
//! RENEWING at T1 (unicast REQUEST) → REBINDING at T2 (broadcast REQUEST) → lease expiry back to
//! INIT. Silence is retried with exponential backoff (4 s doubling to 64 s, ±1 s jitter); a NAK
//! returns to INIT and discovers again after the next backoff step (only a bind resets the
//! steps). Messages are encoded and decoded with `dhcproto`. Time is a `Duration` since an
//! arbitrary origin chosen by the caller.

use super::lease::{lease_from, Lease};
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use std::cell::Cell;
use std::net::Ipv4Addr;
use std::time::Duration;

/// Why a datagram or message could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("undecodable DHCP message: {0}")]
    Decode(#[from] dhcproto::error::DecodeError),
    #[error("undecodable DHCP message: the decoder panicked on it")]
    DecoderPanic,
    #[error("cannot encode DHCP message: {0}")]
    Encode(#[from] dhcproto::error::EncodeError),
}

/// Where a datagram goes: broadcast on the link, or unicast to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Broadcast,
    Unicast(Ipv4Addr),
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send { bytes: Vec<u8>, to: Destination },
    Configure(Lease),
    Deconfigure(Lease),
}

#[derive(Debug, Clone)]
enum State {
    Init,
    Selecting {
        xid: u32,
    },
    Requesting {
        xid: u32,
        offer: Lease,
        tries: u32,
    },
    Bound {
        lease: Lease,
        since: Duration,
    },
    Renewing {
        xid: u32,
        lease: Lease,
        since: Duration,
    },
    Rebinding {
        xid: u32,
        lease: Lease,
        since: Duration,
    },
}

const REQUEST_TRIES: u32 = 4;
const MIN_RETRANSMIT: Duration = Duration::from_secs(60);

/// The client of one network interface.
pub struct DhcpClient {
    mac: [u8; 6],
    hostname: Option<String>,
    state: State,
    deadline: Duration,
    backoff_step: u32,
    rng: u64,
}

impl DhcpClient {
    /// A client in INIT that wants to send DISCOVER right away. `seed` feeds xids and jitter.
    pub fn new(mac: [u8; 6], hostname: Option<String>, seed: u64) -> Self {
        DhcpClient {
            mac,
            hostname,
            state: State::Init,
            deadline: Duration::ZERO,
            backoff_step: 0,
            rng: seed | 1,
        }
    }

    /// When [`on_timeout`](Self::on_timeout) must next be called.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The RFC name of the current state, for logs.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Init => "INIT",
            State::Selecting { .. } => "SELECTING",
            State::Requesting { .. } => "REQUESTING",
            State::Bound { .. } => "BOUND",
            State::Renewing { .. } => "RENEWING",
            State::Rebinding { .. } => "REBINDING",
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64: jitter and xids need to differ between nodes, not to be secret.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// `base_secs` ±1 s of jitter.
    fn jittered(&mut self, base_secs: u64) -> Duration {
        let jitter_ms = self.random() % 2001; // 0..=2000 → -1 s..=+1 s
        Duration::from_millis(base_secs * 1000 + jitter_ms - 1000)
    }

    /// 4 s, 8 s, ... 64 s (capped), each ±1 s of jitter; advances the step, which only a
    /// successful bind resets (so a server that NAKs every request is not hammered).
    fn backoff(&mut self) -> Duration {
        let base = 4u64 << self.backoff_step.min(4);
        self.backoff_step += 1;
        self.jittered(base)
    }

    fn message(&self, kind: MessageType, xid: u32, ciaddr: Ipv4Addr, broadcast: bool) -> Message {
        let mut msg = blank_request(xid, ciaddr, self.mac);
        if broadcast {
            msg.set_flags(Flags::default().set_broadcast());
        }
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        let mut client_id = vec![1u8];
        client_id.extend_from_slice(&self.mac);
        opts.insert(DhcpOption::ClientIdentifier(client_id));
        opts.insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::ClasslessStaticRoute,
            OptionCode::DomainNameServer,
            OptionCode::AddressLeaseTime,
            OptionCode::Renewal,
            OptionCode::Rebinding,
        ]));
        if let Some(name) = &self.hostname {
            opts.insert(DhcpOption::Hostname(name.clone()));
        }
        msg
    }

    fn send(msg: &Message, to: Destination) -> Result<Action, DhcpError> {
        Ok(Action::Send {
            bytes: msg.to_vec()?,
            to,
        })
    }

    fn discover(&mut self, now: Duration) -> Result<Vec<Action>, DhcpError> {
        let xid = self.random() as u32;
        let msg = self.message(MessageType::Discover, xid, Ipv4Addr::UNSPECIFIED, true);
        self.state = State::Selecting { xid };
        self.deadline = now + self.backoff();
        Ok(vec![Self::send(&msg, Destination::Broadcast)?])
    }

    fn request_offer(
        &mut self,
        now: Duration,
        xid: u32,
        offer: Lease,
        tries: u32,
    ) -> Result<Vec<Action>, DhcpError> {
        let mut msg = self.message(MessageType::Request, xid, Ipv4Addr::UNSPECIFIED, true);
        msg.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(offer.addr));
        msg.opts_mut()
            .insert(DhcpOption::ServerIdentifier(offer.server));
        self.state = State::Requesting { xid, offer, tries };
        self.deadline = now + self.jittered(4 << tries.min(4));
        Ok(vec![Self::send(&msg, Destination::Broadcast)?])
    }

    /// A REQUEST for an existing lease (RENEWING: unicast; REBINDING: broadcast).
    fn extend(
        &mut self,
        now: Duration,
        lease: Lease,
        since: Duration,
        rebinding: bool,
    ) -> Result<Vec<Action>, DhcpError> {
        let xid = self.random() as u32;
        let to = if rebinding {
            Destination::Broadcast
        } else {
            Destination::Unicast(lease.server)
        };
        let msg = self.message(MessageType::Request, xid, lease.addr, rebinding);
        let until = since
            + if rebinding {
                lease.lease_time
            } else {
                lease.t2
            };
        let half = until.saturating_sub(now) / 2;
        self.deadline = (now + half.max(MIN_RETRANSMIT)).min(until);
        self.state = if rebinding {
            State::Rebinding { xid, lease, since }
        } else {
            State::Renewing { xid, lease, since }
        };
        Ok(vec![Self::send(&msg, to)?])
    }

    fn restart(
        &mut self,
        now: Duration,
        mut actions: Vec<Action>,
    ) -> Result<Vec<Action>, DhcpError> {
        self.state = State::Init;
        self.deadline = now;
        actions.extend(self.discover(now)?);
        Ok(actions)
    }

    /// After a NAK: back to INIT, discovering again after the next backoff step.
    fn restart_after_nak(&mut self, now: Duration, actions: Vec<Action>) -> Vec<Action> {
        self.state = State::Init;
        self.deadline = now + self.backoff();
        actions
    }

    /// Handles the deadline passing.
    pub fn on_timeout(&mut self, now: Duration) -> Result<Vec<Action>, DhcpError> {
        match self.state.clone() {
            State::Init | State::Selecting { .. } => self.discover(now),
            State::Requesting { tries, .. } if tries + 1 >= REQUEST_TRIES => {
                self.restart(now, vec![])
            }
            State::Requesting { xid, offer, tries } => {
                self.request_offer(now, xid, offer, tries + 1)
            }
            State::Bound { lease, since } | State::Renewing { lease, since, .. }
                if now < since + lease.t2 =>
            {
                self.extend(now, lease, since, false)
            }
            State::Bound { lease, since }
            | State::Renewing { lease, since, .. }
            | State::Rebinding { lease, since, .. }
                if now < since + lease.lease_time =>
            {
                self.extend(now, lease, since, true)
            }
            State::Bound { lease, .. }
            | State::Renewing { lease, .. }
            | State::Rebinding { lease, .. } => self.restart(now, vec![Action::Deconfigure(lease)]),
        }
    }

    /// Handles one received DHCP payload (UDP data). Messages for other clients or
    /// transactions, and messages unexpected in the current state, are ignored.
    pub fn on_packet(&mut self, now: Duration, bytes: &[u8]) -> Result<Vec<Action>, DhcpError> {
        let msg = decode_untrusted(bytes)?;
        // `Message::chaddr` slices by the wire's hlen and panics past 16: check hlen first.
        if msg.opcode() != Opcode::BootReply || msg.hlen() != 6 || msg.chaddr() != self.mac {
            return Ok(vec![]);
        }
        let kind = msg.opts().msg_type();
        match (self.state.clone(), kind) {
            (State::Selecting { xid }, Some(MessageType::Offer)) if msg.xid() == xid => {
                match lease_from(&msg, None) {
                    Some(offer) => self.request_offer(now, xid, offer, 0),
                    None => Ok(vec![]),
                }
            }
            (State::Requesting { xid, offer, .. }, Some(MessageType::Ack)) if msg.xid() == xid => {
                Ok(self.bind(now, &msg, offer.server, None))
            }
            (
                State::Renewing { xid, lease, .. } | State::Rebinding { xid, lease, .. },
                Some(MessageType::Ack),
            ) if msg.xid() == xid => Ok(self.bind(now, &msg, lease.server, Some(lease))),
            (State::Requesting { xid, .. }, Some(MessageType::Nak)) if msg.xid() == xid => {
                Ok(self.restart_after_nak(now, vec![]))
            }
            (
                State::Renewing { xid, lease, .. } | State::Rebinding { xid, lease, .. },
                Some(MessageType::Nak),
            ) if msg.xid() == xid => {
                Ok(self.restart_after_nak(now, vec![Action::Deconfigure(lease)]))
            }
            _ => Ok(vec![]),
        }
    }

    fn bind(
        &mut self,
        now: Duration,
        ack: &Message,
        server: Ipv4Addr,
        old: Option<Lease>,
    ) -> Vec<Action> {
        let Some(lease) = lease_from(ack, Some(server)) else {
            return vec![];
        };
        let mut actions = Vec::new();
        if let Some(old) = old.filter(|o| o.addr != lease.addr || o.prefix != lease.prefix) {
            actions.push(Action::Deconfigure(old));
        }
        actions.push(Action::Configure(lease.clone()));
        self.backoff_step = 0;
        self.deadline = now + lease.t1;
        self.state = State::Bound { lease, since: now };
        actions
    }
}

thread_local! {
    static DECODING: Cell<bool> = const { Cell::new(false) };
}

/// True while this thread decodes a received datagram. PID 1's panic hook checks it: a panic
/// inside the decoder (dhcproto has debug assertions and slicing that hostile bytes can trip)
/// becomes [`DhcpError::DecoderPanic`] instead of a reboot.
pub fn decoding_untrusted() -> bool {
    DECODING.with(Cell::get)
}

/// Decodes received bytes, turning a panic inside dhcproto into an error.
pub fn decode_untrusted(bytes: &[u8]) -> Result<Message, DhcpError> {
    DECODING.with(|d| d.set(true));
    let result = std::panic::catch_unwind(|| Message::from_bytes(bytes));
    DECODING.with(|d| d.set(false));
    match result {
        Ok(decoded) => Ok(decoded?),
        Err(_) => Err(DhcpError::DecoderPanic),
    }
}

/// A BOOTREQUEST with no options, built by decoding bytes. `Message::new*` and `Default` call
/// `rand::random()`, which blocks in early boot until the kernel's entropy pool is ready
/// (tens of seconds under QEMU TCG without virtio-rng); decoding never does.
pub fn blank_request(xid: u32, ciaddr: Ipv4Addr, mac: [u8; 6]) -> Message {
    let mut bytes = [0u8; 241];
    bytes[..4].copy_from_slice(&[1, 1, 6, 0]); // BOOTREQUEST, Ethernet, hlen 6, hops 0
    bytes[4..8].copy_from_slice(&xid.to_be_bytes());
    bytes[12..16].copy_from_slice(&ciaddr.octets());
    bytes[28..34].copy_from_slice(&mac);
    bytes[236..240].copy_from_slice(&[99, 130, 83, 99]); // magic cookie
    bytes[240] = 255; // end of options
    match Message::from_bytes(&bytes) {
        Ok(msg) => msg,
        // The bytes above are a fixed, valid header; decoding them cannot fail.
        Err(e) => unreachable!("fixed BOOTREQUEST header failed to decode: {e}"),
    }
}

#[cfg(test)]
#[path = "dhcp_tests.rs"]
mod tests;
