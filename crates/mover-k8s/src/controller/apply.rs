//! The thin I/O step: carries out the [`Action`]s a plan returned, in order, against the API
//! server. Creating an object that exists and deleting one that is gone both count as done,
//! so a plan may repeat an action after a restart or a lost race.

use crate::api::VolumeBackup;
use crate::api::snapshot::VolumeSnapshot;
use crate::error::{Error, Result};
use crate::names;
use crate::plans::jobspec::RunAccess;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::time::Duration;

/// One step a plan asks for.
#[derive(Debug, Clone)]
pub enum Action {
    CreateSnapshot(Box<VolumeSnapshot>),
    CreatePvc(Box<PersistentVolumeClaim>),
    /// The run's ServiceAccount, Role and RoleBinding.
    CreateAccess(Box<RunAccess>),
    /// A mover Job; under `max_jobs` of `repository`, it waits while that many run.
    CreateJob {
        job: Box<Job>,
        repository: String,
        max_jobs: Option<u32>,
    },
    DeleteJob(String),
    /// A VolumeBackup made by a schedule.
    CreateBackup(Box<VolumeBackup>),
    /// Sets `spec.cancel` of a VolumeBackup (a schedule replacing a run).
    CancelBackup(String),
    DeleteBackup(String),
    /// A maintenance Job, started only while this run holds the repository's Lease (taken
    /// when free, or when its holder Job is gone or finished).
    StartMaintenance {
        lease: String,
        job: Box<Job>,
    },
    /// Gives the Lease back if `holder` still holds it.
    ReleaseLease {
        name: String,
        holder: String,
    },
    DeleteSnapshot(String),
    DeletePvc(String),
    /// Pre-binds PersistentVolume `volume` to claim `claim` (a populated volume handed from
    /// the prime claim to the claim that asked for it); the PV binder completes the bind.
    RebindVolume {
        volume: String,
        claim: String,
        claim_uid: String,
    },
    /// A JSON merge patch of the resource's status (the fields the controller owns).
    PatchStatus(serde_json::Value),
    /// A JSON merge patch of the status of Repository `name` in the run's namespace (what a
    /// finished run learned of it: its snapshot count, the last backup). A Repository that is
    /// gone is no error.
    PatchRepositoryStatus {
        name: String,
        status: serde_json::Value,
    },
    AddFinalizer,
    RemoveFinalizer,
    Event {
        warning: bool,
        reason: String,
        note: String,
    },
}

/// What applying a plan came to.
#[derive(Debug, Default)]
pub struct Applied {
    /// A Job waits for a free `maxJobs` slot or for the repository's maintenance Lease.
    pub waiting_for_slot: bool,
}

/// How long a maintenance Lease lasts when its holder Job cannot be read.
const MAINTENANCE_LEASE_SECONDS: i32 = 6 * 3600;

/// Shared by every apply: the client and the event recorder.
pub struct Io {
    pub client: Client,
    pub recorder: Recorder,
    /// Serializes the count-then-create of Jobs under `maxJobs`.
    pub job_slots: tokio::sync::Mutex<()>,
}

/// Patch parameters of the controller's writes, under its own field manager.
pub fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(names::CONTROLLER_MANAGER.into()),
        ..Default::default()
    }
}

/// Create and replace parameters of the controller's writes, under its own field manager.
pub fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(names::CONTROLLER_MANAGER.into()),
        ..Default::default()
    }
}

fn ignore_conflict<T>(
    r: std::result::Result<T, kube::Error>,
) -> std::result::Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

fn ignore_missing<T>(
    r: std::result::Result<T, kube::Error>,
) -> std::result::Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether a Job still has pods that may run (not finished, not failed).
pub fn job_is_active(job: &Job) -> bool {
    let done = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        });
    !done
}

