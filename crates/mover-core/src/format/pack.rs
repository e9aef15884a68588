//! Pack file header: the plaintext entry list and the trailing header length (spec §7).
//! Pure byte conversions only; sealing the header and reading packs live in `repo::packer`.

use crate::format::{BlobId, BlobType, FormatError, Id};

/// Size of a header entry for an uncompressed blob (type 0 or 1).
pub const ENTRY_SIZE_PLAIN: usize = 37;
/// Size of a header entry for a compressed blob (type 2 or 3).
pub const ENTRY_SIZE_COMPRESSED: usize = 41;
/// Bytes the AEAD adds to every sealed message (IV and MAC).
const CRYPTO_OVERHEAD: usize = 32;
/// Size of the little-endian header length field at the end of a pack.
pub const HEADER_LENGTH_SIZE: usize = 4;
/// Largest sealed header plus its 4-byte length field (restic's `MaxHeaderSize`).
pub const MAX_HEADER_SIZE: usize = 16 * 1024 * 1024 + HEADER_LENGTH_SIZE;
/// Bytes restic reads from the end of a pack in its first request: room for 15 entries of the
/// largest kind, the crypto overhead and the length field.
pub const HEADER_READ_AHEAD: usize =
    15 * ENTRY_SIZE_COMPRESSED + CRYPTO_OVERHEAD + HEADER_LENGTH_SIZE;
/// Most entries a packer puts in one pack: restic refuses another blob once
/// `36 + (count + 1) * 41` would exceed [`MAX_HEADER_SIZE`].
pub const MAX_ENTRIES_PER_PACK: usize =
    (MAX_HEADER_SIZE - CRYPTO_OVERHEAD - HEADER_LENGTH_SIZE) / ENTRY_SIZE_COMPRESSED;

/// Bytes of a pack besides its blobs and header entries: the sealed header's IV and MAC and
/// the length field.
pub const HEADER_FIXED_SIZE: usize = CRYPTO_OVERHEAD + HEADER_LENGTH_SIZE;

/// Size of the header entry of a blob, compressed or not.
pub fn entry_size(compressed: bool) -> usize {
    if compressed {
        ENTRY_SIZE_COMPRESSED
    } else {
        ENTRY_SIZE_PLAIN
    }
}

const WHAT: &str = "pack header";

/// One entry of a pack header, in blob order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackHeaderEntry {
    pub blob_type: BlobType,
    /// Stored (sealed) length, including the 32 bytes of IV and MAC.
    pub length: u32,
    /// Length after decryption and decompression; `Some` only for compressed blobs.
    pub uncompressed_length: Option<u32>,
    pub id: BlobId,
}

impl PackHeaderEntry {
    /// Size of this entry in the plaintext header.
    pub fn encoded_len(&self) -> usize {
        if self.uncompressed_length.is_some() {
            ENTRY_SIZE_COMPRESSED
        } else {
            ENTRY_SIZE_PLAIN
        }
    }

    fn type_byte(&self) -> u8 {
        match (self.blob_type, self.uncompressed_length.is_some()) {
            (BlobType::Data, false) => 0,
            (BlobType::Tree, false) => 1,
            (BlobType::Data, true) => 2,
            (BlobType::Tree, true) => 3,
        }
    }
}

/// Plaintext header for `entries`: the entries back to back, in order.
pub fn encode_header(entries: &[PackHeaderEntry]) -> Vec<u8> {
    let size = entries.iter().map(PackHeaderEntry::encoded_len).sum();
    let mut out = Vec::with_capacity(size);
    for e in entries {
        out.push(e.type_byte());
        out.extend_from_slice(&e.length.to_le_bytes());
        if let Some(plain_len) = e.uncompressed_length {
            out.extend_from_slice(&plain_len.to_le_bytes());
        }
        out.extend_from_slice(&e.id.0.0);
    }
    out
}

