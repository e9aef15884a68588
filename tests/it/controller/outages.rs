//! Runs through outages of what they depend on: the API server stopped mid-backup, the S3
//! endpoint down when a Repository is first probed, the controller restarted again and
//! again under a schedule. Each asserts the snapshots, the restored bytes and what is left
//! behind (Jobs, claims, VolumeSnapshots, locks).

use super::harness::{
    claim, contents, controller, controller_alone, create, random_bytes, repository_with,
    restart_controller, restic_restore, snapshots, wait_for,
};
use super::node::TestNode;
use super::plane::{plane, scratch, setup};
use crate::support::PASSWORD;
use crate::support::compare::compare_trees;
use crate::support::s3::S3Server;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Client;
use kube::api::{Api, ListParams};
use mover::k8s::api::repository::RepositoryPhase;
use mover::k8s::api::snapshot::VolumeSnapshot;
use mover::k8s::api::{BackupSchedule, Repository, RunPhase, VolumeBackup};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// Waits until the namespace holds no Job, claim or VolumeSnapshot mover made, and the
/// repository holds no lock.
async fn nothing_left(client: &Client, node: &TestNode, ns: &str, repo: Option<&Path>) {
    let managed = ListParams::default().labels("app.kubernetes.io/managed-by=mover");
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let snaps: Api<VolumeSnapshot> = Api::namespaced(client.clone(), ns);
    wait_for(
        "mover's Jobs, claims and snapshots to go",
        90,
        ns,
        node,
        || async {
            let left = jobs.list(&managed).await.ok()?.items.len()
                + claims.list(&managed).await.ok()?.items.len()
                + snaps.list(&managed).await.ok()?.items.len();
            (left == 0).then_some(())
        },
    )
    .await;
    if let Some(repo) = repo {
        let locks = std::fs::read_dir(repo.join("locks"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(locks, 0, "a lock was left in the repository");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_away_for_30_s_mid_backup_ends_with_one_snapshot_restic_restores() {
    let (client, node, ns) = setup("apiserver").await;
    let _alone = controller_alone(plane()).await;
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    // 12 MiB at 256 KiB/s: the upload outlasts the outage.
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
    std::fs::create_dir_all(source.join("db")).unwrap();
    std::fs::write(source.join("db/table.bin"), random_bytes(12 << 20, 31)).unwrap();
    std::fs::write(source.join("db/wal.log"), b"committed\n").unwrap();
    create::<VolumeBackup>(
        &client,
        &ns,
        json!({"metadata": {"name": "b1"}, "spec": {"source": {"pvc": "data"}, "repository": "repo"}}),
    )
    .await;
    let backups: Api<VolumeBackup> = Api::namespaced(client.clone(), &ns);
    wait_for("b1 to report progress", 150, &ns, node, || async {
        let s = backups.get("b1").await.ok()?.status?;
        s.progress.filter(|p| p.bytes_done > 0).map(|_| ())
    })
    .await;

    plane().apiserver_outage(Duration::from_secs(30)).await;

    let done = super::runs::finished(&backups, node, &ns, "b1", 300).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, RunPhase::Completed, "{:?}", status.message);
    let snaps = snapshots(&repo);
    assert_eq!(snaps.len(), 1, "exactly one snapshot: {snaps:?}");
    assert_eq!(
        snaps[0]["id"].as_str(),
        status.snapshot_id.as_deref(),
        "the recorded id is the snapshot's"
    );
    let restored = tmp.path().join("restored");
    restic_restore(&repo, snaps[0]["id"].as_str().unwrap(), &restored);
    compare_trees(&source, &restored, &contents()).unwrap();
    nothing_left(&client, node, &ns, Some(&repo)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_endpoint_down_at_the_first_probe_turns_ready_without_an_edit() {
    let (client, node, ns) = setup("s3down").await;
    let _controller = controller(plane()).await;
    let tmp = scratch();
    // Nothing listens on the endpoint yet.
    let port = S3Server::free_port();
    let url = format!("s3:http://127.0.0.1:{port}/outage");
    let aws: serde_json::Map<String, serde_json::Value> = S3Server::client_env()
        .into_iter()
        .map(|(k, v)| (k, json!(v)))
        .collect();
    let created = Instant::now();
    repository_with(
        &client,
        &ns,
        Path::new(&url),
        PASSWORD,
        serde_json::Value::Object(aws),
        json!({"initialize": true}),
    )
    .await;
    let source = claim(&client, node, &ns, "data", "Filesystem", "64Mi").await;
    std::fs::write(source.join("table.bin"), random_bytes(1 << 20, 41)).unwrap();
    std::fs::write(source.join("wal.log"), b"committed\n").unwrap();
    create::<VolumeBackup>(
        &client,
        &ns,
        json!({"metadata": {"name": "b1"}, "spec": {"source": {"pvc": "data"}, "repository": "repo"}}),
    )
    .await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &ns);
    let degraded = wait_for("the Repository to be Degraded", 120, &ns, node, || async {
        let s = repos.get("repo").await.ok()?.status?;
        (s.phase == RepositoryPhase::Degraded).then_some(s)
    })
    .await;
    assert!(
        degraded
            .message
            .as_deref()
            .unwrap_or("")
            .contains("127.0.0.1"),
        "the condition names the endpoint: {:?}",
        degraded.message
    );
    // The backup waits meanwhile: no Job, no snapshot.
    let backups: Api<VolumeBackup> = Api::namespaced(client.clone(), &ns);
    let waiting = backups.get("b1").await.unwrap().status.unwrap_or_default();
    assert!(!waiting.phase.is_final(), "{:?}", waiting.phase);

    tokio::time::sleep(Duration::from_secs(60).saturating_sub(created.elapsed())).await;
    let s3 = S3Server::start_on(port);

    wait_for(
        "the Repository to turn Ready by itself",
        300,
        &ns,
        node,
        || async {
            let s = repos.get("repo").await.ok()?.status?;
            (s.phase == RepositoryPhase::Ready).then_some(())
        },
    )
    .await;
    let done = super::runs::finished(&backups, node, &ns, "b1", 240).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, RunPhase::Completed, "{:?}", status.message);
    let restic_s3 = || {
        let mut c = crate::support::restic();
        c.arg("-r").arg(&url).env("RESTIC_PASSWORD", PASSWORD);
        c.envs(s3.env());
        c
    };
    let listed = crate::support::ok(restic_s3().args(["snapshots", "--json"]));
    let snaps: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["id"].as_str(), status.snapshot_id.as_deref());
    let restored = tmp.path().join("restored");
    crate::support::ok(
        restic_s3()
            .args(["restore", snaps[0]["id"].as_str().unwrap(), "--target"])
            .arg(&restored),
    );
    compare_trees(&source, &restored, &contents()).unwrap();
    nothing_left(&client, node, &ns, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_controller_restarts_under_a_minutely_schedule_leave_one_snapshot_per_run() {
    let (client, node, ns) = setup("restarts").await;
    let alone = controller_alone(plane()).await;
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    repository_with(&client, &ns, &repo, PASSWORD, json!({}), json!({})).await;
    let source = claim(&client, node, &ns, "data", "Filesystem", "64Mi").await;
    std::fs::write(source.join("table.bin"), random_bytes(2 << 20, 51)).unwrap();
    create::<BackupSchedule>(
        &client,
        &ns,
        json!({"metadata": {"name": "minutely"}, "spec": {
            "schedule": "* * * * *",
            "template": {"source": {"pvc": "data"}, "repository": "repo"},
            "successfulHistoryLimit": 20, "failedHistoryLimit": 20}}),
    )
    .await;
    // Restarts land at different points of the minute: mid-run, between runs, at the
    // minute itself.
    let log = || super::harness::controller_log();
    for gap in [50, 61, 43, 57, 47] {
        tokio::time::sleep(Duration::from_secs(gap)).await;
        restart_controller(plane(), &alone);
    }
    let after_last = log().len();
    let schedules: Api<BackupSchedule> = Api::namespaced(client.clone(), &ns);
    // Until the next minute has been taken by the last controller, then quiet.
    tokio::time::sleep(Duration::from_secs(60)).await;
    schedules
        .patch(
            "minutely",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap();
    let backups: Api<VolumeBackup> = Api::namespaced(client.clone(), &ns);
    let runs = wait_for("every scheduled run to end", 240, &ns, node, || async {
        let list = backups.list(&ListParams::default()).await.ok()?.items;
        list.iter()
            .all(|b| b.status.as_ref().is_some_and(|s| s.phase.is_final()))
            .then_some(list)
    })
    .await;
    assert!(runs.len() >= 4, "{} runs in about six minutes", runs.len());
    let mut minutes = std::collections::BTreeSet::new();
    let mut ids = std::collections::BTreeSet::new();
    for run in &runs {
        let name = run.metadata.name.clone().unwrap();
        let status = run.status.clone().unwrap();
        assert_eq!(
            status.phase,
            RunPhase::Completed,
            "{name}: {:?}",
            status.message
        );
        let minute =
            run.metadata.annotations.clone().unwrap_or_default()["mover.dev/scheduled-time"]
                .clone();
        assert!(minutes.insert(minute.clone()), "two runs for {minute}");
        ids.insert(status.snapshot_id.unwrap());
    }
    let snaps = snapshots(&repo);
    let in_repo: std::collections::BTreeSet<String> = snaps
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(in_repo, ids, "one snapshot per run, no other");
    let restored = tmp.path().join("restored");
    restic_restore(
        &repo,
        snaps.last().unwrap()["id"].as_str().unwrap(),
        &restored,
    );
    compare_trees(&source, &restored, &contents()).unwrap();
    // The periodic Velero sweep still runs under the last controller.
    let since = log()
        .get(after_last..)
        .unwrap_or("")
        .matches("periodic Velero sweep")
        .count();
    assert!(since > 0, "no periodic Velero sweep after the last restart");
    nothing_left(&client, node, &ns, Some(&repo)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_stopped_with_sigterm_hands_its_lease_over_at_once() {
    use k8s_openapi::api::coordination::v1::Lease;
    let (client, _node, _ns) = setup("handover").await;
    let alone = controller_alone(plane()).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let holder = || async {
        let lease = leases.get_opt("mover-controller").await.ok()??;
        lease.spec?.holder_identity.filter(|h| !h.is_empty())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        if let Some(h) = holder().await {
            break h;
        }
        assert!(Instant::now() < deadline, "no controller took the Lease");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        super::harness::terminate_controller(plane(), &alone),
        "the controller did not stop cleanly on SIGTERM:\n{}",
        super::harness::controller_log()
    );
    assert_eq!(holder().await, None, "the Lease of {before} was kept");
    let stopped = Instant::now();
    super::harness::start_controller(plane(), &alone);
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        if let Some(h) = holder().await {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "no new controller took the Lease"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_ne!(after, before);
    // Without the hand-over, the new one would wait out the 15 s lease.
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "the new controller led after {:?}",
        stopped.elapsed()
    );
}
