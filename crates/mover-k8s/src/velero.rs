//! Velero's third-party data mover contract (`spec.datamover: mover`, ../shared/k8s/velero.md
//! in the design notes): DataUploads and DataDownloads in Velero's namespace whose `datamover`
//! is this controller's name are carried out with mover's own runs, and every other one is
//! never written.
//!
//! A DataUpload: New → Accepted (the BackupStorageLocation is Available and writable) →
//! the CSI snapshot Velero took is moved into Velero's namespace (its content kept, a static
//! content and VolumeSnapshot made there, the source pair deleted, as Velero's own mover
//! does) → Prepared (a VolumeBackup of that VolumeSnapshot into the Repository of
//! (BSL, source namespace)) → InProgress with the run's byte progress → Completed with
//! `snapshotID`, `progress.totalBytes` and `completionTimestamp` in one merge patch, after
//! the temporary objects went. A DataDownload: Accepted → a VolumeRestore of `snapshotID`
//! into a new claim → the claim's volume is handed to the target claim (reclaim policy
//! Retain, restore claim deleted, target's `volumeName` and the volume's `claimRef` set, the
//! target's selector labels copied) → Completed once the target is Bound.
//!
//! Velero's CRDs have no status subresource: status is written with merge patches of the
//! main resource that hold only `status`, so Velero's `spec.cancel` is never overwritten.
//! Cancel is honoured in every phase that is not final.

use super::api::common::{RunPhase, RunStatus};
use super::api::snapshot::{VolumeSnapshot, VolumeSnapshotContent};
use super::api::velero::{BackupStorageLocation, DataDownload, DataMovePhase, DataUpload};
use super::api::{Repository, VolumeBackup, VolumeRestore};
use super::error::{Error, Result};
use super::names;
use super::velero_bsl::{self, BslCa, BslRepository};
use super::velero_gc;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// How the Velero side is configured.
#[derive(Debug, Clone)]
pub struct VeleroOptions {
    /// Velero's namespace, where its DataUploads, DataDownloads and BSLs are.
    pub namespace: String,
    /// The `spec.datamover` this controller answers to.
    pub datamover: String,
    /// A Secret in Velero's namespace with the repositories' `RESTIC_PASSWORD`.
    pub password_secret: String,
    /// mover's retention of Velero's snapshots (`velero_gc`).
    pub gc: velero_gc::GcOptions,
}

/// Annotation on a DataDownload naming the volume being handed to its target.
const RESTORED_VOLUME: &str = "mover.dev/restored-volume";
/// Annotation on a DataDownload: the node its mover pod ran on, kept for its final status.
const RESTORED_ON_NODE: &str = "mover.dev/restored-on-node";

/// The node this controller runs on (`NODE_NAME` from the downward API), reported as the
/// node that accepted a DataUpload or DataDownload.
fn controller_node() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "mover-controller".to_string())
}

/// The node the run's mover pod ran on, as Velero's own data mover reports it.
fn mover_node(run: &RunStatus) -> String {
    run.result
        .as_ref()
        .and_then(|r| r.node.clone())
        .unwrap_or_else(controller_node)
}
/// Annotation on that volume keeping its reclaim policy while it is Retain.
const RECLAIM_POLICY: &str = "mover.dev/reclaim-policy";
/// How often an unfinished operation is looked at again (owned runs also wake it).
pub const RECHECK: Duration = Duration::from_secs(5);

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |e| Error::kube(what, e)
}

/// Velero's duration strings (`10m0s`, `1h30m`, `45s`); `None` when unreadable.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.trim().chars().peekable();
    if s.trim().is_empty() {
        return None;
    }
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push(chars.next()?);
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        total += n * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
    }
    num.is_empty().then(|| Duration::from_secs_f64(total))
}

/// The name of the Repository that holds `source_namespace`'s volumes in BSL `bsl`.
pub fn repository_name(bsl: &str, source_namespace: &str) -> String {
    names::object_name("velero", &format!("{bsl}-{source_namespace}"))
}

/// The ConfigMap holding an inline `objectStorage.caCert` for Repository `repository`: a CA
/// certificate is public, and a ConfigMap is what a Job mounts it from.
pub fn ca_config_map_name(repository: &str) -> String {
    names::object_name("ca", repository)
}

/// The key of the CA PEM in [`ca_config_map_name`].
pub const CA_CONFIG_MAP_KEY: &str = "ca.crt";

