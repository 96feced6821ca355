//! Types and JSON of the node <-> frontend protocol, and the instance metadata document.
//! The node agent <-> `mallee-vmm` contract (configuration, control socket, exit statuses,
//! failure report) is [`vmm`]; the `mallee.*` kernel command-line keys that the PXE service and
//! the image builder write and init reads are [`cmdline`]; the flashable appliance's A/B slots
//! (feature `appliance`) are `appliance`; the network benchmark's TCP protocol, which the test
//! guest serves and the benchmark's host side speaks, is [`netbench`].
//!
//! The protocol is JSON over HTTP on the frontend's API port, under `/_node/` (no S3 bucket
//! name can start with `_`, so it never collides with Walrus):
//!
//! 1. `POST /_node/enroll` with [`EnrollRequest`] (the cluster secret from the node's kernel
//!    command line, the node's MACs, and the token it holds if any) → [`EnrollResponse`]
//!    carrying a per-node token. Every later request sends `Authorization: Bearer <token>`. A
//!    node not admitted yet (its MAC not listed by the frontend, no admin approval), and a claim
//!    on an id a live node holds without that node's token, get 403 with a message saying what
//!    to do; the node keeps retrying.
//! 2. `POST /_node/register` with [`NodeInfo`] → [`RegisterResponse`] (timing the node uses).
//! 3. `GET /_node/desired?generation=G` → [`DesiredState`]: answered at once when the stored
//!    desired state differs from generation `G`, else held until it changes or the long-poll
//!    time passes. The node reconciles towards it (level-triggered: the whole state each time).
//! 4. `POST /_node/report` with [`ActualState`] (every instance the node knows, its image cache);
//!    it doubles as the heartbeat. `POST /_node/console` with [`ConsoleReport`].
//!
//! Errors come back as a non-2xx status with an [`ErrorBody`]. This crate knows nothing of
//! HTTP clients, servers or storage; it only fixes the shapes and their JSON.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[cfg(feature = "appliance")]
pub mod appliance;
pub mod cmdline;
pub mod fsio;
pub mod gateway;
pub mod handoff;
mod log_level;
mod metadata;
pub mod netbench;
pub mod root_device;
#[cfg(any(test, feature = "test-support"))]
pub mod root_device_fixtures;
pub mod storage;
#[cfg(feature = "tls")]
pub mod tls;
pub mod vmm;
pub use log_level::LogLevel;
pub use mallee_mac::{BadMac, Mac};
pub use metadata::{
    HttpEndpoint, HttpTokens, MetadataDocument, MetadataOptions, PublicKey, HOP_LIMITS,
};
pub use root_device::RootDevice;

pub const PATH_PREFIX: &str = "/_node/";
pub const PATH_ENROLL: &str = "/_node/enroll";
pub const PATH_REGISTER: &str = "/_node/register";
pub const PATH_DESIRED: &str = "/_node/desired";
pub const PATH_REPORT: &str = "/_node/report";
pub const PATH_CONSOLE: &str = "/_node/console";

/// Why a protocol message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("malformed protocol message: {0}")]
    Json(#[from] serde_json::Error),
}

/// Serializes a message.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Every message type is plain data (strings, numbers, vectors): serializing cannot fail.
    serde_json::to_vec(msg).unwrap_or_default()
}

/// Parses a message.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtoError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// First contact: proves knowledge of the cluster secret. The secret alone admits nobody: the
/// frontend admits a node whose MAC it lists or an admin approved, and lets an enrollment under
/// the id of a live node in only with that node's current token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub node_id: String,
    pub cluster: String,
    pub secret: String,
    /// The node's NIC addresses (what the frontend's admission list names).
    #[serde(default)]
    pub macs: Vec<Mac>,
    /// The token the node holds from an earlier enrollment (none after a boot): a live node
    /// enrolling again proves with it that it is the node holding the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The node's own credential for every later request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub token: String,
}

/// What a node has to offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node_id: String,
    pub cluster: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub macs: Vec<Mac>,
    pub agent_version: String,
    /// The kernel's random id of this boot (`/proc/sys/kernel/random/boot_id`): a node that
    /// registers with a new one has rebooted, and lost the instances it was running.
    #[serde(default)]
    pub boot_id: String,
}

/// Timing the frontend expects from the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// Report at least this often, or be marked down.
    pub report_every_secs: u64,
    /// How long `desired` may hold a request.
    pub long_poll_secs: u64,
}

/// What the node should be running: every instance placed on it that is not yet terminated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    /// Opaque; send it back to wait for the next change.
    pub generation: String,
    pub instances: Vec<InstanceSpec>,
}

/// The state the frontend wants an instance in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Goal {
    Running,
    Stopped,
    Terminated,
}

