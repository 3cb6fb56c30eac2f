//! Client → server commands: line splitting, parameter validation and the typed [`Command`].
//!
//! Parsing is split so that the connection's state checks can come first, as in nsqd:
//! 1. [`parse_line`] splits a command line (unknown/empty command names fail here);
//! 2. the connection's state checks run (see [`super::codec::CommandGate`]);
//! 3. [`check_params`] validates the parameters; for body commands this happens before the
//!    body is read, so a parameter error is answered without touching the body;
//! 4. the body is read (see [`super::codec`]) and [`build`] assembles the [`Command`].

use bytes::{BufMut, Bytes, BytesMut};

use super::body::{size_read_failure, Body};
use super::error::ProtocolError;
use super::frame::MESSAGE_ID_LENGTH_BYTES;
use super::limits::Limits;
use super::mpub::parse_mpub_body;
use super::names::is_valid_name;
use super::quote::go_quote;

/// Parameters kept by [`parse_line`]; no command reads more than two.
pub const MAX_KEPT_PARAMS: usize = 2;

/// The command word of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Identify,
    Auth,
    Sub,
    Pub,
    Mpub,
    Dpub,
    Rdy,
    Fin,
    Req,
    Touch,
    Cls,
    Nop,
}

impl Verb {
    const ALL: [Verb; 12] = [
        Verb::Identify,
        Verb::Auth,
        Verb::Sub,
        Verb::Pub,
        Verb::Mpub,
        Verb::Dpub,
        Verb::Rdy,
        Verb::Fin,
        Verb::Req,
        Verb::Touch,
        Verb::Cls,
        Verb::Nop,
    ];

    /// The wire name, e.g. `"SUB"`.
    pub fn name(self) -> &'static str {
        match self {
            Verb::Identify => "IDENTIFY",
            Verb::Auth => "AUTH",
            Verb::Sub => "SUB",
            Verb::Pub => "PUB",
            Verb::Mpub => "MPUB",
            Verb::Dpub => "DPUB",
            Verb::Rdy => "RDY",
            Verb::Fin => "FIN",
            Verb::Req => "REQ",
            Verb::Touch => "TOUCH",
            Verb::Cls => "CLS",
            Verb::Nop => "NOP",
        }
    }

    /// True for the commands followed by a length-prefixed body.
    pub fn has_body(self) -> bool {
        matches!(
            self,
            Verb::Identify | Verb::Auth | Verb::Pub | Verb::Mpub | Verb::Dpub
        )
    }

    /// The verb named exactly `name` (case-sensitive).
    pub fn from_name(name: &[u8]) -> Option<Verb> {
        Self::ALL
            .into_iter()
            .find(|verb| verb.name().as_bytes() == name)
    }
}

/// A split command line: the verb and its parameters (the first [`MAX_KEPT_PARAMS`] kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    verb: Verb,
    params: Vec<Bytes>,
    param_count: usize,
}

impl Line {
    /// The command word.
    pub fn verb(&self) -> Verb {
        self.verb
    }

    /// The wire name of the command word.
    pub fn name(&self) -> &'static str {
        self.verb.name()
    }

    /// Parameter `index` (0 = first after the name), if present and kept.
    pub fn param(&self, index: usize) -> Option<&[u8]> {
        self.params.get(index).map(|param| &param[..])
    }

    /// How many parameters the line had (including those not kept).
    pub fn param_count(&self) -> usize {
        self.param_count
    }
}

