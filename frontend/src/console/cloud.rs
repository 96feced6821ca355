//! The signed-in user's other resources: the images they can run (deregister their own),
//! security groups with their ingress rules (create, delete, authorize, revoke), volumes and
//! snapshots (create, delete, attach, detach), elastic IPs (allocate, associate, disassociate,
//! release), and rotating their access key. Every change is the EC2 action run through
//! [`Ec2::call_as`] as the user (checked, owner-scoped and audited as the Query API's are; a
//! refusal shows EC2's message on the page); the key rotation is `crate::admin`'s, audited as
//! the user. Lists read the same records the Describe calls read for the user. The pages are
//! `cloud_pages`; what a page lists is plain data it gets from here.

use super::cloud_pages::{self as pages, AddressesView, GroupsView, VolumesView};
use super::pages::Nav;
use super::reply::Reply;
use super::{Asked, Console, ConsoleError};
use crate::cloud::images::launchable;
use crate::cloud::model::{
    Address, Instance, SecurityGroup, Snapshot, State, Volume, ADDRESS, GROUP, INSTANCE, SNAPSHOT,
    VOLUME,
};
use crate::ec2::Ec2;
use crate::store::Session;
use http::StatusCode;

/// A page of this module, to show again after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Page {
    Images,
    Groups,
    Volumes,
    Addresses,
}

impl Page {
    fn path(self) -> &'static str {
        match self {
            Page::Images => "/_console/images",
            Page::Groups => "/_console/groups",
            Page::Volumes => "/_console/volumes",
            Page::Addresses => "/_console/addresses",
        }
    }
}

/// A message over a page: its status and text.
type Message<'a> = Option<(StatusCode, &'a str)>;

/// `pairs` without those whose value is empty (a blank field is a missing parameter to EC2).
fn filled<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    pairs
        .iter()
        .copied()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| (k, v.trim()))
        .collect()
}

/// EC2's protocol name for the form's choice (`all` is `-1`).
fn protocol(form: &str) -> &str {
    match form {
        "all" => "-1",
        other => other,
    }
}

/// The `IpPermissions.1` parameters of the rule the form names: protocol, ports (`to`
/// defaults to `from`) and a CIDR or a source group.
fn rule_params(a: &Asked<'_>) -> Vec<(String, String)> {
    let get = |k: &str| a.form.get(k).unwrap_or("").trim().to_string();
    let (from, to) = (get("from"), get("to"));
    let to = if to.is_empty() { from.clone() } else { to };
    let mut out = vec![
        ("GroupId".to_string(), get("group")),
        (
            "IpPermissions.1.IpProtocol".to_string(),
            protocol(&get("protocol")).to_string(),
        ),
        ("IpPermissions.1.FromPort".to_string(), from),
        ("IpPermissions.1.ToPort".to_string(), to),
        ("IpPermissions.1.IpRanges.1.CidrIp".to_string(), get("cidr")),
        (
            "IpPermissions.1.Groups.1.GroupId".to_string(),
            get("source_group"),
        ),
    ];
    out.retain(|(_, v)| !v.is_empty());
    out
}

impl Console {
    /// Runs the EC2 call `pairs` names (blank values left out) as the user; back to `page`,
    /// or `page` again with "`what`: EC2's message" when it refused.
    fn change(
        &self,
        ec2: &Ec2,
        a: &Asked<'_>,
        s: &Session,
        page: Page,
        what: &str,
        pairs: &[(&str, &str)],
    ) -> Result<Reply, ConsoleError> {
        match Self::call(ec2, a, s, &filled(pairs)) {
            Ok(_) => Ok(Reply::redirect(page.path())),
            Err(e) => {
                let why = format!("{what}: {}", e.message);
                self.show(ec2, s, page, Some((crate::http::status(e.status), &why)))
            }
        }
    }

    /// `page` for the user, with `message` above it.
    pub(super) fn show(
        &self,
        ec2: &Ec2,
        s: &Session,
        page: Page,
        message: Message<'_>,
    ) -> Result<Reply, ConsoleError> {
        let (status, text) = message.map_or((StatusCode::OK, None), |(st, m)| (st, Some(m)));
        let owner = s.user.name.as_str();
        let nav = Nav::of(s);
        let markup = match page {
            Page::Images => {
                let images = ec2.store.cloud(|tx| launchable(tx, owner))?;
                pages::images(nav, owner, &images, text)
            }
            Page::Groups => {
                let groups = ec2.store.cloud(|tx| {
                    crate::ec2::ensure_default_group(tx, owner)?;
                    Ok::<_, ConsoleError>(tx.list::<SecurityGroup>(GROUP, Some(owner))?)
                })?;
                pages::groups(nav, &GroupsView { groups: &groups }, text)
            }
            Page::Volumes => {
                let (volumes, snapshots, instances) = ec2.store.cloud(|tx| {
                    let v = tx.list::<Volume>(VOLUME, Some(owner))?;
                    let sn = tx.list::<Snapshot>(SNAPSHOT, Some(owner))?;
                    Ok::<_, ConsoleError>((v, sn, tx.list::<Instance>(INSTANCE, Some(owner))?))
                })?;
                let running: Vec<&Instance> = (instances.iter())
                    .filter(|i| i.state == State::Running)
                    .collect();
                let view = VolumesView {
                    volumes: &volumes,
                    snapshots: &snapshots,
                    running: &running,
                    zones: &ec2.cfg.clusters,
                };
                pages::volumes(nav, &view, text)
            }
            Page::Addresses => {
                let (addresses, instances) = ec2.store.cloud(|tx| {
                    let a = tx.list::<Address>(ADDRESS, Some(owner))?;
                    Ok::<_, ConsoleError>((a, tx.list::<Instance>(INSTANCE, Some(owner))?))
                })?;
                let live: Vec<&Instance> = (instances.iter())
                    .filter(|i| i.state != State::Terminated)
                    .collect();
                let view = AddressesView {
                    addresses: &addresses,
                    instances: &live,
                };
                pages::addresses(nav, &view, text)
            }
        };
        Ok(Reply::page(status, markup))
    }

