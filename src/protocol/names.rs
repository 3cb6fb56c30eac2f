//! Topic and channel name rules (identical for both, as in nsqd).
//!
//! A name is 1..=64 bytes long (suffix included) and matches `^[.a-zA-Z0-9_-]+(#ephemeral)?$`.

/// Suffix marking a memory-only topic or channel.
pub const EPHEMERAL_SUFFIX: &str = "#ephemeral";
/// Longest valid name, in bytes, suffix included.
pub const MAX_NAME_LENGTH_BYTES: usize = 64;

/// True if `name` is a valid topic name.
pub fn is_valid_topic_name(name: &str) -> bool {
    is_valid_name(name.as_bytes())
}

/// True if `name` is a valid channel name.
pub fn is_valid_channel_name(name: &str) -> bool {
    is_valid_name(name.as_bytes())
}

/// True if `name` carries the `#ephemeral` suffix.
pub fn is_ephemeral(name: &str) -> bool {
    name.ends_with(EPHEMERAL_SUFFIX)
}

/// The shared rule, on raw bytes (command parameters need not be UTF-8).
pub(crate) fn is_valid_name(name: &[u8]) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LENGTH_BYTES {
        return false;
    }
    let stem = name
        .strip_suffix(EPHEMERAL_SUFFIX.as_bytes())
        .unwrap_or(name);
    !stem.is_empty() && stem.iter().all(|&b| is_name_byte(b))
}

fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_allowed_characters() {
        assert!(is_valid_topic_name("a"));
        assert!(is_valid_topic_name("Orders.v2_test-1"));
        assert!(is_valid_channel_name("..."));
        assert!(is_valid_topic_name("t#ephemeral"));
        assert!(is_valid_channel_name(&"c".repeat(64)));
    }

    #[test]
    fn rejects_bad_names() {
        assert!(!is_valid_topic_name(""));
        assert!(!is_valid_topic_name("#ephemeral"));
        assert!(!is_valid_topic_name("a#ephemeral#ephemeral"));
        assert!(!is_valid_topic_name("a#b"));
        assert!(!is_valid_topic_name("a b"));
        assert!(!is_valid_topic_name("a\n"));
        assert!(!is_valid_topic_name("caf\u{e9}"));
        assert!(!is_valid_channel_name(&"c".repeat(65)));
    }

    #[test]
    fn length_includes_the_suffix() {
        let fits = format!("{}#ephemeral", "a".repeat(54));
        let too_long = format!("{}#ephemeral", "a".repeat(55));
        assert!(is_valid_topic_name(&fits));
        assert!(!is_valid_topic_name(&too_long));
    }

    #[test]
    fn ephemeral_is_a_suffix_check() {
        assert!(is_ephemeral("x#ephemeral"));
        assert!(!is_ephemeral("x"));
        assert!(!is_ephemeral("x#ephemeralz"));
    }
}
