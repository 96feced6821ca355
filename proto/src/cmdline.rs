//! The `mallee.*` kernel command-line keys, spelled once: the PXE service and the image builder
//! write them, `mallee-init` reads them. Mostly only the names live here and what a value means
//! is the reader's business (`init/src/cmdline.rs`); the one exception is the frontend's key pin
//! ([`PublicKeyPin`]), whose spelling the PXE service and the node agent must agree on to the
//! byte.

use std::fmt;

/// The prefix every key carries on the command line.
pub const PREFIX: &str = "mallee.";

/// One `mallee.*` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// `node` or `frontend`.
    Role,
    /// A program to run once the node is ready, then power off (test hook).
    Run,
    Hostname,
    /// `1` makes PID 1 panic on purpose (test hook).
    TestPanic,
    /// The frontend's data disk: `/dev/X` or `PARTLABEL=NAME`.
    Data,
    /// The A/B slot of the flashable image that booted: `a` or `b`.
    Slot,
    /// The frontend's private NIC: `IFACE:IP/PREFIX`.
    Private,
    /// `1` prints the admin credentials, the CA bundle and the key pin on the frontend's console.
    ShowCredentials,
    /// The frontend API a node reports to: `IP:PORT`.
    Frontend,
    /// The node's local disk: `auto`, `none` or `/dev/X`.
    Disk,
    /// The cluster (availability zone) a node joins.
    Cluster,
    /// The enrollment secret a node presents.
    Secret,
    /// Log level of init, the node agent, the VMM and the frontend daemon: `error`, `warn`,
    /// `info` or `debug`.
    Log,
    /// Node: the MAC of the NIC to put into the uplink bridge (MANAGED-NOVLAN and SYSTEM, where
    /// instances share the node's segment); iPXE fills in the NIC it booted from.
    Bridge,
    /// An instance's user data in standard base64, for a test guest under a VMM that serves no
    /// metadata.
    UserData,
    /// Node: the SHA-256 of the frontend's public key (its certificate's SubjectPublicKeyInfo,
    /// DER), `sha256:<64 hex>` ([`PublicKeyPin`]). When set, the agent speaks TLS to the
    /// frontend and accepts no other key; when absent, plain HTTP.
    FrontendKey,
}

impl Key {
    pub const ALL: [Key; 16] = [
        Key::Role,
        Key::Run,
        Key::Hostname,
        Key::TestPanic,
        Key::Data,
        Key::Slot,
        Key::Private,
        Key::ShowCredentials,
        Key::Frontend,
        Key::Disk,
        Key::Cluster,
        Key::Secret,
        Key::Log,
        Key::Bridge,
        Key::UserData,
        Key::FrontendKey,
    ];

    /// The name after `mallee.`.
    pub fn name(self) -> &'static str {
        match self {
            Key::Role => "role",
            Key::Run => "run",
            Key::Hostname => "hostname",
            Key::TestPanic => "test_panic",
            Key::Data => "data",
            Key::Slot => "slot",
            Key::Private => "private",
            Key::ShowCredentials => "show_credentials",
            Key::Frontend => "frontend",
            Key::Disk => "disk",
            Key::Cluster => "cluster",
            Key::Secret => "secret",
            Key::Log => "log",
            Key::Bridge => "bridge",
            Key::UserData => "user_data",
            Key::FrontendKey => "frontend_key",
        }
    }

    /// The key named `name` (the part after `mallee.`).
    pub fn from_name(name: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.name() == name)
    }

    /// `mallee.NAME=VALUE`, one command-line word.
    pub fn arg(self, value: impl fmt::Display) -> String {
        format!("{self}={value}")
    }

    /// True when `word` sets this key (`mallee.NAME=…` or a bare `mallee.NAME`).
    pub fn is_set_by(self, word: &str) -> bool {
        split(word).is_some_and(|(name, _)| name == self.name())
    }

    /// The value `word` gives this key, if it sets it.
    pub fn value_in(self, word: &str) -> Option<&str> {
        split(word).and_then(|(name, value)| (name == self.name()).then_some(value))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.name())
    }
}

