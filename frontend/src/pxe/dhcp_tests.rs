//! Byte-level tests of the DHCP state machine: each request is encoded as a client would send
//! it, the reply is parsed back from the bytes the server would put on the wire.

use super::*;
use crate::pxe::boot::{classify, ClientKind};
use crate::pxe::leases::SqliteLeaseStore;
use crate::pxe::pool::tests::config;
use dhcproto::v4::{Architecture, Flags, UnknownOption};

const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);

fn server() -> DhcpServer {
    let pool = Pool::new(config(), Box::new(SqliteLeaseStore::in_memory().unwrap())).unwrap();
    DhcpServer::new(
        pool,
        BootFiles {
            ipxe_script_url: "http://10.9.0.1:8069/boot.ipxe".into(),
            bios: "undionly.kpxe".into(),
            uefi: "snponly.efi".into(),
        },
    )
}

fn request(mtype: MessageType, opts: Vec<DhcpOption>) -> Message {
    let mut m = Message::default();
    m.set_xid(0xdead_beef)
        .set_chaddr(&MAC)
        .set_flags(Flags::default().set_broadcast());
    m.opts_mut().insert(DhcpOption::MessageType(mtype));
    for o in opts {
        m.opts_mut().insert(o);
    }
    m
}

fn ipxe_opts() -> Vec<DhcpOption> {
    vec![
        DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
        DhcpOption::ClientSystemArchitecture(Architecture::Intelx86PC),
        DhcpOption::UserClass(b"iPXE".to_vec()),
        DhcpOption::Unknown(UnknownOption::new(
            OptionCode::Unknown(175),
            vec![0xb1, 0x05, 0x01, 0x80, 0x86, 0x10, 0x0e, 0x13, 0x01, 0x01],
        )),
    ]
}

/// Sends `msg` as bytes, returns the parsed reply and where it goes.
fn exchange(s: &mut DhcpServer, msg: &Message, now: u64) -> Option<(Message, Destination)> {
    let bytes = msg.to_vec().unwrap();
    let reply = s.handle_bytes(&bytes, now).unwrap()?;
    let (reply, to) = (reply.to_bytes().unwrap(), reply.to);
    assert!(reply.len() >= 300, "reply shorter than BOOTP minimum");
    Some((Message::decode(&mut Decoder::new(&reply)).unwrap(), to))
}

fn opt(m: &Message, code: OptionCode) -> Option<&DhcpOption> {
    m.opts().get(code)
}

fn boot_file(m: &Message) -> Option<String> {
    match opt(m, OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(f)) => Some(String::from_utf8(f.clone()).unwrap()),
        _ => None,
    }
}

#[test]
fn ipxe_discover_gets_offer_with_http_script() {
    let mut s = server();
    let (offer, to) = exchange(&mut s, &request(MessageType::Discover, ipxe_opts()), 0).unwrap();
    assert_eq!(to, Destination::Broadcast);
    assert_eq!(offer.opcode(), Opcode::BootReply);
    assert_eq!(offer.xid(), 0xdead_beef);
    assert_eq!(offer.chaddr(), &MAC);
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 9, 0, 100));
    assert_eq!(offer.siaddr(), SERVER);
    assert_eq!(
        opt(&offer, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        opt(&offer, OptionCode::Router),
        Some(&DhcpOption::Router(vec![SERVER]))
    );
    assert_eq!(
        opt(&offer, OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(
        boot_file(&offer).as_deref(),
        Some("http://10.9.0.1:8069/boot.ipxe")
    );
    assert_eq!(
        offer.fname_str().unwrap().unwrap().trim_end_matches('\0'),
        "http://10.9.0.1:8069/boot.ipxe"
    );
    // no-pxedhcp: iPXE requests at once instead of waiting for ProxyDHCP offers.
    assert_eq!(
        opt(&offer, OptionCode::Unknown(175)),
        Some(&DhcpOption::Unknown(UnknownOption::new(
            OptionCode::Unknown(175),
            vec![176, 1, 1]
        )))
    );
}

#[test]
fn plain_bios_pxe_is_chainloaded_to_undionly_over_tftp() {
    let mut s = server();
    let pxe = vec![
        DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
        DhcpOption::ClientSystemArchitecture(Architecture::Intelx86PC),
    ];
    let (offer, _) = exchange(&mut s, &request(MessageType::Discover, pxe), 0).unwrap();
    assert_eq!(boot_file(&offer).as_deref(), Some("undionly.kpxe"));
    assert_eq!(opt(&offer, OptionCode::Unknown(175)), None);
    assert_eq!(offer.siaddr(), SERVER);
    // No PXEClient class: that would send UEFI clients to boot-server discovery (port 4011).
    assert_eq!(opt(&offer, OptionCode::ClassIdentifier), None);
}

#[test]
fn plain_uefi_pxe_gets_efi_ipxe() {
    let mut s = server();
    for arch in [Architecture::BC, Architecture::X86_64] {
        let pxe = vec![
            DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007:UNDI:003016".to_vec()),
            DhcpOption::ClientSystemArchitecture(arch),
        ];
        let (offer, _) = exchange(&mut s, &request(MessageType::Discover, pxe), 0).unwrap();
        assert_eq!(boot_file(&offer).as_deref(), Some("snponly.efi"));
    }
}

#[test]
fn plain_dhcp_client_gets_no_boot_file() {
    let mut s = server();
    let (offer, _) = exchange(&mut s, &request(MessageType::Discover, vec![]), 0).unwrap();
    assert_eq!(boot_file(&offer), None);
    assert!(offer.fname().is_none());
}

#[test]
fn full_exchange_discover_request_ack_then_renew() {
    let mut s = server();
    let (offer, _) = exchange(&mut s, &request(MessageType::Discover, ipxe_opts()), 0).unwrap();
    let ip = offer.yiaddr();
    let mut req_opts = ipxe_opts();
    req_opts.push(DhcpOption::RequestedIpAddress(ip));
    req_opts.push(DhcpOption::ServerIdentifier(SERVER));
    let (ack, to) = exchange(&mut s, &request(MessageType::Request, req_opts), 1).unwrap();
    assert_eq!(to, Destination::Broadcast);
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), ip);
    assert_eq!(
        opt(&ack, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(3600))
    );
    assert_eq!(
        s.pool().lease(ip).map(|l| l.expires_at),
        Some(1 + 3600),
        "lease recorded as bound"
    );

    // RENEWING: unicast, address in ciaddr, no server identifier.
    let mut renew = request(MessageType::Request, vec![]);
    renew.set_ciaddr(ip).set_flags(Flags::default());
    let (ack, to) = exchange(&mut s, &renew, 1000).unwrap();
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(to, Destination::Client(ip));
    assert_eq!(s.pool().lease(ip).unwrap().expires_at, 1000 + 3600);
}

