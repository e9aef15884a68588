//! What the run kinds (VolumeBackup, VolumeRestore) share in their plans: the outcome of a
//! mover Job, the one condition, status patches that name only what changed, timeouts. Pure.

use crate::api::common::{MoverOutcome, MoverResult, RunPhase, RunStatus};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use std::time::Duration;

/// How long a run may wait for its source, snapshot or target before it fails.
pub const PREPARE_TIMEOUT: Duration = Duration::from_secs(300);
/// The condition every run carries: True once Completed, False once Failed or Canceled.
pub const CONDITION: &str = "Succeeded";

/// Where a mover Job is.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    Absent,
    Running,
    Succeeded,
    /// The Job failed; the reason the Job controller gave.
    Failed(String),
}

pub fn job_state(job: Option<&Job>) -> JobState {
    let Some(job) = job else {
        return JobState::Absent;
    };
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for c in &conditions {
        if c.status != "True" {
            continue;
        }
        match c.type_.as_str() {
            "Complete" => return JobState::Succeeded,
            "Failed" => {
                let why = c
                    .message
                    .clone()
                    .or_else(|| c.reason.clone())
                    .unwrap_or_else(|| "the mover Job failed".into());
                return JobState::Failed(why);
            }
            _ => {}
        }
    }
    JobState::Running
}

/// The one-line message of a failed run: the mover's own account first, then the pod's
/// termination message, then what the Job controller said.
pub fn failure_message(
    result: Option<&MoverResult>,
    termination: Option<&str>,
    job_reason: &str,
) -> String {
    if let Some(m) = result
        .filter(|r| r.outcome == MoverOutcome::Failed)
        .and_then(|r| r.message.as_deref())
    {
        return first_line(m);
    }
    if let Some(t) = termination.map(str::trim).filter(|t| !t.is_empty()) {
        // The last line of a log fallback is where the fatal error is.
        let line = t.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(t);
        return first_line(line.trim_start_matches("Fatal: "));
    }
    first_line(job_reason)
}

