//! Reconciling: from the desired state the frontend sent and what the node holds, the actions
//! to take. A plain function, run on every desired state (level-triggered: running it twice
//! on the same input asks for nothing new once the first actions are under way). A running
//! VMM whose metadata (document, user data, options) is not the desired one gets the desired
//! one through its API, without a restart; a running VMM is given the volumes the desired state
//! attaches and relieved of those it no longer lists.

use super::volumes::Slots;
use mallee_proto::vmm::InstanceMetadata;
use mallee_proto::{Goal, InstanceSpec, Observed, VolumeAttachment};
use std::collections::BTreeMap;

/// What the node knows of one local instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub state: Observed,
    /// A stop is under way.
    pub stopping: bool,
    pub reboot_count: u32,
    /// What its running VMM's metadata service serves; `None` while no VMM runs.
    pub serving: Option<InstanceMetadata>,
    /// The volumes its running VMM holds or is being given or relieved of; none while no VMM
    /// runs.
    pub volumes: Slots,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Launch(Box<InstanceSpec>),
    /// Stop the VMM; the instance ends in the given state.
    Stop(String, Observed),
    /// Stop the VMM and start it again (RebootInstances).
    Reboot(String, u32),
    /// Drop the record and its files: the frontend no longer lists it.
    Forget(String),
    /// Have the running VMM serve this metadata (AssociateAddress changed `public-ipv4`,
    /// ModifyInstanceMetadataOptions the options).
    SetMetadata(String, Box<InstanceMetadata>),
    /// Give the running VMM this volume (AttachVolume).
    AttachVolume(String, VolumeAttachment),
    /// Have the running VMM flush this volume and let it go (DetachVolume).
    DetachVolume(String, String),
}

/// What the metadata service of `spec`'s instance must serve.
pub fn metadata(spec: &InstanceSpec) -> InstanceMetadata {
    InstanceMetadata {
        document: spec.metadata.clone(),
        user_data: spec.user_data.clone(),
        options: spec.metadata_options,
    }
}

fn live(l: &Local) -> bool {
    matches!(l.state, Observed::Pending | Observed::Running) && !l.stopping
}

/// The volume attaches and detaches that make a running VMM hold what `spec` lists.
fn volumes(spec: &InstanceSpec, l: &Local, out: &mut Vec<Action>) {
    let id = &spec.instance_id;
    for v in (spec.volumes.iter()).filter(|v| !l.volumes.contains_key(&v.volume_id)) {
        out.push(Action::AttachVolume(id.clone(), v.clone()));
    }
    for held in (l.volumes.keys()).filter(|h| !spec.volumes.iter().any(|v| v.volume_id == **h)) {
        out.push(Action::DetachVolume(id.clone(), held.clone()));
    }
}

