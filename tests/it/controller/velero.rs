//! mover as Velero's data mover (`spec.datamover: mover`), against Velero's real CRDs (from its
//! Go module) on the test control plane. The test plays Velero's CSI plugin: it takes the
//! VolumeSnapshot and creates DataUploads and DataDownloads shaped as `newDataUpload` and
//! `newDataDownload` make them; the test node plays CSI. The data lands in a BSL's bucket on
//! the local S3 server, where restic reads it.

use super::harness::{controller, create, random_bytes, wait_for, write_tree};
use super::node::{STORAGE_CLASS, TestNode};
use super::plane::{plane, scratch, setup};
use crate::support::PASSWORD;
use crate::support::compare::compare_trees;
use crate::support::s3::S3Server;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use mover::k8s::api::snapshot::{VolumeSnapshot, VolumeSnapshotContent};
use mover::k8s::api::velero::{BackupStorageLocation, DataDownload, DataUpload};
use serde_json::json;
use std::process::Command;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Velero's namespace; the shared controller is started with `--velero-namespace` naming it.
pub const VELERO_NS: &str = "velero";

pub(super) struct Bsl {
    pub(super) bucket: String,
}

static BSL: OnceCell<Bsl> = OnceCell::const_new();

/// Velero's namespace with BSLs `default` (Available, writable) and `readonly` (ReadOnly) on
/// the local S3 server, their credentials as Velero keeps them (an AWS INI file in
/// `cloud-credentials`), and mover's repository password Secret.
pub(super) async fn velero_namespace(client: &Client) -> &'static Bsl {
    BSL.get_or_init(|| async {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": VELERO_NS}})).unwrap();
        let _ = namespaces.create(&PostParams::default(), &ns).await;
        let s3 = S3Server::shared();
        let bucket = s3.new_bucket("velero");
        let env = s3.env();
        let key = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let ini = format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            key("AWS_ACCESS_KEY_ID"),
            key("AWS_SECRET_ACCESS_KEY")
        );
        create::<Secret>(
            client,
            VELERO_NS,
            json!({"metadata": {"name": "cloud-credentials"},
            "stringData": {"cloud": ini}}),
        )
        .await;
        create::<Secret>(
            client,
            VELERO_NS,
            json!({"metadata": {"name": "mover-velero-repository"},
            "stringData": {"RESTIC_PASSWORD": PASSWORD}}),
        )
        .await;
        let bsls: Api<BackupStorageLocation> = Api::namespaced(client.clone(), VELERO_NS);
        for (name, mode) in [("default", "ReadWrite"), ("readonly", "ReadOnly")] {
            let bsl: BackupStorageLocation = serde_json::from_value(json!({
                "apiVersion": "velero.io/v1", "kind": "BackupStorageLocation",
                "metadata": {"name": name},
                "spec": {"provider": "aws", "default": name == "default", "accessMode": mode,
                    "objectStorage": {"bucket": bucket, "prefix": "cluster-a"},
                    "credential": {"name": "cloud-credentials", "key": "cloud"},
                    "config": {"region": "us-east-1", "s3ForcePathStyle": "true",
                        "s3Url": s3.endpoint}}}))
            .unwrap();
            bsls.create(&PostParams::default(), &bsl).await.unwrap();
            // Velero validates BSLs and writes their phase (there is no status subresource).
            bsls.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Available"}})),
            )
            .await
            .unwrap();
        }
        Bsl { bucket }
    })
    .await
}

/// restic with the BSL's repository of `namespace` and the S3 server's credentials.
pub(super) fn restic_at(bucket: &str, namespace: &str) -> Command {
    at(crate::support::restic(), bucket, namespace)
}

/// [`restic_at`] with restic 0.18 (`--retry-lock` and the rest of today's flags).
pub(super) fn restic_018_at(bucket: &str, namespace: &str) -> Command {
    at(crate::support::restic_018(), bucket, namespace)
}

fn at(mut c: Command, bucket: &str, namespace: &str) -> Command {
    let s3 = S3Server::shared();
    c.arg("-r")
        .arg(format!(
            "{}/plugins/mover/{namespace}",
            s3.repo_url(bucket, "cluster-a")
        ))
        .env("RESTIC_PASSWORD", PASSWORD)
        .envs(s3.env());
    c
}

