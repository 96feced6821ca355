//! Instance calls after launch: DescribeInstances (filters, tag filters included,
//! MaxResults/NextToken), Terminate/Stop/Start/Reboot (the core's lifecycle transitions change
//! the goal the node reconciles towards; termination protection is honoured),
//! GetConsoleOutput and DescribeInstanceStatus. ModifyInstanceMetadataOptions is
//! `metadata_options`; Describe/ModifyInstanceAttribute are `instance_attributes`.

use super::params::{filter_matches, Filter};
use super::render;
use super::tags;
use super::xml::{self, time};
use super::{Call, Ec2, Ec2Error};
use crate::cloud::instance_attributes::{may_terminate, Related};
use crate::cloud::instances as lifecycle;
use crate::cloud::model::{well_formed, Instance, State, CONSOLE, INSTANCE};
use crate::cloud::nodes::{self, StartError};
use crate::cloud::tags::TagSet;
use crate::store::CloudTx;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// The caller's instance `id`.
pub fn owned(tx: &CloudTx<'_>, id: &str, user: &str) -> Result<Instance, Ec2Error> {
    if !well_formed(id, &["i"]) {
        return Err(Ec2Error::malformed("InvalidInstanceID", id));
    }
    tx.get::<Instance>(INSTANCE, id)?
        .filter(|i| i.owner == user)
        .ok_or_else(|| Ec2Error::not_found("InvalidInstanceID", id))
}

fn matches(i: &Instance, f: &Filter, tags: &TagSet) -> Result<bool, Ec2Error> {
    let opt = |v: &Option<String>| v.as_deref().is_some_and(|v| filter_matches(f, v));
    Ok(match f.name.as_str() {
        "instance-id" => filter_matches(f, &i.id),
        "instance-state-name" => filter_matches(f, i.state.name()),
        "instance-state-code" => filter_matches(f, &i.state.code().to_string()),
        "image-id" => filter_matches(f, &i.image_id),
        "availability-zone" => filter_matches(f, &i.zone),
        "instance-type" => filter_matches(f, &i.instance_type),
        "reservation-id" => filter_matches(f, &i.reservation_id),
        "private-ip-address" => filter_matches(f, &i.private_ip),
        "ip-address" => opt(&i.public_ip),
        "key-name" => opt(&i.key_name),
        "kernel-id" => opt(&i.kernel_id),
        "ramdisk-id" => opt(&i.ramdisk_id),
        "group-id" | "instance.group-id" => i.groups.iter().any(|(id, _)| filter_matches(f, id)),
        "group-name" | "instance.group-name" => i.groups.iter().any(|(_, n)| filter_matches(f, n)),
        "client-token" => opt(&i.client_token),
        other => match tags::tag_filter(f, tags) {
            Some(passes) => passes,
            None => {
                return Err(Ec2Error::invalid(
                    "Filter.Name",
                    other,
                    "The filter is not supported.",
                ))
            }
        },
    })
}

pub fn describe(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let ids = c.p.list("InstanceId");
    let filters = c.p.filters()?;
    let max = c.p.int("MaxResults")?;
    if let Some(m) = max {
        if !ids.is_empty() {
            return Err(Ec2Error::combination(
                "The parameter instancesSet cannot be used with the parameter maxResults",
            ));
        }
        if !(5..=1000).contains(&m) {
            return Err(Ec2Error::invalid(
                "MaxResults",
                &m.to_string(),
                "MaxResults must be 5..1000.",
            ));
        }
    }
    let after = match c.p.get("NextToken").filter(|t| !t.is_empty()) {
        Some(t) => Some(
            hex::decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|id| well_formed(id, &["i"]))
                .ok_or_else(|| Ec2Error::invalid("NextToken", t, "The token is not valid."))?,
        ),
        None => None,
    };
    let (all, related) = callers_instances(ec2, c, &ids)?;
    let mut shown = Vec::new();
    for i in &all {
        if !ids.is_empty() && !ids.contains(&i.id) {
            continue;
        }
        if after.as_ref().is_some_and(|a| i.id <= *a) {
            continue;
        }
        let mut keep = true;
        for f in &filters {
            keep &= matches(i, f, related.tags.of(&i.id))?;
        }
        if keep {
            shown.push(i);
        }
    }
    let mut next = None;
    if let Some(m) = max {
        if shown.len() > m as usize {
            shown.truncate(m as usize);
            next = shown.last().map(|i| hex::encode(&i.id));
        }
    }
    let mut x = xml::response(c.action, c.rid);
    render::reservations(&mut x, &shown, &related);
    x.opt("nextToken", next);
    Ok(x.finish())
}

