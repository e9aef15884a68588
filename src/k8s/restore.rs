//! VolumeRestore: the plan (pure) of a restore into an existing PVC or a new one.
//!
//! New → Preparing (a short resolve Job picks the snapshot and records it with its size in
//! `status.resolved`, so `latest` means the latest when the restore began, and a new volume
//! can be sized to fit) → InProgress (the restore Job) → Completed or Failed. A selection
//! that matches nothing is Completed with an empty volume and says so; every error fails,
//! never yielding an empty volume silently.

use super::api::common::{MoverOutcome, RunPhase, RunResources, RunStatus};
use super::api::restore::NewPvc;
use super::api::{Repository, VolumeRestore};
use super::apply::Action;
use super::jobspec::{self, JobParams, VolumeAttach};
use super::names;
use super::repository::{NotReady, RepoView, repo_view};
use super::run::{self, JobState};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// What the controller saw for one VolumeRestore.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub repository: Option<Repository>,
    /// The target claim (existing, or the new one once created).
    pub target: Option<PersistentVolumeClaim>,
    pub resolve_job: Option<Job>,
    pub job: Option<Job>,
    pub termination: Option<String>,
    /// The node of a running pod that mounts the target claim.
    pub target_node: Option<String>,
}

pub struct RunNames {
    pub resolve_job: String,
    pub job: String,
    pub access: String,
}

pub fn run_names(vr: &VolumeRestore) -> RunNames {
    let name = vr.name_any();
    RunNames {
        resolve_job: names::job_name("resolve", &name),
        job: names::job_name("restore", &name),
        access: names::object_name("restore", &name),
    }
}

/// The claim the data goes to.
pub fn target_claim(vr: &VolumeRestore) -> Option<String> {
    let t = vr.spec.target.as_ref()?;
    t.pvc
        .clone()
        .or_else(|| t.new_pvc.as_ref().map(|n| n.name.clone()))
}

fn owner(vr: &VolumeRestore) -> OwnerReference {
    vr.controller_owner_ref(&()).unwrap_or_default()
}

fn labels(vr: &VolumeRestore, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (names::MANAGED_BY.to_string(), "mover".to_string()),
        (names::OWNER_KIND.to_string(), "VolumeRestore".to_string()),
        (
            names::OWNER_NAME.to_string(),
            names::label_value(&vr.name_any()),
        ),
        (
            names::REPOSITORY.to_string(),
            names::label_value(&vr.spec.repository),
        ),
        (names::JOB_ROLE.to_string(), role.to_string()),
    ])
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A new claim's size for `bytes` of file content: a tenth more for file system overhead,
/// rounded up to a MiB, at least 1 GiB. A block volume gets its device's size.
pub fn default_capacity(bytes: u64, block: bool) -> Quantity {
    let want = if block {
        bytes.max(MIB)
    } else {
        bytes.saturating_add(bytes / 10).max(GIB)
    };
    let mib = want.div_ceil(MIB);
    Quantity(format!("{mib}Mi"))
}

fn new_claim(vr: &VolumeRestore, spec: &NewPvc, status: &RunStatus) -> PersistentVolumeClaim {
    let resolved = status.resolved.clone().unwrap_or_default();
    let capacity = spec
        .capacity
        .clone()
        .unwrap_or_else(|| default_capacity(resolved.size_bytes, resolved.block));
    let mode = spec.volume_mode.clone().unwrap_or_else(|| {
        if resolved.block {
            "Block"
        } else {
            "Filesystem"
        }
        .to_string()
    });
    let modes = if spec.access_modes.is_empty() {
        vec!["ReadWriteOnce".to_string()]
    } else {
        spec.access_modes.clone()
    };
    let mut labels = BTreeMap::new();
    labels.insert(names::MANAGED_BY.to_string(), "mover".to_string());
    labels.insert(
        names::OWNER_NAME.to_string(),
        names::label_value(&vr.name_any()),
    );
    PersistentVolumeClaim {
        // No owner reference: the restored volume outlives the VolumeRestore.
        metadata: ObjectMeta {
            name: Some(spec.name.clone()),
            namespace: vr.namespace(),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(modes),
            storage_class_name: spec.storage_class_name.clone(),
            volume_mode: Some(mode),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), capacity)])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

