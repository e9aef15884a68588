//! Repository: the plan that probes a restic repository with a short Job (open it, create it
//! when missing, count snapshots, clear stale locks) and what runs need to know of one.

use super::api::Repository;
use super::api::common::KeyReference;
use super::api::repository::{RepositoryPhase, RepositoryStatus};
use super::apply::Action;
use super::jobspec::{self, CaSource, JobParams, RepoAccess, VolumeAttach};
use super::names;
use super::run::{self, JobState};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// What a run needs of its Repository.
#[derive(Debug, Clone)]
pub struct RepoView {
    pub access: RepoAccess,
    pub max_jobs: Option<u32>,
}

/// Why a run cannot use its Repository yet.
#[derive(Debug, Clone, PartialEq)]
pub enum NotReady {
    Waiting(String),
    Failed(String),
}

/// How Jobs reach `repo`'s repository.
pub fn access(repo: &Repository) -> RepoAccess {
    RepoAccess {
        secret: repo.spec.secret_ref.name.clone(),
        ca: repo.spec.custom_ca.as_ref().and_then(ca_source),
        env: repo.spec.env.clone(),
        credentials_file: repo
            .spec
            .credentials_file
            .as_ref()
            .map(|c| (c.name.clone(), c.key.clone())),
    }
}

pub fn ca_source(r: &KeyReference) -> Option<CaSource> {
    match (&r.secret_name, &r.config_map_name) {
        (Some(name), _) => Some(CaSource::Secret {
            name: name.clone(),
            key: r.key.clone(),
        }),
        (None, Some(name)) => Some(CaSource::ConfigMap {
            name: name.clone(),
            key: r.key.clone(),
        }),
        (None, None) => None,
    }
}

/// The Repository named `name`, if it is Ready.
pub fn repo_view(repo: Option<&Repository>, name: &str) -> Result<RepoView, NotReady> {
    let Some(repo) = repo else {
        return Err(NotReady::Waiting(format!("Repository {name} not found")));
    };
    let status = repo.status.clone().unwrap_or_default();
    match status.phase {
        RepositoryPhase::Ready => Ok(RepoView {
            access: access(repo),
            max_jobs: repo.spec.concurrency.as_ref().and_then(|c| c.max_jobs),
        }),
        RepositoryPhase::Failed => Err(NotReady::Failed(format!(
            "Repository {name}: {}",
            status.message.unwrap_or_else(|| "not usable".into())
        ))),
        RepositoryPhase::Pending => Err(NotReady::Waiting(format!(
            "waiting for Repository {name} to be checked"
        ))),
        RepositoryPhase::Degraded => Err(NotReady::Waiting(format!(
            "waiting for Repository {name}, which is checked again: {}",
            status.message.unwrap_or_else(|| "not reachable".into())
        ))),
    }
}

/// What the controller saw for one Repository.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The Secret's resourceVersion, `None` when it does not exist.
    pub secret_version: Option<String>,
    pub job: Option<Job>,
    pub termination: Option<String>,
}

/// The first re-probe of a Degraded repository waits this long; each further one twice as
/// long as the one before, up to [`REPROBE_MAX`].
pub const REPROBE_FIRST: std::time::Duration = std::time::Duration::from_secs(15);
pub const REPROBE_MAX: std::time::Duration = std::time::Duration::from_secs(600);

/// The error classes of a probe failure that may pass without a change.
fn retryable(class: Option<&str>) -> bool {
    match class {
        // A probe that reported nothing (its pod died, or was never scheduled).
        None => true,
        Some(c) => matches!(c, "Retryable" | "Io" | "Locked"),
    }
}

/// How long after its last probe a Degraded repository is probed again.
pub fn reprobe_backoff(failed_probes: u32) -> std::time::Duration {
    let shift = failed_probes.saturating_sub(1).min(10);
    (REPROBE_FIRST * (1u32 << shift)).min(REPROBE_MAX)
}

/// When a Degraded repository is due for its next probe, from now; `None` when it is not
/// Degraded.
pub fn reprobe_in(status: &RepositoryStatus, now: &Time) -> Option<std::time::Duration> {
    if status.phase != RepositoryPhase::Degraded {
        return None;
    }
    let wait = reprobe_backoff(status.failed_probes);
    let Some(last) = &status.last_checked_time else {
        return Some(std::time::Duration::ZERO);
    };
    let waited = now.0.duration_since(last.0).as_secs().max(0) as u64;
    Some(wait.saturating_sub(std::time::Duration::from_secs(waited)))
}

