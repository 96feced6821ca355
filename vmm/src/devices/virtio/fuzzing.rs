//! Byte-driven harnesses for the parts a guest controls: a virtio-blk request, a virtio-net
//! transmit chain, the receive chains a frame is placed in, a frame through the guest's port, what it sends the metadata service and
//! the walk of a descriptor chain. The cargo-fuzz targets in `vmm/fuzz/` and a bounded randomized unit test call
//! the same functions, so both exercise one code path.
//!
//! Input layout: 16 descriptors (16 bytes each: addr, len, flags, next) for a 16-entry queue laid
//! out at guest address 0, then a head index byte and an avail-index byte, then bytes copied into
//! guest memory at [`PAYLOAD`] (where well-formed descriptors tend to point). Descriptor addresses
//! are used as given, so some land outside the 1 MiB of guest memory.

use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::block::backend::MemBackend;
use super::block::request::{self, Disk};
use super::GuestMemoryMmap;

/// Where the payload bytes are copied.
pub const PAYLOAD: u64 = 0x1_0000;
const QUEUE: u16 = 16;
const MEM: usize = 1 << 20;

struct Setup {
    mem: GuestMemoryMmap,
    queue: Queue,
}

fn setup(data: &[u8]) -> Option<Setup> {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).ok()?;
    let vq = MockSplitQueue::new(&mem, QUEUE);
    let table = data.get(..16 * usize::from(QUEUE))?;
    for (i, d) in table.chunks_exact(16).enumerate() {
        let mut raw = [0u8; 16];
        raw.copy_from_slice(d);
        // RawDescriptor is the 16-byte little-endian table entry.
        let desc: RawDescriptor = vm_memory::ByteValued::from_slice(&raw).copied()?;
        vq.desc_table().store(i as u16, desc).ok()?;
    }
    let rest = &data[table.len()..];
    let head = u16::from(*rest.first()?) % QUEUE;
    let avail_idx = u16::from(*rest.get(1)?);
    vq.avail().ring().ref_at(0).ok()?.store(head);
    vq.avail().idx().store(avail_idx);
    let payload = &rest[2..];
    let n = payload.len().min(MEM - PAYLOAD as usize);
    mem.write_slice(&payload[..n], GuestAddress(PAYLOAD)).ok()?;
    let queue = vq.create_queue().ok()?;
    Some(Setup { mem, queue })
}

/// Runs every chain the input makes available as virtio-blk requests against an 8-sector disk.
pub fn blk_request(data: &[u8]) {
    let Some(mut s) = setup(data) else {
        return;
    };
    let disk = Disk {
        backend: MemBackend::new(vec![0x11; 8 * 512]),
        read_only: data.first().is_some_and(|b| b & 1 == 1),
        serial: [b's'; 20],
        discard: true,
    };
    // At most QUEUE chains per notification; the queue caps the walk.
    let mut served = 0;
    while let Some(chain) = s.queue.pop_descriptor_chain(&s.mem) {
        let head = chain.head_index();
        let done = request::process(&s.mem, chain, &disk);
        assert!(matches!(done.status, None | Some(0..=2)));
        let _ = s.queue.add_used(&s.mem, head, done.used_len);
        served += 1;
        assert!(
            served <= 256,
            "avail ring produced more chains than its index allows"
        );
    }
    assert_eq!(
        disk.backend.data().len(),
        8 * 512,
        "the disk never changes size"
    );
}

/// Walks every available chain: descriptor count, readable/writable byte totals, and an
/// entropy-device fill (bounded) through the same Writer path the devices use.
pub fn desc_chain(data: &[u8]) {
    let Some(mut s) = setup(data) else {
        return;
    };
    let mut chains = 0;
    while let Some(chain) = s.queue.pop_descriptor_chain(&s.mem) {
        let descs = chain.clone().count();
        // Direct chains stop at the queue size; an indirect table at its own (u16) size.
        assert!(descs <= usize::from(u16::MAX));
        let _ = super::rng::serve_chain(&s.mem, chain);
        chains += 1;
        assert!(chains <= 256);
    }
}

/// Reads every available chain as a virtio-net transmit (header and frame), as the device does
/// before writing the frame to its tap.
pub fn net_tx(data: &[u8]) {
    let Some(mut s) = setup(data) else {
        return;
    };
    let mut frame = vec![0u8; super::net::MAX_FRAME];
    let mut chains = 0;
    while let Some(chain) = s.queue.pop_descriptor_chain(&s.mem) {
        if let Some(len) = super::net::read_tx_frame(&s.mem, chain, &mut frame) {
            assert!((super::net::tap::VNET_HDR_LEN..=super::net::MAX_FRAME).contains(&len));
        }
        chains += 1;
        assert!(chains <= 256);
    }
}

