//! What a DataUpload or DataDownload needs next, decided from what was observed of it and of
//! the objects around it: pure, as the plans of mover's own runs are. Every turn derives every
//! step again from what exists, so a step that failed once (deleting the source snapshot pair,
//! binding the restored volume) is asked for again on the next turn instead of being skipped
//! because a later step's object already exists.

use super::bsl::{self, BslCa};
use super::{
    CA_CONFIG_MAP_KEY, VeleroOptions, ca_config_map_name, parse_go_duration, repository_name,
    repository_object,
};
use crate::api::common::{RunPhase, RunStatus};
use crate::api::snapshot::{VolumeSnapshot, VolumeSnapshotContent};
use crate::api::velero::{BackupStorageLocation, DataDownload, DataMovePhase, DataUpload};
use crate::api::{Repository, VolumeBackup, VolumeRestore};
use crate::names;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// Annotation on a DataDownload naming the volume being handed to its target.
pub const RESTORED_VOLUME: &str = "mover.dev/restored-volume";
/// Annotation on a DataDownload: the node its mover pod ran on, kept for its final status.
pub const RESTORED_ON_NODE: &str = "mover.dev/restored-on-node";
/// Annotation on that volume keeping its reclaim policy while it is Retain.
pub const RECLAIM_POLICY: &str = "mover.dev/reclaim-policy";
/// How often an unfinished operation is looked at again (owned runs also wake it).
pub const RECHECK: Duration = Duration::from_secs(5);
/// How soon a step that waits on another controller (a bind) is looked at again.
const SOON: Duration = Duration::from_secs(1);
/// How soon an operation just accepted or handed over goes on.
const AT_ONCE: Duration = Duration::from_millis(200);

/// One step a Velero plan asks for. Creating what exists and deleting what is gone count as
/// done, so a step may be asked for again.
#[derive(Debug, Clone)]
pub enum Step {
    /// The Repository a BSL maps onto, made when missing.
    CreateRepository(Box<Repository>),
    /// Writes a BSL's inline CA into ConfigMap `name` (made when `exists` is false).
    WriteCaConfigMap {
        name: String,
        pem: String,
        exists: bool,
    },
    /// Sets a VolumeSnapshotContent's `deletionPolicy` to Retain.
    RetainContent(String),
    CreateContent(Box<VolumeSnapshotContent>),
    CreateSnapshot(Box<VolumeSnapshot>),
    DeleteSnapshot {
        namespace: String,
        name: String,
    },
    DeleteContent(String),
    CreateBackup(Box<VolumeBackup>),
    CreateRestore(Box<VolumeRestore>),
    /// Sets `spec.cancel` of the VolumeBackup (upload) or VolumeRestore (download) `name`.
    CancelRun(String),
    DeleteBackup(String),
    DeleteRestore(String),
    DeletePvc(String),
    /// A JSON merge patch of the DataUpload or DataDownload itself (Velero's CRDs have no
    /// status subresource, so a status patch holds only `status`).
    PatchOperation(Value),
    /// Sets PersistentVolume `volume`'s reclaim policy to Retain, keeping `previous` in an
    /// annotation.
    RetainVolume {
        volume: String,
        previous: String,
    },
    /// Sets `spec.volumeName` of claim `namespace/name` to `volume`.
    BindClaim {
        namespace: String,
        name: String,
        volume: String,
    },
    /// Points `volume`'s `claimRef` at claim `namespace/name`, with the claim's selector labels.
    BindVolume {
        volume: String,
        namespace: String,
        name: String,
        labels: BTreeMap<String, String>,
    },
    /// Puts `volume`'s reclaim policy back to `policy` and drops the annotation.
    RestoreReclaimPolicy {
        volume: String,
        policy: String,
    },
}

/// The steps of one turn, and when to look again (`None`: only when something changes).
#[derive(Debug, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub requeue: Option<Duration>,
}

impl Plan {
    fn then(steps: Vec<Step>, requeue: Duration) -> Plan {
        Plan {
            steps,
            requeue: Some(requeue),
        }
    }

    fn done(steps: Vec<Step>) -> Plan {
        Plan {
            steps,
            requeue: None,
        }
    }
}

/// What was read of an operation's BackupStorageLocation and the Repository it maps onto.
#[derive(Debug, Clone, Default)]
pub struct Location {
    pub bsl: Option<BackupStorageLocation>,
    pub repository_exists: bool,
    /// The ConfigMap holding an inline CA, read only when the BSL has one.
    pub ca_config_map: Option<ConfigMap>,
}

/// The time and place of a turn.
#[derive(Debug, Clone)]
pub struct Turn {
    pub now: Time,
    /// The node the controller runs on, reported where no mover pod's node is known.
    pub node: String,
}

/// What a DataUpload's turn saw.
#[derive(Debug, Clone, Default)]
pub struct UploadObserved {
    /// Read while the operation is New or its VolumeBackup is not made yet.
    pub location: Option<Location>,
    pub run: Option<VolumeBackup>,
    /// The VolumeSnapshot in Velero's namespace that holds the snapshot exists.
    pub exposed: bool,
    /// The VolumeSnapshot Velero took in the source namespace, and its bound content.
    pub source: Option<VolumeSnapshot>,
    pub source_content: Option<VolumeSnapshotContent>,
    /// With the source VolumeSnapshot gone: the contents that still name it.
    pub contents_naming_source: Vec<String>,
}

/// What a DataDownload's turn saw.
#[derive(Debug, Clone, Default)]
pub struct DownloadObserved {
    /// Read while the operation is New or its VolumeRestore is not made yet.
    pub location: Option<Location>,
    pub run: Option<VolumeRestore>,
    pub target: Option<PersistentVolumeClaim>,
    /// The volume of the restore claim, once the run completed.
    pub restore_claim_volume: Option<String>,
    /// The restored PersistentVolume: the one being handed over, or the restore claim's.
    pub volume: Option<PersistentVolume>,
}