/// The Repository for a mapped BSL: the password from `password_secret`, the location and
/// region as plain env, the BSL's credential Secret as the AWS credentials file, the CA from
/// the BSL's `caCertRef` Secret or from the ConfigMap [`ca_config_map_name`] that holds an
/// inline `caCert`.
pub fn repository_object(
    name: &str,
    bsl: &str,
    loc: &BslRepository,
    password_secret: &str,
) -> std::result::Result<Repository, String> {
    let mut env: BTreeMap<String, String> = loc.job_env().into_iter().collect();
    // The Job mounts the file itself (jobspec), at its own path.
    env.remove("AWS_SHARED_CREDENTIALS_FILE");
    let ca = match &loc.ca {
        None => None,
        Some(BslCa::SecretKey { name, key }) => Some(json!({"secretName": name, "key": key})),
        Some(BslCa::Inline(_)) => Some(json!({
            "configMapName": ca_config_map_name(name), "key": CA_CONFIG_MAP_KEY
        })),
    };
    let mut spec = json!({
        "secretRef": {"name": password_secret},
        "env": env,
        "credentialsFile": {"name": loc.credential.name, "key": loc.credential.key},
    });
    if let Some(ca) = ca {
        spec["customCa"] = ca;
    }
    serde_json::from_value(json!({
        "apiVersion": "mover.dev/v1alpha1", "kind": "Repository",
        "metadata": {"name": name, "namespace": loc.namespace,
            "labels": {names::MANAGED_BY: "mover", velero_gc::BSL_LABEL: names::label_value(bsl)},
            "annotations": {velero_gc::BSL_ROOT: loc.root}},
        "spec": spec,
    }))
    .map_err(|e| format!("building Repository {name}: {e}"))
}

struct Velero<'a> {
    client: &'a Client,
    opts: &'a VeleroOptions,
}

impl Velero<'_> {
    fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), ns)
    }

    async fn get<K>(&self, ns: &str, name: &str) -> Result<Option<K>>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        self.api::<K>(ns)
            .get_opt(name)
            .await
            .map_err(kube_err(format!("reading {} {ns}/{name}", K::kind(&()))))
    }

    async fn delete<K>(&self, ns: &str, name: &str) -> Result<()>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        match self
            .api::<K>(ns)
            .delete(name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(Error::kube(
                format!("deleting {} {ns}/{name}", K::kind(&())),
                e,
            )),
        }
    }

    async fn create<K>(&self, ns: &str, obj: &K) -> Result<()>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        match self
            .api::<K>(ns)
            .create(&super::apply::post_params(), obj)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(Error::kube(
                format!("creating {} {ns}/{}", K::kind(&()), obj.name_any()),
                e,
            )),
        }
    }

    /// A merge patch of `status` only (Velero's CRDs have no status subresource).
    async fn patch_status<K>(&self, obj: &K, status: Value) -> Result<()>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let ns = obj.namespace().unwrap_or_default();
        self.api::<K>(&ns)
            .patch(
                &obj.name_any(),
                &super::apply::patch_params(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .map(|_| ())
            .map_err(kube_err(format!(
                "writing the status of {} {ns}/{}",
                K::kind(&()),
                obj.name_any()
            )))
    }

    /// The BSL, checked (writable for a backup), mapped onto its Repository, which is made
    /// when missing. `Err(message)` fails the operation.
    async fn repository(
        &self,
        bsl_name: &str,
        source_namespace: &str,
        write: bool,
    ) -> Result<std::result::Result<String, String>> {
        let ns = &self.opts.namespace;
        let Some(bsl) = self.get::<BackupStorageLocation>(ns, bsl_name).await? else {
            return Ok(Err(format!(
                "BackupStorageLocation {ns}/{bsl_name} not found"
            )));
        };
        let checked = if write {
            velero_bsl::check_usable(&bsl)
        } else {
            velero_bsl::check_available(&bsl)
        };
        if let Err(m) = checked {
            return Ok(Err(m));
        }
        let loc = match velero_bsl::repository_for(&bsl, source_namespace) {
            Ok(l) => l,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let name = repository_name(bsl_name, source_namespace);
        let repo = match repository_object(&name, bsl_name, &loc, &self.opts.password_secret) {
            Ok(r) => r,
            Err(m) => return Ok(Err(m)),
        };
        if let Some(BslCa::Inline(pem)) = &loc.ca {
            self.keep_ca_config_map(ns, &name, pem).await?;
        }
        if self.get::<Repository>(ns, &name).await?.is_none() {
            self.create(ns, &repo).await?;
        }
        Ok(Ok(name))
    }

    /// Writes the BSL's inline CA into the ConfigMap the Repository's Jobs mount, so a CA the
    /// BSL rotates reaches the next Job.
    async fn keep_ca_config_map(&self, ns: &str, repository: &str, pem: &str) -> Result<()> {
        let name = ca_config_map_name(repository);
        let data = json!({CA_CONFIG_MAP_KEY: pem});
        let current = self.get::<ConfigMap>(ns, &name).await?;
        let api = self.api::<ConfigMap>(ns);
        let written = match current {
            Some(map)
                if map
                    .data
                    .as_ref()
                    .and_then(|d| d.get(CA_CONFIG_MAP_KEY))
                    .map(String::as_str)
                    == Some(pem) =>
            {
                return Ok(());
            }
            Some(_) => api
                .patch(
                    &name,
                    &super::apply::patch_params(),
                    &Patch::Merge(json!({"data": data})),
                )
                .await
                .map(drop),
            None => {
                let map: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {names::MANAGED_BY: "mover"}},
                    "data": data,
                }))
                .map_err(|e| Error::Invalid(format!("building ConfigMap {ns}/{name}: {e}")))?;
                api.create(&super::apply::post_params(), &map)
                    .await
                    .map(drop)
            }
        };
        written.map_err(kube_err(format!("writing ConfigMap {ns}/{name}")))?;
        Ok(())
    }

    /// Sets `spec.cancel` of the live run `R` named `name` (unless set) and marks `op`
    /// (now in `phase`) Canceling until that run ends.
    async fn cancel_run<R, K>(
        &self,
        op: &K,
        phase: DataMovePhase,
        name: &str,
        run_canceled: bool,
    ) -> Result<()>
    where
        R: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let ns = op.namespace().unwrap_or_default();
        if !run_canceled {
            self.api::<R>(&ns)
                .patch(
                    name,
                    &super::apply::patch_params(),
                    &Patch::Merge(json!({"spec": {"cancel": true}})),
                )
                .await
                .map_err(kube_err(format!("canceling {} {ns}/{name}", R::kind(&()))))?;
        }
        if phase != DataMovePhase::Canceling {
            self.patch_status(op, json!({"phase": "Canceling"})).await?;
        }
        Ok(())
    }

    /// Ends `op` Canceled (its temporary objects already gone).
    async fn end_canceled<K>(&self, op: &K) -> Result<Option<Duration>>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        self.patch_status(
            op,
            json!({"phase": "Canceled", "completionTimestamp": now(),
                "message": "canceled by spec.cancel"}),
        )
        .await?;
        Ok(None)
    }

    /// Marks a new `op` Accepted by this controller.
    async fn accept<K>(&self, op: &K) -> Result<Option<Duration>>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let t = now();
        self.patch_status(
            op,
            json!({"phase": "Accepted", "acceptedTimestamp": t, "startTimestamp": t,
                "acceptedByNode": controller_node()}),
        )
        .await?;
        Ok(Some(Duration::from_millis(200)))
    }

    fn owner<K: Resource<DynamicType = ()>>(&self, obj: &K) -> Value {
        serde_json::to_value(obj.controller_owner_ref(&()).unwrap_or_default()).unwrap_or_default()
    }
}

