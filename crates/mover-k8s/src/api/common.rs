//! Types shared by the run resources (VolumeBackup, VolumeRestore): phases, progress, the
//! result the mover Job writes, the pod knobs. The controller and the in-Job reporter both use
//! these, so a field the API server does not know cannot be written by one side only.

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::api::core::v1::{PodSecurityContext, ResourceRequirements, SecurityContext};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a run is. `Completed`, `Failed` and `Canceled` are final.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum RunPhase {
    #[default]
    New,
    Preparing,
    InProgress,
    Completed,
    Failed,
    Canceling,
    Canceled,
}

impl RunPhase {
    pub fn is_final(self) -> bool {
        match self {
            RunPhase::Completed | RunPhase::Failed | RunPhase::Canceled => true,
            RunPhase::New | RunPhase::Preparing | RunPhase::InProgress | RunPhase::Canceling => {
                false
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunPhase::New => "New",
            RunPhase::Preparing => "Preparing",
            RunPhase::InProgress => "InProgress",
            RunPhase::Completed => "Completed",
            RunPhase::Failed => "Failed",
            RunPhase::Canceling => "Canceling",
            RunPhase::Canceled => "Canceled",
        }
    }
}

/// Live byte and file counts, written by the mover process while data moves.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunProgress {
    /// Bytes the run will read (backup) or write (restore), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    /// Bytes done so far: for a backup, bytes read whose data is stored in the repository
    /// (packs uploaded); for a restore, bytes written to the volume.
    pub bytes_done: u64,
    /// Files the run will read (backup) or write (restore), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_files: Option<u64>,
    /// Files read (backup) or written (restore) so far.
    pub files_done: u64,
    /// Average rate of `bytesDone` since the data started moving, in bytes per second.
    pub bytes_per_second: u64,
    /// Seconds left at that rate, once `totalBytes` is known and data has moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
    /// Percentage of `totalBytes` done, as text for the printer column ("42%").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<String>,
    /// When the mover last wrote this progress (about every 5 seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<Time>,
}

/// What a finished run did.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Files a backup saved that its parent snapshot did not have.
    #[serde(default)]
    pub files_new: u64,
    /// Files a backup saved that changed since its parent snapshot.
    #[serde(default)]
    pub files_changed: u64,
    /// Files a backup found unchanged since its parent snapshot.
    #[serde(default)]
    pub files_unmodified: u64,
    /// Files written by a restore.
    #[serde(default)]
    pub files_restored: u64,
    /// Files a restore found identical and left alone.
    #[serde(default)]
    pub files_skipped: u64,
    /// Files a restore removed because the snapshot does not have them.
    #[serde(default)]
    pub files_deleted: u64,
    /// Bytes read from the source (backup) or written to the target (restore).
    #[serde(default)]
    pub bytes_processed: u64,
    /// New data added to the repository, before compression.
    #[serde(default)]
    pub bytes_added: u64,
    /// New data stored in the repository, after compression and encryption.
    #[serde(default)]
    pub bytes_stored: u64,
    /// Entries that could not be read or written.
    #[serde(default)]
    pub errors: u64,
    /// Seconds the mover spent moving data.
    pub duration_seconds: f64,
}

/// The mover process's own account of its run, written into the CR's status before it exits.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct MoverResult {
    /// `Succeeded` or `Failed`.
    pub outcome: MoverOutcome,
    /// The restic snapshot saved (backup) or restored (restore).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "snapshotID"
    )]
    pub snapshot_id: Option<String>,
    /// File counts, bytes and duration of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<RunSummary>,
    /// The engine's error class (`WrongPassword`, `NotFound`, `Retryable`, ...) on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    /// One line naming what failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What went wrong in a run that still succeeded: a retention that failed after the
    /// snapshot was saved, files that could not be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Snapshots in the repository after the run (a backup, after its retention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_snapshots: Option<u64>,
    /// Name of the pod that wrote this result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Name of the node that pod ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// When the mover process wrote this result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<Time>,
}

/// How the mover process's run ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum MoverOutcome {
    #[default]
    Succeeded,
    Failed,
    NoSnapshot,
}

/// The observed state of a run, written by the controller and the mover Job (VolumeBackup and
/// VolumeRestore share it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    /// Where the run is: `New`, `Preparing`, `InProgress` or `Canceling`, then one of the
    /// final phases `Completed`, `Failed` or `Canceled`.
    #[serde(default)]
    pub phase: RunPhase,
    /// Live byte and file counts while data moves, written by the mover process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<RunProgress>,
    /// The restic snapshot written (backup) or read (restore).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "snapshotID"
    )]
    pub snapshot_id: Option<String>,
    /// What a completed run did: file counts, bytes and duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<RunSummary>,
    /// When the run started preparing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run reached a final phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// One line about the current phase: what the run waits for, why it failed, or what it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `Succeeded` (True once Completed, False once Failed or Canceled), `Waiting` while
    /// the run waits for an object, and `Warning` after a success with warnings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` of the spec the run started with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Objects this run created, so a restarted controller finds and removes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<RunResources>,
    /// The snapshot a restore's resolve step picked (and its size), written by the mover
    /// process so that the restore uses that snapshot even if newer ones appear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<ResolvedSnapshot>,
    /// Written by the mover process; the controller copies it into the fields above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<MoverResult>,
}

