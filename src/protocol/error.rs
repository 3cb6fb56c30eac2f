//! Protocol errors: the code, the human text and whether the connection must close.
//!
//! A [`ProtocolError`] is what the connection turns into an error frame (type 1). The frame body
//! is `"<CODE> <text>"` except for `E_BAD_PROTOCOL`, whose body is just the code. An error with
//! an empty code is a *silent close*: the connection closes without sending any frame (this is
//! how nsqd reacts to an over-long command line or a failed socket read).

use std::fmt;

use crate::broker::channel::InFlightError;
use crate::broker::BrokerError;
use crate::protocol::quote::go_quote;

/// Error code for a wrong protocol magic; its frame body is the code alone.
pub const E_BAD_PROTOCOL: &str = "E_BAD_PROTOCOL";
/// Error code for bad state, bad parameters and unknown commands.
pub const E_INVALID: &str = "E_INVALID";
/// Error code for malformed IDENTIFY, AUTH and MPUB bodies.
pub const E_BAD_BODY: &str = "E_BAD_BODY";
/// Error code for an invalid topic name.
pub const E_BAD_TOPIC: &str = "E_BAD_TOPIC";
/// Error code for an invalid channel name.
pub const E_BAD_CHANNEL: &str = "E_BAD_CHANNEL";
/// Error code for a malformed message body (PUB, DPUB, MPUB items).
pub const E_BAD_MESSAGE: &str = "E_BAD_MESSAGE";
/// Error code for IDENTIFY feature negotiation failures.
pub const E_IDENTIFY_FAILED: &str = "E_IDENTIFY_FAILED";
/// Error code for SUB or publishing before AUTH while auth is enabled.
pub const E_AUTH_FIRST: &str = "E_AUTH_FIRST";
/// Error code for an auth server that failed or gave an invalid reply.
pub const E_AUTH_FAILED: &str = "E_AUTH_FAILED";
/// Error code for a secret that does not allow the command.
pub const E_UNAUTHORIZED: &str = "E_UNAUTHORIZED";
/// Error code for AUTH without an auth server.
pub const E_AUTH_DISABLED: &str = "E_AUTH_DISABLED";

/// One protocol-level error, ready to be written as an error frame (or to close silently).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    /// The `E_*` code; empty for a silent close.
    pub code: &'static str,
    /// The human description following the code.
    pub text: String,
    /// Whether the connection must be closed after the frame is flushed.
    pub fatal: bool,
}

impl ProtocolError {
    /// A fatal error with the given code and text.
    pub fn fatal(code: &'static str, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
            fatal: true,
        }
    }

    /// A non-fatal error (`E_FIN_FAILED`, `E_REQ_FAILED`, `E_TOUCH_FAILED`).
    pub fn non_fatal(code: &'static str, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
            fatal: false,
        }
    }

    /// Fatal `E_INVALID`.
    pub fn invalid(text: impl Into<String>) -> Self {
        Self::fatal(E_INVALID, text)
    }

    /// Fatal `E_BAD_BODY`.
    pub fn bad_body(text: impl Into<String>) -> Self {
        Self::fatal(E_BAD_BODY, text)
    }

    /// Fatal `E_BAD_TOPIC`.
    pub fn bad_topic(text: impl Into<String>) -> Self {
        Self::fatal(E_BAD_TOPIC, text)
    }

    /// Fatal `E_BAD_CHANNEL`.
    pub fn bad_channel(text: impl Into<String>) -> Self {
        Self::fatal(E_BAD_CHANNEL, text)
    }

    /// Fatal `E_BAD_MESSAGE`.
    pub fn bad_message(text: impl Into<String>) -> Self {
        Self::fatal(E_BAD_MESSAGE, text)
    }

    /// Fatal `E_BAD_PROTOCOL` (wrong magic); the frame body is the code alone.
    pub fn bad_protocol() -> Self {
        Self::fatal(E_BAD_PROTOCOL, "")
    }

    /// Close the connection without sending an error frame; `reason` is for logs only.
    pub fn silent_close(reason: impl Into<String>) -> Self {
        Self::fatal("", reason)
    }

    /// True when the connection must close without writing an error frame.
    pub fn is_silent_close(&self) -> bool {
        self.code.is_empty()
    }

    /// Exactly the data of the error frame: `"<CODE> <text>"` (`E_BAD_PROTOCOL` alone).
    pub fn frame_body(&self) -> String {
        match self.code {
            "" => self.text.clone(),
            E_BAD_PROTOCOL => E_BAD_PROTOCOL.to_owned(),
            code => format!("{code} {}", self.text),
        }
    }
}

