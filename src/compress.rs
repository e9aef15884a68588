//! zstd compression of blobs and unpacked files, with bounded decompression.

#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("zstd decompression failed: {0}")]
    Zstd(String),
    #[error("decompressed size exceeds limit of {limit} bytes")]
    TooLarge { limit: usize },
}
