//! virtio-blk request tests over in-process guest memory and hand-built virtqueues.

use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::backend::MemBackend;
use super::request::{self, status, types, Completion, Disk, RequestHeader, MAX_REQUEST_BYTES};
use crate::devices::virtio::GuestMemoryMmap;

const HDR: u64 = 0x10000;
const DATA: u64 = 0x20000;
const STATUS: u64 = 0x30000;

fn memory(bytes: usize) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), bytes)]).unwrap()
}

fn disk(sectors: usize, read_only: bool) -> Disk<MemBackend> {
    let data: Vec<u8> = (0..sectors * 512).map(|i| (i / 512) as u8).collect();
    Disk {
        backend: MemBackend::new(data),
        read_only,
        serial: *b"vol-0001\0\0\0\0\0\0\0\0\0\0\0\0",
        discard: false,
    }
}

fn desc(addr: u64, len: u32, flags: u32) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, 0))
}

fn header(mem: &GuestMemoryMmap, kind: u32, sector: u64) {
    let h = RequestHeader {
        kind,
        reserved: 0,
        sector,
    };
    mem.write_obj(h, GuestAddress(HDR)).unwrap();
}

/// Runs one request made of `descs` and returns what the device did.
fn run(mem: &GuestMemoryMmap, descs: &[RawDescriptor], disk: &Disk<MemBackend>) -> Completion {
    let vq = MockSplitQueue::new(mem, 16);
    let chain = vq.build_desc_chain(descs).unwrap();
    request::process(mem, chain, disk)
}

fn rw(data_len: u32, kind: u32) -> Vec<RawDescriptor> {
    let data_flags = if kind == types::IN {
        VRING_DESC_F_WRITE
    } else {
        0
    };
    vec![
        desc(HDR, 16, 0),
        desc(DATA, data_len, data_flags),
        desc(STATUS, 1, VRING_DESC_F_WRITE),
    ]
}

#[test]
fn read_returns_disk_sectors_and_ok() {
    let mem = memory(1 << 20);
    let d = disk(8, false);
    header(&mem, types::IN, 3);
    let c = run(&mem, &rw(1024, types::IN), &d);
    assert_eq!(c.status, Some(status::OK));
    assert_eq!(c.used_len, 1025);
    let mut buf = [0u8; 1024];
    mem.read_slice(&mut buf, GuestAddress(DATA)).unwrap();
    assert!(buf[..512].iter().all(|b| *b == 3) && buf[512..].iter().all(|b| *b == 4));
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(),
        status::OK
    );
}

#[test]
fn write_then_read_round_trips() {
    let mem = memory(1 << 20);
    let d = disk(8, false);
    mem.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
    header(&mem, types::OUT, 7);
    assert_eq!(run(&mem, &rw(512, types::OUT), &d).status, Some(status::OK));
    assert!(d.backend.data()[7 * 512..].iter().all(|b| *b == 0x5a));
    header(&mem, types::FLUSH, 0);
    let flush = [desc(HDR, 16, 0), desc(STATUS, 1, VRING_DESC_F_WRITE)];
    assert_eq!(run(&mem, &flush, &d).status, Some(status::OK));
    assert_eq!(d.backend.flushes(), 1);
}

#[test]
fn write_to_read_only_disk_is_ioerr_and_changes_nothing() {
    let mem = memory(1 << 20);
    let d = disk(8, true);
    let before = d.backend.data();
    header(&mem, types::OUT, 0);
    let c = run(&mem, &rw(512, types::OUT), &d);
    assert_eq!(c.status, Some(status::IOERR));
    assert_eq!(c.error, Some(request::BlockRequestError::ReadOnly));
    header(&mem, types::WRITE_ZEROES, 0);
    assert_eq!(
        run(&mem, &rw(16, types::OUT), &d).status,
        Some(status::IOERR)
    );
    assert_eq!(d.backend.data(), before);
}

#[test]
fn sectors_past_the_end_are_ioerr() {
    let mem = memory(1 << 20);
    let d = disk(8, false);
    for sector in [7, 8, u64::MAX / 512, u64::MAX] {
        header(&mem, types::IN, sector);
        let c = run(&mem, &rw(1024, types::IN), &d);
        assert_eq!(c.status, Some(status::IOERR), "sector {sector}");
    }
}

