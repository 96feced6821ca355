//! DescribeInstanceAttribute and ModifyInstanceAttribute in the Query API: the attribute names
//! (botocore's `InstanceAttributeName`), both parameter forms of a change (`InstanceType.Value`
//! and the old `Attribute=instanceType&Value=...`; `GroupId.N`; `BlockDeviceMapping.N`), one
//! attribute per call, and the answer's elements. What may change when, and what a change
//! does, is `cloud::instance_attributes`. Attributes for features this cloud lacks (ENA,
//! SR-IOV, EBS optimisation, enclaves, stop protection) are described with the values that
//! hold here and refused as changes (`UnsupportedOperation`), never accepted and ignored.

use super::groups;
use super::images::visible;
use super::instances::{incorrect, owned};
use super::params::Params;
use super::render;
use super::run::user_data;
use super::xml::{self, Xml};
use super::{Call, Ec2, Ec2Error};
use crate::cloud::instance_attributes::{self as attrs, AttributeError, Change};
use crate::cloud::model::{instance_type, ImageKind, Instance, ShutdownBehavior, ROOT_DEVICE_NAME};
use crate::store::CloudTx;

/// The attributes, by their API name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attribute {
    InstanceType,
    Kernel,
    Ramdisk,
    UserData,
    DisableApiTermination,
    ShutdownBehavior,
    RootDeviceName,
    BlockDeviceMapping,
    ProductCodes,
    SourceDestCheck,
    GroupSet,
    EbsOptimized,
    SriovNetSupport,
    EnaSupport,
    EnclaveOptions,
    DisableApiStop,
}

/// (attribute, its name, the member ModifyInstanceAttribute sets it with as `Member.Value`).
const ATTRIBUTES: [(Attribute, &str, Option<&str>); 16] = [
    (
        Attribute::InstanceType,
        "instanceType",
        Some("InstanceType"),
    ),
    (Attribute::Kernel, "kernel", Some("Kernel")),
    (Attribute::Ramdisk, "ramdisk", Some("Ramdisk")),
    (Attribute::UserData, "userData", Some("UserData")),
    (
        Attribute::DisableApiTermination,
        "disableApiTermination",
        Some("DisableApiTermination"),
    ),
    (
        Attribute::ShutdownBehavior,
        "instanceInitiatedShutdownBehavior",
        Some("InstanceInitiatedShutdownBehavior"),
    ),
    (Attribute::RootDeviceName, "rootDeviceName", None),
    (Attribute::BlockDeviceMapping, "blockDeviceMapping", None),
    (Attribute::ProductCodes, "productCodes", None),
    (
        Attribute::SourceDestCheck,
        "sourceDestCheck",
        Some("SourceDestCheck"),
    ),
    (Attribute::GroupSet, "groupSet", None),
    (
        Attribute::EbsOptimized,
        "ebsOptimized",
        Some("EbsOptimized"),
    ),
    (
        Attribute::SriovNetSupport,
        "sriovNetSupport",
        Some("SriovNetSupport"),
    ),
    (Attribute::EnaSupport, "enaSupport", Some("EnaSupport")),
    (Attribute::EnclaveOptions, "enclaveOptions", None),
    (
        Attribute::DisableApiStop,
        "disableApiStop",
        Some("DisableApiStop"),
    ),
];

impl Attribute {
    fn parse(name: &str) -> Result<Attribute, Ec2Error> {
        ATTRIBUTES
            .iter()
            .find(|(_, n, _)| *n == name)
            .map(|(a, _, _)| *a)
            .ok_or_else(|| Ec2Error::invalid("attribute", name, "Unknown attribute."))
    }

    fn name(self) -> &'static str {
        ATTRIBUTES
            .iter()
            .find(|(a, _, _)| *a == self)
            .map_or("", |(_, n, _)| n)
    }

    /// Why a change of it is refused here, for attributes that cannot change.
    fn fixed(self) -> Option<(&'static str, &'static str)> {
        let unsupported = "UnsupportedOperation";
        let read_only = "InvalidParameterCombination";
        Some(match self {
            Attribute::RootDeviceName | Attribute::ProductCodes | Attribute::EnclaveOptions => {
                (read_only, "it cannot be modified")
            }
            Attribute::SourceDestCheck => (
                unsupported,
                "each instance's node drops frames with another source address than the instance's; that check cannot be turned off",
            ),
            Attribute::EbsOptimized => (unsupported, "instances here have no EBS-optimised path"),
            Attribute::SriovNetSupport | Attribute::EnaSupport => {
                (unsupported, "instances here have only virtio network cards")
            }
            Attribute::DisableApiStop => (
                unsupported,
                "stop protection is not built here; only EBS-backed instances stop, and StopInstances stops them",
            ),
            _ => return None,
        })
    }
}

