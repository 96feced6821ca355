//! The node agent ↔ `mallee-vmm` contract: the VM configuration the agent writes
//! ([`VmmConfig`], read with `mallee-vmm --config FILE`), the control socket's requests and
//! replies ([`Request`], [`Reply`], one JSON document per line), the process exit statuses
//! ([`Exit`]) and the failure report the VMM leaves before it exits with an error ([`Failure`]).
//!
//! Both sides serialize and parse these types; neither builds nor scrapes text. This module only
//! fixes shapes and defaults: the limits a VM must respect (vCPU count, RAM range, device
//! count) are the VMM's, checked where it reads the configuration.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use crate::log_level::LogLevel;
use crate::Mac;
pub use uuid::Uuid;

/// The kernel command line when the configuration gives none.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0";
/// Guest RAM when the configuration gives none.
pub const DEFAULT_MEMORY_MIB: u64 = 256;

/// Everything `mallee-vmm` needs to run one VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmmConfig {
    /// The kernel: a bzImage or an ELF vmlinux.
    pub kernel: PathBuf,
    /// An optional initramfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    /// The kernel command line.
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    /// Guest RAM in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Number of vCPUs.
    #[serde(default = "default_vcpus")]
    pub vcpus: u8,
    /// virtio-blk disks, in PCI slot order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    /// Empty virtio-blk devices the API can attach volumes to while the guest runs
    /// ([`Request::AttachVolume`]), in PCI slot order after the disks and before the NICs; slot
    /// `n` is the `n`-th of them. An empty slot is one sector of zeros that refuses writes (not 0
    /// bytes: Linux tells udev of no capacity change from or to 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub volume_slots: u8,
    /// virtio-net interfaces, in PCI slot order after the disks and volume slots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<Nic>,
    /// Where the serial console's output goes; `None` writes it to the VMM's stdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<PathBuf>,
    /// The unix socket of the control API ([`Request`]); `None` serves no API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_socket: Option<PathBuf>,
    /// Whether the guest gets a virtio-rng device.
    #[serde(default = "yes")]
    pub rng: bool,
    /// What a guest reboot does.
    #[serde(default)]
    pub on_reboot: OnReboot,
    /// Where the VMM writes a [`Failure`] before it exits with [`Exit::Error`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_path: Option<PathBuf>,
    /// The most detailed level the VMM logs to its stderr.
    #[serde(default)]
    pub log_level: LogLevel,
    /// What the metadata service at 169.254.169.254 answers on every NIC; `None`: no service
    /// (the guest's packets to it are dropped like any other's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<InstanceMetadata>,
    /// What the guest's SMBIOS tables say the machine is (its `/sys/class/dmi/id`); `None`: a
    /// generic identity (the VMM's name as vendor and product, no UUID, serial or asset tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smbios: Option<SystemIdentity>,
}

/// The machine a guest's SMBIOS tables describe: how a guest tells which cloud it runs on
/// (cloud-init's `ds-identify` takes a product UUID and serial that both start with `ec2` and
/// are equal, ignoring case, for EC2). Strings are 1-64 bytes without control characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemIdentity {
    /// The system's and chassis' manufacturer and the BIOS vendor (`sys_vendor`): `Amazon EC2`.
    pub manufacturer: String,
    /// The system's product name (`product_name`): the instance type.
    pub product: String,
    /// The system UUID (`product_uuid`), written so that guests print it as given here.
    pub uuid: Uuid,
    /// The system's serial number (`product_serial`); on EC2 the UUID's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The chassis asset tag (`chassis_asset_tag`): the instance id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_tag: Option<String>,
}

/// The content of an instance's metadata service, and how it behaves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceMetadata {
    /// `meta-data/...` and the identity document.
    pub document: crate::MetadataDocument,
    /// `user-data`, base64 as RunInstances took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// Tokens required or not, the service on or off, the TTL of its replies.
    #[serde(default)]
    pub options: crate::MetadataOptions,
}

fn default_cmdline() -> String {
    DEFAULT_CMDLINE.to_string()
}

