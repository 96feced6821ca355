//! RunInstances: validates the request, resolves image, kernel, ramdisk, key and groups, asks
//! the scheduler for nodes, and has the core write the instances (the nodes' desired state) in
//! one transaction, with their shutdown policy (DisableApiTermination,
//! InstanceInitiatedShutdownBehavior) and their tags (TagSpecifications of type `instance`;
//! `volume` is accepted and tags nothing, as no launch here makes an EBS volume). A repeated
//! ClientToken returns the original reservation.

use super::groups;
use super::images::visible;
use super::metadata_options;
use super::params::Params;
use super::render;
use super::tags;
use super::xml;
use super::{Call, Ec2, Ec2Error};
use crate::cloud::instance_attributes::Related;
use crate::cloud::launch::{self, Launch};
use crate::cloud::model::{
    instance_type, Image, ImageKind, Instance, KeyPair, ShutdownBehavior, ShutdownPolicy, Snapshot,
    CLIENT_TOKEN, INSTANCE, KEY_PAIR, SNAPSHOT,
};
use crate::cloud::tags::{self as tagging, ResourceType, TagIndex, TagSet};
use crate::cloud::volumes;
use crate::scheduler::{self, Need};
use crate::store::CloudTx;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use mallee_proto::MetadataOptions;
use serde::{Deserialize, Serialize};

const MAX_USER_DATA: usize = 16 * 1024;

#[derive(Serialize, Deserialize)]
struct TokenRecord {
    image_id: String,
    instances: Vec<String>,
}

/// User data as given in parameter `param` (base64 of at most 16 KiB); empty is none.
pub(super) fn user_data(value: Option<&str>, param: &str) -> Result<Option<String>, Ec2Error> {
    let Some(u) = value.filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let raw = B64.decode(u).map_err(|_| {
        Ec2Error::invalid(param, "(omitted)", "Invalid BASE64 encoding of user data.")
    })?;
    if raw.len() > MAX_USER_DATA {
        return Err(Ec2Error::invalid(
            param,
            "(omitted)",
            "User data is limited to 16384 bytes.",
        ));
    }
    Ok(Some(u.to_string()))
}

/// RunInstances' DisableApiTermination and InstanceInitiatedShutdownBehavior.
fn shutdown_policy(p: &Params) -> Result<ShutdownPolicy, Ec2Error> {
    let param = "InstanceInitiatedShutdownBehavior";
    let instance_initiated = match p.get(param) {
        None => ShutdownBehavior::default(),
        Some(v) => ShutdownBehavior::parse(v)
            .ok_or_else(|| Ec2Error::invalid(param, v, "It must be stop or terminate."))?,
    };
    Ok(ShutdownPolicy {
        disable_api_termination: p.bool("DisableApiTermination")?.unwrap_or(false),
        instance_initiated,
    })
}

fn counts(c: &Call<'_>) -> Result<(u32, u32), Ec2Error> {
    let min = c.p.int("MinCount")?.unwrap_or(1);
    let max = c.p.int("MaxCount")?.unwrap_or(min);
    if !(1..=1000).contains(&min) {
        return Err(Ec2Error::invalid(
            "MinCount",
            &min.to_string(),
            "MinCount must be 1..1000.",
        ));
    }
    if max < min || max > 1000 {
        return Err(Ec2Error::invalid(
            "MaxCount",
            &max.to_string(),
            "MaxCount must be >= MinCount and <= 1000.",
        ));
    }
    Ok((min as u32, max as u32))
}

fn linked(
    tx: &CloudTx<'_>,
    c: &Call<'_>,
    param: &str,
    fallback: Option<&String>,
    kind: ImageKind,
) -> Result<Option<Image>, Ec2Error> {
    let Some(id) = c.p.get(param).or(fallback.map(String::as_str)) else {
        return Ok(None);
    };
    let img = visible(tx, id, &c.user.name)?;
    if img.kind != kind {
        return Err(Ec2Error::invalid(
            param,
            id,
            &format!("It is not a {} image.", kind.as_str()),
        ));
    }
    Ok(Some(img))
}

