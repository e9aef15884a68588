//! restic's authenticated encryption (AES-256-CTR + Poly1305-AES) and scrypt key derivation.
//! Pure: bytes in, bytes out. Keys have a redacted `Debug` and are zeroized on drop.

pub mod aead;
pub mod kdf;

pub use aead::Key;
pub use kdf::{KdfParams, derive_key, random_salt};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("ciphertext verification failed (MAC mismatch)")]
    MacMismatch,
    #[error("ciphertext too short: {len} bytes, need at least 32")]
    TooShort { len: usize },
    #[error("{out}-byte plaintext buffer for a {sealed}-byte ciphertext")]
    OutputLength { sealed: usize, out: usize },
    #[error("all-zero IV")]
    ZeroIv,
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    #[error("key derivation failed: {0}")]
    Kdf(String),
}
