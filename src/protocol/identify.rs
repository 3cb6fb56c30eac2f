//! IDENTIFY: decoding the JSON request, applying nsqd's negotiation rules, and the JSON reply.
//!
//! Every rule violation is a fatal `E_BAD_BODY IDENTIFY <reason>` with nsqd's reason text,
//! checked in nsqd's order: heartbeat interval, output buffer timeout, output buffer size,
//! sample rate, msg timeout. JSON keys are matched exactly (Go would also accept other letter
//! cases); unknown keys and `null` values are ignored; duplicate keys keep the last value.

use serde::{Deserialize, Serialize};

use super::error::{ProtocolError, E_IDENTIFY_FAILED};

/// The IDENTIFY JSON body; every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct IdentifyRequest {
    pub client_id: Option<String>,
    pub hostname: Option<String>,
    pub user_agent: Option<String>,
    pub feature_negotiation: Option<bool>,
    pub heartbeat_interval: Option<i64>,
    pub output_buffer_size: Option<i64>,
    pub output_buffer_timeout: Option<i64>,
    pub tls_v1: Option<bool>,
    pub snappy: Option<bool>,
    pub deflate: Option<bool>,
    pub deflate_level: Option<i64>,
    pub sample_rate: Option<i32>,
    pub msg_timeout: Option<i64>,
}

/// Server limits and defaults used by the negotiation (nsqd defaults via `Default`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentifyLimits {
    pub max_heartbeat_interval_ms: i64,
    pub max_output_buffer_size_bytes: i64,
    pub min_output_buffer_timeout_ms: i64,
    pub max_output_buffer_timeout_ms: i64,
    pub max_msg_timeout_ms: i64,
    pub default_msg_timeout_ms: i64,
    pub default_heartbeat_interval_ms: i64,
    pub default_output_buffer_size_bytes: i64,
    pub default_output_buffer_timeout_ms: i64,
}

impl Default for IdentifyLimits {
    fn default() -> Self {
        Self {
            max_heartbeat_interval_ms: 60_000,
            max_output_buffer_size_bytes: 65_536,
            min_output_buffer_timeout_ms: 25,
            max_output_buffer_timeout_ms: 30_000,
            max_msg_timeout_ms: 900_000,
            default_msg_timeout_ms: 60_000,
            default_heartbeat_interval_ms: 30_000,
            default_output_buffer_size_bytes: 16_384,
            default_output_buffer_timeout_ms: 250,
        }
    }
}

/// What the server offers, as reported in the IDENTIFY reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFeatures {
    pub version: String,
    pub max_rdy_count: u64,
    pub max_msg_timeout_ms: u64,
    pub max_deflate_level: i64,
    pub tls_v1_available: bool,
    pub deflate_available: bool,
    pub snappy_available: bool,
    pub auth_required: bool,
}

impl ServerFeatures {
    /// nsqd's defaults for `version`, with no TLS, compression or auth offered
    /// (the connection settings turn on what the flags allow).
    pub fn new(version: impl Into<String>) -> Self {
        Self {
            version: version.into(),
            max_rdy_count: 2500,
            max_msg_timeout_ms: 900_000,
            max_deflate_level: 6,
            tls_v1_available: false,
            deflate_available: false,
            snappy_available: false,
            auth_required: false,
        }
    }
}

/// The upgrades both sides agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgrades {
    pub tls_v1: bool,
    pub deflate: bool,
    pub deflate_level: i64,
    pub snappy: bool,
}

/// The per-connection settings after IDENTIFY (or before it, see [`Negotiated::initial`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub client_id: String,
    pub hostname: String,
    pub user_agent: String,
    /// True → reply with JSON; false → reply `OK` and perform no upgrade.
    pub feature_negotiation: bool,
    /// `None` = heartbeats disabled (client sent -1; SUB is then refused).
    pub heartbeat_interval_ms: Option<u64>,
    /// 1 when the client asked for no buffering (-1).
    pub output_buffer_size_bytes: u64,
    /// 0 = no timed flush.
    pub output_buffer_timeout_ms: u64,
    /// 0 = sampling off; else 1..=99 percent.
    pub sample_rate: u32,
    pub msg_timeout_ms: u64,
    /// Requested upgrades (granted only if the server offers them, see [`Negotiated::upgrades`]).
    pub tls_v1: bool,
    pub snappy: bool,
    pub deflate: bool,
    pub deflate_level: i64,
}

