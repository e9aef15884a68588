//! The repository config (`config`, spec §5): format version, repository id and chunker
//! polynomial, plus mover's optional `mover_chunker` (restic ignores unknown fields).
//! Owns the JSON bytes only; sealing them belongs to `crypto`, storing them to `repo`.
//! Never compressed, even in v2.

use rand::RngCore;
use rand::rngs::OsRng;

use super::{FormatError, gojson};
use crate::chunker::polynomial::{Polynomial, random_irreducible};

const WHAT: &str = "config";

/// Highest repository format version restic (and mover) understands.
pub const MAX_VERSION: u32 = 2;

/// Degree above which restic's Rabin chunker refuses a polynomial (spec §12.3).
const MAX_POLYNOMIAL_DEGREE: i32 = 53;

/// The decrypted repository config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    pub version: u32,
    /// 64 lowercase hex characters.
    pub id: String,
    pub chunker_polynomial: u64,
    /// mover's chunker choice; absent in repositories made by restic.
    pub mover_chunker: Option<String>,
}

#[derive(serde::Deserialize)]
struct RawConfig {
    #[serde(default)]
    version: u32,
    #[serde(default)]
    id: String,
    #[serde(default)]
    chunker_polynomial: String,
    #[serde(default)]
    mover_chunker: Option<String>,
}

/// Parses a polynomial as Go `strconv.ParseUint(s, 16, 64)` does: hex digits only, any case,
/// no sign, no `0x`.
fn parse_polynomial(s: &str) -> Result<u64, FormatError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FormatError::invalid(
            WHAT,
            format!("invalid chunker polynomial {s:?}: not a hexadecimal number"),
        ));
    }
    u64::from_str_radix(s, 16).map_err(|_| {
        FormatError::invalid(
            WHAT,
            format!("invalid chunker polynomial {s:?}: does not fit in 64 bits"),
        )
    })
}

impl ConfigFile {
    /// A fresh config: random 32-byte id and a random irreducible polynomial (spec §12.6).
    pub fn new(version: u32) -> ConfigFile {
        let mut id = [0u8; 32];
        OsRng.fill_bytes(&mut id);
        ConfigFile {
            version,
            id: hex::encode(id),
            chunker_polynomial: random_irreducible().0,
            mover_chunker: None,
        }
    }

