//! Who may read or write a Walrus bucket: the one rule both Walrus requests and image
//! registration (an image is a Walrus object) are held to.

use crate::store::{Role, User};

/// What a request wants to do with a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Whether `user` may `access` a bucket owned by `owner`: the admin may do anything, nodes
/// may read everything (images), users only their own.
pub fn may_access(user: &User, owner: &str, access: Access) -> bool {
    match user.role {
        Role::Admin => true,
        Role::Node if access == Access::Read => true,
        _ => user.name == owner,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_reach_only_their_own_buckets_nodes_read_all() {
        let u = |role| User {
            name: "u".into(),
            access_key: "k".into(),
            secret: "s".into(),
            role,
            created_ms: 0,
        };
        assert!(may_access(&u(Role::User), "u", Access::Write));
        assert!(!may_access(&u(Role::User), "other", Access::Read));
        assert!(may_access(&u(Role::Admin), "other", Access::Write));
        assert!(may_access(&u(Role::Node), "other", Access::Read));
        assert!(!may_access(&u(Role::Node), "other", Access::Write));
    }
}