/// The name of the VolumeBackup, VolumeRestore, VolumeSnapshot and claim an operation makes.
pub fn ours(operation: &str) -> String {
    names::object_name("velero", operation)
}

fn status(v: Value) -> Step {
    Step::PatchOperation(json!({ "status": v }))
}

fn owner<K: Resource<DynamicType = ()>>(obj: &K) -> Value {
    serde_json::to_value(obj.controller_owner_ref(&()).unwrap_or_default()).unwrap_or_default()
}

/// Whether `since` plus Velero's `operationTimeout` lies before `now`.
fn timed_out(since: Option<&Time>, timeout: &str, now: &Time) -> bool {
    let (Some(since), Some(limit)) = (since, parse_go_duration(timeout)) else {
        return false;
    };
    let limit = jiff::SignedDuration::try_from(limit).unwrap_or(jiff::SignedDuration::MAX);
    since.0.checked_add(limit).is_ok_and(|t| t < now.0)
}

fn progress(status: &RunStatus) -> Value {
    let p = status.progress.clone().unwrap_or_default();
    json!({"totalBytes": p.total_bytes.unwrap_or(0), "bytesDone": p.bytes_done})
}

/// The node the run's mover pod ran on, as Velero's own data mover reports it.
fn mover_node(run: &RunStatus, turn: &Turn) -> String {
    run.result
        .as_ref()
        .and_then(|r| r.node.clone())
        .unwrap_or_else(|| turn.node.clone())
}

/// Ends the operation Failed with `message`, after `cleanup`.
fn fail(cleanup: Vec<Step>, message: String, turn: &Turn) -> Plan {
    let mut steps = cleanup;
    steps.push(status(
        json!({"phase": "Failed", "message": message, "completionTimestamp": turn.now}),
    ));
    Plan::done(steps)
}

/// The BSL checked (writable for a backup) and mapped onto its Repository: the Repository's
/// name and the steps that make it and its CA ConfigMap, or the message that fails the
/// operation.
fn repository(
    loc: &Location,
    bsl_name: &str,
    source_namespace: &str,
    write: bool,
    opts: &VeleroOptions,
) -> Result<(String, Vec<Step>), String> {
    let ns = &opts.namespace;
    let Some(location) = &loc.bsl else {
        return Err(format!("BackupStorageLocation {ns}/{bsl_name} not found"));
    };
    if write {
        bsl::check_usable(location)?;
    } else {
        bsl::check_available(location)?;
    }
    let mapped = bsl::repository_for(location, source_namespace).map_err(|e| e.to_string())?;
    let name = repository_name(bsl_name, source_namespace);
    let repo = repository_object(&name, bsl_name, &mapped, &opts.password_secret)?;
    let mut steps = Vec::new();
    if let Some(BslCa::Inline(pem)) = &mapped.ca {
        let current = loc
            .ca_config_map
            .as_ref()
            .and_then(|m| m.data.as_ref()?.get(CA_CONFIG_MAP_KEY));
        if current != Some(pem) {
            steps.push(Step::WriteCaConfigMap {
                name: ca_config_map_name(&name),
                pem: pem.clone(),
                exists: loc.ca_config_map.is_some(),
            });
        }
    }
    if !loc.repository_exists {
        steps.push(Step::CreateRepository(Box::new(repo)));
    }
    Ok((name, steps))
}

/// Cancel in a phase that is not final: the live run is canceled first and the operation
/// waits in Canceling; with no live run it ends Canceled once `cleanup` is done.
fn cancel(
    phase: DataMovePhase,
    run: Option<(&RunStatus, bool)>,
    run_name: &str,
    cleanup: Vec<Step>,
    turn: &Turn,
) -> Plan {
    let live = run.is_some_and(|(r, _)| !r.phase.is_final());
    if live {
        let run_canceled = run.is_some_and(|(_, canceled)| canceled);
        let mut steps = Vec::new();
        if !run_canceled {
            steps.push(Step::CancelRun(run_name.to_string()));
        }
        if phase != DataMovePhase::Canceling {
            steps.push(status(json!({"phase": "Canceling"})));
        }
        return Plan::then(steps, RECHECK);
    }
    let mut steps = cleanup;
    steps.push(status(
        json!({"phase": "Canceled", "completionTimestamp": turn.now,
        "message": "canceled by spec.cancel"}),
    ));
    Plan::done(steps)
}

/// Marks a new operation Accepted by this controller.
fn accept(mut steps: Vec<Step>, turn: &Turn) -> Plan {
    steps.push(status(
        json!({"phase": "Accepted", "acceptedTimestamp": turn.now,
        "startTimestamp": turn.now, "acceptedByNode": turn.node}),
    ));
    Plan::then(steps, AT_ONCE)
}

