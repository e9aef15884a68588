//! `restore`: write a snapshot's tree below a target directory, as `restic restore` does.
//!
//! Walks the trees into a plan first, creates directories and (sparse, pre-sized) files, then
//! fetches content pack by pack with merged range reads and positional writes, and puts
//! metadata back last (directories deepest first so their times stick). Files in directories
//! this restore made are created by their first write instead, and each file's metadata goes
//! back as soon as its last blob is written, so both overlap the content phase. It never
//! resolves snapshots or takes locks: the caller does.

use crate::error::{Error, Result};
use crate::format::index::IndexBlob;
use crate::format::snapshot::SnapshotFile;
use crate::format::tree::{Node, NodeType, Tree};
use crate::format::{BlobId, Id, PackId, TreeId};
use crate::fs::ExcludeMatcher;
use crate::fs::direct::{AlignedBuf, TargetFile};
use crate::fs::glob::{go_clean, go_match};
use crate::fs::write as fsw;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::index::{BlobLocation, MasterIndex};
use crate::repo::packer::{OpenBuffers, open_blob_into};
use futures::{StreamExt, TryStreamExt};
use rayon::prelude::*;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Blobs of one pack closer than this are fetched with one range read.
const MAX_RANGE_GAP_BYTES: u64 = 1 << 20;
/// A merged range read stops growing at this size (one blob may still exceed it).
const MAX_RANGE_BYTES: u64 = 4 << 20;
/// Range reads of one pack issued ahead of the range being written.
const RANGE_READ_AHEAD: usize = 1;
/// Files kept open while one pack range is written.
const MAX_OPEN_FILES_PER_RANGE: usize = 32;
/// Size of each thread's aligned staging buffer for direct writes.
const STAGING_BYTES: usize = 1 << 20;
/// Trees loaded at once while planning.
const TREE_LOAD_CONCURRENCY: usize = 16;
/// Sealed-blob overhead (IV and MAC) of an uncompressed blob.
const SEAL_OVERHEAD_BYTES: u32 = 32;
/// Threads that create files and put metadata back: each call waits on the disk far more
/// than it computes.
const FS_THREADS: usize = 8;

/// Cap on the errors listed in one verification failure message.
const MAX_LISTED_ERRORS: usize = 10;

/// Knobs for [`restore`].
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Directory the snapshot's root tree lands in.
    pub target: PathBuf,
    /// restic `--include` patterns, matched against the path inside the snapshot.
    pub includes: Vec<String>,
    /// restic `--exclude` patterns, matched against the path inside the snapshot.
    pub excludes: Vec<String>,
    /// Restore uid and gid (only root may).
    pub restore_owner: bool,
    /// Packs fetched and written at once.
    pub pack_concurrency: usize,
    /// Re-read every restored file and check its chunk hashes.
    pub verify: bool,
    /// Write file content with O_DIRECT, bypassing the page cache.
    pub direct_io: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            target: PathBuf::new(),
            includes: Vec::new(),
            excludes: Vec::new(),
            restore_owner: nix::unistd::geteuid().is_root(),
            pack_concurrency: 8,
            verify: false,
            direct_io: true,
        }
    }
}

/// What a restore did. `errors` lists entries that could not be created or given their
/// metadata; the restore went on past them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    pub files_restored: u64,
    pub dirs_restored: u64,
    pub bytes_restored: u64,
    pub errors: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Selection (restic's include/exclude filter semantics)

/// One `--include` pattern: matching via [`ExcludeMatcher`], plus the components for restic's
/// "a child of this path may match" test.
#[derive(Debug)]
struct IncludePattern {
    negated: bool,
    matcher: ExcludeMatcher,
    parts: Vec<Vec<u8>>,
}

fn split_components(path: &[u8]) -> Vec<&[u8]> {
    let mut parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    if parts.first().is_some_and(|p| p.is_empty()) {
        parts[0] = b"/";
    }
    parts
}

impl IncludePattern {
    fn new(pattern: &str) -> std::result::Result<IncludePattern, String> {
        let (negated, body) = match pattern.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, pattern),
        };
        let matcher = ExcludeMatcher::new(&[body.to_string()])?;
        let cleaned = go_clean(body);
        let parts = split_components(cleaned.as_bytes())
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        Ok(IncludePattern {
            negated,
            matcher,
            parts,
        })
    }

    /// restic's `childMatch`: relative patterns may match below any path; rooted ones only
    /// below paths that match their leading components (up to a `**`).
    fn child_may_match(&self, location: &[u8]) -> bool {
        if self.parts.first().map(Vec::as_slice) != Some(b"/".as_slice()) {
            return true;
        }
        let mut strs = split_components(location);
        if let Some(pos) = self.parts.iter().position(|p| p == b"**") {
            strs.truncate(pos);
        }
        let n = strs.len().min(self.parts.len());
        self.parts[..n]
            .iter()
            .zip(&strs[..n])
            .all(|(p, s)| p.as_slice() == *s || go_match(p, s).unwrap_or(false))
    }
}

/// Decides which snapshot paths are restored, as restic's restore `SelectFilter`.
#[derive(Debug, Default)]
struct Selector {
    excludes: Option<ExcludeMatcher>,
    includes: Vec<IncludePattern>,
}

impl Selector {
    fn new(includes: &[String], excludes: &[String]) -> Result<Selector> {
        let excludes = if excludes.iter().any(|p| !p.is_empty()) {
            Some(ExcludeMatcher::new(excludes).map_err(Error::InvalidInput)?)
        } else {
            None
        };
        let includes = includes
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| IncludePattern::new(p))
            .collect::<std::result::Result<Vec<_>, String>>()
            .map_err(|e| Error::InvalidInput(e.replace("exclude", "include")))?;
        Ok(Selector { excludes, includes })
    }

    /// `(selected for restore, a child may be selected)` for the snapshot path `location`.
    fn select(&self, location: &[u8], is_dir: bool) -> (bool, bool) {
        if self
            .excludes
            .as_ref()
            .is_some_and(|ex| ex.matches_bytes(location))
        {
            return (false, false);
        }
        if self.includes.is_empty() {
            return (true, is_dir);
        }
        let mut matched = false;
        let mut child = false;
        for p in &self.includes {
            let m = p.matcher.matches_bytes(location);
            if p.negated {
                matched &= !m;
                child &= !m;
            } else {
                matched |= m;
                child |= p.child_may_match(location);
            }
        }
        (matched, child && is_dir)
    }
}

// ---------------------------------------------------------------------------------------------
// Plan

#[derive(Debug)]
struct PlanDir {
    target: PathBuf,
    location: Vec<u8>,
    /// `None` for the snapshot root, which gets no metadata.
    node: Option<Node>,
    parent: Option<usize>,
    depth: usize,
    selected: bool,
    /// Selected, or something below it was: its metadata is restored.
    restored: bool,
}

/// One file to restore. There is one per file in the snapshot and all live until the end,
/// so only what the restore needs is kept: the target path is derived from the location
/// ([`target_path`]) and the node shrinks to its [`fsw::Metadata`].
#[derive(Debug)]
struct PlanFile {
    /// Path inside the snapshot, `/`-rooted.
    location: Box<[u8]>,
    meta: fsw::Metadata,
    /// Data blobs, in order.
    content: Box<[BlobId]>,
    dir: usize,
    /// Content length from the index (filled in before files are created).
    size: u64,
    /// Plaintext length of each content blob (only kept when verifying).
    blob_lengths: Vec<u32>,
}