/// Places received frames into every chain the input makes available, as the device does with
/// what its tap delivers (the payload's first byte picks mergeable buffers or not, its second
/// the frame size): no panic, and never more chains used than were posted.
pub fn net_rx(data: &[u8]) {
    let Some(s) = setup(data) else {
        return;
    };
    let rest = &data[16 * usize::from(QUEUE) + 2..];
    let mergeable = rest.first().is_some_and(|b| b & 1 == 1);
    let len = super::net::tap::VNET_HDR_LEN + 64 * usize::from(rest.get(1).copied().unwrap_or(1));
    let Ok(notify) = vmm_sys_util::eventfd::EventFd::new(0) else {
        return;
    };
    let mut q = super::ActiveQueue {
        queue: s.queue,
        notify,
        irq: None,
    };
    let mut frame = vec![0x5a; len];
    for _ in 0..=QUEUE {
        if super::net::place(&s.mem, &mut q, &mut frame, mergeable) == super::net::Placed::NoRoom {
            break;
        }
    }
    assert!(q.queue.next_used() <= QUEUE * 2);
}

/// One frame a guest sends through its port (the first byte picks an addressed NIC or not):
/// every verdict is reached without a panic, and every answer is an IPv4/UDP frame to the guest.
pub fn guest_port(data: &[u8]) {
    use super::net::port::{Port, Verdict};
    use mallee_proto::vmm::GuestAddress;
    use smoltcp::wire::{EthernetFrame, Ipv4Packet};

    let Some((&pick, frame)) = data.split_first() else {
        return;
    };
    let mac = mallee_proto::Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    let address = (pick & 1 == 1).then(|| GuestAddress {
        address: [10, 7, 0, 5].into(),
        prefix_len: 24,
        gateway: (pick & 2 == 2).then(|| [10, 7, 0, 1].into()),
        dns: vec![[10, 7, 0, 1].into()],
        hostname: Some("i-fuzz".into()),
    });
    let port = Port::new(mac, address, Default::default());
    if let Verdict::Answer(answer) = port.check(frame) {
        let eth = EthernetFrame::new_checked(&answer[..]).expect("answer is Ethernet");
        assert_eq!(eth.dst_addr().0, mac.octets());
        Ipv4Packet::new_checked(eth.payload()).expect("answer is IPv4");
    }
}

/// What a guest sends the metadata service: the bytes as one HTTP request head, then as frames
/// (each behind a 2-byte length) into the service's TCP/IP, under options the first byte picks
/// (tokens required, endpoint disabled, hop limit) and that a length of 0 toggles through
/// [`MetadataService::update`]. No panic, and every frame out is Ethernet from the service's
/// MAC.
pub fn metadata_service(data: &[u8]) {
    use super::net::imds::{take_head, Imds, Parsed};
    use super::net::metadata::MetadataService;
    use super::net::port::SERVICE_MAC;
    use mallee_proto::vmm::InstanceMetadata;
    use mallee_proto::{HttpEndpoint, HttpTokens, MetadataOptions};
    use smoltcp::wire::EthernetFrame;

    let pick = data.first().copied().unwrap_or(0);
    let options = |pick: u8| MetadataOptions {
        http_tokens: match pick & 1 {
            0 => HttpTokens::Optional,
            _ => HttpTokens::Required,
        },
        // Disabled only when two bits say so: most inputs should reach the TCP/IP.
        http_endpoint: match pick & 6 {
            6 => HttpEndpoint::Disabled,
            _ => HttpEndpoint::Enabled,
        },
        http_put_response_hop_limit: (pick >> 3) % 64 + 1,
    };
    let content = |pick: u8| InstanceMetadata {
        user_data: Some("aGk=".into()),
        options: options(pick),
        ..Default::default()
    };
    let now = std::time::Instant::now();
    let _ = Imds::new(content(pick)).answer(data, now);
    if let Parsed::Done(head, len) = take_head(data) {
        assert!(len <= data.len() && head.len() == len);
    }
    let mut service = MetadataService::new(content(pick));
    let mut flip = pick;
    let mut rest = data;
    while let [a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
        if len == 0 {
            flip = flip.rotate_left(1);
            service.update(content(flip));
        }
        let (frame, next) = tail.split_at(len);
        for out in service.handle(frame) {
            let eth = EthernetFrame::new_checked(&out[..]).expect("the service sends Ethernet");
            assert_eq!(eth.src_addr().0, SERVICE_MAC.octets());
        }
        rest = next;
    }
}
