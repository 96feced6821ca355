//! Images: RegisterImage makes an emi-/eki-/eri- record from a Walrus object (its size and
//! SHA-256 come from the object store, the kind from the object's `x-amz-meta-mallee-image-type`
//! metadata: `machine` (default), `kernel` or `ramdisk`), or an EBS-backed one from a root
//! snapshot — a machine image with the `root=` its instances boot with, read from the first KiB
//! of the object's file or of the snapshot through its manifest (none found: none stored, and
//! instances boot `/dev/vda`); DescribeImages with owners, executable-by and filters (tag
//! filters: the caller's own tags), each image's state as `cloud::images` derives it (an
//! EBS-backed image is `pending` until its root snapshot is in Walrus); DeregisterImage (the
//! image's tags go with it, its root snapshot stays); launch permissions. CreateImage is
//! `create_image`.

use super::params::{filter_matches, Params};
use super::tags;
use super::xml::{self, time};
use super::{Call, Ec2, Ec2Error};
use crate::cloud::access::{may_access, Access};
use crate::cloud::images::{self as imaging, ImageState};
use crate::cloud::model::{
    new_id, well_formed, Image, ImageKind, DEFAULT_ARCHITECTURE, IMAGE, ROOT_DEVICE_NAME,
};
use crate::cloud::tags::{self as tagging, ResourceType, TagSet};
use crate::storage::snapshots::SnapshotReader;
use crate::store::{account_id, CloudTx, ObjectRow, User};
use mallee_proto::root_device::{self, RootDevice};

pub use crate::cloud::model::IMAGE_PREFIXES;
const KIND_META: &str = "x-amz-meta-mallee-image-type";

/// The image `id` if `user` may see it, else the error clients expect.
pub fn visible(tx: &CloudTx<'_>, id: &str, user: &str) -> Result<Image, Ec2Error> {
    if !well_formed(id, IMAGE_PREFIXES) {
        return Err(Ec2Error::malformed("InvalidAMIID", id));
    }
    tx.get::<Image>(IMAGE, id)?
        .filter(|i| i.launchable_by(user))
        .ok_or_else(|| Ec2Error::not_found("InvalidAMIID", id))
}

fn linked(
    tx: &CloudTx<'_>,
    id: Option<&str>,
    user: &str,
    kind: ImageKind,
) -> Result<Option<String>, Ec2Error> {
    let Some(id) = id else { return Ok(None) };
    let img = visible(tx, id, user)?;
    if img.kind != kind {
        return Err(Ec2Error::invalid(
            "ImageId",
            id,
            &format!("It is not a {} image.", kind.as_str()),
        ));
    }
    Ok(Some(img.id))
}

/// The Walrus object an `ImageLocation` (`bucket/key`) names, if `user` may read it.
pub(super) fn walrus_object<'a>(
    ec2: &Ec2,
    user: &User,
    location: &'a str,
) -> Result<(&'a str, &'a str, ObjectRow), Ec2Error> {
    let (bucket, key) = location
        .trim_start_matches('/')
        .split_once('/')
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .ok_or_else(|| Ec2Error::invalid("ImageLocation", location, "Expected bucket/key."))?;
    let no_object = || Ec2Error::invalid("ImageLocation", location, "No such object in Walrus.");
    let b = ec2.store.bucket(bucket)?.ok_or_else(no_object)?;
    if !may_access(user, &b.owner, Access::Read) {
        return Err(no_object());
    }
    let obj = ec2.store.object(bucket, key)?.ok_or_else(no_object)?;
    Ok((bucket, key, obj))
}

/// `InvalidAMIID.Unavailable`: `img` is not available (pending or failed) for `what`.
pub(super) fn unavailable(img: &Image, state: &ImageState, what: &str) -> Ec2Error {
    Ec2Error::client(
        "InvalidAMIID.Unavailable",
        format!("AMI '{}' is {}, and cannot be {what}", img.id, state.name()),
    )
}

/// An AMI name as RegisterImage and CreateImage take it: 3 to 128 characters.
pub(super) fn valid_name(name: &str) -> Result<&str, Ec2Error> {
    if !(3..=128).contains(&name.len()) {
        return Err(Ec2Error::invalid(
            "Name",
            name,
            "AMI names are 3 to 128 characters.",
        ));
    }
    Ok(name)
}

