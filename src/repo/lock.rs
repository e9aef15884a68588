//! restic lock files: take a shared or exclusive lock, refresh it, release it.
//!
//! Unlike restic, stale locks (older than 30 minutes, or left by a dead process on this host)
//! do not block: a crashed Job must not wedge the next one. They are reported and left for
//! `restic unlock`.

use crate::error::{Error, Result};
use crate::format::Id;
use crate::format::gotime;
use crate::format::lock::LockFile;
use crate::repo::Repository;
use crate::storage::FileType;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// How often a held lock is rewritten with a fresh time (restic: 5 minutes).
pub const LOCK_REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Wait between writing our lock and checking again for a conflicting one (restic: 200 ms).
const LOCK_SETTLE_DELAY: Duration = Duration::from_millis(200);

/// A held lock. Call [`LockGuard::release`] when done; dropping it only stops the refresher.
pub struct LockGuard {
    repo: Repository,
    current: Arc<Mutex<Id>>,
    refresher: tokio::task::JoinHandle<()>,
}

impl LockGuard {
    /// Remove the lock file.
    pub async fn release(self) -> Result<()> {
        self.refresher.abort();
        let id = *self.current.lock().await;
        self.repo.storage().remove(FileType::Lock, &id).await?;
        Ok(())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

fn pid_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // Signal 0 checks for existence; EPERM means it exists but is not ours.
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

fn new_lock_file(exclusive: bool) -> LockFile {
    LockFile {
        time: gotime::now_local(),
        exclusive,
        hostname: crate::ops::hostname(),
        username: crate::ops::current_username(),
        pid: std::process::id(),
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
    }
}

/// Look for a live lock that conflicts with one of kind `exclusive`, ignoring `own`.
async fn find_conflict(
    repo: &Repository,
    exclusive: bool,
    own: Option<&Id>,
) -> Result<Option<String>> {
    let now = gotime::now_local();
    let host = crate::ops::hostname();
    for (id, size) in repo.storage().list(FileType::Lock).await? {
        if Some(&id) == own || size == 0 {
            continue;
        }
        let lock = match repo.load_unpacked(FileType::Lock, &id).await {
            Ok(bytes) => match LockFile::decode(&bytes) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(lock = %id, error = %e, "ignoring unreadable lock file");
                    continue;
                }
            },
            // A lock removed between listing and reading is simply gone.
            Err(e) if e.class() == crate::error::ErrorClass::NotFound => continue,
            Err(e) => {
                tracing::warn!(lock = %id, error = %e, "ignoring unreadable lock file");
                continue;
            }
        };
        if !(exclusive || lock.exclusive) {
            continue;
        }
        if lock.is_stale(now, &host, pid_exists) {
            tracing::warn!(lock = %id.short(), host = %lock.hostname, pid = lock.pid, "ignoring stale lock");
            continue;
        }
        let kind = if lock.exclusive {
            "exclusive"
        } else {
            "shared"
        };
        return Ok(Some(format!(
            "{kind} lock {} held by {}@{} (pid {}) since {}",
            id.short(),
            lock.username,
            lock.hostname,
            lock.pid,
            gotime::format(&lock.time)
        )));
    }
    Ok(None)
}

/// Take a lock on `repo`. Shared locks coexist; an exclusive one conflicts with all others.
pub async fn lock(repo: &Repository, exclusive: bool) -> Result<LockGuard> {
    lock_with(repo, exclusive, false).await
}

/// [`lock`]; with `prefetch_index`, the index starts loading once this process's lock file
/// is written. That is safe: a process that changes the repository holds an exclusive lock,
/// and one taken before ours is found by the first check, one taken after it sees ours and
/// backs off before it changes anything. Should the lock still fail, the load is dropped.
async fn lock_with(repo: &Repository, exclusive: bool, prefetch_index: bool) -> Result<LockGuard> {
    if let Some(detail) = find_conflict(repo, exclusive, None).await? {
        return Err(Error::Locked { detail });
    }
    let id = repo
        .save_unpacked(FileType::Lock, &new_lock_file(exclusive).encode())
        .await?;
    if prefetch_index {
        repo.prefetch_index();
    }
    tokio::time::sleep(LOCK_SETTLE_DELAY).await;
    let conflict = match find_conflict(repo, exclusive, Some(&id)).await {
        Ok(None) => None,
        Ok(Some(detail)) => Some(Error::Locked { detail }),
        Err(e) => Some(e),
    };
    if let Some(e) = conflict {
        repo.cancel_index_prefetch();
        let _ = repo.storage().remove(FileType::Lock, &id).await;
        return Err(e);
    }
    let current = Arc::new(Mutex::new(id));
    let refresher = tokio::spawn(refresh_loop(repo.clone(), Arc::clone(&current), exclusive));
    Ok(LockGuard {
        repo: repo.clone(),
        current,
        refresher,
    })
}

