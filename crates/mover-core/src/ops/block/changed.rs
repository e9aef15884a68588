//! Incremental block backups from changed ranges (changed block tracking): only the changed
//! bytes, and what content-defined chunking needs around them, are read; every other chunk
//! is the parent's. The content list is exactly the one a full re-read would give.
//!
//! Why: the cut that ends a chunk depends only on the bytes from the chunk's start up to the
//! cut and at most a few bytes past it (FastCDC decides a cut on the byte after it;
//! [`CUT_LOOKAHEAD`] bounds this for every chunker). So
//! - every parent cut at least `CUT_LOOKAHEAD` before the start `a` of a changed range is
//!   also a cut of the new stream (the bytes before `a` did not change): chunking resumes at
//!   the last such cut;
//! - chunking the new bytes from there gives the new stream's cuts, and once a new cut lands
//!   on a parent cut `p` at or after the end `b` of every change seen so far, both streams
//!   start a chunk at `p` over the same bytes: the parent's chunks are the new ones again up
//!   to the next change.
//!
//! The parent's last cut is its end of stream, not content-defined: when the size changed,
//! the tail from the parent's last chunk on counts as changed.
//!
//! Pure: bytes come from a `read` callback and chunks go to a `save` callback.

use crate::chunker::Chunker;
use crate::chunker::parallel::CutFinder;
use crate::error::{Error, Result};
use crate::format::BlobId;
use std::ops::Range;

/// How far past a cut a chunker may look to decide it (a rolling-hash window at most).
pub const CUT_LOOKAHEAD: u64 = 64;

/// Bytes read beyond the chunker's smallest chunk before the first cut is looked for. Each
/// further read doubles what is at hand: a chunk is rescanned from its start each time, so
/// linear steps would cost quadratic hashing, and doubling bounds both the rescans and the
/// bytes read past the cut where chunking meets the parent again.
const READ_STEP_BYTES: usize = 128 * 1024;

/// Parses changed ranges: one `offset length` pair per line, in bytes (decimal, or `0x`
/// hex). Blank lines and lines starting with `#` are skipped. `what` names the source in
/// errors.
pub fn parse_changed_ranges(text: &str, what: &str) -> Result<Vec<Range<u64>>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "{what} line {}: {why} (expected \"OFFSET LENGTH\" in bytes): {line:?}",
                n + 1
            ))
        };
        let mut words = line.split_whitespace();
        let (Some(offset), Some(length), None) = (words.next(), words.next(), words.next()) else {
            return Err(bad("not two numbers"));
        };
        let number = |w: &str| match w.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => w.parse::<u64>().ok(),
        };
        let (Some(offset), Some(length)) = (number(offset), number(length)) else {
            return Err(bad("not a byte count"));
        };
        let end = offset
            .checked_add(length)
            .ok_or_else(|| bad("the range ends past 2^64"))?;
        if length > 0 {
            out.push(offset..end);
        }
    }
    Ok(out)
}

/// Sorted, merged ranges within `0..size`.
pub fn normalize(ranges: &[Range<u64>], size: u64) -> Vec<Range<u64>> {
    let mut sorted: Vec<Range<u64>> = ranges
        .iter()
        .map(|r| r.start.min(size)..r.end.min(size))
        .filter(|r| r.start < r.end)
        .collect();
    sorted.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// The content list of the new stream and how many of its bytes were read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rechunked {
    pub content: Vec<BlobId>,
    pub bytes_read: u64,
    /// Chunks taken from the parent without reading them.
    pub reused: u64,
}

