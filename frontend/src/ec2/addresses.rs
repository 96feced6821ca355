//! Elastic IPs from the configured pool: Allocate, Associate (the instance's public address
//! and metadata follow; its dynamic address returns to the pool), Disassociate and Release
//! (the instance gets a dynamic address again), Describe. The pool's rules are
//! `cloud::public`; the gateway moves the traffic. Elastic IPs take tags by allocation id
//! (TagSpecifications, `tagSet`, tag filters; see `tags`), which go when they are released.

use super::instances::owned;
use super::params::filter_matches;
use super::tags;
use super::xml;
use super::{Call, Ec2, Ec2Error};
use crate::cloud::model::{new_id, Address, State, ADDRESS, INSTANCE};
use crate::cloud::public;
use crate::cloud::tags::{self as tagging, ResourceType};
use crate::store::CloudTx;
use std::net::Ipv4Addr;

fn find(tx: &CloudTx<'_>, c: &Call<'_>) -> Result<Address, Ec2Error> {
    let user = &c.user.name;
    if let Some(id) = c.p.get("AllocationId") {
        return tx
            .list::<Address>(ADDRESS, Some(user))?
            .into_iter()
            .find(|a| a.allocation_id == id)
            .ok_or_else(|| {
                Ec2Error::client(
                    "InvalidAllocationID.NotFound",
                    format!("The allocation ID '{id}' does not exist"),
                )
            });
    }
    if let Some(id) = c.p.get("AssociationId") {
        return tx
            .list::<Address>(ADDRESS, Some(user))?
            .into_iter()
            .find(|a| a.association_id.as_deref() == Some(id))
            .ok_or_else(|| {
                Ec2Error::client(
                    "InvalidAssociationID.NotFound",
                    format!("The association ID '{id}' does not exist"),
                )
            });
    }
    let ip = c.p.req("PublicIp")?;
    tx.get::<Address>(ADDRESS, ip)?
        .filter(|a| &a.owner == user)
        .ok_or_else(|| {
            Ec2Error::client(
                "InvalidAddress.NotFound",
                format!("Address '{ip}' not found."),
            )
        })
}

/// Takes the elastic IP off its instance, which gets a dynamic address again.
fn unlink(tx: &CloudTx<'_>, pool: &[Ipv4Addr], a: &mut Address) -> Result<(), Ec2Error> {
    if let Some(id) = a.instance_id.take() {
        public::give_dynamic(tx, pool, &id)?;
    }
    a.association_id = None;
    Ok(())
}

pub fn allocate(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let tag_set = tags::specified_for(c.p, ResourceType::ElasticIp)?;
    let a = ec2.store.cloud(|tx| {
        let free = (public::free(tx, &ec2.cfg.public_ips)?.first())
            .map(|ip| ip.to_string())
            .ok_or_else(|| {
                Ec2Error::client(
                    "AddressLimitExceeded",
                    "The address pool is exhausted (elastic IPs and running instances hold every address of [ec2] public_ips).",
                )
            })?;
        let a = Address {
            public_ip: free,
            allocation_id: new_id("eipalloc", 17),
            owner: c.user.name.clone(),
            instance_id: None,
            association_id: None,
        };
        tx.put(ADDRESS, &a.public_ip, &a.owner, None, &a)?;
        tagging::attach(tx, &a.owner, &a.allocation_id, ResourceType::ElasticIp, &tag_set)?;
        Ok::<_, Ec2Error>(a)
    })?;
    let mut x = xml::response(c.action, c.rid);
    x.field("publicIp", &a.public_ip)
        .field("domain", "standard")
        .field("allocationId", &a.allocation_id);
    Ok(x.finish())
}

