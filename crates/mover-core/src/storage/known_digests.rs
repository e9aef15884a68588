//! SHA-256 digests of uploads that are already known, handed to the S3 request signer.
//!
//! Over plain HTTP an S3 request signs the SHA-256 of its body, so the server refuses a body
//! changed on the way. In a restic repository every file but the config is named by the
//! SHA-256 of its bytes, so that hash was computed when the file was made: hashing a 16 MiB
//! pack again for the signature only spends CPU. [`KnownDigests`] holds the names of the
//! bodies being uploaded, keyed by where their bytes lie in memory, and [`SigningCrypto`]
//! (the signer's crypto provider) answers the digest of such a body from it. The key is
//! sound while the upload runs: its bytes stay alive and unchanged, so no other body can lie
//! at the same address with the same length. Any other input is hashed as usual.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use object_store::client::{
    CryptoProvider, DigestAlgorithm, DigestContext, HmacContext, Signer, SigningAlgorithm,
};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Bodies being uploaded whose SHA-256 is known, by address and length.
#[derive(Debug, Default)]
pub struct KnownDigests {
    bodies: Mutex<HashMap<(usize, usize), [u8; 32]>>,
}

/// Keeps a body's digest known until dropped (when its upload is over).
pub struct KnownBody<'a> {
    known: &'a KnownDigests,
    key: (usize, usize),
}

impl KnownDigests {
    /// Makes `sha256` the digest of `body` until the returned guard is dropped. The caller
    /// vouches for it: a wrong digest makes the server refuse the upload.
    pub fn know<'a>(&'a self, body: &Bytes, sha256: [u8; 32]) -> KnownBody<'a> {
        let key = (body.as_ptr() as usize, body.len());
        if let Ok(mut bodies) = self.bodies.lock() {
            bodies.insert(key, sha256);
        }
        KnownBody { known: self, key }
    }

    fn get(&self, data: &[u8]) -> Option<[u8; 32]> {
        let key = (data.as_ptr() as usize, data.len());
        self.bodies.lock().ok()?.get(&key).copied()
    }
}

impl Drop for KnownBody<'_> {
    fn drop(&mut self) {
        if let Ok(mut bodies) = self.known.bodies.lock() {
            bodies.remove(&self.key);
        }
    }
}

/// The S3 signer's crypto: SHA-256 that answers known bodies from [`KnownDigests`], and
/// HMAC-SHA-256. RSA signing is for Google service accounts and not offered.
#[derive(Debug)]
pub struct SigningCrypto {
    known: Arc<KnownDigests>,
}

impl SigningCrypto {
    pub fn new(known: Arc<KnownDigests>) -> SigningCrypto {
        SigningCrypto { known }
    }
}

fn unsupported(what: &str) -> object_store::Error {
    object_store::Error::NotSupported {
        source: format!("{what} is not offered by mover's S3 signer").into(),
    }
}

impl CryptoProvider for SigningCrypto {
    fn digest(&self, algorithm: DigestAlgorithm) -> object_store::Result<Box<dyn DigestContext>> {
        match algorithm {
            DigestAlgorithm::Sha256 => Ok(Box::new(BodyDigest {
                known: Arc::clone(&self.known),
                parts: 0,
                answered: None,
                hasher: Sha256::new(),
                out: [0; 32],
            })),
            _ => Err(unsupported("this digest")),
        }
    }

    fn hmac(
        &self,
        algorithm: DigestAlgorithm,
        secret: &[u8],
    ) -> object_store::Result<Box<dyn HmacContext>> {
        match algorithm {
            DigestAlgorithm::Sha256 => {
                let mac = Hmac::<Sha256>::new_from_slice(secret)
                    .map_err(|_| unsupported("an HMAC key of this length"))?;
                Ok(Box::new(HmacSha256 {
                    mac: Some(mac),
                    out: [0; 32],
                }))
            }
            _ => Err(unsupported("this HMAC")),
        }
    }

    fn sign(
        &self,
        _algorithm: SigningAlgorithm,
        _pem: &[u8],
    ) -> object_store::Result<Box<dyn Signer>> {
        Err(unsupported("RSA signing"))
    }
}

