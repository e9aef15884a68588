//! Index files (spec §8): which blobs live in which pack, at which offset. JSON only, after
//! the unpacked-file decoding of §6; no I/O, no sealing. Encoding follows Go's field order.

use crate::format::{BlobId, BlobType, FormatError, Id, PackId};
use serde::{Deserialize, Deserializer, Serialize};

const WHAT: &str = "index file";

/// One index file: the packs it describes, plus the (informational) superseded index ids.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexFile {
    /// Index files this one replaces (written by restic 0.14–0.16 only; informational).
    pub supersedes: Vec<Id>,
    pub packs: Vec<IndexPack>,
}

/// A pack and the blobs it holds, in no particular order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPack {
    pub id: PackId,
    pub blobs: Vec<IndexBlob>,
}

/// Where one blob sits inside its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexBlob {
    pub id: BlobId,
    pub blob_type: BlobType,
    /// Byte offset of the sealed blob in the pack file.
    pub offset: u32,
    /// Sealed length, including the 32 bytes of IV and MAC.
    pub length: u32,
    /// Plaintext length after decompression; `Some` only for compressed blobs.
    pub uncompressed_length: Option<u32>,
}

// Wire structs: field order is Go's struct order, which `serde_json` keeps when writing.

#[derive(Serialize, Deserialize)]
struct WireIndex {
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    supersedes: Vec<Id>,
    #[serde(default, deserialize_with = "null_as_empty")]
    packs: Vec<WirePack>,
}

#[derive(Serialize, Deserialize)]
struct WirePack {
    id: PackId,
    #[serde(default, deserialize_with = "null_as_empty")]
    blobs: Vec<WireBlob>,
}

