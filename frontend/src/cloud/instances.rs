//! Instance lifecycle on the cloud's side: the transitions a user asks for (terminate, start,
//! reboot change the goal the node reconciles towards; new metadata options change what the
//! node has the instance's VMM serve), the instances placed on a node, and what a terminated
//! instance lets go of. The node-driven state machine is `reconcile`.

use super::model::{Address, Instance, State, Volume, ADDRESS, INSTANCE, VOLUME};
use crate::store::{CloudTx, StoreError};
use mallee_proto::{Goal, MetadataOptions};

/// How long a running guest has to take its address before its reachability check fails.
pub const REACHABILITY_PATIENCE_MS: i64 = 5 * 60 * 1000;

/// One status check's outcome (DescribeInstanceStatus): the status and its `reachability`
/// detail, EC2's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `ok`, `impaired`, `initializing` or `not-applicable`.
    pub status: &'static str,
    /// `passed`, `failed` or `initializing`.
    pub reachability: &'static str,
    /// Since when it has failed (ms).
    pub impaired_since: Option<i64>,
    /// Why it failed. EC2's model has no place for it (clients would reject it), so it is
    /// only logged.
    pub reason: Option<String>,
}

impl Check {
    fn new(status: &'static str, reachability: &'static str) -> Check {
        Check {
            status,
            reachability,
            impaired_since: None,
            reason: None,
        }
    }

    fn failed(since: i64, reason: String) -> Check {
        Check {
            impaired_since: Some(since),
            reason: Some(reason),
            ..Check::new("impaired", "failed")
        }
    }
}

/// The system check (its node carries it) and the instance check (its guest is on the network:
/// it took the address its VMM's DHCP answer gave; an instance without one passes once it
/// runs) of `i` at `now`.
pub fn status_checks(i: &Instance, now: i64) -> (Check, Check) {
    if i.state != State::Running {
        let c = Check::new("not-applicable", "initializing");
        return (c.clone(), c);
    }
    if i.node_down {
        let why = format!("node {} stopped reporting", i.node);
        let c = Check::failed(i.state_ms, why);
        return (c.clone(), c);
    }
    let system = Check::new("ok", "passed");
    // The address the guest should take: its VMM's answer, or (SYSTEM) the site's DHCP's.
    let address = (i.network.as_ref()).map(|n| match &n.address {
        Some(a) => format!("its address {}", a.address),
        None => "an address from the site's DHCP server".to_string(),
    });
    let instance = match address {
        None => Check::new("ok", "passed"),
        Some(_) if i.address_taken => Check::new("ok", "passed"),
        Some(what) if now - i.state_ms >= REACHABILITY_PATIENCE_MS => Check::failed(
            i.state_ms + REACHABILITY_PATIENCE_MS,
            format!(
                "the guest has not taken {what} in {} s of running: its image must configure its first NIC by DHCP",
                REACHABILITY_PATIENCE_MS / 1000
            ),
        ),
        Some(_) => Check::new("initializing", "initializing"),
    };
    (system, instance)
}

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

/// Asks the node to stop `i` (an EBS-backed instance: its root volume stays); stopping or
/// stopped already: nothing to do. One CreateImage holds stopped stays stopped once its root
/// volume is copied.
pub fn stop(i: &mut Instance, now: i64) -> Result<(), NotNow> {
    if let Some(hold) = &mut i.image_hold {
        hold.restart = false;
    }
    match i.state {
        State::Pending | State::Running => {
            i.goal = Goal::Stopped;
            i.set_state(State::Stopping, now);
            Ok(())
        }
        State::Stopping | State::Stopped => Ok(()),
        _ => Err(NotNow),
    }
}

