//! The streaming decoder: bytes from the socket → [`Command`]s, with nsqd's error ordering.
//!
//! The codec reads a line (at most [`MAX_LINE_LENGTH_BYTES`] including `\n`), asks the
//! connection's [`CommandGate`] about state, validates parameters, and only then reads the body
//! of body commands. Length prefixes are checked before any body byte is awaited, and the
//! buffer is grown only for the command in progress. The magic (`"  V2"`) is checked by the
//! connection, not here. After an error the connection stops decoding.

use std::mem;

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

use super::body::{body_read_failure, check_body_size, size_read_failure, Body};
use super::command::{build, check_params, parse_line, ClientCommand, Line, Verb};
use super::error::ProtocolError;
use super::limits::Limits;
use super::mpub::{read_i32, MpubScanner};

/// The protocol magic a client sends first.
pub const MAGIC_V2: &[u8; 4] = b"  V2";
/// nsqd's line buffer: a line of this many bytes without `\n` closes the connection silently.
pub const MAX_LINE_LENGTH_BYTES: usize = 16 * 1024;
/// Most bytes reserved ahead at once while a body is arriving.
const MAX_RESERVE_BYTES: usize = 1024 * 1024;

/// The connection's verdict on a command line, before its parameters are looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Go on validating and reading the command.
    Proceed,
    /// Drop the line silently (nsqd: RDY while closing). Only honoured for commands without a
    /// body; for body commands it acts as `Proceed`.
    Ignore,
    /// Fail with this error (e.g. `cannot SUB in current state`).
    Reject(ProtocolError),
}

/// Connection-owned checks that nsqd performs before (or between) the codec's own checks.
pub trait CommandGate {
    /// Called after the line is split and before any parameter is validated: state checks
    /// (IDENTIFY, AUTH, SUB, RDY, FIN, REQ, TOUCH, CLS) and `cannot SUB with heartbeats
    /// disabled` belong here.
    fn before_params(&mut self, _line: &Line) -> Admission {
        Admission::Proceed
    }

    /// Called for body commands after parameter checks, before the length prefix is read
    /// (nsqd checks MPUB's auth here).
    fn before_body(&mut self, _line: &Line) -> Result<(), ProtocolError> {
        Ok(())
    }
}

/// A gate that admits everything (no state checks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenGate;

impl CommandGate for OpenGate {}

/// Where the codec is within the current command.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    Line { scanned_bytes: usize },
    Length(Line),
    Body { line: Line, size_bytes: usize },
    Mpub { line: Line, scanner: MpubScanner },
}

enum Progress {
    Wait(Stage),
    Continue(Stage),
    Done(ClientCommand),
}

/// Decoder of client commands; `G` carries the connection's state checks.
#[derive(Debug, Clone)]
pub struct CommandCodec<G = OpenGate> {
    limits: Limits,
    gate: G,
    stage: Stage,
    buffered_bytes: usize,
}

impl CommandCodec<OpenGate> {
    /// A codec without state checks.
    pub fn new(limits: Limits) -> Self {
        Self::with_gate(limits, OpenGate)
    }
}

