//! `VolumeRestore`: one restore of a restic snapshot into a new or existing PVC. It is also a
//! volume populator: a PVC whose `dataSourceRef` names a VolumeRestore is filled by it.

use super::common::{MoverSpec, RunStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mover.dev",
    version = "v1alpha1",
    kind = "VolumeRestore",
    namespaced,
    status = "RunStatus",
    shortname = "vrs",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress.percent"}"#,
    printcolumn = r#"{"name":"Snapshot","type":"string","jsonPath":".status.snapshotID"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRestoreSpec {
    /// Name of the Repository in this namespace.
    pub repository: String,
    pub source: RestoreSource,
    /// Where the data goes; absent when the VolumeRestore only serves as a populator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RestoreTarget>,
    /// Remove files in the target that the snapshot does not have (restic `--delete`).
    #[serde(default)]
    pub delete_extraneous: bool,
    #[serde(default)]
    pub cancel: bool,
    /// How long the run waits for its PVC, snapshot, target or Repository before it fails
    /// (a Go duration such as `10m`; 5 minutes when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$')").message("waitTimeout must be a Go duration such as 90s, 10m or 1h"))]
    pub wait_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mover: Option<MoverSpec>,
}

/// Which snapshot: an id, or the latest one matching host/tags/paths, optionally the latest
/// before `asOf` and `previous` more back from there (VolSync's `restoreAsOf` and `previous`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.snapshotID) || (!has(self.asOf) && !has(self.previous))").message("snapshotID cannot be combined with asOf or previous"))]
pub struct RestoreSource {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "snapshotID"
    )]
    pub snapshot_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "newPVC")]
    pub new_pvc: Option<NewPvc>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NewPvc {
    pub name: String,
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
