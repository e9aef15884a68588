//! Test support: a volume that changes from backup to backup. `write_version(dir, n)` makes
//! the whole tree of version `n` from nothing (same `n`, same bytes), so a restored snapshot
//! can be compared with a freshly written copy of the version it was taken of. Versions
//! share most of their data (what prune must keep) and each drops and adds some (what it may
//! delete once older snapshots are forgotten).

#![allow(dead_code)]

use super::compare::{CompareOptions, compare_trees};
use super::tree_gen::SplitMix64;
use std::path::Path;

/// Sizes of one version's files.
#[derive(Debug, Clone, Copy)]
pub struct HistoryShape {
    /// Files every version has, unchanged.
    pub shared_files: usize,
    /// Files only this version has.
    pub own_files: usize,
    pub file_bytes: usize,
}

impl Default for HistoryShape {
    fn default() -> Self {
        HistoryShape {
            shared_files: 12,
            own_files: 3,
            file_bytes: 400 * 1024,
        }
    }
}

/// Writes version `n` below `dir` (created if missing; it should be empty).
pub fn write_version(dir: &Path, n: u64, shape: HistoryShape) {
    std::fs::create_dir_all(dir.join("shared")).unwrap();
    std::fs::create_dir_all(dir.join(format!("v{n}"))).unwrap();
    for i in 0..shape.shared_files {
        let mut rng = SplitMix64(1000 + i as u64);
        std::fs::write(
            dir.join(format!("shared/f{i}")),
            rng.bytes(shape.file_bytes),
        )
        .unwrap();
    }
    for i in 0..shape.own_files {
        let mut rng = SplitMix64(n * 1_000_003 + i as u64);
        std::fs::write(dir.join(format!("v{n}/g{i}")), rng.bytes(shape.file_bytes)).unwrap();
    }
    std::fs::write(dir.join("version.txt"), format!("version {n}\n")).unwrap();
}

/// Replaces the contents of `dir` with version `n`.
pub fn switch_to_version(dir: &Path, n: u64, shape: HistoryShape) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    write_version(dir, n, shape);
}

/// Content comparison of a restored tree with a fresh copy of version `n`.
pub fn assert_is_version(restored: &Path, n: u64, shape: HistoryShape, scratch: &Path) {
    let expected = scratch.join(format!("expected-v{n}"));
    if !expected.exists() {
        write_version(&expected, n, shape);
    }
    let opts = CompareOptions {
        mtime: false,
        dir_mtime: false,
        symlink_mtime: false,
        root_metadata: false,
        owner: false,
        xattrs: false,
        ..CompareOptions::default()
    };
    compare_trees(&expected, restored, &opts)
        .unwrap_or_else(|e| panic!("{} is not version {n}:\n{e}", restored.display()));
}

/// Which version a snapshot of such a volume holds (from its `version.txt`).
pub fn version_of_snapshot(restored: &Path) -> u64 {
    let text = std::fs::read_to_string(restored.join("version.txt"))
        .unwrap_or_else(|e| panic!("no version.txt in {}: {e}", restored.display()));
    text.trim()
        .strip_prefix("version ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad version.txt: {text:?}"))
}