/// Whether this controller carries out operations for `datamover`.
pub fn is_ours(datamover: Option<&str>, opts: &VeleroOptions) -> bool {
    datamover == Some(opts.datamover.as_str())
}

/// Whether `since` plus Velero's `operationTimeout` has passed.
fn timed_out(since: Option<&Time>, timeout: &str) -> bool {
    let (Some(since), Some(limit)) = (since, parse_go_duration(timeout)) else {
        return false;
    };
    let limit = jiff::SignedDuration::try_from(limit).unwrap_or(jiff::SignedDuration::MAX);
    since
        .0
        .checked_add(limit)
        .is_ok_and(|t| t < jiff::Timestamp::now())
}

fn run_status<K: Resource + serde::Serialize>(run: Option<&K>) -> Option<RunStatus> {
    let v = serde_json::to_value(run?).ok()?;
    serde_json::from_value(v.get("status")?.clone()).ok()
}

fn progress(status: &RunStatus) -> Value {
    let p = status.progress.clone().unwrap_or_default();
    json!({"totalBytes": p.total_bytes.unwrap_or(0), "bytesDone": p.bytes_done})
}

/// One DataUpload.
pub async fn reconcile_upload(
    client: &Client,
    opts: &VeleroOptions,
    du: &DataUpload,
) -> Result<Option<Duration>> {
    if !is_ours(du.spec.datamover.as_deref(), opts) {
        return Ok(None);
    }
    let v = Velero { client, opts };
    let ns = du.namespace().unwrap_or_default();
    let name = du.name_any();
    let ours = names::object_name("velero", &name);
    let phase = du.phase();
    let status = du.status.clone().unwrap_or_default();
    let cleanup = async |v: &Velero<'_>| -> Result<()> {
        v.delete::<VolumeBackup>(&ns, &ours).await?;
        v.delete::<VolumeSnapshot>(&ns, &ours).await
    };
    if phase.is_terminal() {
        cleanup(&v).await?;
        return Ok(None);
    }
    let vb = v.get::<VolumeBackup>(&ns, &ours).await?;
    let run = run_status(vb.as_ref());
    if du.spec.cancel {
        let live = run.as_ref().is_some_and(|r| !r.phase.is_final());
        let run_canceled = vb.as_ref().is_some_and(|b| b.spec.cancel);
        if live {
            v.cancel_run::<VolumeBackup, _>(du, phase, &ours, run_canceled)
                .await?;
            return Ok(Some(RECHECK));
        }
        cleanup(&v).await?;
        return v.end_canceled(du).await;
    }
    let fail = async |v: &Velero<'_>, message: String| -> Result<Option<Duration>> {
        cleanup(v).await?;
        v.patch_status(
            du,
            json!({"phase": "Failed", "message": message, "completionTimestamp": now()}),
        )
        .await?;
        Ok(None)
    };
    if phase == DataMovePhase::New {
        let bsl = &du.spec.backup_storage_location;
        return match v.repository(bsl, &du.spec.source_namespace, true).await? {
            Ok(_) => v.accept(du).await,
            Err(m) => fail(&v, m).await,
        };
    }
    if vb.is_none() {
        // Accepted: expose the snapshot in Velero's namespace, then start the run.
        let repo = match v
            .repository(
                &du.spec.backup_storage_location,
                &du.spec.source_namespace,
                true,
            )
            .await?
        {
            Ok(r) => r,
            Err(m) => return fail(&v, m).await,
        };
        if v.get::<VolumeSnapshot>(&ns, &ours).await?.is_some() {
            // Exposed on an earlier turn: the source pair goes even if deleting it failed then.
            release_source(&v, du, &ours).await?;
        } else {
            match expose_snapshot(&v, du, &ours).await? {
                Exposed::Done => {}
                Exposed::Waiting(what) => {
                    if timed_out(
                        status.accepted_timestamp.as_ref(),
                        &du.spec.operation_timeout,
                    ) {
                        return fail(
                            &v,
                            format!(
                                "{what} within operationTimeout {}",
                                du.spec.operation_timeout
                            ),
                        )
                        .await;
                    }
                    return Ok(Some(RECHECK));
                }
                Exposed::Failed(m) => return fail(&v, m).await,
            }
        }
        let csi = du.spec.csi_snapshot.clone().unwrap_or_default();
        let labels = du.labels();
        let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let vb: VolumeBackup = serde_json::from_value(json!({
            "apiVersion": "mover.dev/v1alpha1", "kind": "VolumeBackup",
            "metadata": {"name": ours, "namespace": ns,
                "labels": {names::MANAGED_BY: "mover"},
                "ownerReferences": [v.owner(du)]},
            "spec": {
                "source": {"volumeSnapshot": ours},
                "repository": repo,
                "storageClassName": (!csi.storage_class.is_empty()).then_some(&csi.storage_class),
                "host": format!("{}.{}", du.spec.source_namespace, du.spec.source_pvc),
                "tags": [
                    format!("velero-backup={}", label("velero.io/backup-name")),
                    format!("velero-backup-uid={}", label("velero.io/backup-uid")),
                    format!("du={name}"),
                    format!("pvc={}/{}", du.spec.source_namespace, du.spec.source_pvc),
                ],
                "deletionPolicy": "Retain",
                // As Velero's own data mover (root in the node agent): every file is read,
                // whoever owns it, and owners come back on restore.
                "mover": {"privileged": true},
            },
        }))
        .map_err(|e| Error::Invalid(format!("building VolumeBackup {ns}/{ours}: {e}")))?;
        v.create(&ns, &vb).await?;
        v.patch_status(du, json!({"phase": "Prepared"})).await?;
        return Ok(Some(RECHECK));
    }
    let run = run.unwrap_or_default();
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
            cleanup(&v).await?;
            let repo = repository_name(&du.spec.backup_storage_location, &du.spec.source_namespace);
            v.patch_status(
                du,
                json!({"phase": "Completed", "snapshotID": snapshot,
                    "progress": {"totalBytes": total, "bytesDone": total},
                    "incrementalBytes": added, "path": super::jobspec::DATA_DIR,
                    "completionTimestamp": now(), "node": mover_node(&run),
                    "dataMoverResult": {"repository": repo}}),
            )
            .await?;
            Ok(None)
        }
        RunPhase::Failed | RunPhase::Canceled => {
            let m = run
                .message
                .clone()
                .unwrap_or_else(|| format!("VolumeBackup {ns}/{ours} {}", run.phase.as_str()));
            fail(&v, m).await
        }
        RunPhase::InProgress => {
            if phase != DataMovePhase::InProgress || status.progress.as_ref().map(|p| {
                json!({"totalBytes": p.total_bytes.unwrap_or(0), "bytesDone": p.bytes_done.unwrap_or(0)})
            }) != Some(progress(&run))
            {
                v.patch_status(du, json!({"phase": "InProgress", "progress": progress(&run)}))
                    .await?;
            }
            Ok(Some(RECHECK))
        }
        RunPhase::New | RunPhase::Preparing | RunPhase::Canceling => Ok(Some(RECHECK)),
    }
}

