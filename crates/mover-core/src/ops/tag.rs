//! `tag`: change the tags of snapshots as restic does. A snapshot file cannot change (its id
//! is its hash), so each changed snapshot is saved anew with the new tags and `original`
//! naming the first snapshot it came from, and the old file is removed. [`retag`] is pure;
//! [`tag`] applies it under an exclusive lock.

use crate::error::{Error, Result};
use crate::format::SnapshotId;
use crate::format::snapshot::SnapshotFile;
use crate::repo::lock::{self, LockMode, LockOptions};
use crate::repo::{Repository, SnapshotFilter};
use crate::storage::FileType;

/// How tags change: `set` replaces them all; otherwise `add`, then `remove`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagChange {
    pub set: Option<Vec<String>>,
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

impl TagChange {
    /// restic's rule: `--set` alone, or any of `--add` and `--remove`; at least one.
    pub fn validate(&self) -> Result<()> {
        if self.set.is_some() && !(self.add.is_empty() && self.remove.is_empty()) {
            return Err(Error::InvalidInput(
                "--set and --add/--remove cannot be given at the same time".into(),
            ));
        }
        if self.set.is_none() && self.add.is_empty() && self.remove.is_empty() {
            return Err(Error::InvalidInput("nothing to do!".into()));
        }
        Ok(())
    }
}

/// Knobs for [`tag`].
#[derive(Debug, Clone, Default)]
pub struct TagOptions {
    /// Snapshots by id (prefix) or `latest`; every snapshot the filter selects when empty.
    pub ids: Vec<String>,
    pub filter: SnapshotFilter,
    pub change: TagChange,
    pub lock: LockOptions,
}

/// The snapshot with its tags changed, or `None` when the change leaves them as they are.
pub fn retag(id: &SnapshotId, snap: &SnapshotFile, change: &TagChange) -> Option<SnapshotFile> {
    let mut tags = match &change.set {
        Some(set) => set.clone(),
        None => snap.tags.clone(),
    };
    for t in &change.add {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    tags.retain(|t| !change.remove.contains(t));
    if tags == snap.tags {
        return None;
    }
    let mut next = snap.clone();
    next.tags = tags;
    next.original = Some(snap.original.unwrap_or(*id));
    Some(next)
}

/// Old and new id of every snapshot whose tags changed.
pub async fn tag(repo: &Repository, opts: &TagOptions) -> Result<Vec<(SnapshotId, SnapshotId)>> {
    opts.change.validate()?;
    let work = async {
        let chosen = crate::ops::select::find_snapshots(repo, &opts.ids, &opts.filter).await?;
        let mut changed = Vec::new();
        for (id, snap) in &chosen {
            opts.lock.cancel.check()?;
            let Some(next) = retag(id, snap, &opts.change) else {
                continue;
            };
            // The new file first: an interruption leaves both, never neither.
            let new_id = repo.save_snapshot(&next).await?;
            repo.storage().remove(FileType::Snapshot, id.id()).await?;
            tracing::info!(old = %id, new = %new_id, "changed tags of snapshot");
            changed.push((*id, new_id));
        }
        Ok(changed)
    };
    lock::while_locked(repo, LockMode::Exclusive, &opts.lock, work).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(tags: &[&str]) -> SnapshotFile {
        let json = serde_json::json!({
            "time": "2026-12-01T10:00:00Z", "tree": "ab".repeat(32), "paths": ["/data"],
            "hostname": "h", "tags": tags,
        });
        SnapshotFile::decode(json.to_string().as_bytes()).unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn add_remove_and_set_as_restic() {
        let id = SnapshotId(crate::format::Id([1; 32]));
        let s = snap(&["a", "b"]);
        let add = TagChange {
            add: strings(&["c", "a"]),
            remove: strings(&["b"]),
            ..Default::default()
        };
        let next = retag(&id, &s, &add).unwrap();
        assert_eq!(next.tags, strings(&["a", "c"]));
        assert_eq!(next.original, Some(id));
        // A second change keeps the first original.
        let again = retag(
            &SnapshotId(crate::format::Id([2; 32])),
            &next,
            &TagChange {
                set: Some(strings(&["x"])),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(again.tags, strings(&["x"]));
        assert_eq!(again.original, Some(id));
        // Nothing to change: nothing written.
        let same = TagChange {
            add: strings(&["a"]),
            ..Default::default()
        };
        assert!(retag(&id, &s, &same).is_none());
        let both = TagChange {
            set: Some(vec![]),
            add: strings(&["a"]),
            ..Default::default()
        };
        assert!(both.validate().is_err());
        assert!(TagChange::default().validate().is_err());
        // `--set ""` clears every tag.
        let clear = TagChange {
            set: Some(vec![]),
            ..Default::default()
        };
        assert!(retag(&id, &s, &clear).unwrap().tags.is_empty());
    }
}
