//! Fault injection below the repository: a failed upload never leaves a snapshot that points
//! at missing data, and the next backup succeeds; corrupt reads are detected.

use crate::support::PASSWORD;
use crate::support::faulty_store::FaultyStore;
use crate::support::*;
use mover::ErrorClass;
use mover::progress::Progress;
use mover::repo::{InitOptions, Repository};
use mover::storage::Storage;
use object_store::ObjectStore;
use std::sync::Arc;

fn faulty_local(dir: &std::path::Path) -> (Arc<FaultyStore>, Storage) {
    std::fs::create_dir_all(dir).unwrap();
    let local = object_store::local::LocalFileSystem::new_with_prefix(dir).unwrap();
    let faulty = Arc::new(FaultyStore::new(Arc::new(local)));
    let store: Arc<dyn ObjectStore> = faulty.clone();
    let storage = Storage::from_store(store, "", format!("faulty:{}", dir.display()));
    (faulty, storage)
}

#[test]
fn failed_upload_leaves_no_snapshot_and_next_backup_succeeds() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..5u32 {
        let data: Vec<u8> = (0..1_500_000u32)
            .map(|j| (j.wrapping_mul(2654435761).wrapping_add(i * 7919) >> 11) as u8)
            .collect();
        std::fs::write(src.join(format!("f{i}")), data).unwrap();
    }
    let repo_dir = tmp.path().join("repo");
    let (faulty, storage) = faulty_local(&repo_dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let repo = Repository::init(storage.clone(), PASSWORD, &InitOptions::default())
            .await
            .unwrap();
        let mut opts = mover::ops::backup::BackupOptions {
            paths: vec![src.clone()],
            ..Default::default()
        };
        // Small packs so that there are several uploads; fail one in the middle.
        opts.pipeline.pack_size_bytes = 4 * 1024 * 1024;
        faulty.fail_put_number(faulty.put_count() + 3);
        let err = mover::ops::backup::backup(&repo, &opts, Arc::new(Progress::default()))
            .await
            .expect_err("backup must fail when an upload fails");
        // The cause is what the run reports, with its class, not that a stage was aborted.
        assert_upload_failure(&err);
        assert!(
            repo.list_snapshots().await.unwrap().is_empty(),
            "no snapshot after failure"
        );
        faulty.clear_put_faults();
        let summary = mover::ops::backup::backup(&repo, &opts, Arc::new(Progress::default()))
            .await
            .unwrap();
        assert_eq!(summary.files_new, 5);
    });
    // No lock is left behind, and restic finds the repository consistent.
    assert_eq!(
        std::fs::read_dir(repo_dir.join("locks")).unwrap().count(),
        0
    );
    ok(restic()
        .arg("-r")
        .arg(&repo_dir)
        .args(["check", "--read-data"]));
    let target = tmp.path().join("restore");
    ok(restic()
        .arg("-r")
        .arg(&repo_dir)
        .args(["restore", "latest", "--target"])
        .arg(&target));
    for i in 0..5 {
        let name = format!("f{i}");
        assert_eq!(
            std::fs::read(restored_path(&target, &src).join(&name)).unwrap(),
            std::fs::read(src.join(&name)).unwrap()
        );
    }
}

/// A failed upload as the run must report it: the storage's own message and class (an S3
/// endpoint that died is `Retryable`, exit 1 with class "retryable" in a Job's result).
fn assert_upload_failure(err: &mover::Error) {
    let text = err.chain_string();
    assert!(text.contains("injected failure of put"), "{text}");
    assert!(!text.contains("aborted"), "{text}");
    assert_eq!(err.class(), ErrorClass::Retryable, "{text}");
}

