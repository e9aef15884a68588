//! `mover controller`: watches Repositories, VolumeBackups, VolumeRestores and
//! BackupSchedules (and the Jobs, PVCs, VolumeSnapshots and VolumeBackups they own), gathers
//! what each plan needs, runs the plan and applies its actions. One replica acts at a time
//! (a Lease); `/metrics`, `/healthz` and `/readyz` are served on `--metrics-addr`.
//!
//! Reads are gets by the stable names a run gives its objects, so a restarted controller
//! adopts the Jobs of runs in progress and carries on. Secrets are not read at all, or as
//! metadata only with `--watch-secrets`: no credential passes through the controller.

pub mod apply;
pub mod leader;
pub mod metrics;
pub mod triggers;

use crate::api::snapshot::VolumeSnapshot;
use crate::api::velero::{DataDownload, DataUpload, DeleteBackupRequest};
use crate::api::{BackupSchedule, Repository, RunPhase, VolumeBackup, VolumeRestore};
use crate::controller::apply::{Action, Io, WAIT};
use crate::controller::metrics::Metrics;
use crate::error::{Error, Result};
use crate::plans::{backup, repository, restore, schedule};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Event, Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// The image of mover Jobs (this controller's own image, normally).
    pub image: String,
    /// Watch only this namespace (all when `None`).
    pub namespace: Option<String>,
    pub metrics_addr: String,
    pub leader_election: bool,
    /// Namespace and name of the leader Lease.
    pub lease_namespace: String,
    pub lease_name: String,
    /// Velero's data mover side, when enabled.
    pub velero: Option<crate::velero::VeleroOptions>,
    /// Read and watch the metadata of the Secrets Repositories name, so a missing Secret is
    /// seen without a probe and a fixed one is probed at once (needs `list` and `watch` on
    /// Secrets). Off: the probe pod tells a missing Secret, and a Failed repository is probed
    /// again on a backoff.
    pub watch_secrets: bool,
}

struct Ctx {
    client: Client,
    velero: Option<crate::velero::VeleroOptions>,
    io: Io,
    image: String,
    metrics: Arc<Metrics>,
    watch_secrets: bool,
    refusals: Refusals,
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

fn api<K>(client: &Client, ns: &str) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    Api::namespaced(client.clone(), ns)
}

async fn get<K>(client: &Client, ns: &str, name: &str) -> Result<Option<K>>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    api::<K>(client, ns)
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("reading {} {ns}/{name}", K::kind(&())), e))
}

/// The pods of `job`.
async fn job_pods(client: &Client, ns: &str, job: &Job) -> Result<Vec<Pod>> {
    let lp = ListParams::default().labels(&format!("job-name={}", job.name_any()));
    Ok(api::<Pod>(client, ns)
        .list(&lp)
        .await
        .map_err(|e| Error::kube(format!("listing the pods of Job {}", job.name_any()), e))?
        .items)
}

/// The termination message of a Job's newest finished pod.
async fn termination_message(
    client: &Client,
    ns: &str,
    job: Option<&Job>,
) -> Result<Option<String>> {
    let Some(job) = job else {
        return Ok(None);
    };
    let pods = job_pods(client, ns, job).await?;
    let mut messages: Vec<(Option<Time>, String)> = pods
        .iter()
        .filter_map(|p| {
            let status = p.status.as_ref()?.container_statuses.as_ref()?;
            let t = status
                .iter()
                .find(|c| c.name == "mover")?
                .state
                .as_ref()?
                .terminated
                .clone()?;
            Some((t.finished_at.clone(), t.message.clone().unwrap_or_default()))
        })
        .collect();
    messages.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(messages.pop().map(|(_, m)| m).filter(|m| !m.is_empty()))
}

/// Kubelet's message when a pod of `job` cannot start because its configuration cannot be
/// assembled (`CreateContainerConfigError`: a Secret or key it needs does not exist).
async fn pod_config_error(client: &Client, ns: &str, job: Option<&Job>) -> Result<Option<String>> {
    let Some(job) = job else {
        return Ok(None);
    };
    let pods = job_pods(client, ns, job).await?;
    Ok(pods.iter().find_map(|p| {
        let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
        let waiting = statuses
            .iter()
            .find(|c| c.name == "mover")?
            .state
            .as_ref()?
            .waiting
            .as_ref()?;
        (waiting.reason.as_deref() == Some("CreateContainerConfigError"))
            .then(|| waiting.message.clone().unwrap_or_default())
    }))
}

