//! One virtio-blk request: parse the chain a guest posted, check it, run it against the backend,
//! write the status byte.
//!
//! Everything here treats the guest as hostile: header, lengths, sectors and segment lists come
//! from guest memory and are checked before use; a request that cannot be served gets
//! `VIRTIO_BLK_S_IOERR` or `VIRTIO_BLK_S_UNSUPP`, and a chain without room for a status byte is
//! dropped (returned to the guest with nothing written). Data moves in bounded chunks, so an
//! oversize chain cannot make the VMM allocate without limit.

use std::io::{Read, Write};
use std::ops::Deref;

use virtio_queue::{DescriptorChain, Reader, Writer};
use vm_memory::ByteValued;

use super::backend::BlockBackend;
use crate::devices::virtio::GuestMemoryMmap;

/// Bytes per virtio-blk sector (fixed by the spec, independent of blk_size).
pub const SECTOR_SIZE: u64 = 512;
/// Largest data transfer one request may carry.
pub const MAX_REQUEST_BYTES: usize = 32 << 20;
/// Bytes moved per backend call.
const CHUNK: usize = 256 << 10;
/// Length of the serial string returned by GET_ID.
pub const ID_BYTES: usize = 20;

/// Request types (virtio 1.2 section 5.2.6).
pub mod types {
    /// Read.
    pub const IN: u32 = 0;
    /// Write.
    pub const OUT: u32 = 1;
    /// Flush.
    pub const FLUSH: u32 = 4;
    /// Device ID string.
    pub const GET_ID: u32 = 8;
    /// Discard.
    pub const DISCARD: u32 = 11;
    /// Write zeroes.
    pub const WRITE_ZEROES: u32 = 13;
}

/// Status byte values.
pub mod status {
    /// Success.
    pub const OK: u8 = 0;
    /// I/O error.
    pub const IOERR: u8 = 1;
    /// Unsupported request.
    pub const UNSUPP: u8 = 2;
}

/// The 16-byte request header the guest puts first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RequestHeader {
    /// Request type.
    pub kind: u32,
    /// Reserved (was ioprio).
    pub reserved: u32,
    /// First sector.
    pub sector: u64,
}

// SAFETY: RequestHeader is plain integers in a repr(C) struct with no padding.
unsafe impl ByteValued for RequestHeader {}

/// One discard / write-zeroes segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct DiscardSegment {
    /// First sector.
    pub sector: u64,
    /// Number of sectors.
    pub num_sectors: u32,
    /// Bit 0: unmap (write-zeroes only).
    pub flags: u32,
}

// SAFETY: DiscardSegment is plain integers in a repr(C) struct with no padding.
unsafe impl ByteValued for DiscardSegment {}

/// Why a request failed (the guest sees only the status byte; this is for logs and tests).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlockRequestError {
    /// The chain's buffers are not all inside guest memory or are malformed.
    #[error("descriptor chain is not valid guest memory")]
    BadChain,
    /// The chain has no writable byte for the status.
    #[error("no room for the status byte")]
    NoStatus,
    /// The header is missing or short.
    #[error("request header is shorter than 16 bytes")]
    ShortHeader,
    /// The data length is not a multiple of 512 or exceeds the per-request limit.
    #[error("data length {0} is not a multiple of 512 or over the limit")]
    BadLength(usize),
    /// The request reaches past the end of the disk.
    #[error("sectors {sector}+{bytes}B are beyond the disk's {size}B")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Bytes requested.
        bytes: u64,
        /// Disk size.
        size: u64,
    },
    /// A write to a read-only disk.
    #[error("write to a read-only disk")]
    ReadOnly,
    /// A request type the device does not implement or did not offer.
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    /// The backend failed.
    #[error("backend I/O failed: {0}")]
    Backend(String),
    /// Guest memory could not be copied to or from.
    #[error("guest buffer copy failed")]
    GuestCopy,
    /// The device is an empty volume slot.
    #[error("no volume in the slot")]
    NoMedium,
}

impl BlockRequestError {
    /// The status byte the guest gets for this failure.
    pub fn status(&self) -> u8 {
        match self {
            BlockRequestError::Unsupported(_) => status::UNSUPP,
            _ => status::IOERR,
        }
    }
}

/// The disk a request runs against: backend plus what the device advertised.
pub struct Disk<B: BlockBackend> {
    /// The storage.
    pub backend: B,
    /// Writes are refused.
    pub read_only: bool,
    /// The GET_ID string, zero-padded.
    pub serial: [u8; ID_BYTES],
    /// Discard was offered (and so is accepted).
    pub discard: bool,
}

/// What the device did with one chain.
#[derive(Debug, PartialEq, Eq)]
pub struct Completion {
    /// Bytes written into the chain (data plus the status byte), for the used ring.
    pub used_len: u32,
    /// The status byte written, or `None` if the request was dropped.
    pub status: Option<u8>,
    /// The failure, if any.
    pub error: Option<BlockRequestError>,
}

