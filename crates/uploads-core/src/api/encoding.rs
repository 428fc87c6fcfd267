//! Percent-encoding of path segments and query components, both ways.
//!
//! Encoding keeps only RFC 3986's unreserved characters minus `.` (`A-Z a-z 0-9 - _ ~`) and
//! writes every other byte as `%XX`. Encoding the dot too means an id of `.` or `..` cannot
//! be collapsed by a path normalizer into a different route, and an id holding `/`, `?`, `#`
//! or `&` stays one path segment or one query value.

use std::fmt::Write as _;

/// Whether a byte is written as itself by [`encode_component`].
fn is_kept(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'~')
}

/// Percent-encodes a path segment or query component (upper-case hex, UTF-8 bytes).
pub(super) fn encode_component(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for &byte in value.as_bytes() {
        if is_kept(byte) {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// Decodes a percent-encoded query component as browsers send it: `%XX` is a byte, `+` is a
/// space, a `%` not followed by two hex digits stays as it is, and bytes that are not UTF-8
/// become U+FFFD. Never fails, so a hostile query cannot make a server error out here.
pub(super) fn decode_query_component(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        let escaped = if byte == b'%' {
            bytes
                .get(index + 1..index + 3)
                .and_then(|pair| Some(hex_value(pair[0])? << 4 | hex_value(pair[1])?))
        } else {
            None
        };
        if let Some(value) = escaped {
            decoded.push(value);
            index += 3;
        } else {
            decoded.push(if byte == b'+' { b' ' } else { byte });
            index += 1;
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_keep_their_shape_and_separators_are_escaped() {
        assert_eq!(encode_component("upload_abc-123~"), "upload_abc-123~");
        assert_eq!(encode_component("a/b?c#d&e=f"), "a%2Fb%3Fc%23d%26e%3Df");
        assert_eq!(encode_component(".."), "%2E%2E");
        assert_eq!(encode_component("a b+é"), "a%20b%2B%C3%A9");
    }

    #[test]
    fn decoding_follows_form_rules_and_tolerates_junk() {
        assert_eq!(decode_query_component("fine%2Dtune"), "fine-tune");
        assert_eq!(decode_query_component("a+b%20c"), "a b c");
        assert_eq!(decode_query_component("100%"), "100%");
        assert_eq!(decode_query_component("%zz%4"), "%zz%4");
        assert_eq!(decode_query_component("%C3%A9"), "é");
        assert_eq!(decode_query_component("%FF"), "\u{FFFD}");
    }

    proptest! {
        #[test]
        fn encoding_then_decoding_gives_back_the_value(value in any::<String>()) {
            let encoded = encode_component(&value);
            prop_assert!(encoded.bytes().all(|b| is_kept(b) || b == b'%' || b.is_ascii_hexdigit()));
            prop_assert_eq!(decode_query_component(&encoded), value);
        }

        #[test]
        fn decoding_never_panics(value in any::<String>()) {
            let _ = decode_query_component(&value);
        }
    }
}
