//! `VolumeRestore`: one restore of a restic snapshot into a new or existing PVC. It is also a
//! volume populator: a PVC whose `dataSourceRef` names a VolumeRestore is filled by it.

use super::common::{MoverSpec, RunStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Which snapshot to restore, from which Repository, and where to.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mover.dev",
    version = "v1alpha1",
    kind = "VolumeRestore",
    namespaced,
    doc = "One restore of a restic snapshot into a new or existing PVC, or as a volume populator.",
    status = "RunStatus",
    shortname = "vrs",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress.percent"}"#,
    printcolumn = r#"{"name":"Snapshot","type":"string","jsonPath":".status.snapshotID"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRestoreSpec {
    /// Name of the Repository in this namespace.
    pub repository: String,
    /// Which snapshot to restore: `snapshotID`, or the latest that matches `host`, `tags` and
    /// `paths` (optionally `asOf` and `previous`).
    pub source: RestoreSource,
    /// Where the data goes; absent when the VolumeRestore only serves as a populator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RestoreTarget>,
    /// Remove files in the target that the snapshot does not have (restic `--delete`).
    #[serde(default)]
    pub delete_extraneous: bool,
    /// Set to stop the run: the mover gets SIGTERM and the run ends Canceled; data already
    /// written stays.
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

/// Which snapshot: an id, or the latest one matching host/tags/paths, optionally the latest
/// before `asOf` and `previous` more back from there (VolSync's `restoreAsOf` and `previous`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.snapshotID) || (!has(self.asOf) && !has(self.previous))").message("snapshotID cannot be combined with asOf or previous"))]
pub struct RestoreSource {
    /// The snapshot to restore: `latest`, a full id or a unique id prefix.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "snapshotID"
    )]
    pub snapshot_id: Option<String>,
    /// Only snapshots of this restic host (a VolumeBackup's `host`, `<namespace>-<pvc>` by
    /// default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Only snapshots that have all tags of one entry (a tag, or tags separated by commas).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Only snapshots that include every one of these paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// RFC 3339 time: the latest snapshot at or before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    /// How many snapshots further back than the selected one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<u32>,
}

/// Exactly one of `pvc` (an existing claim) and `newPVC`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.pvc) != has(self.newPVC)").message("give exactly one of target.pvc and target.newPVC"))]
pub struct RestoreTarget {
    /// An existing PVC in this namespace to restore into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<String>,
    /// A PVC for the restore to create; it outlives the VolumeRestore.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "newPVC")]
    pub new_pvc: Option<NewPvc>,
}

/// A PVC the restore creates and fills.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NewPvc {
    /// Name of the PVC to create in this namespace; it must not exist yet.
    pub name: String,
    /// StorageClass of the new PVC (the cluster default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// `ReadWriteOnce` when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    /// Size of the claim; the snapshot's size (rounded up to a MiB, at least 1 GiB) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Quantity>,
    /// `Filesystem` (default) or `Block`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
}
