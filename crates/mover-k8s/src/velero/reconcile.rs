//! The thin I/O of a Velero turn: read what [`plan`](super::plan) needs, carry out the steps it
//! returns, in order, stopping at the first that fails (the next turn asks again).

use super::plan::{
    self, DownloadObserved, Location, Plan, RECLAIM_POLICY, RESTORED_VOLUME, Step, Turn,
    UploadObserved,
};
use super::{CA_CONFIG_MAP_KEY, VeleroOptions, bsl, ca_config_map_name, is_ours, repository_name};
use crate::api::snapshot::{VolumeSnapshot, VolumeSnapshotContent};
use crate::api::velero::{BackupStorageLocation, DataDownload, DataUpload};
use crate::api::{Repository, VolumeBackup, VolumeRestore};
use crate::error::{Error, Result};
use crate::names;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch};
use kube::core::NamespaceResourceScope;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::fmt::Debug;
use std::time::Duration;

/// The node this controller runs on (`NODE_NAME` from the downward API), reported as the
/// node that accepted a DataUpload or DataDownload.
fn controller_node() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "mover-controller".to_string())
}

fn turn() -> Turn {
    Turn {
        now: Time(jiff::Timestamp::now()),
        node: controller_node(),
    }
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |e| Error::kube(what, e)
}

fn ignore(
    code: u16,
    r: std::result::Result<(), kube::Error>,
) -> std::result::Result<(), kube::Error> {
    match r {
        Err(kube::Error::Api(s)) if s.code == code => Ok(()),
        r => r,
    }
}

struct Velero<'a> {
    client: &'a Client,
    opts: &'a VeleroOptions,
}

