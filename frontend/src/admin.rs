//! The `mallee-frontend admin` command line: user management and node admission (listing the
//! nodes with their admission state, approving and rejecting them) over the store, each change
//! recorded in the audit log as user [`CLI_USER`] from [`CLI_SOURCE`]; users' web console
//! passwords (read from stdin, stored as Argon2id hashes). Creating a user, setting a
//! password and disabling or enabling a user are [`create_user`], [`set_password`] and
//! [`set_disabled`], which the console's admin pages call too
//! with the signed-in admin as the [`Actor`]. Also: reading the audit log, the AWS
//! credentials file written for the admin key pair, and the admin's first console password.

use crate::audit;
use crate::cloud::admission::{self, AdmissionError};
use crate::cloud::nodes::Node;
use crate::console::password::{self, PasswordError};
use crate::store::{AuditEntry, AuditRow, Outcome, Role, Store, StoreError, User};
use std::io::BufRead;
use std::path::Path;

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("usage: mallee-frontend admin user create NAME [--role user|admin|node] [--password-stdin] | user password NAME --password-stdin | user list | user delete NAME | user disable NAME | user enable NAME | node list | node approve ID | node reject ID | audit [--limit N]")]
    Usage,
    #[error("{0}")]
    Password(#[from] PasswordError),
    #[error("reading the password from stdin: {0}")]
    Stdin(std::io::Error),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Node(#[from] AdmissionError),
    #[error("you cannot disable yourself ({0}); another admin can")]
    DisableSelf(String),
    #[error("writing credentials file {path}: {source}")]
    Credentials {
        path: String,
        source: std::io::Error,
    },
    #[error("writing the console password file {path}: {source}")]
    PasswordFile {
        path: String,
        source: std::io::Error,
    },
}

/// Who the CLI's changes are recorded as in the audit log, and from where.
pub const CLI_USER: &str = "admin-cli";
pub const CLI_SOURCE: &str = "local";

/// How many entries `admin audit` prints unless `--limit` says.
const AUDIT_LINES: usize = 100;

/// The AWS shared-credentials text for `user` (profile `default`).
pub fn credentials_text(user: &User) -> String {
    format!(
        "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        user.access_key, user.secret
    )
}

/// Writes `user`'s key pair as an AWS credentials file readable only by its owner.
pub fn write_credentials(path: &Path, user: &User) -> Result<(), AdminError> {
    let err = |source| AdminError::Credentials {
        path: path.display().to_string(),
        source,
    };
    mallee_proto::fsio::write_atomic(path, credentials_text(user).as_bytes(), 0o600).map_err(err)
}

/// Gives the `admin` user a random console password when it has none: stores its hash and
/// writes the password to `path` (mode 0600) for the admin to sign in with. Returns whether
/// it made one. The password itself is never logged.
pub fn ensure_console_password(store: &Store, path: &Path) -> Result<bool, AdminError> {
    if store.password_hash("admin")?.is_some() {
        return Ok(false);
    }
    let secret = password::generate();
    let err = |source| AdminError::PasswordFile {
        path: path.display().to_string(),
        source,
    };
    mallee_proto::fsio::write_atomic(path, format!("{secret}\n").as_bytes(), 0o600).map_err(err)?;
    store.set_password_hash("admin", &password::hash(&secret)?)?;
    Ok(true)
}

/// The first line of `stdin`, without its line ending.
fn read_password(stdin: &mut dyn BufRead) -> Result<String, AdminError> {
    let mut line = String::new();
    stdin.read_line(&mut line).map_err(AdminError::Stdin)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Runs `admin <args>`, reading a password from `stdin` when asked to; returns what to print.
pub fn run(store: &Store, args: &[String], stdin: &mut dyn BufRead) -> Result<String, AdminError> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["user", "create", name, rest @ ..] => {
            let (role, with_password) = match rest {
                [] => (Role::User, false),
                ["--password-stdin"] => (Role::User, true),
                ["--role", r] => (Role::parse(r).ok_or(AdminError::Usage)?, false),
                ["--role", r, "--password-stdin"] | ["--password-stdin", "--role", r] => {
                    (Role::parse(r).ok_or(AdminError::Usage)?, true)
                }
                _ => return Err(AdminError::Usage),
            };
            let password = match with_password {
                true => Some(read_password(stdin)?),
                false => None,
            };
            let u = create_user(store, &CLI, name, role, password.as_deref())?;
            Ok(format!(
                "{}\t{}\t{}\t{}\t{}",
                u.name,
                u.role.as_str(),
                u.access_key,
                u.secret,
                u.account_id()
            ))
        }
        ["user", "password", name, "--password-stdin"] => {
            set_password(store, &CLI, name, &read_password(stdin)?)?;
            Ok(format!(
                "set the console password of {name}; its console sessions ended"
            ))
        }
        ["user", "list"] => Ok(store
            .list_users()?
            .iter()
            .map(|u| {
                let (name, role, key) = (&u.name, u.role.as_str(), &u.access_key);
                format!("{name}\t{role}\t{key}\t{}", u.account_id())
            })
            .collect::<Vec<_>>()
            .join("\n")),
        ["user", "delete", name] => {
            recorded(
                store,
                &CLI,
                "DeleteUser",
                name,
                store.delete_user(name),
                error_code,
            )?;
            Ok(format!("deleted {name}"))
        }
        ["user", verb @ ("disable" | "enable"), name] => {
            let disabled = *verb == "disable";
            set_disabled(store, &CLI, name, disabled)?;
            Ok(match disabled {
                true => format!("disabled {name}: its keys and console sign-in are refused and its console sessions ended"),
                false => format!("enabled {name}: its keys and console password work again"),
            })
        }
        ["node", "list"] => Ok(admission::list(store)?
            .iter()
            .map(node_line)
            .collect::<Vec<_>>()
            .join("\n")),
        ["node", "approve", id] => {
            let approved = admission::approve(store, id, crate::store::now_ms());
            let n = recorded(
                store,
                &CLI,
                "ApproveNode",
                id,
                approved,
                AdmissionError::code,
            )?;
            Ok(format!(
                "approved {id}: {}; its next enrollment gets a token",
                n.admission_name()
            ))
        }
        ["node", "reject", id] => {
            let rejected = admission::reject(store, id);
            recorded(
                store,
                &CLI,
                "RejectNode",
                id,
                rejected,
                AdmissionError::code,
            )?;
            Ok(format!(
                "rejected {id}: its token no longer works and it is refused until approved"
            ))
        }
        ["audit"] => audit_lines(store, AUDIT_LINES),
        ["audit", "--limit", n] => {
            let n = n.parse().ok().filter(|n| *n > 0).ok_or(AdminError::Usage)?;
            audit_lines(store, n)
        }
        _ => Err(AdminError::Usage),
    }
}

