//! VolumeBackup: the plan (pure: what the controller observed in, actions out) and the
//! reconcile that gathers the observations and applies the plan.
//!
//! A run goes New → Preparing (snapshot the PVC, clone it into a temporary PVC) →
//! InProgress (the mover Job backs the clone up and writes progress and its result into
//! the status) → Completed or Failed, and Canceling → Canceled when `spec.cancel` is set.
//! Temporary objects go in every outcome; a finalizer forgets the restic snapshot on
//! deletion when `deletionPolicy: Delete`.

use crate::api::common::{MoverOutcome, RunPhase, RunResources, RunStatus};
use crate::api::snapshot::{VolumeSnapshot, VolumeSnapshotSource, VolumeSnapshotSpec};
use crate::api::{CopyMethod, DeletionPolicy, Repository, VolumeBackup};
use crate::controller::apply::Action;
use crate::names;
use crate::plans::jobspec::{self, JobParams, VolumeAttach};
use crate::plans::repository::{RepoView, repo_view};
use crate::plans::run::{self, JobState};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, TypedLocalObjectReference,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// What the controller saw for one VolumeBackup.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub repository: Option<Repository>,
    pub source_pvc: Option<PersistentVolumeClaim>,
    /// The VolumeSnapshot the clone is made from (ours, or the one the spec names).
    pub snapshot: Option<VolumeSnapshot>,
    pub clone: Option<PersistentVolumeClaim>,
    pub job: Option<Job>,
    /// The termination message of the Job's last finished pod.
    pub termination: Option<String>,
    /// Why the Job cannot create its pod (an admission denial, a quota), when it never had one.
    pub job_blocked: Option<String>,
    /// The node of a running pod that mounts the source claim (for `Direct`).
    pub source_node: Option<String>,
    pub forget_job: Option<Job>,
    /// A Job with the run's name that belongs to another object (an earlier VolumeBackup of
    /// the same name, still being garbage-collected): never adopted, waited out.
    pub foreign_job: bool,
    /// The VolumeBackup's namespace is being deleted.
    pub namespace_terminating: bool,
}

/// The controller's knobs that plans need.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The image of mover Jobs.
    pub image: String,
}

/// Names of a run's objects; stable, so a restarted controller finds them.
pub struct RunNames {
    pub snapshot: String,
    pub clone: String,
    pub job: String,
    pub forget_job: String,
    pub access: String,
}

pub fn run_names(vb: &VolumeBackup) -> RunNames {
    let name = vb.name_any();
    RunNames {
        snapshot: names::object_name("backup", &name),
        clone: names::object_name("backup", &name),
        job: names::job_name("backup", &name),
        forget_job: names::job_name("forget", &name),
        access: names::object_name("backup", &name),
    }
}

fn owner(vb: &VolumeBackup) -> OwnerReference {
    // A VolumeBackup read from the API server has a name and uid.
    vb.controller_owner_ref(&()).unwrap_or_default()
}

fn labels(vb: &VolumeBackup, role: &str) -> BTreeMap<String, String> {
    names::owned_labels(
        "VolumeBackup",
        &vb.name_any(),
        Some(&vb.spec.repository),
        role,
    )
}

fn meta(vb: &VolumeBackup, name: &str, role: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: vb.namespace(),
        labels: Some(labels(vb, role)),
        owner_references: Some(vec![owner(vb)]),
        ..Default::default()
    }
}

/// The restic host of the run's snapshots.
pub fn host(vb: &VolumeBackup) -> String {
    if let Some(h) = vb.spec.host.as_ref().filter(|h| !h.is_empty()) {
        return h.clone();
    }
    let ns = vb.namespace().unwrap_or_default();
    let source = vb
        .spec
        .source
        .pvc
        .clone()
        .or_else(|| vb.spec.source.volume_snapshot.clone())
        .unwrap_or_default();
    format!("{ns}-{source}")
}

fn is_block(pvc: Option<&PersistentVolumeClaim>) -> bool {
    pvc.and_then(|p| p.spec.as_ref())
        .and_then(|s| s.volume_mode.as_deref())
        == Some("Block")
}

fn pvc_bound(pvc: &PersistentVolumeClaim) -> bool {
    pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
}

fn capacity(pvc: &PersistentVolumeClaim) -> Option<Quantity> {
    let status = pvc
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage").cloned());
    status.or_else(|| {
        pvc.spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage").cloned())
    })
}

/// The temporary claim the mover reads, cloned from a snapshot or from the source claim.
fn clone_claim(
    vb: &VolumeBackup,
    names: &RunNames,
    source: Option<&PersistentVolumeClaim>,
    snapshot: Option<&VolumeSnapshot>,
) -> PersistentVolumeClaim {
    let size = snapshot
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.restore_size.clone())
        .or_else(|| source.and_then(capacity))
        .unwrap_or_else(|| Quantity("1Gi".into()));
    let data_source = match snapshot {
        Some(s) => TypedLocalObjectReference {
            api_group: Some("snapshot.storage.k8s.io".into()),
            kind: "VolumeSnapshot".into(),
            name: s.name_any(),
        },
        None => TypedLocalObjectReference {
            api_group: None,
            kind: "PersistentVolumeClaim".into(),
            name: source.map(|p| p.name_any()).unwrap_or_default(),
        },
    };
    let storage_class = vb.spec.storage_class_name.clone().or_else(|| {
        source
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.storage_class_name.clone())
    });
    PersistentVolumeClaim {
        metadata: meta(vb, &names.clone, "backup"),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage_class,
            volume_mode: Some(
                if is_block(source) {
                    "Block"
                } else {
                    "Filesystem"
                }
                .into(),
            ),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), size)])),
                ..Default::default()
            }),
            data_source: Some(data_source),
            ..Default::default()
        }),
        status: None,
    }
}

