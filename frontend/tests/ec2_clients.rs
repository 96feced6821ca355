//! The EC2 API driven by the AWS CLI and boto3 (every response checked against botocore's
//! model) with a test node speaking the node protocol over loopback, against the real
//! `mallee-frontend` binary: images, key pairs, groups, instances, addresses, volumes, bad
//! input, other users, capacity, kill -9 mid-flow, node silence, node reboot, DescribeNodes,
//! instance metadata options, key pairs as EC2 makes and fingerprints them, STS/IAM caller
//! identity with the EC2 owner ids that go with it, tags, instance attributes, CreateImage
//! (with a stand-in for the storage controller's answers), and node admission (a node not
//! listed waits for ApproveNode, a claim on a live node's id is refused, RejectNode ends a
//! token, a rebooted node is let in once its old record is down).

mod common;
mod ec2_support;

use ec2_support::{new_user, run_driven, start_frontend, StorageStandIn, TestNode};

#[test]
fn aws_cli_and_boto3_run_the_whole_flow_and_survive_kill_9() {
    let mut fe = start_frontend(60);
    let (k2, s2) = new_user(&fe, "bob");
    let node = TestNode::start(&fe, "node-1", 8, 4096);
    let out = run_driven(
        &mut fe,
        "ec2_flow.py",
        &[("USER2_KEY", &k2), ("USER2_SECRET", &s2)],
        |fe, line| {
            (line == "KILL").then(|| {
                fe.restart();
                "RESTARTED".to_string()
            })
        },
    );
    assert!(out.contains("ok terminate"), "{out}");
    assert!(out.contains("model-checked"), "{out}");
    // The node was handed the image exactly as stored: location, size and SHA-256.
    let sha = out
        .lines()
        .find_map(|l| l.strip_prefix("image-sha256 "))
        .expect("script printed the image hash");
    let ids = out
        .lines()
        .find_map(|l| l.strip_prefix("instances "))
        .expect("script printed the instance ids");
    let seen = node.seen.lock().unwrap();
    for id in ids.split(' ') {
        let spec = &seen.specs[id];
        assert_eq!(spec.image.sha256, sha);
        assert_eq!(
            (
                spec.image.bucket.as_str(),
                spec.image.key.as_str(),
                spec.image.size
            ),
            ("images", "root.img", 65536)
        );
        assert!(spec.kernel.as_ref().is_some_and(|k| k.key == "vmlinuz"));
        assert_eq!((spec.vcpus, spec.memory_mib), (1, 256));
        assert_eq!(spec.metadata.instance_id, id);
        assert_eq!(spec.metadata.public_keys[0].name, "k1");
        assert!(spec.metadata.public_keys[0]
            .openssh
            .starts_with("ssh-ed25519 "));
        // Both are in group "web": its network's tag (the default range's first) and an
        // address of its slice, the one DescribeInstances shows.
        let net = spec.network.as_ref().expect("the node is told the network");
        assert_eq!(net.segment, mallee_proto::Segment::Vlan(100));
        let addr = net
            .address
            .as_ref()
            .expect("MANAGED: the VMM's DHCP answer");
        assert_eq!(addr.address.to_string(), spec.metadata.local_ipv4);
        assert_eq!(addr.prefix_len, 27);
        assert_eq!(addr.gateway, Some("172.31.0.1".parse().unwrap()));
    }
    assert_eq!(
        seen.enrollments, 1,
        "the node's token must survive the restart"
    );
    drop(seen);
    node.wait("every instance to leave the desired state", |s| {
        s.desired.is_empty()
    });
    assert!(
        fe.log()
            .contains("scheduled: node with the most free vCPUs"),
        "no scheduling log line"
    );
}

#[test]
fn a_node_silent_past_its_deadline_is_marked_down_and_its_instances_say_so() {
    use std::sync::atomic::Ordering;
    let mut fe = start_frontend(2);
    let node = TestNode::start(&fe, "node-1", 2, 1024);
    let paused = node.paused.clone();
    let out = run_driven(&mut fe, "ec2_node_down.py", &[], |_, line| match line {
        "PAUSE" => {
            paused.store(true, Ordering::SeqCst);
            Some("PAUSED".into())
        }
        "RESUME" => {
            paused.store(false, Ordering::SeqCst);
            Some("RESUMED".into())
        }
        _ => None,
    });
    assert!(
        out.contains("ok node back, instance running again"),
        "{out}"
    );
    assert!(fe.log().contains("node marked down"), "{}", fe.log());
}