/// The CSI snapshot Velero's PVC action takes before it creates the DataUpload.
pub(super) async fn take_snapshot(client: &Client, node: &TestNode, ns: &str, pvc: &str) -> String {
    let snaps: Api<VolumeSnapshot> = Api::namespaced(client.clone(), ns);
    let vs: VolumeSnapshot = serde_json::from_value(json!({
        "metadata": {"generateName": format!("velero-{pvc}-"),
            "labels": {"velero.io/backup-name": "nightly"}},
        "spec": {"source": {"persistentVolumeClaimName": pvc}}}))
    .unwrap();
    let vs = snaps.create(&PostParams::default(), &vs).await.unwrap();
    let name = vs.name_any();
    wait_for("the CSI snapshot to be ready", 60, ns, node, || {
        let snaps = snaps.clone();
        let name = name.clone();
        async move {
            let s = snaps.get(&name).await.ok()?;
            (s.status?.ready_to_use == Some(true)).then_some(())
        }
    })
    .await;
    name
}

/// A DataUpload as Velero's `newDataUpload` writes it, for backup `nightly`.
pub(super) fn data_upload(ns: &str, pvc: &str, vs: &str, datamover: &str, bsl: &str) -> DataUpload {
    data_upload_of("nightly", ns, pvc, vs, datamover, bsl)
}

/// A DataUpload of `backup`.
pub(super) fn data_upload_of(
    backup: &str,
    ns: &str,
    pvc: &str,
    vs: &str,
    datamover: &str,
    bsl: &str,
) -> DataUpload {
    serde_json::from_value(json!({
        "apiVersion": "velero.io/v2alpha1", "kind": "DataUpload",
        "metadata": {"generateName": format!("{backup}-"), "namespace": VELERO_NS,
            "labels": {"velero.io/backup-name": backup, "velero.io/backup-uid": "0b9c-uid",
                "velero.io/pvc-uid": "pvc-uid", "velero.io/async-operation-id": format!("du-0b9c.{pvc}")}},
        "spec": {"snapshotType": "CSI",
            "csiSnapshot": {"volumeSnapshot": vs, "storageClass": STORAGE_CLASS,
                "snapshotClass": "", "driver": "test-node.mover.dev"},
            "sourcePVC": pvc, "sourceNamespace": ns, "datamover": datamover,
            "backupStorageLocation": bsl, "operationTimeout": "10m0s"}}))
    .unwrap()
}