#[test]
fn a_failed_upload_under_a_block_backup_is_reported_with_its_cause() {
    let tmp = tempdir();
    let img = tmp.path().join("disk.img");
    let data: Vec<u8> = (0..12_000_000u32)
        .map(|j| (j.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&img, data).unwrap();
    let repo_dir = tmp.path().join("repo");
    let (faulty, storage) = faulty_local(&repo_dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let repo = Repository::init(storage.clone(), PASSWORD, &InitOptions::default())
            .await
            .unwrap();
        let request = mover::ops::backup::BackupRequest {
            paths: vec![img.clone()],
            image: true,
            pack_size_mib: Some(4),
            ..Default::default()
        };
        let mover::ops::backup::BackupPlan::Volume { source, options } = request.plan(2).unwrap()
        else {
            panic!("an image is one volume");
        };
        faulty.fail_puts_from(faulty.put_count() + 2);
        let err = mover::ops::block::backup_volume(
            &repo,
            &options,
            source,
            Arc::new(Progress::default()),
        )
        .await
        .expect_err("backup must fail when uploads fail");
        assert_upload_failure(&err);
        assert!(repo.list_snapshots().await.unwrap().is_empty());
    });
}

#[test]
fn corrupt_reads_are_detected_not_restored() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("file"), vec![7u8; 3_000_000]).unwrap();
    let repo_dir = tmp.path().join("repo");
    let (faulty, storage) = faulty_local(&repo_dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let repo = Repository::init(storage.clone(), PASSWORD, &InitOptions::default())
            .await
            .unwrap();
        let opts = mover::ops::backup::BackupOptions {
            paths: vec![src.clone()],
            ..Default::default()
        };
        mover::ops::backup::backup(&repo, &opts, Arc::new(Progress::default()))
            .await
            .unwrap();
        let (_, snap) = repo
            .find_snapshot("latest", &Default::default())
            .await
            .unwrap();
        faulty.corrupt_reads("data/");
        let ropts = mover::ops::restore::RestoreOptions {
            target: tmp.path().join("restore"),
            ..Default::default()
        };
        let err = mover::ops::restore::restore(&repo, &snap, &ropts, Arc::new(Progress::default()))
            .await
            .expect_err("corrupt pack data must fail the restore");
        assert_eq!(err.class(), mover::ErrorClass::Corrupt, "{err}");
    });
}

/// A lock that can no longer be refreshed stops the run before other processes may call it
/// stale: two refresh intervals without success end it with "lock lost" (exit class
/// retryable), and the lock file promised three intervals.
#[test]
fn a_lock_that_cannot_be_refreshed_stops_the_run() {
    use mover::repo::lock::{LockMode, LockOptions, while_locked};
    use std::time::{Duration, Instant};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let faulty = FaultyStore::new(Arc::new(object_store::memory::InMemory::new()));
        let storage = Storage::from_store(Arc::new(faulty.clone()), "", "faulty:".into());
        let init = mover::repo::InitOptions {
            kdf: mover::crypto::KdfParams {
                n: 1024,
                r: 8,
                p: 1,
            },
            ..mover::repo::InitOptions::default()
        };
        let repo = mover::repo::Repository::init(storage, PASSWORD, &init)
            .await
            .unwrap();
        let opts = LockOptions {
            refresh_interval: Duration::from_millis(300),
            ..LockOptions::default()
        };
        let work = async {
            let found = mover::repo::lock::list_locks(&repo).await?;
            let promise = found[0].lock.as_ref().unwrap().stale_after_seconds;
            // From now on every write fails, refreshes included.
            faulty.fail_puts_from(faulty.put_count() + 1);
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, mover::Error>(promise)
        };
        let started = Instant::now();
        let err = while_locked(&repo, LockMode::Shared, &opts, work)
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(err, mover::Error::LockLost { .. }), "{err}");
        assert_eq!(err.class(), ErrorClass::Retryable);
        assert!(err.to_string().contains("could not be refreshed"), "{err}");
        // The lock is still removed (deletes work; only writes fail).
        faulty.clear_put_faults();
        assert!(
            mover::repo::lock::list_locks(&repo)
                .await
                .unwrap()
                .is_empty()
        );
    });
}