pub fn associate(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let instance_id = c.p.req("InstanceId")?;
    let reassociate = c.p.bool("AllowReassociation")?.unwrap_or(false);
    let pool = &ec2.cfg.public_ips;
    let assoc = ec2.store.cloud(|tx| {
        let inst = owned(tx, instance_id, &c.user.name)?;
        if inst.state == State::Terminated {
            return Err(Ec2Error::client(
                "IncorrectInstanceState",
                format!("The instance '{instance_id}' is terminated."),
            ));
        }
        let mut a = find(tx, c)?;
        if a.instance_id.is_some() && a.instance_id.as_deref() != Some(instance_id) && !reassociate
        {
            return Err(Ec2Error::client(
                "Resource.AlreadyAssociated",
                format!("{} is already associated", a.public_ip),
            ));
        }
        unlink(tx, pool, &mut a)?;
        for mut other in tx.list::<Address>(ADDRESS, Some(&c.user.name))? {
            if other.instance_id.as_deref() == Some(instance_id) {
                other.instance_id = None;
                other.association_id = None;
                tx.put(ADDRESS, &other.public_ip, &other.owner, None, &other)?;
            }
        }
        a.instance_id = Some(instance_id.to_string());
        a.association_id = Some(new_id("eipassoc", 17));
        // Its dynamic address (if any) returns to the pool.
        let mut inst = owned(tx, instance_id, &c.user.name)?;
        public::set(&mut inst, Some(a.public_ip.clone()));
        tx.put(INSTANCE, &inst.id, &inst.owner, None, &inst)?;
        tx.put(ADDRESS, &a.public_ip, &a.owner, None, &a)?;
        Ok(a.association_id.clone().unwrap_or_default())
    })?;
    ec2.changes.bump();
    let mut x = xml::response(c.action, c.rid);
    x.field("associationId", assoc);
    Ok(x.finish())
}

pub fn disassociate(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    ec2.store.cloud(|tx| {
        let mut a = find(tx, c)?;
        unlink(tx, &ec2.cfg.public_ips, &mut a)?;
        tx.put(ADDRESS, &a.public_ip, &a.owner, None, &a)?;
        Ok::<_, Ec2Error>(())
    })?;
    ec2.changes.bump();
    Ok(xml::ok(c.action, c.rid))
}

pub fn release(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    ec2.store.cloud(|tx| {
        let mut a = find(tx, c)?;
        unlink(tx, &ec2.cfg.public_ips, &mut a)?;
        tx.delete(ADDRESS, &a.public_ip)?;
        tagging::forget(tx, &a.allocation_id)?;
        Ok::<_, Ec2Error>(())
    })?;
    ec2.changes.bump();
    Ok(xml::ok(c.action, c.rid))
}

pub fn describe(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let ips = c.p.list("PublicIp");
    let allocs = c.p.list("AllocationId");
    let filters = c.p.filters()?;
    let (all, tag_index) = ec2.store.cloud(|tx| {
        let all: Vec<Address> = tx.list(ADDRESS, Some(&c.user.name))?;
        let tag_index = tagging::index(tx, &c.user.name, ResourceType::ElasticIp)?;
        Ok::<_, Ec2Error>((all, tag_index))
    })?;
    for ip in &ips {
        if !all.iter().any(|a| &a.public_ip == ip) {
            return Err(Ec2Error::client(
                "InvalidAddress.NotFound",
                format!("Address '{ip}' not found."),
            ));
        }
    }
    for id in &allocs {
        if !all.iter().any(|a| &a.allocation_id == id) {
            return Err(Ec2Error::client(
                "InvalidAllocationID.NotFound",
                format!("The allocation ID '{id}' does not exist"),
            ));
        }
    }
    let shown: Vec<&Address> = all
        .iter()
        .filter(|a| ips.is_empty() || ips.contains(&a.public_ip))
        .filter(|a| allocs.is_empty() || allocs.contains(&a.allocation_id))
        .filter(|a| {
            filters.iter().all(|f| {
                let opt = |v: &Option<String>| v.as_deref().is_some_and(|v| filter_matches(f, v));
                match f.name.as_str() {
                    "public-ip" => filter_matches(f, &a.public_ip),
                    "allocation-id" => filter_matches(f, &a.allocation_id),
                    "instance-id" => opt(&a.instance_id),
                    "association-id" => opt(&a.association_id),
                    "domain" => filter_matches(f, "standard"),
                    _ => tags::tag_filter(f, tag_index.of(&a.allocation_id)).unwrap_or(false),
                }
            })
        })
        .collect();
    let mut x = xml::response(c.action, c.rid);
    x.set("addressesSet", &shown, |x, a| {
        x.field("publicIp", &a.public_ip)
            .field("allocationId", &a.allocation_id)
            .field("domain", "standard")
            .opt("instanceId", a.instance_id.as_ref())
            .opt("associationId", a.association_id.as_ref());
        tags::render(x, tag_index.of(&a.allocation_id));
    });
    Ok(x.finish())
}
