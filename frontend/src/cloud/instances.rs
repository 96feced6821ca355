//! Instance lifecycle on the cloud's side: the transitions a user asks for (terminate, start,
//! reboot change the goal the node reconciles towards), the instances placed on a node, and
//! what a terminated instance lets go of. The node-driven state machine is `reconcile`.

use super::model::{Address, Instance, State, Volume, ADDRESS, INSTANCE, VOLUME};
use crate::store::{CloudTx, StoreError};
use mallee_proto::Goal;

/// The instance is not in a state from which the transition can be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotNow;

/// Asks the node to terminate `i` (already terminated: nothing to do).
pub fn terminate(i: &mut Instance, now: i64) {
    if i.state != State::Terminated {
        i.goal = Goal::Terminated;
        i.set_state(State::ShuttingDown, now);
    }
}

/// Asks the node to start a stopped `i`; pending or running already: nothing to do.
pub fn start(i: &mut Instance, now: i64) -> Result<(), NotNow> {
    match i.state {
        State::Stopped => {
            i.goal = Goal::Running;
            i.set_state(State::Pending, now);
            Ok(())
        }
        State::Pending | State::Running => Ok(()),
        _ => Err(NotNow),
    }
}

/// Asks the node to reboot `i` (the node sees its reboot count rise).
pub fn reboot(i: &mut Instance) -> Result<(), NotNow> {
    match i.state {
        State::Running | State::Pending => {
            i.reboot_count += 1;
            Ok(())
        }
        _ => Err(NotNow),
    }
}

/// Every instance placed on `node`, terminated ones included.
pub fn instances_on(tx: &CloudTx<'_>, node: &str) -> Result<Vec<Instance>, StoreError> {
    Ok(tx
        .list::<Instance>(INSTANCE, None)?
        .into_iter()
        .filter(|i| i.node == node)
        .collect())
}

/// What a terminated instance lets go of: its elastic IP is disassociated, its volumes
/// detached (as EC2 does) and its group's network freed when it was the last one in it. The
/// caller stores `i`.
pub fn release_on_termination(tx: &CloudTx<'_>, i: &mut Instance) -> Result<(), StoreError> {
    if let Some(ip) = i.public_ip.take() {
        if let Some(mut a) = tx.get::<Address>(ADDRESS, &ip)? {
            a.instance_id = None;
            a.association_id = None;
            tx.put(ADDRESS, &a.public_ip, &a.owner, None, &a)?;
        }
        i.metadata.public_ipv4 = None;
    }
    for mut v in tx.list::<Volume>(VOLUME, Some(&i.owner))? {
        if v.attachment.as_ref().is_some_and(|a| a.instance_id == i.id) {
            v.attachment = None;
            v.state = "available".into();
            tx.put(VOLUME, &v.id, &v.owner, None, &v)?;
        }
    }
    super::networks::release(tx, i)?;
    Ok(())
}