#[test]
fn a_node_back_with_a_new_boot_id_reports_its_instances_rebooted_and_describe_nodes_shows_it() {
    let mut fe = start_frontend(60);
    let (k2, s2) = new_user(&fe, "bob");
    let node = TestNode::start(&fe, "node-1", 2, 1024);
    let out = run_driven(
        &mut fe,
        "ec2_node_reboot.py",
        &[("USER2_KEY", &k2), ("USER2_SECRET", &s2)],
        |fe, line| match line {
            "RESTART" => {
                fe.restart();
                node.rejoin(None);
                Some("RESTARTED".into())
            }
            "REBOOT" => {
                assert!(!fe.log().contains("node rebooted"), "{}", fe.log());
                node.rejoin(Some("test-boot-2"));
                Some("REBOOTED".into())
            }
            _ => None,
        },
    );
    assert!(out.contains("ok terminated"), "{out}");
    let log = fe.log();
    assert!(
        log.contains("node rebooted: its instances were lost"),
        "no warning in the log: {log}"
    );
}

#[test]
fn metadata_options_reach_the_node_and_are_pending_until_it_reports_its_vmm_serves_them() {
    use mallee_proto::{HttpEndpoint, HttpTokens};
    use std::sync::atomic::Ordering;
    let mut fe = start_frontend(60);
    let (k2, s2) = new_user(&fe, "bob");
    let node = TestNode::start(&fe, "node-1", 4, 2048);
    let hold = node.hold_metadata.clone();
    let out = run_driven(
        &mut fe,
        "ec2_metadata.py",
        &[("USER2_KEY", &k2), ("USER2_SECRET", &s2)],
        |_, line| {
            let words: Vec<&str> = line.split(' ').collect();
            match words[..] {
                ["HOLD"] => {
                    hold.store(true, Ordering::SeqCst);
                    Some("HELD".into())
                }
                ["SEEN", id] => {
                    // Handed the new options; the report that went with them carried the old.
                    node.wait("the node to be handed the new options", |s| {
                        s.specs[id].metadata_options.http_endpoint == HttpEndpoint::Disabled
                    });
                    Some("SEEN".into())
                }
                ["RELEASE"] => {
                    hold.store(false, Ordering::SeqCst);
                    Some("RELEASED".into())
                }
                ["ADDRESS", id, ip] => {
                    node.wait("the node to be handed the new public-ipv4", |s| {
                        s.specs[id].metadata.public_ipv4.as_deref() == Some(ip)
                    });
                    Some("ADDRESSED".into())
                }
                _ => None,
            }
        },
    );
    assert!(out.contains("ok terminated: no modify"), "{out}");
    assert!(out.contains("ModifyInstanceMetadataOptions"), "{out}");
    // The node was handed the options last set, the ones its agent would have the VMM serve.
    let strict = out
        .lines()
        .find_map(|l| l.strip_prefix("strict "))
        .expect("script printed the instance id");
    let seen = node.seen.lock().unwrap();
    let first = seen.specs[strict].metadata_options;
    assert_eq!(
        (first.http_tokens, first.http_put_response_hop_limit),
        (HttpTokens::Optional, 64)
    );
}

