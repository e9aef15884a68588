//! The in-Job side: `mover job ...` runs an operation of `ops` inside the mover pod and
//! writes its progress (every [`PROGRESS_EVERY`]) and its final [`MoverResult`] into the
//! status of the resource it works for. The pod's ServiceAccount may get that one resource
//! and patch its status, nothing else (see `jobspec::run_access`).
//!
//! Why the mover writes status itself rather than the controller scraping logs: the numbers
//! come from the same counters the CLI shows, typed by the same Rust structs the CRD schema
//! is generated from, and the controller needs no pod/log access. The result is also
//! written to the termination message, so a run whose status patch failed still reports.

use crate::api::common::{MoverOutcome, MoverResult, ResolvedSnapshot, RunProgress, RunSummary};
use crate::api::repository::RepositoryProbeResult;
use crate::api::{Repository as RepositoryCr, VolumeBackup, VolumeRestore};
use crate::error::{Error, Result, class_name};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use mover_core::Cancel;
use mover_core::format::SnapshotId;
use mover_core::ops;
use mover_core::progress::{Progress, Report, Totals, scan_totals};
use mover_core::repo::lock::{self, LockOptions};
use mover_core::repo::{Opened, Repository, SnapshotFilter};
use mover_core::storage::Storage;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often progress is written while data moves (the API promises at most 10 s).
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How long the retention after a backup waits for the repository's exclusive lock.
const RETENTION_LOCK_WAIT: Duration = Duration::from_secs(30);
/// Where Kubernetes reads a container's termination message.
const TERMINATION_LOG: &str = "/dev/termination-log";

/// The resource a run reports to: `volumebackup/NAME`, `volumerestore/NAME` or
/// `repository/NAME`, in the pod's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: TargetKind,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    VolumeBackup,
    VolumeRestore,
    Repository,
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        let (kind, name) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected KIND/NAME"))?;
        let kind = match kind.to_ascii_lowercase().as_str() {
            "volumebackup" | "volumebackups" => TargetKind::VolumeBackup,
            "volumerestore" | "volumerestores" => TargetKind::VolumeRestore,
            "repository" | "repositories" => TargetKind::Repository,
            other => return Err(format!("{other:?}: not a mover resource kind")),
        };
        if name.is_empty() {
            return Err(format!("{s:?}: no name"));
        }
        Ok(Target {
            kind,
            name: name.to_string(),
        })
    }
}

/// Writes a run's status.
#[derive(Clone)]
pub struct Reporter {
    api: Api<DynamicObject>,
    target: Target,
    pod: Option<String>,
}

impl Reporter {
    /// Connects with the pod's credentials (`KUBECONFIG`, else the in-cluster account); the
    /// namespace is `POD_NAMESPACE`, else the client's default.
    pub async fn connect(target: Target) -> Result<Reporter> {
        let client = crate::client().await?;
        let namespace = std::env::var("POD_NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| client.default_namespace().to_string());
        let resource = match target.kind {
            TargetKind::VolumeBackup => ApiResource::erase::<VolumeBackup>(&()),
            TargetKind::VolumeRestore => ApiResource::erase::<VolumeRestore>(&()),
            TargetKind::Repository => ApiResource::erase::<RepositoryCr>(&()),
        };
        Ok(Reporter {
            api: Api::namespaced_with(client, &namespace, &resource),
            target,
            pod: std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()),
        })
    }

    /// The resource's spec, as the given type.
    pub async fn spec<T: DeserializeOwned>(&self) -> Result<T> {
        let obj = self
            .api
            .get(&self.target.name)
            .await
            .map_err(|e| Error::kube(format!("reading {}", self.describe()), e))?;
        let spec = obj.data.get("spec").cloned().unwrap_or(json!({}));
        serde_json::from_value(spec)
            .map_err(|e| Error::Invalid(format!("the spec of {}: {e}", self.describe())))
    }

    /// The snapshot id a resolve step recorded in `status.resolved`.
    pub async fn resolved_snapshot(&self) -> Result<Option<String>> {
        let obj = self
            .api
            .get_status(&self.target.name)
            .await
            .map_err(|e| Error::kube(format!("reading {}", self.describe()), e))?;
        Ok(obj
            .data
            .pointer("/status/resolved/snapshotID")
            .and_then(|v| v.as_str())
            .map(str::to_string))
    }

