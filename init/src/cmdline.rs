//! The `mallee.*` settings on the kernel command line.
//!
//! Recognised keys: `mallee.role=node|frontend` (default `node`), `mallee.run=/path` (test hook:
//! run that program once ready, then power off), `mallee.hostname=NAME` and
//! `mallee.test_panic=1` (test hook: panic once ready, to exercise the panic → reboot path); the
//! node agent's `mallee.frontend=IP:PORT`, `mallee.cluster=NAME` and `mallee.secret=SECRET` (put
//! there by the frontend's PXE service; the agent starts only when all three are set) and
//! `mallee.disk=auto|none|/dev/X` (the node's cache disk, default `auto`: see
//! [`crate::agent::storage`]), `mallee.bridge=MAC` (the NIC to put into the uplink bridge,
//! see [`crate::net::bridge`]) and `mallee.frontend_key=sha256:HEX` (the frontend's pinned
//! public key: the agent speaks TLS and accepts no other key; a malformed value keeps the agent
//! from starting rather than letting it fall back to plain HTTP, see [`FrontendKey`]); for
//! the frontend, `mallee.data=/dev/vdX` or `mallee.data=PARTLABEL=NAME` (data disk, default
//! `/dev/vda`; the flashable image names its partition), `mallee.slot=a|b` (which A/B slot of
//! the flashable image booted, put there by the image's own command line),
//! `mallee.private=IFACE:IP/PREFIX` (private NIC, default `eth1:10.77.0.1/24`) and
//! `mallee.show_credentials=1` (print the admin credentials, the CA bundle and the frontend's
//! key pin once ready; the flashable image sets it); on both,
//! `mallee.log=error|warn|info|debug|trace` (default `info`: how much init, the agent, each VMM
//! and the frontend daemon log). For a test guest under a VMM that answers neither DHCP nor
//! metadata requests: `mallee.user_data=BASE64` (its user data, standard base64) and the
//! kernel's own `ip=` in its static nfsroot form (see [`ip`]), the one key without the `mallee.`
//! prefix read here. The key names are [`mallee_proto::cmdline::Key`]. Other `mallee.*` keys
//! and bad values become warnings the caller logs; other keys without the `mallee.` prefix
//! belong to the kernel and are ignored silently. Parsing is pure; reading `/proc/cmdline` is
//! the caller's job.

pub mod ip;

use base64::Engine as _;
pub use ip::{IpParamError, StaticIp};
pub use mallee_proto::appliance::Slot;
use mallee_proto::cmdline::{self, Key, PublicKeyPin};
use mallee_proto::LogLevel;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The frontend's private NIC: static address, PXE service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateNic {
    pub interface: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
}

impl PrivateNic {
    /// `IFACE:IP/PREFIX`.
    pub fn parse(text: &str) -> Option<Self> {
        let (interface, cidr) = text.split_once(':')?;
        let (ip, prefix) = cidr.split_once('/')?;
        let prefix: u8 = prefix.parse().ok()?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let ok = !interface.is_empty() && interface.len() < 16 && (1..=30).contains(&prefix);
        ok.then(|| PrivateNic {
            interface: interface.to_owned(),
            ip,
            prefix,
        })
    }
}

impl Default for PrivateNic {
    fn default() -> Self {
        PrivateNic {
            interface: "eth1".to_owned(),
            ip: Ipv4Addr::new(10, 77, 0, 1),
            prefix: 24,
        }
    }
}

/// The frontend's data disk: a device, or the GPT partition with this name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDisk {
    Device(PathBuf),
    Label(String),
}

impl DataDisk {
    /// `/dev/X` or `PARTLABEL=NAME`.
    pub fn parse(text: &str) -> Option<Self> {
        if let Some(label) = text.strip_prefix("PARTLABEL=") {
            let ok = !label.is_empty() && label.len() <= 36;
            return ok.then(|| DataDisk::Label(label.to_owned()));
        }
        text.starts_with("/dev/")
            .then(|| DataDisk::Device(PathBuf::from(text)))
    }
}

/// Which local disk a node keeps its image cache and instance disks on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NodeDisk {
    /// The first suitable whole disk, if any ([`crate::disk::choose_auto`]).
    #[default]
    Auto,
    /// None: everything in RAM.
    None,
    /// This device.
    Device(PathBuf),
}

