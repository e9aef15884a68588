//! Velero operations through faults: the controller killed while a DataUpload moves data
//! (a crashed pod), and `operationTimeout` passing while mover waits for what Velero promised.

use super::harness::{controller, controller_alone, random_bytes, restart_controller};
use super::plane::{plane, setup};
use super::velero::{
    VELERO_NS, data_upload, restic_at, take_snapshot, velero_namespace, wait_phase,
};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use mover::k8s::api::velero::DataUpload;

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