enum Exposed {
    Done,
    Waiting(String),
    Failed(String),
}

/// Moves the CSI snapshot Velero made in the source namespace into Velero's: the content is
/// kept (Retain), a static content with the same handle and a VolumeSnapshot `ours` bound to
/// it are made there, and the source VolumeSnapshot and content are deleted.
async fn expose_snapshot(v: &Velero<'_>, du: &DataUpload, ours: &str) -> Result<Exposed> {
    let ns = du.namespace().unwrap_or_default();
    let src_ns = &du.spec.source_namespace;
    let csi = du.spec.csi_snapshot.clone().unwrap_or_default();
    let contents: Api<VolumeSnapshotContent> = Api::all(v.client.clone());
    let Some(vs) = v
        .get::<VolumeSnapshot>(src_ns, &csi.volume_snapshot)
        .await?
    else {
        return Ok(Exposed::Waiting(format!(
            "VolumeSnapshot {src_ns}/{} did not appear",
            csi.volume_snapshot
        )));
    };
    let st = vs.status.clone().unwrap_or_default();
    if let Some(e) = st.error.as_ref().and_then(|e| e.message.clone()) {
        return Ok(Exposed::Failed(format!(
            "VolumeSnapshot {src_ns}/{}: {e}",
            csi.volume_snapshot
        )));
    }
    let content_name = st
        .bound_volume_snapshot_content_name
        .clone()
        .unwrap_or_default();
    let content = if content_name.is_empty() {
        None
    } else {
        contents
            .get_opt(&content_name)
            .await
            .map_err(kube_err(format!(
                "reading VolumeSnapshotContent {content_name}"
            )))?
    };
    let handle = content
        .as_ref()
        .and_then(|c| c.status.as_ref()?.snapshot_handle.clone());
    let (Some(content), Some(handle), Some(true)) = (content, handle, st.ready_to_use) else {
        return Ok(Exposed::Waiting(format!(
            "VolumeSnapshot {src_ns}/{} was not ready",
            csi.volume_snapshot
        )));
    };
    contents
        .patch(
            &content_name,
            &super::apply::patch_params(),
            &Patch::Merge(json!({"spec": {"deletionPolicy": "Retain"}})),
        )
        .await
        .map_err(kube_err(format!(
            "retaining VolumeSnapshotContent {content_name}"
        )))?;
    let static_content: VolumeSnapshotContent = serde_json::from_value(json!({
        "metadata": {"name": ours, "labels": content.labels()},
        "spec": {"deletionPolicy": "Delete", "driver": content.spec.driver,
            "source": {"snapshotHandle": handle},
            "volumeSnapshotClassName": content.spec.volume_snapshot_class_name,
            "sourceVolumeMode": content.spec.source_volume_mode,
            "volumeSnapshotRef": {"namespace": ns, "name": ours}},
    }))
    .map_err(|e| Error::Invalid(format!("building VolumeSnapshotContent {ours}: {e}")))?;
    match contents
        .create(&super::apply::post_params(), &static_content)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => {
            return Err(Error::kube(
                format!("creating VolumeSnapshotContent {ours}"),
                e,
            ));
        }
    }
    let snapshot: VolumeSnapshot = serde_json::from_value(json!({
        "metadata": {"name": ours, "namespace": ns,
            "labels": {names::MANAGED_BY: "mover"},
            "ownerReferences": [v.owner(du)]},
        "spec": {"source": {"volumeSnapshotContentName": ours},
            "volumeSnapshotClassName": content.spec.volume_snapshot_class_name},
    }))
    .map_err(|e| Error::Invalid(format!("building VolumeSnapshot {ns}/{ours}: {e}")))?;
    v.create(&ns, &snapshot).await?;
    release_source(v, du, ours).await?;
    Ok(Exposed::Done)
}

