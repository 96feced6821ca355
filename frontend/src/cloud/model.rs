//! The cloud's records as stored (one JSON document each in the store's `cloud` table):
//! images, key pairs, security groups, instances, addresses, volumes and snapshots, their
//! kinds, ids and the plain rules about them (instance type table, state codes). Nothing here
//! touches HTTP or knows an API's parameters.

use mallee_proto::Goal;
use rand::Rng;
use serde::{Deserialize, Serialize};

pub const IMAGE: &str = "image";
pub const KEY_PAIR: &str = "keypair";
pub const GROUP: &str = "group";
pub const INSTANCE: &str = "instance";
pub const CLIENT_TOKEN: &str = "client-token";
pub const ADDRESS: &str = "address";
pub const VOLUME: &str = "volume";
pub const SNAPSHOT: &str = "snapshot";
pub const CONSOLE: &str = "console";

/// Id prefixes of images: Eucalyptus's (`emi`, `eki`, `eri`) and AWS's, which clients may use.
pub const IMAGE_PREFIXES: &[&str] = &["emi", "eki", "eri", "ami", "aki", "ari"];

/// The device an instance's root disk is to its guest: the VMM presents the instance-store
/// root disk as its first virtio-blk disk. Images carry no root device name of their own yet.
pub const ROOT_DEVICE_NAME: &str = "/dev/vda";

/// An image's architecture when nothing names one (RegisterImage without `Architecture`).
pub const DEFAULT_ARCHITECTURE: &str = "x86_64";

/// `prefix-` and `len` random lower-case hex digits.
pub fn new_id(prefix: &str, len: usize) -> String {
    let mut rng = rand::thread_rng();
    let digits: String = (0..len)
        .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0'))
        .collect();
    format!("{prefix}-{digits}")
}

/// Whether `id` looks like an id with one of `prefixes` (8 or 17 hex digits).
pub fn well_formed(id: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| {
        id.strip_prefix(p)
            .and_then(|r| r.strip_prefix('-'))
            .is_some_and(|hex| {
                (hex.len() == 8 || hex.len() == 17)
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
    })
}

/// What an image holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    Machine,
    Kernel,
    Ramdisk,
}

impl ImageKind {
    pub fn prefix(self) -> &'static str {
        match self {
            ImageKind::Machine => "emi",
            ImageKind::Kernel => "eki",
            ImageKind::Ramdisk => "eri",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ImageKind::Machine => "machine",
            ImageKind::Kernel => "kernel",
            ImageKind::Ramdisk => "ramdisk",
        }
    }

    pub fn parse(s: &str) -> Option<ImageKind> {
        match s {
            "machine" => Some(ImageKind::Machine),
            "kernel" => Some(ImageKind::Kernel),
            "ramdisk" => Some(ImageKind::Ramdisk),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub id: String,
    pub owner: String,
    pub name: String,
    pub description: Option<String>,
    pub kind: ImageKind,
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub sha256: String,
    pub architecture: String,
    pub kernel_id: Option<String>,
    pub ramdisk_id: Option<String>,
    pub public: bool,
    pub launch_users: Vec<String>,
    pub created_ms: i64,
    /// EBS-backed (RootDeviceType `ebs`): the snapshot each instance's root volume is made
    /// from; the image then has no object in Walrus of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_snapshot: Option<String>,
    /// Made by CreateImage from this instance's root volume (DescribeImages'
    /// `sourceInstanceId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_instance: Option<String>,
    /// What `root=` names its root file system by, read from its bytes when it was registered
    /// (CreateImage: its instance's); `None` for an image with no layout we know, a kernel or
    /// ramdisk, or one registered before images had it: instances boot `/dev/vda`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device: Option<mallee_proto::RootDevice>,
}

impl Image {
    /// Whether `user` may see and launch it.
    pub fn launchable_by(&self, user: &str) -> bool {
        self.owner == user || self.public || self.launch_users.iter().any(|u| u == user)
    }

    pub fn proto_ref(&self) -> mallee_proto::ImageRef {
        mallee_proto::ImageRef {
            image_id: self.id.clone(),
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            size: self.size,
            sha256: self.sha256.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPair {
    pub id: String,
    pub owner: String,
    pub name: String,
    pub fingerprint: String,
    pub key_type: String,
    /// One OpenSSH line.
    pub public_key: String,
    pub created_ms: i64,
}

/// Where an ingress rule lets traffic in from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    Cidr(String),
    Group {
        id: String,
        name: String,
        owner: String,
    },
}

/// One ingress permission: protocol (`tcp`, `udp`, `icmp` or `-1`), port range, source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub protocol: String,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    pub id: String,
    pub owner: String,
    pub name: String,
    pub description: String,
    pub rules: Vec<Rule>,
}

/// An instance type: name, vCPUs, memory (MiB), root disk (GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceType {
    pub name: &'static str,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

/// The instance types, Eucalyptus's classic five.
pub const INSTANCE_TYPES: &[InstanceType] = &[
    InstanceType {
        name: "m1.small",
        vcpus: 1,
        memory_mib: 256,
        disk_gib: 5,
    },
    InstanceType {
        name: "c1.medium",
        vcpus: 1,
        memory_mib: 512,
        disk_gib: 10,
    },
    InstanceType {
        name: "m1.large",
        vcpus: 2,
        memory_mib: 1024,
        disk_gib: 10,
    },
    InstanceType {
        name: "m1.xlarge",
        vcpus: 2,
        memory_mib: 2048,
        disk_gib: 20,
    },
    InstanceType {
        name: "c1.xlarge",
        vcpus: 4,
        memory_mib: 4096,
        disk_gib: 20,
    },
];

pub fn instance_type(name: &str) -> Option<&'static InstanceType> {
    INSTANCE_TYPES.iter().find(|t| t.name == name)
}

/// EC2 instance states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Pending,
    Running,
    ShuttingDown,
    Terminated,
    Stopping,
    Stopped,
}

