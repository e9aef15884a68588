//! Fuzzes pack-header decoding (spec §7): `decode_header` on arbitrary plaintext, and
//! `parse_pack_header` both on arbitrary pack tails and on tails whose header is sealed with
//! the fixed key (so the fuzzer gets past the MAC into the entry parser and the bounds
//! checks). Only checks invariants; never writes anything.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mover::crypto::Key;
use mover::format::pack::{HEADER_LENGTH_SIZE, decode_header, encode_header};
use mover::repo::packer::{PackHeaderRead, parse_pack_header};

fn fixed_key() -> Key {
    Key::from_parts([0x11; 32], [0x22; 16], [0x0f; 16]).expect("constant key parts are nonzero")
}

fuzz_target!(|data: &[u8]| {
    // Plain entry parser: whatever decodes must encode back to the same bytes, except that a
    // compressed entry with plain length 0 is read as uncompressed (restic's rule).
    if let Ok(entries) = decode_header(data) {
        let reencoded = encode_header(&entries);
        assert!(reencoded.len() <= data.len());
        assert_eq!(
            decode_header(&reencoded).expect("re-encoded header decodes"),
            entries
        );
    }

    let key = fixed_key();

    // Arbitrary tail of a pack of exactly that size and of a larger pack.
    let _ = parse_pack_header(&key, data, data.len() as u64);
    let _ = parse_pack_header(&key, data, data.len() as u64 + 4096);

    // A well-sealed header over fuzzer-chosen plaintext, preceded by `prefix` bytes of blobs.
    let Some((head, plain)) = data.split_first_chunk::<4>() else {
        return;
    };
    let prefix = u64::from(u32::from_le_bytes(*head) & 0x00ff_ffff);
    let sealed = key
        .seal_with_iv([0x5a; 16], plain)
        .expect("a nonzero IV always seals");
    let mut tail = sealed.clone();
    tail.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    let file_size = prefix + tail.len() as u64;
    match parse_pack_header(&key, &tail, file_size) {
        Ok(PackHeaderRead::Complete(blobs)) => {
            let mut offset = 0u64;
            for b in &blobs {
                assert_eq!(u64::from(b.offset), offset, "offsets follow lengths");
                offset += u64::from(b.length);
            }
            assert!(offset <= prefix, "blobs end within the pack");
            assert_eq!(
                decode_header(plain).map(|e| e.len()).ok(),
                Some(blobs.len())
            );
        }
        Ok(PackHeaderRead::NeedMore { .. }) => panic!("the whole header was given"),
        Err(_) => {}
    }

    // The same header with only part of it in the tail asks for more, never panics.
    if tail.len() > HEADER_LENGTH_SIZE + 1 {
        let short = &tail[1..];
        let _ = parse_pack_header(&key, short, file_size);
    }
});