    /// Go `json.Marshal` output: compact, restic's field order, `mover_chunker` last and
    /// only when set. 123 bytes for a restic-shaped config.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(format!("{{\"version\":{},\"id\":", self.version).as_bytes());
        gojson::write_string(&mut out, self.id.as_bytes());
        out.extend_from_slice(b",\"chunker_polynomial\":\"");
        out.extend_from_slice(Polynomial(self.chunker_polynomial).to_hex().as_bytes());
        out.push(b'"');
        if let Some(chunker) = &self.mover_chunker {
            out.extend_from_slice(b",\"mover_chunker\":");
            gojson::write_string(&mut out, chunker.as_bytes());
        }
        out.push(b'}');
        out
    }

    /// Parses and checks a config as restic's `LoadConfig` does: version 1 or 2 and an
    /// irreducible polynomial. Trailing whitespace and unknown fields are accepted.
    pub fn decode(bytes: &[u8]) -> Result<ConfigFile, FormatError> {
        let raw: RawConfig = serde_json::from_slice(bytes)
            .map_err(|source| FormatError::Json { what: WHAT, source })?;
        if !(1..=MAX_VERSION).contains(&raw.version) {
            return Err(FormatError::invalid(
                WHAT,
                format!(
                    "unsupported repository version {}, supported versions are 1 and {MAX_VERSION}",
                    raw.version
                ),
            ));
        }
        let pol = parse_polynomial(&raw.chunker_polynomial)?;
        if !Polynomial(pol).is_irreducible() {
            return Err(FormatError::invalid(
                WHAT,
                format!("invalid chunker polynomial {pol:x}: not irreducible"),
            ));
        }
        if Polynomial(pol).deg() > MAX_POLYNOMIAL_DEGREE {
            return Err(FormatError::invalid(
                WHAT,
                format!(
                    "invalid chunker polynomial {pol:x}: degree {} is above {MAX_POLYNOMIAL_DEGREE}",
                    Polynomial(pol).deg()
                ),
            ));
        }
        Ok(ConfigFile {
            version: raw.version,
            id: raw.id,
            chunker_polynomial: pol,
            mover_chunker: raw.mover_chunker,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Key, derive_key};
    use crate::format::key_file::KeyFile;
    use proptest::prelude::*;

    const FIXTURE_CONFIG_JSON: &[u8] = br#"{"version":2,"id":"027216f5cf7f007e039e6ddf58e1933f87aa8589244fd235b7f4a98e7e51e9e4","chunker_polynomial":"3da3358b4dc173"}"#;
    const FIXTURE_KEY_ID: &str = "497fe3528b8b70db3302089506ef0e2135c0d8e21ce7092cd901e082da28064c";

    /// Extracts the tiny v2 fixture repository made by restic 0.14 (spec §15.3).
    fn fixture_repo() -> tempfile::TempDir {
        let tarball = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/restic-0.14-v2-tiny-repo.tar.gz"
        );
        assert!(
            std::path::Path::new(tarball).exists(),
            "fixture {tarball} is missing; it is committed in testdata/"
        );
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("tar")
            .arg("xzf")
            .arg(tarball)
            .arg("-C")
            .arg(dir.path())
            .status()
            .expect("tar must be installed to extract the fixture repository");
        assert!(status.success(), "tar failed to extract {tarball}");
        dir
    }

    #[test]
    fn fixture_repo_opens_with_password() {
        let dir = fixture_repo();
        let repo = dir.path().join("repo");
        let key_bytes = std::fs::read(repo.join("keys").join(FIXTURE_KEY_ID)).unwrap();
        let kf = KeyFile::decode(&key_bytes).unwrap();
        assert_eq!(kf.encode(), key_bytes, "key file re-encodes byte-exact");

        let user = derive_key(b"geheim", &kf.salt, &kf.kdf_params()).unwrap();
        let master = Key::from_json(&user.open(&kf.data).unwrap()).unwrap();

        let sealed = std::fs::read(repo.join("config")).unwrap();
        assert_eq!(sealed.len(), 155);
        let plain = master.open(&sealed).unwrap();
        assert_eq!(plain, FIXTURE_CONFIG_JSON);

        let cfg = ConfigFile::decode(&plain).unwrap();
        assert_eq!(cfg.version, 2);
        assert_eq!(
            cfg.id,
            "027216f5cf7f007e039e6ddf58e1933f87aa8589244fd235b7f4a98e7e51e9e4"
        );
        assert_eq!(cfg.chunker_polynomial, 0x3da3358b4dc173);
        assert_eq!(cfg.mover_chunker, None);
        assert_eq!(cfg.encode(), plain);
        assert_eq!(cfg.encode().len(), 123);
    }

    #[test]
    fn accepts_whitespace_and_unknown_fields() {
        let mut with_newline = FIXTURE_CONFIG_JSON.to_vec();
        with_newline.extend_from_slice(b"\n \t\r\n");
        assert!(ConfigFile::decode(&with_newline).is_ok());
        let rustic = br#"{"version":1,"id":"ab","chunker_polynomial":"3DA3358B4DC173","is_hot":false,"compression":3}"#;
        let cfg = ConfigFile::decode(rustic).unwrap();
        assert_eq!(cfg.version, 1);
        assert_eq!(cfg.chunker_polynomial, 0x3da3358b4dc173);
        let leading_zero = br#"{"version":2,"id":"ab","chunker_polynomial":"003da3358b4dc173"}"#;
        assert_eq!(
            ConfigFile::decode(leading_zero).unwrap().chunker_polynomial,
            0x3da3358b4dc173
        );
    }

    #[test]
    fn rejects_bad_versions_and_polynomials() {
        for v in [0, 3, 100] {
            let json =
                format!(r#"{{"version":{v},"id":"ab","chunker_polynomial":"3da3358b4dc173"}}"#);
            let err = ConfigFile::decode(json.as_bytes()).unwrap_err().to_string();
            assert!(err.contains("unsupported repository version"), "{err}");
        }
        for pol in [
            "38f1e565e288df",
            "0",
            "",
            "+3da3358b4dc173",
            "0x3da3358b4dc173",
            "1ffffffffffffffff",
        ] {
            let json = format!(r#"{{"version":2,"id":"ab","chunker_polynomial":"{pol}"}}"#);
            let err = ConfigFile::decode(json.as_bytes()).unwrap_err().to_string();
            assert!(err.contains("invalid chunker polynomial"), "{pol}: {err}");
        }
        assert!(ConfigFile::decode(b"").is_err());
        assert!(ConfigFile::decode(b"\x02{}").is_err());
    }

    #[test]
    fn mover_chunker_is_optional_and_last() {
        let mut cfg = ConfigFile::decode(FIXTURE_CONFIG_JSON).unwrap();
        cfg.mover_chunker = Some("fastcdc".into());
        let enc = cfg.encode();
        assert!(
            enc.ends_with(br#","chunker_polynomial":"3da3358b4dc173","mover_chunker":"fastcdc"}"#)
        );
        assert_eq!(ConfigFile::decode(&enc).unwrap(), cfg);
    }

    #[test]
    fn new_config_is_valid() {
        let cfg = ConfigFile::new(2);
        assert_eq!(cfg.id.len(), 64);
        assert!(
            cfg.id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(Polynomial(cfg.chunker_polynomial).deg(), 53);
        assert_eq!(cfg.encode().len(), 123);
        assert_eq!(ConfigFile::decode(&cfg.encode()).unwrap(), cfg);
        assert_ne!(ConfigFile::new(2).id, cfg.id);
    }

    proptest! {
        #[test]
        fn round_trip(
            version in 1u32..=2,
            id in proptest::collection::vec(any::<u8>(), 32),
            pol_index in 0usize..5,
            chunker in proptest::option::of("[a-z0-9-]{0,12}"),
        ) {
            let pols = [
                0x3da3358b4dc173u64,
                0x2482734cacca49,
                0x25b468838dcb75,
                0x3a7013f3d578ed,
                0x249971770ab0ff,
            ];
            let cfg = ConfigFile {
                version,
                id: hex::encode(id),
                chunker_polynomial: pols[pol_index],
                mover_chunker: chunker,
            };
            prop_assert_eq!(ConfigFile::decode(&cfg.encode()).unwrap(), cfg);
        }
    }
}
