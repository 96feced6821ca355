//! DescribeNetworks: the instance networks the frontend has allocated (`[network]`), for
//! administrators only: the mode, whether the frontend's init has applied the gateway the
//! daemon handed it (`gatewayState`: off, pending, applied or failed), then per security group
//! with instances its VLAN tag (none in MANAGED-NOVLAN), subnet slice and gateway. A Mallee
//! action like DescribeNodes (`scripts/mallee-admin ... DescribeNetworks`); Eucalyptus showed
//! this only in its logs.

use super::nodes::authorize;
use super::xml::{self, time};
use super::{Call, Ec2, Ec2Error};
use crate::cloud::networks::{self, Network};
use crate::cloud::NetworkConfig;
use crate::gateway::{self, Status};

/// The response document.
pub fn render(
    action: &str,
    rid: &str,
    cfg: &NetworkConfig,
    gateway: &Status,
    nets: &[Network],
) -> String {
    let mut x = xml::response(action, rid);
    x.field("mode", cfg.mode.as_str())
        .field("gatewayState", gateway.as_str());
    if let Status::Failed(why) = gateway {
        x.field("gatewayError", why);
    }
    x.field("vlanRange", cfg.vlans.to_string())
        .field("subnet", cfg.subnet.to_string())
        .field("addressesPerNetwork", cfg.addrs_per_net);
    x.set("networkSet", nets, |x, n| {
        x.field("groupId", &n.group_id)
            .field("groupName", &n.group_name)
            .field("ownerId", crate::store::account_id(&n.owner))
            .opt("vlan", n.vlan.as_ref())
            .field("subnet", n.subnet.to_string())
            .field("gateway", n.gateway.to_string())
            .field("createTime", time(n.created_ms));
    });
    x.finish()
}

pub fn describe(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    authorize(c.user, c.action)?;
    let nets = ec2.store.cloud(networks::list)?;
    let gateway = gateway::status(ec2.gateway_dir.as_deref());
    Ok(render(c.action, c.rid, &ec2.net, &gateway, &nets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_render_with_tag_subnet_and_gateway() {
        let cfg = NetworkConfig::default();
        let net = Network {
            group_id: "sg-1".into(),
            group_name: "web".into(),
            owner: "alice".into(),
            vlan: Some(104),
            slice: 3,
            subnet: cfg.slice(3),
            gateway: "172.31.0.97".parse().unwrap(),
            created_ms: 0,
        };
        let failed = Status::Failed("nft: <bad>".into());
        let doc = render("DescribeNetworks", "r1", &cfg, &failed, &[net]);
        let owner = format!("<ownerId>{}</ownerId>", crate::store::account_id("alice"));
        assert!(doc.contains(&owner), "{owner} missing from {doc}");
        for want in [
            "<mode>MANAGED</mode>",
            "<vlanRange>100-199</vlanRange>",
            "<groupName>web</groupName>",
            "<vlan>104</vlan>",
            "<subnet>172.31.0.96/27</subnet>",
            "<gateway>172.31.0.97</gateway>",
            "<gatewayState>failed</gatewayState>",
            "<gatewayError>nft: &lt;bad&gt;</gatewayError>",
        ] {
            assert!(doc.contains(want), "{want} missing from {doc}");
        }
    }
}