/// One instance as the node must run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    pub instance_id: String,
    pub goal: Goal,
    /// Bumped by RebootInstances: a node that last saw a lower value reboots the instance.
    pub reboot_count: u32,
    pub instance_type: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub image: ImageRef,
    pub kernel: Option<ImageRef>,
    pub ramdisk: Option<ImageRef>,
    /// Base64, as the client gave it.
    pub user_data: Option<String>,
    pub mac: Mac,
    pub metadata: MetadataDocument,
    /// How its metadata service behaves; the node changes a running VMM's without a restart.
    #[serde(default)]
    pub metadata_options: MetadataOptions,
    /// Size of the instance's ephemeral disk (`ephemeral0`, the guest's second disk) the
    /// instance type names; 0 for none.
    #[serde(default)]
    pub ephemeral_gib: u64,
    /// The instance's network interface; `None`: the instance has no NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<InstanceNetwork>,
    /// EBS volumes the instance should have attached, each served over AoE by the frontend's
    /// storage controller to this node's MACs only. A volume no longer listed is detached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeAttachment>,
    /// EBS-backed: the volume the instance boots from (its first disk, `/dev/vda`), instead of
    /// a copy of `image`. The node reports it among `volumes` while its VMM runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_volume: Option<VolumeAttachment>,
    /// What the guest's kernel command line names its root file system by (`root=`), as the
    /// frontend read it from the image when it was registered; `None` (an image it could not
    /// read one from, or registered before it did): `/dev/vda`, the first disk as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device: Option<RootDevice>,
}

/// Most volumes one instance can have attached at once (the VMM's pre-provisioned slots).
pub const MAX_VOLUMES: usize = 8;

/// One EBS volume as the node attaches it: the AoE address the storage controller exports it
/// at, on the segment the node's private NIC is on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VolumeAttachment {
    pub volume_id: String,
    /// The device name the user asked for (`/dev/sdf`); the guest names its disks itself.
    pub device: String,
    pub shelf: u16,
    pub slot: u8,
}

/// The first two bytes of every instance's MAC: the frontend's DHCP (which serves nodes) never
/// answers these, so in SYSTEM mode the site's DHCP server is the one instances hear.
pub const INSTANCE_MAC_PREFIX: [u8; 2] = [0xd0, 0x0d];

/// The MAC of the `n`th instance the frontend launched.
pub fn instance_mac(n: u32) -> Mac {
    let [p0, p1] = INSTANCE_MAC_PREFIX;
    let b = n.to_be_bytes();
    Mac([p0, p1, b[0], b[1], b[2], b[3]])
}

/// Whether `mac` is an instance's (see [`INSTANCE_MAC_PREFIX`]).
pub fn is_instance_mac(mac: Mac) -> bool {
    mac.0[..2] == INSTANCE_MAC_PREFIX
}

/// Where an instance's NIC is plugged on the node, and the address its VMM hands it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceNetwork {
    pub segment: Segment,
    /// The guest's address and DHCP answer; `None` in SYSTEM mode (the site's DHCP answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<vmm::GuestAddress>,
}

/// The layer-2 segment an instance's tap joins on its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Segment {
    /// MANAGED: the bridge of this 802.1Q tag on the node's private NIC (`<nic>.<vlan>`).
    Vlan(u16),
    /// MANAGED-NOVLAN: one untagged instance bridge on the private NIC.
    Untagged,
    /// SYSTEM: bridged straight onto the node's NIC, on the site's own network.
    System,
}

/// An image the node fetches from Walrus and verifies before use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    pub image_id: String,
    pub bucket: String,
    pub key: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the whole object.
    pub sha256: String,
}

/// What the node sees an instance doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Observed {
    /// Fetching images or booting.
    Pending,
    Running,
    Stopped,
    /// Gone from the node (after a terminate goal).
    Terminated,
    /// Could not be started or died; `reason` says why.
    Failed,
    /// The guest powered itself off (its VMM exited through ACPI S5) while meant to run: the
    /// node leaves it down, and the frontend stops or terminates it as its shutdown behaviour
    /// says.
    ShutDown,
}

/// One instance as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceReport {
    pub instance_id: String,
    pub state: Observed,
    pub reason: Option<String>,
    pub reboot_count: u32,
    /// The guest took its address since its VMM last started (the VMM answered its DHCP
    /// request or saw its ARP; SYSTEM: saw it use one); always false for an instance without a
    /// network.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub address_taken: bool,
    /// The address the guest took when its VMM did not hand it out (SYSTEM: the site's DHCP
    /// server did), as the VMM saw the guest use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
    /// The metadata options its VMM confirmed it serves with; `None` while no VMM runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_options: Option<MetadataOptions>,
    /// The volumes its running VMM says it has attached (their ids), and nothing else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
}

/// An image held in the node's cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedImage {
    pub sha256: String,
    pub size: u64,
}

/// Where a node keeps its image cache and instance disks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Storage {
    /// A tmpfs in the node's memory (a diskless node).
    #[default]
    Ram,
    /// The node's local disk.
    Disk,
}

/// The image cache's totals, for operators (and the tests that check a cached launch fetched
/// nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheSummary {
    pub storage: Storage,
    pub budget_bytes: u64,
    pub used_bytes: u64,
    /// Downloads started since the node booted.
    pub downloads: u64,
    /// Requests served from the cache (verified, not fetched) since the node booted.
    pub hits: u64,
}

