//! The HTML of `cloud`'s pages: images, security groups, volumes and snapshots, elastic IPs,
//! and the access key rotation. Rendered with `maud`, which escapes every value (names,
//! descriptions, messages), so nothing a user typed becomes markup; each form that changes
//! something carries the session's CSRF token. States are shown as the records hold them.

use super::pages::{csrf_field, notice, page, time, Frame, Nav};
use crate::cloud::images::ImageState;
use crate::cloud::model::{
    Address, Image, Instance, Rule, SecurityGroup, Snapshot, Source, Volume, ROOT_DEVICE_NAME,
};
use crate::store::account_id;
use maud::{html, Markup};

/// The images `user` can run, each with its state; Deregister on their own.
pub fn images(
    nav: Nav<'_>,
    user: &str,
    images: &[(Image, ImageState)],
    message: Option<&str>,
) -> Markup {
    let csrf = nav.csrf;
    let frame = Frame::signed_in("Images", nav);
    page(
        &frame,
        html! {
            (notice(message))
            @if images.is_empty() {
                p { "There are no images you can run. Register one with " code { "aws ec2 register-image" } " (see Credentials)." }
            } @else {
                table.list {
                    thead { tr {
                        th { "Image" } th { "Name" } th { "Description" } th { "State" }
                        th { "Architecture" } th { "Root device" } th { "Owner" } th { "" }
                    } }
                    tbody {
                        @for (i, state) in images {
                            tr {
                                td data-label="Image" { (i.id) }
                                td data-label="Name" { (i.name) }
                                td data-label="Description" { (i.description.as_deref().unwrap_or("-")) }
                                td data-label="State" {
                                    span class=(if *state == ImageState::Available { "state ok" } else { "state" }) { (state.name()) }
                                    @if let Some(r) = state.reason() { " " (r.message) }
                                }
                                td data-label="Architecture" { (i.architecture) }
                                td data-label="Root device" {
                                    (ROOT_DEVICE_NAME) " ("
                                    (if i.root_snapshot.is_some() { "ebs" } else { "instance-store" }) ")"
                                }
                                td data-label="Owner" {
                                    @if i.owner == user { "you" } @else { (account_id(&i.owner)) }
                                    @if i.public { " (public)" }
                                }
                                td {
                                    @if i.owner == user {
                                        form.inline method="post" action="/_console/images/deregister" {
                                            (csrf_field(csrf))
                                            input type="hidden" name="image" value=(i.id);
                                            button.danger type="submit" { "Deregister" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// What the security groups page shows.
pub struct GroupsView<'a> {
    pub groups: &'a [SecurityGroup],
}

/// A rule's ports as EC2 shows them: a range, one port, or all.
fn ports(r: &Rule) -> String {
    match (r.protocol.as_str(), r.from, r.to) {
        ("-1", _, _) => "all".into(),
        (_, Some(f), Some(t)) if f == t => f.to_string(),
        (_, Some(f), Some(t)) => format!("{f}-{t}"),
        _ => "all".into(),
    }
}

fn protocol_name(p: &str) -> &str {
    if p == "-1" {
        "all"
    } else {
        p
    }
}

/// The hidden fields naming `rule` of `group`, for its Revoke form.
fn rule_fields(group: &str, r: &Rule) -> Markup {
    html! {
        input type="hidden" name="group" value=(group);
        input type="hidden" name="protocol" value=(protocol_name(&r.protocol));
        @if let Some(f) = r.from { input type="hidden" name="from" value=(f); }
        @if let Some(t) = r.to { input type="hidden" name="to" value=(t); }
        @match &r.source {
            Source::Cidr(c) => input type="hidden" name="cidr" value=(c);,
            Source::Group { id, .. } => input type="hidden" name="source_group" value=(id);,
        }
    }
}

/// The user's security groups with their ingress rules: create a group, delete one, add
/// and remove rules.
pub fn groups(nav: Nav<'_>, view: &GroupsView<'_>, message: Option<&str>) -> Markup {
    let csrf = nav.csrf;
    let frame = Frame::signed_in("Security groups", nav);
    page(
        &frame,
        html! {
            (notice(message))
            form.card method="post" action="/_console/groups" {
                (csrf_field(csrf))
                label { "Name" input type="text" name="name" required maxlength="255"; }
                label { "Description" input type="text" name="description" required maxlength="255"; }
                button type="submit" { "Create security group" }
            }
            @for g in view.groups {
                section.group {
                    h2 { (g.name) " " small { (g.id) } }
                    p { (g.description) }
                    @if g.rules.is_empty() {
                        p { "No ingress rules: nothing reaches its instances from outside." }
                    } @else {
                        table.list {
                            thead { tr { th { "Protocol" } th { "Ports" } th { "Source" } th { "" } } }
                            tbody {
                                @for r in &g.rules {
                                    tr {
                                        td data-label="Protocol" { (protocol_name(&r.protocol)) }
                                        td data-label="Ports" { (ports(r)) }
                                        td data-label="Source" {
                                            @match &r.source {
                                                Source::Cidr(c) => (c),
                                                Source::Group { id, name, .. } => { (name) " (" (id) ")" },
                                            }
                                        }
                                        td {
                                            form.inline method="post" action="/_console/groups/revoke" {
                                                (csrf_field(csrf))
                                                (rule_fields(&g.id, r))
                                                button.danger type="submit" { "Revoke" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    form.card method="post" action="/_console/groups/authorize" {
                        (csrf_field(csrf))
                        input type="hidden" name="group" value=(g.id);
                        label { "Protocol"
                            select name="protocol" {
                                option value="tcp" { "TCP" }
                                option value="udp" { "UDP" }
                                option value="icmp" { "ICMP" }
                                option value="all" { "All" }
                            }
                        }
                        label { "From port (ICMP: type)" input type="number" name="from" min="-1" max="65535"; }
                        label { "To port (ICMP: code; empty: the same)" input type="number" name="to" min="-1" max="65535"; }
                        label { "From CIDR" input type="text" name="cidr" placeholder="0.0.0.0/0"; }
                        label { "or from the group"
                            select name="source_group" {
                                option value="" { "-" }
                                @for other in view.groups {
                                    option value=(other.id) { (other.name) }
                                }
                            }
                        }
                        button type="submit" { "Add the rule" }
                    }
                    @if g.name != "default" {
                        form.inline method="post" action="/_console/groups/delete" {
                            (csrf_field(csrf))
                            input type="hidden" name="group" value=(g.id);
                            button.danger type="submit" { "Delete " (g.name) }
                        }
                    }
                }
            }
        },
    )
}

/// What the volumes page shows.
pub struct VolumesView<'a> {
    pub volumes: &'a [Volume],
    pub snapshots: &'a [Snapshot],
    /// The user's running instances, to attach a volume to.
    pub running: &'a [&'a Instance],
    pub zones: &'a [String],
}

fn volume_row(csrf: &str, v: &Volume, running: &[&Instance]) -> Markup {
    html! {
        tr {
            td data-label="Volume" { (v.id) }
            td data-label="Size" { (v.size_gib) " GiB" }
            td data-label="Zone" { (v.zone) }
            td data-label="State" { span class=(if v.state == "available" { "state ok" } else { "state" }) { (v.state) } }
            td data-label="Attachment" {
                @match &v.attachment {
                    Some(a) => { (a.instance_id) " " (a.device) " (" (a.status.as_str()) ")" },
                    None => "-",
                }
            }
            td {
                @if v.attachment.is_some() {
                    form.inline method="post" action="/_console/volumes/detach" {
                        (csrf_field(csrf))
                        input type="hidden" name="volume" value=(v.id);
                        button type="submit" { "Detach" }
                    }
                } @else {
                    @let here: Vec<&&Instance> = running.iter().filter(|i| i.zone == v.zone).collect();
                    @if !here.is_empty() {
                        form.inline method="post" action="/_console/volumes/attach" {
                            (csrf_field(csrf))
                            input type="hidden" name="volume" value=(v.id);
                            select name="instance" aria-label="Instance" {
                                @for i in here { option value=(i.id) { (i.id) } }
                            }
                            input type="text" name="device" value="/dev/vdb" aria-label="Device" required;
                            button type="submit" { "Attach" }
                        }
                    }
                    form.inline method="post" action="/_console/volumes/delete" {
                        (csrf_field(csrf))
                        input type="hidden" name="volume" value=(v.id);
                        button.danger type="submit" { "Delete" }
                    }
                }
                form.inline method="post" action="/_console/snapshots" {
                    (csrf_field(csrf))
                    input type="hidden" name="volume" value=(v.id);
                    input type="text" name="description" placeholder="Description" aria-label="Snapshot description" maxlength="255";
                    button type="submit" { "Snapshot" }
                }
            }
        }
    }
}

/// The user's volumes and snapshots: create, delete, attach to a running instance, detach,
/// snapshot.
pub fn volumes(nav: Nav<'_>, view: &VolumesView<'_>, message: Option<&str>) -> Markup {
    let csrf = nav.csrf;
    let frame = Frame::signed_in("Volumes", nav);
    page(
        &frame,
        html! {
            (notice(message))
            form.card method="post" action="/_console/volumes" {
                (csrf_field(csrf))
                label { "Size (GiB)" input type="number" name="size" min="1" max="1024" value="1" required; }
                label { "Zone"
                    select name="zone" {
                        @for z in view.zones { option value=(z) { (z) } }
                    }
                }
                button type="submit" { "Create volume" }
            }
            @if view.volumes.is_empty() {
                p { "You have no volumes." }
            } @else {
                table.list {
                    thead { tr { th { "Volume" } th { "Size" } th { "Zone" } th { "State" } th { "Attachment" } th { "" } } }
                    tbody {
                        @for v in view.volumes { (volume_row(csrf, v, view.running)) }
                    }
                }
            }
            h2 { "Snapshots" }
            @if view.snapshots.is_empty() {
                p { "You have no snapshots." }
            } @else {
                table.list {
                    thead { tr { th { "Snapshot" } th { "Volume" } th { "State" } th { "Progress" } th { "Started" } th { "Description" } th { "" } } }
                    tbody {
                        @for sn in view.snapshots {
                            tr {
                                td data-label="Snapshot" { (sn.id) }
                                td data-label="Volume" { (sn.volume_id) }
                                td data-label="State" {
                                    span class=(if sn.state == "completed" { "state ok" } else { "state" }) { (sn.state) }
                                    @if let Some(m) = &sn.state_message { " " (m) }
                                }
                                td data-label="Progress" { (sn.progress) "%" }
                                td data-label="Started" { (time(sn.started_ms)) }
                                td data-label="Description" { (sn.description) }
                                td {
                                    form.inline method="post" action="/_console/snapshots/delete" {
                                        (csrf_field(csrf))
                                        input type="hidden" name="snapshot" value=(sn.id);
                                        button.danger type="submit" { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// What the elastic IPs page shows.
pub struct AddressesView<'a> {
    pub addresses: &'a [Address],
    /// The user's instances not terminated, to associate an address with.
    pub instances: &'a [&'a Instance],
}

/// The user's elastic IPs: allocate, associate with an instance, disassociate, release.
pub fn addresses(nav: Nav<'_>, view: &AddressesView<'_>, message: Option<&str>) -> Markup {
    let csrf = nav.csrf;
    let frame = Frame::signed_in("Elastic IPs", nav);
    page(
        &frame,
        html! {
            (notice(message))
            form.card method="post" action="/_console/addresses" {
                (csrf_field(csrf))
                button type="submit" { "Allocate an address" }
            }
            @if view.addresses.is_empty() {
                p { "You have no elastic IPs." }
            } @else {
                table.list {
                    thead { tr { th { "Address" } th { "Allocation" } th { "Instance" } th { "" } } }
                    tbody {
                        @for a in view.addresses {
                            tr {
                                td data-label="Address" { (a.public_ip) }
                                td data-label="Allocation" { (a.allocation_id) }
                                td data-label="Instance" { (a.instance_id.as_deref().unwrap_or("-")) }
                                td {
                                    @if a.instance_id.is_some() {
                                        form.inline method="post" action="/_console/addresses/disassociate" {
                                            (csrf_field(csrf))
                                            input type="hidden" name="allocation" value=(a.allocation_id);
                                            button type="submit" { "Disassociate" }
                                        }
                                    } @else if !view.instances.is_empty() {
                                        form.inline method="post" action="/_console/addresses/associate" {
                                            (csrf_field(csrf))
                                            input type="hidden" name="allocation" value=(a.allocation_id);
                                            select name="instance" aria-label="Instance" {
                                                @for i in view.instances { option value=(i.id) { (i.id) } }
                                            }
                                            button type="submit" { "Associate" }
                                        }
                                    }
                                    form.inline method="post" action="/_console/addresses/release" {
                                        (csrf_field(csrf))
                                        input type="hidden" name="allocation" value=(a.allocation_id);
                                        button.danger type="submit" { "Release" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// Asks whether to replace the access key `current`.
pub fn rotate(nav: Nav<'_>, current: &str) -> Markup {
    let csrf = nav.csrf;
    let frame = Frame::signed_in("Rotate your access key", nav);
    page(
        &frame,
        html! {
            p { "Your access key is " code { (current) } "." }
            p {
                "A new access key and secret replace it: the old ones stop working at once, for every "
                "client and script that uses them. The new credentials file is downloaded now; it "
                "stays on the Credentials page too."
            }
            form.card method="post" action="/_console/credentials/rotate" {
                (csrf_field(csrf))
                button.danger type="submit" { "Replace my access key and download the new one" }
            }
            p { a href="/_console/credentials" { "Back to Credentials" } }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::model::{AttachStatus, Attachment, ImageKind};

    fn nav() -> Nav<'static> {
        Nav {
            user: "alice",
            csrf: "CSRF-TOKEN",
            admin: false,
        }
    }

    const EVIL: &str = "<script>alert(1)</script>";
    const ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt;";

    /// Every `<form` of `html` carries the token; how many forms there are.
    fn forms_with_token(html: &str) -> usize {
        let forms = html.matches("<form").count();
        let tokens = html
            .matches(r#"<input type="hidden" name="csrf" value="CSRF-TOKEN">"#)
            .count();
        assert_eq!(tokens, forms, "{html}");
        forms
    }

    fn group(name: &str, description: &str, rules: Vec<Rule>) -> SecurityGroup {
        SecurityGroup {
            id: "sg-0123456789abcdef0".into(),
            owner: "alice".into(),
            name: name.into(),
            description: description.into(),
            rules,
        }
    }

    #[test]
    fn a_script_in_a_group_name_or_description_is_escaped_and_every_form_has_the_token() {
        let rule = Rule {
            protocol: "tcp".into(),
            from: Some(22),
            to: Some(22),
            source: Source::Cidr("10.0.0.0/8".into()),
        };
        let groups = [group(EVIL, EVIL, vec![rule])];
        let html = super::groups(nav(), &GroupsView { groups: &groups }, Some(EVIL)).into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.matches(ESCAPED).count() >= 4, "{html}");
        // Create, authorize, revoke, delete, sign out.
        assert_eq!(forms_with_token(&html), 5);
        for part in [
            r#"action="/_console/groups/revoke""#,
            r#"<input type="hidden" name="protocol" value="tcp">"#,
            r#"<input type="hidden" name="from" value="22">"#,
            r#"<input type="hidden" name="cidr" value="10.0.0.0/8">"#,
        ] {
            assert!(html.contains(part), "{part} not in {html}");
        }
    }

    #[test]
    fn the_default_group_has_no_delete_button() {
        let groups = [group("default", "default group", Vec::new())];
        let html = super::groups(nav(), &GroupsView { groups: &groups }, None).into_string();
        assert!(!html.contains("/_console/groups/delete"), "{html}");
    }

    fn image(owner: &str) -> Image {
        Image {
            id: "emi-0123abcd".into(),
            owner: owner.into(),
            name: EVIL.into(),
            description: Some(EVIL.into()),
            kind: ImageKind::Machine,
            bucket: "b".into(),
            key: "k".into(),
            size: 1,
            sha256: String::new(),
            architecture: "x86_64".into(),
            kernel_id: None,
            ramdisk_id: None,
            public: owner != "alice",
            launch_users: Vec::new(),
            created_ms: 0,
            root_snapshot: None,
            source_instance: None,
            root_device: None,
        }
    }

    #[test]
    fn images_show_their_fields_escaped_and_only_her_own_can_be_deregistered() {
        let own = [(image("alice"), ImageState::Available)];
        let html = super::images(nav(), "alice", &own, None).into_string();
        for part in [
            "emi-0123abcd",
            "available",
            "x86_64",
            "/dev/vda (instance-store)",
            ESCAPED,
        ] {
            assert!(html.contains(part), "{part} not in {html}");
        }
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("/_console/images/deregister"), "{html}");
        assert_eq!(forms_with_token(&html), 2);
        let public = [(image("bob"), ImageState::Pending)];
        let html = super::images(nav(), "alice", &public, None).into_string();
        assert!(!html.contains("/_console/images/deregister"), "{html}");
        assert!(
            html.contains(&account_id("bob")) && html.contains("pending"),
            "{html}"
        );
    }

    #[test]
    fn volumes_and_snapshots_show_the_stored_states_and_escaped_descriptions() {
        let mut attached = Volume {
            id: "vol-0123abcd".into(),
            owner: "alice".into(),
            size_gib: 3,
            zone: "cluster1".into(),
            snapshot_id: None,
            state: "in-use".into(),
            created_ms: 0,
            attachment: Some(Attachment {
                instance_id: "i-0123456789abcdef0".into(),
                device: "/dev/vdb".into(),
                status: AttachStatus::Attaching,
                ..Default::default()
            }),
            dirty_base: None,
        };
        let mut free = attached.clone();
        free.id = "vol-4567abcd".into();
        free.state = "creating".into();
        free.attachment = None;
        let snap = Snapshot::pending("snap-0123456789abcdef0".into(), "alice", &free, EVIL, 0);
        let zones = ["cluster1".to_string()];
        attached.size_gib = 3;
        let volumes = [attached, free];
        let view = VolumesView {
            volumes: &volumes,
            snapshots: std::slice::from_ref(&snap),
            running: &[],
            zones: &zones,
        };
        let html = super::volumes(nav(), &view, None).into_string();
        for part in [
            "vol-0123abcd",
            "3 GiB",
            "in-use",
            "i-0123456789abcdef0 /dev/vdb (attaching)",
            "creating",
            "snap-0123456789abcdef0",
            "pending",
            "0%",
            ESCAPED,
            "/_console/volumes/detach",
            "/_console/volumes/delete",
            "/_console/snapshots/delete",
        ] {
            assert!(html.contains(part), "{part} not in {html}");
        }
        assert!(!html.contains("<script>"), "{html}");
        // No running instance: nothing to attach to.
        assert!(!html.contains("/_console/volumes/attach"), "{html}");
        // Create volume, detach, delete, 2 snapshot, delete snapshot, sign out.
        assert_eq!(forms_with_token(&html), 7);
    }

    #[test]
    fn an_address_offers_associate_or_disassociate_as_it_stands() {
        let mut inst = crate::cloud::reconcile::tests::instance();
        inst.id = "i-0123456789abcdef0".into();
        let free = Address {
            public_ip: "198.51.100.10".into(),
            allocation_id: "eipalloc-0123456789abcdef0".into(),
            owner: "alice".into(),
            instance_id: None,
            association_id: None,
        };
        let mut held = free.clone();
        held.public_ip = "198.51.100.11".into();
        held.instance_id = Some(inst.id.clone());
        let addresses = [free, held];
        let view = AddressesView {
            addresses: &addresses,
            instances: &[&inst],
        };
        let html = super::addresses(nav(), &view, None).into_string();
        for part in [
            "198.51.100.10",
            "198.51.100.11",
            "/_console/addresses/associate",
            "/_console/addresses/disassociate",
            "/_console/addresses/release",
        ] {
            assert!(html.contains(part), "{part} not in {html}");
        }
        // Allocate, associate, disassociate, 2 release, sign out.
        assert_eq!(forms_with_token(&html), 6);
    }

    #[test]
    fn the_rotation_page_posts_with_the_token() {
        let html = rotate(nav(), "MKIAOLD").into_string();
        assert!(html.contains("MKIAOLD"));
        assert!(html.contains(r#"action="/_console/credentials/rotate""#));
        assert_eq!(forms_with_token(&html), 2);
    }
}
