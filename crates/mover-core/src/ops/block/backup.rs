//! Backing up one volume stream (block device, image file or stdin) as a single file node.
//!
//! Threads: one reader (sequential reads of data ranges; holes of sparse images are never
//! read and arrive as zero runs), the chunker on the calling blocking thread whose chunking,
//! hashing, compression and sealing run on rayon, and the [`BlobSaver`] packer and uploads.
//! All-zero chunks get their id from [`ZeroIds`] instead of being hashed, and are sealed
//! at most once per length. All queues are bounded.

use super::ZeroIds;
use super::stream::{Chunk, StreamChunker};
use crate::chunker::parallel::CutFinder;
use crate::error::{Error, Result};
use crate::format::snapshot::{SnapshotFile, SnapshotSummary};
use crate::format::tree::{Node, NodeType, Tree};
use crate::format::{BlobId, BlobType, SnapshotId, TreeId, gotime};
use crate::fs::block::{VolumeKind, data_ranges, is_zero, volume_kind, volume_size, zero_runs};
use crate::ops::backup::{
    BackupSummary, ChunkerKind, FinishedBackup, ParentChoice, repository_chunker,
    save_backup_snapshot,
};
use crate::ops::dump::{Found, lookup};
use crate::ops::pipeline::{BlobSaver, PipelineOptions, save_indexes};
use crate::progress::Progress;
use crate::repo::lock::{self, LockMode, LockOptions};
use crate::repo::{Repository, SnapshotFilter};
use chrono::{DateTime, FixedOffset};
use crossbeam_channel::{Receiver, Sender, bounded};
use rayon::prelude::*;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Bytes per read from the volume.
const PIECE_BYTES: usize = 8 * 1024 * 1024;
/// Reads queued ahead of the chunker.
const PIECE_QUEUE: usize = 3;
/// Zero runs in read data are found on this granularity ...
const ZERO_BLOCK_BYTES: usize = 64 * 1024;
/// ... and handled as zero runs from this length on (shorter ones are just data).
const ZERO_RUN_MIN_BYTES: usize = 256 * 1024;
/// Mode of a `--stdin` file node (0644) and of its parent directories (0755 | ModeDir).
const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0x8000_0000 | 0o755;

/// Where the volume's bytes come from.
pub enum VolumeSource {
    /// A block device or (image) file, read by offset; holes of sparse files are skipped.
    Path(PathBuf),
    /// Standard input, read to its end.
    Stdin,
    /// Any stream, read to its end.
    Reader(Box<dyn Read + Send>),
}

/// How a volume is stored.
#[derive(Debug, Clone)]
pub struct VolumeBackupOptions {
    /// The file name inside the snapshot (restic's `--stdin-filename`); for a path, its
    /// absolute path when `None`; for a stream, `stdin` when `None`.
    pub name: Option<String>,
    pub host: String,
    pub tags: Vec<String>,
    pub parent: ParentChoice,
    pub pipeline: PipelineOptions,
    pub chunker: Option<ChunkerKind>,
    /// Retrying a held lock, and cancelling the run.
    pub lock: LockOptions,
    /// Changed block tracking: the byte ranges of a device or image that differ from the
    /// parent snapshot's volume. Only those (and what chunking needs around them) are read;
    /// every other chunk is the parent's. Needs a parent and a `VolumeSource::Path`.
    pub changed_ranges: Option<Vec<std::ops::Range<u64>>>,
}

impl Default for VolumeBackupOptions {
    fn default() -> Self {
        VolumeBackupOptions {
            name: None,
            host: crate::host::hostname(),
            tags: Vec::new(),
            parent: ParentChoice::Latest,
            pipeline: PipelineOptions::default(),
            chunker: None,
            lock: LockOptions::default(),
            changed_ranges: None,
        }
    }
}

enum Piece {
    Data(Vec<u8>),
    Zeros(u64),
}

