//! The `mallee-frontend admin` command line: user management over the store, and the AWS
//! credentials file written for the admin key pair.

use crate::store::{Role, Store, User};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("usage: mallee-frontend admin user create NAME [--role user|admin|node] | list | delete NAME")]
    Usage,
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("writing credentials file {path}: {source}")]
    Credentials {
        path: String,
        source: std::io::Error,
    },
}

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
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(credentials_text(user).as_bytes())
        .map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Runs `admin <args>`; returns what to print.
pub fn run(store: &Store, args: &[String]) -> Result<String, AdminError> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["user", "create", name, rest @ ..] => {
            let role = match rest {
                [] => Role::User,
                ["--role", r] => Role::parse(r).ok_or(AdminError::Usage)?,
                _ => return Err(AdminError::Usage),
            };
            let u = store.create_user(name, role)?;
            Ok(format!(
                "{}\t{}\t{}\t{}\t{}",
                u.name,
                u.role.as_str(),
                u.access_key,
                u.secret,
                u.account_id()
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
            store.delete_user(name)?;
            Ok(format!("deleted {name}"))
        }
        _ => Err(AdminError::Usage),
    }
}