impl<G: CommandGate> CommandCodec<G> {
    /// A codec consulting `gate` for every command.
    pub fn with_gate(limits: Limits, gate: G) -> Self {
        Self {
            limits,
            gate,
            stage: Stage::Line { scanned_bytes: 0 },
            buffered_bytes: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The gate, e.g. to update the connection state it checks.
    pub fn gate(&self) -> &G {
        &self.gate
    }

    /// Mutable access to the gate.
    pub fn gate_mut(&mut self) -> &mut G {
        &mut self.gate
    }

    /// The error to send if the read stops now (EOF or read deadline); `None` means close
    /// silently (nothing pending, or a partial command line).
    pub fn read_failure(&self) -> Option<ProtocolError> {
        match &self.stage {
            Stage::Line { .. } => None,
            Stage::Length(line) => Some(size_read_failure(line.verb())),
            Stage::Body { line, .. } => Some(body_read_failure(line.verb())),
            Stage::Mpub { scanner, .. } => Some(scanner.read_failure(self.buffered_bytes)),
        }
    }

    fn step(&mut self, stage: Stage, src: &mut BytesMut) -> Result<Progress, ProtocolError> {
        match stage {
            Stage::Line { scanned_bytes } => self.on_line(scanned_bytes, src),
            Stage::Length(line) => self.on_length(line, src),
            Stage::Body { line, size_bytes } => self.on_body(line, size_bytes, src),
            Stage::Mpub { line, scanner } => self.on_mpub(line, scanner, src),
        }
    }

    fn on_line(
        &mut self,
        scanned_bytes: usize,
        src: &mut BytesMut,
    ) -> Result<Progress, ProtocolError> {
        let Some(raw) = take_line(scanned_bytes, src)? else {
            let scanned_bytes = src.len();
            return Ok(Progress::Wait(Stage::Line { scanned_bytes }));
        };
        let line = parse_line(&raw)?;
        let has_body = line.verb().has_body();
        match self.gate.before_params(&line) {
            Admission::Reject(err) => return Err(err),
            Admission::Ignore if !has_body => return Ok(Progress::Continue(idle())),
            Admission::Ignore | Admission::Proceed => {}
        }
        if !has_body {
            return build(line, None, &self.limits).map(Progress::Done);
        }
        check_params(&line, &self.limits)?;
        self.gate.before_body(&line)?;
        Ok(Progress::Continue(Stage::Length(line)))
    }

    fn on_length(&mut self, line: Line, src: &mut BytesMut) -> Result<Progress, ProtocolError> {
        let Some(size) = read_i32(src, 0) else {
            return Ok(Progress::Wait(Stage::Length(line)));
        };
        let size_bytes = check_body_size(line.verb(), size, &self.limits)?;
        src.advance(4);
        let stage = match line.verb() {
            Verb::Mpub => Stage::Mpub {
                line,
                scanner: MpubScanner::new(size_bytes),
            },
            _ => Stage::Body { line, size_bytes },
        };
        Ok(Progress::Continue(stage))
    }

    fn on_body(
        &mut self,
        line: Line,
        size_bytes: usize,
        src: &mut BytesMut,
    ) -> Result<Progress, ProtocolError> {
        if src.len() < size_bytes {
            reserve_for(src, size_bytes);
            return Ok(Progress::Wait(Stage::Body { line, size_bytes }));
        }
        let body = Body::Single(src.split_to(size_bytes).freeze());
        build(line, Some(body), &self.limits).map(Progress::Done)
    }

    fn on_mpub(
        &mut self,
        line: Line,
        mut scanner: MpubScanner,
        src: &mut BytesMut,
    ) -> Result<Progress, ProtocolError> {
        let total_bytes = scanner.total_bytes();
        let available = src.get(..total_bytes).unwrap_or(&src[..]);
        if !scanner.advance(available, &self.limits)? {
            reserve_for(src, total_bytes);
            return Ok(Progress::Wait(Stage::Mpub { line, scanner }));
        }
        let body = src.split_to(total_bytes).freeze();
        let bodies = Body::Multi(scanner.into_bodies(&body));
        build(line, Some(bodies), &self.limits).map(Progress::Done)
    }
}

fn idle() -> Stage {
    Stage::Line { scanned_bytes: 0 }
}

/// Take one line (with its `\n`) if complete; a full buffer without `\n` is a silent close.
fn take_line(scanned_bytes: usize, src: &mut BytesMut) -> Result<Option<BytesMut>, ProtocolError> {
    let window_end = src.len().min(MAX_LINE_LENGTH_BYTES);
    let window = src.get(scanned_bytes..window_end).unwrap_or_default();
    if let Some(offset) = window.iter().position(|&byte| byte == b'\n') {
        return Ok(Some(src.split_to(scanned_bytes + offset + 1)));
    }
    if src.len() >= MAX_LINE_LENGTH_BYTES {
        let reason = format!("command line longer than {MAX_LINE_LENGTH_BYTES} bytes");
        return Err(ProtocolError::silent_close(reason));
    }
    Ok(None)
}

/// Grow `src` toward `needed_bytes` of the current command, a bounded step at a time.
fn reserve_for(src: &mut BytesMut, needed_bytes: usize) {
    let missing_bytes = needed_bytes.saturating_sub(src.len());
    src.reserve(missing_bytes.min(MAX_RESERVE_BYTES));
}

impl<G: CommandGate> Decoder for CommandCodec<G> {
    type Item = ClientCommand;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<ClientCommand>, ProtocolError> {
        loop {
            let stage = mem::replace(&mut self.stage, idle());
            match self.step(stage, src)? {
                Progress::Wait(stage) => {
                    self.stage = stage;
                    self.buffered_bytes = src.len();
                    return Ok(None);
                }
                Progress::Continue(stage) => self.stage = stage,
                Progress::Done(command) => return Ok(Some(command)),
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<ClientCommand>, ProtocolError> {
        if let Some(command) = self.decode(src)? {
            return Ok(Some(command));
        }
        match self.read_failure() {
            Some(err) => Err(err),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    type Outcome = Result<ClientCommand, String>;

    /// Feed `input` in chunks of `chunk_bytes`, then signal EOF; stop at the first error.
    fn run_chunked<G: CommandGate>(
        codec: &mut CommandCodec<G>,
        input: &[u8],
        chunk_bytes: usize,
    ) -> Vec<Outcome> {
        let mut buf = BytesMut::new();
        let mut outcomes = Vec::new();
        for chunk in input.chunks(chunk_bytes.max(1)) {
            buf.extend_from_slice(chunk);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(command)) => outcomes.push(Ok(command)),
                    Ok(None) => break,
                    Err(err) => {
                        outcomes.push(Err(err.frame_body()));
                        return outcomes;
                    }
                }
            }
        }
        match codec.decode_eof(&mut buf) {
            Ok(Some(command)) => outcomes.push(Ok(command)),
            Ok(None) => {}
            Err(err) => outcomes.push(Err(err.frame_body())),
        }
        outcomes
    }

    fn run(input: &[u8]) -> Vec<Outcome> {
        let whole = run_chunked(
            &mut CommandCodec::new(Limits::default()),
            input,
            input.len(),
        );
        let bytewise = run_chunked(&mut CommandCodec::new(Limits::default()), input, 1);
        assert_eq!(whole, bytewise, "chunking changed the outcome");
        whole
    }

    fn error(text: &str) -> Outcome {
        Err(text.to_owned())
    }

    fn with_len(line: &[u8], body: &[u8]) -> Vec<u8> {
        let mut out = line.to_vec();
        let size = i32::try_from(body.len()).expect("small body");
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn with_prefix(line: &[u8], size: i32) -> Vec<u8> {
        let mut out = line.to_vec();
        out.extend_from_slice(&size.to_be_bytes());
        out
    }

    fn mpub_body(items: &[&[u8]]) -> Vec<u8> {
        let mut body = i32::try_from(items.len())
            .expect("few")
            .to_be_bytes()
            .to_vec();
        for item in items {
            body.extend_from_slice(&i32::try_from(item.len()).expect("small").to_be_bytes());
            body.extend_from_slice(item);
        }
        body
    }

    /// The client PUB bytes of `docs/nsq-wire.md` §2.3.
    #[test]
    fn decodes_the_reference_pub_example() {
        let input = b"PUB test\n\x00\x00\x00\x05hello";
        let expected = ClientCommand::Pub {
            topic: "test".into(),
            body: Bytes::from("hello"),
        };
        assert_eq!(run(input), vec![Ok(expected)]);
    }

    #[test]
    fn decodes_pipelined_commands_with_crlf() {
        let mut input = b"NOP\r\nRDY 10\n".to_vec();
        input.extend(with_len(b"IDENTIFY\n", b"{}"));
        input.extend(with_len(b"MPUB t\n", &mpub_body(&[b"a", b"bc"])));
        input.extend_from_slice(b"CLS\n");
        let outcomes = run(&input);
        let expected = vec![
            Ok(ClientCommand::Nop),
            Ok(ClientCommand::Rdy { count: 10 }),
            Ok(ClientCommand::Identify(Bytes::from("{}"))),
            Ok(ClientCommand::Mpub {
                topic: "t".into(),
                bodies: vec![Bytes::from("a"), Bytes::from("bc")],
            }),
            Ok(ClientCommand::Cls),
        ];
        assert_eq!(outcomes, expected);
    }

    #[test]
    fn unknown_and_empty_lines() {
        assert_eq!(run(b"FOO\n"), vec![error("E_INVALID invalid command FOO")]);
        assert_eq!(run(b"\n"), vec![error("E_INVALID invalid command ")]);
    }

    #[test]
    fn line_length_limit() {
        let mut fits = b"NOP ".to_vec();
        fits.resize(MAX_LINE_LENGTH_BYTES - 1, b'x');
        fits.push(b'\n');
        assert_eq!(run(&fits), vec![Ok(ClientCommand::Nop)]);

        let too_long = vec![b'x'; MAX_LINE_LENGTH_BYTES];
        let mut codec = CommandCodec::new(Limits::default());
        let err = codec
            .decode(&mut BytesMut::from(&too_long[..]))
            .expect_err("line too long");
        assert!(err.is_silent_close());
        assert!(err.fatal);
    }

    #[test]
    fn partial_line_at_eof_closes_silently() {
        assert_eq!(run(b"PUB t"), vec![]);
        assert_eq!(run(b""), vec![]);
    }

    #[test]
    fn huge_length_prefix_is_refused_before_the_body() {
        let mut codec = CommandCodec::new(Limits::default());
        let mut buf = BytesMut::from(&with_prefix(b"PUB t\n", i32::MAX)[..]);
        let err = codec.decode(&mut buf).expect_err("too big");
        assert_eq!(
            err.frame_body(),
            "E_BAD_MESSAGE PUB message too big 2147483647 > 1048576"
        );
        assert!(buf.capacity() < 64 * 1024);
    }

    #[test]
    fn body_size_errors_for_every_body_command() {
        let cases: [(&[u8], i32, &str); 10] = [
            (b"IDENTIFY\n", 0, "E_BAD_BODY IDENTIFY invalid body size 0"),
            (
                b"IDENTIFY\n",
                5_242_881,
                "E_BAD_BODY IDENTIFY body too big 5242881 > 5242880",
            ),
            (b"AUTH\n", -1, "E_BAD_BODY AUTH invalid body size -1"),
            (
                b"AUTH\n",
                5_242_881,
                "E_BAD_BODY AUTH body too big 5242881 > 5242880",
            ),
            (
                b"PUB t\n",
                0,
                "E_BAD_MESSAGE PUB invalid message body size 0",
            ),
            (
                b"DPUB t 1\n",
                -3,
                "E_BAD_MESSAGE DPUB invalid message body size -3",
            ),
            (
                b"DPUB t 1\n",
                1_048_577,
                "E_BAD_MESSAGE DPUB message too big 1048577 > 1048576",
            ),
            (b"MPUB t\n", 0, "E_BAD_BODY MPUB invalid body size 0"),
            (
                b"MPUB t\n",
                5_242_881,
                "E_BAD_BODY MPUB body too big 5242881 > 5242880",
            ),
            (
                b"MPUB t\n",
                i32::MIN,
                "E_BAD_BODY MPUB invalid body size -2147483648",
            ),
        ];
        for (line, size, text) in cases {
            assert_eq!(run(&with_prefix(line, size)), vec![error(text)], "{text}");
        }
    }

    #[test]
    fn param_errors_come_before_the_body_is_read() {
        let cases: [(&[u8], &str); 6] = [
            (b"PUB\n", "E_INVALID PUB insufficient number of parameters"),
            (
                b"PUB a/b\n",
                "E_BAD_TOPIC PUB topic name \"a/b\" is not valid",
            ),
            (
                b"MPUB\n",
                "E_INVALID MPUB insufficient number of parameters",
            ),
            (
                b"MPUB \n",
                "E_BAD_TOPIC E_BAD_TOPIC MPUB topic name \"\" is not valid",
            ),
            (b"DPUB t x\n", "E_INVALID DPUB could not parse timeout x"),
            (b"AUTH a\n", "E_INVALID AUTH invalid number of parameters"),
        ];
        for (line, text) in cases {
            let mut codec = CommandCodec::new(Limits::default());
            let mut buf = BytesMut::from(line);
            let err = codec.decode(&mut buf).expect_err(text);
            assert_eq!(err.frame_body(), text);
            assert!(buf.is_empty(), "no body byte consumed or awaited");
        }
    }

    #[test]
    fn eof_inside_a_body_reports_the_read_failure() {
        let cases: [(Vec<u8>, &str); 8] = [
            (
                b"IDENTIFY\n\x00\x00".to_vec(),
                "E_BAD_BODY IDENTIFY failed to read body size",
            ),
            (
                with_prefix(b"IDENTIFY\n", 5),
                "E_BAD_BODY IDENTIFY failed to read body",
            ),
            (
                with_prefix(b"AUTH\n", 5),
                "E_BAD_BODY AUTH failed to read body",
            ),
            (
                b"PUB t\n".to_vec(),
                "E_BAD_MESSAGE PUB failed to read message body size",
            ),
            (
                with_prefix(b"DPUB t 0\n", 2),
                "E_BAD_MESSAGE DPUB failed to read message body",
            ),
            (
                b"MPUB t\n\x00".to_vec(),
                "E_BAD_BODY MPUB failed to read body size",
            ),
            (
                with_prefix(b"MPUB t\n", 20),
                "E_BAD_BODY MPUB failed to read message count",
            ),
            (
                with_len(b"MPUB t\n", &mpub_body(&[b"abc"]))[..21].to_vec(),
                "E_BAD_MESSAGE MPUB failed to read message body",
            ),
        ];
        for (input, text) in cases {
            assert_eq!(run(&input), vec![error(text)], "{text}");
        }
        let mut partial = with_prefix(b"MPUB t\n", 20);
        partial.extend_from_slice(&mpub_body(&[b"a"])[..]);
        partial[11..15].copy_from_slice(&2i32.to_be_bytes());
        assert_eq!(
            run(&partial),
            vec![error(
                "E_BAD_MESSAGE MPUB failed to read message(1) body size"
            )]
        );
    }

    #[test]
    fn mpub_count_and_items_are_checked_early() {
        let mut codec = CommandCodec::new(Limits::default());
        let mut buf = BytesMut::from(&with_prefix(b"MPUB t\n", 1000)[..]);
        buf.extend_from_slice(&0i32.to_be_bytes());
        let err = codec.decode(&mut buf).expect_err("bad count");
        assert_eq!(err.frame_body(), "E_BAD_BODY MPUB invalid message count 0");

        let mut codec = CommandCodec::new(Limits::default());
        let mut buf = BytesMut::from(&with_prefix(b"MPUB t\n", 1000)[..]);
        buf.extend_from_slice(&3i32.to_be_bytes());
        buf.extend_from_slice(&(-7i32).to_be_bytes());
        let err = codec.decode(&mut buf).expect_err("bad item");
        assert_eq!(
            err.frame_body(),
            "E_BAD_MESSAGE MPUB invalid message(0) body size -7"
        );

        let mut codec = CommandCodec::new(Limits::default());
        let mut buf = BytesMut::from(&with_prefix(b"MPUB t\n", 1000)[..]);
        buf.extend_from_slice(&3i32.to_be_bytes());
        buf.extend_from_slice(&2_000_000i32.to_be_bytes());
        let err = codec.decode(&mut buf).expect_err("big item");
        assert_eq!(
            err.frame_body(),
            "E_BAD_MESSAGE MPUB message too big 2000000 > 1048576"
        );
    }

    #[test]
    fn mpub_total_size_must_match_the_items() {
        let mut body = mpub_body(&[b"a"]);
        body.extend_from_slice(b"zz");
        assert_eq!(
            run(&with_len(b"MPUB t\n", &body)),
            vec![error("E_BAD_BODY MPUB invalid body size 11")]
        );
        let body = mpub_body(&[b"abc"]);
        let mut input = with_prefix(b"MPUB t\n", 9);
        input.extend_from_slice(&body);
        assert_eq!(
            run(&input),
            vec![error("E_BAD_MESSAGE MPUB failed to read message body")]
        );
    }

    #[test]
    fn large_mpub_reserves_in_bounded_steps() {
        let mut codec = CommandCodec::new(Limits::default());
        let mut buf = BytesMut::from(&with_prefix(b"MPUB t\n", 5_242_880)[..]);
        buf.extend_from_slice(&1i32.to_be_bytes());
        assert_eq!(codec.decode(&mut buf), Ok(None));
        assert!(buf.capacity() <= 2 * MAX_RESERVE_BYTES);
    }

    #[derive(Default)]
    struct StateGate {
        subscribed: bool,
        closing: bool,
        deny_mpub: bool,
    }

    impl CommandGate for StateGate {
        fn before_params(&mut self, line: &Line) -> Admission {
            let state_ok = match line.verb() {
                Verb::Sub | Verb::Identify | Verb::Auth => !self.subscribed,
                Verb::Rdy if self.closing => return Admission::Ignore,
                Verb::Rdy | Verb::Fin | Verb::Req | Verb::Touch | Verb::Cls => self.subscribed,
                _ => true,
            };
            if state_ok {
                return Admission::Proceed;
            }
            let text = format!("cannot {} in current state", line.name());
            Admission::Reject(ProtocolError::invalid(text))
        }

        fn before_body(&mut self, line: &Line) -> Result<(), ProtocolError> {
            if self.deny_mpub && line.verb() == Verb::Mpub {
                return Err(ProtocolError::fatal(
                    "E_AUTH_FIRST",
                    "AUTH required before MPUB",
                ));
            }
            Ok(())
        }
    }

    fn gated(gate: StateGate, input: &[u8]) -> Vec<Outcome> {
        run_chunked(
            &mut CommandCodec::with_gate(Limits::default(), gate),
            input,
            1,
        )
    }

    #[test]
    fn state_errors_win_over_param_errors() {
        let init = || StateGate::default();
        assert_eq!(
            gated(init(), b"RDY x\n"),
            vec![error("E_INVALID cannot RDY in current state")]
        );
        assert_eq!(
            gated(init(), b"FIN\n"),
            vec![error("E_INVALID cannot FIN in current state")]
        );
        let subscribed = || StateGate {
            subscribed: true,
            ..StateGate::default()
        };
        assert_eq!(
            gated(subscribed(), b"SUB\n"),
            vec![error("E_INVALID cannot SUB in current state")]
        );
        let identify = with_prefix(b"IDENTIFY\n", -1);
        assert_eq!(
            gated(subscribed(), &identify),
            vec![error("E_INVALID cannot IDENTIFY in current state")]
        );
        assert_eq!(
            gated(subscribed(), b"FIN\n"),
            vec![error("E_INVALID FIN insufficient number of params")]
        );
    }

    #[test]
    fn ignored_rdy_is_dropped_silently() {
        let closing = StateGate {
            subscribed: true,
            closing: true,
            ..StateGate::default()
        };
        assert_eq!(
            gated(closing, b"RDY nonsense\nNOP\n"),
            vec![Ok(ClientCommand::Nop)]
        );
    }

    #[test]
    fn before_body_runs_after_topic_check() {
        let deny = || StateGate {
            deny_mpub: true,
            ..StateGate::default()
        };
        assert_eq!(
            gated(deny(), b"MPUB !\n"),
            vec![error(
                "E_BAD_TOPIC E_BAD_TOPIC MPUB topic name \"!\" is not valid"
            )]
        );
        assert_eq!(
            gated(deny(), &with_prefix(b"MPUB t\n", -1)),
            vec![error("E_AUTH_FIRST AUTH required before MPUB")]
        );
    }
}