/// One DataUpload's next steps.
pub fn plan_upload(
    du: &DataUpload,
    obs: &UploadObserved,
    opts: &VeleroOptions,
    turn: &Turn,
) -> Plan {
    let ns = du.namespace().unwrap_or_default();
    let name = du.name_any();
    let ours = ours(&name);
    let phase = du.phase();
    let cleanup = vec![
        Step::DeleteBackup(ours.clone()),
        Step::DeleteSnapshot {
            namespace: ns.clone(),
            name: ours.clone(),
        },
    ];
    if phase.is_terminal() {
        return Plan::done(cleanup);
    }
    if du.spec.cancel {
        let run = obs
            .run
            .as_ref()
            .and_then(|r| Some((r.status.as_ref()?, r.spec.cancel)));
        return cancel(phase, run, &ours, cleanup, turn);
    }
    let bsl_name = &du.spec.backup_storage_location;
    let located = || {
        let loc = obs.location.clone().unwrap_or_default();
        repository(&loc, bsl_name, &du.spec.source_namespace, true, opts)
    };
    if phase == DataMovePhase::New {
        return match located() {
            Ok((_, steps)) => accept(steps, turn),
            Err(m) => fail(cleanup, m, turn),
        };
    }
    let Some(run) = &obs.run else {
        let (repo, mut steps) = match located() {
            Ok(r) => r,
            Err(m) => return fail(cleanup, m, turn),
        };
        if obs.exposed {
            // Exposed on an earlier turn: the source pair goes even if deleting it failed then.
            steps.extend(release_source(du, obs, &ours));
        } else {
            match expose_snapshot(du, obs, &ours) {
                Exposed::Done(s) => steps.extend(s),
                Exposed::Waiting(what) => {
                    let accepted = du
                        .status
                        .as_ref()
                        .and_then(|s| s.accepted_timestamp.as_ref());
                    if timed_out(accepted, &du.spec.operation_timeout, &turn.now) {
                        let timeout = &du.spec.operation_timeout;
                        return fail(
                            cleanup,
                            format!("{what} within operationTimeout {timeout}"),
                            turn,
                        );
                    }
                    return Plan::then(steps, RECHECK);
                }
                Exposed::Failed(m) => return fail(cleanup, m, turn),
            }
        }
        match backup_object(du, &ours, &repo) {
            Ok(vb) => steps.push(Step::CreateBackup(Box::new(vb))),
            Err(m) => return fail(cleanup, m, turn),
        }
        steps.push(status(json!({"phase": "Prepared"})));
        return Plan::then(steps, RECHECK);
    };
    let run_name = format!("VolumeBackup {ns}/{ours}");
    upload_follows_run(
        du,
        run.status.clone().unwrap_or_default(),
        &run_name,
        cleanup,
        turn,
    )
}

/// A DataUpload whose VolumeBackup exists: its status translates the run's.
fn upload_follows_run(
    du: &DataUpload,
    run: RunStatus,
    run_name: &str,
    cleanup: Vec<Step>,
    turn: &Turn,
) -> Plan {
    match run.phase {
        RunPhase::Completed => {
            let total = run
                .summary
                .as_ref()
                .map(|s| s.bytes_processed)
                .or(run.progress.as_ref().and_then(|p| p.total_bytes))
                .unwrap_or(0);
            let added = run.summary.as_ref().map(|s| s.bytes_added).unwrap_or(0);
            let snapshot = run.snapshot_id.clone().unwrap_or_default();
            let repo = repository_name(&du.spec.backup_storage_location, &du.spec.source_namespace);
            let mut steps = cleanup;
            steps.push(status(json!({"phase": "Completed", "snapshotID": snapshot,
                "progress": {"totalBytes": total, "bytesDone": total},
                "incrementalBytes": added, "path": crate::plans::jobspec::DATA_DIR,
                "completionTimestamp": turn.now, "node": mover_node(&run, turn),
                "dataMoverResult": {"repository": repo}})));
            Plan::done(steps)
        }
        RunPhase::Failed | RunPhase::Canceled => {
            let m = run
                .message
                .clone()
                .unwrap_or_else(|| format!("{run_name} {}", run.phase.as_str()));
            fail(cleanup, m, turn)
        }
        RunPhase::InProgress => {
            let shown = du.status.as_ref().and_then(|s| s.progress.as_ref()).map(|p| {
                json!({"totalBytes": p.total_bytes.unwrap_or(0), "bytesDone": p.bytes_done.unwrap_or(0)})
            });
            let mut steps = Vec::new();
            if du.phase() != DataMovePhase::InProgress || shown != Some(progress(&run)) {
                steps.push(status(
                    json!({"phase": "InProgress", "progress": progress(&run)}),
                ));
            }
            Plan::then(steps, RECHECK)
        }
        RunPhase::New | RunPhase::Preparing | RunPhase::Canceling => Plan::then(vec![], RECHECK),
    }
}

/// The VolumeBackup of a DataUpload's exposed snapshot.
fn backup_object(du: &DataUpload, ours: &str, repo: &str) -> Result<VolumeBackup, String> {
    let ns = du.namespace().unwrap_or_default();
    let csi = du.spec.csi_snapshot.clone().unwrap_or_default();
    let labels = du.labels();
    let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
    serde_json::from_value(json!({
        "apiVersion": "mover.dev/v1alpha1", "kind": "VolumeBackup",
        "metadata": {"name": ours, "namespace": ns,
            "labels": {names::MANAGED_BY: "mover"},
            "ownerReferences": [owner(du)]},
        "spec": {
            "source": {"volumeSnapshot": ours},
            "repository": repo,
            "storageClassName": (!csi.storage_class.is_empty()).then_some(&csi.storage_class),
            "host": format!("{}.{}", du.spec.source_namespace, du.spec.source_pvc),
            "tags": [
                format!("velero-backup={}", label("velero.io/backup-name")),
                format!("velero-backup-uid={}", label("velero.io/backup-uid")),
                format!("du={}", du.name_any()),
                format!("pvc={}/{}", du.spec.source_namespace, du.spec.source_pvc),
            ],
            "deletionPolicy": "Retain",
            // As Velero's own data mover (root in the node agent): every file is read,
            // whoever owns it, and owners come back on restore.
            "mover": {"privileged": true},
        },
    }))
    .map_err(|e| format!("building VolumeBackup {ns}/{ours}: {e}"))
}

enum Exposed {
    Done(Vec<Step>),
    Waiting(String),
    Failed(String),
}

