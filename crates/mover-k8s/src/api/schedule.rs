//! `BackupSchedule`: VolumeBackups on a cron schedule, with retention and periodic prune.

use super::backup::VolumeBackupSpec;
use super::common::RetentionPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A cron schedule, the VolumeBackup each scheduled time creates, and how many are kept.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mover.dev",
    version = "v1alpha1",
    kind = "BackupSchedule",
    namespaced,
    doc = "VolumeBackups on a cron schedule, with history limits, retention and periodic prune.",
    status = "BackupScheduleStatus",
    shortname = "vbs",
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Last","type":"date","jsonPath":".status.lastScheduleTime"}"#,
    printcolumn = r#"{"name":"Next","type":"string","jsonPath":".status.nextScheduleTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.schedule.matches('^@(yearly|annually|monthly|weekly|daily|midnight|hourly)$') || self.schedule.matches('^[^ ]+( +[^ ]+){4}$')").message("schedule must be five cron fields (minute hour day-of-month month day-of-week) or @hourly, @daily, @weekly, @monthly, @yearly"))]
#[x_kube(validation = Rule::new("!has(self.jitter) || self.jitter.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$')").message("jitter must be a Go duration such as 30s, 5m or 1h30m"))]
#[x_kube(validation = Rule::new("!has(self.pruneInterval) || self.pruneInterval.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$')").message("pruneInterval must be a Go duration such as 24h or 168h"))]
pub struct BackupScheduleSpec {
    /// Five-field cron expression (minute hour day-of-month month day-of-week), or `@hourly`,
    /// `@daily`, `@weekly`, `@monthly`.
    pub schedule: String,
    /// IANA time zone of the schedule (UTC when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// A random delay up to this Go duration (`5m`) after each scheduled time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<String>,
    /// What a due run does while the previous one still runs: `Forbid` (default) skips
    /// it, `Replace` cancels the running one.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// The spec of the VolumeBackup created at each scheduled time; its repository is also
    /// the one pruned.
    pub template: VolumeBackupSpec,
    /// Completed VolumeBackups kept (default 3).
    #[serde(default = "default_successful")]
    pub successful_history_limit: u32,
    /// Failed or canceled VolumeBackups kept (default 1).
    #[serde(default = "default_failed")]
    pub failed_history_limit: u32,
    /// Keep policy applied after each successful backup (overrides the template's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionPolicy>,
    /// Go duration between prunes of the repository (`168h`); no prune when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_interval: Option<String>,
    /// Create no VolumeBackups while true (running ones and prunes go on); default false.
    #[serde(default)]
    pub suspend: bool,
}

fn default_successful() -> u32 {
    3
}

fn default_failed() -> u32 {
    1
}

/// What a scheduled run does while the previous one still runs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConcurrencyPolicy {
    /// Skip a scheduled run while the previous one still runs.
    #[default]
    Forbid,
    /// Cancel the running backup and start the new one.
    Replace,
}

/// What the schedule has done: its last and next scheduled times, its last prune.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleStatus {
    /// The last scheduled time that came due (run or skipped), before jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When the next VolumeBackup is due, jitter included; unset while suspended or
    /// while the spec is invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// Name of the last VolumeBackup that completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<String>,
    /// When the last prune Job finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_prune_time: Option<Time>,
    /// The prune Job running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_job: Option<String>,
    /// Reserved for conditions of the schedule; none are set at present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Why the spec cannot be read, or why the last prune failed; unset when all is well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