fn temporaries(names: &RunNames, obs: &Observed, delete_job: bool) -> Vec<Action> {
    let mut out = Vec::new();
    if delete_job && obs.job.is_some() {
        out.push(Action::DeleteJob(names.job.clone()));
    }
    if obs.clone.is_some() {
        out.push(Action::DeletePvc(names.clone.clone()));
    }
    if obs
        .snapshot
        .as_ref()
        .is_some_and(|s| s.name_any() == names.snapshot)
    {
        out.push(Action::DeleteSnapshot(names.snapshot.clone()));
    }
    out
}

fn has_finalizer(vb: &VolumeBackup) -> bool {
    vb.finalizers().iter().any(|f| f == names::FINALIZER)
}

fn patch(current: &RunStatus, next: &RunStatus, actions: &mut Vec<Action>) {
    if let Some(p) = run::status_patch(current, next) {
        actions.push(Action::PatchStatus(p));
    }
}

fn fail(current: &RunStatus, message: String, now: &Time) -> Vec<Action> {
    let next = run::with_phase(current, RunPhase::Failed, Some(message.clone()), now);
    let mut out = Vec::new();
    patch(current, &next, &mut out);
    out.push(Action::Event {
        warning: true,
        reason: "BackupFailed".into(),
        note: message,
    });
    out
}

/// Waits (phase Preparing with `message`) or fails once the run has waited too long.
fn wait_or_fail(
    current: &RunStatus,
    message: String,
    now: &Time,
    limit: std::time::Duration,
) -> Vec<Action> {
    run::wait_or_fail(current, message, now, limit, |m| fail(current, m, now))
}

/// The parts of a Job that differ between the steps of one run.
struct JobRequest<'a> {
    role: &'a str,
    name: &'a str,
    args: Vec<String>,
    volume: VolumeAttach,
    node: Option<String>,
}

fn job_params(
    vb: &VolumeBackup,
    names: &RunNames,
    settings: &Settings,
    repo: &RepoView,
    req: JobRequest<'_>,
) -> JobParams {
    JobParams {
        name: req.name.to_string(),
        namespace: vb.namespace().unwrap_or_default(),
        image: settings.image.clone(),
        args: req.args,
        repo: repo.access.clone(),
        volume: req.volume,
        service_account: names.access.clone(),
        mover: vb.spec.mover.clone().unwrap_or_default(),
        owner: owner(vb),
        labels: labels(vb, req.role),
        node_name: req.node,
        backoff_limit: 1,
    }
}

/// The plan for one VolumeBackup.
pub fn plan(vb: &VolumeBackup, obs: &Observed, settings: &Settings, now: &Time) -> Vec<Action> {
    let names = run_names(vb);
    let current = vb.status.clone().unwrap_or_default();
    if vb.meta().deletion_timestamp.is_some() {
        return plan_deletion(vb, obs, settings, &names);
    }
    if vb.spec.deletion_policy == DeletionPolicy::Delete && !has_finalizer(vb) {
        return vec![Action::AddFinalizer];
    }
    match current.phase {
        RunPhase::Completed | RunPhase::Failed | RunPhase::Canceled => {
            // A failed Job stays (for its logs) until the VolumeBackup goes.
            let delete_job = current.phase != RunPhase::Failed;
            return temporaries(&names, obs, delete_job);
        }
        RunPhase::New | RunPhase::Preparing | RunPhase::InProgress | RunPhase::Canceling => {}
    }
    // A saved snapshot decides the outcome before anything else: a cancel that arrives
    // after the Job succeeded, or a Job that is gone once its result was recorded, still
    // ends Completed with the snapshot id, and never starts a second Job.
    let job = run::job_state(obs.job.as_ref());
    let result = run::job_result(current.result.as_ref(), obs.termination.as_deref());
    if job == JobState::Succeeded
        || (job == JobState::Absent && run::saved_snapshot(result.as_ref()))
    {
        return plan_finished(vb, &current, &names, obs, None, now);
    }
    if vb.spec.cancel || current.phase == RunPhase::Canceling {
        return plan_cancel(&current, &names, obs, now);
    }
    // Admission checks retention's shape; the plan checks it as the engine reads it, before
    // any snapshot is taken, so a policy the engine refuses never fails a saved backup.
    if job == JobState::Absent {
        if let Some(Err(e)) = vb.spec.retention.as_ref().map(|r| r.keep_policy()) {
            return fail(&current, e, now);
        }
    }
    if current.phase == RunPhase::New || current.start_time.is_none() {
        let mut next = run::with_phase(&current, RunPhase::Preparing, None, now);
        next.start_time = Some(now.clone());
        next.observed_generation = vb.meta().generation;
        next.resources = Some(RunResources {
            volume_snapshot: (vb.spec.copy_method == CopyMethod::Snapshot
                && vb.spec.source.pvc.is_some())
            .then(|| names.snapshot.clone()),
            pvc: (vb.spec.copy_method != CopyMethod::Direct || vb.spec.source.pvc.is_none())
                .then(|| names.clone.clone()),
            job: Some(names.job.clone()),
        });
        let mut out = Vec::new();
        patch(&current, &next, &mut out);
        return out;
    }
    match job {
        // A failure the mover recorded with its Job gone (deleted by hand, or by TTL)
        // ends the run; it does not start the backup again.
        JobState::Absent
            if result
                .as_ref()
                .is_some_and(|r| r.outcome != MoverOutcome::Succeeded) =>
        {
            plan_finished(
                vb,
                &current,
                &names,
                obs,
                Some("the mover Job is gone".into()),
                now,
            )
        }
        JobState::Absent if obs.foreign_job => wait_or_fail(
            &current,
            format!(
                "Job {} of an earlier VolumeBackup of this name is still being deleted",
                names.job
            ),
            now,
            run::wait_limit(vb.spec.wait_timeout.as_deref()),
        ),
        JobState::Absent => plan_prepare(vb, &current, &names, obs, settings, now),
        JobState::Running if obs.job_blocked.is_some() => {
            let why = obs.job_blocked.clone().unwrap_or_default();
            let mut out = fail(
                &current,
                format!("the mover pod cannot be created: {why}"),
                now,
            );
            out.extend(temporaries(&names, obs, true));
            out
        }
        JobState::Running => {
            let next = run::with_phase(&current, RunPhase::InProgress, None, now);
            let mut out = Vec::new();
            patch(&current, &next, &mut out);
            out
        }
        JobState::Succeeded => plan_finished(vb, &current, &names, obs, None, now),
        JobState::Failed(why) => plan_finished(vb, &current, &names, obs, Some(why), now),
    }
}