/// Moves the CSI snapshot Velero made in the source namespace into Velero's: the content is
/// kept (Retain), a static content with the same handle and a VolumeSnapshot `ours` bound to
/// it are made there, and the source VolumeSnapshot and content are deleted.
fn expose_snapshot(du: &DataUpload, obs: &UploadObserved, ours: &str) -> Exposed {
    let ns = du.namespace().unwrap_or_default();
    let src_ns = &du.spec.source_namespace;
    let csi = du.spec.csi_snapshot.clone().unwrap_or_default();
    let Some(vs) = &obs.source else {
        return Exposed::Waiting(format!(
            "VolumeSnapshot {src_ns}/{} did not appear",
            csi.volume_snapshot
        ));
    };
    let st = vs.status.clone().unwrap_or_default();
    if let Some(e) = st.error.as_ref().and_then(|e| e.message.clone()) {
        return Exposed::Failed(format!(
            "VolumeSnapshot {src_ns}/{}: {e}",
            csi.volume_snapshot
        ));
    }
    let content_name = st.bound_volume_snapshot_content_name.unwrap_or_default();
    let content = obs
        .source_content
        .as_ref()
        .filter(|c| !content_name.is_empty() && c.name_any() == content_name);
    let handle = content.and_then(|c| c.status.as_ref()?.snapshot_handle.clone());
    let (Some(content), Some(handle), Some(true)) = (content, handle, st.ready_to_use) else {
        return Exposed::Waiting(format!(
            "VolumeSnapshot {src_ns}/{} was not ready",
            csi.volume_snapshot
        ));
    };
    let static_content = serde_json::from_value::<VolumeSnapshotContent>(json!({
        "metadata": {"name": ours, "labels": content.labels()},
        "spec": {"deletionPolicy": "Delete", "driver": content.spec.driver,
            "source": {"snapshotHandle": handle},
            "volumeSnapshotClassName": content.spec.volume_snapshot_class_name,
            "sourceVolumeMode": content.spec.source_volume_mode,
            "volumeSnapshotRef": {"namespace": ns, "name": ours}},
    }));
    let snapshot = serde_json::from_value::<VolumeSnapshot>(json!({
        "metadata": {"name": ours, "namespace": ns,
            "labels": {names::MANAGED_BY: "mover"},
            "ownerReferences": [owner(du)]},
        "spec": {"source": {"volumeSnapshotContentName": ours},
            "volumeSnapshotClassName": content.spec.volume_snapshot_class_name},
    }));
    let (static_content, snapshot) = match (static_content, snapshot) {
        (Ok(c), Ok(s)) => (c, s),
        (Err(e), _) => {
            return Exposed::Failed(format!("building VolumeSnapshotContent {ours}: {e}"));
        }
        (_, Err(e)) => return Exposed::Failed(format!("building VolumeSnapshot {ns}/{ours}: {e}")),
    };
    let mut steps = vec![
        Step::RetainContent(content_name),
        Step::CreateContent(Box::new(static_content)),
        Step::CreateSnapshot(Box::new(snapshot)),
    ];
    steps.extend(release_source(du, obs, ours));
    Exposed::Done(steps)
}

/// Deletes the source VolumeSnapshot and its (retained) content once ours holds the snapshot.
/// With the source VolumeSnapshot already gone, its content is found by the reference it keeps.
fn release_source(du: &DataUpload, obs: &UploadObserved, ours: &str) -> Vec<Step> {
    let src_ns = &du.spec.source_namespace;
    let mut contents: Vec<String> = Vec::new();
    let mut steps = Vec::new();
    match &obs.source {
        Some(vs) => {
            contents.extend(
                vs.status
                    .as_ref()
                    .and_then(|s| s.bound_volume_snapshot_content_name.clone()),
            );
            steps.push(Step::DeleteSnapshot {
                namespace: src_ns.clone(),
                name: vs.name_any(),
            });
        }
        None => contents.extend(obs.contents_naming_source.iter().cloned()),
    }
    steps.extend(
        contents
            .into_iter()
            .filter(|c| c != ours)
            .map(Step::DeleteContent),
    );
    steps
}

/// Whether VolumeSnapshotContent `content` still names the source VolumeSnapshot of `du`.
pub fn names_source(du: &DataUpload, content: &VolumeSnapshotContent) -> bool {
    let csi = du.spec.csi_snapshot.clone().unwrap_or_default();
    let r = &content.spec.volume_snapshot_ref;
    r.namespace.as_deref() == Some(du.spec.source_namespace.as_str())
        && r.name.as_deref() == Some(csi.volume_snapshot.as_str())
}

/// One DataDownload's next steps.
pub fn plan_download(
    dd: &DataDownload,
    obs: &DownloadObserved,
    opts: &VeleroOptions,
    turn: &Turn,
) -> Plan {
    let ns = dd.namespace().unwrap_or_default();
    let ours = ours(&dd.name_any());
    let phase = dd.phase();
    let restored_volume = dd.annotations().get(RESTORED_VOLUME).cloned();
    let cleanup = vec![
        Step::DeleteRestore(ours.clone()),
        Step::DeletePvc(ours.clone()),
    ];
    if phase.is_terminal() {
        return Plan::done(cleanup);
    }
    if dd.spec.cancel && restored_volume.is_none() {
        let run = obs
            .run
            .as_ref()
            .and_then(|r| Some((r.status.as_ref()?, r.spec.cancel)));
        return cancel(phase, run, &ours, cleanup, turn);
    }
    let target_ns = &dd.spec.target_volume.namespace;
    let target_name = &dd.spec.target_volume.pvc;
    let located = || {
        let loc = obs.location.clone().unwrap_or_default();
        let bsl_name = &dd.spec.backup_storage_location;
        repository(&loc, bsl_name, &dd.spec.source_namespace, false, opts)
    };
    if phase == DataMovePhase::New {
        return match located() {
            Ok((_, steps)) => accept(steps, turn),
            Err(m) => fail(cleanup, m, turn),
        };
    }
    if let Some(pv) = restored_volume {
        return hand_over(dd, obs, &pv, turn);
    }
    let Some(target) = &obs.target else {
        let accepted = dd
            .status
            .as_ref()
            .and_then(|s| s.accepted_timestamp.as_ref());
        let timeout = &dd.spec.operation_timeout;
        if timed_out(accepted, timeout, &turn.now) {
            return fail(
                cleanup,
                format!(
                    "target PVC {target_ns}/{target_name} did not appear within operationTimeout {timeout}"
                ),
                turn,
            );
        }
        return Plan::then(vec![], RECHECK);
    };
    let Some(run) = &obs.run else {
        let spec = target.spec.clone().unwrap_or_default();
        if spec.volume_name.as_deref().is_some_and(|n| !n.is_empty()) {
            let m = format!("target PVC {target_ns}/{target_name} is already bound");
            return fail(cleanup, m, turn);
        }
        let (repo, mut steps) = match located() {
            Ok(r) => r,
            Err(m) => return fail(cleanup, m, turn),
        };
        match restore_object(dd, target, &ours, &repo) {
            Ok(vr) => steps.push(Step::CreateRestore(Box::new(vr))),
            Err(m) => return fail(cleanup, m, turn),
        }
        steps.push(status(json!({"phase": "Prepared"})));
        return Plan::then(steps, RECHECK);
    };
    let run = run.status.clone().unwrap_or_default();
    match run.phase {
        RunPhase::Completed => {
            let Some(pv) = &obs.restore_claim_volume else {
                return fail(
                    cleanup,
                    format!("restore PVC {ns}/{ours} has no volume"),
                    turn,
                );
            };
            let mut steps: Vec<Step> = retain_volume(obs.volume.as_ref(), pv).into_iter().collect();
            let total = run.summary.as_ref().map(|s| s.bytes_processed).unwrap_or(0);
            steps.push(Step::PatchOperation(
                json!({"metadata": {"annotations": {RESTORED_VOLUME: pv,
                    RESTORED_ON_NODE: mover_node(&run, turn)}},
                "status": {"progress": {"totalBytes": total, "bytesDone": total}}}),
            ));
            steps.extend(cleanup);
            Plan::then(steps, AT_ONCE)
        }
        RunPhase::Failed | RunPhase::Canceled => {
            let m = run
                .message
                .clone()
                .unwrap_or_else(|| format!("VolumeRestore {ns}/{ours} {}", run.phase.as_str()));
            fail(cleanup, m, turn)
        }
        RunPhase::InProgress => Plan::then(
            vec![status(
                json!({"phase": "InProgress", "progress": progress(&run)}),
            )],
            RECHECK,
        ),
        RunPhase::New | RunPhase::Preparing | RunPhase::Canceling => Plan::then(vec![], RECHECK),
    }
}

