//! mover's retention for Velero: Velero never deletes a third-party mover's data (its backup
//! deletion only removes the DataUploads), so the controller runs `mover job velero-gc`
//! (`sweep`) in each Repository it made for a BSL. Two triggers:
//!
//! - A DeleteBackupRequest (`velero backup delete`, or a backup's TTL expiring) gets the
//!   finalizer [`FINALIZER`] while it is processed. Velero deletes the request only after it
//!   removed the backup's objects from the BSL, so when the request is being deleted the
//!   sweep for that one backup (no grace) finds its metadata gone and forgets its snapshots;
//!   then the finalizer goes. A sweep that fails is reported and does not hold the request.
//! - Every `interval`, a sweep of all backups with `grace`, which covers requests missed
//!   while the controller was down and recovery clusters, which hold no requests.
//!
//! Backups whose Backup object says Velero is still writing them are passed as `--keep`.
//! Prune stays the operator's choice (the Repository's maintenance), as with Velero's own
//! repository maintenance.

use crate::api::Repository;
use crate::api::velero::{Backup, DeleteBackupRequest};
use crate::controller::apply::{Action, Io};
use crate::error::{Error, Result};
use crate::names;
use crate::plans::jobspec::{self, JobParams, VolumeAttach};
use crate::plans::repository::repo_view;
use crate::plans::run::{JobState, job_state};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams, Patch};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// Held on a DeleteBackupRequest until mover has forgotten that backup's snapshots.
pub const FINALIZER: &str = "mover.dev/velero-snapshots";
/// Label on the Repositories made for a BSL, naming it.
pub const BSL_LABEL: &str = "mover.dev/velero-bsl";
/// Annotation on those Repositories: the BSL prefix's location (see `bsl`).
pub const BSL_ROOT: &str = "mover.dev/velero-bsl-root";
/// Label on sweep Jobs: which sweep (`request-<name>` or `periodic-<n>`) they belong to.
const SWEEP_LABEL: &str = "mover.dev/velero-sweep";
const ROLE: &str = "velero-gc";

/// How often and how carefully the periodic sweep runs.
#[derive(Debug, Clone)]
pub struct GcOptions {
    pub interval: Duration,
    pub grace: Duration,
}

/// One sweep over every BSL Repository.
struct Sweep<'a> {
    key: String,
    only: Option<&'a str>,
    grace: Duration,
}

fn go_duration(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

async fn list<K>(client: &Client, ns: &str, lp: &ListParams) -> Result<Vec<K>>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .list(lp)
        .await
        .map(|l| l.items)
        .map_err(|e| Error::kube(format!("listing {} in {ns}", K::kind(&())), e))
}

/// The Repositories the controller made for BSLs in `ns`.
async fn bsl_repositories(client: &Client, ns: &str) -> Result<Vec<Repository>> {
    list(client, ns, &ListParams::default().labels(BSL_LABEL)).await
}

/// The Job that sweeps `repo`, with its run access; `None` when `repo` cannot be swept
/// (not Ready yet, or made before it carried its BSL's location).
fn sweep_job(
    repo: &Repository,
    image: &str,
    sweep: &Sweep<'_>,
    keep: &[String],
) -> Option<(JobParams, jobspec::RunAccess)> {
    let root = repo.annotations().get(BSL_ROOT)?;
    let view = repo_view(Some(repo), &repo.name_any()).ok()?;
    let mut args = vec![
        "job".to_string(),
        ROLE.to_string(),
        "--bsl".to_string(),
        root.clone(),
        "--grace".to_string(),
        go_duration(sweep.grace),
        // A backup or a check holding the repository is waited for, not failed on.
        "--retry-lock".to_string(),
        "10m".to_string(),
    ];
    for k in keep {
        args.extend(["--keep".to_string(), k.clone()]);
    }
    if let Some(only) = sweep.only {
        args.extend(["--only".to_string(), only.to_string()]);
    }
    let params = JobParams {
        name: names::job_name(ROLE, &format!("{}-{}", repo.name_any(), sweep.key)),
        namespace: repo.namespace().unwrap_or_default(),
        image: image.to_string(),
        args,
        repo: view.access,
        volume: VolumeAttach::None,
        service_account: names::object_name(ROLE, &repo.name_any()),
        mover: Default::default(),
        owner: repo.controller_owner_ref(&()).unwrap_or_default(),
        labels: BTreeMap::from([
            (names::MANAGED_BY.to_string(), "mover".to_string()),
            (names::JOB_ROLE.to_string(), ROLE.to_string()),
            (SWEEP_LABEL.to_string(), names::label_value(&sweep.key)),
        ]),
        node_name: None,
        backoff_limit: 1,
    };
    let access = jobspec::run_access(&params, "repositories", &repo.name_any());
    Some((params, access))
}