/// Run `work` while holding a lock on `repo`, and release the lock whether or not it
/// succeeded. The work's own error wins over a failure to remove the lock file.
pub async fn while_locked<T>(
    repo: &Repository,
    exclusive: bool,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    run_locked(repo, exclusive, false, work).await
}

/// [`while_locked`] for work that loads the index: it is read while the lock settles (see
/// [`lock_with`]), so the wait costs nothing. Backups and restores spend it that way.
pub async fn while_locked_loading_index<T>(
    repo: &Repository,
    exclusive: bool,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    run_locked(repo, exclusive, true, work).await
}

async fn run_locked<T>(
    repo: &Repository,
    exclusive: bool,
    prefetch_index: bool,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let guard = lock_with(repo, exclusive, prefetch_index).await?;
    let result = work.await;
    // An index the work never asked for must not be handed to a later load.
    repo.cancel_index_prefetch();
    let released = guard.release().await;
    let value = result?;
    released?;
    Ok(value)
}

async fn refresh_loop(repo: Repository, current: Arc<Mutex<Id>>, exclusive: bool) {
    let mut ticker = tokio::time::interval(LOCK_REFRESH_INTERVAL);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let mut cur = current.lock().await;
        match repo
            .save_unpacked(FileType::Lock, &new_lock_file(exclusive).encode())
            .await
        {
            Ok(new_id) => {
                let old = std::mem::replace(&mut *cur, new_id);
                if let Err(e) = repo.storage().remove(FileType::Lock, &old).await {
                    tracing::warn!(lock = %old.short(), error = %e, "could not remove old lock file");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not refresh lock"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::{IndexBlob, IndexFile, IndexPack};
    use crate::format::{BlobId, BlobType, PackId};

    /// Saves an index file naming one pack with one blob, both derived from `n`.
    async fn add_index(repo: &Repository, n: u8) -> Result<()> {
        let file = IndexFile {
            supersedes: Vec::new(),
            packs: vec![IndexPack {
                id: PackId(Id([n; 32])),
                blobs: vec![IndexBlob {
                    id: BlobId(Id([n.wrapping_add(100); 32])),
                    blob_type: BlobType::Data,
                    offset: 0,
                    length: 64,
                    uncompressed_length: None,
                }],
            }],
        };
        repo.save_index(&file).await.map(drop)
    }

    async fn repo() -> Result<Repository> {
        let store = Arc::new(object_store::memory::InMemory::new());
        crate::repo::in_memory_for_tests(store).await
    }

    #[tokio::test]
    async fn work_gets_the_index_read_while_the_lock_settled() -> Result<()> {
        let repo = repo().await?;
        add_index(&repo, 1).await?;
        add_index(&repo, 2).await?;
        let index = while_locked_loading_index(&repo, false, repo.load_index()).await?;
        assert_eq!(index.pack_count(), 2);
        assert!(repo.storage().list(FileType::Lock).await?.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn an_index_read_ahead_but_never_asked_for_is_not_handed_out_later() -> Result<()> {
        let repo = repo().await?;
        add_index(&repo, 1).await?;
        while_locked_loading_index(&repo, false, async { Ok(()) }).await?;
        add_index(&repo, 2).await?;
        assert_eq!(repo.load_index().await?.pack_count(), 2);
        Ok(())
    }

    #[tokio::test]
    async fn a_conflicting_lock_fails_and_leaves_no_lock_file() -> Result<()> {
        let repo = repo().await?;
        add_index(&repo, 1).await?;
        let held = lock(&repo, true).await?;
        let err = while_locked_loading_index(&repo, false, async { Ok(()) })
            .await
            .err();
        assert!(matches!(err, Some(Error::Locked { .. })), "{err:?}");
        assert_eq!(repo.storage().list(FileType::Lock).await?.len(), 1);
        held.release().await?;
        Ok(())
    }
}
