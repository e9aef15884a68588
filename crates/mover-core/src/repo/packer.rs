//! Pack assembly and pack reading with the master key (spec §7): seal blobs, collect them into
//! a pack with its sealed header, parse a pack's header back and open single blobs.
//! CPU only: no I/O and no logging; callers fetch and store the bytes.

use crate::compress::{self, CompressError};
use crate::crypto::aead::{IV_LEN, MAC_LEN};
use crate::crypto::{CryptoError, Key};
use crate::format::index::IndexBlob;
use crate::format::pack::{
    HEADER_LENGTH_SIZE, MAX_ENTRIES_PER_PACK, PackHeaderEntry, decode_header, encode_header,
    header_length,
};
use crate::format::{BlobId, BlobType, FormatError, Id, PackId};

/// Largest plaintext a blob may have: its sealed size must fit the u32 length fields of the
/// header and index, with room for the crypto overhead and zstd's worst-case expansion.
pub const MAX_BLOB_SIZE: usize = (u32::MAX as usize) / 2;

/// A blob sealed with the master key, ready to be added to a pack.
#[derive(Debug, Clone)]
pub struct SealedBlob {
    pub id: BlobId,
    pub blob_type: BlobType,
    /// IV ‖ ciphertext ‖ MAC of the (possibly compressed) plaintext.
    pub sealed: Vec<u8>,
    /// Plaintext length when the stored bytes are a zstd frame.
    pub uncompressed_length: Option<u32>,
}

/// Errors from building packs.
#[derive(Debug, thiserror::Error)]
pub enum PackWriteError {
    #[error("blob {id} is {len} bytes, larger than the {MAX_BLOB_SIZE}-byte limit of a pack entry")]
    BlobTooLarge { id: BlobId, len: usize },
    #[error("pack is full ({count} blobs, {bytes} bytes): finish it before adding blob {id}")]
    PackFull {
        id: BlobId,
        count: usize,
        bytes: u64,
    },
}

/// Hash, optionally compress, and seal one blob.
///
/// The id is the SHA-256 of `plaintext`. With `zstd_level` set the stored bytes are a zstd
/// frame even when that is larger than the input (restic keeps it too); a zero-length blob is
/// never marked compressed because `uncompressed_length` 0 means "not compressed".
pub fn seal_blob(
    key: &Key,
    blob_type: BlobType,
    plaintext: &[u8],
    zstd_level: Option<i32>,
) -> Result<SealedBlob, PackWriteError> {
    seal_blob_with_id(
        key,
        blob_type,
        BlobId(Id::hash(plaintext)),
        plaintext,
        zstd_level,
    )
}

/// [`seal_blob`] for a caller that has already hashed the blob (a backup hashes every chunk
/// first to see whether it is new). `id` must be the SHA-256 of `plaintext`.
pub fn seal_blob_with_id(
    key: &Key,
    blob_type: BlobType,
    id: BlobId,
    plaintext: &[u8],
    zstd_level: Option<i32>,
) -> Result<SealedBlob, PackWriteError> {
    let too_large = || PackWriteError::BlobTooLarge {
        id,
        len: plaintext.len(),
    };
    if plaintext.len() > MAX_BLOB_SIZE {
        return Err(too_large());
    }
    let (sealed, uncompressed_length) = match zstd_level {
        Some(level) if !plaintext.is_empty() => {
            let frame = compress::compress(plaintext, level);
            let plain_len = u32::try_from(plaintext.len()).map_err(|_| too_large())?;
            (key.seal(&frame), Some(plain_len))
        }
        _ => (key.seal(plaintext), None),
    };
    if u32::try_from(sealed.len()).is_err() {
        return Err(too_large());
    }
    Ok(SealedBlob {
        id,
        blob_type,
        sealed,
        uncompressed_length,
    })
}

/// A pack being assembled: sealed blobs appended into one buffer, header entries alongside.
#[derive(Debug, Default)]
pub struct PackBuilder {
    bytes: Vec<u8>,
    entries: Vec<PackHeaderEntry>,
}

