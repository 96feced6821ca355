//! One exported device and the frame-in → frame-out function that serves it: addressing,
//! access control, Query Config semantics and dispatch to the ATA executor. No sockets here,
//! so every rule is testable with byte slices.

use std::sync::Mutex;

use super::acl::AccessControl;
use super::ata::{self, AtaLimits};
use super::backend::Backend;
use super::stats::ExportStats;
use crate::wire::{
    AoeError, AtaRepr, Body, ConfigCommand, ConfigRepr, EthernetRepr, HeaderRepr, Mac, Message,
    WireError, AOE_VERSION, ATA_HEADER_LEN, ETHERNET_HEADER_LEN, ETHERTYPE_AOE, FRAME_HEADER_LEN,
};

/// Broadcast shelf and slot addresses.
pub const SHELF_ANY: u16 = 0xffff;
pub const SLOT_ANY: u8 = 0xff;

/// What the worker should do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Send the first `n` bytes of the output buffer.
    Reply(usize),
    /// Not for us (another address, a response, a test that did not match).
    Ignore,
    /// From a MAC outside the mask list.
    DropAcl,
    /// Unparseable and not answerable.
    DropMalformed,
    /// Would block: hand the frame to a thread that may (only in inline mode).
    Defer,
}

/// An exported device: its address, identity, backend and mutable protocol state.
#[derive(Debug)]
pub struct Export {
    pub shelf: u16,
    pub slot: u8,
    pub mac: Mac,
    pub max_sectors: u8,
    pub buffer_count: u16,
    pub firmware_version: u16,
    pub identify: [u8; 512],
    pub backend: Backend,
    pub acl: Mutex<AccessControl>,
    pub config: Mutex<Vec<u8>>,
    pub stats: ExportStats,
}