fn plan_cancel(current: &RunStatus, names: &RunNames, obs: &Observed, now: &Time) -> Vec<Action> {
    let mut out = Vec::new();
    if matches!(run::job_state(obs.job.as_ref()), JobState::Running) {
        // Deleting the Job deletes its pod: the mover gets SIGTERM, removes its lock and
        // exits without writing a snapshot.
        out.push(Action::DeleteJob(names.job.clone()));
        let next = run::with_phase(current, RunPhase::Canceling, Some("canceling".into()), now);
        patch(current, &next, &mut out);
        return out;
    }
    let next = run::with_phase(
        current,
        RunPhase::Canceled,
        Some("canceled by spec.cancel".into()),
        now,
    );
    patch(current, &next, &mut out);
    out.push(Action::Event {
        warning: false,
        reason: "BackupCanceled".into(),
        note: "canceled by spec.cancel".into(),
    });
    out.extend(temporaries(names, obs, true));
    out
}

fn plan_prepare(
    vb: &VolumeBackup,
    current: &RunStatus,
    names: &RunNames,
    obs: &Observed,
    settings: &Settings,
    now: &Time,
) -> Vec<Action> {
    let repo_name = &vb.spec.repository;
    let repo = match repo_view(obs.repository.as_ref(), repo_name) {
        Ok(r) => r,
        Err(crate::plans::repository::NotReady::Waiting(m)) => {
            return wait_or_fail(
                current,
                m,
                now,
                run::wait_limit(vb.spec.wait_timeout.as_deref()),
            );
        }
        Err(crate::plans::repository::NotReady::Failed(m)) => return fail(current, m, now),
    };
    let mut out = Vec::new();
    let snapshot_source = match (&vb.spec.source.pvc, &vb.spec.source.volume_snapshot) {
        (Some(pvc), _) => {
            let Some(source) = &obs.source_pvc else {
                return wait_or_fail(
                    current,
                    format!("PVC {pvc} not found"),
                    now,
                    run::wait_limit(vb.spec.wait_timeout.as_deref()),
                );
            };
            if !pvc_bound(source) {
                return wait_or_fail(
                    current,
                    format!("PVC {pvc} is not bound"),
                    now,
                    run::wait_limit(vb.spec.wait_timeout.as_deref()),
                );
            }
            match vb.spec.copy_method {
                CopyMethod::Direct => {
                    let volume = if is_block(Some(source)) {
                        VolumeAttach::Block { claim: pvc.clone() }
                    } else {
                        VolumeAttach::Filesystem {
                            claim: pvc.clone(),
                            read_only: true,
                        }
                    };
                    return start_job(
                        vb,
                        current,
                        names,
                        settings,
                        &repo,
                        volume,
                        obs.source_node.clone(),
                        now,
                    );
                }
                CopyMethod::Clone => None,
                CopyMethod::Snapshot => Some(names.snapshot.clone()),
            }
        }
        (None, Some(snap)) => Some(snap.clone()),
        (None, None) => {
            return fail(
                current,
                "spec.source names neither a PVC nor a VolumeSnapshot".into(),
                now,
            );
        }
    };
    if let Some(snapshot_name) = &snapshot_source {
        let Some(snap) = &obs.snapshot else {
            if *snapshot_name == names.snapshot {
                out.push(Action::CreateSnapshot(Box::new(VolumeSnapshot {
                    metadata: meta(vb, &names.snapshot, "backup"),
                    spec: VolumeSnapshotSpec {
                        source: VolumeSnapshotSource {
                            persistent_volume_claim_name: vb.spec.source.pvc.clone(),
                            volume_snapshot_content_name: None,
                        },
                        volume_snapshot_class_name: vb.spec.volume_snapshot_class_name.clone(),
                    },
                    status: None,
                })));
                let next = run::with_phase(
                    current,
                    RunPhase::Preparing,
                    Some(format!("waiting for VolumeSnapshot {snapshot_name}")),
                    now,
                );
                patch(current, &next, &mut out);
                return out;
            }
            return wait_or_fail(
                current,
                format!("VolumeSnapshot {snapshot_name} not found"),
                now,
                run::wait_limit(vb.spec.wait_timeout.as_deref()),
            );
        };
        let status = snap.status.clone().unwrap_or_default();
        if let Some(err) = status.error.as_ref().and_then(|e| e.message.clone()) {
            return fail(
                current,
                format!("VolumeSnapshot {snapshot_name} failed: {err}"),
                now,
            );
        }
        if status.ready_to_use != Some(true) {
            return wait_or_fail(
                current,
                format!("VolumeSnapshot {snapshot_name} is not ready to use"),
                now,
                run::wait_limit(vb.spec.wait_timeout.as_deref()),
            );
        }
    }
    if obs.clone.is_none() {
        let snapshot = snapshot_source.as_ref().and(obs.snapshot.as_ref());
        out.push(Action::CreatePvc(Box::new(clone_claim(
            vb,
            names,
            obs.source_pvc.as_ref(),
            snapshot,
        ))));
    }
    let block = match &obs.clone {
        Some(c) => is_block(Some(c)),
        None => is_block(obs.source_pvc.as_ref()),
    };
    let volume = if block {
        VolumeAttach::Block {
            claim: names.clone.clone(),
        }
    } else {
        VolumeAttach::Filesystem {
            claim: names.clone.clone(),
            read_only: true,
        }
    };
    out.extend(start_job(
        vb, current, names, settings, &repo, volume, None, now,
    ));
    out
}

