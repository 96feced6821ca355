//! virtio-net against a real tap, created in a network namespace of the test's own (so no frame
//! can leave it), observed from the host side with an AF_PACKET socket on the tap.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mallee_proto::Mac;
use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use super::port::Port;
use super::tap::{Tap, VNET_HDR_LEN};
use super::tap::{TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6};
use super::{place, tap_offloads, Net, Placed, NUM_BUFFERS};
use super::{F_GUEST_CSUM, F_GUEST_TSO4, F_GUEST_TSO6, F_HOST_TSO4};
use crate::devices::pci::PciDevice;
use crate::devices::virtio::pci::msix::NoRouter;
use crate::devices::virtio::pci::{VirtioPci, NOTIFY_MULTIPLIER, NOTIFY_OFFSET};
use crate::devices::virtio::test_utils::{chain, memory, wait_used, Driver};
use crate::devices::virtio::ActiveQueue;
use crate::devices::virtio::VIRTIO_F_VERSION_1;

const TAP: &str = "mvnet0";
const ETH_P_ALL: u16 = 0x0003;

fn check(rc: i32, what: &str) {
    assert!(
        rc >= 0,
        "{what} failed: {} (tests need root)",
        std::io::Error::last_os_error()
    );
}

/// Creates the tap and a packet socket on it inside a fresh network namespace.
fn tap_in_private_netns() -> (Tap, OwnedFd, i32) {
    std::thread::spawn(|| {
        // SAFETY: unshare only changes this thread's namespace membership.
        check(
            unsafe { libc::unshare(libc::CLONE_NEWNET) },
            "unshare(CLONE_NEWNET)",
        );
        let tap = Tap::open(TAP).expect("open a tap (needs /dev/net/tun and root)");
        // SAFETY: plain socket creation.
        let ctl = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        check(ctl, "socket");
        // SAFETY: `ctl` is a fresh socket we own.
        let ctl = unsafe { OwnedFd::from_raw_fd(ctl) };
        let mut ifr = [0u8; 40];
        ifr[..TAP.len()].copy_from_slice(TAP.as_bytes());
        // SAFETY: SIOCGIFINDEX/SIOCSIFFLAGS read and write a 40-byte struct ifreq.
        check(
            unsafe { libc::ioctl(ctl.as_raw_fd(), libc::SIOCGIFINDEX, ifr.as_mut_ptr()) },
            "SIOCGIFINDEX",
        );
        let ifindex = i32::from_ne_bytes(ifr[16..20].try_into().unwrap());
        ifr[16..18].copy_from_slice(&((libc::IFF_UP | libc::IFF_RUNNING) as i16).to_ne_bytes());
        // SAFETY: as above.
        check(
            unsafe { libc::ioctl(ctl.as_raw_fd(), libc::SIOCSIFFLAGS, ifr.as_mut_ptr()) },
            "SIOCSIFFLAGS",
        );
        // SAFETY: plain socket creation.
        let pkt = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                i32::from(ETH_P_ALL.to_be()),
            )
        };
        check(pkt, "socket(AF_PACKET)");
        // SAFETY: `pkt` is a fresh socket we own.
        let pkt = unsafe { OwnedFd::from_raw_fd(pkt) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid starting value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: the pointer and length describe `sll`.
        let rc = unsafe {
            libc::bind(
                pkt.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        check(rc, "bind(AF_PACKET)");
        (tap, pkt, ifindex)
    })
    .join()
    .unwrap()
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    f.extend_from_slice(&[0x88, 0xb5]); // local experimental EtherType
    f.extend_from_slice(payload);
    f
}

fn recv_containing(pkt: &OwnedFd, needle: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 2048];
    loop {
        // SAFETY: the pointer and length describe `buf`.
        let n = unsafe { libc::recv(pkt.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n > 0 {
            let got = &buf[..n as usize];
            if got.windows(needle.len()).any(|w| w == needle) {
                return got.to_vec();
            }
        }
        assert!(Instant::now() < deadline, "frame never seen on the tap");
        std::thread::yield_now();
    }
}

#[test]
fn frames_cross_between_the_queues_and_the_tap() {
    // SAFETY: geteuid cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped frames_cross_between_the_queues_and_the_tap: it needs root (a tap in a network namespace); run the tests as root, as CI does");
        return;
    }
    let (tap, pkt, ifindex) = tap_in_private_netns();
    let mem = memory();
    let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    // No address (SYSTEM mode): the port checks only the source MAC, which `frame` uses.
    let port = Port::new(Mac(mac), None, Arc::default());
    let net = Net::new(tap, port);
    let dev = VirtioPci::new(
        Box::new(net),
        mem.clone(),
        0xd000_0000,
        24,
        Arc::new(NoRouter),
    )
    .unwrap();
    let mut drv = Driver { dev };
    let offered = drv.features();
    assert_eq!(
        drv.r32(0x2000).to_le_bytes(),
        [0x52, 0x54, 0, 0x12],
        "MAC in config space"
    );
    assert_ne!(drv.ack(offered & (VIRTIO_F_VERSION_1 | 1 << 5)) & 8, 0);
    let rxq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    let txq = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
    drv.setup_queue(0, &rxq, 1);
    drv.setup_queue(1, &txq, 2);
    drv.driver_ok();

    // Guest -> tap.
    let out = frame(b"mallee-tx");
    mem.write_slice(&[0; VNET_HDR_LEN], GuestAddress(0x8000))
        .unwrap();
    mem.write_slice(&out, GuestAddress(0x8000 + VNET_HDR_LEN as u64))
        .unwrap();
    let len = (VNET_HDR_LEN + out.len()) as u32;
    txq.add_desc_chains(&chain(&[(0x8000, len, 0)]), 0).unwrap();
    drv.dev.bar_write(
        0,
        NOTIFY_OFFSET + u64::from(NOTIFY_MULTIPLIER),
        &1u16.to_le_bytes(),
    );
    wait_used(&txq, 1);
    assert_eq!(recv_containing(&pkt, b"mallee-tx"), out);

    // Tap -> guest.
    // The kernel may send its own frames (IPv6 neighbour discovery) on the new link; give the
    // device several buffers and look for ours among them.
    let rx_bufs: Vec<_> = (0..8u64)
        .map(|i| (0xa000 + i * 0x800, 0x800u32, VRING_DESC_F_WRITE))
        .collect();
    let descs: Vec<_> = rx_bufs.iter().flat_map(|b| chain(&[*b])).collect();
    rxq.add_desc_chains(&descs, 0).unwrap();
    drv.dev.bar_write(0, NOTIFY_OFFSET, &0u16.to_le_bytes());
    let inbound = frame(b"mallee-rx");
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid starting value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex;
    sll.sll_halen = 6;
    // SAFETY: the pointers and lengths describe `inbound` and `sll`.
    let n = unsafe {
        libc::sendto(
            pkt.as_raw_fd(),
            inbound.as_ptr().cast(),
            inbound.len(),
            0,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(n as usize, inbound.len());
    let deadline = Instant::now() + Duration::from_secs(10);
    let want = inbound.clone();
    loop {
        let found = rx_bufs.iter().any(|(a, _, _)| {
            let mut got = vec![0u8; VNET_HDR_LEN + want.len()];
            mem.read_slice(&mut got, GuestAddress(*a)).unwrap();
            got[VNET_HDR_LEN..] == want[..]
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "frame sent on the tap never reached a receive buffer"
        );
        std::thread::yield_now();
    }
}

#[test]
fn tap_gets_only_the_receive_offloads_the_guest_accepted() {
    assert_eq!(tap_offloads(0), 0);
    assert_eq!(
        tap_offloads(F_GUEST_TSO4),
        0,
        "TSO without checksum offload is invalid"
    );
    assert_eq!(tap_offloads(F_GUEST_CSUM), TUN_F_CSUM);
    assert_eq!(
        tap_offloads(F_GUEST_CSUM | F_GUEST_TSO4 | F_GUEST_TSO6 | F_HOST_TSO4),
        TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
    );
}

/// A receive queue of `n` one-descriptor chains of `size` bytes at 0x10000 onwards (writable,
/// or read-only where `read_only` says), as the device sees it once the driver posted them.
fn posted_rx<'m>(
    mem: &'m crate::devices::virtio::GuestMemoryMmap,
    chains: &[(u32, bool)],
) -> (
    MockSplitQueue<'m, crate::devices::virtio::GuestMemoryMmap>,
    ActiveQueue,
) {
    let vq = MockSplitQueue::create(mem, GuestAddress(0x1000), 16);
    let mut at = 0x10000u64;
    let descs: Vec<_> = (chains.iter())
        .flat_map(|&(size, read_only)| {
            let flags = if read_only { 0 } else { VRING_DESC_F_WRITE };
            let d = chain(&[(at, size, flags)]);
            at += u64::from(size);
            d
        })
        .collect();
    vq.add_desc_chains(&descs, 0).unwrap();
    let q = ActiveQueue {
        queue: vq.create_queue().unwrap(),
        notify: vmm_sys_util::eventfd::EventFd::new(0).unwrap(),
        irq: None,
    };
    (vq, q)
}

/// The used ring's entries as (chain head, length).
fn used(vq: &MockSplitQueue<'_, crate::devices::virtio::GuestMemoryMmap>) -> Vec<(u32, u32)> {
    (0..vq.used().idx().load())
        .map(|i| {
            let e = vq.used().ring().ref_at(usize::from(i)).unwrap().load();
            (e.id(), e.len())
        })
        .collect()
}

/// A frame of `len` bytes behind a zeroed virtio-net header, its bytes counting up.
fn rx_frame(len: usize) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN];
    f.extend((0..len).map(|i| i as u8));
    f
}

#[test]
fn a_mergeable_frame_spans_as_many_chains_as_it_needs_and_says_how_many() {
    let mem = memory();
    let (vq, mut q) = posted_rx(&mem, &[(1024, false); 4]);
    let mut frame = rx_frame(2500 - VNET_HDR_LEN);
    assert_eq!(place(&mem, &mut q, &mut frame, true), Placed::Used);
    assert_eq!(used(&vq), vec![(0, 1024), (1, 1024), (2, 452)]);
    let mut got = vec![0u8; 2500];
    mem.read_slice(&mut got, GuestAddress(0x10000)).unwrap();
    assert_eq!(&got[NUM_BUFFERS], &3u16.to_le_bytes(), "num_buffers");
    assert_eq!(got[VNET_HDR_LEN..], frame[VNET_HDR_LEN..]);
}

#[test]
fn a_frame_waits_untouched_until_the_guest_posts_enough_chains() {
    let mem = memory();
    let (vq, mut q) = posted_rx(&mem, &[(1024, false); 2]);
    let mut frame = rx_frame(2500 - VNET_HDR_LEN);
    assert_eq!(place(&mem, &mut q, &mut frame, true), Placed::NoRoom);
    assert!(
        used(&vq).is_empty(),
        "nothing is used before the frame fits"
    );
    // The driver posts two more (avail index 2 -> 4): the frame starts in the first chain.
    let more: Vec<_> = (2..4u64)
        .flat_map(|i| chain(&[(0x10000 + i * 1024, 1024, VRING_DESC_F_WRITE)]))
        .collect();
    vq.add_desc_chains(&more, 2).unwrap();
    vq.avail().idx().store(4);
    assert_eq!(place(&mem, &mut q, &mut frame, true), Placed::Used);
    assert_eq!(used(&vq), vec![(0, 1024), (1, 1024), (2, 452)]);
}

#[test]
fn without_mergeable_buffers_a_frame_fits_one_chain_or_is_dropped_into_it() {
    let mem = memory();
    let (vq, mut q) = posted_rx(&mem, &[(1024, false), (4096, false)]);
    let mut big = rx_frame(2000);
    assert_eq!(place(&mem, &mut q, &mut big, false), Placed::Used);
    let mut small = rx_frame(100);
    small[NUM_BUFFERS].copy_from_slice(&[0xaa, 0xbb]); // what a tap leaves there
    assert_eq!(place(&mem, &mut q, &mut small, false), Placed::Used);
    assert_eq!(used(&vq), vec![(0, 0), (1, 112)]);
    let mut header = [0u8; VNET_HDR_LEN];
    mem.read_slice(&mut header, GuestAddress(0x10000 + 1024))
        .unwrap();
    assert_eq!(
        &header[NUM_BUFFERS],
        &1u16.to_le_bytes(),
        "num_buffers is 1"
    );
}

#[test]
fn a_chain_the_device_cannot_write_drops_the_frame_into_every_chain_taken() {
    let mem = memory();
    let (vq, mut q) = posted_rx(&mem, &[(1024, false), (1024, true), (1024, false)]);
    let mut frame = rx_frame(2500 - VNET_HDR_LEN);
    assert_eq!(place(&mem, &mut q, &mut frame, true), Placed::Used);
    assert_eq!(used(&vq), vec![(0, 0), (1, 0)]);
    // The next frame starts at the chain after them.
    let mut small = rx_frame(64);
    assert_eq!(place(&mem, &mut q, &mut small, true), Placed::Used);
    assert_eq!(used(&vq)[2], (2, 76));
    // Shorter than its header: dropped, no chain taken.
    assert_eq!(place(&mem, &mut q, &mut [0u8; 4], true), Placed::Used);
    assert_eq!(used(&vq).len(), 3);
}