/// A snapshot chosen by a restore's selection, with what a new volume needs to hold it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedSnapshot {
    /// Empty when nothing matched (`noSnapshot`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "snapshotID"
    )]
    pub snapshot_id: Option<String>,
    /// Bytes of file content in the snapshot.
    #[serde(default)]
    pub size_bytes: u64,
    /// Files in the snapshot.
    #[serde(default)]
    pub files: u64,
    /// Whether the snapshot holds one block-volume image rather than a tree.
    #[serde(default)]
    pub block: bool,
    /// No snapshot matched the selection (not an error: an explicit empty result).
    #[serde(default)]
    pub no_snapshot: bool,
    /// The engine's error class when the selection failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    /// What went wrong when the selection failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Names of the temporary objects of a run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunResources {
    /// The temporary VolumeSnapshot of a backup with `copyMethod: Snapshot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot: Option<String>,
    /// The temporary PVC a backup reads, or the claim a restore fills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<String>,
    /// The mover Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

/// How the mover pod runs. Everything is optional; the defaults are hardened.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct MoverSpec {
    /// CPU and memory requests and limits of the mover container (none when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Replaces the container's hardened security context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// Replaces the pod's security context (runAsUser 65532, fsGroup 65532 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,
    /// Node labels the mover pod must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of the mover pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Run as root with CAP_CHOWN, CAP_FOWNER and friends, to read every file and restore
    /// ownership. Off by default.
    #[serde(default)]
    pub privileged: bool,
    /// Seconds before a mover Job is given up (`activeDeadlineSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
}

/// restic's keep policy, applied to the run's host and path after a successful backup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.keepLast) || has(self.keepHourly) || has(self.keepDaily) || has(self.keepWeekly) || has(self.keepMonthly) || has(self.keepYearly) || has(self.keepWithin) || (has(self.keepTags) && size(self.keepTags) > 0)").message("retention names no keep rule: give at least one keep field, or leave retention out"))]
#[x_kube(validation = Rule::new("!has(self.keepWithin) || self.keepWithin.matches('^([0-9]{1,9}[ymdh])+$')").message("retention.keepWithin must be a restic duration such as 7d, 2y6m or 1d12h (numbers with y, m, d or h)"))]
pub struct RetentionPolicy {
    /// Keep the newest N snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N weeks that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    /// A restic duration such as `7d` or `1y2m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<String>,
    /// Keep every snapshot that has all tags of one entry (a tag, or tags separated by commas).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_tags: Vec<String>,
}

impl RetentionPolicy {
    /// This policy as the engine's retention request.
    pub fn keep_request(&self) -> mover_core::ops::forget::policy::KeepRequest {
        let count = |v: Option<u32>| v.map(i64::from);
        mover_core::ops::forget::policy::KeepRequest {
            last: count(self.keep_last),
            hourly: count(self.keep_hourly),
            daily: count(self.keep_daily),
            weekly: count(self.keep_weekly),
            monthly: count(self.keep_monthly),
            yearly: count(self.keep_yearly),
            within: self.keep_within.clone(),
            tags: self.keep_tags.clone(),
            ..Default::default()
        }
    }

    /// The engine's keep policy, validated as restic validates its flags; an empty policy
    /// is refused (it would forget nothing and only take a lock).
    pub fn keep_policy(&self) -> Result<mover_core::ops::forget::policy::KeepPolicy, String> {
        let policy = mover_core::ops::forget::policy::KeepPolicy::try_from(&self.keep_request())
            .map_err(|e| format!("retention: {e}"))?;
        if policy.is_empty() {
            return Err("retention names no keep rule".into());
        }
        Ok(policy)
    }

    /// The `forget` flags this policy stands for.
    pub fn forget_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut num = |flag: &str, v: Option<u32>| {
            if let Some(v) = v {
                args.push(format!("--{flag}={v}"));
            }
        };
        num("keep-last", self.keep_last);
        num("keep-hourly", self.keep_hourly);
        num("keep-daily", self.keep_daily);
        num("keep-weekly", self.keep_weekly);
        num("keep-monthly", self.keep_monthly);
        num("keep-yearly", self.keep_yearly);
        if let Some(w) = &self.keep_within {
            args.push(format!("--keep-within={w}"));
        }
        for t in &self.keep_tags {
            args.push(format!("--keep-tag={t}"));
        }
        args
    }

    pub fn is_empty(&self) -> bool {
        self.forget_args().is_empty()
    }
}

/// A reference to an object by name in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
pub struct LocalObjectReference {
    /// Name of the object in this namespace.
    pub name: String,
}

/// A key of a Secret or ConfigMap in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct KeyReference {
    /// Secret in this namespace that holds the key (wins when both names are set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// ConfigMap in this namespace that holds the key, when `secretName` is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_name: Option<String>,
    /// The key within the Secret or ConfigMap.
    pub key: String,
}

/// A key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
pub struct SecretKeySelector {
    /// Name of the Secret in this namespace.
    pub name: String,
    /// The key within the Secret.
    pub key: String,
}
