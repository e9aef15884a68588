//! Repository: the plan that probes a restic repository with a short Job (open it, create it
//! when missing, count snapshots, clear stale locks) and what runs need to know of one.

use crate::api::Repository;
use crate::api::common::KeyReference;
use crate::api::repository::{RepositoryPhase, RepositoryStatus};
use crate::controller::apply::Action;
use crate::names;
use crate::plans::jobspec::{self, CaSource, JobParams, RepoAccess, VolumeAttach};
use crate::plans::run::{self, JobState};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{Resource, ResourceExt};

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

/// What the controller knows of the Secret a Repository names.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum SecretSeen {
    /// Secrets are not watched (the controller is granted no access to them): the probe pod
    /// tells whether the Secret exists, and a fixed Secret is noticed at the next re-probe.
    #[default]
    Unwatched,
    Missing,
    /// The Secret's resourceVersion.
    Version(String),
}

impl SecretSeen {
    fn version(&self) -> Option<&str> {
        match self {
            SecretSeen::Version(v) => Some(v),
            _ => None,
        }
    }
}

/// What the controller saw for one Repository.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub secret: SecretSeen,
    pub job: Option<Job>,
    pub termination: Option<String>,
    /// Why the probe pod cannot start: kubelet's `CreateContainerConfigError` message (a
    /// Secret or key the pod needs does not exist).
    pub pod_blocked: Option<String>,
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

/// When the repository is due for its next probe, from now. A Degraded one is probed again
/// on [`reprobe_backoff`]; a Failed one, when Secrets are not watched (so a fixed Secret
/// cannot be seen), at half that pace; `None` when nothing but a change brings a probe.
pub fn reprobe_in(
    status: &RepositoryStatus,
    now: &Time,
    secrets_watched: bool,
) -> Option<std::time::Duration> {
    let wait = match status.phase {
        RepositoryPhase::Degraded => reprobe_backoff(status.failed_probes),
        RepositoryPhase::Failed if !secrets_watched => {
            reprobe_backoff(status.failed_probes.saturating_add(1))
        }
        _ => return None,
    };
    let Some(last) = &status.last_checked_time else {
        return Some(std::time::Duration::ZERO);
    };
    let waited = now.0.duration_since(last.0).as_secs().max(0) as u64;
    Some(wait.saturating_sub(std::time::Duration::from_secs(waited)))
}

/// The probe Job's name: one per generation, Secret version and attempt (the failed probes
/// before it), so a changed spec or Secret, or a re-probe, is a new Job.
pub fn probe_job_name(repo: &Repository, secret_version: Option<&str>, attempt: u32) -> String {
    let generation = repo.meta().generation.unwrap_or(0);
    let mut key = format!(
        "{}-{generation}-{}",
        repo.name_any(),
        secret_version.unwrap_or("")
    );
    if attempt > 0 {
        key.push_str(&format!("-{attempt}"));
    }
    let digest = <sha2::Sha256 as sha2::Digest>::digest(key.as_bytes());
    names::job_name(
        "probe",
        &format!("{}-{}", repo.name_any(), &hex::encode(digest)[..6]),
    )
}

