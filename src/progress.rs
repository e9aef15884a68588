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
    pub errors: AtomicU64,
}

/// A point-in-time copy of [`Progress`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ProgressSnapshot {
    pub files_done: u64,
    pub dirs_done: u64,
    pub bytes_done: u64,
    pub bytes_added: u64,
    pub errors: u64,
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

    pub fn add_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            files_done: self.files_done.load(Ordering::Relaxed),
            dirs_done: self.dirs_done.load(Ordering::Relaxed),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_added: self.bytes_added.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}
