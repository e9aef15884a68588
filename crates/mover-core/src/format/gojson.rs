//! Byte-exact reproductions of the Go encoders restic relies on: `encoding/json` string
//! escaping (go1.19, HTML-safe), `strconv.Quote`/`Unquote` for node names, and `[]byte` as
//! base64. Pure helpers: they append to a buffer and never fail; no I/O, no logging.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use unicode_general_category::get_general_category;

const LOWER_HEX: &[u8; 16] = b"0123456789abcdef";

/// Decodes one UTF-8 sequence at the start of `s` the way Go's `utf8.DecodeRune` does:
/// `None` means an invalid sequence, of which Go consumes exactly one byte.
fn decode_rune(s: &[u8]) -> Option<(char, usize)> {
    let first = *s.first()?;
    let width = match first {
        0x00..=0x7f => return Some((char::from(first), 1)),
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return None,
    };
    let seq = s.get(..width)?;
    // std's validator rejects overlong forms, surrogates and values above U+10FFFF,
    // exactly the sequences Go reports as RuneError of width 1.
    let text = std::str::from_utf8(seq).ok()?;
    text.chars().next().map(|c| (c, width))
}

/// Appends `s` as a JSON string literal (with quotes), escaped as Go 1.19's
/// `encoding/json` does with HTML escaping on.
pub fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    let mut i = 0;
    let mut start = 0;
    while i < s.len() {
        let b = s[i];
        if b < 0x80 {
            let safe = b >= 0x20 && !matches!(b, b'"' | b'\\' | b'<' | b'>' | b'&');
            if safe {
                i += 1;
                continue;
            }
            out.extend_from_slice(&s[start..i]);
            match b {
                b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                // go1.19 writes 0x08 and 0x0c as \u0008 and \u000c, not \b and \f.
                _ => {
                    out.extend_from_slice(b"\\u00");
                    out.push(LOWER_HEX[usize::from(b >> 4)]);
                    out.push(LOWER_HEX[usize::from(b & 0xf)]);
                }
            }
            i += 1;
            start = i;
            continue;
        }
        match decode_rune(&s[i..]) {
            None => {
                out.extend_from_slice(&s[start..i]);
                out.extend_from_slice(b"\\ufffd");
                i += 1;
                start = i;
            }
            Some((c @ ('\u{2028}' | '\u{2029}'), width)) => {
                out.extend_from_slice(&s[start..i]);
                out.extend_from_slice(b"\\u202");
                out.push(LOWER_HEX[(c as usize) & 0xf]);
                i += width;
                start = i;
            }
            Some((_, width)) => i += width,
        }
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

/// Appends `bytes` as a JSON string holding their standard, padded base64 (Go `[]byte`).
pub fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(STANDARD.encode(bytes).as_bytes());
    out.push(b'"');
}

/// Appends `value` compactly with Go's string escaping, as Go marshals a `json.RawMessage`.
/// Object keys come out in the map's order (sorted, like Go's map keys).
pub fn write_value(out: &mut Vec<u8>, value: &serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(out, s.as_bytes()),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, k.as_bytes());
                out.push(b':');
                write_value(out, v);
            }
            out.push(b'}');
        }
    }
}

/// Go's `strconv.IsPrint`: general categories L, M, N, P, S, plus U+0020.
fn is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    matches!(
        get_general_category(c).abbreviation().as_bytes().first(),
        Some(b'L' | b'M' | b'N' | b'P' | b'S')
    )
}

fn push_hex(out: &mut String, prefix: &str, value: u32, digits: u32) {
    out.push_str(prefix);
    for k in (0..digits).rev() {
        let nibble = (value >> (4 * k)) & 0xf;
        out.push(char::from(LOWER_HEX[nibble as usize]));
    }
}

/// Go `strconv.Quote(name)` without the surrounding quotes, as restic stores node names.
pub fn quote_name(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        let Some((c, width)) = decode_rune(&name[i..]) else {
            push_hex(&mut out, "\\x", u32::from(name[i]), 2);
            i += 1;
            continue;
        };
        i += width;
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if is_print(c) => out.push(c),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            c if c < ' ' || c == '\u{7f}' => push_hex(&mut out, "\\x", c as u32, 2),
            c if (c as u32) < 0x10000 => push_hex(&mut out, "\\u", c as u32, 4),
            c => push_hex(&mut out, "\\U", c as u32, 8),
        }
    }
    out
}

/// Inverse of [`quote_name`] with Go `strconv.Unquote` semantics for a double-quoted
/// string. When the text is not a valid quoted body, the raw bytes are returned unchanged
/// (rustic does the same), so a name written by a lenient encoder still reads back.
pub fn unquote_name(s: &str) -> Vec<u8> {
    unquote(s).unwrap_or_else(|| s.as_bytes().to_vec())
}

fn hex_value(b: u8) -> Option<u32> {
    char::from(b).to_digit(16)
}