#[derive(Serialize, Deserialize)]
struct WireBlob {
    id: BlobId,
    #[serde(rename = "type", with = "wire_blob_type")]
    blob_type: BlobType,
    offset: u32,
    length: u32,
    // Go `omitempty`: 0 means "not compressed", on both sides.
    #[serde(default, skip_serializing_if = "is_zero")]
    uncompressed_length: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Go decodes JSON `null` into a slice as an empty (nil) slice.
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

mod wire_blob_type {
    use crate::format::BlobType;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &BlobType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(t.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BlobType, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        match s.as_ref() {
            "data" => Ok(BlobType::Data),
            "tree" => Ok(BlobType::Tree),
            other => Err(serde::de::Error::custom(format!(
                "unknown blob type {other:?} (expected \"data\" or \"tree\")"
            ))),
        }
    }
}

impl From<&IndexPack> for WirePack {
    fn from(p: &IndexPack) -> Self {
        WirePack {
            id: p.id,
            blobs: p
                .blobs
                .iter()
                .map(|b| WireBlob {
                    id: b.id,
                    blob_type: b.blob_type,
                    offset: b.offset,
                    length: b.length,
                    uncompressed_length: b.uncompressed_length.unwrap_or(0),
                })
                .collect(),
        }
    }
}

impl From<WirePack> for IndexPack {
    fn from(p: WirePack) -> Self {
        IndexPack {
            id: p.id,
            blobs: p
                .blobs
                .into_iter()
                .map(|b| IndexBlob {
                    id: b.id,
                    blob_type: b.blob_type,
                    offset: b.offset,
                    length: b.length,
                    uncompressed_length: (b.uncompressed_length != 0)
                        .then_some(b.uncompressed_length),
                })
                .collect(),
        }
    }
}

impl IndexFile {
    /// Compact JSON as restic's `json.Encoder` writes it, ending with `\n`.
    pub fn encode(&self) -> Vec<u8> {
        let wire = WireIndex {
            supersedes: self.supersedes.clone(),
            packs: self.packs.iter().map(WirePack::from).collect(),
        };
        // Serializing plain structs of ids, strings and integers into a Vec cannot fail.
        let mut out = serde_json::to_vec(&wire).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Parse index JSON. Accepts the current object form and the legacy (restic 0.1) form
    /// whose top level is an array of packs. Unknown fields are ignored, as Go does.
    pub fn decode(json: &[u8]) -> Result<IndexFile, FormatError> {
        let first = json.iter().find(|b| !b.is_ascii_whitespace());
        let wrap = |source| FormatError::Json { what: WHAT, source };
        if first == Some(&b'[') {
            let packs: Vec<WirePack> = serde_json::from_slice(json).map_err(wrap)?;
            return Ok(IndexFile {
                supersedes: Vec::new(),
                packs: packs.into_iter().map(IndexPack::from).collect(),
            });
        }
        let wire: WireIndex = serde_json::from_slice(json).map_err(wrap)?;
        Ok(IndexFile {
            supersedes: wire.supersedes,
            packs: wire.packs.into_iter().map(IndexPack::from).collect(),
        })
    }

    /// Number of blob entries over all packs.
    pub fn blob_count(&self) -> usize {
        self.packs.iter().map(|p| p.blobs.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Spec §15.3: index of the tiny v2 fixture repository.
    const SPEC_INDEX: &str = concat!(
        r#"{"packs":[{"id":"1fa5b39088b0804c9991e1ed5c69906198999644a51f830c4dc37b6d83a6d880","blobs":[{"id":"325df6953df4b63fa228579c0d8fe4c8a47192846d5258e3aa5d95b35b3ac642","type":"data","offset":0,"length":55,"uncompressed_length":14}]},"#,
        r#"{"id":"afdda493f708dbb2c96f09d124eae2914e6ff71feb6b03dac6162a0f039b1c7f","blobs":[{"id":"49f0bd6eb9aad31e2676d73e839328cc09031c1109ae03f99f3e3831b42f9c50","type":"tree","offset":0,"length":212,"uncompressed_length":285}]}]}"#,
        "\n"
    );

    #[test]
    fn spec_vector_roundtrips_byte_exact() {
        let idx = IndexFile::decode(SPEC_INDEX.as_bytes()).unwrap();
        assert_eq!(idx.packs.len(), 2);
        assert_eq!(idx.blob_count(), 2);
        let b = idx.packs[1].blobs[0];
        assert_eq!(b.blob_type, BlobType::Tree);
        assert_eq!(
            (b.offset, b.length, b.uncompressed_length),
            (0, 212, Some(285))
        );
        assert_eq!(idx.encode(), SPEC_INDEX.as_bytes());
    }

    #[test]
    fn key_order_and_omissions() {
        let idx = IndexFile {
            supersedes: vec![Id([0xaa; 32])],
            packs: vec![IndexPack {
                id: PackId(Id([0xbb; 32])),
                blobs: vec![IndexBlob {
                    id: BlobId(Id([0xcc; 32])),
                    blob_type: BlobType::Data,
                    offset: 7,
                    length: 40,
                    uncompressed_length: None,
                }],
            }],
        };
        let json = String::from_utf8(idx.encode()).unwrap();
        let expected = format!(
            "{{\"supersedes\":[\"{}\"],\"packs\":[{{\"id\":\"{}\",\"blobs\":[{{\"id\":\"{}\",\"type\":\"data\",\"offset\":7,\"length\":40}}]}}]}}\n",
            "aa".repeat(32),
            "bb".repeat(32),
            "cc".repeat(32)
        );
        assert_eq!(json, expected);
        let empty = IndexFile::default();
        assert_eq!(empty.encode(), b"{\"packs\":[]}\n");
    }

    #[test]
    fn accepts_legacy_array_nulls_and_unknown_fields() {
        let legacy = format!(
            " [{{\"id\":\"{}\",\"blobs\":[{{\"id\":\"{}\",\"type\":\"tree\",\"offset\":1,\"length\":33,\"extra\":true}}]}}]",
            "01".repeat(32),
            "02".repeat(32)
        );
        let idx = IndexFile::decode(legacy.as_bytes()).unwrap();
        assert_eq!(idx.packs[0].blobs[0].blob_type, BlobType::Tree);
        let nulls = format!(
            "{{\"supersedes\":null,\"packs\":[{{\"id\":\"{}\",\"blobs\":null}}]}}",
            "01".repeat(32)
        );
        let idx = IndexFile::decode(nulls.as_bytes()).unwrap();
        assert!(idx.packs[0].blobs.is_empty());
        assert!(
            IndexFile::decode(b"{\"packs\":null}")
                .unwrap()
                .packs
                .is_empty()
        );
    }

    #[test]
    fn rejects_unknown_blob_type() {
        let bad = format!(
            "{{\"packs\":[{{\"id\":\"{}\",\"blobs\":[{{\"id\":\"{}\",\"type\":\"lock\",\"offset\":0,\"length\":40}}]}}]}}",
            "01".repeat(32),
            "02".repeat(32)
        );
        let err = IndexFile::decode(bad.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("index file") && err.contains("lock"), "{err}");
        assert!(IndexFile::decode(b"").is_err());
        assert!(IndexFile::decode(b"{\"packs\":[{\"id\":\"zz\"}]}").is_err());
    }

    fn blob_strategy() -> impl Strategy<Value = IndexBlob> {
        (
            any::<[u8; 32]>(),
            prop_oneof![Just(BlobType::Data), Just(BlobType::Tree)],
            any::<u32>(),
            any::<u32>(),
            proptest::option::of(1u32..),
        )
            .prop_map(
                |(id, blob_type, offset, length, uncompressed_length)| IndexBlob {
                    id: BlobId(Id(id)),
                    blob_type,
                    offset,
                    length,
                    uncompressed_length,
                },
            )
    }

    fn index_strategy() -> impl Strategy<Value = IndexFile> {
        let pack = (
            any::<[u8; 32]>(),
            proptest::collection::vec(blob_strategy(), 0..5),
        )
            .prop_map(|(id, blobs)| IndexPack {
                id: PackId(Id(id)),
                blobs,
            });
        (
            proptest::collection::vec(any::<[u8; 32]>().prop_map(Id), 0..3),
            proptest::collection::vec(pack, 0..5),
        )
            .prop_map(|(supersedes, packs)| IndexFile { supersedes, packs })
    }

    proptest! {
        #[test]
        fn index_roundtrip(idx in index_strategy()) {
            let bytes = idx.encode();
            prop_assert_eq!(bytes.last(), Some(&b'\n'));
            prop_assert_eq!(IndexFile::decode(&bytes).unwrap(), idx);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = IndexFile::decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_jsonish(s in r#"[\[\]{}",:0-9a-z_ ]{0,120}"#) {
            let _ = IndexFile::decode(s.as_bytes());
        }
    }
}
