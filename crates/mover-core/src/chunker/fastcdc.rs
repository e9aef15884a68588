//! FastCDC (2020 variant, via the `fastcdc` crate) cut points for mover's own chunking.
//! Pure: takes `&[u8]`, returns chunk lengths. Must not read files, hash or buffer data;
//! the caller owns buffering and feeds [`first_chunk_len`] a growing buffer.

use fastcdc::v2020;

/// Chunk size bounds. The defaults match restic's Rabin chunker (512 KiB minimum, 8 MiB
/// maximum) with a 1 MiB target, so pack and index sizes look like restic's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastCdcParams {
    pub min_size: usize,
    pub avg_size: usize,
    pub max_size: usize,
}

impl Default for FastCdcParams {
    fn default() -> Self {
        FastCdcParams {
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 8 * 1024 * 1024,
        }
    }
}

/// Parameters clamped into the fastcdc crate's accepted ranges (even sizes,
/// min <= avg <= max). Valid parameters, including the defaults, pass through unchanged;
/// clamping only keeps hostile or mistaken values from panicking inside the crate.
#[derive(Clone, Copy)]
struct Cutter {
    min_size: usize,
    avg_size: usize,
    max_size: usize,
    mask_s: u64,
    mask_l: u64,
}

fn even(x: usize) -> usize {
    x & !1
}

impl Cutter {
    fn new(params: &FastCdcParams) -> Cutter {
        let min_size = even(
            params
                .min_size
                .clamp(v2020::MINIMUM_MIN, v2020::MINIMUM_MAX),
        );
        let avg_size = even(
            params
                .avg_size
                .clamp(v2020::AVERAGE_MIN, v2020::AVERAGE_MAX),
        )
        .max(min_size);
        let max_size = even(
            params
                .max_size
                .clamp(v2020::MAXIMUM_MIN, v2020::MAXIMUM_MAX),
        )
        .max(avg_size);
        let (mask_s, mask_l) = v2020::select_masks(avg_size, v2020::Normalization::Level1);
        Cutter {
            min_size,
            avg_size,
            max_size,
            mask_s,
            mask_l,
        }
    }

