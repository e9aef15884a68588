//! Fuzzes `Tree::decode` (spec §9): never panics, and whatever decodes encodes to JSON
//! that decodes to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mover::format::tree::Tree;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = Tree::decode(data) {
        let json = tree.encode();
        let again = Tree::decode(&json).expect("encoded tree decodes");
        assert_eq!(again, tree);
        assert_eq!(again.encode(), json, "encoding is stable");
    }
});
