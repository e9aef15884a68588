//! Fuzzes `KeyFile::decode` (spec §4) on arbitrary bytes: never panics, and whatever decodes
//! encodes to JSON that decodes to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mover::format::key_file::KeyFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(key_file) = KeyFile::decode(data) {
        let json = key_file.encode();
        let again = KeyFile::decode(&json).expect("encoded key file decodes");
        assert_eq!(again, key_file);
        assert_eq!(again.encode(), json, "encoding is stable");
    }
});
