//! ATA commands executed against an export's backend: IDENTIFY, READ/WRITE SECTORS (EXT),
//! FLUSH CACHE (EXT), CHECK POWER MODE. Anything else is aborted (ERR + ABRT), as is a request
//! outside the device or larger than a frame. Errors become ATA status, never panics.

use super::backend::Backend;
use crate::ata::*;
use crate::wire::AtaRepr;

/// What one ATA request produced: the response registers and how many data bytes of the
/// output buffer follow them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtaOutcome {
    pub regs: AtaRepr,
    pub data_len: usize,
    /// Bytes read from or written to the backend.
    pub read: usize,
    pub written: usize,
}

/// Limits a request must respect.
#[derive(Debug, Clone, Copy)]
pub struct AtaLimits<'a> {
    pub max_sectors: u8,
    pub identify: &'a [u8; 512],
    /// Must not block: writes, flushes and reads missing the page cache are deferred.
    pub inline: bool,
}

fn failed(req: &AtaRepr, error: u8) -> AtaOutcome {
    AtaOutcome {
        regs: AtaRepr {
            err_feature: error,
            cmd_status: STATUS_DRDY | STATUS_ERR,
            ..*req
        },
        data_len: 0,
        read: 0,
        written: 0,
    }
}

/// The byte range a read or write touches, or the ATA error that refuses it.
fn range(req: &AtaRepr, limits: &AtaLimits, sectors: u64) -> Result<(u64, usize), u8> {
    let lba = if req.is_extended() {
        req.lba
    } else {
        req.lba & LBA28_LIMIT
    };
    if req.sector_count > limits.max_sectors {
        return Err(ERROR_ABRT);
    }
    let count = u64::from(req.sector_count);
    if lba.checked_add(count).is_none_or(|end| end > sectors) {
        return Err(ERROR_IDNF);
    }
    Ok((
        lba * SECTOR_SIZE as u64,
        req.sector_count as usize * SECTOR_SIZE,
    ))
}

/// Executes `req` (with `data` following it in the frame) and writes response data into `out`.
/// `None` when `limits.inline` is set and the command would block: run it again on a thread
/// that may block.
pub fn execute(
    req: &AtaRepr,
    data: &[u8],
    backend: &Backend,
    limits: &AtaLimits,
    out: &mut [u8],
) -> Option<AtaOutcome> {
    let blocking = matches!(
        req.cmd_status,
        CMD_WRITE | CMD_WRITE_EXT | CMD_FLUSH | CMD_FLUSH_EXT
    );
    if limits.inline && blocking {
        return None;
    }
    if limits.inline && matches!(req.cmd_status, CMD_READ | CMD_READ_EXT) {
        let (offset, len) = match range(req, limits, backend.sectors()) {
            Ok(r) => r,
            Err(e) => return Some(failed(req, e)),
        };
        let Some(dst) = out.get_mut(..len) else {
            return Some(failed(req, ERROR_ABRT));
        };
        return match backend.read_cached(dst, offset) {
            Ok(true) => Some(succeeded(req, len, len, 0)),
            Ok(false) => None,
            Err(_) => Some(failed(req, ERROR_UNC)),
        };
    }
    Some(execute_now(req, data, backend, limits, out))
}

fn succeeded(req: &AtaRepr, data_len: usize, read: usize, written: usize) -> AtaOutcome {
    AtaOutcome {
        regs: AtaRepr {
            err_feature: 0,
            cmd_status: STATUS_DRDY,
            ..*req
        },
        data_len,
        read,
        written,
    }
}