/// What `root=` names the root of the machine image read from `what` (an object's location or
/// a snapshot) by, as [`root_device::locate`] found it in its bytes; `None` (logged) when they hold no layout it knows or could not be read: the
/// image registers anyway, and its instances boot `/dev/vda`.
fn root_named(what: &str, found: Result<Option<RootDevice>, String>) -> Option<RootDevice> {
    match found {
        Ok(Some(root)) => {
            tracing::info!(source = what, %root, "image root found");
            Some(root)
        }
        Ok(None) => {
            tracing::info!(source = what, "no partition table or file system known in the image: its instances boot root=/dev/vda");
            None
        }
        Err(why) => {
            tracing::warn!(
                source = what,
                "could not read the image for its root ({why}): its instances boot root=/dev/vda"
            );
            None
        }
    }
}

/// The root of the machine image Walrus holds as `obj`, read from its blob file.
fn object_root(ec2: &Ec2, location: &str, obj: &ObjectRow) -> Option<RootDevice> {
    let path = ec2.store.blobs().path(&obj.blob);
    let found = ec2
        .store
        .blob_file(&obj.blob)
        .and_then(std::fs::File::open)
        .and_then(|f| root_device::locate(&f));
    root_named(
        location,
        found.map_err(|e| format!("{}: {e}", path.display())),
    )
}

/// The root of the image whose root volume is made from completed snapshot `snapshot`, read
/// through its manifest.
fn snapshot_root(ec2: &Ec2, snapshot: &str) -> Option<RootDevice> {
    let found = SnapshotReader::open(&ec2.store, snapshot)
        .map_err(|e| e.to_string())
        .and_then(|r| root_device::locate(&r).map_err(|e| e.to_string()));
    root_named(snapshot, found)
}

pub fn register(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let name = valid_name(c.p.req("Name")?)?;
    if let Some(snapshot) = root_snapshot(c.p)? {
        return register_ebs(ec2, c, name, &snapshot);
    }
    let location = c.p.req("ImageLocation")?;
    let (bucket, key, obj) = walrus_object(ec2, c.user, location)?;
    let kind_text = obj
        .metadata
        .iter()
        .find(|(k, _)| k == KIND_META)
        .map(|(_, v)| v.as_str());
    let kind = match kind_text {
        None => ImageKind::Machine,
        Some(t) => ImageKind::parse(t)
            .ok_or_else(|| Ec2Error::invalid(KIND_META, t, "Use machine, kernel or ramdisk."))?,
    };
    let arch = architecture(c.p)?;
    let owner = &c.user.name;
    let tag_set = tags::specified_for(c.p, ResourceType::Image)?;
    let root = (kind == ImageKind::Machine)
        .then(|| object_root(ec2, location, &obj))
        .flatten();
    let id = ec2.store.cloud(|tx| {
        name_free(tx, owner, name)?;
        let kernel_id = linked(tx, c.p.get("KernelId"), owner, ImageKind::Kernel)?;
        let ramdisk_id = linked(tx, c.p.get("RamdiskId"), owner, ImageKind::Ramdisk)?;
        if kind != ImageKind::Machine && (kernel_id.is_some() || ramdisk_id.is_some()) {
            return Err(Ec2Error::combination(
                "Only machine images take a kernel or ramdisk",
            ));
        }
        let img = Image {
            id: new_id(kind.prefix(), 8),
            owner: owner.clone(),
            name: name.to_string(),
            description: c.p.get("Description").map(str::to_string),
            kind,
            bucket: bucket.to_string(),
            key: key.to_string(),
            size: obj.size,
            sha256: obj.sha256.clone(),
            architecture: arch.to_string(),
            kernel_id,
            ramdisk_id,
            public: false,
            launch_users: Vec::new(),
            created_ms: c.now,
            root_snapshot: None,
            source_instance: None,
            root_device: root,
        };
        tx.put(IMAGE, &img.id, owner, Some(name), &img)?;
        tagging::attach(tx, owner, &img.id, ResourceType::Image, &tag_set)?;
        Ok(img.id)
    })?;
    tracing::info!(image = %id, kind = kind.as_str(), bucket, key, size = obj.size, sha256 = %obj.sha256, "registered image");
    let mut x = xml::response(c.action, c.rid);
    x.field("imageId", id);
    Ok(x.finish())
}

/// Refuses a second image of `owner` called `name`.
pub(super) fn name_free(tx: &CloudTx<'_>, owner: &str, name: &str) -> Result<(), Ec2Error> {
    if tx.by_name::<Image>(IMAGE, owner, name)?.is_some() {
        return Err(Ec2Error::client(
            "InvalidAMIName.Duplicate",
            format!("AMI name {name} is already in use by an AMI owned by you"),
        ));
    }
    Ok(())
}