/// Why a running Job has no pod: the message of the Job controller's `FailedCreate` event
/// (a Pod Security or webhook denial, an exhausted quota, a missing ServiceAccount), when
/// the Job has never had a pod.
async fn job_blocked(client: &Client, ns: &str, job: &Option<Job>) -> Result<Option<String>> {
    let Some(job) = job else {
        return Ok(None);
    };
    if crate::plans::run::job_state(Some(job)) != crate::plans::run::JobState::Running {
        return Ok(None);
    }
    let had_pod = job.status.as_ref().is_some_and(|s| {
        s.active.unwrap_or(0) + s.succeeded.unwrap_or(0) + s.failed.unwrap_or(0) > 0
    });
    if had_pod {
        return Ok(None);
    }
    let lp = ListParams::default().fields(&format!(
        "involvedObject.kind=Job,involvedObject.name={},reason=FailedCreate",
        job.name_any()
    ));
    let events = api::<Event>(client, ns)
        .list(&lp)
        .await
        .map_err(|e| Error::kube(format!("listing the events of Job {}", job.name_any()), e))?;
    Ok(events
        .items
        .into_iter()
        .filter(|e| e.involved_object.uid == job.metadata.uid)
        .max_by(|a, b| a.last_timestamp.cmp(&b.last_timestamp))
        .and_then(|e| e.message))
}

/// The node of a running pod (not a mover pod) that mounts `claim`.
async fn node_using_claim(client: &Client, ns: &str, claim: &str) -> Result<Option<String>> {
    let pods = api::<Pod>(client, ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube(format!("listing pods in {ns}"), e))?;
    Ok(pods.items.iter().find_map(|p| {
        let spec = p.spec.as_ref()?;
        let running = p.status.as_ref()?.phase.as_deref() == Some("Running");
        let uses = spec.volumes.iter().flatten().any(|v| {
            v.persistent_volume_claim
                .as_ref()
                .is_some_and(|c| c.claim_name == claim)
        });
        (running && uses).then(|| spec.node_name.clone()).flatten()
    }))
}

fn final_transition(actions: &[Action], current: RunPhase) -> Option<String> {
    if current.is_final() {
        return None;
    }
    actions.iter().find_map(|a| match a {
        Action::PatchStatus(p) => p
            .get("phase")
            .and_then(|v| v.as_str())
            .filter(|ph| matches!(*ph, "Completed" | "Failed" | "Canceled"))
            .map(String::from),
        _ => None,
    })
}

fn elapsed_since(start: Option<&Time>) -> f64 {
    start
        .map(|s| jiff::Timestamp::now().duration_since(s.0).as_secs_f64())
        .unwrap_or(0.0)
}

/// The run as the API server has it now, for a run that is not final: the reflector's copy
/// can lag behind a status the Job just wrote, and a final transition decided from a stale
/// copy would be wrong for good.
async fn fresh<K>(client: &Client, obj: Arc<K>, live: bool) -> Result<Arc<K>>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    if !live {
        return Ok(obj);
    }
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let name = obj.meta().name.clone().unwrap_or_default();
    Ok(get::<K>(client, &ns, &name)
        .await?
        .map(Arc::new)
        .unwrap_or(obj))
}

/// Whether a mover Job has finished (either way), so its termination message is final.
fn finished(job: &Option<Job>) -> bool {
    !matches!(
        crate::plans::run::job_state(job.as_ref()),
        crate::plans::run::JobState::Absent | crate::plans::run::JobState::Running
    )
}

