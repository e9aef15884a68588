//! Fuzzes `ConfigFile::decode` (spec §5) on arbitrary plaintext: never panics, and whatever
//! decodes encodes to JSON that decodes to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mover::format::config_file::ConfigFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = ConfigFile::decode(data) {
        let json = config.encode();
        let again = ConfigFile::decode(&json).expect("encoded config decodes");
        assert_eq!(again, config);
        assert_eq!(again.encode(), json, "encoding is stable");
    }
});
