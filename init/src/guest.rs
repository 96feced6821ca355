//! What `mallee-init` does as an instance's PID 1 (the test guest: role node, no frontend on
//! its command line) once its NIC has an address from a VMM that serves metadata (the lease
//! put 169.254.169.254 on-link): asks the metadata service for its instance id with an IMDSv2
//! token and says it on the console, where GetConsoleOutput shows it.

use crate::agent::client::Client;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tracing::{info, warn};

const SERVICE: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)), 80);
const TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `/proc/net/route` text routes 169.254.169.254/32 on-link (what the VMM's DHCP answer
/// asks for when it serves metadata).
pub fn metadata_route(table: &str) -> bool {
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"FEA9FEA9")
            && f.get(2) == Some(&"00000000")
            && f.get(7) == Some(&"FFFFFFFF")
    })
}

/// The instance id, through an IMDSv2 token as a careful client asks.
fn instance_id() -> Result<String, String> {
    let imds = Client::new(SERVICE);
    let ttl = [("X-aws-ec2-metadata-token-ttl-seconds", "60".to_string())];
    let mut reply = (imds.send("PUT", "/latest/api/token", &ttl, &[], TIMEOUT))
        .map_err(|e| format!("token: {e}"))?;
    let token = String::from_utf8_lossy(&reply.read_all().map_err(|e| e.to_string())?).into_owned();
    let with = [("X-aws-ec2-metadata-token", token)];
    let mut reply = (imds.send("GET", "/latest/meta-data/instance-id", &with, &[], TIMEOUT))
        .map_err(|e| format!("instance-id: {e}"))?;
    let id = reply.read_all().map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&id).trim().to_string())
}

/// Asks for the instance id when a metadata service is on-link, on a thread of its own.
pub fn start() {
    let table = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    if !metadata_route(&table) {
        return;
    }
    std::thread::spawn(|| {
        for attempt in 1..=3 {
            match instance_id() {
                Ok(id) => return info!("metadata: instance-id {id}"),
                Err(e) => warn!("metadata: attempt {attempt}: {e}"),
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_on_link_service_route_is_recognised() {
        let head =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
        let on_link = "eth0\tFEA9FEA9\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n";
        let via_gw = "eth0\tFEA9FEA9\t01001FAC\t0007\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n";
        assert!(metadata_route(&format!("{head}{on_link}")));
        assert!(!metadata_route(&format!("{head}{via_gw}")));
        assert!(!metadata_route(head));
    }
}