/// Parse a decrypted pack header into its entries.
///
/// Rejects unknown type bytes, truncated entries and stored lengths smaller than the crypto
/// overhead. A compressed entry with `plain_len` 0 is read as uncompressed, as restic does
/// (a blob counts as compressed only when its uncompressed length is nonzero).
pub fn decode_header(plain: &[u8]) -> Result<Vec<PackHeaderEntry>, FormatError> {
    let mut entries = Vec::with_capacity(plain.len() / ENTRY_SIZE_PLAIN);
    let mut rest = plain;
    while let Some(&type_byte) = rest.first() {
        let index = entries.len();
        let (blob_type, compressed) = match type_byte {
            0 => (BlobType::Data, false),
            1 => (BlobType::Tree, false),
            2 => (BlobType::Data, true),
            3 => (BlobType::Tree, true),
            other => {
                return Err(FormatError::invalid(
                    WHAT,
                    format!("entry {index}: unknown blob type byte {other:#04x}"),
                ));
            }
        };
        let size = if compressed {
            ENTRY_SIZE_COMPRESSED
        } else {
            ENTRY_SIZE_PLAIN
        };
        let Some((entry, tail)) = rest.split_at_checked(size) else {
            return Err(FormatError::invalid(
                WHAT,
                format!(
                    "entry {index}: truncated (type {type_byte} needs {size} bytes, {} left)",
                    rest.len()
                ),
            ));
        };
        let length = read_u32(&entry[1..5]);
        if (length as usize) < CRYPTO_OVERHEAD {
            return Err(FormatError::invalid(
                WHAT,
                format!("entry {index}: stored length {length} is below the 32-byte overhead"),
            ));
        }
        let (uncompressed_length, id_bytes) = if compressed {
            let plain_len = read_u32(&entry[5..9]);
            ((plain_len != 0).then_some(plain_len), &entry[9..])
        } else {
            (None, &entry[5..])
        };
        let mut id = [0u8; 32];
        id.copy_from_slice(id_bytes);
        entries.push(PackHeaderEntry {
            blob_type,
            length,
            uncompressed_length,
            id: BlobId(Id(id)),
        });
        rest = tail;
    }
    Ok(entries)
}

/// Validate the trailing header length of a pack of `file_size` bytes (spec §7.3): nonzero,
/// at least the crypto overhead, no larger than the file minus the length field, and no
/// larger than 16 MiB.
pub fn header_length(trailer: [u8; 4], file_size: u64) -> Result<u32, FormatError> {
    let hl = u32::from_le_bytes(trailer);
    if file_size < HEADER_LENGTH_SIZE as u64 {
        return Err(FormatError::invalid(
            WHAT,
            format!("pack file of {file_size} bytes is too small to hold a header length"),
        ));
    }
    if hl == 0 {
        return Err(FormatError::invalid(WHAT, "header length is zero"));
    }
    if (hl as usize) < CRYPTO_OVERHEAD {
        return Err(FormatError::invalid(
            WHAT,
            format!("header length {hl} is smaller than the 32-byte crypto overhead"),
        ));
    }
    if u64::from(hl) > file_size - HEADER_LENGTH_SIZE as u64 {
        return Err(FormatError::invalid(
            WHAT,
            format!("header length {hl} is larger than the pack file ({file_size} bytes)"),
        ));
    }
    if hl as usize > MAX_HEADER_SIZE - HEADER_LENGTH_SIZE {
        return Err(FormatError::invalid(
            WHAT,
            format!(
                "header length {hl} exceeds the maximum of {}",
                MAX_HEADER_SIZE - HEADER_LENGTH_SIZE
            ),
        ));
    }
    Ok(hl)
}