/// Back up one volume stream into `repo` as a single file node.
pub async fn backup_volume(
    repo: &Repository,
    opts: &VolumeBackupOptions,
    source: VolumeSource,
    progress: Arc<Progress>,
) -> Result<BackupSummary> {
    let started = std::time::Instant::now();
    let start_time = gotime::now_local();
    let name = match (&opts.name, &source) {
        (Some(n), _) => n.clone(),
        (None, VolumeSource::Path(p)) => std::path::absolute(p)
            .map_err(|e| Error::io(p.display().to_string(), e))?
            .to_string_lossy()
            .into_owned(),
        (None, _) => "stdin".to_string(),
    };
    let vpath = super::virtual_path(&name);
    if vpath == "/" {
        return Err(Error::InvalidInput(format!(
            "volume file name {name:?} names no file"
        )));
    }
    if let VolumeSource::Path(p) = &source {
        let kind = volume_kind(p).map_err(|e| Error::io(p.display().to_string(), e))?;
        if kind == VolumeKind::Other {
            return Err(Error::InvalidInput(format!(
                "{} is neither a block device nor a regular file",
                p.display()
            )));
        }
    }
    let work = run(repo, opts, source, vpath, start_time, progress);
    let mut summary =
        lock::while_locked_loading_index(repo, LockMode::Shared, &opts.lock, work).await?;
    summary.total_duration_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

async fn find_parent(
    repo: &Repository,
    opts: &VolumeBackupOptions,
    vpath: &str,
) -> Result<Option<(SnapshotId, SnapshotFile)>> {
    match &opts.parent {
        ParentChoice::None => Ok(None),
        ParentChoice::Snapshot(spec) => repo
            .find_snapshot(spec, &SnapshotFilter::default())
            .await
            .map(Some),
        ParentChoice::Latest => Ok(repo
            .list_snapshots()
            .await?
            .into_iter()
            .rev()
            .find(|(_, s)| s.hostname == opts.host && s.paths == [vpath])),
    }
}

/// What the chunking stage produced.
struct Streamed {
    content: Vec<BlobId>,
    size: u64,
    bytes_read: u64,
    root: TreeId,
}

async fn run(
    repo: &Repository,
    opts: &VolumeBackupOptions,
    source: VolumeSource,
    vpath: String,
    start_time: DateTime<FixedOffset>,
    progress: Arc<Progress>,
) -> Result<BackupSummary> {
    let chunker = repository_chunker(repo, opts.chunker)?;
    let index = Arc::new(repo.load_index().await?);
    let parent = find_parent(repo, opts, &vpath).await?;
    // With changed ranges the parent is the volume they were taken against, whatever its
    // name: a block snapshot is one file, named as its single path.
    let parent_path = match &parent {
        Some((_, snap)) if opts.changed_ranges.is_some() && snap.paths.len() == 1 => {
            snap.paths[0].clone()
        }
        _ => vpath.clone(),
    };
    let parent_content = match &parent {
        Some((_, snap)) => match lookup(repo, &index, snap.tree, &parent_path).await {
            Ok(Found::Node(_, node)) => node.content,
            _ => None,
        },
        None => None,
    };
    // Changed block tracking: checked before anything is stored.
    let changed = match &opts.changed_ranges {
        None => None,
        Some(ranges) => {
            let VolumeSource::Path(path) = &source else {
                return Err(Error::InvalidInput(
                    "changed ranges need a block device or image file to read by offset, not \
                     a stream"
                        .into(),
                ));
            };
            let chunks = changed_range_parent(&index, parent.as_ref(), parent_content.as_deref())?;
            Some((path.clone(), chunks, ranges.clone()))
        }
    };
    let (saver, handle) = BlobSaver::start_reporting(
        repo,
        Arc::clone(&index),
        &opts.pipeline,
        Some(Arc::clone(&progress)),
    );

    let streamed = match changed {
        None => {
            stream_all(
                source,
                chunker,
                &saver,
                vpath.clone(),
                start_time,
                &progress,
            )
            .await
        }
        Some((path, parent_chunks, ranges)) => {
            let stage_saver = Arc::clone(&saver);
            let stage_vpath = vpath.clone();
            let stage_progress = Arc::clone(&progress);
            tokio::task::spawn_blocking(move || {
                let (content, size, bytes_read) = chunk_changed(
                    &chunker,
                    &stage_saver,
                    &path,
                    &parent_chunks,
                    &ranges,
                    &stage_progress,
                )?;
                streamed(
                    &stage_saver,
                    &stage_vpath,
                    start_time,
                    content,
                    size,
                    bytes_read,
                )
            })
            .await
            .map_err(|e| Error::task("the changed-range chunking task", e))
            .and_then(|r| r)
        }
    };
    let stats = (
        saver.stats.data_blobs.load(Ordering::Relaxed),
        saver.stats.tree_blobs.load(Ordering::Relaxed),
        saver.stats.data_added.load(Ordering::Relaxed),
        saver.stats.data_added_packed.load(Ordering::Relaxed),
    );
    let (streamed, packs) = handle.finish_after(saver, streamed).await?;
    save_indexes(repo, packs).await?;

    let unchanged = parent_content.as_ref() == Some(&streamed.content);
    let dirs = vpath.matches('/').count() as u64 - 1;
    let (new, changed, unmodified) = match (&parent, unchanged) {
        (None, _) => (1, 0, 0),
        (Some(_), false) => (0, 1, 0),
        (Some(_), true) => (0, 0, 1),
    };
    let summary = SnapshotSummary {
        backup_start: start_time,
        backup_end: gotime::now_local(),
        files_new: new,
        files_changed: changed,
        files_unmodified: unmodified,
        dirs_new: new * dirs,
        dirs_changed: changed * dirs,
        dirs_unmodified: unmodified * dirs,
        data_blobs: stats.0,
        tree_blobs: stats.1,
        data_added: stats.2,
        data_added_packed: stats.3,
        total_files_processed: 1,
        total_bytes_processed: streamed.size,
    };
    save_backup_snapshot(
        repo,
        &opts.host,
        &opts.tags,
        start_time,
        FinishedBackup {
            root: streamed.root,
            parent: parent.as_ref().map(|(id, _)| *id),
            paths: vec![vpath],
            excludes: Vec::new(),
            summary,
            bytes_read: streamed.bytes_read,
            errors: Vec::new(),
        },
    )
    .await
}

/// Reads the whole source (holes of a sparse image skipped) and chunks it.
async fn stream_all(
    source: VolumeSource,
    chunker: crate::chunker::Chunker,
    saver: &Arc<BlobSaver>,
    vpath: String,
    start_time: DateTime<FixedOffset>,
    progress: &Arc<Progress>,
) -> Result<Streamed> {
    let require_data = !matches!(source, VolumeSource::Path(_));
    let (tx, rx) = bounded::<Result<Piece>>(PIECE_QUEUE);
    let reader = std::thread::Builder::new()
        .name("mover-volume-read".into())
        .spawn(move || read_source(source, &tx))
        .map_err(|e| Error::io("starting the volume reader thread", e))?;

    let stage_saver = Arc::clone(saver);
    let stage_vpath = vpath;
    let stage_progress = Arc::clone(progress);
    let streamed = tokio::task::spawn_blocking(move || {
        let zero = ZeroIds::new(chunker.max_size());
        let out = chunk_stream(
            &chunker,
            &zero,
            &stage_saver,
            &rx,
            &stage_progress,
            require_data,
        );
        drop(rx);
        let (content, size, bytes_read) = out?;
        streamed(
            &stage_saver,
            &stage_vpath,
            start_time,
            content,
            size,
            bytes_read,
        )
    })
    .await
    .map_err(|e| Error::task("the volume chunking task", e))
    .and_then(|r| r);
    let read_failed = reader.join().is_err();
    match (streamed, read_failed) {
        (Ok(s), false) => Ok(s),
        (Ok(_), true) => Err(Error::Internal("the volume reader thread panicked".into())),
        (Err(e), _) => Err(e),
    }
}

/// The parent's chunks (id and plaintext length) that changed ranges are applied to.
fn changed_range_parent(
    index: &crate::repo::index::MasterIndex,
    parent: Option<&(SnapshotId, SnapshotFile)>,
    content: Option<&[BlobId]>,
) -> Result<Vec<(BlobId, u64)>> {
    let Some((id, _)) = parent else {
        return Err(Error::InvalidInput(
            "changed ranges need a parent snapshot (the one the ranges were taken against); \
             none was found"
                .into(),
        ));
    };
    let Some(content) = content else {
        return Err(Error::InvalidInput(format!(
            "parent snapshot {} holds no volume file at this path: changed ranges cannot be \
             applied to it",
            id.short()
        )));
    };
    content
        .iter()
        .map(|blob| match index.get(blob) {
            Some(loc) => Ok((*blob, u64::from(loc.plaintext_len()))),
            None => Err(Error::corrupt(
                format!("parent snapshot {}", id.short()),
                format!("data blob {} is not in the index", blob.0.short()),
            )),
        })
        .collect()
}

/// Chunks a device or image from its parent's chunks and the changed ranges; returns the
/// content list, the stream length and the bytes read.
fn chunk_changed(
    chunker: &crate::chunker::Chunker,
    saver: &BlobSaver,
    path: &std::path::Path,
    parent: &[(BlobId, u64)],
    ranges: &[std::ops::Range<u64>],
    progress: &Progress,
) -> Result<(Vec<BlobId>, u64, u64)> {
    let what = || path.display().to_string();
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(what(), e))?;
    let size = volume_size(&mut file).map_err(|e| Error::io(what(), e))?;
    // Reads go region by region; ask for all of them (and a chunk's worth around each)
    // at once, so the device serves them in parallel rather than one wait at a time.
    let around = chunker.max_size().min(2 << 20) as u64;
    for r in super::changed::normalize(ranges, size) {
        let start = r.start.saturating_sub(around);
        let len = (r.end + around).min(size) - start;
        let _ = nix::fcntl::posix_fadvise(
            &file,
            start as i64,
            len as i64,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
        );
    }
    let mut saved_bytes = 0u64;
    let read = |offset: u64, buf: &mut [u8]| {
        file.read_exact_at(buf, offset)
            .map_err(|e| Error::io(format!("{} at offset {offset}", path.display()), e))
    };
    let save = |chunks: Vec<Vec<u8>>| -> Result<Vec<BlobId>> {
        let saved: Vec<Result<(BlobId, bool)>> = chunks
            .par_iter()
            .map(|b| saver.save(BlobType::Data, b))
            .collect();
        let mut ids = Vec::with_capacity(chunks.len());
        for (b, r) in chunks.iter().zip(saved) {
            let (id, new) = r?;
            if new {
                progress.add_added(b.len() as u64);
            }
            progress.add_bytes(b.len() as u64);
            saved_bytes += b.len() as u64;
            ids.push(id);
        }
        Ok(ids)
    };
    let out = super::changed::rechunk(chunker, parent, size, ranges, read, save)?;
    progress.add_bytes(size.saturating_sub(saved_bytes));
    Ok((out.content, size, out.bytes_read))
}

