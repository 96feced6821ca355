//! The scheduler: a plain function that places instances on nodes of one zone by free vCPUs
//! and memory, and says why when it cannot. It reads loads the caller computed (from stored
//! nodes and instances, inside the RunInstances transaction) and never touches the store.

/// One node's capacity and what its instances already use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLoad {
    pub id: String,
    pub zone: String,
    pub up: bool,
    pub cpus: u32,
    pub memory_mib: u64,
    pub used_vcpus: u32,
    pub used_mib: u64,
}

impl NodeLoad {
    fn free_vcpus(&self) -> u32 {
        self.cpus.saturating_sub(self.used_vcpus)
    }

    fn free_mib(&self) -> u64 {
        self.memory_mib.saturating_sub(self.used_mib)
    }

    fn fits(&self, vcpus: u32, mib: u64) -> bool {
        self.free_vcpus() >= vcpus && self.free_mib() >= mib
    }
}

/// What one instance needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub vcpus: u32,
    pub memory_mib: u64,
}

/// Why not even `min` instances fit; the message names what ran out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Shortage(pub String);

/// How many of `need` fit on `node` now.
pub fn slots(node: &NodeLoad, need: Need) -> u64 {
    if !node.up {
        return 0;
    }
    let by_cpu = node
        .free_vcpus()
        .checked_div(need.vcpus)
        .unwrap_or(u32::MAX) as u64;
    let by_mem = node
        .free_mib()
        .checked_div(need.memory_mib)
        .unwrap_or(u64::MAX);
    by_cpu.min(by_mem)
}

/// Places between `min` and `max` instances in `zone`, one at a time on the node with the
/// most free vCPUs (then memory), so load spreads. Returns one node id per placed instance.
pub fn place(
    nodes: &[NodeLoad],
    zone: &str,
    need: Need,
    min: u32,
    max: u32,
) -> Result<Vec<String>, Shortage> {
    let mut loads: Vec<NodeLoad> = nodes.iter().filter(|n| n.zone == zone).cloned().collect();
    let mut placed = Vec::new();
    while placed.len() < max as usize {
        let best = loads
            .iter_mut()
            .filter(|n| n.up && n.fits(need.vcpus, need.memory_mib))
            .max_by(|a, b| {
                (a.free_vcpus(), a.free_mib(), std::cmp::Reverse(&a.id)).cmp(&(
                    b.free_vcpus(),
                    b.free_mib(),
                    std::cmp::Reverse(&b.id),
                ))
            });
        let Some(node) = best else { break };
        node.used_vcpus += need.vcpus;
        node.used_mib += need.memory_mib;
        placed.push(node.id.clone());
    }
    if placed.len() >= min as usize {
        return Ok(placed);
    }
    Err(Shortage(explain(&loads, zone, need, min, placed.len())))
}

fn explain(loads: &[NodeLoad], zone: &str, need: Need, min: u32, fitted: usize) -> String {
    let head = format!(
        "zone {zone}: room for {fitted} of the {min} instances requested ({} vCPU, {} MiB each)",
        need.vcpus, need.memory_mib
    );
    let up: Vec<&NodeLoad> = loads.iter().filter(|n| n.up).collect();
    if loads.is_empty() {
        return format!("{head}; no node is registered in the zone");
    }
    if up.is_empty() {
        return format!("{head}; all {} nodes of the zone are down", loads.len());
    }
    let cpu_short = up.iter().all(|n| n.free_vcpus() < need.vcpus);
    let mem_short = up.iter().all(|n| n.free_mib() < need.memory_mib);
    let what = match (cpu_short, mem_short) {
        (true, true) => "vCPUs and memory ran out",
        (true, false) => "vCPUs ran out",
        (false, true) => "memory ran out",
        (false, false) => "no single node has both enough vCPUs and memory",
    };
    let detail: Vec<String> = up
        .iter()
        .map(|n| {
            format!(
                "{} has {} vCPU, {} MiB free",
                n.id,
                n.free_vcpus(),
                n.free_mib()
            )
        })
        .collect();
    format!("{head}; {what}: {}", detail.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, cpus: u32, mib: u64) -> NodeLoad {
        NodeLoad {
            id: id.into(),
            zone: "z".into(),
            up: true,
            cpus,
            memory_mib: mib,
            used_vcpus: 0,
            used_mib: 0,
        }
    }

    const SMALL: Need = Need {
        vcpus: 1,
        memory_mib: 256,
    };

    #[test]
    fn instances_spread_over_the_node_with_most_room() {
        let nodes = [node("a", 2, 4096), node("b", 4, 4096)];
        let got = place(&nodes, "z", SMALL, 1, 4).unwrap();
        assert_eq!(got, vec!["b", "b", "a", "b"]);
    }

    #[test]
    fn max_count_is_trimmed_to_what_fits_but_min_must_fit() {
        let nodes = [node("a", 2, 4096)];
        assert_eq!(place(&nodes, "z", SMALL, 1, 5).unwrap().len(), 2);
        let e = place(&nodes, "z", SMALL, 3, 5).unwrap_err();
        assert!(e.0.contains("room for 2 of the 3"), "{e}");
        assert!(e.0.contains("vCPUs ran out"), "{e}");
        assert!(e.0.contains("a has 0 vCPU, 3584 MiB free"), "{e}");
    }

    #[test]
    fn the_shortage_names_memory_down_nodes_and_other_zones() {
        let e = place(&[node("a", 8, 300)], "z", SMALL, 2, 2).unwrap_err();
        assert!(e.0.contains("memory ran out"), "{e}");
        let mut down = node("a", 8, 8192);
        down.up = false;
        let e = place(&[down], "z", SMALL, 1, 1).unwrap_err();
        assert!(e.0.contains("nodes of the zone are down"), "{e}");
        let e = place(&[node("a", 8, 8192)], "elsewhere", SMALL, 1, 1).unwrap_err();
        assert!(e.0.contains("no node is registered"), "{e}");
    }

    #[test]
    fn slots_counts_what_still_fits() {
        let mut n = node("a", 4, 1024);
        n.used_vcpus = 1;
        assert_eq!(slots(&n, SMALL), 3);
        n.up = false;
        assert_eq!(slots(&n, SMALL), 0);
    }
}
