//! The admin pages' handlers: the nodes (approve or reject one waiting for admission), the
//! users (create one with a console password, reset a password, disable or enable one), the instance networks with
//! the public addresses in use, and the audit log with its filters. The gate in `mod.rs` lets
//! only admins reach them. Changes go through the same functions as the admin API and CLI:
//! node admission is EC2's ApproveNode and RejectNode run through [`Ec2::call_as`]; users are
//! `crate::admin`'s `create_user`, `set_password` and `set_disabled`; each is audited as the signed-in admin
//! from the client's address. The pages are `admin_pages`.

use super::admin_pages::{self, AuditFilter, UserRow, AUDIT_ROWS};
use super::pages::Nav;
use super::reply::Reply;
use super::{Asked, Console, ConsoleError};
use crate::admin::{Actor, AdminError};
use crate::ec2::Ec2;
use crate::store::{AuditRow, Role, Session, Store, StoreError};
use http::StatusCode;

/// How many rows the audit page reads from the store at a time while filtering.
const AUDIT_BATCH: usize = 1000;

impl Console {
    pub(super) fn nodes(
        &self,
        s: &Session,
        status: StatusCode,
        message: Option<&str>,
    ) -> Result<Reply, ConsoleError> {
        let views = self.store.cloud(crate::cloud::nodes::views)?;
        let page = admin_pages::nodes(Nav::of(s), &views, message);
        Ok(Reply::page(status, page))
    }

    /// ApproveNode or RejectNode (`verb`: `approve` or `reject`) of node `id`, as the admin;
    /// back to the nodes, with EC2's reason when it refused.
    pub(super) fn admit(
        &self,
        ec2: &Ec2,
        a: &Asked<'_>,
        s: &Session,
        id: &str,
        verb: &str,
    ) -> Result<Reply, ConsoleError> {
        let action = match verb {
            "approve" => "ApproveNode",
            "reject" => "RejectNode",
            _ => {
                let path = format!("{}{}", super::PREFIX, a.path);
                return Err(ConsoleError::NotFound(path));
            }
        };
        match Self::call(ec2, a, s, &[("Action", action), ("NodeId", id)]) {
            Ok(_) => Ok(Reply::redirect("/_console/admin/nodes")),
            Err(e) => {
                let why = format!("Node {id} was not changed: {}", e.message);
                self.nodes(s, crate::http::status(e.status), Some(&why))
            }
        }
    }

    pub(super) fn users(
        &self,
        s: &Session,
        status: StatusCode,
        message: Option<&str>,
    ) -> Result<Reply, ConsoleError> {
        let rows = user_rows(&self.store)?;
        Ok(Reply::page(
            status,
            admin_pages::users(Nav::of(s), &rows, message),
        ))
    }

    /// Creates a user with the form's name, role and console password.
    pub(super) fn create_user(&self, a: &Asked<'_>, s: &Session) -> Result<Reply, ConsoleError> {
        let name = a.form.get("name").unwrap_or("").trim();
        let Some(role) = Role::parse(a.form.get("role").unwrap_or("user")) else {
            let why = "Choose the role user or admin.";
            return self.users(s, StatusCode::BAD_REQUEST, Some(why));
        };
        if name.is_empty() {
            let why = "Give the user a name.";
            return self.users(s, StatusCode::BAD_REQUEST, Some(why));
        }
        let given = a.form.get("password").unwrap_or("");
        let by = actor(a, s);
        match crate::admin::create_user(&self.store, &by, name, role, Some(given)) {
            Ok(_) => Ok(Reply::redirect("/_console/admin/users")),
            Err(e) => self.refused(s, "The user was not created", &e),
        }
    }

    /// Sets the console password of the user the form names (their sessions end).
    pub(super) fn reset_password(&self, a: &Asked<'_>, s: &Session) -> Result<Reply, ConsoleError> {
        let name = a.form.get("name").unwrap_or("");
        let given = a.form.get("password").unwrap_or("");
        match crate::admin::set_password(&self.store, &actor(a, s), name, given) {
            Ok(()) => Ok(Reply::redirect("/_console/admin/users")),
            Err(e) => {
                let what = format!("The password of {name} was not set");
                self.refused(s, &what, &e)
            }
        }
    }