async fn reconcile_backup(vb: Arc<VolumeBackup>, ctx: Arc<Ctx>) -> Result<Requeue> {
    let client = &ctx.client;
    let live = !vb.status.as_ref().is_some_and(|s| s.phase.is_final());
    let vb = fresh(client, vb, live).await?;
    let ns = vb.namespace().unwrap_or_default();
    let names = backup::run_names(&vb);
    let status = vb.status.clone().unwrap_or_default();
    let mut obs = backup::Observed {
        repository: get::<Repository>(client, &ns, &vb.spec.repository).await?,
        ..Default::default()
    };
    let live = !status.phase.is_final() && vb.metadata.deletion_timestamp.is_none();
    // The run's own objects, in every phase: a final run still cleans them up.
    {
        if let Some(pvc) = &vb.spec.source.pvc {
            if live {
                obs.source_pvc = get::<PersistentVolumeClaim>(client, &ns, pvc).await?;
                if vb.spec.copy_method == crate::api::CopyMethod::Direct {
                    obs.source_node = node_using_claim(client, &ns, pvc).await?;
                }
            }
        }
        let snapshot_name = vb
            .spec
            .source
            .volume_snapshot
            .clone()
            .unwrap_or_else(|| names.snapshot.clone());
        obs.snapshot = get::<VolumeSnapshot>(client, &ns, &snapshot_name).await?;
        obs.clone = get::<PersistentVolumeClaim>(client, &ns, &names.clone).await?;
        // Only the run's own clone counts (a Direct run has none).
        if obs
            .clone
            .as_ref()
            .is_some_and(|c| !owned_by(c, &vb.metadata.uid))
        {
            obs.clone = None;
        }
        if obs
            .snapshot
            .as_ref()
            .is_some_and(|s| s.name_any() == names.snapshot && !owned_by(s, &vb.metadata.uid))
        {
            obs.snapshot = None;
        }
        obs.job = get::<Job>(client, &ns, &names.job).await?;
        // A Job is this run's only if this VolumeBackup owns it (not one of an earlier
        // object of the same name that garbage collection has not removed yet).
        if obs
            .job
            .as_ref()
            .is_some_and(|j| !owned_by(j, &vb.metadata.uid))
        {
            obs.job = None;
            obs.foreign_job = true;
        }
        // The termination message carries the mover's result too: read for a failed Job
        // (the reason) and for a succeeded one whose status write was lost.
        if finished(&obs.job) && (live || status.result.is_none()) {
            obs.termination = termination_message(client, &ns, obs.job.as_ref()).await?;
        }
        if live {
            obs.job_blocked = job_blocked(client, &ns, &obs.job).await?;
        }
    }
    if vb.metadata.deletion_timestamp.is_some() {
        obs.forget_job = get::<Job>(client, &ns, &names.forget_job).await?;
        let namespace = Api::<Namespace>::all(client.clone())
            .get_opt(&ns)
            .await
            .map_err(|e| Error::kube(format!("reading Namespace {ns}"), e))?;
        obs.namespace_terminating =
            namespace.is_none_or(|n| n.metadata.deletion_timestamp.is_some());
    }
    let settings = backup::Settings {
        image: ctx.image.clone(),
    };
    let actions = backup::plan(&vb, &obs, &settings, &now());
    let key = format!("{ns}/{}", vb.name_any());
    let finishing = final_transition(&actions, status.phase);
    let waiting = actions.is_empty() && !status.phase.is_final();
    let applied = match ctx.io.apply(vb.as_ref(), actions).await {
        Err(e) if live && refusal(&e) => {
            let failed = crate::plans::run::refused(&status, &e.chain_string(), &now());
            ctx.io.apply(vb.as_ref(), failed).await?;
            return Ok(requeue(RunPhase::Failed, false));
        }
        other => other?,
    };
    // Counted once the final transition is written: an apply that failed is retried and
    // would otherwise count the run twice.
    if let Some(result) = &finishing {
        let bytes = status.progress.as_ref().map(|p| p.bytes_done).unwrap_or(0);
        ctx.metrics.run_finished(
            "VolumeBackup",
            result,
            elapsed_since(status.start_time.as_ref()),
            bytes,
        );
        if result == "Completed" {
            let source = vb
                .spec
                .source
                .pvc
                .clone()
                .or_else(|| vb.spec.source.volume_snapshot.clone())
                .unwrap_or_default();
            ctx.metrics
                .backup_succeeded(&ns, &source, jiff::Timestamp::now().as_second() as f64);
        }
    }
    // The phase gauge holds runs under way; a final or deleted run leaves it.
    if vb.metadata.deletion_timestamp.is_some() || status.phase.is_final() || finishing.is_some() {
        ctx.metrics.forget_object("VolumeBackup", &key);
    } else {
        ctx.metrics
            .set_phase("VolumeBackup", &key, status.phase.as_str());
    }
    Ok(requeue(status.phase, applied.waiting_for_slot || waiting))
}

/// Whether an API error is a refusal that the same request will meet again (403, 422),
/// rather than a failure that may pass.
fn refusal(e: &Error) -> bool {
    matches!(e, Error::Kube { source: kube::Error::Api(s), .. } if s.code == 403 || s.code == 422)
}

fn owned_by<K: kube::Resource>(obj: &K, uid: &Option<String>) -> bool {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| Some(&o.uid) == uid.as_ref())
}

fn requeue(phase: RunPhase, waiting: bool) -> Requeue {
    if waiting {
        return Requeue::requeue(WAIT);
    }
    match phase {
        RunPhase::Completed | RunPhase::Failed | RunPhase::Canceled => Requeue::await_change(),
        // Watches on the owned objects wake the run; this bounds a missed event.
        RunPhase::New | RunPhase::Preparing | RunPhase::Canceling => Requeue::requeue(WAIT),
        RunPhase::InProgress => Requeue::requeue(Duration::from_secs(30)),
    }
}

