//! Fuzzes `IndexFile::decode` (spec §8): never panics, and whatever decodes encodes to JSON
//! that decodes to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mover::format::index::IndexFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = IndexFile::decode(data) {
        let json = index.encode();
        let again = IndexFile::decode(&json).expect("encoded index decodes");
        assert_eq!(again, index);
        assert_eq!(again.encode(), json, "encoding is stable");
    }
});
