//! What this VMM can run: the checks a [`VmmConfig`] must pass, whichever front end produced it
//! (RAM range, vCPU count, device and volume slot counts, AoE addresses, serial and tap name lengths, unicast
//! MACs, guest addresses, the metadata service's hop limit, SMBIOS strings). Errors name the JSON
//! field.

use mallee_proto::vmm::{GuestAddress, InstanceMetadata};
use mallee_proto::HOP_LIMITS;

use super::{err, ConfigError, DiskSource, TapSource, VmmConfig};

/// Most vCPUs the MP table and APIC ID space here allow.
pub const MAX_VCPUS: u8 = 64;
/// Most disks plus volume slots plus NICs (PCI slots 1..=30 minus rng).
pub const MAX_DEVICES: usize = 24;
/// Most volume slots (empty virtio-blk devices for hot-attached volumes).
pub const MAX_VOLUME_SLOTS: u8 = 16;
/// Least guest RAM a Linux guest boots in.
const MIN_MEMORY_MIB: u64 = 16;
/// Most guest RAM (1 TiB).
const MAX_MEMORY_MIB: u64 = 1 << 20;
/// Longest virtio-blk serial (the GET_ID buffer).
const MAX_SERIAL: usize = 20;
/// Longest interface name (IFNAMSIZ less the NUL).
const MAX_IFNAME: usize = 15;

fn check_ifname(field: &str, what: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > MAX_IFNAME {
        return Err(err(
            field,
            format!("{what} `{name}` must be 1-{MAX_IFNAME} bytes"),
        ));
    }
    Ok(())
}

/// Longest DHCP host name (a DNS label).
const MAX_HOSTNAME: usize = 63;

/// A guest address the VMM can hand out: a host address of a subnet of /1 to /30, a gateway
/// inside it that is not the guest's own, and a host name that is a DNS label.
fn check_address(a: &GuestAddress) -> Result<(), ConfigError> {
    let bad = |why: String| Err(err("nics", format!("address {}: {why}", a.address)));
    if !(1..=30).contains(&a.prefix_len) {
        return bad(format!("prefix /{} is not from /1 to /30", a.prefix_len));
    }
    let host = u32::from(a.address) & !u32::from(a.netmask());
    if host == 0 || host == !u32::from(a.netmask()) {
        return bad(format!(
            "is the network or broadcast address of /{}",
            a.prefix_len
        ));
    }
    if a.address.is_multicast() || a.address.is_loopback() || a.address.is_unspecified() {
        return bad("is not a host address".into());
    }
    if let Some(gw) = a.gateway {
        if gw == a.address || !a.contains(gw) {
            return bad(format!("gateway {gw} is not another address of its subnet"));
        }
    }
    if let Some(name) = &a.hostname {
        let label = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if name.is_empty() || name.len() > MAX_HOSTNAME || !label || name.starts_with('-') {
            return bad(format!(
                "host name `{name}` is not 1-{MAX_HOSTNAME} letters, digits and inner hyphens"
            ));
        }
    }
    Ok(())
}

/// Checks a disk's or volume's source (a configured disk's, the API's `attach_volume`): a
/// non-empty path (two for an overlay), or an AoE target on an interface name that can exist at a unicast address.
pub fn check_disk_source(field: &str, source: &DiskSource) -> Result<(), ConfigError> {
    match source {
        DiskSource::File(path) if path.as_os_str().is_empty() => Err(err(field, "empty path")),
        DiskSource::File(_) => Ok(()),
        DiskSource::Overlay { base, top } => {
            if base.as_os_str().is_empty() || top.as_os_str().is_empty() {
                Err(err(field, "empty path for an overlay's base or top"))
            } else {
                Ok(())
            }
        }
        DiskSource::Aoe { iface, shelf, slot } => {
            check_ifname(field, "AoE interface", iface)?;
            // 0xffff.0xff is the broadcast address, never a target's own.
            if *shelf == u16::MAX || *slot == u8::MAX {
                return Err(err(field, format!("{source} is a broadcast AoE address")));
            }
            Ok(())
        }
    }
}

/// Checks metadata the service can serve: a hop limit in [`HOP_LIMITS`] (the configuration's
/// and the API's `set_metadata`).
pub fn check_metadata(m: &InstanceMetadata) -> Result<(), ConfigError> {
    let hops = m.options.http_put_response_hop_limit;
    if !HOP_LIMITS.contains(&hops) {
        return Err(err(
            "metadata",
            format!(
                "hop limit {hops} is not from {} to {}",
                HOP_LIMITS.start(),
                HOP_LIMITS.end()
            ),
        ));
    }
    Ok(())
}

/// Checks `cfg` against this VMM's limits.
pub fn check(cfg: &VmmConfig) -> Result<(), ConfigError> {
    if cfg.kernel.as_os_str().is_empty() {
        return Err(err("kernel", "no kernel given"));
    }
    if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&cfg.memory_mib) {
        return Err(err(
            "memory_mib",
            format!(
                "{} MiB is not from {MIN_MEMORY_MIB} MiB to {MAX_MEMORY_MIB} MiB",
                cfg.memory_mib
            ),
        ));
    }
    if cfg.vcpus == 0 || cfg.vcpus > MAX_VCPUS {
        return Err(err(
            "vcpus",
            format!("{} is not from 1 to {MAX_VCPUS}", cfg.vcpus),
        ));
    }
    for d in &cfg.disks {
        check_disk_source("disks", &d.source)?;
        if let Some(serial) = d.serial.as_deref().filter(|s| s.len() > MAX_SERIAL) {
            return Err(err(
                "disks",
                format!("serial `{serial}` is longer than {MAX_SERIAL} bytes"),
            ));
        }
    }
    for n in &cfg.nics {
        match &n.tap {
            TapSource::Name(name) => check_ifname("nics", "tap name", name)?,
            TapSource::Fd(fd) if *fd < 0 => {
                return Err(err("nics", format!("fd {fd} is not a file descriptor")));
            }
            TapSource::Fd(_) => {}
        }
        if n.mac.is_multicast() {
            return Err(err("nics", format!("{} is a multicast address", n.mac)));
        }
        if let Some(a) = &n.address {
            check_address(a)?;
        }
    }
    if let Some(m) = &cfg.metadata {
        check_metadata(m)?;
    }
    if let Some(id) = &cfg.smbios {
        crate::boot::smbios::check(id).map_err(|e| err("smbios", e.to_string()))?;
    }
    if cfg.volume_slots > MAX_VOLUME_SLOTS {
        return Err(err(
            "volume_slots",
            format!("{} is more than {MAX_VOLUME_SLOTS}", cfg.volume_slots),
        ));
    }
    if cfg.disks.len() + usize::from(cfg.volume_slots) + cfg.nics.len() > MAX_DEVICES {
        let field = if cfg.volume_slots > 0 {
            "volume_slots"
        } else {
            "disks"
        };
        return Err(err(
            field,
            format!("more than {MAX_DEVICES} disks, volume slots and NICs"),
        ));
    }
    Ok(())
}
