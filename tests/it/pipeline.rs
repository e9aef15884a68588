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
        let storage =
            Storage::open(repo_dir.to_str().unwrap(), &StorageOptions::default()).unwrap();
        let repo = Repository::init(storage, PASSWORD, &InitOptions::default())
            .await
            .unwrap();
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