/// The failures of broker requests, in nsqd's words.
impl ProtocolError {
    /// Fatal `E_INVALID` for a command the connection's state forbids.
    pub fn wrong_state(verb: &str) -> Self {
        Self::invalid(format!("cannot {verb} in current state"))
    }

    /// Fatal `E_INVALID`: `--tls-required` and the client has not upgraded.
    pub fn tls_required(verb: &str) -> Self {
        Self::invalid(format!("cannot {verb} in current state (TLS required)"))
    }

    /// Fatal `E_INVALID`: SUB needs heartbeats.
    pub fn sub_without_heartbeats() -> Self {
        Self::invalid("cannot SUB with heartbeats disabled")
    }

    /// Fatal `E_SUB_FAILED`.
    pub fn sub_failed(topic: &str, channel: &str, error: &BrokerError) -> Self {
        let reason = match error {
            BrokerError::DeletedWhileSubscribing => "to deleted topic/channel".to_owned(),
            BrokerError::TooManyConsumers { limit } => {
                format!("consumers for {topic}:{channel} exceeds limit of {limit}")
            }
            other => other.to_string(),
        };
        Self::fatal("E_SUB_FAILED", format!("SUB failed {reason}"))
    }

    /// Fatal `E_PUB_FAILED`, `E_MPUB_FAILED` or `E_DPUB_FAILED`.
    pub fn publish_failed(verb: &str, error: &BrokerError) -> Self {
        let code = match verb {
            "MPUB" => "E_MPUB_FAILED",
            "DPUB" => "E_DPUB_FAILED",
            _ => "E_PUB_FAILED",
        };
        Self::fatal(code, format!("{verb} failed {error}"))
    }

    /// Non-fatal `E_FIN_FAILED`, `E_REQ_FAILED` or `E_TOUCH_FAILED`.
    pub fn in_flight_failed(verb: &str, id: &[u8; 16], error: InFlightError) -> Self {
        let code = match verb {
            "FIN" => "E_FIN_FAILED",
            "REQ" => "E_REQ_FAILED",
            _ => "E_TOUCH_FAILED",
        };
        let reason = match error {
            InFlightError::NotInFlight => "ID not in flight",
            InFlightError::NotOwner => "client does not own message",
        };
        let id = String::from_utf8_lossy(id);
        Self::non_fatal(code, format!("{verb} {id} failed {reason}"))
    }
}

/// AUTH and its checks (`src/auth/session.rs`), in nsqd's words; all fatal.
impl ProtocolError {
    /// Fatal `E_AUTH_DISABLED`: AUTH without `--auth-http-address`.
    pub fn auth_disabled() -> Self {
        Self::fatal(E_AUTH_DISABLED, "AUTH disabled")
    }

    /// Fatal `E_INVALID`: a second AUTH after a successful one.
    pub fn auth_already_set() -> Self {
        Self::invalid("AUTH already set")
    }

    /// Fatal `E_AUTH_FAILED`: the auth server failed (details are only logged).
    pub fn auth_failed() -> Self {
        Self::fatal(E_AUTH_FAILED, "AUTH failed")
    }

    /// Fatal `E_UNAUTHORIZED`: the auth server granted nothing.
    pub fn auth_no_authorizations() -> Self {
        Self::fatal(E_UNAUTHORIZED, "AUTH no authorizations found")
    }

    /// Fatal `E_AUTH_FIRST`: `verb` before a successful AUTH.
    pub fn auth_first(verb: &str) -> Self {
        Self::fatal(E_AUTH_FIRST, format!("AUTH required before {verb}"))
    }

    /// Fatal `E_UNAUTHORIZED`: the secret does not allow `verb` on
    /// `topic`/`channel` (channel "" for publishing), quoted as Go's `%q`.
    pub fn unauthorized(verb: &str, topic: &str, channel: &str) -> Self {
        let topic = go_quote(topic.as_bytes());
        let channel = go_quote(channel.as_bytes());
        Self::fatal(
            E_UNAUTHORIZED,
            format!("AUTH failed for {verb} on {topic} {channel}"),
        )
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.frame_body())
    }
}

impl std::error::Error for ProtocolError {}

