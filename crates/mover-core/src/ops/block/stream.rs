//! Cutting one long stream (a volume) into chunks with exactly the cut points of a
//! sequential pass, while runs of zeros are known without materialising them. Pure CPU on
//! the caller's rayon pool: no I/O, no hashing.
//!
//! Why zero runs can be skipped: a chunker's cut after a chunk start depends only on the
//! bytes from that start on, and is determined by at most `max_size` of them
//! ([`CutFinder::first_chunk_len`]). So whenever a chunk starts at `p` and the next
//! `max_size` bytes are known zeros, that chunk has the fixed length `L0` =
//! `first_chunk_len(zeros(max_size))`, and by induction so do the following ones while at
//! least `max_size` known zeros remain. Everything else goes through the parallel chunker.

use crate::chunker::Chunker;
use crate::chunker::parallel::{CutFinder, parallel_chunk_lengths};

/// Segment size for chunking one window on several cores.
const CHUNK_SEGMENT_BYTES: usize = 8 * 1024 * 1024;

/// One chunk handed to the sink: bytes of the stream, or `count` chunks of `len` zeros.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    Bytes(&'a [u8]),
    Zeros { len: usize, count: u64 },
}

impl Chunk<'_> {
    /// Stream bytes this chunk stands for.
    pub fn stream_len(&self) -> u64 {
        match self {
            Chunk::Bytes(b) => b.len() as u64,
            Chunk::Zeros { len, count } => *len as u64 * count,
        }
    }
}

/// Feeds a stream through a chunker window by window; see the module docs.
pub struct StreamChunker<'c> {
    chunker: &'c Chunker,
    zeros: &'c [u8],
    window_bytes: usize,
    /// Bytes since the last cut; `pending[0]` starts a chunk.
    pending: Vec<u8>,
    /// How many trailing bytes of `pending` came from known zero runs.
    zero_tail: usize,
    /// Length of a chunk that starts in front of `max_size` zeros, if determined.
    zero_chunk_len: Option<usize>,
}