/// The backups Velero is still writing, which no sweep may forget.
async fn backups_being_written(client: &Client, ns: &str) -> Result<Vec<String>> {
    Ok(list::<Backup>(client, ns, &ListParams::default())
        .await?
        .into_iter()
        .filter(|b| b.is_being_written())
        .map(|b| b.name_any())
        .collect())
}

/// Starts the sweep's Job in every sweepable Repository and returns how each stands:
/// `None` while any runs, else the failures.
async fn run_sweep(
    io: &Io,
    ns: &str,
    image: &str,
    sweep: &Sweep<'_>,
) -> Result<Option<Vec<String>>> {
    let client = &io.client;
    let keep = backups_being_written(client, ns).await?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let mut running = false;
    let mut failures = Vec::new();
    for repo in bsl_repositories(client, ns).await? {
        let Some((params, access)) = sweep_job(&repo, image, sweep, &keep) else {
            continue;
        };
        let job = jobs
            .get_opt(&params.name)
            .await
            .map_err(|e| Error::kube(format!("reading Job {ns}/{}", params.name), e))?;
        match job_state(job.as_ref()) {
            JobState::Absent => {
                let max_jobs = repo.spec.concurrency.as_ref().and_then(|c| c.max_jobs);
                io.apply(
                    &repo,
                    vec![
                        Action::CreateAccess(Box::new(access)),
                        Action::CreateJob {
                            job: Box::new(jobspec::job(&params)),
                            repository: repo.name_any(),
                            max_jobs,
                        },
                    ],
                )
                .await?;
                running = true;
            }
            JobState::Running => running = true,
            JobState::Succeeded => {}
            JobState::Failed(why) => failures.push(format!(
                "sweep of Repository {ns}/{}: {why}",
                repo.name_any()
            )),
        }
    }
    Ok((!running).then_some(failures))
}

/// Deletes the finished Jobs of sweeps other than `current` (all of them when `None`).
async fn delete_finished_sweeps(
    io: &Io,
    ns: &str,
    prefix: &str,
    current: Option<&str>,
) -> Result<()> {
    let jobs: Vec<Job> = list(&io.client, ns, &ListParams::default().labels(SWEEP_LABEL)).await?;
    for job in jobs {
        let key = job.labels().get(SWEEP_LABEL).cloned().unwrap_or_default();
        let finished = !matches!(job_state(Some(&job)), JobState::Running);
        if key.starts_with(prefix) && Some(key.as_str()) != current && finished {
            let api: Api<Job> = Api::namespaced(io.client.clone(), ns);
            match api
                .delete(&job.name_any(), &kube::api::DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    return Err(Error::kube(
                        format!("deleting Job {ns}/{}", job.name_any()),
                        e,
                    ));
                }
            }
        }
    }
    Ok(())
}

async fn set_finalizers(
    client: &Client,
    dbr: &DeleteBackupRequest,
    finalizers: Vec<String>,
) -> Result<()> {
    let ns = dbr.namespace().unwrap_or_default();
    // The resourceVersion makes this a compare-and-swap: Velero's own edits are never lost.
    Api::<DeleteBackupRequest>::namespaced(client.clone(), &ns)
        .patch(
            &dbr.name_any(),
            &crate::controller::apply::patch_params(),
            &Patch::Merge(json!({"metadata": {
                "finalizers": finalizers,
                "resourceVersion": dbr.resource_version(),
            }})),
        )
        .await
        .map(|_| ())
        .map_err(|e| {
            Error::kube(
                format!(
                    "updating the finalizers of DeleteBackupRequest {ns}/{}",
                    dbr.name_any()
                ),
                e,
            )
        })
}

/// One DeleteBackupRequest: hold it with [`FINALIZER`] while Velero deletes the backup, then
/// sweep that backup's snapshots and let it go. Returns when to look again.
pub async fn reconcile_request(
    io: &Io,
    image: &str,
    dbr: &DeleteBackupRequest,
) -> Result<Option<Duration>> {
    let ns = dbr.namespace().unwrap_or_default();
    let held = dbr.finalizers().iter().any(|f| f == FINALIZER);
    if dbr.meta().deletion_timestamp.is_none() {
        let backup = dbr.spec.backup_name.trim();
        if held || backup.is_empty() || bsl_repositories(&io.client, &ns).await?.is_empty() {
            return Ok(None);
        }
        let mut finalizers = dbr.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        set_finalizers(&io.client, dbr, finalizers).await?;
        return Ok(None);
    }
    if !held {
        return Ok(None);
    }
    let key = format!("request-{}", dbr.name_any());
    let sweep = Sweep {
        key: key.clone(),
        only: Some(dbr.spec.backup_name.trim()),
        grace: Duration::ZERO,
    };
    let Some(failures) = run_sweep(io, &ns, image, &sweep).await? else {
        return Ok(Some(super::RECHECK));
    };
    for f in &failures {
        tracing::warn!(
            "Velero backup {} deleted but its snapshots not forgotten ({f}); the periodic sweep \
             tries again",
            dbr.spec.backup_name
        );
    }
    let finalizers = dbr
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    set_finalizers(&io.client, dbr, finalizers).await?;
    delete_finished_sweeps(io, &ns, &key, None).await?;
    Ok(None)
}

