//! The DHCP server as a state machine: a client's message in (bytes or a parsed
//! [`dhcproto`] message), the reply and where to send it out. No sockets here.
//!
//! DISCOVER → OFFER, REQUEST → ACK or NAK (selecting, init-reboot, renewing, rebinding),
//! RELEASE and DECLINE update the pool silently, INFORM → ACK without a lease. Every reply names
//! the frontend as server identifier, router and next-server, and carries the boot file the
//! client's kind gets (see [`super::boot`]). Addresses come from [`super::pool`].

use super::boot::{classify, BootFiles, ClientKind, IPXE_ENCAPSULATED};
use super::leases::Mac;
use super::pool::{Pool, PoolError};
use dhcproto::v4::{DhcpOption, HType, Message, MessageType, Opcode, OptionCode, UnknownOption};
use dhcproto::{Decodable, Decoder, Encodable};
use std::net::{Ipv4Addr, SocketAddrV4};

/// BOOTP's minimum message size; some PXE ROMs drop shorter replies.
const MIN_REPLY_LEN: usize = 300;

/// iPXE's encapsulated setting "no-pxedhcp" (inside option 175).
const IPXE_NO_PXEDHCP: u8 = 176;

/// RFC 2131 §3: the four bytes after the BOOTP header that mark DHCP options.
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("malformed DHCP message: {0}")]
    Malformed(#[from] dhcproto::error::DecodeError),
    #[error("not a DHCP message ({0} bytes, no magic cookie at offset 236)")]
    NotDhcp(usize),
    #[error("DHCP option {code} runs past the end of the message")]
    TruncatedOption { code: u8 },
    #[error("DHCP message without a message type (option 53)")]
    NoMessageType,
    #[error("DHCP client hardware address is not Ethernet (htype {htype:?}, hlen {hlen})")]
    NotEthernet { htype: HType, hlen: u8 },
    #[error("encoding the DHCP reply: {0}")]
    Encode(#[from] dhcproto::error::EncodeError),
    #[error(transparent)]
    Pool(#[from] PoolError),
}

/// Where a reply goes (UDP port 68 for clients, 67 for relays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255:68 on the served interface: the client has no address yet.
    Broadcast,
    /// The client's own address (it set `ciaddr`).
    Client(Ipv4Addr),
    /// The relay agent that forwarded the request (`giaddr`).
    Relay(Ipv4Addr),
}

impl Destination {
    pub fn socket_addr(self) -> SocketAddrV4 {
        match self {
            Destination::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, 68),
            Destination::Client(ip) => SocketAddrV4::new(ip, 68),
            Destination::Relay(ip) => SocketAddrV4::new(ip, 67),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub message: Message,
    pub to: Destination,
}

impl Reply {
    pub fn kind(&self) -> Option<MessageType> {
        self.message.opts().msg_type()
    }

    pub fn boot_file(&self) -> Option<String> {
        match self.message.opts().get(OptionCode::BootfileName) {
            Some(DhcpOption::BootfileName(f)) => Some(String::from_utf8_lossy(f).into_owned()),
            _ => None,
        }
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, DhcpError> {
        let mut bytes = self.message.to_vec()?;
        if bytes.len() < MIN_REPLY_LEN {
            bytes.resize(MIN_REPLY_LEN, 0);
        }
        Ok(bytes)
    }
}

/// The server: the pool plus what it tells clients.
pub struct DhcpServer {
    pool: Pool,
    boot: BootFiles,
}

impl DhcpServer {
    pub fn new(pool: Pool, boot: BootFiles) -> Self {
        Self { pool, boot }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    fn server_ip(&self) -> Ipv4Addr {
        self.pool.config().server_ip
    }

    /// Parses one datagram and answers it. `Ok(None)`: nothing to send (a reply from another
    /// server, a RELEASE, a REQUEST for another server).
    pub fn handle_bytes(&mut self, bytes: &[u8], now: u64) -> Result<Option<Reply>, DhcpError> {
        let checked = checked_request(bytes)?;
        let msg = Message::decode(&mut Decoder::new(&checked))?;
        self.handle(&msg, now)
    }

    /// Answers one parsed message.
    pub fn handle(&mut self, msg: &Message, now: u64) -> Result<Option<Reply>, DhcpError> {
        if msg.opcode() != Opcode::BootRequest {
            return Ok(None);
        }
        let mtype = msg.opts().msg_type().ok_or(DhcpError::NoMessageType)?;
        let mac = client_mac(msg)?;
        if mallee_proto::is_instance_mac(mac) {
            // Instances are the VMMs' (MANAGED modes) or the site DHCP server's (SYSTEM).
            return Ok(None);
        }
        let requested = match msg.opts().get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
            _ => None,
        };
        let server_id = match msg.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        };
        match mtype {
            MessageType::Discover => Ok(self
                .pool
                .offer(mac, requested, now)?
                .map(|ip| self.reply(msg, MessageType::Offer, ip))),
            MessageType::Request => self.request(msg, mac, requested, server_id, now),
            MessageType::Release => {
                if server_id.is_none_or(|s| s == self.server_ip()) {
                    self.pool.release(mac, msg.ciaddr())?;
                }
                Ok(None)
            }
            MessageType::Decline => {
                if let (Some(ip), true) = (requested, server_id == Some(self.server_ip())) {
                    self.pool.decline(mac, ip, now)?;
                }
                Ok(None)
            }
            MessageType::Inform => Ok(Some(self.reply(
                msg,
                MessageType::Ack,
                Ipv4Addr::UNSPECIFIED,
            ))),
            _ => Ok(None),
        }
    }

    fn request(
        &mut self,
        msg: &Message,
        mac: Mac,
        requested: Option<Ipv4Addr>,
        server_id: Option<Ipv4Addr>,
        now: u64,
    ) -> Result<Option<Reply>, DhcpError> {
        if let Some(chosen) = server_id {
            if chosen != self.server_ip() {
                // SELECTING another server's offer: ours is free again.
                self.pool.forget_offers(mac)?;
                return Ok(None);
            }
        }
        // SELECTING and INIT-REBOOT name the address in option 50; RENEWING and REBINDING in
        // ciaddr.
        let Some(ip) = requested.or(Some(msg.ciaddr()).filter(|ip| !ip.is_unspecified())) else {
            return Ok(Some(self.nak(msg)));
        };
        if self.pool.bind(mac, ip, now)? {
            Ok(Some(self.reply(msg, MessageType::Ack, ip)))
        } else {
            Ok(Some(self.nak(msg)))
        }
    }

    /// OFFER or ACK: `yiaddr` (unspecified for INFORM) with the segment's options and the
    /// client's boot file.
    fn reply(&self, req: &Message, mtype: MessageType, yiaddr: Ipv4Addr) -> Reply {
        let cfg = self.pool.config();
        let server = cfg.server_ip;
        let mut m = base_reply(req);
        m.set_yiaddr(yiaddr).set_siaddr(server);
        let opts = m.opts_mut();
        opts.insert(DhcpOption::MessageType(mtype));
        opts.insert(DhcpOption::ServerIdentifier(server));
        opts.insert(DhcpOption::SubnetMask(cfg.netmask()));
        opts.insert(DhcpOption::Router(vec![server]));
        opts.insert(DhcpOption::BroadcastAddr(cfg.broadcast()));
        if !yiaddr.is_unspecified() {
            let lease = cfg.lease_secs;
            opts.insert(DhcpOption::AddressLeaseTime(lease));
            opts.insert(DhcpOption::Renewal(lease / 2));
            opts.insert(DhcpOption::Rebinding(lease / 8 * 7));
        }
        let kind = classify(req);
        if let Some(file) = self.boot.for_client(kind) {
            opts.insert(DhcpOption::BootfileName(file.as_bytes().to_vec()));
            opts.insert(DhcpOption::TFTPServerName(server.to_string().into_bytes()));
            // No option 60 "PXEClient" in the reply: with it (and no option 43) UEFI PXE clients
            // take the offer as needing boot-server discovery on port 4011 (seen with OVMF);
            // without it the boot file in this offer is used directly.
            if kind == ClientKind::Ipxe {
                // iPXE setting 176 (no-pxedhcp): we are the boot server, so iPXE need not wait
                // seconds for ProxyDHCP offers before requesting.
                opts.insert(DhcpOption::Unknown(UnknownOption::new(
                    OptionCode::Unknown(IPXE_ENCAPSULATED),
                    vec![IPXE_NO_PXEDHCP, 1, 1],
                )));
            }
            if file.len() < 128 {
                m.set_fname_str(file);
            }
        }
        let to = destination(req, mtype);
        Reply { message: m, to }
    }

    fn nak(&self, req: &Message) -> Reply {
        let mut m = base_reply(req);
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Nak));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(self.server_ip()));
        Reply {
            to: destination(req, MessageType::Nak),
            message: m,
        }
    }
}