#[test]
fn node_protocol_refuses_wrong_secrets_tokens_clusters_and_malformed_messages() {
    use ec2_support::{http, SECRET, ZONE};
    use mallee_proto::{
        encode, EnrollRequest, ErrorBody, PATH_CONSOLE, PATH_DESIRED, PATH_ENROLL, PATH_REGISTER,
    };
    let fe = start_frontend(60);
    let enroll_with = |secret: &str, cluster: &str, id: &str, token: Option<&str>| {
        let req = EnrollRequest {
            node_id: id.into(),
            cluster: cluster.into(),
            secret: secret.into(),
            macs: vec![ec2_support::LISTED_MAC.parse().unwrap()],
            token: token.map(str::to_string),
        };
        http(&fe, "POST", PATH_ENROLL, None, &encode(&req)).unwrap()
    };
    let enroll = |secret: &str, cluster: &str, id: &str| enroll_with(secret, cluster, id, None);
    let status_and_error = |(status, body): (u16, Vec<u8>)| {
        let err: ErrorBody =
            mallee_proto::decode(&body).unwrap_or_else(|e| panic!("{status}: {e}: {body:?}"));
        (status, err.error)
    };
    let (status, err) = status_and_error(enroll("wrong", ZONE, "n1"));
    assert_eq!((status, err.as_str()), (403, "wrong cluster secret"));
    let (status, err) = status_and_error(enroll(SECRET, "elsewhere", "n1"));
    assert_eq!(status, 400, "{err}");
    assert!(err.contains("elsewhere"), "{err}");
    let (status, _) = status_and_error(enroll(SECRET, ZONE, "../etc"));
    assert_eq!(status, 400);
    let (status, _) = status_and_error(http(&fe, "POST", PATH_ENROLL, None, b"{not json").unwrap());
    assert_eq!(status, 400);
    let (status, _) =
        status_and_error(http(&fe, "GET", PATH_DESIRED, Some("forged"), b"").unwrap());
    assert_eq!(status, 401);
    let (status, _) = status_and_error(http(&fe, "GET", PATH_DESIRED, None, b"").unwrap());
    assert_eq!(status, 401);

    let (status, body) = enroll(SECRET, ZONE, "n1");
    assert_eq!(status, 200);
    let token = mallee_proto::decode::<mallee_proto::EnrollResponse>(&body)
        .unwrap()
        .token;
    let wrong_id = br#"{"node_id":"n2","cluster":"zone-a","cpus":1,"memory_mib":1,"disk_gib":1,"macs":[],"agent_version":"t"}"#;
    let (status, err) =
        status_and_error(http(&fe, "POST", PATH_REGISTER, Some(&token), wrong_id).unwrap());
    assert_eq!(status, 400);
    assert!(err.contains("token belongs to node n1"), "{err}");
    let foreign = br#"{"instance_id":"i-0123456789abcdef0","output":"x"}"#;
    let (status, _) =
        status_and_error(http(&fe, "POST", PATH_CONSOLE, Some(&token), foreign).unwrap());
    assert_eq!(status, 400);
    // A second enrollment under the live node's id without its token is refused and changes
    // nothing; with it, it replaces the token: the old one stops working.
    let (status, err) = status_and_error(enroll(SECRET, ZONE, "n1"));
    assert_eq!(status, 403, "{err}");
    assert!(err.contains("held by a live node"), "{err}");
    let (status, _) = http(&fe, "GET", PATH_DESIRED, Some(&token), b"").unwrap();
    assert_eq!(status, 200);
    assert_eq!(enroll_with(SECRET, ZONE, "n1", Some(&token)).0, 200);
    let (status, _) = status_and_error(http(&fe, "GET", PATH_DESIRED, Some(&token), b"").unwrap());
    assert_eq!(status, 401);
}

#[test]
fn an_unlisted_node_waits_until_an_admin_approves_it_and_a_second_claim_is_refused() {
    use ec2_support::{enroll, UNLISTED_MAC};
    let mut fe = start_frontend(60);
    let (k2, s2) = new_user(&fe, "bob");
    let id = "node-525400990001";
    let (status, why) = enroll(&fe, id, UNLISTED_MAC, None);
    assert_eq!(status, 403, "{why}");
    assert!(
        why.contains(&format!("node {id} is waiting for admission"))
            && why.contains(&format!("mallee-frontend admin node approve {id}"))
            && why.contains("admit_macs"),
        "{why}"
    );
    let mut node: Option<TestNode> = None;
    let out = run_driven(
        &mut fe,
        "ec2_node_admission.py",
        &[("USER2_KEY", &k2), ("USER2_SECRET", &s2), ("NODE_ID", id)],
        |fe, line| match line {
            // Approved: the node, enrolling again from the same MAC, gets a token and works.
            "ENROLL" => {
                let n = TestNode::spawn(fe, id, UNLISTED_MAC, 2, 1024);
                n.wait("the approved node to register", |s| s.reports > 0);
                node = Some(n);
                Some("ENROLLED".into())
            }
            // A second enrollment under its id without its token: refused, the node untouched.
            "CLAIM" => {
                let (status, why) = enroll(fe, id, UNLISTED_MAC, None);
                assert_eq!(status, 403, "{why}");
                assert!(
                    why.contains(&format!("node id {id} is held by a live node")),
                    "{why}"
                );
                let n = node.as_ref().unwrap();
                let reports = n.seen.lock().unwrap().reports;
                n.wait("the live node to go on reporting", |s| {
                    s.reports > reports + 1
                });
                assert_eq!(n.seen.lock().unwrap().unauthorized, 0);
                Some("REFUSED".into())
            }
            // Rejected: its token stops working at once and it is refused when it enrolls again.
            "REJECTED" => {
                let n = node.as_ref().unwrap();
                n.wait("the rejected node to be refused", |s| {
                    s.unauthorized > 0
                        && (s.refused.as_deref())
                            .is_some_and(|r| r.contains("was rejected by an admin"))
                });
                Some("REFUSED".into())
            }
            _ => None,
        },
    );
    assert!(out.contains("ok rejected"), "{out}");
    assert!(
        fe.log().contains("node enrollment waits for an admin"),
        "{}",
        fe.log()
    );
}

