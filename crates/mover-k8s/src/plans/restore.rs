//! VolumeRestore: the plan (pure) of a restore into an existing PVC or a new one.
//!
//! New → Preparing (a short resolve Job picks the snapshot and records it with its size in
//! `status.resolved`, so `latest` means the latest when the restore began, and a new volume
//! can be sized to fit) → InProgress (the restore Job) → Completed or Failed. A selection
//! that matches nothing is Completed with an empty volume and says so; every error fails,
//! never yielding an empty volume silently.

use crate::api::common::{MoverOutcome, RunPhase, RunResources, RunStatus};
use crate::api::restore::NewPvc;
use crate::api::{Repository, VolumeRestore};
use crate::controller::apply::Action;
use crate::names;
use crate::plans::jobspec::{self, JobParams, VolumeAttach};
use crate::plans::repository::{NotReady, RepoView, repo_view};
use crate::plans::run::{self, JobState};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
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
    /// Why a Job of the run cannot create its pod (an admission denial, a quota), when it
    /// never had one.
    pub job_blocked: Option<String>,
    /// The node of a running pod that mounts the target claim.
    pub target_node: Option<String>,
    /// Populator mode (no `spec.target`): the claim whose `dataSourceRef` names this
    /// VolumeRestore, and the volume bound to the prime claim the data goes to first.
    pub populating: Option<PersistentVolumeClaim>,
    pub prime_volume: Option<PersistentVolume>,
    /// The populating claim's StorageClass binds a volume only once a pod uses the claim
    /// (`volumeBindingMode: WaitForFirstConsumer`).
    pub populating_waits_for_consumer: bool,
}

/// The annotation the scheduler sets on a claim of a `WaitForFirstConsumer` class: the node
/// its first pod goes to, where the volume must be provisioned.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

fn selected_node(pvc: &PersistentVolumeClaim) -> Option<&String> {
    pvc.metadata.annotations.as_ref()?.get(SELECTED_NODE)
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

/// The claim the data goes to: the target, or in populator mode the prime claim that is
/// filled first and whose volume is then handed to the populating claim.
pub fn target_claim(vr: &VolumeRestore) -> Option<String> {
    let Some(t) = vr.spec.target.as_ref() else {
        return Some(prime_claim(vr));
    };
    t.pvc
        .clone()
        .or_else(|| t.new_pvc.as_ref().map(|n| n.name.clone()))
}

/// The prime claim of a VolumeRestore used as a volume populator.
pub fn prime_claim(vr: &VolumeRestore) -> String {
    names::object_name("prime", &vr.name_any())
}

/// Whether `pvc` asks to be populated by VolumeRestore `name` (`dataSourceRef`).
pub fn populates(pvc: &PersistentVolumeClaim, name: &str) -> bool {
    pvc.spec
        .as_ref()
        .and_then(|s| s.data_source_ref.as_ref())
        .is_some_and(|r| {
            r.api_group.as_deref() == Some(names::GROUP)
                && r.kind == "VolumeRestore"
                && r.name == name
        })
}

/// The prime claim: the populating claim's class, modes and size, owned by the run. On a
/// `WaitForFirstConsumer` class it carries the node the scheduler chose for the populating
/// claim, so the volume is made where the claim's pod runs (and binds with no pod of its own,
/// as an empty "no snapshot" volume needs).
fn prime(vr: &VolumeRestore, populating: &PersistentVolumeClaim) -> PersistentVolumeClaim {
    let from = populating.spec.clone().unwrap_or_default();
    let mut labels = labels(vr, "prime");
    labels.retain(|k, _| k != names::REPOSITORY);
    let annotations = selected_node(populating)
        .map(|node| BTreeMap::from([(SELECTED_NODE.to_string(), node.clone())]));
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(prime_claim(vr)),
            namespace: vr.namespace(),
            labels: Some(labels),
            annotations,
            owner_references: Some(vec![owner(vr)]),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: from.access_modes,
            storage_class_name: from.storage_class_name,
            volume_mode: from.volume_mode,
            resources: from.resources,
            ..Default::default()
        }),
        status: None,
    }
}