/// Polls a Velero object until its phase is one of `phases`, recording each phase seen.
pub(super) async fn wait_phase<K>(
    api: &Api<K>,
    name: &str,
    phases: &[&str],
    ns: &str,
    node: &TestNode,
    seen: &mut Vec<String>,
) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    for _ in 0..600 {
        if let Ok(obj) = api.get(name).await {
            let v = serde_json::to_value(&obj).unwrap();
            let phase = v["status"]["phase"].as_str().unwrap_or("").to_string();
            if seen.last() != Some(&phase) {
                seen.push(phase.clone());
            }
            if phases.contains(&phase.as_str()) {
                return obj;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let last = api
        .get(name)
        .await
        .ok()
        .and_then(|o| serde_json::to_value(o).ok());
    panic!(
        "{name} did not reach {phases:?} within 150 s (seen {seen:?})\nobject: {}\npod logs:\n{}\ncontroller log (tail):\n{}",
        last.map(|v| v.to_string()).unwrap_or_default(),
        node.logs(ns, "mover-") + &node.logs(VELERO_NS, "mover-"),
        super::harness::controller_log()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataupload_backs_up_and_a_datadownload_fills_the_target_claim() {
    let plane = plane();
    let (client, node, app) = setup("velero-app").await;
    let _c = controller(plane).await;
    let bsl = velero_namespace(&client).await;
    let tmp = scratch();
    let source = super::harness::claim(&client, node, &app, "data", "Filesystem", "1Gi").await;
    write_tree(&source);
    // mover leaves a file system's lost+found out of a volume's backup.
    std::fs::remove_dir(source.join("lost+found")).unwrap();
    std::fs::write(source.join("app/blob.bin"), random_bytes(3_000_000, 11)).unwrap();
    let vs = take_snapshot(&client, node, &app, "data").await;
    let source_content = Api::<VolumeSnapshot>::namespaced(client.clone(), &app)
        .get(&vs)
        .await
        .unwrap()
        .status
        .unwrap()
        .bound_volume_snapshot_content_name
        .unwrap();

    let uploads: Api<DataUpload> = Api::namespaced(client.clone(), VELERO_NS);
    let foreign = uploads
        .create(
            &PostParams::default(),
            &data_upload(&app, "data", &vs, "velero", "default"),
        )
        .await
        .unwrap();
    let du = uploads
        .create(
            &PostParams::default(),
            &data_upload(&app, "data", &vs, "mover", "default"),
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    let done = wait_phase(
        &uploads,
        &du.name_any(),
        &["Completed", "Failed"],
        &app,
        node,
        &mut seen,
    )
    .await;
    let st = done.status.clone().unwrap();
    assert_eq!(st.phase.as_deref(), Some("Completed"), "{:?}", st.message);
    let order = ["", "Accepted", "Prepared", "InProgress", "Completed"];
    let ranks: Vec<usize> = seen
        .iter()
        .map(|p| order.iter().position(|o| o == p).unwrap())
        .collect();
    assert!(
        ranks.windows(2).all(|w| w[0] < w[1]),
        "phases move forward: {seen:?}"
    );
    let id = st.snapshot_id.clone().expect("snapshotID with Completed");
    // As Velero's own mover: the node the data moved on.
    assert_eq!(st.node.as_deref(), Some(super::node::NODE));
    let progress = st.progress.clone().unwrap();
    assert!(progress.total_bytes.unwrap() > 3_000_000, "{progress:?}");
    assert_eq!(progress.total_bytes, progress.bytes_done);
    assert!(st.completion_timestamp.is_some() && st.start_timestamp.is_some());

    // restic reads the repository at <prefix>/plugins/mover/<source namespace>.
    let out = restic_at(&bsl.bucket, &app)
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let snap = snaps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str() || s["short_id"] == id.as_str())
        .unwrap_or_else(|| panic!("snapshot {id} not in {snaps}"));
    let tags: Vec<&str> = snap["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert!(tags.contains(&"velero-backup=nightly"), "{tags:?}");
    assert!(
        tags.contains(&format!("du={}", du.name_any()).as_str()),
        "{tags:?}"
    );
    let by_restic = tmp.path().join("by-restic");
    let out = restic_at(&bsl.bucket, &app)
        .args(["restore", &id, "--target"])
        .arg(&by_restic)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Err(d) = compare_trees(&source, &by_restic, &super::harness::contents()) {
        panic!("restic's restore of the DataUpload's snapshot differs: {d}");
    }
    let out = restic_at(&bsl.bucket, &app).arg("check").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The snapshots, Velero's and the moved one, are gone; the DataUpload stays.
    // (Only this DataUpload's: other tests share Velero's namespace.)
    let contents: Api<VolumeSnapshotContent> = Api::all(client.clone());
    let moved = mover::k8s::names::object_name("velero", &du.name_any());
    wait_for("the temporary snapshots to go", 30, &app, node, || {
        let contents = contents.clone();
        let snaps: Api<VolumeSnapshot> = Api::namespaced(client.clone(), &app);
        let ours: Api<VolumeSnapshot> = Api::namespaced(client.clone(), VELERO_NS);
        let vs = vs.clone();
        let source_content = source_content.clone();
        let moved = moved.clone();
        async move {
            let gone = snaps.get_opt(&vs).await.ok()?.is_none()
                && ours.get_opt(&moved).await.ok()?.is_none()
                && contents.get_opt(&source_content).await.ok()?.is_none()
                && !contents
                    .list(&Default::default())
                    .await
                    .ok()?
                    .items
                    .iter()
                    .any(|c| {
                        c.spec.volume_snapshot_ref.namespace.as_deref() == Some(VELERO_NS)
                            && c.spec.volume_snapshot_ref.name.as_deref() == Some(moved.as_str())
                    });
            gone.then_some(())
        }
    })
    .await;
    assert!(uploads.get_opt(&du.name_any()).await.unwrap().is_some());
    // A DataUpload for another mover is never written.
    let after = uploads.get(&foreign.name_any()).await.unwrap();
    assert_eq!(after.resource_version(), foreign.resource_version());
    assert!(after.status.is_none());

    // Restore into another namespace: the target claim as Velero makes it (a selector, no
    // volumeName), then the DataDownload.
    let (_, _, app2) = setup("velero-app2").await;
    let selector = "velero-app2.data.x7k2p";
    create::<PersistentVolumeClaim>(
        &client,
        &app2,
        json!({"metadata": {"name": "data"},
        "spec": {"storageClassName": STORAGE_CLASS, "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "selector": {"matchLabels": {"velero.io/dynamic-pv-restore": selector}}}}),
    )
    .await;
    let downloads: Api<DataDownload> = Api::namespaced(client.clone(), VELERO_NS);
    let dd: DataDownload = serde_json::from_value(json!({
        "apiVersion": "velero.io/v2alpha1", "kind": "DataDownload",
        "metadata": {"generateName": "nightly-restore-", "namespace": VELERO_NS,
            "labels": {"velero.io/restore-name": "nightly-restore", "velero.io/restore-uid": "r-uid"}},
        "spec": {"targetVolume": {"pvc": "data", "namespace": app2, "pv": ""},
            "backupStorageLocation": "default", "datamover": "mover", "snapshotID": id,
            "sourceNamespace": app, "operationTimeout": "10m0s",
            "snapshotSize": progress.total_bytes}}))
    .unwrap();
    let dd = downloads.create(&PostParams::default(), &dd).await.unwrap();
    let mut seen = Vec::new();
    let done = wait_phase(
        &downloads,
        &dd.name_any(),
        &["Completed", "Failed"],
        &app2,
        node,
        &mut seen,
    )
    .await;
    let st = done.status.clone().unwrap();
    assert_eq!(st.phase.as_deref(), Some("Completed"), "{:?}", st.message);
    assert_eq!(st.node.as_deref(), Some(super::node::NODE));
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &app2);
    let target = claims.get("data").await.unwrap();
    assert_eq!(
        target.status.as_ref().unwrap().phase.as_deref(),
        Some("Bound")
    );
    let pv_name = target.spec.unwrap().volume_name.unwrap();
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&pv_name)
        .await
        .unwrap();
    let claim_ref = pv.spec.as_ref().unwrap().claim_ref.clone().unwrap();
    assert_eq!(claim_ref.namespace.as_deref(), Some(app2.as_str()));
    assert_eq!(claim_ref.name.as_deref(), Some("data"));
    assert_eq!(
        pv.labels()
            .get("velero.io/dynamic-pv-restore")
            .map(String::as_str),
        Some(selector)
    );
    assert_eq!(
        pv.spec
            .as_ref()
            .unwrap()
            .persistent_volume_reclaim_policy
            .as_deref(),
        Some("Delete")
    );
    let restored = node.wait_volume(&app2, "data").await;
    if let Err(d) = compare_trees(&source, &restored, &super::harness::contents()) {
        panic!("the DataDownload's target claim differs: {d}");
    }
    // The restore's own claim is gone.
    let ours: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), VELERO_NS);
    assert!(
        ours.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// Creates `op`; once it reaches one of `at` (at once when empty), cancels it as Velero
/// does (a merge patch of `spec.cancel`) and returns it in its final phase.
async fn create_and_cancel<K>(
    api: &Api<K>,
    op: &K,
    at: &[&str],
    ns: &str,
    node: &TestNode,
    seen: &mut Vec<String>,
) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = api
        .create(&PostParams::default(), op)
        .await
        .unwrap()
        .name_any();
    if !at.is_empty() {
        wait_phase(api, &name, at, ns, node, seen).await;
    }
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"cancel": true}})),
    )
    .await
    .unwrap();
    wait_phase(
        api,
        &name,
        &["Canceled", "Failed", "Completed"],
        ns,
        node,
        seen,
    )
    .await
}

