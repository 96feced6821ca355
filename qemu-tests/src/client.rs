//! What a client needs to use a frontend over HTTPS, and the one place the harness hands it to
//! the clients it runs: the admin credentials file and the CA bundle that verifies the API's
//! certificate, which the appliance prints on its console (`admin-credentials: `,
//! `ca-bundle: `, `frontend-key: `; a host frontend writes them into its data directory), go
//! to the AWS CLI, boto3, python's urllib and curl through [`ClientEnv::apply`]. Parsing the
//! console is plain functions over its text; waiting for it is the console's.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

/// The environment of a client process: credentials, region and trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEnv {
    /// An AWS credentials file whose `[default]` profile is the admin.
    pub credentials: PathBuf,
    /// The frontend's CA certificate (PEM).
    pub ca_bundle: PathBuf,
}

impl ClientEnv {
    /// The variables [`ClientEnv::apply`] sets: the credentials file for the AWS CLI and boto3
    /// (no config file, region us-east-1, no instance-metadata lookups) and the CA bundle for
    /// each kind of client (`AWS_CA_BUNDLE`: the AWS CLI, boto3 and `scripts/mallee-admin`;
    /// `SSL_CERT_FILE`: python's `ssl` and OpenSSL; `CURL_CA_BUNDLE`: curl;
    /// `REQUESTS_CA_BUNDLE`: python-requests).
    pub fn vars(&self) -> Vec<(&'static str, OsString)> {
        let bundle = || self.ca_bundle.clone().into_os_string();
        vec![
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                self.credentials.clone().into_os_string(),
            ),
            ("AWS_CONFIG_FILE", "/dev/null".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CA_BUNDLE", bundle()),
            ("SSL_CERT_FILE", bundle()),
            ("CURL_CA_BUNDLE", bundle()),
            ("REQUESTS_CA_BUNDLE", bundle()),
        ]
    }

    /// Sets [`ClientEnv::vars`] on `cmd` and removes what in this process's environment would
    /// take precedence over them (other keys, a profile).
    pub fn apply<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        for (name, value) in self.vars() {
            cmd.env(name, value);
        }
        for name in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
        ] {
            cmd.env_remove(name);
        }
        cmd
    }

    /// The same as shell `export` lines, for a person to paste.
    pub fn exports(&self) -> String {
        let words: Vec<String> = (self.vars().into_iter())
            .filter(|(name, _)| !matches!(*name, "AWS_CONFIG_FILE" | "AWS_EC2_METADATA_DISABLED"))
            .map(|(name, value)| format!("{name}={}", value.to_string_lossy()))
            .collect();
        format!("export {}", words.join(" "))
    }
}

/// The prefix of the appliance's console lines that carry the CA bundle, one PEM line each.
pub const CA_BUNDLE_LINE: &str = "ca-bundle: ";
/// The console line saying the CA bundle is complete (its certificate's last line).
pub const CA_BUNDLE_END: &str = "ca-bundle: -----END CERTIFICATE-----";
/// The appliance's console line with the pin of the frontend's key (`sha256:HEX`).
pub const FRONTEND_KEY_LINE: &str = r"frontend-key: (sha256:[0-9a-f]{64})";
/// The host daemon's own line with that pin, printed before it listens.
pub const DAEMON_PIN_LINE: &str = r"mallee-frontend: nodes pin (sha256:[0-9a-f]{64})";

/// The CA bundle the appliance printed on `console` (its text): the `ca-bundle: ` lines of the
/// last complete certificate, as PEM; `None` before its last line is printed.
pub fn ca_bundle_in(console: &str) -> Option<String> {
    let lines: Vec<&str> = (console.lines())
        .filter_map(|l| l.split_once(CA_BUNDLE_LINE).map(|(_, pem)| pem.trim_end()))
        .collect();
    let end = lines.iter().rposition(|l| l.starts_with("-----END "))?;
    let begin = lines[..end]
        .iter()
        .rposition(|l| l.starts_with("-----BEGIN "))?;
    let pem: String = lines[begin..=end]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    Some(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_whole_certificate_on_the_console_is_the_bundle() {
        let console = "[    1.0] mallee-init: ca-bundle: -----BEGIN CERTIFICATE-----\n\
             [    1.0] mallee-init: ca-bundle: OLD\n\
             [    1.0] mallee-init: ca-bundle: -----END CERTIFICATE-----\n\
             [   9.12] kernel noise\n\
             [   10.0] mallee-init: ca-bundle: -----BEGIN CERTIFICATE-----\n\
             [   10.0] mallee-init: ca-bundle: MIIB\n\
             [   10.1] mallee-init: ca-bundle: AbC=\n\
             [   10.1] mallee-init: ca-bundle: -----END CERTIFICATE-----\n\
             [   10.2] mallee-init: frontend-key: sha256:00\n";
        assert_eq!(
            ca_bundle_in(console).as_deref(),
            Some("-----BEGIN CERTIFICATE-----\nMIIB\nAbC=\n-----END CERTIFICATE-----\n")
        );
        // Half printed: not yet.
        let half =
            "mallee-init: ca-bundle: -----BEGIN CERTIFICATE-----\nmallee-init: ca-bundle: MIIB\n";
        assert_eq!(ca_bundle_in(half), None);
        assert_eq!(ca_bundle_in(""), None);
    }

    #[test]
    fn every_client_gets_the_bundle_and_nothing_of_the_callers_keys() {
        let env = ClientEnv {
            credentials: PathBuf::from("/t/creds"),
            ca_bundle: PathBuf::from("/t/ca.pem"),
        };
        let mut cmd = Command::new("true");
        env.apply(&mut cmd);
        let set: Vec<(String, Option<String>)> = cmd
            .get_envs()
            .map(|(k, v)| {
                let v = v.map(|v| v.to_string_lossy().into_owned());
                (k.to_string_lossy().into_owned(), v)
            })
            .collect();
        for name in [
            "AWS_CA_BUNDLE",
            "SSL_CERT_FILE",
            "CURL_CA_BUNDLE",
            "REQUESTS_CA_BUNDLE",
        ] {
            assert!(
                set.contains(&(name.into(), Some("/t/ca.pem".into()))),
                "{name}: {set:?}"
            );
        }
        assert!(set.contains(&(
            "AWS_SHARED_CREDENTIALS_FILE".into(),
            Some("/t/creds".into())
        )));
        assert!(set.contains(&("AWS_ACCESS_KEY_ID".into(), None)));
        assert_eq!(
            env.exports(),
            "export AWS_SHARED_CREDENTIALS_FILE=/t/creds AWS_DEFAULT_REGION=us-east-1 \
             AWS_CA_BUNDLE=/t/ca.pem SSL_CERT_FILE=/t/ca.pem CURL_CA_BUNDLE=/t/ca.pem \
             REQUESTS_CA_BUNDLE=/t/ca.pem"
        );
    }
}
