//! Volume slot tests: a slot's device driven through its PCI transport like a Linux driver, with
//! volumes attached and detached underneath it.

use std::io;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::devices::pci::PciDevice;
use crate::devices::virtio::block::request::{status, types, RequestHeader};
use crate::devices::virtio::block::Block;
use crate::devices::virtio::config_change::ISR_CONFIG;
use crate::devices::virtio::pci::msix::NoRouter;
use crate::devices::virtio::pci::{VirtioPci, DEVICE_OFFSET, ISR_OFFSET, NOTIFY_OFFSET};
use crate::devices::virtio::status as dev_status;
use crate::devices::virtio::test_utils::{chain, memory, wait_used, Driver};
use crate::devices::virtio::{GuestMemoryMmap, VIRTIO_F_VERSION_1};

const CONFIG_VECTOR: u16 = 0;
const QUEUE_VECTOR: u16 = 1;
const HDR: u64 = 0x8000;
const DATA: u64 = 0x9000;
const STATUS: u64 = 0xa000;

/// What a test backend saw, in order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, what: &str) {
        self.0.lock().unwrap().push(what.to_string());
    }
    fn events(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    fn flushes(&self) -> usize {
        self.events().iter().filter(|e| *e == "flush").count()
    }
}

/// A disk of `sectors` sectors, sector `n` filled with byte `fill + n`, that logs reads, writes
/// and flushes; a read can be held until the test lets it go.
struct TestDisk {
    data: Mutex<Vec<u8>>,
    log: Log,
    hold: Option<Mutex<(Sender<()>, Receiver<()>)>>,
}

impl TestDisk {
    fn new(sectors: usize, fill: u8, log: &Log) -> Box<TestDisk> {
        let data = (0..sectors * 512).map(|i| fill + (i / 512) as u8).collect();
        Box::new(TestDisk {
            data: Mutex::new(data),
            log: log.clone(),
            hold: None,
        })
    }
}

impl BlockBackend for TestDisk {
    fn size(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if let Some(hold) = &self.hold {
            let (entered, release) = &*hold.lock().unwrap();
            entered.send(()).unwrap();
            release.recv().unwrap();
        }
        let o = offset as usize;
        buf.copy_from_slice(&self.data.lock().unwrap()[o..o + buf.len()]);
        self.log.push("read");
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let o = offset as usize;
        self.data.lock().unwrap()[o..o + buf.len()].copy_from_slice(buf);
        self.log.push("write");
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        self.log.push("flush");
        Ok(())
    }
}

/// A slot's device after a driver brought it up, and the queue it posts requests on.
struct Guest {
    drv: Driver,
    mem: GuestMemoryMmap,
    vq: MockSplitQueue<'static, GuestMemoryMmap>,
    posted: u16,
}

fn guest(slot: &Arc<VolumeSlot>) -> Guest {
    let mem = memory();
    let block = Block::for_slot(slot.clone());
    let dev = VirtioPci::new(
        Box::new(block),
        mem.clone(),
        0xd000_0000,
        24,
        Arc::new(NoRouter),
    )
    .unwrap();
    let mut drv = Driver { dev };
    drv.ack(VIRTIO_F_VERSION_1);
    drv.w16(0x10, CONFIG_VECTOR);
    // The mock queue borrows the memory; a leaked clone lives as long as the test process.
    let leaked: &'static GuestMemoryMmap = Box::leak(Box::new(mem.clone()));
    let vq = MockSplitQueue::create(leaked, GuestAddress(0x1000), 16);
    drv.setup_queue(0, &vq, QUEUE_VECTOR);
    drv.driver_ok();
    assert_eq!(drv.dev.device_status() & dev_status::NEEDS_RESET, 0);
    Guest {
        drv,
        mem,
        vq,
        posted: 0,
    }
}

impl Guest {
    /// The capacity in the device configuration, in sectors.
    fn capacity(&mut self) -> u64 {
        let lo = u64::from(self.drv.r32(DEVICE_OFFSET));
        u64::from(self.drv.r32(DEVICE_OFFSET + 4)) << 32 | lo
    }

    fn isr(&mut self) -> u8 {
        let mut b = [0u8];
        self.drv.dev.bar_read(0, ISR_OFFSET, &mut b);
        b[0]
    }

    /// Interrupts signalled on the configuration vector since the last call.
    fn config_interrupts(&self) -> u64 {
        let irqs = self.drv.dev.interrupt_eventfds();
        irqs[usize::from(CONFIG_VECTOR)].1.read().unwrap_or(0)
    }

    /// Posts a request of `kind` at `sector` with `len` data bytes (none for 0) and notifies.
    fn post(&mut self, kind: u32, sector: u64, len: u32) {
        let hdr = RequestHeader {
            kind,
            reserved: 0,
            sector,
        };
        self.mem.write_obj(hdr, GuestAddress(HDR)).unwrap();
        self.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        let w = VRING_DESC_F_WRITE;
        let data_flags = if kind == types::OUT { 0 } else { w };
        let mut descs = vec![(HDR, 16, 0)];
        if len > 0 {
            descs.push((DATA, len, data_flags));
        }
        descs.push((STATUS, 1, w));
        self.vq.add_desc_chains(&chain(&descs), 0).unwrap();
        self.drv
            .dev
            .bar_write(0, NOTIFY_OFFSET, &0u16.to_le_bytes());
        self.posted += 1;
    }

