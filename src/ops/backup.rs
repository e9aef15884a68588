//! `backup`: walk the targets, read and chunk files in parallel, save blobs, build trees
//! bottom-up and write the snapshot last.
//!
//! Threads: one walker (directory listing, in sorted order), `read_threads` file readers whose
//! chunk hashing/compression/sealing runs on rayon, one tree builder that consumes the walk
//! events in order, and the [`BlobSaver`] packer and uploads. All queues are bounded.

use crate::chunker::fastcdc::{FastCdcParams, first_chunk_len};
use crate::error::{Error, Result};
use crate::format::gotime;
use crate::format::snapshot::{SnapshotFile, SnapshotSummary};
use crate::format::tree::{Node, NodeType, Tree};
use crate::format::{BlobId, BlobType, SnapshotId, TreeId};
use crate::fs::exclude::{ExcludeMatcher, device_of};
use crate::fs::meta::{NameCache, NodeOptions, node_from_metadata};
use crate::fs::walk::read_dir_sorted;
use crate::ops::pipeline::{BlobSaver, PipelineOptions, save_indexes};
use crate::progress::Progress;
use crate::repo::{Repository, lock};
use crossbeam_channel::{Receiver, Sender, bounded};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// How much of a file is read ahead of the chunker at once.
const READ_BUFFER_BYTES: usize = 16 * 1024 * 1024;
/// Walk events buffered ahead of the tree builder.
const EVENT_QUEUE: usize = 4096;

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub host: String,
    pub tags: Vec<String>,
    pub excludes: Vec<String>,
    pub one_file_system: bool,
    pub with_atime: bool,
    /// Concurrent file readers.
    pub read_threads: usize,
    pub pipeline: PipelineOptions,
    pub chunker: FastCdcParams,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            paths: Vec::new(),
            host: crate::ops::hostname(),
            tags: Vec::new(),
            excludes: Vec::new(),
            one_file_system: false,
            with_atime: false,
            read_threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .max(2),
            pipeline: PipelineOptions::default(),
            chunker: FastCdcParams::default(),
        }
    }
}

/// What a backup did, in restic's terms.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupSummary {
    pub snapshot_id: SnapshotId,
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
    pub total_duration_seconds: f64,
    /// Files or directories that could not be read (the snapshot is still written).
    pub errors: Vec<String>,
}

enum Event {
    EnterDir(Node),
    LeaveDir,
    Leaf(Node),
    File(Node, Receiver<Result<FileOutcome>>),
}

struct FileJob {
    path: PathBuf,
    result: Sender<Result<FileOutcome>>,
}

struct FileOutcome {
    content: Vec<BlobId>,
    size: u64,
}

/// Shared state of the walk and read stages.
struct Ctx {
    saver: Arc<BlobSaver>,
    names: NameCache,
    node_opts: NodeOptions,
    excludes: ExcludeMatcher,
    one_file_system: bool,
    chunker: FastCdcParams,
    progress: Arc<Progress>,
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

/// Absolute, lexically cleaned form of a target path.
fn absolute_clean(p: &Path) -> Result<PathBuf> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io("current directory", e))?
            .join(p)
    };
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    Ok(out)
}

/// The directory skeleton leading to the targets, as restic stores it: absolute targets
/// keep their full path below the root, relative ones hang directly off the root.
#[derive(Default)]
struct Skeleton {
    children: BTreeMap<Vec<u8>, Skeleton>,
    /// Set when this entry is itself a target (then its children are not used).
    target: Option<PathBuf>,
}

