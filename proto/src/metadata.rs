//! The instance metadata document: what an instance learns from 169.254.169.254. The frontend
//! fills it in at launch; the VMM answers the EC2 metadata paths from it with [`lookup`].
//!
//! [`lookup`]: MetadataDocument::lookup

use serde::{Deserialize, Serialize};

/// An SSH public key offered to the instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    pub name: String,
    /// One OpenSSH line, `ssh-ed25519 AAAA... name`.
    pub openssh: String,
}

/// The metadata of one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataDocument {
    pub instance_id: String,
    pub ami_id: String,
    pub ami_launch_index: u32,
    pub reservation_id: String,
    pub instance_type: String,
    pub hostname: String,
    pub local_ipv4: String,
    pub public_ipv4: Option<String>,
    pub mac: String,
    pub availability_zone: String,
    pub kernel_id: Option<String>,
    pub ramdisk_id: Option<String>,
    pub security_groups: Vec<String>,
    pub public_keys: Vec<PublicKey>,
}

impl MetadataDocument {
    /// The answer for a path under `/latest/meta-data/` (given without that prefix), as the
    /// EC2 metadata service words it; `None` for unknown paths.
    pub fn lookup(&self, path: &str) -> Option<String> {
        let path = path.trim_matches('/');
        let opt = |v: &Option<String>| v.clone();
        match path {
            "" => Some(
                [
                    "ami-id",
                    "ami-launch-index",
                    "hostname",
                    "instance-id",
                    "instance-type",
                    "local-hostname",
                    "local-ipv4",
                    "mac",
                    "placement/",
                    "public-keys/",
                    "reservation-id",
                    "security-groups",
                ]
                .join("\n"),
            ),
            "ami-id" => Some(self.ami_id.clone()),
            "ami-launch-index" => Some(self.ami_launch_index.to_string()),
            "hostname" | "local-hostname" => Some(self.hostname.clone()),
            "instance-id" => Some(self.instance_id.clone()),
            "instance-type" => Some(self.instance_type.clone()),
            "local-ipv4" => Some(self.local_ipv4.clone()),
            "public-ipv4" => opt(&self.public_ipv4),
            "mac" => Some(self.mac.clone()),
            "reservation-id" => Some(self.reservation_id.clone()),
            "kernel-id" => opt(&self.kernel_id),
            "ramdisk-id" => opt(&self.ramdisk_id),
            "security-groups" => Some(self.security_groups.join("\n")),
            "placement" => Some("availability-zone".into()),
            "placement/availability-zone" => Some(self.availability_zone.clone()),
            "public-keys" => Some(
                self.public_keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| format!("{i}={}", k.name))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            _ => self.lookup_key(path),
        }
    }

    fn lookup_key(&self, path: &str) -> Option<String> {
        let rest = path.strip_prefix("public-keys/")?;
        let (index, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let key = self.public_keys.get(index.parse::<usize>().ok()?)?;
        match tail {
            "" => Some("openssh-key".into()),
            "openssh-key" => Some(key.openssh.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_answers_the_ec2_metadata_paths() {
        let doc = MetadataDocument {
            instance_id: "i-1".into(),
            availability_zone: "zone-a".into(),
            public_keys: vec![PublicKey {
                name: "k".into(),
                openssh: "ssh-ed25519 AAAA k".into(),
            }],
            security_groups: vec!["default".into(), "web".into()],
            ..Default::default()
        };
        assert_eq!(doc.lookup("instance-id").as_deref(), Some("i-1"));
        assert_eq!(
            doc.lookup("/placement/availability-zone/").as_deref(),
            Some("zone-a")
        );
        assert_eq!(doc.lookup("public-keys").as_deref(), Some("0=k"));
        assert_eq!(
            doc.lookup("public-keys/0/openssh-key").as_deref(),
            Some("ssh-ed25519 AAAA k")
        );
        assert_eq!(
            doc.lookup("security-groups").as_deref(),
            Some("default\nweb")
        );
        assert_eq!(doc.lookup("public-keys/1/openssh-key"), None);
        assert_eq!(doc.lookup("public-ipv4"), None);
        assert_eq!(doc.lookup("nonsense"), None);
    }
}
