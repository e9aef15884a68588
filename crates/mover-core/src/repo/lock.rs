//! restic lock files: take a shared or exclusive lock, refresh it, release it, and clear
//! stale ones.
//!
//! The protocol is restic's: check for conflicting locks, write ours, wait 200 ms, check
//! again. Shared locks coexist; an exclusive one conflicts with every other lock. Two rules
//! go further than restic, so that a killed Job never wedges the next one and mover never
//! waits on a lock nobody holds:
//!
//! - A conflicting lock that is stale is removed (and said so) instead of blocking. Stale is
//!   restic's rule (30 minutes without refresh, or a dead process on this host) or, for
//!   mover's own locks, older than the `mover_stale_after_seconds` their writer promised.
//! - mover keeps that promise: it refreshes its lock every 5 minutes, and when a refresh has
//!   not succeeded for [`REFRESH_DEADLINE`] it stops the work the lock protects (restic's
//!   rule too) before any other process may call the lock stale.
//!
//! A live lock is never removed here; `unlock --remove-all` is the caller's explicit choice.

use crate::cancel::Cancel;
use crate::error::{Error, ErrorClass, Result};
use crate::format::Id;
use crate::format::gotime;
use crate::format::lock::LockFile;
use crate::repo::Repository;
use crate::storage::FileType;
use chrono::{DateTime, FixedOffset};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// How often a held lock is rewritten with a fresh time (restic: 5 minutes).
pub const LOCK_REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// The age mover's lock files promise never to reach while their process runs: three
/// refresh intervals.
pub const MOVER_LOCK_STALE_AFTER: Duration = Duration::from_secs(15 * 60);
/// A run whose lock has gone two refresh intervals without a successful refresh stops; the
/// interval left before the promise allows for clocks that differ between hosts.
pub const REFRESH_DEADLINE: Duration = Duration::from_secs(10 * 60);
/// Wait between writing our lock and checking again for a conflicting one (restic: 200 ms).
const LOCK_SETTLE_DELAY: Duration = Duration::from_millis(200);
/// First and longest wait between attempts while `--retry-lock` lasts (restic's).
const RETRY_SLEEP_START: Duration = Duration::from_secs(5);
const RETRY_SLEEP_MAX: Duration = Duration::from_secs(60);
/// Removing our lock after a cancel may not hold up the exit for longer than this.
const RELEASE_AFTER_CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// What a run needs of the repository: shared (backup, restore, check, reading) or
/// exclusive (forget, prune, removing keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

impl LockMode {
    fn is_exclusive(self) -> bool {
        self == LockMode::Exclusive
    }
}

/// How a run takes its lock.
#[derive(Debug, Clone)]
pub struct LockOptions {
    /// Keep trying this long while a live conflicting lock is held (restic's
    /// `--retry-lock`); zero fails at once with [`Error::Locked`].
    pub retry: Duration,
    /// Stops the waiting and the work; the lock is removed either way.
    pub cancel: Cancel,
    /// How often the lock is refreshed ([`LOCK_REFRESH_INTERVAL`] by default). The run stops
    /// after two intervals without a successful refresh, and the lock file promises to be
    /// refreshed within three.
    pub refresh_interval: Duration,
    /// Read without a lock file (restic's `--no-lock`): for a shared lock only, so that
    /// read-only commands work on a repository that cannot be written. An exclusive lock is
    /// always taken.
    pub no_lock: bool,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            retry: Duration::ZERO,
            cancel: Cancel::default(),
            refresh_interval: LOCK_REFRESH_INTERVAL,
            no_lock: false,
        }
    }
}

/// Whole seconds as Go prints a `time.Duration`: "2h48m28s", "1m2s", "5s".
fn go_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// One lock file as found in the repository.
#[derive(Debug, Clone)]
pub struct FoundLock {
    pub id: Id,
    /// The decoded lock, or why it could not be read.
    pub lock: std::result::Result<LockFile, String>,
}