async fn reconcile_restore(vr: Arc<VolumeRestore>, ctx: Arc<Ctx>) -> Result<Requeue> {
    let client = &ctx.client;
    let live = !vr.status.as_ref().is_some_and(|s| s.phase.is_final());
    let vr = fresh(client, vr, live).await?;
    let ns = vr.namespace().unwrap_or_default();
    let names = restore::run_names(&vr);
    let status = vr.status.clone().unwrap_or_default();
    let mut obs = restore::Observed {
        repository: get::<Repository>(client, &ns, &vr.spec.repository).await?,
        resolve_job: get::<Job>(client, &ns, &names.resolve_job).await?,
        job: get::<Job>(client, &ns, &names.job).await?,
        ..Default::default()
    };
    if !status.phase.is_final() {
        if vr.spec.target.is_none() {
            let claims = api::<PersistentVolumeClaim>(client, &ns)
                .list(&ListParams::default())
                .await
                .map_err(|e| Error::kube(format!("listing PVCs in {ns}"), e))?;
            let mut asking: Vec<PersistentVolumeClaim> = claims
                .items
                .into_iter()
                .filter(|c| restore::populates(c, &vr.name_any()))
                .collect();
            asking.sort_by_key(|c| c.name_any());
            obs.populating = asking.into_iter().next();
            let class = obs
                .populating
                .as_ref()
                .and_then(|c| c.spec.as_ref()?.storage_class_name.clone());
            if let Some(class) = class {
                let found = Api::<StorageClass>::all(client.clone())
                    .get_opt(&class)
                    .await
                    .map_err(|e| Error::kube(format!("reading StorageClass {class}"), e))?;
                obs.populating_waits_for_consumer = found
                    .and_then(|c| c.volume_binding_mode)
                    .is_some_and(|m| m == "WaitForFirstConsumer");
            }
        }
        if let Some(claim) = restore::target_claim(&vr) {
            obs.target = get::<PersistentVolumeClaim>(client, &ns, &claim).await?;
            if obs.populating.is_some() {
                let volume = obs
                    .target
                    .as_ref()
                    .and_then(|t| t.spec.as_ref()?.volume_name.clone());
                if let Some(v) = volume {
                    obs.prime_volume = Api::<PersistentVolume>::all(client.clone())
                        .get_opt(&v)
                        .await
                        .map_err(|e| Error::kube(format!("reading PersistentVolume {v}"), e))?;
                }
            }
            if vr.spec.target.as_ref().is_some_and(|t| t.pvc.is_some()) {
                obs.target_node = node_using_claim(client, &ns, &claim).await?;
            }
        }
        let failed = |j: &Option<Job>| {
            matches!(
                crate::plans::run::job_state(j.as_ref()),
                crate::plans::run::JobState::Failed(_)
            )
        };
        obs.job_blocked = match job_blocked(client, &ns, &obs.job).await? {
            Some(m) => Some(m),
            None => job_blocked(client, &ns, &obs.resolve_job).await?,
        };
        if failed(&obs.job) || (finished(&obs.job) && status.result.is_none()) {
            obs.termination = termination_message(client, &ns, obs.job.as_ref()).await?;
        } else if failed(&obs.resolve_job) {
            obs.termination = termination_message(client, &ns, obs.resolve_job.as_ref()).await?;
        }
    }
    let actions = restore::plan(&vr, &obs, &ctx.image, &now());
    let finishing = final_transition(&actions, status.phase);
    let waiting = actions.is_empty() && !status.phase.is_final();
    let live = !status.phase.is_final() && vr.metadata.deletion_timestamp.is_none();
    let applied = match ctx.io.apply(vr.as_ref(), actions).await {
        Err(e) if live && refusal(&e) => {
            let failed = crate::plans::run::refused(&status, &e.chain_string(), &now());
            ctx.io.apply(vr.as_ref(), failed).await?;
            return Ok(requeue(RunPhase::Failed, false));
        }
        other => other?,
    };
    if let Some(result) = &finishing {
        let bytes = status.progress.as_ref().map(|p| p.bytes_done).unwrap_or(0);
        ctx.metrics.run_finished(
            "VolumeRestore",
            result,
            elapsed_since(status.start_time.as_ref()),
            bytes,
        );
    }
    let key = format!("{ns}/{}", vr.name_any());
    if vr.metadata.deletion_timestamp.is_some() || status.phase.is_final() || finishing.is_some() {
        ctx.metrics.forget_object("VolumeRestore", &key);
    } else {
        ctx.metrics
            .set_phase("VolumeRestore", &key, status.phase.as_str());
    }
    Ok(requeue(status.phase, applied.waiting_for_slot || waiting))
}

