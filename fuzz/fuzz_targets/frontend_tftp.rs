//! Bytes in as a TFTP packet: parsing and the read-transfer state machine never panic, and
//! whatever parses emits back to something that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mallee_frontend::pxe::tftp::{Packet, ReadTransfer};
use std::io::Cursor;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::parse(data) {
        assert_eq!(Packet::parse(&p.emit()).as_ref(), Ok(&p));
        if let Packet::Rrq { options, .. } = &p {
            if let Ok((mut t, _)) = ReadTransfer::start(Cursor::new(vec![0u8; 3000]), options) {
                let _ = t.on_packet(data);
                let _ = t.on_timeout();
            }
        }
    }
});