#[derive(Debug)]
struct PlanLink {
    target: PathBuf,
    location: Vec<u8>,
    node: Node,
    /// Index into `Plan::files` of the first name of this inode.
    file: usize,
}

#[derive(Debug)]
struct PlanSpecial {
    target: PathBuf,
    location: Vec<u8>,
    node: Node,
}

#[derive(Debug)]
struct Plan {
    dirs: Vec<PlanDir>,
    files: Vec<PlanFile>,
    links: Vec<PlanLink>,
    specials: Vec<PlanSpecial>,
    errors: Vec<String>,
    inodes: HashMap<(u64, u64), usize>,
}

/// Where snapshot path `location` is restored below `root`; an empty root leaves the
/// location as it is.
fn target_path(root: &Path, location: &[u8]) -> PathBuf {
    let mut bytes = root.as_os_str().as_bytes().to_vec();
    let rest = match bytes.last() {
        Some(b'/') => location.strip_prefix(b"/").unwrap_or(location),
        _ => location,
    };
    bytes.extend_from_slice(rest);
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

fn loc_str(location: &[u8]) -> String {
    String::from_utf8_lossy(location).into_owned()
}

fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

impl Plan {
    fn new(target: &Path) -> Plan {
        Plan {
            dirs: vec![PlanDir {
                target: target.to_path_buf(),
                location: b"/".to_vec(),
                node: None,
                parent: None,
                depth: 0,
                selected: true,
                restored: true,
            }],
            files: Vec::new(),
            links: Vec::new(),
            specials: Vec::new(),
            errors: Vec::new(),
            inodes: HashMap::new(),
        }
    }

    fn mark_restored(&mut self, mut dir: usize) {
        loop {
            let d = &mut self.dirs[dir];
            if d.restored {
                return;
            }
            d.restored = true;
            match d.parent {
                Some(p) => dir = p,
                None => return,
            }
        }
    }

    /// Adds the entries of `tree`, the listing of `self.dirs[dir]`; returns the subtrees to
    /// descend into, with the index of their directory.
    fn add_tree(
        &mut self,
        dir: usize,
        tree: Tree,
        selector: &Selector,
    ) -> Result<Vec<(TreeId, usize)>> {
        let mut descend = Vec::new();
        for mut node in tree.nodes {
            let parent = &self.dirs[dir];
            let mut location = parent.location.clone();
            if location != b"/" {
                location.push(b'/');
            }
            location.extend_from_slice(&node.name);
            if !valid_name(&node.name) {
                self.errors.push(format!(
                    "{}: invalid child node name {:?}",
                    loc_str(&parent.location),
                    String::from_utf8_lossy(&node.name)
                ));
                continue;
            }
            let depth = parent.depth + 1;
            let is_dir = node.node_type == NodeType::Dir;
            let (selected, child) = selector.select(&location, is_dir);
            match node.node_type {
                NodeType::Dir => {
                    let Some(subtree) = node.subtree else {
                        return Err(Error::corrupt(
                            format!("directory {}", loc_str(&location)),
                            "dir node without subtree",
                        ));
                    };
                    if !selected && !child {
                        continue;
                    }
                    let idx = self.dirs.len();
                    let target = self.dirs[dir].target.join(OsStr::from_bytes(&node.name));
                    self.dirs.push(PlanDir {
                        target,
                        location,
                        node: Some(node),
                        parent: Some(dir),
                        depth,
                        selected,
                        restored: false,
                    });
                    if selected {
                        self.mark_restored(idx);
                    }
                    if child {
                        descend.push((subtree, idx));
                    }
                }
                _ if !selected => {}
                NodeType::File => {
                    self.mark_restored(dir);
                    if node.links > 1 {
                        let key = (node.device_id, node.inode);
                        if let Some(&file) = self.inodes.get(&key) {
                            let target = self.dirs[dir].target.join(OsStr::from_bytes(&node.name));
                            self.links.push(PlanLink {
                                target,
                                location,
                                node,
                                file,
                            });
                            continue;
                        }
                        self.inodes.insert(key, self.files.len());
                    }
                    self.files.push(PlanFile {
                        location: location.into_boxed_slice(),
                        meta: fsw::Metadata::take(&mut node),
                        content: node.content.take().unwrap_or_default().into_boxed_slice(),
                        dir,
                        size: 0,
                        blob_lengths: Vec::new(),
                    });
                }
                _ => {
                    self.mark_restored(dir);
                    let target = self.dirs[dir].target.join(OsStr::from_bytes(&node.name));
                    self.specials.push(PlanSpecial {
                        target,
                        location,
                        node,
                    });
                }
            }
        }
        Ok(descend)
    }
}

// ---------------------------------------------------------------------------------------------
// Content: which blobs go where, and how each pack is read

/// One blob needed from a pack and every place it is written.
#[derive(Debug, Clone)]
pub(crate) struct BlobNeed {
    pub(crate) id: BlobId,
    pub(crate) loc: BlobLocation,
    /// `(file index, offset in the file)`.
    pub(crate) targets: Vec<(u32, u64)>,
}

/// A byte range of a pack read in one request, with the blobs (indexes into the pack's
/// sorted blob list) it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PackRange {
    range: Range<u64>,
    blobs: Range<usize>,
}

fn blob_end(loc: &BlobLocation) -> u64 {
    u64::from(loc.offset) + u64::from(loc.length)
}

/// Merges blobs (sorted by offset) into range reads: a gap under `max_gap` joins two blobs,
/// unless the range would grow past `max_len`.
fn merge_ranges(blobs: &[BlobNeed], max_gap: u64, max_len: u64) -> Vec<PackRange> {
    let mut out: Vec<PackRange> = Vec::new();
    for (i, b) in blobs.iter().enumerate() {
        let start = u64::from(b.loc.offset);
        let end = blob_end(&b.loc);
        if let Some(last) = out.last_mut() {
            let joinable = start >= last.range.end && start - last.range.end < max_gap;
            let overlapping = start < last.range.end;
            if (joinable && end - last.range.start <= max_len) || overlapping {
                last.range.end = last.range.end.max(end);
                last.blobs.end = i + 1;
                continue;
            }
        }
        out.push(PackRange {
            range: start..end,
            blobs: i..i + 1,
        });
    }
    out
}

pub(crate) fn plain_length(loc: &BlobLocation) -> u32 {
    loc.uncompressed_length
        .unwrap_or_else(|| loc.length.saturating_sub(SEAL_OVERHEAD_BYTES))
}

/// Looks up every content blob, fills in file sizes and returns the needs grouped by pack
/// (blobs sorted by offset). A blob missing from the index is fatal.
fn group_by_pack(
    files: &mut [PlanFile],
    index: &MasterIndex,
    keep_lengths: bool,
) -> Result<HashMap<PackId, Vec<BlobNeed>>> {
    let mut by_pack: HashMap<PackId, HashMap<BlobId, BlobNeed>> = HashMap::new();
    for (fi, file) in files.iter_mut().enumerate() {
        let fi = u32::try_from(fi)
            .map_err(|_| Error::InvalidInput("more than 2^32 files to restore".into()))?;
        let mut offset = 0u64;
        for id in &file.content {
            let loc = index.get(id).ok_or_else(|| {
                Error::corrupt(
                    format!("data blob {id} of {}", loc_str(&file.location)),
                    "not in the repository index",
                )
            })?;
            let len = plain_length(&loc);
            by_pack
                .entry(loc.pack)
                .or_default()
                .entry(*id)
                .or_insert_with(|| BlobNeed {
                    id: *id,
                    loc,
                    targets: Vec::new(),
                })
                .targets
                .push((fi, offset));
            if keep_lengths {
                file.blob_lengths.push(len);
            }
            offset += u64::from(len);
        }
        file.size = offset;
    }
    Ok(by_pack
        .into_iter()
        .map(|(pack, blobs)| {
            let mut blobs: Vec<BlobNeed> = blobs.into_values().collect();
            blobs.sort_by_key(|b| (b.loc.offset, b.id));
            (pack, blobs)
        })
        .collect())
}

