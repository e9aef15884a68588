//! `forget`: remove snapshots named by id, or decided by restic's keep policy per group.
//!
//! [`plan`] is pure (snapshots, options and the time in; groups with keep, remove and
//! reasons out); [`forget`] lists the snapshots under an exclusive lock (shared for a dry
//! run), plans, and deletes the snapshot files. Data stays until `prune`.

pub mod policy;

use crate::error::{Error, Result};
use crate::format::SnapshotId;
use crate::format::snapshot::SnapshotFile;
use crate::ops::snapshots::{GroupBy, GroupKey, group_snapshots, snapshot_json};
use crate::repo::lock::{self, LockMode, LockOptions};
use crate::repo::{Repository, SnapshotFilter};
use crate::storage::FileType;
use chrono::{DateTime, FixedOffset};
use futures::{StreamExt, TryStreamExt};
use policy::{KeepPolicy, PolicySnapshot};
use serde_json::Value;

/// Snapshot files deleted at once.
const REMOVE_CONCURRENCY: usize = 8;

/// Knobs for [`forget`].
#[derive(Debug, Clone, Default)]
pub struct ForgetOptions {
    /// Snapshots to remove by id (prefix); when given, the policy is not used.
    pub ids: Vec<String>,
    pub policy: KeepPolicy,
    /// Only these snapshots are considered.
    pub filter: SnapshotFilter,
    pub group_by: GroupBy,
    /// Decide and report, delete nothing.
    pub dry_run: bool,
    /// Allow an empty policy to remove every snapshot the filter selects (restic's
    /// `--unsafe-allow-remove-all`; refused without a filter).
    pub unsafe_allow_remove_all: bool,
    pub lock: LockOptions,
}

/// One group's decisions, newest first.
#[derive(Debug, Clone)]
pub struct ForgetGroup {
    pub key: GroupKey,
    pub keep: Vec<(SnapshotId, SnapshotFile)>,
    pub remove: Vec<(SnapshotId, SnapshotFile)>,
    /// Why each kept snapshot is kept, in the order of `keep`.
    pub reasons: Vec<Vec<String>>,
}

/// What [`forget`] decided and did.
#[derive(Debug, Clone, Default)]
pub struct ForgetSummary {
    /// Empty when snapshots were named by id.
    pub groups: Vec<ForgetGroup>,
    /// The snapshots removed (or, in a dry run, to remove).
    pub removed: Vec<SnapshotId>,
    pub dry_run: bool,
}

/// Decides which of `snaps` the policy removes, group by group, at time `now`.
pub fn plan(
    snaps: Vec<(SnapshotId, SnapshotFile)>,
    opts: &ForgetOptions,
    now: DateTime<FixedOffset>,
) -> Result<Vec<ForgetGroup>> {
    opts.policy.validate().map_err(Error::InvalidInput)?;
    if opts.policy.is_empty() {
        if !opts.unsafe_allow_remove_all {
            return Err(Error::InvalidInput(
                "no policy was specified, no snapshots will be removed".into(),
            ));
        }
        if opts.filter.is_empty() {
            return Err(Error::InvalidInput(
                "--unsafe-allow-remove-all is not allowed unless a snapshot filter option is \
                 specified"
                    .into(),
            ));
        }
    }
    let mut groups = Vec::new();
    for (key, list) in group_snapshots(snaps, opts.group_by) {
        let inputs: Vec<PolicySnapshot> = list
            .iter()
            .map(|(_, s)| PolicySnapshot {
                time: s.time,
                tags: &s.tags,
            })
            .collect();
        let decisions = policy::apply(&inputs, &opts.policy, now);
        let mut group = ForgetGroup {
            key,
            keep: Vec::new(),
            remove: Vec::new(),
            reasons: Vec::new(),
        };
        for d in decisions {
            let snap = list[d.index].clone();
            if d.keep {
                group.keep.push(snap);
                group.reasons.push(d.reasons);
            } else {
                group.remove.push(snap);
            }
        }
        if !opts.policy.is_empty() && group.keep.is_empty() {
            return Err(Error::InvalidInput(format!(
                "refusing to delete last snapshot of snapshot group \"{}\"",
                describe_key(&group.key)
            )));
        }
        groups.push(group);
    }
    Ok(groups)
}

/// restic's `SnapshotGroupKey.String`.
fn describe_key(key: &GroupKey) -> String {
    let mut parts = Vec::new();
    if !key.hostname.is_empty() {
        parts.push(format!("host {}", key.hostname));
    }
    if let Some(p) = key.paths.as_ref().filter(|p| !p.is_empty()) {
        parts.push(format!("path [{}]", p.join(" ")));
    }
    if let Some(t) = key.tags.as_ref().filter(|t| !t.is_empty()) {
        parts.push(format!("tags [{}]", t.join(" ")));
    }
    parts.join(", ")
}

