//! VM configuration: the command line and the JSON file describe the same [`VmConfig`].
//!
//! Both front ends produce raw strings per field and go through the same field parsers, so a bad
//! value gives the same one-line error naming the field whichever way it came in. This module does
//! not open files or devices; it only checks shape (sizes, counts, MAC syntax).

use std::path::PathBuf;

use serde::Deserialize;

mod fields;

pub use fields::{
    parse_disk, parse_mac, parse_net, parse_size, DEFAULT_MEM, MAX_DEVICES, MAX_VCPUS,
};
use fields::{parse_mem, parse_vcpus};

/// A configuration value that could not be accepted, naming the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration field `{field}`: {reason}")]
pub struct ConfigError {
    /// The field name as it appears on the command line (without `--`) and in JSON.
    pub field: String,
    /// What was wrong with the value.
    pub reason: String,
}

fn err(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Where a tap device comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TapSource {
    /// Open `/dev/net/tun` and attach to the tap of this name.
    Name(String),
    /// Use an already-open tap file descriptor inherited from the parent.
    Fd(i32),
}

/// What a guest reboot does to the VMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnReboot {
    /// Exit with status 2 and let the node agent decide.
    #[default]
    Exit,
    /// Build the VM again from the same configuration and boot it.
    Restart,
}

/// Where a disk's blocks come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskSource {
    /// A raw image file or block device.
    File(PathBuf),
    /// An AoE target (`aoe:IFACE:SHELF.SLOT`), reached with the user-space initiator.
    Aoe {
        /// The interface the target's segment is on.
        iface: String,
        /// AoE shelf (major) address.
        shelf: u16,
        /// AoE slot (minor) address.
        slot: u8,
    },
}

/// One virtio-blk disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    /// The backing store.
    pub source: DiskSource,
    /// Reject guest writes with an I/O error status and advertise VIRTIO_BLK_F_RO.
    pub read_only: bool,
    /// The serial string the guest reads with VIRTIO_BLK_T_GET_ID (at most 20 bytes).
    pub serial: Option<String>,
}

/// One virtio-net interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// The tap backing the interface.
    pub tap: TapSource,
    /// The guest MAC address.
    pub mac: [u8; 6],
}

/// Everything needed to start one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    /// The kernel: a bzImage or an ELF vmlinux.
    pub kernel: PathBuf,
    /// An optional initramfs.
    pub initrd: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
    /// Guest RAM in bytes.
    pub mem_bytes: u64,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// virtio-blk disks, in PCI slot order.
    pub disks: Vec<DiskConfig>,
    /// virtio-net interfaces, in PCI slot order after the disks.
    pub nets: Vec<NetConfig>,
    /// Serial console output file; `None` writes to stdout.
    pub serial: Option<PathBuf>,
    /// Unix socket for the JSON control API.
    pub api_socket: Option<PathBuf>,
    /// Whether to add a virtio-rng device.
    pub rng: bool,
    /// What a guest reboot does.
    pub on_reboot: OnReboot,
}

/// The JSON form: the same fields, with disks and nets as the CLI's strings or as objects.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    kernel: Option<String>,
    initrd: Option<String>,
    cmdline: Option<String>,
    mem: Option<serde_json::Value>,
    vcpus: Option<serde_json::Value>,
    #[serde(default)]
    disk: Vec<String>,
    #[serde(default)]
    net: Vec<String>,
    serial: Option<String>,
    api_socket: Option<String>,
    rng: Option<bool>,
    on_reboot: Option<String>,
}

impl VmConfig {
    fn from_raw(raw: RawConfig) -> Result<VmConfig, ConfigError> {
        let kernel = raw.kernel.ok_or_else(|| err("kernel", "missing"))?;
        if kernel.is_empty() {
            return Err(err("kernel", "empty path"));
        }
        let json_str = |field: &str, v: serde_json::Value| match v {
            serde_json::Value::String(s) => Ok(s),
            serde_json::Value::Number(n) => Ok(n.to_string()),
            other => Err(err(
                field,
                format!("`{other}` is neither a string nor a number"),
            )),
        };
        let mem_bytes = match raw.mem {
            Some(v) => parse_mem(&json_str("mem", v)?)?,
            None => DEFAULT_MEM,
        };
        let vcpus = match raw.vcpus {
            Some(v) => parse_vcpus(&json_str("vcpus", v)?)?,
            None => 1,
        };
        let disks = raw
            .disk
            .iter()
            .map(|d| parse_disk(d))
            .collect::<Result<Vec<_>, _>>()?;
        let nets = raw
            .net
            .iter()
            .map(|n| parse_net(n))
            .collect::<Result<Vec<_>, _>>()?;
        if disks.len() + nets.len() > MAX_DEVICES {
            return Err(err(
                "disk",
                format!("more than {MAX_DEVICES} disks and nets"),
            ));
        }
        Ok(VmConfig {
            kernel: PathBuf::from(kernel),
            initrd: raw.initrd.map(PathBuf::from),
            cmdline: raw.cmdline.unwrap_or_else(|| "console=ttyS0".to_string()),
            mem_bytes,
            vcpus,
            disks,
            nets,
            serial: raw.serial.map(PathBuf::from),
            api_socket: raw.api_socket.map(PathBuf::from),
            rng: raw.rng.unwrap_or(true),
            on_reboot: match raw.on_reboot.as_deref() {
                None | Some("exit") => OnReboot::Exit,
                Some("restart") => OnReboot::Restart,
                Some(other) => {
                    return Err(err(
                        "on_reboot",
                        format!("`{other}` is neither exit nor restart"),
                    ))
                }
            },
        })
    }

