//! XML for instances, shared by RunInstances and DescribeInstances (botocore's `Reservation`
//! and `Instance` shapes, with the instance's tags and attached volumes), the block device
//! mapping DescribeInstanceAttribute shows too, and the state-change lists of
//! Terminate/Stop/Start.

use super::tags;
use super::xml::{time, Xml};
use crate::cloud::instance_attributes::Related;
use crate::cloud::model::{Attachment, Instance, State, Volume, ROOT_DEVICE_NAME};

/// `instanceState`-like element `name` for `state`.
pub fn state(x: &mut Xml, name: &str, state: State) {
    x.open(name)
        .field("code", state.code())
        .field("name", state.name())
        .close(name);
}

/// The `stateReason` shown: a node silent past its deadline wins over the stored reason.
pub fn reason(i: &Instance) -> Option<(String, String)> {
    if i.node_down && i.state != State::Terminated {
        return Some((
            "Server.NodeDown".into(),
            format!("Server.NodeDown: node {} has stopped reporting; the instance state is its last known", i.node),
        ));
    }
    i.reason
        .as_ref()
        .map(|r| (r.code.clone(), r.message.clone()))
}

fn groups(x: &mut Xml, groups: &[(String, String)]) {
    x.set("groupSet", groups, |x, (id, name)| {
        x.field("groupId", id).field("groupName", name);
    });
}

fn instance(x: &mut Xml, i: &Instance, related: &Related) {
    x.field("instanceId", &i.id).field("imageId", &i.image_id);
    state(x, "instanceState", i.state);
    // SYSTEM mode: the site's DHCP server picks the address, unknown here.
    let known = i.state != State::Terminated && !i.private_ip.is_empty();
    let dns = match known {
        true => format!("ip-{}.mallee.internal", i.private_ip.replace('.', "-")),
        false => String::new(),
    };
    x.field("privateDnsName", &dns)
        .field("dnsName", i.public_ip.as_deref().unwrap_or(""))
        .field("reason", transition_reason(i))
        .opt("keyName", i.key_name.as_ref())
        .field("amiLaunchIndex", i.launch_index);
    x.open("productCodes").close("productCodes");
    x.field("instanceType", &i.instance_type)
        .field("launchTime", time(i.launch_ms));
    x.open("placement")
        .field("availabilityZone", &i.zone)
        .field("tenancy", "default")
        .close("placement");
    x.opt("kernelId", i.kernel_id.as_ref())
        .opt("ramdiskId", i.ramdisk_id.as_ref());
    x.open("monitoring")
        .field("state", "disabled")
        .close("monitoring");
    if known {
        x.field("privateIpAddress", &i.private_ip);
    }
    if i.state != State::Terminated {
        x.opt("ipAddress", i.public_ip.as_ref());
    }
    groups(x, &i.groups);
    if let Some((code, message)) = reason(i) {
        x.open("stateReason")
            .field("code", code)
            .field("message", message)
            .close("stateReason");
    }
    x.field("architecture", "x86_64")
        .field("rootDeviceType", root_device_type(i))
        .field("rootDeviceName", ROOT_DEVICE_NAME);
    block_devices(x, related.volumes_of(&i.id));
    x.field("virtualizationType", "hvm")
        .opt("clientToken", i.client_token.as_ref());
    tags::render(x, related.tags.of(&i.id));
    metadata_options(x, "metadataOptions", i);
}

fn transition_reason(i: &Instance) -> String {
    match i.state {
        State::Pending | State::Running => String::new(),
        s => format!("{} ({})", s.name(), time(i.state_ms)),
    }
}

/// A `Reservation` body (no wrapper element), instances in the order given; `owner` is the
/// owning user's name (shown as its account id).
pub fn reservation(x: &mut Xml, owner: &str, instances: &[&Instance], related: &Related) {
    let Some(first) = instances.first() else {
        return;
    };
    x.field("reservationId", &first.reservation_id)
        .field("ownerId", crate::store::account_id(owner));
    groups(x, &first.groups);
    x.set("instancesSet", instances, |x, i| instance(x, i, related));
}

/// `reservationSet`: instances grouped by reservation, in order of first appearance.
pub fn reservations(x: &mut Xml, instances: &[&Instance], related: &Related) {
    let mut order: Vec<&str> = Vec::new();
    for i in instances {
        if !order.contains(&i.reservation_id.as_str()) {
            order.push(&i.reservation_id);
        }
    }
    x.set("reservationSet", &order, |x, r| {
        let members: Vec<&Instance> = instances
            .iter()
            .copied()
            .filter(|i| i.reservation_id == *r)
            .collect();
        let owner = members.first().map(|i| i.owner.clone()).unwrap_or_default();
        reservation(x, &owner, &members, related);
    });
}

/// `ebs` for an instance that boots from a volume, else `instance-store`.
pub fn root_device_type(i: &Instance) -> &'static str {
    if i.root_volume.is_some() {
        "ebs"
    } else {
        "instance-store"
    }
}

/// `blockDeviceMapping`: the EBS volumes attached to an instance (an EBS-backed one's root
/// volume among them).
pub fn block_devices(x: &mut Xml, volumes: &[Volume]) {
    let attached: Vec<(&Volume, &Attachment)> = volumes
        .iter()
        .filter_map(|v| v.attachment.as_ref().map(|a| (v, a)))
        .collect();
    x.set("blockDeviceMapping", &attached, |x, (v, a)| {
        x.field("deviceName", &a.device);
        x.open("ebs")
            .field("volumeId", &v.id)
            .field("status", a.status.as_str())
            .field("attachTime", time(a.attached_ms))
            .field("deleteOnTermination", a.delete_on_termination)
            .close("ebs");
    });
}

/// `instancesSet` of state changes.
pub fn state_changes(x: &mut Xml, changes: &[(String, State, State)]) {
    x.set("instancesSet", changes, |x, (id, before, after)| {
        x.field("instanceId", id);
        state(x, "currentState", *after);
        state(x, "previousState", *before);
    });
}

/// Metadata options that exist only switched off here (`ec2/metadata_options.rs` refuses
/// `enabled`): parameter, response element, why.
pub const ALWAYS_DISABLED: [(&str, &str, &str); 2] = [
    (
        "HttpProtocolIpv6",
        "httpProtocolIpv6",
        "the metadata service has no IPv6 endpoint",
    ),
    (
        "InstanceMetadataTags",
        "instanceMetadataTags",
        "the metadata service does not serve instance tags",
    ),
];

/// `i`'s options as element `name` (an `InstanceMetadataOptionsResponse`).
pub fn metadata_options(x: &mut Xml, name: &str, i: &Instance) {
    let o = i.metadata_options;
    let state = match i.metadata_options_applied() {
        true => "applied",
        false => "pending",
    };
    x.open(name)
        .field("state", state)
        .field("httpTokens", o.http_tokens.name())
        .field("httpPutResponseHopLimit", o.http_put_response_hop_limit)
        .field("httpEndpoint", o.http_endpoint.name());
    for (_, element, _) in ALWAYS_DISABLED {
        x.field(element, "disabled");
    }
    x.close(name);
}
