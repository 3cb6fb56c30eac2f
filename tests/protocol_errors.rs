//! Every error path of the NSQ TCP protocol V2 (`docs/nsq-wire.md` §2, §3), checked
//! byte-exactly against the real binary over raw sockets: the error frame's text, whether it
//! is fatal (the server closes the connection) or not (the connection keeps working), and the
//! order of checks (a command is refused on its line alone when nsqd would not read its body).
//! Then "bad input" robustness: absurd length prefixes, stalled and non-reading clients, none
//! of which may disturb healthy clients or lose acknowledged messages.
//!
//! Nothing here sleeps to wait: closes and deliveries are awaited with blocking reads under
//! read timeouts, or with `wait_until`.

mod common;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use tempfile::TempDir;

/// A syntactically valid message ID that is never in flight.
const ID: &str = "0123456789abcdef";
/// How long a fatal error may take to be followed by the close.
const CLOSE_DEADLINE: Duration = Duration::from_secs(10);
/// The small limits of the size tests.
const LIMIT_FLAGS: [&str; 4] = [
    "--max-msg-size=100",
    "--max-body-size=1000",
    "--max-rdy-count=10",
    "--max-req-timeout=10s",
];

// ----- helpers ----------------------------------------------------------------------------

fn start(args: &[&str]) -> (TempDir, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), args);
    (dir, server)
}

/// `line` + `\n`.
fn line(text: &str) -> Vec<u8> {
    format!("{text}\n").into_bytes()
}

/// A big-endian i32 (length prefixes, MPUB counts).
fn be(value: i32) -> Vec<u8> {
    value.to_be_bytes().to_vec()
}

/// `[size][bytes]` with the real size.
fn sized(bytes: &[u8]) -> Vec<u8> {
    [be(bytes.len() as i32), bytes.to_vec()].concat()
}

/// An MPUB body without its total-size prefix: `[count]` then `[size][bytes]` per item.
fn mpub_items(items: &[&[u8]]) -> Vec<u8> {
    let mut body = be(items.len() as i32);
    for item in items {
        body.extend(sized(item));
    }
    body
}

fn frame_text(frame: &(i32, Vec<u8>)) -> (i32, String) {
    (frame.0, String::from_utf8_lossy(&frame.1).into_owned())
}

fn is_heartbeat(frame: &(i32, Vec<u8>)) -> bool {
    frame.0 == FRAME_RESPONSE && frame.1 == b"_heartbeat_"
}

/// The next frame; `Ok(None)` once the server closed the connection (EOF or reset);
/// `Err` if nothing arrived within the stream's read timeout.
fn next_frame_or_close(client: &mut RawClient) -> Result<Option<(i32, Vec<u8>)>, String> {
    let closed = |kind: ErrorKind| {
        matches!(
            kind,
            ErrorKind::UnexpectedEof
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
        )
    };
    let mut header = [0u8; 8];
    match client.stream.read_exact(&mut header) {
        Ok(()) => {}
        Err(error) if closed(error.kind()) => return Ok(None),
        Err(error) => return Err(format!("no frame and no close: {error}")),
    }
    let size = i32::from_be_bytes(header[..4].try_into().unwrap());
    let frame_type = i32::from_be_bytes(header[4..].try_into().unwrap());
    assert!(size >= 4, "bad frame size {size}");
    let mut data = vec![0u8; (size - 4) as usize];
    match client.stream.read_exact(&mut data) {
        Ok(()) => Ok(Some((frame_type, data))),
        Err(error) => Err(format!("truncated frame: {error}")),
    }
}

/// Asserts the server closes the connection within [`CLOSE_DEADLINE`], sending nothing but
/// heartbeats first. Unlike a plain read, a read timeout counts as "still open".
fn expect_eof(client: &mut RawClient, case: &str) {
    client
        .stream
        .set_read_timeout(Some(CLOSE_DEADLINE))
        .unwrap();
    let deadline = Instant::now() + CLOSE_DEADLINE;
    loop {
        match next_frame_or_close(client) {
            Ok(None) => return,
            Ok(Some(frame)) if is_heartbeat(&frame) => {
                assert!(Instant::now() < deadline, "{case}: connection not closed");
            }
            Ok(Some(frame)) => panic!(
                "{case}: expected the connection to close, got {:?}",
                frame_text(&frame)
            ),
            Err(error) => panic!("{case}: expected the connection to close: {error}"),
        }
    }
}

/// The next frame other than a heartbeat, with the case named on failure.
fn next_frame(client: &mut RawClient, case: &str) -> (i32, String) {
    loop {
        match next_frame_or_close(client) {
            Ok(Some(frame)) if is_heartbeat(&frame) => continue,
            Ok(Some(frame)) => return frame_text(&frame),
            Ok(None) => panic!("{case}: connection closed while waiting for a frame"),
            Err(error) => panic!("{case}: {error}"),
        }
    }
}

fn expect_error_in(client: &mut RawClient, case: &str, text: &str) {
    let frame = next_frame(client, case);
    assert_eq!(frame, (FRAME_ERROR, text.to_string()), "case {case}");
}

fn expect_response_in(client: &mut RawClient, case: &str, text: &str) {
    let frame = next_frame(client, case);
    assert_eq!(frame, (FRAME_RESPONSE, text.to_string()), "case {case}");
}

/// Sends `bytes`, expects the fatal error `text`, then the close.
fn expect_fatal(client: &mut RawClient, case: &str, bytes: &[u8], text: &str) {
    client.send(bytes);
    expect_error_in(client, case, text);
    expect_eof(client, case);
}

/// Proves the connection still works: a PUB on it is answered `OK`.
fn expect_usable(client: &mut RawClient, case: &str) {
    client.command_with_body("PUB still_usable", b"ping");
    expect_response_in(client, case, "OK");
}

/// A fresh connection can still publish.
fn expect_server_healthy(address: SocketAddr) {
    let mut client = RawClient::connect(address);
    client.publish("after_errors", b"still works");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Init,
    Subscribed,
    Closing,
}

/// A connection in `state` (subscribed to `state_topic/state_channel` with RDY 0).
fn client_in(address: SocketAddr, state: State) -> RawClient {
    let mut client = RawClient::connect(address);
    if state != State::Init {
        client.subscribe("state_topic", "state_channel");
    }
    if state == State::Closing {
        client.command("CLS");
        client.expect_response("CLOSE_WAIT");
    }
    client
}

/// Runs fatal cases, each on its own connection in its state.
fn run_fatal_cases(address: SocketAddr, cases: &[(State, Vec<u8>, String)]) {
    for (state, bytes, text) in cases {
        let case = format!("{state:?} {:?}", String::from_utf8_lossy(bytes));
        let mut client = client_in(address, *state);
        expect_fatal(&mut client, &case, bytes, text);
    }
}

fn publish_mpub(client: &mut RawClient, topic: &str, items: &[&[u8]]) {
    client.command_with_body(&format!("MPUB {topic}"), &mpub_items(items));
    client.expect_response("OK");
}