/// Query Config semantics (AoEr11 3.2): whether to answer, and changes to the config string.
pub fn query_config(current: &mut Vec<u8>, req: &ConfigRepr) -> Result<bool, AoeError> {
    match req.command {
        ConfigCommand::Read => Ok(true),
        ConfigCommand::Test => Ok(req.config == current.as_slice()),
        ConfigCommand::TestPrefix => Ok(current.starts_with(req.config)),
        ConfigCommand::Set if !current.is_empty() && current.as_slice() != req.config => {
            Err(AoeError::ConfigStringPresent)
        }
        ConfigCommand::Set | ConfigCommand::ForceSet => {
            *current = req.config.to_vec();
            Ok(true)
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Export {
    fn addressed(&self, h: &HeaderRepr) -> bool {
        (h.shelf == self.shelf || h.shelf == SHELF_ANY)
            && (h.slot == self.slot || h.slot == SLOT_ANY)
    }

    /// Serves one received frame, writing any response into `out` (at least MTU + 14 bytes).
    /// With `inline` set it never blocks on storage and returns `Defer` instead.
    pub fn handle(&self, frame: &[u8], out: &mut [u8], inline: bool) -> Outcome {
        let msg = match Message::parse(frame) {
            Ok(msg) => msg,
            Err(e) => return self.handle_unparsed(frame, e, out),
        };
        let h = msg.header;
        if h.response || !(msg.dst == self.mac || msg.dst.is_broadcast()) || !self.addressed(&h) {
            return Outcome::Ignore;
        }
        if !lock(&self.acl).allows(msg.src) {
            self.stats.drop_acl();
            return Outcome::DropAcl;
        }
        let answer = match &msg.body {
            Body::Ata { ata, data } => {
                if h.shelf == SHELF_ANY || h.slot == SLOT_ANY {
                    return Outcome::Ignore;
                }
                if lock(&self.acl).reserved_against(msg.src) {
                    Err(AoeError::TargetReserved)
                } else {
                    return self.handle_ata(&msg, ata, data, out, inline);
                }
            }
            Body::Config(req) => {
                let mut current = lock(&self.config);
                match query_config(&mut current, req) {
                    Ok(false) => return Outcome::Ignore,
                    Ok(true) => {
                        let config = current.clone();
                        drop(current);
                        let body = Body::Config(ConfigRepr {
                            buffer_count: self.buffer_count,
                            firmware_version: self.firmware_version,
                            sector_count: self.max_sectors,
                            aoe_version: AOE_VERSION,
                            command: req.command,
                            config: &config,
                        });
                        Ok(self.emit(&self.reply(&msg, None, body), out))
                    }
                    Err(e) => Err(e),
                }
            }
            Body::MacMask(req) => {
                let result = lock(&self.acl).mask_command(req, msg.src);
                result.map(|r| self.emit(&self.reply(&msg, None, Body::MacMask(r)), out))
            }
            Body::Reserve(req) => {
                let result = lock(&self.acl).reserve_command(req, msg.src);
                result.map(|r| self.emit(&self.reply(&msg, None, Body::Reserve(r)), out))
            }
            Body::Raw(_) => Err(AoeError::UnrecognizedCommand),
        };
        answer.unwrap_or_else(|e| {
            self.stats.error();
            self.emit(&self.reply(&msg, Some(e), Body::Raw(&[])), out)
        })
    }

    fn reply<'b>(&self, req: &Message, error: Option<AoeError>, body: Body<'b>) -> Message<'b> {
        Message {
            dst: req.src,
            src: self.mac,
            header: req.header.reply(self.shelf, self.slot, error),
            body,
        }
    }

    fn emit(&self, msg: &Message, out: &mut [u8]) -> Outcome {
        match msg.emit(out) {
            Ok(n) => Outcome::Reply(n),
            Err(_) => Outcome::DropMalformed,
        }
    }

    fn handle_ata(
        &self,
        msg: &Message,
        req: &AtaRepr,
        data: &[u8],
        out: &mut [u8],
        inline: bool,
    ) -> Outcome {
        let limits = AtaLimits {
            max_sectors: self.max_sectors,
            identify: &self.identify,
            inline,
        };
        let (head, body) = out.split_at_mut(FRAME_HEADER_LEN + ATA_HEADER_LEN);
        let Some(done) = ata::execute(req, data, &self.backend, &limits, body) else {
            return Outcome::Defer;
        };
        self.stats.read(done.read);
        self.stats.written(done.written);
        if done.regs.cmd_status & crate::ata::STATUS_ERR != 0 {
            self.stats.error();
        }
        let header = msg.header.reply(self.shelf, self.slot, None);
        if self.emit_head(head, msg.src, &header).is_err()
            || done.regs.emit(&mut head[FRAME_HEADER_LEN..]).is_err()
        {
            return Outcome::DropMalformed;
        }
        Outcome::Reply(FRAME_HEADER_LEN + ATA_HEADER_LEN + done.data_len)
    }

    fn emit_head(&self, out: &mut [u8], dst: Mac, header: &HeaderRepr) -> Result<(), WireError> {
        let eth = EthernetRepr {
            dst,
            src: self.mac,
            ethertype: ETHERTYPE_AOE,
        };
        eth.emit(out)?;
        header.emit(&mut out[ETHERNET_HEADER_LEN..])?;
        Ok(())
    }

    /// A frame that did not parse: answer with an error if its header is a request to us.
    fn handle_unparsed(&self, frame: &[u8], err: WireError, out: &mut [u8]) -> Outcome {
        let parsed = EthernetRepr::parse(frame)
            .and_then(|(eth, rest)| Ok((eth, HeaderRepr::parse(rest)?.0)));
        let Ok((eth, h)) = parsed else {
            self.stats.drop_malformed();
            return Outcome::DropMalformed;
        };
        let for_us = eth.ethertype == ETHERTYPE_AOE
            && !h.response
            && (eth.dst == self.mac || eth.dst.is_broadcast())
            && self.addressed(&h);
        if !for_us {
            return Outcome::Ignore;
        }
        if !lock(&self.acl).allows(eth.src) {
            self.stats.drop_acl();
            return Outcome::DropAcl;
        }
        let code = match err {
            WireError::UnsupportedVersion(_) => AoeError::UnsupportedVersion,
            _ => AoeError::BadArgument,
        };
        self.stats.error();
        let header = h.reply(self.shelf, self.slot, Some(code));
        match self.emit_head(out, eth.src, &header) {
            Ok(()) => Outcome::Reply(FRAME_HEADER_LEN),
            Err(_) => Outcome::DropMalformed,
        }
    }
}

#[cfg(test)]
#[path = "export_tests.rs"]
mod tests;