#[test]
fn unaligned_length_is_ioerr() {
    let mem = memory(1 << 20);
    let d = disk(8, false);
    header(&mem, types::IN, 0);
    assert_eq!(
        run(&mem, &rw(100, types::IN), &d).status,
        Some(status::IOERR)
    );
}

#[test]
fn oversize_request_is_ioerr_without_touching_the_disk() {
    let mem = memory(MAX_REQUEST_BYTES + (2 << 20));
    let d = disk(8, false);
    let before = d.backend.data();
    header(&mem, types::OUT, 0);
    let len = (MAX_REQUEST_BYTES + 512) as u32;
    let descs = [
        desc(HDR, 16, 0),
        desc(0x40000, len, 0),
        desc(STATUS, 1, VRING_DESC_F_WRITE),
    ];
    let c = run(&mem, &descs, &d);
    assert_eq!(c.status, Some(status::IOERR));
    assert_eq!(d.backend.data(), before);
}

#[test]
fn buffer_outside_guest_memory_is_dropped() {
    let mem = memory(1 << 20);
    let d = disk(8, false);
    header(&mem, types::IN, 0);
    let descs = [
        desc(HDR, 16, 0),
        desc((1 << 20) - 256, 512, VRING_DESC_F_WRITE),
        desc(STATUS, 1, VRING_DESC_F_WRITE),
    ];
    let c = run(&mem, &descs, &d);
    assert_eq!(c.status, None);
    assert_eq!(c.used_len, 0);
    let far = [
        desc(u64::MAX - 8, 16, 0),
        desc(STATUS, 1, VRING_DESC_F_WRITE),
    ];
    assert_eq!(run(&mem, &far, &d).status, None);
}

#[test]
fn chain_without_status_byte_is_dropped() {
    let mem = memory(1 << 20);
    let d = disk(8, false);
    header(&mem, types::OUT, 0);
    let c = run(&mem, &[desc(HDR, 16, 0), desc(DATA, 512, 0)], &d);
    assert_eq!(c.status, None);
    assert_eq!(c.error, Some(request::BlockRequestError::NoStatus));
}

#[test]
fn short_header_and_unknown_type_get_error_status() {
    let mem = memory(1 << 20);
    let d = disk(8, false);
    let short = [desc(HDR, 8, 0), desc(STATUS, 1, VRING_DESC_F_WRITE)];
    assert_eq!(run(&mem, &short, &d).status, Some(status::IOERR));
    header(&mem, 0x7777, 0);
    let c = run(
        &mem,
        &[desc(HDR, 16, 0), desc(STATUS, 1, VRING_DESC_F_WRITE)],
        &d,
    );
    assert_eq!(c.status, Some(status::UNSUPP));
}

#[test]
fn get_id_returns_the_serial() {
    let mem = memory(1 << 20);
    let d = disk(8, false);
    header(&mem, types::GET_ID, 0);
    let c = run(&mem, &rw(20, types::IN), &d);
    assert_eq!(c.status, Some(status::OK));
    let mut id = [0u8; 8];
    mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id, b"vol-0001");
}

#[test]
fn write_zeroes_clears_the_range_and_discard_needs_the_feature() {
    let mem = memory(1 << 20);
    let d = disk(8, false);
    let seg = request::DiscardSegment {
        sector: 2,
        num_sectors: 3,
        flags: 0,
    };
    mem.write_obj(seg, GuestAddress(DATA)).unwrap();
    header(&mem, types::WRITE_ZEROES, 0);
    assert_eq!(run(&mem, &rw(16, types::OUT), &d).status, Some(status::OK));
    assert!(d.backend.data()[1024..2560].iter().all(|b| *b == 0));
    assert!(d.backend.data()[2560..3072].iter().all(|b| *b == 5));
    header(&mem, types::DISCARD, 0);
    assert_eq!(
        run(&mem, &rw(16, types::OUT), &d).status,
        Some(status::UNSUPP)
    );
    let past = request::DiscardSegment {
        sector: 7,
        num_sectors: 2,
        flags: 0,
    };
    mem.write_obj(past, GuestAddress(DATA)).unwrap();
    header(&mem, types::WRITE_ZEROES, 0);
    assert_eq!(
        run(&mem, &rw(16, types::OUT), &d).status,
        Some(status::IOERR)
    );
}

