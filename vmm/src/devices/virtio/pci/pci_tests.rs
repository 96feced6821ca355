//! Transport tests: a driver's init sequence over BAR accesses, then real requests served by the
//! device's worker thread.

use std::sync::Arc;

use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use super::msix::NoRouter;
use super::*;
use crate::devices::virtio::block::backend::MemBackend;
use crate::devices::virtio::block::request::{types, RequestHeader};
use crate::devices::virtio::block::Block;
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::test_utils::{chain, memory, wait_used, Driver};

#[test]
fn block_device_serves_a_read_after_driver_init() {
    let mem = memory();
    let data: Vec<u8> = (0..4096).map(|i| (i / 512) as u8 + 1).collect();
    let backend = Box::new(MemBackend::new(data));
    let blk = Block::new(backend, false, Some("disk0"));
    let dev = VirtioPci::new(
        Box::new(blk),
        mem.clone(),
        0xd000_0000,
        24,
        Arc::new(NoRouter),
    )
    .unwrap();
    let mut drv = Driver { dev };
    let offered = drv.features();
    assert_ne!(offered & VIRTIO_F_VERSION_1, 0);
    // Capacity: 8 sectors, little-endian at device config offset 0.
    assert_eq!(drv.r32(DEVICE_OFFSET), 8);
    assert_ne!(drv.ack(VIRTIO_F_VERSION_1) & status::FEATURES_OK, 0);
    let vq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    drv.setup_queue(0, &vq, 1);
    drv.status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
    assert_eq!(drv.dev.device_status() & status::NEEDS_RESET, 0);

    let hdr = RequestHeader {
        kind: types::IN,
        reserved: 0,
        sector: 2,
    };
    mem.write_obj(hdr, GuestAddress(0x8000)).unwrap();
    let w = VRING_DESC_F_WRITE;
    vq.add_desc_chains(
        &chain(&[(0x8000, 16, 0), (0x9000, 512, w), (0xa000, 1, w)]),
        0,
    )
    .unwrap();
    drv.dev.bar_write(0, NOTIFY_OFFSET, &0u16.to_le_bytes());
    wait_used(&vq, 1);
    let mut got = [0u8; 512];
    mem.read_slice(&mut got, GuestAddress(0x9000)).unwrap();
    assert!(got.iter().all(|b| *b == 3));
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0xa000)).unwrap(), 0);
    let irqs = drv.dev.interrupt_eventfds();
    assert!(irqs[1].1.read().unwrap() >= 1, "vector 1 was signalled");
    assert_eq!(irqs[1].0, 25);

    // Reset hands the backend back; the device can be brought up again.
    assert_eq!(drv.status(0), 0);
    assert_ne!(drv.ack(VIRTIO_F_VERSION_1) & status::FEATURES_OK, 0);
}

#[test]
fn features_the_device_did_not_offer_are_refused() {
    let dev = VirtioPci::new(
        Box::new(Rng::new()),
        memory(),
        0xd000_0000,
        24,
        Arc::new(NoRouter),
    )
    .unwrap();
    let mut drv = Driver { dev };
    assert_eq!(
        drv.ack(VIRTIO_F_VERSION_1 | 1 << 5) & status::FEATURES_OK,
        0
    );
    assert_eq!(
        drv.ack(0) & status::FEATURES_OK,
        0,
        "legacy drivers are refused"
    );
}

#[test]
fn queue_outside_memory_fails_activation_without_crashing() {
    let mem = memory();
    let dev = VirtioPci::new(
        Box::new(Rng::new()),
        mem.clone(),
        0xd000_0000,
        24,
        Arc::new(NoRouter),
    )
    .unwrap();
    let mut drv = Driver { dev };
    drv.ack(VIRTIO_F_VERSION_1);
    drv.w16(0x18, 16);
    drv.w32(0x20, 0xffff_0000);
    drv.w16(0x1c, 1);
    drv.status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
    assert_ne!(drv.dev.device_status() & status::NEEDS_RESET, 0);
}

#[test]
fn rng_fills_guest_buffers() {
    let mem = memory();
    let dev = VirtioPci::new(
        Box::new(Rng::new()),
        mem.clone(),
        0xd000_0000,
        24,
        Arc::new(NoRouter),
    )
    .unwrap();
    let mut drv = Driver { dev };
    drv.ack(VIRTIO_F_VERSION_1);
    let vq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    drv.setup_queue(0, &vq, 0);
    drv.status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
    vq.add_desc_chains(&chain(&[(0x9000, 64, VRING_DESC_F_WRITE)]), 0)
        .unwrap();
    drv.dev.bar_write(0, NOTIFY_OFFSET, &0u16.to_le_bytes());
    wait_used(&vq, 1);
    let mut got = [0u8; 64];
    mem.read_slice(&mut got, GuestAddress(0x9000)).unwrap();
    assert!(
        got.iter().any(|b| *b != 0),
        "64 random bytes are not all zero"
    );
}