/// `<name><value>v</value></name>`; `<name/>` without a value.
fn value(x: &mut Xml, name: &str, v: Option<impl std::fmt::Display>) {
    x.open(name).opt("value", v).close(name);
}

pub fn describe(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let id = c.p.req("InstanceId")?;
    let attribute = Attribute::parse(c.p.req("Attribute")?)?;
    let (i, volumes) = ec2.store.cloud(|tx| {
        let i = owned(tx, id, &c.user.name)?;
        let volumes = attrs::attached_volumes(tx, &c.user.name)?.remove(&i.id);
        Ok::<_, Ec2Error>((i, volumes.unwrap_or_default()))
    })?;
    let mut x = xml::response(c.action, c.rid);
    x.field("instanceId", &i.id);
    let name = attribute.name();
    match attribute {
        Attribute::InstanceType => value(&mut x, name, Some(&i.instance_type)),
        Attribute::Kernel => value(&mut x, name, i.kernel_id.as_ref()),
        Attribute::Ramdisk => value(&mut x, name, i.ramdisk_id.as_ref()),
        Attribute::UserData => value(&mut x, name, i.user_data.as_ref()),
        Attribute::DisableApiTermination => {
            value(&mut x, name, Some(i.shutdown.disable_api_termination))
        }
        Attribute::ShutdownBehavior => {
            value(&mut x, name, Some(i.shutdown.instance_initiated.name()))
        }
        Attribute::RootDeviceName => value(&mut x, name, Some(ROOT_DEVICE_NAME)),
        Attribute::BlockDeviceMapping => render::block_devices(&mut x, &volumes),
        Attribute::GroupSet => {
            x.set(name, &i.groups, |x, (id, group)| {
                x.field("groupId", id).field("groupName", group);
            });
        }
        Attribute::ProductCodes => {
            x.open(name).close(name);
        }
        // The node's anti-spoofing is EC2's source/destination check, always on.
        Attribute::SourceDestCheck => value(&mut x, name, Some(true)),
        Attribute::EbsOptimized | Attribute::EnaSupport | Attribute::DisableApiStop => {
            value(&mut x, name, Some(false))
        }
        Attribute::SriovNetSupport => value(&mut x, name, None::<&str>),
        Attribute::EnclaveOptions => {
            x.open(name).field("enabled", false).close(name);
        }
    }
    Ok(x.finish())
}

/// What a ModifyInstanceAttribute names: the one attribute and its value(s).
enum Requested {
    /// A `Member.Value` or `Attribute`/`Value` change.
    Value(Attribute, String),
    Groups(Vec<String>),
    /// (device, delete on termination).
    Devices(Vec<(String, bool)>),
}

fn requested(p: &Params) -> Result<Requested, Ec2Error> {
    let mut found = Vec::new();
    for (attr, _, member) in ATTRIBUTES {
        if let Some(v) = member.and_then(|m| p.get(&format!("{m}.Value"))) {
            found.push(Requested::Value(attr, v.to_string()));
        }
    }
    if let Some(name) = p.get("Attribute") {
        let attr = Attribute::parse(name)?;
        match attr {
            Attribute::GroupSet | Attribute::BlockDeviceMapping => {
                return Err(Ec2Error::combination(format!(
                    "The {name} attribute is modified with {}, not Attribute and Value.",
                    if attr == Attribute::GroupSet {
                        "GroupId.N"
                    } else {
                        "BlockDeviceMapping.N"
                    }
                )))
            }
            _ => found.push(Requested::Value(attr, p.get("Value").unwrap_or("").into())),
        }
    }
    let groups = p.list("GroupId");
    if !groups.is_empty() {
        found.push(Requested::Groups(groups));
    }
    let mappings = p.structs("BlockDeviceMapping");
    if !mappings.is_empty() {
        found.push(Requested::Devices(device_changes(&mappings)?));
    }
    match found.len() {
        0 => Err(Ec2Error::missing("Attribute")),
        1 => Ok(found.remove(0)),
        _ => Err(Ec2Error::combination(
            "Only one attribute can be modified at a time.",
        )),
    }
}

