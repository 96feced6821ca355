//! Bounded randomized fuzzing of EC2 Query parameter decoding, node protocol messages and the
//! scheduler (the cargo-fuzz target `ec2_params` runs the decoding unbounded). Deterministic
//! seeds, so a failure reproduces.

use mallee_frontend::ec2::params::Params;
use mallee_frontend::scheduler::{place, slots, Need, NodeLoad};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn text(&mut self, alphabet: &[u8], max: u64) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n)
            .map(|_| alphabet[self.below(alphabet.len() as u64) as usize])
            .collect()
    }
}

const QUERY: &[u8] =
    b"Filter.1.Name=Value.2&InstanceId.3IpPermissions.1.IpRanges.0%zz+=&\xff\xc3\xbc-";

#[test]
fn query_parameters_decode_without_panics_and_lists_stay_ordered() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..20_000 {
        let raw = rng.text(QUERY, 80);
        let p = Params::parse(&String::from_utf8_lossy(&raw));
        let _ = p.filters();
        let _ = p.bool("DryRun");
        for s in p.structs("IpPermissions") {
            let _ = s.int("FromPort");
            let _ = s.structs("IpRanges");
        }
        let _ = p.list("InstanceId");
    }
    let p = Params::parse("X.10=c&X.2=b&X.1=a&X.x=ignored&X.=ignored");
    assert_eq!(p.list("X"), vec!["a", "b", "c"]);
}

#[test]
fn mutated_node_messages_are_errors_or_values_never_panics() {
    let valid = br#"{"instances":[{"instance_id":"i-1","state":"running","reason":null,"reboot_count":2}],"image_cache":[{"sha256":"ab","size":3}]}"#;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut parsed = 0;
    for _ in 0..20_000 {
        let mut m = valid.to_vec();
        for _ in 0..=rng.below(3) {
            let i = rng.below(m.len() as u64) as usize;
            match rng.below(3) {
                0 => m[i] = rng.next() as u8,
                1 => {
                    m.remove(i);
                }
                _ => m.insert(i, b"{}[]\",:0"[rng.below(8) as usize]),
            }
        }
        if let Ok(state) = mallee_proto::decode::<mallee_proto::ActualState>(&m) {
            parsed += 1;
            let again: mallee_proto::ActualState =
                mallee_proto::decode(&mallee_proto::encode(&state)).unwrap();
            assert_eq!(again, state);
        }
    }
    assert!(
        parsed > 0,
        "some mutations (e.g. of digits) must still parse"
    );
}

#[test]
fn placements_never_overcommit_and_fail_only_when_min_does_not_fit() {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for _ in 0..5_000 {
        let nodes: Vec<NodeLoad> = (0..rng.below(4))
            .map(|i| {
                let cpus = rng.below(9) as u32;
                let memory_mib = rng.below(4097);
                NodeLoad {
                    id: format!("n{i}"),
                    zone: if rng.below(4) == 0 {
                        "other".into()
                    } else {
                        "z".into()
                    },
                    up: rng.below(5) != 0,
                    cpus,
                    memory_mib,
                    used_vcpus: rng.below(cpus as u64 + 1) as u32,
                    used_mib: rng.below(memory_mib + 1),
                }
            })
            .collect();
        let need = Need {
            vcpus: 1 + rng.below(4) as u32,
            memory_mib: 128 * (1 + rng.below(8)),
        };
        let min = 1 + rng.below(4) as u32;
        let max = min + rng.below(4) as u32;
        let room: u64 = nodes
            .iter()
            .filter(|n| n.zone == "z")
            .map(|n| slots(n, need))
            .sum();
        match place(&nodes, "z", need, min, max) {
            Ok(placed) => {
                assert!(placed.len() as u32 >= min && placed.len() as u32 <= max);
                assert_eq!(
                    placed.len() as u64,
                    room.min(max as u64),
                    "greedy placement must use all room"
                );
                for n in &nodes {
                    let k = placed.iter().filter(|p| **p == n.id).count() as u64;
                    assert!(n.zone == "z" && n.up || k == 0, "placed on {n:?}");
                    assert!(
                        n.used_vcpus as u64 + k * need.vcpus as u64 <= n.cpus as u64,
                        "vCPU overcommit on {n:?}"
                    );
                    assert!(
                        n.used_mib + k * need.memory_mib <= n.memory_mib,
                        "memory overcommit on {n:?}"
                    );
                }
            }
            Err(shortage) => {
                assert!(room < min as u64, "refused although {room} fit: {shortage}");
                assert!(shortage.0.contains("zone z"), "{shortage}");
            }
        }
    }
}
