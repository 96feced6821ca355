//! The daemon's configuration: one TOML file, every field defaulted so the QEMU harness and the
//! tests need none. It owns parsing and defaults only; nothing here opens files or sockets.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
}

/// The whole daemon configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API (S3 now, EC2 later) listens on.
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
    pub ec2: crate::ec2::Ec2Config,
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
        Config::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parses TOML text; missing fields take their defaults.
    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Path of the admin credentials file.
    pub fn credentials_path(&self) -> PathBuf {
        self.credentials_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("admin-credentials"))
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
}