/// Who made a change, as the audit log records it.
pub struct Actor<'a> {
    pub user: &'a str,
    /// The client's address (`local` for the CLI).
    pub source: &'a str,
}

/// The CLI, as its changes are recorded.
pub const CLI: Actor<'static> = Actor {
    user: CLI_USER,
    source: CLI_SOURCE,
};

/// Creates user `name` with `role` and, when given, a console `password` (checked and
/// hashed before the user exists: a bad password makes no user); each step audited as `by`.
pub fn create_user(
    store: &Store,
    by: &Actor<'_>,
    name: &str,
    role: Role,
    password: Option<&str>,
) -> Result<User, AdminError> {
    let hash = password.map(password::hash).transpose()?;
    let made = store.create_user(name, role);
    let u = recorded(store, by, "CreateUser", name, made, error_code)?;
    if let Some(hash) = hash {
        let set = store.set_password_hash(name, &hash);
        recorded(store, by, "CreateLoginProfile", name, set, error_code)?;
    }
    Ok(u)
}

/// Sets `name`'s console password (which ends its console sessions), audited as `by`.
pub fn set_password(
    store: &Store,
    by: &Actor<'_>,
    name: &str,
    given: &str,
) -> Result<(), AdminError> {
    let hash = password::hash(given)?;
    let set = store.set_password_hash(name, &hash);
    recorded(store, by, "UpdateLoginProfile", name, set, error_code)?;
    Ok(())
}