    /// The resource's `status.snapshotID`, when set.
    pub async fn recorded_snapshot(&self) -> Result<Option<String>> {
        let obj = self
            .api
            .get_status(&self.target.name)
            .await
            .map_err(|e| Error::kube(format!("reading {}", self.describe()), e))?;
        Ok(obj
            .data
            .pointer("/status/snapshotID")
            .and_then(|v| v.as_str())
            .map(str::to_string))
    }

    fn describe(&self) -> String {
        format!("{:?} {}", self.target.kind, self.target.name)
    }

    async fn patch_status(&self, status: serde_json::Value) -> Result<()> {
        self.api
            .patch_status(
                &self.target.name,
                &PatchParams {
                    field_manager: Some(crate::names::JOB_MANAGER.into()),
                    ..Default::default()
                },
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .map_err(|e| Error::kube(format!("writing the status of {}", self.describe()), e))?;
        Ok(())
    }

    /// Writes the final result (and the termination message).
    pub async fn finish(&self, mut result: MoverResult) -> Result<()> {
        result.pod = self.pod.clone();
        result.node = std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty());
        result.finish_time = Some(now());
        write_termination_message(&result);
        self.patch_status(json!({ "result": result })).await
    }

    async fn finish_probe(&self, mut result: RepositoryProbeResult) -> Result<()> {
        result.finish_time = Some(now());
        if let Ok(text) = serde_json::to_string(&result) {
            let _ = std::fs::write(TERMINATION_LOG, text);
        }
        self.patch_status(json!({ "result": result })).await
    }

    /// Writes progress every [`PROGRESS_EVERY`] until the returned handle is dropped or
    /// aborted; a failed write is logged and retried at the next tick.
    pub fn spawn_progress(&self, progress: Arc<Progress>, totals: Arc<Totals>) -> ProgressTask {
        let reporter = self.clone();
        let (kept_progress, kept_totals) = (Arc::clone(&progress), Arc::clone(&totals));
        let handle = tokio::spawn(async move {
            let started = Instant::now();
            let mut ticker = tokio::time::interval(PROGRESS_EVERY);
            loop {
                ticker.tick().await;
                let p = progress_status(&progress, &totals, started.elapsed());
                if let Err(e) = reporter.patch_status(json!({ "progress": p })).await {
                    tracing::warn!("progress not written: {}", e.chain_string());
                }
            }
        });
        ProgressTask {
            handle,
            reporter: self.clone(),
            progress: kept_progress,
            totals: kept_totals,
            started: Instant::now(),
        }
    }
}

/// The progress writer of a run; stops when dropped.
pub struct ProgressTask {
    handle: tokio::task::JoinHandle<()>,
    reporter: Reporter,
    progress: Arc<Progress>,
    totals: Arc<Totals>,
    started: Instant,
}

impl ProgressTask {
    /// Stops the periodic writes and writes the final counts once: a run shorter than one
    /// interval would otherwise leave only the zeros of its first write in the status.
    pub async fn finish(&self) {
        self.handle.abort();
        let p = progress_status(&self.progress, &self.totals, self.started.elapsed());
        if let Err(e) = self.reporter.patch_status(json!({ "progress": p })).await {
            tracing::warn!("final progress not written: {}", e.chain_string());
        }
    }
}

impl Drop for ProgressTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

fn progress_status(progress: &Progress, totals: &Totals, elapsed: Duration) -> RunProgress {
    // What is stored, not what was read: under a slow upload the two differ by the packs
    // in flight, and percent, rate and ETA describe the upload the user waits for.
    let r = Report::new(&progress.snapshot(), totals, elapsed);
    RunProgress {
        total_bytes: r.total_bytes,
        bytes_done: r.bytes_done,
        total_files: r.total_files,
        files_done: r.files_done,
        bytes_per_second: r.bytes_per_second,
        eta_seconds: r.seconds_remaining,
        percent: r.percent(),
        update_time: Some(now()),
    }
}

