//! Fuzzes `Location::parse` on arbitrary strings: never panics, and the parsed parts keep
//! their documented shape (S3/GCS/Azure prefixes without leading or trailing `/`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mover::storage::url::Location;

fuzz_target!(|s: &str| {
    let Ok(location) = Location::parse(s) else {
        return;
    };
    let _ = location.kind();
    let prefix = match &location {
        Location::Local(_) => return,
        Location::S3 { prefix, .. }
        | Location::Gcs { prefix, .. }
        | Location::Azure { prefix, .. } => prefix,
    };
    assert!(
        !prefix.starts_with('/') && !prefix.ends_with('/'),
        "prefix {prefix:?} of {s:?} has a leading or trailing slash"
    );
});
