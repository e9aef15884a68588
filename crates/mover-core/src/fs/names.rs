//! User and group names for uids and gids, looked up once per id and cached. Owns only the
//! lookups (NSS via nix); knows nothing about nodes or repositories.

use nix::unistd::{Gid, Group, Uid, User};
use std::collections::HashMap;
use std::sync::Mutex;

/// Thread-safe cache of uid → user name and gid → group name. A failed lookup caches `""`,
/// which restic then omits from the node.
#[derive(Debug, Default)]
pub struct NameCache {
    users: Mutex<HashMap<u32, String>>,
    groups: Mutex<HashMap<u32, String>>,
}

fn cached(map: &Mutex<HashMap<u32, String>>, id: u32, lookup: impl FnOnce() -> String) -> String {
    // A poisoned lock only means another thread panicked mid-insert; the map is still usable.
    let mut guard = map.lock().unwrap_or_else(|e| e.into_inner());
    guard.entry(id).or_insert_with(lookup).clone()
}

impl NameCache {
    pub fn new() -> NameCache {
        NameCache::default()
    }

    /// The user name of `uid`, or `""` when there is none.
    pub fn user(&self, uid: u32) -> String {
        cached(&self.users, uid, || {
            match User::from_uid(Uid::from_raw(uid)) {
                Ok(Some(user)) => user.name,
                _ => String::new(),
            }
        })
    }

    /// The group name of `gid`, or `""` when there is none.
    pub fn group(&self, gid: u32) -> String {
        cached(&self.groups, gid, || {
            match Group::from_gid(Gid::from_raw(gid)) {
                Ok(Some(group)) => group.name,
                _ => String::new(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_unknown_ids() {
        let cache = NameCache::new();
        assert_eq!(cache.user(0), "root");
        assert_eq!(cache.group(0), "root");
        // Cached answers stay the same.
        assert_eq!(cache.user(0), "root");
        assert_eq!(cache.user(3_999_999_999), "");
        assert_eq!(cache.group(3_999_999_999), "");
    }

    #[test]
    fn shared_between_threads() {
        let cache = std::sync::Arc::new(NameCache::new());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let cache = cache.clone();
                std::thread::spawn(move || cache.user(0))
            })
            .collect();
        for handle in handles {
            assert_eq!(handle.join().ok().as_deref(), Some("root"));
        }
    }
}
