//! Block volumes: a raw device, a disk image or stdin stored as one regular file node, laid
//! out exactly as `restic backup --stdin --stdin-filename NAME` does (spec §13.2), so that
//! `restic dump` and `restic restore` read it; and the way back onto a device or file.
//! Reading and writing the local volume lives in `fs::block`; the chunk stream in
//! [`stream`]. Never walks directory trees (that is `ops::backup`).

mod backup;
pub mod changed;
mod restore;
pub mod stream;

pub use backup::{VolumeBackupOptions, VolumeSource, backup_volume};
pub use restore::{VolumeRestoreOptions, VolumeRestoreSummary, restore_volume};

use crate::format::{BlobId, Id};
use std::collections::HashMap;
use std::sync::Mutex;

/// The virtual path restic gives a stream named `name`: `"/" + name`, cleaned.
pub fn virtual_path(name: &str) -> String {
    crate::fs::glob::go_clean(&format!("/{name}"))
}

/// The ids of all-zero blobs, one SHA-256 per distinct length, and a shared zero buffer of
/// at least the chunker's largest chunk.
pub struct ZeroIds {
    zeros: Vec<u8>,
    ids: Mutex<HashMap<usize, BlobId>>,
}

impl ZeroIds {
    pub fn new(max_len: usize) -> ZeroIds {
        ZeroIds {
            // calloc'd: pages are only touched when read.
            zeros: vec![0u8; max_len],
            ids: Mutex::new(HashMap::new()),
        }
    }

    /// `len` zero bytes (at most the size given to [`ZeroIds::new`]).
    pub fn zeros(&self, len: usize) -> &[u8] {
        &self.zeros[..len.min(self.zeros.len())]
    }

    pub fn buffer(&self) -> &[u8] {
        &self.zeros
    }

    /// The blob id of `len` zero bytes.
    pub fn id(&self, len: usize) -> BlobId {
        if let Ok(ids) = self.ids.lock() {
            if let Some(id) = ids.get(&len) {
                return *id;
            }
        }
        let id = if len <= self.zeros.len() {
            BlobId(Id::hash(&self.zeros[..len]))
        } else {
            BlobId(Id::hash(&vec![0u8; len]))
        };
        if let Ok(mut ids) = self.ids.lock() {
            ids.insert(len, id);
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_paths_are_cleaned_like_restic() {
        assert_eq!(virtual_path("stdin"), "/stdin");
        assert_eq!(virtual_path("foo/bar.txt"), "/foo/bar.txt");
        assert_eq!(virtual_path("/dev/loop0"), "/dev/loop0");
        assert_eq!(virtual_path("a//b/../c"), "/a/c");
    }

    #[test]
    fn zero_ids_match_hashes() {
        let z = ZeroIds::new(1024);
        assert_eq!(z.id(100), BlobId(Id::hash(&[0u8; 100])));
        assert_eq!(z.id(100), BlobId(Id::hash(&[0u8; 100])));
        assert_eq!(z.id(2000), BlobId(Id::hash(&[0u8; 2000])));
        assert_eq!(z.zeros(10), &[0u8; 10]);
    }
}
