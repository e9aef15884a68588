//! AES-256-CTR + Poly1305-AES sealing (spec §3).
/// A 64-byte restic key (encrypt, mac.k, mac.r).
pub struct Key;
