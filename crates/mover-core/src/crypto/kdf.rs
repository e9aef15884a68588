//! scrypt key derivation for key files (spec §4): password + salt + (N, r, p) → user key.
//! Pure; owns parameter validation so that a hostile key file cannot make us allocate
//! absurd amounts of memory. Must not read passwords or files itself.

use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use super::{CryptoError, Key};

/// Length of a key file salt; restic's KDF rejects any other length.
pub const SALT_LEN: usize = 64;

/// Upper bound on scrypt's memory (128·r·N bytes) accepted from a key file.
const MAX_MEMORY_BYTES: u128 = 1 << 30;
/// Upper bound on p: restic's calibration yields single digits; this only stops absurd work.
const MAX_P: u32 = 1024;

/// scrypt parameters of a key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    pub n: u64,
    pub r: u32,
    pub p: u32,
}

impl Default for KdfParams {
    /// N = 32768, r = 8, p = 1. restic calibrates to the largest N with 128·r·N under
    /// 60 MiB, which is 32768 with r = 8 (32 MiB per run), and then raises p until a run
    /// takes 500 ms. Keeping p = 1 gives the same memory hardness while keeping every
    /// repository open (and every test) fast; readers take the parameters from the file.
    fn default() -> Self {
        KdfParams {
            n: 32768,
            r: 8,
            p: 1,
        }
    }
}

impl KdfParams {
    /// Checks N is a power of two > 1, r and p are at least 1, and the memory and work
    /// they ask for are bounded.
    pub fn validate(&self) -> Result<(), CryptoError> {
        if self.n <= 1 || !self.n.is_power_of_two() {
            return Err(CryptoError::Kdf(format!(
                "scrypt N = {} is not a power of two greater than 1",
                self.n
            )));
        }
        if self.r == 0 || self.p == 0 {
            return Err(CryptoError::Kdf(format!(
                "scrypt r = {} and p = {} must both be at least 1",
                self.r, self.p
            )));
        }
        let memory = 128u128 * u128::from(self.r) * u128::from(self.n);
        if memory > MAX_MEMORY_BYTES {
            return Err(CryptoError::Kdf(format!(
                "scrypt N = {}, r = {} needs {memory} bytes, more than the limit of {MAX_MEMORY_BYTES}",
                self.n, self.r
            )));
        }
        if self.p > MAX_P || u64::from(self.r) * u64::from(self.p) >= 1 << 30 {
            return Err(CryptoError::Kdf(format!(
                "scrypt p = {} (with r = {}) exceeds the limit of {MAX_P}",
                self.p, self.r
            )));
        }
        Ok(())
    }
}

/// Derives the 64-byte user key: scrypt(password, salt, N, r, p, dkLen = 64).
pub fn derive_key(password: &[u8], salt: &[u8], params: &KdfParams) -> Result<Key, CryptoError> {
    if salt.len() != SALT_LEN {
        return Err(CryptoError::Kdf(format!(
            "salt is {} bytes, expected {SALT_LEN}",
            salt.len()
        )));
    }
    params.validate()?;
    // validate() guarantees n is a power of two below 2^63, so the log fits in u8.
    let log_n = params.n.trailing_zeros() as u8;
    let scrypt_params = scrypt::Params::new(log_n, params.r, params.p, 64)
        .map_err(|e| CryptoError::Kdf(format!("invalid scrypt parameters: {e}")))?;
    let mut out = Zeroizing::new([0u8; 64]);
    scrypt::scrypt(password, salt, &scrypt_params, &mut out[..])
        .map_err(|e| CryptoError::Kdf(format!("scrypt failed: {e}")))?;
    Key::from_derived(&out)
}

/// A fresh random 64-byte salt from the OS CSPRNG.
pub fn random_salt() -> [u8; SALT_LEN] {
    let mut salt = [0u8; SALT_LEN];
    OsRng.fill_bytes(&mut salt);
    salt
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn fixture_key_derivation() {
        // spec §15.3: the key file of the tiny v2 fixture repository.
        let salt = base64::engine::general_purpose::STANDARD
            .decode("bOw/YHBwpMfYS2T+D6NqFBO7fgH7FFgKiQMLP7/uViNQevJz0Uul22JTORJtKGPnlruk7kq57YbsRnYeRcTJGg==")
            .unwrap();
        let params = KdfParams { n: 128, r: 1, p: 1 };
        let user = derive_key(b"geheim", &salt, &params).unwrap();
        let expected: [u8; 64] = hex::decode(concat!(
            "b0f32ec0afc1cbc4b636b4509c8210f33162f55746df0e2fd1ef02e9f17d0a88",
            "76a0e95dfdf9bb4f88abd6721cb49a24",
            "99aaef1e2f0c37bbadec0f690477b994"
        ))
        .unwrap()
        .try_into()
        .unwrap();
        let want = Key::from_derived(&expected).unwrap();
        assert_eq!(user.to_json(), want.to_json());
    }

    #[test]
    fn salt_length_is_enforced() {
        let params = KdfParams { n: 2, r: 1, p: 1 };
        assert!(derive_key(b"pw", &[1u8; 63], &params).is_err());
        assert!(derive_key(b"pw", &[1u8; 65], &params).is_err());
        assert!(derive_key(b"pw", &[1u8; 64], &params).is_ok());
    }

    #[test]
    fn validation() {
        assert!(KdfParams::default().validate().is_ok());
        assert_eq!(
            KdfParams::default(),
            KdfParams {
                n: 32768,
                r: 8,
                p: 1
            }
        );
        assert!(
            KdfParams {
                n: 65536,
                r: 8,
                p: 7
            }
            .validate()
            .is_ok()
        );
        for bad in [
            KdfParams { n: 0, r: 1, p: 1 },
            KdfParams { n: 1, r: 1, p: 1 },
            KdfParams { n: 100, r: 1, p: 1 },
            KdfParams { n: 128, r: 0, p: 1 },
            KdfParams { n: 128, r: 1, p: 0 },
            KdfParams {
                n: 1 << 20,
                r: 16,
                p: 1,
            },
            KdfParams {
                n: 1 << 63,
                r: 1,
                p: 1,
            },
            KdfParams {
                n: 128,
                r: 1,
                p: u32::MAX,
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        // Exactly at the memory cap is allowed.
        assert!(
            KdfParams {
                n: 1 << 20,
                r: 8,
                p: 1
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn random_salts_differ() {
        assert_ne!(random_salt(), random_salt());
    }
}
