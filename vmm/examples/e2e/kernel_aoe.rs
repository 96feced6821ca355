//! The Linux `aoe` driver against our AoE target inside the node, for `e2e_node`: two exports
//! on the storage end of a veth pair (its own namespace), configured as the storage controller
//! configures them; the driver, held to the node end, must read the one whose MAC list names
//! its interface (the bytes must be the known pattern) and get no device for the one allowing
//! only another MAC, which drops each of its queries unanswered. Waits are conditions (a
//! device present, a counter moved) under deadlines.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use crate::aoe_node::{self, ExportSpec, Veth};
use mallee_aoe::pattern::pattern;
use mallee_aoe::target::Target;
use mallee_aoe::wire::Mac;

/// The export the driver may read (its MAC list names the driver's interface).
const AOE_ALLOWED: (u16, u8) = (7, 1);
/// The export that allows only [`AOE_OTHER_MAC`].
const AOE_REFUSED: (u16, u8) = (7, 2);
const AOE_OTHER_MAC: Mac = Mac([0x02, 0x00, 0x00, 0xe2, 0xe0, 0x99]);
/// The veth pair: the driver's end in the node's namespace, the exports' end in their own.
const AOE_NS: &str = "e2e-store";
const AOE_NODE_IF: &str = "aoe-node";
const AOE_STORE_IF: &str = "aoe-store";
/// The pattern seed of the allowed export's first MiB.
const AOE_SEED: u64 = 7;
const MIB: usize = 1 << 20;
/// What the check reads through the driver: one page, straight from the target (`O_DIRECT`).
/// Bulk reads through the driver are `mallee-aoe`'s `kernel_initiator` test; on this 2-vCPU
/// node the driver now and then left a read in flight with nothing sent for a minute (702
/// frames answered, `inflight=1`, no retransmission), so this check reads no more than it
/// must to see the export's bytes.
const READ_BYTES: usize = 4096;

/// What the Linux driver did with our two exports.
pub struct KernelAoe {
    /// The allowed export's first MiB read through the driver matched the pattern.
    read_ok: bool,
    /// Bytes the allowed export served.
    served: u64,
    /// Queries the refused export dropped, and whether a second round (after the allowed
    /// device appeared) was dropped too.
    refused: u64,
    second_round: bool,
    /// Responses the refused export sent (must be none).
    answered: u64,
    /// Whether the driver made a device for the refused export.
    device: bool,
}

impl KernelAoe {
    pub fn ok(&self) -> bool {
        self.read_ok
            && self.served >= READ_BYTES as u64
            && self.second_round
            && self.answered == 0
            && !self.device
    }

    pub fn lines(&self) -> [String; 2] {
        let (a, r) = (AOE_ALLOWED, AOE_REFUSED);
        [
            format!(
                "vmm-e2e-node: kernel aoe e{}.{} match={} served={}",
                a.0, a.1, self.read_ok, self.served
            ),
            format!(
                "vmm-e2e-node: kernel aoe e{}.{} refused={} second_round={} answered={} device={}",
                r.0, r.1, self.refused, self.second_round, self.answered, self.device
            ),
        ]
    }
}

/// How long the driver may take to read the allowed export's first MiB (it takes well under a
/// second when it works).
const READ_LIMIT: Duration = Duration::from_secs(60);

/// The first [`READ_BYTES`] of `dev` read through the driver, or an error after [`READ_LIMIT`]
/// naming what the export saw and the driver's state (the read itself is left blocked in the
/// kernel).
fn read_head(dev: &str, export: &Target) -> Result<Vec<u8>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = dev.to_string();
    std::thread::spawn(move || {
        use std::os::unix::fs::OpenOptionsExt;
        // O_DIRECT wants an aligned buffer: take the aligned page inside a bigger one.
        let mut buf = vec![0u8; 2 * READ_BYTES];
        let skew = buf.as_ptr().align_offset(READ_BYTES);
        let page = &mut buf[skew..skew + READ_BYTES];
        let read = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .and_then(|mut f| f.read_exact(page));
        let _ = tx.send(read.map(|_| page.to_vec()));
    });
    let started = std::time::Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(read) => return read.map_err(|e| format!("read {dev}: {e}")),
            Err(_) if started.elapsed() < READ_LIMIT => {
                crate::common::say(&format!(
                    "vmm-e2e-node: kernel aoe read of {dev} waiting {} s: export {:?}, driver {}",
                    started.elapsed().as_secs(),
                    export.stats(),
                    driver_state(dev)
                ));
            }
            Err(_) => {
                return Err(format!(
                    "the driver's read of {dev} did not finish in {} s: export {:?}, driver {}",
                    READ_LIMIT.as_secs(),
                    export.stats(),
                    driver_state(dev)
                ))
            }
        }
    }
}

