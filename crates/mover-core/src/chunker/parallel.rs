//! Chunking one large buffer on all cores (rayon) with cut points exactly those of a
//! sequential pass. Pure: works on `&[u8]` through [`CutFinder`]; must not read files, hash
//! chunks or start threads of its own (it runs on the caller's rayon pool).
//!
//! Each segment of the buffer is chunked independently as if a chunk started at its first
//! byte. The true chunk sequence is then stitched together from the front: once it lands
//! on a cut that a segment's pass also made, both sequences are the same from there on
//! (the cut after a chunk start depends only on the data), so the segment's remaining cuts
//! are adopted. Until then the true sequence is extended one chunk at a time.

use rayon::prelude::*;

use super::fastcdc::{self, FastCdcParams};
use super::rabin::RabinChunker;

/// A chunker that can say where the chunk starting at `data[0]` ends.
pub trait CutFinder: Sync {
    /// Length of the first chunk of `data` once no further input can change it (`eof`, a
    /// content-defined cut found, or `max_size` bytes at hand); `None` if more data is
    /// needed or `data` is empty. A returned length is at least 1.
    fn first_chunk_len(&self, data: &[u8], eof: bool) -> Option<usize>;
    /// Nominal smallest chunk (except the last one of a stream).
    fn min_size(&self) -> usize;
    /// Nominal largest chunk.
    fn max_size(&self) -> usize;
}

impl CutFinder for FastCdcParams {
    fn first_chunk_len(&self, data: &[u8], eof: bool) -> Option<usize> {
        fastcdc::first_chunk_len(data, eof, self)
    }

    fn min_size(&self) -> usize {
        self.min_size
    }

    fn max_size(&self) -> usize {
        self.max_size
    }
}

impl CutFinder for RabinChunker {
    fn first_chunk_len(&self, data: &[u8], eof: bool) -> Option<usize> {
        RabinChunker::first_chunk_len(self, data, eof)
    }

    fn min_size(&self) -> usize {
        RabinChunker::min_size(self)
    }

    fn max_size(&self) -> usize {
        RabinChunker::max_size(self)
    }
}

/// Sequential reference: cut `data` from the front while chunks are determined. Returns the
/// chunk lengths and the bytes they cover (all of `data` when `eof`).
pub fn sequential_chunk_lengths<C: CutFinder + ?Sized>(
    c: &C,
    data: &[u8],
    eof: bool,
) -> (Vec<usize>, usize) {
    let mut lengths = Vec::new();
    let mut pos = 0;
    while let Some(len) = step(c, data, pos, eof) {
        lengths.push(len);
        pos += len;
    }
    (lengths, pos)
}

/// The chunk starting at `pos`, if determined. Never 0, so callers always make progress.
fn step<C: CutFinder + ?Sized>(c: &C, data: &[u8], pos: usize, eof: bool) -> Option<usize> {
    let rest = data.get(pos..).filter(|r| !r.is_empty())?;
    c.first_chunk_len(rest, eof)
        .map(|len| len.clamp(1, rest.len()))
}

/// Cuts made by chunking onward from some position, as if a chunk started there.
struct Run {
    /// Chunk end offsets (absolute, ascending).
    cuts: Vec<usize>,
    /// The run stopped on an undetermined chunk (only when not at eof).
    stalled: bool,
}

/// Chunks from `pos` until `done(position)` holds or a chunk is undetermined.
fn run_from<C: CutFinder + ?Sized>(
    c: &C,
    data: &[u8],
    mut pos: usize,
    eof: bool,
    done: impl Fn(usize) -> bool,
) -> Run {
    let mut cuts = Vec::new();
    while !done(pos) {
        match step(c, data, pos, eof) {
            Some(len) => {
                pos += len;
                cuts.push(pos);
            }
            None => {
                return Run {
                    cuts,
                    stalled: true,
                };
            }
        }
    }
    Run {
        cuts,
        stalled: false,
    }
}

/// Does the run that started at `start` begin a chunk at `pos`?
fn starts_chunk(run: &Run, start: usize, pos: usize) -> bool {
    pos == start || run.cuts.binary_search(&pos).is_ok()
}