impl Velero<'_> {
    fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), ns)
    }

    fn cluster<K>(&self) -> Api<K>
    where
        K: Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>,
    {
        Api::all(self.client.clone())
    }

    async fn get<K>(&self, ns: &str, name: &str) -> Result<Option<K>>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        self.api::<K>(ns)
            .get_opt(name)
            .await
            .map_err(kube_err(format!("reading {} {ns}/{name}", K::kind(&()))))
    }

    async fn get_cluster<K>(&self, name: &str) -> Result<Option<K>>
    where
        K: Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        self.cluster::<K>()
            .get_opt(name)
            .await
            .map_err(kube_err(format!("reading {} {name}", K::kind(&()))))
    }

    async fn delete<K>(&self, ns: &str, name: &str) -> Result<()>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let r = self
            .api::<K>(ns)
            .delete(name, &DeleteParams::background())
            .await;
        ignore(404, r.map(drop)).map_err(kube_err(format!("deleting {} {ns}/{name}", K::kind(&()))))
    }

    async fn create<K>(&self, obj: &K) -> Result<()>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Serialize
            + DeserializeOwned
            + Debug,
    {
        let ns = obj.namespace().unwrap_or_default();
        let r = self
            .api::<K>(&ns)
            .create(&crate::controller::apply::post_params(), obj)
            .await;
        ignore(409, r.map(drop)).map_err(kube_err(format!(
            "creating {} {ns}/{}",
            K::kind(&()),
            obj.name_any()
        )))
    }

    async fn merge<K>(&self, api: Api<K>, name: &str, patch: Value, what: String) -> Result<()>
    where
        K: Resource + Clone + DeserializeOwned + Debug,
    {
        api.patch(
            name,
            &crate::controller::apply::patch_params(),
            &Patch::Merge(patch),
        )
        .await
        .map(drop)
        .map_err(kube_err(what))
    }

    /// What a turn needs of the BSL `bsl_name` and the Repository it maps onto.
    async fn location(&self, bsl_name: &str, source_namespace: &str) -> Result<Location> {
        let ns = &self.opts.namespace;
        let bsl = self.get::<BackupStorageLocation>(ns, bsl_name).await?;
        let repo = repository_name(bsl_name, source_namespace);
        let repository_exists = self.get::<Repository>(ns, &repo).await?.is_some();
        let inline_ca = bsl.as_ref().is_some_and(|b| {
            bsl::repository_for(b, source_namespace)
                .is_ok_and(|m| matches!(m.ca, Some(bsl::BslCa::Inline(_))))
        });
        let ca_config_map = if inline_ca {
            self.get::<ConfigMap>(ns, &ca_config_map_name(&repo))
                .await?
        } else {
            None
        };
        Ok(Location {
            bsl,
            repository_exists,
            ca_config_map,
        })
    }

    /// Carries out `plan`'s steps for operation `op` (a DataUpload or DataDownload) whose
    /// runs are of kind `R`.
    async fn apply<K, R>(&self, op: &K, plan: Plan) -> Result<Option<Duration>>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug,
        R: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let ns = op.namespace().unwrap_or_default();
        let vns = &self.opts.namespace;
        for step in plan.steps {
            match step {
                Step::CreateRepository(repo) => self.create(repo.as_ref()).await?,
                Step::WriteCaConfigMap { name, pem, exists } => {
                    let data = json!({CA_CONFIG_MAP_KEY: pem});
                    let what = format!("writing ConfigMap {vns}/{name}");
                    if exists {
                        self.merge(
                            self.api::<ConfigMap>(vns),
                            &name,
                            json!({"data": data}),
                            what,
                        )
                        .await?;
                    } else {
                        let map: ConfigMap = serde_json::from_value(json!({
                            "metadata": {"name": name, "namespace": vns,
                                "labels": {names::MANAGED_BY: "mover"}},
                            "data": data,
                        }))
                        .map_err(|e| {
                            Error::Invalid(format!("building ConfigMap {vns}/{name}: {e}"))
                        })?;
                        self.create(&map).await?;
                    }
                }
                Step::RetainContent(name) => {
                    let patch = json!({"spec": {"deletionPolicy": "Retain"}});
                    let what = format!("retaining VolumeSnapshotContent {name}");
                    self.merge(self.cluster::<VolumeSnapshotContent>(), &name, patch, what)
                        .await?;
                }
                Step::CreateContent(content) => {
                    let r = self
                        .cluster::<VolumeSnapshotContent>()
                        .create(&crate::controller::apply::post_params(), &content)
                        .await;
                    ignore(409, r.map(drop)).map_err(kube_err(format!(
                        "creating VolumeSnapshotContent {}",
                        content.name_any()
                    )))?;
                }
                Step::CreateSnapshot(s) => self.create(s.as_ref()).await?,
                Step::DeleteSnapshot { namespace, name } => {
                    self.delete::<VolumeSnapshot>(&namespace, &name).await?
                }
                Step::DeleteContent(name) => {
                    let r = self
                        .cluster::<VolumeSnapshotContent>()
                        .delete(&name, &DeleteParams::background())
                        .await;
                    ignore(404, r.map(drop))
                        .map_err(kube_err(format!("deleting VolumeSnapshotContent {name}")))?;
                }
                Step::CreateBackup(vb) => self.create(vb.as_ref()).await?,
                Step::CreateRestore(vr) => self.create(vr.as_ref()).await?,
                Step::CancelRun(name) => {
                    let what = format!("canceling {} {ns}/{name}", R::kind(&()));
                    let patch = json!({"spec": {"cancel": true}});
                    self.merge(self.api::<R>(&ns), &name, patch, what).await?;
                }
                Step::DeleteBackup(name) => self.delete::<VolumeBackup>(&ns, &name).await?,
                Step::DeleteRestore(name) => self.delete::<VolumeRestore>(&ns, &name).await?,
                Step::DeletePvc(name) => self.delete::<PersistentVolumeClaim>(&ns, &name).await?,
                Step::PatchOperation(patch) => {
                    let what = format!("writing {} {ns}/{}", K::kind(&()), op.name_any());
                    self.merge(self.api::<K>(&ns), &op.name_any(), patch, what)
                        .await?;
                }
                Step::RetainVolume { volume, previous } => {
                    let patch = json!({"metadata": {"annotations": {RECLAIM_POLICY: previous}},
                        "spec": {"persistentVolumeReclaimPolicy": "Retain"}});
                    let what = format!("retaining PersistentVolume {volume}");
                    self.merge(self.cluster::<PersistentVolume>(), &volume, patch, what)
                        .await?;
                }
                Step::BindClaim {
                    namespace,
                    name,
                    volume,
                } => {
                    let patch = json!({"metadata": {"annotations": {
                            "pv.kubernetes.io/bind-completed": null,
                            "pv.kubernetes.io/bound-by-controller": null}},
                        "spec": {"volumeName": volume}});
                    let what = format!("setting volumeName of PVC {namespace}/{name}");
                    let claims = self.api::<PersistentVolumeClaim>(&namespace);
                    self.merge(claims, &name, patch, what).await?;
                }
                Step::BindVolume {
                    volume,
                    namespace,
                    name,
                    labels,
                } => {
                    let patch = json!({"metadata": {"labels": labels, "annotations": {
                            "pv.kubernetes.io/bound-by-controller": null}},
                        "spec": {"claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                            "namespace": namespace, "name": name,
                            "uid": null, "resourceVersion": null}}});
                    let what = format!("binding PersistentVolume {volume} to {namespace}/{name}");
                    self.merge(self.cluster::<PersistentVolume>(), &volume, patch, what)
                        .await?;
                }
                Step::RestoreReclaimPolicy { volume, policy } => {
                    let patch = json!({"metadata": {"annotations": {RECLAIM_POLICY: null}},
                        "spec": {"persistentVolumeReclaimPolicy": policy}});
                    let what = format!("restoring the reclaim policy of PersistentVolume {volume}");
                    self.merge(self.cluster::<PersistentVolume>(), &volume, patch, what)
                        .await?;
                }
            }
        }
        Ok(plan.requeue)
    }
}

