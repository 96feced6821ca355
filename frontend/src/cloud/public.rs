//! Public addresses from the `[ec2] public_ips` pool, as Eucalyptus gave them: every instance
//! of a MANAGED network gets a dynamic one at launch; an elastic IP (an `Address` record a user
//! allocated) associated with an instance replaces it, and the instance gets a dynamic one again
//! when the elastic IP leaves it. A pool address is free when no one allocated it and no live
//! instance holds it; the gateway NATs each instance's public address to its private one.

use super::model::{Address, Instance, State, ADDRESS, INSTANCE};
use crate::store::{CloudTx, StoreError};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Pool addresses neither allocated nor held by a live instance, lowest first.
pub fn free(tx: &CloudTx<'_>, pool: &[Ipv4Addr]) -> Result<Vec<Ipv4Addr>, StoreError> {
    let mut taken: BTreeSet<String> = (tx.list::<Address>(ADDRESS, None)?.into_iter())
        .map(|a| a.public_ip)
        .collect();
    taken.extend(
        (tx.list::<Instance>(INSTANCE, None)?.into_iter())
            .filter(|i| i.state != State::Terminated)
            .filter_map(|i| i.public_ip),
    );
    Ok(pool
        .iter()
        .filter(|ip| !taken.contains(&ip.to_string()))
        .copied()
        .collect())
}

/// A public address in use: allocated as an elastic IP (then `allocation_id` is set, and
/// `instance_id` when it is associated), or a live instance's dynamic one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub ip: String,
    pub owner: String,
    pub allocation_id: Option<String>,
    pub instance_id: Option<String>,
}

/// Every public address in use, lowest first: the elastic IPs, then the dynamic addresses of
/// live instances, as [`free`] counts them taken.
pub fn held(tx: &CloudTx<'_>) -> Result<Vec<Held>, StoreError> {
    let mut out: Vec<Held> = (tx.list::<Address>(ADDRESS, None)?.into_iter())
        .map(|a| Held {
            ip: a.public_ip,
            owner: a.owner,
            allocation_id: Some(a.allocation_id),
            instance_id: a.instance_id,
        })
        .collect();
    for i in tx.list::<Instance>(INSTANCE, None)? {
        match i.public_ip {
            Some(ip) if i.state != State::Terminated && !out.iter().any(|h| h.ip == ip) => out
                .push(Held {
                    ip,
                    owner: i.owner,
                    allocation_id: None,
                    instance_id: Some(i.id),
                }),
            _ => {}
        }
    }
    out.sort_by_key(|h| (h.ip.parse::<Ipv4Addr>().ok(), h.ip.clone()));
    Ok(out)
}

/// Sets instance `i`'s public address (and its metadata's `public-ipv4`); the caller stores it.
pub fn set(i: &mut Instance, ip: Option<String>) {
    i.public_ip = ip;
    i.metadata.public_ipv4 = i.public_ip.clone();
}

/// Gives stored instance `id` a dynamic address from the pool after an elastic IP left it
/// (none when the pool is used up or the instance is gone or has no private address).
pub fn give_dynamic(tx: &CloudTx<'_>, pool: &[Ipv4Addr], id: &str) -> Result<(), StoreError> {
    let Some(mut i) = tx.get::<Instance>(INSTANCE, id)? else {
        return Ok(());
    };
    if i.state == State::Terminated || i.private_ip.is_empty() {
        set(&mut i, None);
    } else {
        // The elastic IP is still the instance's until this write: skip past it.
        let ip = free(tx, pool)?
            .into_iter()
            .map(|ip| ip.to_string())
            .find(|ip| Some(ip) != i.public_ip.as_ref());
        set(&mut i, ip);
    }
    tx.put(INSTANCE, &i.id, &i.owner, None, &i)
}
