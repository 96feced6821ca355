//! The admin pages' HTML, rendered with `maud` as `pages` renders the rest (every value
//! escaped, no JavaScript, a CSRF token in each form that changes something): the nodes with
//! their use drawn as `<meter>` bars per node and per zone (no inline style, so the console's
//! strict Content-Security-Policy holds), the users, the instance networks and public
//! addresses, and the audit log with its filter form.
//! It reads plain records and fetches nothing.

use super::pages::{csrf_field, notice, page, time, Frame, Nav};
use crate::cloud::networks::Network;
use crate::cloud::nodes::{Admission, NodeView};
use crate::cloud::public::Held;
use crate::cloud::NetworkConfig;
use crate::ec2::params::Params;
use crate::gateway::Status as GatewayStatus;
use crate::store::{AuditEntry, AuditRow, User};
use maud::{html, Markup};
use std::collections::BTreeMap;

/// The most rows the audit page shows.
pub const AUDIT_ROWS: usize = 500;

/// `used` of `total` `unit` as a bar with the numbers beside it.
fn bar(label: &str, used: u64, total: u64, unit: &str) -> Markup {
    html! {
        span.bar {
            meter min="0" max=(total) value=(used.min(total)) title=(label) { (used) "/" (total) }
            " " (used) " of " (total) " " (unit)
        }
    }
}

/// `n` bytes in MiB, rounded up.
fn mib(n: u64) -> u64 {
    n.div_ceil(1 << 20)
}

/// What a zone's up nodes hold and use.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ZoneUse {
    pub nodes: usize,
    pub up: usize,
    pub cpus: u64,
    pub used_cpus: u64,
    pub memory_mib: u64,
    pub used_memory_mib: u64,
}

/// Per zone: its nodes, and the capacity and use of those up.
pub fn zone_use(views: &[NodeView]) -> BTreeMap<&str, ZoneUse> {
    let mut zones: BTreeMap<&str, ZoneUse> = BTreeMap::new();
    for v in views {
        let z = zones.entry(v.node.cluster.as_str()).or_default();
        z.nodes += 1;
        if let (true, Some(info)) = (v.node.is_up(), &v.info) {
            z.up += 1;
            z.cpus += u64::from(info.cpus);
            z.used_cpus += v.used[0];
            z.memory_mib += info.memory_mib;
            z.used_memory_mib += v.used[1];
        }
    }
    zones
}

/// The buttons that change node `id`'s admission, as it stands.
fn admission_buttons(csrf: &str, v: &NodeView) -> Markup {
    let id = &v.node.id;
    let approved = v.node.claim.as_ref().is_some_and(|c| c.approved);
    let approve = match v.node.admission {
        Admission::Admitted => false,
        Admission::Pending => !approved,
        Admission::Rejected => true,
    };
    html! {
        @if approve {
            form.inline method="post" action={ "/_console/admin/nodes/" (id) "/approve" } {
                (csrf_field(csrf))
                button type="submit" { "Approve" }
            }
            " "
        }
        @if v.node.admission != Admission::Rejected {
            form.inline method="post" action={ "/_console/admin/nodes/" (id) "/reject" } {
                (csrf_field(csrf))
                button.danger type="submit" { "Reject" }
            }
        }
    }
}