/// Splits one command-line word into a `mallee.*` name and its value (empty when the word has
/// no `=`); `None` for words that are not ours.
pub fn split(word: &str) -> Option<(&str, &str)> {
    let rest = word.strip_prefix(PREFIX)?;
    Some(rest.split_once('=').unwrap_or((rest, "")))
}

/// A public key pinned by its hash: the SHA-256 of its SubjectPublicKeyInfo (DER), what
/// `openssl pkey -pubin -outform der | sha256sum` prints. Written and read as `sha256:<64 hex>`
/// (lower case written; either case read).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKeyPin(pub [u8; 32]);

/// Why a `sha256:<64 hex>` key pin did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error("expected sha256:<64 hex digits>, the value does not start with \"sha256:\"")]
    MissingPrefix,
    #[error("expected sha256:<64 hex digits>, got {0} characters after \"sha256:\"")]
    Length(usize),
    #[error("expected sha256:<64 hex digits>, found a character that is not a hex digit")]
    NotHex,
}

impl PublicKeyPin {
    /// The prefix naming the hash.
    pub const PREFIX: &'static str = "sha256:";
}

impl std::str::FromStr for PublicKeyPin {
    type Err = PinError;

    fn from_str(text: &str) -> Result<Self, PinError> {
        let digits = text
            .strip_prefix(Self::PREFIX)
            .ok_or(PinError::MissingPrefix)?;
        let length = digits.chars().count();
        if length != 64 {
            return Err(PinError::Length(length));
        }
        let mut hash = [0u8; 32];
        hex::decode_to_slice(digits, &mut hash).map_err(|_| PinError::NotHex)?;
        Ok(PublicKeyPin(hash))
    }
}

impl fmt::Display for PublicKeyPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKeyPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_round_trips_through_its_name() {
        for key in Key::ALL {
            assert_eq!(Key::from_name(key.name()), Some(key));
            let word = key.arg("x");
            assert_eq!(split(&word), Some((key.name(), "x")));
            assert!(key.is_set_by(&word));
        }
        assert_eq!(Key::from_name("colour"), None);
    }

    #[test]
    fn values_keep_their_own_equals_signs_and_other_words_are_not_ours() {
        assert_eq!(
            split("mallee.data=PARTLABEL=mallee-data"),
            Some(("data", "PARTLABEL=mallee-data"))
        );
        assert_eq!(
            split("mallee.show_credentials"),
            Some(("show_credentials", ""))
        );
        assert_eq!(split("console=ttyS0"), None);
        assert!(!Key::Data.is_set_by("mallee.disk=auto"));
        assert_eq!(
            Key::Frontend.arg("10.0.0.1:8773"),
            "mallee.frontend=10.0.0.1:8773"
        );
    }

    #[test]
    fn a_key_pin_round_trips_in_lower_case_and_reads_upper_case() {
        let pin = PublicKeyPin([0xab; 32]);
        let text = pin.to_string();
        assert_eq!(text, format!("sha256:{}", "ab".repeat(32)));
        assert_eq!(text.parse(), Ok(pin));
        let upper = format!("sha256:{}", "AB".repeat(32));
        assert_eq!(upper.parse(), Ok(pin));
    }

    #[test]
    fn a_malformed_key_pin_says_what_is_wrong() {
        let hex64 = "0f".repeat(32);
        assert_eq!(hex64.parse::<PublicKeyPin>(), Err(PinError::MissingPrefix));
        let sha1 = format!("sha1:{}", &hex64[..40]);
        assert_eq!(sha1.parse::<PublicKeyPin>(), Err(PinError::MissingPrefix));
        let short = format!("sha256:{}", &hex64[..62]);
        assert_eq!(short.parse::<PublicKeyPin>(), Err(PinError::Length(62)));
        let long = format!("sha256:{hex64}00");
        assert_eq!(long.parse::<PublicKeyPin>(), Err(PinError::Length(66)));
        let not_hex = format!("sha256:{}zz", &hex64[..62]);
        assert_eq!(not_hex.parse::<PublicKeyPin>(), Err(PinError::NotHex));
        assert_eq!("sha256:".parse::<PublicKeyPin>(), Err(PinError::Length(0)));
    }
}