/// Asks the node to start a stopped `i`; pending or running already: nothing to do. One
/// CreateImage holds stopped (see `images`) cannot start before its root volume is copied.
pub fn start(i: &mut Instance, now: i64) -> Result<(), NotNow> {
    match i.state {
        State::Stopped if i.image_hold.is_none() => {
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

/// Asks the node to serve `i`'s metadata with `options` from now on (a pending, running or
/// stopped instance; a stopped one takes them when it starts). Returns whether they changed.
pub fn set_metadata_options(i: &mut Instance, options: MetadataOptions) -> Result<bool, NotNow> {
    match i.state {
        State::Pending | State::Running | State::Stopping | State::Stopped => {
            let changed = i.metadata_options != options;
            i.metadata_options = options;
            Ok(changed)
        }
        State::ShuttingDown | State::Terminated => Err(NotNow),
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
/// detached (as EC2 does; those marked delete-on-termination are deleted, tags and all) and
/// its group's network freed when it was the last one in it. The caller stores `i`.
pub fn release_on_termination(tx: &CloudTx<'_>, i: &mut Instance) -> Result<(), StoreError> {
    if let Some(ip) = i.public_ip.take() {
        // An elastic IP stays allocated to its owner; a dynamic one just returns to the pool.
        if let Some(mut a) = tx.get::<Address>(ADDRESS, &ip)? {
            if a.instance_id.as_deref() == Some(&i.id) {
                a.instance_id = None;
                a.association_id = None;
                tx.put(ADDRESS, &a.public_ip, &a.owner, None, &a)?;
            }
        }
        i.metadata.public_ipv4 = None;
    }
    for mut v in tx.list::<Volume>(VOLUME, Some(&i.owner))? {
        let Some(a) = v.attachment.as_ref().filter(|a| a.instance_id == i.id) else {
            continue;
        };
        if a.delete_on_termination {
            tx.delete(VOLUME, &v.id)?;
            super::tags::forget(tx, &v.id)?;
            tracing::info!(volume = %v.id, instance = %i.id, "volume deleted with its terminated instance (delete on termination)");
        } else {
            v.attachment = None;
            v.state = "available".into();
            tx.put(VOLUME, &v.id, &v.owner, None, &v)?;
        }
    }
    super::networks::release(tx, i)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::reconcile::tests::instance;
    use mallee_proto::vmm::GuestAddress;
    use mallee_proto::{InstanceNetwork, Segment};

    fn addressed() -> Instance {
        let mut i = instance();
        i.state = State::Running;
        i.state_ms = 1_000;
        i.network = Some(InstanceNetwork {
            segment: Segment::Vlan(100),
            address: Some(GuestAddress {
                address: "172.31.0.2".parse().unwrap(),
                prefix_len: 27,
                gateway: None,
                dns: vec![],
                hostname: None,
            }),
        });
        i
    }

    #[test]
    fn metadata_options_change_on_live_or_stopped_instances_only() {
        let mut i = addressed();
        let required = MetadataOptions {
            http_tokens: mallee_proto::HttpTokens::Required,
            ..MetadataOptions::default()
        };
        assert_eq!(set_metadata_options(&mut i, required), Ok(true));
        assert_eq!(i.metadata_options, required);
        assert_eq!(
            set_metadata_options(&mut i, required),
            Ok(false),
            "no change"
        );
        i.state = State::Stopped;
        assert_eq!(
            set_metadata_options(&mut i, MetadataOptions::default()),
            Ok(true)
        );
        for gone in [State::ShuttingDown, State::Terminated] {
            i.state = gone;
            assert_eq!(set_metadata_options(&mut i, required), Err(NotNow));
            assert_eq!(i.metadata_options, MetadataOptions::default(), "untouched");
        }
    }

    #[test]
    fn reachability_passes_only_once_the_guest_took_its_address() {
        let mut i = addressed();
        let (system, inst) = status_checks(&i, 2_000);
        assert_eq!((system.status, system.reachability), ("ok", "passed"));
        assert_eq!(
            (inst.status, inst.reachability),
            ("initializing", "initializing")
        );
        i.address_taken = true;
        assert_eq!(status_checks(&i, 2_000).1.reachability, "passed");
    }

    #[test]
    fn reachability_fails_with_a_reason_when_the_guest_never_takes_it() {
        let i = addressed();
        let late = 1_000 + REACHABILITY_PATIENCE_MS;
        let (system, inst) = status_checks(&i, late);
        assert_eq!(system.reachability, "passed", "the node is fine");
        assert_eq!((inst.status, inst.reachability), ("impaired", "failed"));
        assert_eq!(inst.impaired_since, Some(late));
        assert!(inst
            .reason
            .unwrap()
            .contains("not taken its address 172.31.0.2"));
    }

    /// SYSTEM: no address of ours, but the guest must still take one (the site's): no pass
    /// until its node saw it use one, and the report's address becomes the instance's.
    #[test]
    fn a_system_guest_passes_once_seen_with_the_sites_address() {
        let mut i = addressed();
        i.private_ip = String::new();
        i.network = Some(InstanceNetwork {
            segment: Segment::System,
            address: None,
        });
        assert_eq!(status_checks(&i, 2_000).1.reachability, "initializing");
        let late = status_checks(&i, 1_000 + REACHABILITY_PATIENCE_MS).1;
        assert!(late.reason.unwrap().contains("the site's DHCP server"));
        let report = mallee_proto::InstanceReport {
            instance_id: i.id.clone(),
            state: mallee_proto::Observed::Running,
            reason: None,
            reboot_count: 0,
            address_taken: true,
            address: Some("10.77.0.201".parse().unwrap()),
            metadata_options: None,
            volumes: Vec::new(),
        };
        assert!(super::super::reconcile::apply(&mut i, Some(&report), 2_000));
        assert_eq!(i.private_ip, "10.77.0.201");
        assert_eq!(status_checks(&i, 2_000).1.reachability, "passed");
        // A MANAGED instance's address is the frontend's, whatever the report says.
        let mut managed = addressed();
        super::super::reconcile::apply(&mut managed, Some(&report), 2_000);
        assert_eq!(managed.private_ip, addressed().private_ip);
    }

    #[test]
    fn a_silent_node_fails_both_checks_and_other_states_are_not_applicable() {
        let mut i = addressed();
        i.node_down = true;
        let (system, inst) = status_checks(&i, 2_000);
        assert_eq!((system.status, inst.status), ("impaired", "impaired"));
        i.state = State::Pending;
        assert_eq!(status_checks(&i, 2_000).1.status, "not-applicable");
        let mut plain = instance();
        plain.state = State::Running;
        assert_eq!(
            status_checks(&plain, 0).1.reachability,
            "passed",
            "no network"
        );
    }
}