    /// Waits for the last posted request; returns its status byte.
    fn complete(&mut self) -> u8 {
        wait_used(&self.vq, self.posted);
        self.mem.read_obj(GuestAddress(STATUS)).unwrap()
    }

    fn request(&mut self, kind: u32, sector: u64, len: u32) -> u8 {
        self.post(kind, sector, len);
        self.complete()
    }

    fn data(&self, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.mem.read_slice(&mut buf, GuestAddress(DATA)).unwrap();
        buf
    }
}

fn attach(slot: &VolumeSlot, id: &str, disk: Box<TestDisk>) -> Result<VolumeSlotStatus, SlotError> {
    slot.attach(id, false, "/test/disk", || {
        Ok(disk as Box<dyn BlockBackend>)
    })
}

#[test]
fn an_empty_slot_is_one_sector_of_zeros_that_cannot_be_written() {
    let slot = Arc::new(VolumeSlot::new(0));
    let mut g = guest(&slot);
    assert_eq!(g.capacity(), 1);
    assert_eq!(g.request(types::IN, 0, 512), status::OK);
    assert_eq!(
        g.request(types::IN, 1, 512),
        status::IOERR,
        "past its one sector"
    );
    assert_eq!(g.request(types::OUT, 0, 512), status::IOERR);
    assert_eq!(g.request(types::FLUSH, 0, 0), status::OK);
    assert_eq!(
        slot.status(),
        VolumeSlotStatus {
            slot: 0,
            volume_id: None,
            size_bytes: 0
        }
    );
}

#[test]
fn attach_sets_the_capacity_and_raises_the_config_change_interrupt() {
    let slot = Arc::new(VolumeSlot::new(0));
    let mut g = guest(&slot);
    assert_eq!(g.isr(), 0);
    assert_eq!(g.config_interrupts(), 0);
    let log = Log::default();
    let st = attach(&slot, "vol-0a1b2c3d", TestDisk::new(16, 1, &log)).unwrap();
    assert_eq!(g.capacity(), 16);
    assert_eq!(g.isr(), ISR_CONFIG, "the ISR has the configuration bit");
    assert_eq!(g.isr(), 0, "and reading it cleared it");
    assert_eq!(g.config_interrupts(), 1, "the configuration vector fired");
    assert_eq!(st.volume_id.as_deref(), Some("vol-0a1b2c3d"));
    assert_eq!(st.size_bytes, 16 * 512);
    let mut generation = [0u8];
    g.drv.dev.bar_read(0, 0x15, &mut generation);
    assert_eq!(generation[0], 1, "the configuration generation moved on");
}

#[test]
fn io_after_attach_reaches_the_volume_and_get_id_is_the_volume_id() {
    let slot = Arc::new(VolumeSlot::new(0));
    let mut g = guest(&slot);
    let log = Log::default();
    attach(&slot, "vol-0123456789abcdef0", TestDisk::new(16, 1, &log)).unwrap();
    assert_eq!(g.request(types::IN, 3, 1024), status::OK);
    let data = g.data(1024);
    assert!(data[..512].iter().all(|b| *b == 4) && data[512..].iter().all(|b| *b == 5));
    assert_eq!(g.request(types::OUT, 0, 512), status::OK);
    assert_eq!(log.events(), ["read", "write"]);
    assert_eq!(g.request(types::GET_ID, 0, 20), status::OK);
    assert_eq!(g.data(20), b"vol-0123456789abcdef", "truncated to 20 bytes");
    assert_eq!(g.request(types::IN, 16, 512), status::IOERR, "past the end");
}

#[test]
fn detach_flushes_the_volume_and_later_requests_fail() {
    let slot = Arc::new(VolumeSlot::new(2));
    let mut g = guest(&slot);
    let log = Log::default();
    attach(&slot, "vol-1", TestDisk::new(8, 0, &log)).unwrap();
    assert_eq!(g.request(types::OUT, 1, 512), status::OK);
    g.config_interrupts();
    g.isr();
    let st = slot.detach().unwrap();
    assert_eq!(
        st,
        VolumeSlotStatus {
            slot: 2,
            volume_id: None,
            size_bytes: 0
        }
    );
    assert_eq!(log.flushes(), 1, "detach flushed the volume");
    assert_eq!(g.capacity(), 1);
    assert_eq!((g.isr(), g.config_interrupts()), (ISR_CONFIG, 1));
    assert_eq!(g.request(types::OUT, 0, 512), status::IOERR);
    assert_eq!(log.events(), ["write", "flush"], "nothing reached it after");
    assert!(matches!(slot.detach(), Err(SlotError::Empty { slot: 2 })));
}