#[test]
fn a_rebooted_node_is_let_in_once_its_old_record_is_down() {
    use ec2_support::{enroll, LISTED_MAC};
    // Marked down after 2 s without a report.
    let fe = start_frontend(2);
    let node = TestNode::start(&fe, "node-1", 2, 1024);
    // The node reboots: the old agent is gone, the new one has no token.
    node.pause();
    let (status, why) = enroll(&fe, "node-1", LISTED_MAC, None);
    assert_eq!(status, 403, "{why}");
    assert!(why.contains("held by a live node"), "{why}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let token = loop {
        match enroll(&fe, "node-1", LISTED_MAC, None) {
            (200, token) => break token,
            (403, _) => assert!(
                std::time::Instant::now() < deadline,
                "never let in: {}",
                fe.log()
            ),
            (status, why) => panic!("{status}: {why}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(fe.log().contains("node marked down"), "{}", fe.log());
    let (status, _) =
        ec2_support::http(&fe, "GET", mallee_proto::PATH_DESIRED, Some(&token), b"").unwrap();
    assert_eq!(status, 200);
}

#[test]
fn key_pairs_are_rsa_by_default_fingerprinted_as_ec2_does_and_reach_the_metadata() {
    let mut fe = start_frontend(60);
    let node = TestNode::start(&fe, "node-1", 4, 2048);
    let out = run_driven(&mut fe, "ec2_keys.py", &[], |_, _| None);
    assert!(
        out.contains("ok instances launched with each key type"),
        "{out}"
    );
    // Each instance's node was handed its key for public-keys/0/openssh-key: the public half
    // ssh-keygen derived from the private key the client got, then the key pair's name.
    let seen = node.seen.lock().unwrap();
    let lines: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("metadata-key "))
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    for line in lines {
        let (id, openssh) = line.split_once(' ').unwrap();
        let keys = &seen.specs[id].metadata.public_keys;
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert_eq!(keys[0].openssh, openssh);
        assert_eq!(Some(keys[0].name.as_str()), openssh.rsplit(' ').next());
    }
}

#[test]
fn sts_and_iam_name_the_caller_and_ec2_owner_ids_are_its_account() {
    let mut fe = start_frontend(60);
    let (k2, s2) = new_user(&fe, "bob");
    let _node = TestNode::start(&fe, "node-1", 2, 1024);
    let out = run_driven(
        &mut fe,
        "ec2_identity.py",
        &[("USER2_KEY", &k2), ("USER2_SECRET", &s2)],
        |_, _| None,
    );
    assert!(out.contains("ok instances and snapshots"), "{out}");
    assert!(out.contains("sts model-checked"), "{out}");
    // The operator sees the same account ids.
    let listed = fe.admin(&["user", "list"]);
    for line in out.lines().filter_map(|l| l.strip_prefix("account ")) {
        let (name, account) = line.split_once(' ').unwrap();
        assert_eq!(account.len(), 12, "{line}");
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(&format!("{name}\t")) && l.ends_with(account)),
            "{name} {account} not in {listed}"
        );
    }
}

#[test]
fn tags_are_made_with_their_resources_filtered_limited_and_deleted_with_them() {
    let mut fe = start_frontend(60);
    let (k2, s2) = new_user(&fe, "bob");
    let _node = TestNode::start(&fe, "node-1", 8, 4096);
    let out = run_driven(
        &mut fe,
        "ec2_tags.py",
        &[("USER2_KEY", &k2), ("USER2_SECRET", &s2)],
        |fe, line| {
            (line == "RESTART").then(|| {
                fe.restart();
                "RESTARTED".to_string()
            })
        },
    );
    assert!(
        out.contains("ok deleting a resource deletes its tags"),
        "{out}"
    );
    for action in ["CreateTags", "DeleteTags", "DescribeTags"] {
        assert!(
            out.contains(action),
            "{action} was not model-checked: {out}"
        );
    }
}

