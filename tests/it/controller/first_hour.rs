//! What a platform engineer reads in the first hour: a fixed Secret noticed at once, every
//! printer column of every kind rendered by the real kubectl, and `kubectl describe` telling
//! a run's story in Events.

use super::harness::{claim, controller, create, random_bytes, repository, wait_for};
use super::plane::{plane, scratch, setup};
use crate::support::{PASSWORD, ok, restic};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use mover::k8s::api::repository::RepositoryPhase;
use mover::k8s::api::{BackupSchedule, Repository, RunPhase, VolumeBackup, VolumeRestore};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_password_is_probed_again_within_10_s() {
    let (client, node, ns) = setup("secretfix").await;
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
    let failed = wait_for(
        "the wrong password to fail the Repository",
        120,
        &ns,
        node,
        || async {
            let s = repos.get("repo").await.ok()?.status?;
            (s.phase == RepositoryPhase::Failed).then_some(s)
        },
    )
    .await;
    assert!(
        failed
            .message
            .as_deref()
            .unwrap_or("")
            .contains("wrong password"),
        "{:?}",
        failed.message
    );
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let names = |list: Vec<Job>| -> BTreeSet<String> {
        list.into_iter().filter_map(|j| j.metadata.name).collect()
    };
    let before = names(jobs.list(&ListParams::default()).await.unwrap().items);

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .patch(
            "restic",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"RESTIC_PASSWORD": PASSWORD}})),
        )
        .await
        .unwrap();
    let fixed = Instant::now();
    loop {
        let now = names(jobs.list(&ListParams::default()).await.unwrap().items);
        if now.difference(&before).next().is_some() {
            break;
        }
        assert!(
            fixed.elapsed() < Duration::from_secs(10),
            "no new probe within 10 s of the fixed Secret"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_for("the Repository to turn Ready", 120, &ns, node, || async {
        let s = repos.get("repo").await.ok()?.status?;
        (s.phase == RepositoryPhase::Ready).then_some(())
    })
    .await;
}

/// `kubectl get KIND` as a table: the header cells and the row of `name`.
fn table(kind: &str, ns: &str, name: &str) -> (Vec<String>, String) {
    let out = ok(plane().kubectl().args(["get", kind, "-n", ns, name]));
    eprintln!("$ kubectl get {kind} {name}\n{out}");
    let mut lines = out.lines();
    let header = lines.next().unwrap_or_default();
    // Headers are upper-case words separated by two or more spaces.
    let cells = header
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    (cells, lines.next().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_renders_every_printer_column_and_describe_tells_the_story() {
    let (client, node, ns) = setup("columns").await;
    let _controller = controller(plane()).await;
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    repository(&client, &ns, &repo, PASSWORD).await;
    let source = claim(&client, node, &ns, "data", "Filesystem", "64Mi").await;
    std::fs::write(source.join("table.bin"), random_bytes(256 << 10, 61)).unwrap();
    create::<VolumeBackup>(
        &client,
        &ns,
        json!({"metadata": {"name": "b1"}, "spec": {"source": {"pvc": "data"}, "repository": "repo"}}),
    )
    .await;
    // A backup of a claim that does not exist (yet): it waits and says so.
    create::<VolumeBackup>(
        &client,
        &ns,
        json!({"metadata": {"name": "early"}, "spec": {"source": {"pvc": "later"},
            "repository": "repo"}}),
    )
    .await;
    create::<BackupSchedule>(
        &client,
        &ns,
        json!({"metadata": {"name": "yearly"}, "spec": {"schedule": "0 0 1 1 *",
            "template": {"source": {"pvc": "data"}, "repository": "repo"}}}),
    )
    .await;
    let backups: Api<VolumeBackup> = Api::namespaced(client.clone(), &ns);
    let done = super::runs::finished(&backups, node, &ns, "b1", 180).await;
    // managedFields tells who wrote what: the controller the phase, the Job its result.
    let owners = |manager: &str| -> String {
        let fields = done.metadata.managed_fields.clone().unwrap_or_default();
        fields
            .iter()
            .filter(|f| f.manager.as_deref() == Some(manager))
            .filter(|f| f.subresource.as_deref() == Some("status"))
            .map(|f| serde_json::to_string(&f.fields_v1).unwrap())
            .collect()
    };
    let (controller_fields, job_fields) = (owners("mover-controller"), owners("mover-job"));
    assert!(controller_fields.contains("f:phase"), "{controller_fields}");
    assert!(job_fields.contains("f:result"), "{job_fields}");
    assert!(!job_fields.contains("f:phase"), "{job_fields}");
    let id = done.status.unwrap().snapshot_id.unwrap();
    create::<VolumeRestore>(
        &client,
        &ns,
        json!({"metadata": {"name": "r1"}, "spec": {"repository": "repo",
            "source": {"snapshotID": id},
            "target": {"newPVC": {"name": "copy", "storageClassName": super::node::STORAGE_CLASS}}}}),
    )
    .await;
    let restores: Api<VolumeRestore> = Api::namespaced(client.clone(), &ns);
    wait_for("r1 to complete", 180, &ns, node, || async {
        let s = restores.get("r1").await.ok()?.status?;
        (s.phase == RunPhase::Completed).then_some(())
    })
    .await;
    let schedules: Api<BackupSchedule> = Api::namespaced(client.clone(), &ns);
    wait_for(
        "the schedule to name its next time",
        60,
        &ns,
        node,
        || async {
            schedules
                .get("yearly")
                .await
                .ok()?
                .status?
                .next_schedule_time
                .map(|_| ())
        },
    )
    .await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &ns);
    wait_for(
        "the Repository to count the snapshot",
        60,
        &ns,
        node,
        || async {
            let s = repos.get("repo").await.ok()?.status?;
            (s.snapshot_count == Some(1)).then_some(())
        },
    )
    .await;

    // Every printer column the CRDs declare, as the real kubectl renders it.
    let declared: std::collections::BTreeMap<String, Vec<String>> = mover::k8s::api::crds()
        .into_iter()
        .map(|crd| {
            let cols = crd.spec.versions[0]
                .additional_printer_columns
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.name.to_uppercase())
                .collect();
            (crd.spec.names.plural.clone(), cols)
        })
        .collect();
    let rows = [
        ("repositories", "repo"),
        ("volumebackups", "b1"),
        ("volumerestores", "r1"),
        ("backupschedules", "yearly"),
    ];
    assert_eq!(declared.len(), rows.len(), "a kind without a row here");
    for (kind, name) in rows {
        let (header, row) = table(kind, &ns, name);
        let mut want = vec!["NAME".to_string()];
        want.extend(declared[kind].iter().cloned());
        assert_eq!(header, want, "{kind}");
        assert!(!row.contains("<invalid>"), "{kind}: {row}");
        assert!(row.starts_with(name), "{kind}: {row}");
        match kind {
            "repositories" => assert!(row.contains("Ready") && row.contains(" 1 "), "{row}"),
            "volumebackups" | "volumerestores" => {
                assert!(row.contains("Completed") && row.contains(&id), "{row}")
            }
            _ => assert!(row.contains("-01-01T00:00:00Z"), "NEXT is a time: {row}"),
        }
    }
    let (_, early) = table("volumebackups", &ns, "early");
    assert!(
        early.contains("Preparing") && early.contains("later"),
        "a waiting run names what it waits for: {early}"
    );

    // `kubectl describe` tells the run's story.
    let described = ok(plane()
        .kubectl()
        .args(["describe", "volumebackup", "-n", &ns, "b1"]));
    eprintln!("$ kubectl describe volumebackup b1\n{described}");
    for reason in ["BackupStarted", "BackupCompleted"] {
        assert!(
            described.contains(reason),
            "no {reason} Event:\n{described}"
        );
    }
    assert!(described.contains(&id[..8]), "{described}");
    let described = ok(plane()
        .kubectl()
        .args(["describe", "volumerestore", "-n", &ns, "r1"]));
    for reason in ["RestoreStarted", "RestoreCompleted"] {
        assert!(
            described.contains(reason),
            "no {reason} Event:\n{described}"
        );
    }
    // The controller's log at its default level, one JSON object per line: each Job it
    // created and each phase change, with the object's kind, namespace and name as fields.
    let lines: Vec<serde_json::Value> = super::harness::controller_log()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let logged = |message: &str, extra: (&str, &str)| {
        lines.iter().any(|l| {
            l["message"] == message
                && l["namespace"] == ns.as_str()
                && l["name"] == "b1"
                && l["kind"] == "VolumeBackup"
                && l[extra.0] == extra.1
                && l["level"] == "INFO"
        })
    };
    assert!(
        logged("created Job", ("job", "mover-backup-b1")),
        "no Job line"
    );
    assert!(
        logged("phase changed", ("phase", "InProgress")),
        "no InProgress line"
    );
    assert!(
        logged("phase changed", ("phase", "Completed")),
        "no Completed line"
    );
    // `kubectl explain` reads the descriptions.
    let explained = ok(plane()
        .kubectl()
        .args(["explain", "volumebackup.spec.source"]));
    assert!(
        !explained.contains("Auto-generated") && explained.contains("pvc"),
        "{explained}"
    );
}

/// Bytes of the files below `dir`.
fn stored_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => {}
            }
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_under_an_upload_limit_counts_what_the_repository_holds() {
    let (client, node, ns) = setup("durable").await;
    let _controller = controller(plane()).await;
    let tmp = scratch();
    let repo = tmp.path().join("repo");
    // 4 MiB packs, two upload slots (a local repository), 1 MiB/s out.
    const PACK: u64 = 4 << 20;
    const SLOTS: u64 = 2;
    const LIMIT: u64 = 1 << 20;
    super::harness::repository_with(
        &client,
        &ns,
        &repo,
        PASSWORD,
        json!({"MOVER_LIMIT_UPLOAD": "1024", "RESTIC_PACK_SIZE": "4"}),
        json!({}),
    )
    .await;
    let source = claim(&client, node, &ns, "data", "Filesystem", "64Mi").await;
    std::fs::write(source.join("a.bin"), random_bytes(16 << 20, 71)).unwrap();
    std::fs::write(source.join("b.bin"), random_bytes(8 << 20, 72)).unwrap();
    create::<VolumeBackup>(
        &client,
        &ns,
        json!({"metadata": {"name": "slow"}, "spec": {"source": {"pvc": "data"}, "repository": "repo"}}),
    )
    .await;
    let backups: Api<VolumeBackup> = Api::namespaced(client.clone(), &ns);
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut samples = Vec::new();
    let mut last_update = None;
    loop {
        let vb = backups.get("slow").await.unwrap();
        let status = vb.status.clone().unwrap_or_default();
        if status.phase.is_final() {
            assert_eq!(status.phase, RunPhase::Completed, "{:?}", status.message);
            break;
        }
        if let Some(p) = status.progress.clone() {
            // One sample per progress write, with what the repository held just after it.
            if p.update_time != last_update {
                last_update = p.update_time.clone();
                samples.push((p, stored_bytes(&repo.join("data"))));
            }
        }
        assert!(Instant::now() < deadline, "the backup did not finish");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let moving: Vec<_> = samples.iter().filter(|(p, _)| p.bytes_done > 0).collect();
    assert!(moving.len() >= 3, "too few progress samples: {samples:?}");
    let mut previous = 0;
    let mut moved = 0;
    for (p, held) in &samples {
        assert!(
            p.bytes_done <= held + SLOTS * PACK,
            "bytesDone {} ran ahead of the {} bytes the repository held",
            p.bytes_done,
            held
        );
        assert!(p.bytes_done >= previous, "bytesDone went back: {samples:?}");
        previous = p.bytes_done;
        // The rate is the upload's, not the reader's. The pacer lets the first pack go at
        // once and makes the next ones wait, so the average settles after a few packs.
        moved += usize::from(p.bytes_done > 0);
        assert!(
            moved <= 2 || p.bytes_per_second <= LIMIT * 3 / 2,
            "bytesPerSecond {} under a {} B/s limit",
            p.bytes_per_second,
            LIMIT
        );
    }
    let (last, _) = moving.last().unwrap();
    assert_eq!(last.total_bytes, Some(24 << 20));
    assert!(last.eta_seconds.is_some(), "no etaSeconds: {last:?}");
}