/// State shared by the concurrent pack writers.
struct ContentState {
    /// Restore root: file targets are [`target_path`] of it and their locations.
    root: PathBuf,
    files: Arc<Vec<PlanFile>>,
    failed: Vec<AtomicBool>,
    remaining: Vec<AtomicUsize>,
    errors: Mutex<Vec<String>>,
    bytes: AtomicU64,
    progress: Arc<Progress>,
    /// All-zero blobs are not written (the target already reads zeros there).
    skip_zero_blobs: bool,
    /// Whole pages are written with O_DIRECT (see `fs::direct`).
    direct_io: bool,
    /// Buffers of finished range writes, for the next ones (see [`WriteBuffers`]).
    spare_buffers: Mutex<Vec<WriteBuffers>>,
    /// Files created by their first write (see [`create_entries`]); empty for none.
    deferred: Vec<bool>,
    /// With options, a file's metadata is put back as soon as its last blob is written.
    early_metadata: Option<fsw::RestoreOptions>,
    /// Files whose metadata is back.
    metadata_done: Vec<AtomicBool>,
}

/// What one range write needs besides the range: decryption and decompression buffers and
/// the aligned staging buffer of direct writes. They are pooled, not allocated per blob
/// or kept per thread: per blob would allocate and free millions of times (fresh pages,
/// and glibc's arenas grow far past what is in flight), and the blocking pool runs many
/// more threads than range writes are ever in flight.
struct WriteBuffers {
    open: OpenBuffers,
    staging: AlignedBuf,
}

impl ContentState {
    fn new(
        root: PathBuf,
        files: Arc<Vec<PlanFile>>,
        failed: Vec<AtomicBool>,
        remaining: Vec<AtomicUsize>,
        progress: Arc<Progress>,
        skip_zero_blobs: bool,
        direct_io: bool,
    ) -> ContentState {
        ContentState {
            root,
            files,
            failed,
            remaining,
            errors: Mutex::new(Vec::new()),
            bytes: AtomicU64::new(0),
            progress,
            skip_zero_blobs,
            direct_io,
            spare_buffers: Mutex::new(Vec::new()),
            deferred: Vec::new(),
            early_metadata: None,
            metadata_done: Vec::new(),
        }
    }

    /// Files flagged in `deferred` are created by their first write, and with
    /// `early_metadata` each file gets its metadata back once its content is complete, so
    /// that both overlap the content phase instead of being phases of their own.
    fn finish_files_early(
        mut self,
        deferred: Vec<bool>,
        early_metadata: Option<fsw::RestoreOptions>,
    ) -> ContentState {
        self.metadata_done = self.files.iter().map(|_| AtomicBool::new(false)).collect();
        self.deferred = deferred;
        self.early_metadata = early_metadata;
        self
    }

    fn open_target(&self, file: usize) -> std::io::Result<TargetFile> {
        let path = self.target(file);
        if self.deferred.get(file).copied().unwrap_or(false) {
            TargetFile::create_or_open(&path, self.files[file].size, self.direct_io)
        } else {
            TargetFile::open(&path, self.direct_io)
        }
    }

    /// Whether the file's metadata was already put back in the content phase.
    fn metadata_done(&self, file: usize) -> bool {
        self.metadata_done
            .get(file)
            .is_some_and(|d| d.load(Ordering::Acquire))
    }

    fn target(&self, file: usize) -> PathBuf {
        target_path(&self.root, &self.files[file].location)
    }

    fn take_buffers(&self) -> WriteBuffers {
        self.spare_buffers
            .lock()
            .ok()
            .and_then(|mut spare| spare.pop())
            .unwrap_or_else(|| WriteBuffers {
                open: OpenBuffers::default(),
                staging: AlignedBuf::new(STAGING_BYTES),
            })
    }

    fn return_buffers(&self, bufs: WriteBuffers) {
        if let Ok(mut spare) = self.spare_buffers.lock() {
            spare.push(bufs);
        }
    }

    fn fail(&self, file: usize, msg: String) {
        if !self.failed[file].swap(true, Ordering::AcqRel) {
            if let Ok(mut errors) = self.errors.lock() {
                errors.push(msg);
            }
            self.progress.add_error();
        }
    }

    fn is_failed(&self, file: usize) -> bool {
        self.failed[file].load(Ordering::Acquire)
    }

    /// Counts one written blob of `file`; once the file is complete its metadata goes back
    /// (with early metadata), through `handle` when the caller has the file open.
    fn blob_written(&self, file: usize, handle: Option<&File>) {
        if self.remaining[file].fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        self.progress.files_done.fetch_add(1, Ordering::Relaxed);
        let Some(opts) = &self.early_metadata else {
            return;
        };
        let f = &self.files[file];
        let path = self.target(file);
        let applied = match handle {
            Some(h) => f.meta.apply_to_file(h, &path, opts),
            None => f.meta.apply(&path, opts),
        };
        if let Err(e) = applied {
            if let Ok(mut errors) = self.errors.lock() {
                errors.push(format!("{}: {e}", loc_str(&f.location)));
            }
        }
        self.metadata_done[file].store(true, Ordering::Release);
    }
}

/// Opens, verifies and writes the blobs of one range read (runs on the blocking pool).
fn write_range(
    key: &crate::crypto::Key,
    pack: &PackId,
    data: &[u8],
    range_start: u64,
    blobs: &[BlobNeed],
    state: &ContentState,
    bufs: &mut WriteBuffers,
) -> Result<()> {
    let mut open: HashMap<u32, TargetFile> = HashMap::new();
    for b in blobs {
        let from = (u64::from(b.loc.offset) - range_start) as usize;
        let to = from + b.loc.length as usize;
        let sealed = data.get(from..to).ok_or_else(|| {
            Error::corrupt(
                format!("pack {pack}"),
                format!("short read for blob {} at offset {}", b.id, b.loc.offset),
            )
        })?;
        let ib = IndexBlob {
            id: b.id,
            blob_type: b.loc.blob_type,
            offset: b.loc.offset,
            length: b.loc.length,
            uncompressed_length: b.loc.uncompressed_length,
        };
        let plain = open_blob_into(key, sealed, &ib, &mut bufs.open).map_err(|e| {
            Error::corrupt(
                format!("blob {} in pack {pack} at offset {}", b.id, b.loc.offset),
                e.to_string(),
            )
        })?;
        let skip = state.skip_zero_blobs && crate::fs::block::is_zero(plain);
        for &(fi, offset) in &b.targets {
            let f = fi as usize;
            if state.is_failed(f) {
                continue;
            }
            if skip {
                state.bytes.fetch_add(plain.len() as u64, Ordering::Relaxed);
                state.blob_written(f, None);
                continue;
            }
            // A range of small files touches many of them; keep only a few open so that
            // several packs restored at once stay well inside the open-file limit.
            if open.len() >= MAX_OPEN_FILES_PER_RANGE && !open.contains_key(&fi) {
                open.clear();
            }
            let file = match open.entry(fi) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => match state.open_target(f) {
                    Ok(file) => e.insert(file),
                    Err(err) => {
                        let path = state.target(f);
                        state.fail(f, format!("opening {}: {err}", path.display()));
                        continue;
                    }
                },
            };
            let written = if state.skip_zero_blobs {
                file.buffered().and_then(|h| {
                    crate::fs::block::write_skipping_zeros(h, plain, offset, 64 * 1024)
                })
            } else {
                file.write_at(plain, offset, &mut bufs.staging)
            };
            if let Err(err) = written {
                let path = state.target(f);
                state.fail(f, format!("writing {}: {err}", path.display()));
                continue;
            }
            state.progress.add_bytes(plain.len() as u64);
            state.bytes.fetch_add(plain.len() as u64, Ordering::Relaxed);
            state.blob_written(f, Some(file.file()));
        }
    }
    Ok(())
}

