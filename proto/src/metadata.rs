//! The instance metadata document: what an instance learns from 169.254.169.254. The frontend
//! fills it in at launch; the VMM answers the EC2 metadata paths from it with [`lookup`]. Also
//! the service's options ([`MetadataOptions`], EC2's `MetadataOptions`): whether IMDSv2 tokens
//! are required, whether the service answers at all, and the IP TTL of its replies. This module
//! fixes their shapes, defaults and EC2 words; the VMM enforces them.
//!
//! [`lookup`]: MetadataDocument::lookup

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

/// The hop limits (IP TTLs) the service's replies may carry: AWS's `HttpPutResponseHopLimit`
/// range.
pub const HOP_LIMITS: RangeInclusive<u8> = 1..=64;

/// Whether a metadata request must carry an IMDSv2 token (EC2's `HttpTokens`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpTokens {
    /// IMDSv1 and IMDSv2 both answered.
    #[default]
    Optional,
    /// Only requests with a live token are answered (IMDSv1 gets 401).
    Required,
}

impl HttpTokens {
    /// The EC2 word.
    pub fn name(self) -> &'static str {
        match self {
            HttpTokens::Optional => "optional",
            HttpTokens::Required => "required",
        }
    }

    /// The value of an EC2 word; `None` for any other text.
    pub fn parse(s: &str) -> Option<HttpTokens> {
        [HttpTokens::Optional, HttpTokens::Required]
            .into_iter()
            .find(|t| t.name() == s)
    }
}

/// Whether the service answers at all (EC2's `HttpEndpoint`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpEndpoint {
    #[default]
    Enabled,
    /// Nothing answers 169.254.169.254: the guest's frames to it are dropped.
    Disabled,
}

impl HttpEndpoint {
    /// The EC2 word.
    pub fn name(self) -> &'static str {
        match self {
            HttpEndpoint::Enabled => "enabled",
            HttpEndpoint::Disabled => "disabled",
        }
    }

    /// The value of an EC2 word; `None` for any other text.
    pub fn parse(s: &str) -> Option<HttpEndpoint> {
        [HttpEndpoint::Enabled, HttpEndpoint::Disabled]
            .into_iter()
            .find(|e| e.name() == s)
    }
}

/// How an instance's metadata service behaves (EC2's instance `MetadataOptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataOptions {
    #[serde(default)]
    pub http_tokens: HttpTokens,
    #[serde(default)]
    pub http_endpoint: HttpEndpoint,
    /// The IP TTL of the service's replies, in [`HOP_LIMITS`]: 1 keeps them from crossing a
    /// router (a container bridge inside the guest, say).
    #[serde(default = "default_hop_limit")]
    pub http_put_response_hop_limit: u8,
}

fn default_hop_limit() -> u8 {
    1
}

