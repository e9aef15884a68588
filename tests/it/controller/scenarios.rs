//! End-to-end runs: a Repository, a VolumeBackup of a PVC (restic restores the recorded
//! snapshot byte for byte), a VolumeRestore into a new PVC, and failures with their messages.

use super::harness::{
    assert_owned_by_mover, contents, contents_unprivileged, controller, create, repository,
    wait_for, write_tree,
};
use super::node::STORAGE_CLASS;
use super::plane::{plane, scratch, setup};
use crate::support::compare::compare_trees;
use crate::support::{PASSWORD, ok, restic};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::Api;
use mover::k8s::api::{Repository, VolumeBackup, VolumeRestore};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pvc_is_backed_up_through_a_snapshot_and_restored_into_a_new_pvc() {
    let (client, node, ns) = setup("backup").await;
    let _controller = controller(plane()).await;
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    repository(&client, &ns, &repo, PASSWORD).await;
    create::<PersistentVolumeClaim>(
        &client,
        &ns,
        json!({"metadata": {"name": "data"}, "spec": {
            "storageClassName": STORAGE_CLASS, "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    let source = node.wait_volume(&ns, "data").await;
    write_tree(&source);

    create::<VolumeBackup>(
        &client,
        &ns,
        json!({"metadata": {"name": "b1"}, "spec": {
            "source": {"pvc": "data"}, "repository": "repo", "tags": ["nightly"],
            "volumeSnapshotClassName": STORAGE_CLASS}}),
    )
    .await;
    let backups: Api<VolumeBackup> = Api::namespaced(client.clone(), &ns);
    let done = wait_for("VolumeBackup b1 to finish", 120, &ns, node, || async {
        let b = backups.get("b1").await.ok()?;
        b.status.clone().filter(|s| s.phase.is_final()).map(|_| b)
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!(
        status.phase.as_str(),
        "Completed",
        "{:?}\n{}",
        status.message,
        node.logs(&ns, "mover-")
    );
    let id = status
        .snapshot_id
        .clone()
        .expect("the snapshot id is recorded");
    let summary = status.summary.clone().expect("a summary");
    assert_eq!(summary.files_new, 51, "{summary:?}");
    let progress = status.progress.clone().expect("progress was written");
    assert!(progress.bytes_done >= 3_000_000, "{progress:?}");
    assert_eq!(progress.total_files, Some(51));

    // The real restic finds the snapshot under the host and tag, and restores it exactly.
    let snaps = ok(restic()
        .arg("-r")
        .arg(&repo)
        .env("RESTIC_PASSWORD", PASSWORD)
        .args(["snapshots", "--json"]));
    let snaps: serde_json::Value = serde_json::from_str(&snaps).unwrap();
    let snap = &snaps.as_array().unwrap()[0];
    assert_eq!(snap["id"], id.as_str());
    assert_eq!(snap["hostname"], format!("{ns}-data"));
    assert_eq!(snap["tags"][0], "nightly");
    assert_eq!(snap["paths"][0], "/data");
    let restored = tmp.path().join("restic-restore");
    ok(restic()
        .arg("-r")
        .arg(&repo)
        .env("RESTIC_PASSWORD", PASSWORD)
        .args(["restore", &id, "--target"])
        .arg(&restored));
    std::fs::remove_dir_all(source.join("lost+found")).unwrap();
    compare_trees(&source, &restored, &contents()).unwrap();

    // The temporary snapshot and clone are gone.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    wait_for("the temporary clone PVC to go", 30, &ns, node, || async {
        claims
            .get_opt("mover-backup-b1")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;

    // The run's ServiceAccount may patch only its own resource's status: no Secrets.
    let sa = format!("system:serviceaccount:{ns}:mover-backup-b1");
    let can = |args: &[&str]| {
        let out = plane()
            .kubectl()
            .args(["auth", "can-i", "-n", &ns, "--as", &sa])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(can(&["get", "secrets"]), "no");
    assert_eq!(can(&["get", "secret/restic"]), "no");
    assert_eq!(
        can(&[
            "patch",
            "volumebackups.mover.dev/b1",
            "--subresource=status"
        ]),
        "yes"
    );
    assert_eq!(
        can(&[
            "patch",
            "volumebackups.mover.dev/other",
            "--subresource=status"
        ]),
        "no"
    );
    assert_eq!(can(&["patch", "volumebackups.mover.dev/b1"]), "no");

    // Restore into a new PVC, sized from the snapshot.
    create::<VolumeRestore>(
        &client,
        &ns,
        json!({"metadata": {"name": "r1"}, "spec": {"repository": "repo",
            "source": {"host": format!("{ns}-data")},
            "target": {"newPVC": {"name": "restored", "storageClassName": STORAGE_CLASS}}}}),
    )
    .await;
    let restores: Api<VolumeRestore> = Api::namespaced(client.clone(), &ns);
    let done = wait_for("VolumeRestore r1 to finish", 120, &ns, node, || async {
        let r = restores.get("r1").await.ok()?;
        r.status.clone().filter(|s| s.phase.is_final()).map(|_| r)
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!(status.phase.as_str(), "Completed", "{:?}", status.message);
    assert_eq!(status.snapshot_id.as_deref(), Some(id.as_str()));
    let target = node.wait_volume(&ns, "restored").await;
    compare_trees(&source, &target, &contents_unprivileged()).unwrap();
    assert_owned_by_mover(&target.join("app/db.bin"));

    // Restore into an existing PVC that holds other data, removing what the snapshot lacks.
    // Its files are root's: changing their modes and owners takes a privileged mover.
    create::<PersistentVolumeClaim>(
        &client,
        &ns,
        json!({"metadata": {"name": "existing"}, "spec": {
            "storageClassName": STORAGE_CLASS, "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    let existing = node.wait_volume(&ns, "existing").await;
    std::fs::create_dir_all(existing.join("app/logs")).unwrap();
    std::fs::write(existing.join("app/logs/3.log"), b"stale content").unwrap();
    std::fs::write(existing.join("extra.txt"), b"not in the snapshot").unwrap();
    create::<VolumeRestore>(
        &client,
        &ns,
        json!({"metadata": {"name": "r2"}, "spec": {"repository": "repo",
            "source": {"snapshotID": &id[..8]}, "deleteExtraneous": true,
            "target": {"pvc": "existing"}, "mover": {"privileged": true}}}),
    )
    .await;
    let done = wait_for("VolumeRestore r2 to finish", 120, &ns, node, || async {
        let r = restores.get("r2").await.ok()?;
        r.status.clone().filter(|s| s.phase.is_final()).map(|_| r)
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!(status.phase.as_str(), "Completed", "{:?}", status.message);
    compare_trees(&source, &existing, &contents()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_the_repository_with_that_message() {
    let (client, node, ns) = setup("badpw").await;
    let _controller = controller(plane()).await;
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    ok(restic()
        .arg("-r")
        .arg(&repo)
        .env("RESTIC_PASSWORD", PASSWORD)
        .arg("init"));
    repository(&client, &ns, &repo, "not-the-password").await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &ns);
    let status = wait_for("Repository repo to be checked", 90, &ns, node, || async {
        let r = repos.get("repo").await.ok()?;
        let s = r.status?;
        (s.phase != mover::k8s::api::repository::RepositoryPhase::Pending).then_some(s)
    })
    .await;
    assert_eq!(
        status.phase,
        mover::k8s::api::repository::RepositoryPhase::Failed
    );
    let message = status.message.unwrap_or_default();
    assert!(message.contains("wrong password"), "{message}");
    assert_eq!(status.conditions[0].reason, "WrongPassword");

    // A repository that does not exist and may not be created.
    create::<Secret>(
        &client,
        &ns,
        json!({"metadata": {"name": "missing"}, "stringData": {
            "RESTIC_REPOSITORY": tmp.path().join("nothing-here"), "RESTIC_PASSWORD": PASSWORD}}),
    )
    .await;
    create::<Repository>(
        &client,
        &ns,
        json!({"metadata": {"name": "missing"}, "spec": {"secretRef": {"name": "missing"},
            "initialize": false}}),
    )
    .await;
    let status = wait_for(
        "Repository missing to be checked",
        90,
        &ns,
        node,
        || async {
            let r = repos.get("missing").await.ok()?;
            let s = r.status?;
            (s.phase != mover::k8s::api::repository::RepositoryPhase::Pending).then_some(s)
        },
    )
    .await;
    let message = status.message.unwrap_or_default();
    assert!(message.contains("does not exist"), "{message}");
    assert_eq!(status.conditions[0].reason, "NotFound");
    assert!(
        !tmp.path().join("nothing-here").exists(),
        "nothing was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_policy_delete_forgets_the_snapshot_when_the_backup_goes() {
    let (client, node, ns) = setup("forget").await;
    let _controller = controller(plane()).await;
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    repository(&client, &ns, &repo, PASSWORD).await;
    create::<PersistentVolumeClaim>(
        &client,
        &ns,
        json!({"metadata": {"name": "data"}, "spec": {
            "storageClassName": STORAGE_CLASS, "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    let source = node.wait_volume(&ns, "data").await;
    write_tree(&source);
    let backups: Api<VolumeBackup> = Api::namespaced(client.clone(), &ns);
    let mut ids = Vec::new();
    for (name, policy) in [("keep", "Retain"), ("drop", "Delete")] {
        create::<VolumeBackup>(
            &client,
            &ns,
            json!({"metadata": {"name": name}, "spec": {
                "source": {"pvc": "data"}, "repository": "repo", "copyMethod": "Clone",
                "deletionPolicy": policy}}),
        )
        .await;
        let id = wait_for(
            &format!("VolumeBackup {name} to complete"),
            120,
            &ns,
            node,
            || async {
                let b = backups.get(name).await.ok()?;
                let s = b.status?;
                assert_ne!(s.phase.as_str(), "Failed", "{:?}", s.message);
                s.snapshot_id.filter(|_| s.phase.as_str() == "Completed")
            },
        )
        .await;
        ids.push(id);
    }
    let listed = || {
        let out = ok(restic()
            .arg("-r")
            .arg(&repo)
            .env("RESTIC_PASSWORD", PASSWORD)
            .args(["snapshots", "--json"]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(listed().len(), 2);
    for name in ["keep", "drop"] {
        backups.delete(name, &Default::default()).await.unwrap();
    }
    wait_for("both VolumeBackups to go", 90, &ns, node, || async {
        let left = backups.list(&Default::default()).await.ok()?;
        left.items.is_empty().then_some(())
    })
    .await;
    assert_eq!(
        listed(),
        vec![ids[0].clone()],
        "only the Retain backup's snapshot stays"
    );
}