/// The name of the probe Job that belongs to `status`, as [`plan`] creates it.
pub fn current_probe_job_name(repo: &Repository, secret: &SecretSeen) -> String {
    let status = repo.status.clone().unwrap_or_default();
    probe_job_name(repo, secret.version(), status.failed_probes)
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
    if obs.secret == SecretSeen::Missing {
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
    }
    let seen = obs.secret.version();
    let watched = obs.secret != SecretSeen::Unwatched;
    let due = reprobe_in(&current, now, watched).is_some_and(|d| d.is_zero());
    let changed = current.observed_generation != repo.meta().generation
        || current.secret_version.as_deref() != seen;
    let up_to_date = !changed && current.phase != RepositoryPhase::Pending && !due;
    let job_name = probe_job_name(repo, seen, current.failed_probes);
    if up_to_date {
        if obs.job.is_some() {
            out.push(Action::DeleteJob(job_name));
        }
        return out;
    }
    let state = run::job_state(obs.job.as_ref());
    if let (JobState::Running, Some(why)) = (&state, &obs.pod_blocked) {
        // The pod never starts: nothing the probe could report will come.
        let secret = &repo.spec.secret_ref.name;
        let (reason, message) = if *why == format!("secret \"{secret}\" not found") {
            ("SecretNotFound", format!("Secret {secret} not found"))
        } else {
            (
                "PodConfigError",
                format!("the probe pod cannot start: {why}"),
            )
        };
        record_failure(repo, &current, seen, reason, message, false, now, &mut out);
        out.push(Action::DeleteJob(job_name));
        return out;
    }
    match state {
        JobState::Absent => {
            let mut next = current.clone();
            let again = !changed
                && matches!(
                    current.phase,
                    RepositoryPhase::Degraded | RepositoryPhase::Failed
                );
            if again {
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
            let job_name = probe_job_name(repo, seen, next.failed_probes);
            patch(&current, &next, &mut out);
            let params = JobParams {
                name: job_name,
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
                labels: names::owned_labels("Repository", &repo.name_any(), None, "probe"),
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
            if result.ok {
                let mut next = current.clone();
                next.observed_generation = repo.meta().generation;
                next.secret_version = seen.map(str::to_string);
                next.last_checked_time = Some(now.clone());
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
                patch(&current, &next, &mut out);
            } else {
                let why = match &state {
                    JobState::Failed(w) => w.clone(),
                    _ => "the probe Job ended without a result".into(),
                };
                let message = result
                    .message
                    .clone()
                    .map(|m| m.lines().next().unwrap_or("").to_string())
                    .unwrap_or_else(|| {
                        run::failure_message(None, obs.termination.as_deref(), &why)
                    });
                let class = result.error_class.as_deref();
                let reason = class.unwrap_or("ProbeFailed");
                let may_pass = retryable(class);
                record_failure(
                    repo, &current, seen, reason, message, may_pass, now, &mut out,
                );
            }
            out.push(Action::DeleteJob(job_name));
        }
    }
    out
}

/// Records a failed probe: `Degraded` when the failure may pass by itself (probed again on a
/// backoff), else `Failed`; a Warning Event either way.
#[allow(clippy::too_many_arguments)]
fn record_failure(
    repo: &Repository,
    current: &RepositoryStatus,
    seen: Option<&str>,
    reason: &str,
    message: String,
    may_pass: bool,
    now: &Time,
    out: &mut Vec<Action>,
) {
    let mut next = current.clone();
    next.observed_generation = repo.meta().generation;
    next.secret_version = seen.map(str::to_string);
    next.last_checked_time = Some(now.clone());
    next.phase = if may_pass {
        RepositoryPhase::Degraded
    } else {
        RepositoryPhase::Failed
    };
    // Counted across both phases: each re-probe is a Job of its own name.
    next.failed_probes = current.failed_probes + 1;
    next.message = Some(message.clone());
    next.conditions = vec![condition(false, reason, &message, &current.conditions, now)];
    out.push(Action::Event {
        warning: true,
        reason: "RepositoryFailed".into(),
        note: message,
    });
    patch(current, &next, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::LocalObjectReference;
    use crate::api::repository::{RepositoryProbeResult, RepositorySpec};
    use crate::controller::apply::Action;
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
        let obs = Observed {
            secret: SecretSeen::Missing,
            ..Default::default()
        };
        let a = plan(&repo(), &obs, "img", &now());
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
            secret: SecretSeen::Version("7".into()),
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
        assert_ne!(
            probe_job_name(&r, Some("7"), 0),
            probe_job_name(&r, Some("8"), 0)
        );
    }

    fn probed(result: Option<RepositoryProbeResult>) -> (Repository, Vec<Action>) {
        let mut r = repo();
        r.status = Some(RepositoryStatus {
            phase: RepositoryPhase::Pending,
            result,
            ..Default::default()
        });
        let obs = Observed {
            secret: SecretSeen::Version("7".into()),
            job: Some(done("Failed")),
            ..Default::default()
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
        // As a merge patch: null removes the field.
        for (k, v) in p.as_object().unwrap() {
            if v.is_null() {
                status.as_object_mut().unwrap().remove(k);
            } else {
                status[k] = v.clone();
            }
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
            secret: SecretSeen::Version("7".into()),
            job: None,
            ..Default::default()
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
            probe_job_name(&fresh, Some("7"), 0)
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
            secret: SecretSeen::Version("7".into()),
            job: None,
            ..Default::default()
        };
        let much_later = Time(now().0 + std::time::Duration::from_secs(3600));
        assert!(plan(&r, &obs, "img", &much_later).is_empty());
        // Unless the Secret cannot be watched: then a Failed repository is probed again
        // after 30 s, as a fixed password cannot be seen otherwise.
        let unwatched = Observed::default();
        let early = Time(now().0 + std::time::Duration::from_secs(29));
        let late = Time(now().0 + std::time::Duration::from_secs(30));
        // The first look without a watch sees the Secret version as changed.
        r.status.as_mut().unwrap().secret_version = None;
        assert!(plan(&r, &unwatched, "img", &early).is_empty());
        let a = plan(&r, &unwatched, "img", &late);
        assert!(a.iter().any(|x| matches!(x, Action::CreateJob { .. })));
        apply_patch(&mut r, &a);
        assert_eq!(r.status.as_ref().unwrap().phase, RepositoryPhase::Failed);
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

    fn created_job(a: &[Action]) -> Option<String> {
        a.iter().find_map(|x| match x {
            Action::CreateJob { job, .. } => job.metadata.name.clone(),
            _ => None,
        })
    }

    #[test]
    fn without_a_watch_the_probe_pod_tells_a_missing_secret() {
        let mut r = repo();
        let obs = Observed::default();
        let a = plan(&r, &obs, "img", &now());
        let name = created_job(&a).expect("a probe");
        apply_patch(&mut r, &a);
        assert_eq!(current_probe_job_name(&r, &obs.secret), name);
        let mut job = Job::default();
        job.metadata.name = Some(name.clone());
        let blocked = Observed {
            job: Some(job),
            pod_blocked: Some("secret \"s\" not found".into()),
            ..Default::default()
        };
        let a = plan(&r, &blocked, "img", &now());
        assert!(
            a.iter()
                .any(|x| matches!(x, Action::DeleteJob(n) if *n == name))
        );
        apply_patch(&mut r, &a);
        let status = r.status.clone().unwrap();
        assert_eq!(status.phase, RepositoryPhase::Failed);
        assert_eq!(status.message.as_deref(), Some("Secret s not found"));
        assert_eq!(status.conditions[0].reason, "SecretNotFound");
        // Runs on it fail at once with that message.
        assert!(matches!(
            repo_view(Some(&r), "repo"),
            Err(NotReady::Failed(m)) if m.contains("Secret s not found")
        ));
        // The next probe is a Job of another name, after the backoff.
        let later = Time(now().0 + std::time::Duration::from_secs(30));
        let again = created_job(&plan(&r, &Observed::default(), "img", &later)).unwrap();
        assert_ne!(again, name);
        // Another key missing is named as kubelet says it.
        let mut r = repo();
        let a = plan(&r, &Observed::default(), "img", &now());
        apply_patch(&mut r, &a);
        let blocked = Observed {
            job: Some(Job::default()),
            pod_blocked: Some("couldn't find key ca.crt in Secret apps/ca".into()),
            ..Default::default()
        };
        let a = plan(&r, &blocked, "img", &now());
        apply_patch(&mut r, &a);
        assert_eq!(
            r.status.unwrap().message.as_deref(),
            Some("the probe pod cannot start: couldn't find key ca.crt in Secret apps/ca")
        );
    }

    #[test]
    fn a_changed_spec_during_backoff_probes_once_under_one_name() {
        let failure = RepositoryProbeResult {
            error_class: Some("Retryable".into()),
            message: Some("connection refused".into()),
            ..Default::default()
        };
        let (mut r, a) = probed(Some(failure));
        apply_patch(&mut r, &a);
        r.metadata.generation = Some(2);
        let obs = Observed {
            secret: SecretSeen::Version("7".into()),
            ..Default::default()
        };
        let a = plan(&r, &obs, "img", &now());
        let name = created_job(&a).expect("a probe of the new spec");
        apply_patch(&mut r, &a);
        assert_eq!(r.status.as_ref().unwrap().phase, RepositoryPhase::Pending);
        // The next look finds that same Job, and creates no other.
        assert_eq!(current_probe_job_name(&r, &obs.secret), name);
    }
}
