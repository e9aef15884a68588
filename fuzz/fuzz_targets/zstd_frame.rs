//! Fuzzes bounded zstd decompression (spec §6, §7.4) on arbitrary bytes: never panics, never
//! returns more than the limit, and `decompress_exact` returns exactly the length asked for.
//! The unpacked-file decoder (`decode_unpacked`) gets the same input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mover::compress::{decode_unpacked, decompress, decompress_exact};

/// Small enough that zstd bombs hit the limit quickly.
const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(out) = decompress(data, LIMIT) {
        assert!(out.len() <= LIMIT);
        if let Ok(exact) = decompress_exact(data, out.len()) {
            assert_eq!(exact, out);
        }
    }
    if let Some((&n, frame)) = data.split_first() {
        let want = usize::from(n) * 64;
        if let Ok(out) = decompress_exact(frame, want) {
            assert_eq!(out.len(), want);
        }
    }
    match decode_unpacked(data.to_vec(), LIMIT) {
        Ok(out) if data.first() == Some(&0x02) => assert!(out.len() <= LIMIT),
        Ok(out) => assert_eq!(out, data, "plain JSON passes through"),
        Err(_) => {}
    }
});