/// Removes snapshots as `opts` says. Takes an exclusive lock (a shared one for a dry run).
pub async fn forget(repo: &Repository, opts: &ForgetOptions) -> Result<ForgetSummary> {
    let mode = if opts.dry_run {
        LockMode::Shared
    } else {
        LockMode::Exclusive
    };
    let work = async {
        let (groups, doomed) = if opts.ids.is_empty() {
            let snaps: Vec<_> = repo
                .list_snapshots()
                .await?
                .into_iter()
                .filter(|(_, s)| opts.filter.matches(s))
                .collect();
            let groups = plan(snaps, opts, crate::format::gotime::now_local())?;
            let doomed = groups
                .iter()
                .flat_map(|g| g.remove.iter().map(|(id, _)| *id))
                .collect::<Vec<_>>();
            (groups, doomed)
        } else {
            let mut doomed = Vec::new();
            for spec in &opts.ids {
                let (id, _) = repo.find_snapshot(spec, &opts.filter).await?;
                if !doomed.contains(&id) {
                    doomed.push(id);
                }
            }
            (Vec::new(), doomed)
        };
        if !opts.dry_run {
            futures::stream::iter(doomed.iter())
                .map(|id| async move {
                    opts.lock.cancel.check()?;
                    repo.storage().remove(FileType::Snapshot, id.id()).await?;
                    tracing::info!(snapshot = %id, "removed snapshot");
                    Ok::<(), Error>(())
                })
                .buffer_unordered(REMOVE_CONCURRENCY)
                .try_collect::<()>()
                .await?;
        }
        Ok(ForgetSummary {
            groups,
            removed: doomed,
            dry_run: opts.dry_run,
        })
    };
    lock::while_locked(repo, mode, &opts.lock, work).await
}

/// restic 0.16+'s `forget --json`: one array of groups with `tags`, `host`, `paths`, `keep`,
/// `remove` and `reasons` (`{"snapshot": ..., "matches": [...]}`); empty lists are `null`.
pub fn to_json(groups: &[ForgetGroup]) -> Value {
    let list = |snaps: &[(SnapshotId, SnapshotFile)]| -> Value {
        if snaps.is_empty() {
            Value::Null
        } else {
            Value::Array(snaps.iter().map(|(id, s)| snapshot_json(id, s)).collect())
        }
    };
    Value::Array(
        groups
            .iter()
            .map(|g| {
                let reasons: Vec<Value> = g
                    .keep
                    .iter()
                    .zip(&g.reasons)
                    .map(|((id, s), m)| {
                        serde_json::json!({"snapshot": snapshot_json(id, s), "matches": m})
                    })
                    .collect();
                serde_json::json!({
                    "tags": g.key.tags,
                    "host": g.key.hostname,
                    "paths": g.key.paths,
                    "keep": list(&g.keep),
                    "remove": list(&g.remove),
                    "reasons": if reasons.is_empty() { Value::Null } else { Value::Array(reasons) },
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::gotime;
    use crate::format::{Id, TreeId};

    fn snap(n: u8, time: &str, host: &str, tags: &[&str]) -> (SnapshotId, SnapshotFile) {
        let s = SnapshotFile {
            time: gotime::parse(time).unwrap(),
            tree: TreeId(Id([0; 32])),
            paths: vec!["/data".into()],
            hostname: host.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..SnapshotFile::default()
        };
        (SnapshotId(Id([n; 32])), s)
    }

    fn opts(policy: KeepPolicy) -> ForgetOptions {
        ForgetOptions {
            policy,
            group_by: GroupBy::HOST_AND_PATHS,
            ..ForgetOptions::default()
        }
    }

    #[test]
    fn keeps_the_last_per_host_and_refuses_what_restic_refuses() {
        let snaps = vec![
            snap(1, "2026-01-01T00:00:00Z", "a", &[]),
            snap(2, "2026-01-02T00:00:00Z", "a", &[]),
            snap(3, "2026-01-01T00:00:00Z", "b", &[]),
        ];
        let now = gotime::parse("2027-01-01T00:00:00Z").unwrap();
        let keep_last = opts(KeepPolicy {
            last: 1,
            ..KeepPolicy::default()
        });
        let groups = plan(snaps.clone(), &keep_last, now).unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].keep[0].0, snaps[1].0);
        assert_eq!(groups[0].remove[0].0, snaps[0].0);
        assert_eq!(groups[0].reasons[0], vec!["last snapshot".to_string()]);
        assert!(groups[1].remove.is_empty());
        let json = to_json(&groups);
        assert_eq!(json[1]["remove"], Value::Null);
        assert_eq!(json[0]["host"], "a");
        assert_eq!(json[0]["paths"][0], "/data");
        assert_eq!(json[0]["tags"], Value::Null);

        // An empty policy removes nothing unless explicitly allowed, and then only with a filter.
        let err = plan(snaps.clone(), &opts(KeepPolicy::default()), now).unwrap_err();
        assert!(err.to_string().contains("no policy"), "{err}");
        let mut all = opts(KeepPolicy::default());
        all.unsafe_allow_remove_all = true;
        assert!(plan(snaps.clone(), &all, now).is_err());
        all.filter.hosts = vec!["a".into()];
        let groups = plan(snaps[..2].to_vec(), &all, now).unwrap();
        assert_eq!(groups[0].remove.len(), 2);

        // A policy that keeps nothing of a group is refused.
        let tag = opts(KeepPolicy {
            tags: vec![vec!["never".into()]],
            ..KeepPolicy::default()
        });
        let err = plan(snaps, &tag, now).unwrap_err();
        assert!(
            err.to_string().contains("refusing to delete last snapshot"),
            "{err}"
        );
    }
}