/// RegisterImage's `Architecture` (default x86_64).
fn architecture(p: &Params) -> Result<&str, Ec2Error> {
    let arch = p.get("Architecture").unwrap_or(DEFAULT_ARCHITECTURE);
    if !["x86_64", "i386", "arm64"].contains(&arch) {
        return Err(Ec2Error::invalid("Architecture", arch, "Use x86_64."));
    }
    Ok(arch)
}

/// The snapshot RegisterImage's block-device mapping puts at the root device
/// (`RootDeviceName`, which must be ours), if any.
fn root_snapshot(p: &Params) -> Result<Option<String>, Ec2Error> {
    let root = p.get("RootDeviceName").unwrap_or(ROOT_DEVICE_NAME);
    if root != ROOT_DEVICE_NAME {
        return Err(Ec2Error::invalid(
            "RootDeviceName",
            root,
            &format!("Instances here boot from {ROOT_DEVICE_NAME}."),
        ));
    }
    for n in 1.. {
        let Some(device) = p.get(&format!("BlockDeviceMapping.{n}.DeviceName")) else {
            return Ok(None);
        };
        if device == root {
            let key = format!("BlockDeviceMapping.{n}.Ebs.SnapshotId");
            return Ok(Some(p.req(&key)?.to_string()));
        }
    }
    Ok(None)
}

/// RegisterImage of an EBS-backed image: its root is a copy of `snapshot` (one of the caller's,
/// completed) made for each instance; it boots the kernel (and ramdisk) it names.
fn register_ebs(ec2: &Ec2, c: &Call<'_>, name: &str, snapshot: &str) -> Result<String, Ec2Error> {
    let owner = &c.user.name;
    let tag_set = tags::specified_for(c.p, ResourceType::Image)?;
    let id = ec2.store.cloud(|tx| {
        name_free(tx, owner, name)?;
        let snap = super::volumes::completed_snapshot(tx, snapshot, owner)?;
        let kernel_id = linked(tx, c.p.get("KernelId"), owner, ImageKind::Kernel)?;
        let ramdisk_id = linked(tx, c.p.get("RamdiskId"), owner, ImageKind::Ramdisk)?;
        if kernel_id.is_none() {
            return Err(Ec2Error::combination(
                "An EBS-backed image here needs a KernelId: instances boot its kernel and ramdisk with the root volume as /dev/vda.",
            ));
        }
        let img = Image {
            id: new_id("emi", 8),
            owner: owner.clone(),
            name: name.to_string(),
            description: c.p.get("Description").map(str::to_string),
            kind: ImageKind::Machine,
            bucket: String::new(),
            key: String::new(),
            size: snap.volume_size << 30,
            sha256: String::new(),
            architecture: architecture(c.p)?.to_string(),
            kernel_id,
            ramdisk_id,
            public: false,
            launch_users: Vec::new(),
            created_ms: c.now,
            root_device: snapshot_root(ec2, &snap.id),
            root_snapshot: Some(snap.id),
            source_instance: None,
        };
        tx.put(IMAGE, &img.id, owner, Some(name), &img)?;
        tagging::attach(tx, owner, &img.id, ResourceType::Image, &tag_set)?;
        Ok(img.id)
    })?;
    tracing::info!(image = %id, snapshot, "registered an EBS-backed image");
    let mut x = xml::response(c.action, c.rid);
    x.field("imageId", id);
    Ok(x.finish())
}

fn keep(
    img: &Image,
    state: &ImageState,
    user: &str,
    p: &Params,
    filters: &[super::params::Filter],
    tags: &TagSet,
) -> bool {
    let owners = p.list("Owner");
    let exec = p.list("ExecutableBy");
    // Owners and users are named by account id, as on AWS.
    let owner_ok = owners.is_empty()
        || owners
            .iter()
            .any(|o| (o == "self" && img.owner == user) || *o == account_id(&img.owner));
    let exec_ok = exec.is_empty()
        || exec.iter().any(|e| match e.as_str() {
            "all" => img.public,
            "self" => img.launchable_by(user),
            u => img.public || img.launch_users.iter().any(|x| account_id(x) == u),
        });
    owner_ok
        && exec_ok
        && filters.iter().all(|f| match f.name.as_str() {
            "image-id" => filter_matches(f, &img.id),
            "name" => filter_matches(f, &img.name),
            "image-type" => filter_matches(f, img.kind.as_str()),
            "state" => filter_matches(f, state.name()),
            "owner-id" => filter_matches(f, &account_id(&img.owner)),
            "is-public" => filter_matches(f, if img.public { "true" } else { "false" }),
            "architecture" => filter_matches(f, &img.architecture),
            "kernel-id" => filter_matches(f, img.kernel_id.as_deref().unwrap_or("")),
            "ramdisk-id" => filter_matches(f, img.ramdisk_id.as_deref().unwrap_or("")),
            _ => tags::tag_filter(f, tags).unwrap_or(false),
        })
}

