//! Security groups: Create, Delete, Describe and Authorize/Revoke ingress (protocol, port
//! range, CIDR or source group), in both the structured `IpPermissions.N` form and the old
//! top-level form. Every user has a `default` group, made on first use. Groups take tags
//! (TagSpecifications, `tagSet`, tag filters; see `tags`), which go when they are deleted.

use super::params::{filter_matches, Params};
use super::tags;
use super::xml::{self, Xml};
use super::{Call, Ec2, Ec2Error};
use crate::cloud::model::{new_id, Instance, Rule, SecurityGroup, Source, State, GROUP, INSTANCE};
use crate::cloud::tags::{self as tagging, ResourceType};
use crate::store::{account_id, CloudTx};

/// The owner's `default` group, created if missing.
pub fn ensure_default(tx: &CloudTx<'_>, owner: &str) -> Result<SecurityGroup, Ec2Error> {
    if let Some(g) = tx.by_name(GROUP, owner, "default")? {
        return Ok(g);
    }
    let g = SecurityGroup {
        id: new_id("sg", 17),
        owner: owner.to_string(),
        name: "default".into(),
        description: "default group".into(),
        rules: Vec::new(),
    };
    tx.put(GROUP, &g.id, owner, Some("default"), &g)?;
    Ok(g)
}

/// The owner's group named by id (`sg-...`) or name.
pub fn find(tx: &CloudTx<'_>, owner: &str, id_or_name: &str) -> Result<SecurityGroup, Ec2Error> {
    let found = if id_or_name.starts_with("sg-") {
        tx.get::<SecurityGroup>(GROUP, id_or_name)?
            .filter(|g| g.owner == owner)
    } else if id_or_name == "default" {
        Some(ensure_default(tx, owner)?)
    } else {
        tx.by_name(GROUP, owner, id_or_name)?
    };
    found.ok_or_else(|| {
        Ec2Error::client(
            "InvalidGroup.NotFound",
            format!("The security group '{id_or_name}' does not exist"),
        )
    })
}

fn target(tx: &CloudTx<'_>, c: &Call<'_>) -> Result<SecurityGroup, Ec2Error> {
    match (c.p.get("GroupId"), c.p.get("GroupName")) {
        (Some(id), _) => find(tx, &c.user.name, id),
        (None, Some(name)) => find(tx, &c.user.name, name),
        _ => Err(Ec2Error::missing("GroupId")),
    }
}

pub fn create(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let name = c.p.req("GroupName")?;
    let description = c.p.req("GroupDescription")?;
    if name.len() > 255 || name.starts_with("sg-") {
        return Err(Ec2Error::invalid(
            "GroupName",
            name,
            "Names are up to 255 characters and do not start with sg-.",
        ));
    }
    let owner = &c.user.name;
    let tag_set = tags::specified_for(c.p, ResourceType::SecurityGroup)?;
    let id = ec2.store.cloud(|tx| {
        ensure_default(tx, owner)?;
        if tx.by_name::<SecurityGroup>(GROUP, owner, name)?.is_some() {
            return Err(Ec2Error::client(
                "InvalidGroup.Duplicate",
                format!("The security group '{name}' already exists"),
            ));
        }
        let g = SecurityGroup {
            id: new_id("sg", 17),
            owner: owner.clone(),
            name: name.to_string(),
            description: description.to_string(),
            rules: Vec::new(),
        };
        tx.put(GROUP, &g.id, owner, Some(name), &g)?;
        tagging::attach(tx, owner, &g.id, ResourceType::SecurityGroup, &tag_set)?;
        Ok(g.id)
    })?;
    let mut x = xml::response(c.action, c.rid);
    x.field("groupId", id);
    tags::render(&mut x, &tag_set);
    Ok(x.finish())
}

pub fn delete(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    ec2.store.cloud(|tx| {
        let g = target(tx, c)?;
        if g.name == "default" {
            return Err(Ec2Error::client(
                "CannotDelete",
                "the default security group cannot be deleted",
            ));
        }
        let in_use = tx
            .list::<Instance>(INSTANCE, Some(&c.user.name))?
            .into_iter()
            .any(|i| i.state != State::Terminated && i.groups.iter().any(|(id, _)| *id == g.id));
        if in_use {
            return Err(Ec2Error::client(
                "InvalidGroup.InUse",
                format!(
                    "There are active instances using security group '{}'",
                    g.name
                ),
            ));
        }
        tx.delete(GROUP, &g.id)?;
        tagging::forget(tx, &g.id)?;
        Ok::<_, Ec2Error>(())
    })?;
    Ok(xml::ok(c.action, c.rid))
}

