//! The auth server's 200 reply (the reference's §1.9), checked as nsqd
//! checks it and compiled once into an [`Authorization`]. Pure: bytes and
//! the time of the call in, an authorization or the reason it is refused
//! out.
//!
//! ```json
//! {"ttl": 3600, "identity": "alice", "identity_url": "https://…",
//!  "authorizations": [{"topic": "^orders$", "channels": [".*"],
//!                      "permissions": ["subscribe", "publish"]}]}
//! ```
//!
//! Valid only if `ttl > 0`, every permission is `subscribe` or `publish`,
//! and every `topic` and `channels` entry compiles as a regex (the `regex`
//! crate's syntax is RE2's, as Go's). Missing or `null` keys count as
//! empty, as Go's decoder leaves them. An empty `authorizations` list is a
//! valid reply that allows nothing (nsqd: `AUTH no authorizations found`).

use std::time::{Duration, Instant};

use regex::Regex;
use serde::Deserialize;

/// Largest reply body accepted from an auth server.
pub const MAX_REPLY_BYTES: usize = 1024 * 1024;
/// Longest TTL honoured (10 years); a larger one is capped, never overflows.
pub const MAX_TTL_S: u64 = 10 * 365 * 24 * 3600;

const SUBSCRIBE: &str = "subscribe";
const PUBLISH: &str = "publish";

/// Why an auth server's reply was refused (for the log only: the client
/// just gets `AUTH failed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply body of {0} bytes is over the {MAX_REPLY_BYTES}-byte limit")]
    TooBig(usize),
    #[error("reply is not the expected JSON: {0}")]
    Json(String),
    #[error("invalid TTL {0} (must be >0)")]
    Ttl(i64),
    #[error("unknown permission {0:?}")]
    Permission(String),
    #[error("unable to compile {what} {pattern:?}: {error}")]
    Regex {
        what: &'static str,
        pattern: String,
        error: String,
    },
}

#[derive(Debug, Deserialize)]
struct ReplyDoc {
    #[serde(default)]
    ttl: Option<i64>,
    #[serde(default)]
    identity: Option<String>,
    #[serde(default)]
    identity_url: Option<String>,
    #[serde(default)]
    authorizations: Option<Vec<GrantDoc>>,
}

#[derive(Debug, Deserialize)]
struct GrantDoc {
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    permissions: Option<Vec<String>>,
}

/// One entry of `authorizations`, its regexes compiled.
#[derive(Debug, Clone)]
struct Grant {
    topic: Regex,
    channels: Vec<Regex>,
    subscribe: bool,
    publish: bool,
}

impl Grant {
    fn compile(doc: GrantDoc) -> Result<Grant, ReplyError> {
        let mut grant = Grant {
            topic: compile("topic", doc.topic.unwrap_or_default())?,
            channels: Vec::new(),
            subscribe: false,
            publish: false,
        };
        for permission in doc.permissions.unwrap_or_default() {
            match permission.as_str() {
                SUBSCRIBE => grant.subscribe = true,
                PUBLISH => grant.publish = true,
                _ => return Err(ReplyError::Permission(permission)),
            }
        }
        for channel in doc.channels.unwrap_or_default() {
            grant.channels.push(compile("channel", channel)?);
        }
        Ok(grant)
    }

    /// nsqd's `Authorization.IsAllowed`: the permission the command needs
    /// (an empty channel means a publish), the topic regex and one channel
    /// regex matching anywhere in the name (unanchored).
    fn allows(&self, topic: &str, channel: &str) -> bool {
        let permitted = if channel.is_empty() {
            self.publish
        } else {
            self.subscribe
        };
        permitted
            && self.topic.is_match(topic)
            && self.channels.iter().any(|regex| regex.is_match(channel))
    }
}

fn compile(what: &'static str, pattern: String) -> Result<Regex, ReplyError> {
    Regex::new(&pattern).map_err(|error| ReplyError::Regex {
        what,
        error: error.to_string(),
        pattern,
    })
}

/// What the auth server granted one secret, until `expires_at`.
#[derive(Debug, Clone)]
pub struct Authorization {
    /// Who the secret belongs to, as the auth server names it (may be "").
    pub identity: String,
    /// A link about that identity (may be "").
    pub identity_url: String,
    ttl_s: u64,
    expires_at: Instant,
    grants: Vec<Grant>,
}