/// Reads the source into pieces; stops early when the consumer hangs up.
fn read_source(source: VolumeSource, tx: &Sender<Result<Piece>>) {
    let result = match source {
        VolumeSource::Path(path) => read_path(&path, tx),
        VolumeSource::Stdin => read_stream(std::io::stdin().lock(), "stdin", tx),
        VolumeSource::Reader(r) => read_stream(r, "input stream", tx),
    };
    if let Err(e) = result {
        let _ = tx.send(Err(e));
    }
}

fn read_path(path: &std::path::Path, tx: &Sender<Result<Piece>>) -> Result<()> {
    let what = || path.display().to_string();
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(what(), e))?;
    let size = volume_size(&mut file).map_err(|e| Error::io(what(), e))?;
    let ranges = match volume_kind(path).map_err(|e| Error::io(what(), e))? {
        VolumeKind::RegularFile => data_ranges(&file, size),
        _ => std::iter::once(0..size).collect(),
    };
    let mut pos = 0u64;
    for range in ranges.into_iter().chain(std::iter::once(size..size)) {
        if range.start > pos && tx.send(Ok(Piece::Zeros(range.start - pos))).is_err() {
            return Ok(());
        }
        pos = range.start;
        while pos < range.end {
            let len = (range.end - pos).min(PIECE_BYTES as u64) as usize;
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, pos)
                .map_err(|e| Error::io(format!("{} at offset {pos}", path.display()), e))?;
            pos += len as u64;
            if tx.send(Ok(Piece::Data(buf))).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

fn read_stream(mut r: impl Read, what: &str, tx: &Sender<Result<Piece>>) -> Result<()> {
    loop {
        let mut buf = Vec::with_capacity(PIECE_BYTES);
        let n = (&mut r)
            .take(PIECE_BYTES as u64)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(format!("reading {what}"), e))?;
        if n == 0 {
            return Ok(());
        }
        if tx.send(Ok(Piece::Data(buf))).is_err() {
            return Ok(());
        }
    }
}

