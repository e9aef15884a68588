//! `Repository`: a restic repository and the Secret that opens it.

use super::common::{KeyReference, SecretKeySelector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A restic repository. The Secret holds restic's environment (`RESTIC_REPOSITORY`,
/// `RESTIC_PASSWORD`, `AWS_ACCESS_KEY_ID`, ...), the same keys a VolSync restic Secret has.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "mover.dev",
    version = "v1alpha1",
    kind = "Repository",
    namespaced,
    doc = "A restic repository that VolumeBackups write to and VolumeRestores read from.",
    status = "RepositoryStatus",
    shortname = "moverrepo",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Snapshots","type":"integer","jsonPath":".status.snapshotCount"}"#,
    printcolumn = r#"{"name":"Last Backup","type":"date","jsonPath":".status.lastBackupTime"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RepositorySpec {
    /// The Secret in this namespace whose keys every Job of this repository gets as its
    /// environment (`RESTIC_REPOSITORY`, `RESTIC_PASSWORD`, credentials).
    pub secret_ref: super::common::LocalObjectReference,
    /// A CA bundle for the repository's endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_ca: Option<KeyReference>,
    /// Limits on the mover Jobs that use this repository (none when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<RepositoryConcurrency>,
    /// Create the repository when it does not exist (default true).
    #[serde(default = "default_true")]
    pub initialize: bool,
    /// Plain settings for every Job of this repository, over the Secret's keys: for
    /// example `RESTIC_REPOSITORY` or `AWS_DEFAULT_REGION` where they are no secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// An AWS shared credentials file (INI, as Velero's BackupStorageLocation credential)
    /// in a Secret of this namespace; `AWS_PROFILE` in `env` picks its profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<SecretKeySelector>,
}

fn default_true() -> bool {
    true
}

/// Limits on the Jobs that use one repository.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryConcurrency {
    /// Mover Jobs that may run against this repository at once (unlimited when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_jobs: Option<u32>,
}

/// Where a Repository is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum RepositoryPhase {
    #[default]
    Pending,
    Ready,
    /// The last probe met a failure that may pass (the endpoint unreachable, a timeout, a
    /// probe pod that died): probed again with backoff; runs wait meanwhile.
    Degraded,
    /// The last probe met a failure that only a change fixes (wrong password, no
    /// repository and `initialize: false`, a missing Secret): probed again when the spec
    /// changes, when a watched Secret changes, or on a slow backoff when Secrets are not
    /// watched.
    Failed,
}

/// What the last probe found in the repository, and the last backup into it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryStatus {
    /// `Pending` until checked, `Ready`, `Degraded` (a failure that may pass; checked again
    /// with backoff) or `Failed` (a failure only a change to the spec or Secret fixes).
    #[serde(default)]
    pub phase: RepositoryPhase,
    /// The `Ready` condition: reason `Opened`, else `SecretNotFound`, `PodConfigError`,
    /// `ProbeFailed` or the error class of the failure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Snapshots in the repository, as the last probe or backup counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_count: Option<u64>,
    /// When the last probe finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked_time: Option<Time>,
    /// One line on the last probe: what it did, or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The restic repository id.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "repositoryID"
    )]
    pub repository_id: Option<String>,
    /// The `metadata.generation` of the spec the last finished probe checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The resourceVersion of the Secret last checked, so a changed Secret is checked again
    /// (only when the controller watches Secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_version: Option<String>,
    /// When the last backup into this repository completed, and what it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_time: Option<Time>,
    /// The VolumeBackup that made the last backup and the snapshot it saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<String>,
    /// New data the last backup stored, after compression and encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_bytes: Option<u64>,
    /// Probes in a row that failed; sets the backoff of the next one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_probes: u32,
    /// Written by the probe Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<RepositoryProbeResult>,
}

/// What the probe Job found.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryProbeResult {
    /// Whether the repository opened (or was created).
    pub ok: bool,
    /// Whether the probe created the repository.
    #[serde(default)]
    pub initialized: bool,
    /// The restic repository id.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "repositoryID"
    )]
    pub repository_id: Option<String>,
    /// Snapshots the probe counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_count: Option<u64>,
    /// The engine's error class (`WrongPassword`, `NotFound`, `Retryable`, ...) on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    /// What failed, or on success the stale locks that were removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the probe Job wrote this result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<Time>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
