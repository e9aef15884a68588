//! `check`: find damage without changing anything (a shared lock).
//!
//! Structure: every index file loads; every pack an index names exists with the size the
//! index implies, and its header lists exactly the blobs the index says; every snapshot
//! loads and every tree and data blob it reaches is indexed and every tree decodes. With
//! `--read-data` (or a subset), packs are read in full: the file hashes to its name, and
//! every blob verifies, decompresses and hashes to its id. Each problem names what is
//! damaged (pack, blob, index, snapshot). Packs no index lists are reported as hints, as
//! restic does: they hold nothing a snapshot needs, and `prune` removes them.

mod packs;

use crate::error::Result;
use crate::format::index::IndexFile;
use crate::format::{Id, PackId, SnapshotId, TreeId};
use crate::ops::reachable;
use crate::repo::Repository;
use crate::repo::index::MasterIndex;
use crate::repo::lock::{self, LockMode, LockOptions};
use crate::storage::FileType;
use futures::StreamExt;
use std::collections::HashMap;

/// Index and snapshot files loaded at once.
const LOAD_CONCURRENCY: usize = 16;

/// Which packs `--read-data` reads.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ReadData {
    /// Structure only.
    #[default]
    None,
    All,
    /// `n/t`: the packs whose id's first byte modulo `t` is `n - 1`.
    Bucket {
        n: u32,
        of: u32,
    },
    /// `x%`: a random share of the packs (at least one).
    Percent(f64),
    /// A random share of the packs about this many bytes in size.
    Bytes(u64),
}

impl ReadData {
    /// restic's `--read-data-subset`: `n/t`, `x%` or a size (`5G`).
    pub fn parse_subset(s: &str) -> Result<ReadData, String> {
        let s = s.trim();
        if let Some((n, t)) = s.split_once('/') {
            let n: u32 = n
                .parse()
                .map_err(|_| format!("invalid subset {s:?}: n in n/t must be a number"))?;
            let t: u32 = t
                .parse()
                .map_err(|_| format!("invalid subset {s:?}: t in n/t must be a number"))?;
            if t == 0 || t > 256 {
                return Err(format!("invalid subset {s:?}: t must be between 1 and 256"));
            }
            if n == 0 || n > t {
                return Err(format!("invalid subset {s:?}: n must be between 1 and t"));
            }
            return Ok(ReadData::Bucket { n, of: t });
        }
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p
                .parse()
                .map_err(|_| format!("invalid subset {s:?}: not a percentage"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!(
                    "invalid subset {s:?}: the percentage must be above 0 and at most 100"
                ));
            }
            return Ok(ReadData::Percent(p));
        }
        let bytes = crate::ops::prune::plan::parse_size(s)
            .map_err(|e| format!("invalid subset {s:?}: {e}"))?;
        if bytes == 0 {
            return Err(format!("invalid subset {s:?}: the size must be above 0"));
        }
        Ok(ReadData::Bytes(bytes))
    }
}

#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    pub read_data: ReadData,
    pub lock: LockOptions,
}

/// One thing found wrong, naming the object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckProblem {
    /// `index`, `pack`, `blob`, `snapshot` or `tree`.
    pub kind: String,
    /// The object's id.
    pub id: String,
    pub message: String,
}

impl std::fmt::Display for CheckProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What check found.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct CheckSummary {
    pub errors: Vec<CheckProblem>,
    /// Not damage: packs no index lists, packs listed by several index files.
    pub hints: Vec<String>,
    pub index_files: u64,
    pub packs: u64,
    pub snapshots: u64,
    pub trees: u64,
    pub packs_read: u64,
    pub bytes_read: u64,
}

impl CheckSummary {
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }

    fn error(&mut self, kind: &str, id: impl ToString, message: String) {
        self.errors.push(CheckProblem {
            kind: kind.to_string(),
            id: id.to_string(),
            message,
        });
    }
}

/// Checks `repo` under a shared lock.
pub async fn check(repo: &Repository, opts: &CheckOptions) -> Result<CheckSummary> {
    lock::while_locked(repo, LockMode::Shared, &opts.lock, run(repo, opts)).await
}