impl FoundLock {
    /// Why the lock is stale at `now`, or `None` while it is live (or unreadable).
    pub fn stale_reason(&self, now: DateTime<FixedOffset>, host: &str) -> Option<String> {
        self.lock
            .as_ref()
            .ok()
            .and_then(|l| l.stale_reason(now, host, crate::host::pid_exists))
    }

    /// restic's account of a lock another process holds (restic 0.18's wording, which
    /// scripts match): "repository is already locked exclusively by PID 12 on host by root
    /// (UID 0, GID 0)", when it was created, its storage ID, and what removes it.
    pub fn restic_conflict(&self, now: DateTime<FixedOffset>) -> String {
        let Ok(l) = &self.lock else {
            return self.describe();
        };
        let age = (now - l.time).num_seconds().max(0) as u64;
        format!(
            "repository is already locked {}by PID {} on {} by {} (UID {}, GID {})\n\
             lock was created at {} ({} ago)\nstorage ID {}\n\
             the `unlock` command can be used to remove stale locks",
            if l.exclusive { "exclusively " } else { "" },
            l.pid,
            l.hostname,
            l.username,
            l.uid,
            l.gid,
            l.time.format("%Y-%m-%d %H:%M:%S"),
            go_duration(age),
            self.id.short()
        )
    }

    /// "exclusive lock 1a2b3c4d held by root@host (pid 12) since 2026-12-02T10:00:00Z".
    pub fn describe(&self) -> String {
        match &self.lock {
            Ok(l) => format!(
                "{} lock {} held by {}@{} (pid {}) since {}",
                if l.exclusive { "exclusive" } else { "shared" },
                self.id.short(),
                l.username,
                l.hostname,
                l.pid,
                gotime::format(&l.time)
            ),
            Err(e) => format!("unreadable lock {} ({e})", self.id.short()),
        }
    }
}

/// Every lock file in the repository. Empty files (an upload that never finished, restic
/// ignores them too) are left out; a lock removed while listing is simply gone.
pub async fn list_locks(repo: &Repository) -> Result<Vec<FoundLock>> {
    let mut out = Vec::new();
    for (id, size) in repo.storage().list(FileType::Lock).await? {
        if size == 0 {
            continue;
        }
        let lock = match repo.load_unpacked(FileType::Lock, &id).await {
            Ok(bytes) => LockFile::decode(&bytes).map_err(|e| e.to_string()),
            Err(e) if e.is_not_found() => continue,
            Err(e) => Err(e.chain_string()),
        };
        out.push(FoundLock { id, lock });
    }
    Ok(out)
}

/// Removes the stale locks (all of them, or only those that conflict with `mode`); returns
/// what was removed with the reason.
pub async fn remove_stale_locks(
    repo: &Repository,
    conflicting_with: Option<LockMode>,
) -> Result<Vec<(FoundLock, String)>> {
    let now = gotime::now_local();
    let host = crate::host::hostname();
    let mut removed = Vec::new();
    for found in list_locks(repo).await? {
        let conflicts = match (&found.lock, conflicting_with) {
            (Ok(l), Some(LockMode::Shared)) => l.exclusive,
            _ => true,
        };
        if !conflicts {
            continue;
        }
        if let Some(reason) = found.stale_reason(now, &host) {
            repo.storage().remove(FileType::Lock, &found.id).await?;
            removed.push((found, reason));
        }
    }
    Ok(removed)
}

/// Removes every lock file, live or not (`unlock --remove-all`).
pub async fn remove_all_locks(repo: &Repository) -> Result<Vec<FoundLock>> {
    let found = list_locks(repo).await?;
    for l in &found {
        repo.storage().remove(FileType::Lock, &l.id).await?;
    }
    Ok(found)
}