    /// Parses a JSON configuration document (the node agent's form).
    pub fn from_json(text: &str) -> Result<VmConfig, ConfigError> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| {
            let msg = e.to_string();
            // serde names the offending field in its message ("unknown field `x`", "missing
            // field", "invalid type ... for key `x`"); pull it out so the error names it.
            let field = msg
                .split('`')
                .nth(1)
                .filter(|f| f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or("config");
            err(field, msg.clone())
        })?;
        Self::from_raw(raw)
    }

    /// Parses command-line arguments (without the program name). `--config FILE` reads JSON.
    pub fn from_args<I: IntoIterator<Item = String>>(args: I) -> Result<VmConfig, ConfigError> {
        let mut raw = RawConfig {
            kernel: None,
            initrd: None,
            cmdline: None,
            mem: None,
            vcpus: None,
            disk: Vec::new(),
            net: Vec::new(),
            serial: None,
            api_socket: None,
            rng: None,
            on_reboot: None,
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| err("arguments", format!("`{flag}` is not an option")))?;
            if name == "no-rng" {
                raw.rng = Some(false);
                continue;
            }
            let value = args
                .next()
                .ok_or_else(|| err(name, "needs a value".to_string()))?;
            let s = serde_json::Value::String;
            match name {
                "config" => {
                    let text = std::fs::read_to_string(&value)
                        .map_err(|e| err("config", format!("cannot read `{value}`: {e}")))?;
                    return Self::from_json(&text);
                }
                "kernel" => raw.kernel = Some(value),
                "initrd" => raw.initrd = Some(value),
                "cmdline" => raw.cmdline = Some(value),
                "mem" => raw.mem = Some(s(value)),
                "vcpus" => raw.vcpus = Some(s(value)),
                "disk" => raw.disk.push(value),
                "net" => raw.net.push(value),
                "serial" => raw.serial = Some(value),
                "api-socket" => raw.api_socket = Some(value),
                "on-reboot" => raw.on_reboot = Some(value),
                _ => return Err(err(name, "unknown option")),
            }
        }
        Self::from_raw(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn cli_and_json_give_the_same_config() {
        let cli = VmConfig::from_args(args(
            "--kernel /k --initrd /i --cmdline console=ttyS0 --mem 256M --vcpus 2 \
             --disk /d.img,ro --disk /e.img,serial=vol-1 --net tap=tap0,mac=52:54:00:12:34:56 \
             --serial /s.log",
        ))
        .unwrap();
        let json = VmConfig::from_json(
            r#"{"kernel":"/k","initrd":"/i","cmdline":"console=ttyS0","mem":"256M","vcpus":2,
                "disk":["/d.img,ro","/e.img,serial=vol-1"],
                "net":["tap=tap0,mac=52:54:00:12:34:56"],"serial":"/s.log"}"#,
        )
        .unwrap();
        assert_eq!(cli, json);
        assert_eq!(cli.mem_bytes, 256 << 20);
        assert!(cli.disks[0].read_only);
        assert_eq!(cli.disks[1].serial.as_deref(), Some("vol-1"));
        assert_eq!(cli.nets[0].mac, [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    }

    #[test]
    fn bad_mem_names_the_field() {
        let e = VmConfig::from_args(args("--kernel /k --mem lots")).unwrap_err();
        assert_eq!(e.field, "mem");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn bad_fields_are_named() {
        for (a, field) in [
            ("--mem 256M", "kernel"),
            ("--kernel /k --vcpus 0", "vcpus"),
            ("--kernel /k --disk ,ro", "disk"),
            ("--kernel /k --disk /d,rox", "disk"),
            ("--kernel /k --net tap=t0", "net"),
            ("--kernel /k --net tap=t0,mac=01:00:00:00:00:00", "net"),
            ("--kernel /k --net mac=52:54:00:00:00:01", "net"),
            ("--kernel /k --bogus 1", "bogus"),
            ("--kernel", "kernel"),
            ("--kernel /k --on-reboot sometimes", "on_reboot"),
        ] {
            let e = VmConfig::from_args(args(a)).unwrap_err();
            assert_eq!(e.field, field, "{a}: {e}");
        }
    }

    #[test]
    fn on_reboot_defaults_to_exit_and_takes_restart() {
        let c = VmConfig::from_args(args("--kernel /k")).unwrap();
        assert_eq!(c.on_reboot, OnReboot::Exit);
        let c = VmConfig::from_json(r#"{"kernel":"/k","on_reboot":"restart"}"#).unwrap();
        assert_eq!(c.on_reboot, OnReboot::Restart);
    }

    #[test]
    fn json_unknown_field_is_named() {
        let e = VmConfig::from_json(r#"{"kernel":"/k","memory":"1G"}"#).unwrap_err();
        assert_eq!(e.field, "memory");
        let e = VmConfig::from_json(r#"{"kernel":"/k","vcpus":[1]}"#).unwrap_err();
        assert_eq!(e.field, "vcpus");
    }
}