    /// The POSTs of this module's pages (`parts`: the path after the prefix).
    pub(super) fn cloud_post(
        &self,
        ec2: &Ec2,
        a: &Asked<'_>,
        s: &Session,
        parts: &[&str],
    ) -> Result<Reply, ConsoleError> {
        let f = |k: &str| a.form.get(k).unwrap_or("");
        let ch = |page, what, pairs: &[(&str, &str)]| self.change(ec2, a, s, page, what, pairs);
        match parts {
            ["images", "deregister"] => ch(
                Page::Images,
                "The image was not deregistered",
                &[("Action", "DeregisterImage"), ("ImageId", f("image"))],
            ),
            ["groups"] => ch(
                Page::Groups,
                "The security group was not created",
                &[
                    ("Action", "CreateSecurityGroup"),
                    ("GroupName", f("name")),
                    ("GroupDescription", f("description")),
                ],
            ),
            ["groups", "delete"] => ch(
                Page::Groups,
                "The security group was not deleted",
                &[("Action", "DeleteSecurityGroup"), ("GroupId", f("group"))],
            ),
            ["groups", verb @ ("authorize" | "revoke")] => {
                let (action, what) = match *verb {
                    "authorize" => ("AuthorizeSecurityGroupIngress", "The rule was not added"),
                    _ => ("RevokeSecurityGroupIngress", "The rule was not removed"),
                };
                let rule = rule_params(a);
                let mut pairs = vec![("Action", action)];
                pairs.extend(rule.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                ch(Page::Groups, what, &pairs)
            }
            ["volumes"] => ch(
                Page::Volumes,
                "The volume was not created",
                &[
                    ("Action", "CreateVolume"),
                    ("Size", f("size")),
                    ("AvailabilityZone", f("zone")),
                ],
            ),
            ["volumes", "delete"] => ch(
                Page::Volumes,
                "The volume was not deleted",
                &[("Action", "DeleteVolume"), ("VolumeId", f("volume"))],
            ),
            ["volumes", "attach"] => ch(
                Page::Volumes,
                "The volume was not attached",
                &[
                    ("Action", "AttachVolume"),
                    ("VolumeId", f("volume")),
                    ("InstanceId", f("instance")),
                    ("Device", f("device")),
                ],
            ),
            ["volumes", "detach"] => ch(
                Page::Volumes,
                "The volume was not detached",
                &[("Action", "DetachVolume"), ("VolumeId", f("volume"))],
            ),
            ["snapshots"] => ch(
                Page::Volumes,
                "The snapshot was not created",
                &[
                    ("Action", "CreateSnapshot"),
                    ("VolumeId", f("volume")),
                    ("Description", f("description")),
                ],
            ),
            ["snapshots", "delete"] => ch(
                Page::Volumes,
                "The snapshot was not deleted",
                &[("Action", "DeleteSnapshot"), ("SnapshotId", f("snapshot"))],
            ),
            ["addresses"] => ch(
                Page::Addresses,
                "No address was allocated",
                &[("Action", "AllocateAddress")],
            ),
            ["addresses", "associate"] => ch(
                Page::Addresses,
                "The address was not associated",
                &[
                    ("Action", "AssociateAddress"),
                    ("AllocationId", f("allocation")),
                    ("InstanceId", f("instance")),
                ],
            ),
            ["addresses", "disassociate"] => ch(
                Page::Addresses,
                "The address was not disassociated",
                &[
                    ("Action", "DisassociateAddress"),
                    ("AllocationId", f("allocation")),
                ],
            ),
            ["addresses", "release"] => ch(
                Page::Addresses,
                "The address was not released",
                &[
                    ("Action", "ReleaseAddress"),
                    ("AllocationId", f("allocation")),
                ],
            ),
            _ => Err(ConsoleError::NotFound(format!(
                "{}{}",
                super::PREFIX,
                a.path
            ))),
        }
    }

    /// The page asking whether to replace the user's access key.
    pub(super) fn rotate_form(&self, s: &Session) -> Reply {
        Reply::page(
            StatusCode::OK,
            pages::rotate(Nav::of(s), &s.user.access_key),
        )
    }

    /// Replaces the user's access key and secret (the old pair stops working at once),
    /// audited as the user from the client's address; the new credentials file comes back
    /// once, as a download.
    pub(super) fn rotate_key(&self, a: &Asked<'_>, s: &Session) -> Result<Reply, ConsoleError> {
        let by = crate::admin::Actor {
            user: &s.user.name,
            source: a.source,
        };
        let user = crate::admin::rotate_access_key(&self.store, &by, &s.user.name)?;
        Ok(Reply::download(
            "credentials",
            "text/plain; charset=utf-8",
            crate::admin::credentials_text(&user).into_bytes(),
        ))
    }
}

#[cfg(test)]
#[path = "cloud_tests.rs"]
mod tests;
