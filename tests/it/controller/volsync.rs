//! VolSync's own controller (built from its Go module by scripts/build-peers.sh) against the
//! test control plane, with mover's image in place of its restic mover: the test node runs
//! the Jobs VolSync creates through `/mover-restic/entry.sh`, as the image does. A manual
//! ReplicationSource backs a claim up, a ReplicationDestination restores it into another,
//! and restic restores the same repository identically.

use super::harness::{create, random_bytes, restic_restore, snapshots, write_tree};
use super::node::{STORAGE_CLASS, TestNode};
use super::plane::{Plane, plane, scratch, setup};
use crate::support::PASSWORD;
use crate::support::compare::compare_trees;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The directory scripts/build-peers.sh fills: `PEERS_BIN`, else built (cached) now.
pub fn peers_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PEERS_BIN") {
        return PathBuf::from(dir);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-peers.sh");
    let out = Command::new(script)
        .output()
        .expect("running scripts/build-peers.sh");
    assert!(
        out.status.success(),
        "scripts/build-peers.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

static VOLSYNC: OnceLock<Mutex<Child>> = OnceLock::new();

extern "C" fn stop_volsync() {
    if let Some(c) = VOLSYNC.get() {
        if let Ok(mut c) = c.lock() {
            let _ = c.kill();
        }
    }
}

/// VolSync's controller, once per test process, told that its restic mover image is
/// mover's.
fn volsync_controller(plane: &Plane) {
    VOLSYNC.get_or_init(|| {
        let peers = peers_dir();
        plane.apply_crds(&peers.join("crds/volsync"));
        let log = std::fs::File::create(plane.dir.join("volsync.log")).unwrap();
        let child = Command::new(peers.join("volsync-manager"))
            .args([
                "--leader-elect=false",
                "--metrics-bind-address=0",
                "--health-probe-bind-address=0",
                "--restic-container-image=ghcr.io/mover-dev/mover:test",
            ])
            .env("KUBECONFIG", &plane.kubeconfig)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting VolSync's controller");
        #[allow(unsafe_code)]
        // SAFETY: registering a plain extern "C" function with atexit has no preconditions.
        unsafe {
            libc::atexit(stop_volsync);
        }
        Mutex::new(child)
    });
}

fn volsync_api(client: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("volsync.backube", "v1alpha1", kind);
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// Waits for `status.lastManualSync == trigger` and returns the object.
async fn synced(
    api: &Api<DynamicObject>,
    name: &str,
    trigger: &str,
    node: &TestNode,
) -> DynamicObject {
    let ns = api.clone();
    for _ in 0..720 {
        if let Ok(obj) = ns.get(name).await {
            if obj.data["status"]["lastManualSync"] == trigger {
                return obj;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let obj = api.get(name).await.ok();
    let log = std::fs::read_to_string(plane().dir.join("volsync.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    let ns_name = obj.as_ref().and_then(|o| o.namespace()).unwrap_or_default();
    panic!(
        "{name} did not finish sync {trigger} within 180 s\nstatus: {}\npod logs:\n{}\nVolSync log (tail):\n{}",
        obj.map(|o| o.data["status"].to_string())
            .unwrap_or_default(),
        node.logs(&ns_name, "volsync-"),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volsync_restic_mover_runs_mover_and_restic_restores_it() {
    let plane = plane();
    let (client, node, ns) = setup("volsync").await;
    volsync_controller(plane);
    // Movers as root, as the test node runs every pod.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            &ns,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations":
                {"volsync.backube/privileged-movers": "true"}}})),
        )
        .await
        .unwrap();
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    create::<Secret>(
        &client,
        &ns,
        json!({"metadata": {"name": "restic-config"}, "stringData": {
            "RESTIC_REPOSITORY": repo, "RESTIC_PASSWORD": PASSWORD}}),
    )
    .await;
    let claim = |name: &str| {
        json!({"metadata": {"name": name}, "spec": {
            "storageClassName": STORAGE_CLASS, "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}})
    };
    create::<PersistentVolumeClaim>(&client, &ns, claim("data")).await;
    let source = node.wait_volume(&ns, "data").await;
    write_tree(&source);
    std::fs::write(source.join("app/blob.bin"), random_bytes(2_000_000, 7)).unwrap();

    // The source side: VolSync snapshots the claim, clones it and runs its mover Job.
    let sources = volsync_api(&client, &ns, "ReplicationSource");
    let rs: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationSource",
        "metadata": {"name": "data"},
        "spec": {"sourcePVC": "data", "trigger": {"manual": "first"},
            "restic": {"repository": "restic-config", "copyMethod": "Snapshot",
                "storageClassName": STORAGE_CLASS, "cacheStorageClassName": STORAGE_CLASS,
                "retain": {"last": "2"}}}}))
    .unwrap();
    sources.create(&PostParams::default(), &rs).await.unwrap();
    let rs = synced(&sources, "data", "first", node).await;
    let mover = &rs.data["status"]["latestMoverStatus"];
    assert_eq!(mover["result"], "Successful", "{mover}");
    let logs = mover["logs"].as_str().unwrap_or_default();
    let snaps = snapshots(&repo);
    assert_eq!(snaps.len(), 1, "one sync, one snapshot: {snaps:?}");
    let id = snaps[0]["short_id"].as_str().unwrap();
    assert!(
        logs.contains(&format!("snapshot {id} saved")),
        "VolSync's status names the snapshot: {logs}"
    );
    assert!(logs.contains("Restic completed in"), "{logs}");
    assert_eq!(snaps[0]["hostname"], "volsync");
    assert_eq!(snaps[0]["paths"][0], "/data");

    // restic restores what mover wrote, byte for byte (lost+found is excluded, as VolSync's
    // script does).
    let by_restic = tmp.path().join("by-restic");
    restic_restore(&repo, id, &by_restic);
    let expected = tmp.path().join("expected");
    std::fs::create_dir_all(&expected).unwrap();
    let out = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", source.display()))
        .arg(&expected)
        .status()
        .unwrap();
    assert!(out.success());
    std::fs::remove_dir(expected.join("lost+found")).unwrap();
    let diffs = compare_trees(&expected, &by_restic, &super::harness::contents());
    if let Err(d) = diffs {
        panic!("restic's restore differs: {d}");
    }

    // The destination side restores into an existing claim.
    create::<PersistentVolumeClaim>(&client, &ns, claim("restored")).await;
    let target = node.wait_volume(&ns, "restored").await;
    std::fs::write(target.join("stale.txt"), b"removed by enableFileDeletion").unwrap();
    let dests = volsync_api(&client, &ns, "ReplicationDestination");
    let rd: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationDestination",
        "metadata": {"name": "restored"},
        "spec": {"trigger": {"manual": "first"},
            "restic": {"repository": "restic-config", "destinationPVC": "restored",
                "copyMethod": "Direct", "cacheStorageClassName": STORAGE_CLASS,
                "enableFileDeletion": true}}}))
    .unwrap();
    dests.create(&PostParams::default(), &rd).await.unwrap();
    let rd = synced(&dests, "restored", "first", node).await;
    let mover = &rd.data["status"]["latestMoverStatus"];
    assert_eq!(mover["result"], "Successful", "{mover}");
    assert!(
        !target.join("stale.txt").exists(),
        "--delete removed the stale file"
    );
    let _ = std::fs::remove_dir(target.join("lost+found"));
    let diffs = compare_trees(&expected, &target, &super::harness::contents());
    if let Err(d) = diffs {
        panic!("the restored claim differs: {d}");
    }
}