fn read_u32(b: &[u8]) -> u32 {
    let mut le = [0u8; 4];
    le.copy_from_slice(&b[..4]);
    u32::from_le_bytes(le)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry_strategy() -> impl Strategy<Value = PackHeaderEntry> {
        (
            prop_oneof![Just(BlobType::Data), Just(BlobType::Tree)],
            32u32..,
            proptest::option::of(1u32..),
            any::<[u8; 32]>(),
        )
            .prop_map(
                |(blob_type, length, uncompressed_length, id)| PackHeaderEntry {
                    blob_type,
                    length,
                    uncompressed_length,
                    id: BlobId(Id(id)),
                },
            )
    }

    #[test]
    fn constants_match_restic() {
        assert_eq!(HEADER_READ_AHEAD, 651);
        assert_eq!(MAX_ENTRIES_PER_PACK, 409_199);
        const { assert!(36 + MAX_ENTRIES_PER_PACK * 41 <= MAX_HEADER_SIZE) };
        const { assert!(36 + (MAX_ENTRIES_PER_PACK + 1) * 41 > MAX_HEADER_SIZE) };
    }

    #[test]
    fn spec_vector_header_plaintext() {
        // Spec §15.3: the one entry of pack 1fa5b390…
        let id = "325df6953df4b63fa228579c0d8fe4c8a47192846d5258e3aa5d95b35b3ac642";
        let plain = hex::decode(format!("02370000000e000000{id}")).unwrap();
        let entries = decode_header(&plain).unwrap();
        assert_eq!(
            entries,
            vec![PackHeaderEntry {
                blob_type: BlobType::Data,
                length: 55,
                uncompressed_length: Some(14),
                id: id.parse().unwrap(),
            }]
        );
        assert_eq!(encode_header(&entries), plain);
        assert_eq!(header_length([0x49, 0, 0, 0], 132).unwrap(), 73);
    }

    #[test]
    fn entry_sizes_per_type() {
        let mut e = PackHeaderEntry {
            blob_type: BlobType::Tree,
            length: 40,
            uncompressed_length: None,
            id: BlobId(Id([7; 32])),
        };
        let plain = encode_header(&[e]);
        assert_eq!(plain.len(), ENTRY_SIZE_PLAIN);
        assert_eq!(plain[0], 1);
        e.uncompressed_length = Some(9);
        let comp = encode_header(&[e]);
        assert_eq!(comp.len(), ENTRY_SIZE_COMPRESSED);
        assert_eq!(comp[0], 3);
        assert_eq!(&comp[5..9], &9u32.to_le_bytes());
    }

    #[test]
    fn rejects_unknown_type_naming_entry() {
        let mut plain = encode_header(&[PackHeaderEntry {
            blob_type: BlobType::Data,
            length: 40,
            uncompressed_length: None,
            id: BlobId(Id([1; 32])),
        }]);
        plain.push(4);
        plain.extend_from_slice(&[0u8; 36]);
        let err = decode_header(&plain).unwrap_err().to_string();
        assert!(err.contains("entry 1") && err.contains("0x04"), "{err}");
    }

    #[test]
    fn rejects_truncated_entry_naming_entry() {
        let plain = encode_header(&[PackHeaderEntry {
            blob_type: BlobType::Data,
            length: 40,
            uncompressed_length: Some(3),
            id: BlobId(Id([1; 32])),
        }]);
        let err = decode_header(&plain[..40]).unwrap_err().to_string();
        assert!(
            err.contains("entry 0") && err.contains("truncated"),
            "{err}"
        );
    }

    #[test]
    fn rejects_too_short_stored_length() {
        let mut plain = vec![0u8];
        plain.extend_from_slice(&31u32.to_le_bytes());
        plain.extend_from_slice(&[0u8; 32]);
        assert!(decode_header(&plain).is_err());
    }

    #[test]
    fn zero_plain_len_reads_as_uncompressed() {
        let mut plain = vec![2u8];
        plain.extend_from_slice(&40u32.to_le_bytes());
        plain.extend_from_slice(&0u32.to_le_bytes());
        plain.extend_from_slice(&[5u8; 32]);
        assert_eq!(decode_header(&plain).unwrap()[0].uncompressed_length, None);
    }

    #[test]
    fn header_length_validation() {
        assert!(header_length([0, 0, 0, 0], 100).is_err());
        assert!(header_length([31, 0, 0, 0], 100).is_err());
        assert_eq!(header_length([96, 0, 0, 0], 100).unwrap(), 96);
        assert!(header_length([97, 0, 0, 0], 100).is_err());
        assert!(header_length([32, 0, 0, 0], 3).is_err());
        let max = (MAX_HEADER_SIZE - 4) as u32;
        assert_eq!(header_length(max.to_le_bytes(), 1 << 30).unwrap(), max);
        assert!(header_length((max + 1).to_le_bytes(), 1 << 30).is_err());
    }

    proptest! {
        #[test]
        fn header_roundtrip(entries in proptest::collection::vec(entry_strategy(), 0..40)) {
            let plain = encode_header(&entries);
            let size: usize = entries.iter().map(PackHeaderEntry::encoded_len).sum();
            prop_assert_eq!(plain.len(), size);
            prop_assert_eq!(decode_header(&plain).unwrap(), entries);
        }

        #[test]
        fn decode_header_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_header(&bytes);
        }

        #[test]
        fn header_length_never_panics(trailer in any::<[u8; 4]>(), size in any::<u64>()) {
            if let Ok(hl) = header_length(trailer, size) {
                prop_assert!(u64::from(hl) + 4 <= size);
                prop_assert!(hl >= 32);
            }
        }
    }
}