/// Chunks and saves the stream; returns the content list, the stream length and the bytes
/// actually read.
fn chunk_stream(
    chunker: &crate::chunker::Chunker,
    zero: &ZeroIds,
    saver: &BlobSaver,
    rx: &Receiver<Result<Piece>>,
    progress: &Progress,
    require_data: bool,
) -> Result<(Vec<BlobId>, u64, u64)> {
    let threads = rayon::current_num_threads().max(1);
    let window = ((threads * 8) << 20).clamp(32 << 20, 96 << 20);
    let mut sc = StreamChunker::new(chunker, zero.buffer(), window);
    let mut content = Vec::new();
    let mut size = 0u64;
    let mut bytes_read = 0u64;
    let mut sink = |chunks: &[Chunk<'_>]| -> Result<()> {
        let saved: Vec<Result<(BlobId, bool)>> = chunks
            .par_iter()
            .map(|c| match c {
                Chunk::Bytes(b) if is_zero(b) => {
                    saver.save_with_id(BlobType::Data, zero.id(b.len()), b)
                }
                Chunk::Bytes(b) => saver.save(BlobType::Data, b),
                Chunk::Zeros { len, .. } => {
                    saver.save_with_id(BlobType::Data, zero.id(*len), zero.zeros(*len))
                }
            })
            .collect();
        for (c, r) in chunks.iter().zip(saved) {
            let (id, new) = r?;
            let count = match c {
                Chunk::Bytes(b) => {
                    if new {
                        progress.add_added(b.len() as u64);
                    }
                    1
                }
                Chunk::Zeros { len, count } => {
                    if new {
                        progress.add_added(*len as u64);
                    }
                    *count
                }
            };
            content.extend(std::iter::repeat_n(id, count as usize));
            progress.add_bytes(c.stream_len());
            size += c.stream_len();
        }
        Ok(())
    };
    for piece in rx {
        match piece? {
            Piece::Zeros(n) => sc.push_zeros(n, &mut sink)?,
            Piece::Data(buf) => {
                bytes_read += buf.len() as u64;
                let mut pos = 0;
                for run in zero_runs(&buf, ZERO_BLOCK_BYTES, ZERO_RUN_MIN_BYTES) {
                    sc.push_data(&buf[pos..run.start], &mut sink)?;
                    sc.push_zeros((run.end - run.start) as u64, &mut sink)?;
                    pos = run.end;
                }
                sc.push_data(&buf[pos..], &mut sink)?;
            }
        }
    }
    sc.finish(&mut sink)?;
    if require_data && bytes_read == 0 {
        // restic refuses an empty stdin ("no data read"); an empty image is an empty file.
        return Err(Error::InvalidInput(
            "no data read from the input stream".into(),
        ));
    }
    Ok((content, size, bytes_read))
}

