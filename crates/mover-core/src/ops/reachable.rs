//! Which blobs the snapshots still use: a walk of every snapshot's trees, level by level with
//! batched tree loads, each tree visited once however many snapshots share it. Shared by
//! `prune` (which must not delete a used blob) and `check` (which reports what is missing).
//!
//! Memory is one byte per indexed blob (the marks, by index position) plus the current
//! level's tree ids; nothing per blob beyond that.

use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::format::tree::{NodeType, Tree};
use crate::format::{BlobId, BlobType, SnapshotId, TreeId};
use crate::repo::Repository;
use crate::repo::index::MasterIndex;

/// Trees loaded per batch (one range read per run of neighbouring tree blobs)...
const TREE_BATCH: usize = 2048;
/// ... and at most this many bytes of tree JSON: decoded nodes take several times their
/// JSON, and a directory of a million files is one tree.
const TREE_BATCH_BYTES: u64 = 4 << 20;

/// Mark bit: the blob is used by a snapshot.
pub const USED: u8 = 1;

/// What the walk found wrong. `check` reports these; `prune` refuses to run with any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkProblem {
    /// A tree or data blob a snapshot refers to is in no index file.
    Missing {
        blob: BlobId,
        blob_type: BlobType,
        /// The snapshot and path it was reached from.
        snapshot: SnapshotId,
        path: String,
    },
    /// A tree could not be read or decoded.
    BadTree {
        tree: TreeId,
        snapshot: SnapshotId,
        path: String,
        error: String,
    },
    /// A directory node without a subtree, or a file without content.
    BadNode {
        tree: TreeId,
        snapshot: SnapshotId,
        path: String,
        detail: String,
    },
}

impl std::fmt::Display for WalkProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalkProblem::Missing {
                blob,
                blob_type,
                snapshot,
                path,
            } => write!(
                f,
                "snapshot {}: {} blob {blob} of {path} is not in any index file",
                snapshot.short(),
                blob_type.as_str()
            ),
            WalkProblem::BadTree {
                tree,
                snapshot,
                path,
                error,
            } => write!(
                f,
                "snapshot {}: tree {tree} of {path} cannot be read: {error}",
                snapshot.short()
            ),
            WalkProblem::BadNode {
                tree,
                snapshot,
                path,
                detail,
            } => write!(
                f,
                "snapshot {}: tree {tree}, {path}: {detail}",
                snapshot.short()
            ),
        }
    }
}

/// The blobs reachable from the snapshots walked.
#[derive(Debug)]
pub struct Reachable {
    /// Per index position (see [`MasterIndex::position`]): [`USED`] when reached.
    pub marks: Vec<u8>,
    pub problems: Vec<WalkProblem>,
    pub trees: u64,
    pub data_blobs: u64,
}

/// A tree waiting to be loaded, with where it was first reached from (for messages).
struct Pending {
    tree: TreeId,
    snapshot: SnapshotId,
    path: String,
}

/// Walks the trees of `roots`, marking every tree and data blob reached. `index` must be
/// finished loading. With `stop_at_first_problem` (prune) the first problem is returned as
/// an error; otherwise (check) problems are collected and the walk goes on where it can.
pub async fn walk(
    repo: &Repository,
    index: &MasterIndex,
    roots: &[(SnapshotId, TreeId)],
    stop_at_first_problem: bool,
    cancel: &Cancel,
) -> Result<Reachable> {
    let mut found = Reachable {
        marks: vec![0; index.len()],
        problems: Vec::new(),
        trees: 0,
        data_blobs: 0,
    };
    let mut level: Vec<Pending> = Vec::new();
    for (snapshot, tree) in roots {
        match found.mark(
            index,
            &BlobId::from(*tree),
            BlobType::Tree,
            *snapshot,
            &|| "/".into(),
        ) {
            Err(p) => found.problem(p, stop_at_first_problem)?,
            Ok(true) => level.push(Pending {
                tree: *tree,
                snapshot: *snapshot,
                path: "/".into(),
            }),
            Ok(false) => {}
        }
    }
    while !level.is_empty() {
        let mut next = Vec::new();
        for batch in batches(index, &level) {
            cancel.check()?;
            for (pending, tree) in load_batch(repo, index, batch).await {
                let tree = match tree {
                    Ok(t) => t,
                    Err(e) => {
                        found.problem(
                            WalkProblem::BadTree {
                                tree: pending.tree,
                                snapshot: pending.snapshot,
                                path: pending.path.clone(),
                                error: e.chain_string(),
                            },
                            stop_at_first_problem,
                        )?;
                        continue;
                    }
                };
                found.trees += 1;
                found.visit(index, pending, &tree, &mut next, stop_at_first_problem)?;
            }
        }
        level = next;
    }
    Ok(found)
}

