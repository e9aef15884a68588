//! The plan for a BackupSchedule: create a VolumeBackup from the template at each cron time
//! (plus a jitter derived from the schedule's uid, so it is the same after a restart),
//! apply the concurrency policy, trim the history, and prune the repository every
//! `pruneInterval` under a per-repository Lease so that only one maintenance Job runs
//! against a repository at a time. Pure: observed objects in, actions out.
//!
//! A controller that was away runs only the newest missed time, once (as a CronJob does),
//! and says so in an Event.

use crate::api::schedule::ConcurrencyPolicy;
use crate::api::{BackupSchedule, BackupScheduleStatus, Repository, RunPhase, VolumeBackup};
use crate::controller::apply::Action;
use crate::names;
use crate::plans::cron::Schedule;
use crate::plans::jobspec::{self, JobParams, VolumeAttach};
use crate::plans::repository::{NotReady, repo_view};
use crate::plans::run::{self, JobState};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

/// What the controller saw for one BackupSchedule.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The VolumeBackups this schedule made (owned by it).
    pub backups: Vec<VolumeBackup>,
    pub repository: Option<Repository>,
    /// The prune Job named in `status.pruneJob`.
    pub prune_job: Option<Job>,
    /// The termination message of a failed prune Job.
    pub termination: Option<String>,
}

/// What a plan asks for, and when to look again.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// The next scheduled time (or jitter end) is this far away.
    pub wake_after: Option<Duration>,
}

/// How a status message about an unreadable spec begins.
const INVALID: &str = "invalid spec: ";

/// The Lease that serializes maintenance of one repository.
pub fn maintenance_lease(repository: &str) -> String {
    names::object_name("maintenance", repository)
}

/// The time zone of the schedule; `Err` names what is wrong.
fn time_zone(bs: &BackupSchedule) -> Result<jiff::tz::TimeZone, String> {
    match bs.spec.time_zone.as_deref().filter(|z| !z.is_empty()) {
        None => Ok(jiff::tz::TimeZone::UTC),
        Some(z) => jiff::tz::TimeZone::get(z).map_err(|e| format!("timeZone {z:?}: {e}")),
    }
}

fn go_duration(field: &str, text: Option<&str>) -> Result<Option<Duration>, String> {
    match text.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => mover_core::format::gotime::parse_duration(t)
            .map(Some)
            .map_err(|e| format!("{field} {t:?}: {e}")),
    }
}

/// The delay after scheduled time `at`: a fraction of `jitter` fixed by the schedule's uid
/// and `at`, so every replica and every restart picks the same one.
pub fn jitter_for(uid: &str, at: jiff::Timestamp, jitter: Duration) -> Duration {
    if jitter.is_zero() {
        return Duration::ZERO;
    }
    let digest = Sha256::digest(format!("{uid}/{}", at.as_second()).as_bytes());
    let mut eight = [0u8; 8];
    eight.copy_from_slice(&digest[..8]);
    let fraction = u64::from_le_bytes(eight) as f64 / u64::MAX as f64;
    Duration::from_secs_f64(jitter.as_secs_f64() * fraction)
}

/// The name of the VolumeBackup made for scheduled time `at` (stable, so a repeated create
/// after a restart finds it).
pub fn backup_name(bs: &BackupSchedule, at: jiff::Timestamp) -> String {
    names::child_name(&bs.name_any(), &(at.as_second() / 60).to_string(), 63)
}

fn backup_for(bs: &BackupSchedule, at: jiff::Timestamp) -> VolumeBackup {
    let mut spec = bs.spec.template.clone();
    if bs.spec.retention.is_some() {
        spec.retention = bs.spec.retention.clone();
    }
    spec.cancel = false;
    let mut vb = VolumeBackup::new(&backup_name(bs, at), spec);
    vb.metadata.namespace = bs.namespace();
    vb.metadata.labels = Some(BTreeMap::from([
        (names::MANAGED_BY.to_string(), "mover".to_string()),
        (
            names::SCHEDULE.to_string(),
            names::label_value(&bs.name_any()),
        ),
    ]));
    vb.metadata.annotations = Some(BTreeMap::from([(
        "mover.dev/scheduled-time".to_string(),
        at.to_string(),
    )]));
    vb.metadata.owner_references = bs.controller_owner_ref(&()).map(|o| vec![o]);
    vb
}