#[allow(clippy::too_many_arguments)]
fn start_job(
    vb: &VolumeBackup,
    current: &RunStatus,
    names: &RunNames,
    settings: &Settings,
    repo: &RepoView,
    volume: VolumeAttach,
    node: Option<String>,
    now: &Time,
) -> Vec<Action> {
    let mut args = vec![
        "job".to_string(),
        "backup".to_string(),
        "--host".to_string(),
        host(vb),
    ];
    match &volume {
        VolumeAttach::Block { .. } => {
            args.extend(["--device".to_string(), jobspec::DATA_DEVICE.to_string()])
        }
        _ => args.extend(["--dir".to_string(), jobspec::DATA_DIR.to_string()]),
    }
    args.push(format!("volumebackup/{}", vb.name_any()));
    let req = JobRequest {
        role: "backup",
        name: &names.job,
        args,
        volume,
        node,
    };
    let params = job_params(vb, names, settings, repo, req);
    let access = jobspec::run_access(&params, "volumebackups", &vb.name_any());
    let mut out = vec![
        Action::CreateAccess(Box::new(access)),
        Action::CreateJob {
            job: Box::new(jobspec::job(&params)),
            repository: vb.spec.repository.clone(),
            max_jobs: repo.max_jobs,
        },
    ];
    if current.phase != RunPhase::InProgress {
        out.push(Action::Event {
            warning: false,
            reason: "BackupStarted".into(),
            note: format!(
                "Job {} backs up into Repository {}",
                names.job, vb.spec.repository
            ),
        });
    }
    let next = run::with_phase(current, RunPhase::InProgress, None, now);
    patch(current, &next, &mut out);
    out
}

/// What the Repository's status learns from a completed backup: its snapshot count (as
/// the mover counted after the run), when and what the last backup was.
fn repository_update(vb: &VolumeBackup, r: &crate::api::common::MoverResult, now: &Time) -> Action {
    let id = r.snapshot_id.clone().unwrap_or_default();
    let last = format!(
        "VolumeBackup {} saved snapshot {}",
        vb.name_any(),
        &id[..id.len().min(8)]
    );
    let mut status = serde_json::json!({
        "lastBackupTime": now,
        "message": format!("ready; {last}"),
        "lastBackup": last,
    });
    if let Some(n) = r.repository_snapshots {
        status["snapshotCount"] = n.into();
    }
    if let Some(s) = &r.summary {
        status["lastBackupBytes"] = s.bytes_stored.into();
    }
    Action::PatchRepositoryStatus {
        name: vb.spec.repository.clone(),
        status,
    }
}

fn plan_finished(
    vb: &VolumeBackup,
    current: &RunStatus,
    names: &RunNames,
    obs: &Observed,
    failed: Option<String>,
    now: &Time,
) -> Vec<Action> {
    let result = run::job_result(current.result.as_ref(), obs.termination.as_deref());
    let result = result.as_ref();
    let mut out = Vec::new();
    let succeeded = failed.is_none() && run::saved_snapshot(result);
    if succeeded {
        let r = result.cloned().unwrap_or_default();
        let mut next = run::with_phase(current, RunPhase::Completed, r.message.clone(), now);
        next = run::with_warnings(&next, &r.warnings, now);
        if current.result.is_none() {
            // Read from the termination message: recorded here, so the status holds it.
            next.result = Some(r.clone());
        }
        next.snapshot_id = r.snapshot_id.clone();
        next.summary = r.summary.clone();
        if let Some(p) = next.progress.as_mut() {
            p.percent = Some("100%".into());
            if let Some(t) = p.total_bytes {
                p.bytes_done = p.bytes_done.max(t);
            }
        }
        patch(current, &next, &mut out);
        let id = r.snapshot_id.clone().unwrap_or_default();
        out.push(Action::Event {
            warning: false,
            reason: "BackupCompleted".into(),
            note: format!("snapshot {} saved", &id[..id.len().min(8)]),
        });
        out.push(repository_update(vb, &r, now));
        for w in &r.warnings {
            out.push(Action::Event {
                warning: true,
                reason: "BackupWarning".into(),
                note: w.clone(),
            });
        }
        if let Some(m) = r.message.filter(|m| m.contains("stale lock")) {
            out.push(Action::Event {
                warning: true,
                reason: "StaleLocksRemoved".into(),
                note: m,
            });
        }
        out.extend(temporaries(names, obs, true));
        return out;
    }
    let why = failed.unwrap_or_else(|| "the mover Job ended without reporting a snapshot".into());
    let message = run::failure_message(result, obs.termination.as_deref(), &why);
    out.extend(run::with_error_class(fail(current, message, now), result));
    out.extend(temporaries(names, obs, false));
    out
}