    /// Length of the first chunk of `data` assuming `data` ends the stream.
    fn cut(&self, data: &[u8]) -> usize {
        let (_, len) = v2020::cut(
            data,
            self.min_size,
            self.avg_size,
            self.max_size,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        len
    }
}

/// Lengths of the consecutive chunks covering `data`; empty input has no chunks.
pub fn chunk_lengths(data: &[u8], params: &FastCdcParams) -> Vec<usize> {
    let cutter = Cutter::new(params);
    let mut lengths = Vec::with_capacity(data.len() / cutter.avg_size + 1);
    let mut pos = 0;
    while pos < data.len() {
        let len = cutter.cut(&data[pos..]);
        // The crate returns at least min(min_size, remaining) > 0 for non-empty input;
        // guard anyway so a zero can never loop forever.
        let len = len.max(1);
        lengths.push(len);
        pos += len;
    }
    lengths
}

/// Length of the first chunk of `data` if no further input can change it: when `eof` is
/// set, when `data` holds at least `max_size` bytes, or when a content-defined cut was
/// already found inside `data`. Otherwise `None`: append more data and ask again. Cutting
/// a stream this way gives exactly [`chunk_lengths`] of the whole stream.
pub fn first_chunk_len(data: &[u8], eof: bool, params: &FastCdcParams) -> Option<usize> {
    if data.is_empty() {
        return None;
    }
    let cutter = Cutter::new(params);
    let len = cutter.cut(data).max(1);
    // The crate scans candidate positions in order and only ever looks at bytes before
    // min(len, max_size), with the same mask at each position whatever follows. So a cut
    // strictly inside the data (a real cut, never the end-of-data fallback) is final.
    if eof || data.len() >= cutter.max_size || len < data.len() {
        Some(len)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SMALL: FastCdcParams = FastCdcParams {
        min_size: 1024,
        avg_size: 4096,
        max_size: 16384,
    };

    /// SplitMix64 bytes: deterministic, incompressible test data.
    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            state = state.wrapping_add(0x9E3779B97F4A7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
            z ^= z >> 31;
            out.extend_from_slice(&z.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Feeds `data` in pieces of the given sizes, cutting whenever a chunk is determined.
    fn streamed(data: &[u8], pieces: &[usize], params: &FastCdcParams) -> Vec<usize> {
        let mut out = Vec::new();
        let mut start = 0; // start of the unconsumed buffer within data
        let mut end = 0; // bytes fed so far
        let mut pieces = pieces.iter().cycle();
        while end < data.len() {
            end = (end + pieces.next().copied().unwrap_or(1).max(1)).min(data.len());
            while let Some(n) = first_chunk_len(&data[start..end], false, params) {
                out.push(n);
                start += n;
            }
        }
        while let Some(n) = first_chunk_len(&data[start..end], true, params) {
            out.push(n);
            start += n;
        }
        assert_eq!(start, data.len());
        out
    }

    fn check_bounds(lengths: &[usize], total: usize, params: &FastCdcParams) {
        assert_eq!(lengths.iter().sum::<usize>(), total);
        if let Some((_, body)) = lengths.split_last() {
            for &l in body {
                assert!(
                    l >= params.min_size && l <= params.max_size,
                    "{l} out of bounds"
                );
            }
        }
        for &l in lengths {
            assert!(l > 0 && l <= params.max_size);
        }
    }

    #[test]
    fn defaults() {
        let p = FastCdcParams::default();
        assert_eq!(
            (p.min_size, p.avg_size, p.max_size),
            (524_288, 1_048_576, 8_388_608)
        );
    }

    #[test]
    fn empty_and_tiny_inputs() {
        let p = FastCdcParams::default();
        assert!(chunk_lengths(&[], &p).is_empty());
        assert_eq!(first_chunk_len(&[], true, &p), None);
        assert_eq!(chunk_lengths(&[1, 2, 3], &p), vec![3]);
        assert_eq!(first_chunk_len(&[1, 2, 3], false, &p), None);
        assert_eq!(first_chunk_len(&[1, 2, 3], true, &p), Some(3));
    }

    #[test]
    fn default_params_on_real_sized_data() {
        let p = FastCdcParams::default();
        let data = pseudo_random(24 << 20, 1);
        let lengths = chunk_lengths(&data, &p);
        check_bounds(&lengths, data.len(), &p);
        assert!(lengths.len() >= 8, "{lengths:?}");
        assert_eq!(streamed(&data, &[1 << 20, 333_333, 4 << 20], &p), lengths);
        // Chunking is deterministic and content-defined: a prefix insertion only moves
        // the first cuts, so most chunks reappear.
        let mut shifted = b"prefix".to_vec();
        shifted.extend_from_slice(&data);
        let again = chunk_lengths(&shifted, &p);
        let tail_same = lengths
            .iter()
            .rev()
            .zip(again.iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        assert!(tail_same + 2 >= lengths.len(), "{lengths:?} vs {again:?}");
    }

    #[test]
    fn uniform_data_cuts_at_max() {
        let p = FastCdcParams::default();
        let data = vec![0u8; 9 << 20];
        assert_eq!(chunk_lengths(&data, &p), vec![8 << 20, 1 << 20]);
        assert_eq!(first_chunk_len(&data[..8 << 20], false, &p), Some(8 << 20));
        assert_eq!(first_chunk_len(&data[..(8 << 20) - 1], false, &p), None);
    }

    #[test]
    fn odd_or_hostile_params_do_not_panic() {
        let data = pseudo_random(100_000, 2);
        for p in [
            FastCdcParams {
                min_size: 0,
                avg_size: 0,
                max_size: 0,
            },
            FastCdcParams {
                min_size: 1001,
                avg_size: 3001,
                max_size: 9001,
            },
            FastCdcParams {
                min_size: usize::MAX,
                avg_size: usize::MAX,
                max_size: usize::MAX,
            },
            FastCdcParams {
                min_size: 50_000,
                avg_size: 300,
                max_size: 2000,
            },
        ] {
            let lengths = chunk_lengths(&data, &p);
            assert_eq!(lengths.iter().sum::<usize>(), data.len());
            assert_eq!(streamed(&data, &[7000], &p), lengths);
        }
    }

    proptest! {
        #[test]
        fn invariants(
            len in 0usize..200_000,
            seed in any::<u64>(),
            pieces in proptest::collection::vec(1usize..40_000, 1..8),
        ) {
            let data = pseudo_random(len, seed);
            let lengths = chunk_lengths(&data, &SMALL);
            check_bounds(&lengths, data.len(), &SMALL);
            prop_assert_eq!(streamed(&data, &pieces, &SMALL), lengths);
        }

        #[test]
        fn low_entropy_data(
            len in 0usize..100_000,
            alphabet in 1u8..4,
            seed in any::<u64>(),
            pieces in proptest::collection::vec(1usize..20_000, 1..4),
        ) {
            let data: Vec<u8> = pseudo_random(len, seed).into_iter().map(|b| b % alphabet).collect();
            let lengths = chunk_lengths(&data, &SMALL);
            check_bounds(&lengths, data.len(), &SMALL);
            prop_assert_eq!(streamed(&data, &pieces, &SMALL), lengths);
        }
    }
}