impl Default for MetadataOptions {
    /// EC2's defaults: tokens optional, endpoint enabled, hop limit 1.
    fn default() -> MetadataOptions {
        MetadataOptions {
            http_tokens: HttpTokens::default(),
            http_endpoint: HttpEndpoint::default(),
            http_put_response_hop_limit: default_hop_limit(),
        }
    }
}

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
            "" => Some(self.listing()),
            "ami-id" => Some(self.ami_id.clone()),
            "ami-launch-index" => Some(self.ami_launch_index.to_string()),
            // EC2's answer for an image that was not bundled from a manifest.
            "ami-manifest-path" => Some("(unknown)".into()),
            "block-device-mapping" => Some("ami\nroot".into()),
            "block-device-mapping/ami" | "block-device-mapping/root" => Some(ROOT_DEVICE.into()),
            "hostname" | "local-hostname" => Some(self.hostname.clone()),
            "instance-id" => Some(self.instance_id.clone()),
            "instance-type" => Some(self.instance_type.clone()),
            "local-ipv4" => Some(self.local_ipv4.clone()),
            // No DNS names here: the public name is the public address.
            "public-ipv4" | "public-hostname" => opt(&self.public_ipv4),
            "mac" => Some(self.mac.clone()),
            "network" => Some("interfaces/".into()),
            "network/interfaces" => Some("macs/".into()),
            "network/interfaces/macs" => Some(format!("{}/", self.mac)),
            "reservation-id" => Some(self.reservation_id.clone()),
            "kernel-id" => opt(&self.kernel_id),
            "ramdisk-id" => opt(&self.ramdisk_id),
            "security-groups" => Some(self.security_groups.join("\n")),
            "placement" => Some("availability-zone".into()),
            "placement/availability-zone" => Some(self.availability_zone.clone()),
            "public-keys" if !self.public_keys.is_empty() => Some(
                self.public_keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| format!("{i}={}", k.name))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            _ => self
                .lookup_key(path)
                .or_else(|| self.lookup_interface(path)),
        }
    }

    /// The top listing: what this instance has, in EC2's (alphabetical) order.
    fn listing(&self) -> String {
        let public = self.public_ipv4.is_some();
        [
            ("ami-id", true),
            ("ami-launch-index", true),
            ("ami-manifest-path", true),
            ("block-device-mapping/", true),
            ("hostname", true),
            ("instance-id", true),
            ("instance-type", true),
            ("kernel-id", self.kernel_id.is_some()),
            ("local-hostname", true),
            ("local-ipv4", true),
            ("mac", true),
            ("network/", true),
            ("placement/", true),
            ("public-hostname", public),
            ("public-ipv4", public),
            ("public-keys/", !self.public_keys.is_empty()),
            ("ramdisk-id", self.ramdisk_id.is_some()),
            ("reservation-id", true),
            ("security-groups", true),
        ]
        .iter()
        .filter(|(_, has)| *has)
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join("\n")
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

    /// `network/interfaces/macs/<mac>/...`: the instance's one interface (cloud-init reads
    /// its network configuration from here).
    fn lookup_interface(&self, path: &str) -> Option<String> {
        let rest = path.strip_prefix("network/interfaces/macs/")?;
        let (mac, tail) = rest.split_once('/').unwrap_or((rest, ""));
        if mac != self.mac {
            return None;
        }
        let public = self.public_ipv4.clone();
        match tail {
            "" => Some(
                ["device-number", "local-hostname", "local-ipv4s", "mac"]
                    .into_iter()
                    .chain(
                        public
                            .is_some()
                            .then_some(["public-hostname", "public-ipv4s"])
                            .into_iter()
                            .flatten(),
                    )
                    .chain(["security-groups"])
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            "device-number" => Some("0".into()),
            "local-hostname" => Some(self.hostname.clone()),
            "local-ipv4s" => Some(self.local_ipv4.clone()),
            "mac" => Some(self.mac.clone()),
            "public-hostname" | "public-ipv4s" => public,
            "security-groups" => Some(self.security_groups.join("\n")),
            _ => None,
        }
    }
}

/// The root device an instance's block-device mapping names (its first virtio disk).
pub const ROOT_DEVICE: &str = "/dev/vda";

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
        assert_eq!(doc.lookup("public-hostname"), None);
        assert_eq!(doc.lookup("nonsense"), None);
        assert_eq!(
            doc.lookup("block-device-mapping/root").as_deref(),
            Some("/dev/vda")
        );
        assert_eq!(
            doc.lookup("ami-manifest-path").as_deref(),
            Some("(unknown)")
        );
    }

    /// Every name a listing gives answers, down the whole tree (what cloud-init's crawl does),
    /// and the listing names only what this instance has (no public address, no keys: neither
    /// is listed, and asking gets nothing, as on EC2).
    #[test]
    fn every_listed_path_answers_and_only_what_the_instance_has_is_listed() {
        let mut doc = MetadataDocument {
            instance_id: "i-1".into(),
            mac: "d0:0d:00:00:00:01".into(),
            local_ipv4: "172.31.0.2".into(),
            kernel_id: Some("eki-1".into()),
            public_keys: vec![PublicKey {
                name: "k".into(),
                openssh: "ssh-ed25519 AAAA k".into(),
            }],
            public_ipv4: Some("198.51.100.7".into()),
            ..Default::default()
        };
        fn crawl(doc: &MetadataDocument, dir: &str, seen: &mut Vec<String>) {
            let listing = doc
                .lookup(dir)
                .unwrap_or_else(|| panic!("{dir:?} lists nothing"));
            for name in listing.lines() {
                // public-keys lists `0=name`; the directory is `0/`.
                let name = name
                    .split_once('=')
                    .map_or(name.to_string(), |(i, _)| format!("{i}/"));
                let path = format!("{dir}{name}");
                if path.ends_with('/') {
                    crawl(doc, &path, seen);
                } else {
                    assert!(
                        doc.lookup(&path).is_some(),
                        "{path} is listed but not served"
                    );
                    seen.push(path);
                }
            }
        }
        let mut seen = Vec::new();
        crawl(&doc, "", &mut seen);
        for want in [
            "instance-id",
            "kernel-id",
            "public-ipv4",
            "public-hostname",
            "public-keys/0/openssh-key",
            "network/interfaces/macs/d0:0d:00:00:00:01/local-ipv4s",
            "network/interfaces/macs/d0:0d:00:00:00:01/public-ipv4s",
            "block-device-mapping/root",
            "placement/availability-zone",
        ] {
            assert!(
                seen.iter().any(|p| p == want),
                "{want} not reached: {seen:?}"
            );
        }
        doc.public_ipv4 = None;
        doc.public_keys.clear();
        let top = doc.lookup("").unwrap();
        assert!(
            !top.contains("public-") && !top.contains("ramdisk-id"),
            "{top}"
        );
        assert_eq!(doc.lookup("public-keys"), None);
        assert_eq!(
            doc.lookup("network/interfaces/macs/d0:0d:00:00:00:02/mac"),
            None
        );
        let nic = doc
            .lookup("network/interfaces/macs/d0:0d:00:00:00:01/")
            .unwrap();
        assert!(!nic.contains("public"), "{nic}");
    }

    #[test]
    fn options_default_to_ec2s_and_parse_its_words() {
        let o: MetadataOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(o, MetadataOptions::default());
        assert_eq!(
            (
                o.http_tokens,
                o.http_endpoint,
                o.http_put_response_hop_limit
            ),
            (HttpTokens::Optional, HttpEndpoint::Enabled, 1)
        );
        let text = r#"{"http_tokens":"required","http_endpoint":"disabled","http_put_response_hop_limit":3}"#;
        let o: MetadataOptions = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&o).unwrap(), text);
        assert_eq!(HttpTokens::parse("required"), Some(HttpTokens::Required));
        assert_eq!(HttpTokens::parse("Required"), None);
        assert_eq!(
            HttpEndpoint::parse("disabled"),
            Some(HttpEndpoint::Disabled)
        );
        assert_eq!(HttpEndpoint::Disabled.name(), "disabled");
        assert!(serde_json::from_str::<MetadataOptions>(r#"{"tags":"enabled"}"#).is_err());
    }
}
