//! The daemon's configuration: one TOML file, every field defaulted so the QEMU harness and the
//! tests need none. It owns parsing and defaults only; nothing here opens files or sockets.

use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// The file the admin's first web console password is written to, beside the credentials.
pub const CONSOLE_PASSWORD_FILE: &str = "admin-console-password";

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("config file {path} is not valid: {why}")]
    Invalid { path: PathBuf, why: String },
}

/// The whole daemon configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP APIs (Walrus S3, EC2, the node protocol) listen on.
    pub listen: SocketAddr,
    /// Where state (SQLite) and object data live.
    pub data_dir: PathBuf,
    /// AWS credentials file written with the admin key pair on first start.
    /// Defaults to `<data_dir>/admin-credentials`.
    pub credentials_file: Option<PathBuf>,
    /// Region name the API answers for (signing scope and GetBucketLocation).
    pub region: String,
    /// Allowed difference between a request's signing time and ours, in seconds.
    pub max_clock_skew_secs: u64,
    /// Unprivileged user the HTTP server runs as when started as root. Created (system user)
    /// if missing; `nobody` is used when it cannot be created.
    pub run_as: String,
    /// The EC2 API, scheduler and node protocol (`[ec2]` table).
    pub ec2: crate::cloud::Ec2Config,
    /// The instance networks (`[network]` table).
    pub network: crate::cloud::NetworkConfig,
    /// Volume exports over AoE (`[storage]` table).
    pub storage: crate::cloud::StorageConfig,
    /// The PXE service that boots the compute nodes (`[pxe]` table); off unless present.
    pub pxe: Option<PxeSection>,
    /// Set by the flashable appliance's init: where it publishes the A/B slots and takes an
    /// upgrade the daemon staged (`UpgradeAppliance`). Unset: the appliance actions refuse.
    pub appliance_dir: Option<PathBuf>,
    /// Set by the appliance's init: where the daemon writes the desired gateway (VLAN links,
    /// public addresses, nftables rules; `mallee_proto::gateway`) for init to apply as root.
    /// Unset: nothing on this machine forwards instance traffic.
    pub gateway_dir: Option<PathBuf>,
    /// Limits on what one client may hold of the HTTP server (`[http]` table).
    pub http: HttpLimits,
    /// TLS on the API listener (`[tls]` table).
    pub tls: TlsSection,
}

/// The `[tls]` table: https on the API listener with the frontend's own CA (`crate::tls`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// Serve https (the default); `false` serves plain HTTP, where everything crosses the wire
    /// in clear.
    pub enabled: bool,
    /// DNS names and addresses clients reach the frontend by. The server certificate is also
    /// for the listen address (unless unspecified), `[pxe] server_ip`, `localhost` and
    /// 127.0.0.1; a change re-issues it on the next start.
    pub names: Vec<String>,
    /// The server certificate (valid a year) is re-issued, same key, when fewer days remain.
    pub renew_days: u32,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            enabled: true,
            names: Vec::new(),
            renew_days: 30,
        }
    }
}

/// The `[http]` table: what one client may hold of the server, so a slow or greedy one cannot
/// starve the others.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpLimits {
    /// Open connections from one client address; more are answered with the API's throttling
    /// error (S3 `SlowDown`, EC2 `RequestLimitExceeded`, 503) and closed.
    pub connections_per_client: usize,
    /// Seconds a client may take to send a request's head, and may leave its body idle.
    pub idle_secs: u64,
    /// Bytes of a request's head (request line and headers); a larger one gets 431.
    pub header_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            connections_per_client: 256,
            idle_secs: 60,
            header_bytes: 64 << 10,
        }
    }
}

