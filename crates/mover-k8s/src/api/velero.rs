//! Velero's `velero.io` resources that mover reads and writes as a third-party data mover:
//! DataUpload and DataDownload (`v2alpha1`); BackupStorageLocation, Backup and
//! DeleteBackupRequest (`v1`).
//!
//! Their CRDs come from Velero (`config/crd/{v1,v2alpha1}/bases/` at v1.18), not from mover:
//! they are not in [`super::crds`], and the `crd()` kube-rs derives for them is not Velero's
//! CRD (it claims a status subresource, which Velero's CRDs do not have), so never apply it.
//!
//! Field names are Velero's JSON names. Every field reads with a default and unknown fields
//! are kept out of the way rather than refused, so newer Velero versions (main adds
//! `parentSnapshot` and `sourceFSType`) still parse. Fields the CRD marks required serialize
//! even when empty, as Velero's Go types do; status fields are skipped when unset, so a
//! status value is also a merge patch that touches only what it sets.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn is_false(b: &bool) -> bool {
    !*b
}

/// Velero's request to back up one CSI-snapshotted PVC, made by its CSI PVC backup action.
///
/// The CRD has **no status subresource**: write `status` with a JSON merge patch on the main
/// resource (`{"status": {...}}`, `Patch::Merge`), never `patch_status` (404) and never a
/// PUT of the whole object, so a concurrent `spec.cancel` from Velero is never lost.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[kube(
    group = "velero.io",
    version = "v2alpha1",
    kind = "DataUpload",
    namespaced,
    doc = "Velero's request to back up one CSI-snapshotted PVC (the CRD comes from Velero).",
    status = "DataUploadStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct DataUploadSpec {
    /// `CSI` for a CSI VolumeSnapshot.
    #[serde(default)]
    pub snapshot_type: String,
    /// The CSI VolumeSnapshot to back up (for `snapshotType: CSI`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csi_snapshot: Option<CsiSnapshotSpec>,
    /// The PVC that was snapshotted, in `sourceNamespace`.
    #[serde(default, rename = "sourcePVC")]
    pub source_pvc: String,
    /// The PVC's namespace; the VolumeSnapshot lives there too.
    #[serde(default)]
    pub source_namespace: String,
    /// The mover that handles this DataUpload (`mover` for us); the JSON key is lowercase.
    #[serde(default, rename = "datamover", skip_serializing_if = "Option::is_none")]
    pub datamover: Option<String>,
    /// The BackupStorageLocation name, in the DataUpload's (Velero's) namespace.
    #[serde(default)]
    pub backup_storage_location: String,
    /// The mover's budget for its internal waits, a Go duration such as `10m0s`.
    #[serde(default)]
    pub operation_timeout: String,
    /// Settings for the data mover, such as `ParallelFilesUpload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_mover_config: Option<BTreeMap<String, String>>,
    /// Set by Velero (merge patch) to ask for cancellation, in any phase.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cancel: bool,
    /// Velero main only: `none` for a full backup, `""`/`auto` for the latest, or an ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_snapshot: Option<String>,
    /// Velero main only: the PV's CSI fsType.
    #[serde(
        default,
        rename = "sourceFSType",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_fs_type: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct CsiSnapshotSpec {
    /// The VolumeSnapshot's name, in the DataUpload's `sourceNamespace`.
    #[serde(default)]
    pub volume_snapshot: String,
    /// The source PVC's StorageClass.
    #[serde(default)]
    pub storage_class: String,
    /// The VolumeSnapshotClass; empty when the VolumeSnapshot names none.
    #[serde(default)]
    pub snapshot_class: String,
    /// The CSI driver of the VolumeSnapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
}

/// Bytes moved so far (Velero's `shared.DataMoveOperationProgress`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct DataMoveProgress {
    /// Bytes to move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<i64>,
    /// Bytes moved so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_done: Option<i64>,
}

