//! Runs that end and tell the truth when something fails during them: bad specs refused at
//! admission, a retention that cannot run, a lost final status write with a late cancel, a
//! claim the user owns, a pod Pod Security refuses, a namespace deleted under finalizers, a
//! mover killed mid-backup. Each asserts the snapshots and what is left behind.

use super::harness::{
    claim, controller, controller_alone, create, kill_controller, random_bytes, repository,
    repository_with, snapshots, start_controller, wait_for,
};
use super::node::{STORAGE_CLASS, TestNode};
use super::plane::{plane, scratch, setup};
use crate::support::{PASSWORD, ok, restic};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use mover::k8s::api::{BackupSchedule, RunPhase, VolumeBackup, VolumeRestore};
use serde_json::json;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

async fn final_backup(
    client: &Client,
    node: &TestNode,
    ns: &str,
    name: &str,
    secs: u64,
) -> VolumeBackup {
    let api: Api<VolumeBackup> = Api::namespaced(client.clone(), ns);
    super::runs::finished(&api, node, ns, name, secs).await
}

fn init_repo(repo: &Path) {
    ok(restic()
        .arg("-r")
        .arg(repo)
        .env("RESTIC_PASSWORD", PASSWORD)
        .arg("init"));
}

fn condition<'a>(
    vb: &'a VolumeBackup,
    kind: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    vb.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
}