fn write_termination_message(result: &MoverResult) {
    let text = match &result.message {
        Some(m) if result.outcome == MoverOutcome::Failed => m.clone(),
        _ => serde_json::to_string(result).unwrap_or_default(),
    };
    // Only inside a pod does this file exist; elsewhere there is nothing to write to.
    if Path::new(TERMINATION_LOG).exists() {
        let _ = std::fs::write(TERMINATION_LOG, text);
    }
}

/// What every run gets: the repository's storage and password, and the cancel handle.
pub struct RunContext {
    pub storage: Storage,
    pub password: String,
    pub cancel: Cancel,
    pub lock: LockOptions,
    /// Target pack size (`RESTIC_PACK_SIZE` from the Repository's Secret, else restic's).
    pub pack_size_bytes: u64,
}

/// The volume a run reads or writes.
#[derive(Debug, Clone)]
pub enum Volume {
    Directory(PathBuf),
    Device(PathBuf),
}

/// `mover job backup`: back the volume up under `host`, apply the resource's retention, and
/// report. Stale locks are removed first (restic's rule: older than 30 minutes without a
/// refresh, or of a process that is gone on this host).
pub async fn backup(
    reporter: &Reporter,
    cx: RunContext,
    volume: Volume,
    host: String,
) -> Result<MoverResult> {
    let spec: crate::api::VolumeBackupSpec = reporter.spec().await?;
    let outcome = run_backup(reporter, &cx, &spec, volume, host).await;
    report(reporter, outcome).await
}

async fn report(reporter: &Reporter, outcome: Result<MoverResult>) -> Result<MoverResult> {
    let result = match &outcome {
        Ok(r) => r.clone(),
        Err(e) => MoverResult {
            outcome: MoverOutcome::Failed,
            error_class: Some(class_name(e.class())),
            message: Some(e.chain_string()),
            ..Default::default()
        },
    };
    if let Err(e) = reporter.finish(result.clone()).await {
        tracing::warn!("result not written to status: {}", e.chain_string());
    }
    outcome
}

async fn open_or_init(cx: &RunContext, init: bool) -> Result<(Repository, bool)> {
    let (repo, opened) = Repository::open_or_init(cx.storage.clone(), &cx.password, init).await?;
    Ok((repo, opened == Opened::Created))
}

async fn remove_stale(repo: &Repository) -> Vec<String> {
    match lock::remove_stale_locks(repo, None).await {
        Ok(removed) => removed
            .iter()
            .map(|(l, why)| {
                let text = format!("removed stale lock {} ({why})", l.describe());
                eprintln!("{text}");
                text
            })
            .collect(),
        Err(e) => {
            tracing::warn!("stale locks not removed: {}", e.chain_string());
            Vec::new()
        }
    }
}