impl State {
    /// The states in which an instance holds no room on a node: a stopped one is placed again
    /// when it starts.
    pub const ROOMLESS: [State; 2] = [State::Terminated, State::Stopped];

    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::ShuttingDown => "shutting-down",
            State::Terminated => "terminated",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
        }
    }

    pub fn code(self) -> u32 {
        match self {
            State::Pending => 0,
            State::Running => 16,
            State::ShuttingDown => 32,
            State::Terminated => 48,
            State::Stopping => 64,
            State::Stopped => 80,
        }
    }
}

/// Why an instance is in its state (DescribeInstances' `stateReason`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub code: String,
    pub message: String,
}

/// What a guest that powers itself off ends as (EC2's `InstanceInitiatedShutdownBehavior`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShutdownBehavior {
    /// EC2's default.
    #[default]
    Stop,
    Terminate,
}

impl ShutdownBehavior {
    pub fn name(self) -> &'static str {
        match self {
            ShutdownBehavior::Stop => "stop",
            ShutdownBehavior::Terminate => "terminate",
        }
    }

    pub fn parse(s: &str) -> Option<ShutdownBehavior> {
        match s {
            "stop" => Some(ShutdownBehavior::Stop),
            "terminate" => Some(ShutdownBehavior::Terminate),
            _ => None,
        }
    }
}

/// How an instance may end: whether TerminateInstances is refused (`disableApiTermination`)
/// and what its guest powering off does (stored and shown; the node does not act on it yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownPolicy {
    pub disable_api_termination: bool,
    pub instance_initiated: ShutdownBehavior,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub owner: String,
    pub reservation_id: String,
    pub image_id: String,
    pub kernel_id: Option<String>,
    pub ramdisk_id: Option<String>,
    pub instance_type: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub key_name: Option<String>,
    pub user_data: Option<String>,
    /// (group id, group name).
    pub groups: Vec<(String, String)>,
    pub zone: String,
    pub node: String,
    pub private_ip: String,
    pub public_ip: Option<String>,
    pub mac: mallee_proto::Mac,
    pub launch_index: u32,
    pub client_token: Option<String>,
    pub state: State,
    pub goal: Goal,
    pub reboot_count: u32,
    pub launch_ms: i64,
    pub state_ms: i64,
    pub reason: Option<Reason>,
    /// Set while the node is silent past its deadline.
    pub node_down: bool,
    pub image: mallee_proto::ImageRef,
    pub kernel: Option<mallee_proto::ImageRef>,
    pub ramdisk: Option<mallee_proto::ImageRef>,
    pub metadata: mallee_proto::MetadataDocument,
    /// Where its NIC is plugged and the address its VMM hands it; `None` for instances
    /// launched before instances had networks.
    #[serde(default)]
    pub network: Option<mallee_proto::InstanceNetwork>,
    /// Its node said the guest took its address since it last started.
    #[serde(default)]
    pub address_taken: bool,
    /// How its metadata service must behave (RunInstances, ModifyInstanceMetadataOptions).
    #[serde(default)]
    pub metadata_options: mallee_proto::MetadataOptions,
    /// The options its node last said the instance's VMM serves with; `None` while it does
    /// not run there.
    #[serde(default)]
    pub metadata_options_served: Option<mallee_proto::MetadataOptions>,
    /// Termination protection and shutdown behaviour (RunInstances, ModifyInstanceAttribute).
    #[serde(default)]
    pub shutdown: ShutdownPolicy,
    /// EBS-backed: the volume it boots from (made from its image's snapshot at launch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_volume: Option<String>,
    /// CreateImage holds it stopped until its root volume is copied (see `cloud::images`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_hold: Option<ImageHold>,
    /// Its image's root device as it was at launch (see [`Image::root_device`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device: Option<mallee_proto::RootDevice>,
}