/// The periodic sweep, until `stop`: one sweep per `interval`, the previous one's Jobs
/// deleted when the next starts.
pub async fn sweep_periodically(
    io: &Io,
    ns: &str,
    image: &str,
    opts: &GcOptions,
    stop: mover_core::Cancel,
) {
    let interval = opts.interval.max(Duration::from_secs(1));
    loop {
        // The sweep of this interval of wall-clock time: a controller restarted within the
        // interval finds the sweep already done, and one restarted after it sweeps again, so
        // restarts never stop the sweeps (a counter from each start would repeat old keys).
        let key = sweep_key(jiff::Timestamp::now().as_second(), interval);
        let sweep = Sweep {
            key: key.clone(),
            only: None,
            grace: opts.grace,
        };
        let started = async {
            delete_finished_sweeps(io, ns, "periodic-", Some(&key)).await?;
            run_sweep(io, ns, image, &sweep).await
        };
        match started.await {
            Ok(Some(failures)) => {
                tracing::info!(
                    "periodic Velero sweep {key} done ({} failed)",
                    failures.len()
                );
                for f in failures {
                    tracing::warn!("periodic Velero sweep: {f}");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("periodic Velero sweep: {}", e.chain_string()),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The key of the periodic sweep at `now` (Unix seconds) for `interval`.
pub fn sweep_key(now: i64, interval: Duration) -> String {
    let n = now.max(0) as u64 / interval.as_secs().max(1);
    format!("periodic-{n}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::repository::{RepositoryPhase, RepositoryStatus};

    #[test]
    fn sweep_keys_follow_the_clock_not_the_process() {
        let hour = Duration::from_secs(3600);
        // Two starts within one interval share the key; the next interval has a new one.
        assert_eq!(sweep_key(7200, hour), sweep_key(10_799, hour));
        assert_ne!(sweep_key(10_799, hour), sweep_key(10_800, hour));
    }

    fn repo(annotated: bool, ready: bool) -> Repository {
        let mut r: Repository = serde_json::from_value(json!({
            "apiVersion": "mover.dev/v1alpha1", "kind": "Repository",
            "metadata": {"name": "mover-velero-default-app", "namespace": "velero",
                "uid": "u-1", "labels": {BSL_LABEL: "default"}},
            "spec": {"secretRef": {"name": "pw"}},
        }))
        .unwrap();
        if annotated {
            r.annotations_mut()
                .insert(BSL_ROOT.into(), "s3:http://s3:9000/bucket/cluster-a".into());
        }
        if ready {
            r.status = Some(RepositoryStatus {
                phase: RepositoryPhase::Ready,
                ..Default::default()
            });
        }
        r
    }

    #[test]
    fn a_sweep_job_names_the_bsl_the_kept_backups_and_the_one_backup() {
        let sweep = Sweep {
            key: "request-nightly-x".into(),
            only: Some("nightly"),
            grace: Duration::ZERO,
        };
        let (p, access) = sweep_job(&repo(true, true), "img", &sweep, &["running".into()]).unwrap();
        assert_eq!(
            p.args,
            [
                "job",
                "velero-gc",
                "--bsl",
                "s3:http://s3:9000/bucket/cluster-a",
                "--grace",
                "0s",
                "--retry-lock",
                "10m",
                "--keep",
                "running",
                "--only",
                "nightly"
            ]
        );
        assert_eq!(p.labels[SWEEP_LABEL], "request-nightly-x");
        assert_eq!(p.owner.name, "mover-velero-default-app");
        assert_eq!(p.volume, VolumeAttach::None);
        assert_eq!(access.service_account.name_any(), p.service_account);
        let periodic = Sweep {
            key: "periodic-3".into(),
            only: None,
            grace: Duration::from_secs(86_400),
        };
        let (p, _) = sweep_job(&repo(true, true), "img", &periodic, &[]).unwrap();
        assert_eq!(p.args[5], "86400s");
        assert!(!p.args.contains(&"--only".to_string()));
    }

    #[test]
    fn repositories_not_ready_or_without_their_bsl_are_not_swept() {
        let sweep = Sweep {
            key: "periodic-0".into(),
            only: None,
            grace: Duration::ZERO,
        };
        assert!(sweep_job(&repo(false, true), "img", &sweep, &[]).is_none());
        assert!(sweep_job(&repo(true, false), "img", &sweep, &[]).is_none());
    }
}