fn phase(vb: &VolumeBackup) -> RunPhase {
    vb.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

fn created(vb: &VolumeBackup) -> Option<jiff::Timestamp> {
    vb.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// Deletes finished backups beyond the history limits, oldest first.
fn trim_history(bs: &BackupSchedule, backups: &[VolumeBackup], out: &mut Vec<Action>) {
    let mut done: Vec<&VolumeBackup> = backups
        .iter()
        .filter(|b| b.metadata.deletion_timestamp.is_none())
        .collect();
    done.sort_by_key(|b| std::cmp::Reverse((created(b), b.name_any())));
    let mut kept_ok = 0;
    let mut kept_failed = 0;
    for b in done {
        let (kept, limit) = match phase(b) {
            RunPhase::Completed => (&mut kept_ok, bs.spec.successful_history_limit),
            RunPhase::Failed | RunPhase::Canceled => {
                (&mut kept_failed, bs.spec.failed_history_limit)
            }
            _ => continue,
        };
        if *kept < limit {
            *kept += 1;
        } else {
            out.push(Action::DeleteBackup(b.name_any()));
        }
    }
}

fn patch_status(
    current: &BackupScheduleStatus,
    next: &BackupScheduleStatus,
    out: &mut Vec<Action>,
) {
    if let Some(p) = run::status_patch(current, next) {
        out.push(Action::PatchStatus(p));
    }
}

fn event(warning: bool, reason: &str, note: String) -> Action {
    Action::Event {
        warning,
        reason: reason.into(),
        note,
    }
}

/// The plan for one BackupSchedule at `now`.
pub fn plan(bs: &BackupSchedule, obs: &Observed, image: &str, now: &Time) -> Plan {
    let current = bs.status.clone().unwrap_or_default();
    let mut next = current.clone();
    let mut out = Vec::new();
    if bs.meta().deletion_timestamp.is_some() {
        return Plan::default();
    }
    let parsed = Schedule::parse(&bs.spec.schedule)
        .map_err(|e| format!("schedule: {e}"))
        .and_then(|s| Ok((s, time_zone(bs)?)))
        .and_then(|(s, tz)| {
            let jitter = go_duration("jitter", bs.spec.jitter.as_deref())?;
            let prune = go_duration("pruneInterval", bs.spec.prune_interval.as_deref())?;
            Ok((s, tz, jitter.unwrap_or_default(), prune))
        });
    let (schedule, tz, jitter, prune_interval) = match parsed {
        Ok(p) => p,
        Err(why) => {
            let message = format!("{INVALID}{why}");
            if current.message.as_deref() != Some(message.as_str()) {
                out.push(event(true, "InvalidSchedule", message.clone()));
            }
            next.message = Some(message);
            next.next_schedule_time = None;
            patch_status(&current, &next, &mut out);
            return Plan {
                actions: out,
                wake_after: None,
            };
        }
    };
    // The spec reads again: a message about it goes (a prune's failure stays until the next
    // prune succeeds).
    if current
        .message
        .as_deref()
        .is_some_and(|m| m.starts_with(INVALID))
    {
        next.message = None;
    }
    let uid = bs.uid().unwrap_or_default();
    let active: Vec<&VolumeBackup> = obs
        .backups
        .iter()
        .filter(|b| !phase(b).is_final() && b.metadata.deletion_timestamp.is_none())
        .collect();
    trim_history(bs, &obs.backups, &mut out);
    next.last_successful_backup = obs
        .backups
        .iter()
        .filter(|b| phase(b) == RunPhase::Completed)
        .max_by_key(|b| {
            (
                b.status.as_ref().and_then(|s| s.completion_time.clone()),
                created(b),
            )
        })
        .map(|b| b.name_any())
        .or(current.last_successful_backup.clone());

    let now_ts = now.0;
    let base = current
        .last_schedule_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| bs.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now_ts);
    let mut wake_after = None;
    let mut started = false;
    if !bs.spec.suspend {
        if let Some((at, missed)) = schedule.latest_between(base, now_ts, &tz) {
            let due = at.checked_add(jitter_for(&uid, at, jitter)).unwrap_or(at);
            if now_ts >= due {
                if missed {
                    out.push(event(
                        false,
                        "MissedSchedule",
                        format!("scheduled times before {at} were missed; running the newest once"),
                    ));
                }
                match (bs.spec.concurrency_policy, active.is_empty()) {
                    (ConcurrencyPolicy::Forbid, false) => {
                        out.push(event(
                            false,
                            "Skipped",
                            format!(
                                "the run for {at} is skipped: {} is still running",
                                active[0].name_any()
                            ),
                        ));
                    }
                    (policy, _) => {
                        if policy == ConcurrencyPolicy::Replace {
                            for b in &active {
                                out.push(Action::CancelBackup(b.name_any()));
                            }
                        }
                        let vb = backup_for(bs, at);
                        out.push(event(
                            false,
                            "Scheduled",
                            format!("created VolumeBackup {} for {at}", vb.name_any()),
                        ));
                        out.push(Action::CreateBackup(Box::new(vb)));
                        started = true;
                    }
                }
                next.last_schedule_time = Some(Time(at));
            } else {
                wake_after = Some(due.duration_since(now_ts).unsigned_abs());
            }
        }
        let from = next
            .last_schedule_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(base);
        next.next_schedule_time = schedule
            .next_after(from.max(now_ts), &tz)
            .or_else(|| schedule.next_after(from, &tz))
            .map(|n| Time(n.checked_add(jitter_for(&uid, n, jitter)).unwrap_or(n)));
        if wake_after.is_none() {
            wake_after = next
                .next_schedule_time
                .as_ref()
                .map(|n| n.0.duration_since(now_ts).unsigned_abs());
        }
    } else {
        next.next_schedule_time = None;
    }

    // A running prune is seen to its end even when the interval was removed meanwhile.
    if prune_interval.is_some() || current.prune_job.is_some() {
        plan_prune(
            bs,
            obs,
            image,
            now,
            prune_interval,
            active.is_empty() && !started,
            &current,
            &mut next,
            &mut out,
        );
        if next.prune_job.is_some() {
            wake_after = Some(wake_after.map_or(crate::controller::apply::WAIT, |w| {
                w.min(crate::controller::apply::WAIT)
            }));
        }
    }
    patch_status(&current, &next, &mut out);
    Plan {
        actions: out,
        wake_after,
    }
}

fn prune_job_name(bs: &BackupSchedule, now: &Time) -> String {
    names::job_name(
        "prune",
        &format!("{}-{}", bs.name_any(), now.0.as_second() / 60),
    )
}

#[allow(clippy::too_many_arguments)]
fn plan_prune(
    bs: &BackupSchedule,
    obs: &Observed,
    image: &str,
    now: &Time,
    interval: Option<Duration>,
    idle: bool,
    current: &BackupScheduleStatus,
    next: &mut BackupScheduleStatus,
    out: &mut Vec<Action>,
) {
    let lease = maintenance_lease(&bs.spec.template.repository);
    if let Some(job_name) = &current.prune_job {
        let state = run::job_state(obs.prune_job.as_ref());
        let finish = |next: &mut BackupScheduleStatus, out: &mut Vec<Action>| {
            next.prune_job = None;
            next.last_prune_time = Some(now.clone());
            out.push(Action::ReleaseLease {
                name: lease.clone(),
                holder: job_name.clone(),
            });
            out.push(Action::DeleteJob(job_name.clone()));
        };
        match state {
            JobState::Succeeded => {
                out.push(event(
                    false,
                    "Pruned",
                    format!("repository {} pruned", bs.spec.template.repository),
                ));
                next.message = None;
                finish(next, out);
            }
            JobState::Failed(why) => {
                let message = format!(
                    "prune of repository {} failed: {}",
                    bs.spec.template.repository,
                    obs.termination.as_deref().unwrap_or(&why)
                );
                out.push(event(true, "PruneFailed", message.clone()));
                next.message = Some(message);
                finish(next, out);
            }
            JobState::Absent => {
                // Deleted by hand: give the Lease back and try again at the next interval.
                finish(next, out);
            }
            JobState::Running => {}
        }
        return;
    }
    let Some(interval) = interval else {
        return;
    };
    let last = current
        .last_prune_time
        .as_ref()
        .or(bs.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
        .unwrap_or(now.0);
    let due = now.0.duration_since(last).as_secs_f64() >= interval.as_secs_f64();
    if !due || !idle {
        return;
    }
    let repo = match repo_view(obs.repository.as_ref(), &bs.spec.template.repository) {
        Ok(r) => r,
        Err(NotReady::Waiting(_) | NotReady::Failed(_)) => return,
    };
    let name = prune_job_name(bs, now);
    let access_name = names::object_name("schedule", &bs.name_any());
    let params = JobParams {
        name: name.clone(),
        namespace: bs.namespace().unwrap_or_default(),
        image: image.to_string(),
        args: vec!["prune".into()],
        repo: repo.access.clone(),
        volume: VolumeAttach::None,
        service_account: access_name,
        mover: bs.spec.template.mover.clone().unwrap_or_default(),
        owner: bs.controller_owner_ref(&()).unwrap_or_default(),
        labels: names::owned_labels(
            "BackupSchedule",
            &bs.name_any(),
            Some(&bs.spec.template.repository),
            "prune",
        ),
        node_name: None,
        backoff_limit: 1,
    };
    let access = jobspec::run_access(&params, "backupschedules", &bs.name_any());
    out.push(Action::CreateAccess(Box::new(access)));
    out.push(Action::StartMaintenance {
        lease,
        job: Box::new(jobspec::job(&params)),
    });
    next.prune_job = Some(name);
}

/// Labels of the objects a schedule owns, for listing its VolumeBackups.
pub fn selector(bs: &BackupSchedule) -> String {
    format!("{}={}", names::SCHEDULE, names::label_value(&bs.name_any()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::{LocalObjectReference, RetentionPolicy, RunStatus};
    use crate::api::repository::{RepositoryPhase, RepositorySpec, RepositoryStatus};
    use crate::api::{
        BackupScheduleSpec, BackupSource, CopyMethod, DeletionPolicy, VolumeBackupSpec,
    };
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    fn at(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn schedule(expr: &str) -> BackupSchedule {
        let mut bs = BackupSchedule::new(
            "nightly",
            BackupScheduleSpec {
                schedule: expr.into(),
                time_zone: None,
                jitter: None,
                concurrency_policy: ConcurrencyPolicy::Forbid,
                template: VolumeBackupSpec {
                    source: BackupSource {
                        pvc: Some("data".into()),
                        volume_snapshot: None,
                    },
                    repository: "repo".into(),
                    copy_method: CopyMethod::Snapshot,
                    volume_snapshot_class_name: None,
                    storage_class_name: None,
                    tags: vec!["nightly".into()],
                    host: None,
                    retention: None,
                    deletion_policy: DeletionPolicy::Retain,
                    cancel: false,
                    wait_timeout: None,
                    mover: None,
                },
                successful_history_limit: 2,
                failed_history_limit: 1,
                retention: Some(RetentionPolicy {
                    keep_last: Some(3),
                    ..Default::default()
                }),
                prune_interval: None,
                suspend: false,
            },
        );
        bs.metadata.namespace = Some("apps".into());
        bs.metadata.uid = Some("uid-s".into());
        bs.metadata.creation_timestamp = Some(at("2026-12-03T09:58:00Z"));
        bs
    }

    fn ready_repo() -> Repository {
        let mut r = Repository::new(
            "repo",
            RepositorySpec {
                secret_ref: LocalObjectReference {
                    name: "repo-secret".into(),
                },
                custom_ca: None,
                concurrency: None,
                initialize: true,
                env: Default::default(),
                credentials_file: None,
            },
        );
        r.status = Some(RepositoryStatus {
            phase: RepositoryPhase::Ready,
            ..Default::default()
        });
        r
    }

    fn made(bs: &BackupSchedule, name: &str, phase: RunPhase, created: &str) -> VolumeBackup {
        let mut vb = VolumeBackup::new(name, bs.spec.template.clone());
        vb.metadata.creation_timestamp = Some(at(created));
        vb.status = Some(RunStatus {
            phase,
            ..Default::default()
        });
        vb
    }

    fn created_backups(actions: &[Action]) -> Vec<&VolumeBackup> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::CreateBackup(vb) => Some(vb.as_ref()),
                _ => None,
            })
            .collect()
    }

    fn status_patch(actions: &[Action]) -> serde_json::Value {
        actions
            .iter()
            .find_map(|a| match a {
                Action::PatchStatus(p) => Some(p.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    #[test]
    fn a_due_time_makes_one_backup_from_the_template_with_the_schedules_retention() {
        let bs = schedule("*/5 * * * *");
        // Not yet due at 09:59: the plan wakes at 10:00.
        let p = plan(
            &bs,
            &Observed::default(),
            "mover:test",
            &at("2026-12-03T09:59:00Z"),
        );
        assert!(created_backups(&p.actions).is_empty());
        assert_eq!(p.wake_after, Some(Duration::from_secs(60)));
        assert_eq!(
            status_patch(&p.actions)["nextScheduleTime"],
            "2026-12-03T10:00:00Z"
        );

        let p = plan(
            &bs,
            &Observed::default(),
            "mover:test",
            &at("2026-12-03T10:00:10Z"),
        );
        let made = created_backups(&p.actions);
        assert_eq!(made.len(), 1);
        let vb = made[0];
        assert_eq!(
            vb.name_any(),
            backup_name(&bs, "2026-12-03T10:00:00Z".parse().unwrap())
        );
        assert_eq!(vb.spec.retention.as_ref().unwrap().keep_last, Some(3));
        assert_eq!(vb.spec.tags, vec!["nightly".to_string()]);
        assert_eq!(
            vb.metadata.owner_references.as_ref().unwrap()[0].uid,
            "uid-s"
        );
        let s = status_patch(&p.actions);
        assert_eq!(s["lastScheduleTime"], "2026-12-03T10:00:00Z");
        assert_eq!(s["nextScheduleTime"], "2026-12-03T10:05:00Z");
    }

    #[test]
    fn forbid_skips_while_a_run_is_active_and_replace_cancels_it() {
        let mut bs = schedule("*/5 * * * *");
        let obs = Observed {
            backups: vec![made(
                &bs,
                "nightly-old",
                RunPhase::InProgress,
                "2026-12-03T09:55:00Z",
            )],
            ..Default::default()
        };
        let now = at("2026-12-03T10:00:10Z");
        let p = plan(&bs, &obs, "mover:test", &now);
        assert!(created_backups(&p.actions).is_empty());
        assert!(
            p.actions
                .iter()
                .any(|a| matches!(a, Action::Event { reason, .. } if reason == "Skipped"))
        );
        assert_eq!(
            status_patch(&p.actions)["lastScheduleTime"],
            "2026-12-03T10:00:00Z"
        );

        bs.spec.concurrency_policy = ConcurrencyPolicy::Replace;
        let p = plan(&bs, &obs, "mover:test", &now);
        assert!(
            p.actions
                .iter()
                .any(|a| matches!(a, Action::CancelBackup(n) if n == "nightly-old"))
        );
        assert_eq!(created_backups(&p.actions).len(), 1);
    }

    #[test]
    fn after_an_absence_only_the_newest_missed_time_runs() {
        let mut bs = schedule("*/5 * * * *");
        bs.status = Some(BackupScheduleStatus {
            last_schedule_time: Some(at("2026-12-03T10:00:00Z")),
            ..Default::default()
        });
        let p = plan(
            &bs,
            &Observed::default(),
            "mover:test",
            &at("2026-12-03T10:31:00Z"),
        );
        let made = created_backups(&p.actions);
        assert_eq!(made.len(), 1);
        assert_eq!(
            made[0].name_any(),
            backup_name(&bs, "2026-12-03T10:30:00Z".parse().unwrap())
        );
        assert!(
            p.actions
                .iter()
                .any(|a| matches!(a, Action::Event { reason, .. } if reason == "MissedSchedule"))
        );
    }

    #[test]
    fn history_beyond_the_limits_is_deleted_oldest_first() {
        let mut bs = schedule("0 3 * * *");
        bs.spec.suspend = true;
        let obs = Observed {
            backups: vec![
                made(&bs, "b1", RunPhase::Completed, "2026-12-01T03:00:00Z"),
                made(&bs, "b2", RunPhase::Completed, "2026-12-02T03:00:00Z"),
                made(&bs, "b3", RunPhase::Failed, "2026-12-02T04:00:00Z"),
                made(&bs, "b4", RunPhase::Completed, "2026-12-03T03:00:00Z"),
                made(&bs, "b5", RunPhase::Canceled, "2026-12-03T04:00:00Z"),
            ],
            ..Default::default()
        };
        let p = plan(&bs, &obs, "mover:test", &at("2026-12-03T05:00:00Z"));
        let deleted: Vec<&str> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::DeleteBackup(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(deleted, vec!["b3", "b1"]);
        assert!(created_backups(&p.actions).is_empty(), "suspended");
        assert_eq!(status_patch(&p.actions)["lastSuccessfulBackup"], "b4");
    }

    #[test]
    fn prune_runs_under_the_repositorys_lease_when_due_and_idle() {
        let mut bs = schedule("0 3 * * *");
        bs.spec.prune_interval = Some("1h".into());
        let obs = Observed {
            repository: Some(ready_repo()),
            ..Default::default()
        };
        // Created at 09:58: not due at 10:30, due at 11:00.
        let p = plan(&bs, &obs, "mover:test", &at("2026-12-03T10:30:00Z"));
        assert!(
            !p.actions
                .iter()
                .any(|a| matches!(a, Action::StartMaintenance { .. }))
        );
        let now = at("2026-12-03T11:00:00Z");
        let p = plan(&bs, &obs, "mover:test", &now);
        let (lease, job) = p
            .actions
            .iter()
            .find_map(|a| match a {
                Action::StartMaintenance { lease, job } => Some((lease.clone(), job.clone())),
                _ => None,
            })
            .expect("a prune Job");
        assert_eq!(lease, maintenance_lease("repo"));
        let args = job
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .args
            .clone()
            .unwrap();
        assert!(args.contains(&"prune".to_string()), "{args:?}");
        assert_eq!(status_patch(&p.actions)["pruneJob"], job.name_any());

        // Busy with a backup: no prune.
        let busy = Observed {
            backups: vec![made(&bs, "b", RunPhase::InProgress, "2026-12-03T10:59:00Z")],
            ..obs.clone()
        };
        let p = plan(&bs, &busy, "mover:test", &now);
        assert!(
            !p.actions
                .iter()
                .any(|a| matches!(a, Action::StartMaintenance { .. }))
        );

        // The Job completed: the Lease goes back, the time is recorded.
        bs.status = Some(BackupScheduleStatus {
            prune_job: Some(job.name_any()),
            ..Default::default()
        });
        let mut done = (*job).clone();
        done.status = Some(JobStatus {
            conditions: Some(vec![JobCondition {
                type_: "Complete".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let obs = Observed {
            prune_job: Some(done),
            ..obs
        };
        let later = at("2026-12-03T11:02:00Z");
        let p = plan(&bs, &obs, "mover:test", &later);
        assert!(p.actions.iter().any(
            |a| matches!(a, Action::ReleaseLease { holder, .. } if *holder == job.name_any())
        ));
        let s = status_patch(&p.actions);
        assert_eq!(s["lastPruneTime"], "2026-12-03T11:02:00Z");
        assert!(s["pruneJob"].is_null());
    }

    #[test]
    fn an_invalid_schedule_is_reported_once() {
        let bs = schedule("every night");
        let p = plan(
            &bs,
            &Observed::default(),
            "mover:test",
            &at("2026-12-03T10:00:00Z"),
        );
        let s = status_patch(&p.actions);
        assert!(s["message"].as_str().unwrap().contains("5"), "{s}");
        assert!(
            p.actions
                .iter()
                .any(|a| matches!(a, Action::Event { warning: true, .. }))
        );
        assert_eq!(p.wake_after, None);
    }

    #[test]
    fn jitter_is_stable_and_within_its_bound() {
        let t: jiff::Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let j = Duration::from_secs(300);
        let a = jitter_for("uid-1", t, j);
        assert_eq!(a, jitter_for("uid-1", t, j));
        assert!(a < j);
        assert_ne!(a, jitter_for("uid-2", t, j));
        assert_eq!(jitter_for("uid-1", t, Duration::ZERO), Duration::ZERO);
    }
}