/// The request with only the options this server reads, each of a length the decoder handles;
/// anything else is dropped before `dhcproto` sees it (0.13 asserts, or slices past `chaddr`,
/// on some malformed lengths). Option 93 keeps its first architecture.
fn checked_request(bytes: &[u8]) -> Result<Vec<u8>, DhcpError> {
    if bytes.get(236..240) != Some(&MAGIC_COOKIE[..]) {
        return Err(DhcpError::NotDhcp(bytes.len()));
    }
    if (bytes[1], bytes[2]) != (1, 6) {
        return Err(DhcpError::NotEthernet {
            htype: bytes[1].into(),
            hlen: bytes[2],
        });
    }
    let mut out = bytes[..240].to_vec();
    let mut i = 240;
    while let Some(&code) = bytes.get(i) {
        match code {
            0 => i += 1,
            255 => break,
            _ => {
                let len = usize::from(
                    *bytes
                        .get(i + 1)
                        .ok_or(DhcpError::TruncatedOption { code })?,
                );
                let value = bytes
                    .get(i + 2..i + 2 + len)
                    .ok_or(DhcpError::TruncatedOption { code })?;
                let kept = match (code, len) {
                    (53, 1) | (50 | 51 | 54, 4) | (57, 2) | (94, 3) => Some(value),
                    (93, n) if n >= 2 => Some(&value[..2]),
                    (55 | 60 | 61 | 77 | 97 | 175, _) => Some(value),
                    _ => None,
                };
                if let Some(v) = kept {
                    out.extend_from_slice(&[code, v.len() as u8]);
                    out.extend_from_slice(v);
                }
                i += 2 + len;
            }
        }
    }
    out.push(255);
    Ok(out)
}

