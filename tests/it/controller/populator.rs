//! VolumeRestore as a volume populator: a PVC whose `dataSourceRef` names a VolumeRestore is
//! bound to a volume that already holds the snapshot. It fails closed: an error leaves the
//! claim Pending, and only an explicit "no snapshot" yields an empty volume.

use super::harness::{
    claim, contents_unprivileged, controller, create, repository, wait_for, write_tree,
};
use super::node::{STORAGE_CLASS, TestNode, WFFC_STORAGE_CLASS};
use super::plane::{plane, scratch, setup};
use crate::support::PASSWORD;
use crate::support::compare::compare_trees;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::Client;
use kube::api::Api;
use mover::k8s::api::{RunPhase, VolumeBackup, VolumeRestore};
use serde_json::json;
use std::time::Duration;

async fn populated_claim(client: &Client, ns: &str, name: &str, restore: &str) {
    populated_claim_of(client, ns, name, restore, STORAGE_CLASS).await
}

async fn populated_claim_of(client: &Client, ns: &str, name: &str, restore: &str, class: &str) {
    create::<PersistentVolumeClaim>(
        client,
        ns,
        json!({"metadata": {"name": name}, "spec": {
            "storageClassName": class, "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "dataSourceRef": {"apiGroup": "mover.dev", "kind": "VolumeRestore", "name": restore}}}),
    )
    .await;
}

async fn restore(client: &Client, ns: &str, name: &str, source: serde_json::Value) {
    create::<VolumeRestore>(
        client,
        ns,
        json!({"metadata": {"name": name}, "spec": {"repository": "repo", "source": source}}),
    )
    .await;
}

async fn final_phase(
    api: &Api<VolumeRestore>,
    node: &TestNode,
    ns: &str,
    name: &str,
) -> VolumeRestore {
    wait_for(
        &format!("VolumeRestore {name} to finish"),
        120,
        ns,
        node,
        || async {
            let r = api.get(name).await.ok()?;
            r.status.clone().filter(|s| s.phase.is_final()).map(|_| r)
        },
    )
    .await
}

async fn bound(claims: &Api<PersistentVolumeClaim>, node: &TestNode, ns: &str, name: &str) {
    wait_for(&format!("PVC {name} to be bound"), 60, ns, node, || async {
        let c = claims.get(name).await.ok()?;
        (c.status?.phase.as_deref() == Some("Bound")).then_some(())
    })
    .await;
}

/// Repository `repo`, PVC `data` holding a test tree, and a completed backup of it; returns
/// the claim's directory (without `lost+found`, as restored trees have none).
async fn backed_up_source(
    client: &Client,
    node: &TestNode,
    ns: &str,
    repo: &std::path::Path,
) -> std::path::PathBuf {
    repository(client, ns, repo, PASSWORD).await;
    let source = claim(client, node, ns, "data", "Filesystem", "1Gi").await;
    write_tree(&source);
    create::<VolumeBackup>(
        client,
        ns,
        json!({"metadata": {"name": "b1"}, "spec": {"source": {"pvc": "data"}, "repository": "repo"}}),
    )
    .await;
    let backups: Api<VolumeBackup> = Api::namespaced(client.clone(), ns);
    wait_for("VolumeBackup b1 to complete", 120, ns, node, || async {
        let s = backups.get("b1").await.ok()?.status?;
        (s.phase == RunPhase::Completed).then_some(())
    })
    .await;
    std::fs::remove_dir_all(source.join("lost+found")).unwrap();
    source
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pvc_with_a_volume_restore_data_source_is_bound_to_the_restored_data() {
    let (client, node, ns) = setup("populate").await;
    let _controller = controller(plane()).await;
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    let source = backed_up_source(&client, node, &ns, &repo).await;

    let restores: Api<VolumeRestore> = Api::namespaced(client.clone(), &ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);

    // The claim is created first and waits; the VolumeRestore fills it.
    populated_claim(&client, &ns, "filled", "seed").await;
    restore(&client, &ns, "seed", json!({"host": format!("{ns}-data")})).await;
    let done = final_phase(&restores, node, &ns, "seed").await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, RunPhase::Completed, "{:?}", status.message);
    bound(&claims, node, &ns, "filled").await;
    let filled = node.wait_volume(&ns, "filled").await;
    compare_trees(&source, &filled, &contents_unprivileged()).unwrap();
    wait_for("the prime claim to go", 60, &ns, node, || async {
        claims
            .get_opt("mover-prime-seed")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;

    // An error fails the restore and leaves the claim Pending: never an empty volume.
    restore(&client, &ns, "broken", json!({"snapshotID": "deadbeef"})).await;
    populated_claim(&client, &ns, "never", "broken").await;
    let done = final_phase(&restores, node, &ns, "broken").await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, RunPhase::Failed);
    assert!(
        status.message.as_deref().unwrap_or("").contains("deadbeef"),
        "{:?}",
        status.message
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let never = claims.get("never").await.unwrap();
    assert_eq!(
        never.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );
    assert!(never.spec.unwrap().volume_name.is_none());

    // An explicit "no snapshot" selection yields an empty volume, and says so.
    restore(&client, &ns, "nothing", json!({"host": "no-such-host"})).await;
    populated_claim(&client, &ns, "empty", "nothing").await;
    let done = final_phase(&restores, node, &ns, "nothing").await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, RunPhase::Completed, "{:?}", status.message);
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or("")
            .contains("no snapshot"),
        "{:?}",
        status.message
    );
    bound(&claims, node, &ns, "empty").await;
    let empty = node.wait_volume(&ns, "empty").await;
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
}

/// A pod that uses `claim` (and does nothing else): the first consumer a
/// `WaitForFirstConsumer` class waits for.
async fn consumer(client: &Client, ns: &str, name: &str, claim: &str) {
    create::<Pod>(
        client,
        ns,
        json!({"metadata": {"name": name}, "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "app", "image": "busybox", "command": ["true"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_wait_for_first_consumer_class_a_populated_claim_binds_once_a_pod_uses_it() {
    let (client, node, ns) = setup("populate-wffc").await;
    let _controller = controller(plane()).await;
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    let source = backed_up_source(&client, node, &ns, &repo).await;
    let restores: Api<VolumeRestore> = Api::namespaced(client.clone(), &ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);

    // Before any pod uses the claim, the run waits and says why; no volume is made anywhere.
    populated_claim_of(&client, &ns, "filled", "seed", WFFC_STORAGE_CLASS).await;
    restore(&client, &ns, "seed", json!({"host": format!("{ns}-data")})).await;
    wait_for("the run to wait for a consumer", 60, &ns, node, || async {
        let m = restores.get("seed").await.ok()?.status?.message?;
        m.contains("WaitForFirstConsumer").then_some(())
    })
    .await;
    assert!(claims.get_opt("mover-prime-seed").await.unwrap().is_none());

    // A pod uses it: the data lands, on the node the scheduler chose for that pod.
    consumer(&client, &ns, "app", "filled").await;
    let done = final_phase(&restores, node, &ns, "seed").await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, RunPhase::Completed, "{:?}", status.message);
    bound(&claims, node, &ns, "filled").await;
    let filled = node.wait_volume(&ns, "filled").await;
    compare_trees(&source, &filled, &contents_unprivileged()).unwrap();

    // "No snapshot" has no restore pod to bind the prime claim: it binds on the chosen node.
    populated_claim_of(&client, &ns, "empty", "nothing", WFFC_STORAGE_CLASS).await;
    restore(&client, &ns, "nothing", json!({"host": "no-such-host"})).await;
    consumer(&client, &ns, "app2", "empty").await;
    let done = final_phase(&restores, node, &ns, "nothing").await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, RunPhase::Completed, "{:?}", status.message);
    bound(&claims, node, &ns, "empty").await;
    let empty = node.wait_volume(&ns, "empty").await;
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    for prime in ["mover-prime-seed", "mover-prime-nothing"] {
        wait_for("the prime claims to go", 60, &ns, node, || async {
            claims.get_opt(prime).await.ok()?.is_none().then_some(())
        })
        .await;
    }
}