/// Bytes received on `client`'s socket that it has not read yet.
fn unread_bytes(client: &RawClient) -> usize {
    use std::os::fd::AsRawFd;
    let mut unread: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is valid.
    let result = unsafe { libc::ioctl(client.stream.as_raw_fd(), libc::FIONREAD, &mut unread) };
    assert_eq!(result, 0, "ioctl(FIONREAD) failed");
    usize::try_from(unread).expect("non-negative")
}

/// A `/proc/<pid>/status` field in kB (VmRSS, VmHWM, ...).
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("server alive");
    let line = status
        .lines()
        .find(|line| line.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("unparsable {line:?}"))
}

// ----- connection start and command lines --------------------------------------------------

#[test]
fn bad_magic_is_answered_with_e_bad_protocol_then_closed() {
    let (_dir, server) = start(&[]);
    for magic in [&b"  V1"[..], b"  v2", b"V2  ", b"GET ", b"\0\0\0\0"] {
        let case = format!("magic {magic:?}");
        let mut client = RawClient::connect_without_magic(server.tcp_address);
        client.send(magic);
        let mut raw = [0u8; 22];
        client.stream.read_exact(&mut raw).expect("error frame");
        assert_eq!(&raw[..8], &[0, 0, 0, 18, 0, 0, 0, 1], "{case}: header");
        assert_eq!(
            &raw[8..],
            b"E_BAD_PROTOCOL",
            "{case}: body is the code alone"
        );
        expect_eof(&mut client, &case);
    }
    expect_server_healthy(server.tcp_address);
}

#[test]
fn unknown_and_empty_commands_are_fatal() {
    let (_dir, server) = start(&[]);
    let address = server.tcp_address;

    // The error frame example of `docs/nsq-wire.md` §2.3, checked raw.
    let mut client = RawClient::connect(address);
    client.command("FOO");
    let mut raw = [0u8; 37];
    client.stream.read_exact(&mut raw).expect("error frame");
    assert_eq!(&raw[..8], &[0, 0, 0, 0x21, 0, 0, 0, 1]);
    assert_eq!(&raw[8..], b"E_INVALID invalid command FOO");
    expect_eof(&mut client, "FOO");

    let invalid = |name: &str| format!("E_INVALID invalid command {name}");
    let cases = [
        (State::Init, line("FOO bar baz"), invalid("FOO")),
        (State::Init, line("pub t"), invalid("pub")),
        (State::Init, line("PUBLISH t"), invalid("PUBLISH")),
        (State::Init, line(" NOP"), invalid("")),
        (State::Init, line(""), invalid("")),
        (State::Init, b"FOO\r\n".to_vec(), invalid("FOO")),
        (State::Subscribed, line("BAR"), invalid("BAR")),
        (State::Closing, line("BAR"), invalid("BAR")),
    ];
    run_fatal_cases(address, &cases);

    // A trailing \r is stripped; NOP is valid and silent.
    let mut client = RawClient::connect(address);
    client.send(b"NOP\r\nNOP x\n");
    expect_usable(&mut client, "NOP with CRLF");
    expect_server_healthy(address);
}

// ----- connection states -------------------------------------------------------------------

#[test]
fn commands_in_the_wrong_state_are_fatal_before_any_parameter_check() {
    let (_dir, server) = start(&[]);
    let cannot = |verb: &str| format!("E_INVALID cannot {verb} in current state");
    let id_line = |verb: &str| line(&format!("{verb} {ID}"));
    let cases = [
        // init: nothing to be ready for, finish or close.
        (State::Init, line("RDY 1"), cannot("RDY")),
        (State::Init, line("RDY"), cannot("RDY")),
        (State::Init, line("RDY abc"), cannot("RDY")),
        (State::Init, id_line("FIN"), cannot("FIN")),
        (State::Init, line("FIN"), cannot("FIN")),
        (State::Init, line("FIN abc"), cannot("FIN")),
        (State::Init, line(&format!("REQ {ID} 0")), cannot("REQ")),
        (State::Init, line("REQ"), cannot("REQ")),
        (State::Init, id_line("TOUCH"), cannot("TOUCH")),
        (State::Init, line("TOUCH"), cannot("TOUCH")),
        (State::Init, line("CLS"), cannot("CLS")),
        // subscribed: IDENTIFY, AUTH and SUB are init-only; the body is never read.
        (State::Subscribed, line("IDENTIFY"), cannot("IDENTIFY")),
        (State::Subscribed, line("AUTH"), cannot("AUTH")),
        (
            State::Subscribed,
            line("SUB state_topic other"),
            cannot("SUB"),
        ),
        (State::Subscribed, line("SUB"), cannot("SUB")),
        (State::Subscribed, line("SUB bad! bad!"), cannot("SUB")),
        // closing: the same, and CLS only once.
        (State::Closing, line("IDENTIFY"), cannot("IDENTIFY")),
        (State::Closing, line("AUTH"), cannot("AUTH")),
        (State::Closing, line("SUB state_topic other"), cannot("SUB")),
        (State::Closing, line("CLS"), cannot("CLS")),
    ];
    run_fatal_cases(server.tcp_address, &cases);
    expect_server_healthy(server.tcp_address);
}

#[test]
fn commands_valid_in_each_state_keep_the_connection() {
    let (_dir, server) = start(&[]);
    for state in [State::Init, State::Subscribed, State::Closing] {
        let case = format!("{state:?}");
        let mut client = client_in(server.tcp_address, state);
        client.command("NOP");
        client.command_with_body("PUB state_pub", b"x");
        expect_response_in(&mut client, &case, "OK");
        client.command_with_body("MPUB state_pub", &mpub_items(&[b"a", b"b"]));
        expect_response_in(&mut client, &case, "OK");
        client.command_with_body("DPUB state_pub 0", b"y");
        expect_response_in(&mut client, &case, "OK");
        if state == State::Subscribed {
            client.command("RDY 0");
            client.command("RDY");
        }
        expect_usable(&mut client, &case);
    }
}

#[test]
fn closing_state_ignores_rdy_and_keeps_fin_req_touch_non_fatal() {
    let (_dir, server) = start(&["--max-rdy-count=10"]);
    let mut client = client_in(server.tcp_address, State::Closing);
    // RDY is ignored in closing state before its count is even parsed.
    for rdy in ["RDY 5", "RDY", "RDY abc", "RDY -1", "RDY 11"] {
        client.command(rdy);
    }
    expect_usable(&mut client, "RDY ignored while closing");
    client.command(&format!("FIN {ID}"));
    expect_error_in(
        &mut client,
        "FIN while closing",
        &format!("E_FIN_FAILED FIN {ID} failed ID not in flight"),
    );
    client.command(&format!("REQ {ID} 0"));
    expect_error_in(
        &mut client,
        "REQ while closing",
        &format!("E_REQ_FAILED REQ {ID} failed ID not in flight"),
    );
    client.command(&format!("TOUCH {ID}"));
    expect_error_in(
        &mut client,
        "TOUCH while closing",
        &format!("E_TOUCH_FAILED TOUCH {ID} failed ID not in flight"),
    );
    expect_usable(&mut client, "after non-fatal errors while closing");
    // ...but a malformed FIN is still fatal.
    expect_fatal(
        &mut client,
        "FIN abc while closing",
        &line("FIN abc"),
        "E_INVALID invalid message ID",
    );
    expect_server_healthy(server.tcp_address);
}