/// Node: what `mallee.frontend_key` says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FrontendKey {
    /// Not on the command line: the agent speaks plain HTTP.
    #[default]
    Unpinned,
    /// The frontend's key pin: the agent speaks TLS and accepts only this key.
    Pinned(PublicKeyPin),
    /// On the command line but not a pin; the reason. The agent does not start: a node that was
    /// meant to pin the frontend's key must not talk to it unpinned.
    Malformed(String),
}

/// What this appliance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Node,
    Frontend,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Node => "node",
            Role::Frontend => "frontend",
        })
    }
}

/// Settings taken from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub role: Role,
    pub run: Option<PathBuf>,
    pub hostname: Option<String>,
    pub test_panic: bool,
    /// Frontend: the data disk.
    pub data: DataDisk,
    /// Frontend: the A/B slot of the flashable image that booted, if it says.
    pub slot: Option<Slot>,
    /// Frontend: the private NIC.
    pub private: PrivateNic,
    /// Frontend test hook: print the admin credentials file on the console once ready.
    pub show_credentials: bool,
    /// The frontend's API address (an IP: there is no DNS on a node).
    pub frontend: Option<std::net::SocketAddr>,
    pub cluster: Option<String>,
    pub secret: Option<String>,
    /// Node: the cache disk.
    pub disk: NodeDisk,
    /// Node: the NIC (by MAC) to put into the uplink bridge, which then takes its place.
    pub bridge: Option<mallee_proto::Mac>,
    /// Node: the frontend's pinned key, if the command line gives one.
    pub frontend_key: FrontendKey,
    /// The most detailed level init, the agent, the VMMs and the frontend daemon log.
    pub log: LogLevel,
    /// Node: a static address for a NIC from the kernel's `ip=` (instead of DHCP).
    pub static_ip: Option<StaticIp>,
    /// Test guest: its user data (decoded), instead of asking a metadata service.
    pub user_data: Option<Vec<u8>>,
    /// Human-readable notes about ignored keys or values, one per problem.
    pub warnings: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            role: Role::Node,
            run: None,
            hostname: None,
            test_panic: false,
            data: DataDisk::Device(PathBuf::from("/dev/vda")),
            slot: None,
            private: PrivateNic::default(),
            show_credentials: false,
            frontend: None,
            cluster: None,
            secret: None,
            disk: NodeDisk::Auto,
            bridge: None,
            frontend_key: FrontendKey::Unpinned,
            log: LogLevel::Info,
            static_ip: None,
            user_data: None,
            warnings: Vec::new(),
        }
    }
}

/// Splits a command line into words; double quotes group spaces into one word (as the kernel
/// does: `a="b c"` is the single word `a=b c`).
pub fn split_words(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_quotes = false;
    let mut has_word = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has_word = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if has_word {
                    words.push(std::mem::take(&mut word));
                    has_word = false;
                }
            }
            c => {
                word.push(c);
                has_word = true;
            }
        }
    }
    if has_word {
        words.push(word);
    }
    words
}