/// Gives `name` a new access key and secret (the old pair stops working at once), audited as
/// `by` with the action `RotateAccessKey`; the user with the new pair.
pub fn rotate_access_key(store: &Store, by: &Actor<'_>, name: &str) -> Result<User, StoreError> {
    let rotated = store.rotate_access_key(name);
    recorded(store, by, "RotateAccessKey", name, rotated, error_code)
}

/// Disables `name` (its access key and console sign-in are refused, its console sessions
/// end) or enables it again, audited as `by` with the action `DisableUser` or `EnableUser`
/// (IAM has no verb for this; its nearest is `UpdateAccessKey` to Inactive). Nobody may
/// disable themself, so an admin cannot lock the console's last admin out by a slip.
pub fn set_disabled(
    store: &Store,
    by: &Actor<'_>,
    name: &str,
    disabled: bool,
) -> Result<(), AdminError> {
    let action = if disabled {
        "DisableUser"
    } else {
        "EnableUser"
    };
    if disabled && by.user == name {
        let refused: Result<(), AdminError> = Err(AdminError::DisableSelf(name.to_string()));
        return recorded(store, by, action, name, refused, |_| "InvalidInput");
    }
    let set = store.set_user_disabled(name, disabled);
    recorded(store, by, action, name, set, error_code)?;
    Ok(())
}

/// Records a change by `by` in the audit log as `result` says it went (`code` names a
/// failure as the API would); hands the result on.
fn recorded<T, E>(
    store: &Store,
    by: &Actor<'_>,
    action: &str,
    resource: &str,
    result: Result<T, E>,
    code: impl Fn(&E) -> &'static str,
) -> Result<T, E> {
    let outcome = match &result {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::Err {
            code: code(e).to_string(),
        },
    };
    let entry = AuditEntry {
        at_ms: crate::store::now_ms(),
        user: by.user.to_string(),
        action: action.to_string(),
        resources: vec![resource.to_string()],
        source: by.source.to_string(),
        outcome,
        request_id: String::new(),
    };
    audit::record(store, &entry);
    result
}

/// A failed user change as IAM would name it.
fn error_code(e: &StoreError) -> &'static str {
    match e {
        StoreError::UserExists(_) | StoreError::AccountIdTaken { .. } => "EntityAlreadyExists",
        StoreError::NoSuchUser(_) => "NoSuchEntity",
        _ => "InternalError",
    }
}

/// One node of `node list`, tab-separated, `-` for what is empty: id, zone, admission
/// (`admitted`, `pending`, `approved`, `rejected`), `up` or `down`, the MACs it registered
/// with; then the claim waiting under its id (`pending` or `approved`, or `-` for none), its
/// MACs, source address, first and last attempt.
pub fn node_line(n: &Node) -> String {
    let dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
    let macs = |m: &[mallee_proto::Mac]| {
        dash((m.iter().map(|m| m.to_string()).collect::<Vec<_>>()).join(","))
    };
    let up = n.admission == crate::cloud::nodes::Admission::Admitted && !n.down;
    let registered = n.info.as_ref().map(|i| i.macs.as_slice()).unwrap_or(&[]);
    let mut fields = vec![
        n.id.clone(),
        n.cluster.clone(),
        n.admission_name().to_string(),
        if up { "up" } else { "down" }.to_string(),
        macs(registered),
    ];
    let time = crate::auth::time::format_iso8601_millis;
    fields.extend(match &n.claim {
        Some(c) => [
            if c.approved { "approved" } else { "pending" }.to_string(),
            macs(&c.macs),
            dash(c.source.clone()),
            time(c.first_ms),
            time(c.last_ms),
        ],
        None => ["-", "-", "-", "-", "-"].map(String::from),
    });
    fields.join("\t")
}

/// The newest `limit` audit entries, newest first, one line each.
fn audit_lines(store: &Store, limit: usize) -> Result<String, AdminError> {
    let page = store.audit_log(limit, None)?;
    Ok(page
        .rows
        .iter()
        .map(audit_line)
        .collect::<Vec<_>>()
        .join("\n"))
}