// ----- parameters ----------------------------------------------------------------------------

#[test]
fn insufficient_parameters_are_fatal_without_reading_a_body() {
    let (_dir, server) = start(&[]);
    let params = |verb: &str| format!("E_INVALID {verb} insufficient number of parameters");
    let short = |verb: &str| format!("E_INVALID {verb} insufficient number of params");
    let cases = [
        (State::Init, line("SUB"), params("SUB")),
        (State::Init, line("SUB t"), params("SUB")),
        (State::Init, line("PUB"), params("PUB")),
        (State::Init, line("MPUB"), params("MPUB")),
        (State::Init, line("DPUB"), params("DPUB")),
        (State::Init, line("DPUB t"), params("DPUB")),
        (
            State::Init,
            line("AUTH secret"),
            "E_INVALID AUTH invalid number of parameters".into(),
        ),
        (State::Subscribed, line("FIN"), short("FIN")),
        (State::Subscribed, line("TOUCH"), short("TOUCH")),
        (State::Subscribed, line("REQ"), short("REQ")),
        (State::Subscribed, line(&format!("REQ {ID}")), short("REQ")),
        (State::Closing, line("FIN"), short("FIN")),
    ];
    run_fatal_cases(server.tcp_address, &cases);
    expect_server_healthy(server.tcp_address);
}

#[test]
fn bad_topic_and_channel_names_are_fatal() {
    let (_dir, server) = start(&[]);
    let long = "a".repeat(65);
    let long_ephemeral = format!("{}#ephemeral", "a".repeat(55));
    let topic =
        |verb: &str, quoted: &str| format!("E_BAD_TOPIC {verb} topic name {quoted} is not valid");
    let channel = |quoted: &str| format!("E_BAD_CHANNEL SUB channel name {quoted} is not valid");
    let cases = [
        (line("PUB bad!"), topic("PUB", "\"bad!\"")),
        (
            line(&format!("PUB {long}")),
            topic("PUB", &format!("\"{long}\"")),
        ),
        (
            line(&format!("PUB {long_ephemeral}")),
            topic("PUB", &format!("\"{long_ephemeral}\"")),
        ),
        (line("PUB "), topic("PUB", "\"\"")),
        (line("PUB #ephemeral"), topic("PUB", "\"#ephemeral\"")),
        (line("PUB a#b"), topic("PUB", "\"a#b\"")),
        (line("PUB a\"b"), topic("PUB", "\"a\\\"b\"")),
        (b"PUB caf\xff\n".to_vec(), topic("PUB", "\"caf\\xff\"")),
        (line("DPUB bad! 0"), topic("DPUB", "\"bad!\"")),
        // The topic is checked before the timeout is parsed.
        (line("DPUB bad! x"), topic("DPUB", "\"bad!\"")),
        // MPUB's text repeats the code (sic, nsqd).
        (
            line("MPUB bad!"),
            format!("E_BAD_TOPIC {}", topic("MPUB", "\"bad!\"")),
        ),
        (line("SUB bad! c"), topic("SUB", "\"bad!\"")),
        (line("SUB t$ c$"), topic("SUB", "\"t$\"")),
        (line("SUB  t c"), topic("SUB", "\"\"")),
        (line("SUB t bad!"), channel("\"bad!\"")),
        (
            line(&format!("SUB t {long}")),
            channel(&format!("\"{long}\"")),
        ),
        (line("SUB t "), channel("\"\"")),
        (
            line("SUB t c#ephemeral#ephemeral"),
            channel("\"c#ephemeral#ephemeral\""),
        ),
    ];
    let cases: Vec<_> = cases
        .into_iter()
        .map(|(bytes, text)| (State::Init, bytes, text))
        .collect();
    run_fatal_cases(server.tcp_address, &cases);

    // The boundaries are accepted.
    let mut client = RawClient::connect(server.tcp_address);
    client.publish(&"a".repeat(64), b"x");
    client.publish(&format!("{}#ephemeral", "a".repeat(54)), b"x");
    client.publish("Orders.v2_test-1", b"x");
    client.subscribe("t", &format!("{}#ephemeral", "c".repeat(54)));
    expect_server_healthy(server.tcp_address);
}

// ----- bodies --------------------------------------------------------------------------------