fn default_memory_mib() -> u64 {
    DEFAULT_MEMORY_MIB
}

fn default_vcpus() -> u8 {
    1
}

fn yes() -> bool {
    true
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

impl VmmConfig {
    /// A VM booting `kernel` with every other field at its default (as if absent from JSON).
    pub fn new(kernel: impl Into<PathBuf>) -> VmmConfig {
        VmmConfig {
            kernel: kernel.into(),
            initrd: None,
            cmdline: default_cmdline(),
            memory_mib: DEFAULT_MEMORY_MIB,
            vcpus: default_vcpus(),
            disks: Vec::new(),
            volume_slots: 0,
            nics: Vec::new(),
            console: None,
            api_socket: None,
            rng: true,
            on_reboot: OnReboot::default(),
            failure_path: None,
            metadata: None,
            log_level: LogLevel::default(),
            smbios: None,
        }
    }

    /// Guest RAM in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib << 20
    }
}

/// One virtio-blk disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// Where its blocks come from.
    pub source: DiskSource,
    /// The serial the guest reads with VIRTIO_BLK_T_GET_ID (at most 20 bytes; a volume id, or
    /// a label such as `root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Guest writes fail with an I/O error, and the device advertises VIRTIO_BLK_F_RO.
    #[serde(default)]
    pub read_only: bool,
}

impl Disk {
    /// A writable disk backed by the file or block device at `path`.
    pub fn file(path: impl Into<PathBuf>, serial: Option<&str>) -> Disk {
        Disk {
            source: DiskSource::File(path.into()),
            serial: serial.map(str::to_string),
            read_only: false,
        }
    }
}

/// Where a disk's blocks come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskSource {
    /// A raw image file or block device: `{"file": "/path"}`.
    File(PathBuf),
    /// Copy-on-write over a read-only base image: the guest's writes go to `top`, a sparse file
    /// of the base's size: `{"overlay": {"base": "/cache/sha", "top": "/i/root.img"}}`.
    Overlay {
        /// The shared image, never written.
        base: PathBuf,
        /// This disk's own clusters.
        top: PathBuf,
    },
    /// An AoE target reached with the user-space initiator:
    /// `{"aoe": {"iface": "eth1", "shelf": 1, "slot": 2}}`.
    Aoe {
        /// The interface on the target's segment.
        iface: String,
        /// AoE shelf (major) address.
        shelf: u16,
        /// AoE slot (minor) address.
        slot: u8,
    },
}

impl fmt::Display for DiskSource {
    /// The path (with `,base=BASE` for an overlay), or `aoe:IFACE:SHELF.SLOT` (the command
    /// line's form).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskSource::File(path) => write!(f, "{}", path.display()),
            DiskSource::Overlay { base, top } => {
                write!(f, "{},base={}", top.display(), base.display())
            }
            DiskSource::Aoe { iface, shelf, slot } => write!(f, "aoe:{iface}:{shelf}.{slot}"),
        }
    }
}

/// One virtio-net interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    /// The tap behind it.
    pub tap: TapSource,
    /// The guest's MAC address; frames from any other source MAC are dropped.
    pub mac: Mac,
    /// The guest's IPv4 address on this NIC, which the VMM hands out to the guest's DHCP and
    /// the only source address it lets the guest send from. `None` (SYSTEM mode): the site's DHCP
    /// server gives the address, and only the MAC is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<GuestAddress>,
}

/// A guest's address on one NIC and the DHCP answer that carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestAddress {
    /// The guest's address.
    pub address: Ipv4Addr,
    /// The subnet's prefix length (1-30).
    pub prefix_len: u8,
    /// The default gateway, inside the subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<Ipv4Addr>,
    /// The guest's host name (DHCP option 12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

impl GuestAddress {
    /// The subnet mask of `prefix_len`.
    pub fn netmask(&self) -> Ipv4Addr {
        let bits = u32::MAX.checked_shl(32 - u32::from(self.prefix_len.min(32)));
        Ipv4Addr::from(bits.unwrap_or(0))
    }