impl<'c> StreamChunker<'c> {
    /// `zeros` must be at least `chunker.max_size()` zero bytes; windows of `window_bytes`
    /// (at least twice `max_size`) are chunked at once.
    pub fn new(chunker: &'c Chunker, zeros: &'c [u8], window_bytes: usize) -> StreamChunker<'c> {
        let max = chunker.max_size();
        let zero_chunk_len = zeros
            .get(..max)
            .and_then(|z| chunker.first_chunk_len(z, false))
            .filter(|&l| l > 0 && l <= max);
        StreamChunker {
            chunker,
            zeros,
            window_bytes: window_bytes.max(2 * max),
            pending: Vec::new(),
            zero_tail: 0,
            zero_chunk_len,
        }
    }

    /// Appends stream bytes; cuts whole windows as they fill.
    pub fn push_data<E>(
        &mut self,
        mut data: &[u8],
        sink: &mut impl FnMut(&[Chunk<'_>]) -> Result<(), E>,
    ) -> Result<(), E> {
        while !data.is_empty() {
            let room = self.window_bytes.saturating_sub(self.pending.len()).max(1);
            let (now, rest) = data.split_at(room.min(data.len()));
            self.pending.extend_from_slice(now);
            self.zero_tail = 0;
            data = rest;
            if self.pending.len() >= self.window_bytes {
                self.flush(false, sink)?;
            }
        }
        Ok(())
    }

    /// Appends `len` zero bytes of the stream (a hole, or zeros already seen in a buffer).
    pub fn push_zeros<E>(
        &mut self,
        len: u64,
        sink: &mut impl FnMut(&[Chunk<'_>]) -> Result<(), E>,
    ) -> Result<(), E> {
        let max = self.chunker.max_size();
        let mut left = len;
        while left > 0 {
            if let Some(l0) = self.zero_chunk_len {
                if self.zero_tail == self.pending.len() {
                    // `pending` starts a chunk and holds only zeros.
                    let total = self.pending.len() as u64 + left;
                    if total >= max as u64 {
                        let count = (total - max as u64) / l0 as u64 + 1;
                        sink(&[Chunk::Zeros { len: l0, count }])?;
                        left = total - count * l0 as u64;
                        self.pending.clear();
                        self.zero_tail = 0;
                        continue;
                    }
                }
            }
            let take = left.min(self.zeros.len().min(max).max(1) as u64) as usize;
            let take = take.min(self.zeros.len());
            if take == 0 {
                // No zero buffer: nothing sensible can be appended; stop rather than spin.
                break;
            }
            self.pending.extend_from_slice(&self.zeros[..take]);
            self.zero_tail += take;
            left -= take as u64;
            if self.pending.len() >= self.window_bytes
                || (left > 0 && self.zero_chunk_len.is_some())
            {
                self.flush(false, sink)?;
            }
        }
        Ok(())
    }

    /// Cuts the rest of the stream.
    pub fn finish<E>(
        mut self,
        sink: &mut impl FnMut(&[Chunk<'_>]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.flush(true, sink)
    }

    fn flush<E>(
        &mut self,
        eof: bool,
        sink: &mut impl FnMut(&[Chunk<'_>]) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let (lengths, consumed) =
            parallel_chunk_lengths(self.chunker, &self.pending, eof, CHUNK_SEGMENT_BYTES);
        if consumed == 0 {
            return Ok(());
        }
        let mut pos = 0;
        let chunks: Vec<Chunk<'_>> = lengths
            .iter()
            .map(|&len| {
                let c = Chunk::Bytes(&self.pending[pos..pos + len]);
                pos += len;
                c
            })
            .collect();
        sink(&chunks)?;
        self.pending.drain(..consumed);
        self.zero_tail = self.zero_tail.min(self.pending.len());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::fastcdc::FastCdcParams;
    use crate::chunker::parallel::sequential_chunk_lengths;
    use crate::chunker::polynomial::Polynomial;
    use crate::chunker::rabin::{RabinChunker, RabinTables};
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

    /// Pieces of a stream: data bytes or a count of zeros.
    #[derive(Debug, Clone)]
    enum Piece {
        Data(Vec<u8>),
        Zeros(u64),
    }

    fn piece() -> impl Strategy<Value = Piece> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..6000).prop_map(Piece::Data),
            // Zeros that arrive as data (read from a device) must cut the same.
            (0usize..20000).prop_map(|n| Piece::Data(vec![0; n])),
            (0u64..40000).prop_map(Piece::Zeros),
        ]
    }

    /// Lengths of the chunks the stream chunker makes, expanded, and the stream they cover.
    fn stream_lengths(c: &Chunker, pieces: &[Piece], window: usize) -> (Vec<usize>, Vec<u8>) {
        let zeros = vec![0u8; c.max_size()];
        let mut sc = StreamChunker::new(c, &zeros, window);
        let mut lengths = Vec::new();
        let mut out = Vec::new();
        let mut sink = |chunks: &[Chunk<'_>]| -> Result<(), ()> {
            for ch in chunks {
                match ch {
                    Chunk::Bytes(b) => {
                        lengths.push(b.len());
                        out.extend_from_slice(b);
                    }
                    Chunk::Zeros { len, count } => {
                        for _ in 0..*count {
                            lengths.push(*len);
                            out.extend(std::iter::repeat_n(0u8, *len));
                        }
                    }
                }
            }
            Ok(())
        };
        for p in pieces {
            match p {
                Piece::Data(d) => sc.push_data(d, &mut sink).unwrap(),
                Piece::Zeros(n) => sc.push_zeros(*n, &mut sink).unwrap(),
            }
        }
        sc.finish(&mut sink).unwrap();
        (lengths, out)
    }

    fn materialise(pieces: &[Piece]) -> Vec<u8> {
        let mut v = Vec::new();
        for p in pieces {
            match p {
                Piece::Data(d) => v.extend_from_slice(d),
                Piece::Zeros(n) => v.extend(std::iter::repeat_n(0u8, *n as usize)),
            }
        }
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn cuts_equal_a_sequential_pass(pieces in proptest::collection::vec(piece(), 0..12),
                                        window in 8192usize..30000, rabin in any::<bool>()) {
            let c = if rabin { small_rabin() } else { small_fastcdc() };
            let stream = materialise(&pieces);
            let (expected, _) = sequential_chunk_lengths(&c, &stream, true);
            let (got, bytes) = stream_lengths(&c, &pieces, window);
            prop_assert_eq!(bytes, stream);
            prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn long_zero_runs_are_skipped_not_materialised() {
        let c = small_rabin();
        let zeros = vec![0u8; c.max_size()];
        let mut sc = StreamChunker::new(&c, &zeros, 8192);
        let mut zero_chunks = 0u64;
        let mut byte_chunks = 0u64;
        let mut sink = |chunks: &[Chunk<'_>]| -> Result<(), ()> {
            for ch in chunks {
                match ch {
                    Chunk::Bytes(_) => byte_chunks += 1,
                    Chunk::Zeros { count, .. } => zero_chunks += count,
                }
            }
            Ok(())
        };
        sc.push_zeros(10_000_000, &mut sink).unwrap();
        sc.finish(&mut sink).unwrap();
        assert!(zero_chunks > 1000, "{zero_chunks}");
        assert!(byte_chunks < 40, "{byte_chunks}");
    }
}