#[test]
fn request_for_foreign_address_is_naked_by_broadcast() {
    let mut s = server();
    let req = request(
        MessageType::Request,
        vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(
            192, 168, 1, 7,
        ))],
    );
    let (nak, to) = exchange(&mut s, &req, 0).unwrap();
    assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(nak.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(to, Destination::Broadcast);
}

#[test]
fn request_selecting_another_server_frees_our_offer_silently() {
    let mut s = server();
    let (offer, _) = exchange(&mut s, &request(MessageType::Discover, vec![]), 0).unwrap();
    let req = request(
        MessageType::Request,
        vec![
            DhcpOption::RequestedIpAddress(offer.yiaddr()),
            DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 9, 0, 2)),
        ],
    );
    assert!(exchange(&mut s, &req, 1).is_none());
    assert!(s.pool().lease(offer.yiaddr()).is_none());
}

#[test]
fn release_and_decline_update_the_pool_without_reply() {
    let mut s = server();
    let (offer, _) = exchange(&mut s, &request(MessageType::Discover, vec![]), 0).unwrap();
    let ip = offer.yiaddr();
    let req = request(
        MessageType::Request,
        vec![
            DhcpOption::RequestedIpAddress(ip),
            DhcpOption::ServerIdentifier(SERVER),
        ],
    );
    exchange(&mut s, &req, 0).unwrap();
    let mut release = request(
        MessageType::Release,
        vec![DhcpOption::ServerIdentifier(SERVER)],
    );
    release.set_ciaddr(ip);
    assert!(exchange(&mut s, &release, 5).is_none());
    assert!(s.pool().lease(ip).is_none());

    let decline = request(
        MessageType::Decline,
        vec![
            DhcpOption::RequestedIpAddress(ip),
            DhcpOption::ServerIdentifier(SERVER),
        ],
    );
    assert!(exchange(&mut s, &decline, 6).is_none());
    let (offer, _) = exchange(&mut s, &request(MessageType::Discover, vec![]), 7).unwrap();
    assert_ne!(offer.yiaddr(), ip, "declined address offered again");
}

#[test]
fn inform_gets_ack_without_lease_unicast() {
    let mut s = server();
    let mut inform = request(MessageType::Inform, ipxe_opts());
    inform.set_ciaddr(Ipv4Addr::new(10, 9, 0, 77));
    let (ack, to) = exchange(&mut s, &inform, 0).unwrap();
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(opt(&ack, OptionCode::AddressLeaseTime), None);
    assert_eq!(to, Destination::Client(Ipv4Addr::new(10, 9, 0, 77)));
    assert!(boot_file(&ack).is_some());
}