async fn restore_pack(
    repo: &Repository,
    pack: PackId,
    blobs: Vec<BlobNeed>,
    state: Arc<ContentState>,
) -> Result<()> {
    let blobs = Arc::new(blobs);
    // The next range is read while the current one is opened and written.
    let mut reads =
        futures::stream::iter(merge_ranges(&blobs, MAX_RANGE_GAP_BYTES, MAX_RANGE_BYTES))
            .map(|r| async move {
                let data = repo.read_pack_range(&pack, r.range.clone()).await?;
                Ok::<_, Error>((r, data))
            })
            .buffered(RANGE_READ_AHEAD + 1);
    while let Some(read) = reads.next().await {
        let (r, data) = read?;
        let key = repo.key_arc();
        let state = Arc::clone(&state);
        let blobs = Arc::clone(&blobs);
        tokio::task::spawn_blocking(move || {
            let mut bufs = state.take_buffers();
            let blobs = &blobs[r.blobs.clone()];
            let result = write_range(&key, &pack, &data, r.range.start, blobs, &state, &mut bufs);
            state.return_buffers(bufs);
            result
        })
        .await
        .map_err(|e| Error::Other(format!("restore task for pack {pack} failed: {e}")))??;
    }
    Ok(())
}

/// Re-reads a restored file and checks each chunk against its blob id.
fn verify_file(path: &Path, file: &PlanFile) -> std::result::Result<(), String> {
    let mut f = File::open(path).map_err(|e| format!("verify: opening {}: {e}", path.display()))?;
    let mut buf = Vec::new();
    let mut offset = 0u64;
    for (id, &len) in file.content.iter().zip(&file.blob_lengths) {
        buf.resize(len as usize, 0);
        f.read_exact(&mut buf)
            .map_err(|e| format!("verify: reading {} at {offset}: {e}", path.display()))?;
        if Id::hash(&buf) != id.0 {
            return Err(format!(
                "verify: {} at offset {offset}: content does not match blob {id}",
                path.display()
            ));
        }
        offset += u64::from(len);
    }
    let mut extra = [0u8; 1];
    match f.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(_) => Err(format!(
            "verify: {} is longer than its {offset} bytes of content",
            path.display()
        )),
        Err(e) => Err(format!("verify: reading {}: {e}", path.display())),
    }
}

async fn build_plan(
    repo: &Repository,
    index: &MasterIndex,
    root: TreeId,
    target: &Path,
    selector: &Selector,
) -> Result<Plan> {
    let mut plan = Plan::new(target);
    let mut frontier = vec![(root, 0usize)];
    while !frontier.is_empty() {
        let batch = std::mem::take(&mut frontier);
        let mut trees = futures::stream::iter(batch)
            .map(|(id, dir)| async move { repo.load_tree(index, &id).await.map(|t| (t, dir)) })
            .buffered(TREE_LOAD_CONCURRENCY);
        while let Some(loaded) = trees.next().await {
            let (tree, dir) = loaded?;
            frontier.extend(plan.add_tree(dir, tree, selector)?);
        }
    }
    Ok(plan)
}

async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Other(format!("{what} task failed: {e}")))
}

fn fs_pool() -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(FS_THREADS)
        .thread_name(|i| format!("mover-fs-{i}"))
        .build()
        .map_err(|e| Error::Other(format!("cannot start the file-creation threads: {e}")))
}

/// Indexes of the directories to visit, grouped by depth, shallowest first.
fn dirs_by_depth(dirs: &[PlanDir], wanted: impl Fn(&PlanDir) -> bool) -> Vec<Vec<usize>> {
    let mut levels: Vec<Vec<usize>> = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        if !wanted(d) {
            continue;
        }
        if levels.len() <= d.depth {
            levels.resize_with(d.depth + 1, Vec::new);
        }
        levels[d.depth].push(i);
    }
    levels
}

/// Creates the selected directories and the files (pre-sized, sparse) on `pool`: one
/// directory level after the other, then the files. Files with content whose directory is
/// new are left to their first write in the content phase, which then overlaps creating
/// them with reading and decrypting packs: nothing else can be in a new directory.
/// Creating a file waits on the disk for the directory and inode tables, so many are
/// created at once.
fn create_entries(plan: &Plan, pool: &rayon::ThreadPool) -> CreatedEntries {
    let mut errors = Vec::new();
    let ensured: Vec<AtomicBool> = plan.dirs.iter().map(|_| AtomicBool::new(false)).collect();
    let fresh: Vec<AtomicBool> = plan.dirs.iter().map(|_| AtomicBool::new(false)).collect();
    for level in dirs_by_depth(&plan.dirs, |d| d.selected) {
        let results: Vec<Option<String>> = pool.install(|| {
            level
                .par_iter()
                .map(|&i| {
                    let d = &plan.dirs[i];
                    match fsw::create_dir(&d.target) {
                        Ok(new) => {
                            ensured[i].store(true, Ordering::Relaxed);
                            fresh[i].store(new, Ordering::Relaxed);
                            None
                        }
                        Err(e) => Some(format!("{}: {e}", loc_str(&d.location))),
                    }
                })
                .collect()
        });
        errors.extend(results.into_iter().flatten());
    }
    let root = &plan.dirs[0].target;
    // A file with content in a directory made by this restore is created by its first write.
    let deferred: Vec<bool> = plan
        .files
        .iter()
        .map(|f| !f.content.is_empty() && fresh[f.dir].load(Ordering::Relaxed))
        .collect();
    let results: Vec<Option<String>> = pool.install(|| {
        plan.files
            .par_iter()
            .zip(deferred.par_iter())
            .map(|(f, &deferred)| {
                if deferred {
                    return None;
                }
                let target = target_path(root, &f.location);
                let mut result = Ok(());
                // Only for parents that are not selected themselves (or failed): create_dir_all
                // tolerates the other threads doing the same.
                if !ensured[f.dir].load(Ordering::Relaxed) {
                    result = fsw::create_dir_all_for(&target);
                    if result.is_ok() {
                        ensured[f.dir].store(true, Ordering::Relaxed);
                    }
                }
                result
                    .and_then(|()| fsw::create_file(&target, f.size).map(drop))
                    .err()
                    .map(|e| format!("{}: {e}", loc_str(&f.location)))
            })
            .collect()
    });
    let failed = results.iter().map(Option::is_some).collect();
    errors.extend(results.into_iter().flatten());
    CreatedEntries {
        errors,
        failed,
        deferred,
    }
}