/// One DataUpload: read, plan, apply.
pub async fn reconcile_upload(
    client: &Client,
    opts: &VeleroOptions,
    du: &DataUpload,
) -> Result<Option<Duration>> {
    if !is_ours(du.spec.datamover.as_deref(), opts) {
        return Ok(None);
    }
    let v = Velero { client, opts };
    let obs = if du.phase().is_terminal() {
        UploadObserved::default()
    } else {
        observe_upload(&v, du).await?
    };
    let plan = plan::plan_upload(du, &obs, opts, &turn());
    v.apply::<DataUpload, VolumeBackup>(du, plan).await
}

async fn observe_upload(v: &Velero<'_>, du: &DataUpload) -> Result<UploadObserved> {
    let ns = du.namespace().unwrap_or_default();
    let ours = plan::ours(&du.name_any());
    let run = v.get::<VolumeBackup>(&ns, &ours).await?;
    let mut obs = UploadObserved::default();
    if run.is_none() {
        let src_ns = &du.spec.source_namespace;
        let source_name = du
            .spec
            .csi_snapshot
            .as_ref()
            .map(|c| c.volume_snapshot.clone())
            .unwrap_or_default();
        obs.location = Some(v.location(&du.spec.backup_storage_location, src_ns).await?);
        obs.exposed = v.get::<VolumeSnapshot>(&ns, &ours).await?.is_some();
        obs.source = v.get::<VolumeSnapshot>(src_ns, &source_name).await?;
        let bound = obs.source.as_ref().and_then(|s| {
            s.status
                .as_ref()?
                .bound_volume_snapshot_content_name
                .clone()
        });
        if let Some(content) = bound.filter(|c| !c.is_empty()) {
            obs.source_content = v.get_cluster::<VolumeSnapshotContent>(&content).await?;
        }
        if obs.source.is_none() && obs.exposed {
            let all = v
                .cluster::<VolumeSnapshotContent>()
                .list(&ListParams::default())
                .await
                .map_err(kube_err("listing VolumeSnapshotContents"))?;
            obs.contents_naming_source = all
                .items
                .iter()
                .filter(|c| plan::names_source(du, c))
                .map(|c| c.name_any())
                .collect();
        }
    } else if du.phase() == crate::api::velero::DataMovePhase::New {
        let src_ns = &du.spec.source_namespace;
        obs.location = Some(v.location(&du.spec.backup_storage_location, src_ns).await?);
    }
    obs.run = run;
    Ok(obs)
}

/// One DataDownload: read, plan, apply.
pub async fn reconcile_download(
    client: &Client,
    opts: &VeleroOptions,
    dd: &DataDownload,
) -> Result<Option<Duration>> {
    if !is_ours(dd.spec.datamover.as_deref(), opts) {
        return Ok(None);
    }
    let v = Velero { client, opts };
    let obs = if dd.phase().is_terminal() {
        DownloadObserved::default()
    } else {
        observe_download(&v, dd).await?
    };
    let plan = plan::plan_download(dd, &obs, opts, &turn());
    v.apply::<DataDownload, VolumeRestore>(dd, plan).await
}

async fn observe_download(v: &Velero<'_>, dd: &DataDownload) -> Result<DownloadObserved> {
    let ns = dd.namespace().unwrap_or_default();
    let ours = plan::ours(&dd.name_any());
    let target = &dd.spec.target_volume;
    let mut obs = DownloadObserved {
        run: v.get::<VolumeRestore>(&ns, &ours).await?,
        target: v
            .get::<PersistentVolumeClaim>(&target.namespace, &target.pvc)
            .await?,
        ..Default::default()
    };
    let handed_over = dd.annotations().get(RESTORED_VOLUME).cloned();
    if obs.run.is_none() && handed_over.is_none()
        || dd.phase() == crate::api::velero::DataMovePhase::New
    {
        let loc = v
            .location(&dd.spec.backup_storage_location, &dd.spec.source_namespace)
            .await?;
        obs.location = Some(loc);
    }
    let completed = obs
        .run
        .as_ref()
        .and_then(|r| r.status.as_ref())
        .is_some_and(|s| s.phase == crate::api::common::RunPhase::Completed);
    if handed_over.is_none() && completed {
        obs.restore_claim_volume = v
            .get::<PersistentVolumeClaim>(&ns, &ours)
            .await?
            .and_then(|c| c.spec?.volume_name)
            .filter(|n| !n.is_empty());
    }
    if let Some(pv) = handed_over.or_else(|| obs.restore_claim_volume.clone()) {
        obs.volume = v.get_cluster::<PersistentVolume>(&pv).await?;
    }
    Ok(obs)
}