/// The `[pxe]` table: DHCP, TFTP and HTTP on the private NIC. Nodes enroll with the `[ec2]`
/// cluster secret, which their kernel command line carries.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct PxeSection {
    /// The private NIC the DHCP server answers on.
    pub interface: String,
    /// The frontend's address on that NIC (server identifier, router, next-server).
    pub server_ip: Ipv4Addr,
    pub prefix_len: u8,
    /// Address pool; `.100`–`.199` of the server's /24 when unset.
    pub range_start: Option<Ipv4Addr>,
    pub range_end: Option<Ipv4Addr>,
    pub lease_secs: u32,
    /// Port of the HTTP side (`boot.ipxe`, kernel, initramfs).
    pub http_port: u16,
    /// The node netboot bundle: `vmlinuz`, `initramfs`, `cmdline`.
    pub image_dir: PathBuf,
    /// iPXE binaries served over TFTP to plain PXE ROMs.
    pub tftp_root: PathBuf,
    /// Cluster the booted nodes join; the first `[ec2]` cluster when unset.
    pub cluster: Option<String>,
}

impl Default for PxeSection {
    fn default() -> Self {
        PxeSection {
            interface: "eth1".to_string(),
            server_ip: Ipv4Addr::new(10, 77, 0, 1),
            prefix_len: 24,
            range_start: None,
            range_end: None,
            lease_secs: 3600,
            http_port: 8069,
            image_dir: PathBuf::from("/usr/share/mallee/node"),
            tftp_root: PathBuf::from("/usr/lib/ipxe"),
            cluster: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8773)),
            data_dir: PathBuf::from("/var/lib/mallee"),
            credentials_file: None,
            region: "us-east-1".to_string(),
            max_clock_skew_secs: 15 * 60,
            run_as: "mallee".to_string(),
            ec2: Default::default(),
            network: Default::default(),
            storage: Default::default(),
            pxe: None,
            appliance_dir: None,
            gateway_dir: None,
            http: HttpLimits::default(),
            tls: TlsSection::default(),
        }
    }
}