/// A held lock. [`LockGuard::release`] removes it; dropping it only stops the refresher.
pub struct LockGuard {
    repo: Repository,
    current: Arc<Mutex<Id>>,
    refresher: tokio::task::JoinHandle<()>,
    /// Cancelled by the refresher once the lock can no longer be kept.
    lost: Cancel,
}

impl LockGuard {
    /// The lock file's current id (it changes with every refresh).
    pub async fn id(&self) -> Id {
        *self.current.lock().await
    }

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

fn new_lock_file(mode: LockMode, refresh_interval: Duration) -> LockFile {
    LockFile {
        time: gotime::now_local(),
        exclusive: mode.is_exclusive(),
        hostname: crate::host::hostname(),
        username: crate::host::current_username(),
        pid: std::process::id(),
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        stale_after_seconds: Some(
            u32::try_from((refresh_interval * 3).as_secs().max(1)).unwrap_or(u32::MAX),
        ),
    }
}

/// Looks for a live lock that conflicts with one of `mode`, ignoring `own`. Every stale
/// conflicting lock is removed on the way, each with a warning naming it.
async fn find_conflict(
    repo: &Repository,
    mode: LockMode,
    own: Option<&Id>,
) -> Result<Option<String>> {
    let now = gotime::now_local();
    let host = crate::host::hostname();
    let mut conflict = None;
    for found in list_locks(repo).await? {
        if Some(&found.id) == own {
            continue;
        }
        let lock = match &found.lock {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(lock = %found.id, error = %e, "ignoring unreadable lock file");
                continue;
            }
        };
        if !(mode.is_exclusive() || lock.exclusive) {
            continue;
        }
        if let Some(reason) = found.stale_reason(now, &host) {
            repo.storage().remove(FileType::Lock, &found.id).await?;
            tracing::warn!("removed stale {}: {reason}", found.describe());
            continue;
        }
        conflict.get_or_insert_with(|| found.restic_conflict(now));
    }
    Ok(conflict)
}

/// Take a lock on `repo` (no retries, no cancel).
pub async fn lock(repo: &Repository, mode: LockMode) -> Result<LockGuard> {
    acquire(repo, mode, &LockOptions::default(), false).await
}

/// Takes the lock, retrying while `opts.retry` lasts. With `prefetch_index`, the index starts
/// loading once this process's lock file is written. That is safe: a process that changes
/// the repository holds an exclusive lock, and one taken before ours is found by the first
/// check, one taken after it sees ours and backs off before it changes anything. Should the
/// lock still fail, the load is dropped.
async fn acquire(
    repo: &Repository,
    mode: LockMode,
    opts: &LockOptions,
    prefetch_index: bool,
) -> Result<LockGuard> {
    let deadline = tokio::time::Instant::now() + opts.retry;
    let mut sleep = RETRY_SLEEP_START.min(opts.retry);
    let mut told = false;
    loop {
        opts.cancel.check()?;
        match try_acquire(repo, mode, opts, prefetch_index).await {
            Err(Error::Locked { detail }) if tokio::time::Instant::now() < deadline => {
                if !told {
                    tracing::warn!(
                        "repository is already locked ({detail}), waiting up to {} s for the lock",
                        opts.retry.as_secs()
                    );
                    told = true;
                }
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                opts.cancel.sleep(sleep.min(left)).await?;
                sleep = (sleep * 2).min(RETRY_SLEEP_MAX);
            }
            other => return other,
        }
    }
}

