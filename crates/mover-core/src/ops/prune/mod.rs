//! `prune`: delete data no snapshot uses, under an exclusive lock.
//!
//! 1. Load the index (every copy of every blob) and walk every snapshot's trees to mark the
//!    blobs in use ([`crate::ops::reachable`]); refuse to go on if any is missing.
//! 2. Count each pack's used and unused bytes, then decide with restic's rules
//!    ([`plan::decide`]) what to delete, repack or keep.
//! 3. Change the repository in an order that is safe to kill at any point:
//!    delete packs no index lists; write the new packs and then the index file naming them;
//!    write replacements for the index files that list dropped packs, then delete those
//!    index files; only then delete the dropped packs. Whatever is left by a killed prune is
//!    either a duplicate the next prune counts once or a pack no index lists, which the next
//!    prune deletes first.
//!
//! Memory: the index, one byte per blob for the marks (and one more while duplicates are
//! counted), per-pack counters, and the blobs of the packs being repacked.

mod index_rewrite;
pub mod plan;
mod repack;

use crate::compress::CompressionMode;
use crate::error::{Error, Result};
use crate::format::pack::{HEADER_FIXED_SIZE, entry_size};
use crate::format::{BlobType, PackId, SnapshotId};
use crate::ops::pipeline::DEFAULT_PACK_SIZE_BYTES;
use crate::ops::reachable;
use crate::repo::Repository;
use crate::repo::index::MasterIndex;
use crate::repo::lock::{self, LockMode, LockOptions};
use crate::storage::FileType;
use futures::{StreamExt, TryStreamExt};
use plan::{MaxUnused, PackKind, PackUse, PlanOptions, PrunePlan, PruneStats};
use std::collections::HashMap;

/// Files deleted at once.
const DELETE_CONCURRENCY: usize = 8;

/// Knobs for [`prune`].
#[derive(Debug, Clone)]
pub struct PruneOptions {
    pub max_unused: MaxUnused,
    /// Repack at most this many bytes (`None`: no limit).
    pub max_repack_bytes: Option<u64>,
    pub repack_cacheable_only: bool,
    pub repack_small: bool,
    pub repack_uncompressed: bool,
    /// `--repack-smaller-than` (implies `repack_small`).
    pub repack_smaller_than: Option<u64>,
    /// Target size of the packs written by repacking (and restic's notion of a small pack).
    pub pack_size_bytes: u64,
    /// zstd level for blobs that are compressed while repacked.
    pub compression: CompressionMode,
    /// Plan and report only.
    pub dry_run: bool,
    /// Treat these snapshots as gone (`forget --prune --dry-run`).
    pub ignore_snapshots: Vec<SnapshotId>,
    pub lock: LockOptions,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: MaxUnused::Percent(5.0),
            max_repack_bytes: None,
            repack_cacheable_only: false,
            repack_small: false,
            repack_uncompressed: false,
            repack_smaller_than: None,
            pack_size_bytes: DEFAULT_PACK_SIZE_BYTES,
            compression: CompressionMode::Auto,
            dry_run: false,
            ignore_snapshots: Vec::new(),
            lock: LockOptions::default(),
        }
    }
}

/// What prune found and did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PruneSummary {
    pub stats: PruneStats,
    pub snapshots: u64,
    pub packs_written: u64,
    pub index_files_written: u64,
    pub index_files_removed: u64,
    pub packs_deleted: u64,
    pub dry_run: bool,
}

/// Prunes `repo` as `opts` says. See the module docs for the order of changes.
pub async fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneSummary> {
    let mode = if opts.dry_run {
        LockMode::Shared
    } else {
        LockMode::Exclusive
    };
    lock::while_locked(repo, mode, &opts.lock, run(repo, opts)).await
}

async fn run(repo: &Repository, opts: &PruneOptions) -> Result<PruneSummary> {
    let cancel = &opts.lock.cancel;
    let (index, index_files) = repo.load_index_files().await?;
    tracing::info!(
        blobs = index.len(),
        packs = index.pack_count(),
        "index loaded"
    );
    let roots: Vec<(SnapshotId, crate::format::TreeId)> = repo
        .list_snapshots()
        .await?
        .into_iter()
        .filter(|(id, _)| !opts.ignore_snapshots.contains(id))
        .map(|(id, s)| (id, s.tree))
        .collect();
    let reached = reachable::walk(repo, &index, &roots, true, cancel).await?;
    tracing::info!(
        snapshots = roots.len(),
        trees = reached.trees,
        data_blobs = reached.data_blobs,
        "blobs in use marked"
    );
    let mut used = reached.marks;
    let (packs, stats) = count_packs(&index, &mut used);
    let stored: Vec<(PackId, u64)> = repo
        .storage()
        .list(FileType::Pack)
        .await?
        .into_iter()
        .map(|(id, size)| (PackId(id), size))
        .collect();
    let plan_opts = PlanOptions {
        max_unused: opts.max_unused,
        max_repack_bytes: opts.max_repack_bytes.unwrap_or(u64::MAX),
        repack_cacheable_only: opts.repack_cacheable_only,
        repack_small: opts.repack_small || opts.repack_smaller_than.is_some(),
        repack_uncompressed: opts.repack_uncompressed,
        small_pack_bytes: opts.repack_smaller_than.unwrap_or(0),
        pack_size_bytes: opts.pack_size_bytes,
        repository_version: repo.version(),
    };
    let plan = plan::decide(&stored, packs, stats, &plan_opts).map_err(|e| match e {
        plan::PlanError::SmallPackTooLarge | plan::PlanError::CompressionNeedsV2 => {
            Error::InvalidInput(e.to_string())
        }
        e => Error::corrupt(
            "repository",
            format!("{e}; prune changed nothing (`restic repair index` rebuilds the index)"),
        ),
    })?;
    let mut summary = PruneSummary {
        stats: plan.stats.clone(),
        snapshots: roots.len() as u64,
        dry_run: opts.dry_run,
        ..PruneSummary::default()
    };
    if opts.dry_run {
        return Ok(summary);
    }
    execute(repo, index, &index_files, &plan, used, opts, &mut summary).await?;
    Ok(summary)
}

