//! Velero operations through faults: the controller killed while a DataUpload moves data
//! (a crashed pod), the delete of Velero's source snapshot refused for a while, and
//! `operationTimeout` passing while mover waits for what Velero promised.

use super::harness::{controller, controller_alone, random_bytes, restart_controller, wait_for};
use super::plane::{plane, setup};
use super::velero::{
    VELERO_NS, data_upload, restic_at, take_snapshot, velero_namespace, wait_phase,
};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use mover::k8s::api::snapshot::{VolumeSnapshot, VolumeSnapshotContent};
use mover::k8s::api::velero::DataUpload;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataupload_completes_once_across_a_controller_restart() {
    let plane = plane();
    let (client, node, app) = setup("velero-restart").await;
    let alone = controller_alone(plane).await;
    let bsl = velero_namespace(&client).await;
    let source = super::harness::claim(&client, node, &app, "data", "Filesystem", "1Gi").await;
    std::fs::write(source.join("big.bin"), random_bytes(40_000_000, 31)).unwrap();
    let vs = take_snapshot(&client, node, &app, "data").await;
    let uploads: Api<DataUpload> = Api::namespaced(client.clone(), VELERO_NS);
    let du = uploads
        .create(
            &PostParams::default(),
            &data_upload(&app, "data", &vs, "mover", "default"),
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    wait_phase(
        &uploads,
        &du.name_any(),
        &["Prepared", "InProgress", "Completed"],
        &app,
        node,
        &mut seen,
    )
    .await;
    restart_controller(plane, &alone);
    let done = wait_phase(
        &uploads,
        &du.name_any(),
        &["Completed", "Failed", "Canceled"],
        &app,
        node,
        &mut seen,
    )
    .await;
    let st = done.status.unwrap();
    assert_eq!(
        st.phase.as_deref(),
        Some("Completed"),
        "{:?} {seen:?}",
        st.message
    );
    let id = st.snapshot_id.unwrap();
    // One snapshot for the one DataUpload, the one it names, and restic checks the repository.
    let out = restic_at(&bsl.bucket, &app)
        .args(["snapshots", "--json", "--no-lock", "--tag"])
        .arg(format!("du={}", du.name_any()))
        .output()
        .unwrap();
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert!(snaps[0]["id"].as_str().unwrap().starts_with(&id));
    let out = restic_at(&bsl.bucket, &app).arg("check").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_fails_when_its_operation_timeout_passes() {
    let plane = plane();
    let (client, node, app) = setup("velero-timeout").await;
    let _c = controller(plane).await;
    velero_namespace(&client).await;
    let uploads: Api<DataUpload> = Api::namespaced(client.clone(), VELERO_NS);
    // A snapshot that never becomes available, under a short timeout.
    let mut du = data_upload(&app, "data", "never-made", "mover", "default");
    du.spec.operation_timeout = "3s".into();
    let du = uploads.create(&PostParams::default(), &du).await.unwrap();
    let mut seen = Vec::new();
    let done = wait_phase(
        &uploads,
        &du.name_any(),
        &["Failed", "Completed", "Canceled"],
        &app,
        node,
        &mut seen,
    )
    .await;
    let st = done.status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Failed"), "{seen:?}");
    let message = st.message.unwrap_or_default();
    assert!(
        message.contains("operationTimeout 3s") && message.contains("never-made"),
        "{message}"
    );
    assert!(seen.contains(&"Accepted".to_string()), "{seen:?}");
}

/// Refuses every DELETE of a VolumeSnapshot in namespace `ns` (as a webhook or policy of the
/// cluster would) until the returned names are deleted; returns once the refusal is in force.
async fn refuse_snapshot_deletes(client: &Client, ns: &str, probe: &str) -> String {
    let name = format!("no-snapshot-delete-{ns}");
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": ["snapshot.storage.k8s.io"],
                "apiVersions": ["*"], "operations": ["DELETE"],
                "resources": ["volumesnapshots"]}]},
            "validations": [{"expression": "false",
                "message": "deleting VolumeSnapshots is refused in this namespace"}]
        }
    }))
    .unwrap();
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels":
                {"kubernetes.io/metadata.name": ns}}}}
    }))
    .unwrap();
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // A dry-run delete passes admission as a real one does.
    let snaps: Api<VolumeSnapshot> = Api::namespaced(client.clone(), ns);
    let dry = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    for _ in 0..60 {
        if snaps.delete(probe, &dry).await.is_err() {
            return name;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("the delete refusal did not take effect");
}

async fn allow_snapshot_deletes(client: &Client, name: &str) {
    let dp = DeleteParams::default();
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .delete(name, &dp)
        .await
        .unwrap();
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .delete(name, &dp)
        .await
        .unwrap();
}

/// Velero's source VolumeSnapshot may not be deleted for a while (an admission policy, a
/// webhook that is down): the DataUpload waits, asking again each turn, and once the delete
/// is allowed the source snapshot and its retained content go, the upload completes, and
/// the repository holds one snapshot. Nothing leaks either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_delete_of_the_source_snapshot_is_asked_again_and_nothing_leaks() {
    let (client, node, app) = setup("velero-refuse").await;
    let _c = controller(plane()).await;
    let bsl = velero_namespace(&client).await;
    let source = super::harness::claim(&client, node, &app, "data", "Filesystem", "1Gi").await;
    std::fs::write(source.join("a.bin"), random_bytes(2_000_000, 41)).unwrap();
    let vs = take_snapshot(&client, node, &app, "data").await;
    let snaps: Api<VolumeSnapshot> = Api::namespaced(client.clone(), &app);
    let source_content = snaps
        .get(&vs)
        .await
        .unwrap()
        .status
        .unwrap()
        .bound_volume_snapshot_content_name
        .unwrap();
    let refusal = refuse_snapshot_deletes(&client, &app, &vs).await;

    let uploads: Api<DataUpload> = Api::namespaced(client.clone(), VELERO_NS);
    let du = uploads
        .create(
            &PostParams::default(),
            &data_upload(&app, "data", &vs, "mover", "default"),
        )
        .await
        .unwrap();
    // The source's content is retained before its snapshot is deleted; the delete is refused.
    let contents: Api<VolumeSnapshotContent> = Api::all(client.clone());
    wait_for(
        "the source content to be retained",
        60,
        &app,
        node,
        || async {
            let c = contents.get(&source_content).await.ok()?;
            (c.spec.deletion_policy == "Retain").then_some(())
        },
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    assert!(snaps.get_opt(&vs).await.unwrap().is_some());
    let waiting = uploads.get(&du.name_any()).await.unwrap().status.unwrap();
    assert!(
        !matches!(waiting.phase.as_deref(), Some("Completed" | "Failed")),
        "{waiting:?}"
    );

    allow_snapshot_deletes(&client, &refusal).await;
    let mut seen = Vec::new();
    let done = wait_phase(
        &uploads,
        &du.name_any(),
        &["Completed", "Failed", "Canceled"],
        &app,
        node,
        &mut seen,
    )
    .await;
    let st = done.status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Completed"), "{:?}", st.message);
    wait_for(
        "the source snapshot and its content to go",
        30,
        &app,
        node,
        || async {
            let gone = snaps.get_opt(&vs).await.ok()?.is_none()
                && contents.get_opt(&source_content).await.ok()?.is_none();
            gone.then_some(())
        },
    )
    .await;
    let out = restic_at(&bsl.bucket, &app)
        .args(["snapshots", "--json", "--no-lock", "--tag"])
        .arg(format!("du={}", du.name_any()))
        .output()
        .unwrap();
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
}
