//! Fuzzes `Key::open` / `Key::open_in_place` (spec §3) on arbitrary bytes with a fixed key:
//! they must never panic, must agree, and must leave the buffer untouched on error. Also
//! checks that sealing the input opens back to it and that any one flipped bit is rejected.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mover::crypto::Key;

fn fixed_key() -> Key {
    Key::from_parts([0x11; 32], [0x22; 16], [0x0f; 16]).expect("constant key parts are nonzero")
}

fuzz_target!(|data: &[u8]| {
    let key = fixed_key();

    let opened = key.open(data);
    let mut buf = data.to_vec();
    match key.open_in_place(&mut buf) {
        Ok(()) => assert_eq!(opened.as_deref().ok(), Some(buf.as_slice())),
        Err(e) => {
            assert_eq!(opened.err(), Some(e));
            assert_eq!(
                buf, data,
                "open_in_place left the buffer unchanged on error"
            );
        }
    }

    let sealed = key
        .seal_with_iv([0xa5; 16], data)
        .expect("a nonzero IV always seals");
    assert_eq!(sealed.len(), data.len() + 32);
    assert_eq!(key.open(&sealed).expect("own seal opens"), data);

    // Flip one bit chosen by the input; MAC verification must catch it.
    let bit = data
        .iter()
        .fold(0usize, |a, &b| a.wrapping_mul(31).wrapping_add(b as usize));
    let pos = bit % (sealed.len() * 8);
    let mut corrupt = sealed;
    corrupt[pos / 8] ^= 1 << (pos % 8);
    assert!(
        key.open(&corrupt).is_err(),
        "flipped bit {pos} was accepted"
    );
});