fn execute_now(
    req: &AtaRepr,
    data: &[u8],
    backend: &Backend,
    limits: &AtaLimits,
    out: &mut [u8],
) -> AtaOutcome {
    let ok = |data_len, read, written| succeeded(req, data_len, read, written);
    match req.cmd_status {
        CMD_IDENTIFY => match out.get_mut(..512) {
            Some(dst) => {
                dst.copy_from_slice(limits.identify);
                ok(512, 0, 0)
            }
            None => failed(req, ERROR_ABRT),
        },
        CMD_READ | CMD_READ_EXT => {
            let (offset, len) = match range(req, limits, backend.sectors()) {
                Ok(r) => r,
                Err(e) => return failed(req, e),
            };
            let Some(dst) = out.get_mut(..len) else {
                return failed(req, ERROR_ABRT);
            };
            match backend.read_at(dst, offset) {
                Ok(()) => ok(len, len, 0),
                Err(_) => failed(req, ERROR_UNC),
            }
        }
        CMD_WRITE | CMD_WRITE_EXT => {
            let (offset, len) = match range(req, limits, backend.sectors()) {
                Ok(r) => r,
                Err(e) => return failed(req, e),
            };
            let Some(src) = data.get(..len) else {
                return failed(req, ERROR_ABRT);
            };
            match backend.write_durable(src, offset) {
                Ok(()) => ok(0, 0, len),
                Err(_) => failed(req, ERROR_ABRT),
            }
        }
        CMD_FLUSH | CMD_FLUSH_EXT => match backend.flush() {
            Ok(()) => ok(0, 0, 0),
            Err(_) => failed(req, ERROR_ABRT),
        },
        CMD_CHECK_POWER_MODE => {
            let mut o = ok(0, 0, 0);
            o.regs.sector_count = POWER_ACTIVE;
            o
        }
        _ => failed(req, ERROR_ABRT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{AFLAG_EXTENDED, AFLAG_WRITE};
    use std::path::PathBuf;

    fn backend(name: &str, sectors: u64) -> (Backend, PathBuf) {
        let dir = std::env::temp_dir().join(format!("mallee-aoe-ata-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::File::create(&path)
            .unwrap()
            .set_len(sectors * 512)
            .unwrap();
        (Backend::open(&path).unwrap(), path)
    }

    fn req(cmd: u8, lba: u64, count: u8, aflags: u8) -> AtaRepr {
        AtaRepr {
            aflags,
            err_feature: 0,
            sector_count: count,
            cmd_status: cmd,
            lba,
        }
    }

    const PAGE: [u8; 512] = [7; 512];
    const LIMITS: AtaLimits = AtaLimits {
        max_sectors: 2,
        identify: &PAGE,
        inline: false,
    };

    fn run(req: &AtaRepr, data: &[u8], b: &Backend, l: &AtaLimits, out: &mut [u8]) -> AtaOutcome {
        execute(req, data, b, l, out).expect("blocking mode never defers")
    }

    #[test]
    fn inline_mode_defers_writes_and_serves_cached_reads() {
        let (b, _) = backend("inline", 16);
        let inline = AtaLimits {
            inline: true,
            ..LIMITS
        };
        let mut out = [0u8; 1024];
        let w = req(CMD_WRITE_EXT, 0, 1, AFLAG_EXTENDED | AFLAG_WRITE);
        assert!(execute(&w, &[1; 512], &b, &inline, &mut out).is_none());
        run(&w, &[1; 512], &b, &LIMITS, &mut out);
        // Just written, so cached: served inline.
        let r = execute(
            &req(CMD_READ_EXT, 0, 1, AFLAG_EXTENDED),
            &[],
            &b,
            &inline,
            &mut out,
        );
        assert_eq!(r.map(|o| o.data_len), Some(512));
        assert_eq!(out[..512], [1; 512]);
    }

    #[test]
    fn write_then_read_returns_the_data_at_the_lba() {
        let (b, path) = backend("rw", 16);
        let mut out = [0u8; 1024];
        let data = [0x5a; 1024];
        let w = run(
            &req(CMD_WRITE_EXT, 3, 2, AFLAG_EXTENDED | AFLAG_WRITE),
            &data,
            &b,
            &LIMITS,
            &mut out,
        );
        assert_eq!((w.regs.cmd_status, w.written), (STATUS_DRDY, 1024));
        let r = run(
            &req(CMD_READ_EXT, 3, 2, AFLAG_EXTENDED),
            &[],
            &b,
            &LIMITS,
            &mut out,
        );
        assert_eq!((r.regs.cmd_status, r.data_len), (STATUS_DRDY, 1024));
        assert_eq!(out, data);
        assert_eq!(&std::fs::read(&path).unwrap()[3 * 512..5 * 512], &data[..]);
    }

    #[test]
    fn lba28_ignores_device_register_bits() {
        let (b, _) = backend("lba28", 16);
        let mut out = [0u8; 1024];
        let r = run(
            &req(CMD_READ, 0xe000_0001, 1, 0),
            &[],
            &b,
            &LIMITS,
            &mut out,
        );
        assert_eq!(r.regs.cmd_status, STATUS_DRDY);
    }

    #[test]
    fn read_past_end_is_idnf_error() {
        let (b, _) = backend("end", 16);
        let mut out = [0u8; 1024];
        let r = run(
            &req(CMD_READ_EXT, 15, 2, AFLAG_EXTENDED),
            &[],
            &b,
            &LIMITS,
            &mut out,
        );
        assert_eq!(
            (r.regs.cmd_status, r.regs.err_feature),
            (STATUS_DRDY | STATUS_ERR, ERROR_IDNF)
        );
        let r = run(
            &req(CMD_READ_EXT, u64::MAX >> 16, 2, AFLAG_EXTENDED),
            &[],
            &b,
            &LIMITS,
            &mut out,
        );
        assert_eq!(r.regs.err_feature, ERROR_IDNF);
    }

    #[test]
    fn write_with_short_data_or_too_many_sectors_is_aborted() {
        let (b, _) = backend("short", 16);
        let mut out = [0u8; 1024];
        let r = run(
            &req(CMD_WRITE_EXT, 0, 2, AFLAG_EXTENDED | AFLAG_WRITE),
            &[1; 600],
            &b,
            &LIMITS,
            &mut out,
        );
        assert_eq!(r.regs.err_feature, ERROR_ABRT);
        let r = run(
            &req(CMD_READ_EXT, 0, 3, AFLAG_EXTENDED),
            &[],
            &b,
            &LIMITS,
            &mut out,
        );
        assert_eq!(r.regs.err_feature, ERROR_ABRT);
    }

    #[test]
    fn identify_power_flush_and_unknown_commands() {
        let (b, _) = backend("misc", 16);
        let mut out = [0u8; 1024];
        let r = run(&req(CMD_IDENTIFY, 0, 1, 0), &[], &b, &LIMITS, &mut out);
        assert_eq!((r.data_len, out[0]), (512, 7));
        let r = run(
            &req(CMD_CHECK_POWER_MODE, 0, 0, 0),
            &[],
            &b,
            &LIMITS,
            &mut out,
        );
        assert_eq!(r.regs.sector_count, POWER_ACTIVE);
        let r = run(&req(CMD_FLUSH_EXT, 0, 0, 0), &[], &b, &LIMITS, &mut out);
        assert_eq!(r.regs.cmd_status, STATUS_DRDY);
        let r = run(&req(0x99, 0, 1, 0), &[], &b, &LIMITS, &mut out);
        assert_eq!(
            (r.regs.cmd_status, r.regs.err_feature),
            (STATUS_DRDY | STATUS_ERR, ERROR_ABRT)
        );
    }
}