/// The actions that move `local` towards `desired`.
pub fn plan(desired: &[InstanceSpec], local: &BTreeMap<String, Local>) -> Vec<Action> {
    let mut out = Vec::new();
    for spec in desired {
        let id = &spec.instance_id;
        let here = local.get(id);
        match (spec.goal, here) {
            (Goal::Running, None) => out.push(Action::Launch(Box::new(spec.clone()))),
            (Goal::Running, Some(l)) if l.state == Observed::Stopped && !l.stopping => {
                out.push(Action::Launch(Box::new(spec.clone())))
            }
            (Goal::Running, Some(l)) if live(l) && spec.reboot_count > l.reboot_count => {
                out.push(Action::Reboot(id.clone(), spec.reboot_count))
            }
            (Goal::Running, Some(l)) if live(l) => {
                let wanted = metadata(spec);
                if l.serving.as_ref().is_some_and(|m| *m != wanted) {
                    out.push(Action::SetMetadata(id.clone(), Box::new(wanted)));
                }
                if l.state == Observed::Running {
                    volumes(spec, l, &mut out);
                }
            }
            // The guest powered itself off and the frontend has decided: the node forgets it
            // (a later start launches it afresh).
            (Goal::Stopped | Goal::Terminated, Some(l)) if l.state == Observed::ShutDown => {
                out.push(Action::Forget(id.clone()))
            }
            (Goal::Stopped, Some(l)) if live(l) => {
                out.push(Action::Stop(id.clone(), Observed::Stopped))
            }
            (Goal::Terminated, Some(l)) if live(l) => {
                out.push(Action::Stop(id.clone(), Observed::Terminated))
            }
            _ => {}
        }
    }
    for (id, l) in local {
        if desired.iter().any(|s| &s.instance_id == id) {
            continue;
        }
        if live(l) {
            out.push(Action::Stop(id.clone(), Observed::Terminated));
        } else if !l.stopping {
            out.push(Action::Forget(id.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mallee_proto::{ImageRef, MetadataDocument};

    fn spec(id: &str, goal: Goal, reboot_count: u32) -> InstanceSpec {
        InstanceSpec {
            instance_id: id.into(),
            goal,
            reboot_count,
            instance_type: "m1.small".into(),
            vcpus: 1,
            memory_mib: 256,
            image: ImageRef {
                image_id: "emi-1".into(),
                bucket: "b".into(),
                key: "k".into(),
                size: 1,
                sha256: "0".repeat(64),
            },
            kernel: None,
            ramdisk: None,
            user_data: None,
            mac: "d0:0d:00:00:00:01".parse().unwrap(),
            metadata: MetadataDocument::default(),
            metadata_options: Default::default(),
            ephemeral_gib: 0,
            network: None,
            volumes: Vec::new(),
            root_volume: None,
            root_device: None,
        }
    }

    fn local(state: Observed, stopping: bool) -> Local {
        Local {
            state,
            stopping,
            reboot_count: 0,
            serving: None,
            volumes: Slots::new(),
        }
    }

    fn map(items: &[(&str, Local)]) -> BTreeMap<String, Local> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn new_instances_launch_once() {
        let d = [spec("i-1", Goal::Running, 0)];
        assert!(matches!(&plan(&d, &map(&[]))[..], [Action::Launch(s)] if s.instance_id == "i-1"));
        let pending = map(&[("i-1", local(Observed::Pending, false))]);
        assert_eq!(plan(&d, &pending), vec![]);
        let failed = map(&[("i-1", local(Observed::Failed, false))]);
        assert_eq!(
            plan(&d, &failed),
            vec![],
            "a failed launch is not retried by the node"
        );
    }

    #[test]
    fn terminate_and_stop_goals_stop_live_instances_once() {
        let d = [
            spec("i-1", Goal::Terminated, 0),
            spec("i-2", Goal::Stopped, 0),
        ];
        let running = map(&[
            ("i-1", local(Observed::Running, false)),
            ("i-2", local(Observed::Pending, false)),
        ]);
        assert_eq!(
            plan(&d, &running),
            vec![
                Action::Stop("i-1".into(), Observed::Terminated),
                Action::Stop("i-2".into(), Observed::Stopped)
            ]
        );
        let stopping = map(&[
            ("i-1", local(Observed::Running, true)),
            ("i-2", local(Observed::Running, true)),
        ]);
        assert_eq!(plan(&d, &stopping), vec![]);
        // Unknown here and terminated there: nothing to do (the report omits it).
        assert_eq!(plan(&d[..1], &map(&[])), vec![]);
    }

    #[test]
    fn instances_the_frontend_dropped_are_stopped_then_forgotten() {
        let l = map(&[
            ("i-1", local(Observed::Running, false)),
            ("i-2", local(Observed::Terminated, false)),
            ("i-3", local(Observed::Running, true)),
        ]);
        assert_eq!(
            plan(&[], &l),
            vec![
                Action::Stop("i-1".into(), Observed::Terminated),
                Action::Forget("i-2".into())
            ]
        );
    }

    /// A guest that powered itself off stays down while the frontend still says run (it has
    /// not heard yet: no relaunch), and is forgotten once it says stop or terminate, so a later
    /// start launches it afresh.
    #[test]
    fn a_guest_that_powered_itself_off_waits_for_the_frontend_then_is_forgotten() {
        let l = map(&[("i-1", local(Observed::ShutDown, false))]);
        assert_eq!(plan(&[spec("i-1", Goal::Running, 0)], &l), vec![]);
        for goal in [Goal::Stopped, Goal::Terminated] {
            assert_eq!(
                plan(&[spec("i-1", goal, 0)], &l),
                vec![Action::Forget("i-1".into())]
            );
        }
        let forgotten = map(&[]);
        assert!(matches!(
            &plan(&[spec("i-1", Goal::Running, 0)], &forgotten)[..],
            [Action::Launch(_)]
        ));
    }

    #[test]
    fn a_higher_reboot_count_reboots_and_a_stopped_instance_starts_again() {
        let d = [spec("i-1", Goal::Running, 2)];
        let l = map(&[("i-1", local(Observed::Running, false))]);
        assert_eq!(plan(&d, &l), vec![Action::Reboot("i-1".into(), 2)]);
        let l = map(&[("i-1", local(Observed::Stopped, false))]);
        assert!(matches!(&plan(&d, &l)[..], [Action::Launch(_)]));
    }

    #[test]
    fn a_running_vmm_serving_other_metadata_is_given_the_desired_one() {
        let mut d = spec("i-1", Goal::Running, 0);
        let mut running = local(Observed::Running, false);
        running.serving = Some(metadata(&d));
        assert_eq!(
            plan(&[d.clone()], &map(&[("i-1", running.clone())])),
            vec![]
        );
        d.metadata.public_ipv4 = Some("198.51.100.9".into());
        d.metadata_options.http_tokens = mallee_proto::HttpTokens::Required;
        assert_eq!(
            plan(&[d.clone()], &map(&[("i-1", running.clone())])),
            vec![Action::SetMetadata("i-1".into(), Box::new(metadata(&d)))]
        );
        // No VMM yet (still preparing) or one being stopped: nothing to tell.
        let preparing = local(Observed::Pending, false);
        assert_eq!(plan(&[d.clone()], &map(&[("i-1", preparing)])), vec![]);
        running.stopping = true;
        assert_eq!(plan(&[d], &map(&[("i-1", running)])), vec![]);
    }

    #[test]
    fn a_running_vmm_is_given_listed_volumes_and_relieved_of_others() {
        use crate::agent::volumes::{Held, Stage};
        let mut d = spec("i-1", Goal::Running, 0);
        let v = |id: &str| VolumeAttachment {
            volume_id: id.into(),
            device: "/dev/sdf".into(),
            shelf: 100,
            slot: 0,
        };
        d.volumes = vec![v("vol-a"), v("vol-b")];
        let mut running = local(Observed::Running, false);
        running.serving = Some(metadata(&d));
        let held = |slot| Held {
            slot,
            stage: Stage::Attached,
        };
        running.volumes.insert("vol-a".into(), held(0));
        running.volumes.insert("vol-c".into(), held(1));
        assert_eq!(
            plan(&[d.clone()], &map(&[("i-1", running.clone())])),
            vec![
                Action::AttachVolume("i-1".into(), v("vol-b")),
                Action::DetachVolume("i-1".into(), "vol-c".into()),
            ]
        );
        // Not running yet: the VMM is not there to take them.
        let preparing = local(Observed::Pending, false);
        assert_eq!(plan(&[d], &map(&[("i-1", preparing)])), vec![]);
    }
}
