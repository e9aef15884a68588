//! Rewrites the index without the packs prune drops: only the index files that list a
//! dropped pack (or a pack an earlier file already lists) are replaced. Every replacement
//! is written before any replaced file is deleted, so a prune killed here leaves an index
//! that lists each kept pack at least once.

use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::format::PackId;
use crate::format::index::{IndexFile, IndexPack};
use crate::repo::{IndexFileSummary, Repository};
use crate::storage::FileType;
use futures::{StreamExt, TryStreamExt};
use std::collections::HashSet;

/// Index files read or deleted at once.
const CONCURRENCY: usize = 8;

pub(super) struct Rewritten {
    pub(super) written: u64,
    pub(super) removed: u64,
}

/// Replaces the index files of `files` that list a pack in `dropped`.
pub(super) async fn rewrite(
    repo: &Repository,
    files: &[IndexFileSummary],
    dropped: &HashSet<PackId>,
    cancel: &Cancel,
) -> Result<Rewritten> {
    // Packs listed by the files that stay; a pack is listed once in the end.
    let mut listed: HashSet<PackId> = HashSet::new();
    let mut replace = Vec::new();
    for f in files {
        let dirty = f
            .packs
            .iter()
            .any(|p| dropped.contains(p) || listed.contains(p));
        if dirty {
            replace.push(f.id);
        } else {
            listed.extend(f.packs.iter().copied());
        }
    }
    if replace.is_empty() {
        return Ok(Rewritten {
            written: 0,
            removed: 0,
        });
    }
    // restic 0.14 splits index files at 50 000 blobs in v1 and 150 000 in v2.
    let max_blobs = if repo.version() >= 2 { 150_000 } else { 50_000 };
    let mut written = 0u64;
    let mut out = IndexFile::default();
    let mut out_blobs = 0usize;
    let mut loads = futures::stream::iter(replace.iter())
        .map(|id| async move {
            let bytes = repo.load_unpacked(FileType::Index, id).await?;
            IndexFile::decode(&bytes).map_err(|e| Error::format(format!("index {id}"), e))
        })
        .buffered(CONCURRENCY);
    while let Some(file) = loads.next().await {
        cancel.check()?;
        for pack in file?.packs {
            if dropped.contains(&pack.id) || !listed.insert(pack.id) {
                continue;
            }
            out_blobs += pack.blobs.len();
            out.packs.push(IndexPack {
                id: pack.id,
                blobs: pack.blobs,
            });
            if out_blobs >= max_blobs {
                repo.save_index(&std::mem::take(&mut out)).await?;
                written += 1;
                out_blobs = 0;
            }
        }
    }
    if !out.packs.is_empty() {
        repo.save_index(&out).await?;
        written += 1;
    }
    cancel.check()?;
    futures::stream::iter(replace.iter())
        .map(|id| async move {
            repo.storage().remove(FileType::Index, id).await?;
            Ok::<(), Error>(())
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<()>()
        .await?;
    Ok(Rewritten {
        written,
        removed: replace.len() as u64,
    })
}
