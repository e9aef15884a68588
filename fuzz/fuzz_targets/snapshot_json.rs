//! Fuzzes `SnapshotFile::decode` (spec §10): never panics, and whatever decodes encodes to
//! JSON that decodes to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mover::format::snapshot::SnapshotFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = SnapshotFile::decode(data) {
        let json = snapshot.encode();
        let again = SnapshotFile::decode(&json).expect("encoded snapshot decodes");
        assert_eq!(again, snapshot);
        assert_eq!(again.encode(), json, "encoding is stable");
    }
});
