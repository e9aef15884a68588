//! `backup`: walk the targets, read and chunk changed files in parallel, save blobs, build
//! trees bottom-up and write the snapshot last.
//!
//! Threads: one walker (directory listing in sorted order, change detection against the
//! parent snapshot), `read_threads` file readers whose chunk hashing/compression/sealing runs
//! on rayon, one tree builder that consumes the walk events in order, and the [`BlobSaver`]
//! packer and uploads. All queues are bounded.

mod read;
pub mod request;
mod skeleton;
mod tree;
pub use request::{BackupPlan, BackupRequest, split_tags};
mod walk;

use crate::chunker::Chunker;
use crate::chunker::fastcdc::FastCdcParams;
use crate::chunker::parallel::CutFinder;
use crate::chunker::polynomial::Polynomial;
use crate::chunker::rabin::RabinChunker;
use crate::error::{Error, Result};
use crate::format::gotime;
use crate::format::snapshot::{SnapshotFile, SnapshotSummary};
use crate::format::tree::Node;
use crate::format::{BlobId, SnapshotId, TreeId};
use crate::fs::exclude::ExcludeMatcher;
use crate::fs::meta::{NameCache, NodeOptions};
use crate::ops::pipeline::{BlobSaver, PipelineOptions, save_indexes};
use crate::progress::Progress;
use crate::repo::index::MasterIndex;
use crate::repo::lock::{self, LockMode, LockOptions};
use crate::repo::{Repository, SnapshotFilter};
use crossbeam_channel::{Receiver, Sender, bounded};
use skeleton::Skeleton;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tree::Counts;

/// Least number of concurrent file readers.
pub const DEFAULT_READ_THREADS: usize = 8;

/// Walk events buffered ahead of the tree builder.
const EVENT_QUEUE: usize = 4096;

/// Which snapshot a backup compares against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ParentChoice {
    /// The latest snapshot with the same host and paths.
    #[default]
    Latest,
    /// This snapshot (id prefix or "latest").
    Snapshot(String),
    /// None: read every file (`--force`).
    None,
}

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub host: String,
    pub tags: Vec<String>,
    pub excludes: Vec<String>,
    pub one_file_system: bool,
    pub with_atime: bool,
    pub parent: ParentChoice,
    /// Also require inode and ctime to match before skipping a file (restic's rule).
    pub strict_change_detection: bool,
    /// Concurrent file readers: a cold disk answers many requests at once, so this is
    /// higher than the CPU count; each holds a small window.
    pub read_threads: usize,
    /// Read files with O_DIRECT, bypassing the page cache (see `fs::direct`).
    pub direct_io: bool,
    /// Threads for chunking, hashing, compressing and sealing (default: one per CPU).
    pub cpu_threads: Option<usize>,
    pub pipeline: PipelineOptions,
    /// Overrides the repository's chunker for this run.
    pub chunker: Option<ChunkerKind>,
    /// Retrying a held lock, and cancelling the run.
    pub lock: LockOptions,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            paths: Vec::new(),
            host: crate::host::hostname(),
            tags: Vec::new(),
            excludes: Vec::new(),
            one_file_system: false,
            with_atime: false,
            parent: ParentChoice::Latest,
            strict_change_detection: false,
            read_threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .max(DEFAULT_READ_THREADS),
            direct_io: true,
            cpu_threads: None,
            pipeline: PipelineOptions::default(),
            chunker: None,
            lock: LockOptions::default(),
        }
    }
}

/// What a backup did, in restic's terms (plus the bytes actually read from files).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupSummary {
    pub snapshot_id: SnapshotId,
    pub parent: Option<SnapshotId>,
    pub tree: TreeId,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs_new: u64,
    pub dirs_changed: u64,
    pub dirs_unmodified: u64,
    pub data_blobs: u64,
    pub tree_blobs: u64,
    pub data_added: u64,
    pub data_added_packed: u64,
    pub total_files_processed: u64,
    pub total_bytes_processed: u64,
    /// Bytes read from files (unchanged files are not read).
    pub bytes_read: u64,
    pub total_duration_seconds: f64,
    /// Files or directories that could not be read (the snapshot is still written).
    pub errors: Vec<String>,
}