/// The probe Job's name: one per generation, Secret version and retry, so a changed spec or
/// Secret, or a re-probe of a Degraded repository, is a new Job.
pub fn probe_job_name(repo: &Repository, secret_version: &str) -> String {
    let generation = repo.meta().generation.unwrap_or(0);
    let status = repo.status.clone().unwrap_or_default();
    let attempt = match status.phase {
        RepositoryPhase::Degraded => status.failed_probes,
        _ => 0,
    };
    let mut key = format!("{}-{generation}-{secret_version}", repo.name_any());
    if attempt > 0 {
        key.push_str(&format!("-{attempt}"));
    }
    let digest = <sha2::Sha256 as sha2::Digest>::digest(key.as_bytes());
    names::job_name(
        "probe",
        &format!("{}-{}", repo.name_any(), &hex::encode(digest)[..6]),
    )
}

fn condition(
    ready: bool,
    reason: &str,
    message: &str,
    prev: &[Condition],
    now: &Time,
) -> Condition {
    let value = if ready { "True" } else { "False" };
    let since = prev
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == value)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: "Ready".into(),
        status: value.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: since,
        observed_generation: None,
    }
}

fn patch(current: &RepositoryStatus, next: &RepositoryStatus, out: &mut Vec<Action>) {
    if let Some(p) = run::status_patch(current, next) {
        out.push(Action::PatchStatus(p));
    }
}

