//! `stats`: restic's four counting modes over a set of snapshots, with restic's numbers and
//! JSON field names.
//!
//! - `restore-size`: every node of every snapshot (directories too) and the size a restore
//!   writes; hard links (same inode and device within a snapshot) count once.
//! - `files-by-contents`: nodes unique by their content list, and their sizes.
//! - `blobs-per-file`: for each file unique by contents, its distinct data blobs by path, and
//!   their plaintext sizes.
//! - `raw-data`: every blob the snapshots reach (trees and data), each once, as stored.

use crate::Cancel;
use crate::error::{Error, Result};
use crate::format::snapshot::SnapshotFile;
use crate::format::tree::NodeType;
use crate::format::{BlobId, SnapshotId};
use crate::ops::ls;
use crate::ops::reachable;
use crate::repo::Repository;
use crate::repo::index::MasterIndex;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

/// restic's `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatsMode {
    #[default]
    RestoreSize,
    FilesByContents,
    BlobsPerFile,
    RawData,
}

impl StatsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StatsMode::RestoreSize => "restore-size",
            StatsMode::FilesByContents => "files-by-contents",
            StatsMode::BlobsPerFile => "blobs-per-file",
            StatsMode::RawData => "raw-data",
        }
    }
}

impl std::str::FromStr for StatsMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<StatsMode> {
        [
            StatsMode::RestoreSize,
            StatsMode::FilesByContents,
            StatsMode::BlobsPerFile,
            StatsMode::RawData,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "unknown counting mode: {s} (use the -h flag to get a list of supported modes)"
            ))
        })
    }
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_zero_f64(n: &f64) -> bool {
    *n == 0.0
}

/// A float as Go's encoding/json writes it: a whole number without a fraction (`100`, not
/// `100.0`), otherwise the shortest form that reads back.
fn go_float<S: serde::Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 1e21 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

/// restic's `stats --json` object (zero fields left out as restic leaves them out).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub total_size: u64,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub total_uncompressed_size: u64,
    #[serde(skip_serializing_if = "is_zero_f64", serialize_with = "go_float")]
    pub compression_ratio: f64,
    #[serde(skip_serializing_if = "is_zero_f64", serialize_with = "go_float")]
    pub compression_progress: f64,
    #[serde(skip_serializing_if = "is_zero_f64", serialize_with = "go_float")]
    pub compression_space_saving: f64,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub total_file_count: u64,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub total_blob_count: u64,
    pub snapshots_count: usize,
}

/// The statistics of `snapshots` in `mode`. `index` must be finished loading.
pub async fn stats(
    repo: &Repository,
    index: &MasterIndex,
    snapshots: &[(SnapshotId, SnapshotFile)],
    mode: StatsMode,
    cancel: &Cancel,
) -> Result<Stats> {
    let mut out = Stats {
        snapshots_count: snapshots.len(),
        ..Default::default()
    };
    if mode == StatsMode::RawData {
        let roots: Vec<_> = snapshots.iter().map(|(id, s)| (*id, s.tree)).collect();
        let reached = reachable::walk(repo, index, &roots, true, cancel).await?;
        raw_data(&mut out, index, &reached.marks, repo.version() >= 2);
        return Ok(out);
    }
    let mut unique_contents: HashSet<[u8; 32]> = HashSet::new();
    let mut file_blobs: HashMap<String, HashSet<BlobId>> = HashMap::new();
    for (_, snap) in snapshots {
        cancel.check()?;
        let nodes = ls::ls(repo, index, snap.tree, None, true).await?;
        let mut hard_links: HashSet<(u64, u64)> = HashSet::new();
        for (path, node) in &nodes {
            let content = node.content.as_deref().unwrap_or_default();
            match mode {
                StatsMode::RestoreSize => {
                    out.total_file_count += 1;
                    let linked = node.links != 1 && node.node_type != NodeType::Dir;
                    if !linked || node.inode == 0 || hard_links.insert((node.inode, node.device_id))
                    {
                        out.total_size += node.size;
                    }
                }
                StatsMode::FilesByContents | StatsMode::BlobsPerFile => {
                    if !unique_contents.insert(contents_id(content)) {
                        continue;
                    }
                    if mode == StatsMode::FilesByContents {
                        out.total_size += node.size;
                        out.total_file_count += 1;
                        continue;
                    }
                    for blob in content {
                        let seen = file_blobs.entry(path.clone()).or_insert_with(|| {
                            out.total_file_count += 1;
                            HashSet::new()
                        });
                        if seen.insert(*blob) {
                            let loc = index.get(blob).ok_or_else(|| {
                                Error::corrupt(
                                    format!("snapshot file {path}"),
                                    format!("blob {blob} is not in the index"),
                                )
                            })?;
                            out.total_size += u64::from(loc.plaintext_len());
                            out.total_blob_count += 1;
                        }
                    }
                }
                StatsMode::RawData => unreachable!("raw-data does not walk nodes"),
            }
        }
    }
    Ok(out)
}