fn patch(current: &RunStatus, next: &RunStatus, out: &mut Vec<Action>) {
    if let Some(p) = run::status_patch(current, next) {
        out.push(Action::PatchStatus(p));
    }
}

fn fail(current: &RunStatus, message: String, now: &Time) -> Vec<Action> {
    let next = run::with_phase(current, RunPhase::Failed, Some(message.clone()), now);
    let mut out = Vec::new();
    patch(current, &next, &mut out);
    out.push(Action::Event {
        warning: true,
        reason: "RestoreFailed".into(),
        note: message,
    });
    out
}

fn wait_or_fail(current: &RunStatus, message: String, now: &Time) -> Vec<Action> {
    if run::timed_out(current, now) {
        return fail(current, format!("{message} (gave up after 5m)"), now);
    }
    let next = run::with_phase(current, RunPhase::Preparing, Some(message), now);
    let mut out = Vec::new();
    patch(current, &next, &mut out);
    out
}

#[allow(clippy::too_many_arguments)]
fn job_actions(
    vr: &VolumeRestore,
    names: &RunNames,
    image: &str,
    repo: &RepoView,
    role: &str,
    job_name: &str,
    args: Vec<String>,
    volume: VolumeAttach,
    node: Option<String>,
) -> Vec<Action> {
    let params = JobParams {
        name: job_name.to_string(),
        namespace: vr.namespace().unwrap_or_default(),
        image: image.to_string(),
        args,
        secret: repo.secret.clone(),
        ca: repo.ca.clone(),
        volume,
        service_account: names.access.clone(),
        mover: vr.spec.mover.clone().unwrap_or_default(),
        owner: owner(vr),
        labels: labels(vr, role),
        node_name: node,
        backoff_limit: 1,
    };
    let access = jobspec::run_access(&params, "volumerestores", &vr.name_any());
    vec![
        Action::CreateAccess(Box::new(access)),
        Action::CreateJob {
            job: Box::new(jobspec::job(&params)),
            repository: vr.spec.repository.clone(),
            max_jobs: repo.max_jobs,
        },
    ]
}

fn cleanup(names: &RunNames, obs: &Observed, delete_job: bool) -> Vec<Action> {
    let mut out = Vec::new();
    if obs.resolve_job.is_some() {
        out.push(Action::DeleteJob(names.resolve_job.clone()));
    }
    if delete_job && obs.job.is_some() {
        out.push(Action::DeleteJob(names.job.clone()));
    }
    out
}

