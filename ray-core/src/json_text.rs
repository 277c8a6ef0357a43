//! JSON written by hand for the hot paths (every response of `/v1/infer`, every log line):
//! string literals escaped exactly as `serde_json` escapes them, and integers, appended to a
//! `String` without a formatter.
//!
//! A run of bytes that needs no escape is copied whole; the scan looks at eight bytes at a
//! time and only a word that holds a quote, a backslash or a control character is looked at
//! byte by byte.
//!
//! ```
//! let mut out = String::new();
//! ray_core::json_text::push_string(&mut out, "say \"hi\"\n");
//! assert_eq!(out, r#""say \"hi\"\n""#);
//! assert_eq!(out, serde_json::to_string("say \"hi\"\n").unwrap());
//! ```

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `word` is a quote, a backslash or below 0x20 (exact: a word that
/// answers `false` holds none of them).
#[inline]
fn needs_escape(word: u64) -> bool {
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS != 0;
    // Bytes below 0x20: `v - 0x20` borrows into the high bit only for them (bytes of 0x80
    // and above are excluded by `!v`).
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS != 0;
    below_space
        || has_zero(word ^ (ONES * u64::from(b'"')))
        || has_zero(word ^ (ONES * u64::from(b'\\')))
}

/// Appends `text` as a JSON string literal, quotes included, with the bytes `serde_json`
/// escapes escaped the same way (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, and `\u00XX` for
/// the other control characters); everything else, non-ASCII included, is copied as it is.
pub fn push_string(out: &mut String, text: &str) {
    out.reserve(text.len() + 2);
    out.push('"');
    push_escaped(out, text);
    out.push('"');
}

/// Appends `text` escaped as inside a JSON string literal (what [`push_string`] writes
/// between the quotes).
pub fn push_escaped(out: &mut String, text: &str) {
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut at = 0;
    while at < bytes.len() {
        // Eight bytes at a time; the tail padded with a letter, so a short string is one word.
        // (Fixed-size loads and shifts: a copy of a variable length would be a call.)
        let (word, step) = match bytes.get(at..at + 8) {
            Some(chunk) => {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                (u64::from_le_bytes(word), 8)
            }
            None => {
                let mut word = ONES * u64::from(b'a');
                for (index, &byte) in bytes[at..].iter().enumerate() {
                    let shift = 8 * index;
                    word = (word & !(0xff << shift)) | (u64::from(byte) << shift);
                }
                (word, bytes.len() - at)
            }
        };
        if !needs_escape(word) {
            at += step;
            continue;
        }
        let byte = bytes[at];
        let escape: &str = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..0x20 => "",
            _ => {
                at += 1;
                continue;
            }
        };
        // Only ASCII bytes are escaped, so `at` is a char boundary here.
        out.push_str(&text[start..at]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(escape);
        }
        at += 1;
        start = at;
    }
    out.push_str(&text[start..]);
}

/// Appends `name` as an object key with its colon (`"name":`), escaped as
/// [`push_string`] escapes.
pub fn push_key(out: &mut String, name: &str) {
    out.reserve(name.len() + 3);
    out.push('"');
    push_escaped(out, name);
    out.push_str("\":");
}

/// Appends `value` in decimal.
pub fn push_u64(out: &mut String, mut value: u64) {
    // Most values here are small: written digit by digit without a buffer.
    if value < 1000 {
        if value >= 100 {
            out.push(char::from(b'0' + (value / 100) as u8));
        }
        if value >= 10 {
            out.push(char::from(b'0' + (value / 10 % 10) as u8));
        }
        out.push(char::from(b'0' + (value % 10) as u8));
        return;
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    // Always ASCII digits.
    if let Ok(text) = std::str::from_utf8(&digits[at..]) {
        out.push_str(text);
    }
}

/// Appends `value` in decimal, with a `-` when negative.
pub fn push_i64(out: &mut String, value: i64) {
    if value < 0 {
        out.push('-');
    }
    push_u64(out, value.unsigned_abs());
}

/// Appends `true` or `false`.
pub fn push_bool(out: &mut String, value: bool) {
    out.push_str(if value { "true" } else { "false" });
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any text is written as serde_json writes it.
        #[test]
        fn strings_are_escaped_as_serde_json_escapes_them(text in "\\PC{0,40}|[\\x00-\\x7f]{0,40}|[a-z\"\\\\\\x00-\\x1f\u{7f}é€]{0,40}") {
            let mut out = String::new();
            push_string(&mut out, &text);
            proptest::prop_assert_eq!(out, serde_json::to_string(&text).unwrap());
        }

        /// Integers are written as serde_json writes them.
        #[test]
        fn integers_are_written_as_serde_json_writes_them(value in proptest::num::i64::ANY, unsigned in proptest::num::u64::ANY) {
            let mut out = String::new();
            push_i64(&mut out, value);
            out.push(' ');
            push_u64(&mut out, unsigned);
            proptest::prop_assert_eq!(out, format!("{value} {unsigned}"));
        }
    }

    #[test]
    fn small_integers_are_written_as_display_writes_them() {
        for value in (0..=2_000).chain([9_999, 10_000, u64::MAX]) {
            let mut out = String::new();
            push_u64(&mut out, value);
            assert_eq!(out, value.to_string());
        }
    }

    #[test]
    fn keys_are_written_as_serde_json_writes_them() {
        for name in ["request_id", "a.b-c", "say \"hi\"", "tab\there", "é"] {
            let mut out = String::new();
            push_key(&mut out, name);
            assert_eq!(out, format!("{}:", serde_json::to_string(name).unwrap()));
        }
    }

    #[test]
    fn every_byte_value_next_to_plain_text() {
        // Every ASCII byte at every place of strings of up to 20 bytes (inside a word of
        // eight, in the padded tail, alone).
        for byte in 0u8..0x80 {
            for len in 1..=20 {
                for at in 0..len {
                    let mut text = "x".repeat(len);
                    text.replace_range(at..=at, char::from(byte).encode_utf8(&mut [0; 4]));
                    let mut out = String::new();
                    push_string(&mut out, &text);
                    assert_eq!(out, serde_json::to_string(&text).unwrap(), "byte {byte:#x}");
                }
            }
        }
    }
}