async fn run_backup(
    reporter: &Reporter,
    cx: &RunContext,
    spec: &crate::api::VolumeBackupSpec,
    volume: Volume,
    host: String,
) -> Result<MoverResult> {
    let (repo, _) = open_or_init(cx, true).await?;
    let stale = remove_stale(&repo).await;
    let progress = Arc::new(Progress::default());
    let totals = Arc::new(Totals::default());
    let writer = reporter.spawn_progress(Arc::clone(&progress), Arc::clone(&totals));
    let started = Instant::now();
    let request = |paths: Vec<PathBuf>| ops::backup::BackupRequest {
        paths,
        host: Some(host.clone()),
        tags: spec.tags.clone(),
        lock: cx.lock.clone(),
        ..Default::default()
    };
    let summary = match &volume {
        Volume::Directory(dir) => {
            let (found, roots, cancel) = (Arc::clone(&totals), [dir.clone()], cx.cancel.clone());
            tokio::task::spawn_blocking(move || scan_totals(&roots, &found, &cancel));
            // As VolSync does: `cd /data; backup .`, so the snapshot's path is the mount
            // point and its root holds the volume's top level.
            std::env::set_current_dir(dir)
                .map_err(|e| mover_core::Error::io(format!("entering {}", dir.display()), e))?;
            let mut opts = tree_options(request(vec![PathBuf::from(".")]), &repo)?;
            opts.pipeline.pack_size_bytes = cx.pack_size_bytes;
            ops::backup::backup(&repo, &opts, Arc::clone(&progress)).await?
        }
        Volume::Device(dev) => {
            if let Ok(mut f) = std::fs::File::open(dev) {
                if let Ok(size) = mover_core::fs::block::volume_size(&mut f) {
                    totals.bytes.store(size, Ordering::Relaxed);
                    totals.files.store(1, Ordering::Relaxed);
                    totals.known.store(true, Ordering::Relaxed);
                }
            }
            let device = ops::backup::BackupRequest {
                image: true,
                volume_name: Some("data.img".into()),
                ..request(vec![dev.clone()])
            };
            let concurrency = repo.storage().upload_concurrency();
            let ops::backup::BackupPlan::Volume {
                source,
                mut options,
            } = device.plan(concurrency)?
            else {
                let what = format!("{} is neither a block device nor a file", dev.display());
                return Err(mover_core::Error::InvalidInput(what).into());
            };
            options.pipeline.pack_size_bytes = cx.pack_size_bytes;
            ops::block::backup_volume(&repo, &options, source, Arc::clone(&progress)).await?
        }
    };
    writer.finish().await;
    let mut message = stale;
    let mut warnings = Vec::new();
    for e in &summary.errors {
        eprintln!("error: {e}");
    }
    if !summary.errors.is_empty() {
        let first = summary.errors.first().cloned().unwrap_or_default();
        let denied = summary
            .errors
            .iter()
            .any(|e| e.to_ascii_lowercase().contains("permission denied"));
        let hint = if denied {
            "; files other users own with private modes need spec.mover.privileged: true"
        } else {
            ""
        };
        warnings.push(format!(
            "{} files could not be read and are not in the snapshot (first: {first}){hint}",
            summary.errors.len()
        ));
    }
    // The snapshot is saved: from here on nothing may fail the run (a failure would make
    // the pod retry into a second snapshot). A retention that cannot be applied is a
    // warning, and the next run applies it again.
    if let Some(retention) = spec.retention.as_ref().filter(|r| !r.is_empty()) {
        match forget_by_policy(&repo, cx, retention, &host).await {
            Ok(forgot) => message.push(format!("retention removed {forgot} snapshots")),
            Err(e) => {
                let w = format!("retention not applied: {}", e.chain_string());
                eprintln!("warning: {w}");
                warnings.push(w);
            }
        }
    }
    eprintln!("snapshot {} saved", summary.snapshot_id.short());
    let repository_snapshots = repo
        .storage()
        .list(mover_core::storage::FileType::Snapshot)
        .await
        .ok()
        .map(|s| s.len() as u64);
    Ok(MoverResult {
        repository_snapshots,
        outcome: MoverOutcome::Succeeded,
        snapshot_id: Some(summary.snapshot_id.to_hex()),
        summary: Some(RunSummary {
            files_new: summary.files_new,
            files_changed: summary.files_changed,
            files_unmodified: summary.files_unmodified,
            bytes_processed: summary.total_bytes_processed,
            bytes_added: summary.data_added,
            bytes_stored: summary.data_added_packed,
            errors: summary.errors.len() as u64,
            duration_seconds: started.elapsed().as_secs_f64(),
            ..Default::default()
        }),
        message: (!message.is_empty()).then(|| message.join("; ")),
        warnings,
        ..Default::default()
    })
}

/// restic's `forget --host HOST` with the resource's keep policy; returns how many went.
async fn forget_by_policy(
    repo: &Repository,
    cx: &RunContext,
    retention: &crate::api::RetentionPolicy,
    host: &str,
) -> Result<usize> {
    let policy = retention.keep_policy().map_err(Error::Invalid)?;
    let opts = ops::forget::ForgetOptions {
        policy,
        filter: SnapshotFilter {
            hosts: vec![host.to_string()],
            ..Default::default()
        },
        lock: LockOptions {
            // Retention needs an exclusive lock, which any neighbour's backup blocks; it
            // waits briefly rather than holding the finished run (the next run applies it).
            retry: cx.lock.retry.min(RETENTION_LOCK_WAIT),
            ..cx.lock.clone()
        },
        ..Default::default()
    };
    Ok(ops::forget::forget(repo, &opts).await?.removed.len())
}