pub fn plan(vr: &VolumeRestore, obs: &Observed, image: &str, now: &Time) -> Vec<Action> {
    let names = run_names(vr);
    let current = vr.status.clone().unwrap_or_default();
    if vr.meta().deletion_timestamp.is_some() {
        return Vec::new();
    }
    match current.phase {
        RunPhase::Completed | RunPhase::Canceled => return cleanup(&names, obs, true),
        RunPhase::Failed => return cleanup(&names, obs, false),
        RunPhase::New | RunPhase::Preparing | RunPhase::InProgress | RunPhase::Canceling => {}
    }
    if vr.spec.cancel || current.phase == RunPhase::Canceling {
        let mut out = Vec::new();
        let running = [&obs.job, &obs.resolve_job]
            .iter()
            .any(|j| run::job_state(j.as_ref()) == JobState::Running);
        if running {
            out.push(Action::DeleteJob(names.job.clone()));
            out.push(Action::DeleteJob(names.resolve_job.clone()));
            let next =
                run::with_phase(&current, RunPhase::Canceling, Some("canceling".into()), now);
            patch(&current, &next, &mut out);
            return out;
        }
        let next = run::with_phase(
            &current,
            RunPhase::Canceled,
            Some("canceled by spec.cancel".into()),
            now,
        );
        patch(&current, &next, &mut out);
        out.extend(cleanup(&names, obs, true));
        return out;
    }
    if current.phase == RunPhase::New || current.start_time.is_none() {
        let mut next = run::with_phase(&current, RunPhase::Preparing, None, now);
        next.start_time = Some(now.clone());
        next.observed_generation = vr.meta().generation;
        next.resources = Some(RunResources {
            volume_snapshot: None,
            pvc: target_claim(vr),
            job: Some(names.job.clone()),
        });
        let mut out = Vec::new();
        patch(&current, &next, &mut out);
        return out;
    }
    let Some(target) = vr.spec.target.clone() else {
        return fail(
            &current,
            "spec.target names no PVC (a VolumeRestore used only as a volume populator has no \
             target of its own)"
                .into(),
            now,
        );
    };
    let repo = match repo_view(obs.repository.as_ref(), &vr.spec.repository) {
        Ok(r) => r,
        Err(NotReady::Waiting(m)) => return wait_or_fail(&current, m, now),
        Err(NotReady::Failed(m)) => return fail(&current, m, now),
    };
    // 1. Resolve the snapshot.
    let Some(resolved) = current.resolved.clone() else {
        return match run::job_state(obs.resolve_job.as_ref()) {
            JobState::Absent => {
                let args = vec![
                    "job".into(),
                    "resolve".into(),
                    format!("volumerestore/{}", vr.name_any()),
                ];
                let mut out = job_actions(
                    vr,
                    &names,
                    image,
                    &repo,
                    "resolve",
                    &names.resolve_job,
                    args,
                    VolumeAttach::None,
                    None,
                );
                let next = run::with_phase(
                    &current,
                    RunPhase::Preparing,
                    Some("selecting the snapshot".into()),
                    now,
                );
                patch(&current, &next, &mut out);
                out
            }
            JobState::Running => Vec::new(),
            JobState::Succeeded | JobState::Failed(_) => {
                let why = match run::job_state(obs.resolve_job.as_ref()) {
                    JobState::Failed(w) => w,
                    _ => "the resolve Job ended without choosing a snapshot".into(),
                };
                let mut out = fail(
                    &current,
                    run::failure_message(None, obs.termination.as_deref(), &why),
                    now,
                );
                out.extend(cleanup(&names, obs, false));
                out
            }
        };
    };
    if let Some(m) = &resolved.message {
        let mut out = fail(&current, m.lines().next().unwrap_or("").to_string(), now);
        out.extend(cleanup(&names, obs, false));
        return out;
    }
    // 2. The target claim.
    let claim = target_claim(vr).unwrap_or_default();
    let mut out = Vec::new();
    let Some(pvc) = &obs.target else {
        if let Some(new) = &target.new_pvc {
            out.push(Action::CreatePvc(Box::new(new_claim(vr, new, &current))));
            let next = run::with_phase(
                &current,
                RunPhase::Preparing,
                Some(format!("creating PVC {claim}")),
                now,
            );
            patch(&current, &next, &mut out);
            return out;
        }
        return wait_or_fail(&current, format!("PVC {claim} not found"), now);
    };
    if resolved.no_snapshot {
        let mut next = run::with_phase(
            &current,
            RunPhase::Completed,
            Some("no snapshot matches the selection; the volume was left as it was".into()),
            now,
        );
        next.result = Some(super::api::common::MoverResult {
            outcome: MoverOutcome::NoSnapshot,
            ..Default::default()
        });
        patch(&current, &next, &mut out);
        out.extend(cleanup(&names, obs, true));
        return out;
    }
    // 3. The restore Job.
    match run::job_state(obs.job.as_ref()) {
        JobState::Absent => {
            let block = pvc.spec.as_ref().and_then(|s| s.volume_mode.as_deref()) == Some("Block");
            if block != resolved.block {
                let what = if resolved.block {
                    "a block volume"
                } else {
                    "a file tree"
                };
                return fail(
                    &current,
                    format!(
                        "snapshot {} holds {what}; PVC {claim} has volumeMode {}",
                        resolved.snapshot_id.unwrap_or_default(),
                        if block { "Block" } else { "Filesystem" }
                    ),
                    now,
                );
            }
            let (volume, target_args) = if block {
                (
                    VolumeAttach::Block {
                        claim: claim.clone(),
                    },
                    ["--device", jobspec::DATA_DEVICE],
                )
            } else {
                (
                    VolumeAttach::Filesystem {
                        claim: claim.clone(),
                        read_only: false,
                    },
                    ["--dir", jobspec::DATA_DIR],
                )
            };
            let mut args = vec!["job".to_string(), "restore".to_string()];
            args.extend(target_args.map(String::from));
            args.push(format!("volumerestore/{}", vr.name_any()));
            out.extend(job_actions(
                vr,
                &names,
                image,
                &repo,
                "restore",
                &names.job,
                args,
                volume,
                obs.target_node.clone(),
            ));
            let next = run::with_phase(&current, RunPhase::InProgress, None, now);
            patch(&current, &next, &mut out);
        }
        JobState::Running => {
            let next = run::with_phase(&current, RunPhase::InProgress, None, now);
            patch(&current, &next, &mut out);
        }
        JobState::Succeeded | JobState::Failed(_) => {
            let result = current.result.clone();
            let failed = match run::job_state(obs.job.as_ref()) {
                JobState::Failed(w) => Some(w),
                _ => None,
            };
            let ok = failed.is_none()
                && result
                    .as_ref()
                    .is_some_and(|r| r.outcome == MoverOutcome::Succeeded);
            if ok {
                let r = result.unwrap_or_default();
                let mut next =
                    run::with_phase(&current, RunPhase::Completed, r.message.clone(), now);
                next.snapshot_id = r.snapshot_id.clone();
                next.summary = r.summary.clone();
                if let Some(p) = next.progress.as_mut() {
                    p.percent = Some("100%".into());
                }
                patch(&current, &next, &mut out);
                out.push(Action::Event {
                    warning: false,
                    reason: "RestoreCompleted".into(),
                    note: format!(
                        "snapshot {} restored into PVC {claim}",
                        r.snapshot_id.unwrap_or_default()
                    ),
                });
                out.extend(cleanup(&names, obs, true));
            } else {
                let why = failed.unwrap_or_else(|| "the mover Job ended without a result".into());
                let message =
                    run::failure_message(result.as_ref(), obs.termination.as_deref(), &why);
                out.extend(fail(&current, message, now));
                out.extend(cleanup(&names, obs, false));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::api::VolumeRestoreSpec;
    use crate::k8s::api::common::ResolvedSnapshot;
    use crate::k8s::api::repository::{RepositoryPhase, RepositorySpec, RepositoryStatus};
    use crate::k8s::api::restore::{RestoreSource, RestoreTarget};

    fn now() -> Time {
        Time("2026-12-01T10:00:00Z".parse().unwrap())
    }

    fn restore(target: RestoreTarget) -> VolumeRestore {
        let mut vr = VolumeRestore::new(
            "r1",
            VolumeRestoreSpec {
                repository: "repo".into(),
                source: RestoreSource::default(),
                target: Some(target),
                delete_extraneous: false,
                cancel: false,
                mover: None,
            },
        );
        vr.metadata.namespace = Some("apps".into());
        vr.metadata.uid = Some("u".into());
        vr.status = Some(RunStatus {
            phase: RunPhase::Preparing,
            start_time: Some(now()),
            ..Default::default()
        });
        vr
    }

    fn repo() -> Repository {
        let mut r = Repository::new(
            "repo",
            RepositorySpec {
                secret_ref: crate::k8s::api::common::LocalObjectReference { name: "s".into() },
                custom_ca: None,
                concurrency: None,
                initialize: true,
            },
        );
        r.status = Some(RepositoryStatus {
            phase: RepositoryPhase::Ready,
            ..Default::default()
        });
        r
    }

    #[test]
    fn capacity_defaults_to_the_snapshot_size_with_room() {
        assert_eq!(default_capacity(0, false).0, "1024Mi");
        assert_eq!(default_capacity(10 * GIB, false).0, "11264Mi");
        assert_eq!(default_capacity(64 * MIB, true).0, "64Mi");
        assert_eq!(default_capacity(64 * MIB + 1, true).0, "65Mi");
    }

    #[test]
    fn a_new_pvc_is_sized_and_moded_after_the_resolved_snapshot() {
        let mut vr = restore(RestoreTarget {
            pvc: None,
            new_pvc: Some(NewPvc {
                name: "restored".into(),
                ..Default::default()
            }),
        });
        let obs = Observed {
            repository: Some(repo()),
            ..Default::default()
        };
        let a = plan(&vr, &obs, "img", &now());
        assert!(a.iter().any(|x| matches!(x, Action::CreateJob { job, .. }
            if job.metadata.name.as_deref() == Some("mover-resolve-r1"))));
        vr.status.as_mut().unwrap().resolved = Some(ResolvedSnapshot {
            snapshot_id: Some("abc".into()),
            size_bytes: 3 * GIB,
            block: true,
            ..Default::default()
        });
        let a = plan(&vr, &obs, "img", &now());
        let pvc = a
            .iter()
            .find_map(|x| match x {
                Action::CreatePvc(p) => Some(p.clone()),
                _ => None,
            })
            .unwrap();
        let spec = pvc.spec.unwrap();
        assert_eq!(spec.volume_mode.as_deref(), Some("Block"));
        // A device gets exactly its size: no file system overhead to allow for.
        assert_eq!(
            spec.resources.unwrap().requests.unwrap()["storage"].0,
            "3072Mi"
        );
        assert!(pvc.metadata.owner_references.is_none());
    }

    #[test]
    fn a_resolve_error_fails_and_nothing_matching_completes_empty() {
        let mut vr = restore(RestoreTarget {
            pvc: Some("existing".into()),
            new_pvc: None,
        });
        let target = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("existing".into()),
                ..Default::default()
            },
            spec: Some(Default::default()),
            status: None,
        };
        let obs = Observed {
            repository: Some(repo()),
            target: Some(target),
            ..Default::default()
        };
        vr.status.as_mut().unwrap().resolved = Some(ResolvedSnapshot {
            error_class: Some("WrongPassword".into()),
            message: Some("wrong password or no key found in /r".into()),
            ..Default::default()
        });
        let a = plan(&vr, &obs, "img", &now());
        let Action::PatchStatus(p) = &a[0] else {
            panic!()
        };
        assert_eq!(p["phase"], "Failed");
        vr.status.as_mut().unwrap().resolved = Some(ResolvedSnapshot {
            no_snapshot: true,
            ..Default::default()
        });
        let a = plan(&vr, &obs, "img", &now());
        let Action::PatchStatus(p) = &a[0] else {
            panic!()
        };
        assert_eq!(p["phase"], "Completed");
        assert_eq!(p["result"]["outcome"], "NoSnapshot");
        vr.status.as_mut().unwrap().resolved = Some(ResolvedSnapshot {
            snapshot_id: Some("abc".into()),
            ..Default::default()
        });
        let a = plan(&vr, &obs, "img", &now());
        let job = a
            .iter()
            .find_map(|x| match x {
                Action::CreateJob { job, .. } => Some(job.clone()),
                _ => None,
            })
            .unwrap();
        let c = &job.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(
            c.args.clone().unwrap(),
            [
                "--retry-lock=10m",
                "job",
                "restore",
                "--dir",
                "/data",
                "volumerestore/r1"
            ]
        );
        assert_eq!(c.volume_mounts.as_ref().unwrap()[1].read_only, Some(false));
    }
}