async fn reconcile_repository(repo: Arc<Repository>, ctx: Arc<Ctx>) -> Result<Requeue> {
    let client = &ctx.client;
    let ns = repo.namespace().unwrap_or_default();
    let secret = if ctx.watch_secrets {
        // Metadata only: no Secret's data ever reaches the controller.
        let secrets: Api<Secret> = api(client, &ns);
        let name = &repo.spec.secret_ref.name;
        let found = secrets
            .get_metadata_opt(name)
            .await
            .map_err(|e| Error::kube(format!("reading Secret {ns}/{name}"), e))?;
        match found.and_then(|s| s.metadata.resource_version) {
            Some(v) => repository::SecretSeen::Version(v),
            None => repository::SecretSeen::Missing,
        }
    } else {
        repository::SecretSeen::Unwatched
    };
    let mut obs = repository::Observed {
        secret,
        ..Default::default()
    };
    if obs.secret != repository::SecretSeen::Missing {
        let name = repository::current_probe_job_name(&repo, &obs.secret);
        obs.job = get::<Job>(client, &ns, &name).await?;
        match crate::plans::run::job_state(obs.job.as_ref()) {
            crate::plans::run::JobState::Failed(_) => {
                obs.termination = termination_message(client, &ns, obs.job.as_ref()).await?;
            }
            crate::plans::run::JobState::Running => {
                obs.pod_blocked = pod_config_error(client, &ns, obs.job.as_ref()).await?;
            }
            _ => {}
        }
    }
    let probing =
        crate::plans::run::job_state(obs.job.as_ref()) == crate::plans::run::JobState::Running;
    let at = now();
    let actions = repository::plan(&repo, &obs, &ctx.image, &at);
    ctx.io.apply(repo.as_ref(), actions).await?;
    // A watched Secret changed in place is noticed at once; a Degraded repository (or a
    // Failed one whose Secret is not watched) is probed again when its backoff ends; a
    // running probe is looked at every few seconds, as a pod that cannot start changes
    // nothing the controller watches.
    let status = repo.status.clone().unwrap_or_default();
    let mut next = repository::reprobe_in(&status, &at, ctx.watch_secrets)
        .map(|d| d.max(Duration::from_secs(1)))
        .unwrap_or(Duration::from_secs(60))
        .min(Duration::from_secs(60));
    if probing {
        next = next.min(Duration::from_secs(5));
    }
    Ok(Requeue::requeue(next))
}

async fn reconcile_schedule(bs: Arc<BackupSchedule>, ctx: Arc<Ctx>) -> Result<Requeue> {
    let client = &ctx.client;
    let ns = bs.namespace().unwrap_or_default();
    let status = bs.status.clone().unwrap_or_default();
    let backups = api::<VolumeBackup>(client, &ns)
        .list(&ListParams::default().labels(&schedule::selector(&bs)))
        .await
        .map_err(|e| Error::kube(format!("listing the VolumeBackups of {}", bs.name_any()), e))?
        .items
        .into_iter()
        .filter(|b| owned_by(b, &bs.metadata.uid))
        .collect();
    let mut obs = schedule::Observed {
        backups,
        repository: get::<Repository>(client, &ns, &bs.spec.template.repository).await?,
        ..Default::default()
    };
    if let Some(job) = &status.prune_job {
        obs.prune_job = get::<Job>(client, &ns, job).await?;
        if matches!(
            crate::plans::run::job_state(obs.prune_job.as_ref()),
            crate::plans::run::JobState::Failed(_)
        ) {
            obs.termination = termination_message(client, &ns, obs.prune_job.as_ref()).await?;
        }
    }
    let plan = schedule::plan(&bs, &obs, &ctx.image, &now());
    let applied = ctx.io.apply(bs.as_ref(), plan.actions).await?;
    if applied.waiting_for_slot {
        return Ok(Requeue::requeue(WAIT));
    }
    // Owned VolumeBackups and Jobs wake the schedule; the clock wakes it at its next time.
    let wake = plan
        .wake_after
        .unwrap_or(Duration::from_secs(300))
        .clamp(Duration::from_secs(1), Duration::from_secs(300));
    Ok(Requeue::requeue(wake))
}

