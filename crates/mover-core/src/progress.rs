//! Progress counters shared between a running operation and whoever displays them.
//! Operations only bump atomics; the binary (or the Kubernetes status reporter) reads them.

use crate::Cancel;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

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

/// Totals of the source, found by a scan beside the backup (or known up front: a device's
/// size, a snapshot's summary); zero while unknown.
#[derive(Debug, Default)]
pub struct Totals {
    pub bytes: AtomicU64,
    pub files: AtomicU64,
    pub known: AtomicBool,
}

impl Totals {
    /// Totals known up front.
    pub fn known(files: u64, bytes: u64) -> Totals {
        Totals {
            bytes: AtomicU64::new(bytes),
            files: AtomicU64::new(files),
            known: AtomicBool::new(true),
        }
    }
}

/// Counts the regular files and their bytes below `roots` (not following links, skipping a
/// root's own `lost+found`, a file root counted as itself) into `totals`, then marks them
/// known. Blocking: run it on a thread of its own beside the backup.
pub fn scan_totals(roots: &[PathBuf], totals: &Totals, cancel: &Cancel) {
    for root in roots {
        match root.symlink_metadata() {
            Ok(meta) if meta.is_file() => {
                totals.files.fetch_add(1, Ordering::Relaxed);
                totals.bytes.fetch_add(meta.len(), Ordering::Relaxed);
                continue;
            }
            Ok(meta) if meta.is_dir() => {}
            _ => continue,
        }
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            if cancel.is_cancelled() {
                return;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.path().symlink_metadata() else {
                    continue;
                };
                if meta.is_dir() {
                    if dir == *root && entry.file_name() == "lost+found" {
                        continue;
                    }
                    stack.push(entry.path());
                } else if meta.is_file() {
                    totals.files.fetch_add(1, Ordering::Relaxed);
                    totals.bytes.fetch_add(meta.len(), Ordering::Relaxed);
                }
            }
        }
    }
    totals.known.store(true, Ordering::Relaxed);
}

/// What a progress display shows, computed the same way for a terminal, restic's JSON
/// `status` messages and a Kubernetes status: done counts, totals once known, rate, percent
/// and time left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    pub seconds_elapsed: u64,
    /// Bytes whose data is stored (read bytes less new data not yet uploaded).
    pub bytes_done: u64,
    pub files_done: u64,
    pub total_bytes: Option<u64>,
    pub total_files: Option<u64>,
    pub bytes_per_second: u64,
    /// `bytes_done / total_bytes`, below 1 until the end.
    pub fraction_done: Option<f64>,
    pub seconds_remaining: Option<u64>,
    pub errors: u64,
}

impl Report {
    pub fn new(s: &ProgressSnapshot, totals: &Totals, elapsed: Duration) -> Report {
        let known = totals.known.load(Ordering::Relaxed);
        let total_bytes = known.then(|| totals.bytes.load(Ordering::Relaxed));
        let total_files = known.then(|| totals.files.load(Ordering::Relaxed));
        let secs = elapsed.as_secs_f64().max(0.001);
        let done = s.bytes_durable();
        let rate = done as f64 / secs;
        Report {
            seconds_elapsed: elapsed.as_secs(),
            bytes_done: done,
            files_done: s.files_done,
            total_bytes,
            total_files,
            bytes_per_second: rate as u64,
            fraction_done: total_bytes.map(|t| {
                if t == 0 {
                    0.0
                } else {
                    (done as f64 / t as f64).min(0.99)
                }
            }),
            seconds_remaining: total_bytes
                .filter(|_| done > 0)
                .map(|t| (t.saturating_sub(done) as f64 / rate).ceil() as u64),
            errors: s.errors,
        }
    }

    /// Whole percent done, as text ("42%"); never "100%" before the end.
    pub fn percent(&self) -> Option<String> {
        self.fraction_done
            .map(|f| format!("{:.0}%", (f * 100.0).floor()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_never_show_done_before_the_end() {
        let p = Progress::default();
        p.add_bytes(200);
        let r = Report::new(
            &p.snapshot(),
            &Totals::known(1, 200),
            Duration::from_secs(2),
        );
        assert_eq!(r.percent().as_deref(), Some("99%"));
        assert_eq!(r.bytes_per_second, 100);
        let p = Progress::default();
        p.add_bytes(50);
        let r = Report::new(
            &p.snapshot(),
            &Totals::known(1, 200),
            Duration::from_secs(1),
        );
        assert_eq!(r.percent().as_deref(), Some("25%"));
        assert_eq!(r.seconds_remaining, Some(3));
        let r = Report::new(&p.snapshot(), &Totals::default(), Duration::from_secs(1));
        assert_eq!((r.percent(), r.seconds_remaining), (None, None));
        let r = Report::new(&p.snapshot(), &Totals::known(0, 0), Duration::from_secs(1));
        assert_eq!(r.percent().as_deref(), Some("0%"));
    }

    #[test]
    fn the_scan_counts_files_and_skips_lost_and_found() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("lost+found")).unwrap();
        std::fs::write(dir.path().join("lost+found/x"), b"123").unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f"), b"12345").unwrap();
        std::fs::write(dir.path().join("g"), b"1").unwrap();
        let totals = Totals::default();
        let roots = [dir.path().to_path_buf(), dir.path().join("g")];
        scan_totals(&roots, &totals, &Cancel::new());
        assert_eq!(totals.files.load(Ordering::Relaxed), 3);
        assert_eq!(totals.bytes.load(Ordering::Relaxed), 7);
        assert!(totals.known.load(Ordering::Relaxed));
    }

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