/// What [`create_entries`] did: errors in plan order, and per file whether creating it
/// failed and whether it was left to the content phase.
struct CreatedEntries {
    errors: Vec<String>,
    failed: Vec<bool>,
    deferred: Vec<bool>,
}

/// What the metadata phase needs of the plan besides the files.
struct MetadataEntries {
    dirs: Vec<PlanDir>,
    links: Vec<PlanLink>,
    specials: Vec<PlanSpecial>,
}

/// Puts metadata back: files (on `pool`), then special nodes and hard links (created here,
/// after their targets are complete), then directories deepest level first (in parallel
/// within a level), so that nothing created later changes a directory's times. Returns
/// the errors, the files and the directories restored.
fn restore_metadata(
    state: &ContentState,
    entries: &MetadataEntries,
    meta_opts: &fsw::RestoreOptions,
    pool: &rayon::ThreadPool,
) -> (Vec<String>, u64, u64) {
    let progress = &state.progress;
    let files = &state.files;
    let results: Vec<Option<String>> = pool.install(|| {
        (0..files.len())
            .into_par_iter()
            .filter(|&i| !state.is_failed(i) && !state.metadata_done(i))
            .map(|i| {
                let f = &files[i];
                f.meta
                    .apply(&state.target(i), meta_opts)
                    .err()
                    .map(|e| format!("{}: {e}", loc_str(&f.location)))
            })
            .collect()
    });
    let early = (0..files.len())
        .filter(|&i| !state.is_failed(i) && state.metadata_done(i))
        .count();
    let mut count = (results.len() + early) as u64;
    let mut errors: Vec<String> = results.into_iter().flatten().collect();
    for s in &entries.specials {
        let create = || fsw::create_node(&s.target, &s.node);
        if create_with_metadata(
            &s.target,
            &s.location,
            &s.node,
            create,
            meta_opts,
            progress,
            &mut errors,
        ) {
            count += 1;
        }
    }
    for l in &entries.links {
        if state.is_failed(l.file) {
            errors.push(format!(
                "{}: not linked, because {} could not be restored",
                loc_str(&l.location),
                loc_str(&files[l.file].location)
            ));
            continue;
        }
        let create = || fsw::hard_link(&state.target(l.file), &l.target);
        if create_with_metadata(
            &l.target,
            &l.location,
            &l.node,
            create,
            meta_opts,
            progress,
            &mut errors,
        ) {
            count += 1;
        }
    }
    let dirs = &entries.dirs;
    let mut dir_count = 0u64;
    let levels = dirs_by_depth(dirs, |d| d.restored && d.node.is_some());
    for level in levels.iter().rev() {
        let results: Vec<Option<Option<String>>> = pool.install(|| {
            level
                .par_iter()
                .map(|&i| {
                    let d = &dirs[i];
                    let node = d.node.as_ref()?;
                    if !d.target.is_dir() {
                        // Only reached when creating it failed; that error is already listed.
                        return None;
                    }
                    progress.add_dir();
                    Some(
                        fsw::apply_metadata(&d.target, node, meta_opts)
                            .err()
                            .map(|e| format!("{}: {e}", loc_str(&d.location))),
                    )
                })
                .collect()
        });
        dir_count += results.iter().filter(|r| r.is_some()).count() as u64;
        errors.extend(results.into_iter().flatten().flatten());
    }
    (errors, count, dir_count)
}

/// Creates a special node or an extra hard-link name with `create` (and its missing
/// parents), then puts `node`'s metadata on it. Returns whether the entry now exists;
/// failures are added to `errors`.
fn create_with_metadata(
    target: &Path,
    location: &[u8],
    node: &Node,
    create: impl FnOnce() -> std::io::Result<()>,
    meta_opts: &fsw::RestoreOptions,
    progress: &Progress,
    errors: &mut Vec<String>,
) -> bool {
    if let Err(e) = fsw::create_dir_all_for(target).and_then(|()| create()) {
        errors.push(format!("{}: {e}", loc_str(location)));
        progress.add_error();
        return false;
    }
    progress.files_done.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = fsw::apply_metadata(target, node, meta_opts) {
        errors.push(format!("{}: {e}", loc_str(location)));
    }
    true
}