async fn run(repo: &Repository, opts: &CheckOptions) -> Result<CheckSummary> {
    let cancel = &opts.lock.cancel;
    let mut summary = CheckSummary::default();
    let (index, listed_by) = load_indexes(repo, &mut summary).await?;
    cancel.check()?;
    let stored: HashMap<PackId, u64> = repo
        .storage()
        .list(FileType::Pack)
        .await?
        .into_iter()
        .map(|(id, size)| (PackId(id), size))
        .collect();
    let expected = packs::expected_layout(&index);
    summary.packs = expected.len() as u64;
    for (pack, files) in &listed_by {
        if files.len() > 1 {
            summary.hints.push(format!(
                "pack {} is listed by {} index files",
                pack.short(),
                files.len()
            ));
        }
    }
    for (pack, layout) in &expected {
        match stored.get(pack) {
            None => summary.error("pack", pack, format!("pack {pack} does not exist")),
            Some(&size) if size != layout.file_size => summary.error(
                "pack",
                pack,
                format!(
                    "pack {pack}: unexpected file size: got {size}, the index implies {}",
                    layout.file_size
                ),
            ),
            Some(_) => {}
        }
    }
    let mut orphans: Vec<&PackId> = stored
        .keys()
        .filter(|p| !expected.contains_key(p))
        .collect();
    orphans.sort();
    for pack in orphans {
        summary.hints.push(format!(
            "pack {pack} is not referenced in any index (left by an interrupted backup; \
             prune removes it)"
        ));
    }
    cancel.check()?;
    // Headers of the packs that exist with the right size (read-data checks them anyway).
    let present: Vec<PackId> = expected
        .iter()
        .filter(|(p, l)| stored.get(*p) == Some(&l.file_size))
        .map(|(p, _)| *p)
        .collect();
    let to_read = packs::select(&present, &stored, opts.read_data);
    let headers_only: Vec<PackId> = present
        .iter()
        .filter(|p| !to_read.contains(p))
        .copied()
        .collect();
    for problem in packs::check_headers(repo, &headers_only, &expected, cancel).await? {
        summary.errors.push(problem);
    }

    check_snapshots(repo, &index, &mut summary, opts).await?;

    let (read, bytes, problems) = packs::read_packs(repo, &to_read, &expected, cancel).await?;
    summary.packs_read = read;
    summary.bytes_read = bytes;
    summary.errors.extend(problems);
    Ok(summary)
}

/// Loads every index file it can; one that does not load is an error naming it.
async fn load_indexes(
    repo: &Repository,
    summary: &mut CheckSummary,
) -> Result<(MasterIndex, HashMap<PackId, Vec<Id>>)> {
    let ids = repo.storage().list(FileType::Index).await?;
    summary.index_files = ids.len() as u64;
    let mut loads = futures::stream::iter(ids)
        .map(|(id, _)| async move {
            let loaded = match repo.load_unpacked(FileType::Index, &id).await {
                Ok(bytes) => IndexFile::decode(&bytes).map_err(|e| e.to_string()),
                Err(e) => Err(e.chain_string()),
            };
            (id, loaded)
        })
        .buffer_unordered(LOAD_CONCURRENCY);
    let mut index = MasterIndex::new();
    let mut listed_by: HashMap<PackId, Vec<Id>> = HashMap::new();
    while let Some((id, loaded)) = loads.next().await {
        match loaded {
            Ok(file) => {
                for p in &file.packs {
                    listed_by.entry(p.id).or_default().push(id);
                }
                index.add_index_file(&file);
            }
            Err(e) => summary.error("index", id, format!("index {id}: {e}")),
        }
    }
    index.finish_loading();
    Ok((index, listed_by))
}

/// Every snapshot loads, and every tree and data blob it reaches is indexed and decodes.
async fn check_snapshots(
    repo: &Repository,
    index: &MasterIndex,
    summary: &mut CheckSummary,
    opts: &CheckOptions,
) -> Result<()> {
    let ids = repo.storage().list(FileType::Snapshot).await?;
    let mut loads = futures::stream::iter(ids)
        .map(|(id, _)| async move {
            let sid = SnapshotId(id);
            (sid, repo.load_snapshot(&sid).await)
        })
        .buffer_unordered(LOAD_CONCURRENCY);
    let mut roots: Vec<(SnapshotId, TreeId)> = Vec::new();
    while let Some((id, loaded)) = loads.next().await {
        match loaded {
            Ok(s) => roots.push((id, s.tree)),
            Err(e) => summary.error(
                "snapshot",
                id,
                format!("snapshot {id} cannot be loaded: {}", e.chain_string()),
            ),
        }
    }
    roots.sort();
    summary.snapshots = roots.len() as u64;
    let reached = reachable::walk(repo, index, &roots, false, &opts.lock.cancel).await?;
    summary.trees = reached.trees;
    for p in reached.problems {
        let (kind, id) = match &p {
            reachable::WalkProblem::Missing { blob, .. } => ("blob", blob.to_hex()),
            reachable::WalkProblem::BadTree { tree, .. }
            | reachable::WalkProblem::BadNode { tree, .. } => ("tree", tree.to_hex()),
        };
        summary.error(kind, id, p.to_string());
    }
    Ok(())
}
