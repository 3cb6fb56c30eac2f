//! Query-string parameters, read like Go's `url.ParseQuery` (nsqd reads
//! every parameter from the query string; the first value of a key wins).

use super::response::HttpError;

/// The decoded `key=value` pairs of a query string, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses a raw query; malformed escapes or `;` separators (refused by
    /// Go since 1.17) answer 400 `INVALID_REQUEST`.
    pub fn parse(raw: Option<&str>) -> Result<Params, HttpError> {
        let invalid = || HttpError::bad_request("INVALID_REQUEST");
        let mut pairs = Vec::new();
        for part in raw.unwrap_or("").split('&') {
            if part.contains(';') {
                return Err(invalid());
            }
            if part.is_empty() {
                continue;
            }
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            let key = unescape(key).ok_or_else(invalid)?;
            let value = unescape(value).ok_or_else(invalid)?;
            pairs.push((key, value));
        }
        Ok(Params { pairs })
    }

    /// The first value of `key`, if the key is present at all.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Percent-decoding with `+` as a space; `None` for a bad escape. Bytes
/// that are not UTF-8 become U+FFFD, which no name rule accepts.
fn unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_value_wins_and_escapes_decode() {
        let params = Params::parse(Some("topic=a%2Eb&topic=c&x=1+2&flag")).unwrap();
        assert_eq!(params.get("topic"), Some("a.b"));
        assert_eq!(params.get("x"), Some("1 2"));
        assert_eq!(params.get("flag"), Some(""));
        assert_eq!(params.get("missing"), None);
    }

    #[test]
    fn malformed_queries_are_refused() {
        assert!(Params::parse(Some("topic=%zz")).is_err());
        assert!(Params::parse(Some("topic=%4")).is_err());
        assert!(Params::parse(Some("topic=%+1")).is_err());
        assert!(Params::parse(Some("a=1;b=2")).is_err());
        assert!(Params::parse(None).unwrap().get("topic").is_none());
    }
}