/// Writes the blobs of `by_pack` into the one existing file or block device `target` (file
/// index 0 of every [`BlobNeed`]), pack by pack with merged range reads, as [`restore`]
/// writes file content. With `skip_zero_blobs`, all-zero blobs are not written. Returns the
/// bytes placed; any write error fails the whole restore.
pub(crate) async fn restore_blobs_into(
    repo: &Repository,
    target: &Path,
    by_pack: HashMap<PackId, Vec<BlobNeed>>,
    skip_zero_blobs: bool,
    pack_concurrency: usize,
    progress: Arc<Progress>,
) -> Result<u64> {
    let placements: usize = by_pack
        .values()
        .flat_map(|blobs| blobs.iter().map(|b| b.targets.len()))
        .sum();
    let file = PlanFile {
        location: target.as_os_str().as_bytes().into(),
        meta: fsw::Metadata::take(&mut Node::new(Vec::new(), NodeType::File)),
        content: Box::default(),
        dir: 0,
        size: 0,
        blob_lengths: Vec::new(),
    };
    let state = Arc::new(ContentState::new(
        PathBuf::new(),
        Arc::new(vec![file]),
        vec![AtomicBool::new(false)],
        vec![AtomicUsize::new(placements)],
        progress,
        skip_zero_blobs,
        false,
    ));
    let mut packs: Vec<(PackId, Vec<BlobNeed>)> = by_pack
        .into_iter()
        .map(|(pack, mut blobs)| {
            blobs.sort_by_key(|b| (b.loc.offset, b.id));
            (pack, blobs)
        })
        .collect();
    packs.sort_by_key(|(pack, _)| *pack);
    futures::stream::iter(packs)
        .map(|(pack, blobs)| restore_pack(repo, pack, blobs, Arc::clone(&state)))
        .buffer_unordered(pack_concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    if let Some(e) = state.errors.lock().ok().and_then(|e| e.first().cloned()) {
        return Err(Error::Other(e));
    }
    Ok(state.bytes.load(Ordering::Relaxed))
}

/// Restores `snapshot` below `opts.target`. See the module docs for the order of work.
pub async fn restore(
    repo: &Repository,
    snapshot: &SnapshotFile,
    opts: &RestoreOptions,
    progress: Arc<Progress>,
) -> Result<RestoreSummary> {
    if opts.target.as_os_str().is_empty() {
        return Err(Error::InvalidInput(
            "restore target must not be empty".into(),
        ));
    }
    let target = if opts.target.is_absolute() {
        opts.target.clone()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io("resolving the current directory", e))?
            .join(&opts.target)
    };
    let selector = Selector::new(&opts.includes, &opts.excludes)?;
    let started = std::time::Instant::now();
    let index = repo.load_index().await?;
    let mut plan = build_plan(repo, &index, snapshot.tree, &target, &selector).await?;
    let by_pack = group_by_pack(&mut plan.files, &index, opts.verify)?;
    drop(index);
    tracing::info!(
        files = plan.files.len(),
        dirs = plan.dirs.len(),
        packs = by_pack.len(),
        elapsed = ?started.elapsed(),
        "restore planned"
    );

    // Directories and files.
    let pool = Arc::new(fs_pool()?);
    let pool_c = Arc::clone(&pool);
    let (plan, created) = blocking("creating files", move || {
        let created = create_entries(&plan, &pool_c);
        (plan, created)
    })
    .await?;
    let CreatedEntries {
        errors: create_errors,
        failed,
        deferred,
    } = created;
    let Plan {
        dirs,
        files,
        links,
        specials,
        errors: mut all_errors,
        ..
    } = plan;
    all_errors.extend(create_errors);
    let files = Arc::new(files);
    let remaining: Vec<AtomicUsize> = files
        .iter()
        .map(|f| AtomicUsize::new(f.content.len()))
        .collect();
    for (i, rem) in remaining.iter().enumerate() {
        if !failed[i] && rem.load(Ordering::Relaxed) == 0 {
            progress.files_done.fetch_add(1, Ordering::Relaxed);
        }
    }
    let meta_opts = fsw::RestoreOptions {
        restore_owner: opts.restore_owner,
        ..fsw::RestoreOptions::default()
    };
    // --verify re-reads every file after the content phase, before any metadata (a mode
    // without read permission) is put back.
    let early_metadata = (!opts.verify).then(|| meta_opts.clone());
    let state = Arc::new(
        ContentState::new(
            target.clone(),
            Arc::clone(&files),
            failed.into_iter().map(AtomicBool::new).collect(),
            remaining,
            Arc::clone(&progress),
            false,
            opts.direct_io,
        )
        .finish_files_early(deferred, early_metadata),
    );

    tracing::info!(elapsed = ?started.elapsed(), "restore: directories and files created");

    // Content, pack by pack. Packs only needed by files that failed to be created are skipped.
    let mut packs: Vec<(PackId, Vec<BlobNeed>)> = by_pack
        .into_iter()
        .filter_map(|(pack, mut blobs)| {
            for b in &mut blobs {
                b.targets.retain(|&(fi, _)| !state.is_failed(fi as usize));
            }
            blobs.retain(|b| !b.targets.is_empty());
            (!blobs.is_empty()).then_some((pack, blobs))
        })
        .collect();
    packs.sort_by_key(|(pack, _)| *pack);
    futures::stream::iter(packs)
        .map(|(pack, blobs)| restore_pack(repo, pack, blobs, Arc::clone(&state)))
        .buffer_unordered(opts.pack_concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    if let Ok(mut errors) = state.errors.lock() {
        all_errors.append(&mut errors);
    }

    tracing::info!(elapsed = ?started.elapsed(), "restore: content written");

    if opts.verify {
        let problems: Vec<String> = futures::stream::iter(0..files.len())
            .filter(|&i| std::future::ready(!state.is_failed(i)))
            .map(|i| {
                let files = Arc::clone(&files);
                let path = target_path(&target, &files[i].location);
                blocking("verifying", move || verify_file(&path, &files[i]))
            })
            .buffer_unordered(opts.pack_concurrency.max(1))
            .try_filter_map(|r| std::future::ready(Ok(r.err())))
            .try_collect()
            .await?;
        if !problems.is_empty() {
            let shown: Vec<&str> = problems
                .iter()
                .take(MAX_LISTED_ERRORS)
                .map(String::as_str)
                .collect();
            return Err(Error::corrupt(
                format!("{} restored file(s)", problems.len()),
                shown.join("; "),
            ));
        }
    }

    // Metadata: files not done yet, special nodes and links, then directories deepest first.
    let entries = MetadataEntries {
        dirs,
        links,
        specials,
    };
    let state_m = Arc::clone(&state);
    let (meta_errors, files_restored, dirs_restored) = blocking("restoring metadata", move || {
        restore_metadata(&state_m, &entries, &meta_opts, &pool)
    })
    .await?;
    all_errors.extend(meta_errors);
    tracing::info!(elapsed = ?started.elapsed(), "restore: metadata restored");

    Ok(RestoreSummary {
        files_restored,
        dirs_restored,
        bytes_restored: state.bytes.load(Ordering::Relaxed),
        errors: all_errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str, subtree: u8) -> Node {
        let mut n = Node::new(name.as_bytes().to_vec(), NodeType::Dir);
        n.subtree = Some(TreeId(Id([subtree; 32])));
        n
    }

    fn file(name: &str, blobs: &[u8]) -> Node {
        let mut n = Node::new(name.as_bytes().to_vec(), NodeType::File);
        n.content = Some(blobs.iter().map(|&b| BlobId(Id([b; 32]))).collect());
        n
    }

    fn sel(includes: &[&str], excludes: &[&str]) -> Selector {
        let s = |v: &[&str]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        Selector::new(&s(includes), &s(excludes)).unwrap()
    }

    #[test]
    fn selector_without_patterns_takes_everything() {
        let s = sel(&[], &[]);
        assert_eq!(s.select(b"/a", true), (true, true));
        assert_eq!(s.select(b"/a/b", false), (true, false));
    }

    #[test]
    fn exclude_drops_subtree() {
        let s = sel(&[], &["*.tmp", "/data/cache"]);
        assert_eq!(s.select(b"/data/x.tmp", false), (false, false));
        assert_eq!(s.select(b"/data/cache", true), (false, false));
        assert_eq!(s.select(b"/data/cache2", true), (true, true));
        assert_eq!(s.select(b"/data/y", false), (true, false));
    }

    #[test]
    fn include_selects_parents_lazily_and_whole_subtrees() {
        let s = sel(&["/tmp/src/x"], &[]);
        // Parents are not selected but may hold selected children.
        assert_eq!(s.select(b"/tmp", true), (false, true));
        assert_eq!(s.select(b"/tmp/src", true), (false, true));
        assert_eq!(s.select(b"/tmp/other", true), (false, false));
        assert_eq!(s.select(b"/tmp/src/y", false), (false, false));
        // The matching dir and everything below it are selected.
        assert_eq!(s.select(b"/tmp/src/x", true), (true, true));
        assert_eq!(s.select(b"/tmp/src/x/file", false), (true, false));
        assert_eq!(s.select(b"/tmp/src/x/d/e", true), (true, true));
    }

    #[test]
    fn relative_and_wildcard_includes() {
        let s = sel(&["*.txt"], &[]);
        assert_eq!(s.select(b"/a", true), (false, true));
        assert_eq!(s.select(b"/a/b.txt", false), (true, false));
        assert_eq!(s.select(b"/a/b.bin", false), (false, false));
        let s = sel(&["/home/*/docs"], &[]);
        assert_eq!(s.select(b"/home", true), (false, true));
        assert_eq!(s.select(b"/home/bob", true), (false, true));
        assert_eq!(s.select(b"/var", true), (false, false));
        assert_eq!(s.select(b"/home/bob/docs/a", false), (true, false));
        let s = sel(&["/a/**/z"], &[]);
        assert_eq!(s.select(b"/a/b/c", true), (false, true));
        assert_eq!(s.select(b"/b", true), (false, false));
    }

    #[test]
    fn negated_include_and_exclude_together() {
        let s = sel(&["/d", "!/d/skip"], &["*.log"]);
        assert_eq!(s.select(b"/d/keep", false), (true, false));
        assert_eq!(s.select(b"/d/skip", true), (false, false));
        assert_eq!(s.select(b"/d/a.log", false), (false, false));
    }

    #[test]
    fn bad_pattern_is_invalid_input() {
        let err = Selector::new(&["[".to_string()], &[]).unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput(ref m) if m.contains("include")),
            "{err}"
        );
    }

    #[test]
    fn plan_from_in_memory_trees() {
        let s = sel(&[], &[]);
        let mut plan = Plan::new(Path::new("/restore"));
        let mut link_a = file("a", &[1, 2]);
        link_a.links = 2;
        link_a.inode = 7;
        link_a.device_id = 3;
        let mut link_b = link_a.clone();
        link_b.name = b"b".to_vec();
        let mut sym = Node::new(b"s".to_vec(), NodeType::Symlink);
        sym.linktarget = b"a".to_vec();
        let sock = Node::new(b"sock".to_vec(), NodeType::Socket);
        let bad = file("..", &[]);
        let root = Tree {
            nodes: vec![bad, link_a, link_b, dir("d", 9), sym, sock],
        };
        let descend = plan.add_tree(0, root, &s).unwrap();
        assert_eq!(descend, vec![(TreeId(Id([9; 32])), 1)]);
        let sub = Tree {
            nodes: vec![file("e", &[])],
        };
        assert!(plan.add_tree(1, sub, &s).unwrap().is_empty());

        assert_eq!(plan.errors.len(), 1, "{:?}", plan.errors);
        assert_eq!(plan.dirs.len(), 2);
        assert_eq!(plan.dirs[1].target, Path::new("/restore/d"));
        assert_eq!(plan.dirs[1].location, b"/d");
        assert_eq!(plan.dirs[1].depth, 1);
        let files: Vec<_> = plan.files.iter().map(|f| loc_str(&f.location)).collect();
        assert_eq!(files, ["/a", "/d/e"]);
        assert_eq!(plan.links.len(), 1);
        assert_eq!(plan.links[0].target, Path::new("/restore/b"));
        assert_eq!(
            target_path(&plan.dirs[0].target, &plan.files[1].location),
            Path::new("/restore/d/e")
        );
        assert_eq!(target_path(Path::new("/"), b"/d/e"), Path::new("/d/e"));
        assert_eq!(target_path(Path::new("r/"), b"/e"), Path::new("r/e"));
        assert_eq!(
            target_path(Path::new(""), b"/dev/vdb"),
            Path::new("/dev/vdb")
        );
        assert_eq!(plan.links[0].file, 0);
        // Sockets are recreated (restic skips them).
        assert_eq!(plan.specials.len(), 2);
        assert_eq!(plan.specials[0].location, b"/s");
        assert_eq!(plan.specials[1].location, b"/sock");
    }

    #[test]
    fn plan_with_include_marks_parents_restored() {
        let s = sel(&["/x/y/f"], &[]);
        let mut plan = Plan::new(Path::new("/t"));
        let d = plan
            .add_tree(
                0,
                Tree {
                    nodes: vec![dir("w", 1), dir("x", 2)],
                },
                &s,
            )
            .unwrap();
        assert_eq!(d, vec![(TreeId(Id([2; 32])), 1)]);
        let d = plan
            .add_tree(
                1,
                Tree {
                    nodes: vec![dir("y", 3), dir("z", 4)],
                },
                &s,
            )
            .unwrap();
        assert_eq!(d, vec![(TreeId(Id([3; 32])), 2)]);
        assert!(!plan.dirs[1].restored);
        plan.add_tree(
            2,
            Tree {
                nodes: vec![file("f", &[5]), file("g", &[6])],
            },
            &s,
        )
        .unwrap();
        assert_eq!(plan.files.len(), 1);
        assert!(plan.dirs.iter().all(|d| d.restored));
        assert!(plan.dirs.iter().skip(1).all(|d| !d.selected));
    }

    fn need(offset: u32, length: u32) -> BlobNeed {
        BlobNeed {
            id: BlobId(Id([offset as u8; 32])),
            loc: BlobLocation {
                pack: PackId::default(),
                blob_type: crate::format::BlobType::Data,
                offset,
                length,
                uncompressed_length: None,
            },
            targets: vec![(0, 0)],
        }
    }

    #[test]
    fn ranges_merge_small_gaps_only() {
        let blobs = vec![need(0, 100), need(100, 50), need(200, 10), need(5000, 10)];
        let r = merge_ranges(&blobs, 1000, 1 << 20);
        assert_eq!(
            r,
            vec![
                PackRange {
                    range: 0..210,
                    blobs: 0..3
                },
                PackRange {
                    range: 5000..5010,
                    blobs: 3..4
                },
            ]
        );
        let r = merge_ranges(&blobs, 1 << 20, 1 << 20);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].range, 0..5010);
        // The length cap splits even adjacent blobs.
        let r = merge_ranges(&blobs, 1 << 20, 160);
        assert_eq!(
            r.iter().map(|p| p.blobs.clone()).collect::<Vec<_>>(),
            vec![0..2, 2..3, 3..4]
        );
        assert!(merge_ranges(&[], 1, 1).is_empty());
    }

    #[test]
    fn plain_length_uses_uncompressed_or_strips_overhead() {
        let mut b = need(0, 132);
        assert_eq!(plain_length(&b.loc), 100);
        b.loc.uncompressed_length = Some(4096);
        assert_eq!(plain_length(&b.loc), 4096);
    }

    #[test]
    fn verify_detects_changed_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"helloworld").unwrap();
        let mut pf = PlanFile {
            location: b"/f".to_vec().into(),
            meta: fsw::Metadata::take(&mut Node::new(b"f".to_vec(), NodeType::File)),
            content: vec![BlobId(Id::hash(b"hello")), BlobId(Id::hash(b"world"))].into(),
            dir: 0,
            size: 10,
            blob_lengths: vec![5, 5],
        };
        assert_eq!(verify_file(&path, &pf), Ok(()));
        std::fs::write(&path, b"helloWorld").unwrap();
        assert!(verify_file(&path, &pf).unwrap_err().contains("offset 5"));
        std::fs::write(&path, b"helloworld!").unwrap();
        assert!(verify_file(&path, &pf).unwrap_err().contains("longer"));
        pf.blob_lengths = vec![5];
        pf.content = vec![BlobId(Id::hash(b"hello"))].into();
        std::fs::write(&path, b"hello").unwrap();
        assert_eq!(verify_file(&path, &pf), Ok(()));
    }
}

