//! End to end: the frontend appliance boots under QEMU, formats its blank data disk, serves PXE
//! on its private NIC and the EC2/S3 API on its public one (forwarded to a host port); a
//! diskless node PXE-boots from it with the frontend's address, cluster and enrollment secret
//! on its command line, and its agent registers (the zone's capacity grows); the AWS CLI works
//! through the forwarded API to upload, register and run an instance of the guest bundle
//! image-build made (guest marker in GetConsoleOutput, and the guest's root disk line naming
//! the root image's label and UUID); a second launch is served from the node's RAM cache (DescribeNodes: no new
//! download, more hits, and no fetch in the node's own log); StopInstances on the
//! instance-store instance is refused and the node's VMM exits only for TerminateInstances; a
//! reset of the node mid-run sends it through its firmware and PXE again, it registers with a
//! new boot id, and DescribeInstances says `Server.NodeRebooted` while the instance runs again
//! (a guest marker with a new guest boot id, the same address); a second node joins and
//! RunInstances count 2 puts one instance on each. Instance networks on real traffic: an
//! instance of the same group reaches one on the other node over their VLAN; one of another
//! group reaches it through the frontend's gateway only while a source-group rule allows it; a
//! host outside the cloud (a netns behind the frontend's third NIC) reaches public and elastic
//! addresses only as group rules and associations say, and sees instances as their public
//! address; the frontend's capture of the private segment shows instance frames tagged only
//! with the configured range's tags, and a passive listener there reads none of the node
//! protocol (TLS to the key pinned on the nodes' command line: not the user data the nodes
//! were sent, no token, no `/_node/` path). EBS over AoE (volumes attached, written,
//! snapshotted, moved between nodes, restored; an EBS-backed instance stopped on one node and started on the
//! other). A hard power-off of the frontend with that instance running and writing to its root
//! volume: its writes stall and then complete intact; the frontend's second boot on the same disk
//! keeps its state (no reformat, same admin key, same buckets, an object's bytes) and its gateway
//! comes back from the state alone. A stock-style Debian cloud image uploaded and registered with
//! the AWS CLI boots from its own GPT root, cloud-init configures it from the VMM (SMBIOS,
//! metadata with IMDSv2 tokens required, user data) and the outside host logs in with SSH with
//! CreateKeyPair's key, at its public address and then at an elastic IP; powered off from inside,
//! it ends terminated with EC2's reason. The frontend's VLAN
//! range is the site's (`mallee.toml` on the ESP), not the default.

use mallee_qemu_tests::capture;
use mallee_qemu_tests::cloud::{self, Frontend, NodeReport, NODE_READY, PRIVATE_IP};
use mallee_qemu_tests::outside::{Outside, OUTSIDE_IP};
use mallee_qemu_tests::{report_figure, Segment, TestDir, Vm};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// The frontend's disk: the flashable image's size and more, so its data partition grows.
const DISK_MIB: u64 = 3072;
/// Each node's memory: a diskless node caches images in half of it and keeps instance disks in
/// a quarter; the Debian cloud image's root disk is about 520 MiB.
const NODE_MIB: u32 = 3072;
/// The VLAN range the site settings give the frontend (not the default `100-199`).
const VLANS: (u16, u16) = (300, 349);