#[test]
fn body_size_errors_respect_custom_limits() {
    let (_dir, server) = start(&LIMIT_FLAGS);
    let with = |text: &str, size: i32| [line(text), be(size)].concat();
    let message = |verb: &str, detail: &str| format!("E_BAD_MESSAGE {verb} {detail}");
    let body = |verb: &str, detail: &str| format!("E_BAD_BODY {verb} {detail}");
    let cases = [
        // PUB / DPUB: `<= 0` first, then max-msg-size.
        (
            with("PUB t", 0),
            message("PUB", "invalid message body size 0"),
        ),
        (
            with("PUB t", -1),
            message("PUB", "invalid message body size -1"),
        ),
        (
            with("PUB t", i32::MIN),
            message("PUB", "invalid message body size -2147483648"),
        ),
        (
            with("PUB t", 101),
            message("PUB", "message too big 101 > 100"),
        ),
        (
            with("PUB t", i32::MAX),
            message("PUB", "message too big 2147483647 > 100"),
        ),
        (
            with("DPUB t 0", 0),
            message("DPUB", "invalid message body size 0"),
        ),
        (
            with("DPUB t 0", -7),
            message("DPUB", "invalid message body size -7"),
        ),
        (
            with("DPUB t 0", 101),
            message("DPUB", "message too big 101 > 100"),
        ),
        // MPUB: its whole body against max-body-size.
        (with("MPUB t", 0), body("MPUB", "invalid body size 0")),
        (with("MPUB t", -1), body("MPUB", "invalid body size -1")),
        (
            with("MPUB t", 1001),
            body("MPUB", "body too big 1001 > 1000"),
        ),
        // IDENTIFY / AUTH: too big first, then `<= 0`.
        (with("IDENTIFY", 0), body("IDENTIFY", "invalid body size 0")),
        (
            with("IDENTIFY", -1),
            body("IDENTIFY", "invalid body size -1"),
        ),
        (
            with("IDENTIFY", 1001),
            body("IDENTIFY", "body too big 1001 > 1000"),
        ),
        (with("AUTH", 0), body("AUTH", "invalid body size 0")),
        (with("AUTH", -3), body("AUTH", "invalid body size -3")),
        (with("AUTH", 1001), body("AUTH", "body too big 1001 > 1000")),
    ];
    let cases: Vec<_> = cases
        .into_iter()
        .map(|(bytes, text)| (State::Init, bytes, text))
        .collect();
    run_fatal_cases(server.tcp_address, &cases);

    // Exactly at the limits is fine.
    let mut client = RawClient::connect(server.tcp_address);
    client.publish("t", &[b'x'; 100]);
    client.command_with_body("DPUB t 0", &[b'y'; 100]);
    client.expect_response("OK");
    let full: Vec<&[u8]> = [&[b'm'; 100][..]; 9]
        .into_iter()
        .chain([&[b'n'; 56][..]])
        .collect();
    let mpub = mpub_items(&full);
    assert_eq!(mpub.len(), 1000);
    client.command_with_body("MPUB t", &mpub);
    client.expect_response("OK");
    let json = format!(r#"{{"client_id":"{}"}}"#, "c".repeat(1000 - 16));
    assert_eq!(json.len(), 1000);
    assert_eq!(client.identify(&json), b"OK");
    expect_server_healthy(server.tcp_address);
}

#[test]
fn truncated_bodies_report_nsqd_read_failures_at_eof() {
    let (_dir, server) = start(&[]);
    let message = |detail: &str| format!("E_BAD_MESSAGE {detail}");
    let body = |detail: &str| format!("E_BAD_BODY {detail}");
    let cases = [
        (
            [line("PUB t"), vec![0, 0]].concat(),
            message("PUB failed to read message body size"),
        ),
        (
            [line("PUB t"), be(10), b"abc".to_vec()].concat(),
            message("PUB failed to read message body"),
        ),
        (
            line("DPUB t 0"),
            message("DPUB failed to read message body size"),
        ),
        (
            [line("DPUB t 0"), be(10), b"abc".to_vec()].concat(),
            message("DPUB failed to read message body"),
        ),
        (line("IDENTIFY"), body("IDENTIFY failed to read body size")),
        (
            [line("IDENTIFY"), be(10), b"{}".to_vec()].concat(),
            body("IDENTIFY failed to read body"),
        ),
        (line("AUTH"), body("AUTH failed to read body size")),
        (
            [line("AUTH"), be(10), b"ab".to_vec()].concat(),
            body("AUTH failed to read body"),
        ),
        (
            [line("MPUB t"), vec![0]].concat(),
            body("MPUB failed to read body size"),
        ),
        (
            [line("MPUB t"), be(100), vec![0, 0]].concat(),
            body("MPUB failed to read message count"),
        ),
        (
            [line("MPUB t"), be(100), be(2)].concat(),
            message("MPUB failed to read message(0) body size"),
        ),
        (
            [line("MPUB t"), be(100), be(2), sized(b"abcde"), vec![0]].concat(),
            message("MPUB failed to read message(1) body size"),
        ),
        (
            [line("MPUB t"), be(100), be(2), be(5), b"ab".to_vec()].concat(),
            message("MPUB failed to read message body"),
        ),
    ];
    for (bytes, text) in cases {
        let case = format!("EOF after {:?}", String::from_utf8_lossy(&bytes));
        let mut client = RawClient::connect(server.tcp_address);
        client.send(&bytes);
        client.stream.shutdown(Shutdown::Write).expect("half-close");
        expect_error_in(&mut client, &case, &text);
        expect_eof(&mut client, &case);
    }
    expect_server_healthy(server.tcp_address);
}

#[test]
fn mpub_count_and_per_message_errors() {
    let (_dir, server) = start(&LIMIT_FLAGS);
    let mpub = |parts: &[Vec<u8>]| {
        let body = parts.concat();
        [line("MPUB t"), sized(&body)].concat()
    };
    let count = |k: i32| format!("E_BAD_BODY MPUB invalid message count {k}");
    let cases = [
        (mpub(&[be(0)]), count(0)),
        (mpub(&[be(-1)]), count(-1)),
        // At most (max-body-size - 4) / 5 = 199 messages.
        (mpub(&[be(200)]), count(200)),
        (mpub(&[be(i32::MAX)]), count(i32::MAX)),
        (
            mpub(&[be(1), be(0)]),
            "E_BAD_MESSAGE MPUB invalid message(0) body size 0".into(),
        ),
        (
            mpub(&[be(2), sized(b"a"), be(-1)]),
            "E_BAD_MESSAGE MPUB invalid message(1) body size -1".into(),
        ),
        (
            mpub(&[be(1), be(101)]),
            "E_BAD_MESSAGE MPUB message too big 101 > 100".into(),
        ),
        (
            mpub(&[be(3), sized(b"a"), sized(b"b"), be(i32::MAX)]),
            "E_BAD_MESSAGE MPUB message too big 2147483647 > 100".into(),
        ),
        // ledgerq is strict where nsqd would desynchronise: items must fill the body exactly.
        (
            [line("MPUB t"), be(12), be(1), sized(b"a"), b"xyz".to_vec()].concat(),
            "E_BAD_BODY MPUB invalid body size 12".into(),
        ),
    ];
    let cases: Vec<_> = cases
        .into_iter()
        .map(|(bytes, text)| (State::Init, bytes, text))
        .collect();
    run_fatal_cases(server.tcp_address, &cases);

    // 199 one-byte messages fill 999 bytes: accepted.
    let mut client = RawClient::connect(server.tcp_address);
    let items: Vec<&[u8]> = vec![&b"z"[..]; 199];
    publish_mpub(&mut client, "t", &items);
    expect_server_healthy(server.tcp_address);
}

#[test]
fn mpub_is_all_or_nothing() {
    let (_dir, server) = start(&LIMIT_FLAGS);
    let mut consumer = RawClient::connect(server.tcp_address);
    consumer.subscribe("atomic", "c");
    consumer.command("RDY 10");

    let mut bad = RawClient::connect(server.tcp_address);
    let body = [be(3), sized(b"first-valid"), sized(b"second-valid"), be(0)].concat();
    expect_fatal(
        &mut bad,
        "MPUB with a bad third item",
        &[line("MPUB atomic"), sized(&body)].concat(),
        "E_BAD_MESSAGE MPUB invalid message(2) body size 0",
    );

    let mut publisher = RawClient::connect(server.tcp_address);
    publisher.publish("atomic", b"marker");
    let message = consumer.read_message();
    assert_eq!(
        message.body, b"marker",
        "no part of the failed MPUB may be queued"
    );
    consumer.command(&format!("FIN {}", String::from_utf8_lossy(&message.id)));
    expect_usable(&mut consumer, "consumer after FIN");
}

// ----- DPUB, RDY, FIN / REQ / TOUCH ----------------------------------------------------------

#[test]
fn dpub_timeout_parse_and_range_errors() {
    let (_dir, server) = start(&LIMIT_FLAGS);
    let parse = |x: &str| format!("E_INVALID DPUB could not parse timeout {x}");
    let cases = [
        (line("DPUB t x"), parse("x")),
        (line("DPUB t -1"), parse("-1")),
        (line("DPUB t +1"), parse("+1")),
        (line("DPUB t 1.5"), parse("1.5")),
        (line("DPUB t 1s"), parse("1s")),
        // Inclusive range 0..=max-req-timeout (10s here), checked before the body.
        (
            line("DPUB t 10001"),
            "E_INVALID DPUB timeout 10001 out of range 0-10000".into(),
        ),
        (
            line("DPUB t 3600000"),
            "E_INVALID DPUB timeout 3600000 out of range 0-10000".into(),
        ),
    ];
    let cases: Vec<_> = cases
        .into_iter()
        .map(|(bytes, text)| (State::Init, bytes, text))
        .collect();
    run_fatal_cases(server.tcp_address, &cases);

    let mut client = RawClient::connect(server.tcp_address);
    for accepted in ["DPUB t 10000", "DPUB t 0", "DPUB t 007", "DPUB t "] {
        client.command_with_body(accepted, b"deferred");
        expect_response_in(&mut client, accepted, "OK");
    }
    expect_server_healthy(server.tcp_address);
}

#[test]
fn rdy_count_parse_and_range_errors() {
    let (_dir, server) = start(&LIMIT_FLAGS);
    let parse = |x: &str| format!("E_INVALID RDY could not parse count {x}");
    let cases = [
        (State::Subscribed, line("RDY x"), parse("x")),
        (State::Subscribed, line("RDY -1"), parse("-1")),
        (State::Subscribed, line("RDY +1"), parse("+1")),
        (State::Subscribed, line("RDY 1.0"), parse("1.0")),
        (
            State::Subscribed,
            line("RDY 11"),
            "E_INVALID RDY count 11 out of range 0-10".into(),
        ),
        (
            State::Subscribed,
            line("RDY 2500"),
            "E_INVALID RDY count 2500 out of range 0-10".into(),
        ),
    ];
    run_fatal_cases(server.tcp_address, &cases);

    let mut client = client_in(server.tcp_address, State::Subscribed);
    for accepted in ["RDY 10", "RDY 0", "RDY", "RDY 007"] {
        client.command(accepted);
    }
    expect_usable(&mut client, "after valid RDYs");
    expect_server_healthy(server.tcp_address);
}

#[test]
fn fin_req_touch_malformed_ids_and_timeouts_are_fatal() {
    let (_dir, server) = start(&[]);
    let invalid_id = || "E_INVALID invalid message ID".to_string();
    let cases = [
        (State::Subscribed, line("FIN abc"), invalid_id()),
        (State::Subscribed, line("FIN 0123456789abcde"), invalid_id()),
        (
            State::Subscribed,
            line("FIN 0123456789abcdef0"),
            invalid_id(),
        ),
        (State::Subscribed, line("FIN "), invalid_id()),
        (State::Subscribed, line("TOUCH abc"), invalid_id()),
        (
            State::Subscribed,
            line("TOUCH 0123456789abcdef0"),
            invalid_id(),
        ),
        (State::Subscribed, line("REQ abc 0"), invalid_id()),
        // The ID is checked before the timeout.
        (State::Subscribed, line("REQ abc x"), invalid_id()),
        (
            State::Subscribed,
            line(&format!("REQ {ID} x")),
            "E_INVALID REQ could not parse timeout x".into(),
        ),
        (
            State::Subscribed,
            line(&format!("REQ {ID} -1")),
            "E_INVALID REQ could not parse timeout -1".into(),
        ),
        (State::Closing, line("TOUCH abc"), invalid_id()),
        (State::Closing, line("REQ abc 0"), invalid_id()),
    ];
    run_fatal_cases(server.tcp_address, &cases);
    expect_server_healthy(server.tcp_address);
}

#[test]
fn fin_req_touch_failures_are_non_fatal() {
    let (_dir, server) = start(&[]);
    let address = server.tcp_address;

    // IDs that are not in flight (content is not validated, only the length).
    let mut client = client_in(address, State::Subscribed);
    for id in [ID, "~~~~~~~~~~~~~~~~", "ABCDEFGHIJKLMNOP"] {
        client.command(&format!("FIN {id}"));
        expect_error_in(
            &mut client,
            "FIN",
            &format!("E_FIN_FAILED FIN {id} failed ID not in flight"),
        );
        client.command(&format!("REQ {id} 0"));
        expect_error_in(
            &mut client,
            "REQ",
            &format!("E_REQ_FAILED REQ {id} failed ID not in flight"),
        );
        client.command(&format!("TOUCH {id}"));
        expect_error_in(
            &mut client,
            "TOUCH",
            &format!("E_TOUCH_FAILED TOUCH {id} failed ID not in flight"),
        );
        expect_usable(&mut client, "after E_FIN/REQ/TOUCH_FAILED");
    }

    // A message in flight on another connection of the same channel is not ours.
    let mut owner = RawClient::connect(address);
    owner.subscribe("owned", "c");
    let mut other = RawClient::connect(address);
    other.subscribe("owned", "c");
    owner.command("RDY 1");
    let mut publisher = RawClient::connect(address);
    publisher.publish("owned", b"mine");
    let message = owner.read_message();
    assert_eq!(message.body, b"mine");
    let id = String::from_utf8(message.id.to_vec()).expect("ASCII message ID");
    for (verb, code, suffix) in [
        ("FIN", "E_FIN_FAILED", ""),
        ("REQ", "E_REQ_FAILED", " 0"),
        ("TOUCH", "E_TOUCH_FAILED", ""),
    ] {
        other.command(&format!("{verb} {id}{suffix}"));
        expect_error_in(
            &mut other,
            verb,
            &format!("{code} {verb} {id} failed client does not own message"),
        );
    }
    expect_usable(&mut other, "after not-owner failures");

    // The owner can TOUCH and FIN it; a second FIN is a non-fatal failure.
    owner.command(&format!("TOUCH {id}"));
    owner.command(&format!("FIN {id}"));
    owner.command(&format!("FIN {id}"));
    expect_error_in(
        &mut owner,
        "second FIN",
        &format!("E_FIN_FAILED FIN {id} failed ID not in flight"),
    );
    // A REQ beyond max-req-timeout is clamped, not refused.
    publisher.publish("owned", b"later");
    let message = owner.read_message();
    assert_eq!(message.body, b"later");
    let id = String::from_utf8(message.id.to_vec()).expect("ASCII message ID");
    owner.command(&format!("REQ {id} 999999999999"));
    expect_usable(&mut owner, "after a clamped REQ");
    expect_server_healthy(address);
}

// ----- IDENTIFY, SUB without heartbeats, AUTH ------------------------------------------------

/// Flags with non-default negotiation limits, so the rules are seen to follow them.
/// Compression switched off (and no certificate): IDENTIFY grants no upgrade.
const IDENTIFY_FLAGS: [&str; 10] = [
    "--snappy=false",
    "--deflate=false",
    "--max-heartbeat-interval=5s",
    "--max-msg-timeout=60s",
    "--msg-timeout=30s",
    "--max-rdy-count=10",
    "--max-output-buffer-size=1024",
    "--max-output-buffer-timeout=1s",
    "--min-output-buffer-timeout=50ms",
    "--output-buffer-timeout=100ms",
];

#[test]
fn identify_bad_json_is_fatal() {
    let (_dir, server) = start(&[]);
    let text = "E_BAD_BODY IDENTIFY failed to decode JSON body";
    for json in [
        "{",
        "not json",
        "[]",
        "\"x\"",
        "12",
        "{} x",
        r#"{"heartbeat_interval":"1000"}"#,
        r#"{"heartbeat_interval":1000.5}"#,
        r#"{"feature_negotiation":"true"}"#,
        r#"{"client_id":5}"#,
    ] {
        let mut client = RawClient::connect(server.tcp_address);
        let bytes = [line("IDENTIFY"), sized(json.as_bytes())].concat();
        expect_fatal(&mut client, json, &bytes, text);
    }
    expect_server_healthy(server.tcp_address);
}

#[test]
fn identify_negotiation_rules_are_enforced_in_nsqd_order() {
    let (_dir, server) = start(&IDENTIFY_FLAGS);
    let cases = [
        (
            r#"{"heartbeat_interval":999}"#,
            "heartbeat interval (999) is invalid",
        ),
        (
            r#"{"heartbeat_interval":5001}"#,
            "heartbeat interval (5001) is invalid",
        ),
        (
            r#"{"heartbeat_interval":-2}"#,
            "heartbeat interval (-2) is invalid",
        ),
        (
            r#"{"output_buffer_size":63}"#,
            "output buffer size (63) is invalid",
        ),
        (
            r#"{"output_buffer_size":1025}"#,
            "output buffer size (1025) is invalid",
        ),
        (
            r#"{"output_buffer_size":-2}"#,
            "output buffer size (-2) is invalid",
        ),
        (
            r#"{"output_buffer_timeout":49}"#,
            "output buffer timeout (49) is invalid",
        ),
        (
            r#"{"output_buffer_timeout":1001}"#,
            "output buffer timeout (1001) is invalid",
        ),
        (
            r#"{"output_buffer_timeout":-2}"#,
            "output buffer timeout (-2) is invalid",
        ),
        (r#"{"sample_rate":100}"#, "sample rate (100) is invalid"),
        (r#"{"sample_rate":-1}"#, "sample rate (-1) is invalid"),
        (r#"{"msg_timeout":999}"#, "msg timeout (999) is invalid"),
        (r#"{"msg_timeout":60001}"#, "msg timeout (60001) is invalid"),
        (r#"{"msg_timeout":-1}"#, "msg timeout (-1) is invalid"),
        // Order: heartbeat, output buffer timeout, output buffer size, sample rate, msg timeout.
        (
            r#"{"msg_timeout":1,"sample_rate":100,"output_buffer_size":1,"output_buffer_timeout":1,"heartbeat_interval":1}"#,
            "heartbeat interval (1) is invalid",
        ),
        (
            r#"{"msg_timeout":1,"sample_rate":100,"output_buffer_size":1,"output_buffer_timeout":1}"#,
            "output buffer timeout (1) is invalid",
        ),
        (
            r#"{"msg_timeout":1,"sample_rate":100,"output_buffer_size":1}"#,
            "output buffer size (1) is invalid",
        ),
        (
            r#"{"msg_timeout":1,"sample_rate":100}"#,
            "sample rate (100) is invalid",
        ),
    ];
    for (json, reason) in cases {
        let mut client = RawClient::connect(server.tcp_address);
        let bytes = [line("IDENTIFY"), sized(json.as_bytes())].concat();
        expect_fatal(
            &mut client,
            json,
            &bytes,
            &format!("E_BAD_BODY IDENTIFY {reason}"),
        );
    }
    expect_server_healthy(server.tcp_address);
}

#[test]
fn identify_reply_lists_negotiated_values_in_nsqd_key_order() {
    let (_dir, server) = start(&IDENTIFY_FLAGS);
    let reply = |msg_timeout: u64, sample_rate: u32, size: u64, timeout: u64| {
        format!(
            concat!(
                r#"{{"max_rdy_count":10,"version":"1.3.0","max_msg_timeout":60000,"#,
                r#""msg_timeout":{},"tls_v1":false,"deflate":false,"deflate_level":6,"#,
                r#""max_deflate_level":6,"snappy":false,"sample_rate":{},"auth_required":false,"#,
                r#""output_buffer_size":{},"output_buffer_timeout":{}}}"#
            ),
            msg_timeout, sample_rate, size, timeout
        )
    };
    let cases = [
        // Defaults: --msg-timeout and --output-buffer-timeout; the default buffer size.
        (r#"{"feature_negotiation":true}"#.to_string(), reply(30_000, 0, 16_384, 100)),
        // Upper bounds; compression and TLS are not offered; heartbeat is not echoed.
        (
            concat!(
                r#"{"feature_negotiation":true,"heartbeat_interval":5000,"output_buffer_size":1024,"#,
                r#""output_buffer_timeout":1000,"sample_rate":99,"msg_timeout":60000,"#,
                r#""tls_v1":true,"snappy":true,"deflate":true,"deflate_level":9}"#
            )
            .to_string(),
            reply(60_000, 99, 1024, 1000),
        ),
        // Lower bounds.
        (
            concat!(
                r#"{"feature_negotiation":true,"heartbeat_interval":1000,"output_buffer_size":64,"#,
                r#""output_buffer_timeout":50,"sample_rate":1,"msg_timeout":1000}"#
            )
            .to_string(),
            reply(1000, 1, 64, 50),
        ),
        // -1 disables: unbuffered output (size 1, timeout forced to 0), no heartbeats.
        (
            concat!(
                r#"{"feature_negotiation":true,"heartbeat_interval":-1,"output_buffer_size":-1,"#,
                r#""output_buffer_timeout":500}"#
            )
            .to_string(),
            reply(30_000, 0, 1, 0),
        ),
        (
            r#"{"feature_negotiation":true,"output_buffer_size":128,"output_buffer_timeout":-1}"#
                .to_string(),
            reply(30_000, 0, 128, 0),
        ),
        // Without feature negotiation: plain OK; unknown keys (go-nsq's short_id...) ignored.
        ("{}".to_string(), "OK".to_string()),
        (
            r#"{"feature_negotiation":false,"short_id":"a","long_id":"b","x":{"y":[1]}}"#
                .to_string(),
            "OK".to_string(),
        ),
        (
            r#"{"client_id":"c","hostname":"h","user_agent":"go-nsq/1.1.0","msg_timeout":0}"#
                .to_string(),
            "OK".to_string(),
        ),
    ];
    for (json, expected) in cases {
        let mut client = RawClient::connect(server.tcp_address);
        let data = client.identify(&json);
        assert_eq!(String::from_utf8_lossy(&data), expected, "IDENTIFY {json}");
        expect_usable(&mut client, &json);
    }
}

#[test]
fn sub_is_refused_when_heartbeats_are_disabled() {
    let (_dir, server) = start(&[]);
    for sub in ["SUB t c", "SUB", "SUB bad! bad!"] {
        let mut client = RawClient::connect(server.tcp_address);
        assert_eq!(client.identify(r#"{"heartbeat_interval":-1}"#), b"OK");
        expect_usable(&mut client, "publishing without heartbeats");
        // Checked after the state and before the parameters.
        expect_fatal(
            &mut client,
            sub,
            &line(sub),
            "E_INVALID cannot SUB with heartbeats disabled",
        );
    }
    // The state check still comes first.
    let mut client = RawClient::connect(server.tcp_address);
    client.subscribe("t", "c");
    expect_fatal(
        &mut client,
        "IDENTIFY after SUB",
        &[line("IDENTIFY"), sized(br#"{"heartbeat_interval":-1}"#)].concat(),
        "E_INVALID cannot IDENTIFY in current state",
    );
    expect_server_healthy(server.tcp_address);
}

#[test]
fn auth_is_disabled_after_its_parameter_and_body_checks() {
    let (_dir, server) = start(&[]);
    let disabled = "E_AUTH_DISABLED AUTH disabled";
    // Before IDENTIFY (allowed) and after it.
    let mut client = RawClient::connect(server.tcp_address);
    expect_fatal(
        &mut client,
        "AUTH first",
        &[line("AUTH"), sized(b"secret")].concat(),
        disabled,
    );
    let mut client = RawClient::connect(server.tcp_address);
    client.identify(r#"{"feature_negotiation":true}"#);
    expect_fatal(
        &mut client,
        "AUTH after IDENTIFY",
        &[line("AUTH"), sized(b"s")].concat(),
        disabled,
    );
    // Parameters and body size are checked first.
    let mut client = RawClient::connect(server.tcp_address);
    expect_fatal(
        &mut client,
        "AUTH with params",
        &line("AUTH a b"),
        "E_INVALID AUTH invalid number of parameters",
    );
    let mut client = RawClient::connect(server.tcp_address);
    expect_fatal(
        &mut client,
        "AUTH empty body",
        &[line("AUTH"), be(0)].concat(),
        "E_BAD_BODY AUTH invalid body size 0",
    );
    expect_server_healthy(server.tcp_address);
}

// ----- heartbeats and read deadlines ---------------------------------------------------------

#[test]
fn identify_heartbeat_interval_sets_the_heartbeat_period_and_commands_keep_it_alive() {
    let (_dir, server) = start(&[]);
    let mut client = RawClient::connect(server.tcp_address);
    client.identify(r#"{"heartbeat_interval":1000}"#);
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let start = Instant::now();
    // Four heartbeats, each answered with NOP: > 2 intervals, so the NOPs reset the deadline.
    for beat in 1..=4u32 {
        match next_frame_or_close(&mut client) {
            Ok(Some(frame)) => assert!(is_heartbeat(&frame), "got {:?}", frame_text(&frame)),
            Ok(None) => panic!("closed before heartbeat {beat} although NOPs were sent"),
            Err(error) => panic!("heartbeat {beat} not received within 5 s: {error}"),
        }
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(800) * beat
                && elapsed < Duration::from_millis(2500) * beat,
            "heartbeat {beat} at {elapsed:?} with a 1000 ms interval"
        );
        client.command("NOP");
    }
    expect_usable(&mut client, "after heartbeats");
}

#[test]
fn stalled_clients_get_nsqd_read_failures_after_twice_the_heartbeat_interval() {
    let (_dir, server) = start(&[]);
    let address = server.tcp_address;
    // (partial command, expected error frame; None = close without error frame).
    let cases: Vec<(Vec<u8>, Option<&str>)> = vec![
        (Vec::new(), None),
        (b"PU".to_vec(), None),
        (
            [line("PUB stall"), vec![0, 0]].concat(),
            Some("E_BAD_MESSAGE PUB failed to read message body size"),
        ),
        (
            [line("PUB stall"), be(100), vec![b'x'; 10]].concat(),
            Some("E_BAD_MESSAGE PUB failed to read message body"),
        ),
        (
            [line("MPUB stall"), be(100), be(2), be(10), b"abc".to_vec()].concat(),
            Some("E_BAD_MESSAGE MPUB failed to read message body"),
        ),
        (
            [line("IDENTIFY"), be(50), b"{".to_vec()].concat(),
            Some("E_BAD_BODY IDENTIFY failed to read body"),
        ),
    ];
    let stalls: Vec<JoinHandle<()>> = cases
        .into_iter()
        .map(|(bytes, expected)| {
            std::thread::spawn(move || {
                let case = format!("stall after {:?}", String::from_utf8_lossy(&bytes));
                let mut client = RawClient::connect(address);
                client.identify(r#"{"heartbeat_interval":1000}"#);
                let sent = Instant::now();
                client.send(&bytes);
                if let Some(text) = expected {
                    client
                        .stream
                        .set_read_timeout(Some(CLOSE_DEADLINE))
                        .unwrap();
                    expect_error_in(&mut client, &case, text);
                }
                expect_eof(&mut client, &case);
                let elapsed = sent.elapsed();
                assert!(
                    elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(8),
                    "{case}: closed after {elapsed:?}, read deadline is 2 x 1000 ms"
                );
            })
        })
        .collect();
    for stall in stalls {
        stall.join().expect("stall case failed");
    }
    expect_server_healthy(address);
}

// ----- robustness ------------------------------------------------------------------------------

/// A publisher and a consumer that keep a message round-trip going until stopped.
struct Healthy {
    round_trips: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Healthy {
    fn start(address: SocketAddr) -> Healthy {
        let round_trips = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut consumer = RawClient::connect(address);
        consumer.subscribe("healthy", "c");
        consumer.command("RDY 1");
        let mut publisher = RawClient::connect(address);
        let thread = {
            let (round_trips, stop) = (round_trips.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let body = format!("healthy-{i}");
                    publisher.publish("healthy", body.as_bytes());
                    let message = consumer.read_message();
                    assert_eq!(message.body, body.as_bytes());
                    consumer.command(&format!("FIN {}", String::from_utf8_lossy(&message.id)));
                    i += 1;
                    round_trips.store(i, Ordering::SeqCst);
                }
            })
        };
        Healthy {
            round_trips,
            stop,
            thread,
        }
    }

    /// Waits for a few more round trips (and fails fast if the loop died).
    fn expect_progress(&self, after: &str) {
        let target = self.round_trips.load(Ordering::SeqCst) + 3;
        wait_until(&format!("healthy round trips after {after}"), || {
            self.thread.is_finished() || self.round_trips.load(Ordering::SeqCst) >= target
        });
        assert!(
            !self.thread.is_finished(),
            "healthy client died during {after}"
        );
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("healthy client failed");
        self.round_trips.load(Ordering::SeqCst)
    }
}

#[test]
fn bad_input_disturbs_neither_healthy_clients_nor_acknowledged_messages() {
    let (_dir, server) = start(&[]);
    let address = server.tcp_address;
    let pid = server.pid();

    // Messages acknowledged before any bad input, kept in a channel without subscriber.
    let mut keeper = RawClient::connect(address);
    keeper.subscribe("durable", "keep");
    drop(keeper);
    let mut publisher = RawClient::connect(address);
    let mut acknowledged = BTreeSet::new();
    for i in 0..20 {
        let body = format!("durable-{i}").into_bytes();
        publisher.publish("durable", &body);
        acknowledged.insert(body);
    }
    let batch: Vec<Vec<u8>> = (20..30)
        .map(|i| format!("durable-{i}").into_bytes())
        .collect();
    let items: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
    publish_mpub(&mut publisher, "durable", &items);
    acknowledged.extend(batch.iter().cloned());

    let healthy = Healthy::start(address);
    healthy.expect_progress("start");

    // 1. ~2 GB (and negative) length prefixes: refused at once, nothing allocated.
    let rss_before = proc_status_kib(pid, "VmRSS");
    let hwm_before = proc_status_kib(pid, "VmHWM");
    let huge = [
        (
            line("PUB big"),
            be(i32::MAX),
            "E_BAD_MESSAGE PUB message too big 2147483647 > 1048576",
        ),
        (
            line("DPUB big 0"),
            be(i32::MAX),
            "E_BAD_MESSAGE DPUB message too big 2147483647 > 1048576",
        ),
        (
            line("MPUB big"),
            be(i32::MAX),
            "E_BAD_BODY MPUB body too big 2147483647 > 5242880",
        ),
        (
            line("IDENTIFY"),
            be(i32::MAX),
            "E_BAD_BODY IDENTIFY body too big 2147483647 > 5242880",
        ),
        (
            line("AUTH"),
            be(i32::MAX),
            "E_BAD_BODY AUTH body too big 2147483647 > 5242880",
        ),
        (
            line("MPUB big"),
            [be(8), be(1), be(i32::MAX)].concat(),
            "E_BAD_MESSAGE MPUB message too big 2147483647 > 1048576",
        ),
        (
            line("PUB big"),
            vec![0xff; 4],
            "E_BAD_MESSAGE PUB invalid message body size -1",
        ),
        (
            line("PUB big"),
            vec![0x80, 0, 0, 0],
            "E_BAD_MESSAGE PUB invalid message body size -2147483648",
        ),
    ];
    for _round in 0..4 {
        for (command, prefix, text) in &huge {
            let mut client = RawClient::connect(address);
            expect_fatal(
                &mut client,
                text,
                &[command.clone(), prefix.clone()].concat(),
                text,
            );
        }
    }
    let rss_after = proc_status_kib(pid, "VmRSS");
    let hwm_after = proc_status_kib(pid, "VmHWM");
    assert!(
        rss_after < rss_before + 64 * 1024 && hwm_after < hwm_before + 64 * 1024,
        "server memory jumped: VmRSS {rss_before} -> {rss_after} kB, VmHWM {hwm_before} -> {hwm_after} kB"
    );
    healthy.expect_progress("huge length prefixes");

    // 2. Silent and half-line clients are closed after 2 x heartbeat, without an error frame.
    let stalls: Vec<JoinHandle<()>> = [&b""[..], b"PUB sta", b"NOP"]
        .into_iter()
        .map(|bytes| {
            std::thread::spawn(move || {
                let mut client = RawClient::connect(address);
                client.identify(r#"{"heartbeat_interval":1000}"#);
                client.send(bytes);
                let sent = Instant::now();
                expect_eof(&mut client, &format!("stall after {bytes:?}"));
                assert!(
                    sent.elapsed() >= Duration::from_millis(1500),
                    "closed too early"
                );
            })
        })
        .collect();

    // 3. A line longer than 16 KiB closes the connection without an error frame.
    let mut long = RawClient::connect(address);
    let _ = long.stream.write_all(&vec![b'A'; 17 * 1024]);
    expect_eof(&mut long, "17 KiB line");

    // 4. A subscriber with RDY that never reads its socket, while 19 MB flow to another channel.
    let mut slow = RawClient::connect(address);
    slow.subscribe("flood", "slow");
    slow.command("RDY 2500");
    let mut fast = RawClient::connect(address);
    fast.subscribe("flood", "fast");
    fast.command("RDY 100");
    const FLOOD_MESSAGES: usize = 300;
    const FLOOD_BATCH: usize = 50;
    let fast_reader = std::thread::spawn(move || {
        let mut seen = BTreeSet::new();
        while seen.len() < FLOOD_MESSAGES {
            let message = fast.read_message();
            assert_eq!(message.body.len(), 64 * 1024);
            seen.insert(message.body[..8].to_vec());
            fast.command(&format!("FIN {}", String::from_utf8_lossy(&message.id)));
        }
        seen.len()
    });
    let mut flooder = RawClient::connect(address);
    for batch in 0..FLOOD_MESSAGES / FLOOD_BATCH {
        let bodies: Vec<Vec<u8>> = (0..FLOOD_BATCH)
            .map(|i| {
                let mut body = format!("{:08}", batch * FLOOD_BATCH + i).into_bytes();
                body.resize(64 * 1024, b'f');
                body
            })
            .collect();
        let items: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        publish_mpub(&mut flooder, "flood", &items);
        healthy.expect_progress("flood batch");
    }
    assert_eq!(
        fast_reader.join().expect("fast consumer failed"),
        FLOOD_MESSAGES
    );
    healthy.expect_progress("the flood");
    // The flood really was pushed at the non-reading socket (so something could block).
    let unread_bytes = unread_bytes(&slow);
    assert!(
        unread_bytes >= 64 * 1024,
        "the non-reading subscriber was sent only {unread_bytes} bytes"
    );
    for stall in stalls {
        stall.join().expect("stall case failed");
    }
    drop(slow);

    // 5. Fatal errors on other connections leave a fresh connection working.
    expect_server_healthy(address);
    publisher.publish("durable_other", b"after everything");
    healthy.expect_progress("everything");
    assert!(healthy.stop() > 0);

    // 6. Everything acknowledged at the start is still delivered.
    let mut consumer = RawClient::connect(address);
    consumer.subscribe("durable", "keep");
    consumer.command("RDY 100");
    let mut delivered = BTreeSet::new();
    while delivered.len() < acknowledged.len() {
        let message = consumer.read_message();
        consumer.command(&format!("FIN {}", String::from_utf8_lossy(&message.id)));
        delivered.insert(message.body);
    }
    assert_eq!(delivered, acknowledged);
    expect_usable(&mut consumer, "after draining");
}
