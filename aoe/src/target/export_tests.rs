//! Frame-level tests of `Export::handle`: requests built with the wire module, replies parsed
//! back, no sockets.

use super::*;
use crate::ata::{Identity, CMD_READ_EXT, STATUS_DRDY};
use crate::wire::*;
use std::sync::Mutex;

const TARGET: Mac = Mac([2, 0, 0, 0, 0, 1]);
const HOST: Mac = Mac([2, 0, 0, 0, 0, 2]);
const OTHER: Mac = Mac([2, 0, 0, 0, 0, 3]);

fn export(name: &str, acl: AccessControl) -> Export {
    let dir = std::env::temp_dir().join(format!("mallee-aoe-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .set_len(64 * 512)
        .unwrap();
    let backend = Backend::open(&path).unwrap();
    let identity = Identity {
        sectors: 64,
        serial: "s".into(),
        firmware: "f".into(),
        model: "m".into(),
        max_sectors: 2,
    };
    Export {
        shelf: 5,
        slot: 1,
        mac: TARGET,
        max_sectors: 2,
        buffer_count: 64,
        firmware_version: 1,
        identify: identity.page(),
        backend,
        acl: Mutex::new(acl),
        config: Mutex::new(Vec::new()),
        stats: ExportStats::default(),
    }
}

fn frame(src: Mac, shelf: u16, slot: u8, command: Command, body: Body) -> Vec<u8> {
    let msg = Message {
        dst: Mac::BROADCAST,
        src,
        header: HeaderRepr::request(shelf, slot, command, 0x8000_0001),
        body,
    };
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.emit(&mut buf).unwrap();
    buf
}

fn config(src: Mac, command: ConfigCommand, s: &[u8]) -> Vec<u8> {
    frame(
        src,
        SHELF_ANY,
        SLOT_ANY,
        Command::QueryConfig,
        Body::Config(ConfigRepr::request(command, s)),
    )
}

fn run(e: &Export, req: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; 1514];
    match e.handle(req, &mut out, false) {
        Outcome::Reply(n) => Some(out[..n].to_vec()),
        _ => None,
    }
}

#[test]
fn broadcast_query_config_is_answered_with_our_address_and_limits() {
    let e = export("qc", AccessControl::default());
    let reply = run(&e, &config(HOST, ConfigCommand::Read, b"")).unwrap();
    let msg = Message::parse(&reply).unwrap();
    assert_eq!(
        (msg.dst, msg.src, msg.header.shelf, msg.header.slot),
        (HOST, TARGET, 5, 1)
    );
    assert!(msg.header.response);
    let Body::Config(c) = msg.body else { panic!() };
    assert_eq!((c.buffer_count, c.sector_count, c.aoe_version), (64, 2, 1));
}

#[test]
fn config_set_test_prefix_and_force_set_follow_the_spec() {
    let e = export("qc-set", AccessControl::default());
    assert!(run(&e, &config(HOST, ConfigCommand::Test, b"vol")).is_none());
    assert!(run(&e, &config(HOST, ConfigCommand::Set, b"vol-1")).is_some());
    let again = run(&e, &config(HOST, ConfigCommand::Set, b"vol-2")).unwrap();
    assert_eq!(
        Message::parse(&again).unwrap().header.error,
        Some(AoeError::ConfigStringPresent)
    );
    assert!(run(&e, &config(HOST, ConfigCommand::TestPrefix, b"vol")).is_some());
    assert!(run(&e, &config(HOST, ConfigCommand::Test, b"vol")).is_none());
    assert!(run(&e, &config(HOST, ConfigCommand::ForceSet, b"x")).is_some());
    assert!(run(&e, &config(HOST, ConfigCommand::Test, b"x")).is_some());
}

#[test]
fn frames_from_a_mac_outside_the_mask_are_dropped_and_counted() {
    let e = export(
        "acl",
        AccessControl {
            mask: vec![HOST],
            ..Default::default()
        },
    );
    assert!(run(&e, &config(OTHER, ConfigCommand::Read, b"")).is_none());
    assert!(run(&e, &config(HOST, ConfigCommand::Read, b"")).is_some());
    assert_eq!(e.stats.snapshot().dropped_acl, 1);
}

#[test]
fn ata_from_outside_a_reservation_gets_target_reserved() {
    let e = export(
        "rsv",
        AccessControl {
            reserve: vec![HOST],
            ..Default::default()
        },
    );
    let ata = AtaRepr {
        aflags: AFLAG_EXTENDED,
        sector_count: 1,
        cmd_status: CMD_READ_EXT,
        ..Default::default()
    };
    let req = frame(OTHER, 5, 1, Command::Ata, Body::Ata { ata, data: &[] });
    let reply = run(&e, &req).unwrap();
    assert_eq!(
        Message::parse(&reply).unwrap().header.error,
        Some(AoeError::TargetReserved)
    );
    let req = frame(HOST, 5, 1, Command::Ata, Body::Ata { ata, data: &[] });
    let reply = run(&e, &req).unwrap();
    let Body::Ata { ata, data } = Message::parse(&reply).unwrap().body else {
        panic!()
    };
    assert_eq!((ata.cmd_status, data.len()), (STATUS_DRDY, 512));
}

#[test]
fn ata_to_broadcast_or_other_slot_is_ignored() {
    let e = export("bcast", AccessControl::default());
    let ata = AtaRepr {
        aflags: AFLAG_EXTENDED,
        sector_count: 1,
        cmd_status: CMD_READ_EXT,
        ..Default::default()
    };
    assert!(run(
        &e,
        &frame(
            HOST,
            SHELF_ANY,
            SLOT_ANY,
            Command::Ata,
            Body::Ata { ata, data: &[] }
        )
    )
    .is_none());
    assert!(run(
        &e,
        &frame(HOST, 5, 2, Command::Ata, Body::Ata { ata, data: &[] })
    )
    .is_none());
}

#[test]
fn unknown_command_truncated_body_and_bad_version_get_error_replies() {
    let e = export("errs", AccessControl::default());
    let reply = run(&e, &frame(HOST, 5, 1, Command::Other(9), Body::Raw(&[]))).unwrap();
    assert_eq!(
        Message::parse(&reply).unwrap().header.error,
        Some(AoeError::UnrecognizedCommand)
    );
    let mut truncated = frame(HOST, 5, 1, Command::Ata, Body::Raw(&[0, 0, 1]));
    let reply = run(&e, &truncated).unwrap();
    assert_eq!(
        HeaderRepr::parse(&reply[14..]).unwrap().0.error,
        Some(AoeError::BadArgument)
    );
    truncated[14] = 0x20;
    let reply = run(&e, &truncated).unwrap();
    assert_eq!(
        HeaderRepr::parse(&reply[14..]).unwrap().0.error,
        Some(AoeError::UnsupportedVersion)
    );
    assert!(run(&e, &[0u8; 10]).is_none());
    assert_eq!(e.stats.snapshot().dropped_malformed, 1);
}

#[test]
fn reserve_and_mask_edits_are_refused_by_default() {
    let e = export("remote", AccessControl::default());
    let req = frame(
        HOST,
        5,
        1,
        Command::ReserveRelease,
        Body::Reserve(ReserveRepr {
            command: ReserveCommand::Set,
            macs: vec![HOST],
        }),
    );
    let reply = run(&e, &req).unwrap();
    assert_eq!(
        Message::parse(&reply).unwrap().header.error,
        Some(AoeError::BadArgument)
    );
    let edit = MacMaskRepr {
        command: MacMaskCommand::Edit,
        error: 0,
        directives: vec![Directive {
            command: DirectiveCommand::Add,
            mac: HOST,
        }],
    };
    let reply = run(
        &e,
        &frame(HOST, 5, 1, Command::MacMaskList, Body::MacMask(edit)),
    )
    .unwrap();
    let Body::MacMask(m) = Message::parse(&reply).unwrap().body else {
        panic!()
    };
    assert_eq!((m.error, m.directives.len()), (MASK_ERROR_UNSPEC, 0));
}