#[test]
fn frontend_appliance_boots_nodes_and_keeps_state_across_reboots() {
    let dir = TestDir::new("cloud");
    let segment = Segment::new();
    // The shipped artifact: the flashable image written onto a disk bigger than itself.
    let disk = dir.file("frontend-disk.img");
    let image_bytes = std::fs::metadata(mallee_qemu_tests::Images::appliance().unwrap())
        .unwrap()
        .len();
    cloud::flash_appliance(&disk, DISK_MIB).unwrap();
    // The operator's site settings, on the ESP as one would add them after flashing: a VLAN
    // range of the site's choosing, not the default.
    let (first_vlan, last_vlan) = VLANS;
    cloud::site_settings(
        &disk,
        &format!("[network]\nvlans = \"{first_vlan}-{last_vlan}\"\n"),
    )
    .unwrap();

    let started = Instant::now();
    // The world outside the cloud, on the frontend's third NIC (its public side).
    let outside = Outside::new(&dir).unwrap_or_else(|e| panic!("{e}"));
    outside
        .serve_seen(SEEN_PORT)
        .unwrap_or_else(|e| panic!("{e}"));
    let fe = cloud::start_frontend_with(
        &dir,
        "frontend",
        mallee_qemu_tests::vm::Nic::segment(&segment),
        &disk,
        Some(outside.nic()),
        Duration::from_secs(300),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let frontend_up = started.elapsed();
    let console = fe.vm.console().text();
    assert!(
        console.contains("booted from slot a of the flashable image"),
        "{}",
        fe.vm.console().tail(30)
    );
    // The data partition grew to the end of the bigger disk (less the backup GPT's last MiB)...
    let grown = regex::Regex::new(r"data partition /dev/vda2 grown from (\d+) MiB to (\d+) MiB")
        .unwrap()
        .captures(&console)
        .unwrap_or_else(|| {
            panic!(
                "the data partition did not grow: {}",
                fe.vm.console().tail(30)
            )
        });
    let (before, after): (u64, u64) = (grown[1].parse().unwrap(), grown[2].parse().unwrap());
    let start_mib = (image_bytes >> 20) - before - 1;
    assert_eq!(
        after,
        DISK_MIB - start_mib - 1,
        "grown partition ({before} → {after} MiB) does not reach the end of the {DISK_MIB} MiB disk"
    );
    // ...and, being blank, was formatted.
    assert!(
        console.contains("disk /dev/vda2 is blank: formatting ext4"),
        "the blank data partition was not formatted: {}",
        fe.vm.console().tail(30)
    );
    assert!(
        console.contains("mallee-frontend: pxe serving http://10.77.0.1:8069/boot.ipxe"),
        "the daemon did not start its PXE service: {}",
        fe.vm.console().tail(30)
    );

    // The API answers through the forwarded port with the admin credentials.
    let zones = fe
        .aws(&["ec2", "describe-availability-zones"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(zones.contains("cluster1"), "zones: {zones}");
    fe.aws(&["s3", "mb", "s3://kept-across-reboots"])
        .unwrap_or_else(|e| panic!("{e}"));
    // An object big enough for the CLI's multipart upload, to read back after the power-off.
    let kept = dir.file("kept.bin");
    std::fs::write(&kept, pseudo_random(9 << 20)).unwrap();
    let kept_sha = sha256_file(&kept);
    fe.aws(&[
        "s3",
        "cp",
        path_str(&kept),
        "s3://kept-across-reboots/kept.bin",
    ])
    .unwrap_or_else(|e| panic!("{e}"));

    // A diskless node PXE-boots from the frontend and gets an address from its pool.
    let mut node = cloud::node_config("node1", &segment, "52:54:00:77:00:01")
        .memory_mib(NODE_MIB)
        .launch(&dir)
        .expect("start the node VM");
    let ready = node
        .wait_for(NODE_READY, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}"));
    let node_up = node.started().elapsed();
    let ip: Ipv4Addr = ready[1].parse().unwrap();
    let [a, b, c, d] = ip.octets();
    assert!(
        [a, b, c] == [10, 77, 0] && (100..=199).contains(&d) && ready[2] == "24",
        "node address {ip}/{} is not from the frontend's pool",
        ready[2]
    );
    let node_console = node.console().text();
    assert!(
        node_console.contains(&format!(
            "mallee.frontend={PRIVATE_IP}:8773 mallee.cluster=cluster1 mallee.secret="
        )),
        "the node kernel did not get the frontend's parameters: {}",
        node.console().tail(40)
    );
    // ...and the pin of the key the frontend printed, so its agent speaks TLS to that key only.
    assert!(
        node_console.contains(&format!("mallee.frontend_key={} ", fe.frontend_key))
            && !node_console.contains("no mallee.frontend_key on the command line"),
        "the node kernel did not get the frontend's key {}: {}",
        fe.frontend_key,
        node.console().tail(40)
    );
    // The node agent enrolls with the secret from its command line and registers: the zone's
    // capacity becomes non-zero.
    let deadline = Instant::now() + Duration::from_secs(120);
    let capacity = loop {
        let c = fe.capacity().unwrap_or_else(|e| panic!("{e}"));
        if c > 0 {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "the node never registered; node console: {}",
            node.console().tail(20)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let registered = node.started().elapsed();
    assert!(
        node.console()
            .text()
            .contains("agent: registered as node-525400770001"),
        "{}",
        node.console().tail(20)
    );
    intruders_get_nothing(&fe, &node_console, "node-525400770001", "52:54:00:77:00:01");
    report_figure(&format!(
        "figure: cloud, frontend (flashable image under OVMF) QEMU start to ready {:.1} s; node power-on to ready over the frontend's PXE {:.1} s (guest boot_ms={}), to registered {:.1} s (m1.small capacity {capacity})",
        frontend_up.as_secs_f64(),
        node_up.as_secs_f64(),
        ready[3],
        registered.as_secs_f64()
    ));

    // An instance: the guest bundle image-build made (Debian kernel, mallee-init ramdisk, ext4
    // root image), uploaded and registered with the AWS CLI, runs on the node under mallee-vmm
    // (nested KVM), prints its marker and sees the root image's label and UUID on its vda.
    let image = fe
        .upload_test_image("cloud-images")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let asked = Instant::now();
    let id = fe
        .run_instances(&image.emi, 1)
        .unwrap_or_else(|e| panic!("{e:#}"))[0]
        .clone();
    fe.wait_state(&id, "running", Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e:#}; node: {}", node.console().tail(30)));
    let running = asked.elapsed();
    let out = fe
        .wait_console(&id, cloud::GUEST_MARKER, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e:#}; node: {}", node.console().tail(30)));
    let marker = asked.elapsed();
    assert!(
        out.contains("Linux version 6.1.0-"),
        "the guest did not run the Debian kernel: {out}"
    );
    assert!(
        out.contains(&image.root_disk_line),
        "the guest did not see the root image on its vda (`{}`): {out}",
        image.root_disk_line
    );
    // The guest took the address DescribeInstances shows from its VMM's DHCP answer, over a
    // tap on its group's VLAN bridge (the configured range's first tag) on the node.
    let ip = fe.private_ip(&id).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        out.contains(&format!("{}{ip}/27 ", cloud::GUEST_MARKER)),
        "the guest did not take {ip}/27: {out}"
    );
    assert!(
        node.console()
            .text()
            .contains(&format!("agent: {id} plugged: tap ")),
        "the node did not plug {id}: {}",
        node.console().tail(30)
    );
    assert!(
        node.console().text().contains(&format!(
            "on bridge mbr{first_vlan} (VLAN {first_vlan} on eth0)"
        )),
        "{}",
        node.console().tail(30)
    );
    // Its VMM serves metadata: the guest fetched its instance id (IMDSv2) from 169.254.169.254.
    fe.wait_console(
        &id,
        &format!("metadata: instance-id {id}"),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e:#}; node: {}", node.console().tail(30)));
    report_figure(&format!(
        "figure: cloud, first launch RunInstances to running {:.1} s, to guest marker {:.1} s",
        running.as_secs_f64(),
        marker.as_secs_f64()
    ));
    // How fast the node pulled the images from Walrus through the frontend VM's private NIC.
    for line in node.console().text().lines() {
        if let Some((_, fetch)) = line.split_once("agent: fetched ") {
            report_figure(&format!(
                "figure: cloud, image fetch over the private segment: {fetch}"
            ));
        }
    }
    // An instance-store instance cannot be stopped (its root disk would not survive): the
    // API refuses as AWS does, and the node is not asked to do anything.
    let refused = fe
        .aws(&["ec2", "stop-instances", "--instance-ids", &id])
        .expect_err("StopInstances on an instance-store instance succeeded");
    assert!(
        refused.to_string().contains("UnsupportedOperation")
            && refused
                .to_string()
                .contains("does not have an 'ebs' root device type"),
        "{refused}"
    );
    assert_eq!(
        fe.instance_state(&id).unwrap_or_else(|e| panic!("{e:#}")),
        "running"
    );
    fe.aws(&["ec2", "terminate-instances", "--instance-ids", &id])
        .unwrap_or_else(|e| panic!("{e}"));
    fe.wait_state(&id, "terminated", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e:#}"));
    // "terminated" is the node's word too: its agent stopped the VMM, which exited through
    // its API shutdown, and the refused stop had not touched it before.
    let exit = format!("agent: {id} mallee-vmm exited with status 3");
    node.wait_for(&regex::escape(&exit), Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("the node's VMM for {id} did not exit by API shutdown: {e}"));
    let stops = node
        .console()
        .text()
        .matches(&format!("agent: stopping {id} "))
        .count();
    assert_eq!(stops, 1, "{}", node.console().tail(30));

    // A second launch of the same image fetches nothing (DescribeNodes: the node's cache).
    let node_id = "node-525400770001";
    let (id2, cached) = cached_launch(&fe, &node, node_id, &image.emi);
    // A second node starts joining; then the first is reset with its instance running.
    let mut node2 = cloud::node_config("node2", &segment, "52:54:00:77:00:02")
        .memory_mib(NODE_MIB)
        .launch(&dir)
        .expect("start the second node VM");
    reboot_mid_run(&fe, &mut node, node_id, &id2, &cached, Reboot::Reset, None);
    fe.aws(&["ec2", "terminate-instances", "--instance-ids", &id2])
        .unwrap_or_else(|e| panic!("{e}"));
    fe.wait_state(&id2, "terminated", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e:#}"));

    // Two nodes up: RunInstances with count 2 puts one instance on each.
    let deadline = Instant::now() + Duration::from_secs(300);
    while fe.capacity().unwrap_or_else(|e| panic!("{e}")) < 2 {
        assert!(
            Instant::now() < deadline,
            "the second node never registered: {}",
            node2.console().tail(20)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Both answer on TCP 7000 with their instance id and connect to the outside host, which
    // answers with the address it sees them as (the guest's user-data probes). Their user data
    // also carries a marker (a comment to the guest) that crosses the private segment only
    // inside the node protocol: a passive listener there must not read it (below).
    let marker = unique_marker();
    let probes =
        format!("serve {PROBE_PORT}\nconnect {OUTSIDE_IP}:{SEEN_PORT}\ndisks\n# {marker}\n");
    let pair = fe
        .run_instances_with(&image.emi, 2, &["--user-data", &probes])
        .unwrap_or_else(|e| panic!("{e:#}"));
    for id in &pair {
        let out = fe
            .wait_console(id, cloud::GUEST_MARKER, Duration::from_secs(300))
            .unwrap_or_else(|e| panic!("{e:#}; node2: {}", node2.console().tail(30)));
        assert!(
            out.contains(&image.root_disk_line),
            "{id}: no `{}` in its console: {out}",
            image.root_disk_line
        );
    }
    let on = |vm: &Vm| -> Vec<String> {
        let text = vm.console().text();
        pair.iter()
            .filter(|id| text.contains(&format!("agent: {id} running")))
            .cloned()
            .collect()
    };
    let (on1, on2) = (on(&node), on(&node2));
    assert!(
        on1.len() == 1 && on2.len() == 1 && on1 != on2,
        "count 2 was not spread one per node: node1 ran {on1:?}, node2 ran {on2:?}"
    );
    // The second node reboots cleanly (ctrl-alt-delete) with its instance running.
    let node2_id = "node-525400770002";
    let before = fe.node(node2_id).unwrap_or_else(|e| panic!("{e:#}"));
    reboot_mid_run(
        &fe,
        &mut node2,
        node2_id,
        &on2[0],
        &before,
        Reboot::CtrlAltDelete,
        None,
    );
    terminate(&fe, &on2[0]);
    let other = group_rules_on_the_wire(&fe, &image.emi, &on1[0], &node2);
    public_addresses_on_the_wire(&fe, &outside, &on1[0], &other);
    let (ebs, root) = volumes_on_the_wire(&fe, &on1[0], &other, &image);
    // The frontend's capture of its private NIC: instance traffic crossed the segment tagged,
    // only with tags of the configured range (both networks' among them); node <-> frontend
    // traffic untagged, and no untagged frame to or from an instance address.
    let census = capture::vlan_census(
        &dir.file("frontend-net1.pcap"),
        "172.31.0.0/16".parse().unwrap(),
    )
    .unwrap_or_else(|e| panic!("reading the private segment's capture: {e}"));
    assert!(
        census
            .tagged
            .keys()
            .all(|t| (first_vlan..=last_vlan).contains(t))
            && census.tagged.contains_key(&first_vlan)
            && census.tagged.contains_key(&(first_vlan + 1))
            && census.untagged > 0
            && census.untagged_inside_count == 0,
        "the private segment's capture: {census:?}"
    );
    passive_listener_reads_nothing(&dir.file("frontend-net1.pcap"), &fe, &marker);

    // Power the frontend off hard, the EBS-backed instance running on a node and writing to its
    // root volume, and boot it again on the same disk: nothing is lost; its gateway comes back
    // from the state alone (VLAN links, NAT, rules): the outside reaches the instance at its
    // public address again; and the guest's writes, stalled while the storage controller was
    // gone, complete and read back intact.
    let first_key = fe.access_key.clone();
    let public = fe.public_ip(&ebs).unwrap_or_else(|e| panic!("{e:#}"));
    reach_until(
        &outside,
        &public,
        Some(&ebs),
        "the EBS-backed instance, started on the other node",
    );
    let (_, churning) = fe
        .wait_console_after(
            &ebs,
            0,
            &format!("disk: {root} churn lap 0 ok"),
            Duration::from_secs(300),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    drop(fe);
    let fe = cloud::start_frontend_with(
        &dir,
        "frontend2",
        mallee_qemu_tests::vm::Nic::segment(&segment),
        &disk,
        Some(outside.nic()),
        Duration::from_secs(300),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    reach_until(&outside, &public, Some(&ebs), "after the frontend rebooted");
    writes_ride_out_the_reboot(&fe, &ebs, &root, churning);
    node_reboot_keeps_volumes(&fe, &mut node, node_id, &ebs, &root);
    image_of_a_running_instance(&fe, &ebs);
    terminate(&fe, &ebs);
    root_volume_went_with(&fe, &root);
    debian_cloud_image(&fe, &outside, &dir);
    drop(node2);
    drop(node);
    let console = fe.vm.console().text();
    assert!(
        console.contains("ext file system found")
            && !console.contains("formatting ext4")
            && !console.contains("grown from"),
        "second boot did not reuse the data partition as it was: {}",
        fe.vm.console().tail(30)
    );
    assert_eq!(
        fe.access_key, first_key,
        "the admin key changed across a reboot"
    );
    let buckets = fe.aws(&["s3", "ls"]).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        buckets.contains("kept-across-reboots"),
        "bucket lost across a reboot: {buckets}"
    );
    // The object's bytes, not just its name, survived the hard power-off.
    assert_kept(&fe, &dir, &kept_sha, "a hard power-off");
    upgrades(&fe, &kept_sha, &dir);
    drop(fe);

    // Flashed onto a disk whose data partition already holds someone else's data: the appliance
    // serves from RAM, says so, and neither writes nor grows that partition.
    let foreign = dir.file("foreign-disk.img");
    cloud::flash_appliance(&foreign, DISK_MIB).unwrap();
    let (offset, sectors) = data_partition(&foreign);
    let theirs = pseudo_random(256 << 10);
    write_at(&foreign, offset, &theirs);
    let fe = cloud::start_frontend(
        &dir,
        "frontend3",
        &segment,
        &foreign,
        Duration::from_secs(300),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let console = fe.vm.console().text();
    assert!(
        console.contains("disk /dev/vda2 holds something that is not an ext2/3/4 file system")
            && console.contains("state lives in RAM this boot"),
        "the appliance did not say it left the foreign partition alone: {}",
        fe.vm.console().tail(30)
    );
    drop(fe);
    assert_eq!(
        data_partition(&foreign),
        (offset, sectors),
        "the foreign partition was resized"
    );
    assert!(
        read_at(&foreign, offset, theirs.len()) == theirs,
        "the foreign partition's bytes changed"
    );
}

/// A string no traffic holds unless the test put it there.
/// A machine holding the enrolment secret gets no token. The secret reaches every machine on the
/// segment in the nodes' boot script; here it is read off the node's console. A new id waits for
/// an admin. The live node's own id, claimed with its listed MAC but without its token, is
/// refused, and the live node stays as it was. The node protocol answers nothing without a
/// valid token.
fn intruders_get_nothing(fe: &Frontend, node_console: &str, live_id: &str, live_mac: &str) {
    let secret = regex::Regex::new(r"mallee\.secret=(\S+)")
        .unwrap()
        .captures(node_console)
        .expect("the node's command line carries the secret")[1]
        .to_string();
    // curl over the same port and TLS as the nodes (the CA bundle from the client env).
    let call = |method: &str, path: &str, body: Option<serde_json::Value>, token: &str| {
        let mut curl = std::process::Command::new("curl");
        curl.args(["-sS", "-X", method, "-w", "\n%{http_code}"]);
        if let Some(body) = body {
            curl.args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(body.to_string());
        }
        if !token.is_empty() {
            curl.arg("-H").arg(format!("Authorization: Bearer {token}"));
        }
        let out = fe
            .client_env()
            .apply(curl.arg(format!("{}{path}", fe.endpoint)))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        (status.trim().parse::<u16>().unwrap_or(0), body.to_string())
    };
    let enroll = |id: &str, mac: &str| serde_json::json!({"node_id": id, "cluster": "cluster1", "secret": secret, "macs": [mac]});
    let (status, body) = call(
        "POST",
        "/_node/enroll",
        Some(enroll("node-intruder", "52:54:00:66:66:66")),
        "",
    );
    assert!(
        status == 403 && body.contains("waiting for admission"),
        "an unlisted machine enrolling: {status} {body}"
    );
    let (status, body) = call("POST", "/_node/enroll", Some(enroll(live_id, live_mac)), "");
    assert!(
        status == 403 && body.contains("held by a live node"),
        "a claim on the live node's id: {status} {body}"
    );
    let (status, body) = call("GET", "/_node/desired", None, &"0".repeat(64));
    assert_eq!(
        status, 401,
        "the desired state with a made-up token: {body}"
    );
    let (status, body) = call("GET", "/_node/object/images/root.img", None, "");
    assert_eq!(status, 401, "an image without a token: {body}");
    let nodes = fe.describe_nodes().unwrap_or_else(|e| panic!("{e:#}"));
    let find = |id: &str| nodes.iter().find(|n| n.id == id).cloned();
    let live = find(live_id).expect("the live node is listed");
    assert_eq!(
        (live.admission.as_str(), live.state.as_str()),
        ("admitted", "up"),
        "{live:?}"
    );
    let intruder = find("node-intruder").expect("the intruder is listed for the admin");
    assert_eq!(intruder.admission, "pending", "{intruder:?}");
    assert!(intruder.instances.is_empty(), "{intruder:?}");
}

fn unique_marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("mallee-passive-listener-{:x}-{nanos:x}", std::process::id())
}

/// What a passive listener on the private segment reads in `capture` (the frontend's private
/// NIC, every frame of the segment since the frontend booted): none of the node protocol —
/// not the user data (`marker`, raw or in any base64 alignment) that went to the nodes in
/// their desired state, no bearer token header, no `/_node/` path, no `"token"` field. So that
/// the search could fail, the capture must hold that traffic as TLS (ClientHellos toward the
/// API port, application data both ways, no plain HTTP request to it) and the search must find
/// what does cross in clear: the pin in the iPXE script the PXE service serves over HTTP.
fn passive_listener_reads_nothing(capture: &std::path::Path, fe: &Frontend, marker: &str) {
    let size = std::fs::metadata(capture)
        .unwrap_or_else(|e| panic!("{}: {e}", capture.display()))
        .len();
    let tls = capture::tls_census(capture, cloud::API_PORT)
        .unwrap_or_else(|e| panic!("reading the private segment's capture: {e}"));
    assert!(
        size > 0
            && tls.client_hellos > 0
            && tls.server_handshakes > 0
            && tls.app_data_to > 0
            && tls.app_data_from > 0
            && tls.plain_http_to == 0,
        "the node <-> frontend traffic in {} ({size} bytes) is not all TLS: {tls:?}",
        capture.display()
    );
    let in_clear = format!("mallee.frontend_key={}", fe.frontend_key);
    let mut secrets: Vec<String> = vec![
        marker.to_string(),
        "Authorization: Bearer".into(),
        "/_node/".into(),
        "\"token\"".into(),
    ];
    secrets.extend(capture::base64_forms(marker.as_bytes()));
    let mut needles: Vec<&[u8]> = vec![in_clear.as_bytes()];
    needles.extend(secrets.iter().map(|s| s.as_bytes()));
    let found = capture::find_bytes(capture, &needles)
        .unwrap_or_else(|e| panic!("reading {}: {e}", capture.display()));
    assert!(
        found[0].is_some(),
        "the search did not find {in_clear:?}, which the iPXE script carries in clear, in {}",
        capture.display()
    );
    let read: Vec<String> = (secrets.iter().zip(&found[1..]))
        .filter_map(|(s, at)| at.map(|at| format!("{s:?} at byte {at}")))
        .collect();
    assert!(
        read.is_empty(),
        "a passive listener on the private segment reads {} in {}",
        read.join(", "),
        capture.display()
    );
    report_figure(&format!(
        "figure: cloud, private segment capture {} MiB: {} TLS ClientHellos to the API port, none of the node protocol in clear",
        size >> 20,
        tls.client_hellos
    ));
}

/// EBS over AoE end to end, between `a` (first node) and `b` (second node), whose guests check
/// and write each volume attached to them (user data `disks`): a volume attached to `a` appears
/// in its guest, which writes a checksummed MiB; a snapshot taken while it is attached; detached
/// (the guest sees it go) and attached to `b`, whose guest finds `a`'s bytes intact and writes
/// its own; a second snapshot stores only the chunks that changed; a volume restored from the
/// first snapshot holds `a`'s bytes again. `a`'s guest also copied its root disk onto the empty
/// volume, so the first snapshot is the root of an EBS-backed image: its instance boots from a
/// volume made from it, keeps what it wrote across a stop and start, and its root volume goes
/// with it when it is terminated. Returns that instance and its root volume, running on the
/// first node with its guest churning the root volume.
fn volumes_on_the_wire(
    fe: &Frontend,
    a: &str,
    b: &str,
    image: &cloud::TestImage,
) -> (String, String) {
    let wait = Duration::from_secs(300);
    let fail = |e: anyhow::Error| -> ! { panic!("{e:#}") };
    let zone = fe.zone(a).unwrap_or_else(|e| fail(e));
    let vol = fe.create_volume(1, &zone, None).unwrap_or_else(|e| fail(e));
    let started = Instant::now();
    fe.attach_volume(&vol, a, "/dev/sdf")
        .unwrap_or_else(|e| fail(e));
    let attached = started.elapsed().as_secs_f64();
    let (_, at) = fe
        .wait_console_after(a, 0, &format!("disk: {vol} empty"), wait)
        .unwrap_or_else(|e| fail(e));
    let (_, at) = fe
        .wait_console_after(a, at, &format!("disk: {vol} wrote "), wait)
        .unwrap_or_else(|e| fail(e));
    let started = Instant::now();
    let first = fe.snapshot(&vol).unwrap_or_else(|e| fail(e));
    let snapped = started.elapsed().as_secs_f64();
    fe.detach_volume(&vol).unwrap_or_else(|e| fail(e));
    fe.wait_console_after(a, at, &format!("disk: {vol} gone"), wait)
        .unwrap_or_else(|e| fail(e));

    fe.attach_volume(&vol, b, "/dev/sdf")
        .unwrap_or_else(|e| fail(e));
    let (_, at) = fe
        .wait_console_after(b, 0, &format!("disk: {vol} holds {a} ok"), wait)
        .unwrap_or_else(|e| fail(e));
    let (_, at) = fe
        .wait_console_after(b, at, &format!("disk: {vol} wrote "), wait)
        .unwrap_or_else(|e| fail(e));
    let before = fe.snapshot_store_bytes().unwrap_or_else(|e| fail(e));
    let second_id = fe.snapshot(&vol).unwrap_or_else(|e| fail(e));
    let second = fe.snapshot_store_bytes().unwrap_or_else(|e| fail(e)) - before;
    // `b` rewrote the volume's last MiB and header sector: 3 chunks of 512 KiB, and the manifest.
    let chunks = 3 * 512 * 1024;
    assert!(
        second > 0 && second <= chunks + 64 * 1024,
        "the second snapshot stored {second} bytes; only the chunks b changed should be new"
    );
    // And it read only those: the storage controller's dirty record named them, so the root
    // disk `a` copied onto the volume was not read again.
    let ansi = r"(?:\x1b\[[0-9;]*m)*";
    let read: u64 = fe
        .vm
        .console()
        .wait_for(
            &format!("{second_id}[^\n]*read_bytes{ansi}={ansi}(\\d+)"),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("the second snapshot's log line: {e}"))[1]
        .parse()
        .expect("a number");
    assert!(
        read > 0 && read <= chunks,
        "the second snapshot read {read} bytes of the volume; only the chunks b wrote should be"
    );
    let restored = fe
        .create_volume(1, &zone, Some(&first))
        .unwrap_or_else(|e| fail(e));
    fe.attach_volume(&restored, b, "/dev/sdg")
        .unwrap_or_else(|e| fail(e));
    fe.wait_console_after(b, at, &format!("disk: {restored} holds {a} ok"), wait)
        .unwrap_or_else(|e| fail(e));
    let refused = fe.aws(&["ec2", "delete-volume", "--volume-id", &vol]);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("VolumeInUse")),
        "deleting an attached volume: {refused:?}"
    );
    for v in [&vol, &restored] {
        fe.detach_volume(v).unwrap_or_else(|e| fail(e));
        fe.aws(&["ec2", "delete-volume", "--volume-id", v])
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // Room on the second node (each holds one instance) for the EBS-backed one.
    terminate(fe, b);
    report_figure(&format!(
        "figure: cloud, AttachVolume to attached {attached:.1} s; snapshot of 1 GiB (1 MiB written) completed in {snapped:.1} s; the second snapshot read {read} bytes and stored {second}"
    ));
    ebs_backed(fe, &first, a, image)
}

/// An EBS-backed instance from an image whose root is `snapshot` (a copy of the test image's
/// root disk, then `writer`'s check): it boots from its root volume on the second node, finds
/// `writer`'s bytes and writes its own; stopped, and started once `writer` (on the first node)
/// is gone, it runs on the first node and finds its own bytes there. Its guest serves its id on
/// [`PROBE_PORT`] and keeps churning its root volume. Returns it and its root volume.
fn ebs_backed(
    fe: &Frontend,
    snapshot: &str,
    writer: &str,
    image: &cloud::TestImage,
) -> (String, String) {
    let wait = Duration::from_secs(300);
    let fail = |e: anyhow::Error| -> ! { panic!("{e:#}") };
    let mapping = format!("DeviceName=/dev/vda,Ebs={{SnapshotId={snapshot}}}");
    let registered = fe
        .aws(&[
            "ec2",
            "register-image",
            "--name",
            "ebs-root",
            "--root-device-name",
            "/dev/vda",
            "--block-device-mappings",
            &mapping,
            "--kernel-id",
            &image.eki,
            "--ramdisk-id",
            &image.eri,
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    let emi = cloud::json(&registered).unwrap()["ImageId"]
        .as_str()
        .unwrap()
        .to_string();
    let started = Instant::now();
    let user_data = format!("serve {PROBE_PORT}\ndisks churn");
    let c = fe
        .run_instances_with(&emi, 1, &["--user-data", &user_data])
        .unwrap_or_else(|e| fail(e))[0]
        .clone();
    fe.wait_state(&c, "running", wait)
        .unwrap_or_else(|e| fail(e));
    let booted = started.elapsed().as_secs_f64();
    let v = cloud::json(
        &fe.aws(&["ec2", "describe-instances", "--instance-ids", &c])
            .unwrap(),
    )
    .unwrap();
    let inst = &v["Reservations"][0]["Instances"][0];
    assert_eq!(inst["RootDeviceType"], "ebs", "{inst}");
    let root = inst["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
        .as_str()
        .unwrap_or_else(|| panic!("no root volume: {inst}"))
        .to_string();
    // The test image's root file system, read from the volume over AoE.
    let fs = image
        .root_disk_line
        .split("serial root, ")
        .nth(1)
        .expect("the root disk line names the file system");
    fe.wait_console(&c, &format!("serial {root}, {fs}"), wait)
        .unwrap_or_else(|e| fail(e));
    fe.wait_console(&c, &format!("disk: {root} holds {writer} ok"), wait)
        .unwrap_or_else(|e| fail(e));
    fe.wait_console(&c, &format!("disk: {root} wrote "), wait)
        .unwrap_or_else(|e| fail(e));
    assert_eq!(host_of(fe, &c), NODES[1], "the first node was full");
    let stopped = Instant::now();
    fe.aws(&["ec2", "stop-instances", "--instance-ids", &c])
        .unwrap_or_else(|e| panic!("{e}"));
    fe.wait_state(&c, "stopped", wait)
        .unwrap_or_else(|e| fail(e));
    // Both nodes free: the start goes to the first (ties go to the lowest id), not back to the
    // node the instance ran on.
    terminate(fe, writer);
    fe.aws(&["ec2", "start-instances", "--instance-ids", &c])
        .unwrap_or_else(|e| panic!("{e}"));
    fe.wait_state(&c, "running", wait)
        .unwrap_or_else(|e| fail(e));
    fe.wait_console(&c, &format!("disk: {root} holds {c} ok"), wait)
        .unwrap_or_else(|e| fail(e));
    let restarted = stopped.elapsed().as_secs_f64();
    assert_eq!(host_of(fe, &c), NODES[0], "started on the same node again");
    report_figure(&format!(
        "figure: cloud, EBS-backed RunInstances to running {booted:.1} s; stop, start on the other node and its own bytes found again {restarted:.1} s"
    ));
    (c, root)
}

/// The nodes' ids, first and second.
const NODES: [&str; 2] = ["node-525400770001", "node-525400770002"];

/// The node `id` runs on, as DescribeNodes reports it.
fn host_of(fe: &Frontend, id: &str) -> &'static str {
    let on: Vec<&str> = NODES
        .into_iter()
        .filter(|n| {
            fe.node(n)
                .unwrap_or_else(|e| panic!("{e:#}"))
                .instances
                .iter()
                .any(|i| i == id)
        })
        .collect();
    match on.as_slice() {
        [one] => one,
        _ => panic!("{id} runs on {on:?}"),
    }
}

/// The churn of `root` by `id`'s guest, which wrote past console byte `from` before the
/// frontend went down: a write stalled while the storage controller was gone and completed
/// after, and the laps read back after it are intact; nothing failed or read back wrong.
fn writes_ride_out_the_reboot(fe: &Frontend, id: &str, root: &str, from: usize) {
    let wait = Duration::from_secs(300);
    let (_, at) = fe
        .wait_console_after(id, from, &format!("disk: {root} churn stalled "), wait)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let lap = format!("disk: {root} churn lap ");
    let (_, at) = fe
        .wait_console_after(id, at, &lap, wait)
        .unwrap_or_else(|e| panic!("{e:#}"));
    // The console may have been reported mid-line: the verdict is the whole line.
    let (out, end) = fe
        .wait_console_after(id, at, "\n", wait)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let verdict = out[at..end].trim_end();
    assert!(
        verdict.ends_with(" ok"),
        "the first lap after the stall: {lap}{verdict}"
    );
    let stall = out[from..]
        .lines()
        .find_map(|l| l.split_once("churn stalled ").map(|(_, s)| s.to_string()))
        .unwrap_or_default();
    for bad in ["BAD", "churn stopped"] {
        assert!(
            !out[from..].contains(bad),
            "{id}'s churn of {root}: {}",
            &out[from..]
        );
    }
    report_figure(&format!(
        "figure: cloud, the guest's root-volume I/O in flight across the frontend's hard power-off and reboot stalled {stall}"
    ));
}

/// A node reboots cleanly under EBS-backed `id` (root volume `root`) with a data volume
/// attached too: the instance comes back on it booted from its root volume, is given the data
/// volume again, and its guest finds what it wrote on both. The data volume is then detached
/// and deleted.
fn node_reboot_keeps_volumes(fe: &Frontend, node: &mut Vm, node_id: &str, id: &str, root: &str) {
    let wait = Duration::from_secs(300);
    let fail = |e: anyhow::Error| -> ! { panic!("{e:#}") };
    let zone = fe.zone(id).unwrap_or_else(|e| fail(e));
    let data = fe.create_volume(1, &zone, None).unwrap_or_else(|e| fail(e));
    fe.attach_volume(&data, id, "/dev/sdg")
        .unwrap_or_else(|e| fail(e));
    fe.wait_console(id, &format!("disk: {data} wrote "), wait)
        .unwrap_or_else(|e| fail(e));
    let before = fe.node(node_id).unwrap_or_else(|e| fail(e));
    let started = Instant::now();
    reboot_mid_run(
        fe,
        node,
        node_id,
        id,
        &before,
        Reboot::CtrlAltDelete,
        Some(root),
    );
    // The console now holds the new boot alone (the node's RAM, the old one's log, is gone).
    for volume in [root, &data] {
        fe.wait_console(id, &format!("disk: {volume} holds {id} ok"), wait)
            .unwrap_or_else(|e| fail(e));
    }
    let back = started.elapsed().as_secs_f64();
    let v = fe.wait_volume(&data, "attached again", |v| {
        v["Attachments"][0]["State"] == "attached"
    });
    v.unwrap_or_else(|e| fail(e));
    fe.detach_volume(&data).unwrap_or_else(|e| fail(e));
    fe.wait_console(id, &format!("disk: {data} gone"), wait)
        .unwrap_or_else(|e| fail(e));
    fe.aws(&["ec2", "delete-volume", "--volume-id", &data])
        .unwrap_or_else(|e| panic!("{e}"));
    report_figure(&format!(
        "figure: cloud, node reboot under an EBS-backed instance with a data volume to both volumes checked again {back:.1} s"
    ));
}

/// CreateImage of EBS-backed `id` while it runs (`--no-reboot`: its root volume copied live):
/// the image is `available` once its snapshot is in Walrus, and an instance of it (on the other
/// node) boots from a copy of the root volume holding what `id`'s guest wrote there.
fn image_of_a_running_instance(fe: &Frontend, id: &str) {
    let wait = Duration::from_secs(300);
    let fail = |e: anyhow::Error| -> ! { panic!("{e:#}") };
    let started = Instant::now();
    let made = fe
        .aws(&[
            "ec2",
            "create-image",
            "--instance-id",
            id,
            "--name",
            "made-from-a-running-instance",
            "--no-reboot",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    let emi = cloud::json(&made).unwrap()["ImageId"]
        .as_str()
        .expect("an ImageId")
        .to_string();
    let deadline = Instant::now() + wait;
    let image = loop {
        let v = cloud::json(
            &fe.aws(&["ec2", "describe-images", "--image-ids", &emi])
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap();
        let image = v["Images"][0].clone();
        match image["State"].as_str() {
            Some("available") => break image,
            Some("pending") => {}
            other => panic!("CreateImage of {id}: {other:?}: {image}"),
        }
        assert!(Instant::now() < deadline, "{emi} still pending: {image}");
        std::thread::sleep(Duration::from_secs(1));
    };
    let copied = started.elapsed().as_secs_f64();
    assert_eq!(image["RootDeviceType"], "ebs", "{image}");
    assert_eq!(
        fe.instance_state(id).unwrap_or_else(|e| fail(e)),
        "running",
        "--no-reboot stopped {id}"
    );
    let d = fe
        .run_instances_with(&emi, 1, &["--user-data", "disks"])
        .unwrap_or_else(|e| fail(e))[0]
        .clone();
    fe.wait_state(&d, "running", wait)
        .unwrap_or_else(|e| fail(e));
    let v = cloud::json(
        &fe.aws(&["ec2", "describe-instances", "--instance-ids", &d])
            .unwrap(),
    )
    .unwrap();
    let root = v["Reservations"][0]["Instances"][0]["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
        .as_str()
        .unwrap_or_else(|| panic!("no root volume: {v}"))
        .to_string();
    fe.wait_console(&d, &format!("disk: {root} holds {id} ok"), wait)
        .unwrap_or_else(|e| fail(e));
    terminate(fe, &d);
    report_figure(&format!(
        "figure: cloud, CreateImage --no-reboot of a running EBS-backed instance to available {copied:.1} s"
    ));
}

/// `root` was deleted with its instance.
fn root_volume_went_with(fe: &Frontend, root: &str) {
    fe.wait_volume(root, "deleted with its instance", |_| false)
        .map(drop)
        .unwrap_or_else(|e| {
            assert!(
                format!("{e:#}").contains("InvalidVolume.NotFound"),
                "the root volume outlived its instance: {e:#}"
            )
        });
}

/// The port the probe guests serve their instance id on.
const PROBE_PORT: u16 = 7000;
/// The outside host's port that answers `seen <source address>`.
const SEEN_PORT: u16 = 7001;

/// A stock-style Debian cloud image, run as a user of the cloud runs one: its kernel, initramfs
/// and GPT root disk uploaded and registered with the AWS CLI (the root found on its own: a
/// PARTUUID), run with the key pair of a default `create-key-pair` (RSA), a cloud-config as user
/// data and IMDSv2 tokens required. cloud-init takes the instance for EC2 (the VMM's SMBIOS),
/// configures it from its VMM's metadata service, runs the user data and says it finished; the
/// outside host logs in with SSH at the instance's public address with CreateKeyPair's private
/// key, finds the instance id cloud-init recorded and the file the user data wrote, and from
/// inside the guest reads the metadata paths with a token and is refused without one. An
/// elastic IP associated with it shows in its `public-ipv4` and takes the SSH login. Powered off
/// from inside, the instance (instance-store) ends terminated with EC2's
/// `Client.InstanceInitiatedShutdown`.
fn debian_cloud_image(fe: &Frontend, outside: &Outside, dir: &TestDir) {
    let image = mallee_qemu_tests::Images::debian_cloud().unwrap_or_else(|e| panic!("{e:#}"));
    let started = Instant::now();
    let pem = dir.file("debian.pem");
    let emi = fe
        .debian_with_ssh(&image, "debian", &pem)
        .unwrap_or_else(|e| panic!("{e:#}"));
    report_figure(&format!(
        "figure: cloud, Debian cloud image ({} MiB root disk) uploaded and registered, a key pair and an SSH rule made, with the AWS CLI in {:.1} s",
        std::fs::metadata(&image.root_gpt).map_or(0, |m| m.len() >> 20),
        started.elapsed().as_secs_f64()
    ));
    let user_data = "#cloud-config\n\
        write_files:\n  - path: /etc/mallee-user-data\n    content: written from user data\n\
        runcmd:\n  - [ sh, -c, 'echo mallee-user-data-ran $(cat /var/lib/cloud/data/instance-id)' ]\n";
    let asked = Instant::now();
    let id = fe
        .run_instances_with(
            &emi,
            1,
            &[
                "--instance-type",
                "c1.medium",
                "--key-name",
                "debian",
                "--user-data",
                user_data,
                "--metadata-options",
                "HttpTokens=required",
            ],
        )
        .unwrap_or_else(|e| panic!("{e:#}"))[0]
        .clone();
    fe.wait_state(&id, "running", Duration::from_secs(600))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let running = asked.elapsed();
    // The user data ran (cloud-init's final stage prints its output on the console), with the
    // instance id cloud-init read from the metadata service.
    let ran = format!("mallee-user-data-ran {id}");
    fe.wait_console(&id, &ran, Duration::from_secs(900))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let marker = asked.elapsed();
    // Its last words, after the user data's: "Cloud-init v. N finished at ... Datasource ...".
    let console = fe
        .wait_console(&id, " finished at ", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let finished = (console.lines())
        .find(|l| l.contains(image.fact("ready_prefix")) && l.contains("finished at"))
        .unwrap_or_else(|| panic!("cloud-init never said it finished: {console}"));
    assert!(finished.contains("DataSourceEc2"), "{finished}");
    let public = fe.public_ip(&id).unwrap_or_else(|e| panic!("{e:#}"));
    let out = ssh_until(outside, &pem, &public);
    report_figure(&format!(
        "figure: cloud, Debian cloud image: RunInstances to running {:.1} s, to its user data run {:.1} s, to an SSH login {:.1} s",
        running.as_secs_f64(),
        marker.as_secs_f64(),
        asked.elapsed().as_secs_f64()
    ));
    let line = |key: &str| -> String {
        (out.lines())
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no `{key}` from the guest: {out}"))
    };
    assert_eq!(line("instance-id:"), id, "{out}");
    assert_eq!(line("user-data-file:"), "written from user data", "{out}");
    assert_eq!(line("no-token:"), "401", "{out}");
    for path in METADATA_PATHS {
        let got = line(&format!("md {path}:"));
        assert!(got.starts_with("200 "), "meta-data/{path}: {got}");
    }
    assert_eq!(line("md instance-id:"), format!("200 {id}"), "{out}");
    assert_eq!(line("md public-ipv4:"), format!("200 {public}"), "{out}");
    let key_line = line("md public-keys/0/openssh-key:");
    assert!(key_line.starts_with("200 ssh-rsa "), "{key_line}");

    // An elastic IP: the guest's metadata says it at once, and it takes the login.
    let eip = fe.allocate_address().unwrap_or_else(|e| panic!("{e:#}"));
    fe.associate_address(&eip, &id)
        .unwrap_or_else(|e| panic!("{e}"));
    let out = ssh_until(outside, &pem, &eip);
    assert!(
        out.contains(&format!("md public-ipv4: 200 {eip}")),
        "the guest's public-ipv4 after associating {eip}: {out}"
    );
    // The guest powers itself off: an instance-store instance ends terminated, with EC2's
    // reason (its node says so; nobody asked the API).
    let _ = outside
        .ssh(&pem, &format!("debian@{eip}"), "sudo systemctl poweroff")
        .output();
    fe.wait_state(&id, "terminated", Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (code, message) = fe
        .state_reason(&id)
        .unwrap_or_else(|e| panic!("{e:#}"))
        .expect("a state reason");
    assert_eq!(code, "Client.InstanceInitiatedShutdown", "{message}");
    fe.aws(&["ec2", "release-address", "--public-ip", &eip])
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The metadata paths the Debian guest reads (under `/latest/meta-data/`), each with a token.
const METADATA_PATHS: &[&str] = &[
    "ami-id",
    "ami-launch-index",
    "ami-manifest-path",
    "block-device-mapping/",
    "hostname",
    "instance-id",
    "instance-type",
    "kernel-id",
    "ramdisk-id",
    "local-hostname",
    "local-ipv4",
    "mac",
    "network/interfaces/macs/",
    "placement/availability-zone",
    "public-hostname",
    "public-ipv4",
    "public-keys/0/openssh-key",
    "reservation-id",
    "security-groups",
];

/// What the test runs in the Debian guest over SSH (`sh -s`; python3 is cloud-init's): the
/// instance id cloud-init recorded, the user data's file, each of [`METADATA_PATHS`] (given as
/// arguments) with an IMDSv2 token, and the answer without one.
const GUEST_CHECKS: &str = r#"echo "instance-id: $(cat /var/lib/cloud/data/instance-id)"
echo "user-data-file: $(cat /etc/mallee-user-data)"
python3 - "$@" <<'PY'
import sys, urllib.request, urllib.error
def ask(path, token=None, method="GET", headers=None):
    h = dict(headers or {})
    if token:
        h["X-aws-ec2-metadata-token"] = token
    req = urllib.request.Request("http://169.254.169.254" + path, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
_, token = ask("/latest/api/token", method="PUT",
               headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
print("no-token:", ask("/latest/meta-data/instance-id")[0])
for p in sys.argv[1:]:
    status, body = ask("/latest/meta-data/" + p, token)
    print("md %s: %d %s" % (p, status, (body.splitlines() or [""])[0]))
PY
"#;

/// Logs in to `ip` as the image's default user with the private key `pem` from the outside host
/// until it works (see [`Outside::ssh_until`]), running [`GUEST_CHECKS`]; what it printed.
fn ssh_until(outside: &Outside, pem: &std::path::Path, ip: &str) -> String {
    let remote = format!("sh -s {}", METADATA_PATHS.join(" "));
    let login = format!("debian@{ip}");
    outside
        .ssh_until(pem, &login, &remote, GUEST_CHECKS, Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn terminate(fe: &Frontend, id: &str) {
    fe.aws(&["ec2", "terminate-instances", "--instance-ids", id])
        .unwrap_or_else(|e| panic!("{e}"));
    fe.wait_state(id, "terminated", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Instance networks on real traffic, with `served` (default group, serving its id on
/// [`PROBE_PORT`]) running on the first node and the second node free, so each new instance
/// lands there: an instance of the same group reaches it across the nodes on their VLAN; an
/// instance of another group (another VLAN, through the frontend's gateway) cannot until the
/// default group lets that group in, and cannot again once the rule is revoked. Returns that
/// instance (groups `probes` and `web`, on the second node, serving on [`PROBE_PORT`] too).
fn group_rules_on_the_wire(fe: &Frontend, emi: &str, served: &str, node2: &Vm) -> String {
    let ip = fe.private_ip(served).unwrap_or_else(|e| panic!("{e:#}"));
    let target = format!("{ip}:{PROBE_PORT}");
    let connect = format!("connect {target}");
    let answered = format!("probe: {target} answered {served}");
    let unreachable = format!("probe: {target} unreachable");
    let wait = Duration::from_secs(300);
    let console = |id: &str, from: usize, needle: &str| {
        fe.wait_console_after(id, from, needle, wait)
            .unwrap_or_else(|e| panic!("{e:#}; node2: {}", node2.console().tail(30)))
            .1
    };

    let same = &fe
        .run_instances_with(emi, 1, &["--user-data", &connect])
        .unwrap_or_else(|e| panic!("{e:#}"))[0];
    console(same, 0, &answered);
    assert!(
        node2
            .console()
            .text()
            .contains(&format!("agent: {same} running")),
        "{same} did not run on the second node: {}",
        node2.console().tail(30)
    );
    terminate(fe, same);

    for (name, description) in [
        ("probes", "instances that probe the default group"),
        (
            "web",
            "a second group: its rules reach its instances on other groups' networks",
        ),
    ] {
        fe.create_group(name, description)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let serve_and_connect = format!("serve {PROBE_PORT}\n{connect}\ndisks");
    let other = &fe
        .run_instances_with(
            emi,
            1,
            &[
                "--security-groups",
                "probes",
                "web",
                "--user-data",
                &serve_and_connect,
            ],
        )
        .unwrap_or_else(|e| panic!("{e:#}"))[0];
    let mut at = console(other, 0, &unreachable);
    // The frontend's init applied the gateway with the new network (the range's next tag);
    // the probe still finds the default group closed to it.
    let tag = (VLANS.0 + 1).to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let nets = fe
            .admin(&["DescribeNetworks"])
            .unwrap_or_else(|e| panic!("{e:#}"));
        let probes_vlan = nets["networkSet"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["groupName"] == "probes")
            .map(|n| n["vlan"].clone());
        if nets["gatewayState"] == "applied" && probes_vlan == Some(serde_json::json!(tag)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway with the probes group's network on VLAN {tag} was not applied: {nets}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = fe.console_output(other).unwrap_or_else(|e| panic!("{e:#}"));
    let last = out.lines().rev().find(|l| l.contains("probe: "));
    assert!(
        last.is_some_and(|l| l.contains(&unreachable)),
        "{other} reached {target} before any rule let it: {out}"
    );
    let change = |verb: &str| {
        fe.tcp_ingress(verb, "default", PROBE_PORT, &["--source-group", "probes"])
            .unwrap_or_else(|e| panic!("{e}"));
    };
    change("authorize-security-group-ingress");
    at = console(other, at, &answered);
    change("revoke-security-group-ingress");
    console(other, at, &unreachable);
    other.clone()
}

/// Public addresses on real traffic, from the outside host: `served` (default group, first
/// node) cannot be reached at its public address until the group lets the outside in by CIDR;
/// it reaches the outside seen as its public address; an elastic IP reaches `served`, then
/// `other` (groups `probes` and `web`, second node) once re-associated, and nothing once released.
fn public_addresses_on_the_wire(fe: &Frontend, outside: &Outside, served: &str, other: &str) {
    let public = fe.public_ip(served).unwrap_or_else(|e| panic!("{e:#}"));
    let outside_net = format!("{OUTSIDE_IP}/24");
    let rule = |verb: &str, group: &str| {
        fe.tcp_ingress(verb, group, PROBE_PORT, &["--cidr", &outside_net])
            .unwrap_or_else(|e| panic!("{e}"));
    };
    // Closed to the outside until the default group lets its net in.
    assert!(
        reach(outside, &public).is_err(),
        "the outside reached {served} at {public} before any rule let it"
    );
    rule("authorize-security-group-ingress", "default");
    let until = |ip: &str, want: Option<&str>, what: &str| reach_until(outside, ip, want, what);
    until(&public, Some(served), "after authorizing the outside's net");
    // Going out, the instance is seen as its public address.
    fe.wait_console(
        served,
        &format!("probe: {OUTSIDE_IP}:{SEEN_PORT} answered seen {public}"),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));

    // An elastic IP moves traffic: to `served`, then to `other`, then nowhere. `other` sits on
    // the network of its first group (probes); the rule letting the outside in is its second
    // group's, which applies to it as much as the first's.
    rule("authorize-security-group-ingress", "web");
    let eip = fe.allocate_address().unwrap_or_else(|e| panic!("{e:#}"));
    let associate = |id: &str| {
        fe.associate_address(&eip, id)
            .unwrap_or_else(|e| panic!("{e}"));
    };
    associate(served);
    until(
        &eip,
        Some(served),
        "the elastic IP associated with the first instance",
    );
    associate(other);
    until(
        &eip,
        Some(other),
        "the elastic IP re-associated with the second instance",
    );
    fe.aws(&["ec2", "release-address", "--public-ip", &eip])
        .unwrap_or_else(|e| panic!("{e}"));
    until(&eip, None, "the released elastic IP");
}

/// One TCP connection from the outside host to `ip`'s probe port: the instance id it answers.
fn reach(outside: &Outside, ip: &str) -> std::io::Result<String> {
    let to = SocketAddrV4::new(ip.parse().expect("an address"), PROBE_PORT);
    outside.connect(to).unwrap_or_else(|e| panic!("{e}"))
}

/// Polls until the outside host's connection to `ip` answers `want` (an instance id), or fails
/// when `want` is None; `what` names the step when it never does. Reports how long it took.
fn reach_until(outside: &Outside, ip: &str, want: Option<&str>, what: &str) {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(60);
    loop {
        let got = reach(outside, ip);
        if matches!((&got, want), (Ok(id), Some(w)) if id == w) || (got.is_err() && want.is_none())
        {
            return report_figure(&format!(
                "figure: cloud, outside host -> {ip}: {} {:.2} s {what}",
                if want.is_some() {
                    "reached"
                } else {
                    "unreachable"
                },
                start.elapsed().as_secs_f64()
            ));
        }
        assert!(Instant::now() < deadline, "{what}: {ip} gave {got:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// In-place upgrades of the flashed appliance running slot A: to an image whose kernel panics
/// (it is tried, fails its tries, and slot A boots again by itself), then to a good later image
/// (slot B boots, serves and is marked good). The cloud's data survives both.
fn upgrades(fe: &Frontend, kept_sha: &str, dir: &TestDir) {
    fe.vm.reset_on_reboot().unwrap();
    let before = fe.admin(&["DescribeAppliance"]).unwrap();
    assert_eq!(before["slot"], "a", "{before}");
    let old_version = before["version"].as_str().unwrap().to_string();
    assert!(
        old_version.starts_with(env!("CARGO_PKG_VERSION")),
        "{before}"
    );

    let broken = mallee_qemu_tests::Images::appliance_broken().unwrap();
    let after = fe
        .admin(&["upgrade", path_str(&broken), "Tries=2"])
        .unwrap_or_else(|e| panic!("{e:#}\n{}", fe.vm.console().tail(40)));
    let last = &after["lastUpgrade"];
    assert_eq!(last["result"], "failed", "{after}");
    assert_eq!(last["slot"], "b", "{after}");
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .contains("did not become ready in 2 tries"),
        "{after}"
    );
    assert_eq!(after["slot"], "a", "not back on the old slot: {after}");
    assert_eq!(after["version"], old_version.as_str(), "{after}");
    let console = fe.vm.console().text();
    assert!(
        console.matches("Kernel panic").count() >= 2,
        "the broken slot was not tried twice: {}",
        fe.vm.console().tail(40)
    );
    let b = &after["slotSet"][1];
    assert_eq!(
        (&b["slot"], &b["state"]),
        (&"b".into(), &"failed".into()),
        "{after}"
    );

    let next = mallee_qemu_tests::Images::appliance_next().unwrap();
    let started = Instant::now();
    let after = fe
        .admin(&["upgrade", path_str(&next)])
        .unwrap_or_else(|e| panic!("{e:#}\n{}", fe.vm.console().tail(40)));
    let upgrade_secs = started.elapsed().as_secs_f64();
    let last = &after["lastUpgrade"];
    assert_eq!(last["result"], "good", "{after}");
    assert_eq!(after["slot"], "b", "the new slot is not running: {after}");
    let new_version = after["version"].as_str().unwrap();
    assert_ne!(new_version, old_version, "{after}");
    assert_eq!(last["version"], new_version, "{after}");
    for (i, (slot, version)) in [("a", old_version.as_str()), ("b", new_version)]
        .iter()
        .enumerate()
    {
        let s = &after["slotSet"][i];
        assert_eq!(
            (
                s["slot"].as_str(),
                s["version"].as_str(),
                s["state"].as_str()
            ),
            (Some(*slot), Some(*version), Some("good")),
            "{after}"
        );
    }
    assert!(
        fe.vm.console().text().contains(&format!(
            "upgrade: slot b version {new_version} marked good"
        )),
        "{}",
        fe.vm.console().tail(30)
    );
    // The data partition was not touched: the object uploaded before both upgrades reads back.
    assert_kept(fe, dir, kept_sha, "the upgrades");
    report_figure(&format!(
        "figure: cloud, appliance upgrade {old_version} -> {new_version}: upload, install, reboot and serving again in {upgrade_secs:.1} s"
    ));
}

/// The object `s3://kept-across-reboots/kept.bin` still holds the bytes hashing to `sha` after
/// `what`.
fn assert_kept(fe: &Frontend, dir: &TestDir, sha: &str, what: &str) {
    let back = dir.file("kept-back.bin");
    fe.aws(&[
        "s3",
        "cp",
        "s3://kept-across-reboots/kept.bin",
        path_str(&back),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        sha256_file(&back),
        sha,
        "the object read back after {what} differs from what was uploaded"
    );
}

/// Byte offset and length in sectors of the appliance's data partition on a flashed disk.
fn data_partition(disk: &std::path::Path) -> (u64, u64) {
    let gpt = gptman::GPT::find_from(&mut std::fs::File::open(disk).unwrap()).unwrap();
    let (_, part) = gpt
        .iter()
        .find(|(_, p)| p.partition_name.as_str() == mallee_image_build::appliance::DATA_PARTLABEL)
        .expect("the flashed disk has a data partition");
    (
        part.starting_lba * gpt.sector_size,
        part.ending_lba + 1 - part.starting_lba,
    )
}

fn write_at(path: &std::path::Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn read_at(path: &std::path::Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0; len];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// `len` bytes no compressor or dedup could shortcut.
fn pseudo_random(len: usize) -> Vec<u8> {
    mallee_aoe::pattern::pattern(len, 0x9e37_79b9_7f4a_7c15)
}

fn sha256_file(p: &std::path::Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// Launches `emi` again on the node that ran it before and checks, through DescribeNodes, that
/// its cache served kernel, ramdisk and root (no download, three more hits) from RAM. Returns
/// the instance and the node's report after the launch.
fn cached_launch(fe: &Frontend, node: &Vm, node_id: &str, emi: &str) -> (String, NodeReport) {
    let first = fe.node(node_id).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        (
            first.storage.as_str(),
            first.downloads,
            first.state.as_str()
        ),
        ("ram", 3, "up"),
        "the diskless node's cache after the first launch: {first:?}"
    );
    let fetches = |vm: &Vm| -> Vec<String> {
        let text = vm.console().text();
        let lines = text.lines().filter(|l| l.contains("agent: fetched "));
        lines.map(str::to_string).collect()
    };
    let fetched_before = fetches(node);
    let asked = Instant::now();
    let id = fe.run_instances(emi, 1).unwrap_or_else(|e| panic!("{e:#}"))[0].clone();
    fe.wait_console(&id, cloud::GUEST_MARKER, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e:#}; node: {}", node.console().tail(30)));
    let cached = asked.elapsed();
    // The node's own log agrees with its counters: it fetched nothing for this launch.
    let fetched_after = fetches(node);
    assert!(
        fetched_before.len() >= 3 && fetched_after == fetched_before,
        "the node's log shows fetches for the cached launch: before {fetched_before:?}, after {fetched_after:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let second = loop {
        let n = fe.node(node_id).unwrap_or_else(|e| panic!("{e:#}"));
        if n.hits >= first.hits + 3 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        second.downloads == first.downloads && second.hits >= first.hits + 3,
        "the second launch was not served from the cache: before {first:?}, after {second:?}"
    );
    assert!(second.instances.contains(&id), "{second:?}");
    report_figure(&format!(
        "figure: cloud, cached launch RunInstances to guest marker {:.1} s",
        cached.as_secs_f64()
    ));
    (id, second)
}

/// How a node is rebooted mid-run.
#[derive(Debug, Clone, Copy)]
enum Reboot {
    /// QMP system_reset: RAM lost, back through the firmware and PXE at once.
    Reset,
    /// ctrl-alt-delete: mallee-init stops everything (the agent does not report the VMMs it
    /// stops as failed), syncs and reboots.
    CtrlAltDelete,
}

/// Reboots `node` while it runs instance `id`. The harness launches QEMU with -no-reboot,
/// which turns a reset into QEMU exiting, so the VM is told to reset instead first. The node
/// goes back through PXE; its token went with its RAM, so the frontend lets it enroll again
/// once it marked the old record down (`node_deadline_secs` without a report: a claim on a
/// live node's id needs that node's token), and it registers with a new boot id; the frontend
/// reports `Server.NodeRebooted` and has it run the instance again (level-triggered: still
/// desired), which prints a new guest marker.
fn reboot_mid_run(
    fe: &Frontend,
    node: &mut Vm,
    node_id: &str,
    id: &str,
    before: &NodeReport,
    how: Reboot,
    root: Option<&str>,
) {
    let snapshot = fe.console_output(id).unwrap_or_else(|e| panic!("{e:#}"));
    let mut seen = vec![fe.instance_state(id).unwrap_or_else(|e| panic!("{e:#}"))];
    // Only what the node prints from now on counts (it may have rebooted before).
    let from = node.console().text().len();
    let since = |node: &Vm| {
        node.console()
            .text()
            .get(from..)
            .unwrap_or_default()
            .to_string()
    };
    node.reset_on_reboot().unwrap_or_else(|e| panic!("{e}"));
    let reset = Instant::now();
    match how {
        Reboot::Reset => node.qmp("system_reset").map(drop),
        Reboot::CtrlAltDelete => node.ctrl_alt_delete(),
    }
    .unwrap_or_else(|e| panic!("{e}"));
    // A kernel booting again, then the agent registering.
    let rebooted = format!("(?s)Linux version.*agent: registered as {node_id}");
    let back = regex::Regex::new(&rebooted).unwrap();
    while !back.is_match(&since(node)) {
        assert!(
            reset.elapsed() < Duration::from_secs(300),
            "the node did not come back from {how:?}: {}",
            node.console().tail(30)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let registered_again = reset.elapsed();
    if let Reboot::CtrlAltDelete = how {
        let text = since(node);
        assert!(
            text.contains(&format!("agent: {id} stopped by the node's shutdown"))
                && !text.contains(&format!("agent: {id} failed")),
            "the clean reboot's stop of {id} was not told apart from a failure: {}",
            node.console().tail(40)
        );
    }
    let deadline = reset + Duration::from_secs(300);
    let ran_again = regex::Regex::new(&format!("{rebooted}.*agent: {id} running")).unwrap();
    let (code, message) = loop {
        let state = fe.instance_state(id).unwrap_or_else(|e| panic!("{e:#}"));
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        let reason = fe.state_reason(id).unwrap_or_else(|e| panic!("{e:#}"));
        if state == "running" && reason.is_some() && ran_again.is_match(&since(node)) {
            break reason.unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "{id} not running again after {how:?} (states {seen:?}, reason {reason:?}): {}",
            node.console().tail(30)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let running_again = reset.elapsed();
    assert_eq!(code, "Server.NodeRebooted", "{message}");
    let restarted = match root {
        Some(root) => format!("restarted from its root volume {root}"),
        None => "instance-store disk contents lost".to_string(),
    };
    assert!(
        message.contains(&format!("node {node_id} rebooted at")) && message.contains(&restarted),
        "{message}"
    );
    // The guest's marker names its boot: the instance ran again only when a marker with a
    // boot id the console had not shown before arrives (the old console alone never passes).
    let old_boots = guest_boots(&snapshot);
    assert!(
        !old_boots.is_empty(),
        "no guest boot before {how:?}: {snapshot}"
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = fe.console_output(id).unwrap_or_else(|e| panic!("{e:#}"));
        if let Some((ip, _)) = guest_boots(&out)
            .into_iter()
            .find(|b| !old_boots.contains(b))
        {
            // The instance came back with the address it had (its MAC and address are the
            // frontend's record, not the node's).
            let before: Vec<&String> = old_boots.iter().map(|(ip, _)| ip).collect();
            assert!(
                before.iter().all(|b| **b == ip),
                "{id} came back as {ip}, it was {before:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{id} printed no guest marker of a new boot after {how:?} (boots before: {old_boots:?}): {out}"
        );
        std::thread::sleep(Duration::from_millis(1000));
    }
    let marker_again = reset.elapsed();
    let after = fe.node(node_id).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        after.boot_id != before.boot_id
            && !after.boot_id.is_empty()
            && (after.state.as_str(), after.admission.as_str()) == ("up", "admitted"),
        "DescribeNodes after {how:?}: {after:?}, before: {before:?}"
    );
    // Kernel, ramdisk and (instance-store) the root image.
    let parts = if root.is_some() { 2 } else { 3 };
    assert_eq!(
        (after.storage.as_str(), after.downloads),
        ("ram", parts),
        "the RAM cache is lost with a reboot: the images are fetched again: {after:?}"
    );
    report_figure(&format!(
        "figure: cloud, node {how:?} mid-run to registered again {:.1} s, to its instance running again {:.1} s, to the guest marker {:.1} s (states seen by DescribeInstances: {})",
        registered_again.as_secs_f64(),
        running_again.as_secs_f64(),
        marker_again.as_secs_f64(),
        seen.join(" -> ")
    ));
}

/// The address and boot id in each guest marker of a console text.
fn guest_boots(console: &str) -> Vec<(String, String)> {
    let marker = regex::Regex::new(&format!(
        r"{}(\S+) boot_ms=\d+ boot_id=([0-9a-f-]{{36}})",
        regex::escape(cloud::GUEST_MARKER)
    ))
    .unwrap();
    (marker.captures_iter(console))
        .map(|c| (c[1].to_string(), c[2].to_string()))
        .collect()
}