fn client_mac(msg: &Message) -> Result<Mac, DhcpError> {
    let chaddr = msg.chaddr();
    match (msg.htype(), <[u8; 6]>::try_from(chaddr)) {
        (HType::Eth, Ok(mac)) => Ok(Mac(mac)),
        (htype, _) => Err(DhcpError::NotEthernet {
            htype,
            hlen: msg.hlen(),
        }),
    }
}

/// A reply skeleton: same transaction, hardware address, flags and relay as the request.
fn base_reply(req: &Message) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootReply)
        .set_htype(req.htype())
        .set_xid(req.xid())
        .set_flags(req.flags())
        .set_giaddr(req.giaddr())
        .set_chaddr(req.chaddr());
    m.opts_mut().clear();
    m
}

/// RFC 2131 §4.1: relay first, then a client that has an address, else broadcast (we do not
/// unicast to a client without an address: that needs an ARP entry injected first).
fn destination(req: &Message, mtype: MessageType) -> Destination {
    if !req.giaddr().is_unspecified() {
        Destination::Relay(req.giaddr())
    } else if mtype != MessageType::Nak && !req.ciaddr().is_unspecified() {
        Destination::Client(req.ciaddr())
    } else {
        Destination::Broadcast
    }
}

#[cfg(test)]
#[path = "dhcp_tests.rs"]
mod tests;