/// The VolumeRestore of a DataDownload into a new claim shaped like its target.
fn restore_object(
    dd: &DataDownload,
    target: &PersistentVolumeClaim,
    ours: &str,
    repo: &str,
) -> Result<VolumeRestore, String> {
    let ns = dd.namespace().unwrap_or_default();
    let spec = target.spec.clone().unwrap_or_default();
    let requested = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone());
    let capacity = match (requested, dd.spec.snapshot_size) {
        (Some(q), Some(size)) if quantity_bytes(&q).is_some_and(|b| b < size as u64) => {
            size.to_string()
        }
        (Some(q), _) => q,
        (None, Some(size)) => size.to_string(),
        (None, None) => "1Gi".into(),
    };
    serde_json::from_value(json!({
        "apiVersion": "mover.dev/v1alpha1", "kind": "VolumeRestore",
        "metadata": {"name": ours, "namespace": ns,
            "labels": {names::MANAGED_BY: "mover"},
            "ownerReferences": [owner(dd)]},
        "spec": {
            "repository": repo,
            "source": {"snapshotID": dd.spec.snapshot_id},
            "target": {"newPVC": {"name": ours,
                "storageClassName": spec.storage_class_name,
                "accessModes": spec.access_modes.clone().unwrap_or_default(),
                "capacity": capacity,
                "volumeMode": spec.volume_mode}},
            "mover": {"privileged": true},
        },
    }))
    .map_err(|e| format!("building VolumeRestore {ns}/{ours}: {e}"))
}

/// A Kubernetes quantity in bytes (`1Gi`, `5M`, `1234`); `None` when unreadable.
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().ok().map(|n| n * mult);
        }
    }
    q.parse().ok()
}

/// Retain for the restored volume, so that deleting the restore claim keeps the data; nothing
/// when it is already retained by this step or gone.
fn retain_volume(volume: Option<&PersistentVolume>, pv: &str) -> Option<Step> {
    let vol = volume.filter(|v| v.name_any() == pv)?;
    let policy = vol
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.clone())
        .unwrap_or_else(|| "Delete".into());
    if policy == "Retain" && vol.annotations().contains_key(RECLAIM_POLICY) {
        return None;
    }
    Some(Step::RetainVolume {
        volume: pv.to_string(),
        previous: policy,
    })
}