pub fn describe(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let names = c.p.list("GroupName");
    let ids = c.p.list("GroupId");
    let filters = c.p.filters()?;
    let owner = &c.user.name;
    let (groups, tag_index) = ec2.store.cloud(|tx| {
        ensure_default(tx, owner)?;
        for n in names.iter().chain(&ids) {
            find(tx, owner, n)?;
        }
        let groups = tx.list::<SecurityGroup>(GROUP, Some(owner))?;
        let tag_index = tagging::index(tx, owner, ResourceType::SecurityGroup)?;
        Ok::<_, Ec2Error>((groups, tag_index))
    })?;
    let shown: Vec<&SecurityGroup> = groups
        .iter()
        .filter(|g| names.is_empty() || names.contains(&g.name))
        .filter(|g| ids.is_empty() || ids.contains(&g.id))
        .filter(|g| {
            filters.iter().all(|f| match f.name.as_str() {
                "group-name" => filter_matches(f, &g.name),
                "group-id" => filter_matches(f, &g.id),
                "description" => filter_matches(f, &g.description),
                "owner-id" => filter_matches(f, &account_id(&g.owner)),
                _ => tags::tag_filter(f, tag_index.of(&g.id)).unwrap_or(false),
            })
        })
        .collect();
    let mut x = xml::response(c.action, c.rid);
    x.set("securityGroupInfo", &shown, |x, g| {
        x.field("ownerId", account_id(&g.owner))
            .field("groupId", &g.id)
            .field("groupName", &g.name)
            .field("groupDescription", &g.description);
        render_rules(x, &g.rules);
        tags::render(x, tag_index.of(&g.id));
    });
    Ok(x.finish())
}

