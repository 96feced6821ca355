//! The node's token kept beside its image cache (`STATE_DIR/agent-token`, mode 0600), so a node
//! that reboots proves with it that it is the node holding its id and is admitted again at
//! once, instead of waiting for the frontend to mark its old self down. On a node without a
//! disk the state directory is in RAM and the token goes with the boot.

use std::path::{Path, PathBuf};

const FILE: &str = "agent-token";

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The token kept in `state_dir`, if any (a token is one line of hex; anything else is ignored).
pub fn load(state_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path(state_dir)).ok()?;
    let token = text.trim();
    let valid =
        !token.is_empty() && token.len() <= 256 && token.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| token.to_string())
}

/// Keeps `token` in `state_dir`, replaced whole (a crash leaves the old token or the new one).
pub fn save(state_dir: &Path, token: &str) -> std::io::Result<()> {
    mallee_proto::fsio::write_atomic(&path(state_dir), format!("{token}\n").as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn saved_token_loads_back_private_and_junk_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), None);
        save(dir.path(), "00ff").unwrap();
        save(dir.path(), "abcdef0123").unwrap();
        assert_eq!(load(dir.path()).as_deref(), Some("abcdef0123"));
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(path(dir.path()), "not a token\n").unwrap();
        assert_eq!(load(dir.path()), None);
    }
}