    /// Disables (or enables) the user the form names, as the signed-in admin; refused for the
    /// admin themself.
    pub(super) fn set_disabled(
        &self,
        a: &Asked<'_>,
        s: &Session,
        disabled: bool,
    ) -> Result<Reply, ConsoleError> {
        let name = a.form.get("name").unwrap_or("");
        match crate::admin::set_disabled(&self.store, &actor(a, s), name, disabled) {
            Ok(()) => Ok(Reply::redirect("/_console/admin/users")),
            Err(e) => {
                let verb = if disabled { "disabled" } else { "enabled" };
                self.refused(s, &format!("{name} was not {verb}"), &e)
            }
        }
    }

    /// The users page saying why a change was refused: a 400 for what the admin can fix.
    fn refused(&self, s: &Session, what: &str, e: &AdminError) -> Result<Reply, ConsoleError> {
        let status = match e {
            AdminError::Password(_)
            | AdminError::DisableSelf(_)
            | AdminError::Store(
                StoreError::UserExists(_)
                | StoreError::AccountIdTaken { .. }
                | StoreError::NoSuchUser(_),
            ) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        self.users(s, status, Some(&format!("{what}: {e}.")))
    }

    /// The instance networks (as DescribeNetworks shows them) and who holds which public
    /// address of the pool.
    pub(super) fn networks(&self, ec2: &Ec2, s: &Session) -> Result<Reply, ConsoleError> {
        let (nets, held, free) = ec2.store.cloud(|tx| {
            let nets = crate::cloud::networks::list(tx)?;
            let held = crate::cloud::public::held(tx)?;
            let free = crate::cloud::public::free(tx, &ec2.cfg.public_ips)?;
            Ok::<_, StoreError>((nets, held, free.len()))
        })?;
        let view = admin_pages::NetworksView {
            cfg: &ec2.net,
            gateway: &crate::gateway::status(ec2.gateway_dir.as_deref()),
            networks: &nets,
            held: &held,
            pool: ec2.cfg.public_ips.len(),
            free,
        };
        let page = admin_pages::networks(Nav::of(s), &view);
        Ok(Reply::page(StatusCode::OK, page))
    }

    /// The audit log, newest first, filtered by the query's `user`, `action` and `outcome`.
    pub(super) fn audit(&self, a: &Asked<'_>, s: &Session) -> Result<Reply, ConsoleError> {
        let filter = AuditFilter::from_query(&a.form);
        let rows = filtered_audit(&self.store, &filter, AUDIT_ROWS)?;
        let page = admin_pages::audit(Nav::of(s), &filter, &rows);
        Ok(Reply::page(StatusCode::OK, page))
    }
}

/// The signed-in admin at the client's address.
fn actor<'a>(a: &'a Asked<'_>, s: &'a Session) -> Actor<'a> {
    Actor {
        user: &s.user.name,
        source: a.source,
    }
}

/// Every user, with whether it has a console password and whether it is disabled.
fn user_rows(store: &Store) -> Result<Vec<UserRow>, StoreError> {
    store
        .list_users()?
        .into_iter()
        .map(|user| {
            let has_password = store.password_hash(&user.name)?.is_some();
            let disabled = store.user_disabled(&user.name)?;
            Ok(UserRow {
                user,
                has_password,
                disabled,
            })
        })
        .collect()
}

/// Up to `limit` entries of the log that `filter` matches, newest first, read through the
/// store's pages of the log as DescribeAuditLog reads them.
pub fn filtered_audit(
    store: &Store,
    filter: &AuditFilter,
    limit: usize,
) -> Result<Vec<AuditRow>, StoreError> {
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = store.audit_log(AUDIT_BATCH, before)?;
        let matching = page.rows.into_iter().filter(|r| filter.matches(&r.entry));
        out.extend(matching.take(limit - out.len()));
        match page.next {
            Some(next) if out.len() < limit => before = Some(next),
            _ => return Ok(out),
        }
    }
}
