//! scrypt key derivation for key files (spec §4).
/// scrypt parameters of a key file.
pub struct KdfParams;