impl Authorization {
    /// Parses and checks a 200 reply's body received at `now`.
    pub fn parse(body: &[u8], now: Instant) -> Result<Authorization, ReplyError> {
        if body.len() > MAX_REPLY_BYTES {
            return Err(ReplyError::TooBig(body.len()));
        }
        // serde would also read a struct from an array; Go's decoder does not.
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(ReplyError::Json("not a JSON object".to_owned()));
        }
        let doc: ReplyDoc =
            serde_json::from_slice(body).map_err(|error| ReplyError::Json(error.to_string()))?;
        let grants = doc
            .authorizations
            .unwrap_or_default()
            .into_iter()
            .map(Grant::compile)
            .collect::<Result<Vec<Grant>, ReplyError>>()?;
        let ttl = doc.ttl.unwrap_or(0);
        let ttl_s = u64::try_from(ttl)
            .ok()
            .filter(|&ttl_s| ttl_s > 0)
            .ok_or(ReplyError::Ttl(ttl))?
            .min(MAX_TTL_S);
        let expires_at = now
            .checked_add(Duration::from_secs(ttl_s))
            .ok_or(ReplyError::Ttl(ttl))?;
        let authorization = Authorization {
            identity: doc.identity.unwrap_or_default(),
            identity_url: doc.identity_url.unwrap_or_default(),
            ttl_s,
            expires_at,
            grants,
        };
        assert!(authorization.ttl_s > 0 && authorization.ttl_s <= MAX_TTL_S);
        assert!(authorization.expires_at > now);
        Ok(authorization)
    }

    /// Whether any entry allows SUB on `topic`/`channel`, or publishing on
    /// `topic` when `channel` is "" (PUB, MPUB, DPUB, HTTP `/pub`).
    pub fn allows(&self, topic: &str, channel: &str) -> bool {
        self.grants.iter().any(|grant| grant.allows(topic, channel))
    }

    /// The number of `authorizations` entries (nsqd's `permission_count`);
    /// 0 means the secret may do nothing.
    pub fn permission_count(&self) -> usize {
        self.grants.len()
    }

    /// The TTL the auth server gave, in seconds (capped at [`MAX_TTL_S`]).
    pub fn ttl_s(&self) -> u64 {
        self.ttl_s
    }

    /// When the auth server must be asked again.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// nsqd's `IsExpired`: strictly after the expiry.
    pub fn is_expired(&self, now: Instant) -> bool {
        now > self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(json: &str) -> Result<Authorization, ReplyError> {
        Authorization::parse(json.as_bytes(), Instant::now())
    }

    fn grants(entries: &str) -> Authorization {
        parse(&format!(r#"{{"ttl":60,"authorizations":[{entries}]}}"#)).expect("valid reply")
    }

    #[test]
    fn parses_the_documented_reply() {
        let now = Instant::now();
        let body = br#"{"ttl": 3600, "identity": "alice", "identity_url": "https://id/alice",
            "authorizations": [{"topic": "^orders$", "channels": [".*"],
                                "permissions": ["subscribe", "publish"]}],
            "unknown": {"ignored": true}}"#;
        let authorization = Authorization::parse(body, now).unwrap();
        assert_eq!(authorization.identity, "alice");
        assert_eq!(authorization.identity_url, "https://id/alice");
        assert_eq!(authorization.permission_count(), 1);
        assert_eq!(authorization.ttl_s(), 3600);
        assert_eq!(authorization.expires_at(), now + Duration::from_secs(3600));
        assert!(authorization.allows("orders", "c"));
        assert!(authorization.allows("orders", ""));
        assert!(!authorization.allows("orders2", "c"));
    }

    #[test]
    fn missing_and_null_keys_are_empty() {
        let authorization =
            parse(r#"{"ttl":1,"identity":null,"authorizations":[{"topic":null}]}"#).unwrap();
        assert_eq!(authorization.identity, "");
        assert_eq!(authorization.identity_url, "");
        assert_eq!(authorization.permission_count(), 1);
        assert!(!authorization.allows("t", ""));
        assert!(!authorization.allows("t", "c"));
        let nothing = parse(r#"{"ttl":1}"#).unwrap();
        assert_eq!(nothing.permission_count(), 0);
        assert!(!nothing.allows("t", ""));
    }

    #[test]
    fn refuses_what_nsqd_refuses() {
        assert_eq!(
            parse(r#"{"authorizations":[]}"#).unwrap_err(),
            ReplyError::Ttl(0)
        );
        assert_eq!(parse(r#"{"ttl":0}"#).unwrap_err(), ReplyError::Ttl(0));
        assert_eq!(parse(r#"{"ttl":-5}"#).unwrap_err(), ReplyError::Ttl(-5));
        assert!(matches!(parse(r#"{"ttl":1.5}"#), Err(ReplyError::Json(_))));
        assert!(matches!(parse(r#"{"ttl":"60"}"#), Err(ReplyError::Json(_))));
        assert!(matches!(parse("[]"), Err(ReplyError::Json(_))));
        assert!(matches!(parse("[60]"), Err(ReplyError::Json(_))));
        assert!(matches!(parse("null"), Err(ReplyError::Json(_))));
        assert!(matches!(parse("<html>"), Err(ReplyError::Json(_))));
        assert!(matches!(parse(""), Err(ReplyError::Json(_))));
        let permission =
            r#"{"ttl":1,"authorizations":[{"topic":"t","permissions":["publish","admin"]}]}"#;
        assert_eq!(
            parse(permission).unwrap_err(),
            ReplyError::Permission("admin".to_owned())
        );
        let topic = r#"{"ttl":1,"authorizations":[{"topic":"(","channels":[]}]}"#;
        assert!(matches!(
            parse(topic),
            Err(ReplyError::Regex { what: "topic", .. })
        ));
        let channel = r#"{"ttl":1,"authorizations":[{"topic":"t","channels":[".*","[z-a]"]}]}"#;
        assert!(matches!(
            parse(channel),
            Err(ReplyError::Regex {
                what: "channel",
                ..
            })
        ));
    }

    #[test]
    fn bounds_the_body_size() {
        let mut body = br#"{"ttl":1,"identity":""#.to_vec();
        body.resize(MAX_REPLY_BYTES, b'a');
        body.extend_from_slice(br#""}"#);
        assert_eq!(
            Authorization::parse(&body, Instant::now()).unwrap_err(),
            ReplyError::TooBig(MAX_REPLY_BYTES + 2)
        );
    }

    #[test]
    fn huge_ttls_are_capped() {
        let authorization = parse(&format!(r#"{{"ttl":{}}}"#, i64::MAX)).unwrap();
        assert_eq!(authorization.ttl_s(), MAX_TTL_S);
    }

    #[test]
    fn expiry_is_strictly_after_the_ttl() {
        let now = Instant::now();
        let authorization = Authorization::parse(br#"{"ttl":2}"#, now).unwrap();
        assert!(!authorization.is_expired(now));
        assert!(!authorization.is_expired(now + Duration::from_secs(2)));
        assert!(authorization.is_expired(now + Duration::from_millis(2001)));
    }

    #[test]
    fn subscribe_and_publish_need_their_permission() {
        let subscriber = grants(r#"{"topic":".*","channels":[".*"],"permissions":["subscribe"]}"#);
        assert!(subscriber.allows("t", "c"));
        assert!(!subscriber.allows("t", ""));
        let publisher = grants(r#"{"topic":".*","channels":[".*"],"permissions":["publish"]}"#);
        assert!(publisher.allows("t", ""));
        assert!(!publisher.allows("t", "c"));
        let neither = grants(r#"{"topic":".*","channels":[".*"],"permissions":[]}"#);
        assert!(!neither.allows("t", ""));
        assert!(!neither.allows("t", "c"));
    }

    #[test]
    fn regexes_match_unanchored() {
        let authorization =
            grants(r#"{"topic":"foo","channels":["ch"],"permissions":["subscribe","publish"]}"#);
        assert!(authorization.allows("xfoox", "xchx"));
        assert!(!authorization.allows("fo", "ch"));
        assert!(!authorization.allows("foo", "c"));
        // Publishing matches the channel regexes against "": "ch" does not match it.
        assert!(!authorization.allows("foo", ""));
        let anchored = grants(r#"{"topic":"^foo$","channels":["^$"],"permissions":["publish"]}"#);
        assert!(anchored.allows("foo", ""));
        assert!(!anchored.allows("xfoo", ""));
    }

    #[test]
    fn an_empty_channel_list_denies_publishing() {
        let authorization = grants(r#"{"topic":".*","channels":[],"permissions":["publish"]}"#);
        assert!(!authorization.allows("t", ""));
    }

    #[test]
    fn any_entry_may_allow() {
        let authorization = grants(
            r#"{"topic":"^a$","channels":[".*"],"permissions":["publish"]},
               {"topic":"^b$","channels":["^c1$","^c2$"],"permissions":["subscribe"]}"#,
        );
        assert_eq!(authorization.permission_count(), 2);
        assert!(authorization.allows("a", ""));
        assert!(!authorization.allows("a", "c1"));
        assert!(authorization.allows("b", "c2"));
        assert!(!authorization.allows("b", ""));
        assert!(!authorization.allows("b", "c3"));
    }

    /// Regex-ish text: brackets, quantifiers and escapes often invalid.
    fn pattern() -> impl Strategy<Value = String> {
        proptest::string::string_regex(r#"[a-z.*+?()\[\]{}^$|\\0-9,-]{0,12}"#).unwrap()
    }

    fn grant_json() -> impl Strategy<Value = serde_json::Value> {
        let permission = prop_oneof![
            Just("subscribe".to_owned()),
            Just("publish".to_owned()),
            "[a-z]{0,8}"
        ];
        (
            pattern(),
            prop::collection::vec(pattern(), 0..4),
            prop::collection::vec(permission, 0..3),
        )
            .prop_map(|(topic, channels, permissions)| {
                serde_json::json!({"topic": topic, "channels": channels, "permissions": permissions})
            })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = Authorization::parse(&body, Instant::now());
        }

        #[test]
        fn arbitrary_replies_never_panic(
            ttl in any::<i64>(),
            entries in prop::collection::vec(grant_json(), 0..4),
            topic in "[a-z]{1,8}",
            channel in "[a-z]{0,8}",
        ) {
            let body = serde_json::json!({"ttl": ttl, "authorizations": entries});
            let now = Instant::now();
            if let Ok(authorization) = Authorization::parse(body.to_string().as_bytes(), now) {
                prop_assert!(ttl > 0);
                prop_assert_eq!(authorization.permission_count(), entries.len());
                prop_assert!(!authorization.is_expired(now));
                let _ = authorization.allows(&topic, &channel);
            }
        }
    }
}