impl Negotiated {
    /// Settings of a connection that has not identified: names are the remote IP.
    pub fn initial(remote_ip: &str, limits: &IdentifyLimits) -> Self {
        Self {
            client_id: remote_ip.to_owned(),
            hostname: remote_ip.to_owned(),
            user_agent: String::new(),
            feature_negotiation: false,
            heartbeat_interval_ms: Some(ms(limits.default_heartbeat_interval_ms)),
            output_buffer_size_bytes: ms(limits.default_output_buffer_size_bytes),
            output_buffer_timeout_ms: ms(limits.default_output_buffer_timeout_ms),
            sample_rate: 0,
            msg_timeout_ms: ms(limits.default_msg_timeout_ms),
            tls_v1: false,
            snappy: false,
            deflate: false,
            deflate_level: 0,
        }
    }

    /// The upgrades to perform; both compressions at once is `E_IDENTIFY_FAILED`.
    pub fn upgrades(&self, server: &ServerFeatures) -> Result<Upgrades, ProtocolError> {
        let upgrades = self.offered_upgrades(server);
        if upgrades.deflate && upgrades.snappy {
            let text = "cannot enable both deflate and snappy compression";
            return Err(ProtocolError::fatal(E_IDENTIFY_FAILED, text));
        }
        Ok(upgrades)
    }

    /// The JSON reply (when `feature_negotiation` is true), keys in nsqd's order.
    pub fn response_json(&self, server: &ServerFeatures) -> String {
        let upgrades = self.offered_upgrades(server);
        let reply = IdentifyReply {
            max_rdy_count: server.max_rdy_count,
            version: &server.version,
            max_msg_timeout: server.max_msg_timeout_ms,
            msg_timeout: self.msg_timeout_ms,
            tls_v1: upgrades.tls_v1,
            deflate: upgrades.deflate,
            deflate_level: upgrades.deflate_level,
            max_deflate_level: server.max_deflate_level,
            snappy: upgrades.snappy,
            sample_rate: self.sample_rate,
            auth_required: server.auth_required,
            output_buffer_size: self.output_buffer_size_bytes,
            output_buffer_timeout: self.output_buffer_timeout_ms,
        };
        let json = serde_json::to_string(&reply).unwrap_or_else(|_| String::from("{}"));
        go_html_escape(&json)
    }

    fn offered_upgrades(&self, server: &ServerFeatures) -> Upgrades {
        let deflate = server.deflate_available && self.deflate;
        let wanted_level = if deflate && self.deflate_level > 0 {
            self.deflate_level
        } else {
            6
        };
        Upgrades {
            tls_v1: server.tls_v1_available && self.tls_v1,
            deflate,
            deflate_level: wanted_level.min(server.max_deflate_level),
            snappy: server.snappy_available && self.snappy,
        }
    }
}

#[derive(Serialize)]
struct IdentifyReply<'a> {
    max_rdy_count: u64,
    version: &'a str,
    max_msg_timeout: u64,
    msg_timeout: u64,
    tls_v1: bool,
    deflate: bool,
    deflate_level: i64,
    max_deflate_level: i64,
    snappy: bool,
    sample_rate: u32,
    auth_required: bool,
    output_buffer_size: u64,
    output_buffer_timeout: u64,
}

/// Decode an IDENTIFY body and apply every negotiation rule.
pub fn negotiate(body: &[u8], limits: &IdentifyLimits) -> Result<Negotiated, ProtocolError> {
    let request = decode_request(body)?;
    let heartbeat_interval_ms = heartbeat_interval_ms(request.heartbeat_interval, limits)?;
    let (output_buffer_size_bytes, output_buffer_timeout_ms) = output_buffer(
        request.output_buffer_size,
        request.output_buffer_timeout,
        limits,
    )?;
    let sample_rate = sample_rate(request.sample_rate)?;
    let msg_timeout_ms = msg_timeout_ms(request.msg_timeout, limits)?;
    Ok(Negotiated {
        client_id: request.client_id.unwrap_or_default(),
        hostname: request.hostname.unwrap_or_default(),
        user_agent: request.user_agent.unwrap_or_default(),
        feature_negotiation: request.feature_negotiation.unwrap_or(false),
        heartbeat_interval_ms,
        output_buffer_size_bytes,
        output_buffer_timeout_ms,
        sample_rate,
        msg_timeout_ms,
        tls_v1: request.tls_v1.unwrap_or(false),
        snappy: request.snappy.unwrap_or(false),
        deflate: request.deflate.unwrap_or(false),
        deflate_level: request.deflate_level.unwrap_or(0),
    })
}