/// Written by the mover only (Velero writes `message` when its server restarts). Read the
/// phase with [`phase_of`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct DataUploadStatus {
    /// `New` (or unset), `Accepted`, `Prepared`, `InProgress`, `Canceling`, `Canceled`,
    /// `Completed` or `Failed`; read it with [`phase_of`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// One line on the phase, such as why the upload failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The restic snapshot ID, set in the same write as `Completed`.
    #[serde(
        default,
        rename = "snapshotID",
        skip_serializing_if = "Option::is_none"
    )]
    pub snapshot_id: Option<String>,
    /// The path of the backed-up data in the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `totalBytes` becomes the restore's `snapshotSize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<DataMoveProgress>,
    /// New data the backup added to the repository, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental_bytes: Option<i64>,
    /// When the data mover started on the upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,
    /// When the upload reached a final phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Time>,
    /// When a data mover accepted the upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_timestamp: Option<Time>,
    /// The node that accepted the upload (`mover-controller` for mover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_by_node: Option<String>,
    /// The node that moved the data (`mover-controller` for mover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `auto`, `linux` or `windows`; flows into the DataDownload's `nodeOS`.
    #[serde(default, rename = "nodeOS", skip_serializing_if = "Option::is_none")]
    pub node_os: Option<String>,
    /// Not carried to the restore's DataDownload: do not depend on it there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_mover_result: Option<BTreeMap<String, String>>,
}

/// Velero's request to restore one snapshot into a PV for a target PVC, made by its CSI PVC
/// restore action.
///
/// Like [`DataUpload`], the CRD has **no status subresource**: write `status` with a JSON
/// merge patch on the main resource.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[kube(
    group = "velero.io",
    version = "v2alpha1",
    kind = "DataDownload",
    namespaced,
    doc = "Velero's request to restore one snapshot into a PVC (the CRD comes from Velero).",
    status = "DataDownloadStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct DataDownloadSpec {
    /// The PVC to restore into.
    #[serde(default)]
    pub target_volume: TargetVolumeSpec,
    /// The BackupStorageLocation name, in the DataDownload's (Velero's) namespace.
    #[serde(default)]
    pub backup_storage_location: String,
    /// The mover that handles this DataDownload (`mover` for us); the JSON key is lowercase.
    #[serde(default, rename = "datamover", skip_serializing_if = "Option::is_none")]
    pub datamover: Option<String>,
    /// The DataUpload's `status.snapshotID`.
    #[serde(default, rename = "snapshotID")]
    pub snapshot_id: String,
    /// The namespace the data was backed up from (the repository is keyed by it), not the
    /// target namespace.
    #[serde(default)]
    pub source_namespace: String,
    /// The mover's budget for its internal waits, a Go duration such as `10m0s`.
    #[serde(default)]
    pub operation_timeout: String,
    /// Settings for the data mover, such as `WriteSparseFiles`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_mover_config: Option<BTreeMap<String, String>>,
    /// Set by Velero (merge patch) to ask for cancellation, in any phase.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cancel: bool,
    /// `auto`, `linux` or `windows`: the OS of the node that may restore the data.
    #[serde(default, rename = "nodeOS", skip_serializing_if = "Option::is_none")]
    pub node_os: Option<String>,
    /// The DataUpload's `progress.totalBytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_size: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct TargetVolumeSpec {
    /// Name of the target PVC.
    #[serde(default)]
    pub pvc: String,
    /// Always `""` from Velero; required by the CRD, so it is serialized even when empty.
    #[serde(default)]
    pub pv: String,
    /// Namespace of the target PVC.
    #[serde(default)]
    pub namespace: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct DataDownloadStatus {
    /// `New` (or unset), `Accepted`, `Prepared`, `InProgress`, `Canceling`, `Canceled`,
    /// `Completed` or `Failed`; read it with [`phase_of`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// One line on the phase, such as why the download failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Bytes to move, and bytes moved so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<DataMoveProgress>,
    /// When the data mover started on the download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,
    /// When the download reached a final phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Time>,
    /// When a data mover accepted the download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_timestamp: Option<Time>,
    /// The node that accepted the download (`mover-controller` for mover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_by_node: Option<String>,
    /// The node that moved the data (`mover-controller` for mover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A Velero backup, read only: its phase tells whether Velero is still writing it (see
/// `k8s::velero::gc`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[kube(
    group = "velero.io",
    version = "v1",
    kind = "Backup",
    namespaced,
    doc = "A Velero backup, which mover only reads (the CRD comes from Velero).",
    status = "BackupStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// The BackupStorageLocation the backup is stored in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_location: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// `New`, `InProgress`, `WaitingForPluginOperations`, `Finalizing`, `Completed`,
    /// `PartiallyFailed`, `Failed`, `Deleting`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

impl Backup {
    /// Whether Velero may still be writing this backup's data and metadata: every phase
    /// before a final one (an unset phase is `New`).
    pub fn is_being_written(&self) -> bool {
        let phase = self.status.as_ref().and_then(|s| s.phase.as_deref());
        !matches!(
            phase,
            Some("Completed" | "PartiallyFailed" | "Failed" | "FailedValidation" | "Deleting")
        )
    }
}

/// Velero's request to delete a backup (`velero backup delete`, or the expiry of its TTL).
/// Velero deletes it once the backup's objects are gone from the BSL.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[kube(
    group = "velero.io",
    version = "v1",
    kind = "DeleteBackupRequest",
    namespaced,
    doc = "Velero's request to delete a backup (the CRD comes from Velero)."
)]
#[serde(rename_all = "camelCase")]
pub struct DeleteBackupRequestSpec {
    /// Name of the Backup to delete.
    #[serde(default)]
    pub backup_name: String,
}