/// The chunking stage's result, once the file node and its directories are saved.
fn streamed(
    saver: &BlobSaver,
    vpath: &str,
    time: DateTime<FixedOffset>,
    content: Vec<BlobId>,
    size: u64,
    bytes_read: u64,
) -> Result<Streamed> {
    let root = save_trees(saver, vpath, time, content.clone(), size)?;
    Ok(Streamed {
        content,
        size,
        bytes_read,
        root,
    })
}

/// Saves the file node and its parent directory chain; returns the root tree.
fn save_trees(
    saver: &BlobSaver,
    vpath: &str,
    time: DateTime<FixedOffset>,
    content: Vec<BlobId>,
    size: u64,
) -> Result<TreeId> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let parts: Vec<&str> = vpath.split('/').filter(|p| !p.is_empty()).collect();
    let Some((file_name, dirs)) = parts.split_last() else {
        return Err(Error::InvalidInput(format!("{vpath:?} names no file")));
    };
    let mut node = Node::new(file_name.as_bytes().to_vec(), NodeType::File);
    node.mode = FILE_MODE;
    (node.mtime, node.atime, node.ctime) = (time, time, time);
    (node.uid, node.gid) = (uid, gid);
    node.size = size;
    node.content = Some(content);
    for dir in dirs.iter().rev().map(Some).chain(std::iter::once(None)) {
        let bytes = Tree { nodes: vec![node] }.encode();
        let (id, _) = saver.save(BlobType::Tree, &bytes)?;
        let tree = TreeId(id.0);
        let Some(dir) = dir else {
            return Ok(tree);
        };
        node = Node::new(dir.as_bytes().to_vec(), NodeType::Dir);
        node.mode = DIR_MODE;
        (node.mtime, node.atime, node.ctime) = (time, time, time);
        (node.uid, node.gid) = (uid, gid);
        node.subtree = Some(tree);
    }
    // The loop returns on its last element (`None`).
    Err(Error::Internal(format!("no root tree built for {vpath}")))
}