/// Makes each EBS-backed instance's root volume from the image's snapshot, in the launch's
/// transaction: a launch that cannot have them all makes nothing.
fn root_volumes(
    ec2: &Ec2,
    tx: &CloudTx<'_>,
    c: &Call<'_>,
    snapshot: &str,
    tags: &TagSet,
    made: &mut [Instance],
) -> Result<(), Ec2Error> {
    let snap = tx
        .get::<Snapshot>(SNAPSHOT, snapshot)?
        .filter(|s| s.state == "completed")
        .ok_or_else(|| {
            Ec2Error::client(
                "InvalidSnapshot.NotFound",
                format!("The image's root snapshot '{snapshot}' does not exist (deleted?)."),
            )
        })?;
    for i in made.iter_mut() {
        let id = super::volumes::fresh_volume_id(tx)?;
        let device = crate::cloud::model::ROOT_DEVICE_NAME;
        let shelves = ec2.storage.shelves;
        let Some(v) = volumes::make_root(tx, i, &snap, device, shelves, id, c.now)? else {
            return Err(Ec2Error::new(
                503,
                "InsufficientVolumeCapacity",
                format!("Every AoE address of shelves {shelves} is exporting a volume; no root volume can be made."),
            ));
        };
        tagging::attach(tx, &i.owner, &v.id, ResourceType::Volume, tags)?;
        tx.put(INSTANCE, &i.id, &i.owner, None, i)?;
    }
    Ok(())
}

fn resolve(tx: &CloudTx<'_>, c: &Call<'_>) -> Result<Launch, Ec2Error> {
    let (min, max) = counts(c)?;
    let image_id = c.p.req("ImageId")?;
    let image = visible(tx, image_id, &c.user.name)?;
    if image.kind != ImageKind::Machine {
        return Err(Ec2Error::invalid(
            "ImageId",
            image_id,
            "It is a kernel or ramdisk image.",
        ));
    }
    let state = crate::cloud::images::state_of(tx, &image)?;
    if state != crate::cloud::images::ImageState::Available {
        return Err(super::images::unavailable(&image, &state, "run"));
    }
    let kernel = linked(
        tx,
        c,
        "KernelId",
        image.kernel_id.as_ref(),
        ImageKind::Kernel,
    )?;
    let ramdisk = linked(
        tx,
        c,
        "RamdiskId",
        image.ramdisk_id.as_ref(),
        ImageKind::Ramdisk,
    )?;
    let tname = c.p.get("InstanceType").unwrap_or("m1.small");
    let itype = instance_type(tname).ok_or_else(|| {
        Ec2Error::invalid(
            "InstanceType",
            tname,
            "Unknown instance type; see DescribeInstanceTypes.",
        )
    })?;
    let key = match c.p.get("KeyName") {
        Some(k) => Some(
            tx.by_name::<KeyPair>(KEY_PAIR, &c.user.name, k)?
                .ok_or_else(|| {
                    Ec2Error::client(
                        "InvalidKeyPair.NotFound",
                        format!("The key pair '{k}' does not exist"),
                    )
                })?,
        ),
        None => None,
    };
    let mut wanted = c.p.list("SecurityGroup");
    wanted.extend(c.p.list("SecurityGroupId"));
    if wanted.is_empty() {
        wanted.push("default".into());
    }
    let mut groups = Vec::new();
    for g in wanted {
        let g = groups::find(tx, &c.user.name, &g)?;
        if !groups.iter().any(|(id, _)| *id == g.id) {
            groups.push((g.id, g.name));
        }
    }
    let user_data = user_data(c.p.get("UserData"), "UserData")?;
    let metadata_options =
        metadata_options::parse(c.p, "MetadataOptions.", MetadataOptions::default())?;
    Ok(Launch {
        owner: c.user.name.clone(),
        metadata_options,
        client_token: c.p.get("ClientToken").map(str::to_string),
        image,
        kernel,
        ramdisk,
        itype,
        key,
        groups,
        user_data,
        min,
        max,
    })
}