#[test]
fn descriptor_loop_terminates() {
    let mem = memory(1 << 20);
    let d = disk(8, false);
    header(&mem, types::IN, 0);
    let vq = MockSplitQueue::new(&mem, 16);
    let next = VRING_DESC_F_NEXT as u16;
    let w = VRING_DESC_F_WRITE as u16;
    // 0 -> 1 -> 2 -> 1 -> 2 ... never ends on its own.
    let descs = [
        RawDescriptor::from(SplitDescriptor::new(HDR, 16, next, 1)),
        RawDescriptor::from(SplitDescriptor::new(DATA, 512, next | w, 2)),
        RawDescriptor::from(SplitDescriptor::new(STATUS, 1, next | w, 1)),
    ];
    let chain = vq.build_multiple_desc_chains(&descs).unwrap();
    let c = request::process(&mem, chain, &d);
    // The walk stops after queue-size descriptors; whatever it made of them, it answered.
    assert!(c.status.is_none() || c.status == Some(status::IOERR));
}

#[test]
fn handler_serves_a_whole_queue_and_fills_the_used_ring() {
    let mem = memory(1 << 20);
    let vq = MockSplitQueue::new(&mem, 16);
    header(&mem, types::IN, 1);
    let chain = rw(512, types::IN);
    vq.build_desc_chain(&chain).unwrap();
    let mut q: Queue = vq.create_queue().unwrap();
    let d = disk(8, false);
    let mut served = 0;
    while let Some(c) = q.pop_descriptor_chain(&mem) {
        let head = c.head_index();
        let done = request::process(&mem, c, &d);
        q.add_used(&mem, head, done.used_len).unwrap();
        served += 1;
    }
    assert_eq!(served, 1);
    assert_eq!(vq.used().idx().load(), 1);
    let _ = q.iter(&mem).unwrap().count();
}

/// A small deterministic generator so the randomized test is reproducible.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_descriptor_tables_never_panic() {
    let mem = memory(1 << 20);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        let d = disk(8, rng.next().is_multiple_of(2));
        let vq = MockSplitQueue::new(&mem, 16);
        let n = 1 + (rng.next() % 6) as usize;
        let mut descs = Vec::new();
        for _ in 0..n {
            let r = rng.next();
            let addr = match r % 4 {
                0 => HDR,
                1 => DATA + (r >> 8) % 4096,
                2 => r >> 3,
                _ => (1 << 20) - (r >> 40) % 64,
            };
            let len = match (r >> 4) % 4 {
                0 => 16,
                1 => 512,
                2 => 1,
                _ => (r >> 20) as u32,
            };
            let flags = (r >> 12) as u16 & 0x7;
            let next = ((r >> 16) % 16) as u16;
            descs.push(RawDescriptor::from(SplitDescriptor::new(
                addr, len, flags, next,
            )));
        }
        header(&mem, (rng.next() % 16) as u32, rng.next() % 16);
        let Ok(chain) = vq.build_multiple_desc_chains(&descs) else {
            continue;
        };
        let c = request::process(&mem, chain, &d);
        assert!(matches!(c.status, None | Some(0..=2)));
        assert_eq!(d.backend.data().len(), 8 * 512);
    }
}

#[test]
fn random_inputs_to_the_fuzz_harnesses_never_panic() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for round in 0..400 {
        let len = 16 * 16 + 2 + (rng.next() % 512) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Bias half the descriptors toward the payload area so requests get parsed deeply.
        if round % 2 == 0 {
            for d in data[..256].chunks_exact_mut(16) {
                let addr = crate::devices::virtio::fuzzing::PAYLOAD + (rng.next() % 1024);
                d[..8].copy_from_slice(&addr.to_le_bytes());
                d[8..12].copy_from_slice(&((rng.next() % 1100) as u32).to_le_bytes());
            }
        }
        crate::devices::virtio::fuzzing::blk_request(&data);
        crate::devices::virtio::fuzzing::desc_chain(&data);
        crate::devices::virtio::fuzzing::net_tx(&data);
        crate::devices::virtio::fuzzing::net_rx(&data);
        crate::devices::virtio::fuzzing::guest_port(&data);
        crate::devices::virtio::fuzzing::metadata_service(&data);
    }
}
