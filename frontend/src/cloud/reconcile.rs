//! How a node's report moves an instance through its states. Plain functions over records:
//! pending → running → shutting-down → terminated (and stopping → stopped), a failed launch
//! ending terminated with its reason, an instance its node lost by rebooting, the metadata
//! options its node says the instance's VMM serves, a SYSTEM instance's address as its node saw
//! the guest use it, and the desired state handed back to the node.

use super::model::{instance_type, Instance, Reason, ShutdownBehavior, State};
use crate::auth::time::format_iso8601_millis;
use mallee_proto::{Goal, InstanceReport, InstanceSpec, Observed, Segment};

/// Applies what the node saw (`None`: the node did not list the instance). Returns whether
/// the record changed.
pub fn apply(i: &mut Instance, seen: Option<&InstanceReport>, now: i64) -> bool {
    // What a report can change, to tell whether it did.
    let seen_by_report = |i: &Instance| {
        (
            i.state,
            i.goal,
            i.reason.clone(),
            i.address_taken,
            i.private_ip.clone(),
            i.metadata_options_served,
        )
    };
    let before = seen_by_report(i);
    let observed = seen.map(|s| s.state);
    match (i.goal, observed) {
        (_, _) if i.state == State::Terminated => {}
        (Goal::Running, Some(Observed::Failed)) => {
            let why = seen
                .and_then(|s| s.reason.clone())
                .unwrap_or_else(|| "unknown".into());
            i.goal = Goal::Terminated;
            i.reason = Some(Reason {
                code: "Server.InternalError".into(),
                message: format!(
                    "Server.InternalError: launch failed on node {}: {why}",
                    i.node
                ),
            });
            i.set_state(State::Terminated, now);
        }
        (Goal::Running, Some(Observed::Running)) => i.set_state(State::Running, now),
        (Goal::Running, Some(Observed::ShutDown)) => guest_shut_down(i, now),
        // Not (or no longer) running on the node, e.g. after a node reboot: it will start it
        // again from the desired state; until it says so the instance is pending.
        (Goal::Running, _) => i.set_state(State::Pending, now),
        (
            Goal::Stopped,
            None
            | Some(Observed::Stopped | Observed::Terminated | Observed::Failed | Observed::ShutDown),
        ) => i.set_state(State::Stopped, now),
        (Goal::Stopped, Some(_)) => i.set_state(State::Stopping, now),
        (
            Goal::Terminated,
            None | Some(Observed::Terminated | Observed::Failed | Observed::ShutDown),
        ) => {
            // A reboot notice is history once the instance is terminated on purpose.
            if i.reason.as_ref().is_none_or(|r| r.code == NODE_REBOOTED) {
                i.reason = Some(Reason {
                    code: "Client.UserInitiatedShutdown".into(),
                    message: "Client.UserInitiatedShutdown: User initiated shutdown".into(),
                });
            }
            i.set_state(State::Terminated, now)
        }
        (Goal::Terminated, Some(_)) => i.set_state(State::ShuttingDown, now),
    }
    let running = seen.filter(|s| i.state == State::Running && s.state == Observed::Running);
    i.address_taken = running.is_some_and(|s| s.address_taken);
    // SYSTEM: the site's DHCP server chose the address; it is known once the guest used it.
    let site_chosen = (i.network.as_ref()).is_some_and(|n| n.segment == Segment::System);
    if let (true, Some(address)) = (site_chosen, running.and_then(|s| s.address)) {
        i.private_ip = address.to_string();
    }
    // Only what the node says its VMM serves now counts; nothing runs, nothing is served.
    i.metadata_options_served = running.and_then(|s| s.metadata_options);
    seen_by_report(i) != before
}

/// The guest powered itself off: as EC2 does, an EBS-backed instance whose shutdown behaviour
/// is `stop` (the default) is stopped, any other terminated (an instance-store root cannot
/// outlive its instance), with the reason EC2 gives.
fn guest_shut_down(i: &mut Instance, now: i64) {
    i.reason = Some(Reason {
        code: INSTANCE_INITIATED.into(),
        message: format!("{INSTANCE_INITIATED}: Instance initiated shutdown"),
    });
    if i.shutdown.instance_initiated == ShutdownBehavior::Stop && i.root_volume.is_some() {
        i.goal = Goal::Stopped;
        i.set_state(State::Stopped, now);
    } else {
        i.goal = Goal::Terminated;
        i.set_state(State::Terminated, now);
    }
}

/// `stateReason` code of an instance whose guest powered itself off.
pub const INSTANCE_INITIATED: &str = "Client.InstanceInitiatedShutdown";

