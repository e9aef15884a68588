//! The parallel paths give the same snapshot as a single-threaded run, with tiny queues and
//! with many threads, and never deadlock.

use crate::support::tree_gen::{GenOptions, generate_tree};
use crate::support::*;
use mover::ops::backup::{BackupOptions, ChunkerKind, ParentChoice, backup};
use mover::progress::Progress;
use mover::repo::{InitOptions, Repository};
use mover::storage::{Storage, StorageOptions};
use std::sync::Arc;

/// The tree id of directory `path` inside the snapshot tree `root`. Compared instead of the
/// root tree: ancestors such as /tmp change while other tests run.
async fn subtree_of(
    repo: &Repository,
    root: mover::format::TreeId,
    path: &std::path::Path,
) -> mover::format::TreeId {
    use std::os::unix::ffi::OsStrExt;
    let index = repo.load_index().await.unwrap();
    let mut id = root;
    for comp in path.iter().skip(1) {
        let tree = repo.load_tree(&index, &id).await.unwrap();
        let node = tree.find(comp.as_bytes()).expect("path in snapshot");
        id = node.subtree.expect("directory");
    }
    id
}

/// A new repository in the local directory `dir`.
async fn init_local_repo(dir: &std::path::Path) -> Repository {
    let storage = Storage::open(dir.to_str().unwrap(), &StorageOptions::default()).unwrap();
    Repository::init(storage, PASSWORD, &InitOptions::default())
        .await
        .unwrap()
}

fn opts(src: &std::path::Path, threads: usize, chunker: ChunkerKind) -> BackupOptions {
    let mut o = BackupOptions {
        paths: vec![src.to_path_buf()],
        read_threads: threads,
        cpu_threads: Some(threads),
        parent: ParentChoice::None,
        chunker: Some(chunker),
        ..Default::default()
    };
    o.pipeline.channel_capacity = threads;
    o.pipeline.upload_concurrency = threads;
    o.pipeline.pack_size_bytes = 4 * 1024 * 1024;
    o
}

#[test]
fn one_thread_and_many_threads_store_the_same_snapshot() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    generate_tree(
        &src,
        &GenOptions {
            seed: 91,
            small_files: 300,
            // Large enough to span several read windows and parallel segments.
            large_file_bytes: 40 * 1024 * 1024 + 333,
            ..GenOptions::default()
        },
    )
    .unwrap();
    let repo_dir = tmp.path().join("repo");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let repo = init_local_repo(&repo_dir).await;
        for chunker in [ChunkerKind::FastCdc, ChunkerKind::Rabin] {
            let single = backup(
                &repo,
                &opts(&src, 1, chunker),
                Arc::new(Progress::default()),
            )
            .await
            .unwrap();
            // Reads through the page cache must give the same snapshot as direct reads.
            for (threads, direct_io) in [(2, true), (8, true), (8, false)] {
                let many = backup(
                    &repo,
                    &BackupOptions {
                        direct_io,
                        ..opts(&src, threads, chunker)
                    },
                    Arc::new(Progress::default()),
                )
                .await
                .unwrap();
                assert_eq!(
                    subtree_of(&repo, many.tree, &src).await,
                    subtree_of(&repo, single.tree, &src).await,
                    "{chunker:?} with {threads} threads, direct I/O {direct_io}"
                );
                assert_eq!(
                    many.data_blobs, 0,
                    "{chunker:?}: same cut points, nothing new"
                );
            }
        }
    });
    ok(restic()
        .arg("-r")
        .arg(&repo_dir)
        .args(["check", "--read-data"]));
}

#[test]
fn hard_linked_files_are_read_once_and_restore_whole() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    // A file larger than a reader's own window, one that fits it, and a lone file.
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("big"), &big).unwrap();
    std::fs::hard_link(src.join("big"), src.join("big-2")).unwrap();
    std::fs::hard_link(src.join("big"), src.join("sub/big-3")).unwrap();
    std::fs::write(src.join("small"), b"small linked file").unwrap();
    std::fs::hard_link(src.join("small"), src.join("sub/small-2")).unwrap();
    std::fs::write(src.join("lone"), b"no other name").unwrap();

    let repo_dir = tmp.path().join("repo");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let repo = init_local_repo(&repo_dir).await;
        let summary = backup(
            &repo,
            &opts(&src, 4, ChunkerKind::FastCdc),
            Arc::new(Progress::default()),
        )
        .await
        .unwrap();
        assert_eq!(summary.files_new, 6);
        assert_eq!(
            summary.bytes_read,
            (big.len() + "small linked file".len() + "no other name".len()) as u64,
            "every linked file is read once"
        );
        let index = repo.load_index().await.unwrap();
        let top = subtree_of(&repo, summary.tree, &src).await;
        let top = repo.load_tree(&index, &top).await.unwrap();
        let sub = top.find(b"sub").and_then(|n| n.subtree).unwrap();
        let sub = repo.load_tree(&index, &sub).await.unwrap();
        let node = |t: &mover::format::tree::Tree, name: &str| {
            t.find(name.as_bytes())
                .unwrap_or_else(|| panic!("{name}"))
                .clone()
        };
        for (first, other) in [
            (node(&top, "big"), node(&top, "big-2")),
            (node(&top, "big"), node(&sub, "big-3")),
            (node(&top, "small"), node(&sub, "small-2")),
        ] {
            assert_eq!(other.size, first.size, "{:?}", other.name.as_slice());
            assert_eq!(other.content, first.content);
            assert!(first.content.as_ref().is_some_and(|c| !c.is_empty()));
        }
        assert_eq!(node(&top, "big").size, big.len() as u64);
        assert!(std::ffi::OsStr::from_bytes(&node(&sub, "big-3").name) == "big-3");
    });
    ok(restic()
        .arg("-r")
        .arg(&repo_dir)
        .args(["check", "--read-data"]));
    let target = tmp.path().join("restored");
    ok(restic()
        .arg("-r")
        .arg(&repo_dir)
        .args(["restore", "latest", "--target"])
        .arg(&target));
    let restored = restored_path(&target, &src);
    for name in ["big", "big-2", "sub/big-3"] {
        assert!(std::fs::read(restored.join(name)).unwrap() == big, "{name}");
    }
    assert_eq!(
        std::fs::read(restored.join("sub/small-2")).unwrap(),
        b"small linked file"
    );
}
