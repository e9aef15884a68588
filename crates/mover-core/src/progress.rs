//! Progress counters shared between a running operation and whoever displays them.
//! Operations only bump atomics; the binary (or the Kubernetes status reporter) reads them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of a backup or restore. All fields are monotonic.
#[derive(Debug, Default)]
pub struct Progress {
    pub files_done: AtomicU64,
    pub dirs_done: AtomicU64,
    pub bytes_done: AtomicU64,
    pub bytes_added: AtomicU64,
    /// Plaintext bytes of new data blobs whose packs are stored in the repository.
    pub bytes_uploaded: AtomicU64,
    pub errors: AtomicU64,
}

/// A point-in-time copy of [`Progress`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ProgressSnapshot {
    pub files_done: u64,
    pub dirs_done: u64,
    pub bytes_done: u64,
    pub bytes_added: u64,
    pub bytes_uploaded: u64,
    pub errors: u64,
}

impl ProgressSnapshot {
    /// Bytes read whose data is in the repository: read bytes less the new data still
    /// queued, packed or uploading. What a user waits for, under a slow upload too.
    pub fn bytes_durable(&self) -> u64 {
        let in_flight = self.bytes_added.saturating_sub(self.bytes_uploaded);
        self.bytes_done.saturating_sub(in_flight)
    }
}

impl Progress {
    pub fn add_file(&self, bytes: u64) {
        self.files_done.fetch_add(1, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn add_dir(&self) {
        self.dirs_done.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_bytes(&self, bytes: u64) {
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn add_added(&self, bytes: u64) {
        self.bytes_added.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn add_uploaded(&self, bytes: u64) {
        self.bytes_uploaded.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn add_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            files_done: self.files_done.load(Ordering::Relaxed),
            dirs_done: self.dirs_done.load(Ordering::Relaxed),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_added: self.bytes_added.load(Ordering::Relaxed),
            bytes_uploaded: self.bytes_uploaded.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_bytes_leave_out_new_data_not_yet_uploaded() {
        let p = Progress::default();
        p.add_bytes(10 << 20);
        p.add_added(8 << 20);
        // 8 MiB read were new and none is stored yet: 2 MiB (known data) are durable.
        assert_eq!(p.snapshot().bytes_durable(), 2 << 20);
        p.add_uploaded(4 << 20);
        assert_eq!(p.snapshot().bytes_durable(), 6 << 20);
        p.add_uploaded(4 << 20);
        assert_eq!(p.snapshot().bytes_durable(), 10 << 20);
        // A pack stored before its blobs were counted as added never goes past what was read.
        p.add_uploaded(1 << 20);
        assert_eq!(p.snapshot().bytes_durable(), 10 << 20);
    }
}