impl Io {
    /// Carries out `actions` for `obj`.
    pub async fn apply<K>(&self, obj: &K, actions: Vec<Action>) -> Result<Applied>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned,
    {
        let ns = obj.namespace().unwrap_or_default();
        let name = obj.name_any();
        let kind = K::kind(&()).to_string();
        let mut applied = Applied::default();
        let pp = post_params();
        for action in actions {
            match action {
                Action::CreateSnapshot(s) => {
                    let api: Api<VolumeSnapshot> = Api::namespaced(self.client.clone(), &ns);
                    ignore_conflict(api.create(&pp, &s).await).map_err(|e| {
                        Error::kube(format!("creating VolumeSnapshot {}", s.name_any()), e)
                    })?;
                }
                Action::CreatePvc(p) => {
                    let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
                    ignore_conflict(api.create(&pp, &p).await)
                        .map_err(|e| Error::kube(format!("creating PVC {}", p.name_any()), e))?;
                }
                Action::CreateAccess(a) => {
                    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
                        Api::namespaced(self.client.clone(), &ns);
                    let what = format!("creating ServiceAccount {}", a.service_account.name_any());
                    ignore_conflict(sa.create(&pp, &a.service_account).await)
                        .map_err(|e| Error::kube(&what, e))?;
                    let roles: Api<Role> = Api::namespaced(self.client.clone(), &ns);
                    ignore_conflict(roles.create(&pp, &a.role).await).map_err(|e| {
                        Error::kube(format!("creating Role {}", a.role.name_any()), e)
                    })?;
                    let bindings: Api<RoleBinding> = Api::namespaced(self.client.clone(), &ns);
                    ignore_conflict(bindings.create(&pp, &a.binding).await).map_err(|e| {
                        Error::kube(format!("creating RoleBinding {}", a.binding.name_any()), e)
                    })?;
                }
                Action::CreateJob {
                    job,
                    repository,
                    max_jobs,
                } => {
                    let api: Api<Job> = Api::namespaced(self.client.clone(), &ns);
                    let _slot = self.job_slots.lock().await;
                    if let Some(max) = max_jobs {
                        let lp = ListParams::default().labels(&format!(
                            "{}={}",
                            names::REPOSITORY,
                            names::label_value(&repository)
                        ));
                        let jobs = api
                            .list(&lp)
                            .await
                            .map_err(|e| Error::kube("listing mover Jobs", e))?;
                        let running = jobs
                            .items
                            .iter()
                            .filter(|j| j.name_any() != job.name_any() && job_is_active(j))
                            .count();
                        if running >= max as usize {
                            applied.waiting_for_slot = true;
                            break;
                        }
                    }
                    ignore_conflict(api.create(&pp, &job).await)
                        .map_err(|e| Error::kube(format!("creating Job {}", job.name_any()), e))?;
                    tracing::info!(
                        kind = %kind, namespace = %ns, name = %name, job = %job.name_any(),
                        "created Job"
                    );
                }
                Action::DeleteJob(job) => {
                    let api: Api<Job> = Api::namespaced(self.client.clone(), &ns);
                    let dp = DeleteParams {
                        propagation_policy: Some(PropagationPolicy::Background),
                        ..Default::default()
                    };
                    ignore_missing(api.delete(&job, &dp).await)
                        .map_err(|e| Error::kube(format!("deleting Job {job}"), e))?;
                }
                Action::CreateBackup(vb) => {
                    let api: Api<VolumeBackup> = Api::namespaced(self.client.clone(), &ns);
                    ignore_conflict(api.create(&pp, &vb).await).map_err(|e| {
                        Error::kube(format!("creating VolumeBackup {}", vb.name_any()), e)
                    })?;
                }
                Action::CancelBackup(b) => {
                    let api: Api<VolumeBackup> = Api::namespaced(self.client.clone(), &ns);
                    let patch = Patch::Merge(serde_json::json!({"spec": {"cancel": true}}));
                    ignore_missing(api.patch(&b, &patch_params(), &patch).await)
                        .map_err(|e| Error::kube(format!("canceling VolumeBackup {b}"), e))?;
                }
                Action::DeleteBackup(b) => {
                    let api: Api<VolumeBackup> = Api::namespaced(self.client.clone(), &ns);
                    ignore_missing(api.delete(&b, &DeleteParams::default()).await)
                        .map_err(|e| Error::kube(format!("deleting VolumeBackup {b}"), e))?;
                }
                Action::StartMaintenance { lease, job } => {
                    if !self.take_lease(&ns, &lease, &job.name_any()).await? {
                        applied.waiting_for_slot = true;
                        break;
                    }
                    let api: Api<Job> = Api::namespaced(self.client.clone(), &ns);
                    ignore_conflict(api.create(&pp, &job).await)
                        .map_err(|e| Error::kube(format!("creating Job {}", job.name_any()), e))?;
                }
                Action::ReleaseLease { name, holder } => {
                    let api: Api<Lease> = Api::namespaced(self.client.clone(), &ns);
                    let lease = api
                        .get_opt(&name)
                        .await
                        .map_err(|e| Error::kube(format!("reading Lease {name}"), e))?;
                    let held = lease
                        .as_ref()
                        .and_then(|l| l.spec.as_ref()?.holder_identity.clone());
                    if held.as_deref() == Some(holder.as_str()) {
                        ignore_missing(api.delete(&name, &DeleteParams::default()).await)
                            .map_err(|e| Error::kube(format!("deleting Lease {name}"), e))?;
                    }
                }
                Action::DeleteSnapshot(s) => {
                    let api: Api<VolumeSnapshot> = Api::namespaced(self.client.clone(), &ns);
                    ignore_missing(api.delete(&s, &DeleteParams::default()).await)
                        .map_err(|e| Error::kube(format!("deleting VolumeSnapshot {s}"), e))?;
                }
                Action::DeletePvc(p) => {
                    let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
                    ignore_missing(api.delete(&p, &DeleteParams::default()).await)
                        .map_err(|e| Error::kube(format!("deleting PVC {p}"), e))?;
                }
                Action::RebindVolume {
                    volume,
                    claim,
                    claim_uid,
                } => {
                    let api: Api<k8s_openapi::api::core::v1::PersistentVolume> =
                        Api::all(self.client.clone());
                    let patch = serde_json::json!({"spec": {"claimRef": {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "namespace": ns,
                        "name": claim,
                        "uid": claim_uid,
                        "resourceVersion": null,
                    }}});
                    api.patch(&volume, &patch_params(), &Patch::Merge(patch))
                        .await
                        .map_err(|e| {
                            Error::kube(format!("binding PersistentVolume {volume} to {claim}"), e)
                        })?;
                }
                Action::PatchStatus(status) => {
                    let api: Api<K> = Api::namespaced(self.client.clone(), &ns);
                    let patch = Patch::Merge(serde_json::json!({ "status": status }));
                    api.patch_status(&name, &patch_params(), &patch)
                        .await
                        .map_err(|e| {
                            Error::kube(format!("writing the status of {kind} {name}"), e)
                        })?;
                    if let Some(phase) = status.get("phase").and_then(|p| p.as_str()) {
                        let message = status.get("message").and_then(|m| m.as_str());
                        tracing::info!(
                            kind = %kind, namespace = %ns, name = %name, phase,
                            detail = message.unwrap_or(""),
                            "phase changed"
                        );
                    }
                }
                Action::PatchRepositoryStatus {
                    name: repository,
                    status,
                } => {
                    let api: Api<crate::api::Repository> =
                        Api::namespaced(self.client.clone(), &ns);
                    let patch = Patch::Merge(serde_json::json!({ "status": status }));
                    ignore_missing(api.patch_status(&repository, &patch_params(), &patch).await)
                        .map_err(|e| {
                            Error::kube(format!("writing the status of Repository {repository}"), e)
                        })?;
                }
                Action::AddFinalizer | Action::RemoveFinalizer => {
                    let add = matches!(action, Action::AddFinalizer);
                    self.set_finalizer(obj, add).await?;
                }
                Action::Event {
                    warning,
                    reason,
                    note,
                } => {
                    if warning {
                        tracing::warn!(kind = %kind, namespace = %ns, name = %name, reason = %reason, "{note}");
                    } else {
                        tracing::info!(kind = %kind, namespace = %ns, name = %name, reason = %reason, "{note}");
                    }
                    let event = Event {
                        type_: if warning {
                            EventType::Warning
                        } else {
                            EventType::Normal
                        },
                        reason: reason.clone(),
                        note: Some(truncate(&note, 1000)),
                        action: reason,
                        secondary: None,
                    };
                    // An event that cannot be written is not worth failing the run for.
                    if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
                        tracing::warn!("event for {kind} {ns}/{name} not written: {e}");
                    }
                }
            }
        }
        Ok(applied)
    }

    /// Takes Lease `name` for `holder`: free, already `holder`'s, or held by a Job that is
    /// gone or finished (or, when that cannot be told, expired). A lost race is a `false`.
    async fn take_lease(&self, ns: &str, name: &str, holder: &str) -> Result<bool> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), ns);
        let existing = leases
            .get_opt(name)
            .await
            .map_err(|e| Error::kube(format!("reading Lease {name}"), e))?;
        let now = MicroTime(jiff::Timestamp::now());
        let spec = LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(MAINTENANCE_LEASE_SECONDS),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            ..Default::default()
        };
        let result = match existing {
            None => {
                let lease = Lease {
                    metadata: kube::api::ObjectMeta {
                        name: Some(name.to_string()),
                        labels: Some([(names::MANAGED_BY.to_string(), "mover".to_string())].into()),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                leases.create(&post_params(), &lease).await.map(|_| ())
            }
            Some(mut lease) => {
                let current = lease.spec.clone().unwrap_or_default();
                let other = current
                    .holder_identity
                    .clone()
                    .filter(|h| !h.is_empty() && h != holder);
                if let Some(other) = other {
                    let jobs: Api<Job> = Api::namespaced(self.client.clone(), ns);
                    let job = jobs
                        .get_opt(&other)
                        .await
                        .map_err(|e| Error::kube(format!("reading Job {other}"), e))?;
                    if job.as_ref().is_some_and(job_is_active) {
                        return Ok(false);
                    }
                } else if current.holder_identity.as_deref() == Some(holder) {
                    return Ok(true);
                }
                lease.spec = Some(spec);
                // The resourceVersion read above makes the replace a compare-and-swap.
                leases
                    .replace(name, &post_params(), &lease)
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(Error::kube(format!("taking Lease {name}"), e)),
        }
    }

    async fn set_finalizer<K>(&self, obj: &K, add: bool) -> Result<()>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned,
    {
        let ns = obj.namespace().unwrap_or_default();
        let api: Api<K> = Api::namespaced(self.client.clone(), &ns);
        let mut finalizers: Vec<String> = obj.finalizers().to_vec();
        let has = finalizers.iter().any(|f| f == names::FINALIZER);
        if add == has {
            return Ok(());
        }
        if add {
            finalizers.push(names::FINALIZER.to_string());
        } else {
            finalizers.retain(|f| f != names::FINALIZER);
        }
        // The resourceVersion makes this a compare-and-swap: a concurrent change fails it
        // and the next reconcile sees the new object.
        let patch = serde_json::json!({
            "metadata": {
                "finalizers": finalizers,
                "resourceVersion": obj.resource_version(),
            }
        });
        ignore_missing(
            api.patch(&obj.name_any(), &patch_params(), &Patch::Merge(patch))
                .await,
        )
        .map_err(|e| Error::kube(format!("updating the finalizers of {}", obj.name_any()), e))
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// How long to wait before looking again at a run that waits for something.
pub const WAIT: Duration = Duration::from_secs(5);
