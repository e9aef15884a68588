//! The one rule for choosing "the latest snapshot" that every front end follows (the CLI's
//! `latest`, a VolumeRestore's `source`, VolSync's `restoreAsOf` and `previous`): among the
//! snapshots that match, newest first (ties by id), the first taken at or before `as_of`,
//! then `previous` more back. Times compare in whole seconds, as an RFC 3339 time a user
//! writes (and VolSync's script, which compares epochs) has no fraction.

use crate::error::Result;
use crate::format::SnapshotId;
use crate::format::snapshot::SnapshotFile;
use crate::repo::{Repository, SnapshotFilter};
use chrono::{DateTime, FixedOffset};

/// Which snapshot to take, beyond the filter that narrows the candidates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only snapshots taken at or before this time (any time when `None`).
    pub as_of: Option<DateTime<FixedOffset>>,
    /// How many matching snapshots to step back from the newest one that qualifies.
    pub previous: usize,
}

/// The snapshot `selection` picks among those of `snapshots` for which `matches` holds.
pub fn select_snapshot<'a>(
    snapshots: &'a [(SnapshotId, SnapshotFile)],
    matches: impl Fn(&SnapshotFile) -> bool,
    selection: &Selection,
) -> Option<&'a (SnapshotId, SnapshotFile)> {
    let mut candidates: Vec<&(SnapshotId, SnapshotFile)> =
        snapshots.iter().filter(|(_, s)| matches(s)).collect();
    candidates.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
    let skip = match selection.as_of {
        None => 0,
        Some(t) => candidates
            .iter()
            .position(|(_, s)| s.time.timestamp() <= t.timestamp())
            .unwrap_or(candidates.len()),
    };
    candidates
        .get(skip.checked_add(selection.previous)?)
        .copied()
}

/// The snapshots a command that takes several works on (restic's `tag`, `stats`, `find`):
/// those named by `ids` (id prefixes or `latest`, each once), or every snapshot `filter`
/// selects when none is named.
pub async fn find_snapshots(
    repo: &Repository,
    ids: &[String],
    filter: &SnapshotFilter,
) -> Result<Vec<(SnapshotId, SnapshotFile)>> {
    if ids.is_empty() {
        let mut all: Vec<_> = repo
            .list_snapshots()
            .await?
            .into_iter()
            .filter(|(_, s)| filter.matches(s))
            .collect();
        all.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        return Ok(all);
    }
    let mut chosen: Vec<(SnapshotId, SnapshotFile)> = Vec::new();
    for spec in ids {
        let found = repo.find_snapshot(spec, filter).await?;
        if !chosen.iter().any(|(id, _)| *id == found.0) {
            chosen.push(found);
        }
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(path: &str, time: &str) -> SnapshotFile {
        let json = serde_json::json!({
            "time": time, "tree": "ab".repeat(32), "paths": [path], "hostname": "h",
        });
        SnapshotFile::decode(json.to_string().as_bytes()).unwrap()
    }

    fn id(n: u8) -> SnapshotId {
        SnapshotId(crate::format::Id([n; 32]))
    }

    #[test]
    fn newest_first_then_as_of_then_previous() {
        let snaps = vec![
            (id(1), snap("/data", "2026-12-01T10:00:00Z")),
            (id(2), snap("/data", "2026-12-02T10:00:00.700Z")),
            (id(3), snap("/other", "2026-12-03T10:00:00Z")),
            (id(4), snap("/data", "2026-12-04T10:00:00Z")),
        ];
        let data = |s: &SnapshotFile| s.paths.iter().any(|p| p == "/data");
        let pick = |as_of: Option<&str>, previous| {
            let selection = Selection {
                as_of: as_of.map(|t| crate::format::gotime::parse(t).unwrap()),
                previous,
            };
            select_snapshot(&snaps, data, &selection).map(|(i, _)| *i)
        };
        assert_eq!(pick(None, 0), Some(id(4)));
        assert_eq!(pick(None, 1), Some(id(2)));
        assert_eq!(pick(None, 3), None);
        // Whole seconds: 10:00:00.700 is "at" 10:00:00.
        assert_eq!(pick(Some("2026-12-02T10:00:00Z"), 0), Some(id(2)));
        assert_eq!(pick(Some("2026-12-02T09:59:59Z"), 0), Some(id(1)));
        assert_eq!(pick(Some("2026-12-03T12:00:00+02:00"), 1), Some(id(1)));
        assert_eq!(pick(Some("2026-11-30T00:00:00Z"), 0), None);
        assert_eq!(pick(None, usize::MAX), None);
    }
}