async fn reconcile_upload(du: Arc<DataUpload>, ctx: Arc<Ctx>) -> Result<Requeue> {
    let Some(opts) = &ctx.velero else {
        return Ok(Requeue::await_change());
    };
    Ok(
        match crate::velero::reconcile_upload(&ctx.client, opts, &du).await? {
            Some(after) => Requeue::requeue(after),
            None => Requeue::await_change(),
        },
    )
}

async fn reconcile_download(dd: Arc<DataDownload>, ctx: Arc<Ctx>) -> Result<Requeue> {
    let Some(opts) = &ctx.velero else {
        return Ok(Requeue::await_change());
    };
    Ok(
        match crate::velero::reconcile_download(&ctx.client, opts, &dd).await? {
            Some(after) => Requeue::requeue(after),
            None => Requeue::await_change(),
        },
    )
}

async fn reconcile_delete_request(dbr: Arc<DeleteBackupRequest>, ctx: Arc<Ctx>) -> Result<Requeue> {
    Ok(
        match crate::velero::gc::reconcile_request(&ctx.io, &ctx.image, &dbr).await? {
            Some(after) => Requeue::requeue(after),
            None => Requeue::await_change(),
        },
    )
}

/// How long a reconcile that failed waits before the next try, by the error's class and,
/// for a refusal, how many came in a row: an API server or network failure may pass in
/// seconds; a refusal (403, 422: RBAC, admission, a webhook, a quota) needs someone to change
/// something, so it is retried after 15 s, then twice as late each time up to 5 minutes, and
/// shown on the object as a Warning Event.
pub fn error_backoff(class: mover_core::error::ErrorClass, in_a_row: u32) -> (Duration, bool) {
    use mover_core::error::ErrorClass;
    match class {
        ErrorClass::Retryable | ErrorClass::Locked => (Duration::from_secs(10), false),
        ErrorClass::InvalidInput | ErrorClass::WrongPassword | ErrorClass::NotFound => {
            let shift = in_a_row.saturating_sub(1).min(5);
            let after = (REFUSAL_FIRST_RETRY * (1u32 << shift)).min(REFUSAL_MAX_RETRY);
            (after, true)
        }
        _ => (Duration::from_secs(30), false),
    }
}

const REFUSAL_FIRST_RETRY: Duration = Duration::from_secs(15);
const REFUSAL_MAX_RETRY: Duration = Duration::from_secs(300);
/// A refusal this long after the last one of the same object counts as the first again.
const REFUSAL_MEMORY: Duration = Duration::from_secs(600);

/// Failed reconciles in a row, per object.
#[derive(Default)]
struct Refusals(std::sync::Mutex<std::collections::HashMap<String, (u32, std::time::Instant)>>);

impl Refusals {
    /// Records a failure of `key` now and returns how many came in a row.
    fn record(&self, key: String) -> u32 {
        let now = std::time::Instant::now();
        let Ok(mut seen) = self.0.lock() else {
            return 1;
        };
        seen.retain(|_, (_, at)| now.duration_since(*at) < REFUSAL_MEMORY);
        let entry = seen.entry(key).or_insert((0, now));
        entry.0 += 1;
        entry.1 = now;
        entry.0
    }
}

fn error_policy<K>(obj: Arc<K>, error: &Error, ctx: Arc<Ctx>) -> Requeue
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + Send
        + Sync
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned
        + 'static,
{
    let message = error.chain_string();
    tracing::warn!(
        "reconciling {} {}/{}: {message}",
        K::kind(&()),
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default(),
    );
    let key = format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default()
    );
    let (after, structural) = error_backoff(error.class(), ctx.refusals.record(key));
    if structural {
        let note = format!("{message} (retried every {}s)", after.as_secs());
        tokio::spawn(async move {
            let event = Action::Event {
                warning: true,
                reason: "ReconcileRefused".into(),
                note,
            };
            let _ = ctx.io.apply(obj.as_ref(), vec![event]).await;
        });
    }
    Requeue::requeue(after)
}