/// SHA-256 of a request body: a body that arrives as one known part is answered from
/// [`KnownDigests`]; anything else is hashed.
struct BodyDigest {
    known: Arc<KnownDigests>,
    parts: usize,
    answered: Option<[u8; 32]>,
    hasher: Sha256,
    out: [u8; 32],
}

impl DigestContext for BodyDigest {
    fn update(&mut self, data: &[u8]) {
        self.parts += 1;
        if self.parts == 1 {
            if let Some(digest) = self.known.get(data) {
                self.answered = Some(digest);
                return;
            }
        }
        self.hasher.update(data);
    }

    fn finish(&mut self) -> object_store::Result<&[u8]> {
        self.out = match self.answered {
            // Only ever registered for whole bodies, which arrive as one part; a known part
            // followed by more would leave its bytes out of the hash.
            Some(_) if self.parts > 1 => {
                return Err(object_store::Error::Generic {
                    store: "S3",
                    source: "a body with a known digest arrived in several parts".into(),
                });
            }
            Some(digest) => digest,
            None => std::mem::take(&mut self.hasher).finalize().into(),
        };
        Ok(&self.out)
    }
}

struct HmacSha256 {
    mac: Option<Hmac<Sha256>>,
    out: [u8; 32],
}

impl HmacContext for HmacSha256 {
    fn update(&mut self, data: &[u8]) {
        if let Some(mac) = &mut self.mac {
            mac.update(data);
        }
    }

    fn finish(&mut self) -> object_store::Result<&[u8]> {
        let mac = self
            .mac
            .take()
            .ok_or_else(|| object_store::Error::Generic {
                store: "S3",
                source: "HMAC finished twice".into(),
            })?;
        self.out = mac.finalize().into_bytes().into();
        Ok(&self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(crypto: &SigningCrypto, parts: &[&[u8]]) -> object_store::Result<Vec<u8>> {
        let mut ctx = crypto.digest(DigestAlgorithm::Sha256)?;
        for p in parts {
            ctx.update(p);
        }
        ctx.finish().map(<[u8]>::to_vec)
    }

    #[test]
    fn known_bodies_are_answered_and_everything_else_is_hashed() -> object_store::Result<()> {
        let known = Arc::new(KnownDigests::default());
        let crypto = SigningCrypto::new(Arc::clone(&known));
        let body = Bytes::from(vec![7u8; 1000]);
        let real: [u8; 32] = Sha256::digest(&body).into();
        assert_eq!(digest_of(&crypto, &[&body])?, real);
        {
            // A stand-in digest shows which answer was given.
            let _known = known.know(&body, [9; 32]);
            assert_eq!(digest_of(&crypto, &[&body])?, [9; 32]);
            // The same bytes elsewhere, or a part of them, are hashed.
            let copy = body.to_vec();
            assert_eq!(digest_of(&crypto, &[&copy])?, real);
            let half: [u8; 32] = Sha256::digest(&body[..500]).into();
            assert_eq!(digest_of(&crypto, &[&body[..500]])?, half);
            assert!(digest_of(&crypto, &[&body, b"more"]).is_err());
            // A later part that happens to be known is hashed with the rest.
            let both: [u8; 32] = Sha256::digest([b"x".as_slice(), &body].concat()).into();
            assert_eq!(digest_of(&crypto, &[b"x", &body])?, both);
        }
        assert_eq!(
            digest_of(&crypto, &[&body])?,
            real,
            "forgotten once dropped"
        );
        Ok(())
    }

    #[test]
    fn hmac_matches_rfc_4231() -> object_store::Result<()> {
        // RFC 4231, test case 2.
        let crypto = SigningCrypto::new(Arc::default());
        let mut mac = crypto.hmac(DigestAlgorithm::Sha256, b"Jefe")?;
        mac.update(b"what do ya want ");
        mac.update(b"for nothing?");
        assert_eq!(
            hex::encode(mac.finish()?),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        Ok(())
    }
}