fn phase_of<K: serde::Serialize>(op: &K) -> String {
    serde_json::to_value(op).unwrap()["status"]["phase"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn velero_operations_cancel_and_a_readonly_location_fails_fast() {
    let plane = plane();
    let (client, node, app) = setup("velero-cancel").await;
    let _c = controller(plane).await;
    velero_namespace(&client).await;
    let uploads: Api<DataUpload> = Api::namespaced(client.clone(), VELERO_NS);
    let mut seen = Vec::new();

    // Canceled before mover looked at it (New), and while Accepted (waiting for a snapshot
    // that never comes).
    let waiting = data_upload(&app, "data", "never-made", "mover", "default");
    let mut canceled = waiting.clone();
    canceled.spec.cancel = true;
    for (op, at) in [(&canceled, &[][..]), (&waiting, &["Accepted"][..])] {
        let done = create_and_cancel(&uploads, op, at, &app, node, &mut seen).await;
        assert_eq!(phase_of(&done), "Canceled", "{seen:?}");
        assert!(done.status.unwrap().completion_timestamp.is_some());
    }

    // A DataDownload canceled while Accepted (its target claim never appears).
    let downloads: Api<DataDownload> = Api::namespaced(client.clone(), VELERO_NS);
    let dd: DataDownload = serde_json::from_value(json!({
        "apiVersion": "velero.io/v2alpha1", "kind": "DataDownload",
        "metadata": {"generateName": "nightly-restore-", "namespace": VELERO_NS},
        "spec": {"targetVolume": {"pvc": "never-made", "namespace": app, "pv": ""},
            "backupStorageLocation": "default", "datamover": "mover", "snapshotID": "0123abcd",
            "sourceNamespace": app, "operationTimeout": "10m0s"}}))
    .unwrap();
    let done = create_and_cancel(&downloads, &dd, &["Accepted"], &app, node, &mut seen).await;
    assert_eq!(phase_of(&done), "Canceled", "{seen:?}");

    // Canceled while Prepared or InProgress: the run is canceled and its objects go.
    let source = super::harness::claim(&client, node, &app, "data", "Filesystem", "1Gi").await;
    std::fs::write(source.join("blob.bin"), random_bytes(1_000_000, 5)).unwrap();
    let vs = take_snapshot(&client, node, &app, "data").await;
    let du = data_upload(&app, "data", &vs, "mover", "default");
    let done = create_and_cancel(
        &uploads,
        &du,
        &["Prepared", "InProgress", "Completed"],
        &app,
        node,
        &mut seen,
    )
    .await;
    let phase = phase_of(&done);
    // A run that finished before the cancel was seen stays Completed: Velero only needs a
    // final phase.
    assert!(phase == "Canceled" || phase == "Completed", "{phase}");
    let backups: Api<mover::k8s::api::VolumeBackup> = Api::namespaced(client.clone(), VELERO_NS);
    let name = mover::k8s::names::object_name("velero", &done.name_any());
    wait_for(
        "the canceled run's VolumeBackup to go",
        30,
        &app,
        node,
        || {
            let backups = backups.clone();
            let name = name.clone();
            async move { backups.get_opt(&name).await.ok()?.is_none().then_some(()) }
        },
    )
    .await;

    // A ReadOnly location fails a backup at once, and an Unavailable one a restore, naming why.
    let bsls: Api<BackupStorageLocation> = Api::namespaced(client.clone(), VELERO_NS);
    let mut down = bsls.get("default").await.unwrap();
    down.metadata = kube::api::ObjectMeta {
        name: Some("down".into()),
        ..Default::default()
    };
    down.spec.default = false;
    bsls.create(&PostParams::default(), &down).await.unwrap();
    bsls.patch(
        "down",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Unavailable",
            "message": "BackupStorageLocation \"down\" is unavailable: rpc error"}})),
    )
    .await
    .unwrap();
    let du = uploads
        .create(
            &PostParams::default(),
            &data_upload(&app, "data", &vs, "mover", "readonly"),
        )
        .await
        .unwrap();
    let mut dd_down = dd.clone();
    dd_down.spec.backup_storage_location = "down".into();
    let dd_down = downloads
        .create(&PostParams::default(), &dd_down)
        .await
        .unwrap();
    for (done, why) in [
        (
            serde_json::to_value(
                wait_phase(
                    &uploads,
                    &du.name_any(),
                    &["Failed", "Completed"],
                    &app,
                    node,
                    &mut seen,
                )
                .await,
            )
            .unwrap(),
            "ReadOnly",
        ),
        (
            serde_json::to_value(
                wait_phase(
                    &downloads,
                    &dd_down.name_any(),
                    &["Failed", "Completed"],
                    &app,
                    node,
                    &mut seen,
                )
                .await,
            )
            .unwrap(),
            "Unavailable",
        ),
    ] {
        assert_eq!(done["status"]["phase"], "Failed", "{done}");
        let message = done["status"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{message}");
    }
}