/// One node's card: admission, state, boot, use, image cache and instances.
fn node_card(csrf: &str, v: &NodeView) -> Markup {
    let n = &v.node;
    let state = if n.is_up() { "up" } else { "down" };
    html! {
        section.node id={ "node-" (n.id) } {
            h3 { (n.id) " " span class=(if n.is_up() { "state ok" } else { "state gone" }) { (state) } }
            dl {
                dt { "Zone" } dd { (n.cluster) }
                dt { "Admission" } dd.admission { (n.admission_name()) }
                @if let Some(c) = &n.claim {
                    dt { "Waiting claim" }
                    dd {
                        "from " (c.source) ", MACs "
                        @for m in &c.macs { code { (m) } " " }
                        "; " (c.attempts) " attempts, last " (time(c.last_ms))
                    }
                }
                @if let Some(info) = &v.info {
                    dt { "Boot id" } dd { code { (n.boot_id) } " since " (time(n.booted_ms)) }
                    dt { "Last report" } dd { (time(n.last_seen_ms)) }
                    dt { "vCPUs" } dd { (bar("vCPUs in use", v.used[0], u64::from(info.cpus), "vCPUs")) }
                    dt { "Memory" } dd { (bar("memory in use", v.used[1], info.memory_mib, "MiB")) }
                    dt { "Disk" } dd { (info.disk_gib) " GiB" }
                    dt { "Image cache" }
                    dd {
                        (bar("image cache in use", mib(n.cache.used_bytes), mib(n.cache.budget_bytes), "MiB"))
                        " in " (if n.cache.storage == mallee_proto::Storage::Ram { "RAM" } else { "disk" })
                        "; " (n.cache.downloads) " downloads, " (n.cache.hits) " hits since boot"
                        @if !n.image_cache.is_empty() {
                            ul.images {
                                @for img in &n.image_cache {
                                    li { code { (img.sha256.get(..16).unwrap_or(&img.sha256)) "…" } " " (mib(img.size)) " MiB" }
                                }
                            }
                        }
                    }
                } @else {
                    dt { "Capacity" } dd { "Not registered yet: it reports once admitted." }
                }
                dt { "Instances" }
                dd {
                    @if v.instances.is_empty() { "none" }
                    @for (id, st) in &v.instances { code { (id) } " (" (st.name()) ") " }
                }
            }
            (admission_buttons(csrf, v))
        }
    }
}

/// Every node, the zones' summary bars first.
pub fn nodes(nav: Nav<'_>, views: &[NodeView], message: Option<&str>) -> Markup {
    let csrf = nav.csrf;
    let frame = Frame::signed_in("Nodes", nav);
    let zones = zone_use(views);
    page(
        &frame,
        html! {
            (notice(message))
            @if views.is_empty() {
                p { "No node has enrolled yet. A node boots from this frontend over PXE and enrolls; see the README's Nodes section." }
            } @else {
                h2 { "Zones" }
                table.list {
                    thead { tr { th { "Zone" } th { "Nodes up" } th { "vCPUs" } th { "Memory" } } }
                    tbody {
                        @for (zone, z) in &zones {
                            tr.zone {
                                td data-label="Zone" { (zone) }
                                td data-label="Nodes up" { (z.up) " of " (z.nodes) }
                                td data-label="vCPUs" { (bar("vCPUs in use", z.used_cpus, z.cpus, "vCPUs")) }
                                td data-label="Memory" { (bar("memory in use", z.used_memory_mib, z.memory_mib, "MiB")) }
                            }
                        }
                    }
                }
                h2 { "Nodes" }
                p.hint { "A node waiting for admission (pending) gets a token at its next enrollment once approved; rejecting one ends its token at once." }
                @for v in views { (node_card(csrf, v)) }
            }
        },
    )
}

/// One user of the users page.
pub struct UserRow {
    pub user: User,
    pub has_password: bool,
    pub disabled: bool,
}

/// The button that disables user `name`, or enables it when it is `disabled`.
fn disable_button(csrf: &str, name: &str, disabled: bool) -> Markup {
    let (verb, text) = match disabled {
        true => ("enable", "Enable"),
        false => ("disable", "Disable"),
    };
    html! {
        form.inline method="post" action={ "/_console/admin/users/" (verb) } {
            (csrf_field(csrf))
            input type="hidden" name="name" value=(name);
            @if disabled {
                button type="submit" { (text) }
            } @else {
                button.danger type="submit" { (text) }
            }
        }
    }
}

