//! The instances page's launch form: what a user may launch (the machine images they can run
//! as DescribeImages lists them, the cloud's instance types, their key pairs and security
//! groups), the form rendered from it, and the form turned into EC2 `RunInstances` parameters
//! for one instance. Running the call, and showing EC2's refusal, is `resources`' job: this
//! module reads no store and calls no EC2 action.

use super::pages::csrf_field;
use crate::cloud::images::ImageState;
use crate::cloud::model::{
    Image, ImageKind, KeyPair, SecurityGroup, GROUP, IMAGE, INSTANCE_TYPES, KEY_PAIR,
};
use crate::ec2::params::Params;
use crate::store::{CloudTx, StoreError};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use maud::{html, Markup};

/// The choices of the launch form for one user.
#[derive(Debug, Default)]
pub struct Choices {
    /// Machine images the user may run and that are available: (id, name).
    pub images: Vec<(String, String)>,
    /// The user's key pairs' names.
    pub key_pairs: Vec<String>,
    /// The user's security groups: (id or `default`, name). `default` is always offered:
    /// RunInstances makes it when the user has none yet.
    pub groups: Vec<(String, String)>,
}

impl Choices {
    /// `user`'s choices, read in `tx`.
    pub fn load(tx: &CloudTx<'_>, user: &str) -> Result<Choices, StoreError> {
        let mut images = Vec::new();
        for i in tx.list::<Image>(IMAGE, None)? {
            if i.kind == ImageKind::Machine
                && i.launchable_by(user)
                && crate::cloud::images::state_of(tx, &i)? == ImageState::Available
            {
                images.push((i.id, i.name));
            }
        }
        let key_pairs = (tx.list::<KeyPair>(KEY_PAIR, Some(user))?.into_iter())
            .map(|k| k.name)
            .collect();
        let mut groups: Vec<(String, String)> = (tx.list::<SecurityGroup>(GROUP, Some(user))?)
            .into_iter()
            .map(|g| (g.id, g.name))
            .collect();
        if !groups.iter().any(|(_, name)| name == "default") {
            groups.insert(0, ("default".into(), "default".into()));
        }
        Ok(Choices {
            images,
            key_pairs,
            groups,
        })
    }
}

/// What the user filled in, kept when EC2 refuses so the form comes back as it was sent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filled {
    pub image: String,
    pub instance_type: String,
    /// Empty: no key pair.
    pub key_pair: String,
    pub group: String,
    /// As typed; RunInstances gets it base64-encoded.
    pub user_data: String,
}

impl Filled {
    /// The launch form's fields in `form`.
    pub fn from_form(form: &Params) -> Filled {
        let field = |name: &str| form.get(name).unwrap_or("").to_string();
        Filled {
            image: field("image"),
            instance_type: field("type"),
            key_pair: field("key"),
            group: field("group"),
            user_data: field("user_data"),
        }
    }

    /// RunInstances of one instance as these fields ask.
    pub fn run_instances(&self) -> Vec<(&'static str, String)> {
        let mut p = vec![
            ("Action", "RunInstances".to_string()),
            ("ImageId", self.image.clone()),
            ("MinCount", "1".to_string()),
            ("MaxCount", "1".to_string()),
        ];
        if !self.instance_type.is_empty() {
            p.push(("InstanceType", self.instance_type.clone()));
        }
        if !self.key_pair.is_empty() {
            p.push(("KeyName", self.key_pair.clone()));
        }
        if !self.group.is_empty() {
            p.push(("SecurityGroup.1", self.group.clone()));
        }
        if !self.user_data.is_empty() {
            p.push(("UserData", B64.encode(self.user_data.as_bytes())));
        }
        p
    }
}