/// A complete pack file and the index entries for its blobs.
#[derive(Debug, Clone)]
pub struct FinishedPack {
    /// SHA-256 of `bytes`: the pack's file name.
    pub id: PackId,
    /// blobs ‖ sealed header ‖ header length (u32 LE).
    pub bytes: Vec<u8>,
    pub blobs: Vec<IndexBlob>,
}

impl PackBuilder {
    pub fn new() -> PackBuilder {
        PackBuilder::default()
    }

    /// A builder whose buffer starts with room for `blob_bytes` (for example the pack target
    /// plus one maximal blob), so that filling a pack never reallocates.
    pub fn with_capacity(blob_bytes: usize) -> PackBuilder {
        PackBuilder {
            bytes: Vec::with_capacity(blob_bytes),
            entries: Vec::new(),
        }
    }

    /// Whether `blob` can still be added: the header has room for another entry and every
    /// offset and length stays within the u32 fields of the format.
    pub fn fits(&self, blob: &SealedBlob) -> bool {
        !self.header_full()
            && (self.bytes.len() as u64 + blob.sealed.len() as u64) <= u64::from(u32::MAX)
    }

    /// Append a sealed blob. Fails (leaving the pack unchanged) when [`PackBuilder::fits`] is
    /// false; finish this pack and add the blob to a new one.
    pub fn add(&mut self, blob: SealedBlob) -> Result<(), PackWriteError> {
        let length = match u32::try_from(blob.sealed.len()) {
            Ok(len) if self.fits(&blob) => len,
            _ => {
                return Err(PackWriteError::PackFull {
                    id: blob.id,
                    count: self.count(),
                    bytes: self.blob_bytes(),
                });
            }
        };
        if self.bytes.capacity() == 0 {
            // Start at 1 MiB rather than growing from a few bytes.
            self.bytes.reserve(blob.sealed.len().max(1 << 20));
        }
        self.bytes.extend_from_slice(&blob.sealed);
        self.entries.push(PackHeaderEntry {
            blob_type: blob.blob_type,
            length,
            uncompressed_length: blob.uncompressed_length,
            id: blob.id,
        });
        Ok(())
    }

