//! Buffers of the content phase, lent one blob at a time to whichever range write needs
//! them: the aligned staging buffers that direct writes go out from, and the buffers that
//! blobs written from memory are decompressed into. (Blobs are decrypted where they were
//! read and need no buffer of their own.)
//!
//! A range write holds a staging buffer only while it writes one blob, and a
//! decompression buffer only while it opens one, so what is allocated follows the blobs in flight,
//! not the largest blob each range write ever met. Freed buffers are kept for the next
//! blob up to a byte limit: allocating per blob would cost fresh pages every time, and
//! with glibc let the heap grow far past what is in flight.

use crate::fs::direct::{AlignedBuf, align_up};
use std::sync::Mutex;

/// Staging buffers are allocated in multiples of this, so that one fits many blob sizes.
const STAGING_STEP_BYTES: usize = 1 << 20;
/// Free staging bytes kept for reuse; beyond this, returned buffers are freed.
const KEPT_STAGING_BYTES: usize = 24 << 20;
/// Free decompression buffers kept for reuse. Only the range writes that are opening a
/// blob hold one, which is about one per core.
const KEPT_PLAIN_BUFFERS: usize = 4;

#[derive(Default)]
pub(super) struct BlobBuffers {
    staging: Mutex<Vec<AlignedBuf>>,
    plain: Mutex<Vec<Vec<u8>>>,
}

impl BlobBuffers {
    /// An aligned buffer of at least `len` bytes: the smallest free one that is large
    /// enough, or a new one.
    pub(super) fn take_staging(&self, len: usize) -> AlignedBuf {
        let reused = self.staging.lock().ok().and_then(|mut free| {
            let i = (0..free.len())
                .filter(|&i| free[i].len() >= len)
                .min_by_key(|&i| free[i].len())?;
            Some(free.swap_remove(i))
        });
        reused.unwrap_or_else(|| {
            AlignedBuf::new(align_up(len.max(1)).next_multiple_of(STAGING_STEP_BYTES))
        })
    }

    /// Keeps `buf` for a later blob unless the free buffers would then exceed
    /// [`KEPT_STAGING_BYTES`]; the smallest ones are freed first.
    pub(super) fn give_staging(&self, buf: AlignedBuf) {
        let Ok(mut free) = self.staging.lock() else {
            return;
        };
        free.push(buf);
        let mut kept: usize = free.iter().map(AlignedBuf::len).sum();
        while kept > KEPT_STAGING_BYTES {
            let Some(i) = (0..free.len()).min_by_key(|&i| free[i].len()) else {
                break;
            };
            kept -= free.swap_remove(i).len();
        }
    }

    pub(super) fn take_plain(&self) -> Vec<u8> {
        self.plain
            .lock()
            .ok()
            .and_then(|mut free| free.pop())
            .unwrap_or_default()
    }

    pub(super) fn give_plain(&self, buf: Vec<u8>) {
        if let Ok(mut free) = self.plain.lock() {
            if free.len() < KEPT_PLAIN_BUFFERS {
                free.push(buf);
            }
        }
    }

    /// Free staging bytes kept now.
    #[cfg(test)]
    fn kept_staging_bytes(&self) -> usize {
        self.staging
            .lock()
            .map(|free| free.iter().map(AlignedBuf::len).sum())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_is_large_enough_aligned_and_reused_smallest_first() {
        let pool = BlobBuffers::default();
        let small = pool.take_staging(10);
        assert_eq!(small.len(), STAGING_STEP_BYTES);
        assert!(small.is_aligned());
        let big = pool.take_staging(3 * STAGING_STEP_BYTES + 1);
        assert_eq!(big.len(), 4 * STAGING_STEP_BYTES);
        let (small_ptr, big_ptr) = (small.as_slice().as_ptr(), big.as_slice().as_ptr());
        pool.give_staging(big);
        pool.give_staging(small);
        assert_eq!(pool.take_staging(100).as_slice().as_ptr(), small_ptr);
        let again = pool.take_staging(2 * STAGING_STEP_BYTES);
        assert_eq!(again.as_slice().as_ptr(), big_ptr);
        assert!(again.len() >= 2 * STAGING_STEP_BYTES);
    }

    #[test]
    fn free_staging_stays_under_its_limit_keeping_the_largest() {
        let pool = BlobBuffers::default();
        let step = STAGING_STEP_BYTES;
        let bufs: Vec<AlignedBuf> = (0..16)
            .map(|i| pool.take_staging((i % 8 + 1) * step))
            .collect();
        for b in bufs {
            pool.give_staging(b);
        }
        let kept = pool.kept_staging_bytes();
        assert!(kept <= KEPT_STAGING_BYTES, "{kept} bytes kept");
        assert!(kept >= KEPT_STAGING_BYTES - 8 * step, "{kept} bytes kept");
        assert_eq!(pool.take_staging(8 * step).len(), 8 * step, "largest kept");
    }

    #[test]
    fn plain_buffers_are_kept_up_to_their_limit() {
        let pool = BlobBuffers::default();
        for _ in 0..KEPT_PLAIN_BUFFERS + 3 {
            pool.give_plain(Vec::with_capacity(10));
        }
        assert_eq!(
            pool.plain.lock().map(|f| f.len()).unwrap_or(0),
            KEPT_PLAIN_BUFFERS
        );
    }
}
