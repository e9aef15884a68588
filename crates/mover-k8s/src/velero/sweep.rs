//! What `mover job velero-gc` does inside its Job: forget the snapshots of Velero backups
//! that are gone. Velero never deletes a third-party mover's data, so mover does, keyed on
//! the `velero-backup=<name>` tag every Velero snapshot carries: a backup is gone when
//! `<bsl prefix>/backups/<name>/velero-backup.json` is no longer in the BSL, which is what
//! Velero deletes when a backup is deleted by hand or expires. The BSL is the truth, not the
//! Backup objects: a Backup deleted with `kubectl` alone is synced back from the BSL, and a
//! recovery cluster holds synced Backups but no DataUploads.
//!
//! Safety: only "not found" counts as gone (a denied or failed request stops the sweep);
//! backups Velero is still writing (`keep`, from their Backup objects) and snapshots younger
//! than `grace` are never forgotten; snapshots without the tag are never looked at.

use crate::error::Result;
use mover_core::format::SnapshotId;
use mover_core::format::snapshot::SnapshotFile;
use mover_core::ops;
use mover_core::repo::Repository;
use mover_core::repo::lock::LockOptions;
use mover_core::storage::Storage;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The tag naming a snapshot's Velero backup.
pub const BACKUP_TAG: &str = "velero-backup=";

/// What one sweep is told.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Backups still being written (their Backup objects exist and are not final).
    pub keep: BTreeSet<String>,
    /// Only these backups are looked at (a DeleteBackupRequest's); all when empty.
    pub only: BTreeSet<String>,
    /// Snapshots younger than this are kept whatever their backup's state.
    pub grace: Duration,
    pub lock: LockOptions,
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepSummary {
    /// Backups found gone, with how many snapshots each had.
    pub gone: BTreeMap<String, usize>,
    /// Backups still in the BSL.
    pub present: usize,
    pub removed: Vec<SnapshotId>,
}

/// The tagged snapshots of each backup that the sweep may consider, oldest `grace` applied.
pub fn candidates(
    snaps: &[(SnapshotId, SnapshotFile)],
    opts: &SweepOptions,
    now: jiff::Timestamp,
) -> BTreeMap<String, Vec<SnapshotId>> {
    let mut by_backup: BTreeMap<String, Vec<SnapshotId>> = BTreeMap::new();
    let grace = jiff::SignedDuration::try_from(opts.grace).unwrap_or(jiff::SignedDuration::MAX);
    let cutoff = now.checked_sub(grace).unwrap_or(jiff::Timestamp::MIN);
    for (id, snap) in snaps {
        let Some(backup) = snap
            .tags
            .iter()
            .find_map(|t| t.strip_prefix(BACKUP_TAG))
            .filter(|b| !b.is_empty())
        else {
            continue;
        };
        if opts.keep.contains(backup) || (!opts.only.is_empty() && !opts.only.contains(backup)) {
            continue;
        }
        let taken = jiff::Timestamp::from_second(snap.time.timestamp()).unwrap_or(now);
        if taken > cutoff {
            continue;
        }
        by_backup.entry(backup.to_string()).or_default().push(*id);
    }
    by_backup
}

/// The object whose absence means Velero deleted `backup`, relative to the BSL's prefix.
pub fn metadata_key(backup: &str) -> String {
    format!("backups/{backup}/velero-backup.json")
}

/// Sweeps `repo`, asking `bsl` (the storage at the BSL's prefix) which backups still exist.
pub async fn sweep(repo: &Repository, bsl: &Storage, opts: &SweepOptions) -> Result<SweepSummary> {
    let snaps = repo.list_snapshots().await?;
    let mut summary = SweepSummary::default();
    let mut forget = Vec::new();
    for (backup, ids) in candidates(&snaps, opts, jiff::Timestamp::now()) {
        if bsl
            .exists(&metadata_key(&backup))
            .await
            .map_err(mover_core::Error::from)?
        {
            summary.present += 1;
            continue;
        }
        summary.gone.insert(backup, ids.len());
        forget.extend(ids.into_iter().map(|id| id.to_string()));
    }
    if forget.is_empty() {
        return Ok(summary);
    }
    let forgotten = ops::forget::forget(
        repo,
        &ops::forget::ForgetOptions {
            ids: forget,
            lock: opts.lock.clone(),
            ..Default::default()
        },
    )
    .await?;
    summary.removed = forgotten.removed;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(tags: &[&str], hours_ago: i64, now: jiff::Timestamp) -> SnapshotFile {
        let t = now
            .checked_sub(jiff::SignedDuration::from_hours(hours_ago))
            .unwrap();
        let mut s = SnapshotFile {
            time: chrono::DateTime::from_timestamp(t.as_second(), 0)
                .unwrap()
                .fixed_offset(),
            tree: mover_core::format::TreeId(mover_core::format::Id([0; 32])),
            paths: vec!["/data".into()],
            hostname: "ns.pvc".into(),
            ..SnapshotFile::default()
        };
        s.tags = tags.iter().map(|t| t.to_string()).collect();
        s
    }

    fn id(n: u8) -> SnapshotId {
        SnapshotId(mover_core::format::Id([n; 32]))
    }

    #[test]
    fn only_old_tagged_snapshots_of_unkept_backups_are_candidates() {
        let now = jiff::Timestamp::now();
        let snaps = vec![
            (id(1), snap(&["velero-backup=nightly", "du=a"], 48, now)),
            (id(2), snap(&["velero-backup=nightly"], 30, now)),
            (id(3), snap(&["velero-backup=running"], 48, now)),
            (id(4), snap(&["velero-backup=fresh"], 1, now)),
            (id(5), snap(&["daily"], 48, now)),
            (id(6), snap(&["velero-backup="], 48, now)),
        ];
        let opts = SweepOptions {
            keep: ["running".to_string()].into(),
            only: BTreeSet::new(),
            grace: Duration::from_secs(24 * 3600),
            lock: LockOptions::default(),
        };
        let c = candidates(&snaps, &opts, now);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c["nightly"], vec![id(1), id(2)]);

        let only = SweepOptions {
            only: ["fresh".to_string()].into(),
            grace: Duration::ZERO,
            ..opts
        };
        let c = candidates(&snaps, &only, now);
        assert_eq!(c.keys().collect::<Vec<_>>(), vec!["fresh"]);
    }

    #[test]
    fn the_metadata_key_is_velero_s_layout() {
        assert_eq!(
            metadata_key("nightly-20261203"),
            "backups/nightly-20261203/velero-backup.json"
        );
    }
}