/// A node's identity by contents: the SHA-256 of its content ids in order (restic's).
fn contents_id(content: &[BlobId]) -> [u8; 32] {
    let mut h = Sha256::new();
    for id in content {
        h.update(id.0.0);
    }
    h.finalize().into()
}

/// Sums every reached blob once (the first index entry of each), as restic's raw-data mode.
fn raw_data(out: &mut Stats, index: &MasterIndex, marks: &[u8], v2: bool) {
    let overhead = crate::crypto::aead::OVERHEAD as u64;
    let mut counted = vec![false; marks.len()];
    let (mut compressed, mut compressed_plain) = (0u64, 0u64);
    for (pos, _, loc) in index.entries() {
        if marks.get(pos).copied().unwrap_or(0) == 0 || counted[pos] {
            continue;
        }
        counted[pos] = true;
        let stored = u64::from(loc.length);
        out.total_size += stored;
        out.total_blob_count += 1;
        if v2 {
            let plain = u64::from(loc.plaintext_len()) + overhead;
            out.total_uncompressed_size += plain;
            if loc.uncompressed_length.is_some() {
                compressed += stored;
                compressed_plain += plain;
            }
        }
    }
    if compressed > 0 {
        out.compression_ratio = compressed_plain as f64 / compressed as f64;
    }
    if out.total_uncompressed_size > 0 {
        let total = out.total_uncompressed_size as f64;
        out.compression_progress = compressed_plain as f64 / total * 100.0;
        out.compression_space_saving = (1.0 - out.total_size as f64 / total) * 100.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_as_restic_names_them() {
        for m in [
            "restore-size",
            "files-by-contents",
            "blobs-per-file",
            "raw-data",
        ] {
            assert_eq!(m.parse::<StatsMode>().unwrap().as_str(), m);
        }
        let e = "bogus".parse::<StatsMode>().unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown counting mode: bogus (use the -h flag to get a list of supported modes)"
        );
    }

    #[test]
    fn json_leaves_out_zero_fields_as_restic() {
        let s = Stats {
            total_size: 10,
            total_file_count: 2,
            snapshots_count: 1,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"total_size":10,"total_file_count":2,"snapshots_count":1}"#
        );
        let raw = Stats {
            compression_progress: 100.0,
            compression_ratio: 1.5,
            ..s
        };
        let text = serde_json::to_string(&raw).unwrap();
        assert!(
            text.contains(r#""compression_ratio":1.5,"compression_progress":100,"#),
            "{text}"
        );
    }

    #[test]
    fn contents_ids_depend_on_order() {
        let a = BlobId(crate::format::Id::hash(b"a"));
        let b = BlobId(crate::format::Id::hash(b"b"));
        assert_ne!(contents_id(&[a, b]), contents_id(&[b, a]));
        assert_eq!(contents_id(&[]), contents_id(&[]));
    }
}