/// The users, the form to create one, and on each its state, a password reset and a
/// Disable or Enable button (none on the signed-in admin's own row: nobody disables themself).
pub fn users(nav: Nav<'_>, rows: &[UserRow], message: Option<&str>) -> Markup {
    let (csrf, me) = (nav.csrf, nav.user);
    let frame = Frame::signed_in("Users", nav);
    page(
        &frame,
        html! {
            (notice(message))
            form.card method="post" action="/_console/admin/users" {
                (csrf_field(csrf))
                label { "Name" input type="text" name="name" required maxlength="64"; }
                label { "Role"
                    select name="role" {
                        option value="user" { "user" }
                        option value="admin" { "admin" }
                    }
                }
                label { "Console password" input type="password" name="password" autocomplete="new-password" required; }
                button type="submit" { "Create the user" }
                p.hint { "The user's access key is on their Credentials page once they sign in." }
            }
            table.list {
                thead { tr { th { "Name" } th { "Role" } th { "Account" } th { "Console password" } th { "State" } th { "Created" } th { "" } } }
                tbody {
                    @for r in rows {
                        @let u = &r.user;
                        tr {
                            td data-label="Name" { (u.name) }
                            td data-label="Role" { (u.role.as_str()) }
                            td data-label="Account" { (u.account_id()) }
                            td data-label="Console password" { @if r.has_password { "set" } @else { "none" } }
                            td data-label="State" {
                                @if r.disabled { span.state.bad { "disabled" } } @else { span.state.ok { "enabled" } }
                            }
                            td data-label="Created" { (time(u.created_ms)) }
                            td {
                                form.inline method="post" action="/_console/admin/users/password" {
                                    (csrf_field(csrf))
                                    input type="hidden" name="name" value=(u.name);
                                    input type="password" name="password" autocomplete="new-password" required aria-label={ "New password for " (u.name) };
                                    button type="submit" { "Set password" }
                                }
                                @if u.name != me {
                                    " "
                                    (disable_button(csrf, &u.name, r.disabled))
                                }
                            }
                        }
                    }
                }
            }
            p.hint { "Setting a password ends that user's console sessions. Disabling a user refuses its access key and console sign-in and ends its sessions at once; enabling it restores both with the same keys. Users are deleted with "
                code { "mallee-frontend admin user delete NAME" } "." }
        },
    )
}

/// What the networks page shows.
pub struct NetworksView<'a> {
    pub cfg: &'a NetworkConfig,
    pub gateway: &'a GatewayStatus,
    pub networks: &'a [Network],
    /// The public addresses in use.
    pub held: &'a [Held],
    /// The `[ec2] public_ips` pool's size, and how many of it are free.
    pub pool: usize,
    pub free: usize,
}

