//! Go-style `%q` quoting of raw bytes, as nsqd uses for names in error texts.
//!
//! Mirrors `strconv.Quote`: printable characters are kept, `"` and `\` are escaped, the usual
//! short escapes (`\a \b \f \n \r \t \v`) are used, other bytes below 0x20 and 0x7f become
//! `\xNN`, invalid UTF-8 bytes become `\xNN`, and non-printable characters become `\uNNNN` or
//! `\UNNNNNNNN`. Go's Unicode printability table is approximated (controls, non-ASCII spaces,
//! common format characters and private-use characters count as non-printable).

/// Quote `bytes` the way Go's `fmt.Sprintf("%q", string(bytes))` does.
pub(crate) fn go_quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        chunk.valid().chars().for_each(|c| push_char(&mut out, c));
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out.push('"');
    out
}

fn push_char(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if c < ' ' || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", u32::from(c))),
        c if is_printable(c) => out.push(c),
        c if u32::from(c) < 0x10000 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
        c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
    }
}

fn is_printable(c: char) -> bool {
    if c.is_ascii() {
        return !c.is_ascii_control();
    }
    let code = u32::from(c);
    let format_char = matches!(code,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f
        | 0x202a..=0x202e | 0x2060..=0x206f | 0xfeff | 0xfff9..=0xfffb);
    let private_use = matches!(code, 0xe000..=0xf8ff | 0xf0000..=0x10ffff);
    !(c.is_control() || c.is_whitespace() || format_char || private_use)
}

#[cfg(test)]
mod tests {
    use super::go_quote;

    #[test]
    fn quotes_plain_text() {
        assert_eq!(go_quote(b"orders"), "\"orders\"");
        assert_eq!(go_quote(b""), "\"\"");
    }

    #[test]
    fn escapes_like_go() {
        assert_eq!(go_quote(b"a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote(b"\x07\x08\x0c\n\r\t\x0b"), r#""\a\b\f\n\r\t\v""#);
        assert_eq!(go_quote(b"\x00\x1f\x7f"), r#""\x00\x1f\x7f""#);
        assert_eq!(go_quote(b"\xff\xfe"), r#""\xff\xfe""#);
    }

    #[test]
    fn keeps_printable_unicode_and_escapes_the_rest() {
        assert_eq!(go_quote("caf\u{e9}".as_bytes()), "\"caf\u{e9}\"");
        assert_eq!(go_quote("\u{a0}\u{200b}".as_bytes()), r#""\u00a0\u200b""#);
        assert_eq!(go_quote("\u{f0000}".as_bytes()), r#""\U000f0000""#);
    }
}