/// Split one command line (without or with its `\n`; a trailing `\r` is stripped).
///
/// The line is split on every single space (two spaces give an empty parameter). An unknown
/// name fails with `E_INVALID invalid command <NAME>`; an empty line gives
/// `E_INVALID invalid command ` (trailing space).
pub fn parse_line(line: &[u8]) -> Result<Line, ProtocolError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&byte| byte == b' ');
    let name = parts.next().unwrap_or_default();
    let verb = Verb::from_name(name).ok_or_else(|| {
        ProtocolError::invalid(format!("invalid command {}", String::from_utf8_lossy(name)))
    })?;
    let mut params = Vec::with_capacity(MAX_KEPT_PARAMS);
    let mut param_count = 0usize;
    for part in parts {
        if params.len() < MAX_KEPT_PARAMS {
            params.push(Bytes::copy_from_slice(part));
        }
        param_count += 1;
    }
    Ok(Line {
        verb,
        params,
        param_count,
    })
}

/// A fully parsed and validated client command.
///
/// Each variant documents nsqd's order of checks; "state" checks belong to the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCommand {
    /// Order: state → body size (too big, then `<= 0`) → body read → JSON (identify.rs).
    /// Parameters are ignored.
    Identify(Bytes),
    /// Order: state → exactly zero params (`AUTH invalid number of parameters`) → body size
    /// (too big, then `<= 0`) → body read → auth-server steps (connection).
    Auth(Bytes),
    /// Order: state → heartbeats enabled → two params (`SUB insufficient number of
    /// parameters`) → topic name → channel name → auth (connection).
    Sub { topic: String, channel: String },
    /// Order: one param (`PUB insufficient number of parameters`) → topic name → body size
    /// (`<= 0`, then too big) → body read → auth (connection). Body is read before the auth
    /// check.
    Pub { topic: String, body: Bytes },
    /// Order: one param → topic name (text carries the code twice) → auth (connection, via
    /// the codec's `before_body` gate) → total size (`<= 0`, then too big) → count → items.
    Mpub { topic: String, bodies: Vec<Bytes> },
    /// Order: two params → topic name → timeout parse → timeout range `0..=max_req_timeout_ms`
    /// → body size (`<= 0`, then too big) → body read → auth (connection).
    Dpub {
        topic: String,
        defer_ms: u64,
        body: Bytes,
    },
    /// Order: state (closing → silently ignored) → count parse (absent → 1) → range
    /// `0..=max_rdy_count`.
    Rdy { count: u64 },
    /// Order: state → one param (`FIN insufficient number of params`) → id length 16.
    Fin { id: [u8; 16] },
    /// Order: state → two params (`REQ insufficient number of params`) → id length 16 →
    /// timeout parse. The timeout is NOT clamped here; the broker clamps to max-req-timeout.
    Req { id: [u8; 16], timeout_ms: u64 },
    /// Order: state → one param (`TOUCH insufficient number of params`) → id length 16.
    Touch { id: [u8; 16] },
    /// Order: state only; parameters are ignored.
    Cls,
    /// No checks; parameters are ignored.
    Nop,
}

impl ClientCommand {
    /// The command word.
    pub fn verb(&self) -> Verb {
        match self {
            ClientCommand::Identify(_) => Verb::Identify,
            ClientCommand::Auth(_) => Verb::Auth,
            ClientCommand::Sub { .. } => Verb::Sub,
            ClientCommand::Pub { .. } => Verb::Pub,
            ClientCommand::Mpub { .. } => Verb::Mpub,
            ClientCommand::Dpub { .. } => Verb::Dpub,
            ClientCommand::Rdy { .. } => Verb::Rdy,
            ClientCommand::Fin { .. } => Verb::Fin,
            ClientCommand::Req { .. } => Verb::Req,
            ClientCommand::Touch { .. } => Verb::Touch,
            ClientCommand::Cls => Verb::Cls,
            ClientCommand::Nop => Verb::Nop,
        }
    }

