//! restic's authenticated encryption (spec §3): IV ‖ AES-256-CTR ‖ Poly1305-AES, and the
//! master-key JSON (spec §3.4). Owns key material and its zeroization. Must not do I/O,
//! logging, compression or any file-format parsing beyond the master-key JSON.

use aes::cipher::{BlockEncrypt, KeyInit, KeyIvInit, StreamCipher};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use poly1305::Poly1305;
use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::CryptoError;

/// Bytes added by [`Key::seal`]: a 16-byte IV in front and a 16-byte MAC behind.
pub const OVERHEAD: usize = 32;

/// The IV in front of every sealed message.
pub const IV_LEN: usize = 16;
/// The MAC behind every sealed message.
pub const MAC_LEN: usize = 16;

/// Go's `cipher.NewCTR`: the whole 16-byte IV is one big-endian counter (spec §3.2).
type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// A 64-byte restic key (encrypt, mac.k, mac.r): a repository master key or a
/// password-derived user key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key {
    encrypt: [u8; 32],
    mac_k: [u8; 16],
    mac_r: [u8; 16],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Poly1305-AES (spec §3.2 steps 3-4): Poly1305 with one-time key r ‖ AES-128_k(nonce).
/// `mac_r` is passed unclamped; the poly1305 crate clamps it, as restic's readers must.
pub fn poly1305_aes_mac(
    mac_k: &[u8; 16],
    mac_r: &[u8; 16],
    nonce: &[u8; 16],
    msg: &[u8],
) -> [u8; 16] {
    let mut one_time = Zeroizing::new([0u8; 32]);
    one_time[..16].copy_from_slice(mac_r);
    one_time[16..].copy_from_slice(nonce);
    let aes = aes::Aes128::new(mac_k.into());
    aes.encrypt_block((&mut one_time[16..]).into());
    let mac = Poly1305::new((&*one_time).into());
    mac.compute_unpadded(msg).into()
}