#[test]
fn relayed_request_goes_back_to_the_relay() {
    let mut s = server();
    let mut d = request(MessageType::Discover, vec![]);
    d.set_giaddr(Ipv4Addr::new(10, 9, 0, 254));
    let (offer, to) = exchange(&mut s, &d, 0).unwrap();
    assert_eq!(to, Destination::Relay(Ipv4Addr::new(10, 9, 0, 254)));
    assert_eq!(offer.giaddr(), Ipv4Addr::new(10, 9, 0, 254));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let mut s = server();
    for bytes in [&[][..], &[1, 2, 3], &[0xff; 100], &[0u8; 240]] {
        assert!(s.handle_bytes(bytes, 0).is_err(), "{bytes:?}");
    }
    let mut no_type = request(MessageType::Discover, vec![]);
    no_type.opts_mut().clear();
    assert!(matches!(
        s.handle_bytes(&no_type.to_vec().unwrap(), 0).map(|_| ()),
        Err(DhcpError::NoMessageType)
    ));
}

#[test]
fn server_replies_are_ignored() {
    let mut s = server();
    let mut m = request(MessageType::Offer, vec![]);
    m.set_opcode(Opcode::BootReply);
    assert!(exchange(&mut s, &m, 0).is_none());
}

/// A DISCOVER captured from QEMU's iPXE ROM (virtio-net, BIOS) on the `pxe_boot` test's tap.
const CAPTURED_IPXE_DISCOVER: &[u8] = include_bytes!("testdata/ipxe-bios-discover.bin");

/// `bytes` with the options whose codes are in `drop` removed, walking the wire format.
fn without_options(bytes: &[u8], drop: &[u8]) -> Vec<u8> {
    let mut out = bytes[..240].to_vec();
    let mut i = 240;
    while i < bytes.len() {
        match bytes[i] {
            0 => i += 1,
            255 => {
                out.push(255);
                break;
            }
            code => {
                let end = i + 2 + usize::from(bytes[i + 1]);
                if !drop.contains(&code) {
                    out.extend_from_slice(&bytes[i..end]);
                }
                i = end;
            }
        }
    }
    out
}

#[test]
fn captured_ipxe_discover_round_trips_and_gets_the_http_script() {
    let msg = Message::decode(&mut Decoder::new(CAPTURED_IPXE_DISCOVER)).unwrap();
    let again = Message::decode(&mut Decoder::new(&msg.to_vec().unwrap())).unwrap();
    assert_eq!(again, msg, "parse → emit → parse");
    assert_eq!(classify(&msg), ClientKind::Ipxe);

    let mut s = server();
    let reply = s.handle_bytes(CAPTURED_IPXE_DISCOVER, 0).unwrap().unwrap();
    assert_eq!(reply.kind(), Some(MessageType::Offer));
    assert_eq!(
        reply.boot_file().as_deref(),
        Some("http://10.9.0.1:8069/boot.ipxe")
    );
    assert_eq!(reply.message.chaddr(), &[0x52, 0x54, 0, 0x21, 0x30, 0x01]);
}

#[test]
fn captured_discover_without_ipxe_options_is_chainloaded() {
    // The same ROM minus iPXE's own options (175, user class 77) is what a plain PXE ROM sends.
    let plain = without_options(CAPTURED_IPXE_DISCOVER, &[175, 77]);
    let msg = Message::decode(&mut Decoder::new(&plain)).unwrap();
    assert_eq!(classify(&msg), ClientKind::PxeBios);
    let mut s = server();
    let offer = s.handle_bytes(&plain, 0).unwrap().unwrap();
    assert_eq!(offer.boot_file().as_deref(), Some("undionly.kpxe"));

    // Architecture 7 (EFI BC, as OVMF sends) gets the EFI build instead.
    let mut uefi = without_options(&plain, &[93]);
    uefi.pop();
    uefi.extend_from_slice(&[93, 2, 0, 7, 255]);
    let offer = s.handle_bytes(&uefi, 0).unwrap().unwrap();
    assert_eq!(offer.boot_file().as_deref(), Some("snponly.efi"));
}

#[test]
fn mutated_and_truncated_captures_never_panic() {
    let mut s = server();
    let mut x: u32 = 0x2545_f491;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    for len in 0..CAPTURED_IPXE_DISCOVER.len() {
        let _ = s.handle_bytes(&CAPTURED_IPXE_DISCOVER[..len], 0);
    }
    for _ in 0..5_000 {
        let mut bytes = CAPTURED_IPXE_DISCOVER.to_vec();
        for _ in 0..1 + next() % 4 {
            let i = next() as usize % bytes.len();
            bytes[i] = next() as u8;
        }
        if let Ok(Some(reply)) = s.handle_bytes(&bytes, 0) {
            reply.to_bytes().unwrap();
        }
    }
}

/// Instances are never this server's clients: their VMM answers them (MANAGED modes) or the
/// site's DHCP server does (SYSTEM), so a DISCOVER from an instance MAC gets no OFFER and takes
/// no address from the nodes' pool.
#[test]
fn instance_macs_get_no_offer() {
    let mut s = server();
    let mut discover = request(MessageType::Discover, vec![]);
    discover.set_chaddr(&mallee_proto::instance_mac(7).0);
    assert!(s.handle(&discover, 1000).unwrap().is_none());
    let node = request(MessageType::Discover, vec![]);
    assert!(s.handle(&node, 1000).unwrap().is_some());
}