/// Deletes the source VolumeSnapshot and its (retained) content once ours holds the
/// snapshot. Run on every turn until it succeeds, so a delete that failed once does not
/// leak the pair: with the source VolumeSnapshot already gone, its content is found by the
/// reference it keeps.
async fn release_source(v: &Velero<'_>, du: &DataUpload, ours: &str) -> Result<()> {
    let src_ns = &du.spec.source_namespace;
    let csi = du.spec.csi_snapshot.clone().unwrap_or_default();
    let contents: Api<VolumeSnapshotContent> = Api::all(v.client.clone());
    let mut leftover: Vec<String> = Vec::new();
    match v
        .get::<VolumeSnapshot>(src_ns, &csi.volume_snapshot)
        .await?
    {
        Some(vs) => {
            if let Some(c) = vs.status.and_then(|s| s.bound_volume_snapshot_content_name) {
                leftover.push(c);
            }
            v.delete::<VolumeSnapshot>(src_ns, &csi.volume_snapshot)
                .await?;
        }
        None => {
            let all = contents
                .list(&ListParams::default())
                .await
                .map_err(kube_err("listing VolumeSnapshotContents".to_string()))?;
            leftover.extend(all.items.into_iter().filter_map(|c| {
                let r = &c.spec.volume_snapshot_ref;
                let names_source = r.namespace.as_deref() == Some(src_ns.as_str())
                    && r.name.as_deref() == Some(csi.volume_snapshot.as_str());
                (names_source && c.name_any() != ours).then(|| c.name_any())
            }));
        }
    }
    for name in leftover.into_iter().filter(|n| n != ours) {
        match contents.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(Error::kube(
                    format!("deleting VolumeSnapshotContent {name}"),
                    e,
                ));
            }
        }
    }
    Ok(())
}