fn plan_deletion(
    vb: &VolumeBackup,
    obs: &Observed,
    settings: &Settings,
    names: &RunNames,
) -> Vec<Action> {
    let mut out = temporaries(names, obs, true);
    if !has_finalizer(vb) {
        return out;
    }
    let status = vb.status.clone().unwrap_or_default();
    let forget = vb.spec.deletion_policy == DeletionPolicy::Delete && status.snapshot_id.is_some();
    if !forget {
        out.push(Action::RemoveFinalizer);
        return out;
    }
    // In a namespace that is going away, or with the Repository gone, no forget Job can
    // run: the snapshot is left in the repository (orphaned) rather than holding the
    // namespace's deletion forever; `mover forget ID` removes it by hand.
    let orphan = if obs.namespace_terminating {
        Some("its namespace is being deleted")
    } else if obs.repository.is_none() {
        Some("its Repository is gone")
    } else {
        None
    };
    if let (Some(why), JobState::Absent) = (orphan, run::job_state(obs.forget_job.as_ref())) {
        out.push(Action::Event {
            warning: true,
            reason: "SnapshotOrphaned".into(),
            note: format!(
                "snapshot {} stays in Repository {}: {why} (remove it with `mover forget`)",
                status.snapshot_id.unwrap_or_default(),
                vb.spec.repository
            ),
        });
        out.push(Action::RemoveFinalizer);
        return out;
    }
    match run::job_state(obs.forget_job.as_ref()) {
        JobState::Absent => {
            let Ok(repo) = repo_view(obs.repository.as_ref(), &vb.spec.repository) else {
                out.push(Action::Event {
                    warning: true,
                    reason: "ForgetWaiting".into(),
                    note: format!(
                        "Repository {} is not ready; the snapshot is forgotten once it is \
                         (set deletionPolicy: Retain to delete the VolumeBackup without it)",
                        vb.spec.repository
                    ),
                });
                return out;
            };
            let args = vec![
                "job".to_string(),
                "forget".to_string(),
                format!("volumebackup/{}", vb.name_any()),
            ];
            let req = JobRequest {
                role: "forget",
                name: &names.forget_job,
                args,
                volume: VolumeAttach::None,
                node: None,
            };
            let params = job_params(vb, names, settings, &repo, req);
            let access = jobspec::run_access(&params, "volumebackups", &vb.name_any());
            out.push(Action::CreateAccess(Box::new(access)));
            out.push(Action::CreateJob {
                job: Box::new(jobspec::job(&params)),
                repository: vb.spec.repository.clone(),
                max_jobs: repo.max_jobs,
            });
        }
        JobState::Running => {}
        JobState::Succeeded => {
            out.push(Action::Event {
                warning: false,
                reason: "SnapshotForgotten".into(),
                note: format!(
                    "snapshot {} removed from the repository",
                    status.snapshot_id.unwrap_or_default()
                ),
            });
            out.push(Action::RemoveFinalizer);
        }
        JobState::Failed(why) => {
            out.push(Action::Event {
                warning: true,
                reason: "ForgetFailed".into(),
                note: format!("{why}; retrying (set deletionPolicy: Retain to give up)"),
            });
            out.push(Action::DeleteJob(names.forget_job.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::MoverResult;
    use crate::api::repository::{RepositoryPhase, RepositorySpec, RepositoryStatus};
    use crate::api::{BackupSource, VolumeBackupSpec};
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::PersistentVolumeClaimStatus;

    fn now() -> Time {
        Time("2026-12-01T10:00:00Z".parse().unwrap())
    }

    fn backup(method: CopyMethod) -> VolumeBackup {
        let mut vb = VolumeBackup::new(
            "db",
            VolumeBackupSpec {
                source: BackupSource {
                    pvc: Some("data".into()),
                    volume_snapshot: None,
                },
                repository: "repo".into(),
                copy_method: method,
                volume_snapshot_class_name: None,
                storage_class_name: None,
                tags: vec![],
                host: None,
                retention: None,
                deletion_policy: DeletionPolicy::Retain,
                cancel: false,
                wait_timeout: None,
                mover: None,
            },
        );
        vb.metadata.namespace = Some("apps".into());
        vb.metadata.uid = Some("uid-1".into());
        vb
    }

    fn ready_repo() -> Repository {
        let mut r = Repository::new(
            "repo",
            RepositorySpec {
                secret_ref: crate::api::common::LocalObjectReference {
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

    fn bound_pvc(name: &str) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: Some("fast".into()),
                ..Default::default()
            }),
            status: Some(PersistentVolumeClaimStatus {
                phase: Some("Bound".into()),
                capacity: Some(BTreeMap::from([("storage".into(), Quantity("2Gi".into()))])),
                ..Default::default()
            }),
        }
    }

    fn settings() -> Settings {
        Settings {
            image: "mover:test".into(),
        }
    }

    fn started(mut vb: VolumeBackup) -> VolumeBackup {
        let status = plan(&vb, &Observed::default(), &settings(), &now());
        let Action::PatchStatus(p) = &status[0] else {
            panic!("{status:?}")
        };
        vb.status = Some(serde_json::from_value(p.clone()).unwrap());
        vb
    }

    fn phase_of(actions: &[Action]) -> Option<String> {
        actions.iter().find_map(|a| match a {
            Action::PatchStatus(p) => p.get("phase").and_then(|v| v.as_str()).map(String::from),
            _ => None,
        })
    }

    #[test]
    fn a_new_backup_starts_preparing_and_records_its_objects() {
        let vb = started(backup(CopyMethod::Snapshot));
        let s = vb.status.unwrap();
        assert_eq!(s.phase, RunPhase::Preparing);
        assert_eq!(s.start_time, Some(now()));
        let res = s.resources.unwrap();
        assert_eq!(res.volume_snapshot.as_deref(), Some("mover-backup-db"));
        assert_eq!(res.job.as_deref(), Some("mover-backup-db"));
    }

    #[test]
    fn snapshot_then_clone_then_job() {
        let vb = started(backup(CopyMethod::Snapshot));
        let mut obs = Observed {
            repository: Some(ready_repo()),
            source_pvc: Some(bound_pvc("data")),
            ..Default::default()
        };
        let a = plan(&vb, &obs, &settings(), &now());
        assert!(matches!(&a[0], Action::CreateSnapshot(s)
            if s.spec.source.persistent_volume_claim_name.as_deref() == Some("data")));
        let mut snap = match &a[0] {
            Action::CreateSnapshot(s) => (**s).clone(),
            _ => unreachable!(),
        };
        obs.snapshot = Some(snap.clone());
        let a = plan(&vb, &obs, &settings(), &now());
        assert!(
            a.iter().all(|x| !matches!(x, Action::CreatePvc(_))),
            "waits for readiness"
        );
        snap.status = Some(crate::api::snapshot::VolumeSnapshotStatus {
            ready_to_use: Some(true),
            restore_size: Some(Quantity("1Gi".into())),
            ..Default::default()
        });
        obs.snapshot = Some(snap);
        let a = plan(&vb, &obs, &settings(), &now());
        let clone = a.iter().find_map(|x| match x {
            Action::CreatePvc(p) => Some(p.clone()),
            _ => None,
        });
        let clone = clone.expect("a clone PVC");
        let spec = clone.spec.unwrap();
        assert_eq!(spec.data_source.unwrap().kind, "VolumeSnapshot");
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        let job = a.iter().find_map(|x| match x {
            Action::CreateJob { job, .. } => Some(job.clone()),
            _ => None,
        });
        let job = job.expect("a Job");
        let args = job.spec.unwrap().template.spec.unwrap().containers[0]
            .args
            .clone()
            .unwrap();
        assert_eq!(
            args,
            [
                "--retry-lock=10m",
                "job",
                "backup",
                "--host",
                "apps-data",
                "--dir",
                "/data",
                "volumebackup/db"
            ]
        );
        assert_eq!(phase_of(&a).as_deref(), Some("InProgress"));
    }

    #[test]
    fn waiting_for_an_unbound_pvc_fails_after_the_timeout() {
        let vb = started(backup(CopyMethod::Clone));
        let mut pvc = bound_pvc("data");
        pvc.status.as_mut().unwrap().phase = Some("Pending".into());
        let obs = Observed {
            repository: Some(ready_repo()),
            source_pvc: Some(pvc),
            ..Default::default()
        };
        let a = plan(&vb, &obs, &settings(), &now());
        // Waiting says so: a Waiting condition and a Normal Event, no warning yet.
        assert!(
            a.iter()
                .all(|x| !matches!(x, Action::Event { warning: true, .. }))
        );
        assert!(a.iter().any(
            |x| matches!(x, Action::Event { warning: false, reason, .. } if reason == "Waiting")
        ));
        let Action::PatchStatus(p) = &a[0] else {
            panic!("{a:?}")
        };
        let conditions = p["conditions"].as_array().unwrap();
        assert!(
            conditions
                .iter()
                .any(|c| c["type"] == "Waiting" && c["message"] == "PVC data is not bound"),
            "{conditions:?}"
        );
        // spec.waitTimeout stretches the wait.
        let mut patient = vb.clone();
        patient.spec.wait_timeout = Some("10m".into());
        let six = Time("2026-12-01T10:06:00Z".parse().unwrap());
        assert_ne!(
            phase_of(&plan(&patient, &obs, &settings(), &six)).as_deref(),
            Some("Failed")
        );
        let later = Time("2026-12-01T10:06:00Z".parse().unwrap());
        let a = plan(&vb, &obs, &settings(), &later);
        assert_eq!(phase_of(&a).as_deref(), Some("Failed"));
        assert!(
            a.iter()
                .any(|x| matches!(x, Action::Event { warning: true, note, .. }
            if note.contains("PVC data is not bound")))
        );
    }

    #[test]
    fn direct_mounts_the_source_read_only_on_its_node() {
        let vb = started(backup(CopyMethod::Direct));
        let obs = Observed {
            repository: Some(ready_repo()),
            source_pvc: Some(bound_pvc("data")),
            source_node: Some("node-7".into()),
            ..Default::default()
        };
        let a = plan(&vb, &obs, &settings(), &now());
        let job = a
            .iter()
            .find_map(|x| match x {
                Action::CreateJob { job, .. } => Some(job.clone()),
                _ => None,
            })
            .unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.node_name.as_deref(), Some("node-7"));
        let vol = &pod.volumes.unwrap()[1];
        let claim = vol.persistent_volume_claim.as_ref().unwrap();
        assert_eq!(claim.claim_name, "data");
        assert_eq!(claim.read_only, Some(true));
        assert!(
            a.iter()
                .all(|x| !matches!(x, Action::CreatePvc(_) | Action::CreateSnapshot(_)))
        );
    }

    fn finished_job(kind: &str) -> Job {
        Job {
            status: Some(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: kind.into(),
                    status: "True".into(),
                    message: Some("BackoffLimitExceeded".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_finished_job_completes_with_the_movers_snapshot_and_cleans_up() {
        let mut vb = started(backup(CopyMethod::Snapshot));
        let status = vb.status.as_mut().unwrap();
        status.phase = RunPhase::InProgress;
        status.result = Some(MoverResult {
            outcome: MoverOutcome::Succeeded,
            snapshot_id: Some("abcdef0123".into()),
            repository_snapshots: Some(4),
            ..Default::default()
        });
        let obs = Observed {
            job: Some(finished_job("Complete")),
            clone: Some(bound_pvc("mover-backup-db")),
            snapshot: Some(VolumeSnapshot::new("mover-backup-db", Default::default())),
            ..Default::default()
        };
        let a = plan(&vb, &obs, &settings(), &now());
        let Action::PatchStatus(p) = &a[0] else {
            panic!()
        };
        assert_eq!(p["phase"], "Completed");
        assert_eq!(p["snapshotID"], "abcdef0123");
        // The Repository learns of the backup from its result, without a Job of its own.
        let repo = a
            .iter()
            .find_map(|x| match x {
                Action::PatchRepositoryStatus { name, status } => Some((name, status)),
                _ => None,
            })
            .expect("a Repository status update");
        assert_eq!(repo.0, "repo");
        assert_eq!(repo.1["snapshotCount"], 4);
        assert!(repo.1["lastBackup"].as_str().unwrap().contains("abcdef01"));
        for expected in ["job", "pvc", "snapshot"] {
            assert!(
                a.iter().any(|x| matches!(
                    (expected, x),
                    ("job", Action::DeleteJob(_))
                        | ("pvc", Action::DeletePvc(_))
                        | ("snapshot", Action::DeleteSnapshot(_))
                )),
                "{expected} is removed: {a:?}"
            );
        }
    }

    #[test]
    fn a_retention_the_engine_refuses_fails_the_run_before_any_job() {
        let mut vb = backup(CopyMethod::Snapshot);
        vb.spec.retention = Some(crate::api::common::RetentionPolicy {
            keep_within: Some("7x".into()),
            ..Default::default()
        });
        let obs = Observed {
            repository: Some(ready_repo()),
            source_pvc: Some(bound_pvc("data")),
            ..Default::default()
        };
        let a = plan(&vb, &obs, &settings(), &now());
        assert!(a.iter().all(|x| !matches!(x, Action::CreateSnapshot(_))));
        assert_eq!(phase_of(&a).as_deref(), Some("Failed"));
        let message = a.iter().find_map(|x| match x {
            Action::PatchStatus(p) => p.get("message").and_then(|m| m.as_str()).map(String::from),
            _ => None,
        });
        assert!(message.unwrap().contains("--keep-within"));
    }

    #[test]
    fn a_failed_job_fails_with_the_movers_message_and_keeps_the_job() {
        let mut vb = started(backup(CopyMethod::Snapshot));
        let status = vb.status.as_mut().unwrap();
        status.phase = RunPhase::InProgress;
        status.result = Some(MoverResult {
            outcome: MoverOutcome::Failed,
            message: Some("wrong password or no key found in s3:bucket".into()),
            ..Default::default()
        });
        let obs = Observed {
            job: Some(finished_job("Failed")),
            ..Default::default()
        };
        let a = plan(&vb, &obs, &settings(), &now());
        let Action::PatchStatus(p) = &a[0] else {
            panic!()
        };
        assert_eq!(p["phase"], "Failed");
        assert_eq!(p["message"], "wrong password or no key found in s3:bucket");
        assert!(a.iter().all(|x| !matches!(x, Action::DeleteJob(_))));
        assert!(
            a.iter()
                .any(|x| matches!(x, Action::Event { warning: true, .. }))
        );
    }

    fn saved(id: &str) -> MoverResult {
        MoverResult {
            outcome: MoverOutcome::Succeeded,
            snapshot_id: Some(id.into()),
            ..Default::default()
        }
    }

    fn in_progress() -> VolumeBackup {
        let mut vb = started(backup(CopyMethod::Snapshot));
        vb.status.as_mut().unwrap().phase = RunPhase::InProgress;
        vb
    }

    #[test]
    fn a_lost_status_write_is_read_from_the_termination_message() {
        let vb = in_progress();
        let obs = Observed {
            job: Some(finished_job("Complete")),
            termination: Some(serde_json::to_string(&saved("feedbeef01")).unwrap()),
            ..Default::default()
        };
        let a = plan(&vb, &obs, &settings(), &now());
        let Action::PatchStatus(p) = &a[0] else {
            panic!("{a:?}")
        };
        assert_eq!(p["phase"], "Completed");
        assert_eq!(p["snapshotID"], "feedbeef01");
        assert_eq!(
            p["result"]["snapshotID"], "feedbeef01",
            "recorded in the status"
        );
    }

    #[test]
    fn a_recorded_snapshot_with_the_job_gone_completes_and_never_runs_again() {
        let mut vb = in_progress();
        vb.status.as_mut().unwrap().result = Some(saved("feedbeef01"));
        let obs = Observed {
            repository: Some(ready_repo()),
            source_pvc: Some(bound_pvc("data")),
            ..Default::default()
        };
        let a = plan(&vb, &obs, &settings(), &now());
        assert!(
            a.iter().all(|x| !matches!(x, Action::CreateJob { .. })),
            "{a:?}"
        );
        assert_eq!(phase_of(&a).as_deref(), Some("Completed"));
        // A recorded failure with its Job gone ends Failed, without a second Job either.
        vb.status.as_mut().unwrap().result = Some(MoverResult {
            outcome: MoverOutcome::Failed,
            message: Some("wrong password or no key found".into()),
            ..Default::default()
        });
        let a = plan(&vb, &obs, &settings(), &now());
        assert!(a.iter().all(|x| !matches!(x, Action::CreateJob { .. })));
        assert_eq!(phase_of(&a).as_deref(), Some("Failed"));
    }

    #[test]
    fn a_job_of_an_earlier_object_is_waited_out_not_adopted() {
        let vb = in_progress();
        let obs = Observed {
            repository: Some(ready_repo()),
            source_pvc: Some(bound_pvc("data")),
            foreign_job: true,
            ..Default::default()
        };
        let a = plan(&vb, &obs, &settings(), &now());
        assert!(
            a.iter().all(|x| !matches!(x, Action::CreateJob { .. })),
            "{a:?}"
        );
        assert_eq!(phase_of(&a).as_deref(), Some("Preparing"));
    }

    #[test]
    fn deleting_in_a_terminating_namespace_lets_the_finalizer_go() {
        let mut vb = backup(CopyMethod::Snapshot);
        vb.spec.deletion_policy = DeletionPolicy::Delete;
        vb.metadata.finalizers = Some(vec![names::FINALIZER.to_string()]);
        vb.metadata.deletion_timestamp = Some(now());
        vb.status = Some(RunStatus {
            phase: RunPhase::Completed,
            snapshot_id: Some("feedbeef01".into()),
            ..Default::default()
        });
        let obs = Observed {
            repository: Some(ready_repo()),
            namespace_terminating: true,
            ..Default::default()
        };
        let a = plan(&vb, &obs, &settings(), &now());
        assert!(
            a.iter().any(|x| matches!(x, Action::RemoveFinalizer)),
            "{a:?}"
        );
        assert!(a.iter().all(|x| !matches!(x, Action::CreateJob { .. })));
        assert!(
            a.iter()
                .any(|x| matches!(x, Action::Event { reason, .. } if reason == "SnapshotOrphaned"))
        );
    }

    #[test]
    fn a_cancel_after_success_completes_with_the_snapshot() {
        let mut vb = in_progress();
        vb.spec.cancel = true;
        vb.status.as_mut().unwrap().result = Some(saved("feedbeef01"));
        let obs = Observed {
            job: Some(finished_job("Complete")),
            ..Default::default()
        };
        let a = plan(&vb, &obs, &settings(), &now());
        let Action::PatchStatus(p) = &a[0] else {
            panic!("{a:?}")
        };
        assert_eq!(p["phase"], "Completed");
        assert_eq!(p["snapshotID"], "feedbeef01");
    }

    #[test]
    fn warnings_complete_the_run_with_a_warning_condition_and_event() {
        let mut vb = in_progress();
        let mut r = saved("feedbeef01");
        r.warnings = vec!["retention not applied: repository is already locked".into()];
        vb.status.as_mut().unwrap().result = Some(r);
        let obs = Observed {
            job: Some(finished_job("Complete")),
            ..Default::default()
        };
        let a = plan(&vb, &obs, &settings(), &now());
        let Action::PatchStatus(p) = &a[0] else {
            panic!("{a:?}")
        };
        assert_eq!(p["phase"], "Completed");
        let conditions = p["conditions"].as_array().unwrap();
        assert!(
            conditions
                .iter()
                .any(|c| c["type"] == "Warning"
                    && c["message"].as_str().unwrap().contains("retention")),
            "{conditions:?}"
        );
        assert!(a.iter().any(
            |x| matches!(x, Action::Event { warning: true, reason, .. } if reason == "BackupWarning")
        ));
    }

    #[test]
    fn a_job_whose_pod_is_refused_fails_with_the_refusal() {
        let vb = in_progress();
        let obs = Observed {
            job: Some(Job::default()),
            job_blocked: Some("pods \"x\" is forbidden: violates PodSecurity".into()),
            ..Default::default()
        };
        let a = plan(&vb, &obs, &settings(), &now());
        let Action::PatchStatus(p) = &a[0] else {
            panic!("{a:?}")
        };
        assert_eq!(p["phase"], "Failed");
        assert!(
            p["message"]
                .as_str()
                .unwrap()
                .contains("violates PodSecurity")
        );
        assert!(a.iter().any(|x| matches!(x, Action::DeleteJob(_))));
    }

    #[test]
    fn cancel_deletes_the_running_job_then_ends_canceled() {
        let mut vb = started(backup(CopyMethod::Snapshot));
        vb.spec.cancel = true;
        vb.status.as_mut().unwrap().phase = RunPhase::InProgress;
        let obs = Observed {
            job: Some(Job::default()),
            ..Default::default()
        };
        let a = plan(&vb, &obs, &settings(), &now());
        assert!(matches!(&a[0], Action::DeleteJob(j) if j == "mover-backup-db"));
        assert_eq!(phase_of(&a).as_deref(), Some("Canceling"));
        vb.status.as_mut().unwrap().phase = RunPhase::Canceling;
        let a = plan(&vb, &Observed::default(), &settings(), &now());
        assert_eq!(phase_of(&a).as_deref(), Some("Canceled"));
    }

    #[test]
    fn deletion_policy_delete_forgets_before_the_finalizer_goes() {
        let mut vb = started(backup(CopyMethod::Snapshot));
        vb.spec.deletion_policy = DeletionPolicy::Delete;
        assert!(matches!(
            plan(&vb, &Observed::default(), &settings(), &now())[0],
            Action::AddFinalizer
        ));
        vb.metadata.finalizers = Some(vec![names::FINALIZER.into()]);
        vb.metadata.deletion_timestamp = Some(now());
        vb.status.as_mut().unwrap().snapshot_id = Some("abc".into());
        let mut obs = Observed {
            repository: Some(ready_repo()),
            ..Default::default()
        };
        let a = plan(&vb, &obs, &settings(), &now());
        assert!(a.iter().any(|x| matches!(x, Action::CreateJob { job, .. }
            if job.metadata.name.as_deref() == Some("mover-forget-db"))));
        assert!(a.iter().all(|x| !matches!(x, Action::RemoveFinalizer)));
        obs.forget_job = Some(finished_job("Complete"));
        let a = plan(&vb, &obs, &settings(), &now());
        assert!(a.iter().any(|x| matches!(x, Action::RemoveFinalizer)));
    }
}