/// Where Velero keeps backups, and where mover puts the repositories of its DataUploads
/// (see `k8s::velero::bsl`). Read only; Velero validates it and writes its status.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[kube(
    group = "velero.io",
    version = "v1",
    kind = "BackupStorageLocation",
    namespaced,
    doc = "Where Velero keeps backups, which mover only reads (the CRD comes from Velero).",
    status = "BackupStorageLocationStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct BackupStorageLocationSpec {
    /// The object-store plugin: `aws` (or `velero.io/aws`), `azure`, `gcp`, ...
    #[serde(default)]
    pub provider: String,
    /// The bucket, and the prefix in it, that hold the backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_storage: Option<ObjectStorageLocation>,
    /// Provider settings; for AWS: `region`, `s3Url`, `s3ForcePathStyle`, `profile`,
    /// `insecureSkipTLSVerify`, ...
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// A key of a Secret in the BSL's namespace holding the provider credentials (for AWS,
    /// a shared credentials INI file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<SecretKeyRef>,
    /// Whether this is the default location of new backups.
    #[serde(default, skip_serializing_if = "is_false")]
    pub default: bool,
    /// `ReadWrite` (the default) or `ReadOnly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_mode: Option<String>,
    /// A Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_sync_period: Option<String>,
    /// A Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_frequency: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStorageLocation {
    /// Name of the bucket.
    #[serde(default)]
    pub bucket: String,
    /// The prefix in the bucket under which the backups are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A PEM bundle, base64-encoded as Go encodes `[]byte` (deprecated in favour of
    /// `caCertRef`).
    #[serde(default, rename = "caCert", skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// A key of a Secret that holds the endpoint's CA bundle.
    #[serde(default, rename = "caCertRef", skip_serializing_if = "Option::is_none")]
    pub ca_cert_ref: Option<SecretKeyRef>,
}

/// Kubernetes' `SecretKeySelector` as Velero uses it: a key of a Secret in the referring
/// object's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[serde(default)]
    pub name: String,
    /// The key within the Secret.
    #[serde(default)]
    pub key: String,
    /// Whether the Secret or its key may be missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackupStorageLocationStatus {
    /// `Available` or `Unavailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// One line on the phase, such as why the location is unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When Velero last checked that the location is available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_validation_time: Option<Time>,
    /// When Velero last read the backups in the location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_synced_time: Option<Time>,
    /// Deprecated and unused by Velero; `spec.accessMode` is the one that counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_mode: Option<String>,
}

/// The phase of a DataUpload or DataDownload (the two CRDs share the enum).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataMovePhase {
    /// Also `""` and an absent status: Velero creates the object with no status.
    New,
    /// Claimed by a mover, exposing the volume.
    Accepted,
    /// Exposed; the data-path pod is ready.
    Prepared,
    /// Data is moving.
    InProgress,
    Canceling,
    Canceled,
    Completed,
    Failed,
}

impl DataMovePhase {
    pub const ALL: [DataMovePhase; 8] = [
        DataMovePhase::New,
        DataMovePhase::Accepted,
        DataMovePhase::Prepared,
        DataMovePhase::InProgress,
        DataMovePhase::Canceling,
        DataMovePhase::Canceled,
        DataMovePhase::Completed,
        DataMovePhase::Failed,
    ];

