//! `just bench net`: instance networking under `mallee-vmm` against QEMU (`-enable-kvm`,
//! `-netdev tap,vhost=on` + virtio-net-pci) in one cloud run: the frontend appliance (the
//! gateway, NAT, the group's rules) and two nodes booted from an image whose `/bin/mallee-vmm`
//! is the `qemu_peer` example, so each instance's VMM is chosen by its user data while the agent,
//! taps, VLAN bridges, addresses and rules are the cloud's own for both. Four test guests in one
//! security group, each side's server and client on different nodes, run the netbench service
//! (`mallee_proto::netbench`, the user-data line `netbench PORT`). Per side, in alternating
//! order and best of the rounds:
//!
//! * `instance-tcp` / `instance-rtt`: the client guest, asked from the outside host, sends to
//!   the server guest across the nodes over their VLAN (MB/s), then times 64-byte round trips
//!   (p50 µs);
//! * `outside-tcp` / `outside-rtt`: the outside host sends to the server guest's public address
//!   through the frontend's NAT, and times round trips to it.
//!
//! Prints `bench: net <case> ours=<v> qemu=<v> unit=<MB/s|us> ratio=<x>`, the ratio ours ÷ QEMU
//! for throughput and QEMU ÷ ours for latency (above 1: ours is better). A run that fails on
//! either side fails the benchmark with its reason.
//!
//! Env: `NET_BENCH_SECS` (seconds of sending per case and side, default 5), `NET_BENCH_ROUNDS`
//! (default 5), `NET_BENCH_PINGS` (round trips per latency case, default 200).

#[path = "../tests/support/vmm_images.rs"]
mod vmm_images;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use mallee_proto::netbench;
use mallee_qemu_tests::cloud::{self, Frontend, NODE_READY, PRIVATE_IP};
use mallee_qemu_tests::outside::Outside;
use mallee_qemu_tests::vm::Nic;
use mallee_qemu_tests::{env_u64, Images, Segment, TestDir, Vm, VmConfig};

/// The frontend's disk.
const DISK_MIB: u64 = 3072;
/// Each node's memory (the image cache, two instances' disks and RAM, QEMU); its two vCPUs are
/// room for two m1.small instances.
const NODE_MIB: u32 = 2048;
/// The guests' netbench port.
const PORT: u16 = 5201;
/// The benchmark's security group.
const GROUP: &str = "netbench";
/// The enrollment secret the site settings give the frontend and the nodes' command line.
const SECRET: &str = "netbench-enrollment";
/// How long the cloud may take to come up and the guests to answer.
const PATIENCE: Duration = Duration::from_secs(600);

/// One side of the comparison: the VMM its guests run under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Ours,
    Qemu,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Ours => "ours",
            Side::Qemu => "qemu",
        }
    }

    /// The user data that starts the netbench service under this side's VMM.
    fn user_data(self) -> String {
        match self {
            Side::Ours => format!("netbench {PORT}\n"),
            Side::Qemu => format!("#mallee-peer: qemu\nnetbench {PORT}\n"),
        }
    }
}

/// One side's two guests: where the outside host reaches them and where they reach each other.
struct Pair {
    side: Side,
    server_private: SocketAddrV4,
    server_public: SocketAddrV4,
    client_public: SocketAddrV4,
}

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    InstanceTcp,
    InstanceRtt,
    OutsideTcp,
    OutsideRtt,
}

impl Case {
    const ALL: [Case; 4] = [
        Case::InstanceTcp,
        Case::InstanceRtt,
        Case::OutsideTcp,
        Case::OutsideRtt,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::InstanceTcp => "instance-tcp",
            Case::InstanceRtt => "instance-rtt",
            Case::OutsideTcp => "outside-tcp",
            Case::OutsideRtt => "outside-rtt",
        }
    }

    fn is_latency(self) -> bool {
        matches!(self, Case::InstanceRtt | Case::OutsideRtt)
    }

    fn unit(self) -> &'static str {
        if self.is_latency() {
            "us"
        } else {
            "MB/s"
        }
    }

    /// Whether `a` is a better figure than `b`.
    fn better(self, a: f64, b: f64) -> bool {
        if self.is_latency() {
            a < b
        } else {
            a > b
        }
    }
}

/// How much work each measurement gets.
#[derive(Clone, Copy)]
struct Load {
    send: Duration,
    pings: u32,
}

fn mb_per_s(sent: &netbench::Sent) -> f64 {
    sent.bits_per_second() / 8e6
}

