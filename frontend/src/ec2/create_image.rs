//! CreateImage: an EBS-backed image from an EBS-backed instance's root volume. Parses the
//! request (InstanceId, Name, Description, NoReboot, TagSpecifications of type `image` and
//! `snapshot`, BlockDeviceMappings that only leave attached data volumes out), has the core
//! (`cloud::images`) make the image, its root snapshot and, unless NoReboot, stop and hold the
//! instance, and answers with the image id. The image is `pending` until the storage keeper
//! has the snapshot's chunks in Walrus.
//!
//! Errors as AWS gives them: an instance-store instance or one not running, stopping or
//! stopped is `InvalidParameterValue` ("Invalid value 'i-…' for instanceId. …"); mappings
//! this cloud cannot honour (new volumes, instance-store devices, a changed root) are
//! `InvalidBlockDeviceMapping`.

use super::images::{name_free, valid_name};
use super::instances::owned;
use super::params::Params;
use super::tags;
use super::xml;
use super::{Call, Ec2, Ec2Error};
use crate::cloud::images::{self as imaging, ImagingError, Request};
use crate::cloud::model::{new_id, ROOT_DEVICE_NAME};
use crate::cloud::tags::{self as tagging, ResourceType};

fn bad_mapping(message: String) -> Ec2Error {
    Ec2Error::client("InvalidBlockDeviceMapping", message)
}

/// The devices `BlockDeviceMapping.N` leaves out of the image (`NoDevice`); anything else a
/// mapping could ask for is refused.
fn excluded_devices(p: &Params) -> Result<Vec<String>, Ec2Error> {
    let mut out = Vec::new();
    for m in p.structs("BlockDeviceMapping") {
        let device = m.req("DeviceName")?;
        if device == ROOT_DEVICE_NAME {
            return Err(bad_mapping(format!(
                "The image's root device {ROOT_DEVICE_NAME} is the instance's root volume as it is; its mapping cannot be changed here."
            )));
        }
        if m.get("NoDevice").is_none() || m.names().any(|n| n != "DeviceName" && n != "NoDevice") {
            return Err(bad_mapping(format!(
                "Images here hold only the instance's root volume ({ROOT_DEVICE_NAME}): a mapping for {device} may only leave it out (NoDevice)."
            )));
        }
        out.push(device.to_string());
    }
    Ok(out)
}

/// The error AWS gives for `e`, about instance `id`.
fn refusal(id: &str, e: ImagingError) -> Ec2Error {
    match e {
        ImagingError::NotEbsBacked | ImagingError::State => Ec2Error::client(
            "InvalidParameterValue",
            format!("Invalid value '{id}' for instanceId. {e}"),
        ),
        ImagingError::Busy { .. } => Ec2Error::client(
            "IncorrectInstanceState",
            format!("The instance '{id}' cannot be imaged now: {e}."),
        ),
        ImagingError::DataVolume { .. } => Ec2Error::client(
            "UnsupportedOperation",
            format!("The instance '{id}' cannot be imaged as it is: {e}."),
        ),
        ImagingError::NoKernel => {
            Ec2Error::combination(format!("The instance '{id}' cannot be imaged: {e}."))
        }
        ImagingError::RootVolumeMissing(_) => Ec2Error::internal(format!("{id}: {e}")),
        ImagingError::Store(e) => e.into(),
    }
}