    /// The value written to `status.phase`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataMovePhase::New => "New",
            DataMovePhase::Accepted => "Accepted",
            DataMovePhase::Prepared => "Prepared",
            DataMovePhase::InProgress => "InProgress",
            DataMovePhase::Canceling => "Canceling",
            DataMovePhase::Canceled => "Canceled",
            DataMovePhase::Completed => "Completed",
            DataMovePhase::Failed => "Failed",
        }
    }

    /// Canceled, Completed and Failed: Velero stops polling, and the object must not be
    /// changed any more (the backup finalizer copies it into the backup tarball).
    pub fn is_terminal(self) -> bool {
        match self {
            DataMovePhase::Canceled | DataMovePhase::Completed | DataMovePhase::Failed => true,
            DataMovePhase::New
            | DataMovePhase::Accepted
            | DataMovePhase::Prepared
            | DataMovePhase::InProgress
            | DataMovePhase::Canceling => false,
        }
    }
}

impl std::fmt::Display for DataMovePhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads `status.phase`: absent or `""` is New. The CRD's enum admits nothing else; a value
/// this build does not know counts as Failed (terminal), so mover never overwrites a status
/// it does not understand.
pub fn phase_of(phase: Option<&str>) -> DataMovePhase {
    match phase.unwrap_or_default() {
        "" | "New" => DataMovePhase::New,
        "Accepted" => DataMovePhase::Accepted,
        "Prepared" => DataMovePhase::Prepared,
        "InProgress" => DataMovePhase::InProgress,
        "Canceling" => DataMovePhase::Canceling,
        "Canceled" => DataMovePhase::Canceled,
        "Completed" => DataMovePhase::Completed,
        _ => DataMovePhase::Failed,
    }
}

impl DataUpload {
    /// The phase of this DataUpload's status (New when it has none).
    pub fn phase(&self) -> DataMovePhase {
        phase_of(self.status.as_ref().and_then(|s| s.phase.as_deref()))
    }
}