/// Rules grouped by (protocol, ports), as `ipPermissions`.
fn render_rules(x: &mut Xml, rules: &[Rule]) {
    let mut keys: Vec<(&str, Option<i64>, Option<i64>)> = Vec::new();
    for r in rules {
        let k = (r.protocol.as_str(), r.from, r.to);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    x.set("ipPermissions", &keys, |x, (proto, from, to)| {
        let same: Vec<&Rule> = rules
            .iter()
            .filter(|r| r.protocol == *proto && r.from == *from && r.to == *to)
            .collect();
        x.field("ipProtocol", proto)
            .opt("fromPort", *from)
            .opt("toPort", *to);
        let groups: Vec<&Rule> = same
            .iter()
            .copied()
            .filter(|r| matches!(r.source, Source::Group { .. }))
            .collect();
        x.set("groups", &groups, |x, r| {
            if let Source::Group { id, name, owner } = &r.source {
                x.field("userId", account_id(owner))
                    .field("groupId", id)
                    .field("groupName", name);
            }
        });
        let cidrs: Vec<&Rule> = same
            .iter()
            .copied()
            .filter(|r| matches!(r.source, Source::Cidr(_)))
            .collect();
        x.set("ipRanges", &cidrs, |x, r| {
            if let Source::Cidr(cidr) = &r.source {
                x.field("cidrIp", cidr);
            }
        });
    });
    x.open("ipPermissionsEgress").close("ipPermissionsEgress");
}

fn check_cidr(cidr: &str) -> Result<(), Ec2Error> {
    let ok = cidr.split_once('/').is_some_and(|(a, n)| {
        a.parse::<std::net::Ipv4Addr>().is_ok() && n.parse::<u8>().is_ok_and(|n| n <= 32)
    });
    if ok {
        Ok(())
    } else {
        Err(Ec2Error::invalid(
            "CidrIp",
            cidr,
            "CIDR block is malformed.",
        ))
    }
}

/// Normalized protocol and checked port range.
fn protocol_ports(p: &Params) -> Result<(String, Option<i64>, Option<i64>), Ec2Error> {
    let proto = match p.req("IpProtocol")?.to_ascii_lowercase().as_str() {
        "tcp" | "6" => "tcp",
        "udp" | "17" => "udp",
        "icmp" | "1" => "icmp",
        "-1" | "all" => "-1",
        other => {
            return Err(Ec2Error::invalid(
                "IpProtocol",
                other,
                "Use tcp, udp, icmp or -1.",
            ))
        }
    };
    let (from, to) = (p.int("FromPort")?, p.int("ToPort")?);
    match proto {
        "tcp" | "udp" => {
            let (Some(f), Some(t)) = (from, to) else {
                return Err(Ec2Error::missing("FromPort"));
            };
            if !(0..=65535).contains(&f) || !(0..=65535).contains(&t) || f > t {
                return Err(Ec2Error::invalid(
                    "FromPort",
                    &format!("{f}-{t}"),
                    "Ports are 0..65535, from <= to.",
                ));
            }
            Ok((proto.into(), Some(f), Some(t)))
        }
        "icmp" => {
            let (f, t) = (from.unwrap_or(-1), to.unwrap_or(-1));
            if !(-1..=255).contains(&f) || !(-1..=255).contains(&t) {
                return Err(Ec2Error::invalid(
                    "FromPort",
                    &f.to_string(),
                    "ICMP type and code are -1..255.",
                ));
            }
            Ok((proto.into(), Some(f), Some(t)))
        }
        _ => Ok((proto.into(), None, None)),
    }
}

fn requested_rules(tx: &CloudTx<'_>, c: &Call<'_>) -> Result<Vec<Rule>, Ec2Error> {
    let mut perms = c.p.structs("IpPermissions");
    if c.p.get("IpProtocol").is_some() {
        let mut old = vec![
            ("IpProtocol", c.p.get("IpProtocol")),
            ("FromPort", c.p.get("FromPort")),
            ("ToPort", c.p.get("ToPort")),
            ("IpRanges.1.CidrIp", c.p.get("CidrIp")),
            ("Groups.1.GroupName", c.p.get("SourceSecurityGroupName")),
        ];
        old.retain(|(_, v)| v.is_some());
        let pairs: Vec<(&str, &str)> = old.into_iter().map(|(k, v)| (k, v.unwrap_or(""))).collect();
        perms.push(Params::from_pairs(&pairs));
    }
    if perms.is_empty() {
        return Err(Ec2Error::missing("IpPermissions"));
    }
    let mut rules = Vec::new();
    for perm in perms {
        let (protocol, from, to) = protocol_ports(&perm)?;
        let mut sources = Vec::new();
        for r in perm.structs("IpRanges") {
            let cidr = r.req("CidrIp")?;
            check_cidr(cidr)?;
            sources.push(Source::Cidr(cidr.to_string()));
        }
        for g in perm.structs("Groups") {
            let key = g
                .get("GroupId")
                .or(g.get("GroupName"))
                .ok_or_else(|| Ec2Error::missing("Groups.GroupId"))?;
            let src = find(tx, &c.user.name, key)?;
            sources.push(Source::Group {
                id: src.id,
                name: src.name,
                owner: src.owner,
            });
        }
        if sources.is_empty() {
            return Err(Ec2Error::missing("IpRanges or Groups"));
        }
        for source in sources {
            rules.push(Rule {
                protocol: protocol.clone(),
                from,
                to,
                source,
            });
        }
    }
    Ok(rules)
}

pub fn change_ingress(ec2: &Ec2, c: &Call<'_>, authorize: bool) -> Result<String, Ec2Error> {
    ec2.store.cloud(|tx| {
        let mut g = target(tx, c)?;
        for rule in requested_rules(tx, c)? {
            let present = g.rules.contains(&rule);
            match (authorize, present) {
                (true, true) => {
                    return Err(Ec2Error::client(
                        "InvalidPermission.Duplicate",
                        format!(
                            "the specified rule \"peer: {:?}, {}, ports {:?}-{:?}\" already exists",
                            rule.source, rule.protocol, rule.from, rule.to
                        ),
                    ))
                }
                (false, false) => {
                    return Err(Ec2Error::client(
                        "InvalidPermission.NotFound",
                        "The specified rule does not exist in this security group.",
                    ))
                }
                (true, false) => g.rules.push(rule),
                (false, true) => g.rules.retain(|r| *r != rule),
            }
        }
        tx.put(GROUP, &g.id, &g.owner, Some(&g.name), &g)?;
        Ok::<_, Ec2Error>(())
    })?;
    ec2.changes.bump_network();
    Ok(xml::ok(c.action, c.rid))
}