async fn try_acquire(
    repo: &Repository,
    mode: LockMode,
    opts: &LockOptions,
    prefetch_index: bool,
) -> Result<LockGuard> {
    let cancel = &opts.cancel;
    if let Some(detail) = find_conflict(repo, mode, None).await? {
        return Err(Error::Locked { detail });
    }
    let id = repo
        .save_unpacked(
            FileType::Lock,
            &new_lock_file(mode, opts.refresh_interval).encode(),
        )
        .await?;
    if prefetch_index {
        repo.prefetch_index();
    }
    let settled = cancel.sleep(LOCK_SETTLE_DELAY).await;
    let conflict = match settled {
        Err(e) => Some(e),
        Ok(()) => match find_conflict(repo, mode, Some(&id)).await {
            Ok(None) => None,
            Ok(Some(detail)) => Some(Error::Locked { detail }),
            Err(e) => Some(e),
        },
    };
    if let Some(e) = conflict {
        repo.cancel_index_prefetch();
        let _ = repo.storage().remove(FileType::Lock, &id).await;
        return Err(e);
    }
    let current = Arc::new(Mutex::new(id));
    let lost = Cancel::new();
    let refresher = tokio::spawn(refresh_loop(
        repo.clone(),
        Arc::clone(&current),
        mode,
        opts.refresh_interval,
        lost.clone(),
    ));
    Ok(LockGuard {
        repo: repo.clone(),
        current,
        refresher,
        lost,
    })
}

/// Run `work` while holding a lock of `mode` on `repo`, and release the lock whether it
/// succeeded, failed or was cancelled. The work is stopped (dropped) when `opts.cancel` fires
/// or the lock is lost. The work's own error wins over a failure to remove the lock file.
pub async fn while_locked<T>(
    repo: &Repository,
    mode: LockMode,
    opts: &LockOptions,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    run_locked(repo, mode, opts, false, work).await
}

/// [`while_locked`] for work that loads the index: it is read while the lock settles (see
/// [`acquire`]), so the wait costs nothing. Backups and restores spend it that way.
pub async fn while_locked_loading_index<T>(
    repo: &Repository,
    mode: LockMode,
    opts: &LockOptions,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    run_locked(repo, mode, opts, true, work).await
}

async fn run_locked<T>(
    repo: &Repository,
    mode: LockMode,
    opts: &LockOptions,
    prefetch_index: bool,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    if opts.no_lock && mode == LockMode::Shared {
        tokio::pin!(work);
        return tokio::select! {
            biased;
            _ = opts.cancel.cancelled() => Err(Error::Canceled { reason: opts.cancel.reason() }),
            r = &mut work => r,
        };
    }
    let guard = acquire(repo, mode, opts, prefetch_index).await?;
    let result = {
        tokio::pin!(work);
        tokio::select! {
            biased;
            _ = opts.cancel.cancelled() => Err(Error::Canceled { reason: opts.cancel.reason() }),
            _ = guard.lost.cancelled() => Err(Error::LockLost { detail: guard.lost.reason() }),
            r = &mut work => r,
        }
    };
    // An index the work never asked for must not be handed to a later load.
    repo.cancel_index_prefetch();
    let stopped = matches!(
        result.as_ref().map_err(Error::class),
        Err(ErrorClass::Canceled)
    );
    let released = if stopped {
        tokio::time::timeout(RELEASE_AFTER_CANCEL_TIMEOUT, guard.release())
            .await
            .unwrap_or_else(|_| {
                Err(Error::io(
                    "removing the lock file after the run was canceled",
                    std::io::ErrorKind::TimedOut.into(),
                ))
            })
    } else {
        guard.release().await
    };
    let value = result?;
    released?;
    Ok(value)
}