#[cfg(test)]
mod e2e_tests {
    use super::*;
    use crate::crypto::KdfParams;
    use crate::error::ErrorClass;
    use crate::ops::backup::{BackupOptions, backup};
    use crate::repo::{InitOptions, SnapshotFilter};
    use crate::storage::FileType;
    use crate::storage::Storage;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;
    use rand::{RngCore, SeedableRng};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::time::{Duration, SystemTime};

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    struct Fixture {
        _dir: tempfile::TempDir,
        src: PathBuf,
        out: PathBuf,
        store: Arc<InMemory>,
        repo: Repository,
        snap: SnapshotFile,
        big: Vec<u8>,
    }

    async fn fixture() -> std::result::Result<Fixture, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let src = dir.path().join("src");
        let out = dir.path().join("out");
        std::fs::create_dir_all(src.join("sub/deep"))?;
        let mut big = vec![0u8; 3 << 20];
        rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut big);
        std::fs::write(src.join("big"), &big)?;
        std::fs::write(src.join("dup"), &big)?;
        std::fs::hard_link(src.join("big"), src.join("hl"))?;
        std::fs::write(src.join("small"), b"hello")?;
        std::fs::write(src.join("empty"), b"")?;
        std::os::unix::fs::symlink("small", src.join("link"))?;
        std::fs::write(src.join("sub/deep/f"), b"deep file")?;
        std::fs::set_permissions(src.join("small"), std::fs::Permissions::from_mode(0o640))?;
        std::fs::set_permissions(src.join("sub"), std::fs::Permissions::from_mode(0o750))?;
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        File::open(src.join("sub"))?.set_modified(when)?;

        let store = Arc::new(InMemory::new());
        let storage = Storage::from_store(store.clone(), "", "mem:".into());
        let init = InitOptions {
            kdf: KdfParams {
                n: 1024,
                r: 8,
                p: 1,
            },
            ..InitOptions::default()
        };
        let repo = Repository::init(storage, "pw", &init).await?;
        let opts = BackupOptions {
            paths: vec![src.clone()],
            ..BackupOptions::default()
        };
        let summary = backup(&repo, &opts, Arc::new(Progress::default())).await?;
        assert!(summary.errors.is_empty(), "{:?}", summary.errors);
        let (_, snap) = repo
            .find_snapshot("latest", &SnapshotFilter::default())
            .await?;
        Ok(Fixture {
            _dir: dir,
            src,
            out,
            store,
            repo,
            snap,
            big,
        })
    }

    fn inside(out: &Path, src: &Path) -> PathBuf {
        out.join(src.strip_prefix("/").unwrap_or(src))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn restore_ls_dump_and_cat_round_trip() -> TestResult {
        let f = fixture().await?;
        let progress = Arc::new(Progress::default());
        let opts = RestoreOptions {
            target: f.out.clone(),
            verify: true,
            restore_owner: false,
            ..RestoreOptions::default()
        };
        let summary = restore(&f.repo, &f.snap, &opts, Arc::clone(&progress)).await?;
        assert!(summary.errors.is_empty(), "{:?}", summary.errors);
        let r = inside(&f.out, &f.src);
        assert_eq!(std::fs::read(r.join("big"))?, f.big);
        assert_eq!(std::fs::read(r.join("dup"))?, f.big);
        assert_eq!(std::fs::read(r.join("small"))?, b"hello");
        assert_eq!(std::fs::read(r.join("empty"))?, b"");
        assert_eq!(std::fs::read(r.join("sub/deep/f"))?, b"deep file");
        assert_eq!(std::fs::read_link(r.join("link"))?, Path::new("small"));
        assert_eq!(
            std::fs::metadata(r.join("big"))?.ino(),
            std::fs::metadata(r.join("hl"))?.ino()
        );
        assert_eq!(std::fs::metadata(r.join("small"))?.mode() & 0o777, 0o640);
        let sub = std::fs::metadata(r.join("sub"))?;
        assert_eq!(sub.mode() & 0o777, 0o750);
        assert_eq!(sub.mtime(), 1_600_000_000);
        assert_eq!(summary.bytes_restored, 2 * f.big.len() as u64 + 5 + 9);
        assert_eq!(summary.files_restored, 7);
        assert!(summary.dirs_restored >= 3);
        assert_eq!(progress.snapshot().files_done, 7);

        // Include: only the deep file and its parents.
        let only = f.out.with_file_name("only");
        let deep = format!("{}/sub/deep/f", f.src.display());
        let opts = RestoreOptions {
            target: only.clone(),
            includes: vec![deep],
            restore_owner: false,
            ..RestoreOptions::default()
        };
        let summary = restore(&f.repo, &f.snap, &opts, Arc::new(Progress::default())).await?;
        assert!(summary.errors.is_empty(), "{:?}", summary.errors);
        let r = inside(&only, &f.src);
        assert_eq!(std::fs::read(r.join("sub/deep/f"))?, b"deep file");
        assert!(!r.join("big").exists());
        assert_eq!(summary.files_restored, 1);
        // The parent's metadata is restored too, as restic does.
        assert_eq!(std::fs::metadata(r.join("sub"))?.mtime(), 1_600_000_000);

        // ls and dump.
        let index = f.repo.load_index().await?;
        let src_path = f.src.display().to_string();
        let all = crate::ops::ls::ls(&f.repo, &index, f.snap.tree, None, true).await?;
        let paths: Vec<&str> = all.iter().map(|(p, _)| p.as_str()).collect();
        assert!(paths.contains(&format!("{src_path}/sub/deep/f").as_str()));
        let direct =
            crate::ops::ls::ls(&f.repo, &index, f.snap.tree, Some(&src_path), false).await?;
        let names: Vec<String> = direct
            .iter()
            .map(|(p, _)| p.trim_start_matches(&src_path).to_string())
            .collect();
        assert_eq!(
            names,
            ["/big", "/dup", "/empty", "/hl", "/link", "/small", "/sub"]
        );
        let mut out: Vec<u8> = Vec::new();
        let n = crate::ops::dump::dump_file(
            &f.repo,
            &index,
            f.snap.tree,
            &format!("{src_path}/dup"),
            &mut out,
        )
        .await?;
        assert_eq!(n, f.big.len() as u64);
        assert!(out == f.big);
        let mut tar: Vec<u8> = Vec::new();
        let n = crate::ops::dump::dump_file(
            &f.repo,
            &index,
            f.snap.tree,
            &format!("{src_path}/sub"),
            &mut tar,
        )
        .await?;
        assert_eq!(n as usize, tar.len());
        assert_eq!(tar.len() % 512, 0);
        let first = String::from_utf8_lossy(&tar[..100])
            .trim_end_matches('\0')
            .to_string();
        assert_eq!(
            first,
            format!("{}/sub/deep/", src_path.trim_start_matches('/'))
        );
        let err = crate::ops::dump::dump_file(&f.repo, &index, f.snap.tree, "/nope", &mut out)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");

        // cat.
        let config = crate::ops::cat::cat(&f.repo, "config", None).await?;
        let v: serde_json::Value = serde_json::from_slice(&config)?;
        assert_eq!(v["version"], 2);
        let snap = crate::ops::cat::cat(&f.repo, "snapshot", Some("latest")).await?;
        let v: serde_json::Value = serde_json::from_slice(&snap)?;
        assert_eq!(v["tree"], f.snap.tree.to_hex());
        let tree = crate::ops::cat::cat(&f.repo, "blob", Some(&f.snap.tree.to_hex())).await?;
        assert_eq!(Id::hash(&tree), f.snap.tree.0);
        let err = crate::ops::cat::cat(&f.repo, "bogus", None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("masterkey"), "{err}");
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corrupt_pack_fails_the_restore() -> TestResult {
        let f = fixture().await?;
        // The biggest pack holds the file data.
        let packs = f.repo.storage().list(FileType::Pack).await?;
        let (pack, _) = packs
            .iter()
            .max_by_key(|(_, size)| *size)
            .ok_or("no packs")?;
        let hex = pack.to_hex();
        let path = object_store::path::Path::from(format!("data/{}/{hex}", &hex[..2]));
        let mut bytes = f.store.get(&path).await?.bytes().await?.to_vec();
        bytes[100] ^= 0xff;
        f.store.put(&path, bytes.into()).await?;
        let opts = RestoreOptions {
            target: f.out.clone(),
            restore_owner: false,
            ..RestoreOptions::default()
        };
        let err = restore(&f.repo, &f.snap, &opts, Arc::new(Progress::default()))
            .await
            .unwrap_err();
        assert_eq!(err.class(), ErrorClass::Corrupt, "{err}");
        assert!(err.to_string().contains(&hex), "{err}");
        Ok(())
    }
}