    /// The wire name, e.g. `"SUB"` (for `cannot SUB in current state`).
    pub fn name(&self) -> &'static str {
        self.verb().name()
    }

    /// Append this command in client wire format (used by tests and client code).
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            ClientCommand::Identify(body) => encode_with_body(buf, "IDENTIFY", body),
            ClientCommand::Auth(body) => encode_with_body(buf, "AUTH", body),
            ClientCommand::Sub { topic, channel } => {
                put_line(buf, &format!("SUB {topic} {channel}"))
            }
            ClientCommand::Pub { topic, body } => {
                encode_with_body(buf, &format!("PUB {topic}"), body)
            }
            ClientCommand::Mpub { topic, bodies } => encode_mpub(buf, topic, bodies),
            ClientCommand::Dpub {
                topic,
                defer_ms,
                body,
            } => encode_with_body(buf, &format!("DPUB {topic} {defer_ms}"), body),
            ClientCommand::Rdy { count } => put_line(buf, &format!("RDY {count}")),
            ClientCommand::Fin { id } => put_id_line(buf, "FIN", id, ""),
            ClientCommand::Req { id, timeout_ms } => {
                put_id_line(buf, "REQ", id, &format!(" {timeout_ms}"))
            }
            ClientCommand::Touch { id } => put_id_line(buf, "TOUCH", id, ""),
            ClientCommand::Cls => put_line(buf, "CLS"),
            ClientCommand::Nop => put_line(buf, "NOP"),
        }
    }
}

fn put_line(buf: &mut BytesMut, line: &str) {
    buf.put_slice(line.as_bytes());
    buf.put_u8(b'\n');
}