/// CreateImage's hold on an EBS-backed instance whose root volume it copies at rest: the
/// instance stays stopped (StartInstances is refused) until the snapshot's point-in-time copy
/// is made, then it is started again if CreateImage stopped it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageHold {
    pub image_id: String,
    pub snapshot_id: String,
    /// Start it again once the copy is made: it was running and CreateImage stopped it (a
    /// StopInstances meanwhile clears this).
    pub restart: bool,
}

impl Instance {
    /// Whether it still holds room on its node (see [`State::ROOMLESS`]).
    pub fn holds_capacity(&self) -> bool {
        !State::ROOMLESS.contains(&self.state)
    }

    /// Whether its VMM is known to serve its metadata options (EC2's `applied`; `pending`
    /// otherwise: not yet reported, not running, or still the old ones).
    pub fn metadata_options_applied(&self) -> bool {
        self.metadata_options_served == Some(self.metadata_options)
    }

    pub fn set_state(&mut self, state: State, now_ms: i64) {
        if self.state != state {
            self.state = state;
            self.state_ms = now_ms;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub public_ip: String,
    pub allocation_id: String,
    pub owner: String,
    pub instance_id: Option<String>,
    pub association_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub instance_id: String,
    pub device: String,
    pub attached_ms: i64,
    /// Delete the volume when its instance is terminated (ModifyInstanceAttribute's
    /// `blockDeviceMapping`); volumes attached by AttachVolume start without.
    #[serde(default)]
    pub delete_on_termination: bool,
    /// How far the attachment is, as the instance's node reports it.
    #[serde(default)]
    pub status: AttachStatus,
    /// Where the storage controller exports the volume while attached: AoE shelf and slot.
    #[serde(default)]
    pub shelf: u16,
    #[serde(default)]
    pub slot: u8,
    /// The instance boots from it (an EBS-backed instance's root volume).
    #[serde(default)]
    pub root: bool,
}

/// An attachment's state, as `describe-volumes` shows it: `attached` only once the instance's
/// node says its VMM has the disk, and the volume is `available` again only once the node says
/// its VMM let the disk go (flushed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachStatus {
    #[default]
    Attaching,
    Attached,
    Detaching,
}

impl AttachStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachStatus::Attaching => "attaching",
            AttachStatus::Attached => "attached",
            AttachStatus::Detaching => "detaching",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub id: String,
    pub owner: String,
    pub size_gib: u64,
    pub zone: String,
    pub snapshot_id: Option<String>,
    /// creating | available | in-use | deleting
    pub state: String,
    pub created_ms: i64,
    pub attachment: Option<Attachment>,
    /// The snapshot whose copy (or restore) the volume's dirty record counts writes from: the
    /// base of its next snapshot, which then reads only the chunks written since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirty_base: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub owner: String,
    pub volume_id: String,
    pub volume_size: u64,
    pub description: String,
    /// pending | completed | error
    pub state: String,
    pub started_ms: i64,
    /// Percent of the volume's chunks stored in Walrus.
    #[serde(default)]
    pub progress: u8,
    /// The volume's point-in-time copy is made (its chunks are being stored from it).
    #[serde(default)]
    pub copied: bool,
    /// Bytes this snapshot added to Walrus (chunks no earlier snapshot stored, and its
    /// manifest).
    #[serde(default)]
    pub stored_bytes: u64,
    /// Why it is in `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_message: Option<String>,
    /// Not to be copied yet: CreateImage waits for its instance to stop first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
}

impl Snapshot {
    /// A new `pending` snapshot `id` of volume `v`, made for `owner` at `now`: the storage
    /// keeper copies the volume at one instant and stores its chunks in Walrus.
    pub fn pending(id: String, owner: &str, v: &Volume, description: &str, now: i64) -> Snapshot {
        Snapshot {
            id,
            owner: owner.to_string(),
            volume_id: v.id.clone(),
            volume_size: v.size_gib,
            description: description.to_string(),
            state: "pending".into(),
            started_ms: now,
            progress: 0,
            copied: false,
            stored_bytes: 0,
            state_message: None,
            held: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_well_formed_and_malformed_ones_are_told_apart() {
        let id = new_id("i", 17);
        assert!(well_formed(&id, &["i"]));
        assert!(well_formed("emi-0123abcd", &["emi", "ami"]));
        assert!(!well_formed("i-xyz", &["i"]));
        assert!(!well_formed("i-0123ABCD", &["i"]));
        assert!(!well_formed("vol-01234567", &["i"]));
    }
}