/// The zone to use and one node per instance.
fn place(
    ec2: &Ec2,
    tx: &CloudTx<'_>,
    c: &Call<'_>,
    l: &Launch,
) -> Result<(String, Vec<String>), Ec2Error> {
    let loads = crate::cloud::nodes::loads(tx)?;
    let need = Need {
        vcpus: l.itype.vcpus,
        memory_mib: l.itype.memory_mib,
    };
    let zones: Vec<String> = match c
        .p
        .get("Placement.AvailabilityZone")
        .filter(|z| !z.is_empty())
    {
        Some(z) if ec2.cfg.clusters.iter().any(|c| c == z) => vec![z.to_string()],
        Some(z) => {
            return Err(Ec2Error::invalid(
                "Placement.AvailabilityZone",
                z,
                "No such availability zone; see DescribeAvailabilityZones.",
            ))
        }
        None => ec2.cfg.clusters.clone(),
    };
    let mut shortages = Vec::new();
    for zone in &zones {
        match scheduler::place(&loads, zone, need, l.min, l.max) {
            Ok(nodes) => return Ok((zone.clone(), nodes)),
            Err(s) => shortages.push(s.0),
        }
    }
    tracing::info!(user = %c.user.name, instance_type = l.itype.name, min = l.min, reasons = ?shortages, "RunInstances: insufficient capacity");
    Err(Ec2Error::new(
        500,
        "InsufficientInstanceCapacity",
        format!(
            "Insufficient capacity for {} ({}): {}",
            l.itype.name,
            l.min,
            shortages.join("; ")
        ),
    ))
}

pub fn run_instances(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let token = c.p.get("ClientToken").filter(|t| !t.is_empty());
    if token.is_some_and(|t| t.len() > 64) {
        return Err(Ec2Error::invalid(
            "ClientToken",
            token.unwrap_or(""),
            "At most 64 characters.",
        ));
    }
    let shutdown = shutdown_policy(c.p)?;
    // Volume tags go on the root volumes an EBS-backed launch makes (none for instance-store).
    let specs = tags::specified(c.p, &[ResourceType::Instance, ResourceType::Volume])?;
    let instance_tags = specs
        .get(&ResourceType::Instance)
        .cloned()
        .unwrap_or_default();
    let volume_tags = specs
        .get(&ResourceType::Volume)
        .cloned()
        .unwrap_or_default();
    let (instances, fresh, tag_index) = ec2.store.cloud(|tx| {
        let token_id = token.map(|t| format!("{}:{t}", c.user.name));
        if let Some(tid) = &token_id {
            if let Some(prev) = tx.get::<TokenRecord>(CLIENT_TOKEN, tid)? {
                if c.p.get("ImageId").is_some_and(|i| i != prev.image_id) {
                    return Err(Ec2Error::client(
                        "IdempotentParameterMismatch",
                        "The client token was used with different parameters.",
                    ));
                }
                let mut out = Vec::new();
                for id in &prev.instances {
                    out.extend(tx.get::<Instance>(INSTANCE, id)?);
                }
                let tags = tagging::index(tx, &c.user.name, ResourceType::Instance)?;
                return Ok((out, false, tags));
            }
        }
        let launch = resolve(tx, c)?;
        let (zone, nodes) = place(ec2, tx, c, &launch)?;
        let mut made = launch::write_instances(
            tx,
            &launch,
            &ec2.net,
            &ec2.cfg.public_ips,
            &zone,
            &nodes,
            c.now,
        )?;
        launch::settle(tx, &mut made, shutdown, &instance_tags)?;
        if let Some(snap) = &launch.image.root_snapshot {
            root_volumes(ec2, tx, c, snap, &volume_tags, &mut made)?;
        }
        if let Some(tid) = &token_id {
            let rec = TokenRecord {
                image_id: launch.image.id.clone(),
                instances: made.iter().map(|i| i.id.clone()).collect(),
            };
            tx.put(CLIENT_TOKEN, tid, &c.user.name, None, &rec)?;
        }
        let tags = TagIndex::same(made.iter().map(|i| i.id.clone()), &instance_tags);
        Ok((made, true, tags))
    })?;
    if fresh {
        ec2.changes.bump();
    }
    let refs: Vec<&Instance> = instances.iter().collect();
    // Just launched: no volume is attached yet.
    let related = Related {
        tags: tag_index,
        ..Related::default()
    };
    let mut x = xml::response(c.action, c.rid);
    render::reservation(&mut x, &c.user.name, &refs, &related);
    Ok(x.finish())
}
