//! Configuration of the cloud: clusters (zones), the node enrollment secret, address pools and
//! node timing (the `[ec2]` table of the daemon's TOML file, read by the EC2 API, the
//! scheduler and the node protocol alike). Parsing and defaults only.

use serde::Deserialize;

/// The `[ec2]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ec2Config {
    /// Cluster names; each is one availability zone.
    pub clusters: Vec<String>,
    /// Secret a node presents (from its kernel command line) to enroll.
    pub cluster_secret: String,
    /// Elastic IP pool.
    pub public_ips: Vec<std::net::Ipv4Addr>,
    /// First private address handed to instances (then counting up).
    pub private_base: std::net::Ipv4Addr,
    /// A node that has not reported for this long is marked down.
    pub node_deadline_secs: u64,
    /// How long the desired-state long poll is held.
    pub long_poll_secs: u64,
}

impl Default for Ec2Config {
    fn default() -> Self {
        Ec2Config {
            clusters: vec!["cluster1".to_string()],
            cluster_secret: "mallee-cluster-secret".to_string(),
            public_ips: (10..42)
                .map(|i| std::net::Ipv4Addr::new(198, 51, 100, i))
                .collect(),
            private_base: std::net::Ipv4Addr::new(172, 31, 0, 10),
            node_deadline_secs: 60,
            long_poll_secs: 20,
        }
    }
}
