//! Loading many trees at once, as walks of a whole snapshot do level by level.
//!
//! One tree per request costs a storage round trip and two hand-offs to the blocking pool
//! for a blob of a few hundred bytes; a snapshot of a system directory has tens of thousands
//! of them, all in a few tree packs. A batch is read instead with one range read per run of
//! neighbouring tree blobs, and the blobs of a range are opened and decoded in parallel.

use super::Repository;
use super::index::{BlobLocation, MasterIndex};
use super::packer;
use super::ranges::merge_spans;
use crate::error::{Error, Result};
use crate::format::index::IndexBlob;
use crate::format::tree::Tree;
use crate::format::{BlobId, BlobType, PackId, TreeId};
use futures::{StreamExt, TryStreamExt};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

/// Tree blobs of one pack this close are read together. Tree packs hold nothing but trees,
/// so a small gap costs little even over the network, and joins the trees of one level that
/// lie between others'.
const TREE_RANGE_GAP_BYTES: u64 = 64 << 10;
/// Largest range read of tree blobs.
const TREE_RANGE_BYTES: u64 = 2 << 20;
/// Range reads in flight at once.
const TREE_RANGE_CONCURRENCY: usize = 8;

/// One requested tree: where its blob is, and which request it answers.
struct Wanted {
    id: TreeId,
    loc: BlobLocation,
    slot: usize,
}