impl From<std::io::Error> for ProtocolError {
    /// A failed socket read: nsqd closes the connection without an error frame.
    fn from(err: std::io::Error) -> Self {
        Self::silent_close(format!("failed to read command - {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_body_joins_code_and_text() {
        let err = ProtocolError::invalid("invalid command FOO");
        assert_eq!(err.frame_body(), "E_INVALID invalid command FOO");
        assert!(err.fatal);
        assert!(!err.is_silent_close());
    }

    #[test]
    fn bad_protocol_body_is_only_the_code() {
        assert_eq!(ProtocolError::bad_protocol().frame_body(), "E_BAD_PROTOCOL");
    }

    #[test]
    fn mpub_bad_topic_duplicates_the_code() {
        let err = ProtocolError::bad_topic("E_BAD_TOPIC MPUB topic name \"a$\" is not valid");
        assert_eq!(
            err.frame_body(),
            "E_BAD_TOPIC E_BAD_TOPIC MPUB topic name \"a$\" is not valid"
        );
    }

    #[test]
    fn non_fatal_is_not_fatal() {
        let err = ProtocolError::non_fatal("E_FIN_FAILED", "FIN x failed ID not in flight");
        assert!(!err.fatal);
        assert_eq!(
            err.frame_body(),
            "E_FIN_FAILED FIN x failed ID not in flight"
        );
    }

    #[test]
    fn io_error_is_a_silent_close() {
        let err = ProtocolError::from(std::io::Error::other("boom"));
        assert!(err.is_silent_close());
        assert!(err.fatal);
        assert_eq!(err.text, "failed to read command - boom");
    }

    #[test]
    fn constructors_use_their_codes() {
        assert_eq!(ProtocolError::bad_body("x").code, "E_BAD_BODY");
        assert_eq!(ProtocolError::bad_channel("x").code, "E_BAD_CHANNEL");
        assert_eq!(ProtocolError::bad_message("x").code, "E_BAD_MESSAGE");
        assert_eq!(ProtocolError::bad_topic("x").code, "E_BAD_TOPIC");
    }

    #[test]
    fn auth_errors_read_as_nsqd_writes_them() {
        let texts = [
            (
                ProtocolError::auth_disabled(),
                "E_AUTH_DISABLED AUTH disabled",
            ),
            (
                ProtocolError::auth_already_set(),
                "E_INVALID AUTH already set",
            ),
            (ProtocolError::auth_failed(), "E_AUTH_FAILED AUTH failed"),
            (
                ProtocolError::auth_no_authorizations(),
                "E_UNAUTHORIZED AUTH no authorizations found",
            ),
            (
                ProtocolError::auth_first("MPUB"),
                "E_AUTH_FIRST AUTH required before MPUB",
            ),
            (
                ProtocolError::unauthorized("SUB", "t", "c#ephemeral"),
                r#"E_UNAUTHORIZED AUTH failed for SUB on "t" "c#ephemeral""#,
            ),
            (
                ProtocolError::unauthorized("PUB", "t", ""),
                r#"E_UNAUTHORIZED AUTH failed for PUB on "t" """#,
            ),
        ];
        for (error, text) in texts {
            assert_eq!(error.frame_body(), text);
            assert!(error.fatal);
        }
    }

    #[test]
    fn broker_failures_read_as_nsqd_writes_them() {
        let error =
            ProtocolError::sub_failed("t", "c", &BrokerError::TooManyConsumers { limit: 2 });
        assert_eq!(
            error.frame_body(),
            "E_SUB_FAILED SUB failed consumers for t:c exceeds limit of 2"
        );
        let error = ProtocolError::sub_failed("t", "c", &BrokerError::DeletedWhileSubscribing);
        assert_eq!(
            error.frame_body(),
            "E_SUB_FAILED SUB failed to deleted topic/channel"
        );
        let error = ProtocolError::publish_failed("MPUB", &BrokerError::Exiting);
        assert_eq!(error.frame_body(), "E_MPUB_FAILED MPUB failed exiting");
        assert!(error.fatal);
        let id = b"0001000000000002";
        let error = ProtocolError::in_flight_failed("REQ", id, InFlightError::NotOwner);
        assert_eq!(
            error.frame_body(),
            "E_REQ_FAILED REQ 0001000000000002 failed client does not own message"
        );
        assert!(!error.fatal);
    }
}
