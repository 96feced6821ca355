//! Launching instances: what a launch resolved to (image, kernel, ramdisk, type, key, groups,
//! user data) and writing the instance records the scheduler placed, which are the nodes'
//! desired state. Resolving a request's parameters is the API's (`ec2/run.rs`).

use super::config::{NetMode, NetworkConfig};
use super::model::{
    new_id, Image, Instance, InstanceType, KeyPair, ShutdownPolicy, State, INSTANCE,
};
use super::networks::{self, Exhausted, NetworkError};
use super::public;
use super::tags::{self, ResourceType, TagSet};
use crate::store::{CloudTx, StoreError};
use mallee_proto::{Goal, InstanceNetwork, MetadataDocument, PublicKey, Segment};
use std::net::Ipv4Addr;

/// Everything a launch resolved to before placement.
pub struct Launch {
    pub owner: String,
    pub image: Image,
    pub kernel: Option<Image>,
    pub ramdisk: Option<Image>,
    pub itype: &'static InstanceType,
    pub key: Option<KeyPair>,
    /// (group id, group name).
    pub groups: Vec<(String, String)>,
    pub user_data: Option<String>,
    pub metadata_options: mallee_proto::MetadataOptions,
    pub client_token: Option<String>,
    pub min: u32,
    pub max: u32,
}

/// Writes one pending instance of `l` per entry of `nodes` (the scheduler's placement in
/// `zone`), all in one new reservation, each with the next MAC and (MANAGED modes) the lowest
/// free address of its first group's network, made now when the group has none, and a dynamic
/// public address from `public_pool` while it lasts. When the
/// network has fewer free addresses than nodes, fewer are launched, but never fewer than
/// `l.min`.
pub fn write_instances(
    tx: &CloudTx<'_>,
    l: &Launch,
    net_cfg: &NetworkConfig,
    public_pool: &[Ipv4Addr],
    zone: &str,
    nodes: &[String],
    now: i64,
) -> Result<Vec<Instance>, NetworkError> {
    let reservation_id = new_id("r", 17);
    let addressing = match net_cfg.mode {
        NetMode::System => None,
        NetMode::Managed | NetMode::ManagedNoVlan => {
            let group = l.groups.first().expect("a launch has a group");
            let (net, addrs) = networks::assign(tx, net_cfg, &l.owner, group, nodes.len(), now)?;
            if addrs.len() < l.min as usize {
                return Err(Exhausted::Addresses {
                    group: group.0.clone(),
                    subnet: net.subnet,
                    free: addrs.len(),
                    want: l.min as usize,
                }
                .into());
            }
            Some((net, addrs))
        }
    };
    let count = addressing.as_ref().map_or(nodes.len(), |(_, a)| a.len());
    // Each instance of a MANAGED network gets a dynamic public address while the pool lasts.
    let mut dynamic = match &addressing {
        Some(_) => public::free(tx, public_pool)?.into_iter(),
        None => Vec::new().into_iter(),
    };
    let mut out = Vec::new();
    for (index, node) in nodes.iter().take(count).enumerate() {
        let n = tx.next_counter("instance-address")?;
        let mac = mallee_proto::instance_mac(n as u32);
        let id = new_id("i", 17);
        // SYSTEM: the site's DHCP server picks the address; none is known here.
        let (private_ip, hostname, network) = match &addressing {
            Some((net, addrs)) => {
                let ip = addrs[index];
                let hostname = format!("ip-{}", ip.to_string().replace('.', "-"));
                let network = networks::instance_network(net_cfg, net, ip, &hostname);
                (ip.to_string(), hostname, network)
            }
            None => {
                let network = InstanceNetwork {
                    segment: Segment::System,
                    address: None,
                };
                (String::new(), id.clone(), network)
            }
        };
        let metadata = MetadataDocument {
            instance_id: id.clone(),
            ami_id: l.image.id.clone(),
            ami_launch_index: index as u32,
            reservation_id: reservation_id.clone(),
            instance_type: l.itype.name.to_string(),
            hostname,
            local_ipv4: private_ip.clone(),
            public_ipv4: None,
            mac: mac.to_string(),
            availability_zone: zone.to_string(),
            kernel_id: l.kernel.as_ref().map(|k| k.id.clone()),
            ramdisk_id: l.ramdisk.as_ref().map(|r| r.id.clone()),
            security_groups: l.groups.iter().map(|(_, n)| n.clone()).collect(),
            public_keys: l
                .key
                .iter()
                .map(|k| PublicKey {
                    name: k.name.clone(),
                    openssh: format!("{} {}", k.public_key, k.name),
                })
                .collect(),
        };
        let mut inst = Instance {
            id,
            owner: l.owner.clone(),
            reservation_id: reservation_id.clone(),
            image_id: l.image.id.clone(),
            kernel_id: metadata.kernel_id.clone(),
            ramdisk_id: metadata.ramdisk_id.clone(),
            instance_type: l.itype.name.to_string(),
            vcpus: l.itype.vcpus,
            memory_mib: l.itype.memory_mib,
            key_name: l.key.as_ref().map(|k| k.name.clone()),
            user_data: l.user_data.clone(),
            groups: l.groups.clone(),
            zone: zone.to_string(),
            node: node.clone(),
            private_ip,
            public_ip: None,
            mac,
            launch_index: index as u32,
            client_token: l.client_token.clone(),
            state: State::Pending,
            goal: Goal::Running,
            reboot_count: 0,
            launch_ms: now,
            state_ms: now,
            reason: None,
            node_down: false,
            image: l.image.proto_ref(),
            kernel: l.kernel.as_ref().map(Image::proto_ref),
            ramdisk: l.ramdisk.as_ref().map(Image::proto_ref),
            metadata,
            network: Some(network),
            address_taken: false,
            metadata_options: l.metadata_options,
            metadata_options_served: None,
            shutdown: Default::default(),
            root_volume: None, // EBS-backed: set with the volume the launch makes
            image_hold: None,
            root_device: l.image.root_device,
        };
        public::set(&mut inst, dynamic.next().map(|ip| ip.to_string()));
        tx.put(INSTANCE, &inst.id, &inst.owner, None, &inst)?;
        tracing::info!(instance = %inst.id, node, zone, instance_type = l.itype.name, vcpus = l.itype.vcpus, memory_mib = l.itype.memory_mib, "scheduled: node with the most free vCPUs, then memory");
        out.push(inst);
    }
    Ok(out)
}

/// Gives the instances [`write_instances`] just wrote their shutdown policy (RunInstances'
/// DisableApiTermination and InstanceInitiatedShutdownBehavior) and the tags asked for them
/// (TagSpecifications of type `instance`), in the launch's transaction.
pub fn settle(
    tx: &CloudTx<'_>,
    instances: &mut [Instance],
    shutdown: ShutdownPolicy,
    tags: &TagSet,
) -> Result<(), StoreError> {
    for i in instances {
        if i.shutdown != shutdown {
            i.shutdown = shutdown;
            tx.put(INSTANCE, &i.id, &i.owner, None, i)?;
        }
        if !tags.is_empty() {
            tags::attach(tx, &i.owner, &i.id, ResourceType::Instance, tags)?;
        }
    }
    Ok(())
}