fn all_or_namespaced<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until `stop` resolves (SIGTERM) or leadership is lost.
pub async fn run(opts: ControllerOptions, stop: mover_core::Cancel) -> Result<()> {
    let client = crate::client().await?;
    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind(&opts.metrics_addr)
        .await
        .map_err(|e| mover_core::Error::io(format!("listening on {}", opts.metrics_addr), e))?;
    tokio::spawn(crate::controller::metrics::serve(
        listener,
        Arc::clone(&metrics),
    ));
    client
        .apiserver_version()
        .await
        .map_err(|e| Error::kube("asking the API server for its version", e))?;
    metrics.connected.store(true, Ordering::Relaxed);

    let identity = std::env::var("POD_NAME")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| format!("{}-{}", mover_core::host::hostname(), std::process::id()));
    let election = opts.leader_election.then(|| {
        leader::LeaderElection::new(
            client.clone(),
            &opts.lease_namespace,
            &opts.lease_name,
            &identity,
        )
    });
    if let Some(e) = &election {
        tracing::info!(
            "waiting for Lease {}/{}",
            opts.lease_namespace,
            opts.lease_name
        );
        tokio::select! {
            _ = e.acquire() => {}
            _ = stop.cancelled() => return Ok(()),
        }
        tracing::info!("leading as {identity}");
    }
    metrics.leading.store(true, Ordering::Relaxed);

    let ctx = Arc::new(Ctx {
        client: client.clone(),
        velero: opts.velero.clone(),
        io: Io {
            client: client.clone(),
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: "mover".into(),
                    instance: Some(identity.clone()),
                },
            ),
            job_slots: tokio::sync::Mutex::new(()),
        },
        image: opts.image.clone(),
        metrics: Arc::clone(&metrics),
        watch_secrets: opts.watch_secrets,
        refusals: Refusals::default(),
    });
    let ns = &opts.namespace;
    let wc = watcher::Config::default();
    let managed = watcher::Config::default().labels("app.kubernetes.io/managed-by=mover");

    // Runs wake on what the plan decides from, not on each progress write of their Job.
    let (backup_store, backup_changes) =
        triggers::decisive_changes(all_or_namespaced::<VolumeBackup>(&client, ns), wc.clone());
    let backups = Controller::for_stream(backup_changes, backup_store.clone())
        .owns(all_or_namespaced::<Job>(&client, ns), managed.clone())
        .owns(
            all_or_namespaced::<PersistentVolumeClaim>(&client, ns),
            managed.clone(),
        )
        .owns(
            all_or_namespaced::<VolumeSnapshot>(&client, ns),
            managed.clone(),
        )
        .watches(
            all_or_namespaced::<Repository>(&client, ns),
            wc.clone(),
            move |repo| {
                // A Repository turning Ready wakes the backups waiting for it.
                let ns = repo.namespace();
                let name = repo.name_any();
                backup_store
                    .state()
                    .into_iter()
                    .filter(|b| b.namespace() == ns && b.spec.repository == name)
                    .map(|b| ObjectRef::from_obj(b.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(cancelled(stop.clone()))
        .run(reconcile_backup, error_policy, Arc::clone(&ctx))
        .for_each(|_| async {});

    let (restore_store, restore_changes) =
        triggers::decisive_changes(all_or_namespaced::<VolumeRestore>(&client, ns), wc.clone());
    let restores = Controller::for_stream(restore_changes, restore_store.clone())
        .owns(all_or_namespaced::<Job>(&client, ns), managed.clone())
        .owns(
            all_or_namespaced::<PersistentVolumeClaim>(&client, ns),
            managed.clone(),
        )
        // A claim whose dataSourceRef names a VolumeRestore wakes it (volume populator).
        .watches(
            all_or_namespaced::<PersistentVolumeClaim>(&client, ns),
            wc.clone(),
            |pvc| {
                let r = pvc.spec.as_ref()?.data_source_ref.as_ref()?;
                (r.api_group.as_deref() == Some(crate::names::GROUP) && r.kind == "VolumeRestore")
                    .then(|| {
                        ObjectRef::<VolumeRestore>::new(&r.name)
                            .within(&pvc.namespace().unwrap_or_default())
                    })
            },
        )
        .watches(
            all_or_namespaced::<Repository>(&client, ns),
            wc.clone(),
            move |repo| {
                let ns = repo.namespace();
                let name = repo.name_any();
                restore_store
                    .state()
                    .into_iter()
                    .filter(|r| r.namespace() == ns && r.spec.repository == name)
                    .map(|r| ObjectRef::from_obj(r.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(cancelled(stop.clone()))
        .run(reconcile_restore, error_policy, Arc::clone(&ctx))
        .for_each(|_| async {});

    let repositories = Controller::new(all_or_namespaced::<Repository>(&client, ns), wc.clone());
    // A Secret that a Repository names, changed (a fixed password): look again now. Without
    // access to Secrets, a Failed repository is probed again on a backoff instead.
    let secret_changes = if opts.watch_secrets {
        referenced_secret_changes(&client, ns, repositories.store()).boxed()
    } else {
        futures::stream::pending().boxed()
    };
    let repositories = repositories
        .owns(all_or_namespaced::<Job>(&client, ns), managed.clone())
        .reconcile_all_on(secret_changes)
        .graceful_shutdown_on(cancelled(stop.clone()))
        .run(reconcile_repository, error_policy, Arc::clone(&ctx))
        .for_each(|_| async {});

    let schedules = Controller::new(all_or_namespaced::<BackupSchedule>(&client, ns), wc.clone())
        .owns(all_or_namespaced::<VolumeBackup>(&client, ns), wc.clone())
        .owns(all_or_namespaced::<Job>(&client, ns), managed.clone())
        .graceful_shutdown_on(cancelled(stop.clone()))
        .run(reconcile_schedule, error_policy, Arc::clone(&ctx))
        .for_each(|_| async {});

    let velero = async {
        let Some(v) = &opts.velero else { return };
        let vns = v.namespace.clone();
        let uploads = Controller::new(
            Api::<DataUpload>::namespaced(client.clone(), &vns),
            wc.clone(),
        )
        .owns(
            Api::<VolumeBackup>::namespaced(client.clone(), &vns),
            managed.clone(),
        )
        .graceful_shutdown_on(cancelled(stop.clone()))
        .run(reconcile_upload, error_policy, Arc::clone(&ctx))
        .for_each(|_| async {});
        let downloads = Controller::new(
            Api::<DataDownload>::namespaced(client.clone(), &vns),
            wc.clone(),
        )
        .owns(
            Api::<VolumeRestore>::namespaced(client.clone(), &vns),
            managed.clone(),
        )
        .graceful_shutdown_on(cancelled(stop.clone()))
        .run(reconcile_download, error_policy, Arc::clone(&ctx))
        .for_each(|_| async {});
        let requests = Controller::new(
            Api::<DeleteBackupRequest>::namespaced(client.clone(), &vns),
            wc.clone(),
        )
        .graceful_shutdown_on(cancelled(stop.clone()))
        .run(reconcile_delete_request, error_policy, Arc::clone(&ctx))
        .for_each(|_| async {});
        let sweeps =
            crate::velero::gc::sweep_periodically(&ctx.io, &vns, &ctx.image, &v.gc, stop.clone());
        tokio::join!(uploads, downloads, requests, sweeps);
    };

    let lost = async {
        match &election {
            Some(e) => e.keep().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = async { tokio::join!(backups, restores, repositories, schedules, velero) } => {}
        _ = lost => return Err(Error::Invalid(format!(
            "lost Lease {}/{}: stopping so that only one replica acts",
            opts.lease_namespace, opts.lease_name
        ))),
    }
    // Stopped (SIGTERM, a rolling update): hand the Lease over now, not after it expires.
    if let Some(e) = &election {
        match e.release().await {
            Ok(true) => tracing::info!(
                "released Lease {}/{}",
                opts.lease_namespace,
                opts.lease_name
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!("{}", e.chain_string()),
        }
    }
    Ok(())
}

/// One `()` each time a Secret that some Repository names is created or changed, from a
/// watch of Secret metadata only: no Secret's data ever reaches the controller.
fn referenced_secret_changes(
    client: &Client,
    ns: &Option<String>,
    repositories: kube::runtime::reflector::Store<Repository>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    use kube::core::PartialObjectMeta;
    use kube::runtime::WatchStreamExt;
    // An Api of PartialObjectMeta asks for metadata only.
    let secrets: Api<PartialObjectMeta<Secret>> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    watcher(secrets, watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .filter_map(move |secret| {
            let referenced = secret.ok().is_some_and(|secret| {
                let (ns, name) = (secret.namespace(), secret.name_any());
                repositories
                    .state()
                    .iter()
                    .any(|r| r.namespace() == ns && r.spec.secret_ref.name == name)
            });
            async move { referenced.then_some(()) }
        })
}

async fn cancelled(stop: mover_core::Cancel) {
    stop.cancelled().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use mover_core::error::ErrorClass;

    #[test]
    fn refusals_are_retried_soon_at_first_and_slowly_while_they_last() {
        let secs = |n| error_backoff(ErrorClass::InvalidInput, n).0.as_secs();
        assert_eq!(
            [secs(1), secs(2), secs(3), secs(5), secs(40)],
            [15, 30, 60, 240, 300]
        );
        assert!(error_backoff(ErrorClass::InvalidInput, 1).1);
        assert_eq!(
            error_backoff(ErrorClass::Retryable, 9),
            (Duration::from_secs(10), false)
        );
        let refusals = Refusals::default();
        assert_eq!(refusals.record("a".into()), 1);
        assert_eq!(refusals.record("a".into()), 2);
        assert_eq!(refusals.record("b".into()), 1);
    }
}
