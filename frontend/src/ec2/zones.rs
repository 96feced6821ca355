//! DescribeAvailabilityZones (one zone per configured cluster; `verbose`, as Eucalyptus had,
//! adds one item per instance type whose message is `free / max  cpu  ram  disk`),
//! DescribeRegions and DescribeInstanceTypes.

use super::xml::{self, Xml};
use super::{Call, Ec2, Ec2Error};
use crate::cloud::model::INSTANCE_TYPES;
use crate::scheduler::{slots, Need, NodeLoad};

fn zone_item(x: &mut Xml, zone: &str, region: &str, state: &str, message: Option<&str>) {
    x.open("item")
        .field("zoneName", zone)
        .field("zoneState", state)
        .field("regionName", region);
    x.open("messageSet");
    if let Some(m) = message {
        x.open("item").field("message", m).close("item");
    }
    x.close("messageSet").close("item");
}

/// Per instance type: (name, `free / max  cpu  ram  disk`) over the zone's up nodes.
pub fn type_capacity(loads: &[NodeLoad], zone: &str) -> Vec<(&'static str, String)> {
    INSTANCE_TYPES
        .iter()
        .map(|t| {
            let need = Need {
                vcpus: t.vcpus,
                memory_mib: t.memory_mib,
            };
            let in_zone = loads.iter().filter(|n| n.zone == zone);
            let (free, max) = in_zone.fold((0, 0), |(f, m), n| {
                let empty = NodeLoad {
                    used_vcpus: 0,
                    used_mib: 0,
                    ..n.clone()
                };
                (f + slots(n, need), m + slots(&empty, need))
            });
            let line = format!(
                "{free:04} / {max:04}  {:>3}  {:>6}  {:>4}",
                t.vcpus, t.memory_mib, t.disk_gib
            );
            (t.name, line)
        })
        .collect()
}

pub fn describe_zones(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let names = c.p.list("ZoneName");
    let verbose = names.iter().any(|n| n == "verbose");
    let wanted: Vec<&String> = names.iter().filter(|n| *n != "verbose").collect();
    for n in &wanted {
        if !ec2.cfg.clusters.contains(n) {
            return Err(Ec2Error::invalid(
                "ZoneName",
                n,
                "No such availability zone.",
            ));
        }
    }
    let loads = if verbose {
        ec2.store.cloud(crate::cloud::nodes::loads)?
    } else {
        Vec::new()
    };
    let mut x = xml::response(c.action, c.rid);
    x.open("availabilityZoneInfo");
    for zone in ec2
        .cfg
        .clusters
        .iter()
        .filter(|z| wanted.is_empty() || wanted.contains(z))
    {
        zone_item(&mut x, zone, &ec2.region, "available", None);
        if verbose {
            zone_item(
                &mut x,
                "|- vm types",
                &ec2.region,
                "available",
                Some("free / max   cpu     ram  disk"),
            );
            for (name, line) in type_capacity(&loads, zone) {
                zone_item(
                    &mut x,
                    &format!("|- {name}"),
                    &ec2.region,
                    "available",
                    Some(&line),
                );
            }
        }
    }
    x.close("availabilityZoneInfo");
    Ok(x.finish())
}

pub fn describe_regions(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let mut x = xml::response(c.action, c.rid);
    x.set("regionInfo", &[ec2.region.as_str()], |x, r| {
        x.field("regionName", r)
            .field("regionEndpoint", format!("ec2.{r}.mallee.internal"));
    });
    Ok(x.finish())
}

pub fn describe_instance_types(_ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let names = c.p.list("InstanceType");
    for n in &names {
        if !INSTANCE_TYPES.iter().any(|t| t.name == n) {
            return Err(Ec2Error::client(
                "InvalidInstanceType",
                format!("The following supplied instance types do not exist: [{n}]"),
            ));
        }
    }
    let shown: Vec<_> = INSTANCE_TYPES
        .iter()
        .filter(|t| names.is_empty() || names.iter().any(|n| n == t.name))
        .collect();
    let mut x = xml::response(c.action, c.rid);
    x.set("instanceTypeSet", &shown, |x, t| {
        x.field("instanceType", t.name)
            .field("currentGeneration", false)
            .field("bareMetal", false);
        x.set("supportedRootDeviceTypes", &["instance-store"], |x, _| {
            x.text("instance-store");
        });
        x.open("vCpuInfo")
            .field("defaultVCpus", t.vcpus)
            .close("vCpuInfo");
        x.open("memoryInfo")
            .field("sizeInMiB", t.memory_mib)
            .close("memoryInfo");
        x.field("instanceStorageSupported", true);
        x.open("instanceStorageInfo")
            .field("totalSizeInGB", t.disk_gib)
            .close("instanceStorageInfo");
    });
    Ok(x.finish())
}
