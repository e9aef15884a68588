//! 32-byte SHA-256 identifiers and their typed wrappers. Text form is 64 lowercase hex chars.

use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// A SHA-256 digest naming a file or a blob in the repository.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// SHA-256 of `data`.
    pub fn hash(data: &[u8]) -> Id {
        Id(Sha256::digest(data).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// First 8 hex characters, as restic prints short ids.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    pub fn from_hex(s: &str) -> Result<Id, IdParseError> {
        if s.len() != 64 {
            return Err(IdParseError(s.chars().take(80).collect()));
        }
        // Trees name every chunk of every file by id, so this runs millions of times in a
        // large restore or listing: one table lookup per digit, one check at the end.
        let digits = s.as_bytes();
        let mut out = [0u8; 32];
        let mut invalid = 0u8;
        for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            let (hi, lo) = (
                HEX_DIGITS[usize::from(pair[0])],
                HEX_DIGITS[usize::from(pair[1])],
            );
            invalid |= hi | lo;
            *byte = (hi << 4) | lo;
        }
        if invalid & !0x0f != 0 {
            return Err(IdParseError(s.to_string()));
        }
        Ok(Id(out))
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0u8; 32]
    }
}

/// Value of each ASCII hex digit (either case); 0xff for every other byte.
const HEX_DIGITS: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid id {0:?}: expected 64 hex characters")]
pub struct IdParseError(pub String);

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl FromStr for Id {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Id::from_hex(s)
    }
}

impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Id::from_hex(&s.to_ascii_lowercase()).map_err(serde::de::Error::custom)
    }
}

macro_rules! typed_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Id);

        impl $name {
            pub fn to_hex(&self) -> String { self.0.to_hex() }
            pub fn short(&self) -> String { self.0.short() }
            pub fn id(&self) -> &Id { &self.0 }
        }
        impl From<Id> for $name { fn from(id: Id) -> Self { $name(id) } }
        impl From<$name> for Id { fn from(id: $name) -> Id { id.0 } }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { fmt::Display::fmt(&self.0, f) }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.short())
            }
        }
        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> { Id::from_hex(s).map($name) }
        }
    };
}

typed_id!(
    /// Id of a data or tree blob: SHA-256 of its uncompressed plaintext.
    BlobId
);
typed_id!(
    /// Id of a tree blob (a directory listing).
    TreeId
);
typed_id!(
    /// Id of a pack file: SHA-256 of the file's bytes.
    PackId
);
typed_id!(
    /// Id of a snapshot file: SHA-256 of the encrypted file.
    SnapshotId
);

impl From<TreeId> for BlobId {
    fn from(t: TreeId) -> BlobId {
        BlobId(t.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hash_of_empty_tree_matches_restic() {
        let id = Id::hash(b"{\"nodes\":[]}\n");
        assert_eq!(
            id.to_hex(),
            "ac08ce34ba4f8123618661bef2425f7028ffb9ac740578a3ee88684d2523fee8"
        );
    }

    #[test]
    fn rejects_bad_hex() {
        assert!(Id::from_hex("abc").is_err());
        assert!(Id::from_hex(&"g".repeat(64)).is_err());
        // 64 bytes, but not 64 digits.
        assert!(Id::from_hex(&"é".repeat(32)).is_err());
        let upper = "AC08CE34BA4F8123618661BEF2425F7028FFB9AC740578A3EE88684D2523FEE8";
        assert_eq!(
            Id::from_hex(upper).unwrap(),
            Id::from_hex(&upper.to_lowercase()).unwrap()
        );
    }

    proptest! {
        #[test]
        fn hex_roundtrip(bytes in any::<[u8; 32]>()) {
            let id = Id(bytes);
            prop_assert_eq!(Id::from_hex(&id.to_hex()).unwrap(), id);
            let json = serde_json::to_string(&BlobId(id)).unwrap();
            prop_assert_eq!(serde_json::from_str::<BlobId>(&json).unwrap(), BlobId(id));
        }

        #[test]
        fn from_hex_agrees_with_a_plain_decoder(s in "[0-9a-fA-F]{60}[0-9a-zA-Z:/@`G ]{4}") {
            let mut plain = [0u8; 32];
            let expected = hex::decode_to_slice(&s, &mut plain).ok().map(|()| Id(plain));
            prop_assert_eq!(Id::from_hex(&s).ok(), expected);
        }
    }
}