/// `stateReason` code of an instance whose node rebooted under it.
pub const NODE_REBOOTED: &str = "Server.NodeRebooted";

/// The node of `i` came back from a reboot at `at_ms` (a new boot id): whatever ran there is
/// gone, instance-store disk contents included (EBS volumes are the storage controller's and
/// stay: an EBS-backed instance boots from its root volume again). An instance meant to run
/// gets the reason and goes back to
/// pending until the node, reading its desired state, starts it again; the reason stays
/// visible after that. Instances on their way to stopped or terminated need nothing: the node
/// no longer lists them, so its next report finishes them. Returns whether `i` changed.
pub fn node_rebooted(i: &mut Instance, at_ms: i64) -> bool {
    if i.goal != Goal::Running || i.state == State::Terminated {
        return false;
    }
    let restarted = match &i.root_volume {
        Some(root) => format!("from its root volume {root} (its EBS volumes kept)"),
        None => "from its image (instance-store disk contents lost, EBS volumes kept)".into(),
    };
    i.reason = Some(Reason {
        code: NODE_REBOOTED.into(),
        message: format!(
            "{NODE_REBOOTED}: node {} rebooted at {}; the instance was restarted {restarted}",
            i.node,
            format_iso8601_millis(at_ms)
        ),
    });
    i.set_state(State::Pending, at_ms);
    // The node is back: whatever it said while silent no longer holds.
    i.node_down = false;
    true
}