/// time, user, action, resources (comma-separated), source, outcome, error code, request id;
/// tab-separated, `-` for what is empty.
pub fn audit_line(row: &AuditRow) -> String {
    let e = &row.entry;
    let or_dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
    let (outcome, code) = e.outcome.parts();
    let code = code.unwrap_or("-");
    [
        crate::auth::time::format_iso8601_millis(e.at_ms),
        e.user.clone(),
        e.action.clone(),
        or_dash(e.resources.join(",")),
        e.source.clone(),
        outcome.to_string(),
        code.to_string(),
        or_dash(e.request_id.clone()),
    ]
    .join("\t")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(store: &Store, args: &[&str]) -> Result<String, AdminError> {
        run_with_stdin(store, args, "")
    }

    fn run_with_stdin(store: &Store, args: &[&str], stdin: &str) -> Result<String, AdminError> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        run(store, &args, &mut stdin.as_bytes())
    }

    #[test]
    fn passwords_come_from_stdin_are_stored_hashed_and_reset_audited() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let args = [
            "user",
            "create",
            "dana",
            "--role",
            "user",
            "--password-stdin",
        ];
        run_with_stdin(&store, &args, "first password\n").unwrap();
        let hash = store.password_hash("dana").unwrap().unwrap();
        assert!(password::verify("first password", Some(&hash)));
        // Too short: refused, and no user made.
        let short = ["user", "create", "erin", "--password-stdin"];
        assert!(matches!(
            run_with_stdin(&store, &short, "short\n"),
            Err(AdminError::Password(PasswordError::Length(5)))
        ));
        assert_eq!(store.user_by_name("erin").unwrap(), None);
        let reset = ["user", "password", "dana", "--password-stdin"];
        run_with_stdin(&store, &reset, "second password\r\n").unwrap();
        let hash = store.password_hash("dana").unwrap().unwrap();
        assert!(password::verify("second password", Some(&hash)));
        assert!(!password::verify("first password", Some(&hash)));
        let nobody = ["user", "password", "frank", "--password-stdin"];
        assert!(run_with_stdin(&store, &nobody, "some password\n").is_err());
        let out = run_args(&store, &["audit"]).unwrap();
        let actions: Vec<&str> = out.lines().map(|l| l.split('\t').nth(2).unwrap()).collect();
        assert_eq!(
            actions,
            [
                "UpdateLoginProfile",
                "UpdateLoginProfile",
                "CreateLoginProfile",
                "CreateUser"
            ],
            "{out}"
        );
        assert!(!out.contains("password"), "{out}");
    }

    #[test]
    fn disable_and_enable_are_audited_and_nobody_disables_themself() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bob = store.create_user("bob", Role::User).unwrap();
        let out = run_args(&store, &["user", "disable", "bob"]).unwrap();
        assert!(out.starts_with("disabled bob"), "{out}");
        assert!(store.user_disabled("bob").unwrap());
        assert_eq!(store.user_by_access_key(&bob.access_key).unwrap(), None);
        run_args(&store, &["user", "enable", "bob"]).unwrap();
        assert!(!store.user_disabled("bob").unwrap());
        assert_eq!(
            store.user_by_access_key(&bob.access_key).unwrap(),
            Some(bob)
        );
        assert!(run_args(&store, &["user", "disable", "carol"]).is_err());
        assert!(matches!(
            run_args(&store, &["user", "disable"]),
            Err(AdminError::Usage)
        ));
        store.ensure_admin().unwrap();
        let me = Actor {
            user: "admin",
            source: "192.0.2.1",
        };
        assert!(matches!(
            set_disabled(&store, &me, "admin", true),
            Err(AdminError::DisableSelf(_))
        ));
        assert!(!store.user_disabled("admin").unwrap());
        let out = run_args(&store, &["audit"]).unwrap();
        let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
        let got: Vec<&[&str]> = lines.iter().map(|l| &l[1..7]).collect();
        assert_eq!(
            got,
            [
                &[
                    "admin",
                    "DisableUser",
                    "admin",
                    "192.0.2.1",
                    "error",
                    "InvalidInput"
                ][..],
                &[
                    "admin-cli",
                    "DisableUser",
                    "carol",
                    "local",
                    "error",
                    "NoSuchEntity"
                ],
                &["admin-cli", "EnableUser", "bob", "local", "ok", "-"],
                &["admin-cli", "DisableUser", "bob", "local", "ok", "-"],
            ]
        );
    }

    #[test]
    fn the_admin_gets_a_console_password_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.ensure_admin().unwrap();
        let path = dir.path().join("admin-console-password");
        assert!(ensure_console_password(&store, &path).unwrap());
        let written = std::fs::read_to_string(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let hash = store.password_hash("admin").unwrap().unwrap();
        assert!(password::verify(written.trim_end(), Some(&hash)));
        assert!(!ensure_console_password(&store, &path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), written);
    }

    #[test]
    fn user_changes_are_audited_as_the_cli_and_audit_prints_them_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        run_args(&store, &["user", "create", "bob"]).unwrap();
        assert!(run_args(&store, &["user", "delete", "carol"]).is_err());
        run_args(&store, &["user", "list"]).unwrap();
        let out = run_args(&store, &["audit"]).unwrap();
        let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(
            lines[0][1..],
            [
                "admin-cli",
                "DeleteUser",
                "carol",
                "local",
                "error",
                "NoSuchEntity",
                "-"
            ]
        );
        assert_eq!(
            lines[1][1..],
            ["admin-cli", "CreateUser", "bob", "local", "ok", "-", "-"]
        );
        assert!(lines[0][0].ends_with('Z'), "{out}");
        assert_eq!(
            run_args(&store, &["audit", "--limit", "1"])
                .unwrap()
                .lines()
                .count(),
            1
        );
        assert!(matches!(
            run_args(&store, &["audit", "--limit", "0"]),
            Err(AdminError::Usage)
        ));
    }

    #[test]
    fn node_list_shows_claims_and_approve_and_reject_are_audited() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let cfg = crate::cloud::Ec2Config::default();
        let id = "node-525400990001";
        let req = mallee_proto::EnrollRequest {
            node_id: id.into(),
            cluster: cfg.clusters[0].clone(),
            secret: cfg.cluster_secret.clone(),
            macs: vec!["52:54:00:99:00:01".parse().unwrap()],
            token: None,
        };
        assert!(admission::enroll(&store, &cfg, &req, "10.77.0.150", 1_000).is_err());
        let list = run_args(&store, &["node", "list"]).unwrap();
        let fields: Vec<&str> = list.split('\t').collect();
        assert_eq!(
            fields,
            [
                id,
                "cluster1",
                "pending",
                "down",
                "-",
                "pending",
                "52:54:00:99:00:01",
                "10.77.0.150",
                "1970-01-01T00:00:01.000Z",
                "1970-01-01T00:00:01.000Z"
            ]
        );
        let out = run_args(&store, &["node", "approve", id]).unwrap();
        assert!(out.starts_with(&format!("approved {id}")), "{out}");
        let list = run_args(&store, &["node", "list"]).unwrap();
        assert_eq!(list.split('\t').nth(2), Some("approved"), "{list}");
        assert!(matches!(
            run_args(&store, &["node", "approve", "node-9"]),
            Err(AdminError::Node(AdmissionError::NotFound(_)))
        ));
        run_args(&store, &["node", "reject", id]).unwrap();
        let list = run_args(&store, &["node", "list"]).unwrap();
        assert_eq!(list.split('\t').nth(2), Some("rejected"), "{list}");
        assert!(matches!(
            run_args(&store, &["node", "approve"]),
            Err(AdminError::Usage)
        ));
        let out = run_args(&store, &["audit"]).unwrap();
        let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
        let got: Vec<&[&str]> = lines.iter().map(|l| &l[1..7]).collect();
        assert_eq!(
            got,
            [
                &["admin-cli", "RejectNode", id, "local", "ok", "-"][..],
                &[
                    "admin-cli",
                    "ApproveNode",
                    "node-9",
                    "local",
                    "error",
                    "InvalidNodeID.NotFound"
                ],
                &["admin-cli", "ApproveNode", id, "local", "ok", "-"],
            ]
        );
    }
}
