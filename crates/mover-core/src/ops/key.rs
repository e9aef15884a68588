//! `key`: the repository's key files (one per password). Adding a key takes a shared lock
//! (it only adds a file, as restic's append lock); removing one or changing the password
//! takes an exclusive lock. The key in use is never removed.

use crate::crypto::KdfParams;
use crate::error::{Error, Result};
use crate::format::Id;
use crate::repo::Repository;
use crate::repo::keys::{self, KeyOwner};
use crate::repo::lock::{self, LockMode, LockOptions};
use crate::storage::FileType;

/// One key file as `key list` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KeyInfo {
    /// The key this repository was opened with.
    pub current: bool,
    pub id: String,
    #[serde(rename = "userName")]
    pub user_name: String,
    #[serde(rename = "hostName")]
    pub host_name: String,
    /// As the key file records it (RFC 3339).
    pub created: String,
}

/// Every readable key file, the current one marked, sorted by creation time.
pub async fn list(repo: &Repository) -> Result<Vec<KeyInfo>> {
    let mut out = Vec::new();
    for (id, file) in keys::list_keys(repo.storage()).await? {
        match file {
            Ok(k) => out.push(KeyInfo {
                current: id == repo.key_id(),
                id: id.to_hex(),
                user_name: k.username,
                host_name: k.hostname,
                created: k.created,
            }),
            Err(e) => tracing::warn!(key = %id, error = %e, "skipping unreadable key file"),
        }
    }
    out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// Adds a key file for `password`; returns its id.
pub async fn add(
    repo: &Repository,
    password: &str,
    owner: &KeyOwner,
    opts: &LockOptions,
) -> Result<Id> {
    let params = KdfParams::default();
    let work = keys::save_new_key_for(repo.storage(), repo.key(), password, &params, owner);
    lock::while_locked(repo, LockMode::Shared, opts, work).await
}

/// Removes the key file whose id starts with `prefix`; refuses the key in use.
pub async fn remove(repo: &Repository, prefix: &str, opts: &LockOptions) -> Result<Id> {
    let work = async {
        let id = find(repo, prefix).await?;
        if id == repo.key_id() {
            return Err(Error::InvalidInput(
                "refusing to remove key currently used to access repository".into(),
            ));
        }
        repo.storage().remove(FileType::Key, &id).await?;
        Ok(id)
    };
    lock::while_locked(repo, LockMode::Exclusive, opts, work).await
}

/// Replaces the key in use with one for `password` (written before the old one goes);
/// returns the new key's id.
pub async fn change_password(
    repo: &Repository,
    password: &str,
    owner: &KeyOwner,
    opts: &LockOptions,
) -> Result<Id> {
    let work = async {
        let id = keys::save_new_key_for(
            repo.storage(),
            repo.key(),
            password,
            &KdfParams::default(),
            owner,
        )
        .await?;
        repo.storage().remove(FileType::Key, &repo.key_id()).await?;
        Ok(id)
    };
    lock::while_locked(repo, LockMode::Exclusive, opts, work).await
}

async fn find(repo: &Repository, prefix: &str) -> Result<Id> {
    let prefix = prefix.to_ascii_lowercase();
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidInput(format!(
            "invalid key id {prefix:?}: expected a hex id prefix"
        )));
    }
    let matching: Vec<Id> = repo
        .storage()
        .list(FileType::Key)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| id.to_hex().starts_with(&prefix))
        .collect();
    match matching.as_slice() {
        [id] => Ok(*id),
        [] => Err(Error::NotFound {
            what: format!("key {prefix}"),
        }),
        _ => Err(Error::InvalidInput(format!(
            "key id prefix {prefix} is ambiguous ({} keys match)",
            matching.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn add_list_remove_and_change_password() -> Result<()> {
        let store = Arc::new(object_store::memory::InMemory::new());
        let repo = crate::repo::in_memory_for_tests(Arc::clone(&store)).await?;
        let opts = LockOptions::default();
        let owner = KeyOwner {
            username: Some("alice".into()),
            hostname: Some("laptop".into()),
        };
        let added = add(&repo, "second", &owner, &opts).await?;
        let keys = list(&repo).await?;
        assert_eq!(keys.len(), 2);
        let new = keys.iter().find(|k| k.id == added.to_hex()).unwrap();
        assert!(!new.current && new.user_name == "alice" && new.host_name == "laptop");
        assert!(
            keys.iter()
                .any(|k| k.current && k.id == repo.key_id().to_hex())
        );

        // The new password opens the repository, with the same master key.
        let storage = repo.storage().clone();
        let other = Repository::open(storage.clone(), "second").await?;
        assert_eq!(other.key_id(), added);
        assert_eq!(other.config().id, repo.config().id);

        // The key in use cannot go; another can, by prefix.
        let err = remove(&other, &added.to_hex()[..8], &opts)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("currently used"), "{err}");
        assert_eq!(
            remove(&other, &repo.key_id().to_hex()[..10], &opts).await?,
            repo.key_id()
        );
        assert!(Repository::open(storage.clone(), "pw").await.is_err());

        // passwd: the old password stops working, the new one opens.
        let changed = change_password(&other, "third", &KeyOwner::default(), &opts).await?;
        assert!(Repository::open(storage.clone(), "second").await.is_err());
        assert_eq!(Repository::open(storage, "third").await?.key_id(), changed);
        assert!(find(&other, "zz").await.is_err());
        Ok(())
    }
}