impl DataDownload {
    /// The phase of this DataDownload's status (New when it has none).
    pub fn phase(&self) -> DataMovePhase {
        phase_of(self.status.as_ref().and_then(|s| s.phase.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A DataUpload as Velero v1.18's `newDataUpload` creates it (velero.md §1), as Go's
    /// encoding/json writes it: `snapshotClass` present even when empty, `cancel` and
    /// `datamover` omitted when empty, and `status: {progress: {}}` (Go never omits structs).
    fn velero_data_upload() -> serde_json::Value {
        json!({
            "apiVersion": "velero.io/v2alpha1",
            "kind": "DataUpload",
            "metadata": {
                "namespace": "velero",
                "generateName": "nightly-",
                "creationTimestamp": null,
                "ownerReferences": [{
                    "apiVersion": "velero.io/v1",
                    "kind": "Backup",
                    "name": "nightly",
                    "uid": "0b9f2c1e-1111-2222-3333-444455556666",
                    "controller": true
                }],
                "labels": {
                    "velero.io/backup-name": "nightly",
                    "velero.io/backup-uid": "0b9f2c1e-1111-2222-3333-444455556666",
                    "velero.io/pvc-uid": "7d0c6e2a-aaaa-bbbb-cccc-ddddeeeeffff",
                    "velero.io/async-operation-id": "du-0b9f2c1e-1111-2222-3333-444455556666.7d0c6e2-3f1a2b"
                }
            },
            "spec": {
                "snapshotType": "CSI",
                "csiSnapshot": {
                    "volumeSnapshot": "velero-data-x7k2p",
                    "storageClass": "csi-hostpath-sc",
                    "snapshotClass": "",
                    "driver": "hostpath.csi.k8s.io"
                },
                "sourcePVC": "data",
                "datamover": "mover",
                "backupStorageLocation": "default",
                "sourceNamespace": "app",
                "dataMoverConfig": {"ParallelFilesUpload": "4"},
                "operationTimeout": "10m0s"
            },
            "status": {"progress": {}}
        })
    }

    #[test]
    fn a_data_upload_from_velero_reads_as_new() {
        let du: DataUpload = serde_json::from_value(velero_data_upload()).unwrap();
        assert_eq!(du.spec.snapshot_type, "CSI");
        let csi = du.spec.csi_snapshot.as_ref().unwrap();
        assert_eq!(csi.volume_snapshot, "velero-data-x7k2p");
        assert_eq!(csi.storage_class, "csi-hostpath-sc");
        assert_eq!(csi.snapshot_class, "");
        assert_eq!(csi.driver.as_deref(), Some("hostpath.csi.k8s.io"));
        assert_eq!(du.spec.source_pvc, "data");
        assert_eq!(du.spec.source_namespace, "app");
        assert_eq!(du.spec.datamover.as_deref(), Some("mover"));
        assert_eq!(du.spec.backup_storage_location, "default");
        assert_eq!(du.spec.operation_timeout, "10m0s");
        assert_eq!(
            du.spec.data_mover_config.as_ref().unwrap()["ParallelFilesUpload"],
            "4"
        );
        assert!(!du.spec.cancel);
        assert_eq!(du.phase(), DataMovePhase::New);
        assert_eq!(du.metadata.generate_name.as_deref(), Some("nightly-"));

        // Required fields serialize as Velero writes them; unset optional ones do not.
        let back = serde_json::to_value(&du.spec).unwrap();
        assert_eq!(back, velero_data_upload()["spec"]);
    }

    #[test]
    fn unknown_and_newer_fields_are_tolerated() {
        let mut v = velero_data_upload();
        v["spec"]["parentSnapshot"] = json!("none");
        v["spec"]["sourceFSType"] = json!("ext4");
        v["spec"]["somethingFromTheFuture"] = json!({"a": 1});
        v["spec"]["cancel"] = json!(true);
        v["status"]["newStatusField"] = json!("x");
        let du: DataUpload = serde_json::from_value(v).unwrap();
        assert_eq!(du.spec.parent_snapshot.as_deref(), Some("none"));
        assert_eq!(du.spec.source_fs_type.as_deref(), Some("ext4"));
        assert!(du.spec.cancel);

        let bare: DataUpload = serde_json::from_value(json!({
            "apiVersion": "velero.io/v2alpha1",
            "kind": "DataUpload",
            "metadata": {"name": "x", "namespace": "velero"},
            "spec": {}
        }))
        .unwrap();
        assert_eq!(bare.phase(), DataMovePhase::New);
        assert_eq!(bare.spec.datamover, None);
    }

    /// A DataDownload as `restoreFromDataUploadResult` creates it (velero.md §3).
    #[test]
    fn a_data_download_from_velero_reads() {
        let dd: DataDownload = serde_json::from_value(json!({
            "apiVersion": "velero.io/v2alpha1",
            "kind": "DataDownload",
            "metadata": {
                "namespace": "velero",
                "generateName": "nightly-restore-",
                "ownerReferences": [{
                    "apiVersion": "velero.io/v1",
                    "kind": "Restore",
                    "name": "nightly-restore",
                    "uid": "5e5e5e5e-0000-0000-0000-000000000001",
                    "controller": true
                }],
                "labels": {
                    "velero.io/restore-name": "nightly-restore",
                    "velero.io/restore-uid": "5e5e5e5e-0000-0000-0000-000000000001",
                    "velero.io/async-operation-id": "dd-5e5e5e5e-0000-0000-0000-000000000001.7d0c6e2-3f1a2b"
                }
            },
            "spec": {
                "targetVolume": {"pvc": "data", "pv": "", "namespace": "app2"},
                "backupStorageLocation": "default",
                "datamover": "mover",
                "snapshotID": "4f2a9c1b",
                "sourceNamespace": "app",
                "operationTimeout": "10m0s",
                "dataMoverConfig": {"WriteSparseFiles": "true"},
                "nodeOS": "linux",
                "snapshotSize": 1048576
            },
            "status": {"progress": {}}
        }))
        .unwrap();
        assert_eq!(dd.spec.target_volume.pvc, "data");
        assert_eq!(dd.spec.target_volume.pv, "");
        assert_eq!(dd.spec.target_volume.namespace, "app2");
        assert_eq!(dd.spec.snapshot_id, "4f2a9c1b");
        assert_eq!(dd.spec.source_namespace, "app");
        assert_eq!(dd.spec.snapshot_size, Some(1048576));
        assert_eq!(dd.spec.node_os.as_deref(), Some("linux"));
        assert_eq!(dd.spec.datamover.as_deref(), Some("mover"));
        assert_eq!(dd.phase(), DataMovePhase::New);
        // `pv` is required by the CRD and must be sent even though it is empty.
        let spec = serde_json::to_value(&dd.spec).unwrap();
        assert_eq!(spec["targetVolume"]["pv"], json!(""));
    }

    /// RFC 7386 JSON merge patch, as the API server applies `Patch::Merge`.
    fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
        let serde_json::Value::Object(fields) = patch else {
            *target = patch.clone();
            return;
        };
        if !target.is_object() {
            *target = json!({});
        }
        let map = target.as_object_mut().unwrap();
        for (key, value) in fields {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(json!(null)), value);
            }
        }
    }