    /// Whether `ip` is in the guest's subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::from(self.netmask());
        u32::from(ip) & mask == u32::from(self.address) & mask
    }
}

/// What one NIC has seen, as the status reply gives it (in the configuration's NIC order).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicStatus {
    /// The guest's MAC address.
    pub mac: Mac,
    /// Whether the guest has taken its address: the VMM acknowledged its DHCP request, or it
    /// announced the address in ARP; without an address of the VMM's (SYSTEM), it used one.
    pub address_taken: bool,
    /// The address the guest was seen using, when the VMM did not give it (SYSTEM: the site's
    /// DHCP server did): the source of its ARP or IPv4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
    /// DHCP messages the VMM answered.
    pub dhcp_answered: u64,
    /// Frames the guest sent that were dropped, by reason.
    pub dropped: Dropped,
}

/// Frames dropped on their way out of the guest, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// From a source MAC other than the guest's.
    pub mac: u64,
    /// IPv4 from a source address other than the guest's.
    pub ip: u64,
    /// ARP claiming another address (or another MAC).
    pub arp: u64,
    /// Not ARP or IPv4 on an addressed NIC, VLAN-tagged, or malformed.
    pub other: u64,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mac={} ip={} arp={} other={}",
            self.mac, self.ip, self.arp, self.other
        )
    }
}

/// Where a NIC's tap comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TapSource {
    /// Attach to the tap of this name through `/dev/net/tun`: `{"name": "tap0"}`.
    Name(String),
    /// An open tap file descriptor the VMM inherited: `{"fd": 3}`.
    Fd(i32),
}

impl fmt::Display for TapSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TapSource::Name(name) => f.write_str(name),
            TapSource::Fd(fd) => write!(f, "fd {fd}"),
        }
    }
}

/// What a guest reboot does to the VMM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnReboot {
    /// Exit with [`Exit::Reboot`] and let the node agent decide.
    #[default]
    Exit,
    /// Build the VM again from the same configuration and boot it.
    Restart,
}

/// How a VMM process ended: its exit status, part of the interface (the VMM's README).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Exit {
    /// Status 0: the guest powered itself off (ACPI S5).
    #[serde(rename = "poweroff")]
    PowerOff,
    /// Status 1: the VMM or KVM failed; the [`Failure`] file says why.
    #[serde(rename = "error")]
    Error,
    /// Status 2: the guest asked for a reset (i8042 pulse, triple fault).
    #[serde(rename = "reboot")]
    Reboot,
    /// Status 3: stopped through the control socket ([`Request::Shutdown`]).
    #[serde(rename = "api-shutdown")]
    ApiShutdown,
}

impl Exit {
    /// Every exit, in status order.
    pub const ALL: [Exit; 4] = [Exit::PowerOff, Exit::Error, Exit::Reboot, Exit::ApiShutdown];

    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::PowerOff => 0,
            Exit::Error => 1,
            Exit::Reboot => 2,
            Exit::ApiShutdown => 3,
        }
    }

    /// The exit a process status means; `None` for a status the VMM never exits with (one
    /// killed by a signal reads as 128 + the signal).
    pub fn from_code(code: i32) -> Option<Exit> {
        Exit::ALL.into_iter().find(|e| i32::from(e.code()) == code)
    }

    /// The short name in logs, the API's `state` and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Exit::PowerOff => "poweroff",
            Exit::Error => "error",
            Exit::Reboot => "reboot",
            Exit::ApiShutdown => "api-shutdown",
        }
    }

    /// What it means, in words, for an instance's state reason.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::PowerOff => "the guest powered off",
            Exit::Error => "mallee-vmm failed",
            Exit::Reboot => "the guest reset",
            Exit::ApiShutdown => "mallee-vmm stopped through its API",
        }
    }
}

/// Why the VMM exited with [`Exit::Error`], written to [`VmmConfig::failure_path`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The exit status that goes with it.
    pub exit: Exit,
    /// What failed, in one line (`cannot start the VM: cannot open disk /x: No such file`).
    pub message: String,
}