enum Event {
    EnterDir {
        node: Node,
        /// The parent snapshot had a directory of this name.
        existed: bool,
        /// Its own metadata is unchanged since the parent snapshot.
        meta_unchanged: bool,
        /// The parent snapshot's tree of this directory and its entry count.
        parent_tree: Option<(TreeId, usize)>,
    },
    LeaveDir,
    /// Not a file or directory.
    Leaf {
        node: Node,
        unchanged: bool,
    },
    /// A file taken over from the parent snapshot without reading it.
    Unmodified(Node),
    /// A file being read; the result arrives on `result`.
    File {
        node: Node,
        result: Receiver<Result<FileOutcome>>,
        existed: bool,
    },
    /// Another name of a multiply linked file whose first name came earlier as a
    /// [`Event::File`]: its content is that file's, unless the first read failed or the
    /// file changed in between, when it is read at `path`.
    LinkedFile {
        node: Node,
        path: PathBuf,
        existed: bool,
    },
}

/// A file's identity on its filesystem: hard links share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct LinkKey {
    device: u64,
    inode: u64,
}

impl LinkKey {
    fn of(node: &Node) -> LinkKey {
        LinkKey {
            device: node.device_id,
            inode: node.inode,
        }
    }
}

struct FileJob {
    path: PathBuf,
    result: Sender<Result<FileOutcome>>,
}

struct FileOutcome {
    content: Vec<BlobId>,
    size: u64,
}

/// Which content-defined chunker cuts files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkerKind {
    /// mover's default for repositories it creates.
    FastCdc,
    /// restic's Rabin chunker with the repository's polynomial: deduplicates against data
    /// restic wrote.
    Rabin,
}

impl std::str::FromStr for ChunkerKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "fastcdc" => Ok(ChunkerKind::FastCdc),
            "rabin" => Ok(ChunkerKind::Rabin),
            other => Err(format!("unknown chunker {other:?}: use rabin or fastcdc")),
        }
    }
}

/// The chunker for this repository: the override if given, else what the config records
/// (`mover_chunker`), else restic's Rabin chunker (a repository restic created).
pub fn repository_chunker(repo: &Repository, choice: Option<ChunkerKind>) -> Result<Chunker> {
    let kind = match choice {
        Some(k) => k,
        None => match repo.config().mover_chunker.as_deref() {
            None => ChunkerKind::Rabin,
            Some(name) => name.parse().map_err(|e| {
                Error::corrupt("repository config", format!("field mover_chunker: {e}"))
            })?,
        },
    };
    Ok(match kind {
        ChunkerKind::FastCdc => Chunker::FastCdc(FastCdcParams::default()),
        ChunkerKind::Rabin => {
            let pol = Polynomial(repo.config().chunker_polynomial);
            Chunker::Rabin(RabinChunker::new(pol).map_err(|e| {
                Error::corrupt("repository config", format!("chunker polynomial: {e}"))
            })?)
        }
    })
}

/// Shared state of the walk, read and tree stages.
struct Ctx {
    repo: Repository,
    index: Arc<MasterIndex>,
    runtime: tokio::runtime::Handle,
    saver: Arc<BlobSaver>,
    names: NameCache,
    node_opts: NodeOptions,
    excludes: ExcludeMatcher,
    one_file_system: bool,
    strict_change_detection: bool,
    direct_io: bool,
    chunker: Chunker,
    /// The CPU stages run here.
    pool: rayon::ThreadPool,
    progress: Arc<Progress>,
    bytes_read: AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
}

impl Ctx {
    fn warn(&self, msg: String) {
        tracing::warn!("{msg}");
        self.progress.add_error();
        if let Ok(mut e) = self.errors.lock() {
            e.push(msg);
        }
    }
}