/// `actions` with the mover's error class added to their Events' notes, so a failure's
/// Event says what kind of failure it was (`WrongPassword`, `Retryable`, ...).
pub fn with_error_class(
    mut actions: Vec<crate::controller::apply::Action>,
    result: Option<&MoverResult>,
) -> Vec<crate::controller::apply::Action> {
    let Some(class) = result.and_then(|r| r.error_class.as_deref()) else {
        return actions;
    };
    for a in &mut actions {
        if let crate::controller::apply::Action::Event { note, .. } = a {
            note.push_str(&format!(" (error class {class})"));
        }
    }
    actions
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// A copy of `status` with its phase, message and condition set for `phase`.
pub fn with_phase(
    status: &RunStatus,
    phase: RunPhase,
    message: Option<String>,
    now: &Time,
) -> RunStatus {
    let mut next = status.clone();
    next.phase = phase;
    next.message = message.clone();
    let (value, reason) = match phase {
        RunPhase::Completed => ("True", "Completed"),
        RunPhase::Failed => ("False", "Failed"),
        RunPhase::Canceled => ("False", "Canceled"),
        RunPhase::New | RunPhase::Preparing | RunPhase::InProgress | RunPhase::Canceling => {
            ("Unknown", phase.as_str())
        }
    };
    let previous = status.conditions.iter().find(|c| c.type_ == CONDITION);
    let since = match previous {
        Some(c) if c.status == value => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    let condition = Condition {
        type_: CONDITION.into(),
        status: value.into(),
        reason: reason.into(),
        message: message.unwrap_or_default(),
        last_transition_time: since,
        observed_generation: None,
    };
    next.conditions.retain(|c| c.type_ != CONDITION);
    next.conditions.push(condition);
    if phase != RunPhase::Preparing {
        next.conditions.retain(|c| c.type_ != WAITING_CONDITION);
    }
    if phase.is_final() && next.completion_time.is_none() {
        next.completion_time = Some(now.clone());
    }
    next
}

/// The JSON merge patch that turns `from` into `to` at the top level of the status: only
/// fields that differ, `null` for fields `to` dropped. `None` when nothing differs, so an
/// unchanged status is never written (a write would trigger another reconcile).
pub fn status_patch<T: serde::Serialize>(from: &T, to: &T) -> Option<serde_json::Value> {
    let a = serde_json::to_value(from).ok()?;
    let b = serde_json::to_value(to).ok()?;
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return None;
    };
    let mut patch = serde_json::Map::new();
    for (k, v) in b {
        if a.get(k) != Some(v) {
            patch.insert(k.clone(), v.clone());
        }
    }
    for k in a.keys() {
        if !b.contains_key(k) {
            patch.insert(k.clone(), serde_json::Value::Null);
        }
    }
    (!patch.is_empty()).then_some(serde_json::Value::Object(patch))
}

/// The mover's result for a finished Job: the one it wrote into the status, else the one
/// it wrote into its pod's termination message (the same JSON), so a status write that was
/// lost, or a cache that has not seen it yet, never turns a saved snapshot into a failure.
pub fn job_result(
    recorded: Option<&MoverResult>,
    termination: Option<&str>,
) -> Option<MoverResult> {
    if let Some(r) = recorded {
        return Some(r.clone());
    }
    let text = termination?.trim();
    serde_json::from_str::<MoverResult>(text).ok()
}

/// Whether `result` reports a saved snapshot.
pub fn saved_snapshot(result: Option<&MoverResult>) -> bool {
    result.is_some_and(|r| r.outcome == MoverOutcome::Succeeded && r.snapshot_id.is_some())
}

/// The condition a finished run carries when it succeeded with something to say (a
/// retention that failed after the snapshot was saved, files that could not be read).
pub const WARNING_CONDITION: &str = "Warning";

/// A copy of `status` with the warning condition set (or removed when `warnings` is empty).
pub fn with_warnings(status: &RunStatus, warnings: &[String], now: &Time) -> RunStatus {
    let mut next = status.clone();
    next.conditions.retain(|c| c.type_ != WARNING_CONDITION);
    if !warnings.is_empty() {
        next.conditions.push(Condition {
            type_: WARNING_CONDITION.into(),
            status: "True".into(),
            reason: "CompletedWithWarnings".into(),
            message: warnings.join("; "),
            last_transition_time: now.clone(),
            observed_generation: None,
        });
    }
    next
}

/// The actions that end a run the API server refused to carry out (RBAC, admission, a
/// webhook, a quota, a namespace being deleted): Failed with the refusal, and an Event.
pub fn refused(
    status: &RunStatus,
    what: &str,
    now: &Time,
) -> Vec<crate::controller::apply::Action> {
    let message = format!("refused by the API server: {what}");
    let next = with_phase(status, RunPhase::Failed, Some(message.clone()), now);
    let mut out = Vec::new();
    if let Some(p) = status_patch(status, &next) {
        out.push(crate::controller::apply::Action::PatchStatus(p));
    }
    out.push(crate::controller::apply::Action::Event {
        warning: true,
        reason: "RunRefused".into(),
        note: message,
    });
    out
}

/// Whether a run has waited `limit` or longer since it started.
pub fn timed_out(status: &RunStatus, now: &Time, limit: Duration) -> bool {
    match &status.start_time {
        Some(start) => {
            let waited = now.0.duration_since(start.0);
            waited.as_secs() >= limit.as_secs() as i64
        }
        None => false,
    }
}

/// The condition a run carries while it waits for an object (its PVC, snapshot or
/// Repository): True with what it waits for; gone once it stops waiting.
pub const WAITING_CONDITION: &str = "Waiting";

/// How long a run waits for what it needs: `spec.waitTimeout` (a Go duration), else
/// [`PREPARE_TIMEOUT`].
pub fn wait_limit(wait_timeout: Option<&str>) -> Duration {
    wait_timeout
        .and_then(|t| mover_core::format::gotime::parse_duration(t).ok())
        .unwrap_or(PREPARE_TIMEOUT)
}

/// A run that waits: Preparing with `message` and a Waiting condition, and an Event when
/// what it waits for changes; `fail(message)` once it has waited `limit`.
pub fn wait_or_fail(
    current: &RunStatus,
    message: String,
    now: &Time,
    limit: Duration,
    fail: impl FnOnce(String) -> Vec<crate::controller::apply::Action>,
) -> Vec<crate::controller::apply::Action> {
    if timed_out(current, now, limit) {
        let secs = limit.as_secs();
        let shown = if secs % 60 == 0 {
            format!("{}m", secs / 60)
        } else {
            format!("{secs}s")
        };
        return fail(format!(
            "{message} (gave up after {shown}; spec.waitTimeout sets how long)"
        ));
    }
    let mut next = with_phase(current, RunPhase::Preparing, Some(message.clone()), now);
    let since = current
        .conditions
        .iter()
        .find(|c| c.type_ == WAITING_CONDITION && c.message == message)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    next.conditions.retain(|c| c.type_ != WAITING_CONDITION);
    next.conditions.push(Condition {
        type_: WAITING_CONDITION.into(),
        status: "True".into(),
        reason: "Waiting".into(),
        message: message.clone(),
        last_transition_time: since,
        observed_generation: None,
    });
    let mut out = Vec::new();
    if let Some(p) = status_patch(current, &next) {
        out.push(crate::controller::apply::Action::PatchStatus(p));
    }
    if current.message.as_deref() != Some(message.as_str()) {
        out.push(crate::controller::apply::Action::Event {
            warning: false,
            reason: "Waiting".into(),
            note: message,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn job_conditions_map_to_states() {
        assert_eq!(job_state(None), JobState::Absent);
        let mut job = Job::default();
        assert_eq!(job_state(Some(&job)), JobState::Running);
        job.status = Some(JobStatus {
            conditions: Some(vec![JobCondition {
                type_: "Failed".into(),
                status: "True".into(),
                reason: Some("PodFailurePolicy".into()),
                message: Some("Container mover exited with 12".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert_eq!(
            job_state(Some(&job)),
            JobState::Failed("Container mover exited with 12".into())
        );
    }

    #[test]
    fn the_movers_message_wins_and_logs_give_their_last_line() {
        let r = MoverResult {
            outcome: MoverOutcome::Failed,
            message: Some("wrong password or no key found in s3:x\nmore".into()),
            ..Default::default()
        };
        assert_eq!(
            failure_message(Some(&r), Some("x"), "y"),
            "wrong password or no key found in s3:x"
        );
        assert_eq!(
            failure_message(None, Some("starting\nFatal: repository gone\n"), "y"),
            "repository gone"
        );
        assert_eq!(
            failure_message(None, None, "BackoffLimitExceeded"),
            "BackoffLimitExceeded"
        );
    }

    #[test]
    fn a_failure_event_names_the_error_class() {
        use crate::controller::apply::Action;
        let event = || Action::Event {
            warning: true,
            reason: "BackupFailed".into(),
            note: "wrong password".into(),
        };
        let r = MoverResult {
            outcome: MoverOutcome::Failed,
            error_class: Some("WrongPassword".into()),
            ..Default::default()
        };
        let a = with_error_class(vec![event()], Some(&r));
        assert!(matches!(&a[0], Action::Event { note, .. }
            if note == "wrong password (error class WrongPassword)"));
        let a = with_error_class(vec![event()], None);
        assert!(matches!(&a[0], Action::Event { note, .. } if note == "wrong password"));
    }

    #[test]
    fn patches_name_only_changes_and_keep_transition_times() {
        let t0 = time("2026-12-01T00:00:00Z");
        let t1 = time("2026-12-01T00:01:00Z");
        let s0 = with_phase(&RunStatus::default(), RunPhase::Preparing, None, &t0);
        let s1 = with_phase(&s0, RunPhase::InProgress, None, &t1);
        // Unknown -> Unknown keeps the transition time.
        assert_eq!(s1.conditions[0].last_transition_time, t0);
        assert!(status_patch(&s1, &s1).is_none());
        let p = status_patch(&s0, &s1).unwrap();
        assert_eq!(p["phase"], "InProgress");
        assert!(p.get("startTime").is_none());
        let done = with_phase(&s1, RunPhase::Completed, Some("ok".into()), &t1);
        assert_eq!(done.conditions[0].status, "True");
        assert_eq!(done.completion_time, Some(t1));
    }

    #[test]
    fn the_timeout_counts_from_the_start() {
        let status = RunStatus {
            start_time: Some(time("2026-12-01T00:00:00Z")),
            ..Default::default()
        };
        assert!(!timed_out(
            &status,
            &time("2026-12-01T00:04:59Z"),
            PREPARE_TIMEOUT
        ));
        assert!(timed_out(
            &status,
            &time("2026-12-01T00:05:00Z"),
            PREPARE_TIMEOUT
        ));
        assert_eq!(wait_limit(Some("90s")), Duration::from_secs(90));
        assert_eq!(wait_limit(None), PREPARE_TIMEOUT);
    }
}