/// Parse the body as a JSON object (or `null`, which Go accepts as "nothing set").
pub fn decode_request(body: &[u8]) -> Result<IdentifyRequest, ProtocolError> {
    let decode_error = || ProtocolError::bad_body("IDENTIFY failed to decode JSON body");
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| decode_error())?;
    match value {
        serde_json::Value::Null => Ok(IdentifyRequest::default()),
        serde_json::Value::Object(_) => serde_json::from_value(value).map_err(|_| decode_error()),
        _ => Err(decode_error()),
    }
}

fn rule_error(reason: String) -> ProtocolError {
    ProtocolError::bad_body(format!("IDENTIFY {reason}"))
}

/// A configured non-negative millisecond/byte value as u64 (negative config reads as its size).
fn ms(value: i64) -> u64 {
    value.unsigned_abs()
}

fn heartbeat_interval_ms(
    requested: Option<i64>,
    limits: &IdentifyLimits,
) -> Result<Option<u64>, ProtocolError> {
    match requested.unwrap_or(0) {
        -1 => Ok(None),
        0 => Ok(Some(ms(limits.default_heartbeat_interval_ms))),
        v if (1000..=limits.max_heartbeat_interval_ms).contains(&v) => Ok(Some(ms(v))),
        v => Err(rule_error(format!("heartbeat interval ({v}) is invalid"))),
    }
}

/// Timeout is checked before size (as nsqd); size -1 forces the timeout to 0.
fn output_buffer(
    size: Option<i64>,
    timeout: Option<i64>,
    limits: &IdentifyLimits,
) -> Result<(u64, u64), ProtocolError> {
    let timeout_range = limits.min_output_buffer_timeout_ms..=limits.max_output_buffer_timeout_ms;
    let timeout_ms = match timeout.unwrap_or(0) {
        -1 => 0,
        0 => ms(limits.default_output_buffer_timeout_ms),
        v if timeout_range.contains(&v) => ms(v),
        v => {
            return Err(rule_error(format!(
                "output buffer timeout ({v}) is invalid"
            )))
        }
    };
    match size.unwrap_or(0) {
        -1 => Ok((1, 0)),
        0 => Ok((ms(limits.default_output_buffer_size_bytes), timeout_ms)),
        v if (64..=limits.max_output_buffer_size_bytes).contains(&v) => Ok((ms(v), timeout_ms)),
        v => Err(rule_error(format!("output buffer size ({v}) is invalid"))),
    }
}

fn sample_rate(requested: Option<i32>) -> Result<u32, ProtocolError> {
    let rate = requested.unwrap_or(0);
    u32::try_from(rate)
        .ok()
        .filter(|&rate| rate <= 99)
        .ok_or_else(|| rule_error(format!("sample rate ({rate}) is invalid")))
}

fn msg_timeout_ms(requested: Option<i64>, limits: &IdentifyLimits) -> Result<u64, ProtocolError> {
    match requested.unwrap_or(0) {
        0 => Ok(ms(limits.default_msg_timeout_ms)),
        v if (1000..=limits.max_msg_timeout_ms).contains(&v) => Ok(ms(v)),
        v => Err(rule_error(format!("msg timeout ({v}) is invalid"))),
    }
}