/// `BlockDeviceMapping.N`: only the delete-on-termination flag of attached volumes changes
/// (AWS: absent means true).
fn device_changes(mappings: &[Params]) -> Result<Vec<(String, bool)>, Ec2Error> {
    mappings
        .iter()
        .map(|m| {
            let device = m.req("DeviceName")?;
            if m.get("VirtualName").is_some() || m.get("NoDevice").is_some() {
                return Err(Ec2Error::combination(
                    "Only Ebs.DeleteOnTermination of an attached volume can be modified.",
                ));
            }
            let delete = m.bool("Ebs.DeleteOnTermination")?.unwrap_or(true);
            Ok((device.to_string(), delete))
        })
        .collect()
}

/// The change a `Value` asks for, resolved against the caller's images.
fn change(tx: &CloudTx<'_>, c: &Call<'_>, attr: Attribute, v: &str) -> Result<Change, Ec2Error> {
    let param = format!("{}.Value", attr.name());
    let image = |kind: ImageKind| {
        let img = visible(tx, v, &c.user.name)?;
        match img.kind == kind {
            true => Ok(img),
            false => Err(Ec2Error::invalid(
                &param,
                v,
                &format!("It is not a {} image.", kind.as_str()),
            )),
        }
    };
    let boolean = || match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Ec2Error::invalid(&param, v, "It must be true or false.")),
    };
    Ok(match attr {
        Attribute::InstanceType => Change::InstanceType(instance_type(v).ok_or_else(|| {
            Ec2Error::invalid(
                &param,
                v,
                "Unknown instance type; see DescribeInstanceTypes.",
            )
        })?),
        Attribute::Kernel => Change::Kernel(image(ImageKind::Kernel)?),
        Attribute::Ramdisk => Change::Ramdisk(image(ImageKind::Ramdisk)?),
        Attribute::UserData => Change::UserData(user_data(Some(v), &param)?),
        Attribute::DisableApiTermination => Change::DisableApiTermination(boolean()?),
        Attribute::ShutdownBehavior => Change::ShutdownBehavior(
            ShutdownBehavior::parse(v)
                .ok_or_else(|| Ec2Error::invalid(&param, v, "It must be stop or terminate."))?,
        ),
        other => {
            let (code, why) = other
                .fixed()
                .unwrap_or(("InvalidParameterValue", "unknown"));
            return Err(Ec2Error::client(
                code,
                format!("The {} attribute cannot be modified: {why}.", other.name()),
            ));
        }
    })
}

fn refused(i: &Instance, e: AttributeError) -> Ec2Error {
    match e {
        AttributeError::Store(e) => Ec2Error::internal(e),
        e @ AttributeError::NotStopped(_) => {
            Ec2Error::client("IncorrectInstanceState", e.to_string())
        }
        AttributeError::Ended(_) => incorrect(i, "modified"),
        e @ AttributeError::NetworkGroup { .. } => Ec2Error::combination(e.to_string()),
        e @ AttributeError::NoGroups => Ec2Error::missing(&format!("GroupId ({e})")),
        e @ AttributeError::NoDevice(_) => {
            Ec2Error::client("InvalidInstanceAttributeValue", e.to_string())
        }
    }
}

