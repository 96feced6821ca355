//! A NIC configured from the kernel's `ip=` ([`crate::cmdline::ip`]) instead of by DHCP, for a
//! test guest whose VMM answers no DHCP: the named NIC (or the first wired one) gets the
//! address, the default route through the gateway, `/etc/resolv.conf` from the DNS fields and
//! the uplink role, and readiness is announced at once. The hostname is set with the others at
//! boot (`set_hostname` in the crate root). The netlink requests are [`super::link`]'s; the
//! other NICs keep their DHCP clients ([`super::start`]).

use super::client::{self, ClientConfig, OnReady};
use super::link::{LinkError, Netlink};
use super::Nic;
use crate::cmdline::StaticIp;
use tracing::{info, warn};

/// The NIC `static_ip` names, or the first wired NIC when it names none.
pub fn choose_nic<'a>(nics: &'a [Nic], static_ip: &StaticIp) -> Option<&'a Nic> {
    match &static_ip.device {
        Some(name) => nics.iter().find(|nic| &nic.name == name),
        None => nics.first(),
    }
}

/// Sets `nic` up with the address and, when a gateway is given, the default route through it.
/// An address or route already there (a kernel built with `CONFIG_IP_PNP` applies the same
/// `ip=` itself before init runs) is kept.
pub fn configure(nic: &Nic, static_ip: &StaticIp) -> Result<(), LinkError> {
    let mut nl = Netlink::open()?;
    nl.set_up(nic.ifindex)?;
    already_there_is_fine(nl.add_address(nic.ifindex, static_ip.address, static_ip.prefix))?;
    if let Some(gateway) = static_ip.gateway {
        already_there_is_fine(nl.set_default_route(nic.ifindex, gateway))?;
    }
    Ok(())
}

fn already_there_is_fine(result: Result<(), LinkError>) -> Result<(), LinkError> {
    match result {
        Err(LinkError::Kernel { errno, .. }) if errno == rustix::io::Errno::EXIST => Ok(()),
        other => other,
    }
}

/// Configures the NIC `static_ip` names, makes it the uplink, writes its DNS servers and
/// announces `ADDR/PREFIX` through `on_ready`. Returns its name, or `None` (with a warning) when
/// there is no such NIC or it could not be configured: then DHCP runs on it as on the others.
pub fn start(
    nics: &[Nic],
    static_ip: &StaticIp,
    config: &ClientConfig,
    on_ready: &OnReady,
) -> Option<String> {
    let Some(nic) = choose_nic(nics, static_ip) else {
        let wanted = static_ip.device.as_deref().unwrap_or("(any)");
        warn!("ip=: no wired NIC {wanted}; every NIC runs DHCP");
        return None;
    };
    let (name, address, prefix) = (&nic.name, static_ip.address, static_ip.prefix);
    if let Err(e) = configure(nic, static_ip) {
        warn!("{name}: static address {address}/{prefix} from ip=: {e}; running DHCP instead");
        return None;
    }
    info!(
        "{name}: static address {address}/{prefix} gateway {:?} dns {:?} taken from the kernel command line (ip=); no DHCP on it",
        static_ip.gateway, static_ip.dns
    );
    config.uplink.claim(name);
    if !static_ip.dns.is_empty() {
        if let Err(e) = client::write_resolv_conf(&config.resolv_conf, &static_ip.dns) {
            warn!("writing {}: {e}", config.resolv_conf.display());
        }
    }
    on_ready(format!("{address}/{prefix}"));
    Some(name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Mac;
    use std::net::Ipv4Addr;

    fn nic(name: &str, ifindex: u32) -> Nic {
        Nic {
            name: name.into(),
            ifindex,
            mac: Mac([0x52, 0x54, 0, 0, 0, ifindex as u8]),
        }
    }

    fn static_ip(device: Option<&str>) -> StaticIp {
        StaticIp {
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            hostname: None,
            device: device.map(str::to_string),
            dns: vec![],
        }
    }

    #[test]
    fn the_named_nic_or_else_the_first_is_chosen() {
        let nics = [nic("eth0", 2), nic("eth1", 3)];
        assert_eq!(choose_nic(&nics, &static_ip(Some("eth1"))), Some(&nics[1]));
        assert_eq!(choose_nic(&nics, &static_ip(None)), Some(&nics[0]));
        assert_eq!(choose_nic(&nics, &static_ip(Some("eth7"))), None);
        assert_eq!(choose_nic(&[], &static_ip(None)), None);
    }

    /// Against the real kernel (needs root): configuring twice, as after the kernel's own `ip=`,
    /// leaves the address and the default route.
    #[test]
    fn a_static_ip_configures_the_nic_and_again_without_error() {
        crate::net::in_private_netns(
            "a_static_ip_configures_the_nic_and_again_without_error",
            || {
                crate::net::tap::create_persistent("sip0").unwrap();
                let ifindex = crate::net::link::ifindex("sip0").unwrap();
                let (nic, static_ip) = (nic("sip0", ifindex), static_ip(None));
                configure(&nic, &static_ip).unwrap();
                configure(&nic, &static_ip).unwrap();
                std::net::UdpSocket::bind((static_ip.address, 0)).expect("the address is local");
                let table = std::fs::read_to_string("/proc/thread-self/net/route").unwrap();
                assert!(
                    table
                        .lines()
                        .any(|l| l.starts_with("sip0\t00000000\t0202000A")),
                    "{table}"
                );
            },
        );
    }
}