/// Compares two MACs without an early exit, so timing does not reveal the matching prefix.
fn mac_eq(a: &[u8; 16], b: &[u8]) -> bool {
    if b.len() != MAC_LEN {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

#[derive(serde::Deserialize, Zeroize, ZeroizeOnDrop)]
struct MasterKeyJson {
    mac: MacJson,
    encrypt: String,
}

#[derive(serde::Deserialize, Zeroize, ZeroizeOnDrop)]
struct MacJson {
    k: String,
    r: String,
}

fn decode_part<const N: usize>(b64: &str, what: &'static str) -> Result<[u8; N], CryptoError> {
    let bytes = Zeroizing::new(
        BASE64
            .decode(b64.as_bytes())
            .map_err(|_| CryptoError::InvalidKey(what))?,
    );
    let mut out = [0u8; N];
    if bytes.len() != N {
        return Err(CryptoError::InvalidKey(what));
    }
    out.copy_from_slice(&bytes);
    Ok(out)
}

impl Key {
    /// A fresh key from the OS CSPRNG. `mac.r` is stored clamped, as restic 0.14 writes it;
    /// readers clamp anyway, so both forms are valid.
    pub fn random() -> Key {
        const R_MASK: [u8; 16] = [
            0xff, 0xff, 0xff, 0x0f, 0xfc, 0xff, 0xff, 0x0f, 0xfc, 0xff, 0xff, 0x0f, 0xfc, 0xff,
            0xff, 0x0f,
        ];
        loop {
            let mut key = Key {
                encrypt: [0; 32],
                mac_k: [0; 16],
                mac_r: [0; 16],
            };
            OsRng.fill_bytes(&mut key.encrypt);
            OsRng.fill_bytes(&mut key.mac_k);
            OsRng.fill_bytes(&mut key.mac_r);
            for (b, m) in key.mac_r.iter_mut().zip(R_MASK) {
                *b &= m;
            }
            // An all-zero part has probability 2^-100 or less; draw again rather than fail.
            if key.validate().is_ok() {
                return key;
            }
        }
    }

    /// Builds a key from its three parts; rejects all-zero parts as restic's `Key.Valid` does.
    pub fn from_parts(
        encrypt: [u8; 32],
        mac_k: [u8; 16],
        mac_r: [u8; 16],
    ) -> Result<Key, CryptoError> {
        let key = Key {
            encrypt,
            mac_k,
            mac_r,
        };
        key.validate()?;
        Ok(key)
    }

    /// Splits 64 scrypt output bytes: 0..32 encrypt, 32..48 mac.k, 48..64 mac.r (spec §4).
    pub fn from_derived(bytes: &[u8; 64]) -> Result<Key, CryptoError> {
        let mut key = Key {
            encrypt: [0; 32],
            mac_k: [0; 16],
            mac_r: [0; 16],
        };
        key.encrypt.copy_from_slice(&bytes[0..32]);
        key.mac_k.copy_from_slice(&bytes[32..48]);
        key.mac_r.copy_from_slice(&bytes[48..64]);
        key.validate()?;
        Ok(key)
    }

    fn validate(&self) -> Result<(), CryptoError> {
        if is_zero(&self.encrypt) {
            return Err(CryptoError::InvalidKey("encryption key is all zeros"));
        }
        if is_zero(&self.mac_k) {
            return Err(CryptoError::InvalidKey("mac.k is all zeros"));
        }
        if is_zero(&self.mac_r) {
            return Err(CryptoError::InvalidKey("mac.r is all zeros"));
        }
        Ok(())
    }

    /// Encrypts and authenticates `plaintext` under a fresh random IV.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        loop {
            let mut iv = [0u8; IV_LEN];
            OsRng.fill_bytes(&mut iv);
            // seal_with_iv fails only for the all-zero IV (probability 2^-128): draw again.
            if let Ok(sealed) = self.seal_with_iv(iv, plaintext) {
                return sealed;
            }
        }
    }

    /// Like [`Key::seal`] with a caller-chosen IV (test vectors). Never reuse an IV.
    pub fn seal_with_iv(&self, iv: [u8; 16], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if is_zero(&iv) {
            return Err(CryptoError::ZeroIv);
        }
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        out.extend_from_slice(&iv);
        out.extend_from_slice(plaintext);
        let mut cipher = Aes256Ctr::new((&self.encrypt).into(), (&iv).into());
        cipher.apply_keystream(&mut out[IV_LEN..]);
        let mac = poly1305_aes_mac(&self.mac_k, &self.mac_r, &iv, &out[IV_LEN..]);
        out.extend_from_slice(&mac);
        Ok(out)
    }

    /// Checks length, IV and MAC (in constant time, before any decryption) and returns the IV.
    fn verify(&self, sealed: &[u8]) -> Result<[u8; 16], CryptoError> {
        if sealed.len() < OVERHEAD {
            return Err(CryptoError::TooShort { len: sealed.len() });
        }
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&sealed[..IV_LEN]);
        if is_zero(&iv) {
            return Err(CryptoError::ZeroIv);
        }
        let (body, tag) = sealed[IV_LEN..].split_at(sealed.len() - OVERHEAD);
        let expected = poly1305_aes_mac(&self.mac_k, &self.mac_r, &iv, body);
        if !mac_eq(&expected, tag) {
            return Err(CryptoError::MacMismatch);
        }
        Ok(iv)
    }

    /// Verifies and decrypts IV ‖ ciphertext ‖ MAC.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let iv = self.verify(sealed)?;
        let mut plain = sealed[IV_LEN..sealed.len() - MAC_LEN].to_vec();
        let mut cipher = Aes256Ctr::new((&self.encrypt).into(), (&iv).into());
        cipher.apply_keystream(&mut plain);
        Ok(plain)
    }

    /// Like [`Key::open`] but decrypts straight into `out`, which must be exactly as long
    /// as the plaintext (the sealed length less 32); on error `out` is left unchanged.
    pub fn open_to_slice(&self, sealed: &[u8], out: &mut [u8]) -> Result<(), CryptoError> {
        let iv = self.verify(sealed)?;
        let body = &sealed[IV_LEN..sealed.len() - MAC_LEN];
        let (sealed_len, out_len) = (sealed.len(), out.len());
        let wrong_length = move || CryptoError::OutputLength {
            sealed: sealed_len,
            out: out_len,
        };
        if out.len() != body.len() {
            return Err(wrong_length());
        }
        let mut cipher = Aes256Ctr::new((&self.encrypt).into(), (&iv).into());
        cipher
            .apply_keystream_b2b(body, out)
            .map_err(|_| wrong_length())
    }

    /// Like [`Key::open`] but decrypts where the sealed bytes lie: on success the plaintext
    /// is the returned part of `sealed` (without IV and MAC); on error `sealed` is left
    /// unchanged.
    pub fn open_in_slice<'a>(&self, sealed: &'a mut [u8]) -> Result<&'a mut [u8], CryptoError> {
        let iv = self.verify(sealed)?;
        let len = sealed.len();
        let body = &mut sealed[IV_LEN..len - MAC_LEN];
        let mut cipher = Aes256Ctr::new((&self.encrypt).into(), (&iv).into());
        cipher.apply_keystream(body);
        Ok(body)
    }

    /// The master-key JSON exactly as Go's `json.Marshal` writes it (spec §3.4).
    /// The result holds secret key material; callers should seal it and drop it promptly.
    pub fn to_json(&self) -> Vec<u8> {
        let k = Zeroizing::new(BASE64.encode(self.mac_k));
        let r = Zeroizing::new(BASE64.encode(self.mac_r));
        let e = Zeroizing::new(BASE64.encode(self.encrypt));
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(br#"{"mac":{"k":""#);
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(br#"","r":""#);
        out.extend_from_slice(r.as_bytes());
        out.extend_from_slice(br#""},"encrypt":""#);
        out.extend_from_slice(e.as_bytes());
        out.extend_from_slice(br#""}"#);
        out
    }

    /// Parses the master-key JSON (any field order and whitespace, unknown fields ignored).
    pub fn from_json(json: &[u8]) -> Result<Key, CryptoError> {
        let parsed: MasterKeyJson = serde_json::from_slice(json)
            .map_err(|_| CryptoError::InvalidKey("master key is not valid JSON"))?;
        let encrypt = decode_part::<32>(&parsed.encrypt, "master key encrypt is not 32 bytes")?;
        let mac_k = decode_part::<16>(&parsed.mac.k, "master key mac.k is not 16 bytes")?;
        let mac_r = decode_part::<16>(&parsed.mac.r, "master key mac.r is not 16 bytes")?;
        Key::from_parts(encrypt, mac_k, mac_r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn arr<const N: usize>(s: &str) -> [u8; N] {
        h(s).try_into().unwrap()
    }

    fn test_key() -> Key {
        Key::from_parts(
            arr("303e8687b1d7db18421bdc6bb8588ccadac4d59ee87b8ff70c44e635790cafef"),
            arr("ef4d8824cb80b2bcc5fbff8a9b12a42c"),
            arr("cc8d4b948ee0ebfe1d415de921d10353"),
        )
        .unwrap()
    }

    #[test]
    fn poly1305_aes_vectors() {
        // spec §15.1: (msg, r, k, nonce, mac)
        let vectors = [
            (
                "f3f6",
                "851fc40c3467ac0be05cc20404f3f700",
                "ec074c835580741701425b623235add6",
                "fb447350c4e868c52ac3275cf9d4327e",
                "f4c633c3044fc145f84f335cb81953de",
            ),
            (
                "",
                "a0f3080000f46400d0c7e9076c834403",
                "75deaa25c09f208e1dc4ce6b5cad3fbf",
                "61ee09218d29b0aaed7e154a2c5509cc",
                "dd3fab2251f11ac759f0887129cc2ee7",
            ),
            (
                "663cea190ffb83d89593f3f476b6bc24d7e679107ea26adb8caf6652d0656136",
                "48443d0bb0d21109c89a100b5ce2c208",
                "6acb5f61a7176dd320c5c1eb2edcdc74",
                "ae212a55399729595dea458bc621ff0e",
                "0ee1c16bb73f0f4fd19881753c01cdbe",
            ),
            (
                "ab0812724a7f1e342742cbed374d94d136c6b8795d45b3819830f2c04491faf0990c62e48b8018b2c3e4a0fa3134cb67fa83e158c994d961c4cb21095c1bf9",
                "12976a08c4426d0ce8a82407c4f48207",
                "e1a5668a4d5b66a5f68cc5424ed5982d",
                "9ae831e743978d3a23527c7128149e3a",
                "5154ad0d2cb26e01274fc51148491f1b",
            ),
        ];
        for (msg, r, k, nonce, mac) in vectors {
            let got = poly1305_aes_mac(&arr(k), &arr(r), &arr(nonce), &h(msg));
            assert_eq!(hex::encode(got), mac, "msg {msg}");
        }
    }

    #[test]
    fn opens_restic_vector() {
        let sealed = h(
            "69fb41c62d12def4593bd71757138606338f621aeaeb39da0fe4f99233f8037a54ea63338a813bcf3f75d8c3cc75dddf8750",
        );
        assert_eq!(sealed.len(), 50);
        assert_eq!(test_key().open(&sealed).unwrap(), b"Dies ist ein Test!");
        let mut buf = sealed.clone();
        assert_eq!(
            test_key().open_in_slice(&mut buf).unwrap(),
            b"Dies ist ein Test!"
        );
    }

    #[test]
    fn seal_vectors() {
        let key = test_key();
        let iv = arr("000102030405060708090a0b0c0d0e0f");
        let sealed = key.seal_with_iv(iv, b"restic").unwrap();
        assert_eq!(
            hex::encode(&sealed),
            "000102030405060708090a0b0c0d0e0f66da99e4825d2399dc8d05e488380de35931f6f8038f"
        );
        assert_eq!(key.open(&sealed).unwrap(), b"restic");

        let sealed = key.seal_with_iv(iv, b"").unwrap();
        assert_eq!(
            hex::encode(&sealed),
            "000102030405060708090a0b0c0d0e0f73c7ade3643227533f25ca00e966ceb3"
        );
        assert_eq!(key.open(&sealed).unwrap(), b"");
    }

    #[test]
    fn seal_vector_counter_carries_across_64_bits() {
        let key = test_key();
        let plain: Vec<u8> = (0u8..0x30).collect();
        let sealed = key
            .seal_with_iv(arr("0000000000000000ffffffffffffffff"), &plain)
            .unwrap();
        assert_eq!(
            hex::encode(&sealed),
            "0000000000000000ffffffffffffffff88ca00dd2a586cf641aa0e204a99fd142ff66c71925e3ce14e444b903224908410cf86511fa76e278be64f4b677b6a502b5cb2f32bd3d5d263235ddbbd3c6a11"
        );
        assert_eq!(key.open(&sealed).unwrap(), plain);
    }

    #[test]
    fn tampering_is_detected() {
        let key = test_key();
        let sealed = key.seal(b"some secret payload");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            let err = key.open(&bad).unwrap_err();
            // Flipping an IV bit may yield the all-zero IV only if the IV had one bit set.
            assert!(
                err == CryptoError::MacMismatch || err == CryptoError::ZeroIv,
                "byte {i}: {err:?}"
            );
            let mut buf = bad.clone();
            assert_eq!(key.open_in_slice(&mut buf).unwrap_err(), err);
            assert_eq!(buf, bad, "buffer unchanged on error");
        }
    }

    #[test]
    fn wrong_key_is_mac_mismatch() {
        let sealed = test_key().seal(b"payload");
        assert_eq!(
            Key::random().open(&sealed).unwrap_err(),
            CryptoError::MacMismatch
        );
    }

    #[test]
    fn short_input_is_rejected() {
        let key = test_key();
        for len in 0..OVERHEAD {
            assert_eq!(
                key.open(&vec![1u8; len]).unwrap_err(),
                CryptoError::TooShort { len }
            );
        }
        let sealed = key.seal(b"a longer plaintext");
        assert_eq!(
            key.open(&sealed[..sealed.len() - 4]).unwrap_err(),
            CryptoError::MacMismatch
        );
    }

    #[test]
    fn zero_iv_is_refused() {
        let key = test_key();
        assert_eq!(
            key.seal_with_iv([0; 16], b"x").unwrap_err(),
            CryptoError::ZeroIv
        );
        let mut forged = vec![0u8; 16];
        forged.extend_from_slice(&[7u8; 20]);
        assert_eq!(key.open(&forged).unwrap_err(), CryptoError::ZeroIv);
    }

    #[test]
    fn zero_parts_are_rejected() {
        let e = [1u8; 32];
        let k = [2u8; 16];
        let r = [3u8; 16];
        assert!(Key::from_parts(e, k, r).is_ok());
        assert!(Key::from_parts([0; 32], k, r).is_err());
        assert!(Key::from_parts(e, [0; 16], r).is_err());
        assert!(Key::from_parts(e, k, [0; 16]).is_err());
        let mut derived = [9u8; 64];
        derived[48..].fill(0);
        assert!(Key::from_derived(&derived).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", test_key()), "Key(<redacted>)");
    }

    #[test]
    fn master_key_json_matches_go() {
        // spec §15.3 master key.
        let key = Key::from_parts(
            arr("a77dd8d15d620458b78eb3ee518a3e0fbf5e73da7a9eaed25db1790fb811d979"),
            arr("2b5bc617901661fd20bd0963e9747de9"),
            arr("82911d0f64b3b807f8929d0494569c09"),
        )
        .unwrap();
        let json = br#"{"mac":{"k":"K1vGF5AWYf0gvQlj6XR96Q==","r":"gpEdD2SzuAf4kp0ElFacCQ=="},"encrypt":"p33Y0V1iBFi3jrPuUYo+D79ec9p6nq7SXbF5D7gR2Xk="}"#;
        assert_eq!(key.to_json(), json.to_vec());
        assert_eq!(json.len(), 128);
        let back = Key::from_json(json).unwrap();
        assert_eq!(back.to_json(), json.to_vec());
        let spaced = b"{ \"encrypt\": \"p33Y0V1iBFi3jrPuUYo+D79ec9p6nq7SXbF5D7gR2Xk=\",\n \"mac\": {\"r\":\"gpEdD2SzuAf4kp0ElFacCQ==\",\"k\":\"K1vGF5AWYf0gvQlj6XR96Q==\"}, \"x\": 1}\n";
        assert_eq!(Key::from_json(spaced).unwrap().to_json(), json.to_vec());
    }

    #[test]
    fn master_key_json_rejects_bad_input() {
        assert!(Key::from_json(b"").is_err());
        assert!(Key::from_json(b"{}").is_err());
        assert!(
            Key::from_json(br#"{"mac":{"k":"AAAA","r":"gpEdD2SzuAf4kp0ElFacCQ=="},"encrypt":"p33Y0V1iBFi3jrPuUYo+D79ec9p6nq7SXbF5D7gR2Xk="}"#)
                .is_err()
        );
        assert!(
            Key::from_json(br#"{"mac":{"k":"AAAAAAAAAAAAAAAAAAAAAA==","r":"gpEdD2SzuAf4kp0ElFacCQ=="},"encrypt":"p33Y0V1iBFi3jrPuUYo+D79ec9p6nq7SXbF5D7gR2Xk="}"#)
                .is_err()
        );
    }

    #[test]
    fn random_keys_round_trip_json() {
        let key = Key::random();
        let back = Key::from_json(&key.to_json()).unwrap();
        let sealed = key.seal(b"x");
        assert_eq!(back.open(&sealed).unwrap(), b"x");
    }

    proptest! {
        #[test]
        fn seal_open_round_trip(plain in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let key = test_key();
            let sealed = key.seal(&plain);
            prop_assert_eq!(sealed.len(), plain.len() + OVERHEAD);
            prop_assert_eq!(&key.open(&sealed).unwrap(), &plain);
            let mut out = vec![0u8; plain.len()];
            key.open_to_slice(&sealed, &mut out).unwrap();
            prop_assert_eq!(&out, &plain);
            let mut buf = sealed;
            prop_assert_eq!(key.open_in_slice(&mut buf).unwrap(), plain.as_slice());
        }
    }

    #[test]
    fn open_to_slice_checks_the_mac_and_the_buffer_length() {
        let key = test_key();
        let mut sealed = key.seal(b"hello");
        let mut out = [7u8; 4];
        assert_eq!(
            key.open_to_slice(&sealed, &mut out),
            Err(CryptoError::OutputLength { sealed: 37, out: 4 })
        );
        assert_eq!(out, [7u8; 4]);
        let mut out = [0u8; 5];
        sealed[20] ^= 1;
        assert_eq!(
            key.open_to_slice(&sealed, &mut out),
            Err(CryptoError::MacMismatch)
        );
        assert_eq!(out, [0u8; 5]);
    }
}