/// True for a hostname the kernel and resolvers accept: 1–64 of `[A-Za-z0-9.-]`, not starting
/// with `-` or `.`.
pub fn is_valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['-', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Parses the `mallee.*` settings out of a kernel command line.
pub fn parse(cmdline: &str) -> Settings {
    let mut settings = Settings::default();
    for word in split_words(cmdline) {
        if let Some(value) = word.strip_prefix("ip=") {
            read_ip(&mut settings, value);
            continue;
        }
        let Some((name, value)) = cmdline::split(&word) else {
            continue;
        };
        let Some(key) = Key::from_name(name) else {
            settings
                .warnings
                .push(format!("ignoring unknown setting mallee.{name}"));
            continue;
        };
        match key {
            Key::Role => match value {
                "node" => settings.role = Role::Node,
                "frontend" => settings.role = Role::Frontend,
                other => settings.warnings.push(format!(
                    "ignoring mallee.role={other:?}: expected node or frontend"
                )),
            },
            Key::Run if value.starts_with('/') => settings.run = Some(PathBuf::from(value)),
            Key::Run => settings.warnings.push(format!(
                "ignoring mallee.run={value:?}: not an absolute path"
            )),
            Key::Hostname if is_valid_hostname(value) => settings.hostname = Some(value.to_owned()),
            Key::Hostname => settings.warnings.push(format!(
                "ignoring mallee.hostname={value:?}: not a valid hostname"
            )),
            Key::TestPanic => settings.test_panic = value == "1",
            Key::Data => match DataDisk::parse(value) {
                Some(d) => settings.data = d,
                None => settings.warnings.push(format!(
                    "ignoring mallee.data={value:?}: expected /dev/X or PARTLABEL=NAME"
                )),
            },
            Key::Slot => match Slot::parse(value) {
                Some(slot) => settings.slot = Some(slot),
                None => settings
                    .warnings
                    .push(format!("ignoring mallee.slot={value:?}: expected a or b")),
            },
            Key::Private => match PrivateNic::parse(value) {
                Some(p) => settings.private = p,
                None => settings.warnings.push(format!(
                    "ignoring mallee.private={value:?}: expected IFACE:IP/PREFIX"
                )),
            },
            Key::ShowCredentials => settings.show_credentials = value == "1",
            Key::Frontend => match value.parse() {
                Ok(addr) => settings.frontend = Some(addr),
                Err(_) => settings.warnings.push(format!(
                    "ignoring mallee.frontend={value:?}: expected IP:PORT"
                )),
            },
            Key::Disk => match value {
                "auto" => settings.disk = NodeDisk::Auto,
                "none" => settings.disk = NodeDisk::None,
                v if v.starts_with("/dev/") => settings.disk = NodeDisk::Device(PathBuf::from(v)),
                v => settings.warnings.push(format!(
                    "ignoring mallee.disk={v:?}: expected auto, none or a /dev/ path"
                )),
            },
            Key::Cluster if !value.is_empty() => settings.cluster = Some(value.to_owned()),
            Key::Secret if !value.is_empty() => settings.secret = Some(value.to_owned()),
            Key::Cluster | Key::Secret => settings.warnings.push(format!("ignoring empty {key}")),
            Key::Bridge => match value.parse() {
                Ok(mac) => settings.bridge = Some(mac),
                Err(_) => settings.warnings.push(format!(
                    "ignoring mallee.bridge={value:?}: expected the MAC of a NIC"
                )),
            },
            Key::FrontendKey => {
                settings.frontend_key = match value.parse() {
                    Ok(pin) => FrontendKey::Pinned(pin),
                    Err(e) => FrontendKey::Malformed(format!("mallee.frontend_key={value:?}: {e}")),
                }
            }
            Key::Log => match LogLevel::parse(value) {
                Some(level) => settings.log = level,
                None => settings.warnings.push(format!(
                    "ignoring mallee.log={value:?}: expected error, warn, info, debug or trace"
                )),
            },
            Key::UserData => match base64::engine::general_purpose::STANDARD.decode(value) {
                Ok(user_data) => settings.user_data = Some(user_data),
                Err(e) => settings.warnings.push(format!(
                    "ignoring mallee.user_data: not standard base64 ({e})"
                )),
            },
        }
    }
    settings
}

/// The kernel's `ip=`: the last one counts, as for the kernel; a malformed one is a warning and
/// changes nothing.
fn read_ip(settings: &mut Settings, value: &str) {
    match ip::parse(value) {
        Ok(static_ip) => settings.static_ip = static_ip,
        Err(e) => (settings.warnings).push(format!("ignoring ip={value:?}: {e}")),
    }
}

/// The hostname used when the command line gives none: `mallee-` and the MAC's hex digits.
pub fn hostname_from_mac(mac: [u8; 6]) -> String {
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("mallee-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_run_and_hostname_are_read() {
        let s =
            parse("console=ttyS0 mallee.role=frontend mallee.run=/bin/t mallee.hostname=n1 quiet mallee.test_panic=1");
        assert_eq!(s.role, Role::Frontend);
        assert_eq!(s.run, Some(PathBuf::from("/bin/t")));
        assert_eq!(s.hostname.as_deref(), Some("n1"));
        assert!(s.test_panic);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn frontend_settings_are_read_and_bad_ones_warn() {
        let s =
            parse("mallee.data=/dev/vdb mallee.private=ens5:10.1.0.1/16 mallee.show_credentials=1");
        assert_eq!(s.data, DataDisk::Device(PathBuf::from("/dev/vdb")));
        assert_eq!(
            s.private,
            PrivateNic {
                interface: "ens5".into(),
                ip: Ipv4Addr::new(10, 1, 0, 1),
                prefix: 16
            }
        );
        assert!(s.show_credentials);
        let bad = parse("mallee.data=vdb mallee.private=eth1:10.1.0.1 mallee.private=eth1:x/24");
        assert_eq!(bad.data, DataDisk::Device(PathBuf::from("/dev/vda")));
        assert_eq!(bad.private, PrivateNic::default());
        assert_eq!(bad.warnings.len(), 3);
    }

    #[test]
    fn the_flashable_images_data_label_and_slot_are_read() {
        let s = parse("mallee.role=frontend mallee.data=PARTLABEL=mallee-data mallee.slot=b");
        assert_eq!(s.data, DataDisk::Label("mallee-data".into()));
        assert_eq!(s.slot, Some(Slot::B));
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let bad = parse("mallee.data=PARTLABEL= mallee.slot=c");
        assert_eq!(bad.data, DataDisk::Device(PathBuf::from("/dev/vda")));
        assert_eq!(bad.slot, None);
        assert_eq!(bad.warnings.len(), 2);
    }

    #[test]
    fn the_log_level_is_read_and_a_bad_one_warns_and_keeps_info() {
        assert_eq!(parse("").log, LogLevel::Info);
        assert_eq!(parse("mallee.log=debug").log, LogLevel::Debug);
        let bad = parse("mallee.log=loud");
        assert_eq!(bad.log, LogLevel::Info);
        assert!(bad.warnings[0].contains("mallee.log"), "{:?}", bad.warnings);
    }

    /// The PXE service writes the node's keys with the same names ([`Key::arg`]) init reads.
    #[test]
    fn words_written_with_the_shared_keys_are_read_back() {
        let line = [
            Key::Frontend.arg("10.0.2.2:8773"),
            Key::Cluster.arg("zone-a"),
            Key::Secret.arg("s3"),
            Key::Disk.arg("none"),
            Key::Log.arg(LogLevel::Warn),
            Key::Bridge.arg("52:54:00:0a:0b:0c"),
        ]
        .join(" ");
        let s = parse(&line);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(s.bridge, Some("52:54:00:0a:0b:0c".parse().unwrap()));
        // iPXE left its variable unexpanded: a warning, no bridge.
        let bad = parse("mallee.bridge=${netX/mac}");
        assert_eq!((bad.bridge, bad.warnings.len()), (None, 1));
        assert_eq!(s.cluster.as_deref(), Some("zone-a"));
        assert_eq!(s.disk, NodeDisk::None);
        assert_eq!(s.log, LogLevel::Warn);
    }

    #[test]
    fn agent_settings_are_read_and_bad_address_warns() {
        let s = parse("mallee.frontend=10.0.2.2:8773 mallee.cluster=zone-a mallee.secret=s3");
        assert_eq!(s.frontend, Some("10.0.2.2:8773".parse().unwrap()));
        assert_eq!(s.cluster.as_deref(), Some("zone-a"));
        assert_eq!(s.secret.as_deref(), Some("s3"));
        let s = parse("mallee.frontend=frontend.local:80 mallee.cluster=");
        assert_eq!((s.frontend, s.cluster), (None, None));
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
    }

    #[test]
    fn the_frontend_key_pin_is_read_in_either_case() {
        assert_eq!(parse("").frontend_key, FrontendKey::Unpinned);
        let pin = PublicKeyPin([0xcd; 32]);
        let s = parse(&Key::FrontendKey.arg(pin));
        assert_eq!(s.frontend_key, FrontendKey::Pinned(pin));
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let upper = parse(&format!("mallee.frontend_key=sha256:{}", "CD".repeat(32)));
        assert_eq!(upper.frontend_key, FrontendKey::Pinned(pin));
    }

    #[test]
    fn a_malformed_frontend_key_is_kept_as_malformed_not_dropped() {
        let hex64 = "cd".repeat(32);
        for (value, says) in [
            (format!("sha256:{}", &hex64[..63]), "63 characters"),
            (format!("sha256:{hex64}0"), "65 characters"),
            (hex64.clone(), "does not start with"),
            (format!("SHA256:{hex64}"), "does not start with"),
            (format!("sha256:{}xy", &hex64[..62]), "not a hex digit"),
            (String::new(), "does not start with"),
        ] {
            let s = parse(&Key::FrontendKey.arg(&value));
            match &s.frontend_key {
                FrontendKey::Malformed(why) => {
                    assert!(why.contains("mallee.frontend_key"), "{why}");
                    assert!(why.contains(says), "{value}: {why}");
                }
                other => panic!("{value}: {other:?}"),
            }
        }
    }

    #[test]
    fn node_disk_is_auto_none_or_a_device() {
        assert_eq!(parse("").disk, NodeDisk::Auto);
        assert_eq!(parse("mallee.disk=none").disk, NodeDisk::None);
        assert_eq!(
            parse("mallee.disk=/dev/nvme0n1").disk,
            NodeDisk::Device(PathBuf::from("/dev/nvme0n1"))
        );
        let bad = parse("mallee.disk=none mallee.disk=sdb");
        assert_eq!(bad.disk, NodeDisk::None);
        assert_eq!(bad.warnings.len(), 1, "{:?}", bad.warnings);
    }

    #[test]
    fn a_static_ip_is_read_and_dhcp_or_a_malformed_one_leaves_none() {
        let s = parse("console=ttyS0 ip=10.0.2.15::10.0.2.2:255.255.255.0:g1:eth0:off");
        let static_ip = s.static_ip.unwrap();
        assert_eq!(static_ip.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(static_ip.hostname.as_deref(), Some("g1"));
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(parse("ip=dhcp").static_ip, None);
        assert_eq!(
            parse("ip=10.0.2.15 ip=dhcp").static_ip,
            None,
            "the last counts"
        );
        let bad = parse("ip=10.0.2.15:::255.255.0.255");
        assert_eq!(bad.static_ip, None);
        assert!(
            bad.warnings[0].starts_with("ignoring ip="),
            "{:?}",
            bad.warnings
        );
    }

    #[test]
    fn user_data_is_decoded_and_bad_base64_warns() {
        let s = parse(&Key::UserData.arg("bmV0YmVuY2ggNTIwMQo="));
        assert_eq!(s.user_data.as_deref(), Some(&b"netbench 5201\n"[..]));
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(
            parse("mallee.user_data=").user_data.as_deref(),
            Some(&b""[..])
        );
        for bad in ["mallee.user_data=bmV0*", "mallee.user_data=bmV0YmVuY2g"] {
            let s = parse(bad);
            assert_eq!(s.user_data, None, "{bad}");
            assert!(
                s.warnings[0].contains("mallee.user_data"),
                "{:?}",
                s.warnings
            );
        }
    }

    #[test]
    fn missing_role_defaults_to_node() {
        let s = parse("console=ttyS0");
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn unknown_key_and_bad_values_warn_and_keep_defaults() {
        let s = parse("mallee.colour=red mallee.role=router mallee.run=rel mallee.hostname=-x");
        assert_eq!(s.role, Role::Node);
        assert_eq!(s.run, None);
        assert_eq!(s.hostname, None);
        assert_eq!(s.warnings.len(), 4);
        assert!(s.warnings[0].contains("mallee.colour"));
    }

    #[test]
    fn quotes_group_words() {
        assert_eq!(split_words("a=\"b c\"  d\n"), vec!["a=b c", "d"]);
        assert_eq!(split_words(""), Vec::<String>::new());
        assert_eq!(split_words("x=\"\""), vec!["x="]);
    }

    #[test]
    fn mac_hostname_is_hex() {
        assert_eq!(
            hostname_from_mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            "mallee-525400123456"
        );
        assert!(is_valid_hostname(&hostname_from_mac([0xff; 6])));
    }
}