/// One DataDownload.
pub async fn reconcile_download(
    client: &Client,
    opts: &VeleroOptions,
    dd: &DataDownload,
) -> Result<Option<Duration>> {
    if !is_ours(dd.spec.datamover.as_deref(), opts) {
        return Ok(None);
    }
    let v = Velero { client, opts };
    let ns = dd.namespace().unwrap_or_default();
    let name = dd.name_any();
    let ours = names::object_name("velero", &name);
    let phase = dd.phase();
    let status = dd.status.clone().unwrap_or_default();
    let restored_volume = dd.annotations().get(RESTORED_VOLUME).cloned();
    let cleanup = async |v: &Velero<'_>| -> Result<()> {
        v.delete::<VolumeRestore>(&ns, &ours).await?;
        v.delete::<PersistentVolumeClaim>(&ns, &ours).await
    };
    if phase.is_terminal() {
        cleanup(&v).await?;
        return Ok(None);
    }
    let vr = v.get::<VolumeRestore>(&ns, &ours).await?;
    let run = run_status(vr.as_ref());
    if dd.spec.cancel && restored_volume.is_none() {
        let live = run.as_ref().is_some_and(|r| !r.phase.is_final());
        let run_canceled = vr.as_ref().is_some_and(|r| r.spec.cancel);
        if live {
            v.cancel_run::<VolumeRestore, _>(dd, phase, &ours, run_canceled)
                .await?;
            return Ok(Some(RECHECK));
        }
        cleanup(&v).await?;
        return v.end_canceled(dd).await;
    }
    let fail = async |v: &Velero<'_>, message: String| -> Result<Option<Duration>> {
        cleanup(v).await?;
        v.patch_status(
            dd,
            json!({"phase": "Failed", "message": message, "completionTimestamp": now()}),
        )
        .await?;
        Ok(None)
    };
    let target_ns = &dd.spec.target_volume.namespace;
    let target_name = &dd.spec.target_volume.pvc;
    if phase == DataMovePhase::New {
        let bsl = &dd.spec.backup_storage_location;
        return match v.repository(bsl, &dd.spec.source_namespace, false).await? {
            Ok(_) => v.accept(dd).await,
            Err(m) => fail(&v, m).await,
        };
    }
    let target = v
        .get::<PersistentVolumeClaim>(target_ns, target_name)
        .await?;
    if let Some(pv) = restored_volume {
        return hand_over(&v, dd, &pv, target.as_ref()).await;
    }
    let Some(target) = target else {
        if timed_out(
            status.accepted_timestamp.as_ref(),
            &dd.spec.operation_timeout,
        ) {
            return fail(
                &v,
                format!(
                    "target PVC {target_ns}/{target_name} did not appear within operationTimeout {}",
                    dd.spec.operation_timeout
                ),
            )
            .await;
        }
        return Ok(Some(RECHECK));
    };
    let spec = target.spec.clone().unwrap_or_default();
    if vr.is_none() {
        if spec.volume_name.as_deref().is_some_and(|n| !n.is_empty()) {
            return fail(
                &v,
                format!("target PVC {target_ns}/{target_name} is already bound"),
            )
            .await;
        }
        let repo = match v
            .repository(
                &dd.spec.backup_storage_location,
                &dd.spec.source_namespace,
                false,
            )
            .await?
        {
            Ok(r) => r,
            Err(m) => return fail(&v, m).await,
        };
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
        let vr: VolumeRestore = serde_json::from_value(json!({
            "apiVersion": "mover.dev/v1alpha1", "kind": "VolumeRestore",
            "metadata": {"name": ours, "namespace": ns,
                "labels": {names::MANAGED_BY: "mover"},
                "ownerReferences": [v.owner(dd)]},
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
        .map_err(|e| Error::Invalid(format!("building VolumeRestore {ns}/{ours}: {e}")))?;
        v.create(&ns, &vr).await?;
        v.patch_status(dd, json!({"phase": "Prepared"})).await?;
        return Ok(Some(RECHECK));
    }
    let run = run.unwrap_or_default();
    match run.phase {
        RunPhase::Completed => {
            let Some(pv) = v
                .get::<PersistentVolumeClaim>(&ns, &ours)
                .await?
                .and_then(|c| c.spec?.volume_name)
            else {
                return fail(&v, format!("restore PVC {ns}/{ours} has no volume")).await;
            };
            retain_volume(&v, &pv).await?;
            let total = run.summary.as_ref().map(|s| s.bytes_processed).unwrap_or(0);
            v.api::<DataDownload>(&ns)
                .patch(
                    &name,
                    &super::apply::patch_params(),
                    &Patch::Merge(json!({"metadata": {"annotations": {RESTORED_VOLUME: pv,
                            RESTORED_ON_NODE: mover_node(&run)}},
                        "status": {"progress": {"totalBytes": total, "bytesDone": total}}})),
                )
                .await
                .map_err(kube_err(format!("annotating DataDownload {ns}/{name}")))?;
            cleanup(&v).await?;
            Ok(Some(Duration::from_millis(200)))
        }
        RunPhase::Failed | RunPhase::Canceled => {
            let m = run
                .message
                .clone()
                .unwrap_or_else(|| format!("VolumeRestore {ns}/{ours} {}", run.phase.as_str()));
            fail(&v, m).await
        }
        RunPhase::InProgress => {
            v.patch_status(
                dd,
                json!({"phase": "InProgress", "progress": progress(&run)}),
            )
            .await?;
            Ok(Some(RECHECK))
        }
        RunPhase::New | RunPhase::Preparing | RunPhase::Canceling => Ok(Some(RECHECK)),
    }
}

fn quantity_bytes(q: &str) -> Option<u64> {
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

/// Sets the volume's reclaim policy to Retain, remembering the old one, so that deleting the
/// restore claim keeps the data.
async fn retain_volume(v: &Velero<'_>, pv: &str) -> Result<()> {
    let pvs: Api<PersistentVolume> = Api::all(v.client.clone());
    let Some(vol) = pvs
        .get_opt(pv)
        .await
        .map_err(kube_err(format!("reading PersistentVolume {pv}")))?
    else {
        return Ok(());
    };
    let policy = vol
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.clone())
        .unwrap_or_else(|| "Delete".into());
    if policy == "Retain" && vol.annotations().contains_key(RECLAIM_POLICY) {
        return Ok(());
    }
    pvs.patch(
        pv,
        &super::apply::patch_params(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {RECLAIM_POLICY: policy}},
            "spec": {"persistentVolumeReclaimPolicy": "Retain"}}),
        ),
    )
    .await
    .map_err(kube_err(format!("retaining PersistentVolume {pv}")))?;
    Ok(())
}