fn unquote(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'"' || b == b'\n' {
            return None;
        }
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let esc = *bytes.get(i + 1)?;
        i += 2;
        match esc {
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'\\' => out.push(b'\\'),
            b'"' => out.push(b'"'),
            b'x' | b'u' | b'U' => {
                let n = match esc {
                    b'x' => 2,
                    b'u' => 4,
                    _ => 8,
                };
                let digits = bytes.get(i..i + n)?;
                let mut v: u32 = 0;
                for &d in digits {
                    v = (v << 4) | hex_value(d)?;
                }
                i += n;
                if esc == b'x' {
                    // Go: \xHH is one raw byte, whatever its value.
                    out.push(u8::try_from(v).ok()?);
                } else {
                    let c = char::from_u32(v)?;
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
            b'0'..=b'7' => {
                let digits = bytes.get(i - 1..i + 2)?;
                let mut v: u32 = 0;
                for &d in digits {
                    if !(b'0'..=b'7').contains(&d) {
                        return None;
                    }
                    v = (v << 3) | u32::from(d - b'0');
                }
                i += 2;
                out.push(u8::try_from(v).ok()?);
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json(s: &[u8]) -> String {
        let mut out = Vec::new();
        write_string(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_escapes_like_go_1_19() {
        assert_eq!(json(b"plain"), "\"plain\"");
        assert_eq!(json(b"a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(json(b"\n\r\t"), r#""\n\r\t""#);
        assert_eq!(json(b"\x08\x0c\x01\x1f"), r#""\u0008\u000c\u0001\u001f""#);
        assert_eq!(json(b"<>&"), r#""\u003c\u003e\u0026""#);
        assert_eq!(json("x\u{2028}y\u{2029}".as_bytes()), r#""x\u2028y\u2029""#);
        assert_eq!(json(b"\x7f"), "\"\x7f\"");
        assert_eq!(json("café😀\u{fffd}".as_bytes()), "\"café😀\u{fffd}\"");
        assert_eq!(json(b"a\xffb\xe2\x82"), r#""a\ufffdb\ufffd\ufffd""#);
        // Surrogates and overlong forms are invalid, one replacement per byte.
        assert_eq!(json(b"\xed\xa0\x80"), r#""\ufffd\ufffd\ufffd""#);
        assert_eq!(json(b"\xc0\xaf"), r#""\ufffd\ufffd""#);
    }

    #[test]
    fn linktarget_example_from_spec() {
        assert_eq!(
            json(b"\x01tgt<&>\xff"),
            r#""\u0001tgt\u003c\u0026\u003e\ufffd""#
        );
    }

    #[test]
    fn value_is_compact_and_go_escaped() {
        let v = serde_json::json!({"b": [1, true, null, -2.5], "a": "<x>", "c": {}});
        let mut out = Vec::new();
        write_value(&mut out, &v);
        assert_eq!(
            out,
            br#"{"a":"\u003cx\u003e","b":[1,true,null,-2.5],"c":{}}"#
        );
    }

    #[test]
    fn base64_is_standard_padded() {
        let mut out = Vec::new();
        write_base64(&mut out, b"value\x00\xff");
        assert_eq!(out, b"\"dmFsdWUA/w==\"");
    }

    #[test]
    fn quote_table_from_spec() {
        let rows: &[(&[u8], &str)] = &[
            (b"a\"quote", r#"a\"quote"#),
            (b"back\\slash", r"back\\slash"),
            (b"new\nline", r"new\nline"),
            (b"tab\tx", r"tab\tx"),
            (b"\x01ctl", r"\x01ctl"),
            (b"bell\x07", r"bell\a"),
            (b"del\x7f", r"del\x7f"),
            (b"bad\xff\xfename", r"bad\xff\xfename"),
            (b"lt<gt>amp&", "lt<gt>amp&"),
            ("café".as_bytes(), "café"),
            ("nbsp\u{a0}x".as_bytes(), r"nbsp\u00a0x"),
            ("ls\u{2028}x".as_bytes(), r"ls\u2028x"),
            ("bom\u{feff}x".as_bytes(), r"bom\ufeffx"),
            ("zw\u{200b}sp".as_bytes(), r"zw\u200bsp"),
            ("ctl80\u{85}".as_bytes(), r"ctl80\u0085"),
            (b"sq'x", "sq'x"),
            (b"\x08\x0c\x0b\r", r"\b\f\v\r"),
            ("e\u{301}\u{ff21}😀".as_bytes(), "e\u{301}\u{ff21}😀"),
            ("pua\u{f0000}".as_bytes(), r"pua\U000f0000"),
        ];
        for (raw, quoted) in rows {
            assert_eq!(quote_name(raw), *quoted, "raw {raw:?}");
            assert_eq!(unquote_name(quoted), *raw, "quoted {quoted:?}");
        }
    }

    #[test]
    fn unquote_accepts_go_forms_and_falls_back() {
        assert_eq!(unquote_name(r"\101\x41\u0041\U00000041"), b"AAAA");
        assert_eq!(unquote_name(r"\377"), b"\xff");
        assert_eq!(unquote_name("raw é"), "raw é".as_bytes());
        // Not valid Go quoted bodies: returned as they are.
        assert_eq!(unquote_name(r"bad\q"), br"bad\q");
        assert_eq!(unquote_name(r"trailing\"), br"trailing\");
        assert_eq!(unquote_name(r"\'"), br"\'");
        assert_eq!(unquote_name("a\"b"), b"a\"b");
        assert_eq!(unquote_name(r"\400"), br"\400");
        assert_eq!(unquote_name(r"\ud800"), br"\ud800");
    }

    proptest! {
        #[test]
        fn quote_roundtrip(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(unquote_name(&quote_name(&raw)), raw);
        }

        #[test]
        fn quote_roundtrip_unicode(s in any::<String>()) {
            prop_assert_eq!(unquote_name(&quote_name(s.as_bytes())), s.as_bytes());
        }

        #[test]
        fn json_string_is_valid_json(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut out = Vec::new();
            write_string(&mut out, &raw);
            let back: String = serde_json::from_slice(&out).unwrap();
            let mut expected = String::new();
            let mut i = 0;
            while i < raw.len() {
                match decode_rune(&raw[i..]) {
                    Some((c, width)) => {
                        expected.push(c);
                        i += width;
                    }
                    None => {
                        expected.push('\u{fffd}');
                        i += 1;
                    }
                }
            }
            prop_assert_eq!(back, expected);
        }
    }
}