pub fn create(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let instance_id = c.p.req("InstanceId")?;
    let name = valid_name(c.p.req("Name")?)?;
    let no_reboot = c.p.bool("NoReboot")?.unwrap_or(false);
    let excluded = excluded_devices(c.p)?;
    let specs = tags::specified(c.p, &[ResourceType::Image, ResourceType::Snapshot])?;
    let req = Request {
        name,
        description: c.p.get("Description"),
        no_reboot,
        excluded: &excluded,
    };
    let owner = &c.user.name;
    let (image, snapshot, approach) = ec2.store.cloud(|tx| {
        let mut i = owned(tx, instance_id, owner)?;
        name_free(tx, owner, name)?;
        let ids = (new_id("emi", 8), new_id("snap", 17));
        let made =
            imaging::begin(tx, &mut i, &req, ids, c.now).map_err(|e| refusal(instance_id, e))?;
        for (kind, id) in [
            (ResourceType::Image, &made.0.id),
            (ResourceType::Snapshot, &made.1.id),
        ] {
            if let Some(tag_set) = specs.get(&kind) {
                tagging::attach(tx, owner, id, kind, tag_set)?;
            }
        }
        Ok::<_, Ec2Error>(made)
    })?;
    // The node stops the instance (unless NoReboot); the storage keeper copies the volume.
    ec2.changes.bump();
    tracing::info!(image = %image.id, instance = instance_id, snapshot = %snapshot.id, volume = %snapshot.volume_id, ?approach, "CreateImage: image pending until its root snapshot completes");
    let mut x = xml::response(c.action, c.rid);
    x.field("imageId", &image.id);
    Ok(x.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_no_device_mappings_of_data_devices_are_taken() {
        let p = Params::from_pairs(&[
            ("BlockDeviceMapping.1.DeviceName", "/dev/vdb"),
            ("BlockDeviceMapping.1.NoDevice", ""),
            ("BlockDeviceMapping.2.DeviceName", "/dev/vdc"),
            ("BlockDeviceMapping.2.NoDevice", ""),
        ]);
        assert_eq!(excluded_devices(&p).unwrap(), ["/dev/vdb", "/dev/vdc"]);
        for refused in [
            vec![
                ("BlockDeviceMapping.1.DeviceName", "/dev/vdb"),
                ("BlockDeviceMapping.1.Ebs.VolumeSize", "8"),
            ],
            vec![
                ("BlockDeviceMapping.1.DeviceName", "/dev/vdb"),
                ("BlockDeviceMapping.1.VirtualName", "ephemeral0"),
            ],
            vec![
                ("BlockDeviceMapping.1.DeviceName", "/dev/vdb"),
                ("BlockDeviceMapping.1.NoDevice", ""),
                ("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true"),
            ],
            vec![
                ("BlockDeviceMapping.1.DeviceName", ROOT_DEVICE_NAME),
                ("BlockDeviceMapping.1.Ebs.VolumeSize", "20"),
            ],
        ] {
            let e = excluded_devices(&Params::from_pairs(&refused)).unwrap_err();
            assert_eq!(e.code, "InvalidBlockDeviceMapping", "{refused:?}");
        }
        let unnamed = Params::from_pairs(&[("BlockDeviceMapping.1.NoDevice", "")]);
        assert_eq!(
            excluded_devices(&unnamed).unwrap_err().code,
            "MissingParameter"
        );
    }

    #[test]
    fn instance_refusals_carry_the_codes_and_words_aws_uses() {
        let e = refusal("i-0123abcd", ImagingError::NotEbsBacked);
        assert_eq!(e.code, "InvalidParameterValue");
        assert_eq!(
            e.message,
            "Invalid value 'i-0123abcd' for instanceId. Instance does not have a volume attached at root (/dev/vda)"
        );
        let e = refusal("i-0123abcd", ImagingError::State);
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            (
                "InvalidParameterValue",
                "Invalid value 'i-0123abcd' for instanceId. Instance is not in state 'running' or 'stopping' or 'stopped'"
            )
        );
        let e = refusal(
            "i-0123abcd",
            ImagingError::DataVolume {
                volume: "vol-0000beef".into(),
                device: "/dev/vdb".into(),
            },
        );
        assert_eq!(e.code, "UnsupportedOperation");
        assert!(
            e.message.contains("NoDevice mapping for /dev/vdb"),
            "{}",
            e.message
        );
    }
}
