//! Restoring one file node of a snapshot (a volume stored by [`super::backup_volume`] or by
//! `restic backup --stdin`) onto a block device or into an image file, at the right offsets,
//! pack by pack in parallel (the range reads and writes of `ops::restore`). On a file, zero
//! regions become holes; on a device they are zeroed unless the target is known zeroed.
//! Never resolves snapshots or takes locks: the caller does.

use super::ZeroIds;
use crate::error::{Error, Result};
use crate::format::snapshot::SnapshotFile;
use crate::format::tree::NodeType;
use crate::format::{BlobId, Id, PackId};
use crate::fs::block::{VolumeKind, is_zero, volume_kind, volume_size};
use crate::ops::dump::{Found, lookup};
use crate::ops::restore::{BlobNeed, plain_length, restore_blobs_into};
use crate::progress::Progress;
use crate::repo::lock::{self, LockMode, LockOptions};
use rayon::prelude::*;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Knobs for [`restore_volume`].
#[derive(Debug, Clone)]
pub struct VolumeRestoreOptions {
    /// Block device or image file to write; a file is created (or replaced).
    pub target: PathBuf,
    /// The file inside the snapshot; default: the snapshot's only path.
    pub file: Option<String>,
    /// The target device already reads zeros everywhere: zero regions are not written.
    pub zeroed_target: bool,
    /// Re-read the target and check every chunk against its blob id.
    pub verify: bool,
    /// Packs fetched and written at once.
    pub pack_concurrency: usize,
    /// The shared lock the restore holds, as a backup holds its own.
    pub lock: LockOptions,
}

impl Default for VolumeRestoreOptions {
    fn default() -> Self {
        VolumeRestoreOptions {
            target: PathBuf::new(),
            file: None,
            zeroed_target: false,
            verify: false,
            pack_concurrency: 8,
            lock: LockOptions::default(),
        }
    }
}

/// What a volume restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VolumeRestoreSummary {
    /// Length of the stored volume.
    pub size: u64,
    /// Bytes of blobs placed on the target (zero blobs included, written or not).
    pub bytes_restored: u64,
    /// Bytes of known zero regions that were left as holes or not written.
    pub zero_bytes_skipped: u64,
    pub verified: bool,
}

/// One chunk of the volume: where it goes and what it is.
struct Placement {
    id: BlobId,
    offset: u64,
    len: u64,
    zero: bool,
}

/// Restores the volume file of `snapshot` onto `opts.target`.
pub async fn restore_volume(
    repo: &crate::repo::Repository,
    snapshot: &SnapshotFile,
    opts: &VolumeRestoreOptions,
    progress: Arc<Progress>,
) -> Result<VolumeRestoreSummary> {
    let work = restore_volume_locked(repo, snapshot, opts, progress);
    lock::while_locked_loading_index(repo, LockMode::Shared, &opts.lock, work).await
}