/// One measurement of `case` on `pair`, from the outside host.
fn measure(outside: &Outside, pair: &Pair, case: Case, load: Load) -> Result<f64, String> {
    let (server, client, public) = (pair.server_private, pair.client_public, pair.server_public);
    // Asks the client guest to carry out `command` against the server guest.
    let ask = move |command: netbench::Command| {
        netbench::ask(client, &command.to_string(), command.answer_timeout())
    };
    let work = move || -> Result<f64, netbench::NetbenchError> {
        Ok(match case {
            Case::InstanceTcp => {
                let millis = load.send.as_millis() as u64;
                let answer = ask(netbench::Command::Send { to: server, millis })?;
                mb_per_s(&netbench::Sent::parse_answer(&answer)?)
            }
            Case::InstanceRtt => {
                let answer = ask(netbench::Command::Rtt {
                    to: server,
                    count: load.pings,
                })?;
                netbench::Rtt::parse_answer(&answer)?.p50_us as f64
            }
            Case::OutsideTcp => mb_per_s(&netbench::sink_to(public, load.send)?),
            Case::OutsideRtt => netbench::rtt_to(public, load.pings)?.p50() as f64,
        })
    };
    match outside.within(work) {
        Ok(Some(Ok(v))) => Ok(v),
        Ok(Some(Err(e))) => Err(format!("{} {}: {e}", pair.side.name(), case.name())),
        Ok(None) => Err(format!(
            "{} {}: the thread panicked",
            pair.side.name(),
            case.name()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Boots node `n` (1 or 2) from the peer image on the segment with the parameters the
/// frontend's PXE script gives its nodes (`frontend_key`: the pin of its TLS key).
fn boot_node(
    dir: &TestDir,
    segment: &Segment,
    image: &mallee_qemu_tests::NetbootImage,
    frontend_key: &str,
    n: u8,
) -> Vm {
    VmConfig::new(&format!("node{n}"))
        .netboot(image)
        .nested_kvm(true)
        .memory_mib(NODE_MIB)
        .cpus(2)
        .nic(Nic::segment(segment).mac(&format!("52:54:00:77:00:0{n}")))
        .cmdline(&format!(
            "mallee.frontend={PRIVATE_IP}:{} mallee.cluster=cluster1 mallee.secret={SECRET} \
             mallee.frontend_key={frontend_key}",
            cloud::API_PORT
        ))
        .launch(dir)
        .expect("start a node VM")
}

/// Launches one guest of `side`; its id.
fn launch(fe: &Frontend, emi: &str, side: Side) -> String {
    let data = side.user_data();
    fe.run_instances_with(emi, 1, &["--security-groups", GROUP, "--user-data", &data])
        .unwrap_or_else(|e| panic!("{e:#}"))
        .remove(0)
}

fn address(text: &str, port: u16) -> SocketAddrV4 {
    let ip: Ipv4Addr = text
        .parse()
        .unwrap_or_else(|e| panic!("address {text:?}: {e}"));
    SocketAddrV4::new(ip, port)
}

/// Waits until the guest's netbench service answers a round trip from the outside host.
fn wait_serving(outside: &Outside, fe: &Frontend, id: &str, at: SocketAddrV4) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match outside.within(move || netbench::rtt_to(at, 1)) {
            Ok(Some(Ok(_))) => return,
            other => assert!(
                Instant::now() < deadline,
                "{id}'s netbench at {at} never answered ({other:?}); console:\n{}",
                fe.console_output(id).unwrap_or_default()
            ),
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn main() {
    // `cargo test --all-targets` runs harness-less benches without arguments; only `cargo bench`
    // (which passes --bench) should spend many minutes in nested VMs.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let load = Load {
        send: Duration::from_secs(env_u64("NET_BENCH_SECS", 5)),
        pings: env_u64("NET_BENCH_PINGS", 200) as u32,
    };
    let rounds = env_u64("NET_BENCH_ROUNDS", 5);
    let started = Instant::now();
    let progress = |what: &str| {
        eprintln!(
            "bench-net: [{:>4.0} s] {what}",
            started.elapsed().as_secs_f64()
        )
    };
    Images::guest().expect("the test guest bundle (run `just images`)");
    Images::appliance().expect("the appliance image (run `just images`)");
    let dir = TestDir::new("net_bench");
    let bin = vmm_images::build_static(&["qemu_peer"]);
    let image = vmm_images::peer_node_image(&dir, &bin);
    let segment = Segment::new();
    let disk = dir.file("frontend-disk.img");
    cloud::flash_appliance(&disk, DISK_MIB).unwrap_or_else(|e| panic!("{e}"));
    // The nodes boot straight from the peer image, not from the frontend's PXE script, so the
    // site settings give the enrollment secret their command line carries.
    cloud::site_settings(&disk, &format!("[ec2]\ncluster_secret = \"{SECRET}\"\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let outside = Outside::new(&dir).unwrap_or_else(|e| panic!("{e}"));
    progress("frontend booting");
    let fe = cloud::start_frontend_with(
        &dir,
        "frontend",
        Nic::segment(&segment),
        &disk,
        Some(outside.nic()),
        Duration::from_secs(300),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    progress("frontend up; nodes booting");
    let mut nodes = [
        boot_node(&dir, &segment, &image, &fe.frontend_key, 1),
        boot_node(&dir, &segment, &image, &fe.frontend_key, 2),
    ];
    for node in &mut nodes {
        node.wait_for(NODE_READY, PATIENCE)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let deadline = Instant::now() + PATIENCE;
    while fe.capacity().unwrap_or_else(|e| panic!("{e}")) < 2 {
        assert!(
            Instant::now() < deadline,
            "the nodes never both registered:\n{}\n{}",
            nodes[0].console().tail(20),
            nodes[1].console().tail(20)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    progress("nodes registered; uploading the test image");
    let image = fe
        .upload_test_image("netbench")
        .unwrap_or_else(|e| panic!("{e:#}"));
    fe.create_group(GROUP, "netbench guests")
        .unwrap_or_else(|e| panic!("{e}"));
    fe.tcp_ingress(
        "authorize-security-group-ingress",
        GROUP,
        PORT,
        &["--cidr", "0.0.0.0/0"],
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // Server then client for each side: the scheduler puts each on the emptier node, so a
    // side's two guests land on different nodes (checked below).
    let mut pairs = Vec::new();
    for side in [Side::Ours, Side::Qemu] {
        let server = launch(&fe, &image.emi, side);
        let client = launch(&fe, &image.emi, side);
        pairs.push((side, server, client));
    }
    for (side, server, client) in &pairs {
        for id in [server, client] {
            fe.wait_state(id, "running", PATIENCE)
                .unwrap_or_else(|e| panic!("{e:#}"));
        }
        let hosts = fe.describe_nodes().unwrap_or_else(|e| panic!("{e:#}"));
        let host = |id: &String| {
            hosts
                .iter()
                .find(|n| n.instances.contains(id))
                .map(|n| n.id.clone())
        };
        assert!(
            host(server).is_some() && host(server) != host(client),
            "{}: server {server} on {:?} and client {client} on {:?} are not on different nodes",
            side.name(),
            host(server),
            host(client)
        );
    }
    let pairs: Vec<Pair> = (pairs.iter())
        .map(|(side, server, client)| {
            let public =
                |id: &str| address(&fe.public_ip(id).unwrap_or_else(|e| panic!("{e:#}")), PORT);
            let private = address(
                &fe.private_ip(server).unwrap_or_else(|e| panic!("{e:#}")),
                PORT,
            );
            for (id, at) in [(server, public(server)), (client, public(client))] {
                wait_serving(&outside, &fe, id, at);
            }
            progress(&format!(
                "{} guests serving: {server} and {client}",
                side.name()
            ));
            Pair {
                side: *side,
                server_private: private,
                server_public: public(server),
                client_public: public(client),
            }
        })
        .collect();

    let mut best = [[None::<f64>; 2]; Case::ALL.len()];
    for round in 0..rounds {
        for (c, case) in Case::ALL.into_iter().enumerate() {
            // Alternate which side goes first, round by round.
            let order: Vec<&Pair> = match round % 2 {
                0 => pairs.iter().collect(),
                _ => pairs.iter().rev().collect(),
            };
            for pair in order {
                let v = measure(&outside, pair, case, load)
                    .unwrap_or_else(|e| panic!("bench: net failed: {e}"));
                progress(&format!(
                    "round {} {} {} {v:.2} {}",
                    round + 1,
                    case.name(),
                    pair.side.name(),
                    case.unit()
                ));
                let slot = &mut best[c][pair.side as usize];
                if slot.is_none_or(|b| case.better(v, b)) {
                    *slot = Some(v);
                }
            }
        }
    }
    for (c, case) in Case::ALL.into_iter().enumerate() {
        let [Some(ours), Some(qemu)] = best[c] else {
            panic!("bench: net {}: a side has no figure", case.name());
        };
        assert!(
            ours > 0.0 && qemu > 0.0,
            "bench: net {}: a zero figure (ours={ours} qemu={qemu})",
            case.name()
        );
        let ratio = if case.is_latency() {
            qemu / ours
        } else {
            ours / qemu
        };
        println!(
            "bench: net {} ours={ours:.2} qemu={qemu:.2} unit={} ratio={ratio:.2}",
            case.name(),
            case.unit()
        );
    }
    progress("done");
}
