//! Key files (`keys/<id>`, spec §4): plain JSON holding scrypt parameters, a salt and the
//! master key sealed with the password-derived key. Owns the byte format only; deriving keys
//! and opening `data` belong to `crypto`, reading and writing the file to `repo`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{FormatError, gojson};
use crate::crypto::KdfParams;

const WHAT: &str = "key file";

/// The only key derivation function restic accepts.
pub const KDF_SCRYPT: &str = "scrypt";

/// A decoded key file. `created` is kept as the RFC 3339 text restic wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    pub created: String,
    pub username: String,
    pub hostname: String,
    pub kdf: String,
    pub n: u64,
    pub r: u32,
    pub p: u32,
    pub salt: Vec<u8>,
    pub data: Vec<u8>,
}

#[derive(serde::Deserialize)]
struct RawKeyFile {
    #[serde(default)]
    created: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    hostname: String,
    kdf: String,
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
    salt: String,
    data: String,
}

impl KeyFile {
    /// Go `json.Marshal` output: fields in restic's order, compact, no trailing newline.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(b"{\"created\":");
        gojson::write_string(&mut out, self.created.as_bytes());
        out.extend_from_slice(b",\"username\":");
        gojson::write_string(&mut out, self.username.as_bytes());
        out.extend_from_slice(b",\"hostname\":");
        gojson::write_string(&mut out, self.hostname.as_bytes());
        out.extend_from_slice(b",\"kdf\":");
        gojson::write_string(&mut out, self.kdf.as_bytes());
        out.extend_from_slice(
            format!(",\"N\":{},\"r\":{},\"p\":{}", self.n, self.r, self.p).as_bytes(),
        );
        out.extend_from_slice(b",\"salt\":\"");
        out.extend_from_slice(BASE64.encode(&self.salt).as_bytes());
        out.extend_from_slice(b"\",\"data\":\"");
        out.extend_from_slice(BASE64.encode(&self.data).as_bytes());
        out.extend_from_slice(b"\"}");
        out
    }

    /// Parses a key file; rejects any KDF other than scrypt, as restic does.
    pub fn decode(bytes: &[u8]) -> Result<KeyFile, FormatError> {
        let raw: RawKeyFile = serde_json::from_slice(bytes)
            .map_err(|source| FormatError::Json { what: WHAT, source })?;
        if raw.kdf != KDF_SCRYPT {
            return Err(FormatError::invalid(
                WHAT,
                format!(
                    "unsupported kdf {:?}, only \"scrypt\" is supported",
                    raw.kdf
                ),
            ));
        }
        let salt = BASE64
            .decode(raw.salt.as_bytes())
            .map_err(|e| FormatError::invalid(WHAT, format!("salt is not base64: {e}")))?;
        let data = BASE64
            .decode(raw.data.as_bytes())
            .map_err(|e| FormatError::invalid(WHAT, format!("data is not base64: {e}")))?;
        Ok(KeyFile {
            created: raw.created,
            username: raw.username,
            hostname: raw.hostname,
            kdf: raw.kdf,
            n: raw.n,
            r: raw.r,
            p: raw.p,
            salt,
            data,
        })
    }

    /// The scrypt parameters stored in the file (validated by `crypto::derive_key`).
    pub fn kdf_params(&self) -> KdfParams {
        KdfParams {
            n: self.n,
            r: self.r,
            p: self.p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Key, derive_key};
    use proptest::prelude::*;

    /// The key file of the tiny v2 fixture repository (spec §15.3).
    const FIXTURE_KEY_FILE: &str = r#"{"created":"2026-11-21T13:28:02.257637761Z","username":"root","hostname":"vm","kdf":"scrypt","N":128,"r":1,"p":1,"salt":"bOw/YHBwpMfYS2T+D6NqFBO7fgH7FFgKiQMLP7/uViNQevJz0Uul22JTORJtKGPnlruk7kq57YbsRnYeRcTJGg==","data":"I5N6AZ9raqkHP5AzYOV6u3HLHDImpCwPq3EyN0SXMAvZmndVqNJ5HP8qrz5I+CAq0sRTKke98bI1Ks1yWARwcO0TUadzshjMW/XFLcJNRK6NWldA4h9UtUzlB8U1Gqo8iIvCXvl7CVHVW6FrAI8oZiJFYfPzIjBZSGXaxROtuh+SwzOS0Yv1PCOSzbO25y3qzADphb+RYf0RD+BJATTzuQ=="}"#;

    #[test]
    fn fixture_round_trips_byte_exact() {
        let kf = KeyFile::decode(FIXTURE_KEY_FILE.as_bytes()).unwrap();
        assert_eq!(kf.created, "2026-11-21T13:28:02.257637761Z");
        assert_eq!(kf.username, "root");
        assert_eq!(kf.hostname, "vm");
        assert_eq!(kf.kdf_params(), KdfParams { n: 128, r: 1, p: 1 });
        assert_eq!(kf.salt.len(), 64);
        assert_eq!(kf.data.len(), 160);
        assert_eq!(kf.encode(), FIXTURE_KEY_FILE.as_bytes());
    }

    #[test]
    fn fixture_opens_with_password() {
        let kf = KeyFile::decode(FIXTURE_KEY_FILE.as_bytes()).unwrap();
        let user = derive_key(b"geheim", &kf.salt, &kf.kdf_params()).unwrap();
        let json = user.open(&kf.data).unwrap();
        assert_eq!(
            json,
            br#"{"mac":{"k":"K1vGF5AWYf0gvQlj6XR96Q==","r":"gpEdD2SzuAf4kp0ElFacCQ=="},"encrypt":"p33Y0V1iBFi3jrPuUYo+D79ec9p6nq7SXbF5D7gR2Xk="}"#
        );
        let wrong = derive_key(b"Geheim", &kf.salt, &kf.kdf_params()).unwrap();
        assert_eq!(
            wrong.open(&kf.data).unwrap_err(),
            crate::crypto::CryptoError::MacMismatch
        );
        Key::from_json(&json).unwrap();
    }

    #[test]
    fn rejects_other_kdf_and_bad_base64() {
        let other = FIXTURE_KEY_FILE.replace("\"scrypt\"", "\"argon2\"");
        let err = KeyFile::decode(other.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("argon2") && err.contains("key file"), "{err}");
        let bad = FIXTURE_KEY_FILE.replace("\"salt\":\"bOw", "\"salt\":\"!Ow");
        assert!(KeyFile::decode(bad.as_bytes()).is_err());
        assert!(KeyFile::decode(b"").is_err());
        assert!(KeyFile::decode(b"{\"kdf\":\"scrypt\"}").is_err());
        let spaced = format!("{}\n", FIXTURE_KEY_FILE.replace(",\"N\"", ", \"N\""));
        assert!(KeyFile::decode(spaced.as_bytes()).is_ok());
    }

    #[test]
    fn go_escaping_of_names() {
        let kf = KeyFile {
            created: "2022-08-25T17:55:00Z".into(),
            username: "a<b>&\"c\"".into(),
            hostname: String::new(),
            kdf: "scrypt".into(),
            n: 32768,
            r: 8,
            p: 7,
            salt: vec![0; 64],
            data: vec![1; 160],
        };
        let enc = String::from_utf8(kf.encode()).unwrap();
        assert!(
            enc.contains(r#""username":"a\u003cb\u003e\u0026\"c\"","hostname":"","#),
            "{enc}"
        );
        assert_eq!(KeyFile::decode(enc.as_bytes()).unwrap(), kf);
    }

    proptest! {
        #[test]
        fn round_trip(
            username in ".*",
            hostname in "[a-z0-9.-]{0,20}",
            log_n in 1u32..20,
            r in 1u32..16,
            p in 1u32..16,
            salt in proptest::collection::vec(any::<u8>(), 64),
            data in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let kf = KeyFile {
                created: "2026-11-21T13:28:02.257637761Z".into(),
                username,
                hostname,
                kdf: "scrypt".into(),
                n: 1 << log_n,
                r,
                p,
                salt,
                data,
            };
            prop_assert_eq!(KeyFile::decode(&kf.encode()).unwrap(), kf);
        }
    }
}
