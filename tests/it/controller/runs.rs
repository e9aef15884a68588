//! Runs under way: cancel mid-backup, a controller killed mid-run, `maxJobs` serializing
//! backups of one repository, and a block-mode PVC round trip. The repository Secrets here
//! carry `MOVER_LIMIT_UPLOAD`, so a backup of a few MiB takes long enough to act on while
//! it runs.

use super::harness::{
    claim, contents, controller, controller_alone, controller_log, create, random_bytes,
    repository_with, restart_controller, restic_restore, snapshots, wait_for,
};
use super::node::{STORAGE_CLASS, TestNode};
use super::plane::{plane, scratch, setup};
use crate::support::PASSWORD;
use crate::support::compare::compare_trees;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use mover::k8s::api::{RunPhase, VolumeBackup, VolumeRestore};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

async fn backup(client: &Client, ns: &str, name: &str, pvc: &str) {
    create::<VolumeBackup>(
        client,
        ns,
        json!({"metadata": {"name": name}, "spec": {
            "source": {"pvc": pvc}, "repository": "repo"}}),
    )
    .await;
}

async fn phase(api: &Api<VolumeBackup>, name: &str) -> Option<RunPhase> {
    api.get(name).await.ok()?.status.map(|s| s.phase)
}

pub(super) async fn finished(
    api: &Api<VolumeBackup>,
    node: &TestNode,
    ns: &str,
    name: &str,
    seconds: u64,
) -> VolumeBackup {
    wait_for(
        &format!("VolumeBackup {name} to finish"),
        seconds,
        ns,
        node,
        || async {
            let b = api.get(name).await.ok()?;
            b.status.clone().filter(|s| s.phase.is_final()).map(|_| b)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_backup_within_15_s_and_leaves_no_snapshot_or_lock() {
    let (client, node, ns) = setup("cancel").await;
    let _controller = controller(plane()).await;
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    // 6 MiB at 256 KiB/s: the upload alone takes over 20 s.
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
    std::fs::write(source.join("big.bin"), random_bytes(6 << 20, 7)).unwrap();
    backup(&client, &ns, "c1", "data").await;
    let backups: Api<VolumeBackup> = Api::namespaced(client.clone(), &ns);
    wait_for("c1 to report progress", 120, &ns, node, || async {
        let s = backups.get("c1").await.ok()?.status?;
        (s.phase == RunPhase::InProgress && s.progress.is_some()).then_some(())
    })
    .await;

    let asked = Instant::now();
    backups
        .patch(
            "c1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"cancel": true}})),
        )
        .await
        .unwrap();
    let done = finished(&backups, node, &ns, "c1", 15).await;
    let took = asked.elapsed();
    let status = done.status.unwrap();
    assert_eq!(status.phase, RunPhase::Canceled, "{:?}", status.message);
    assert!(took <= Duration::from_secs(15), "canceled after {took:?}");
    assert!(status.snapshot_id.is_none());

    // The mover process goes, removes its lock and writes no snapshot.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait_for("the mover pod to go", 30, &ns, node, || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        list.items.is_empty().then_some(())
    })
    .await;
    wait_for("the mover's lock to go", 30, &ns, node, || async {
        let locks = std::fs::read_dir(repo.join("locks")).ok()?.count();
        (locks == 0).then_some(())
    })
    .await;
    assert!(
        snapshots(&repo).is_empty(),
        "a canceled backup wrote a snapshot"
    );
    let log = node.logs(&ns, "mover-backup-c1");
    assert!(
        log.contains("SIGTERM") || log.contains("cancel"),
        "the mover did not say it was stopped:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_mid_run_is_replaced_and_the_run_completes_once() {
    let (client, node, ns) = setup("restart").await;
    let alone = controller_alone(plane()).await;
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    repository_with(
        &client,
        &ns,
        &repo,
        PASSWORD,
        json!({"MOVER_LIMIT_UPLOAD": "512"}),
        json!({}),
    )
    .await;
    let source = claim(&client, node, &ns, "data", "Filesystem", "64Mi").await;
    std::fs::create_dir_all(source.join("db")).unwrap();
    std::fs::write(source.join("db/table.bin"), random_bytes(5 << 20, 11)).unwrap();
    std::fs::write(source.join("db/wal.log"), b"committed\n").unwrap();
    backup(&client, &ns, "b1", "data").await;
    let backups: Api<VolumeBackup> = Api::namespaced(client.clone(), &ns);
    wait_for("b1 to start moving data", 120, &ns, node, || async {
        (phase(&backups, "b1").await? == RunPhase::InProgress).then_some(())
    })
    .await;
    let leading_before = controller_log().matches("leading as").count();
    restart_controller(plane(), &alone);

    let done = finished(&backups, node, &ns, "b1", 180).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, RunPhase::Completed, "{:?}", status.message);
    assert!(
        controller_log().matches("leading as").count() > leading_before,
        "no new controller took the Lease"
    );
    // One run, one snapshot: the new controller adopted the Job instead of starting again.
    let snaps = snapshots(&repo);
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["id"], status.snapshot_id.clone().unwrap().as_str());
    let restored = tmp.path().join("restored");
    restic_restore(&repo, snaps[0]["id"].as_str().unwrap(), &restored);
    compare_trees(&source, &restored, &contents()).unwrap();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    wait_for("the temporary clone to go", 60, &ns, node, || async {
        claims
            .get_opt("mover-backup-b1")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_jobs_one_runs_two_backups_of_a_repository_one_after_the_other() {
    let (client, node, ns) = setup("maxjobs").await;
    let _controller = controller(plane()).await;
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    repository_with(
        &client,
        &ns,
        &repo,
        PASSWORD,
        json!({"MOVER_LIMIT_UPLOAD": "1024"}),
        json!({"concurrency": {"maxJobs": 1}}),
    )
    .await;
    let mut sources = Vec::new();
    for (i, name) in ["a", "b"].iter().enumerate() {
        let dir = claim(&client, node, &ns, name, "Filesystem", "64Mi").await;
        std::fs::write(dir.join("data.bin"), random_bytes(4 << 20, 20 + i as u64)).unwrap();
        sources.push(dir);
    }
    backup(&client, &ns, "ba", "a").await;
    backup(&client, &ns, "bb", "b").await;
    let backups: Api<VolumeBackup> = Api::namespaced(client.clone(), &ns);
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut both_ran = false;
    let mut seen_running = [false, false];
    loop {
        let pa = phase(&backups, "ba").await.unwrap_or_default();
        let pb = phase(&backups, "bb").await.unwrap_or_default();
        assert!(
            !(pa == RunPhase::InProgress && pb == RunPhase::InProgress),
            "both backups ran at once under maxJobs 1"
        );
        seen_running[0] |= pa == RunPhase::InProgress;
        seen_running[1] |= pb == RunPhase::InProgress;
        if pa.is_final() && pb.is_final() {
            assert_eq!((pa, pb), (RunPhase::Completed, RunPhase::Completed));
            both_ran = true;
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        both_ran,
        "the backups did not finish:\n{}",
        node.logs(&ns, "mover-")
    );
    assert_eq!(seen_running, [true, true], "each backup was seen running");
    let snaps = snapshots(&repo);
    let mut hosts: Vec<&str> = snaps
        .iter()
        .map(|s| s["hostname"].as_str().unwrap())
        .collect();
    hosts.sort();
    assert_eq!(hosts, vec![format!("{ns}-a"), format!("{ns}-b")]);
    for (snap, source) in [("ba", &sources[0]), ("bb", &sources[1])] {
        let id = backups
            .get(snap)
            .await
            .unwrap()
            .status
            .unwrap()
            .snapshot_id
            .unwrap();
        let restored = tmp.path().join(format!("restored-{snap}"));
        restic_restore(&repo, &id, &restored);
        compare_trees(source, &restored, &contents()).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_pvc_is_backed_up_and_restored_into_a_new_block_pvc() {
    let (client, node, ns) = setup("block").await;
    let _controller = controller(plane()).await;
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    repository_with(&client, &ns, &repo, PASSWORD, json!({}), json!({})).await;
    let image = claim(&client, node, &ns, "disk", "Block", "64Mi").await;
    // Data at the start and at 40 MiB, holes elsewhere.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .unwrap();
        f.write_all_at(&random_bytes(1 << 20, 5), 0).unwrap();
        f.write_all_at(&random_bytes(3 << 19, 6), 40 << 20).unwrap();
    }
    let source = std::fs::read(&image).unwrap();
    assert_eq!(source.len(), 64 << 20);

    backup(&client, &ns, "b1", "disk").await;
    let backups: Api<VolumeBackup> = Api::namespaced(client.clone(), &ns);
    let done = finished(&backups, node, &ns, "b1", 120).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, RunPhase::Completed, "{:?}", status.message);
    let id = status.snapshot_id.unwrap();

    // restic restores the device as one file with the same bytes.
    let restored = tmp.path().join("restic");
    restic_restore(&repo, &id, &restored);
    let files: Vec<PathBuf> = walkdir(&restored);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        std::fs::read(&files[0]).unwrap() == source,
        "restic's restore differs"
    );

    create::<VolumeRestore>(
        &client,
        &ns,
        json!({"metadata": {"name": "r1"}, "spec": {"repository": "repo",
            "source": {"snapshotID": id},
            "target": {"newPVC": {"name": "disk-copy", "storageClassName": STORAGE_CLASS,
                "volumeMode": "Block"}}}}),
    )
    .await;
    let restores: Api<VolumeRestore> = Api::namespaced(client.clone(), &ns);
    let done = wait_for("VolumeRestore r1 to finish", 120, &ns, node, || async {
        let r = restores.get("r1").await.ok()?;
        r.status.clone().filter(|s| s.phase.is_final()).map(|_| r)
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, RunPhase::Completed, "{:?}", status.message);
    let copy = node.wait_volume(&ns, "disk-copy").await;
    let copy = std::fs::read(copy).unwrap();
    assert_eq!(
        copy.len(),
        source.len(),
        "the new PVC is sized from the snapshot"
    );
    assert!(copy == source, "the restored block volume differs");
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}