impl Failure {
    /// An [`Exit::Error`] failure.
    pub fn error(message: impl Into<String>) -> Failure {
        Failure {
            exit: Exit::Error,
            message: message.into(),
        }
    }

    /// The instance's state reason: the exit's meaning and the message.
    pub fn reason(&self) -> String {
        format!("{}: {}", self.exit.meaning(), self.message)
    }
}

/// A control socket request, one JSON document per line: `{"op":"status"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Report the VM's state.
    Status,
    /// Stop the VM (exit status 3); the stop survives [`OnReboot::Restart`].
    Shutdown,
    /// Replace what the metadata service serves and how (the running guest keeps its IMDSv2
    /// tokens): `{"op":"set_metadata","metadata":{...}}`. Refused when the VM was started
    /// without a metadata service.
    SetMetadata { metadata: Box<InstanceMetadata> },
    /// Put a volume into an empty volume slot ([`VmmConfig::volume_slots`]); the guest sees the
    /// slot's disk grow to the volume's size, with the volume id as its serial (at most 20
    /// bytes): `{"op":"attach_volume","slot":0,"volume_id":"vol-1","source":{"aoe":{...}}}`.
    /// Refused, with nothing changed, when the slot does not exist, holds a volume, or the
    /// source cannot be opened. A read-only volume fails the guest's writes with an I/O error
    /// (the device's read-only flag is fixed at boot, so the guest is not told beforehand).
    AttachVolume {
        slot: u8,
        volume_id: String,
        source: DiskSource,
        #[serde(default)]
        read_only: bool,
    },
    /// Empty a volume slot: wait for the guest's requests in flight on it, flush the volume, and
    /// show the guest an empty slot again: `{"op":"detach_volume","slot":0}`. Refused when the
    /// slot does not exist or is empty.
    DetachVolume { slot: u8 },
}

/// One volume slot, as the status reply gives it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSlotStatus {
    /// The slot number ([`Request::AttachVolume`]'s `slot`).
    pub slot: u8,
    /// The volume in it; `None`: the slot is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_id: Option<String>,
    /// The size the guest sees (0 when empty).
    pub size_bytes: u64,
}

/// What the VMM is doing, as the API reports it: `running`, or the exit it is heading for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum VmState {
    Running,
    Stopping(Exit),
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmState::Running => "running",
            VmState::Stopping(exit) => exit.name(),
        })
    }
}

/// A text that is neither `running` nor an exit's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a VM state")]
pub struct BadVmState(pub String);

impl FromStr for VmState {
    type Err = BadVmState;
    fn from_str(s: &str) -> Result<VmState, BadVmState> {
        if s == "running" {
            return Ok(VmState::Running);
        }
        (Exit::ALL.into_iter().find(|e| e.name() == s))
            .map(VmState::Stopping)
            .ok_or_else(|| BadVmState(s.to_string()))
    }
}

impl From<VmState> for String {
    fn from(s: VmState) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for VmState {
    type Error = BadVmState;
    fn try_from(s: String) -> Result<VmState, BadVmState> {
        s.parse()
    }
}

/// The reply to one [`Request`], one JSON document per line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the request was understood and done.
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<VmState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Milliseconds since the VMM started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
    /// Each NIC's address and anti-spoofing counters, in configuration order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<NicStatus>,
    /// Each volume slot and what it holds, in slot order (none without volume slots).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_slots: Vec<VolumeSlotStatus>,
    /// The options the metadata service serves with from now on; `None`: the VM has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_options: Option<crate::MetadataOptions>,
    /// Why the request failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    /// A refusal saying why.
    pub fn error(why: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            state: None,
            vcpus: None,
            memory_mib: None,
            uptime_ms: None,
            nics: Vec::new(),
            volume_slots: Vec::new(),
            metadata_options: None,
            error: Some(why.into()),
        }
    }
}

/// One message of the control socket's framing: its JSON and a newline.
pub fn encode_line<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut line = crate::encode(msg);
    line.push(b'\n');
    line
}

#[cfg(test)]
#[path = "vmm_tests.rs"]
mod tests;