/// Binds the restored volume to the target claim as Velero's own mover does, then completes
/// the DataDownload once the target is Bound and the reclaim policy is back.
fn hand_over(dd: &DataDownload, obs: &DownloadObserved, pv: &str, turn: &Turn) -> Plan {
    let target_ns = &dd.spec.target_volume.namespace;
    let target_name = &dd.spec.target_volume.pvc;
    let Some(target) = &obs.target else {
        let m = format!(
            "target PVC {target_ns}/{target_name} went away before its volume {pv} was bound to it"
        );
        return fail(vec![], m, turn);
    };
    let Some(vol) = obs.volume.as_ref().filter(|v| v.name_any() == pv) else {
        return fail(
            vec![],
            format!("restored PersistentVolume {pv} went away"),
            turn,
        );
    };
    let spec = target.spec.clone().unwrap_or_default();
    let mut steps = Vec::new();
    if spec.volume_name.as_deref() != Some(pv) {
        steps.push(Step::BindClaim {
            namespace: target_ns.clone(),
            name: target_name.clone(),
            volume: pv.to_string(),
        });
    }
    let claim_ref = vol.spec.as_ref().and_then(|s| s.claim_ref.clone());
    let points_at_target = claim_ref.as_ref().is_some_and(|r| {
        r.namespace.as_deref() == Some(target_ns) && r.name.as_deref() == Some(target_name)
    });
    if !points_at_target {
        let labels = spec
            .selector
            .as_ref()
            .and_then(|s| s.match_labels.clone())
            .unwrap_or_default();
        steps.push(Step::BindVolume {
            volume: pv.to_string(),
            namespace: target_ns.clone(),
            name: target_name.clone(),
            labels,
        });
        return Plan::then(steps, SOON);
    }
    let bound = target.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    if !bound {
        return Plan::then(steps, SOON);
    }
    if let Some(policy) = vol.annotations().get(RECLAIM_POLICY) {
        steps.push(Step::RestoreReclaimPolicy {
            volume: pv.to_string(),
            policy: policy.clone(),
        });
    }
    let node = dd
        .annotations()
        .get(RESTORED_ON_NODE)
        .cloned()
        .unwrap_or_else(|| turn.node.clone());
    steps.push(status(
        json!({"phase": "Completed", "completionTimestamp": turn.now, "node": node}),
    ));
    Plan::done(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::velero::gc::GcOptions;

    fn opts() -> VeleroOptions {
        VeleroOptions {
            namespace: "velero".into(),
            datamover: "mover".into(),
            password_secret: "mover-velero".into(),
            gc: GcOptions {
                interval: Duration::from_secs(3600),
                grace: Duration::from_secs(86_400),
            },
        }
    }

    fn turn() -> Turn {
        Turn {
            now: Time("2026-12-07T12:00:00Z".parse().unwrap()),
            node: "node-a".into(),
        }
    }

    fn location() -> Location {
        Location {
            bsl: Some(
                serde_json::from_value(json!({
                    "metadata": {"name": "default", "namespace": "velero"},
                    "spec": {"provider": "aws", "objectStorage": {"bucket": "velero"},
                        "config": {"region": "minio", "s3Url": "http://minio:9000"}},
                    "status": {"phase": "Available"},
                }))
                .unwrap(),
            ),
            repository_exists: true,
            ca_config_map: None,
        }
    }

    fn upload(phase: &str, accepted: &str) -> DataUpload {
        let accepted = (!accepted.is_empty()).then_some(accepted);
        serde_json::from_value(json!({
            "apiVersion": "velero.io/v2alpha1", "kind": "DataUpload",
            "metadata": {"name": "du-1", "namespace": "velero", "uid": "u1"},
            "spec": {"snapshotType": "CSI", "sourcePVC": "data", "sourceNamespace": "app",
                "datamover": "mover", "backupStorageLocation": "default",
                "operationTimeout": "10m0s",
                "csiSnapshot": {"volumeSnapshot": "velero-data-x", "storageClass": "sc"}},
            "status": {"phase": phase, "acceptedTimestamp": accepted},
        }))
        .unwrap()
    }

    fn source(ready: bool) -> (VolumeSnapshot, VolumeSnapshotContent) {
        let vs = serde_json::from_value(json!({
            "metadata": {"name": "velero-data-x", "namespace": "app"},
            "spec": {"source": {"persistentVolumeClaimName": "data"}},
            "status": {"boundVolumeSnapshotContentName": "snapcontent-1", "readyToUse": ready},
        }))
        .unwrap();
        let content = serde_json::from_value(json!({
            "metadata": {"name": "snapcontent-1"},
            "spec": {"deletionPolicy": "Delete", "driver": "hostpath.csi.k8s.io",
                "source": {"volumeHandle": "vol-1"},
                "volumeSnapshotRef": {"namespace": "app", "name": "velero-data-x"}},
            "status": {"snapshotHandle": "snap-1", "readyToUse": ready},
        }))
        .unwrap();
        (vs, content)
    }

    fn run<K: serde::de::DeserializeOwned>(kind: &str, status: Value) -> K {
        serde_json::from_value(json!({
            "apiVersion": "mover.dev/v1alpha1", "kind": kind,
            "metadata": {"name": ours("du-1"), "namespace": "velero"},
            "spec": {"repository": "r", "source": {"volumeSnapshot": "s", "snapshotID": "abc"},
                "target": {"pvc": "t"}},
            "status": status,
        }))
        .unwrap()
    }

    /// The steps' kinds and their names, to compare plans by.
    fn shape(plan: &Plan) -> Vec<String> {
        plan.steps
            .iter()
            .map(|s| match s {
                Step::CreateRepository(r) => format!("CreateRepository {}", r.name_any()),
                Step::WriteCaConfigMap { name, .. } => format!("WriteCaConfigMap {name}"),
                Step::RetainContent(n) => format!("RetainContent {n}"),
                Step::CreateContent(c) => format!("CreateContent {}", c.name_any()),
                Step::CreateSnapshot(s) => format!("CreateSnapshot {}", s.name_any()),
                Step::DeleteSnapshot { namespace, name } => {
                    format!("DeleteSnapshot {namespace}/{name}")
                }
                Step::DeleteContent(n) => format!("DeleteContent {n}"),
                Step::CreateBackup(b) => format!("CreateBackup {}", b.name_any()),
                Step::CreateRestore(r) => format!("CreateRestore {}", r.name_any()),
                Step::CancelRun(n) => format!("CancelRun {n}"),
                Step::DeleteBackup(n) => format!("DeleteBackup {n}"),
                Step::DeleteRestore(n) => format!("DeleteRestore {n}"),
                Step::DeletePvc(n) => format!("DeletePvc {n}"),
                Step::PatchOperation(p) => match p.pointer("/status/phase") {
                    Some(phase) => format!("Status {}", phase.as_str().unwrap_or_default()),
                    None => "PatchOperation".into(),
                },
                Step::RetainVolume { volume, previous } => {
                    format!("RetainVolume {volume} was {previous}")
                }
                Step::BindClaim { name, volume, .. } => format!("BindClaim {name} {volume}"),
                Step::BindVolume { volume, name, .. } => format!("BindVolume {volume} {name}"),
                Step::RestoreReclaimPolicy { volume, policy } => {
                    format!("RestoreReclaimPolicy {volume} {policy}")
                }
            })
            .collect()
    }

    fn status_message(plan: &Plan) -> String {
        plan.steps
            .iter()
            .rev()
            .find_map(|s| match s {
                Step::PatchOperation(p) => p.pointer("/status/message")?.as_str().map(String::from),
                _ => None,
            })
            .unwrap_or_default()
    }

    const RECENT: &str = "2026-12-07T11:59:00Z";

    #[test]
    fn a_ready_source_snapshot_is_moved_into_veleros_namespace_then_backed_up() {
        let (vs, content) = source(true);
        let obs = UploadObserved {
            location: Some(location()),
            source: Some(vs),
            source_content: Some(content),
            ..Default::default()
        };
        let plan = plan_upload(&upload("Accepted", RECENT), &obs, &opts(), &turn());
        let o = ours("du-1");
        assert_eq!(
            shape(&plan),
            [
                "RetainContent snapcontent-1".to_string(),
                format!("CreateContent {o}"),
                format!("CreateSnapshot {o}"),
                "DeleteSnapshot app/velero-data-x".into(),
                "DeleteContent snapcontent-1".into(),
                format!("CreateBackup {o}"),
                "Status Prepared".into(),
            ]
        );
        assert_eq!(plan.requeue, Some(RECHECK));
        let Step::CreateContent(c) = &plan.steps[1] else {
            unreachable!()
        };
        assert_eq!(c.spec.deletion_policy, "Delete");
        let Step::CreateBackup(vb) = &plan.steps[5] else {
            unreachable!()
        };
        assert_eq!(vb.spec.host.as_deref(), Some("app.data"));
        assert!(vb.spec.tags.contains(&"pvc=app/data".to_string()));
    }

    #[test]
    fn a_source_pair_whose_delete_failed_is_deleted_on_the_next_turn() {
        // Ours exists, the source pair is still there: its delete is asked for again, before
        // the run is made.
        let (vs, content) = source(true);
        let obs = UploadObserved {
            location: Some(location()),
            exposed: true,
            source: Some(vs),
            source_content: Some(content),
            ..Default::default()
        };
        let plan = plan_upload(&upload("Accepted", RECENT), &obs, &opts(), &turn());
        let o = ours("du-1");
        assert_eq!(
            shape(&plan),
            [
                "DeleteSnapshot app/velero-data-x".to_string(),
                "DeleteContent snapcontent-1".into(),
                format!("CreateBackup {o}"),
                "Status Prepared".into(),
            ]
        );
        // With the source VolumeSnapshot gone, its content is found by its reference.
        let obs = UploadObserved {
            location: Some(location()),
            exposed: true,
            contents_naming_source: vec!["snapcontent-1".into(), o.clone()],
            ..Default::default()
        };
        let plan = plan_upload(&upload("Accepted", RECENT), &obs, &opts(), &turn());
        assert_eq!(
            shape(&plan),
            [
                "DeleteContent snapcontent-1".to_string(),
                format!("CreateBackup {o}"),
                "Status Prepared".into(),
            ]
        );
    }

    #[test]
    fn a_snapshot_that_is_not_ready_waits_until_the_operation_timeout_then_fails() {
        let (vs, content) = source(false);
        let obs = UploadObserved {
            location: Some(location()),
            source: Some(vs),
            source_content: Some(content),
            ..Default::default()
        };
        let plan = plan_upload(&upload("Accepted", RECENT), &obs, &opts(), &turn());
        assert!(shape(&plan).is_empty(), "{:?}", shape(&plan));
        assert_eq!(plan.requeue, Some(RECHECK));
        let late = plan_upload(
            &upload("Accepted", "2026-12-07T11:00:00Z"),
            &obs,
            &opts(),
            &turn(),
        );
        let o = ours("du-1");
        assert_eq!(
            shape(&late),
            [
                format!("DeleteBackup {o}"),
                format!("DeleteSnapshot velero/{o}"),
                "Status Failed".into(),
            ]
        );
        assert_eq!(
            status_message(&late),
            "VolumeSnapshot app/velero-data-x was not ready within operationTimeout 10m0s"
        );
        assert_eq!(late.requeue, None);
    }

    #[test]
    fn a_new_upload_is_accepted_only_with_a_usable_location() {
        let missing_repo = Location {
            repository_exists: false,
            ..location()
        };
        let obs = UploadObserved {
            location: Some(missing_repo),
            ..Default::default()
        };
        let plan = plan_upload(&upload("New", ""), &obs, &opts(), &turn());
        assert_eq!(
            shape(&plan),
            [
                format!("CreateRepository {}", repository_name("default", "app")),
                "Status Accepted".into()
            ]
        );
        let obs = UploadObserved {
            location: Some(Location::default()),
            ..Default::default()
        };
        let plan = plan_upload(&upload("New", ""), &obs, &opts(), &turn());
        assert_eq!(shape(&plan).last().unwrap(), "Status Failed");
        assert_eq!(
            status_message(&plan),
            "BackupStorageLocation velero/default not found"
        );
    }

    #[test]
    fn cancel_stops_the_live_run_first_and_ends_canceled_once_it_ended() {
        let mut du = upload("InProgress", RECENT);
        du.spec.cancel = true;
        let o = ours("du-1");
        let live = UploadObserved {
            run: Some(run("VolumeBackup", json!({"phase": "InProgress"}))),
            ..Default::default()
        };
        let plan = plan_upload(&du, &live, &opts(), &turn());
        assert_eq!(
            shape(&plan),
            [format!("CancelRun {o}"), "Status Canceling".into()]
        );
        let ended = UploadObserved {
            run: Some(run("VolumeBackup", json!({"phase": "Canceled"}))),
            ..Default::default()
        };
        let plan = plan_upload(&du, &ended, &opts(), &turn());
        assert_eq!(
            shape(&plan),
            [
                format!("DeleteBackup {o}"),
                format!("DeleteSnapshot velero/{o}"),
                "Status Canceled".into()
            ]
        );
    }

    #[test]
    fn a_completed_run_completes_the_upload_with_its_snapshot_after_cleanup() {
        let obs = UploadObserved {
            run: Some(run(
                "VolumeBackup",
                json!({"phase": "Completed", "snapshotID": "abcd",
                    "summary": {"bytesProcessed": 100, "bytesAdded": 40, "durationSeconds": 1.0}}),
            )),
            ..Default::default()
        };
        let plan = plan_upload(&upload("InProgress", RECENT), &obs, &opts(), &turn());
        let o = ours("du-1");
        assert_eq!(
            shape(&plan),
            [
                format!("DeleteBackup {o}"),
                format!("DeleteSnapshot velero/{o}"),
                "Status Completed".into()
            ]
        );
        let Step::PatchOperation(p) = &plan.steps[2] else {
            unreachable!()
        };
        assert_eq!(p["status"]["snapshotID"], "abcd");
        assert_eq!(p["status"]["incrementalBytes"], 40);
        assert_eq!(p["status"]["progress"]["totalBytes"], 100);
        assert_eq!(plan.requeue, None);
    }

    fn download(annotations: Value) -> DataDownload {
        serde_json::from_value(json!({
            "apiVersion": "velero.io/v2alpha1", "kind": "DataDownload",
            "metadata": {"name": "du-1", "namespace": "velero", "uid": "d1",
                "annotations": annotations},
            "spec": {"targetVolume": {"pvc": "data", "namespace": "app"},
                "backupStorageLocation": "default", "datamover": "mover",
                "snapshotID": "abcd", "sourceNamespace": "app", "operationTimeout": "10m0s"},
            "status": {"phase": "Prepared", "acceptedTimestamp": RECENT},
        }))
        .unwrap()
    }

    fn claim(volume: Option<&str>, phase: &str) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "app"},
            "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
                "selector": {"matchLabels": {"app": "db"}}},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    fn volume(
        claim_ref: Option<(&str, &str)>,
        reclaim: &str,
        kept: Option<&str>,
    ) -> PersistentVolume {
        serde_json::from_value(json!({
            "metadata": {"name": "pv-1",
                "annotations": kept.map(|k| json!({RECLAIM_POLICY: k}))},
            "spec": {"persistentVolumeReclaimPolicy": reclaim,
                "claimRef": claim_ref.map(|(ns, n)| json!({"namespace": ns, "name": n}))},
        }))
        .unwrap()
    }

    #[test]
    fn a_download_restores_into_a_new_claim_then_hands_its_volume_to_the_target() {
        let o = ours("du-1");
        // No run yet: a VolumeRestore into a claim shaped like the target.
        let obs = DownloadObserved {
            location: Some(location()),
            target: Some(claim(None, "Pending")),
            ..Default::default()
        };
        let plan = plan_download(&download(json!({})), &obs, &opts(), &turn());
        assert_eq!(
            shape(&plan),
            [format!("CreateRestore {o}"), "Status Prepared".into()]
        );
        // Completed: the volume is retained, named on the DataDownload, the restore claim goes.
        let obs = DownloadObserved {
            run: Some(run("VolumeRestore", json!({"phase": "Completed"}))),
            target: Some(claim(None, "Pending")),
            restore_claim_volume: Some("pv-1".into()),
            volume: Some(volume(Some(("velero", &o)), "Delete", None)),
            ..Default::default()
        };
        let plan = plan_download(&download(json!({})), &obs, &opts(), &turn());
        assert_eq!(
            shape(&plan),
            [
                "RetainVolume pv-1 was Delete".to_string(),
                "PatchOperation".into(),
                format!("DeleteRestore {o}"),
                format!("DeletePvc {o}"),
            ]
        );
        // Handed over: bind both sides, wait for Bound, put the policy back, complete.
        let handed = download(json!({RESTORED_VOLUME: "pv-1", RESTORED_ON_NODE: "node-b"}));
        let obs = DownloadObserved {
            target: Some(claim(None, "Pending")),
            volume: Some(volume(Some(("velero", &o)), "Retain", Some("Delete"))),
            ..Default::default()
        };
        let plan = plan_download(&handed, &obs, &opts(), &turn());
        assert_eq!(
            shape(&plan),
            ["BindClaim data pv-1", "BindVolume pv-1 data"]
        );
        assert_eq!(plan.requeue, Some(SOON));
        let obs = DownloadObserved {
            target: Some(claim(Some("pv-1"), "Bound")),
            volume: Some(volume(Some(("app", "data")), "Retain", Some("Delete"))),
            ..Default::default()
        };
        let plan = plan_download(&handed, &obs, &opts(), &turn());
        assert_eq!(
            shape(&plan),
            ["RestoreReclaimPolicy pv-1 Delete", "Status Completed"]
        );
        let Step::PatchOperation(p) = &plan.steps[1] else {
            unreachable!()
        };
        assert_eq!(p["status"]["node"], "node-b");
        // A target that went away fails the operation, leaving the volume retained.
        let obs = DownloadObserved {
            volume: Some(volume(Some(("app", "data")), "Retain", Some("Delete"))),
            ..Default::default()
        };
        let plan = plan_download(&handed, &obs, &opts(), &turn());
        assert_eq!(shape(&plan), ["Status Failed"]);
    }

    #[test]
    fn a_download_into_a_claim_already_bound_fails_without_a_run() {
        let obs = DownloadObserved {
            location: Some(location()),
            target: Some(claim(Some("pv-9"), "Bound")),
            ..Default::default()
        };
        let plan = plan_download(&download(json!({})), &obs, &opts(), &turn());
        assert_eq!(shape(&plan).last().unwrap(), "Status Failed");
        assert_eq!(
            status_message(&plan),
            "target PVC app/data is already bound"
        );
        assert!(!shape(&plan).iter().any(|s| s.starts_with("CreateRestore")));
    }

    #[test]
    fn quantities_read_binary_and_decimal_suffixes() {
        assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
        assert_eq!(quantity_bytes("5M"), Some(5_000_000));
        assert_eq!(quantity_bytes("1234"), Some(1234));
        assert_eq!(quantity_bytes("x"), None);
    }
}