/// Applies `change` to each named instance; answers with the state changes.
fn change_each(
    ec2: &Ec2,
    c: &Call<'_>,
    change: impl Fn(&CloudTx<'_>, &mut Instance, i64) -> Result<(), Ec2Error>,
) -> Result<String, Ec2Error> {
    let ids = c.p.list("InstanceId");
    if ids.is_empty() {
        return Err(Ec2Error::missing("InstanceId"));
    }
    let changes = ec2.store.cloud(|tx| {
        let mut out = Vec::new();
        for id in &ids {
            let mut i = owned(tx, id, &c.user.name)?;
            let before = i.state;
            change(tx, &mut i, c.now)?;
            tx.put(INSTANCE, &i.id, &i.owner, None, &i)?;
            out.push((i.id.clone(), before, i.state));
        }
        Ok::<_, Ec2Error>(out)
    })?;
    ec2.changes.bump();
    let mut x = xml::response(c.action, c.rid);
    render::state_changes(&mut x, &changes);
    Ok(x.finish())
}

/// `IncorrectInstanceState`: `i` cannot be `what` (started, rebooted, ...) in its state.
pub fn incorrect(i: &Instance, what: &str) -> Ec2Error {
    Ec2Error::client(
        "IncorrectInstanceState",
        format!(
            "The instance '{}' is not in a state from which it can be {what}.",
            i.id
        ),
    )
}

/// Terminates the instances named; one with termination protection fails the whole call, and
/// none is terminated (`OperationNotPermitted`, as AWS).
pub fn terminate(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    change_each(ec2, c, |_, i, now| {
        may_terminate(i).map_err(|e| Ec2Error::client("OperationNotPermitted", e.to_string()))?;
        lifecycle::terminate(i, now);
        Ok(())
    })
}

/// StopInstances: only EBS-backed instances stop (their root volume keeps the disk); AWS
/// refuses instance-store ones, whose root disk lives only as long as the VMM.
pub fn stop(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    change_each(ec2, c, |_, i, now| {
        if i.root_volume.is_none() {
            return Err(not_ebs_backed(i));
        }
        lifecycle::stop(i, now).map_err(|lifecycle::NotNow| incorrect(i, "stopped"))
    })
}

fn not_ebs_backed(i: &Instance) -> Ec2Error {
    Ec2Error::client(
        "UnsupportedOperation",
        format!(
            "The instance '{}' does not have an 'ebs' root device type and cannot be stopped.",
            i.id
        ),
    )
}

pub fn start(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    change_each(ec2, c, |tx, i, now| match nodes::start_placed(tx, i, now) {
        Ok(()) => Ok(()),
        Err(StartError::NotNow) => Err(incorrect(i, "started")),
        Err(StartError::NoRoom(why)) => Err(Ec2Error::new(
            500,
            "InsufficientInstanceCapacity",
            format!(
                "Insufficient capacity to start {} ({}): {why}",
                i.id, i.instance_type
            ),
        )),
        Err(StartError::Store(e)) => Err(e.into()),
    })
}

pub fn reboot(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    change_each(ec2, c, |_, i, _| match lifecycle::reboot(i) {
        Ok(()) => Ok(()),
        Err(lifecycle::NotNow) => Err(incorrect(i, "rebooted")),
    })?;
    Ok(xml::ok(c.action, c.rid))
}

/// `user`'s instance `id` and its console output so far (when its node sent any: the time
/// of the last report and the text), as GetConsoleOutput reads them.
pub fn console_of(
    ec2: &Ec2,
    user: &str,
    id: &str,
) -> Result<(Instance, Option<(i64, String)>), Ec2Error> {
    ec2.store.cloud(|tx| {
        let inst = owned(tx, id, user)?;
        let console: Option<(i64, String)> = tx.get(CONSOLE, &inst.id)?;
        Ok::<_, Ec2Error>((inst, console))
    })
}

pub fn console_output(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let id = c.p.req("InstanceId")?;
    let (inst, console) = console_of(ec2, &c.user.name, id)?;
    let mut x = xml::response(c.action, c.rid);
    x.field("instanceId", &inst.id);
    match console {
        Some((ms, text)) => {
            x.field("timestamp", time(ms))
                .field("output", B64.encode(text));
        }
        None => {
            x.field("timestamp", time(c.now));
        }
    }
    Ok(x.finish())
}

/// Every instance of the caller, once each id asked for is known to be theirs, with their
/// tags and attached volumes.
fn callers_instances(
    ec2: &Ec2,
    c: &Call<'_>,
    ids: &[String],
) -> Result<(Vec<Instance>, Related), Ec2Error> {
    ec2.store.cloud(|tx| {
        for id in ids {
            owned(tx, id, &c.user.name)?;
        }
        let all = tx.list::<Instance>(INSTANCE, Some(&c.user.name))?;
        Ok::<_, Ec2Error>((all, Related::load(tx, &c.user.name)?))
    })
}

pub fn describe_status(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let ids = c.p.list("InstanceId");
    let include_all = c.p.bool("IncludeAllInstances")?.unwrap_or(false);
    let filters = c.p.filters()?;
    let (all, related) = callers_instances(ec2, c, &ids)?;
    let mut shown = Vec::new();
    for i in &all {
        let wanted =
            (ids.is_empty() || ids.contains(&i.id)) && (include_all || i.state == State::Running);
        let mut keep = wanted;
        for f in &filters {
            keep = keep
                && match f.name.as_str() {
                    "availability-zone" => filter_matches(f, &i.zone),
                    "instance-state-name" => filter_matches(f, i.state.name()),
                    _ => matches(i, f, related.tags.of(&i.id))?,
                };
        }
        if keep {
            shown.push(i);
        }
    }
    let mut x = xml::response(c.action, c.rid);
    x.set("instanceStatusSet", &shown, |x, i| {
        x.field("instanceId", &i.id)
            .field("availabilityZone", &i.zone);
        render::state(x, "instanceState", i.state);
        let (system, instance) = lifecycle::status_checks(i, c.now);
        for why in [&system.reason, &instance.reason].into_iter().flatten() {
            tracing::info!(instance = %i.id, "status check failed: {why}");
        }
        for (part, check) in [("systemStatus", system), ("instanceStatus", instance)] {
            x.open(part).field("status", check.status);
            x.set("details", &[&check], |x, c| {
                x.field("name", "reachability")
                    .field("status", c.reachability)
                    .opt("impairedSince", c.impaired_since.map(time).as_ref());
            });
            x.close(part);
        }
    });
    Ok(x.finish())
}