/// Run a backup of `opts.paths` into `repo`.
pub async fn backup(
    repo: &Repository,
    opts: &BackupOptions,
    progress: Arc<Progress>,
) -> Result<BackupSummary> {
    if opts.paths.is_empty() {
        return Err(Error::InvalidInput("backup needs at least one path".into()));
    }
    let started = std::time::Instant::now();
    let start_time = gotime::now_local();
    let (skeleton, abs_paths) = Skeleton::build(&opts.paths)?;
    let excludes = ExcludeMatcher::new(&opts.excludes).map_err(Error::InvalidInput)?;
    let work = run(
        repo, opts, progress, skeleton, excludes, abs_paths, start_time,
    );
    let mut summary =
        lock::while_locked_loading_index(repo, LockMode::Shared, &opts.lock, work).await?;
    summary.total_duration_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The parent snapshot: the latest with the same host and paths, or the one asked for.
async fn find_parent(
    repo: &Repository,
    opts: &BackupOptions,
    abs_paths: &[String],
) -> Result<Option<(SnapshotId, SnapshotFile)>> {
    match &opts.parent {
        ParentChoice::None => Ok(None),
        ParentChoice::Snapshot(spec) => repo
            .find_snapshot(spec, &SnapshotFilter::default())
            .await
            .map(Some),
        ParentChoice::Latest => {
            let snaps = repo.list_snapshots().await?;
            Ok(snaps.into_iter().rev().find(|(_, s)| {
                let mut paths = s.paths.clone();
                paths.sort();
                s.hostname == opts.host && paths == abs_paths
            }))
        }
    }
}

async fn run(
    repo: &Repository,
    opts: &BackupOptions,
    progress: Arc<Progress>,
    skeleton: Skeleton,
    excludes: ExcludeMatcher,
    abs_paths: Vec<String>,
    start_time: chrono::DateTime<chrono::FixedOffset>,
) -> Result<BackupSummary> {
    let chunker = repository_chunker(repo, opts.chunker)?;
    let mut pool = rayon::ThreadPoolBuilder::new().thread_name(|i| format!("mover-cpu-{i}"));
    if let Some(n) = opts.cpu_threads {
        pool = pool.num_threads(n.max(1));
    }
    let pool = pool
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the CPU thread pool: {e}")))?;
    let index = Arc::new(repo.load_index().await?);
    let parent = find_parent(repo, opts, &abs_paths).await?;
    let parent_root = match &parent {
        Some((id, snap)) => match repo.load_tree(&index, &snap.tree).await {
            Ok(t) => Some((snap.tree, t)),
            Err(e) => {
                tracing::warn!(parent = %id, error = %e, "cannot load the parent snapshot's tree; reading every file");
                None
            }
        },
        None => None,
    };
    let (saver, handle) = BlobSaver::start_reporting(
        repo,
        Arc::clone(&index),
        &opts.pipeline,
        Some(Arc::clone(&progress)),
    );
    let ctx = Arc::new(Ctx {
        repo: repo.clone(),
        index,
        runtime: tokio::runtime::Handle::current(),
        saver: Arc::clone(&saver),
        names: NameCache::default(),
        node_opts: NodeOptions {
            with_atime: opts.with_atime,
        },
        excludes,
        one_file_system: opts.one_file_system,
        strict_change_detection: opts.strict_change_detection,
        direct_io: opts.direct_io,
        chunker,
        pool,
        progress,
        bytes_read: AtomicU64::new(0),
        errors: std::sync::Mutex::new(Vec::new()),
    });

    let (event_tx, event_rx) = bounded::<Event>(EVENT_QUEUE);
    let readers = opts.read_threads.max(1);
    let (job_tx, job_rx) = bounded::<FileJob>(readers * 2);

    let cpu_threads = ctx.pool.current_num_threads();
    let large = Arc::new(read::LargeWindows::new(
        1 + cpu_threads / 8,
        cpu_threads,
        ctx.chunker.max_size(),
    ));
    let mut threads = Vec::new();
    for i in 0..readers {
        let ctx = Arc::clone(&ctx);
        let large = Arc::clone(&large);
        let rx = job_rx.clone();
        let t = std::thread::Builder::new()
            .name(format!("mover-read-{i}"))
            .spawn(move || {
                let mut small = crate::fs::direct::ReadWindow::new(read::SMALL_WINDOW_BYTES);
                for job in rx {
                    let res = read::read_file(&ctx, &large, &job.path, &mut small);
                    let _ = job.result.send(res);
                }
            })
            .map_err(|e| Error::io("starting the reader thread", e))?;
        threads.push(t);
    }
    drop(job_rx);
    let walk_ctx = Arc::clone(&ctx);
    let root_parent = parent_root.as_ref().map(|(id, t)| (*id, t.nodes.len()));
    let walker = std::thread::Builder::new()
        .name("mover-walk".into())
        .spawn(move || {
            let out = walk::Outputs::new(&event_tx, &job_tx);
            let parent_tree = parent_root.as_ref().map(|(_, t)| t);
            walk::walk_skeleton(&walk_ctx, &skeleton, Path::new("/"), parent_tree, &out);
        })
        .map_err(|e| Error::io("starting the walker thread", e))?;

    let tree_ctx = Arc::clone(&ctx);
    let tree_large = Arc::clone(&large);
    let built = tokio::task::spawn_blocking(move || {
        tree::build_trees(&tree_ctx, &tree_large, event_rx, root_parent)
    })
    .await
    .map_err(|e| Error::task("the tree builder", e));
    // The walker and readers end once the tree builder has drained or dropped their queues.
    let walked = tokio::task::spawn_blocking(move || {
        let walked = walker.join();
        for t in threads {
            let _ = t.join();
        }
        walked
    })
    .await
    .map_err(|e| Error::task("joining the walker", e))?;
    if walked.is_err() {
        saver
            .abort
            .abort(Error::Internal("the walker thread panicked".into()));
    }
    let built = built.and_then(|r| r);
    let errors = ctx
        .errors
        .lock()
        .map(|mut e| std::mem::take(&mut *e))
        .unwrap_or_default();
    let bytes_read = ctx.bytes_read.load(Ordering::Relaxed);
    drop(ctx);
    let stats = (
        saver.stats.data_blobs.load(Ordering::Relaxed),
        saver.stats.tree_blobs.load(Ordering::Relaxed),
        saver.stats.data_added.load(Ordering::Relaxed),
        saver.stats.data_added_packed.load(Ordering::Relaxed),
    );
    let ((root, counts), packs) = handle.finish_after(saver, built).await?;
    // Order matters: packs are uploaded, then the index naming them, then the snapshot.
    save_indexes(repo, packs).await?;
    save_backup_snapshot(
        repo,
        &opts.host,
        &opts.tags,
        start_time,
        FinishedBackup {
            root,
            parent: parent.as_ref().map(|(id, _)| *id),
            paths: abs_paths,
            excludes: opts.excludes.clone(),
            summary: snapshot_summary(start_time, &counts, stats),
            bytes_read,
            errors,
        },
    )
    .await
}

/// What a finished backup hands to [`save_backup_snapshot`].
pub(crate) struct FinishedBackup {
    pub root: TreeId,
    pub parent: Option<SnapshotId>,
    pub paths: Vec<String>,
    pub excludes: Vec<String>,
    pub summary: SnapshotSummary,
    pub bytes_read: u64,
    pub errors: Vec<String>,
}

/// Write the snapshot (last, after packs and index) and report the backup's summary.
pub(crate) async fn save_backup_snapshot(
    repo: &Repository,
    host: &str,
    tags: &[String],
    start_time: chrono::DateTime<chrono::FixedOffset>,
    done: FinishedBackup,
) -> Result<BackupSummary> {
    let s = done.summary;
    let snap = SnapshotFile {
        time: start_time,
        parent: done.parent,
        tree: done.root,
        paths: done.paths,
        hostname: host.to_string(),
        username: crate::host::current_username(),
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        excludes: done.excludes,
        tags: tags.iter().filter(|t| !t.is_empty()).cloned().collect(),
        original: None,
        program_version: format!("mover {}", env!("CARGO_PKG_VERSION")),
        summary: Some(s.clone()),
    };
    let snapshot_id = repo.save_snapshot(&snap).await?;
    Ok(BackupSummary {
        snapshot_id,
        parent: done.parent,
        tree: done.root,
        files_new: s.files_new,
        files_changed: s.files_changed,
        files_unmodified: s.files_unmodified,
        dirs_new: s.dirs_new,
        dirs_changed: s.dirs_changed,
        dirs_unmodified: s.dirs_unmodified,
        data_blobs: s.data_blobs,
        tree_blobs: s.tree_blobs,
        data_added: s.data_added,
        data_added_packed: s.data_added_packed,
        total_files_processed: s.total_files_processed,
        total_bytes_processed: s.total_bytes_processed,
        bytes_read: done.bytes_read,
        total_duration_seconds: 0.0,
        errors: done.errors,
    })
}

fn snapshot_summary(
    start_time: chrono::DateTime<chrono::FixedOffset>,
    counts: &Counts,
    (data_blobs, tree_blobs, data_added, data_added_packed): (u64, u64, u64, u64),
) -> SnapshotSummary {
    SnapshotSummary {
        backup_start: start_time,
        backup_end: gotime::now_local(),
        files_new: counts.files_new,
        files_changed: counts.files_changed,
        files_unmodified: counts.files_unmodified,
        dirs_new: counts.dirs_new,
        dirs_changed: counts.dirs_changed,
        dirs_unmodified: counts.dirs_unmodified,
        data_blobs,
        tree_blobs,
        data_added,
        data_added_packed,
        total_files_processed: counts.files(),
        total_bytes_processed: counts.bytes,
    }
}