async fn refused<K>(client: &Client, ns: &str, value: serde_json::Value) -> String
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let obj: K = serde_json::from_value(value).expect("a valid object");
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => panic!("the API server accepted {}", K::kind(&())),
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "{s:?}");
            s.message
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_retention_and_schedule_fields_are_refused_by_the_api_server() {
    let (client, _node, ns) = setup("admission").await;
    let spec = |retention: serde_json::Value| {
        json!({"metadata": {"name": "b"}, "spec": {"source": {"pvc": "data"},
            "repository": "repo", "retention": retention}})
    };
    let m = refused::<VolumeBackup>(&client, &ns, spec(json!({"keepWithin": "bogus"}))).await;
    assert!(m.contains("keepWithin"), "{m}");
    let m = refused::<VolumeBackup>(&client, &ns, spec(json!({}))).await;
    assert!(m.contains("no keep rule"), "{m}");
    // A good one passes.
    create::<VolumeBackup>(
        &client,
        &ns,
        spec(json!({"keepWithin": "1y2m3d4h", "keepLast": 2})),
    )
    .await;
    let schedule = |fields: serde_json::Value| {
        let mut s = json!({"schedule": "@daily", "template": {"source": {"pvc": "data"},
            "repository": "repo"}});
        s.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        json!({"metadata": {"name": "s"}, "spec": s})
    };
    for (bad, field) in [
        (json!({"schedule": "every day"}), "schedule"),
        (json!({"jitter": "soon"}), "jitter"),
        (json!({"pruneInterval": "7d"}), "pruneInterval"),
        (json!({"retention": {"keepWithin": "1 week"}}), "keepWithin"),
    ] {
        let m = refused::<BackupSchedule>(&client, &ns, schedule(bad)).await;
        assert!(m.contains(field), "{field}: {m}");
    }
    create::<BackupSchedule>(
        &client,
        &ns,
        schedule(json!({"schedule": "*/5 * * * *", "jitter": "1m30s", "pruneInterval": "168h"})),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_that_cannot_run_leaves_the_backup_completed_with_a_warning() {
    let (client, node, ns) = setup("retention-fault").await;
    let _controller = controller(plane()).await;
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    init_repo(&repo);
    // restic holds a shared lock while it waits for stdin: backups pass, forget's exclusive
    // lock cannot be taken.
    let mut holder = restic()
        .arg("-r")
        .arg(&repo)
        .env("RESTIC_PASSWORD", PASSWORD)
        .args(["backup", "--stdin", "--stdin-filename", "held"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("restic");
    wait_for("restic's lock", 30, &ns, node, || async {
        let n = std::fs::read_dir(repo.join("locks")).ok()?.count();
        (n > 0).then_some(())
    })
    .await;
    repository(&client, &ns, &repo, PASSWORD).await;
    let source = claim(&client, node, &ns, "data", "Filesystem", "64Mi").await;
    std::fs::write(source.join("a.bin"), random_bytes(1 << 20, 3)).unwrap();
    create::<VolumeBackup>(
        &client,
        &ns,
        json!({"metadata": {"name": "r1"}, "spec": {"source": {"pvc": "data"},
            "repository": "repo", "retention": {"keepLast": 1}}}),
    )
    .await;
    let done = final_backup(&client, node, &ns, "r1", 180).await;
    let _ = holder.kill();
    let _ = holder.wait();
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, RunPhase::Completed, "{:?}", status.message);
    let id = status.snapshot_id.clone().expect("the snapshot id");
    let warning = condition(&done, "Warning").expect("a Warning condition");
    assert!(
        warning.message.contains("retention not applied"),
        "{}",
        warning.message
    );
    let all = snapshots(&repo);
    assert_eq!(all.len(), 1, "exactly the one snapshot: {all:?}");
    assert_eq!(all[0]["id"], id);
}

/// Denies the status writes of the namespace's ServiceAccounts that set `status.result`,
/// as an API server that lost or refused the Job's final patch.
async fn refuse_result_writes(client: &Client, ns: &str) {
    let policies: Api<k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy> =
        Api::all(client.clone());
    let policy = serde_json::from_value(json!({
        "metadata": {"name": format!("no-result-{ns}")},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": ["mover.dev"],
                "apiVersions": ["*"], "operations": ["UPDATE"],
                "resources": ["volumebackups/status"]}]},
            "validations": [{"expression":
                "!request.userInfo.username.startsWith('system:serviceaccount:') || !has(object.status.result)",
                "message": "status.result is refused"}]
        }
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let bindings: Api<
        k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
    > = Api::all(client.clone());
    let binding = serde_json::from_value(json!({
        "metadata": {"name": format!("no-result-{ns}")},
        "spec": {"policyName": format!("no-result-{ns}"), "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels":
                {"kubernetes.io/metadata.name": ns}}}}
    }))
    .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_final_status_write_and_a_late_cancel_still_complete_with_the_snapshot() {
    let (client, node, ns) = setup("lost-result").await;
    let alone = controller_alone(plane()).await;
    refuse_result_writes(&client, &ns).await;
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    repository(&client, &ns, &repo, PASSWORD).await;
    let source = claim(&client, node, &ns, "data", "Filesystem", "64Mi").await;
    std::fs::write(source.join("a.bin"), random_bytes(2 << 20, 5)).unwrap();
    create::<VolumeBackup>(
        &client,
        &ns,
        json!({"metadata": {"name": "l1"}, "spec": {"source": {"pvc": "data"}, "repository": "repo"}}),
    )
    .await;
    let backups: Api<VolumeBackup> = Api::namespaced(client.clone(), &ns);
    wait_for("l1 to run", 120, &ns, node, || async {
        let s = backups.get("l1").await.ok()?.status?;
        (s.phase == RunPhase::InProgress).then_some(())
    })
    .await;
    // The controller is away while the Job finishes; the cancel arrives after its success.
    kill_controller(plane(), &alone);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    wait_for("the backup Job to succeed", 120, &ns, node, || async {
        let j = jobs.get("mover-backup-l1").await.ok()?;
        let done = j
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True");
        done.then_some(())
    })
    .await;
    backups
        .patch(
            "l1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"cancel": true}})),
        )
        .await
        .unwrap();
    assert!(
        backups
            .get("l1")
            .await
            .unwrap()
            .status
            .unwrap()
            .result
            .is_none(),
        "the Job's result write was refused"
    );
    start_controller(plane(), &alone);
    let done = final_backup(&client, node, &ns, "l1", 120).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, RunPhase::Completed, "{:?}", status.message);
    let all = snapshots(&repo);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(status.snapshot_id.as_deref(), all[0]["id"].as_str());
    wait_for("the run's Job to go", 60, &ns, node, || async {
        jobs.get_opt("mover-backup-l1")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_pvc_that_already_exists_fails_the_restore_and_is_left_untouched() {
    let (client, node, ns) = setup("newpvc-taken").await;
    let _controller = controller(plane()).await;
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    init_repo(&repo);
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("snap.txt"), "from the snapshot").unwrap();
    ok(restic()
        .arg("-r")
        .arg(&repo)
        .env("RESTIC_PASSWORD", PASSWORD)
        .current_dir(&data)
        .args(["backup", "."]));
    repository(&client, &ns, &repo, PASSWORD).await;
    let mine = claim(&client, node, &ns, "mine", "Filesystem", "64Mi").await;
    std::fs::write(mine.join("precious.txt"), "the user's data").unwrap();
    create::<VolumeRestore>(
        &client,
        &ns,
        json!({"metadata": {"name": "t1"}, "spec": {"repository": "repo",
            "source": {}, "target": {"newPVC": {"name": "mine"}}}}),
    )
    .await;
    let restores: Api<VolumeRestore> = Api::namespaced(client.clone(), &ns);
    let status = wait_for("t1 to end", 120, &ns, node, || async {
        restores
            .get("t1")
            .await
            .ok()?
            .status
            .filter(|s| s.phase.is_final())
    })
    .await;
    assert_eq!(status.phase, RunPhase::Failed);
    let message = status.message.unwrap_or_default();
    assert!(message.contains("already exists"), "{message}");
    assert_eq!(
        std::fs::read_to_string(mine.join("precious.txt")).unwrap(),
        "the user's data"
    );
    assert!(
        !mine.join("snap.txt").exists(),
        "nothing was restored into the user's claim"
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    assert!(
        claims
            .get("mine")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );
}

async fn label_namespace(client: &Client, ns: &str, level: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": level}}})),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_pod_security_refuses_fails_the_run_fast_and_baseline_admits_privileged() {
    let (client, node, ns) = setup("psa").await;
    let _controller = controller(plane()).await;
    label_namespace(&client, &ns, "restricted").await;
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    repository(&client, &ns, &repo, PASSWORD).await;
    let source = claim(&client, node, &ns, "data", "Filesystem", "64Mi").await;
    std::fs::write(source.join("a.txt"), "a").unwrap();
    let backup = |name: &str| {
        json!({"metadata": {"name": name}, "spec": {"source": {"pvc": "data"},
            "repository": "repo", "mover": {"privileged": true}}})
    };
    let backups: Api<VolumeBackup> = Api::namespaced(client.clone(), &ns);
    // Wait for the Repository first: its probe pod is hardened and restricted admits it.
    wait_for("the Repository to be Ready", 90, &ns, node, || async {
        let r: mover::k8s::api::Repository = Api::namespaced(client.clone(), &ns)
            .get("repo")
            .await
            .ok()?;
        (r.status?.phase == mover::k8s::api::repository::RepositoryPhase::Ready).then_some(())
    })
    .await;
    create::<VolumeBackup>(&client, &ns, backup("p1")).await;
    let started = Instant::now();
    let done = final_backup(&client, node, &ns, "p1", 60).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, RunPhase::Failed);
    let message = status.message.unwrap_or_default();
    assert!(message.contains("PodSecurity"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(60));
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(snapshots(&repo).is_empty());

    // Under baseline, the privileged pod's capabilities are all allowed.
    label_namespace(&client, &ns, "baseline").await;
    create::<VolumeBackup>(&client, &ns, backup("p2")).await;
    let done = final_backup(&client, node, &ns, "p2", 120).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, RunPhase::Completed, "{:?}", status.message);
    assert_eq!(snapshots(&repo).len(), 1);
    let _ = backups;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_with_delete_policy_backups_does_not_hang() {
    let (client, node, ns) = setup("ns-delete").await;
    let _controller = controller(plane()).await;
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    repository(&client, &ns, &repo, PASSWORD).await;
    let source = claim(&client, node, &ns, "data", "Filesystem", "64Mi").await;
    std::fs::write(source.join("a.txt"), "a").unwrap();
    create::<VolumeBackup>(
        &client,
        &ns,
        json!({"metadata": {"name": "d1"}, "spec": {"source": {"pvc": "data"},
            "repository": "repo", "deletionPolicy": "Delete"}}),
    )
    .await;
    let done = final_backup(&client, node, &ns, "d1", 120).await;
    assert_eq!(done.status.unwrap().phase, RunPhase::Completed);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the namespace to go", 60, &ns, node, || async {
        namespaces.get_opt(&ns).await.ok()?.is_none().then_some(())
    })
    .await;
    // The snapshot is orphaned, not lost and not half-forgotten.
    assert_eq!(snapshots(&repo).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mover_killed_mid_backup_retries_to_one_snapshot_and_blocks_nothing() {
    let (client, node, ns) = setup("sigkill").await;
    let _controller = controller(plane()).await;
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    // 4 MiB at 256 KiB/s: time to kill it mid-upload.
    repository_with(
        &client,
        &ns,
        &repo,
        PASSWORD,
        json!({"MOVER_LIMIT_UPLOAD": "256"}),
        json!({}),
    )
    .await;
    let source = claim(&client, node, &ns, "data", "Filesystem", "64Mi").await;
    std::fs::write(source.join("big.bin"), random_bytes(4 << 20, 11)).unwrap();
    create::<VolumeBackup>(
        &client,
        &ns,
        json!({"metadata": {"name": "k1"}, "spec": {"source": {"pvc": "data"}, "repository": "repo"}}),
    )
    .await;
    let backups: Api<VolumeBackup> = Api::namespaced(client.clone(), &ns);
    wait_for("k1 to report progress", 120, &ns, node, || async {
        let s = backups.get("k1").await.ok()?.status?;
        s.progress.filter(|p| p.bytes_done > 0).map(|_| ())
    })
    .await;
    let killed = std::process::Command::new("pkill")
        .args(["-KILL", "-f", "job backup .*volumebackup/k1"])
        .status()
        .unwrap();
    assert!(killed.success(), "no mover process of k1 to kill");
    let done = final_backup(&client, node, &ns, "k1", 180).await;
    let status = done.status.unwrap();
    assert!(
        matches!(status.phase, RunPhase::Completed | RunPhase::Failed),
        "{:?}",
        status.phase
    );
    assert!(snapshots(&repo).len() <= 1, "at most one snapshot");
    // The next run needs no manual step: the killed process's lock does not block it.
    create::<VolumeBackup>(
        &client,
        &ns,
        json!({"metadata": {"name": "k2"}, "spec": {"source": {"pvc": "data"}, "repository": "repo"}}),
    )
    .await;
    let done = final_backup(&client, node, &ns, "k2", 180).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, RunPhase::Completed, "{:?}", status.message);
    let all = snapshots(&repo);
    assert!(
        all.iter()
            .any(|s| s["id"].as_str() == status.snapshot_id.as_deref())
    );
    let locks = std::fs::read_dir(repo.join("locks"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(locks, 0, "a lock was left behind");
}

/// A PostgreSQL data directory: owned by uid 999, 0700 directories, 0600 files.
fn private_tree(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let pg = root.join("pgdata");
    std::fs::create_dir_all(pg.join("base")).unwrap();
    std::fs::write(pg.join("PG_VERSION"), "16\n").unwrap();
    std::fs::write(pg.join("base/16384"), random_bytes(64 << 10, 9)).unwrap();
    for (path, mode) in [
        (pg.join("base/16384"), 0o600),
        (pg.join("PG_VERSION"), 0o600),
        (pg.join("base"), 0o700),
        (pg.clone(), 0o700),
    ] {
        std::os::unix::fs::chown(&path, Some(999), Some(999)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_other_users_own_are_a_warning_by_default_and_round_trip_when_privileged() {
    use std::os::unix::fs::MetadataExt;
    let (client, node, ns) = setup("private").await;
    let _controller = controller(plane()).await;
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    repository(&client, &ns, &repo, PASSWORD).await;
    let source = claim(&client, node, &ns, "db", "Filesystem", "64Mi").await;
    private_tree(&source);
    std::fs::write(source.join("README"), "public\n").unwrap();

    // The hardened default cannot read them: Completed, with the count and the fix.
    create::<VolumeBackup>(
        &client,
        &ns,
        json!({"metadata": {"name": "plain"}, "spec": {"source": {"pvc": "db"}, "repository": "repo"}}),
    )
    .await;
    let done = final_backup(&client, node, &ns, "plain", 120).await;
    assert_eq!(done.status.as_ref().unwrap().phase, RunPhase::Completed);
    let warning = condition(&done, "Warning").expect("a Warning condition");
    assert!(
        warning.message.contains("could not be read"),
        "{}",
        warning.message
    );
    assert!(
        warning.message.contains("privileged"),
        "{}",
        warning.message
    );

    // Privileged reads them and a privileged restore gives back owners and modes.
    create::<VolumeBackup>(
        &client,
        &ns,
        json!({"metadata": {"name": "priv"}, "spec": {"source": {"pvc": "db"},
            "repository": "repo", "mover": {"privileged": true}}}),
    )
    .await;
    let done = final_backup(&client, node, &ns, "priv", 120).await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, RunPhase::Completed, "{:?}", status.message);
    assert!(
        condition(&done, "Warning").is_none(),
        "{:?}",
        status.conditions
    );
    create::<VolumeRestore>(
        &client,
        &ns,
        json!({"metadata": {"name": "back"}, "spec": {"repository": "repo",
            "source": {"snapshotID": status.snapshot_id},
            "target": {"newPVC": {"name": "db-restored", "storageClassName": STORAGE_CLASS}},
            "mover": {"privileged": true}}}),
    )
    .await;
    let restores: Api<VolumeRestore> = Api::namespaced(client.clone(), &ns);
    let rs = wait_for("the restore to end", 120, &ns, node, || async {
        restores
            .get("back")
            .await
            .ok()?
            .status
            .filter(|s| s.phase.is_final())
    })
    .await;
    assert_eq!(rs.phase, RunPhase::Completed, "{:?}", rs.message);
    let target = node.wait_volume(&ns, "db-restored").await;
    for (rel, mode) in [
        ("pgdata", 0o700),
        ("pgdata/base", 0o700),
        ("pgdata/base/16384", 0o600),
        ("pgdata/PG_VERSION", 0o600),
    ] {
        let md = std::fs::metadata(target.join(rel)).unwrap();
        assert_eq!((md.uid(), md.gid()), (999, 999), "{rel}");
        assert_eq!(md.mode() & 0o7777, mode, "{rel}");
    }
    assert_eq!(
        std::fs::read(target.join("pgdata/base/16384")).unwrap(),
        std::fs::read(source.join("pgdata/base/16384")).unwrap()
    );
}