pub fn modify(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let id = c.p.req("InstanceId")?;
    let what = requested(c.p)?;
    let notify = ec2.store.cloud(|tx| {
        let mut i = owned(tx, id, &c.user.name)?;
        let change = match what {
            Requested::Value(attr, v) => change(tx, c, attr, &v)?,
            Requested::Groups(ids) => {
                let mut groups = Vec::new();
                for g in ids {
                    if !g.starts_with("sg-") {
                        return Err(Ec2Error::client(
                            "InvalidGroupId.Malformed",
                            format!("Invalid id: \"{g}\" (expecting \"sg-...\")"),
                        ));
                    }
                    let g = groups::find(tx, &c.user.name, &g)?;
                    if !groups.iter().any(|(id, _)| *id == g.id) {
                        groups.push((g.id, g.name));
                    }
                }
                Change::Groups(groups)
            }
            Requested::Devices(devices) => {
                for (device, delete) in devices {
                    attrs::set_delete_on_termination(tx, &i, &device, delete)
                        .map_err(|e| refused(&i, e))?;
                }
                return Ok(false);
            }
        };
        let before = i.clone();
        attrs::modify(tx, &mut i, change).map_err(|e| refused(&before, e))
    })?;
    if notify {
        ec2.changes.bump();
    }
    Ok(xml::ok(c.action, c.rid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_attribute_per_call_in_either_parameter_form() {
        let one = |pairs: &[(&str, &str)]| requested(&Params::from_pairs(pairs));
        assert!(matches!(
            one(&[("InstanceType.Value", "m1.large")]),
            Ok(Requested::Value(Attribute::InstanceType, v)) if v == "m1.large"
        ));
        assert!(matches!(
            one(&[("Attribute", "instanceInitiatedShutdownBehavior"), ("Value", "terminate")]),
            Ok(Requested::Value(Attribute::ShutdownBehavior, v)) if v == "terminate"
        ));
        assert!(matches!(
            one(&[("GroupId.2", "sg-b"), ("GroupId.1", "sg-a")]),
            Ok(Requested::Groups(g)) if g == ["sg-a", "sg-b"]
        ));
        assert!(matches!(
            one(&[("BlockDeviceMapping.1.DeviceName", "/dev/sdf")]),
            Ok(Requested::Devices(d)) if d == [("/dev/sdf".to_string(), true)]
        ));
        let code = |pairs: &[(&str, &str)]| one(pairs).err().map(|e| e.code);
        assert_eq!(code(&[]).as_deref(), Some("MissingParameter"));
        assert_eq!(
            code(&[
                ("InstanceType.Value", "m1.large"),
                ("Kernel.Value", "eki-00000001")
            ])
            .as_deref(),
            Some("InvalidParameterCombination")
        );
        assert_eq!(
            code(&[("Attribute", "colour"), ("Value", "red")]).as_deref(),
            Some("InvalidParameterValue")
        );
        assert_eq!(
            code(&[("Attribute", "groupSet"), ("Value", "sg-a")]).as_deref(),
            Some("InvalidParameterCombination")
        );
        assert_eq!(
            code(&[
                ("BlockDeviceMapping.1.DeviceName", "/dev/sdf"),
                ("BlockDeviceMapping.1.NoDevice", "")
            ])
            .as_deref(),
            Some("InvalidParameterCombination")
        );
    }

    #[test]
    fn every_model_name_parses_and_unknown_names_are_invalid_parameter_values() {
        for (attr, name, _) in ATTRIBUTES {
            assert_eq!(Attribute::parse(name).unwrap(), attr);
            assert_eq!(attr.name(), name);
        }
        let e = Attribute::parse("InstanceType").unwrap_err();
        assert_eq!(e.code, "InvalidParameterValue");
        assert!(e.message.contains("Unknown attribute"), "{e}");
    }

    #[test]
    fn refusals_carry_the_codes_aws_gives() {
        let i = crate::cloud::reconcile::tests::instance();
        let code = |e| refused(&i, e).code;
        assert_eq!(
            code(AttributeError::NotStopped(i.id.clone())),
            "IncorrectInstanceState"
        );
        assert_eq!(
            code(AttributeError::Ended(i.id.clone())),
            "IncorrectInstanceState"
        );
        assert_eq!(
            code(AttributeError::NetworkGroup {
                instance: i.id.clone(),
                current: "sg-a".into(),
                wanted: "sg-b".into()
            }),
            "InvalidParameterCombination"
        );
        assert_eq!(
            code(AttributeError::NoDevice("/dev/sdz".into())),
            "InvalidInstanceAttributeValue"
        );
    }

    #[test]
    fn block_device_mappings_show_each_attached_volume() {
        let mut v = crate::cloud::reconcile::tests::attached_volume("vol-00000001", "/dev/sdf");
        let a = v.attachment.as_mut().unwrap();
        a.delete_on_termination = true;
        a.status = crate::cloud::model::AttachStatus::Attached;
        let mut x = Xml::namespaced(xml::EC2_NS);
        x.open("r");
        render::block_devices(&mut x, &[v]);
        let s = x.finish();
        assert!(
            s.contains("<blockDeviceMapping><item><deviceName>/dev/sdf</deviceName><ebs><volumeId>vol-00000001</volumeId><status>attached</status>"),
            "{s}"
        );
        assert!(
            s.contains(
                "<deleteOnTermination>true</deleteOnTermination></ebs></item></blockDeviceMapping>"
            ),
            "{s}"
        );
    }
}
