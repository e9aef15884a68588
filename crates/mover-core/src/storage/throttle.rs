//! Bandwidth limits (`--limit-upload`, `--limit-download`, in KiB/s as restic): a pacer
//! shared by every request of one [`super::Storage`], so the limit holds for the whole
//! run however many requests are in flight. Each request waits for its slot at the limit
//! and then moves at full speed, so the average over a few requests stays at the limit
//! (a pack of 16 MiB under a 4 MiB/s limit is followed by 4 s of quiet).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Paces transfers to `bytes_per_second` on average.
#[derive(Debug)]
pub struct Pacer {
    bytes_per_second: f64,
    /// When the bytes granted so far have been "sent" at the limit.
    busy_until: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer for `kib_per_second` KiB/s; `None` for 0 (no limit).
    pub fn from_kib(kib_per_second: u64) -> Option<Pacer> {
        (kib_per_second > 0).then(|| Pacer {
            bytes_per_second: kib_per_second as f64 * 1024.0,
            busy_until: Mutex::new(None),
        })
    }

    /// How long the caller must wait before moving `bytes`, booked as if it had waited.
    pub fn book(&self, bytes: usize, now: Instant) -> Duration {
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_second);
        let mut busy = match self.busy_until.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        let start = busy.map_or(now, |b| b.max(now));
        *busy = Some(start + cost);
        start.saturating_duration_since(now)
    }

    /// Waits until `bytes` may move.
    pub async fn pace(&self, bytes: usize) {
        let wait = self.book(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_no_limit() {
        assert!(Pacer::from_kib(0).is_none());
    }

    #[test]
    fn the_first_request_passes_then_the_rate_holds() {
        let p = Pacer::from_kib(1024).unwrap(); // 1 MiB/s
        let t0 = Instant::now();
        assert_eq!(p.book(1 << 20, t0), Duration::ZERO);
        // The next MiB waits a second, the one after two.
        let w = p.book(1 << 20, t0);
        assert!((w.as_secs_f64() - 1.0).abs() < 1e-6, "{w:?}");
        let w = p.book(1 << 20, t0);
        assert!((w.as_secs_f64() - 2.0).abs() < 1e-6, "{w:?}");
    }

    #[test]
    fn idle_time_is_not_saved_up() {
        let p = Pacer::from_kib(1024).unwrap();
        let t0 = Instant::now();
        p.book(1 << 20, t0);
        // Ten idle seconds later, two MiB: one passes, the second waits a second.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(p.book(1 << 20, later), Duration::ZERO);
        let w = p.book(1 << 20, later);
        assert!((w.as_secs_f64() - 1.0).abs() < 1e-6, "{w:?}");
    }
}