/// Everything the node knows, each time (so a lost report costs nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActualState {
    pub instances: Vec<InstanceReport>,
    pub image_cache: Vec<CachedImage>,
    #[serde(default)]
    pub cache: CacheSummary,
}

/// The recent console output of one instance (the whole retained tail, not a delta).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleReport {
    pub instance_id: String,
    pub output: String,
}

/// Body of a non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> InstanceSpec {
        let image = ImageRef {
            image_id: "emi-0123abcd".into(),
            bucket: "images".into(),
            key: "root.img".into(),
            size: 4096,
            sha256: "ab".repeat(32),
        };
        InstanceSpec {
            instance_id: "i-0123456789abcdef0".into(),
            goal: Goal::Running,
            reboot_count: 0,
            instance_type: "m1.small".into(),
            vcpus: 1,
            memory_mib: 256,
            kernel: Some(ImageRef {
                image_id: "eki-0123abcd".into(),
                ..image.clone()
            }),
            ramdisk: None,
            image,
            user_data: Some("aGVsbG8=".into()),
            mac: "d0:0d:01:23:45:67".parse().unwrap(),
            metadata: MetadataDocument::default(),
            metadata_options: MetadataOptions {
                http_tokens: HttpTokens::Required,
                ..MetadataOptions::default()
            },
            ephemeral_gib: 5,
            network: Some(InstanceNetwork {
                segment: Segment::Vlan(100),
                address: None,
            }),
            volumes: vec![VolumeAttachment {
                volume_id: "vol-0123456789abcdef0".into(),
                device: "/dev/sdf".into(),
                shelf: 100,
                slot: 3,
            }],
            root_volume: Some(VolumeAttachment {
                volume_id: "vol-0000abcd".into(),
                device: "/dev/vda".into(),
                shelf: 100,
                slot: 4,
            }),
            root_device: Some("PARTUUID=0badcafe-01".parse().unwrap()),
        }
    }

    #[test]
    fn desired_state_round_trips_through_json() {
        let d = DesiredState {
            generation: "e1-7".into(),
            instances: vec![spec()],
        };
        let bytes = encode(&d);
        assert_eq!(decode::<DesiredState>(&bytes).unwrap(), d);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"goal\":\"running\""), "{text}");
        assert!(text.contains("\"http_tokens\":\"required\""), "{text}");
    }

    #[test]
    fn a_spec_without_metadata_options_gets_ec2s_defaults() {
        let mut old = serde_json::to_value(spec()).unwrap();
        old.as_object_mut().unwrap().remove("metadata_options");
        let s: InstanceSpec = serde_json::from_value(old).unwrap();
        assert_eq!(s.metadata_options, MetadataOptions::default());
    }

    #[test]
    fn a_spec_without_a_root_device_parses_and_a_bad_one_does_not() {
        let mut old = serde_json::to_value(spec()).unwrap();
        assert_eq!(old["root_device"], "PARTUUID=0badcafe-01");
        old.as_object_mut().unwrap().remove("root_device");
        let s: InstanceSpec = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(s.root_device, None);
        old["root_device"] = "/dev/vda init=/bin/sh".into();
        assert!(serde_json::from_value::<InstanceSpec>(old).is_err());
    }

    #[test]
    fn report_parses_from_the_documented_json() {
        let text = r#"{"instances":[{"instance_id":"i-1","state":"failed",
            "reason":"image sha256 mismatch","reboot_count":0}],
            "image_cache":[{"sha256":"00","size":1}]}"#;
        let mut r: ActualState = decode(text.as_bytes()).unwrap();
        assert_eq!(r.instances[0].state, Observed::Failed);
        assert_eq!(r.instances[0].metadata_options, None);
        assert_eq!(decode::<ActualState>(&encode(&r)).unwrap(), r);
        r.instances[0].metadata_options = Some(MetadataOptions::default());
        assert_eq!(decode::<ActualState>(&encode(&r)).unwrap(), r);
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        assert!(decode::<ActualState>(b"{\"instances\":[{\"state\":\"dancing\"}]}").is_err());
        assert!(decode::<NodeInfo>(b"\xff\xfe").is_err());
        assert!(decode::<EnrollRequest>(b"").is_err());
    }

    #[test]
    fn an_enroll_request_without_macs_or_token_parses_and_one_with_them_round_trips() {
        let old = br#"{"node_id":"n1","cluster":"c","secret":"s"}"#;
        let r: EnrollRequest = decode(old).unwrap();
        assert_eq!((r.macs.len(), r.token), (0, None));
        let full = EnrollRequest {
            macs: vec!["52:54:00:12:34:56".parse().unwrap()],
            token: Some("t".into()),
            ..r
        };
        let text = String::from_utf8(encode(&full)).unwrap();
        assert!(text.contains(r#""macs":["52:54:00:12:34:56"]"#), "{text}");
        assert_eq!(decode::<EnrollRequest>(text.as_bytes()).unwrap(), full);
    }
}