/// Rewrites the lock every `interval`; after a failure it retries every tenth of that, and
/// once no refresh has succeeded for two intervals it cancels `lost`, which stops the work.
async fn refresh_loop(
    repo: Repository,
    current: Arc<Mutex<Id>>,
    mode: LockMode,
    interval: Duration,
    lost: Cancel,
) {
    let deadline = interval * 2;
    let mut last_ok = tokio::time::Instant::now();
    let mut wait = interval;
    loop {
        tokio::time::sleep(wait).await;
        let mut cur = current.lock().await;
        match repo
            .save_unpacked(FileType::Lock, &new_lock_file(mode, interval).encode())
            .await
        {
            Ok(new_id) => {
                let old = std::mem::replace(&mut *cur, new_id);
                last_ok = tokio::time::Instant::now();
                wait = interval;
                if let Err(e) = repo.storage().remove(FileType::Lock, &old).await {
                    tracing::warn!(lock = %old.short(), error = %e, "could not remove old lock file");
                }
            }
            Err(e) => {
                let since = last_ok.elapsed();
                if since >= deadline {
                    lost.cancel(format!(
                        "the lock could not be refreshed for {} s (last error: {}); stopping \
                         before other processes may consider it stale",
                        since.as_secs(),
                        e.chain_string()
                    ));
                    return;
                }
                tracing::warn!(error = %e.chain_string(), "could not refresh lock, retrying");
                wait = (interval / 10).min(deadline - since);
            }
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

    /// Writes a lock file as another process would.
    async fn foreign_lock(repo: &Repository, lock: LockFile) -> Result<Id> {
        repo.save_unpacked(FileType::Lock, &lock.encode()).await
    }

    fn restic_lock(exclusive: bool, host: &str, age_minutes: i64) -> LockFile {
        LockFile {
            time: gotime::now_local() - chrono::TimeDelta::minutes(age_minutes),
            exclusive,
            hostname: host.into(),
            username: "someone".into(),
            pid: 1,
            uid: 0,
            gid: 0,
            stale_after_seconds: None,
        }
    }

    #[tokio::test]
    async fn work_gets_the_index_read_while_the_lock_settled() -> Result<()> {
        let repo = repo().await?;
        add_index(&repo, 1).await?;
        add_index(&repo, 2).await?;
        let opts = LockOptions::default();
        let index =
            while_locked_loading_index(&repo, LockMode::Shared, &opts, repo.load_index()).await?;
        assert_eq!(index.pack_count(), 2);
        assert!(repo.storage().list(FileType::Lock).await?.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn an_index_read_ahead_but_never_asked_for_is_not_handed_out_later() -> Result<()> {
        let repo = repo().await?;
        add_index(&repo, 1).await?;
        let opts = LockOptions::default();
        while_locked_loading_index(&repo, LockMode::Shared, &opts, async { Ok(()) }).await?;
        add_index(&repo, 2).await?;
        assert_eq!(repo.load_index().await?.pack_count(), 2);
        Ok(())
    }

    #[tokio::test]
    async fn a_conflicting_lock_fails_and_leaves_no_lock_file() -> Result<()> {
        let repo = repo().await?;
        add_index(&repo, 1).await?;
        let held = lock(&repo, LockMode::Exclusive).await?;
        let opts = LockOptions::default();
        let err = while_locked_loading_index(&repo, LockMode::Shared, &opts, async { Ok(()) })
            .await
            .err();
        assert!(matches!(err, Some(Error::Locked { .. })), "{err:?}");
        assert_eq!(err.map(|e| e.exit_code()), Some(11));
        assert_eq!(repo.storage().list(FileType::Lock).await?.len(), 1);
        held.release().await?;
        Ok(())
    }

    #[tokio::test]
    async fn shared_locks_coexist_and_exclusive_ones_do_not() -> Result<()> {
        let repo = repo().await?;
        let a = lock(&repo, LockMode::Shared).await?;
        let b = lock(&repo, LockMode::Shared).await?;
        assert!(matches!(
            lock(&repo, LockMode::Exclusive).await.err(),
            Some(Error::Locked { .. })
        ));
        a.release().await?;
        b.release().await?;
        let x = lock(&repo, LockMode::Exclusive).await?;
        assert!(lock(&repo, LockMode::Shared).await.is_err());
        x.release().await?;
        assert!(repo.storage().list(FileType::Lock).await?.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn stale_conflicting_locks_are_removed_and_live_ones_kept() -> Result<()> {
        let repo = repo().await?;
        // A restic lock from another host, 31 minutes old: stale by restic's rule.
        let old = foreign_lock(&repo, restic_lock(true, "elsewhere", 31)).await?;
        // A mover lock from another host, 16 minutes old: past its 15-minute promise.
        let promised = foreign_lock(
            &repo,
            LockFile {
                stale_after_seconds: Some(900),
                ..restic_lock(false, "pod-x", 16)
            },
        )
        .await?;
        // A restic lock 16 minutes old from another host is still live.
        let live = foreign_lock(&repo, restic_lock(false, "elsewhere", 16)).await?;
        // A shared lock does not conflict with a shared run: the stale exclusive one goes,
        // the stale shared one stays.
        let shared = lock(&repo, LockMode::Shared).await?;
        let ids: Vec<Id> = list_locks(&repo).await?.into_iter().map(|l| l.id).collect();
        assert!(!ids.contains(&old) && ids.contains(&promised) && ids.contains(&live));
        shared.release().await?;
        // An exclusive run removes the stale shared lock, then stops at the live one.
        let err = lock(&repo, LockMode::Exclusive).await.err();
        let detail = match err {
            Some(Error::Locked { detail }) => detail,
            other => panic!("expected Locked, got {other:?}"),
        };
        assert!(detail.contains(&live.short()), "{detail}");
        let ids: Vec<Id> = list_locks(&repo).await?.into_iter().map(|l| l.id).collect();
        assert_eq!(ids, vec![live]);
        Ok(())
    }

    #[tokio::test]
    async fn retry_waits_for_a_lock_to_go_and_cancel_stops_the_wait() -> Result<()> {
        let repo = repo().await?;
        let held = lock(&repo, LockMode::Exclusive).await?;
        let releaser = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            held.release().await
        });
        let opts = LockOptions {
            retry: Duration::from_secs(20),
            ..LockOptions::default()
        };
        let got = while_locked(&repo, LockMode::Shared, &opts, async { Ok(7) }).await?;
        assert_eq!(got, 7);
        releaser.await.expect("releaser ran")?;

        let held = lock(&repo, LockMode::Exclusive).await?;
        let cancel = Cancel::new();
        let opts = LockOptions {
            retry: Duration::from_secs(600),
            cancel: cancel.clone(),
            ..LockOptions::default()
        };
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            c.cancel("interrupted by SIGTERM");
        });
        let started = std::time::Instant::now();
        let err = while_locked(&repo, LockMode::Shared, &opts, async { Ok(()) })
            .await
            .unwrap_err();
        assert_eq!(err.class(), ErrorClass::Canceled);
        assert!(started.elapsed() < Duration::from_secs(10));
        held.release().await?;
        Ok(())
    }

    #[tokio::test]
    async fn cancel_stops_the_work_and_removes_the_lock() -> Result<()> {
        let repo = repo().await?;
        let cancel = Cancel::new();
        let opts = LockOptions {
            cancel: cancel.clone(),
            ..LockOptions::default()
        };
        let c = cancel.clone();
        let work = async move {
            c.cancel("interrupted by SIGINT");
            std::future::pending::<Result<()>>().await
        };
        let err = while_locked(&repo, LockMode::Exclusive, &opts, work)
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), 130);
        assert!(err.to_string().contains("SIGINT"), "{err}");
        assert!(repo.storage().list(FileType::Lock).await?.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn mover_locks_carry_their_promise() -> Result<()> {
        let repo = repo().await?;
        let held = lock(&repo, LockMode::Shared).await?;
        let found = list_locks(&repo).await?;
        let lock = found[0].lock.as_ref().expect("readable");
        assert_eq!(
            lock.stale_after_seconds,
            Some(MOVER_LOCK_STALE_AFTER.as_secs() as u32)
        );
        assert_eq!(lock.pid, std::process::id());
        assert!(
            found[0]
                .stale_reason(gotime::now_local(), &lock.hostname)
                .is_none()
        );
        held.release().await?;
        Ok(())
    }
}