impl Skeleton {
    fn insert(&mut self, components: &[Vec<u8>], target: PathBuf) {
        if self.target.is_some() {
            return; // an ancestor is already backed up whole
        }
        match components.split_first() {
            None => {
                self.target = Some(target);
                self.children.clear();
            }
            Some((first, rest)) => self
                .children
                .entry(first.clone())
                .or_default()
                .insert(rest, target),
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
    let mut skeleton = Skeleton::default();
    let mut abs_paths = Vec::new();
    for p in &opts.paths {
        let abs = absolute_clean(p)?;
        std::fs::symlink_metadata(&abs)
            .map_err(|e| Error::io(format!("backup target {}", abs.display()), e))?;
        let comps: Vec<Vec<u8>> = if p.is_absolute() {
            abs.iter().skip(1).map(|c| c.as_bytes().to_vec()).collect()
        } else {
            abs.file_name()
                .map(|n| vec![n.as_bytes().to_vec()])
                .unwrap_or_default()
        };
        skeleton.insert(&comps, abs.clone());
        abs_paths.push(abs.to_string_lossy().into_owned());
    }
    abs_paths.sort();
    abs_paths.dedup();

    let excludes = ExcludeMatcher::new(&opts.excludes).map_err(Error::InvalidInput)?;
    let guard = lock::lock(repo, false).await?;
    let result = run(
        repo, opts, progress, skeleton, excludes, abs_paths, start_time,
    )
    .await;
    let released = guard.release().await;
    let mut summary = result?;
    released?;
    summary.total_duration_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
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
    let index = Arc::new(repo.load_index().await?);
    let (saver, handle) = BlobSaver::start(repo, index, &opts.pipeline);
    let ctx = Arc::new(Ctx {
        saver: Arc::clone(&saver),
        names: NameCache::default(),
        node_opts: NodeOptions {
            with_atime: opts.with_atime,
        },
        excludes,
        one_file_system: opts.one_file_system,
        chunker: opts.chunker,
        progress,
        errors: std::sync::Mutex::new(Vec::new()),
    });

    let (event_tx, event_rx) = bounded::<Event>(EVENT_QUEUE);
    let readers = opts.read_threads.max(1);
    let (job_tx, job_rx) = bounded::<FileJob>(readers * 2);

    let mut threads = Vec::new();
    for i in 0..readers {
        let ctx = Arc::clone(&ctx);
        let rx = job_rx.clone();
        let t = std::thread::Builder::new()
            .name(format!("mover-read-{i}"))
            .spawn(move || {
                let mut buf = Vec::new();
                for job in rx {
                    let res = read_file(&ctx, &job.path, &mut buf);
                    let _ = job.result.send(res);
                }
            })
            .map_err(|e| Error::Other(format!("cannot start reader thread: {e}")))?;
        threads.push(t);
    }
    drop(job_rx);
    let walk_ctx = Arc::clone(&ctx);
    let walker = std::thread::Builder::new()
        .name("mover-walk".into())
        .spawn(move || walk_skeleton(&walk_ctx, &skeleton, Path::new("/"), &event_tx, &job_tx))
        .map_err(|e| Error::Other(format!("cannot start walker thread: {e}")))?;

    let tree_ctx = Arc::clone(&ctx);
    let built = tokio::task::spawn_blocking(move || build_trees(&tree_ctx, event_rx))
        .await
        .map_err(|e| Error::Other(format!("tree builder failed: {e}")));
    // The walker and readers end once the tree builder has drained or dropped their queues.
    let walked = walker.join();
    for t in threads {
        let _ = t.join();
    }
    if walked.is_err() {
        saver
            .abort
            .abort(Error::Other("walker thread panicked".into()));
    }
    let built = match built.and_then(|r| r) {
        Ok(b) => Ok(b),
        Err(e) => {
            saver.abort.abort(Error::Other(e.to_string()));
            Err(e)
        }
    };
    let stats = (
        saver.stats.data_blobs.load(Ordering::Relaxed),
        saver.stats.tree_blobs.load(Ordering::Relaxed),
        saver.stats.data_added.load(Ordering::Relaxed),
        saver.stats.data_added_packed.load(Ordering::Relaxed),
    );
    let errors = ctx
        .errors
        .lock()
        .map(|mut e| std::mem::take(&mut *e))
        .unwrap_or_default();
    drop(ctx);
    let packs = handle.finish(saver).await;
    let (root, counts) = built?;
    let packs = packs?;
    // Order matters: packs are uploaded, then the index naming them, then the snapshot.
    save_indexes(repo, packs).await?;

    let end_time = gotime::now_local();
    let summary = SnapshotSummary {
        backup_start: start_time,
        backup_end: end_time,
        files_new: counts.files,
        files_changed: 0,
        files_unmodified: 0,
        dirs_new: counts.dirs,
        dirs_changed: 0,
        dirs_unmodified: 0,
        data_blobs: stats.0,
        tree_blobs: stats.1,
        data_added: stats.2,
        data_added_packed: stats.3,
        total_files_processed: counts.files,
        total_bytes_processed: counts.bytes,
    };
    let mut tags = opts.tags.clone();
    tags.retain(|t| !t.is_empty());
    let snap = SnapshotFile {
        time: start_time,
        parent: None,
        tree: root,
        paths: abs_paths,
        hostname: opts.host.clone(),
        username: crate::ops::current_username(),
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        excludes: opts.excludes.clone(),
        tags,
        original: None,
        program_version: format!("mover {}", env!("CARGO_PKG_VERSION")),
        summary: Some(summary.clone()),
    };
    let snapshot_id = repo.save_snapshot(&snap).await?;
    Ok(BackupSummary {
        snapshot_id,
        tree: root,
        files_new: summary.files_new,
        files_changed: 0,
        files_unmodified: 0,
        dirs_new: summary.dirs_new,
        dirs_changed: 0,
        dirs_unmodified: 0,
        data_blobs: summary.data_blobs,
        tree_blobs: summary.tree_blobs,
        data_added: summary.data_added,
        data_added_packed: summary.data_added_packed,
        total_files_processed: counts.files,
        total_bytes_processed: counts.bytes,
        total_duration_seconds: 0.0,
        errors,
    })
}

#[derive(Default)]
struct Counts {
    files: u64,
    dirs: u64,
    bytes: u64,
}

fn send_event(tx: &Sender<Event>, ev: Event) -> bool {
    tx.send(ev).is_ok()
}

/// Emit the intermediate directories of the skeleton and walk each target.
fn walk_skeleton(
    ctx: &Ctx,
    sk: &Skeleton,
    path: &Path,
    events: &Sender<Event>,
    jobs: &Sender<FileJob>,
) {
    for (name, child) in &sk.children {
        let child_path = path.join(std::ffi::OsStr::from_bytes(name));
        if let Some(target) = &child.target {
            // Relative targets keep their base name; the real path may differ.
            let md = match std::fs::symlink_metadata(target) {
                Ok(md) => md,
                Err(e) => {
                    ctx.warn(format!("{}: {e}", target.display()));
                    continue;
                }
            };
            let dev = device_of(&md);
            if !walk_entry(ctx, name.clone(), target, &md, dev, events, jobs) {
                return;
            }
            continue;
        }
        let md = match std::fs::symlink_metadata(&child_path) {
            Ok(md) => md,
            Err(e) => {
                ctx.warn(format!("{}: {e}", child_path.display()));
                continue;
            }
        };
        let node =
            match node_from_metadata(name.clone(), &child_path, &md, &ctx.node_opts, &ctx.names) {
                Ok(n) => n,
                Err(e) => {
                    ctx.warn(format!("{}: {e}", child_path.display()));
                    continue;
                }
            };
        if !send_event(events, Event::EnterDir(node)) {
            return;
        }
        walk_skeleton(ctx, child, &child_path, events, jobs);
        if !send_event(events, Event::LeaveDir) {
            return;
        }
    }
    // A target of "/" itself: its entries become the root tree's entries.
    if let Some(target) = &sk.target {
        if path == Path::new("/") {
            if let Ok(md) = std::fs::symlink_metadata(target) {
                walk_dir_entries(ctx, target, device_of(&md), events, jobs);
            }
        }
    }
}

/// Walk one entry; returns false when the pipeline has stopped.
fn walk_entry(
    ctx: &Ctx,
    name: Vec<u8>,
    path: &Path,
    md: &std::fs::Metadata,
    root_dev: u64,
    events: &Sender<Event>,
    jobs: &Sender<FileJob>,
) -> bool {
    if ctx.saver.abort.is_aborted() {
        return false;
    }
    if ctx.excludes.matches(path) {
        return true;
    }
    let node = match node_from_metadata(name, path, md, &ctx.node_opts, &ctx.names) {
        Ok(n) => n,
        Err(e) => {
            ctx.warn(format!("{}: {e}", path.display()));
            return true;
        }
    };
    match node.node_type {
        NodeType::Dir => {
            if !send_event(events, Event::EnterDir(node)) {
                return false;
            }
            // With --one-file-system the mount point itself is kept, empty.
            if !ctx.one_file_system || device_of(md) == root_dev {
                walk_dir_entries(ctx, path, root_dev, events, jobs);
            }
            send_event(events, Event::LeaveDir)
        }
        NodeType::File => {
            let (tx, rx) = bounded(1);
            if jobs
                .send(FileJob {
                    path: path.to_path_buf(),
                    result: tx,
                })
                .is_err()
            {
                return false;
            }
            send_event(events, Event::File(node, rx))
        }
        _ => send_event(events, Event::Leaf(node)),
    }
}

fn walk_dir_entries(
    ctx: &Ctx,
    dir: &Path,
    root_dev: u64,
    events: &Sender<Event>,
    jobs: &Sender<FileJob>,
) {
    let entries = match read_dir_sorted(dir) {
        Ok(e) => e,
        Err(e) => {
            ctx.warn(format!("{}: {e}", dir.display()));
            return;
        }
    };
    for entry in entries {
        if !walk_entry(
            ctx,
            entry.name,
            &entry.path,
            &entry.metadata,
            root_dev,
            events,
            jobs,
        ) {
            return;
        }
    }
}

fn open_for_backup(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NOATIME keeps the backup from touching access times; it is refused for files we do
    // not own unless we are root, so fall back to a plain open.
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(path)
    {
        Ok(f) => Ok(f),
        Err(_) => std::fs::File::open(path),
    }
}

/// Read, chunk and save one file. Chunk hashing and sealing run on rayon.
fn read_file(ctx: &Ctx, path: &Path, buf: &mut Vec<u8>) -> Result<FileOutcome> {
    let file = open_for_backup(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    let window = READ_BUFFER_BYTES + ctx.chunker.max_size;
    // `buf` is the reader thread's own buffer, reused across files: filling it through
    // `Take::read_to_end` never zero-fills the whole window for a small file.
    buf.clear();
    let mut reader = file;
    let mut content = Vec::new();
    let mut size = 0u64;
    let mut eof = false;
    while !eof {
        let want = window.saturating_sub(buf.len());
        let n = loop {
            match (&mut reader).take(want as u64).read_to_end(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(path.display().to_string(), e)),
            }
        };
        if n < want {
            eof = true;
        }
        size += n as u64;
        ctx.progress.add_bytes(n as u64);
        // Cut every chunk whose end is already determined.
        let mut ranges = Vec::new();
        let mut pos = 0usize;
        while pos < buf.len() {
            match first_chunk_len(&buf[pos..], eof, &ctx.chunker) {
                Some(len) if len > 0 => {
                    ranges.push(pos..pos + len);
                    pos += len;
                }
                _ => break,
            }
        }
        let ids: Vec<Result<(BlobId, bool)>> = ranges
            .par_iter()
            .map(|r| ctx.saver.save(BlobType::Data, &buf[r.clone()]))
            .collect();
        for (range, r) in ranges.iter().zip(ids) {
            let (id, new) = r?;
            if new {
                ctx.progress.add_added(range.len() as u64);
            }
            content.push(id);
        }
        buf.drain(..pos);
    }
    Ok(FileOutcome { content, size })
}

/// Consume walk events in order and save one tree blob per directory, bottom-up.
fn build_trees(ctx: &Ctx, events: Receiver<Event>) -> Result<(TreeId, Counts)> {
    let mut counts = Counts::default();
    // Stack of open directories: the node (None for the root) and its entries so far.
    let mut stack: Vec<(Option<Node>, Vec<Node>)> = vec![(None, Vec::new())];
    for ev in events {
        match ev {
            Event::EnterDir(node) => stack.push((Some(node), Vec::new())),
            Event::Leaf(node) => push_node(&mut stack, node)?,
            Event::File(mut node, rx) => {
                let outcome = rx
                    .recv()
                    .map_err(|_| Error::Other("file reader stopped".into()))?;
                match outcome {
                    Ok(out) => {
                        node.size = out.size;
                        node.content = Some(out.content);
                        counts.files += 1;
                        counts.bytes += out.size;
                        ctx.progress.add_file(0);
                        push_node(&mut stack, node)?;
                    }
                    Err(e) if ctx.saver.abort.is_aborted() => return Err(e),
                    Err(e) => ctx.warn(format!("skipping file: {}", e.chain_string())),
                }
            }
            Event::LeaveDir => {
                let (node, nodes) = stack
                    .pop()
                    .ok_or_else(|| Error::Other("walk events out of order".into()))?;
                let mut node =
                    node.ok_or_else(|| Error::Other("walk events out of order".into()))?;
                node.subtree = Some(save_tree(ctx, nodes)?);
                counts.dirs += 1;
                ctx.progress.add_dir();
                push_node(&mut stack, node)?;
            }
        }
    }
    if let Some(e) = ctx.saver.abort.take_error() {
        return Err(e);
    }
    let (_, root_nodes) = match (stack.pop(), stack.is_empty()) {
        (Some(root), true) => root,
        _ => return Err(Error::Other("walk ended inside a directory".into())),
    };
    Ok((save_tree(ctx, root_nodes)?, counts))
}

fn push_node(stack: &mut [(Option<Node>, Vec<Node>)], node: Node) -> Result<()> {
    match stack.last_mut() {
        Some((_, nodes)) => {
            nodes.push(node);
            Ok(())
        }
        None => Err(Error::Other("walk events out of order".into())),
    }
}

fn save_tree(ctx: &Ctx, nodes: Vec<Node>) -> Result<TreeId> {
    let mut tree = Tree { nodes };
    tree.sort();
    // Two targets with the same base name would collide; restic appends -1, -2, ...
    dedup_names(&mut tree.nodes);
    let bytes = tree.encode();
    let (id, _) = ctx.saver.save(BlobType::Tree, &bytes)?;
    Ok(TreeId(id.0))
}

fn dedup_names(nodes: &mut [Node]) {
    let mut i = 1;
    while i < nodes.len() {
        if nodes[i].name == nodes[i - 1].name {
            let mut n = 1;
            loop {
                let mut cand = nodes[i].name.clone();
                cand.extend_from_slice(format!("-{n}").as_bytes());
                if !nodes.iter().any(|x| x.name == cand) {
                    nodes[i].name = cand;
                    break;
                }
                n += 1;
            }
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            i = 1;
            continue;
        }
        i += 1;
    }
}
