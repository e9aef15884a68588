//! Copies the used blobs of the packs prune repacks into new packs, then writes the index
//! file naming those packs. Each blob is verified (MAC, decompression, SHA-256) before it
//! is copied; its sealed bytes are copied as they are unless it is to be compressed now.
//! Nothing is deleted here.

use super::PruneOptions;
use super::plan::PrunePlan;
use crate::error::{Error, Result};
use crate::format::index::IndexBlob;
use crate::format::{BlobId, BlobType, PackId};
use crate::ops::pipeline::{BlobSaver, PipelineOptions, save_indexes};
use crate::ops::reachable::USED;
use crate::repo::Repository;
use crate::repo::index::{BlobLocation, MasterIndex};
use crate::repo::packer::{SealedBlob, open_blob, seal_blob_with_id};
use crate::repo::ranges::merge_spans;
use futures::{StreamExt, TryStreamExt};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Needed blobs of one pack this close are read with one request.
const RANGE_GAP_BYTES: u64 = 1 << 20;
/// Largest range read.
const RANGE_BYTES: u64 = 8 << 20;
/// Range reads in flight.
const READ_CONCURRENCY: usize = 4;

/// What repacking wrote.
pub(super) struct Written {
    pub(super) packs: u64,
    pub(super) index_files: u64,
}

/// Copies what is still needed out of `plan.repack`. `used` holds the marks of the blobs in
/// use; it is consumed as blobs are accounted for, and a used blob found in no pack that
/// stays or is repacked stops the prune before anything is written.
pub(super) async fn repack(
    repo: &Repository,
    index: &MasterIndex,
    plan: &PrunePlan,
    used: &mut [u8],
    opts: &PruneOptions,
) -> Result<Written> {
    let repack: HashSet<PackId> = plan.repack.iter().copied().collect();
    let gone: HashSet<PackId> = plan
        .remove
        .iter()
        .chain(&plan.forget_missing)
        .chain(&plan.repack)
        .copied()
        .collect();
    // A used blob that has a copy in a pack that stays needs no copying.
    for (pos, _, loc) in index.entries() {
        if !gone.contains(&loc.pack) {
            used[pos] &= !USED;
        }
    }
    let mut wanted: HashMap<PackId, Vec<(BlobId, BlobLocation)>> = HashMap::new();
    for (pos, id, loc) in index.entries() {
        if used[pos] & USED != 0 && repack.contains(&loc.pack) {
            used[pos] &= !USED;
            wanted.entry(loc.pack).or_default().push((id, loc));
        }
    }
    if let Some(pos) = used.iter().position(|m| m & USED != 0) {
        let blob = index
            .entries()
            .find(|(p, _, _)| *p == pos)
            .map(|(_, id, _)| id.to_hex())
            .unwrap_or_default();
        return Err(Error::Internal(format!(
            "used blob {blob} has no copy in a pack that is kept or repacked; prune changed \
             nothing"
        )));
    }

    let pipeline = PipelineOptions {
        pack_size_bytes: opts.pack_size_bytes,
        compression: opts.compression,
        // The storage's rule, as for a backup.
        upload_concurrency: repo.storage().upload_concurrency(),
        ..PipelineOptions::default()
    };
    let (saver, handle) = BlobSaver::start(repo, Arc::new(MasterIndex::new()), &pipeline);
    let data_level = repo.data_zstd_level(opts.compression);
    let tree_level = repo.tree_zstd_level(opts.compression);
    let mut reads = Vec::new();
    for pack in &plan.repack {
        let Some(mut blobs) = wanted.remove(pack) else {
            continue;
        };
        blobs.sort_by_key(|(_, loc)| loc.offset);
        let compress = plan.compress.contains(pack);
        let blobs = Arc::new(blobs);
        let spans = blobs.iter().map(|(_, loc)| {
            let start = u64::from(loc.offset);
            start..start + u64::from(loc.length)
        });
        for r in merge_spans(spans, RANGE_GAP_BYTES, RANGE_BYTES) {
            reads.push((*pack, Arc::clone(&blobs), r, compress));
        }
    }
    let copied = futures::stream::iter(reads)
        .map(|(pack, blobs, r, compress)| {
            let saver = Arc::clone(&saver);
            async move {
                opts.lock.cancel.check()?;
                let data = repo.read_pack_range(&pack, r.range.clone()).await?;
                let key = repo.key_arc();
                tokio::task::spawn_blocking(move || {
                    for (id, loc) in &blobs[r.items.clone()] {
                        let from = (u64::from(loc.offset) - r.range.start) as usize;
                        let sealed =
                            data.get(from..from + loc.length as usize).ok_or_else(|| {
                                Error::corrupt(
                                    format!("pack {pack}"),
                                    format!("short read of blob {id}"),
                                )
                            })?;
                        let entry = IndexBlob {
                            id: *id,
                            blob_type: loc.blob_type,
                            offset: loc.offset,
                            length: loc.length,
                            uncompressed_length: loc.uncompressed_length,
                        };
                        let plain = open_blob(&key, sealed, &entry)
                            .map_err(|e| Error::corrupt(format!("pack {pack}"), e.to_string()))?;
                        let blob = if compress && loc.uncompressed_length.is_none() {
                            let level = match loc.blob_type {
                                BlobType::Data => data_level,
                                BlobType::Tree => tree_level,
                            };
                            seal_blob_with_id(&key, loc.blob_type, *id, &plain, level).map_err(
                                |source| Error::Pack {
                                    what: format!("storing blob {id}"),
                                    source,
                                },
                            )?
                        } else {
                            SealedBlob {
                                id: *id,
                                blob_type: loc.blob_type,
                                sealed: sealed.to_vec(),
                                uncompressed_length: loc.uncompressed_length,
                            }
                        };
                        saver.save_sealed(blob)?;
                    }
                    Ok::<u64, Error>(r.items.len() as u64)
                })
                .await
                .map_err(|e| Error::task("a repack task", e))?
            }
        })
        .buffer_unordered(READ_CONCURRENCY)
        .try_fold(0u64, |n, k| async move { Ok(n + k) })
        .await;
    let (copied, packs) = handle.finish_after(saver, copied).await?;
    tracing::info!(blobs = copied, packs = packs.len(), "repacked");
    let written = packs.len() as u64;
    // The new packs are named by an index file before any old one is touched.
    let index_files = save_indexes(repo, packs).await?.len() as u64;
    Ok(Written {
        packs: written,
        index_files,
    })
}