/// The Linux driver's view of the device `dev` (`/dev/etherd/eS.L`): its sysfs `state`
/// (`up`, `down`, `kickme`, ...) and I/O counters in flight.
pub fn driver_state(dev: &str) -> String {
    let name = dev.rsplit('/').next().unwrap_or(dev);
    let read = |file: &str| {
        let path = format!("/sys/block/etherd!{name}/{file}");
        std::fs::read_to_string(&path).map_or_else(|e| format!("({e})"), |s| s.trim().to_string())
    };
    format!("state={} inflight={}", read("state"), read("inflight"))
}

/// The Linux `aoe` driver, held to the node end of a veth pair, against two of our exports on
/// the other end: reads the allowed one (bytes against the pattern), and sees the refused one
/// drop two rounds of its queries, the second after the allowed one's device appeared, with
/// no device for it.
pub fn check() -> Result<KernelAoe, String> {
    // The driver, held to the node end before that exists, queries nothing until asked to.
    aoe_node::load_modules(&[("aoe", &format!("aoe_iflist={AOE_NODE_IF}"))])?;
    let veth = Veth::new(AOE_NS, AOE_NODE_IF, AOE_STORE_IF, 1500)?;
    let node_mac = aoe_node::mac_of(&veth.outer)?;
    let mut contents = pattern(MIB, AOE_SEED);
    contents.resize(4 * MIB, 0);
    let export = |(shelf, slot): (u16, u8), backing: &str, allowed: Mac| {
        std::fs::write(backing, &contents).map_err(|e| format!("{backing}: {e}"))?;
        let spec = ExportSpec {
            backing: Path::new(backing),
            shelf,
            slot,
            allowed: vec![allowed],
        };
        aoe_node::serve(&veth, &spec)
    };
    let allowed = export(AOE_ALLOWED, "/tmp/aoe-allowed.img", node_mac)?;
    let refused = export(AOE_REFUSED, "/tmp/aoe-refused.img", AOE_OTHER_MAC)?;
    let (dev_allowed, dev_refused) = (
        aoe_node::etherd_device(AOE_ALLOWED.0, AOE_ALLOWED.1),
        aoe_node::etherd_device(AOE_REFUSED.0, AOE_REFUSED.1),
    );
    let found = aoe_node::discover_until(Duration::from_secs(60), || {
        Path::new(&dev_allowed).exists() && refused.stats().dropped_acl > 0
    })?;
    if !found {
        return Err(format!(
            "after 60 s: {dev_allowed} present={}, refused export {:?}",
            Path::new(&dev_allowed).exists(),
            refused.stats()
        ));
    }
    let head = read_head(&dev_allowed, &allowed)?;
    // One more round, wholly after the allowed device appeared: the refused export must drop
    // it too, and the driver must still have no device for it.
    let before = refused.stats().dropped_acl;
    let second_round = aoe_node::discover_until(Duration::from_secs(30), || {
        refused.stats().dropped_acl > before
    })?;
    let sysfs = format!("/sys/block/etherd!e{}.{}", AOE_REFUSED.0, AOE_REFUSED.1);
    let r = refused.stats();
    Ok(KernelAoe {
        read_ok: head[..] == pattern(MIB, AOE_SEED)[..READ_BYTES],
        served: allowed.stats().bytes_read,
        refused: r.dropped_acl,
        second_round,
        answered: r.frames_out,
        device: Path::new(&dev_refused).exists() || Path::new(&sysfs).exists(),
    })
}