/// Binds the restored volume to the target claim as Velero's own mover does, then completes
/// the DataDownload once the target is Bound and the reclaim policy is back.
async fn hand_over(
    v: &Velero<'_>,
    dd: &DataDownload,
    pv: &str,
    target: Option<&PersistentVolumeClaim>,
) -> Result<Option<Duration>> {
    let target_ns = &dd.spec.target_volume.namespace;
    let target_name = &dd.spec.target_volume.pvc;
    let Some(target) = target else {
        v.patch_status(
            dd,
            json!({"phase": "Failed", "completionTimestamp": now(),
                "message": format!("target PVC {target_ns}/{target_name} went away before its volume {pv} was bound to it")}),
        )
        .await?;
        return Ok(None);
    };
    let pvs: Api<PersistentVolume> = Api::all(v.client.clone());
    let Some(vol) = pvs
        .get_opt(pv)
        .await
        .map_err(kube_err(format!("reading PersistentVolume {pv}")))?
    else {
        v.patch_status(
            dd,
            json!({"phase": "Failed", "completionTimestamp": now(),
                "message": format!("restored PersistentVolume {pv} went away")}),
        )
        .await?;
        return Ok(None);
    };
    let spec = target.spec.clone().unwrap_or_default();
    if spec.volume_name.as_deref() != Some(pv) {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(v.client.clone(), target_ns);
        claims
            .patch(
                target_name,
                &super::apply::patch_params(),
                &Patch::Merge(json!({"metadata": {"annotations": {
                    "pv.kubernetes.io/bind-completed": null,
                    "pv.kubernetes.io/bound-by-controller": null}},
                    "spec": {"volumeName": pv}})),
            )
            .await
            .map_err(kube_err(format!(
                "setting volumeName of PVC {target_ns}/{target_name}"
            )))?;
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
        pvs.patch(
            pv,
            &super::apply::patch_params(),
            &Patch::Merge(json!({"metadata": {"labels": labels, "annotations": {
                "pv.kubernetes.io/bound-by-controller": null}},
                "spec": {"claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "namespace": target_ns, "name": target_name,
                    "uid": null, "resourceVersion": null}}})),
        )
        .await
        .map_err(kube_err(format!(
            "binding PersistentVolume {pv} to {target_ns}/{target_name}"
        )))?;
        return Ok(Some(Duration::from_secs(1)));
    }
    let bound = target.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    if !bound {
        return Ok(Some(Duration::from_secs(1)));
    }
    if let Some(policy) = vol.annotations().get(RECLAIM_POLICY).cloned() {
        pvs.patch(
            pv,
            &super::apply::patch_params(),
            &Patch::Merge(json!({"metadata": {"annotations": {RECLAIM_POLICY: null}},
                "spec": {"persistentVolumeReclaimPolicy": policy}})),
        )
        .await
        .map_err(kube_err(format!(
            "restoring the reclaim policy of PersistentVolume {pv}"
        )))?;
    }
    v.patch_status(
        dd,
        json!({"phase": "Completed", "completionTimestamp": now(),
            "node": dd.annotations().get(RESTORED_ON_NODE).cloned().unwrap_or_else(controller_node)}),
    )
    .await?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn velero_durations_read_as_go_prints_them() {
        assert_eq!(parse_go_duration("10m0s"), Some(Duration::from_secs(600)));
        assert_eq!(
            parse_go_duration("4h0m0s"),
            Some(Duration::from_secs(4 * 3600))
        );
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("3d"), None);
    }

    fn opts() -> VeleroOptions {
        VeleroOptions {
            namespace: "velero".into(),
            datamover: "mover".into(),
            password_secret: "mover-velero".into(),
            gc: velero_gc::GcOptions {
                interval: Duration::from_secs(3600),
                grace: Duration::from_secs(86_400),
            },
        }
    }

    #[test]
    fn only_operations_naming_this_mover_are_ours() {
        let o = opts();
        assert!(is_ours(Some("mover"), &o));
        for other in [
            None,
            Some(""),
            Some("velero"),
            Some("velero-fs"),
            Some("kubevirt"),
        ] {
            assert!(!is_ours(other, &o), "{other:?}");
        }
    }

    #[test]
    fn a_repository_gets_location_as_env_and_the_credential_as_a_file() {
        let loc = BslRepository {
            url: "s3:http://127.0.0.1:9000/bucket/velero/plugins/mover/app".into(),
            root: "s3:http://127.0.0.1:9000/bucket/velero".into(),
            region: Some("minio".into()),
            path_style: true,
            insecure_skip_tls_verify: false,
            ca: Some(BslCa::SecretKey {
                name: "ca".into(),
                key: "ca.crt".into(),
            }),
            credential: velero_bsl::BslCredential {
                name: "cloud-credentials".into(),
                key: "cloud".into(),
            },
            profile: "default".into(),
            namespace: "velero".into(),
        };
        let repo =
            repository_object("velero-default-app", "default", &loc, "mover-velero").unwrap();
        assert_eq!(repo.spec.secret_ref.name, "mover-velero");
        assert_eq!(
            repo.annotations().get(super::super::velero_gc::BSL_ROOT),
            Some(&loc.root)
        );
        assert!(
            repo.labels()
                .contains_key(super::super::velero_gc::BSL_LABEL)
        );
        assert_eq!(
            repo.spec.env.get("RESTIC_REPOSITORY").map(String::as_str),
            Some(loc.url.as_str())
        );
        assert_eq!(
            repo.spec.env.get("AWS_DEFAULT_REGION").map(String::as_str),
            Some("minio")
        );
        assert!(!repo.spec.env.contains_key("AWS_SHARED_CREDENTIALS_FILE"));
        let cred = repo.spec.credentials_file.unwrap();
        assert_eq!(
            (cred.name.as_str(), cred.key.as_str()),
            ("cloud-credentials", "cloud")
        );
        assert_eq!(
            repo.spec.custom_ca.unwrap().secret_name.as_deref(),
            Some("ca")
        );
        let inline = BslRepository {
            ca: Some(BslCa::Inline("-----BEGIN CERTIFICATE-----".into())),
            ..loc
        };
        let repo = repository_object("r", "default", &inline, "p").unwrap();
        let ca = repo.spec.custom_ca.unwrap();
        assert_eq!(ca.config_map_name, Some(ca_config_map_name("r")));
        assert_eq!((ca.secret_name, ca.key.as_str()), (None, CA_CONFIG_MAP_KEY));
        assert!(!repo.spec.env.contains_key("MOVER_INSECURE_TLS"));
        let insecure = BslRepository {
            insecure_skip_tls_verify: true,
            ..inline
        };
        let repo = repository_object("r", "default", &insecure, "p").unwrap();
        assert_eq!(
            repo.spec.env.get("MOVER_INSECURE_TLS").map(String::as_str),
            Some("true")
        );
    }

    #[test]
    fn quantities_read_binary_and_decimal_suffixes() {
        assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
        assert_eq!(quantity_bytes("5M"), Some(5_000_000));
        assert_eq!(quantity_bytes("1234"), Some(1234));
        assert_eq!(quantity_bytes("x"), None);
    }
}