/// Chunk lengths of `data` exactly as [`sequential_chunk_lengths`] gives them, computed on
/// the current rayon pool in segments of `segment_bytes` (raised to at least
/// `c.max_size()`). Returns the lengths and the bytes they cover: with `eof` all of `data`;
/// without it only chunks whose end is determined, so the caller keeps the tail and
/// prepends it to the next buffer.
pub fn parallel_chunk_lengths<C: CutFinder + ?Sized>(
    c: &C,
    data: &[u8],
    eof: bool,
    segment_bytes: usize,
) -> (Vec<usize>, usize) {
    let n = data.len();
    let seg = segment_bytes.max(c.max_size()).max(1);
    if n <= seg {
        return sequential_chunk_lengths(c, data, eof);
    }
    let segments = n.div_ceil(seg);
    let seg_start = |k: usize| (k * seg).min(n);
    // Phase 1: each segment chunked from its own start until a chunk starts past its end.
    // Segment 0's pass is the true sequence for its segment.
    let passes: Vec<Run> = (0..segments)
        .into_par_iter()
        .map(|k| run_from(c, data, seg_start(k), eof, |p| p >= seg_start(k + 1)))
        .collect();
    // Phase 2: continue each pass into the next segment until it meets a cut of that
    // segment's pass. If the true sequence ever joins pass k, it follows this extension
    // into pass k + 1, so the stitching below needs no sequential work in the usual case.
    let extensions: Vec<Run> = (0..segments - 1)
        .into_par_iter()
        .map(|k| match passes[k].cuts.last() {
            Some(&last) if !passes[k].stalled => run_from(c, data, last, eof, |p| {
                p >= seg_start(k + 2) || starts_chunk(&passes[k + 1], seg_start(k + 1), p)
            }),
            _ => Run {
                cuts: Vec::new(),
                stalled: passes[k].stalled,
            },
        })
        .collect();

    let mut cuts: Vec<usize> = Vec::with_capacity(passes.iter().map(|p| p.cuts.len()).sum());
    let mut pos = 0;
    while pos < n {
        let k = pos / seg;
        let pass = &passes[k];
        if starts_chunk(pass, seg_start(k), pos) {
            // The true sequence is at a chunk start of pass k: from here on they agree.
            let from = pass.cuts.partition_point(|&cut| cut <= pos);
            cuts.extend_from_slice(&pass.cuts[from..]);
            if pass.stalled {
                break;
            }
            if let Some(ext) = extensions.get(k) {
                cuts.extend_from_slice(&ext.cuts);
                if ext.stalled {
                    break;
                }
            }
            let last = cuts.last().copied().unwrap_or(0);
            if last > pos {
                pos = last;
                continue;
            }
            // Unreachable: a pass that did not stall cuts past its segment end. A
            // sequential step below keeps the loop making progress regardless.
        }
        // Not (yet) in step with pass k: cut one chunk sequentially and look again.
        match step(c, data, pos, eof) {
            Some(len) => {
                pos += len;
                cuts.push(pos);
            }
            None => break,
        }
    }

    let mut lengths = Vec::with_capacity(cuts.len());
    let mut prev = 0;
    for &cut in &cuts {
        lengths.push(cut - prev);
        prev = cut;
    }
    (lengths, prev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::Chunker;
    use crate::chunker::polynomial::Polynomial;
    use crate::chunker::rabin::RabinTables;
    use proptest::prelude::*;
    use std::sync::Arc;

    const P: Polynomial = Polynomial(0x3DA3358B4DC173);

    fn splitmix(len: usize, seed: u64) -> Vec<u8> {
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

    /// Data made of random stretches, zero runs and short repeated patterns.
    fn mixed(parts: &[(u8, usize, u64)]) -> Vec<u8> {
        let mut data = Vec::new();
        for &(kind, len, seed) in parts {
            match kind {
                0 => data.extend(splitmix(len, seed)),
                1 => data.extend(std::iter::repeat_n(0u8, len)),
                _ => {
                    let pattern = splitmix(1 + (seed % 97) as usize, seed);
                    data.extend(pattern.iter().cycle().take(len));
                }
            }
        }
        data
    }

    fn small_fastcdc() -> Chunker {
        Chunker::FastCdc(FastCdcParams {
            min_size: 1024,
            avg_size: 4096,
            max_size: 16384,
        })
    }

    fn small_rabin() -> Chunker {
        let t = Arc::new(RabinTables::new(P).unwrap());
        Chunker::Rabin(RabinChunker::with_sizes(t, 1000, 20_000, 11).unwrap())
    }

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    /// Feeds `data` in windows of the given sizes with eof=false, keeping the undetermined
    /// tail, then finishes with eof=true.
    fn windowed(c: &Chunker, data: &[u8], windows: &[usize], seg: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut start = 0; // first byte not yet in a chunk
        let mut end = 0; // bytes handed over so far
        let mut windows = windows.iter().cycle();
        while end < data.len() {
            end = (end + windows.next().copied().unwrap_or(1).max(1)).min(data.len());
            let (lengths, consumed) = parallel_chunk_lengths(c, &data[start..end], false, seg);
            assert_eq!(lengths.iter().sum::<usize>(), consumed);
            out.extend(lengths);
            start += consumed;
        }
        let (lengths, consumed) = parallel_chunk_lengths(c, &data[start..], true, seg);
        assert_eq!(start + consumed, data.len());
        out.extend(lengths);
        out
    }

    fn check(c: &Chunker, data: &[u8], seg: usize, windows: &[usize]) {
        let expected = c.chunk_lengths(data);
        assert_eq!(
            sequential_chunk_lengths(c, data, true),
            (expected.clone(), data.len())
        );
        assert_eq!(
            parallel_chunk_lengths(c, data, true, seg),
            (expected.clone(), data.len()),
            "{} seg {seg}",
            c.name()
        );
        // Without eof, exactly the chunks a sequential pass can determine.
        assert_eq!(
            parallel_chunk_lengths(c, data, false, seg),
            sequential_chunk_lengths(c, data, false)
        );
        assert_eq!(windowed(c, data, windows, seg), expected);
    }

    #[test]
    fn names_and_bounds() {
        let f = Chunker::FastCdc(FastCdcParams::default());
        let r = Chunker::Rabin(RabinChunker::new(P).unwrap());
        assert_eq!((f.name(), r.name()), ("fastcdc", "rabin"));
        assert_eq!((f.min_size(), f.max_size()), (512 << 10, 8 << 20));
        assert_eq!((r.min_size(), r.max_size()), (512 << 10, 8 << 20));
        assert_eq!(parallel_chunk_lengths(&f, &[], true, 1), (vec![], 0));
        assert_eq!(parallel_chunk_lengths(&r, &[], false, 1), (vec![], 0));
    }

    /// Uniform data never resynchronises when segments are not aligned to the cut period,
    /// so every segment falls back to sequential cutting.
    #[test]
    fn uniform_data_falls_back_to_sequential() {
        let r = small_rabin();
        let f = small_fastcdc();
        for data in [vec![0u8; 300_000], vec![1u8; 300_000]] {
            for seg in [20_001, 33_333, 40_000, 65_536] {
                for c in [&r, &f] {
                    pool(3).install(|| check(c, &data, seg, &[70_000, 12_345]));
                }
            }
        }
    }

    /// restic-sized chunkers on a 1-thread pool and a many-thread pool: same cuts as the
    /// sequential pass, no deadlock.
    #[test]
    fn one_and_many_threads_agree_at_restic_sizes() {
        let data = mixed(&[
            (0, 20 << 20, 3),
            (1, 3 << 20, 0),
            (2, 2 << 20, 5),
            (0, 3 << 20, 4),
        ]);
        for c in [
            Chunker::FastCdc(FastCdcParams::default()),
            Chunker::Rabin(RabinChunker::new(P).unwrap()),
        ] {
            let expected = (c.chunk_lengths(&data), data.len());
            assert!(expected.0.len() > 10);
            for threads in [1, 16] {
                let got =
                    pool(threads).install(|| parallel_chunk_lengths(&c, &data, true, 8 << 20));
                assert_eq!(got, expected, "{} with {threads} threads", c.name());
            }
            let got = pool(4).install(|| parallel_chunk_lengths(&c, &data, false, 8 << 20));
            assert_eq!(got, sequential_chunk_lengths(&c, &data, false));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn same_cuts_as_sequential(
            parts in proptest::collection::vec((0u8..3, 1usize..60_000, any::<u64>()), 0..10),
            seg in 1usize..80_000,
            threads in 1usize..6,
            windows in proptest::collection::vec(1usize..150_000, 1..4),
            rabin in any::<bool>(),
        ) {
            let data = mixed(&parts);
            let c = if rabin { small_rabin() } else { small_fastcdc() };
            pool(threads).install(|| check(&c, &data, seg, &windows));
        }
    }
}
