//! A BackupSchedule against the real control plane: runs at its cron times, applies its
//! retention to the repository, trims its history and prunes the repository.

use super::harness::{
    claim, contents, controller, create, repository, restic_restore, snapshots, wait_for,
};
use super::plane::{plane, scratch, setup};
use crate::support::compare::compare_trees;
use crate::support::{PASSWORD, ok, restic};
use kube::api::{Api, ListParams, Patch, PatchParams};
use mover::k8s::api::{BackupSchedule, RunPhase, VolumeBackup};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_backs_up_every_minute_keeps_the_newest_and_prunes() {
    let (client, node, ns) = setup("schedule").await;
    let _controller = controller(plane()).await;
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    repository(&client, &ns, &repo, PASSWORD).await;
    let source = claim(&client, node, &ns, "data", "Filesystem", "1Gi").await;
    std::fs::write(source.join("state.txt"), b"generation 1\n").unwrap();

    create::<BackupSchedule>(
        &client,
        &ns,
        json!({"metadata": {"name": "minutely"}, "spec": {
            "schedule": "* * * * *",
            "template": {"source": {"pvc": "data"}, "repository": "repo", "tags": ["scheduled"]},
            "retention": {"keepLast": 1},
            "successfulHistoryLimit": 1,
            "pruneInterval": "1m"}}),
    )
    .await;
    let backups: Api<VolumeBackup> = Api::namespaced(client.clone(), &ns);
    let completed = || async {
        let list = backups.list(&ListParams::default()).await.ok()?;
        Some(
            list.items
                .into_iter()
                .filter(|b| {
                    b.status
                        .as_ref()
                        .is_some_and(|s| s.phase == RunPhase::Completed)
                })
                .collect::<Vec<_>>(),
        )
    };
    let first = wait_for("the first scheduled backup", 150, &ns, node, || async {
        completed().await.filter(|c| !c.is_empty())
    })
    .await;
    let first_name = first[0].metadata.name.clone().unwrap();
    // The source changes; the next minute's run must capture it.
    std::fs::write(source.join("state.txt"), b"generation 2\n").unwrap();
    let schedules: Api<BackupSchedule> = Api::namespaced(client.clone(), &ns);
    let second = wait_for(
        "a second scheduled backup to replace the first",
        150,
        &ns,
        node,
        || async {
            let done = completed().await?;
            let newer = done
                .iter()
                .find(|b| b.metadata.name.as_deref() != Some(first_name.as_str()))?
                .clone();
            // History limit 1: the first one is deleted once the second completed.
            let first_gone = backups.get_opt(&first_name).await.ok()?.is_none();
            first_gone.then_some(newer)
        },
    )
    .await;
    assert_eq!(
        second.metadata.labels.clone().unwrap()["mover.dev/schedule"],
        "minutely"
    );

    // A prune runs between backups, under the repository's Lease.
    wait_for("a prune to be recorded", 150, &ns, node, || async {
        let s = schedules.get("minutely").await.ok()?.status?;
        s.last_prune_time.map(|_| ())
    })
    .await;
    assert!(
        !node.logs(&ns, "mover-prune-").is_empty(),
        "no prune Job ran"
    );

    // Suspended and without prunes, the schedule goes quiet; then the repository is read.
    schedules
        .patch(
            "minutely",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true, "pruneInterval": null}})),
        )
        .await
        .unwrap();
    let bs = wait_for("the schedule to go quiet", 120, &ns, node, || async {
        let bs = schedules.get("minutely").await.ok()?;
        let s = bs.status.clone()?;
        let list = backups.list(&ListParams::default()).await.ok()?;
        let quiet = s.prune_job.is_none()
            && s.next_schedule_time.is_none()
            && list
                .items
                .iter()
                .all(|b| b.status.as_ref().is_some_and(|s| s.phase.is_final()));
        quiet.then_some(bs)
    })
    .await;
    let status = bs.status.unwrap();
    assert!(status.last_schedule_time.is_some());
    let last = status
        .last_successful_backup
        .clone()
        .expect("the schedule names its last success");
    assert_ne!(last, first_name);
    let last = backups.get(&last).await.unwrap();
    let last_id = last.status.unwrap().snapshot_id.unwrap();
    let list = backups.list(&ListParams::default()).await.unwrap();
    let kept: Vec<_> = list
        .items
        .iter()
        .filter(|b| {
            b.status
                .as_ref()
                .is_some_and(|s| s.phase == RunPhase::Completed)
        })
        .collect();
    assert_eq!(kept.len(), 1, "history limit 1 keeps one completed backup");

    // Retention keepLast 1: restic sees exactly the newest snapshot, and it holds generation 2.
    let snaps = snapshots(&repo);
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let id = snaps[0]["id"].as_str().unwrap();
    assert_eq!(id, last_id);
    assert_eq!(snaps[0]["tags"][0], "scheduled");
    let restored = tmp.path().join("restored");
    restic_restore(&repo, id, &restored);
    compare_trees(&source, &restored, &contents()).unwrap();
    ok(restic()
        .arg("-r")
        .arg(&repo)
        .env("RESTIC_PASSWORD", PASSWORD)
        .args(["check"]));
}