/// `level` cut into batches of at most [`TREE_BATCH`] trees and [`TREE_BATCH_BYTES`] of
/// plaintext (at least one tree each).
fn batches<'a>(index: &MasterIndex, level: &'a [Pending]) -> Vec<&'a [Pending]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, p) in level.iter().enumerate() {
        let size = index
            .get(&BlobId::from(p.tree))
            .map_or(0, |l| u64::from(l.uncompressed_length.unwrap_or(l.length)));
        if i > start && (i - start >= TREE_BATCH || bytes + size > TREE_BATCH_BYTES) {
            out.push(&level[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < level.len() {
        out.push(&level[start..]);
    }
    out
}

/// Loads a batch in one go; should that fail, tree by tree, so that one bad tree is named
/// and the others are still walked.
async fn load_batch<'a>(
    repo: &Repository,
    index: &MasterIndex,
    batch: &'a [Pending],
) -> Vec<(&'a Pending, Result<Tree>)> {
    let ids: Vec<TreeId> = batch.iter().map(|p| p.tree).collect();
    match repo.load_trees(index, &ids).await {
        Ok(trees) => batch.iter().zip(trees.into_iter().map(Ok)).collect(),
        Err(_) => {
            let mut out = Vec::with_capacity(batch.len());
            for p in batch {
                out.push((p, repo.load_tree(index, &p.tree).await));
            }
            out
        }
    }
}

impl Reachable {
    /// Marks a blob used; `Ok(true)` the first time. A blob missing from the index (or
    /// indexed with the other type) is a problem.
    fn mark(
        &mut self,
        index: &MasterIndex,
        blob: &BlobId,
        blob_type: BlobType,
        snapshot: SnapshotId,
        path: &dyn Fn() -> String,
    ) -> std::result::Result<bool, WalkProblem> {
        let pos = index
            .position(blob)
            .filter(|_| index.has(blob, blob_type))
            .ok_or_else(|| WalkProblem::Missing {
                blob: *blob,
                blob_type,
                snapshot,
                path: path(),
            })?;
        let mark = &mut self.marks[pos];
        let new = *mark & USED == 0;
        *mark |= USED;
        Ok(new)
    }

    fn problem(&mut self, p: WalkProblem, stop: bool) -> Result<()> {
        if stop {
            return Err(Error::corrupt(
                "repository",
                format!("{p}; nothing was changed (run `mover check` for the full list)"),
            ));
        }
        self.problems.push(p);
        Ok(())
    }

    fn visit(
        &mut self,
        index: &MasterIndex,
        at: &Pending,
        tree: &Tree,
        next: &mut Vec<Pending>,
        stop: bool,
    ) -> Result<()> {
        for node in &tree.nodes {
            // Paths are only built for messages and for the trees still to load.
            let path = || child_path(&at.path, &node.name);
            match node.node_type {
                NodeType::Dir => match node.subtree {
                    Some(sub) => {
                        let blob = BlobId::from(sub);
                        match self.mark(index, &blob, BlobType::Tree, at.snapshot, &path) {
                            Err(p) => self.problem(p, stop)?,
                            Ok(true) => next.push(Pending {
                                tree: sub,
                                snapshot: at.snapshot,
                                path: path(),
                            }),
                            Ok(false) => {}
                        }
                    }
                    None => self.problem(
                        WalkProblem::BadNode {
                            tree: at.tree,
                            snapshot: at.snapshot,
                            path: path(),
                            detail: "directory without a subtree".into(),
                        },
                        stop,
                    )?,
                },
                NodeType::File => {
                    let Some(content) = &node.content else {
                        self.problem(
                            WalkProblem::BadNode {
                                tree: at.tree,
                                snapshot: at.snapshot,
                                path: path(),
                                detail: "file without content list".into(),
                            },
                            stop,
                        )?;
                        continue;
                    };
                    for blob in content {
                        match self.mark(index, blob, BlobType::Data, at.snapshot, &path) {
                            Err(p) => self.problem(p, stop)?,
                            Ok(true) => self.data_blobs += 1,
                            Ok(false) => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn child_path(parent: &str, name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if parent.ends_with('/') {
        format!("{parent}{name}")
    } else {
        format!("{parent}/{name}")
    }
}
