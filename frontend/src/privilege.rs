//! Dropping root: when the daemon starts as root it opens its sockets and data directory,
//! hands the data directory to an unprivileged user (created as a system user if missing,
//! else `nobody`) and switches to that user before serving any request. The admin
//! credentials file and the admin's first console password stay root's, mode 0600. `run_as`
//! may also be numeric (`UID` or `UID:GID`): the appliance's static binary has no NSS, so it
//! names its user by number.
//! Whoever it runs as, [`check_data_dir`] then proves it can create, write, sync and rename a
//! file in the data directory, so a directory it cannot reach fails the start, not every PUT.

use nix::unistd::{Gid, Uid, User};
use std::path::Path;

/// Why privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("looking up user {user}: {source}")]
    Lookup { user: String, source: nix::Error },
    #[error("no unprivileged user to run as (tried {0} and nobody)")]
    NoUser(String),
    #[error("handing {path} to uid {uid}: {source}")]
    Chown {
        path: String,
        uid: u32,
        source: std::io::Error,
    },
    #[error("switching to uid {uid}: {source}")]
    Switch { uid: u32, source: nix::Error },
}

fn lookup(name: &str) -> Result<Option<User>, PrivilegeError> {
    User::from_name(name).map_err(|source| PrivilegeError::Lookup {
        user: name.to_string(),
        source,
    })
}

/// `UID` or `UID:GID` (GID defaults to UID); `None` for a user name.
pub fn parse_numeric(run_as: &str) -> Option<(u32, u32)> {
    let (uid, gid) = run_as.split_once(':').unwrap_or((run_as, run_as));
    Some((uid.parse().ok()?, gid.parse().ok()?))
}

fn find_or_create(name: &str) -> Result<User, PrivilegeError> {
    if let Some(u) = lookup(name)? {
        return Ok(u);
    }
    let status = std::process::Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ])
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        tracing::warn!(user = name, "cannot create user; falling back to nobody");
    }
    if let Some(u) = lookup(name)? {
        return Ok(u);
    }
    lookup("nobody")?.ok_or_else(|| PrivilegeError::NoUser(name.to_string()))
}

fn chown_tree(path: &Path, uid: u32, gid: u32, keep: &[&Path]) -> Result<(), PrivilegeError> {
    let err = |source| PrivilegeError::Chown {
        path: path.display().to_string(),
        uid,
        source,
    };
    if keep.contains(&path) {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(err)?;
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).map_err(err)? {
            chown_tree(&entry.map_err(err)?.path(), uid, gid, keep)?;
        }
    }
    Ok(())
}

/// If running as root: gives `data_dir` (except the files in `keep`) to `run_as` and becomes
/// that user.
/// Returns the user switched to, or `None` when not root.
pub fn drop_root(
    run_as: &str,
    data_dir: &Path,
    keep: &[&Path],
) -> Result<Option<String>, PrivilegeError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let (name, uid, gid) = match parse_numeric(run_as) {
        Some((uid, gid)) => (run_as.to_string(), Uid::from_raw(uid), Gid::from_raw(gid)),
        None => {
            let user = find_or_create(run_as)?;
            (user.name, user.uid, user.gid)
        }
    };
    if uid.is_root() {
        return Err(PrivilegeError::NoUser(run_as.to_string()));
    }
    chown_tree(data_dir, uid.as_raw(), gid.as_raw(), keep)?;
    let switch = |source| PrivilegeError::Switch {
        uid: uid.as_raw(),
        source,
    };
    nix::unistd::setgroups(&[gid]).map_err(switch)?;
    nix::unistd::setgid(gid).map_err(switch)?;
    nix::unistd::setuid(uid).map_err(switch)?;
    if Uid::current().is_root()
        || Uid::effective().is_root()
        || Gid::current().as_raw() == 0 && gid.as_raw() != 0
    {
        return Err(switch(nix::Error::EPERM));
    }
    Ok(Some(name))
}

/// The data directory cannot be used by the user the daemon runs as.
#[derive(Debug, thiserror::Error)]
#[error("the daemon runs as uid {uid} and cannot {step} in data_dir {path}: {source}. Every directory above {path} must let uid {uid} through (chmod o+x on each, or move data_dir to a place it can reach, such as /var/lib/mallee), and {path} must be writable by it")]
pub struct DataDirError {
    uid: u32,
    step: &'static str,
    path: String,
    source: std::io::Error,
}

/// Proves the running user can create, write, sync, rename and remove a file in `data_dir`
/// (what every PUT and state change does), or says what to change.
pub fn check_data_dir(data_dir: &Path) -> Result<(), DataDirError> {
    use std::io::Write;
    let pid = std::process::id();
    let (probe, renamed) = (
        data_dir.join(format!(".write-check.{pid}")),
        data_dir.join(format!(".write-check.{pid}.renamed")),
    );
    let err = |step| {
        move |source| DataDirError {
            uid: Uid::effective().as_raw(),
            step,
            path: data_dir.display().to_string(),
            source,
        }
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(err("create a file"))?;
    f.write_all(&[0u8; 4096]).map_err(err("write a file"))?;
    f.sync_all().map_err(err("sync a file"))?;
    drop(f);
    std::fs::rename(&probe, &renamed).map_err(err("rename a file"))?;
    std::fs::remove_file(&renamed).map_err(err("remove a file"))
}

#[cfg(test)]
mod tests {
    use super::{check_data_dir, parse_numeric};

    #[test]
    fn a_writable_data_dir_passes_and_leaves_nothing_a_missing_one_says_what_to_change() {
        let dir = tempfile::tempdir().unwrap();
        check_data_dir(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let e = check_data_dir(&dir.path().join("missing")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("cannot create a file in data_dir") && text.contains("chmod o+x"),
            "{text}"
        );
    }

    #[test]
    fn numeric_users_parse_and_names_do_not() {
        assert_eq!(parse_numeric("65534"), Some((65534, 65534)));
        assert_eq!(parse_numeric("1000:100"), Some((1000, 100)));
        assert_eq!(parse_numeric("mallee"), None);
        assert_eq!(parse_numeric("1000:x"), None);
    }
}