impl Repository {
    /// Loads the trees `ids` (in that order) with one range read per run of neighbouring
    /// blobs. A tree missing from the index, or whose blob does not verify or decode, fails
    /// the whole batch with an error naming it.
    pub async fn load_trees(&self, index: &MasterIndex, ids: &[TreeId]) -> Result<Vec<Tree>> {
        let mut by_pack: HashMap<PackId, Vec<Wanted>> = HashMap::new();
        for (slot, id) in ids.iter().enumerate() {
            let bid = BlobId::from(*id);
            let loc = index
                .get(&bid)
                .filter(|loc| loc.blob_type == BlobType::Tree)
                .ok_or_else(|| Error::corrupt(format!("tree {id}"), "not in any index file"))?;
            by_pack
                .entry(loc.pack)
                .or_default()
                .push(Wanted { id: *id, loc, slot });
        }
        let mut reads = Vec::new();
        for (pack, mut wanted) in by_pack {
            wanted.sort_by_key(|w| (w.loc.offset, w.slot));
            let wanted = Arc::new(wanted);
            let spans = wanted.iter().map(|w| {
                let start = u64::from(w.loc.offset);
                start..start + u64::from(w.loc.length)
            });
            for r in merge_spans(spans, TREE_RANGE_GAP_BYTES, TREE_RANGE_BYTES) {
                reads.push((pack, Arc::clone(&wanted), r));
            }
        }
        let decoded: Vec<Vec<(usize, Tree)>> = futures::stream::iter(reads)
            .map(|(pack, wanted, r)| async move {
                let data = self.read_pack_range(&pack, r.range.clone()).await?;
                let key = self.key_arc();
                tokio::task::spawn_blocking(move || {
                    wanted[r.items.clone()]
                        .par_iter()
                        .map(|w| {
                            let from = (u64::from(w.loc.offset) - r.range.start) as usize;
                            let sealed =
                                data.get(from..from + w.loc.length as usize)
                                    .ok_or_else(|| {
                                        Error::corrupt(
                                            format!("pack {pack}"),
                                            format!("short read for tree {}", w.id),
                                        )
                                    })?;
                            decode_tree(&key, &pack, sealed, w).map(|t| (w.slot, t))
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .await
                .map_err(|e| Error::task("a tree decode task", e))?
            })
            .buffer_unordered(TREE_RANGE_CONCURRENCY)
            .try_collect()
            .await?;
        let mut out: Vec<Option<Tree>> = ids.iter().map(|_| None).collect();
        for (slot, tree) in decoded.into_iter().flatten() {
            out[slot] = Some(tree);
        }
        out.into_iter()
            .zip(ids)
            .map(|(t, id)| {
                t.ok_or_else(|| Error::Internal(format!("tree {id} was not loaded by its batch")))
            })
            .collect()
    }
}

fn decode_tree(key: &crate::crypto::Key, pack: &PackId, sealed: &[u8], w: &Wanted) -> Result<Tree> {
    let blob = IndexBlob {
        id: BlobId::from(w.id),
        blob_type: BlobType::Tree,
        offset: w.loc.offset,
        length: w.loc.length,
        uncompressed_length: w.loc.uncompressed_length,
    };
    let plain = packer::open_blob(key, sealed, &blob)
        .map_err(|e| Error::corrupt(format!("pack {pack}"), e.to_string()))?;
    Tree::decode(&plain).map_err(|e| Error::format(format!("tree {}", w.id), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tree::{Node, NodeType};
    use crate::repo::packer::{PackBuilder, seal_blob};
    use object_store::memory::InMemory;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn tree(names: &[&str]) -> Tree {
        Tree {
            nodes: names
                .iter()
                .map(|n| Node::new(n.as_bytes().to_vec(), NodeType::File))
                .collect(),
        }
    }

    async fn repo() -> Result<Repository> {
        crate::repo::in_memory_for_tests(Arc::new(InMemory::new())).await
    }

    /// Stores `blobs` (type and plaintext) in one pack and indexes them; returns their ids.
    async fn store(
        repo: &Repository,
        index: &mut MasterIndex,
        blobs: &[(BlobType, Vec<u8>)],
    ) -> std::result::Result<Vec<BlobId>, Box<dyn std::error::Error>> {
        let mut pack = PackBuilder::new();
        let mut ids = Vec::new();
        for (blob_type, plain) in blobs {
            let sealed = seal_blob(repo.key(), *blob_type, plain, Some(3))?;
            ids.push(sealed.id);
            pack.add(sealed)?;
        }
        let (id, entries) = repo.save_pack(pack.finish(repo.key())).await?;
        index.add_pack(id, &entries);
        Ok(ids)
    }

    #[tokio::test]
    async fn a_batch_comes_back_in_request_order_across_packs() -> TestResult {
        let repo = repo().await?;
        let mut index = MasterIndex::new();
        let trees = [tree(&["a"]), tree(&["b", "c"]), tree(&[]), tree(&["d"])];
        let first = store(
            &repo,
            &mut index,
            &[
                (BlobType::Tree, trees[0].encode()),
                (BlobType::Data, vec![7u8; 100_000]),
                (BlobType::Tree, trees[1].encode()),
            ],
        )
        .await?;
        let second = store(
            &repo,
            &mut index,
            &[
                (BlobType::Tree, trees[2].encode()),
                (BlobType::Tree, trees[3].encode()),
            ],
        )
        .await?;
        let id = |b: BlobId| TreeId(b.0);
        let asked = [
            id(second[1]),
            id(first[0]),
            id(second[0]),
            id(first[0]),
            id(first[2]),
        ];
        let loaded = repo.load_trees(&index, &asked).await?;
        let expected = [&trees[3], &trees[0], &trees[2], &trees[0], &trees[1]];
        assert_eq!(loaded.iter().collect::<Vec<_>>(), expected);
        assert!(repo.load_trees(&index, &[]).await?.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn a_missing_tree_or_a_data_blob_fails_the_batch_by_name() -> TestResult {
        let repo = repo().await?;
        let mut index = MasterIndex::new();
        let ids = store(
            &repo,
            &mut index,
            &[
                (BlobType::Tree, tree(&["a"]).encode()),
                (BlobType::Data, b"not a tree".to_vec()),
            ],
        )
        .await?;
        let missing = TreeId(crate::format::Id([9; 32]));
        let err = repo
            .load_trees(&index, &[TreeId(ids[0].0), missing])
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&missing.to_string()), "{err}");
        let data = TreeId(ids[1].0);
        let err = repo.load_trees(&index, &[data]).await.unwrap_err();
        assert!(err.to_string().contains(&data.to_string()), "{err}");
        Ok(())
    }
}