    /// Sealed blob bytes so far (the header not counted).
    pub fn blob_bytes(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn count(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True once another entry would push the header past restic's `MaxHeaderSize`.
    pub fn header_full(&self) -> bool {
        self.entries.len() >= MAX_ENTRIES_PER_PACK
    }

    /// restic 0.14's rule, checked after each added blob: finish once the blob bytes reach
    /// the target size or the header is full.
    pub fn should_finish(&self, target_bytes: u64) -> bool {
        self.blob_bytes() >= target_bytes || self.header_full()
    }

    /// Seal the header, append it and its length, and name the pack.
    pub fn finish(self, key: &Key) -> FinishedPack {
        let PackBuilder { mut bytes, entries } = self;
        let sealed_header = key.seal(&encode_header(&entries));
        // At most MAX_ENTRIES_PER_PACK entries of 41 bytes plus 32: far below u32::MAX.
        let header_len = sealed_header.len() as u32;
        bytes.reserve_exact(sealed_header.len() + HEADER_LENGTH_SIZE);
        bytes.extend_from_slice(&sealed_header);
        bytes.extend_from_slice(&header_len.to_le_bytes());
        let id = PackId(Id::hash(&bytes));
        let mut offset = 0u32;
        let blobs = entries
            .iter()
            .map(|e| {
                let b = index_blob(e, offset);
                // `add` keeps the sum of all blob lengths within u32.
                offset = offset.wrapping_add(e.length);
                b
            })
            .collect();
        FinishedPack { id, bytes, blobs }
    }
}

fn index_blob(e: &PackHeaderEntry, offset: u32) -> IndexBlob {
    IndexBlob {
        id: e.id,
        blob_type: e.blob_type,
        offset,
        length: e.length,
        uncompressed_length: e.uncompressed_length,
    }
}

/// Errors from reading packs and blobs. Messages name the blob; callers add the pack id.
#[derive(Debug, thiserror::Error)]
pub enum PackReadError {
    #[error("pack tail of {tail_len} bytes does not fit a file of {file_size} bytes")]
    BadTail { tail_len: usize, file_size: u64 },
    #[error("pack header: {0}")]
    Header(#[source] FormatError),
    #[error("pack header failed verification: {0}")]
    HeaderMac(#[source] CryptoError),
    #[error(
        "pack header lists {blob_bytes} bytes of blobs but only {available} bytes precede the header"
    )]
    BlobsExceedFile { blob_bytes: u64, available: u64 },
    #[error("blob {id}: expected {expected} sealed bytes, got {actual}")]
    BlobLength {
        id: BlobId,
        expected: u32,
        actual: usize,
    },
    #[error("blob {id}: MAC check failed: {source}")]
    BlobMac {
        id: BlobId,
        #[source]
        source: CryptoError,
    },
    #[error("blob {id}: decompression failed: {source}")]
    BlobDecompress {
        id: BlobId,
        #[source]
        source: CompressError,
    },
    #[error("blob {id}: content hash mismatch (plaintext hashes to {actual})")]
    BlobHash { id: BlobId, actual: Id },
}

impl PackReadError {
    /// True when the stored bytes are bad (as opposed to the caller passing a wrong tail).
    pub fn is_corrupt(&self) -> bool {
        !matches!(self, PackReadError::BadTail { .. })
    }
}

/// Result of parsing a pack's tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackHeaderRead {
    /// The blobs of the pack, in pack order, with offsets computed from their lengths.
    Complete(Vec<IndexBlob>),
    /// The header is longer than the tail given: fetch the last `header_len + 4` bytes of the
    /// pack and call again.
    NeedMore { header_len: u32 },
}

/// Parse the header of a pack of `file_size` bytes from `tail`, its last bytes (restic reads
/// [`HEADER_READ_AHEAD`](crate::format::pack::HEADER_READ_AHEAD) bytes first).
pub fn parse_pack_header(
    key: &Key,
    tail: &[u8],
    file_size: u64,
) -> Result<PackHeaderRead, PackReadError> {
    if tail.len() < HEADER_LENGTH_SIZE || tail.len() as u64 > file_size {
        return Err(PackReadError::BadTail {
            tail_len: tail.len(),
            file_size,
        });
    }
    let (rest, trailer) = tail.split_at(tail.len() - HEADER_LENGTH_SIZE);
    let mut le = [0u8; HEADER_LENGTH_SIZE];
    le.copy_from_slice(trailer);
    let header_len = header_length(le, file_size).map_err(PackReadError::Header)?;
    let Some(start) = rest.len().checked_sub(header_len as usize) else {
        return Ok(PackHeaderRead::NeedMore { header_len });
    };
    let plain = key.open(&rest[start..]).map_err(PackReadError::HeaderMac)?;
    let entries = decode_header(&plain).map_err(PackReadError::Header)?;
    let available = file_size - HEADER_LENGTH_SIZE as u64 - u64::from(header_len);
    let blob_bytes: u64 = entries.iter().map(|e| u64::from(e.length)).sum();
    // Offsets are u32 in the index; a pack whose blobs end past that cannot be described.
    if blob_bytes > available || blob_bytes > u64::from(u32::MAX) {
        return Err(PackReadError::BlobsExceedFile {
            blob_bytes,
            available,
        });
    }
    let mut offset = 0u32;
    let blobs = entries
        .iter()
        .map(|e| {
            let b = index_blob(e, offset);
            // The sum of all lengths was checked to fit in u32 above.
            offset = offset.wrapping_add(e.length);
            b
        })
        .collect();
    Ok(PackHeaderRead::Complete(blobs))
}

/// Verify, decrypt, decompress (bounded to the recorded length) and hash-check one blob.
pub fn open_blob(key: &Key, sealed: &[u8], blob: &IndexBlob) -> Result<Vec<u8>, PackReadError> {
    let mut buf = sealed.to_vec();
    let mut plain = Vec::new();
    open_blob_in_place(key, &mut buf, blob, &mut plain)?;
    Ok(match blob.uncompressed_length {
        Some(_) => plain,
        None => {
            buf.truncate(buf.len() - MAC_LEN);
            buf.drain(..IV_LEN);
            buf
        }
    })
}

/// The sealed bytes must be exactly as long as the index says.
fn check_sealed_length(sealed: &[u8], blob: &IndexBlob) -> Result<(), PackReadError> {
    if sealed.len() == blob.length as usize {
        return Ok(());
    }
    Err(PackReadError::BlobLength {
        id: blob.id,
        expected: blob.length,
        actual: sealed.len(),
    })
}

/// The plaintext must hash to the blob's id.
fn check_hash(plain: &[u8], blob: &IndexBlob) -> Result<(), PackReadError> {
    let actual = Id::hash(plain);
    if actual == blob.id.0 {
        return Ok(());
    }
    Err(PackReadError::BlobHash {
        id: blob.id,
        actual,
    })
}

/// [`open_blob_into`] for sealed bytes the caller is done with: they are decrypted where
/// they lie, so no buffer holds a copy. An uncompressed blob's plaintext is then part of
/// `sealed`; a compressed one is decompressed into `plain`. On error `sealed` may hold
/// decrypted bytes.
pub fn open_blob_in_place<'a>(
    key: &Key,
    sealed: &'a mut [u8],
    blob: &IndexBlob,
    plain: &'a mut Vec<u8>,
) -> Result<&'a [u8], PackReadError> {
    let id = blob.id;
    check_sealed_length(sealed, blob)?;
    let decrypted = key
        .open_in_slice(sealed)
        .map_err(|source| PackReadError::BlobMac { id, source })?;
    let out: &[u8] = match blob.uncompressed_length {
        Some(len) => {
            compress::decompress_exact_into(decrypted, len as usize, plain)
                .map_err(|source| PackReadError::BlobDecompress { id, source })?;
            plain
        }
        None => decrypted,
    };
    check_hash(out, blob)?;
    Ok(out)
}