/// `mover job restore`: the snapshot the resource selects, onto the volume.
pub async fn restore(reporter: &Reporter, cx: RunContext, volume: Volume) -> Result<MoverResult> {
    let spec: crate::api::VolumeRestoreSpec = reporter.spec().await?;
    let outcome = run_restore(reporter, &cx, &spec, volume).await;
    report(reporter, outcome).await
}

/// The snapshot a VolumeRestore's source selects; `None` when nothing matches a `latest`
/// or `asOf` selection (an id that matches nothing is an error).
async fn select(
    repo: &Repository,
    source: &crate::api::restore::RestoreSource,
) -> Result<Option<(SnapshotId, mover_core::format::snapshot::SnapshotFile)>> {
    let filter = SnapshotFilter {
        hosts: source.host.iter().cloned().collect(),
        paths: source.paths.clone(),
        tags: source.tags.clone(),
    };
    let selected = match &source.snapshot_id {
        Some(id) => return Ok(Some(repo.find_snapshot(id, &filter).await?)),
        None => {
            let as_of = source
                .as_of
                .as_deref()
                .map(|t| {
                    mover_core::format::gotime::parse(t).map_err(|e| {
                        Error::Invalid(format!("source.asOf {t:?} is not an RFC 3339 time: {e}"))
                    })
                })
                .transpose()?;
            let previous = source.previous.unwrap_or(0) as usize;
            repo.find_latest_as_of(&filter, as_of, previous).await
        }
    };
    match selected {
        Ok(found) => Ok(Some(found)),
        // Only "nothing matches" is an empty result; every other failure fails the run, so
        // a populator never hands out an empty volume by mistake.
        Err(mover_core::Error::SnapshotNotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `mover job resolve`: pick the snapshot a VolumeRestore will restore and record it with
/// its size in `status.resolved`, before any volume is made for it.
pub async fn resolve(reporter: &Reporter, cx: RunContext) -> Result<ResolvedSnapshot> {
    let spec: crate::api::VolumeRestoreSpec = reporter.spec().await?;
    let outcome = async {
        let (repo, _) = open_or_init(&cx, false).await?;
        Ok::<_, Error>(match select(&repo, &spec.source).await? {
            Some((id, snap)) => {
                let size = snap.summary.as_ref().map(|s| s.total_bytes_processed);
                let files = snap.summary.as_ref().map(|s| s.total_files_processed);
                let block = is_volume_snapshot(&repo, &snap).await?;
                eprintln!("selected snapshot {} of {}", id.short(), snap.time);
                ResolvedSnapshot {
                    snapshot_id: Some(id.to_hex()),
                    size_bytes: size.unwrap_or(0),
                    files: files.unwrap_or(0),
                    block,
                    ..Default::default()
                }
            }
            None => {
                eprintln!("no snapshot matches the selection");
                ResolvedSnapshot {
                    no_snapshot: true,
                    ..Default::default()
                }
            }
        })
    }
    .await;
    let written = match &outcome {
        Ok(r) => r.clone(),
        Err(e) => ResolvedSnapshot {
            error_class: Some(class_name(e.class())),
            message: Some(e.chain_string()),
            ..Default::default()
        },
    };
    if let Some(m) = &written.message {
        let _ = std::fs::write(TERMINATION_LOG, m);
    }
    if let Err(e) = reporter.patch_status(json!({ "resolved": written })).await {
        tracing::warn!("selection not written to status: {}", e.chain_string());
    }
    outcome
}

/// A volume's tree backup as the library plans it; what a Job adds: `lost+found` (made by
/// mkfs, not the application's) is left out.
fn tree_options(
    mut request: ops::backup::BackupRequest,
    repo: &Repository,
) -> Result<ops::backup::BackupOptions> {
    request.excludes.push("lost+found".into());
    match request.plan(repo.storage().upload_concurrency())? {
        ops::backup::BackupPlan::Tree(options) => Ok(options),
        ops::backup::BackupPlan::Volume { .. } => {
            let what = "a volume's directory was planned as one file".to_string();
            Err(mover_core::Error::InvalidInput(what).into())
        }
    }
}

/// Whether a snapshot is a block volume (mover's or restic's `--stdin`) rather than a tree.
async fn is_volume_snapshot(
    repo: &Repository,
    snap: &mover_core::format::snapshot::SnapshotFile,
) -> Result<bool> {
    let index = repo.load_index().await?;
    let tree = repo.load_tree(&index, &snap.tree).await?;
    Ok(holds_one_volume(&snap.paths, &tree))
}

/// A volume snapshot is one file at the root named as the snapshot's one path (`/data`
/// holds `data`, restic's `/stdin` holds `stdin`). A file tree backed up from its mount
/// point (`cd /data; backup .`) that holds a single file has that file at its root under
/// its own name, and stays a tree.
fn holds_one_volume(paths: &[String], tree: &mover_core::format::tree::Tree) -> bool {
    let [path] = paths else { return false };
    let [node] = tree.nodes.as_slice() else {
        return false;
    };
    let name = path.rsplit('/').next().unwrap_or("");
    node.node_type == mover_core::format::tree::NodeType::File && node.name == name.as_bytes()
}

async fn run_restore(
    reporter: &Reporter,
    cx: &RunContext,
    spec: &crate::api::VolumeRestoreSpec,
    volume: Volume,
) -> Result<MoverResult> {
    let (repo, _) = open_or_init(cx, false).await?;
    let stale = remove_stale(&repo).await;
    // The snapshot the resolve step recorded wins over a new selection.
    let mut source = spec.source.clone();
    if let Some(id) = reporter.resolved_snapshot().await? {
        source = crate::api::restore::RestoreSource {
            snapshot_id: Some(id),
            ..Default::default()
        };
    }
    let Some((id, snap)) = select(&repo, &source).await? else {
        return Ok(MoverResult {
            outcome: MoverOutcome::NoSnapshot,
            message: Some("no snapshot matches the selection".into()),
            ..Default::default()
        });
    };
    let progress = Arc::new(Progress::default());
    let totals = Arc::new(Totals::default());
    if let Some(size) = snap.summary.as_ref().map(|s| s.total_bytes_processed) {
        totals.bytes.store(size, Ordering::Relaxed);
        if let Some(files) = snap.summary.as_ref().map(|s| s.total_files_processed) {
            totals.files.store(files, Ordering::Relaxed);
        }
        totals.known.store(true, Ordering::Relaxed);
    }
    let writer = reporter.spawn_progress(Arc::clone(&progress), Arc::clone(&totals));
    let started = Instant::now();
    let lock_opts = cx.lock.clone();
    let summary = match &volume {
        Volume::Directory(dir) => {
            let opts = ops::restore::RestoreOptions {
                target: dir.clone(),
                delete: spec.delete_extraneous,
                include_xattrs: vec!["user.*".into()],
                lock: lock_opts,
                ..Default::default()
            };
            let s = ops::restore::restore(&repo, &snap, &opts, Arc::clone(&progress)).await?;
            for e in &s.errors {
                eprintln!("error: {e}");
            }
            if !s.errors.is_empty() {
                return Err(Error::Engine(mover_core::Error::Incomplete {
                    what: format!("restore of snapshot {}", id.short()),
                    count: s.errors.len(),
                    first: s.errors[0].to_string(),
                }));
            }
            sync_volume(dir);
            RunSummary {
                files_restored: s.files_restored,
                files_skipped: s.files_skipped,
                files_deleted: s.files_deleted,
                bytes_processed: s.bytes_restored,
                duration_seconds: started.elapsed().as_secs_f64(),
                ..Default::default()
            }
        }
        Volume::Device(dev) => {
            let opts = ops::block::VolumeRestoreOptions {
                target: dev.clone(),
                lock: lock_opts,
                ..Default::default()
            };
            let s = ops::block::restore_volume(&repo, &snap, &opts, Arc::clone(&progress)).await?;
            RunSummary {
                files_restored: 1,
                bytes_processed: s.size,
                duration_seconds: started.elapsed().as_secs_f64(),
                ..Default::default()
            }
        }
    };
    writer.finish().await;
    eprintln!("restored snapshot {}", id.short());
    Ok(MoverResult {
        outcome: MoverOutcome::Succeeded,
        snapshot_id: Some(id.to_hex()),
        summary: Some(summary),
        message: (!stale.is_empty()).then(|| stale.join("; ")),
        ..Default::default()
    })
}

/// Flushes the restored volume before the pod ends, as VolSync's mover does with `sync`.
fn sync_volume(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = nix::unistd::syncfs(&f);
    }
}

/// `mover job forget`: remove the snapshot a VolumeBackup recorded (deletionPolicy Delete).
pub async fn forget_recorded(reporter: &Reporter, cx: RunContext) -> Result<Option<SnapshotId>> {
    let Some(id) = reporter.recorded_snapshot().await? else {
        return Ok(None);
    };
    let repo = match Repository::open(cx.storage.clone(), &cx.password).await {
        Ok(r) => r,
        // Nothing to forget in a repository that is gone.
        Err(mover_core::Error::RepositoryNotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let opts = ops::forget::ForgetOptions {
        ids: vec![id.clone()],
        lock: cx.lock.clone(),
        ..Default::default()
    };
    match ops::forget::forget(&repo, &opts).await {
        Ok(s) => Ok(s.removed.first().copied()),
        // Already forgotten (by hand or by retention): the goal is reached.
        Err(e) if e.class() == mover_core::error::ErrorClass::InvalidInput => {
            eprintln!("snapshot {id} is no longer in the repository");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// `mover job probe`: open the repository (create it when missing and allowed), count its
/// snapshots, clear stale locks, and report.
pub async fn probe(reporter: &Reporter, cx: RunContext) -> Result<RepositoryProbeResult> {
    let spec: crate::api::RepositorySpec = reporter.spec().await?;
    let outcome = async {
        let (repo, initialized) = open_or_init(&cx, spec.initialize).await?;
        let stale = remove_stale(&repo).await;
        let count = repo.list_snapshots().await?.len() as u64;
        Ok::<_, Error>(RepositoryProbeResult {
            ok: true,
            initialized,
            repository_id: Some(repo.config().id.clone()),
            snapshot_count: Some(count),
            message: (!stale.is_empty()).then(|| stale.join("; ")),
            ..Default::default()
        })
    }
    .await;
    let result = match &outcome {
        Ok(r) => r.clone(),
        Err(e) => RepositoryProbeResult {
            ok: false,
            error_class: Some(class_name(e.class())),
            message: Some(e.chain_string()),
            ..Default::default()
        },
    };
    if let Err(e) = reporter.finish_probe(result).await {
        tracing::warn!("probe result not written to status: {}", e.chain_string());
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_with_one_file_is_not_a_block_volume() {
        use mover_core::format::tree::{NodeType, Tree};
        let mut tree = Tree::default();
        let node = mover_core::format::tree::Node::new(b"table.bin".to_vec(), NodeType::File);
        tree.nodes.push(node.clone());
        let paths = |p: &str| vec![p.to_string()];
        assert!(!holds_one_volume(&paths("/data"), &tree));
        tree.nodes[0].name = b"data".to_vec();
        assert!(holds_one_volume(&paths("/data"), &tree));
        tree.nodes[0].name = b"stdin".to_vec();
        assert!(holds_one_volume(&paths("/stdin"), &tree));
        assert!(!holds_one_volume(&[], &tree));
        tree.nodes.push(node);
        assert!(!holds_one_volume(&paths("/stdin"), &tree));
    }

    #[test]
    fn targets_parse_and_bad_ones_are_named() {
        let t: Target = "volumebackup/db".parse().unwrap();
        assert_eq!(t.kind, TargetKind::VolumeBackup);
        assert_eq!(t.name, "db");
        assert!("pod/x".parse::<Target>().unwrap_err().contains("pod"));
        assert!("volumerestore/".parse::<Target>().is_err());
    }
}