/// Counts every pack's used and unused blobs and bytes, restic's way: a blob with several
/// copies counts as used once (in a pack that holds other used blobs or only copies, else
/// in the last one seen) and as duplicate elsewhere.
fn count_packs(index: &MasterIndex, used: &mut [u8]) -> (HashMap<PackId, PackUse>, PruneStats) {
    let mut stats = PruneStats::default();
    let mut packs: HashMap<PackId, PackUse> = HashMap::with_capacity(index.pack_count());
    // How many copies each used blob has (saturating); only needed with duplicates.
    let mut copies: Vec<u8> = Vec::new();
    if index.duplicate_count() > 0 {
        copies = vec![0; used.len()];
        for (pos, _, _) in index.entries() {
            if used[pos] & reachable::USED != 0 {
                copies[pos] = copies[pos].saturating_add(1);
            }
        }
    }
    let copies_of = |copies: &[u8], pos: usize| copies.get(pos).copied().unwrap_or(1);
    for (pos, _, loc) in index.entries() {
        let p = packs.entry(loc.pack).or_insert_with(|| PackUse {
            used_size: HEADER_FIXED_SIZE as u64,
            ..PackUse::default()
        });
        p.used_size += entry_size(loc.uncompressed_length.is_some()) as u64;
        let kind = match loc.blob_type {
            BlobType::Data => PackKind::Data,
            BlobType::Tree => PackKind::Tree,
        };
        p.kind = match p.kind {
            PackKind::Empty => kind,
            k if k == kind => k,
            _ => PackKind::Mixed,
        };
        if loc.uncompressed_length.is_none() {
            p.uncompressed = true;
        }
        let size = u64::from(loc.length);
        let is_used = used[pos] & reachable::USED != 0;
        if is_used && copies_of(&copies, pos) >= 2 {
            p.unused_size += size;
            p.unused_blobs += 1;
            p.duplicate_blobs += 1;
            stats.size_duplicate += size;
            stats.blobs_duplicate += 1;
        } else if is_used {
            p.used_size += size;
            p.used_blobs += 1;
            stats.size_used += size;
            stats.blobs_used += 1;
        } else {
            p.unused_size += size;
            p.unused_blobs += 1;
            stats.size_unused += size;
            stats.blobs_unused += 1;
        }
    }
    if copies.is_empty() {
        return (packs, stats);
    }
    // Pick the copy that counts as used. `copies[pos]` 1 means "chosen"; 0 marks that only
    // the last copy is left to choose.
    for (pos, _, loc) in index.entries() {
        if used[pos] & reachable::USED == 0 || copies[pos] == 1 {
            continue;
        }
        let Some(p) = packs.get_mut(&loc.pack) else {
            continue;
        };
        let size = u64::from(loc.length);
        if p.used_blobs > 0 || p.duplicate_blobs == p.unused_blobs || copies[pos] == 0 {
            p.used_size += size;
            p.used_blobs += 1;
            p.unused_size -= size;
            p.unused_blobs -= 1;
            stats.size_used += size;
            stats.blobs_used += 1;
            stats.size_duplicate -= size;
            stats.blobs_duplicate -= 1;
            copies[pos] = 1;
        } else {
            copies[pos] -= 1;
            if copies[pos] == 1 {
                copies[pos] = 0;
            }
        }
    }
    (packs, stats)
}

async fn execute(
    repo: &Repository,
    index: MasterIndex,
    index_files: &[crate::repo::IndexFileSummary],
    plan: &PrunePlan,
    mut used: Vec<u8>,
    opts: &PruneOptions,
    summary: &mut PruneSummary,
) -> Result<()> {
    let cancel = &opts.lock.cancel;
    delete_packs(repo, &plan.remove_unreferenced, opts).await?;
    summary.packs_deleted += plan.remove_unreferenced.len() as u64;
    if !plan.repack.is_empty() {
        let written = repack::repack(repo, &index, plan, &mut used, opts).await?;
        summary.packs_written = written.packs;
        summary.index_files_written += written.index_files;
    }
    drop(used);
    drop(index);
    cancel.check()?;
    let dropped = plan.dropped_from_index();
    if !dropped.is_empty() {
        let rewritten = index_rewrite::rewrite(repo, index_files, &dropped, cancel).await?;
        summary.index_files_written += rewritten.written;
        summary.index_files_removed += rewritten.removed;
    }
    cancel.check()?;
    let obsolete: Vec<PackId> = plan.remove.iter().chain(&plan.repack).copied().collect();
    delete_packs(repo, &obsolete, opts).await?;
    summary.packs_deleted += obsolete.len() as u64;
    Ok(())
}

/// Deletes packs; a pack already gone is fine (a rerun after a killed prune).
async fn delete_packs(repo: &Repository, packs: &[PackId], opts: &PruneOptions) -> Result<()> {
    futures::stream::iter(packs)
        .map(|id| async move {
            opts.lock.cancel.check()?;
            repo.storage().remove(FileType::Pack, id.id()).await?;
            Ok::<(), Error>(())
        })
        .buffer_unordered(DELETE_CONCURRENCY)
        .try_collect::<()>()
        .await
}
