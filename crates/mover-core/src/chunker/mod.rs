//! Content-defined chunkers. Pure: a chunker takes `&[u8]` and returns cut points.
//! [`Chunker`] holds whichever chunker a repository uses; nothing here reads files.

pub mod fastcdc;
pub mod parallel;
pub mod polynomial;
pub mod rabin;

use fastcdc::FastCdcParams;
use parallel::CutFinder;
use rabin::RabinChunker;

/// Why a chunker cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkerError {
    #[error("chunker polynomial has degree {degree}; restic's Rabin chunker needs 8..=53")]
    PolynomialDegree { degree: i32 },
    #[error("chunker polynomial is reducible; restic's Rabin chunker needs an irreducible one")]
    ReduciblePolynomial,
    #[error(
        "invalid Rabin chunker sizes: min {min_size}, max {max_size}, {average_bits} mask bits \
         (need 64 <= min <= max and 1..=53 bits)"
    )]
    InvalidSizes {
        min_size: usize,
        max_size: usize,
        average_bits: u32,
    },
}

/// The chunker a backup uses: mover's FastCDC or restic's Rabin chunker.
#[derive(Debug, Clone)]
pub enum Chunker {
    FastCdc(FastCdcParams),
    Rabin(RabinChunker),
}

impl Chunker {
    /// Stable name, as stored in the repository config's `mover_chunker`.
    pub fn name(&self) -> &'static str {
        match self {
            Chunker::FastCdc(_) => "fastcdc",
            Chunker::Rabin(_) => "rabin",
        }
    }

    /// Lengths of the consecutive chunks covering `data`; empty input has no chunks.
    pub fn chunk_lengths(&self, data: &[u8]) -> Vec<usize> {
        match self {
            Chunker::FastCdc(p) => fastcdc::chunk_lengths(data, p),
            Chunker::Rabin(r) => r.chunk_lengths(data),
        }
    }
}

impl CutFinder for Chunker {
    fn first_chunk_len(&self, data: &[u8], eof: bool) -> Option<usize> {
        match self {
            Chunker::FastCdc(p) => p.first_chunk_len(data, eof),
            Chunker::Rabin(r) => r.first_chunk_len(data, eof),
        }
    }

    fn min_size(&self) -> usize {
        match self {
            Chunker::FastCdc(p) => CutFinder::min_size(p),
            Chunker::Rabin(r) => r.min_size(),
        }
    }

    fn max_size(&self) -> usize {
        match self {
            Chunker::FastCdc(p) => CutFinder::max_size(p),
            Chunker::Rabin(r) => r.max_size(),
        }
    }
}
