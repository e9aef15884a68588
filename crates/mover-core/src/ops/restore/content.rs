//! The content phase: which blobs each pack holds for which files, merged range reads of
//! the packs, and the writes that put the blobs in place.

use super::buffers::BlobBuffers;
use super::plan::{PlanFile, loc_str, target_path};
use crate::error::{Error, Result};
use crate::format::index::IndexBlob;
use crate::format::tree::{Node, NodeType};
use crate::format::{BlobId, Id, PackId};
use crate::fs::direct::{TargetFile, align};
use crate::fs::write as fsw;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::index::{BlobLocation, MasterIndex};
use crate::repo::packer::{open_blob_in_place, open_blob_in_place_to_slice};
use crate::repo::ranges::merge_spans;
use futures::{StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Blobs of one pack closer than this are fetched with one range read.
const MAX_RANGE_GAP_BYTES: u64 = 1 << 20;
/// A merged range read stops growing at this size (one blob may still exceed it).
const MAX_RANGE_BYTES: u64 = 2 << 20;
/// Files kept open while one pack range is written.
const MAX_OPEN_FILES_PER_RANGE: usize = 32;
/// Largest staging buffer taken for copying a blob's whole pages out to direct writes (a
/// larger blob is copied and written in parts of this size).
const COPY_STAGING_BYTES: usize = 1 << 20;

/// One blob needed from a pack and every place it is written.
#[derive(Debug, Clone)]
pub(crate) struct BlobNeed {
    pub(crate) id: BlobId,
    pub(crate) loc: BlobLocation,
    /// `(file index, offset in the file)`.
    pub(crate) targets: Vec<(u32, u64)>,
}

fn blob_end(loc: &BlobLocation) -> u64 {
    u64::from(loc.offset) + u64::from(loc.length)
}

pub(crate) fn plain_length(loc: &BlobLocation) -> u32 {
    loc.plaintext_len()
}

/// Looks up every content blob, fills in file sizes and returns the needs grouped by pack
/// (blobs sorted by offset). A blob missing from the index is fatal.
pub(super) fn group_by_pack(
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
pub(super) struct ContentState {
    /// Restore root: file targets are [`target_path`] of it and their locations.
    pub(super) root: PathBuf,
    pub(super) files: Arc<Vec<PlanFile>>,
    pub(super) failed: Vec<AtomicBool>,
    pub(super) remaining: Vec<AtomicUsize>,
    pub(super) errors: Mutex<Vec<String>>,
    pub(super) bytes: AtomicU64,
    pub(super) progress: Arc<Progress>,
    /// All-zero blobs are not written (the target already reads zeros there).
    pub(super) skip_zero_blobs: bool,
    /// Whole pages are written with O_DIRECT (see `fs::direct`).
    pub(super) direct_io: bool,
    /// Staging and opening buffers, lent one blob at a time.
    pub(super) buffers: BlobBuffers,
    /// Files created by their first write (see [`create_entries`]); empty for none.
    pub(super) deferred: Vec<bool>,
    /// With options, a file's metadata is put back as soon as its last blob is written.
    pub(super) early_metadata: Option<fsw::RestoreOptions>,
    /// Files whose metadata is back.
    pub(super) metadata_done: Vec<AtomicBool>,
}

impl ContentState {
    pub(super) fn new(
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
            buffers: BlobBuffers::default(),
            deferred: Vec::new(),
            early_metadata: None,
            metadata_done: Vec::new(),
        }
    }

    /// Files flagged in `deferred` are created by their first write, and with
    /// `early_metadata` each file gets its metadata back once its content is complete, so
    /// that both overlap the content phase instead of being phases of their own.
    pub(super) fn finish_files_early(
        mut self,
        deferred: Vec<bool>,
        early_metadata: Option<fsw::RestoreOptions>,
    ) -> ContentState {
        self.metadata_done = self.files.iter().map(|_| AtomicBool::new(false)).collect();
        self.deferred = deferred;
        self.early_metadata = early_metadata;
        self
    }

    pub(super) fn open_target(&self, file: usize) -> std::io::Result<TargetFile> {
        let path = self.target(file);
        if self.deferred.get(file).copied().unwrap_or(false) {
            let mode = self.files[file].meta.creation_mode();
            TargetFile::create_or_open(&path, self.direct_io, mode)
        } else {
            TargetFile::open(&path, self.direct_io)
        }
    }

    /// Marks a file's metadata as dealt with (a file the restore leaves alone).
    pub(super) fn mark_metadata_done(&self, file: usize) {
        if let Some(d) = self.metadata_done.get(file) {
            d.store(true, Ordering::Release);
        }
    }

    /// Whether the file's metadata was already put back in the content phase.
    pub(super) fn metadata_done(&self, file: usize) -> bool {
        self.metadata_done
            .get(file)
            .is_some_and(|d| d.load(Ordering::Acquire))
    }

    pub(super) fn target(&self, file: usize) -> PathBuf {
        target_path(&self.root, &self.files[file].location)
    }

    pub(super) fn fail(&self, file: usize, msg: String) {
        if !self.failed[file].swap(true, Ordering::AcqRel) {
            if let Ok(mut errors) = self.errors.lock() {
                errors.push(msg);
            }
            self.progress.add_error();
        }
    }

    pub(super) fn is_failed(&self, file: usize) -> bool {
        self.failed[file].load(Ordering::Acquire)
    }

    /// Counts one written blob of `file`; once the file is complete its metadata goes back
    /// (with early metadata), through `handle` when the caller has the file open.
    pub(super) fn blob_written(&self, file: usize, handle: Option<&File>) {
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
    data: &mut [u8],
    range_start: u64,
    blobs: &[BlobNeed],
    state: &ContentState,
) -> Result<()> {
    let mut open: HashMap<u32, TargetFile> = HashMap::new();
    for b in blobs {
        let from = (u64::from(b.loc.offset) - range_start) as usize;
        let to = from + b.loc.length as usize;
        let sealed = data.get_mut(from..to).ok_or_else(|| {
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
        let corrupt = |e: crate::repo::packer::PackReadError| {
            Error::corrupt(
                format!("blob {} in pack {pack} at offset {}", b.id, b.loc.offset),
                e.to_string(),
            )
        };
        if let Some((fi, offset)) = window_target(b, state) {
            // The blob is opened straight into an aligned staging buffer, at its offset's
            // position within a page, and its whole pages are written from there at once.
            let len = plain_length(&b.loc) as usize;
            let lead = (offset % align() as u64) as usize;
            let mut staging = state.buffers.take_staging(lead + len);
            let window = lead..lead + len;
            open_blob_in_place_to_slice(
                key,
                sealed,
                &ib,
                &mut staging.as_mut_slice()[window.clone()],
            )
            .map_err(corrupt)?;
            if let Some(file) = open_file(&mut open, state, fi) {
                let written = file.write_window(&staging, offset - lead as u64, window);
                record_write(state, fi, len, file, written);
            }
            state.buffers.give_staging(staging);
            continue;
        }
        let mut buf = state.buffers.take_plain();
        let plain = open_blob_in_place(key, sealed, &ib, &mut buf).map_err(corrupt)?;
        write_targets(b, plain, state, &mut open);
        state.buffers.give_plain(buf);
    }
    Ok(())
}

/// Writes the opened blob `plain` to every place of `b` in files not failed.
fn write_targets(
    b: &BlobNeed,
    plain: &[u8],
    state: &ContentState,
    open: &mut HashMap<u32, TargetFile>,
) {
    let skip = state.skip_zero_blobs && crate::fs::block::is_zero(plain);
    let mut staging = None;
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
        let Some(file) = open_file(open, state, fi) else {
            continue;
        };
        let written = if state.skip_zero_blobs {
            file.buffered()
                .and_then(|h| crate::fs::block::write_skipping_zeros(h, plain, offset, 64 * 1024))
        } else {
            let staging = staging.get_or_insert_with(|| {
                state
                    .buffers
                    .take_staging(plain.len().min(COPY_STAGING_BYTES))
            });
            file.write_at(plain, offset, staging)
        };
        record_write(state, fi, plain.len(), file, written);
    }
    if let Some(staging) = staging {
        state.buffers.give_staging(staging);
    }
}

/// The one place of a blob that is written from the aligned staging buffer: only with
/// direct writes, for a blob with a single target (not failed) that covers a whole page.
fn window_target(b: &BlobNeed, state: &ContentState) -> Option<(u32, u64)> {
    if !state.direct_io || state.skip_zero_blobs {
        return None;
    }
    let [(fi, offset)] = b.targets.as_slice() else {
        return None;
    };
    if state.is_failed(*fi as usize) {
        return None;
    }
    let page = align() as u64;
    let end = offset + u64::from(plain_length(&b.loc));
    (offset.div_ceil(page) * page + page <= end).then_some((*fi, *offset))
}

/// The handle of file `fi` for this range, opened on first use; `None`, with the file
/// marked failed, if it cannot be opened.
fn open_file<'a>(
    open: &'a mut HashMap<u32, TargetFile>,
    state: &ContentState,
    fi: u32,
) -> Option<&'a mut TargetFile> {
    // A range of small files touches many of them; keep only a few open so that several
    // ranges written at once stay well inside the open-file limit.
    if open.len() >= MAX_OPEN_FILES_PER_RANGE && !open.contains_key(&fi) {
        open.clear();
    }
    match open.entry(fi) {
        std::collections::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
        std::collections::hash_map::Entry::Vacant(e) => match state.open_target(fi as usize) {
            Ok(file) => Some(e.insert(file)),
            Err(err) => {
                let path = state.target(fi as usize);
                state.fail(fi as usize, format!("opening {}: {err}", path.display()));
                None
            }
        },
    }
}

/// Counts a write of `len` bytes into file `fi`, or fails the file.
fn record_write(
    state: &ContentState,
    fi: u32,
    len: usize,
    file: &TargetFile,
    written: std::io::Result<()>,
) {
    let f = fi as usize;
    if let Err(err) = written {
        let path = state.target(f);
        state.fail(f, format!("writing {}: {err}", path.display()));
        return;
    }
    state.progress.add_bytes(len as u64);
    state.bytes.fetch_add(len as u64, Ordering::Relaxed);
    state.blob_written(f, Some(file.file()));
}

/// Reads and writes the blobs of `packs` (blobs sorted by offset): each pack's blobs are
/// merged into range reads, and the ranges of all packs, pack after pack, are the units of
/// work. `concurrency` ranges are opened and written at once while half as many more are
/// read, so the disk and the cores stay busy to the last range rather than to the last
/// pack. Most of a range write's time is spent waiting for its direct writes, so more
/// range writes than cores keep more writes queued at the disk: 16 against 8 cut a /usr
/// restore by about a tenth. What each one holds is its range (up to 2 MiB) and, while it
/// writes a blob, a staging buffer the size of that blob (see [`BlobBuffers`]).
pub(super) async fn restore_packs(
    repo: &Repository,
    packs: Vec<(PackId, Vec<BlobNeed>)>,
    state: &Arc<ContentState>,
    concurrency: usize,
) -> Result<()> {
    let concurrency = concurrency.max(1);
    let reads_ahead = (concurrency / 2).max(1);
    let ranges = packs.into_iter().flat_map(|(pack, blobs)| {
        let spans = blobs
            .iter()
            .map(|b| u64::from(b.loc.offset)..blob_end(&b.loc));
        let ranges = merge_spans(spans, MAX_RANGE_GAP_BYTES, MAX_RANGE_BYTES);
        let blobs = Arc::new(blobs);
        ranges
            .into_iter()
            .map(move |r| (pack, Arc::clone(&blobs), r))
    });
    futures::stream::iter(ranges)
        .map(|(pack, blobs, r)| async move {
            let data = repo.read_pack_range_mut(&pack, r.range.clone()).await?;
            Ok::<_, Error>((pack, blobs, r, data))
        })
        .buffer_unordered(reads_ahead)
        .map_ok(|(pack, blobs, r, mut data)| {
            let key = repo.key_arc();
            let state = Arc::clone(state);
            async move {
                tokio::task::spawn_blocking(move || {
                    let blobs = &blobs[r.items.clone()];
                    write_range(&key, &pack, &mut data, r.range.start, blobs, &state)
                })
                .await
                .map_err(|e| Error::task(format!("the restore task for pack {pack}"), e))?
            }
        })
        .try_buffer_unordered(concurrency)
        .try_collect::<()>()
        .await
}

/// Re-reads a restored file and checks each chunk against its blob id.
pub(super) fn verify_file(path: &Path, file: &PlanFile) -> std::result::Result<(), String> {
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
    restore_packs(repo, packs, &state, pack_concurrency).await?;
    let errors = state.errors.lock().map(|e| e.clone()).unwrap_or_default();
    if let Some(first) = errors.first() {
        return Err(Error::Incomplete {
            what: "restoring the volume".into(),
            count: errors.len(),
            first: first.clone(),
        });
    }
    Ok(state.bytes.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

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
