//! Command bodies: the length-prefix rules and the "failed to read" texts of each body command.
//!
//! A body follows the line of IDENTIFY, AUTH, PUB, DPUB and MPUB as `[i32 BE length][bytes]`.
//! The length is checked (with nsqd's texts) before any body byte is awaited, so an absurd
//! prefix is refused at once and never drives an allocation.

use bytes::Bytes;

use super::command::Verb;
use super::error::ProtocolError;
use super::limits::Limits;

/// A body handed to [`super::command::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// The raw body bytes (for MPUB: the whole body, still to be split into messages).
    Single(Bytes),
    /// MPUB messages already split and validated.
    Multi(Vec<Bytes>),
}

/// Validate a body length prefix for `verb`; returns the body size in bytes.
///
/// IDENTIFY/AUTH: too big, then `<= 0` (`E_BAD_BODY`). PUB/DPUB: `<= 0`, then too big
/// (`E_BAD_MESSAGE`, max-msg-size). MPUB: `<= 0`, then too big (`E_BAD_BODY`, max-body-size).
pub fn check_body_size(verb: Verb, size: i32, limits: &Limits) -> Result<usize, ProtocolError> {
    match verb {
        Verb::Pub | Verb::Dpub => check_message_size(verb, size, limits.max_msg_size_bytes)?,
        Verb::Mpub => check_mpub_size(size, limits.max_body_size_bytes)?,
        _ => check_generic_size(verb, size, limits.max_body_size_bytes)?,
    }
    usize::try_from(size).map_err(|_| body_read_failure(verb))
}

/// True if a positive `size` exceeds `max_bytes`.
pub(crate) fn exceeds(size: i32, max_bytes: u64) -> bool {
    u64::try_from(size).is_ok_and(|size_bytes| size_bytes > max_bytes)
}

fn check_message_size(verb: Verb, size: i32, max_bytes: u64) -> Result<(), ProtocolError> {
    let name = verb.name();
    if size <= 0 {
        let text = format!("{name} invalid message body size {size}");
        return Err(ProtocolError::bad_message(text));
    }
    if exceeds(size, max_bytes) {
        let text = format!("{name} message too big {size} > {max_bytes}");
        return Err(ProtocolError::bad_message(text));
    }
    Ok(())
}

fn check_mpub_size(size: i32, max_bytes: u64) -> Result<(), ProtocolError> {
    if size <= 0 {
        let text = format!("MPUB invalid body size {size}");
        return Err(ProtocolError::bad_body(text));
    }
    if exceeds(size, max_bytes) {
        let text = format!("MPUB body too big {size} > {max_bytes}");
        return Err(ProtocolError::bad_body(text));
    }
    Ok(())
}

fn check_generic_size(verb: Verb, size: i32, max_bytes: u64) -> Result<(), ProtocolError> {
    let name = verb.name();
    if exceeds(size, max_bytes) {
        let text = format!("{name} body too big {size} > {max_bytes}");
        return Err(ProtocolError::bad_body(text));
    }
    if size <= 0 {
        let text = format!("{name} invalid body size {size}");
        return Err(ProtocolError::bad_body(text));
    }
    Ok(())
}

/// The error nsqd sends when the length prefix of `verb`'s body could not be read.
pub fn size_read_failure(verb: Verb) -> ProtocolError {
    let name = verb.name();
    match verb {
        Verb::Pub | Verb::Dpub => {
            ProtocolError::bad_message(format!("{name} failed to read message body size"))
        }
        _ => ProtocolError::bad_body(format!("{name} failed to read body size")),
    }
}

/// The error nsqd sends when the body of `verb` could not be read in full.
pub fn body_read_failure(verb: Verb) -> ProtocolError {
    let name = verb.name();
    match verb {
        Verb::Pub | Verb::Dpub | Verb::Mpub => {
            ProtocolError::bad_message(format!("{name} failed to read message body"))
        }
        _ => ProtocolError::bad_body(format!("{name} failed to read body")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size_error(verb: Verb, size: i32) -> String {
        let limits = Limits::default();
        match check_body_size(verb, size, &limits) {
            Ok(size_bytes) => format!("ok {size_bytes}"),
            Err(err) => err.frame_body(),
        }
    }

    #[test]
    fn identify_and_auth_sizes() {
        assert_eq!(
            size_error(Verb::Identify, 0),
            "E_BAD_BODY IDENTIFY invalid body size 0"
        );
        assert_eq!(
            size_error(Verb::Auth, -5),
            "E_BAD_BODY AUTH invalid body size -5"
        );
        assert_eq!(
            size_error(Verb::Identify, 5_242_881),
            "E_BAD_BODY IDENTIFY body too big 5242881 > 5242880"
        );
        assert_eq!(
            size_error(Verb::Auth, i32::MAX),
            "E_BAD_BODY AUTH body too big 2147483647 > 5242880"
        );
        assert_eq!(size_error(Verb::Identify, 5_242_880), "ok 5242880");
    }

    #[test]
    fn pub_and_dpub_sizes() {
        assert_eq!(
            size_error(Verb::Pub, 0),
            "E_BAD_MESSAGE PUB invalid message body size 0"
        );
        assert_eq!(
            size_error(Verb::Dpub, i32::MIN),
            "E_BAD_MESSAGE DPUB invalid message body size -2147483648"
        );
        assert_eq!(
            size_error(Verb::Pub, 1_048_577),
            "E_BAD_MESSAGE PUB message too big 1048577 > 1048576"
        );
        assert_eq!(
            size_error(Verb::Dpub, 1_048_577),
            "E_BAD_MESSAGE DPUB message too big 1048577 > 1048576"
        );
        assert_eq!(size_error(Verb::Pub, 1_048_576), "ok 1048576");
    }

    #[test]
    fn mpub_sizes() {
        assert_eq!(
            size_error(Verb::Mpub, -1),
            "E_BAD_BODY MPUB invalid body size -1"
        );
        assert_eq!(
            size_error(Verb::Mpub, 5_242_881),
            "E_BAD_BODY MPUB body too big 5242881 > 5242880"
        );
        assert_eq!(size_error(Verb::Mpub, 9), "ok 9");
    }

    #[test]
    fn read_failure_texts() {
        let texts: Vec<String> = [
            Verb::Identify,
            Verb::Auth,
            Verb::Pub,
            Verb::Dpub,
            Verb::Mpub,
        ]
        .iter()
        .flat_map(|&verb| [size_read_failure(verb), body_read_failure(verb)])
        .map(|err| err.frame_body())
        .collect();
        assert_eq!(
            texts,
            [
                "E_BAD_BODY IDENTIFY failed to read body size",
                "E_BAD_BODY IDENTIFY failed to read body",
                "E_BAD_BODY AUTH failed to read body size",
                "E_BAD_BODY AUTH failed to read body",
                "E_BAD_MESSAGE PUB failed to read message body size",
                "E_BAD_MESSAGE PUB failed to read message body",
                "E_BAD_MESSAGE DPUB failed to read message body size",
                "E_BAD_MESSAGE DPUB failed to read message body",
                "E_BAD_BODY MPUB failed to read body size",
                "E_BAD_MESSAGE MPUB failed to read message body",
            ]
        );
    }
}