#[test]
fn a_request_in_flight_during_detach_completes_against_the_old_volume_before_the_flush() {
    let slot = Arc::new(VolumeSlot::new(0));
    let mut g = guest(&slot);
    let log = Log::default();
    let (entered_tx, entered) = channel();
    let (release, release_rx) = channel();
    let mut disk = TestDisk::new(8, 7, &log);
    disk.hold = Some(Mutex::new((entered_tx, release_rx)));
    attach(&slot, "vol-1", disk).unwrap();
    g.post(types::IN, 0, 512);
    entered.recv().unwrap();
    let detaching = {
        let slot = slot.clone();
        std::thread::spawn(move || slot.detach())
    };
    release.send(()).unwrap();
    assert_eq!(g.complete(), status::OK, "the old volume served it");
    assert!(g.data(512).iter().all(|b| *b == 7));
    detaching.join().unwrap().unwrap();
    assert_eq!(log.events(), ["read", "flush"]);
    assert_eq!(g.request(types::OUT, 0, 512), status::IOERR);
    assert_eq!(log.events(), ["read", "flush"], "nothing reached it after");
}

#[test]
fn attach_to_an_occupied_slot_is_refused_and_changes_nothing() {
    let slot = Arc::new(VolumeSlot::new(1));
    let mut g = guest(&slot);
    let log = Log::default();
    attach(&slot, "vol-a", TestDisk::new(8, 0, &log)).unwrap();
    g.config_interrupts();
    let refused = slot.attach("vol-b", false, "/b", || panic!("must not open vol-b"));
    assert!(
        matches!(&refused, Err(SlotError::Occupied { slot: 1, volume_id }) if volume_id == "vol-a"),
        "{refused:?}"
    );
    assert_eq!(g.capacity(), 8);
    assert_eq!(g.config_interrupts(), 0, "the guest was not told anything");
    assert_eq!(slot.status().volume_id.as_deref(), Some("vol-a"));
}

#[test]
fn a_volume_that_cannot_be_opened_leaves_the_slot_empty_and_says_why() {
    let slot = Arc::new(VolumeSlot::new(0));
    let mut g = guest(&slot);
    let e = slot
        .attach("vol-x", false, "aoe:eth1:7.2", || {
            Err(io::Error::other("no target answered for shelf 7 slot 2"))
        })
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("aoe:eth1:7.2") && msg.contains("no target answered") && msg.contains("vol-x"),
        "{msg}"
    );
    assert_eq!(g.capacity(), 1);
    assert_eq!((g.isr(), g.config_interrupts()), (0, 0));
    assert_eq!(slot.status().volume_id, None);
    assert!(matches!(
        slot.attach("", false, "/f", || panic!("no id, no open")),
        Err(SlotError::NoVolumeId { .. })
    ));
}

#[test]
fn a_slot_outlives_its_device_and_a_new_device_serves_the_attached_volume() {
    let slot = Arc::new(VolumeSlot::new(0));
    let log = Log::default();
    drop(guest(&slot));
    attach(&slot, "vol-1", TestDisk::new(8, 3, &log)).unwrap();
    let mut g = guest(&slot);
    assert_eq!(g.capacity(), 8, "a rebooted guest sees the volume at probe");
    assert_eq!(g.request(types::IN, 0, 512), status::OK);
    slot.detach().unwrap();
    assert_eq!(g.config_interrupts(), 1, "the new device's vector fired");
}

#[test]
fn slots_are_numbered_and_a_missing_one_is_an_error() {
    let slots = VolumeSlots::new(2);
    assert_eq!(slots.status().len(), 2);
    assert_eq!(slots.status()[1].slot, 1);
    let e = slots.get(2).err().unwrap();
    assert_eq!(
        e.to_string(),
        "volume slot 2 does not exist (the VM has 2 volume slots)"
    );
}

/// A disk whose reads wait (up to 10 s) until `want` of them are in flight at once, and which
/// remembers the most it saw.
struct Gate {
    want: usize,
    inflight: std::sync::atomic::AtomicUsize,
    peak: Arc<std::sync::atomic::AtomicUsize>,
}

impl BlockBackend for Gate {
    fn size(&self) -> u64 {
        8 * 512
    }
    fn read_at(&self, buf: &mut [u8], _offset: u64) -> io::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.inflight.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(now, SeqCst);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.inflight.load(SeqCst) < self.want && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        buf.fill(0x42);
        // Stay counted until every reader has seen the others.
        std::thread::sleep(std::time::Duration::from_millis(20));
        self.inflight.fetch_sub(1, SeqCst);
        Ok(())
    }
    fn write_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn requests_the_guest_queues_together_run_at_the_same_time() {
    let slot = Arc::new(VolumeSlot::new(0));
    let mut g = guest(&slot);
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let gate = Gate {
        want: 4,
        inflight: Default::default(),
        peak: peak.clone(),
    };
    slot.attach("vol-c", false, "/c", || {
        Ok(Box::new(gate) as Box<dyn BlockBackend>)
    })
    .unwrap();
    for _ in 0..4 {
        g.post(types::IN, 0, 512);
    }
    assert_eq!(g.complete(), status::OK);
    assert_eq!(
        peak.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "all four reads were in the backend at once"
    );
    assert!(g.data(512).iter().all(|b| *b == 0x42));
}