#[test]
fn instance_attributes_are_described_and_modified_as_ec2_does_and_protection_holds() {
    let mut fe = start_frontend(60);
    let (k2, s2) = new_user(&fe, "bob");
    let node = TestNode::start(&fe, "node-1", 8, 4096);
    let out = run_driven(
        &mut fe,
        "ec2_instance_attributes.py",
        &[("USER2_KEY", &k2), ("USER2_SECRET", &s2)],
        |_, line| {
            let words: Vec<&str> = line.split(' ').collect();
            match words[..] {
                // The node is handed the groups the guest's metadata lists.
                ["GROUPS", id, names] => {
                    let want: Vec<&str> = names.split(',').collect();
                    node.wait("the node to be handed the new security groups", |s| {
                        s.specs[id].metadata.security_groups == want
                    });
                    Some("GROUPS".into())
                }
                _ => None,
            }
        },
    );
    assert!(out.contains("ok protection off: terminated"), "{out}");
    assert!(out.contains("ModifyInstanceAttribute"), "{out}");
    let log = fe.log();
    assert!(
        log.contains("volume deleted with its terminated instance"),
        "no log line for the delete-on-termination volume: {log}"
    );
}

#[test]
fn create_image_copies_the_root_volume_at_rest_and_the_image_launches() {
    use mallee_proto::Goal;
    use std::sync::atomic::Ordering;
    let mut fe = start_frontend(60);
    let node = TestNode::start(&fe, "node-1", 8, 4096);
    let storage = StorageStandIn::start(&fe);
    let out = run_driven(&mut fe, "ec2_create_image.py", &[], |fe, line| {
        let reply = match line {
            // A keeper pass gave up waiting for the controller (and ended: whatever it does
            // after its copies, it did without one).
            "WAIT-STORAGE-REFUSED" => {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                while !fe
                    .log()
                    .contains("snapshot waits for the storage controller")
                {
                    assert!(std::time::Instant::now() < deadline, "{}", fe.log());
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                "REFUSED"
            }
            "HOLD-STORAGE" => {
                storage.paused.store(true, Ordering::SeqCst);
                "HELD"
            }
            "RELEASE-STORAGE" => {
                storage.paused.store(false, Ordering::SeqCst);
                "RELEASED"
            }
            "PAUSE-NODE" => {
                node.pause();
                "NODE-PAUSED"
            }
            "RESUME-NODE" => {
                node.resume();
                "NODE-RESUMED"
            }
            _ => return None,
        };
        Some(reply.to_string())
    });
    assert!(
        out.contains("ok deregistered: the snapshot stays until deleted"),
        "{out}"
    );
    assert!(out.contains("CreateImage"), "not model-checked: {out}");
    let imaged = out
        .lines()
        .find_map(|l| l.strip_prefix("imaged "))
        .expect("script printed the imaged instances");
    let (rebooted, live) = imaged.split_once(' ').unwrap();
    let seen = node.seen.lock().unwrap();
    // The node was asked to stop the rebooted instance and to run it again; the NoReboot one
    // was never asked to stop.
    let goals = &seen.goals[rebooted];
    assert_eq!(
        goals[..3],
        [Goal::Running, Goal::Stopped, Goal::Running],
        "{goals:?}"
    );
    assert!(
        !seen.goals[live].contains(&Goal::Stopped),
        "{:?}",
        seen.goals[live]
    );
    // The instance launched from the new image was handed a root volume to boot.
    let launched = out
        .lines()
        .find_map(|l| l.strip_prefix("launched "))
        .expect("script printed the launched instance");
    let (child, _snapshot) = launched.split_once(' ').unwrap();
    assert!(
        seen.specs[child].root_volume.is_some(),
        "{:?}",
        seen.specs[child]
    );
    drop(seen);
    let log = fe.log();
    assert!(
        log.contains("CreateImage: root volume copied; instance started again"),
        "{log}"
    );
    assert!(
        log.contains("was terminated before its root volume could be copied"),
        "{log}"
    );
}
