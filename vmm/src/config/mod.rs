//! VM configuration: the node agent's JSON file and the command line both become one
//! [`VmmConfig`] (the contract type in `mallee-proto`), which [`check`] holds against this VMM's
//! limits.
//!
//! The command line is a front end onto the same type: each flag sets a field (`--config FILE`
//! reads the whole JSON document, and later flags change it), so a bad value gives the same
//! one-line error naming the field whichever way it came in. This module does not open files or
//! devices; it only checks shape (sizes, counts, names, MAC addresses).

use std::path::PathBuf;

use serde_path_to_error::Segment;

mod fields;
mod limits;

pub use fields::parse_size;
pub use limits::{
    check, check_disk_source, check_metadata, MAX_DEVICES, MAX_VCPUS, MAX_VOLUME_SLOTS,
};
pub use mallee_proto::vmm::{
    Disk, DiskSource, GuestAddress, LogLevel, Nic, OnReboot, SystemIdentity, TapSource, Uuid,
    VmmConfig, DEFAULT_MEMORY_MIB,
};

/// A configuration value that could not be accepted, naming the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration field `{field}`: {reason}")]
pub struct ConfigError {
    /// The field: the option without `--` when it came from the command line, else the JSON
    /// key.
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

/// The flags, for `--help`.
pub const USAGE: &str = "usage: mallee-vmm --kernel K [--initrd I] [--cmdline C] [--mem 256M] \
[--vcpus N] [--disk PATH|aoe:IFACE:SHELF.SLOT[,ro][,serial=S]]... [--volume-slots N] \
[--net tap=NAME|fd=N,mac=M[,ip=A/PREFIX[,gw=G][,dns=D]...[,hostname=H]]]... \
[--serial FILE] [--api-socket PATH] [--no-rng] [--on-reboot exit|restart] [--failure-path FILE] \
[--log-level error|warn|info|debug|trace] \
[--smbios manufacturer=M,product=P,uuid=U[,serial=S][,asset-tag=T]]
       mallee-vmm --config FILE.json [flags that change it]";

/// Parses a JSON configuration document (the node agent's form). Its fields are checked with
/// [`check`].
pub fn from_json(text: &str) -> Result<VmmConfig, ConfigError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let msg = e.inner().to_string();
        // The first key on the path to the bad value; failing that, the unknown or missing
        // field serde names in backquotes.
        let named = (msg.starts_with("unknown field") || msg.starts_with("missing field"))
            .then(|| msg.split('`').nth(1).map(str::to_string))
            .flatten();
        let field = (e.path().iter())
            .find_map(|s| match s {
                Segment::Map { key } => Some(key.clone()),
                _ => None,
            })
            .or(named)
            .unwrap_or_else(|| "config".to_string());
        err(&field, msg)
    })
}

fn read_file(path: &str) -> Result<VmmConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err("config", format!("cannot read `{path}`: {e}")))?;
    from_json(&text)
}

/// Parses command-line arguments (without the program name) into a configuration; its fields
/// are checked with [`check`].
pub fn from_args<I: IntoIterator<Item = String>>(args: I) -> Result<VmmConfig, ConfigError> {
    // An empty kernel path until `--kernel` or `--config` gives one; `check` refuses it.
    let mut cfg = VmmConfig::new(PathBuf::new());
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or_else(|| err("arguments", format!("`{flag}` is not an option")))?;
        if name == "no-rng" {
            cfg.rng = false;
            continue;
        }
        let value = args.next().ok_or_else(|| err(name, "needs a value"))?;
        match name {
            "config" => cfg = read_file(&value)?,
            "kernel" => cfg.kernel = value.into(),
            "initrd" => cfg.initrd = Some(value.into()),
            "cmdline" => cfg.cmdline = value,
            "mem" => cfg.memory_mib = fields::parse_mem(&value)?,
            "vcpus" => cfg.vcpus = fields::parse_vcpus(&value)?,
            "disk" => cfg.disks.push(fields::parse_disk(&value)?),
            "volume-slots" => cfg.volume_slots = fields::parse_volume_slots(&value)?,
            "net" => cfg.nics.push(fields::parse_net(&value)?),
            "serial" => cfg.console = Some(value.into()),
            "api-socket" => cfg.api_socket = Some(value.into()),
            "on-reboot" => cfg.on_reboot = fields::parse_choice("on_reboot", &value)?,
            "failure-path" => cfg.failure_path = Some(value.into()),
            "log-level" => cfg.log_level = fields::parse_choice("log_level", &value)?,
            "smbios" => cfg.smbios = Some(fields::parse_smbios(&value)?),
            _ => return Err(err(name, "unknown option")),
        }
    }
    Ok(cfg)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