impl Config {
    /// Reads `path`, or returns the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Config::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        config.check().map_err(|why| ConfigError::Invalid {
            path: path.to_path_buf(),
            why,
        })?;
        Ok(config)
    }

    /// What no single table can see: the instance subnet must not overlap the private
    /// segment the nodes boot on, and no elastic IP may fall inside it.
    pub fn check(&self) -> Result<(), String> {
        let subnet = self.network.subnet;
        if let Some(pxe) = &self.pxe {
            let segment = ipnet::Ipv4Net::new(pxe.server_ip, pxe.prefix_len)
                .map_err(|_| format!("[pxe] prefix_len = {} is not 0-32", pxe.prefix_len))?
                .trunc();
            if segment.contains(&subnet.network()) || subnet.contains(&segment.network()) {
                return Err(format!(
                    "[network] subnet {subnet} overlaps the nodes' private segment {segment} ([pxe]); pick another subnet"
                ));
            }
        }
        let renew = self.tls.renew_days;
        if renew == 0 || i64::from(renew) >= crate::tls::SERVER_CERT_DAYS {
            return Err(format!(
                "[tls] renew_days = {renew} must be 1-{} (the server certificate is valid {} days)",
                crate::tls::SERVER_CERT_DAYS - 1,
                crate::tls::SERVER_CERT_DAYS
            ));
        }
        if let Some(ip) = self.ec2.public_ips.iter().find(|ip| subnet.contains(*ip)) {
            return Err(format!(
                "[ec2] public_ips holds {ip}, inside the instance subnet {subnet} ([network])"
            ));
        }
        Ok(())
    }

    /// Parses TOML text; missing fields take their defaults.
    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// The PXE service's settings when `[pxe]` is present: nodes reach the API at the PXE
    /// server address on the API's port, enroll with the `[ec2]` cluster secret and, when the
    /// API speaks TLS, pin `frontend_key`.
    pub fn pxe_config(
        &self,
        frontend_key: Option<mallee_proto::cmdline::PublicKeyPin>,
    ) -> Option<crate::pxe::PxeConfig> {
        let section = self.pxe.as_ref()?;
        let node = crate::pxe::http::NodeParams {
            frontend: SocketAddr::from((section.server_ip, self.listen.port())),
            cluster: section
                .cluster
                .clone()
                .or_else(|| self.ec2.clusters.first().cloned())
                .unwrap_or_else(|| "cluster1".to_string()),
            enrollment_secret: self.ec2.cluster_secret.clone(),
            bridge: self.network.mode != crate::cloud::NetMode::Managed,
            frontend_key,
        };
        let mut c = crate::pxe::PxeConfig::new(
            &section.interface,
            section.server_ip,
            section.image_dir.clone(),
            node,
        );
        c.prefix_len = section.prefix_len;
        c.range_start = section.range_start.unwrap_or(c.range_start);
        c.range_end = section.range_end.unwrap_or(c.range_end);
        c.lease_secs = section.lease_secs;
        c.http_port = section.http_port;
        c.tftp_root = section.tftp_root.clone();
        // The leases are a table (`pxe_leases`) of the state database.
        c.lease_db = self.data_dir.join(crate::store::STATE_DB);
        Some(c)
    }

    /// Path of the admin credentials file.
    pub fn credentials_path(&self) -> PathBuf {
        self.credentials_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("admin-credentials"))
    }

    /// The admin's first web console password (mode 0600), beside the admin credentials file.
    pub fn console_password_path(&self) -> PathBuf {
        self.credentials_path()
            .with_file_name(CONSOLE_PASSWORD_FILE)
    }

    /// The CA bundle for clients (`AWS_CA_BUNDLE`), beside the admin credentials file.
    pub fn ca_bundle_path(&self) -> PathBuf {
        self.credentials_path()
            .with_file_name(crate::tls::CA_BUNDLE_FILE)
    }

    /// The TLS files in the data directory and the names the server certificate is for now
    /// (see [`Config::tls_names`]).
    pub fn tls_files(&self) -> crate::tls::TlsFiles {
        let names = self.tls_names(&crate::tls::local_addrs());
        crate::tls::TlsFiles::new(&self.data_dir, names, self.tls.renew_days)
    }

    /// The names the server certificate is for: `[tls] names`, the listen address (every one of
    /// `local` when it listens on all of them), the address nodes reach the API at (`[pxe]`).
    pub fn tls_names(&self, local: &[IpAddr]) -> Vec<String> {
        let listen: Vec<IpAddr> = match self.listen.ip().is_unspecified() {
            true => local.to_vec(),
            false => vec![self.listen.ip()],
        };
        let pxe = self.pxe.as_ref().map(|p| IpAddr::from(p.server_ip));
        crate::tls::server_names(&self.tls.names, listen.into_iter().chain(pxe))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.listen.port(), 8773);
        assert_eq!(c.region, "us-east-1");
        assert_eq!(
            c.credentials_path(),
            PathBuf::from("/var/lib/mallee/admin-credentials")
        );
    }

    #[test]
    fn fields_override_defaults_and_unknown_fields_are_refused() {
        let c = Config::parse("listen = \"127.0.0.1:9000\"\ndata_dir = \"/tmp/x\"").unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(
            c.credentials_path(),
            PathBuf::from("/tmp/x/admin-credentials")
        );
        assert!(Config::parse("bogus = 1").is_err());
    }

    #[test]
    fn the_certificate_names_every_address_a_listener_on_all_of_them_serves() {
        let local: Vec<IpAddr> = vec!["192.0.2.7".parse().unwrap(), "2001:db8::7".parse().unwrap()];
        let c =
            Config::parse("listen = \"0.0.0.0:8773\"\n[tls]\nnames = [\"api.example\"]\n[pxe]\n")
                .unwrap();
        assert_eq!(
            c.tls_names(&local),
            [
                "api.example",
                "192.0.2.7",
                "2001:db8::7",
                "10.77.0.1",
                "localhost",
                "127.0.0.1"
            ]
        );
        let c = Config::parse("listen = \"192.0.2.9:8773\"").unwrap();
        assert_eq!(c.tls_names(&local), ["192.0.2.9", "localhost", "127.0.0.1"]);
    }

    #[test]
    fn tls_is_on_by_default_and_its_table_is_checked() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.tls, TlsSection::default());
        assert!(c.tls.enabled);
        assert!(!Config::parse("[tls]\nenabled = false").unwrap().tls.enabled);
        assert_eq!(c.tls.renew_days, 30);
        assert_eq!(
            c.ca_bundle_path(),
            PathBuf::from("/var/lib/mallee/mallee-ca.pem")
        );
        let c = Config::parse(
            "credentials_file = \"/root/.aws/credentials\"\n[tls]\nenabled = true\nnames = [\"api.example\", \"10.0.0.1\"]\nrenew_days = 60",
        )
        .unwrap();
        assert!(c.tls.enabled);
        assert_eq!(c.tls.names, ["api.example", "10.0.0.1"]);
        assert_eq!(
            c.ca_bundle_path(),
            PathBuf::from("/root/.aws/mallee-ca.pem")
        );
        c.check().unwrap();
        for bad in ["renew_days = 0", "renew_days = 365"] {
            let e = Config::parse(&format!("[tls]\n{bad}"))
                .unwrap()
                .check()
                .unwrap_err();
            assert!(e.contains("[tls] renew_days"), "{e}");
        }
        assert!(Config::parse("[tls]\nbogus = 1").is_err());
    }

    #[test]
    fn pxe_is_off_unless_its_table_is_present() {
        assert_eq!(Config::parse("").unwrap().pxe, None);
        let c = Config::parse("[pxe]\ninterface = \"ens4\"\nserver_ip = \"10.1.2.1\"").unwrap();
        let pxe = c.pxe.clone().unwrap();
        assert_eq!(pxe.interface, "ens4");
        assert_eq!(pxe.server_ip, Ipv4Addr::new(10, 1, 2, 1));
        assert_eq!(pxe.http_port, 8069);
        assert!(Config::parse("[pxe]\nbogus = 1").is_err());
        let pxe = c.pxe_config(None).unwrap();
        assert_eq!(pxe.node.frontend, "10.1.2.1:8773".parse().unwrap());
        assert_eq!(pxe.node.enrollment_secret, c.ec2.cluster_secret);
        assert_eq!(pxe.node.cluster, c.ec2.clusters[0]);
        assert_eq!(pxe.lease_db, PathBuf::from("/var/lib/mallee/state.sqlite3"));
    }

    #[test]
    fn the_network_table_is_checked_as_it_is_read() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.network.mode, crate::cloud::NetMode::Managed);
        assert_eq!(c.network.vlans.to_string(), "100-199");
        assert_eq!(c.network.slices(), 2048);
        assert_eq!(c.network.slice(1).to_string(), "172.31.0.32/27");
        c.check().unwrap();
        let c = Config::parse(
            "[network]\nmode = \"MANAGED-NOVLAN\"\nvlans = \"7\"\nsubnet = \"10.9.0.0/24\"\naddrs_per_net = 64\ndns = [\"10.0.0.53\"]",
        )
        .unwrap();
        assert_eq!(c.network.mode, crate::cloud::NetMode::ManagedNoVlan);
        assert_eq!((c.network.vlans.first, c.network.vlans.last), (7, 7));
        assert_eq!(c.network.slices(), 4);
        for (bad, says) in [
            ("vlans = \"0-10\"", "not a tag in 1-4094"),
            ("vlans = \"100-5000\"", "not a tag in 1-4094"),
            ("vlans = \"200-100\"", "runs backwards"),
            ("vlans = \"a-b\"", "not a tag"),
            ("subnet = \"10.0.0.0/33\"", "invalid"),
            ("subnet = \"10.0.0.1/24\"", "host bits set"),
            ("addrs_per_net = 48", "power of two"),
            ("addrs_per_net = 4", "8 or more"),
            (
                "subnet = \"10.0.0.0/28\"\naddrs_per_net = 32",
                "more than subnet",
            ),
            ("mode = \"VLAN\"", "unknown variant"),
            ("bogus = 1", "unknown field"),
        ] {
            let e = Config::parse(&format!("[network]\n{bad}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let pxe = "[pxe]\nserver_ip = \"172.31.5.1\"\nprefix_len = 24\n";
        let e = Config::parse(pxe).unwrap().check().unwrap_err();
        assert!(
            e.contains("overlaps the nodes' private segment 172.31.5.0/24"),
            "{e}"
        );
        let e = Config::parse("[ec2]\npublic_ips = [\"172.31.9.9\"]")
            .unwrap()
            .check();
        assert!(e.unwrap_err().contains("172.31.9.9, inside"));
    }
}
