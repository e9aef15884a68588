//! `VolumeBackup`: one backup of a PVC or VolumeSnapshot into a Repository.

use super::common::{MoverSpec, RetentionPolicy, RunStatus};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One backup run.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mover.dev",
    version = "v1alpha1",
    kind = "VolumeBackup",
    namespaced,
    doc = "One backup of a PVC or VolumeSnapshot into a restic snapshot in a Repository.",
    status = "RunStatus",
    shortname = "vbk",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress.percent"}"#,
    printcolumn = r#"{"name":"Snapshot","type":"string","jsonPath":".status.snapshotID"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct VolumeBackupSpec {
    /// The volume to back up: exactly one of `pvc` and `volumeSnapshot`.
    pub source: BackupSource,
    /// Name of the Repository in this namespace.
    pub repository: String,
    /// How the mover reads a `pvc` source: `Snapshot` (default, a clone of a CSI snapshot),
    /// `Clone` (a clone of the PVC) or `Direct` (the PVC itself, mounted read-only).
    #[serde(default)]
    pub copy_method: CopyMethod,
    /// VolumeSnapshotClass of the snapshot taken for `copyMethod: Snapshot` (the cluster
    /// default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
    /// StorageClass of the temporary clone (the source's when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// restic tags given to the snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// restic host of the snapshot; `<namespace>-<pvc>` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// restic keep policy applied to this host's snapshots after a successful backup; none
    /// when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionPolicy>,
    /// What deleting this VolumeBackup does to its snapshot: `Retain` (default) keeps it,
    /// `Delete` forgets it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Set to stop the run: the mover gets SIGTERM, releases its lock and writes no snapshot.
    #[serde(default)]
    pub cancel: bool,
    /// How long the run waits for its PVC, snapshot, target or Repository before it fails
    /// (a Go duration such as `10m`; 5 minutes when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$')").message("waitTimeout must be a Go duration such as 90s, 10m or 1h"))]
    pub wait_timeout: Option<String>,
    /// Settings of the mover pod: resources, node placement, security context, deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mover: Option<MoverSpec>,
}

/// The volume to back up: exactly one of `pvc` and `volumeSnapshot`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.pvc) != has(self.volumeSnapshot)").message("give exactly one of source.pvc and source.volumeSnapshot"))]
pub struct BackupSource {
    /// A PVC in this namespace to back up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<String>,
    /// An existing VolumeSnapshot in this namespace to back up (cloned into a temporary
    /// PVC; `copyMethod` does not apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot: Option<String>,
}

/// How the mover reaches the data.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CopyMethod {
    /// A CSI VolumeSnapshot of the PVC, cloned into a temporary PVC (a consistent point in time).
    #[default]
    Snapshot,
    /// A temporary PVC cloned directly from the PVC (`dataSource: PersistentVolumeClaim`).
    Clone,
    /// The PVC itself, mounted read-only (pinned to the node that holds a ReadWriteOnce claim).
    Direct,
}

/// What deleting the VolumeBackup does to the restic snapshot.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// The snapshot stays in the repository.
    #[default]
    Retain,
    /// A finalizer forgets the snapshot (restic `forget`) before the object goes.
    Delete,
}