pub fn describe(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let ids = c.p.list("ImageId");
    let filters = c.p.filters()?;
    let user = &c.user.name;
    let (images, tag_index) = ec2.store.cloud(|tx| {
        for id in &ids {
            visible(tx, id, user)?;
        }
        // The caller's own tags: those on shared images' owners' side are theirs.
        let tag_index = tagging::index(tx, user, ResourceType::Image)?;
        Ok::<_, Ec2Error>((imaging::launchable(tx, user)?, tag_index))
    })?;
    let shown: Vec<(&Image, &ImageState)> = (images.iter())
        .filter(|(i, _)| ids.is_empty() || ids.contains(&i.id))
        .map(|(i, s)| (i, s))
        .filter(|(i, s)| keep(i, s, user, c.p, &filters, tag_index.of(&i.id)))
        .collect();
    let mut x = xml::response(c.action, c.rid);
    x.set("imagesSet", &shown, |x, (i, state)| {
        let location = match &i.root_snapshot {
            Some(_) => format!("{}/{}", account_id(&i.owner), i.name),
            None => format!("{}/{}", i.bucket, i.key),
        };
        x.field("imageId", &i.id)
            .field("imageLocation", location)
            .field("imageState", state.name())
            .field("imageOwnerId", account_id(&i.owner))
            .field("creationDate", time(i.created_ms))
            .field("isPublic", i.public)
            .field("architecture", &i.architecture)
            .field("imageType", i.kind.as_str())
            .opt("kernelId", i.kernel_id.as_ref())
            .opt("ramdiskId", i.ramdisk_id.as_ref())
            .field("name", &i.name)
            .opt("description", i.description.as_ref())
            .field(
                "rootDeviceType",
                if i.root_snapshot.is_some() {
                    "ebs"
                } else {
                    "instance-store"
                },
            )
            .field("rootDeviceName", ROOT_DEVICE_NAME)
            .field("virtualizationType", "hvm")
            .opt("sourceInstanceId", i.source_instance.as_ref());
        if let Some(r) = state.reason() {
            x.open("stateReason")
                .field("code", &r.code)
                .field("message", &r.message)
                .close("stateReason");
        }
        let roots: Vec<&String> = i.root_snapshot.iter().collect();
        x.set("blockDeviceMapping", &roots, |x, snap| {
            x.field("deviceName", ROOT_DEVICE_NAME);
            x.open("ebs")
                .field("snapshotId", snap)
                .field("volumeSize", i.size >> 30)
                .field("deleteOnTermination", true)
                .field("volumeType", "standard")
                .close("ebs");
        });
        tags::render(x, tag_index.of(&i.id));
    });
    Ok(x.finish())
}

fn owned(tx: &CloudTx<'_>, id: &str, user: &str) -> Result<Image, Ec2Error> {
    let img = visible(tx, id, user)?;
    if img.owner != user {
        return Err(Ec2Error::new(
            403,
            "AuthFailure",
            format!("Not authorized for image:{id}"),
        ));
    }
    Ok(img)
}

pub fn deregister(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let id = c.p.req("ImageId")?;
    ec2.store.cloud(|tx| {
        let img = owned(tx, id, &c.user.name)?;
        tx.delete(IMAGE, &img.id)?;
        tagging::forget(tx, &img.id)?;
        Ok::<_, Ec2Error>(())
    })?;
    Ok(xml::ok(c.action, c.rid))
}

