//! mover's retention of Velero's snapshots: deleting a Velero backup (its
//! DeleteBackupRequest, held by mover's finalizer until Velero has removed the backup's
//! objects from the BSL) forgets exactly that backup's snapshots, and the periodic sweep
//! forgets old snapshots whose backup is gone from the BSL, never young ones and never those
//! of backups still in it. The test plays Velero: it writes and deletes
//! `backups/<name>/velero-backup.json` and deletes the request as Velero's deletion
//! controller does.

use super::harness::{controller, create, random_bytes, wait_for};
use super::plane::{plane, setup};
use super::velero::{
    VELERO_NS, data_upload_of, restic_018_at, restic_at, take_snapshot, velero_namespace,
    wait_phase,
};
use crate::support::s3::S3Server;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use mover::k8s::api::velero::{DataUpload, DeleteBackupRequest};
use mover::storage::{Storage, StorageOptions};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::json;

/// The BSL's prefix on the S3 server, as Velero writes it.
pub(super) fn bsl_root(bucket: &str) -> Storage {
    let s3 = S3Server::shared();
    Storage::open_with_env(
        &s3.repo_url(bucket, "cluster-a"),
        &StorageOptions::default(),
        |n| s3.lookup(n),
    )
    .unwrap()
}

fn metadata(backup: &str) -> ObjectPath {
    ObjectPath::from(format!("cluster-a/backups/{backup}/velero-backup.json"))
}

/// The tags of every snapshot in the namespace's repository, one list per snapshot.
fn snapshot_backups(bucket: &str, ns: &str) -> Vec<String> {
    let out = restic_at(bucket, ns)
        .args(["snapshots", "--json", "--no-lock"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut backups: Vec<String> = snaps
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["tags"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| {
            t.as_str()?
                .strip_prefix("velero-backup=")
                .map(str::to_string)
        })
        .collect();
    backups.sort();
    backups
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_velero_backup_forgets_its_snapshots_and_only_those() {
    let plane = plane();
    let (client, node, app) = setup("velero-gc").await;
    let _c = controller(plane).await;
    let bsl = velero_namespace(&client).await;
    let root = bsl_root(&bsl.bucket);
    let source = super::harness::claim(&client, node, &app, "data", "Filesystem", "1Gi").await;
    std::fs::write(source.join("blob.bin"), random_bytes(500_000, 21)).unwrap();

    // Two backups through mover, both in the BSL.
    let uploads: Api<DataUpload> = Api::namespaced(client.clone(), VELERO_NS);
    let mut seen = Vec::new();
    for backup in ["keep-me", "drop-me"] {
        root.object_store()
            .put(&metadata(backup), PutPayload::from_static(b"{}"))
            .await
            .unwrap();
        let vs = take_snapshot(&client, node, &app, "data").await;
        let du = uploads
            .create(
                &PostParams::default(),
                &data_upload_of(backup, &app, "data", &vs, "mover", "default"),
            )
            .await
            .unwrap();
        let done = wait_phase(
            &uploads,
            &du.name_any(),
            &["Completed", "Failed"],
            &app,
            node,
            &mut seen,
        )
        .await;
        let st = done.status.unwrap();
        assert_eq!(st.phase.as_deref(), Some("Completed"), "{:?}", st.message);
    }
    // Snapshots of backups that are not in the BSL: one taken long ago, one just now.
    let dir = super::plane::scratch();
    std::fs::write(dir.path().join("f"), b"orphan").unwrap();
    for (backup, time) in [
        ("orphan-old", Some("2020-01-01 00:00:00")),
        ("orphan-new", None),
    ] {
        let mut c = restic_018_at(&bsl.bucket, &app);
        // The periodic sweep (every 10 s here) may hold the exclusive lock a moment.
        c.args([
            "backup",
            "--retry-lock",
            "2m",
            "--host",
            "elsewhere",
            "--tag",
        ])
        .arg(format!("velero-backup={backup}"));
        if let Some(t) = time {
            c.args(["--time", t]);
        }
        let out = c.arg(dir.path()).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The periodic sweep forgets the old orphan only.
    wait_for(
        "the periodic sweep to forget the old orphan",
        90,
        &app,
        node,
        || async {
            let b = snapshot_backups(&bsl.bucket, &app);
            (!b.contains(&"orphan-old".to_string())).then_some(b)
        },
    )
    .await;
    assert_eq!(
        snapshot_backups(&bsl.bucket, &app),
        ["drop-me", "keep-me", "orphan-new"]
    );

    // `velero backup delete drop-me`: the request is held by mover while Velero works.
    let requests: Api<DeleteBackupRequest> = Api::namespaced(client.clone(), VELERO_NS);
    let dbr = create::<DeleteBackupRequest>(
        &client,
        VELERO_NS,
        json!({"metadata": {"generateName": "drop-me-",
            "labels": {"velero.io/backup-name": "drop-me", "velero.io/backup-uid": "0b9c-uid"}},
            "spec": {"backupName": "drop-me"}}),
    )
    .await;
    let name = dbr.name_any();
    wait_for("mover's finalizer on the request", 30, &app, node, || {
        let requests = requests.clone();
        let name = name.clone();
        async move {
            let d = requests.get(&name).await.ok()?;
            d.finalizers()
                .iter()
                .any(|f| f == mover::k8s::velero::gc::FINALIZER)
                .then_some(())
        }
    })
    .await;
    // Nothing is forgotten while Velero has not removed the backup.
    assert_eq!(
        snapshot_backups(&bsl.bucket, &app),
        ["drop-me", "keep-me", "orphan-new"]
    );
    // Velero removes the backup's objects, then deletes the request.
    root.object_store()
        .delete(&metadata("drop-me"))
        .await
        .unwrap();
    requests
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the request to go once mover swept", 90, &app, node, || {
        let requests = requests.clone();
        let name = name.clone();
        async move { requests.get_opt(&name).await.ok()?.is_none().then_some(()) }
    })
    .await;
    assert_eq!(
        snapshot_backups(&bsl.bucket, &app),
        ["keep-me", "orphan-new"]
    );
    // restic still checks the repository after the forgets.
    let out = restic_018_at(&bsl.bucket, &app)
        .args(["check", "--retry-lock", "2m"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