/// [`restore_volume`] under the lock it holds.
async fn restore_volume_locked(
    repo: &crate::repo::Repository,
    snapshot: &SnapshotFile,
    opts: &VolumeRestoreOptions,
    progress: Arc<Progress>,
) -> Result<VolumeRestoreSummary> {
    let path = match (&opts.file, snapshot.paths.as_slice()) {
        (Some(f), _) => f.clone(),
        (None, [only]) => only.clone(),
        (None, paths) => {
            return Err(Error::InvalidInput(format!(
                "snapshot has {} paths {paths:?}; name the volume file to restore",
                paths.len()
            )));
        }
    };
    let index = repo.load_index().await?;
    let node = match lookup(repo, &index, snapshot.tree, &path).await? {
        Found::Node(_, node) if node.node_type == NodeType::File => node,
        _ => {
            return Err(Error::InvalidInput(format!(
                "{path:?} in the snapshot is not a file"
            )));
        }
    };
    let content = node.content.unwrap_or_default();

    // Layout of the volume, and which chunks are zeros (only repeated ones are checked:
    // one SHA-256 of zeros per distinct length).
    let mut repeats: HashMap<BlobId, u32> = HashMap::new();
    for id in &content {
        *repeats.entry(*id).or_default() += 1;
    }
    let mut max_len = 0u64;
    let mut placements = Vec::with_capacity(content.len());
    let mut offset = 0u64;
    for id in &content {
        let loc = index.get(id).ok_or_else(|| {
            Error::corrupt(
                format!("data blob {id} of {path}"),
                "not in the repository index",
            )
        })?;
        let len = u64::from(plain_length(&loc));
        max_len = max_len.max(len);
        placements.push((*id, offset, len, loc));
        offset += len;
    }
    let size = offset;
    let zero_ids = ZeroIds::new(max_len as usize);
    let placements: Vec<(Placement, crate::repo::index::BlobLocation)> = placements
        .into_iter()
        .map(|(id, offset, len, loc)| {
            let zero = repeats.get(&id).is_some_and(|&n| n > 1) && zero_ids.id(len as usize) == id;
            (
                Placement {
                    id,
                    offset,
                    len,
                    zero,
                },
                loc,
            )
        })
        .collect();

    let target = opts.target.clone();
    let kind = match volume_kind(&target) {
        Ok(k) => k,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => VolumeKind::RegularFile,
        Err(e) => return Err(Error::io(target.display().to_string(), e)),
    };
    let sparse = match kind {
        VolumeKind::BlockDevice => {
            let mut dev =
                File::open(&target).map_err(|e| Error::io(target.display().to_string(), e))?;
            let dev_size =
                volume_size(&mut dev).map_err(|e| Error::io(target.display().to_string(), e))?;
            if dev_size < size {
                return Err(Error::InvalidInput(format!(
                    "device {} holds {dev_size} bytes, the volume needs {size}",
                    target.display()
                )));
            }
            opts.zeroed_target
        }
        VolumeKind::RegularFile => {
            crate::fs::write::create_file(&target, size)
                .map_err(|e| Error::io(target.display().to_string(), e))?;
            true
        }
        VolumeKind::Other => {
            return Err(Error::InvalidInput(format!(
                "restore target {} is neither a block device nor a file",
                target.display()
            )));
        }
    };

    let mut by_pack: HashMap<PackId, HashMap<BlobId, BlobNeed>> = HashMap::new();
    let mut zero_ranges: Vec<Range<u64>> = Vec::new();
    let mut zero_bytes = 0u64;
    for (p, loc) in &placements {
        if p.zero {
            zero_bytes += p.len;
            match zero_ranges.last_mut() {
                Some(last) if last.end == p.offset => last.end += p.len,
                _ => zero_ranges.push(p.offset..p.offset + p.len),
            }
            continue;
        }
        by_pack
            .entry(loc.pack)
            .or_default()
            .entry(p.id)
            .or_insert_with(|| BlobNeed {
                id: p.id,
                loc: *loc,
                targets: Vec::new(),
            })
            .targets
            .push((0, p.offset));
    }
    let by_pack = by_pack
        .into_iter()
        .map(|(pack, blobs)| (pack, blobs.into_values().collect()))
        .collect();
    if !sparse {
        let t = target.clone();
        let ranges = zero_ranges;
        tokio::task::spawn_blocking(move || write_zero_ranges(&t, &ranges))
            .await
            .map_err(|e| Error::task("the zeroing task", e))??;
    }
    progress.add_bytes(zero_bytes);
    let written = restore_blobs_into(
        repo,
        &target,
        by_pack,
        sparse,
        opts.pack_concurrency,
        Arc::clone(&progress),
    )
    .await?;
    let t = target.clone();
    tokio::task::spawn_blocking(move || {
        OpenOptions::new()
            .write(true)
            .open(&t)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(format!("syncing {}", t.display()), e))
    })
    .await
    .map_err(|e| Error::task("the sync task", e))??;

    if opts.verify {
        let t = target.clone();
        let list: Vec<Placement> = placements.into_iter().map(|(p, _)| p).collect();
        tokio::task::spawn_blocking(move || verify(&t, &list))
            .await
            .map_err(|e| Error::task("the verify task", e))??;
    }
    Ok(VolumeRestoreSummary {
        size,
        bytes_restored: written + zero_bytes,
        zero_bytes_skipped: if sparse { zero_bytes } else { 0 },
        verified: opts.verify,
    })
}

/// Zeroes `ranges` of a device: the kernel's zero-range where it can, else plain writes.
fn write_zero_ranges(target: &Path, ranges: &[Range<u64>]) -> Result<()> {
    let what = || target.display().to_string();
    let file = OpenOptions::new()
        .write(true)
        .open(target)
        .map_err(|e| Error::io(what(), e))?;
    const STEP: u64 = 8 << 20;
    let zeros = vec![0u8; STEP as usize];
    ranges.par_iter().try_for_each(|r| {
        let zeroed = match (i64::try_from(r.start), i64::try_from(r.end - r.start)) {
            (Ok(off), Ok(len)) => nix::fcntl::fallocate(
                &file,
                nix::fcntl::FallocateFlags::FALLOC_FL_ZERO_RANGE
                    | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                off,
                len,
            )
            .is_ok(),
            _ => false,
        };
        if zeroed {
            return Ok(());
        }
        let mut pos = r.start;
        while pos < r.end {
            let n = (r.end - pos).min(STEP) as usize;
            file.write_all_at(&zeros[..n], pos)
                .map_err(|e| Error::io(format!("{} at offset {pos}", what()), e))?;
            pos += n as u64;
        }
        Ok(())
    })
}

/// Re-reads every chunk of the target and checks it against its blob id.
fn verify(target: &Path, placements: &[Placement]) -> Result<()> {
    let what = || target.display().to_string();
    let file = File::open(target).map_err(|e| Error::io(what(), e))?;
    let bad: Vec<String> = placements
        .par_iter()
        .filter_map(|p| {
            let mut buf = vec![0u8; p.len as usize];
            if let Err(e) = file.read_exact_at(&mut buf, p.offset) {
                return Some(format!("reading at offset {}: {e}", p.offset));
            }
            let good = if p.zero {
                is_zero(&buf)
            } else {
                BlobId(Id::hash(&buf)) == p.id
            };
            (!good).then(|| format!("offset {}: content does not match blob {}", p.offset, p.id))
        })
        .collect();
    match bad.first() {
        None => Ok(()),
        Some(first) => Err(Error::corrupt(
            format!("restored volume {}", what()),
            format!("{} chunk(s) differ, first: {first}", bad.len()),
        )),
    }
}
