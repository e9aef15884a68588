//! The controller as `deploy/controller.yaml` installs it: its own ServiceAccount bound to
//! the shipped ClusterRole, which grants no access to Secrets, instead of the control
//! plane's admin. A missing Secret is told by the probe pod, a created one is picked up by
//! the re-probe, and a backup and a restore go through with nothing more than that RBAC.

use super::harness::{
    Identity, contents, contents_unprivileged, controller_alone, create, restart_controller_as,
    wait_for, write_tree,
};
use super::node::STORAGE_CLASS;
use super::plane::{Plane, plane, scratch, setup};
use crate::support::compare::compare_trees;
use crate::support::{PASSWORD, ok, restic};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::{Api, ListParams};
use mover::k8s::api::repository::RepositoryPhase;
use mover::k8s::api::{Repository, VolumeBackup, VolumeRestore};
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use tokio::sync::RwLockWriteGuard;

const SERVICE_ACCOUNT: &str = "system:serviceaccount:mover-system:mover-controller";

/// Applies every object of `deploy/controller.yaml` but its Deployment (the test runs the
/// controller as a process) and returns a kubeconfig with a token of its ServiceAccount.
fn shipped_identity(plane: &Plane) -> Identity {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("deploy/controller.yaml")).unwrap();
    let objects: Vec<&str> = manifest
        .split("\n---\n")
        .filter(|doc| !doc.lines().any(|l| l == "kind: Deployment"))
        .collect();
    assert!(objects.iter().any(|d| d.contains("kind: ClusterRole\n")));
    let mut apply = plane
        .kubectl()
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(objects.join("\n---\n").as_bytes())
        .unwrap();
    let out = apply.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = plane
        .kubectl()
        .args([
            "create",
            "token",
            "mover-controller",
            "-n",
            "mover-system",
            "--duration=2h",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let admin: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&plane.kubeconfig).unwrap()).unwrap();
    let mut config = admin.clone();
    for user in config["users"].as_sequence_mut().unwrap() {
        user["user"] = serde_yaml::to_value(json!({ "token": token })).unwrap();
    }
    let kubeconfig = plane.dir.join("kubeconfig-mover-controller");
    std::fs::write(&kubeconfig, serde_yaml::to_string(&config).unwrap()).unwrap();
    Identity {
        kubeconfig,
        lease_namespace: "mover-system".into(),
    }
}

/// Puts the admin controller back when the scenario ends, passed or not.
struct AdminAgain<'a>(&'a RwLockWriteGuard<'static, ()>);

impl Drop for AdminAgain<'_> {
    fn drop(&mut self) {
        restart_controller_as(plane(), self.0, None);
    }
}

fn can_i(args: &[&str]) -> String {
    let out = plane()
        .kubectl()
        .args(["auth", "can-i", "--as", SERVICE_ACCOUNT])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_runs_on_the_rbac_it_ships_with_no_access_to_secrets() {
    let (client, node, ns) = setup("rbac").await;
    let alone = controller_alone(plane()).await;
    let identity = shipped_identity(plane());
    assert_eq!(can_i(&["get", "secrets", "-A"]), "no");
    assert_eq!(can_i(&["list", "secrets", "-n", &ns]), "no");
    assert_eq!(can_i(&["create", "jobs", "-n", &ns]), "yes");
    restart_controller_as(plane(), &alone, Some(identity));
    let _admin_again = AdminAgain(&alone);

    // A Repository whose Secret does not exist yet: the probe pod cannot start, and says so.
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    create::<Repository>(
        &client,
        &ns,
        json!({"metadata": {"name": "repo"}, "spec": {"secretRef": {"name": "restic"}}}),
    )
    .await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &ns);
    let failed = wait_for(
        "the missing Secret to fail the Repository",
        60,
        &ns,
        node,
        || async {
            let s = repos.get("repo").await.ok()?.status?;
            (s.phase == RepositoryPhase::Failed).then_some(s)
        },
    )
    .await;
    assert_eq!(failed.message.as_deref(), Some("Secret restic not found"));
    assert_eq!(failed.conditions[0].reason, "SecretNotFound");
    // The probe that could not start is not left waiting.
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    wait_for("the blocked probe Job to go", 30, &ns, node, || async {
        jobs.list(&ListParams::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;

    // The Secret created: the next probe (30 s after the failure) finds it and creates the
    // repository.
    create::<Secret>(
        &client,
        &ns,
        json!({"metadata": {"name": "restic"}, "stringData": {
            "RESTIC_REPOSITORY": &repo, "RESTIC_PASSWORD": PASSWORD}}),
    )
    .await;
    wait_for("the Repository to turn Ready", 90, &ns, node, || async {
        let s = repos.get("repo").await.ok()?.status?;
        (s.phase == RepositoryPhase::Ready).then_some(())
    })
    .await;

    // A backup through a snapshot and a restore into a new claim, on the shipped RBAC.
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
    std::fs::remove_dir_all(source.join("lost+found")).unwrap();
    create::<VolumeBackup>(
        &client,
        &ns,
        json!({"metadata": {"name": "b1"}, "spec": {
            "source": {"pvc": "data"}, "repository": "repo",
            "volumeSnapshotClassName": STORAGE_CLASS}}),
    )
    .await;
    let backups: Api<VolumeBackup> = Api::namespaced(client.clone(), &ns);
    let status = wait_for("VolumeBackup b1 to finish", 120, &ns, node, || async {
        let s = backups.get("b1").await.ok()?.status?;
        s.phase.is_final().then_some(s)
    })
    .await;
    assert_eq!(status.phase.as_str(), "Completed", "{:?}", status.message);
    let id = status.snapshot_id.expect("the snapshot id");
    let restored = tmp.path().join("restic-restore");
    ok(restic()
        .arg("-r")
        .arg(&repo)
        .env("RESTIC_PASSWORD", PASSWORD)
        .args(["restore", &id, "--target"])
        .arg(&restored));
    compare_trees(&source, &restored, &contents()).unwrap();

    create::<VolumeRestore>(
        &client,
        &ns,
        json!({"metadata": {"name": "r1"}, "spec": {"repository": "repo",
            "source": {"snapshotID": &id},
            "target": {"newPVC": {"name": "restored", "storageClassName": STORAGE_CLASS}}}}),
    )
    .await;
    let restores: Api<VolumeRestore> = Api::namespaced(client.clone(), &ns);
    let status = wait_for("VolumeRestore r1 to finish", 120, &ns, node, || async {
        let s = restores.get("r1").await.ok()?.status?;
        s.phase.is_final().then_some(s)
    })
    .await;
    assert_eq!(status.phase.as_str(), "Completed", "{:?}", status.message);
    let target = node.wait_volume(&ns, "restored").await;
    compare_trees(&source, &target, &contents_unprivileged()).unwrap();

    // What the runs made is gone: the backup's clone claim and both runs' Jobs.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    wait_for("the runs' Jobs and clone to go", 60, &ns, node, || async {
        let left = jobs.list(&ListParams::default()).await.ok()?.items;
        let clone = claims.get_opt("mover-backup-b1").await.ok()?;
        (left.is_empty() && clone.is_none()).then_some(())
    })
    .await;
}