/// Chunks a stream of `size` bytes whose parent stream had the chunks `parent` (id and
/// plaintext length, in order) and which differs from it at most in `changed`. `read(offset,
/// buf)` fills `buf` from the new stream; `save(bytes)` stores a new chunk and returns its
/// id. `chunks_saved` is called with each region's new chunks in stream order.
pub fn rechunk(
    chunker: &Chunker,
    parent: &[(BlobId, u64)],
    size: u64,
    changed: &[Range<u64>],
    mut read: impl FnMut(u64, &mut [u8]) -> Result<()>,
    mut save: impl FnMut(Vec<Vec<u8>>) -> Result<Vec<BlobId>>,
) -> Result<Rechunked> {
    if size == 0 {
        return Ok(Rechunked {
            content: Vec::new(),
            bytes_read: 0,
            reused: 0,
        });
    }
    let mut cuts = Vec::with_capacity(parent.len() + 1);
    cuts.push(0u64);
    for (_, len) in parent {
        let end = cuts[cuts.len() - 1] + len;
        cuts.push(end);
    }
    let parent_size = cuts[cuts.len() - 1];
    let mut ranges = changed.to_vec();
    if size != parent_size {
        // The parent's last cut was its end, not a content-defined cut.
        // And a shorter stream ends inside some parent chunk, whose cut is not its end.
        let last_start = cuts[cuts.len().saturating_sub(2)];
        ranges.push(last_start.min(size - 1)..size);
    }
    let ranges = normalize(&ranges, size);
    let max = chunker.max_size().max(1);
    let mut out = Rechunked {
        content: Vec::with_capacity(parent.len()),
        bytes_read: 0,
        reused: 0,
    };
    // `pos` is a cut of both streams, and the start of parent chunk `i`.
    let (mut pos, mut i) = (0u64, 0usize);
    let mut next = 0;
    while next < ranges.len() {
        let a = ranges[next].start;
        // The parent's chunks that end at or before the change are the new stream's.
        while i < parent.len() && cuts[i + 1] + CUT_LOOKAHEAD <= a {
            out.content.push(parent[i].0);
            out.reused += 1;
            i += 1;
        }
        pos = cuts[i];
        let mut b = ranges[next].end;
        next += 1;
        // Re-chunk from `pos` until a cut meets a parent cut past every change seen.
        let mut buf: Vec<u8> = Vec::new();
        let mut region: Vec<Vec<u8>> = Vec::new();
        let resynced = loop {
            let left = size - pos;
            let mut want = (chunker.min_size() + READ_STEP_BYTES).min(max) as u64;
            let len = loop {
                want = want.min(left);
                if (buf.len() as u64) < want {
                    let from = buf.len();
                    buf.resize(want as usize, 0);
                    read(pos + from as u64, &mut buf[from..])?;
                    out.bytes_read += (buf.len() - from) as u64;
                }
                let eof = buf.len() as u64 == left;
                if let Some(len) = chunker.first_chunk_len(&buf, eof) {
                    break len;
                }
                if eof || buf.len() >= max {
                    return Err(Error::Internal(format!(
                        "chunker found no cut in {} bytes at offset {pos}",
                        buf.len()
                    )));
                }
                want = (buf.len() * 2).min(max) as u64;
            };
            region.push(buf[..len].to_vec());
            buf.drain(..len);
            pos += len as u64;
            if pos == size {
                break None;
            }
            while next < ranges.len() && ranges[next].start < pos {
                b = b.max(ranges[next].end);
                next += 1;
            }
            if pos >= b && pos < parent_size {
                if let Ok(k) = cuts.binary_search(&pos) {
                    break Some(k);
                }
            }
        };
        out.content.extend(save(region)?);
        match resynced {
            Some(k) => i = k,
            None => {
                i = parent.len();
                pos = size;
                break;
            }
        }
    }
    // Unchanged to the end: the parent's remaining chunks.
    if pos < size || i < parent.len() {
        out.content.extend(parent[i..].iter().map(|(id, _)| *id));
        out.reused += (parent.len() - i) as u64;
        if parent_size != size {
            return Err(Error::Internal(format!(
                "changed-range chunking ended at the parent's end {parent_size}, not at {size}"
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::fastcdc::FastCdcParams;
    use crate::chunker::polynomial::Polynomial;
    use crate::chunker::rabin::{RabinChunker, RabinTables};
    use crate::format::Id;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn small_rabin() -> Chunker {
        let tables = Arc::new(RabinTables::new(Polynomial(0x3DA3358B4DC173)).unwrap());
        Chunker::Rabin(RabinChunker::with_sizes(tables, 256, 4096, 9).unwrap())
    }

    fn small_fastcdc() -> Chunker {
        Chunker::FastCdc(FastCdcParams {
            min_size: 256,
            avg_size: 1024,
            max_size: 4096,
        })
    }

    fn full(chunker: &Chunker, data: &[u8]) -> Vec<(BlobId, u64)> {
        let mut pos = 0;
        chunker
            .chunk_lengths(data)
            .into_iter()
            .map(|len| {
                let id = BlobId(Id::hash(&data[pos..pos + len]));
                pos += len;
                (id, len as u64)
            })
            .collect()
    }

    fn incremental(
        chunker: &Chunker,
        parent: &[u8],
        new: &[u8],
        changed: &[Range<u64>],
    ) -> Rechunked {
        let parent_chunks = full(chunker, parent);
        rechunk(
            chunker,
            &parent_chunks,
            new.len() as u64,
            changed,
            |off, buf| {
                let off = off as usize;
                buf.copy_from_slice(&new[off..off + buf.len()]);
                Ok(())
            },
            |chunks| Ok(chunks.iter().map(|c| BlobId(Id::hash(c))).collect()),
        )
        .unwrap()
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// An image, writes to it (offset, bytes), a new size, and whether Rabin chunks it.
    type Case = (Vec<u8>, Vec<(usize, Vec<u8>)>, usize, bool);

    fn case() -> impl Strategy<Value = Case> {
        (1usize..60_000, any::<u64>(), any::<bool>()).prop_flat_map(|(len, seed, rabin)| {
            let writes = proptest::collection::vec(
                (0..len, proptest::collection::vec(any::<u8>(), 1..3000)),
                0..6,
            );
            let new_len = prop_oneof![Just(len), 0..len + 9000];
            (Just(noise(len, seed)), writes, new_len, Just(rabin))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn the_content_list_is_a_full_re_reads((image, writes, new_len, rabin) in case()) {
            let chunker = if rabin { small_rabin() } else { small_fastcdc() };
            let mut new = image.clone();
            new.resize(new_len, 7);
            let mut changed = Vec::new();
            for (off, bytes) in &writes {
                let end = (off + bytes.len()).min(new.len());
                if *off < end {
                    new[*off..end].copy_from_slice(&bytes[..end - off]);
                    changed.push(*off as u64..end as u64);
                }
            }
            let got = incremental(&chunker, &image, &new, &changed);
            let want: Vec<BlobId> = full(&chunker, &new).into_iter().map(|(id, _)| id).collect();
            prop_assert_eq!(got.content, want);
        }
    }

    #[test]
    fn a_small_change_reads_a_few_chunks_not_the_image() {
        for chunker in [small_rabin(), small_fastcdc()] {
            let image = noise(1 << 20, 3);
            let mut new = image.clone();
            new[500_000..500_064].fill(0xAB);
            let changed: Vec<Range<u64>> = std::iter::once(500_000..500_064).collect();
            let got = incremental(&chunker, &image, &new, &changed);
            let want: Vec<BlobId> = full(&chunker, &new).into_iter().map(|(id, _)| id).collect();
            assert_eq!(got.content, want);
            assert!(got.bytes_read <= 4 * 4096, "{} bytes read", got.bytes_read);
            assert!(got.reused as usize >= want.len() - 4);
        }
    }

    #[test]
    fn nothing_changed_reads_nothing() {
        let chunker = small_rabin();
        let image = noise(100_000, 5);
        let got = incremental(&chunker, &image, &image, &[]);
        assert_eq!(got.bytes_read, 0);
        let want: Vec<BlobId> = full(&chunker, &image)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(got.content, want);
    }

    #[test]
    fn ranges_parse_merge_and_clip() {
        let r =
            parse_changed_ranges("# thin_delta\n0 4096\n\n0x2000 0x1000\n8000 100\n", "f").unwrap();
        assert_eq!(r, vec![0..4096, 8192..12288, 8000..8100]);
        assert_eq!(
            normalize(&r, 10_000),
            vec![0..4096, 8000..8100, 8192..10_000]
        );
        assert_eq!(normalize(&[5..9, 0..5, 7..20], 12), vec![0..12]);
        for bad in ["1", "1 2 3", "x 2", "-1 4", "18446744073709551615 2"] {
            let e = parse_changed_ranges(bad, "ranges.txt")
                .unwrap_err()
                .to_string();
            assert!(e.contains("ranges.txt line 1"), "{e}");
        }
    }
}