/// The instance networks (security group → VLAN, subnet, gateway) and the public addresses
/// in use, with the pool's use as a bar.
pub fn networks(nav: Nav<'_>, v: &NetworksView<'_>) -> Markup {
    let frame = Frame::signed_in("Networks", nav);
    let cfg = v.cfg;
    page(
        &frame,
        html! {
            p {
                "Mode " code { (cfg.mode.as_str()) } ", VLANs " (cfg.vlans.to_string())
                ", subnet " code { (cfg.subnet.to_string()) } ", " (cfg.addrs_per_net) " addresses per network; gateway "
                span class=(if matches!(v.gateway, GatewayStatus::Failed(_)) { "state bad" } else { "state" }) { (v.gateway.as_str()) }
                @if let GatewayStatus::Failed(why) = v.gateway { ": " (why) }
            }
            h2 { "Security group networks" }
            @if v.networks.is_empty() {
                p { "No security group has instances, so no network is allocated." }
            } @else {
                table.list {
                    thead { tr { th { "Group" } th { "Name" } th { "Owner" } th { "VLAN" } th { "Subnet" } th { "Gateway" } th { "Since" } } }
                    tbody {
                        @for n in v.networks {
                            tr {
                                td data-label="Group" { (n.group_id) }
                                td data-label="Name" { (n.group_name) }
                                td data-label="Owner" { (n.owner) }
                                td data-label="VLAN" { @match n.vlan { Some(tag) => (tag), None => "untagged" } }
                                td data-label="Subnet" { (n.subnet.to_string()) }
                                td data-label="Gateway" { (n.gateway.to_string()) }
                                td data-label="Since" { (time(n.created_ms)) }
                            }
                        }
                    }
                }
            }
            h2 { "Public addresses" }
            p { (bar("public addresses in use", (v.pool - v.free.min(v.pool)) as u64, v.pool as u64, "pool addresses in use")) }
            @if v.held.is_empty() {
                p { "No public address is in use." }
            } @else {
                table.list {
                    thead { tr { th { "Address" } th { "Held by" } th { "Kind" } th { "Instance" } } }
                    tbody {
                        @for h in v.held {
                            tr {
                                td data-label="Address" { (h.ip) }
                                td data-label="Held by" { (h.owner) }
                                td data-label="Kind" {
                                    @match &h.allocation_id { Some(id) => { "elastic " (id) }, None => "dynamic" }
                                }
                                td data-label="Instance" { (h.instance_id.as_deref().unwrap_or("-")) }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The audit page's filters, from its query string: each one given must match exactly.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AuditFilter {
    pub user: String,
    pub action: String,
    /// `ok`, `error`, or empty for either.
    pub outcome: String,
}

impl AuditFilter {
    pub fn from_query(q: &Params) -> AuditFilter {
        let get = |k| q.get(k).unwrap_or("").trim().to_string();
        AuditFilter {
            user: get("user"),
            action: get("action"),
            outcome: get("outcome"),
        }
    }

    pub fn matches(&self, e: &AuditEntry) -> bool {
        let is = |want: &str, have: &str| want.is_empty() || want == have;
        is(&self.user, &e.user)
            && is(&self.action, &e.action)
            && is(&self.outcome, e.outcome.parts().0)
    }
}

/// The audit log's newest entries that `filter` matches, with the filter form.
pub fn audit(nav: Nav<'_>, filter: &AuditFilter, rows: &[AuditRow]) -> Markup {
    let frame = Frame::signed_in("Audit log", nav);
    page(
        &frame,
        html! {
            form.filters method="get" action="/_console/admin/audit" {
                label { "User" input type="text" name="user" value=(filter.user); }
                label { "Action" input type="text" name="action" value=(filter.action) placeholder="e.g. RunInstances"; }
                label { "Outcome"
                    select name="outcome" {
                        @for (value, text) in [("", "any"), ("ok", "ok"), ("error", "error")] {
                            option value=(value) selected[filter.outcome == value] { (text) }
                        }
                    }
                }
                button type="submit" { "Filter" }
            }
            p.hint { "Newest first; at most " (AUDIT_ROWS) " entries. "
                code { "mallee-frontend admin audit --limit N" } " prints more." }
            @if rows.is_empty() {
                p { "No entry matches." }
            } @else {
                table.list.audit {
                    thead { tr { th { "Time" } th { "User" } th { "Action" } th { "Resources" } th { "From" } th { "Outcome" } } }
                    tbody {
                        @for r in rows {
                            @let e = &r.entry;
                            @let (outcome, code) = e.outcome.parts();
                            tr {
                                td data-label="Time" { (time(e.at_ms)) }
                                td data-label="User" { (e.user) }
                                td data-label="Action" { (e.action) }
                                td data-label="Resources" { (e.resources.join(", ")) }
                                td data-label="From" { (e.source) }
                                td data-label="Outcome" {
                                    span class=(if code.is_none() { "state ok" } else { "state bad" }) { (outcome) }
                                    @if let Some(c) = code { " " (c) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::model::State;
    use crate::cloud::nodes::{Claim, Node};
    use mallee_proto::NodeInfo;

    fn nav() -> Nav<'static> {
        Nav {
            user: "ops",
            csrf: "CSRF-TOKEN",
            admin: true,
        }
    }

    fn view(id: &str, zone: &str, cpus: u32, memory_mib: u64, used: [u64; 2]) -> NodeView {
        let info = NodeInfo {
            node_id: id.into(),
            cluster: zone.into(),
            cpus,
            memory_mib,
            disk_gib: 20,
            macs: vec!["52:54:00:77:00:01".parse().unwrap()],
            agent_version: "0.1.0".into(),
            boot_id: "boot-1".into(),
        };
        NodeView {
            node: Node {
                id: id.into(),
                cluster: zone.into(),
                info: Some(info.clone()),
                boot_id: "boot-1".into(),
                ..Node::default()
            },
            info: Some(info),
            used,
            instances: vec![("i-00000001".into(), State::Running)],
        }
    }

    fn pending(id: &str) -> NodeView {
        NodeView {
            node: Node {
                id: id.into(),
                cluster: "zone-a".into(),
                admission: Admission::Pending,
                claim: Some(Claim {
                    cluster: "zone-a".into(),
                    macs: vec!["52:54:00:99:00:01".parse().unwrap()],
                    source: "10.77.0.150".into(),
                    first_ms: 1,
                    last_ms: 2,
                    attempts: 3,
                    approved: false,
                }),
                ..Node::default()
            },
            info: None,
            used: [0, 0],
            instances: Vec::new(),
        }
    }

    #[test]
    fn bars_are_meters_of_each_nodes_use_and_each_zone_sums_its_up_nodes() {
        let views = [
            view("n1", "zone-a", 4, 4096, [3, 1024]),
            view("n2", "zone-a", 2, 2048, [2, 2048]),
            view("n3", "zone-b", 8, 8192, [0, 0]),
            pending("n4"),
        ];
        let zones = zone_use(&views);
        assert_eq!(
            zones["zone-a"],
            ZoneUse {
                nodes: 3,
                up: 2,
                cpus: 6,
                used_cpus: 5,
                memory_mib: 6144,
                used_memory_mib: 3072,
            }
        );
        assert_eq!(zones["zone-b"].used_cpus, 0);
        let html = nodes(nav(), &views, None).into_string();
        for part in [
            // Zone a's summary, then node n1's and n2's own bars.
            r#"<meter min="0" max="6" value="5" title="vCPUs in use">5/6</meter> 5 of 6 vCPUs"#,
            r#"<meter min="0" max="6144" value="3072" title="memory in use">3072/6144</meter> 3072 of 6144 MiB"#,
            r#"<meter min="0" max="4" value="3" title="vCPUs in use">"#,
            r#"<meter min="0" max="2048" value="2048" title="memory in use">"#,
            "2 of 3",
            "boot-1",
            "i-00000001",
            "20 GiB",
            r#"<section class="node" id="node-n1">"#,
        ] {
            assert!(html.contains(part), "{part} not in {html}");
        }
        // No inline style: the console's Content-Security-Policy allows none.
        assert!(!html.contains("style="), "{html}");
        assert!(!html.contains("<script"));
    }

    #[test]
    fn a_pending_node_shows_its_claim_and_approve_and_reject_buttons_with_the_token() {
        let html = nodes(
            nav(),
            &[pending("n4"), view("n1", "zone-a", 1, 1, [0, 0])],
            None,
        )
        .into_string();
        for part in [
            "pending",
            "10.77.0.150",
            "52:54:00:99:00:01",
            r#"action="/_console/admin/nodes/n4/approve""#,
            r#"action="/_console/admin/nodes/n4/reject""#,
            r#"action="/_console/admin/nodes/n1/reject""#,
        ] {
            assert!(html.contains(part), "{part} not in {html}");
        }
        assert!(!html.contains("/n1/approve"), "{html}");
        let forms = html.matches("<form").count();
        assert_eq!(
            html.matches(r#"name="csrf" value="CSRF-TOKEN""#).count(),
            forms
        );
    }

    #[test]
    fn user_names_and_audit_values_are_escaped() {
        let user = User {
            name: "<script>x</script>".into(),
            access_key: "AKIA".into(),
            secret: "s".into(),
            role: crate::store::Role::User,
            created_ms: 0,
        };
        let rows = [UserRow {
            user,
            has_password: false,
            disabled: false,
        }];
        let html = users(nav(), &rows, Some("<b>no</b>")).into_string();
        assert!(
            !html.contains("<script>") && !html.contains("<b>"),
            "{html}"
        );
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"), "{html}");
        assert!(
            !html.contains("AKIA"),
            "the secret key pair stays off the page"
        );
        let entry = AuditEntry {
            at_ms: 0,
            user: "u".into(),
            action: "CreateKeyPair".into(),
            resources: vec!["<img src=x>".into()],
            source: "192.0.2.1".into(),
            outcome: crate::store::Outcome::Ok,
            request_id: String::new(),
        };
        let filter = AuditFilter {
            action: "\"><script>".into(),
            ..Default::default()
        };
        let html = audit(nav(), &filter, &[AuditRow { id: 1, entry }]).into_string();
        assert!(
            !html.contains("<img") && !html.contains("<script"),
            "{html}"
        );
        assert!(html.contains("&lt;img src=x&gt;"), "{html}");
        assert!(
            html.contains(r#"value="&quot;&gt;&lt;script&gt;""#),
            "{html}"
        );
    }

    fn row(name: &str, disabled: bool) -> UserRow {
        UserRow {
            user: User {
                name: name.into(),
                access_key: "MKIA".into(),
                secret: "s".into(),
                role: crate::store::Role::User,
                created_ms: 0,
            },
            has_password: true,
            disabled,
        }
    }

    #[test]
    fn each_user_shows_its_state_and_the_button_that_changes_it_but_not_on_ones_own_row() {
        let rows = [row("erin", true), row("frank", false), row("ops", false)];
        let html = users(nav(), &rows, None).into_string();
        let part = |name: &str| {
            let start = html
                .find(&format!("<td data-label=\"Name\">{name}<"))
                .unwrap();
            let end = html[start..].find("</tr>").unwrap();
            html[start..start + end].to_string()
        };
        let erin = part("erin");
        assert!(
            erin.contains(r#"<span class="state bad">disabled</span>"#),
            "{erin}"
        );
        assert!(
            erin.contains(r#"action="/_console/admin/users/enable""#),
            "{erin}"
        );
        assert!(!erin.contains("/disable"), "{erin}");
        let frank = part("frank");
        assert!(
            frank.contains(r#"<span class="state ok">enabled</span>"#),
            "{frank}"
        );
        assert!(
            frank.contains(r#"action="/_console/admin/users/disable""#),
            "{frank}"
        );
        assert!(frank.contains(r#"name="name" value="frank""#), "{frank}");
        // The signed-in admin ("ops") gets no Disable button on their own row.
        let ops = part("ops");
        assert!(
            !ops.contains("/disable") && !ops.contains("/enable"),
            "{ops}"
        );
        let forms = html.matches("<form").count();
        assert_eq!(
            html.matches(r#"name="csrf" value="CSRF-TOKEN""#).count(),
            forms
        );
    }

    #[test]
    fn networks_show_each_groups_vlan_subnet_and_gateway_and_who_holds_each_address() {
        let cfg = NetworkConfig::default();
        let net = Network {
            group_id: "sg-1".into(),
            group_name: "<b>web</b>".into(),
            owner: "alice".into(),
            vlan: Some(104),
            slice: 3,
            subnet: cfg.slice(3),
            gateway: "172.31.0.97".parse().unwrap(),
            created_ms: 0,
        };
        let held = [
            Held {
                ip: "198.51.100.10".into(),
                owner: "alice".into(),
                allocation_id: Some("eipalloc-1".into()),
                instance_id: None,
            },
            Held {
                ip: "198.51.100.11".into(),
                owner: "bob".into(),
                allocation_id: None,
                instance_id: Some("i-00000002".into()),
            },
        ];
        let view = NetworksView {
            cfg: &cfg,
            gateway: &GatewayStatus::Failed("nft: <bad>".into()),
            networks: &[net],
            held: &held,
            pool: 32,
            free: 30,
        };
        let html = networks(nav(), &view).into_string();
        for part in [
            "sg-1",
            "&lt;b&gt;web&lt;/b&gt;",
            ">104<",
            "172.31.0.96/27",
            "172.31.0.97",
            "failed",
            "nft: &lt;bad&gt;",
            r#"<meter min="0" max="32" value="2""#,
            "elastic eipalloc-1",
            "dynamic",
            "i-00000002",
        ] {
            assert!(html.contains(part), "{part} not in {html}");
        }
        assert!(!html.contains("<b>web"), "{html}");
    }

    #[test]
    fn a_filter_matches_only_what_each_given_field_names() {
        let entry = AuditEntry {
            at_ms: 0,
            user: "alice".into(),
            action: "RunInstances".into(),
            resources: Vec::new(),
            source: "-".into(),
            outcome: crate::store::Outcome::Err {
                code: "InvalidAMIID.NotFound".into(),
            },
            request_id: String::new(),
        };
        let q = |pairs: &[(&str, &str)]| AuditFilter::from_query(&Params::from_pairs(pairs));
        assert!(q(&[]).matches(&entry));
        assert!(q(&[("user", " alice "), ("outcome", "error")]).matches(&entry));
        assert!(!q(&[("user", "ali")]).matches(&entry));
        assert!(!q(&[("action", "TerminateInstances")]).matches(&entry));
        assert!(!q(&[("outcome", "ok")]).matches(&entry));
    }
}