fn put_id_line(buf: &mut BytesMut, name: &str, id: &[u8; 16], rest: &str) {
    buf.put_slice(name.as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(id);
    put_line(buf, rest);
}

fn put_len(buf: &mut BytesMut, len_bytes: usize) {
    buf.put_i32(i32::try_from(len_bytes).unwrap_or(i32::MAX));
}

fn encode_with_body(buf: &mut BytesMut, line: &str, body: &[u8]) {
    put_line(buf, line);
    put_len(buf, body.len());
    buf.put_slice(body);
}

fn encode_mpub(buf: &mut BytesMut, topic: &str, bodies: &[Bytes]) {
    put_line(buf, &format!("MPUB {topic}"));
    let items_bytes = bodies.iter().map(|body| 4usize.saturating_add(body.len()));
    put_len(buf, items_bytes.fold(4usize, usize::saturating_add));
    put_len(buf, bodies.len());
    for body in bodies {
        put_len(buf, body.len());
        buf.put_slice(body);
    }
}

/// Validate `line`'s parameters (everything that does not need the body), in nsqd's order.
pub fn check_params(line: &Line, limits: &Limits) -> Result<(), ProtocolError> {
    match line.verb {
        Verb::Auth => auth_params(line),
        Verb::Sub => sub_params(line).map(drop),
        Verb::Pub | Verb::Mpub => topic_param(line).map(drop),
        Verb::Dpub => dpub_params(line, limits).map(drop),
        Verb::Rdy => rdy_count(line, limits).map(drop),
        Verb::Fin | Verb::Touch => id_param(line).map(drop),
        Verb::Req => req_params(line).map(drop),
        Verb::Identify | Verb::Cls | Verb::Nop => Ok(()),
    }
}

/// Validate `line` and combine it with its body (required for body commands) into a command.
///
/// For MPUB, `Body::Single` holds the raw body after the total-size prefix and is split here.
pub fn build(
    line: Line,
    body: Option<Body>,
    limits: &Limits,
) -> Result<ClientCommand, ProtocolError> {
    let verb = line.verb;
    let command = match verb {
        Verb::Identify => ClientCommand::Identify(single_body(verb, body)?),
        Verb::Auth => {
            auth_params(&line)?;
            ClientCommand::Auth(single_body(verb, body)?)
        }
        Verb::Sub => {
            let (topic, channel) = sub_params(&line)?;
            ClientCommand::Sub { topic, channel }
        }
        Verb::Pub => ClientCommand::Pub {
            topic: topic_param(&line)?,
            body: single_body(verb, body)?,
        },
        Verb::Mpub => ClientCommand::Mpub {
            topic: topic_param(&line)?,
            bodies: multi_body(body, limits)?,
        },
        Verb::Dpub => build_dpub(&line, body, limits)?,
        Verb::Rdy => ClientCommand::Rdy {
            count: rdy_count(&line, limits)?,
        },
        Verb::Fin => ClientCommand::Fin {
            id: id_param(&line)?,
        },
        Verb::Req => {
            let (id, timeout_ms) = req_params(&line)?;
            ClientCommand::Req { id, timeout_ms }
        }
        Verb::Touch => ClientCommand::Touch {
            id: id_param(&line)?,
        },
        Verb::Cls => ClientCommand::Cls,
        Verb::Nop => ClientCommand::Nop,
    };
    Ok(command)
}

fn build_dpub(
    line: &Line,
    body: Option<Body>,
    limits: &Limits,
) -> Result<ClientCommand, ProtocolError> {
    let (topic, defer_ms) = dpub_params(line, limits)?;
    let body = single_body(Verb::Dpub, body)?;
    Ok(ClientCommand::Dpub {
        topic,
        defer_ms,
        body,
    })
}

fn single_body(verb: Verb, body: Option<Body>) -> Result<Bytes, ProtocolError> {
    match body {
        Some(Body::Single(bytes)) => Ok(bytes),
        _ => Err(size_read_failure(verb)),
    }
}

fn multi_body(body: Option<Body>, limits: &Limits) -> Result<Vec<Bytes>, ProtocolError> {
    match body {
        Some(Body::Multi(bodies)) => Ok(bodies),
        Some(Body::Single(bytes)) => parse_mpub_body(&bytes, limits),
        None => Err(size_read_failure(Verb::Mpub)),
    }
}

/// Fail unless the line has at least `needed` params; `noun` is `parameters` or `params`.
fn require_params(line: &Line, needed: usize, noun: &str) -> Result<(), ProtocolError> {
    if line.param_count >= needed {
        return Ok(());
    }
    let text = format!("{} insufficient number of {noun}", line.name());
    Err(ProtocolError::invalid(text))
}

fn param(line: &Line, index: usize) -> &[u8] {
    line.param(index).unwrap_or_default()
}

fn auth_params(line: &Line) -> Result<(), ProtocolError> {
    if line.param_count == 0 {
        return Ok(());
    }
    Err(ProtocolError::invalid("AUTH invalid number of parameters"))
}

fn topic_param(line: &Line) -> Result<String, ProtocolError> {
    require_params(line, 1, "parameters")?;
    let topic = param(line, 0);
    if is_valid_name(topic) {
        return Ok(String::from_utf8_lossy(topic).into_owned());
    }
    let quoted = go_quote(topic);
    let text = match line.verb {
        Verb::Mpub => format!("E_BAD_TOPIC MPUB topic name {quoted} is not valid"),
        verb => format!("{} topic name {quoted} is not valid", verb.name()),
    };
    Err(ProtocolError::bad_topic(text))
}

fn sub_params(line: &Line) -> Result<(String, String), ProtocolError> {
    require_params(line, 2, "parameters")?;
    let topic = topic_param(line)?;
    let channel = param(line, 1);
    if !is_valid_name(channel) {
        let text = format!("SUB channel name {} is not valid", go_quote(channel));
        return Err(ProtocolError::bad_channel(text));
    }
    Ok((topic, String::from_utf8_lossy(channel).into_owned()))
}

fn dpub_params(line: &Line, limits: &Limits) -> Result<(String, u64), ProtocolError> {
    require_params(line, 2, "parameters")?;
    let topic = topic_param(line)?;
    let raw = param(line, 1);
    let defer_ms = parse_base10(raw).ok_or_else(|| {
        let text = format!("DPUB could not parse timeout {}", lossy(raw));
        ProtocolError::invalid(text)
    })?;
    let max_ms = limits.max_req_timeout_ms;
    if defer_ms > max_ms {
        let text = format!("DPUB timeout {defer_ms} out of range 0-{max_ms}");
        return Err(ProtocolError::invalid(text));
    }
    Ok((topic, defer_ms))
}

fn rdy_count(line: &Line, limits: &Limits) -> Result<u64, ProtocolError> {
    let count = match line.param(0) {
        None => 1,
        Some(raw) => parse_base10(raw).ok_or_else(|| {
            ProtocolError::invalid(format!("RDY could not parse count {}", lossy(raw)))
        })?,
    };
    let max = limits.max_rdy_count;
    if count > max {
        let text = format!("RDY count {count} out of range 0-{max}");
        return Err(ProtocolError::invalid(text));
    }
    Ok(count)
}

fn id_param(line: &Line) -> Result<[u8; 16], ProtocolError> {
    require_params(line, 1, "params")?;
    message_id(param(line, 0))
}

fn req_params(line: &Line) -> Result<([u8; 16], u64), ProtocolError> {
    require_params(line, 2, "params")?;
    let id = message_id(param(line, 0))?;
    let raw = param(line, 1);
    let timeout_ms = parse_base10(raw).ok_or_else(|| {
        ProtocolError::invalid(format!("REQ could not parse timeout {}", lossy(raw)))
    })?;
    Ok((id, timeout_ms))
}

/// A message ID parameter: exactly 16 bytes, content not validated (as nsqd).
fn message_id(raw: &[u8]) -> Result<[u8; 16], ProtocolError> {
    if raw.len() != MESSAGE_ID_LENGTH_BYTES {
        return Err(ProtocolError::invalid("invalid message ID"));
    }
    raw.try_into()
        .map_err(|_| ProtocolError::invalid("invalid message ID"))
}

/// Plain ASCII digits; the empty string is 0; signs, spaces and u64 overflow are errors.
///
/// (nsqd silently wraps on overflow; ledgerq rejects instead.)
pub fn parse_base10(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |value, &byte| {
        let digit = char::from(byte).to_digit(10)?;
        value.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &[u8; 16] = b"0123456789abcdef";

    fn parse(line: &str) -> Result<ClientCommand, String> {
        let limits = Limits::default();
        let line = parse_line(line.as_bytes()).map_err(|err| err.frame_body())?;
        build(line, None, &limits).map_err(|err| err.frame_body())
    }

    fn parse_with_body(line: &str, body: &[u8]) -> Result<ClientCommand, String> {
        let limits = Limits::default();
        let line = parse_line(line.as_bytes()).map_err(|err| err.frame_body())?;
        check_params(&line, &limits).map_err(|err| err.frame_body())?;
        let body = Some(Body::Single(Bytes::copy_from_slice(body)));
        build(line, body, &limits).map_err(|err| err.frame_body())
    }

    fn err(text: &str) -> Result<ClientCommand, String> {
        Err(text.to_owned())
    }

    #[test]
    fn splits_on_every_space_and_strips_cr() {
        let line = parse_line(b"SUB  ch\r\n").expect("line");
        assert_eq!(line.verb(), Verb::Sub);
        assert_eq!(line.param_count(), 2);
        assert_eq!(line.param(0), Some(&b""[..]));
        assert_eq!(line.param(1), Some(&b"ch"[..]));
        let many = parse_line(b"NOP a b c d").expect("line");
        assert_eq!((many.param_count(), many.param(2)), (4, None));
    }

    #[test]
    fn unknown_and_empty_commands() {
        assert_eq!(parse("FOO bar"), err("E_INVALID invalid command FOO"));
        assert_eq!(parse(""), err("E_INVALID invalid command "));
        assert_eq!(parse("\r"), err("E_INVALID invalid command "));
        assert_eq!(parse("nop"), err("E_INVALID invalid command nop"));
        assert_eq!(parse(" NOP"), err("E_INVALID invalid command "));
        assert_eq!(parse("NOP\r\r"), err("E_INVALID invalid command NOP\r"));
    }

    #[test]
    fn simple_commands() {
        assert_eq!(parse("NOP"), Ok(ClientCommand::Nop));
        assert_eq!(parse("NOP x"), Ok(ClientCommand::Nop));
        assert_eq!(parse("CLS"), Ok(ClientCommand::Cls));
        assert_eq!(ClientCommand::Cls.name(), "CLS");
    }

    #[test]
    fn sub_parses_and_validates_in_order() {
        let sub = ClientCommand::Sub {
            topic: "t#ephemeral".into(),
            channel: "c".into(),
        };
        assert_eq!(parse("SUB t#ephemeral c"), Ok(sub));
        let missing = "E_INVALID SUB insufficient number of parameters";
        assert_eq!(parse("SUB t"), err(missing));
        assert_eq!(parse("SUB"), err(missing));
        assert_eq!(
            parse("SUB t$ c$"),
            err("E_BAD_TOPIC SUB topic name \"t$\" is not valid")
        );
        assert_eq!(
            parse("SUB t c$"),
            err("E_BAD_CHANNEL SUB channel name \"c$\" is not valid")
        );
        assert_eq!(
            parse("SUB t "),
            err("E_BAD_CHANNEL SUB channel name \"\" is not valid")
        );
    }

    #[test]
    fn pub_params_and_body() {
        let expected = ClientCommand::Pub {
            topic: "t".into(),
            body: Bytes::from("hi"),
        };
        assert_eq!(parse_with_body("PUB t", b"hi"), Ok(expected));
        let missing = "E_INVALID PUB insufficient number of parameters";
        assert_eq!(parse_with_body("PUB", b"x"), err(missing));
        assert_eq!(
            parse_with_body("PUB a\"b", b"x"),
            err("E_BAD_TOPIC PUB topic name \"a\\\"b\" is not valid")
        );
        let no_body = "E_BAD_MESSAGE PUB failed to read message body size";
        assert_eq!(parse("PUB t"), err(no_body));
    }

    #[test]
    fn mpub_topic_error_repeats_the_code() {
        assert_eq!(
            parse("MPUB bad!"),
            err("E_BAD_TOPIC E_BAD_TOPIC MPUB topic name \"bad!\" is not valid")
        );
        let missing = "E_INVALID MPUB insufficient number of parameters";
        assert_eq!(parse("MPUB"), err(missing));
        let body = b"\x00\x00\x00\x01\x00\x00\x00\x02hi";
        let expected = ClientCommand::Mpub {
            topic: "t".into(),
            bodies: vec![Bytes::from("hi")],
        };
        assert_eq!(parse_with_body("MPUB t", body), Ok(expected));
    }

    #[test]
    fn dpub_params() {
        let expected = ClientCommand::Dpub {
            topic: "t".into(),
            defer_ms: 3_600_000,
            body: Bytes::from("x"),
        };
        assert_eq!(parse_with_body("DPUB t 3600000", b"x"), Ok(expected));
        let missing = "E_INVALID DPUB insufficient number of parameters";
        assert_eq!(parse("DPUB t"), err(missing));
        assert_eq!(
            parse("DPUB t! 5"),
            err("E_BAD_TOPIC DPUB topic name \"t!\" is not valid")
        );
        assert_eq!(
            parse("DPUB t -5"),
            err("E_INVALID DPUB could not parse timeout -5")
        );
        assert_eq!(
            parse("DPUB t 3600001"),
            err("E_INVALID DPUB timeout 3600001 out of range 0-3600000")
        );
        assert_eq!(
            parse("DPUB t 18446744073709551616"),
            err("E_INVALID DPUB could not parse timeout 18446744073709551616")
        );
        let zero = parse_with_body("DPUB t ", b"x").map(|cmd| cmd.name());
        assert_eq!(zero, Ok("DPUB"));
    }

    #[test]
    fn rdy_count_rules() {
        assert_eq!(parse("RDY"), Ok(ClientCommand::Rdy { count: 1 }));
        assert_eq!(parse("RDY "), Ok(ClientCommand::Rdy { count: 0 }));
        assert_eq!(parse("RDY 2500"), Ok(ClientCommand::Rdy { count: 2500 }));
        assert_eq!(
            parse("RDY 2501"),
            err("E_INVALID RDY count 2501 out of range 0-2500")
        );
        assert_eq!(
            parse("RDY +1"),
            err("E_INVALID RDY could not parse count +1")
        );
        assert_eq!(parse("RDY 1 2"), Ok(ClientCommand::Rdy { count: 1 }));
        assert_eq!(parse("RDY  1"), Ok(ClientCommand::Rdy { count: 0 }));
    }

    #[test]
    fn fin_touch_req() {
        assert_eq!(
            parse("FIN 0123456789abcdef"),
            Ok(ClientCommand::Fin { id: *ID })
        );
        assert_eq!(
            parse("TOUCH 0123456789abcdef"),
            Ok(ClientCommand::Touch { id: *ID })
        );
        let req = ClientCommand::Req {
            id: *ID,
            timeout_ms: 99_999_999,
        };
        assert_eq!(parse("REQ 0123456789abcdef 99999999"), Ok(req));
        assert_eq!(
            parse("FIN"),
            err("E_INVALID FIN insufficient number of params")
        );
        assert_eq!(
            parse("TOUCH"),
            err("E_INVALID TOUCH insufficient number of params")
        );
        assert_eq!(
            parse("REQ 0123456789abcdef"),
            err("E_INVALID REQ insufficient number of params")
        );
        assert_eq!(parse("FIN abc"), err("E_INVALID invalid message ID"));
        assert_eq!(
            parse("TOUCH ~~~~~~~~~~~~~~~~~"),
            err("E_INVALID invalid message ID")
        );
        assert_eq!(parse("REQ abc 5"), err("E_INVALID invalid message ID"));
        assert_eq!(
            parse("REQ 0123456789abcdef 1s"),
            err("E_INVALID REQ could not parse timeout 1s")
        );
    }

    #[test]
    fn message_id_content_is_not_validated() {
        let id = *b"~~~~~~~~~~~~~~~~";
        assert_eq!(parse("FIN ~~~~~~~~~~~~~~~~"), Ok(ClientCommand::Fin { id }));
    }

    #[test]
    fn auth_and_identify() {
        assert_eq!(
            parse_with_body("AUTH", b"s"),
            Ok(ClientCommand::Auth(Bytes::from("s")))
        );
        assert_eq!(
            parse_with_body("AUTH x", b"s"),
            err("E_INVALID AUTH invalid number of parameters")
        );
        assert_eq!(
            parse_with_body("IDENTIFY ignored", b"{}"),
            Ok(ClientCommand::Identify(Bytes::from("{}")))
        );
    }

    #[test]
    fn base10_rules() {
        assert_eq!(parse_base10(b""), Some(0));
        assert_eq!(parse_base10(b"007"), Some(7));
        assert_eq!(parse_base10(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_base10(b"18446744073709551616"), None);
        assert_eq!(parse_base10(b"-1"), None);
        assert_eq!(parse_base10(b" 1"), None);
        assert_eq!(parse_base10("\u{664}".as_bytes()), None);
    }

    #[test]
    fn encode_round_trips_through_the_line_parser() {
        let mut buf = BytesMut::new();
        ClientCommand::Req {
            id: *ID,
            timeout_ms: 5,
        }
        .encode(&mut buf);
        assert_eq!(&buf[..], b"REQ 0123456789abcdef 5\n");
        buf.clear();
        let mpub = ClientCommand::Mpub {
            topic: "t".into(),
            bodies: vec![Bytes::from("a"), Bytes::from("bc")],
        };
        mpub.encode(&mut buf);
        let expected =
            b"MPUB t\n\x00\x00\x00\x0f\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x02bc";
        assert_eq!(&buf[..], &expected[..]);
    }
}