pub fn plan(repo: &Repository, obs: &Observed, image: &str, now: &Time) -> Vec<Action> {
    let current = repo.status.clone().unwrap_or_default();
    let mut out = Vec::new();
    let Some(secret_version) = &obs.secret_version else {
        let message = format!("Secret {} not found", repo.spec.secret_ref.name);
        let mut next = current.clone();
        next.phase = RepositoryPhase::Failed;
        next.message = Some(message.clone());
        next.conditions = vec![condition(
            false,
            "SecretNotFound",
            &message,
            &current.conditions,
            now,
        )];
        patch(&current, &next, &mut out);
        return out;
    };
    let due = reprobe_in(&current, now).is_some_and(|d| d.is_zero());
    let up_to_date = current.observed_generation == repo.meta().generation
        && current.secret_version.as_deref() == Some(secret_version.as_str())
        && current.phase != RepositoryPhase::Pending
        && !due;
    let job_name = probe_job_name(repo, secret_version);
    if up_to_date {
        if obs.job.is_some() {
            out.push(Action::DeleteJob(job_name));
        }
        return out;
    }
    match run::job_state(obs.job.as_ref()) {
        JobState::Absent => {
            let mut next = current.clone();
            let changed = current.observed_generation != repo.meta().generation
                || current.secret_version.as_deref() != Some(secret_version.as_str());
            if current.phase == RepositoryPhase::Degraded && !changed {
                next.message = Some(format!(
                    "checking the repository again (attempt {}) after: {}",
                    current.failed_probes + 1,
                    current.message.clone().unwrap_or_default()
                ));
            } else {
                next.phase = RepositoryPhase::Pending;
                next.failed_probes = 0;
                next.message = Some("checking the repository".into());
            }
            next.result = None;
            patch(&current, &next, &mut out);
            let params = JobParams {
                name: job_name.clone(),
                namespace: repo.namespace().unwrap_or_default(),
                image: image.to_string(),
                args: vec![
                    "job".into(),
                    "probe".into(),
                    format!("repository/{}", repo.name_any()),
                ],
                repo: access(repo),
                volume: VolumeAttach::None,
                service_account: names::object_name("probe", &repo.name_any()),
                mover: Default::default(),
                owner: repo.controller_owner_ref(&()).unwrap_or_default(),
                labels: BTreeMap::from([
                    (names::MANAGED_BY.to_string(), "mover".to_string()),
                    (names::OWNER_KIND.to_string(), "Repository".to_string()),
                    (
                        names::OWNER_NAME.to_string(),
                        names::label_value(&repo.name_any()),
                    ),
                    (names::JOB_ROLE.to_string(), "probe".to_string()),
                ]),
                node_name: None,
                backoff_limit: 0,
            };
            let access = jobspec::run_access(&params, "repositories", &repo.name_any());
            out.push(Action::CreateAccess(Box::new(access)));
            out.push(Action::CreateJob {
                job: Box::new(jobspec::job(&params)),
                repository: repo.name_any(),
                max_jobs: None,
            });
        }
        JobState::Running => {}
        JobState::Succeeded | JobState::Failed(_) => {
            let result = current.result.clone().unwrap_or_default();
            let mut next = current.clone();
            next.observed_generation = repo.meta().generation;
            next.secret_version = Some(secret_version.clone());
            next.last_checked_time = Some(now.clone());
            if result.ok {
                next.phase = RepositoryPhase::Ready;
                next.failed_probes = 0;
                next.snapshot_count = result.snapshot_count;
                next.repository_id = result.repository_id.clone();
                let message = if result.initialized {
                    "repository created".to_string()
                } else {
                    "repository opened".to_string()
                };
                next.message = Some(message.clone());
                next.conditions = vec![condition(
                    true,
                    "Opened",
                    &message,
                    &current.conditions,
                    now,
                )];
                if result.initialized {
                    out.push(Action::Event {
                        warning: false,
                        reason: "RepositoryCreated".into(),
                        note: "the repository did not exist and was created".into(),
                    });
                }
                if let Some(m) = result.message.filter(|m| m.contains("stale lock")) {
                    out.push(Action::Event {
                        warning: true,
                        reason: "StaleLocksRemoved".into(),
                        note: m,
                    });
                }
            } else {
                let why = match run::job_state(obs.job.as_ref()) {
                    JobState::Failed(w) => w,
                    _ => "the probe Job ended without a result".into(),
                };
                let message = result
                    .message
                    .clone()
                    .map(|m| m.lines().next().unwrap_or("").to_string())
                    .unwrap_or_else(|| {
                        run::failure_message(None, obs.termination.as_deref(), &why)
                    });
                let reported = current
                    .result
                    .as_ref()
                    .and_then(|r| r.error_class.as_deref());
                if retryable(reported) {
                    next.phase = RepositoryPhase::Degraded;
                    next.failed_probes = current.failed_probes + 1;
                } else {
                    next.phase = RepositoryPhase::Failed;
                    next.failed_probes = 0;
                }
                next.message = Some(message.clone());
                let reason = result
                    .error_class
                    .clone()
                    .unwrap_or_else(|| "ProbeFailed".into());
                next.conditions = vec![condition(
                    false,
                    &reason,
                    &message,
                    &current.conditions,
                    now,
                )];
                out.push(Action::Event {
                    warning: true,
                    reason: "RepositoryFailed".into(),
                    note: message,
                });
            }
            patch(&current, &next, &mut out);
            out.push(Action::DeleteJob(job_name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::LocalObjectReference;
    use crate::api::repository::{RepositoryProbeResult, RepositorySpec};
    use crate::apply::Action;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    fn repo() -> Repository {
        let mut r = Repository::new(
            "repo",
            RepositorySpec {
                secret_ref: LocalObjectReference { name: "s".into() },
                custom_ca: None,
                concurrency: None,
                initialize: true,
                env: Default::default(),
                credentials_file: None,
            },
        );
        r.metadata.namespace = Some("apps".into());
        r.metadata.generation = Some(1);
        r
    }

    fn now() -> Time {
        Time("2026-12-01T10:00:00Z".parse().unwrap())
    }

    fn done(kind: &str) -> Job {
        Job {
            status: Some(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: kind.into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_missing_secret_fails_at_once() {
        let a = plan(&repo(), &Observed::default(), "img", &now());
        let Action::PatchStatus(p) = &a[0] else {
            panic!()
        };
        assert_eq!(p["phase"], "Failed");
        assert_eq!(p["message"], "Secret s not found");
    }

    #[test]
    fn a_probe_job_runs_then_its_result_decides() {
        let mut r = repo();
        let mut obs = Observed {
            secret_version: Some("7".into()),
            ..Default::default()
        };
        let a = plan(&r, &obs, "img", &now());
        assert!(a.iter().any(|x| matches!(x, Action::CreateJob { .. })));
        r.status = Some(RepositoryStatus {
            result: Some(RepositoryProbeResult {
                ok: false,
                error_class: Some("WrongPassword".into()),
                message: Some("wrong password or no key found in /r".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        obs.job = Some(done("Failed"));
        let a = plan(&r, &obs, "img", &now());
        let Action::PatchStatus(p) = a
            .iter()
            .find(|x| matches!(x, Action::PatchStatus(_)))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(p["phase"], "Failed");
        assert_eq!(p["message"], "wrong password or no key found in /r");
        assert_eq!(p["conditions"][0]["reason"], "WrongPassword");
        // A new Secret version means a new probe.
        assert_ne!(probe_job_name(&r, "7"), probe_job_name(&r, "8"));
    }

    fn probed(result: Option<RepositoryProbeResult>) -> (Repository, Vec<Action>) {
        let mut r = repo();
        r.status = Some(RepositoryStatus {
            phase: RepositoryPhase::Pending,
            result,
            ..Default::default()
        });
        let obs = Observed {
            secret_version: Some("7".into()),
            job: Some(done("Failed")),
            termination: None,
        };
        let a = plan(&r, &obs, "img", &now());
        (r, a)
    }

    fn apply_patch(r: &mut Repository, a: &[Action]) {
        let p = a
            .iter()
            .find_map(|x| match x {
                Action::PatchStatus(p) => Some(p.clone()),
                _ => None,
            })
            .unwrap();
        let mut status = serde_json::to_value(r.status.clone().unwrap_or_default()).unwrap();
        for (k, v) in p.as_object().unwrap() {
            status[k] = v.clone();
        }
        r.status = Some(serde_json::from_value(status).unwrap());
    }

    #[test]
    fn an_unreachable_repository_is_degraded_and_probed_again_with_backoff() {
        let failure = RepositoryProbeResult {
            error_class: Some("Retryable".into()),
            message: Some("s3:http://127.0.0.1:9/b: connection refused".into()),
            ..Default::default()
        };
        let (mut r, a) = probed(Some(failure));
        apply_patch(&mut r, &a);
        let status = r.status.clone().unwrap();
        assert_eq!(status.phase, RepositoryPhase::Degraded);
        assert_eq!(status.failed_probes, 1);
        // Runs wait on a Degraded repository rather than fail.
        assert!(matches!(
            repo_view(Some(&r), "repo"),
            Err(NotReady::Waiting(_))
        ));
        let obs = Observed {
            secret_version: Some("7".into()),
            job: None,
            termination: None,
        };
        // Before the backoff ends nothing happens; after it a new probe Job runs.
        assert!(plan(&r, &obs, "img", &now()).is_empty());
        let later = Time(now().0 + std::time::Duration::from_secs(15));
        let a = plan(&r, &obs, "img", &later);
        let job = a
            .iter()
            .find_map(|x| match x {
                Action::CreateJob { job, .. } => Some(job.clone()),
                _ => None,
            })
            .expect("a new probe");
        let first = {
            let mut fresh = repo();
            fresh.status = Some(RepositoryStatus::default());
            probe_job_name(&fresh, "7")
        };
        assert_ne!(job.metadata.name.as_deref(), Some(first.as_str()));
        assert_eq!(reprobe_backoff(1).as_secs(), 15);
        assert_eq!(reprobe_backoff(3).as_secs(), 60);
        assert_eq!(reprobe_backoff(30), REPROBE_MAX);
    }

    #[test]
    fn a_wrong_password_fails_until_something_changes() {
        let failure = RepositoryProbeResult {
            error_class: Some("WrongPassword".into()),
            message: Some("wrong password or no key found".into()),
            ..Default::default()
        };
        let (mut r, a) = probed(Some(failure));
        apply_patch(&mut r, &a);
        assert_eq!(r.status.as_ref().unwrap().phase, RepositoryPhase::Failed);
        let obs = Observed {
            secret_version: Some("7".into()),
            job: None,
            termination: None,
        };
        let much_later = Time(now().0 + std::time::Duration::from_secs(3600));
        assert!(plan(&r, &obs, "img", &much_later).is_empty());
        // A probe pod that died without a word is a failure that may pass.
        let (mut r, a) = probed(None);
        apply_patch(&mut r, &a);
        assert_eq!(r.status.as_ref().unwrap().phase, RepositoryPhase::Degraded);
    }

    #[test]
    fn a_ready_repository_lets_runs_through_with_its_limits() {
        let mut r = repo();
        r.spec.concurrency =
            Some(crate::api::repository::RepositoryConcurrency { max_jobs: Some(1) });
        assert!(matches!(
            repo_view(Some(&r), "repo"),
            Err(NotReady::Waiting(_))
        ));
        r.status = Some(RepositoryStatus {
            phase: RepositoryPhase::Ready,
            ..Default::default()
        });
        let v = repo_view(Some(&r), "repo").unwrap();
        assert_eq!(v.max_jobs, Some(1));
        assert_eq!(v.access.secret, "s");
        assert!(
            matches!(repo_view(None, "x"), Err(NotReady::Waiting(m)) if m.contains("not found"))
        );
    }
}