/// The launch form, posting to `/_console/instances` with `csrf`, with `filled`'s values
/// selected.
pub fn form(csrf: &str, choices: &Choices, filled: &Filled) -> Markup {
    html! {
        form.card.launch method="post" action="/_console/instances" {
            (csrf_field(csrf))
            h2 { "Launch an instance" }
            @if choices.images.is_empty() {
                p.hint { "No image is available to you yet: register one with "
                    code { "aws ec2 register-image" } " (see Credentials)." }
            }
            label { "Image"
                select name="image" required {
                    @for (id, name) in &choices.images {
                        option value=(id) selected[*id == filled.image] { (name) " (" (id) ")" }
                    }
                }
            }
            label { "Instance type"
                select name="type" {
                    @for t in INSTANCE_TYPES {
                        option value=(t.name) selected[t.name == filled.instance_type] {
                            (t.name) " — " (t.vcpus) " vCPU, " (t.memory_mib) " MiB, " (t.disk_gib) " GiB"
                        }
                    }
                }
            }
            label { "Key pair"
                select name="key" {
                    option value="" selected[filled.key_pair.is_empty()] { "None" }
                    @for k in &choices.key_pairs {
                        option value=(k) selected[*k == filled.key_pair] { (k) }
                    }
                }
            }
            label { "Security group"
                select name="group" {
                    @for (id, name) in &choices.groups {
                        option value=(id) selected[*id == filled.group] { (name) }
                    }
                }
            }
            label { "User data (optional)"
                textarea name="user_data" rows="4" maxlength="16384" { (filled.user_data) }
            }
            button type="submit" disabled[choices.images.is_empty()] { "Launch" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choices() -> Choices {
        Choices {
            images: vec![("emi-0123456789abcdef0".into(), "<b>root</b>".into())],
            key_pairs: vec!["<script>k</script>".into()],
            groups: vec![("sg-0123456789abcdef0".into(), "web\"x".into())],
        }
    }

    #[test]
    fn the_form_offers_each_choice_escaped_with_the_csrf_token() {
        let html = form("CSRF-TOKEN", &choices(), &Filled::default()).into_string();
        for part in [
            r#"<form class="card launch" method="post" action="/_console/instances">"#,
            r#"<input type="hidden" name="csrf" value="CSRF-TOKEN">"#,
            r#"<option value="emi-0123456789abcdef0">&lt;b&gt;root&lt;/b&gt; (emi-0123456789abcdef0)</option>"#,
            r#"<option value="&lt;script&gt;k&lt;/script&gt;">&lt;script&gt;k&lt;/script&gt;</option>"#,
            r#"<option value="sg-0123456789abcdef0">web&quot;x</option>"#,
            r#"<option value="" selected>None</option>"#,
            r#"<textarea name="user_data""#,
        ] {
            assert!(html.contains(part), "{part} not in {html}");
        }
        for t in INSTANCE_TYPES {
            assert!(html.contains(&format!(r#"value="{}""#, t.name)), "{html}");
        }
        assert!(
            !html.contains("<script>") && !html.contains("<b>"),
            "{html}"
        );
        assert!(!html.contains("disabled"), "{html}");
    }

    #[test]
    fn a_refused_form_comes_back_as_filled_with_its_text_escaped() {
        let filled = Filled {
            image: "emi-0123456789abcdef0".into(),
            instance_type: "c1.medium".into(),
            key_pair: "<script>k</script>".into(),
            group: "sg-0123456789abcdef0".into(),
            user_data: "</textarea><script>x</script>".into(),
        };
        let html = form("t", &choices(), &filled).into_string();
        for part in [
            r#"<option value="emi-0123456789abcdef0" selected>"#,
            r#"<option value="c1.medium" selected>"#,
            r#"<option value="&lt;script&gt;k&lt;/script&gt;" selected>"#,
            r#"<option value="sg-0123456789abcdef0" selected>"#,
            "&lt;/textarea&gt;&lt;script&gt;x&lt;/script&gt;</textarea>",
        ] {
            assert!(html.contains(part), "{part} not in {html}");
        }
        assert!(!html.contains(r#"<option value="" selected>"#), "{html}");
    }

    #[test]
    fn without_an_image_the_form_says_how_to_get_one_and_cannot_be_sent() {
        let html = form("t", &Choices::default(), &Filled::default()).into_string();
        assert!(html.contains("register-image"), "{html}");
        assert!(
            html.contains(r#"<button type="submit" disabled>"#),
            "{html}"
        );
    }

    #[test]
    fn the_fields_become_run_instances_of_one_with_user_data_in_base64() {
        let form = Params::from_pairs(&[
            ("image", "emi-1"),
            ("type", "m1.large"),
            ("key", ""),
            ("group", "default"),
            ("user_data", "#!/bin/sh\necho hi\n"),
        ]);
        let p = Filled::from_form(&form).run_instances();
        let get = |k: &str| p.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("Action"), Some("RunInstances"));
        assert_eq!(get("ImageId"), Some("emi-1"));
        assert_eq!(get("InstanceType"), Some("m1.large"));
        assert_eq!((get("MinCount"), get("MaxCount")), (Some("1"), Some("1")));
        assert_eq!(get("KeyName"), None);
        assert_eq!(get("SecurityGroup.1"), Some("default"));
        assert_eq!(get("UserData"), Some("IyEvYmluL3NoCmVjaG8gaGkK"));
    }
}