pub fn describe_attribute(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let id = c.p.req("ImageId")?;
    let attr = c.p.req("Attribute")?;
    let img = ec2.store.cloud(|tx| owned(tx, id, &c.user.name))?;
    let mut x = xml::response(c.action, c.rid);
    x.field("imageId", &img.id);
    match attr {
        "launchPermission" => {
            let mut perms: Vec<(&str, String)> = img
                .launch_users
                .iter()
                .map(|u| ("userId", account_id(u)))
                .collect();
            if img.public {
                perms.insert(0, ("group", "all".into()));
            }
            x.set("launchPermission", &perms, |x, (k, v)| {
                x.field(k, v);
            });
        }
        "description" => {
            x.open("description")
                .opt("value", img.description.as_ref())
                .close("description");
        }
        "kernel" => {
            x.open("kernel")
                .opt("value", img.kernel_id.as_ref())
                .close("kernel");
        }
        "ramdisk" => {
            x.open("ramdisk")
                .opt("value", img.ramdisk_id.as_ref())
                .close("ramdisk");
        }
        other => {
            return Err(Ec2Error::invalid(
                "Attribute",
                other,
                "Use launchPermission, description, kernel or ramdisk.",
            ))
        }
    }
    Ok(x.finish())
}

/// The name of the user whose account id `account` is (launch permissions name accounts).
fn user_of_account(ec2: &Ec2, account: &str) -> Result<String, Ec2Error> {
    let found = ec2.store.user_by_account(account)?;
    found.map(|u| u.name).ok_or_else(|| {
        Ec2Error::client(
            "InvalidAMIAttributeItemValue",
            format!("Invalid attribute item value \"{account}\" for userId item type."),
        )
    })
}

/// (add?, group `all`?, user) triples from both the old and the structured parameter forms.
fn permission_changes(p: &Params) -> Result<Vec<(bool, Option<String>)>, Ec2Error> {
    let mut out = Vec::new();
    for (add, prefix) in [
        (true, "LaunchPermission.Add"),
        (false, "LaunchPermission.Remove"),
    ] {
        for s in p.structs(prefix) {
            match (s.get("Group"), s.get("UserId")) {
                (Some("all"), _) => out.push((add, None)),
                (Some(g), _) => {
                    return Err(Ec2Error::invalid("Group", g, "Only the group all exists."))
                }
                (None, Some(u)) => out.push((add, Some(u.to_string()))),
                (None, None) => return Err(Ec2Error::missing("LaunchPermission.UserId")),
            }
        }
    }
    if let Some(op) = p.get("OperationType") {
        let add = match op {
            "add" => true,
            "remove" => false,
            other => {
                return Err(Ec2Error::invalid(
                    "OperationType",
                    other,
                    "Use add or remove.",
                ))
            }
        };
        for g in p.list("UserGroup") {
            if g != "all" {
                return Err(Ec2Error::invalid(
                    "UserGroup",
                    &g,
                    "Only the group all exists.",
                ));
            }
            out.push((add, None));
        }
        out.extend(p.list("UserId").into_iter().map(|u| (add, Some(u))));
    }
    Ok(out)
}

pub fn modify_attribute(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let id = c.p.req("ImageId")?;
    let changes = permission_changes(c.p)?
        .into_iter()
        .map(|(add, account)| match account {
            Some(a) => Ok((add, Some(user_of_account(ec2, &a)?))),
            None => Ok((add, None)),
        })
        .collect::<Result<Vec<_>, Ec2Error>>()?;
    let description = c.p.get("Description.Value");
    if changes.is_empty() && description.is_none() {
        return Err(Ec2Error::missing("LaunchPermission"));
    }
    ec2.store.cloud(|tx| {
        let mut img = owned(tx, id, &c.user.name)?;
        let state = imaging::state_of(tx, &img)?;
        if state == ImageState::Pending {
            return Err(Ec2Error::client(
                "InvalidAMIID.Unavailable",
                format!(
                    "The AMI ID '{id}' is currently pending and may not be used for this operation"
                ),
            ));
        }
        for (add, user) in &changes {
            match (add, user) {
                (true, None) => img.public = true,
                (false, None) => img.public = false,
                (true, Some(u)) if !img.launch_users.contains(u) => {
                    img.launch_users.push(u.clone())
                }
                (true, Some(_)) => {}
                (false, Some(u)) => img.launch_users.retain(|x| x != u),
            }
        }
        if let Some(d) = description {
            img.description = Some(d.to_string());
        }
        tx.put(IMAGE, &img.id, &img.owner, Some(&img.name), &img)?;
        Ok::<_, Ec2Error>(())
    })?;
    Ok(xml::ok(c.action, c.rid))
}

#[cfg(test)]
#[path = "images_tests.rs"]
mod tests;
