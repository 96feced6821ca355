//! The `mallee.*` kernel command-line keys, spelled once: the PXE service and the image builder
//! write them, `mallee-init` reads them. Only the names live here; what a value means is the
//! reader's business (`init/src/cmdline.rs`).

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
    /// `1` prints the admin credentials on the frontend's console.
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
}

impl Key {
    pub const ALL: [Key; 15] = [
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
}