    #[test]
    fn a_status_merge_patch_carries_only_what_it_sets_and_keeps_spec_cancel() {
        let status = DataUploadStatus {
            phase: Some(DataMovePhase::Completed.as_str().into()),
            snapshot_id: Some("4f2a9c1b".into()),
            progress: Some(DataMoveProgress {
                total_bytes: Some(1048576),
                bytes_done: Some(1048576),
            }),
            completion_timestamp: Some(Time("2026-05-20T10:00:00Z".parse().unwrap())),
            ..Default::default()
        };
        let patch = json!({ "status": status });
        assert_eq!(
            patch,
            json!({"status": {
                "phase": "Completed",
                "snapshotID": "4f2a9c1b",
                "progress": {"totalBytes": 1048576, "bytesDone": 1048576},
                "completionTimestamp": "2026-05-20T10:00:00Z"
            }})
        );
        let back: DataUploadStatus = serde_json::from_value(patch["status"].clone()).unwrap();
        assert_eq!(back, status);

        // Applied as the API server applies a merge patch, over a DU Velero has canceled.
        let mut du = velero_data_upload();
        du["spec"]["cancel"] = json!(true);
        merge_patch(&mut du, &patch);
        let du: DataUpload = serde_json::from_value(du).unwrap();
        assert!(du.spec.cancel);
        assert_eq!(du.phase(), DataMovePhase::Completed);
        assert_eq!(du.status.unwrap().snapshot_id.as_deref(), Some("4f2a9c1b"));
    }

    #[test]
    fn phases_read_back_and_terminal_ones_are_known() {
        assert_eq!(phase_of(None), DataMovePhase::New);
        assert_eq!(phase_of(Some("")), DataMovePhase::New);
        for phase in DataMovePhase::ALL {
            assert_eq!(phase_of(Some(phase.as_str())), phase);
        }
        let terminal: Vec<_> = DataMovePhase::ALL
            .into_iter()
            .filter(|p| p.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [
                DataMovePhase::Canceled,
                DataMovePhase::Completed,
                DataMovePhase::Failed
            ]
        );
        assert!(phase_of(Some("Exploded")).is_terminal());
    }

    #[test]
    fn a_backup_storage_location_reads() {
        let bsl: BackupStorageLocation = serde_json::from_value(json!({
            "apiVersion": "velero.io/v1",
            "kind": "BackupStorageLocation",
            "metadata": {"name": "default", "namespace": "velero"},
            "spec": {
                "provider": "aws",
                "objectStorage": {
                    "bucket": "velero",
                    "prefix": "cluster-a",
                    "caCert": "LS0tLS1CRUdJTg==",
                    "caCertRef": {"name": "ca", "key": "ca.crt"}
                },
                "config": {"region": "minio", "s3ForcePathStyle": "true", "s3Url": "http://minio:9000"},
                "credential": {"name": "bsl-creds", "key": "cloud"},
                "default": true,
                "accessMode": "ReadWrite",
                "backupSyncPeriod": "1m0s",
                "validationFrequency": "1m0s"
            },
            "status": {
                "phase": "Available",
                "lastValidationTime": "2026-05-20T10:00:00Z",
                "lastSyncedTime": "2026-05-20T10:00:00Z"
            }
        }))
        .unwrap();
        let os = bsl.spec.object_storage.as_ref().unwrap();
        assert_eq!(os.bucket, "velero");
        assert_eq!(os.ca_cert_ref.as_ref().unwrap().key, "ca.crt");
        assert_eq!(bsl.spec.config["s3Url"], "http://minio:9000");
        assert_eq!(bsl.spec.credential.as_ref().unwrap().name, "bsl-creds");
        assert!(bsl.spec.default);
        assert_eq!(
            bsl.status.as_ref().unwrap().phase.as_deref(),
            Some("Available")
        );
    }

    #[test]
    fn velero_kinds_are_not_among_movers_crds() {
        use kube::Resource;
        let ours: Vec<String> = super::super::crds()
            .into_iter()
            .map(|c| c.spec.group)
            .collect();
        assert!(ours.iter().all(|g| g != "velero.io"));
        assert_eq!(DataUpload::plural(&()), "datauploads");
        assert_eq!(DataDownload::plural(&()), "datadownloads");
        assert_eq!(BackupStorageLocation::plural(&()), "backupstoragelocations");
        assert_eq!(DataUpload::api_version(&()), "velero.io/v2alpha1");
        assert_eq!(BackupStorageLocation::api_version(&()), "velero.io/v1");
    }
}