fn owner(vr: &VolumeRestore) -> OwnerReference {
    vr.controller_owner_ref(&()).unwrap_or_default()
}

fn labels(vr: &VolumeRestore, role: &str) -> BTreeMap<String, String> {
    names::owned_labels(
        "VolumeRestore",
        &vr.name_any(),
        Some(&vr.spec.repository),
        role,
    )
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Blocks a small file takes at least (one 4 KiB file system block).
const BLOCK_PER_FILE: u64 = 4096;
/// Bytes of volume per inode that `mkfs.ext4` reserves by default (`inode_ratio`): a
/// volume with fewer bytes per file runs out of inodes before it runs out of blocks.
const BYTES_PER_INODE: u64 = 16384;

/// A new claim's size for `files` files holding `bytes` of content: a tenth more than the
/// content for file system overhead plus a block for each file, and at least one ext4
/// inode per file, rounded up to a MiB, at least 1 GiB. A block volume gets its device's
/// size.
pub fn default_capacity(bytes: u64, files: u64, block: bool) -> Quantity {
    let want = if block {
        bytes.max(MIB)
    } else {
        let blocks = bytes
            .saturating_add(bytes / 10)
            .saturating_add(files.saturating_mul(BLOCK_PER_FILE));
        blocks.max(files.saturating_mul(BYTES_PER_INODE)).max(GIB)
    };
    let mib = want.div_ceil(MIB);
    Quantity(format!("{mib}Mi"))
}

/// Whether `pvc` is the claim this VolumeRestore created for `target.newPVC` (by the
/// labels [`new_claim`] sets).
fn made_by(pvc: &PersistentVolumeClaim, vr: &VolumeRestore) -> bool {
    let labels = pvc.labels();
    labels.get(names::MANAGED_BY).map(String::as_str) == Some("mover")
        && labels.get(names::OWNER_NAME) == Some(&names::label_value(&vr.name_any()))
}

fn new_claim(vr: &VolumeRestore, spec: &NewPvc, status: &RunStatus) -> PersistentVolumeClaim {
    let resolved = status.resolved.clone().unwrap_or_default();
    let capacity = spec
        .capacity
        .clone()
        .unwrap_or_else(|| default_capacity(resolved.size_bytes, resolved.files, resolved.block));
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

fn wait_or_fail(
    current: &RunStatus,
    message: String,
    now: &Time,
    limit: std::time::Duration,
) -> Vec<Action> {
    run::wait_or_fail(current, message, now, limit, |m| fail(current, m, now))
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
        repo: repo.access.clone(),
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
    // Populator mode: the prime claim goes in every outcome (after a success its volume
    // belongs to the populating claim; after a failure that claim stays Pending).
    if obs.populating.is_some() {
        if let Some(prime) = &obs.target {
            out.push(Action::DeletePvc(prime.name_any()));
        }
    }
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
    // A restore whose Job already succeeded ends Completed even when a cancel arrives now.
    let restore_done = run::job_state(obs.job.as_ref()) == JobState::Succeeded;
    if !restore_done && (vr.spec.cancel || current.phase == RunPhase::Canceling) {
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
    if let Some(why) = &obs.job_blocked {
        let mut out = fail(
            &current,
            format!("the mover pod cannot be created: {why}"),
            now,
        );
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
    let populator = vr.spec.target.is_none();
    let target = vr.spec.target.clone().unwrap_or_default();
    let repo = match repo_view(obs.repository.as_ref(), &vr.spec.repository) {
        Ok(r) => r,
        Err(NotReady::Waiting(m)) => {
            return wait_or_fail(
                &current,
                m,
                now,
                run::wait_limit(vr.spec.wait_timeout.as_deref()),
            );
        }
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
    let shown = obs
        .populating
        .as_ref()
        .map(|p| p.name_any())
        .unwrap_or_else(|| claim.clone());
    let mut out = Vec::new();
    let Some(pvc) = &obs.target else {
        if populator {
            let Some(populating) = &obs.populating else {
                return wait_or_fail(
                    &current,
                    format!(
                        "no PVC names VolumeRestore {} in its dataSourceRef",
                        vr.name_any()
                    ),
                    now,
                    run::wait_limit(vr.spec.wait_timeout.as_deref()),
                );
            };
            if obs.populating_waits_for_consumer && selected_node(populating).is_none() {
                // As the volume populator library does: the node is not chosen before a pod
                // uses the claim, and a volume made elsewhere could not follow that pod.
                let next = run::with_phase(
                    &current,
                    RunPhase::Preparing,
                    Some(format!(
                        "waiting for a pod to use PVC {}: its StorageClass binds volumes on \
                         first use (WaitForFirstConsumer)",
                        populating.name_any()
                    )),
                    now,
                );
                patch(&current, &next, &mut out);
                return out;
            }
            out.push(Action::CreatePvc(Box::new(prime(vr, populating))));
            let next = run::with_phase(
                &current,
                RunPhase::Preparing,
                Some(format!(
                    "populating PVC {} through {claim}",
                    populating.name_any()
                )),
                now,
            );
            patch(&current, &next, &mut out);
            return out;
        }
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
        return wait_or_fail(
            &current,
            format!("PVC {claim} not found"),
            now,
            run::wait_limit(vr.spec.wait_timeout.as_deref()),
        );
    };
    if target.new_pvc.is_some() && !made_by(pvc, vr) {
        let mut out = fail(
            &current,
            format!(
                "target.newPVC: PVC {claim} already exists and was not created by this \
                 VolumeRestore; name a new claim, or restore into it with target.pvc"
            ),
            now,
        );
        out.extend(cleanup(&names, obs, false));
        return out;
    }
    // Fail closed: the volume is handed over only after an explicit "no snapshot" or a
    // restore the mover itself reported as succeeded.
    let result = run::job_result(current.result.as_ref(), obs.termination.as_deref());
    let restored = restore_done
        && result
            .as_ref()
            .is_some_and(|r| r.outcome == MoverOutcome::Succeeded);
    if populator && (resolved.no_snapshot || restored) {
        if let Some(actions) = hand_over(obs, &current, &claim, now) {
            return actions;
        }
    }
    if resolved.no_snapshot {
        let mut next = run::with_phase(
            &current,
            RunPhase::Completed,
            Some(if populator {
                format!("no snapshot matches the selection; PVC {shown} starts empty")
            } else {
                "no snapshot matches the selection; the volume was left as it was".into()
            }),
            now,
        );
        next.result = Some(crate::api::common::MoverResult {
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
            if current.phase != RunPhase::InProgress {
                out.push(Action::Event {
                    warning: false,
                    reason: "RestoreStarted".into(),
                    note: format!(
                        "Job {} restores from Repository {}",
                        names.job, vr.spec.repository
                    ),
                });
            }
            let next = run::with_phase(&current, RunPhase::InProgress, None, now);
            patch(&current, &next, &mut out);
        }
        JobState::Running => {
            let next = run::with_phase(&current, RunPhase::InProgress, None, now);
            patch(&current, &next, &mut out);
        }
        JobState::Succeeded | JobState::Failed(_) => {
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
                next = run::with_warnings(&next, &r.warnings, now);
                if current.result.is_none() {
                    next.result = Some(r.clone());
                }
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
                        "snapshot {} restored into PVC {shown}",
                        r.snapshot_id.unwrap_or_default()
                    ),
                });
                out.extend(cleanup(&names, obs, true));
            } else {
                let why = failed.unwrap_or_else(|| "the mover Job ended without a result".into());
                let message =
                    run::failure_message(result.as_ref(), obs.termination.as_deref(), &why);
                out.extend(run::with_error_class(
                    fail(&current, message, now),
                    result.as_ref(),
                ));
                out.extend(cleanup(&names, obs, false));
            }
        }
    }
    out
}

/// Populator mode, once the prime claim holds the data (or, for an explicit "no snapshot",
/// nothing): its volume is pre-bound to the populating claim, and the run goes on once the
/// PV names that claim. `None` when the hand-over is done and the run may finish.
fn hand_over(obs: &Observed, current: &RunStatus, prime: &str, now: &Time) -> Option<Vec<Action>> {
    let populating = obs.populating.as_ref()?;
    let mut out = Vec::new();
    let Some(pv) = &obs.prime_volume else {
        let next = run::with_phase(
            current,
            RunPhase::InProgress,
            Some(format!("waiting for PVC {prime} to be bound")),
            now,
        );
        patch(current, &next, &mut out);
        return Some(out);
    };
    let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let handed = claim_ref.is_some_and(|r| {
        r.name.as_deref() == Some(populating.name_any().as_str()) && r.uid == populating.uid()
    });
    if handed {
        return None;
    }
    out.push(Action::RebindVolume {
        volume: pv.name_any(),
        claim: populating.name_any(),
        claim_uid: populating.uid().unwrap_or_default(),
    });
    let next = run::with_phase(
        current,
        RunPhase::InProgress,
        Some(format!(
            "handing volume {} to PVC {}",
            pv.name_any(),
            populating.name_any()
        )),
        now,
    );
    patch(current, &next, &mut out);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::VolumeRestoreSpec;
    use crate::api::common::{MoverResult, ResolvedSnapshot};
    use crate::api::repository::{RepositoryPhase, RepositorySpec, RepositoryStatus};
    use crate::api::restore::{RestoreSource, RestoreTarget};

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
                wait_timeout: None,
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
                secret_ref: crate::api::common::LocalObjectReference { name: "s".into() },
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

    fn claim(name: &str, uid: &str, volume: Option<&str>) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: Some("fast".into()),
                volume_name: volume.map(String::from),
                data_source_ref: Some(k8s_openapi::api::core::v1::TypedObjectReference {
                    api_group: Some("mover.dev".into()),
                    kind: "VolumeRestore".into(),
                    name: "r1".into(),
                    namespace: None,
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn volume(claim: &str, uid: &str) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some("pv-1".into()),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::core::v1::PersistentVolumeSpec {
                claim_ref: Some(k8s_openapi::api::core::v1::ObjectReference {
                    name: Some(claim.into()),
                    uid: Some(uid.into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn finished_job(ok: bool) -> Job {
        Job {
            status: Some(k8s_openapi::api::batch::v1::JobStatus {
                conditions: Some(vec![k8s_openapi::api::batch::v1::JobCondition {
                    type_: if ok { "Complete" } else { "Failed" }.into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn as_a_populator_the_data_lands_in_a_prime_claim_whose_volume_is_handed_over() {
        let mut vr = restore(RestoreTarget::default());
        vr.spec.target = None;
        vr.status.as_mut().unwrap().resolved = Some(ResolvedSnapshot {
            snapshot_id: Some("abc".into()),
            ..Default::default()
        });
        let asking = claim("filled", "u-filled", None);
        assert!(populates(&asking, "r1") && !populates(&asking, "r2"));
        let mut obs = Observed {
            repository: Some(repo()),
            populating: Some(asking),
            ..Default::default()
        };
        // First the prime claim, like the one that asked, owned by the run.
        let a = plan(&vr, &obs, "img", &now());
        let prime = a
            .iter()
            .find_map(|x| match x {
                Action::CreatePvc(p) => Some(p.clone()),
                _ => None,
            })
            .expect("a prime claim");
        assert_eq!(prime.name_any(), "mover-prime-r1");
        let spec = prime.spec.clone().unwrap();
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert!(spec.data_source_ref.is_none());
        assert_eq!(prime.metadata.owner_references.unwrap()[0].uid, "u");

        // The restore Job writes into the prime claim.
        obs.target = Some(claim("mover-prime-r1", "u-prime", Some("pv-1")));
        obs.prime_volume = Some(volume("mover-prime-r1", "u-prime"));
        let a = plan(&vr, &obs, "img", &now());
        assert!(a.iter().any(|x| matches!(x, Action::CreateJob { job, .. }
            if job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().volumes.as_ref().unwrap()
                .iter().any(|v| v.persistent_volume_claim.as_ref()
                    .is_some_and(|c| c.claim_name == "mover-prime-r1")))));

        // A failed restore fails closed: no hand-over, the prime goes.
        obs.job = Some(finished_job(false));
        let a = plan(&vr, &obs, "img", &now());
        assert!(!a.iter().any(|x| matches!(x, Action::RebindVolume { .. })));
        assert!(
            a.iter()
                .any(|x| matches!(x, Action::DeletePvc(n) if n == "mover-prime-r1"))
        );

        // A job that succeeded without the mover's own success is not trusted either.
        obs.job = Some(finished_job(true));
        let a = plan(&vr, &obs, "img", &now());
        assert!(!a.iter().any(|x| matches!(x, Action::RebindVolume { .. })));

        // Success: the volume is pre-bound to the asking claim, then the run completes.
        vr.status.as_mut().unwrap().result = Some(crate::api::MoverResult {
            outcome: MoverOutcome::Succeeded,
            snapshot_id: Some("abc".into()),
            ..Default::default()
        });
        let a = plan(&vr, &obs, "img", &now());
        assert!(a.iter().any(
            |x| matches!(x, Action::RebindVolume { volume, claim, claim_uid }
            if volume == "pv-1" && claim == "filled" && claim_uid == "u-filled")
        ));
        assert!(!a.iter().any(|x| matches!(x, Action::DeletePvc(_))));
        obs.prime_volume = Some(volume("filled", "u-filled"));
        let a = plan(&vr, &obs, "img", &now());
        let Action::PatchStatus(p) = &a[0] else {
            panic!("{a:?}")
        };
        assert_eq!(p["phase"], "Completed");
        assert!(
            a.iter()
                .any(|x| matches!(x, Action::DeletePvc(n) if n == "mover-prime-r1"))
        );
    }

    #[test]
    fn on_a_wait_for_first_consumer_class_the_prime_claim_follows_the_chosen_node() {
        let mut vr = restore(RestoreTarget::default());
        vr.spec.target = None;
        vr.status.as_mut().unwrap().resolved = Some(ResolvedSnapshot {
            no_snapshot: true,
            ..Default::default()
        });
        let mut asking = claim("filled", "u-filled", None);
        let mut obs = Observed {
            repository: Some(repo()),
            populating: Some(asking.clone()),
            populating_waits_for_consumer: true,
            ..Default::default()
        };
        // No pod uses the claim yet: nothing is made, and the run says what it waits for.
        let a = plan(&vr, &obs, "img", &now());
        assert!(
            !a.iter().any(|x| matches!(x, Action::CreatePvc(_))),
            "{a:?}"
        );
        let Action::PatchStatus(p) = &a[0] else {
            panic!("{a:?}")
        };
        assert!(
            p["message"]
                .as_str()
                .unwrap()
                .contains("WaitForFirstConsumer"),
            "{p}"
        );
        // The scheduler chose a node for the claim's pod: the prime claim goes there too.
        asking.metadata.annotations = Some(BTreeMap::from([(
            SELECTED_NODE.to_string(),
            "node-7".to_string(),
        )]));
        obs.populating = Some(asking);
        let a = plan(&vr, &obs, "img", &now());
        let prime = a
            .iter()
            .find_map(|x| match x {
                Action::CreatePvc(p) => Some(p.clone()),
                _ => None,
            })
            .expect("a prime claim");
        assert_eq!(
            prime.annotations().get(SELECTED_NODE).map(String::as_str),
            Some("node-7")
        );
    }

    #[test]
    fn capacity_defaults_to_the_snapshot_size_with_room() {
        assert_eq!(default_capacity(0, 0, false).0, "1024Mi");
        assert_eq!(default_capacity(10 * GIB, 0, false).0, "11264Mi");
        assert_eq!(default_capacity(64 * MIB, 1, true).0, "64Mi");
        assert_eq!(default_capacity(64 * MIB + 1, 1, true).0, "65Mi");
        // A million 100-byte files: the blocks and inodes they take, not their bytes.
        let many = default_capacity(100_000_000, 1_000_000, false);
        let mib: u64 = many.0.trim_end_matches("Mi").parse().unwrap();
        assert!(mib * MIB >= 4 * GIB, "{}", many.0);
        assert!(mib * MIB >= 1_000_000 * 16384, "{}", many.0);
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

    fn new_pvc_restore() -> VolumeRestore {
        let mut vr = restore(RestoreTarget {
            pvc: None,
            new_pvc: Some(NewPvc {
                name: "restored".into(),
                ..Default::default()
            }),
        });
        vr.status.as_mut().unwrap().resolved = Some(ResolvedSnapshot {
            snapshot_id: Some("abc".into()),
            size_bytes: GIB,
            ..Default::default()
        });
        vr
    }

    #[test]
    fn a_new_pvc_that_exists_and_is_not_ours_fails_and_is_left_alone() {
        let vr = new_pvc_restore();
        let mut theirs = claim("restored", "u-theirs", Some("pv-9"));
        theirs.spec.as_mut().unwrap().data_source_ref = None;
        let obs = Observed {
            repository: Some(repo()),
            target: Some(theirs),
            ..Default::default()
        };
        let a = plan(&vr, &obs, "img", &now());
        let Action::PatchStatus(p) = &a[0] else {
            panic!("{a:?}")
        };
        assert_eq!(p["phase"], "Failed");
        assert!(p["message"].as_str().unwrap().contains("already exists"));
        assert!(a.iter().all(|x| !matches!(
            x,
            Action::CreateJob { .. } | Action::DeletePvc(_) | Action::CreatePvc(_)
        )));
        // The claim this restore made itself carries its labels and is restored into.
        let ours = new_claim(
            &vr,
            vr.spec.target.as_ref().unwrap().new_pvc.as_ref().unwrap(),
            vr.status.as_ref().unwrap(),
        );
        let obs = Observed {
            repository: Some(repo()),
            target: Some(ours),
            ..Default::default()
        };
        let a = plan(&vr, &obs, "img", &now());
        assert!(
            a.iter().any(|x| matches!(x, Action::CreateJob { .. })),
            "{a:?}"
        );
    }

    #[test]
    fn a_cancel_after_the_restore_succeeded_completes() {
        let mut vr = new_pvc_restore();
        vr.spec.cancel = true;
        let status = vr.status.as_mut().unwrap();
        status.phase = RunPhase::InProgress;
        let ours = new_claim(
            &vr,
            vr.spec.target.as_ref().unwrap().new_pvc.as_ref().unwrap(),
            vr.status.as_ref().unwrap(),
        );
        let done = MoverResult {
            outcome: MoverOutcome::Succeeded,
            snapshot_id: Some("abc".into()),
            ..Default::default()
        };
        // The result is read from the termination message: the status write was lost.
        let obs = Observed {
            repository: Some(repo()),
            target: Some(ours),
            job: Some(finished_job(true)),
            termination: Some(serde_json::to_string(&done).unwrap()),
            ..Default::default()
        };
        let a = plan(&vr, &obs, "img", &now());
        let Action::PatchStatus(p) = &a[0] else {
            panic!("{a:?}")
        };
        assert_eq!(p["phase"], "Completed");
        assert_eq!(p["snapshotID"], "abc");
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