/// What the node must do with `i`, or `None` once it is terminated.
pub fn spec(i: &Instance) -> Option<InstanceSpec> {
    if i.state == State::Terminated {
        return None;
    }
    Some(InstanceSpec {
        instance_id: i.id.clone(),
        goal: i.goal,
        reboot_count: i.reboot_count,
        instance_type: i.instance_type.clone(),
        vcpus: i.vcpus,
        memory_mib: i.memory_mib,
        image: i.image.clone(),
        kernel: i.kernel.clone(),
        ramdisk: i.ramdisk.clone(),
        user_data: i.user_data.clone(),
        mac: i.mac,
        metadata: i.metadata.clone(),
        metadata_options: i.metadata_options,
        ephemeral_gib: instance_type(&i.instance_type).map_or(0, |t| t.disk_gib),
        network: i.network.clone(),
        // Filled in by `nodes::desired`, from the volume records.
        volumes: Vec::new(),
        root_volume: None,
        root_device: i.root_device,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn instance() -> Instance {
        let image = mallee_proto::ImageRef {
            image_id: "emi-00000001".into(),
            bucket: "b".into(),
            key: "k".into(),
            size: 1,
            sha256: "00".into(),
        };
        Instance {
            id: "i-00000001".into(),
            owner: "u".into(),
            reservation_id: "r-00000001".into(),
            image_id: image.image_id.clone(),
            kernel_id: None,
            ramdisk_id: None,
            instance_type: "m1.small".into(),
            vcpus: 1,
            memory_mib: 256,
            key_name: None,
            user_data: None,
            groups: vec![],
            zone: "z".into(),
            node: "n1".into(),
            private_ip: "172.31.0.10".into(),
            public_ip: None,
            mac: "d0:0d:00:00:00:01".parse().unwrap(),
            launch_index: 0,
            client_token: None,
            state: State::Pending,
            goal: Goal::Running,
            reboot_count: 0,
            launch_ms: 0,
            state_ms: 0,
            reason: None,
            node_down: false,
            image,
            kernel: None,
            ramdisk: None,
            metadata: Default::default(),
            network: None,
            address_taken: false,
            metadata_options: Default::default(),
            metadata_options_served: None,
            shutdown: Default::default(),
            root_volume: None,
            image_hold: None,
            root_device: None,
        }
    }

    /// What a node says of [`instance`]: `state`, with `reason`.
    pub fn seen(state: Observed, reason: Option<&str>) -> InstanceReport {
        InstanceReport {
            instance_id: "i-00000001".into(),
            state,
            reason: reason.map(str::to_string),
            reboot_count: 0,
            address_taken: false,
            address: None,
            metadata_options: None,
            volumes: Vec::new(),
        }
    }

    /// Volume `id` of user `u`, 1 GiB, attached to [`instance`] at `device`.
    pub fn attached_volume(id: &str, device: &str) -> crate::cloud::model::Volume {
        crate::cloud::model::Volume {
            id: id.into(),
            owner: "u".into(),
            size_gib: 1,
            zone: "z".into(),
            snapshot_id: None,
            state: "in-use".into(),
            created_ms: 0,
            attachment: Some(crate::cloud::model::Attachment {
                instance_id: "i-00000001".into(),
                device: device.into(),
                ..Default::default()
            }),
            dirty_base: None,
        }
    }

    #[test]
    fn the_guest_address_counts_only_while_the_node_says_it_runs() {
        let mut i = instance();
        let mut running = seen(Observed::Running, None);
        running.address_taken = true;
        assert!(apply(&mut i, Some(&running), 5));
        assert!((i.state == State::Running) && i.address_taken);
        assert!(!apply(&mut i, Some(&running), 6), "nothing new");
        // The node lost it (a reboot): back to pending, and the address must be taken again.
        assert!(apply(&mut i, None, 7));
        assert!(i.state == State::Pending && !i.address_taken);
        assert!(apply(&mut i, Some(&seen(Observed::Running, None)), 8));
        assert!(i.state == State::Running && !i.address_taken);
    }

    #[test]
    fn metadata_options_are_applied_only_while_the_node_says_its_vmm_serves_them() {
        use mallee_proto::{HttpTokens, MetadataOptions};
        let mut i = instance();
        let mut running = seen(Observed::Running, None);
        assert!(apply(&mut i, Some(&running), 1));
        assert!(!i.metadata_options_applied(), "the node did not say");
        running.metadata_options = Some(MetadataOptions::default());
        assert!(apply(&mut i, Some(&running), 2));
        assert!(i.metadata_options_applied());
        // Asked for other options: pending until the node reports them.
        i.metadata_options.http_tokens = HttpTokens::Required;
        assert!(!i.metadata_options_applied());
        assert_eq!(spec(&i).unwrap().metadata_options, i.metadata_options);
        assert!(
            !apply(&mut i, Some(&running), 3),
            "the old options again: nothing new"
        );
        assert!(!i.metadata_options_applied());
        running.metadata_options = Some(i.metadata_options);
        assert!(apply(&mut i, Some(&running), 4));
        assert!(i.metadata_options_applied());
        // The node lost it: nothing serves them.
        assert!(apply(&mut i, None, 5));
        assert!(i.state == State::Pending && !i.metadata_options_applied());
        // A stale report of a VMM still running under a terminate: not applied either.
        i.goal = Goal::Terminated;
        apply(&mut i, Some(&running), 6);
        assert!(i.state == State::ShuttingDown && !i.metadata_options_applied());
    }

    #[test]
    fn an_old_record_without_metadata_options_reads_as_ec2s_defaults() {
        let mut v = serde_json::to_value(instance()).unwrap();
        let o = v.as_object_mut().unwrap();
        o.remove("metadata_options");
        o.remove("metadata_options_served");
        let i: Instance = serde_json::from_value(v).unwrap();
        assert_eq!(i.metadata_options, mallee_proto::MetadataOptions::default());
        assert_eq!(i.metadata_options_served, None);
    }

    #[test]
    fn pending_instance_runs_when_the_node_says_so_and_records_the_time() {
        let mut i = instance();
        assert!(!apply(&mut i, None, 5));
        assert!(apply(&mut i, Some(&seen(Observed::Running, None)), 7));
        assert_eq!((i.state, i.state_ms), (State::Running, 7));
    }

    #[test]
    fn running_instance_the_node_no_longer_lists_goes_back_to_pending() {
        let mut i = instance();
        apply(&mut i, Some(&seen(Observed::Running, None)), 1);
        assert!(apply(&mut i, None, 2));
        assert_eq!((i.state, i.goal), (State::Pending, Goal::Running));
        apply(&mut i, Some(&seen(Observed::Running, None)), 3);
        assert_eq!(i.state, State::Running);
    }

    #[test]
    fn failed_launch_terminates_with_the_nodes_reason() {
        let mut i = instance();
        apply(
            &mut i,
            Some(&seen(Observed::Failed, Some("sha256 mismatch"))),
            3,
        );
        assert_eq!(i.state, State::Terminated);
        let r = i.reason.unwrap();
        assert!(
            r.message.contains("sha256 mismatch") && r.message.contains("n1"),
            "{r:?}"
        );
    }

    /// A guest that powers itself off: EBS-backed with the default behaviour, stopped; told to
    /// terminate, or instance-store (whose root cannot outlive it), terminated; each with
    /// EC2's reason, and the node then drops it without the record moving again.
    #[test]
    fn a_guest_that_powers_itself_off_is_stopped_or_terminated_as_its_behaviour_says() {
        let shut = seen(Observed::ShutDown, Some("the guest powered itself off"));
        let cases = [
            (
                Some("vol-1"),
                ShutdownBehavior::Stop,
                State::Stopped,
                Goal::Stopped,
            ),
            (
                Some("vol-1"),
                ShutdownBehavior::Terminate,
                State::Terminated,
                Goal::Terminated,
            ),
            (
                None,
                ShutdownBehavior::Stop,
                State::Terminated,
                Goal::Terminated,
            ),
        ];
        for (root, behaviour, state, goal) in cases {
            let mut i = instance();
            i.root_volume = root.map(str::to_string);
            i.shutdown.instance_initiated = behaviour;
            apply(&mut i, Some(&seen(Observed::Running, None)), 1);
            assert!(apply(&mut i, Some(&shut), 2));
            assert_eq!((i.state, i.goal), (state, goal), "{root:?} {behaviour:?}");
            let r = i.reason.clone().unwrap();
            assert_eq!(r.code, INSTANCE_INITIATED);
            assert!(r.message.ends_with("Instance initiated shutdown"), "{r:?}");
            // The node forgets it (it no longer lists it): nothing changes.
            assert!(!apply(&mut i, None, 3), "{root:?} {behaviour:?}");
            assert!(!apply(&mut i, Some(&shut), 4));
            assert_eq!(
                (i.state, i.reason.unwrap().code),
                (state, INSTANCE_INITIATED.into())
            );
        }
    }

    #[test]
    fn terminate_goes_through_shutting_down_until_the_node_drops_it() {
        let mut i = instance();
        i.goal = Goal::Terminated;
        apply(&mut i, Some(&seen(Observed::Running, None)), 1);
        assert_eq!(i.state, State::ShuttingDown);
        assert!(spec(&i).is_some());
        apply(&mut i, None, 2);
        assert_eq!(i.state, State::Terminated);
        assert!(spec(&i).is_none());
        assert!(!apply(&mut i, Some(&seen(Observed::Running, None)), 3));
    }

    #[test]
    fn node_reboot_sends_a_running_instance_back_to_pending_with_a_reason_that_stays() {
        let mut i = instance();
        apply(&mut i, Some(&seen(Observed::Running, None)), 1);
        i.node_down = true;
        assert!(node_rebooted(&mut i, 1_764_201_600_000));
        assert!(!i.node_down, "the node is back");
        assert_eq!((i.state, i.goal), (State::Pending, Goal::Running));
        let r = i.reason.clone().unwrap();
        assert_eq!(r.code, NODE_REBOOTED);
        assert!(
            r.message
                .starts_with("Server.NodeRebooted: node n1 rebooted at 2025-11-27T00:00:00.000Z;"),
            "{r:?}"
        );
        assert!(r.message.contains("disk contents lost"), "{r:?}");
        let mut ebs = i.clone();
        ebs.state = State::Running;
        ebs.root_volume = Some("vol-00000001".into());
        assert!(node_rebooted(&mut ebs, 1_764_201_600_000));
        let m = ebs.reason.unwrap().message;
        assert!(
            m.contains("from its root volume vol-00000001") && !m.contains("lost"),
            "{m}"
        );
        apply(&mut i, Some(&seen(Observed::Running, None)), 3);
        assert_eq!(i.state, State::Running);
        assert_eq!(
            i.reason.as_ref().map(|r| r.code.as_str()),
            Some(NODE_REBOOTED)
        );
    }

    #[test]
    fn node_reboot_leaves_stopping_and_terminated_instances_alone() {
        let mut i = instance();
        i.goal = Goal::Stopped;
        i.state = State::Stopping;
        assert!(!node_rebooted(&mut i, 5));
        assert_eq!((i.state, i.reason.clone()), (State::Stopping, None));
        let mut t = instance();
        t.goal = Goal::Terminated;
        t.state = State::Terminated;
        assert!(!node_rebooted(&mut t, 5));
    }

    #[test]
    fn terminating_after_a_node_reboot_says_user_initiated() {
        let mut i = instance();
        node_rebooted(&mut i, 5);
        i.goal = Goal::Terminated;
        apply(&mut i, None, 6);
        assert_eq!(i.state, State::Terminated);
        assert_eq!(i.reason.unwrap().code, "Client.UserInitiatedShutdown");
    }

    #[test]
    fn stop_goal_passes_stopping_then_stopped() {
        let mut i = instance();
        i.goal = Goal::Stopped;
        apply(&mut i, Some(&seen(Observed::Running, None)), 1);
        assert_eq!(i.state, State::Stopping);
        apply(&mut i, Some(&seen(Observed::Stopped, None)), 2);
        assert_eq!(i.state, State::Stopped);
    }
}