/// Serves one descriptor chain against `disk` (the chain may hold guest memory by reference or,
/// on an I/O thread, by `Arc`).
pub fn process<B: BlockBackend, M: Deref<Target = GuestMemoryMmap> + Clone>(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<M>,
    disk: &Disk<B>,
) -> Completion {
    let dropped = |e| Completion {
        used_len: 0,
        status: None,
        error: Some(e),
    };
    let (Ok(mut reader), Ok(mut writer)) = (
        Reader::<()>::new(mem, chain.clone()),
        Writer::<()>::new(mem, chain),
    ) else {
        return dropped(BlockRequestError::BadChain);
    };
    let writable = writer.available_bytes();
    if writable == 0 {
        return dropped(BlockRequestError::NoStatus);
    }
    let Ok(mut status_writer) = writer.split_at(writable - 1) else {
        return dropped(BlockRequestError::NoStatus);
    };
    let result = run(&mut reader, &mut writer, disk);
    let (st, error) = match result {
        Ok(()) => (status::OK, None),
        Err(e) => (e.status(), Some(e)),
    };
    if status_writer.write_all(&[st]).is_err() {
        return dropped(BlockRequestError::GuestCopy);
    }
    Completion {
        used_len: u32::try_from(writer.bytes_written() + 1).unwrap_or(u32::MAX),
        status: Some(st),
        error,
    }
}

fn run<B: BlockBackend>(
    reader: &mut Reader<'_>,
    writer: &mut Writer<'_>,
    disk: &Disk<B>,
) -> Result<(), BlockRequestError> {
    if !disk.backend.present() {
        return Err(BlockRequestError::NoMedium);
    }
    let header: RequestHeader = reader
        .read_obj()
        .map_err(|_| BlockRequestError::ShortHeader)?;
    match header.kind {
        types::IN => {
            let len = checked_range(disk, header.sector, writer.available_bytes())?;
            copy_to_guest(disk, header.sector * SECTOR_SIZE, len, writer)
        }
        types::OUT => {
            if disk.read_only {
                return Err(BlockRequestError::ReadOnly);
            }
            let len = checked_range(disk, header.sector, reader.available_bytes())?;
            copy_from_guest(disk, header.sector * SECTOR_SIZE, len, reader)
        }
        types::FLUSH => disk.backend.flush().map_err(backend_err),
        types::GET_ID => {
            let n = writer.available_bytes().min(ID_BYTES);
            writer
                .write_all(&disk.serial[..n])
                .map_err(|_| BlockRequestError::GuestCopy)
        }
        types::DISCARD | types::WRITE_ZEROES => {
            if disk.read_only {
                return Err(BlockRequestError::ReadOnly);
            }
            if header.kind == types::DISCARD && !disk.discard {
                return Err(BlockRequestError::Unsupported(header.kind));
            }
            let seg = read_single_segment(reader)?;
            let len = u64::from(seg.num_sectors) * SECTOR_SIZE;
            check_sectors(disk, seg.sector, len)?;
            let off = seg.sector * SECTOR_SIZE;
            if header.kind == types::DISCARD {
                if seg.flags != 0 {
                    return Err(BlockRequestError::Unsupported(header.kind));
                }
                disk.backend.discard(off, len).map_err(backend_err)
            } else {
                disk.backend.write_zeroes(off, len).map_err(backend_err)
            }
        }
        other => Err(BlockRequestError::Unsupported(other)),
    }
}

/// Reads exactly one 16-byte segment; the device advertises max_discard_seg = 1.
fn read_single_segment(reader: &mut Reader<'_>) -> Result<DiscardSegment, BlockRequestError> {
    if reader.available_bytes() != std::mem::size_of::<DiscardSegment>() {
        return Err(BlockRequestError::BadLength(reader.available_bytes()));
    }
    reader.read_obj().map_err(|_| BlockRequestError::GuestCopy)
}

fn backend_err(e: std::io::Error) -> BlockRequestError {
    BlockRequestError::Backend(e.to_string())
}

fn check_sectors<B: BlockBackend>(
    disk: &Disk<B>,
    sector: u64,
    bytes: u64,
) -> Result<(), BlockRequestError> {
    let size = disk.backend.size();
    let end = sector
        .checked_mul(SECTOR_SIZE)
        .and_then(|start| start.checked_add(bytes));
    match end {
        Some(end) if end <= size => Ok(()),
        _ => Err(BlockRequestError::OutOfRange {
            sector,
            bytes,
            size,
        }),
    }
}

fn checked_range<B: BlockBackend>(
    disk: &Disk<B>,
    sector: u64,
    len: usize,
) -> Result<usize, BlockRequestError> {
    if !len.is_multiple_of(SECTOR_SIZE as usize) || len > MAX_REQUEST_BYTES {
        return Err(BlockRequestError::BadLength(len));
    }
    check_sectors(disk, sector, len as u64)?;
    Ok(len)
}

fn copy_to_guest<B: BlockBackend>(
    disk: &Disk<B>,
    offset: u64,
    len: usize,
    writer: &mut Writer<'_>,
) -> Result<(), BlockRequestError> {
    let mut buf = vec![0u8; len.min(CHUNK)];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(CHUNK);
        disk.backend
            .read_at(&mut buf[..n], offset + done as u64)
            .map_err(backend_err)?;
        writer
            .write_all(&buf[..n])
            .map_err(|_| BlockRequestError::GuestCopy)?;
        done += n;
    }
    Ok(())
}

fn copy_from_guest<B: BlockBackend>(
    disk: &Disk<B>,
    offset: u64,
    len: usize,
    reader: &mut Reader<'_>,
) -> Result<(), BlockRequestError> {
    let mut buf = vec![0u8; len.min(CHUNK)];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(CHUNK);
        reader
            .read_exact(&mut buf[..n])
            .map_err(|_| BlockRequestError::GuestCopy)?;
        disk.backend
            .write_at(&buf[..n], offset + done as u64)
            .map_err(backend_err)?;
        done += n;
    }
    Ok(())
}