/// [`open_blob_in_place`] into `out`, which must be exactly the blob's plaintext length (its
/// `uncompressed_length`, or the sealed length less 32): the plaintext lands where the
/// caller wants it, with no buffer in between. On error `out` holds nothing useful.
pub fn open_blob_in_place_to_slice(
    key: &Key,
    sealed: &mut [u8],
    blob: &IndexBlob,
    out: &mut [u8],
) -> Result<(), PackReadError> {
    let id = blob.id;
    check_sealed_length(sealed, blob)?;
    match blob.uncompressed_length {
        Some(_) => {
            let decrypted = key
                .open_in_slice(sealed)
                .map_err(|source| PackReadError::BlobMac { id, source })?;
            compress::decompress_exact_to_slice(decrypted, out)
                .map_err(|source| PackReadError::BlobDecompress { id, source })?;
        }
        None => key
            .open_to_slice(sealed, out)
            .map_err(|source| PackReadError::BlobMac { id, source })?,
    }
    check_hash(out, blob)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::aead::OVERHEAD;
    use crate::format::pack::HEADER_READ_AHEAD;
    use proptest::prelude::*;

    fn build(key: &Key, blobs: &[(BlobType, Vec<u8>, Option<i32>)]) -> FinishedPack {
        let mut b = PackBuilder::new();
        for (t, data, level) in blobs {
            b.add(seal_blob(key, *t, data, *level).unwrap()).unwrap();
        }
        b.finish(key)
    }

    fn read_header(key: &Key, bytes: &[u8], first: usize) -> Vec<IndexBlob> {
        let size = bytes.len() as u64;
        let tail = &bytes[bytes.len().saturating_sub(first)..];
        match parse_pack_header(key, tail, size).unwrap() {
            PackHeaderRead::Complete(b) => b,
            PackHeaderRead::NeedMore { header_len } => {
                let tail = &bytes[bytes.len() - header_len as usize - 4..];
                match parse_pack_header(key, tail, size).unwrap() {
                    PackHeaderRead::Complete(b) => b,
                    other => panic!("second read still incomplete: {other:?}"),
                }
            }
        }
    }

    fn slice_of(bytes: &[u8], b: &IndexBlob) -> Vec<u8> {
        bytes[b.offset as usize..(b.offset + b.length) as usize].to_vec()
    }

    #[test]
    fn build_parse_and_open_mixed_pack() {
        let key = Key::random();
        let inputs = vec![
            (BlobType::Data, b"hello restic\n".to_vec(), None),
            (BlobType::Data, vec![7u8; 5000], Some(3)),
            (BlobType::Tree, b"{\"nodes\":[]}\n".to_vec(), Some(3)),
            (BlobType::Tree, b"{\"nodes\":[1]}\n".to_vec(), None),
            (BlobType::Data, Vec::new(), Some(3)),
        ];
        let pack = build(&key, &inputs);
        assert_eq!(pack.id, PackId(Id::hash(&pack.bytes)));
        assert_eq!(pack.blobs.len(), inputs.len());
        let parsed = read_header(&key, &pack.bytes, HEADER_READ_AHEAD);
        assert_eq!(parsed, pack.blobs);
        assert_eq!(parsed[1].uncompressed_length, Some(5000));
        assert!(parsed[1].length < 5000);
        assert_eq!(parsed[0].uncompressed_length, None);
        assert_eq!(
            parsed[4].uncompressed_length, None,
            "empty blob never compressed"
        );
        assert_eq!(parsed[0].offset, 0);
        for (b, (t, data, _)) in parsed.iter().zip(&inputs) {
            assert_eq!(b.blob_type, *t);
            assert_eq!(b.id, BlobId(Id::hash(data)));
            assert_eq!(
                open_blob(&key, &slice_of(&pack.bytes, b), b).unwrap(),
                *data
            );
        }
        let last = parsed.last().unwrap();
        let header_len = u32::from_le_bytes(pack.bytes[pack.bytes.len() - 4..].try_into().unwrap());
        assert_eq!(
            u64::from(last.offset + last.length) + u64::from(header_len) + 4,
            pack.bytes.len() as u64
        );
    }

    #[test]
    fn spec_vector_blob_opens() {
        // Spec §15.3 fixture: blob 0 of pack 1fa5b390… with the repository master key.
        let key = Key::from_json(
            br#"{"mac":{"k":"K1vGF5AWYf0gvQlj6XR96Q==","r":"gpEdD2SzuAf4kp0ElFacCQ=="},"encrypt":"p33Y0V1iBFi3jrPuUYo+D79ec9p6nq7SXbF5D7gR2Xk="}"#,
        )
        .unwrap();
        let pack = hex::decode("8ff2486227ae325ea641fc324861a95230c358d9b42438256fe1db7246406c4552666d8a50772e30337f463331fbc22cce89d45839ae3da980760574dd39517c9fc8e19e94475146d8e186c6b28caf3b82f3aa81cff2091bbaab0dab49b40f3f5e53c877f0830e0ff6a871800c6d31ac4cc893075d63c83a89972ea29579d29f49000000").unwrap();
        assert_eq!(
            Id::hash(&pack).to_hex(),
            "1fa5b39088b0804c9991e1ed5c69906198999644a51f830c4dc37b6d83a6d880"
        );
        let blobs = read_header(&key, &pack, HEADER_READ_AHEAD);
        assert_eq!(blobs.len(), 1);
        assert_eq!((blobs[0].offset, blobs[0].length), (0, 55));
        assert_eq!(blobs[0].uncompressed_length, Some(14));
        let plain = open_blob(&key, &slice_of(&pack, &blobs[0]), &blobs[0]).unwrap();
        assert_eq!(plain, b"stdin content\n");
    }

    #[test]
    fn large_header_needs_second_read() {
        let key = Key::random();
        let inputs: Vec<_> = (0..40u32)
            .map(|i| (BlobType::Data, i.to_le_bytes().to_vec(), Some(1)))
            .collect();
        let pack = build(&key, &inputs);
        let tail = &pack.bytes[pack.bytes.len() - HEADER_READ_AHEAD..];
        let PackHeaderRead::NeedMore { header_len } =
            parse_pack_header(&key, tail, pack.bytes.len() as u64).unwrap()
        else {
            panic!("651 bytes cannot hold 40 entries");
        };
        assert_eq!(header_len as usize, 40 * 41 + 32);
        assert_eq!(
            read_header(&key, &pack.bytes, HEADER_READ_AHEAD),
            pack.blobs
        );
    }

    #[test]
    fn corrupted_blob_byte_is_a_mac_error_naming_the_blob() {
        let key = Key::random();
        let pack = build(&key, &[(BlobType::Data, b"some data".to_vec(), Some(3))]);
        let b = &pack.blobs[0];
        let mut sealed = slice_of(&pack.bytes, b);
        sealed[20] ^= 1;
        let err = open_blob(&key, &sealed, b).unwrap_err();
        assert!(matches!(err, PackReadError::BlobMac { .. }), "{err}");
        assert!(err.is_corrupt());
        assert!(err.to_string().contains(&b.id.to_hex()), "{err}");
        assert!(err.to_string().contains("MAC"), "{err}");
    }

    #[test]
    fn open_blob_names_each_failed_check() {
        let key = Key::random();
        let pack = build(&key, &[(BlobType::Tree, b"tree bytes".to_vec(), None)]);
        let b = pack.blobs[0];
        let sealed = slice_of(&pack.bytes, &b);

        let short = open_blob(&key, &sealed[..10], &b).unwrap_err();
        assert!(matches!(short, PackReadError::BlobLength { .. }), "{short}");

        let mut wrong_id = b;
        wrong_id.id = BlobId(Id([9; 32]));
        let err = open_blob(&key, &sealed, &wrong_id).unwrap_err();
        assert!(matches!(err, PackReadError::BlobHash { .. }), "{err}");
        assert!(err.to_string().contains(&wrong_id.id.to_hex()));

        let mut claims_compressed = b;
        claims_compressed.uncompressed_length = Some(10);
        let err = open_blob(&key, &sealed, &claims_compressed).unwrap_err();
        assert!(matches!(err, PackReadError::BlobDecompress { .. }), "{err}");

        let other_key = Key::random();
        let err = open_blob(&other_key, &slice_of(&pack.bytes, &b), &b).unwrap_err();
        assert!(matches!(err, PackReadError::BlobMac { .. }));
    }

    #[test]
    fn truncated_and_bogus_packs_are_errors() {
        let key = Key::random();
        let pack = build(&key, &[(BlobType::Data, b"abc".to_vec(), None)]);
        let n = pack.bytes.len();
        // Header length larger than the file.
        let mut bogus = pack.bytes.clone();
        bogus[n - 4..].copy_from_slice(&(n as u32).to_le_bytes());
        assert!(parse_pack_header(&key, &bogus, n as u64).is_err());
        // Zero header length.
        bogus[n - 4..].copy_from_slice(&0u32.to_le_bytes());
        assert!(parse_pack_header(&key, &bogus, n as u64).is_err());
        // Pack cut short in front: header lists more blob bytes than precede it.
        let cut = &pack.bytes[2..];
        let err = parse_pack_header(&key, cut, cut.len() as u64).unwrap_err();
        assert!(
            matches!(err, PackReadError::BlobsExceedFile { .. }),
            "{err}"
        );
        // Pack cut short at the end: the header no longer verifies.
        let cut = &pack.bytes[..n - 1];
        assert!(parse_pack_header(&key, cut, cut.len() as u64).is_err());
        // Tail longer than the file, or too short to hold the length.
        let err = parse_pack_header(&key, &pack.bytes, 10).unwrap_err();
        assert!(!err.is_corrupt());
        assert!(parse_pack_header(&key, &[1, 2], 2).is_err());
        // Flipped header byte.
        let mut flipped = pack.bytes.clone();
        flipped[n - 10] ^= 0x80;
        let err = parse_pack_header(&key, &flipped, n as u64).unwrap_err();
        assert!(matches!(err, PackReadError::HeaderMac(_)), "{err}");
    }

    #[test]
    fn packer_size_rules() {
        let key = Key::random();
        let mut b = PackBuilder::with_capacity(1000);
        assert!(b.is_empty() && !b.header_full() && !b.should_finish(100));
        let blob = seal_blob(&key, BlobType::Data, &[1u8; 60], None).unwrap();
        assert_eq!(blob.sealed.len(), 60 + OVERHEAD);
        b.add(blob).unwrap();
        assert_eq!((b.count(), b.blob_bytes()), (1, 92));
        assert!(!b.should_finish(93));
        assert!(b.should_finish(92));
    }

    #[test]
    fn header_full_at_restic_limit() {
        let key = Key::random();
        let mut b = PackBuilder::new();
        let tiny = seal_blob(&key, BlobType::Data, b"x", Some(1)).unwrap();
        for _ in 0..MAX_ENTRIES_PER_PACK {
            b.entries.push(PackHeaderEntry {
                blob_type: BlobType::Data,
                length: 33,
                uncompressed_length: Some(1),
                id: tiny.id,
            });
        }
        assert!(b.header_full());
        assert!(b.should_finish(u64::MAX));
        assert!(!b.fits(&tiny));
        assert!(matches!(b.add(tiny), Err(PackWriteError::PackFull { .. })));
    }

    proptest! {
        #[test]
        fn parse_pack_header_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..800),
            extra in 0u64..1000,
        ) {
            let key = Key::random();
            let _ = parse_pack_header(&key, &bytes, bytes.len() as u64 + extra);
        }

        #[test]
        fn pack_roundtrip(
            blobs in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300), any::<bool>()),
                1..20,
            ),
        ) {
            let key = Key::random();
            let inputs: Vec<_> = blobs
                .into_iter()
                .map(|(tree, data, comp)| {
                    let t = if tree { BlobType::Tree } else { BlobType::Data };
                    (t, data, comp.then_some(3))
                })
                .collect();
            let pack = build(&key, &inputs);
            let parsed = read_header(&key, &pack.bytes, HEADER_READ_AHEAD);
            prop_assert_eq!(&parsed, &pack.blobs);
            let mut plain = Vec::new();
            for (b, (_, data, _)) in parsed.iter().zip(&inputs) {
                prop_assert_eq!(&open_blob(&key, &slice_of(&pack.bytes, b), b).unwrap(), data);
                let mut out = vec![0u8; data.len()];
                open_blob_in_place_to_slice(&key, &mut slice_of(&pack.bytes, b), b, &mut out)
                    .unwrap();
                prop_assert_eq!(&out, data);
                // A reused decompression buffer, whatever the previous blob's size and
                // compression.
                let mut sealed = slice_of(&pack.bytes, b);
                let in_place = open_blob_in_place(&key, &mut sealed, b, &mut plain).unwrap();
                prop_assert_eq!(in_place, data.as_slice());
            }
        }
    }

    #[test]
    fn opening_in_place_rejects_a_changed_byte_and_a_wrong_id() {
        let key = Key::random();
        let data = b"some blob content".repeat(20);
        let pack = build(
            &key,
            &[
                (BlobType::Data, data.clone(), Some(3)),
                (BlobType::Data, data.clone(), None),
            ],
        );
        let mut plain = Vec::new();
        for b in &pack.blobs {
            let mut out = vec![0u8; data.len()];
            let mut wrong = *b;
            wrong.id = BlobId(Id([1; 32]));
            assert!(matches!(
                open_blob_in_place_to_slice(&key, &mut slice_of(&pack.bytes, b), &wrong, &mut out),
                Err(PackReadError::BlobHash { .. })
            ));
            assert!(matches!(
                open_blob_in_place(&key, &mut slice_of(&pack.bytes, b), &wrong, &mut plain),
                Err(PackReadError::BlobHash { .. })
            ));
            let mut changed = slice_of(&pack.bytes, b);
            changed[20] ^= 1;
            let before = changed.clone();
            assert!(matches!(
                open_blob_in_place_to_slice(&key, &mut changed, b, &mut out),
                Err(PackReadError::BlobMac { .. })
            ));
            assert!(matches!(
                open_blob_in_place(&key, &mut changed, b, &mut plain),
                Err(PackReadError::BlobMac { .. })
            ));
            assert_eq!(changed, before, "a blob failing its MAC is left as it was");
        }
    }
}