/// Go's `json.Marshal` escapes `<`, `>`, `&`, U+2028 and U+2029; mirror it.
fn go_html_escape(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negotiated(json: &str) -> Negotiated {
        negotiate(json.as_bytes(), &IdentifyLimits::default()).expect("valid IDENTIFY")
    }

    fn failure(json: &str) -> String {
        match negotiate(json.as_bytes(), &IdentifyLimits::default()) {
            Ok(n) => format!("unexpectedly accepted: {n:?}"),
            Err(err) => err.frame_body(),
        }
    }

    #[test]
    fn empty_object_gives_defaults() {
        let n = negotiated("{}");
        assert_eq!(n.client_id, "");
        assert_eq!(n.hostname, "");
        assert!(!n.feature_negotiation);
        assert_eq!(n.heartbeat_interval_ms, Some(30_000));
        assert_eq!(n.output_buffer_size_bytes, 16_384);
        assert_eq!(n.output_buffer_timeout_ms, 250);
        assert_eq!(n.sample_rate, 0);
        assert_eq!(n.msg_timeout_ms, 60_000);
    }

    #[test]
    fn initial_uses_the_remote_ip() {
        let n = Negotiated::initial("10.0.0.5", &IdentifyLimits::default());
        assert_eq!(
            (n.client_id.as_str(), n.hostname.as_str()),
            ("10.0.0.5", "10.0.0.5")
        );
        assert_eq!(n.heartbeat_interval_ms, Some(30_000));
    }

    #[test]
    fn reads_go_nsq_style_body() {
        let body = r#"{"client_id":"c1","hostname":"h","feature_negotiation":true,
            "heartbeat_interval":1000,"output_buffer_size":64,"output_buffer_timeout":25,
            "tls_v1":false,"snappy":false,"deflate":false,"deflate_level":6,"sample_rate":99,
            "user_agent":"go-nsq/1.1.0","msg_timeout":900000,"short_id":"c1","long_id":"h",
            "extra":{"nested":[1,2]},"topology_zone":null}"#;
        let n = negotiated(body);
        assert_eq!(n.client_id, "c1");
        assert_eq!(n.user_agent, "go-nsq/1.1.0");
        assert!(n.feature_negotiation);
        assert_eq!(n.heartbeat_interval_ms, Some(1000));
        assert_eq!(n.output_buffer_size_bytes, 64);
        assert_eq!(n.output_buffer_timeout_ms, 25);
        assert_eq!(n.sample_rate, 99);
        assert_eq!(n.msg_timeout_ms, 900_000);
    }

    #[test]
    fn disabling_values() {
        let n = negotiated(r#"{"heartbeat_interval":-1,"output_buffer_timeout":-1}"#);
        assert_eq!(n.heartbeat_interval_ms, None);
        assert_eq!(n.output_buffer_timeout_ms, 0);
        let n = negotiated(r#"{"output_buffer_size":-1,"output_buffer_timeout":100}"#);
        assert_eq!(
            (n.output_buffer_size_bytes, n.output_buffer_timeout_ms),
            (1, 0)
        );
    }

    #[test]
    fn rule_violations_have_nsqd_texts() {
        let cases = [
            (
                r#"{"heartbeat_interval":999}"#,
                "heartbeat interval (999) is invalid",
            ),
            (
                r#"{"heartbeat_interval":60001}"#,
                "heartbeat interval (60001) is invalid",
            ),
            (
                r#"{"heartbeat_interval":-2}"#,
                "heartbeat interval (-2) is invalid",
            ),
            (
                r#"{"output_buffer_timeout":24}"#,
                "output buffer timeout (24) is invalid",
            ),
            (
                r#"{"output_buffer_timeout":30001}"#,
                "output buffer timeout (30001) is invalid",
            ),
            (
                r#"{"output_buffer_size":63}"#,
                "output buffer size (63) is invalid",
            ),
            (
                r#"{"output_buffer_size":65537}"#,
                "output buffer size (65537) is invalid",
            ),
            (r#"{"sample_rate":100}"#, "sample rate (100) is invalid"),
            (r#"{"sample_rate":-1}"#, "sample rate (-1) is invalid"),
            (r#"{"msg_timeout":999}"#, "msg timeout (999) is invalid"),
            (
                r#"{"msg_timeout":900001}"#,
                "msg timeout (900001) is invalid",
            ),
            (r#"{"msg_timeout":-1}"#, "msg timeout (-1) is invalid"),
        ];
        for (body, reason) in cases {
            assert_eq!(failure(body), format!("E_BAD_BODY IDENTIFY {reason}"));
        }
    }

    #[test]
    fn rules_are_checked_in_nsqd_order() {
        let all_bad = r#"{"msg_timeout":1,"sample_rate":100,"output_buffer_size":1,
            "output_buffer_timeout":1,"heartbeat_interval":1}"#;
        assert_eq!(
            failure(all_bad),
            "E_BAD_BODY IDENTIFY heartbeat interval (1) is invalid"
        );
        let no_heartbeat = r#"{"msg_timeout":1,"sample_rate":100,"output_buffer_size":1,
            "output_buffer_timeout":1}"#;
        assert_eq!(
            failure(no_heartbeat),
            "E_BAD_BODY IDENTIFY output buffer timeout (1) is invalid"
        );
        let size_then = r#"{"msg_timeout":1,"sample_rate":100,"output_buffer_size":1}"#;
        assert_eq!(
            failure(size_then),
            "E_BAD_BODY IDENTIFY output buffer size (1) is invalid"
        );
        let rate_then = r#"{"msg_timeout":1,"sample_rate":100}"#;
        assert_eq!(
            failure(rate_then),
            "E_BAD_BODY IDENTIFY sample rate (100) is invalid"
        );
    }

    #[test]
    fn undecodable_bodies() {
        let text = "E_BAD_BODY IDENTIFY failed to decode JSON body";
        for body in [
            "",
            "{",
            "[]",
            "\"x\"",
            "12",
            "{} x",
            r#"{"heartbeat_interval":"1000"}"#,
            r#"{"heartbeat_interval":1000.0}"#,
            r#"{"heartbeat_interval":1e3}"#,
            r#"{"sample_rate":2147483648}"#,
            r#"{"feature_negotiation":"true"}"#,
            r#"{"client_id":5}"#,
            r#"{"msg_timeout":99999999999999999999}"#,
        ] {
            assert_eq!(failure(body), text, "body {body:?}");
        }
    }

    #[test]
    fn top_level_null_and_duplicates_are_accepted_like_go() {
        assert_eq!(negotiated("null").msg_timeout_ms, 60_000);
        assert_eq!(
            negotiated(r#"{"client_id":"a","client_id":"b"}"#).client_id,
            "b"
        );
    }

    #[test]
    fn response_json_matches_nsqd_layout() {
        let n = negotiated(
            r#"{"feature_negotiation":true,"msg_timeout":5000,"deflate":true,"snappy":true,"tls_v1":true}"#,
        );
        let json = n.response_json(&ServerFeatures::new("1.3.0"));
        assert_eq!(
            json,
            concat!(
                r#"{"max_rdy_count":2500,"version":"1.3.0","max_msg_timeout":900000,"#,
                r#""msg_timeout":5000,"tls_v1":false,"deflate":false,"deflate_level":6,"#,
                r#""max_deflate_level":6,"snappy":false,"sample_rate":0,"auth_required":false,"#,
                r#""output_buffer_size":16384,"output_buffer_timeout":250}"#
            )
        );
        let upgrades = n
            .upgrades(&ServerFeatures::new("1.3.0"))
            .expect("no upgrades");
        assert_eq!(
            upgrades,
            Upgrades {
                tls_v1: false,
                deflate: false,
                deflate_level: 6,
                snappy: false
            }
        );
    }

    #[test]
    fn deflate_level_negotiation() {
        let mut server = ServerFeatures::new("1.3.0");
        server.deflate_available = true;
        server.max_deflate_level = 4;
        let asked = negotiated(r#"{"deflate":true,"deflate_level":9}"#);
        assert_eq!(
            asked
                .upgrades(&server)
                .map(|u| (u.deflate, u.deflate_level)),
            Ok((true, 4))
        );
        server.max_deflate_level = 9;
        assert_eq!(asked.upgrades(&server).map(|u| u.deflate_level), Ok(9));
        let zero = negotiated(r#"{"deflate":true,"deflate_level":0}"#);
        assert_eq!(zero.upgrades(&server).map(|u| u.deflate_level), Ok(6));
        let not_asked = negotiated(r#"{"deflate_level":2}"#);
        assert_eq!(not_asked.upgrades(&server).map(|u| u.deflate_level), Ok(6));
    }

    #[test]
    fn snappy_and_deflate_together_fail() {
        let mut server = ServerFeatures::new("1.3.0");
        server.deflate_available = true;
        server.snappy_available = true;
        let n = negotiated(r#"{"deflate":true,"snappy":true}"#);
        let err = n.upgrades(&server).expect_err("both compressions");
        assert_eq!(
            err.frame_body(),
            "E_IDENTIFY_FAILED cannot enable both deflate and snappy compression"
        );
    }

    #[test]
    fn reply_escapes_html_like_go() {
        let server = ServerFeatures::new("a<b>&c\u{2028}");
        let json = negotiated("{}").response_json(&server);
        assert!(
            json.contains(r#""version":"a\u003cb\u003e\u0026c\u2028""#),
            "{json}"
        );
    }
}
