//! The admin endpoints against the real binary: `/topic/pause|unpause|delete`
//! and `/channel/pause|unpause|delete` — nsqd's errors, what pausing and
//! deleting do to delivery, and that both survive a SIGKILL.
//!
//! The server is started here (as in `http_api.rs`) so that its logged
//! `http_address` can be read; TCP checks use `common::RawClient`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{RawClient, DEADLINE};

/// A `ledgerq serve` child listening on loopback TCP and HTTP ports.
struct HttpServer {
    child: Child,
    tcp_address: SocketAddr,
    http_address: SocketAddr,
}

impl HttpServer {
    fn start(data_dir: &Path, extra_args: &[&str]) -> HttpServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ledgerq"))
            .arg("serve")
            .arg("--tcp-address=127.0.0.1:0")
            .arg("--http-address=127.0.0.1:0")
            .arg(format!("--data-path={}", data_dir.display()))
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ledgerq");
        let stderr = child.stderr.take().expect("stderr piped");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("LEDGERQ_TEST_LOG").is_some() {
                    eprintln!("[ledgerq] {line}");
                }
                for (marker, field) in [
                    ("TCP: listening", "tcp_address="),
                    ("HTTP: listening", "http_address="),
                ] {
                    if let Some(address) = logged_address(&line, marker, field) {
                        let _ = sender.send((marker, address));
                    }
                }
            }
        });
        let (mut tcp_address, mut http_address) = (None, None);
        while tcp_address.is_none() || http_address.is_none() {
            let (marker, address) = receiver
                .recv_timeout(DEADLINE)
                .expect("ledgerq did not report its listening addresses");
            if marker.starts_with("TCP") {
                tcp_address = Some(address);
            } else {
                http_address = Some(address);
            }
        }
        HttpServer {
            child,
            tcp_address: tcp_address.unwrap(),
            http_address: http_address.unwrap(),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn request(&self, method: &str, target: &str, body: &[u8]) -> Response {
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let mut raw = head.into_bytes();
        raw.extend_from_slice(body);
        exchange(self.http_address, &raw)
    }

    fn post(&self, target: &str, body: &[u8]) -> Response {
        self.request("POST", target, body)
    }

    fn get(&self, target: &str) -> Response {
        self.request("GET", target, b"")
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn logged_address(line: &str, marker: &str, field: &str) -> Option<SocketAddr> {
    if !line.contains(marker) {
        return None;
    }
    let rest = &line[line.find(field)? + field.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Asserts nsqd's V1 error shape.
    fn assert_error(&self, status: u16, message: &str) {
        assert_eq!(
            (self.status, self.body.as_str()),
            (status, format!(r#"{{"message":"{message}"}}"#).as_str()),
            "{self:?}"
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(self.header("x-nsq-content-type"), Some("nsq; version=1.0"));
    }

    /// Asserts a V1 `OK`.
    fn assert_ok(&self) {
        assert_eq!((self.status, self.body.as_str()), (200, "OK"), "{self:?}");
        assert_eq!(self.header("x-nsq-content-type"), Some("nsq; version=1.0"));
        assert_eq!(
            self.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
    }

    /// Asserts a V1 empty 200.
    fn assert_empty(&self) {
        assert_eq!((self.status, self.body.as_str()), (200, ""), "{self:?}");
        assert_eq!(self.header("x-nsq-content-type"), Some("nsq; version=1.0"));
        assert_eq!(self.header("content-type"), None);
    }
}

/// Sends raw request bytes on a new connection and reads the response up
/// to the end of the stream (requests say `Connection: close`).
fn exchange(address: SocketAddr, raw: &[u8]) -> Response {
    let mut stream = TcpStream::connect(address).expect("connect HTTP");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(raw).expect("send request");
    let mut data = Vec::new();
    // The server may answer (and close) before reading a refused body.
    let _ = stream.read_to_end(&mut data);
    parse_response(&data)
}

fn parse_response(data: &[u8]) -> Response {
    let text = String::from_utf8_lossy(data);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(key, value)| {
        key.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

fn subscriber(server: &HttpServer, topic: &str, channel: &str) -> RawClient {
    let mut client = RawClient::connect(server.tcp_address);
    client.subscribe(topic, channel);
    client.command("RDY 100");
    client
}

/// Asserts that nothing reaches `consumer`: a negative check, so it gives
/// a delivery that should not happen some time to show up first.
fn assert_quiet(consumer: &mut RawClient) {
    std::thread::sleep(Duration::from_millis(200));
    let messages = consumer.read_barrier();
    assert!(messages.is_empty(), "unexpected deliveries: {messages:?}");
}

fn body_text(consumer: &mut RawClient) -> String {
    String::from_utf8(consumer.read_message().body).unwrap()
}

#[test]
fn topic_endpoint_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    for path in ["/topic/pause", "/topic/unpause", "/topic/delete"] {
        server
            .post(path, b"")
            .assert_error(400, "MISSING_ARG_TOPIC");
        server
            .post(&format!("{path}?channel=c"), b"")
            .assert_error(400, "MISSING_ARG_TOPIC");
        server
            .post(&format!("{path}?topic=nope"), b"")
            .assert_error(404, "TOPIC_NOT_FOUND");
        // nsqd does not check the name here: an invalid one is not found.
        server
            .post(&format!("{path}?topic=a*b"), b"")
            .assert_error(404, "TOPIC_NOT_FOUND");
        server
            .post(&format!("{path}?topic="), b"")
            .assert_error(404, "TOPIC_NOT_FOUND");
        server
            .get(&format!("{path}?topic=nope"))
            .assert_error(405, "METHOD_NOT_ALLOWED");
        server
            .request("PUT", &format!("{path}?topic=nope"), b"")
            .assert_error(405, "METHOD_NOT_ALLOWED");
        server
            .post(&format!("{path}?topic=%zz"), b"")
            .assert_error(400, "INVALID_REQUEST");
    }
}

#[test]
fn channel_endpoint_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    server.post("/topic/create?topic=t", b"").assert_empty();
    for path in ["/channel/pause", "/channel/unpause", "/channel/delete"] {
        server
            .post(&format!("{path}?channel=c"), b"")
            .assert_error(400, "MISSING_ARG_TOPIC");
        server
            .post(&format!("{path}?topic=a*b&channel=c"), b"")
            .assert_error(400, "INVALID_ARG_TOPIC");
        server
            .post(&format!("{path}?topic=t"), b"")
            .assert_error(400, "MISSING_ARG_CHANNEL");
        server
            .post(&format!("{path}?topic=t&channel=a*b"), b"")
            .assert_error(400, "INVALID_ARG_CHANNEL");
        server
            .post(&format!("{path}?topic=nope&channel=c"), b"")
            .assert_error(404, "TOPIC_NOT_FOUND");
        server
            .post(&format!("{path}?topic=t&channel=c"), b"")
            .assert_error(404, "CHANNEL_NOT_FOUND");
        server
            .get(&format!("{path}?topic=t&channel=c"))
            .assert_error(405, "METHOD_NOT_ALLOWED");
    }
}

#[test]
fn topic_pause_holds_messages_until_unpause() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    let mut consumer = subscriber(&server, "orders", "audit");
    server.post("/pub?topic=orders", b"before").assert_ok();
    assert_eq!(body_text(&mut consumer), "before");

    server.post("/topic/pause?topic=orders", b"").assert_empty();
    server.post("/topic/pause?topic=orders", b"").assert_empty();
    server.post("/pub?topic=orders", b"one").assert_ok();
    server.post("/mpub?topic=orders", b"two\nthree").assert_ok();
    assert_quiet(&mut consumer);

    // A channel created while the topic is paused sees none of the held
    // messages either, until the topic hands them over.
    server
        .post("/channel/create?topic=orders&channel=late", b"")
        .assert_empty();
    let mut late = subscriber(&server, "orders", "late");
    assert_quiet(&mut late);

    server
        .post("/topic/unpause?topic=orders", b"")
        .assert_empty();
    for expected in ["one", "two", "three"] {
        assert_eq!(body_text(&mut consumer), expected);
        assert_eq!(body_text(&mut late), expected);
    }
    server.post("/pub?topic=orders", b"after").assert_ok();
    assert_eq!(body_text(&mut consumer), "after");
}

#[test]
fn channel_pause_stops_delivery_but_not_fin() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    let mut paused = subscriber(&server, "t", "paused");
    let mut other = subscriber(&server, "t", "other");
    server.post("/pub?topic=t", b"one").assert_ok();
    let in_flight = paused.read_message();
    assert_eq!(body_text(&mut other), "one");

    server
        .post("/channel/pause?topic=t&channel=paused", b"")
        .assert_empty();
    server.post("/pub?topic=t", b"two").assert_ok();
    assert_eq!(body_text(&mut other), "two");
    // The in-flight message can still be finished (no error before the
    // barrier's own), and nothing new arrives.
    paused.finish(&in_flight);
    assert_quiet(&mut paused);

    server
        .post("/channel/unpause?topic=t&channel=paused", b"")
        .assert_empty();
    assert_eq!(body_text(&mut paused), "two");
}

#[test]
fn pause_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = HttpServer::start(dir.path(), &[]);
    for (topic, channel) in [("held", "c"), ("quiet", "c")] {
        server
            .post(&format!("/topic/create?topic={topic}"), b"")
            .assert_empty();
        server
            .post(
                &format!("/channel/create?topic={topic}&channel={channel}"),
                b"",
            )
            .assert_empty();
    }
    server.post("/topic/pause?topic=held", b"").assert_empty();
    server
        .post("/channel/pause?topic=quiet&channel=c", b"")
        .assert_empty();
    server.post("/pub?topic=held", b"h").assert_ok();
    server.post("/pub?topic=quiet", b"q").assert_ok();
    server.kill();

    let server = HttpServer::start(dir.path(), &[]);
    let mut held = subscriber(&server, "held", "c");
    let mut quiet = subscriber(&server, "quiet", "c");
    assert_quiet(&mut held);
    assert_quiet(&mut quiet);
    server.post("/topic/unpause?topic=held", b"").assert_empty();
    server
        .post("/channel/unpause?topic=quiet&channel=c", b"")
        .assert_empty();
    assert_eq!(body_text(&mut held), "h");
    assert_eq!(body_text(&mut quiet), "q");
}

#[test]
fn channel_delete_disconnects_and_forgets() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = HttpServer::start(dir.path(), &[]);
    let mut doomed = subscriber(&server, "t", "doomed");
    let mut kept = subscriber(&server, "t", "kept");
    server.post("/pub?topic=t", b"one").assert_ok();
    let _in_flight = doomed.read_message();
    assert_eq!(body_text(&mut kept), "one");

    server
        .post("/channel/delete?topic=t&channel=doomed", b"")
        .assert_empty();
    doomed.expect_closed();
    server
        .post("/channel/delete?topic=t&channel=doomed", b"")
        .assert_error(404, "CHANNEL_NOT_FOUND");
    server
        .post("/channel/pause?topic=t&channel=doomed", b"")
        .assert_error(404, "CHANNEL_NOT_FOUND");

    // The other channel is untouched; a new channel of the same name starts
    // empty, at the head of the topic.
    server.post("/pub?topic=t", b"two").assert_ok();
    assert_eq!(body_text(&mut kept), "two");
    let mut again = subscriber(&server, "t", "doomed");
    assert_quiet(&mut again);
    server.post("/pub?topic=t", b"three").assert_ok();
    assert_eq!(body_text(&mut again), "three");
    assert_eq!(body_text(&mut kept), "three");

    // The deletion is durable: after a SIGKILL, the old channel's unfinished
    // "one" does not come back.
    drop((again, kept));
    server.kill();
    let server = HttpServer::start(dir.path(), &[]);
    let mut after = subscriber(&server, "t", "doomed");
    assert_eq!(body_text(&mut after), "three");
    assert_quiet(&mut after);
}

#[test]
fn topic_delete_disconnects_and_drops_messages() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = HttpServer::start(dir.path(), &[]);
    let mut consumer = subscriber(&server, "gone", "c");
    let mut producer = RawClient::connect(server.tcp_address);
    producer.publish("gone", b"one");
    let _in_flight = consumer.read_message();
    server.post("/topic/pause?topic=gone", b"").assert_empty();
    server.post("/mpub?topic=gone", b"two\nthree").assert_ok();

    server.post("/topic/delete?topic=gone", b"").assert_empty();
    consumer.expect_closed();
    server
        .post("/topic/delete?topic=gone", b"")
        .assert_error(404, "TOPIC_NOT_FOUND");
    server
        .post("/topic/unpause?topic=gone", b"")
        .assert_error(404, "TOPIC_NOT_FOUND");
    server
        .post("/channel/create?topic=gone&channel=c", b"")
        .assert_error(404, "TOPIC_NOT_FOUND");

    // Publishing again (the producer's connection is unaffected) creates a
    // new, empty, unpaused topic.
    producer.publish("gone", b"four");
    let mut fresh = subscriber(&server, "gone", "c");
    assert_eq!(body_text(&mut fresh), "four");
    assert_quiet(&mut fresh);

    // Deleted for good: after a SIGKILL and a second delete, nothing is left.
    drop(fresh);
    server.kill();
    let mut server = HttpServer::start(dir.path(), &[]);
    let mut after = subscriber(&server, "gone", "c");
    assert_eq!(body_text(&mut after), "four");
    drop(after);
    server.post("/topic/delete?topic=gone", b"").assert_empty();
    server.kill();
    let server = HttpServer::start(dir.path(), &[]);
    server
        .post("/topic/pause?topic=gone", b"")
        .assert_error(404, "TOPIC_NOT_FOUND");
}

#[test]
fn ephemeral_topics_and_channels() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    let topic = "e%23ephemeral";
    let mut consumer = subscriber(&server, "e#ephemeral", "c");
    server
        .post(&format!("/topic/pause?topic={topic}"), b"")
        .assert_empty();
    server
        .post(&format!("/pub?topic={topic}"), b"one")
        .assert_ok();
    assert_quiet(&mut consumer);
    server
        .post(&format!("/topic/unpause?topic={topic}"), b"")
        .assert_empty();
    assert_eq!(body_text(&mut consumer), "one");

    server
        .post(&format!("/channel/pause?topic={topic}&channel=c"), b"")
        .assert_empty();
    server
        .post(&format!("/pub?topic={topic}"), b"two")
        .assert_ok();
    assert_quiet(&mut consumer);
    server
        .post(&format!("/channel/unpause?topic={topic}&channel=c"), b"")
        .assert_empty();
    assert_eq!(body_text(&mut consumer), "two");

    // The last channel of an ephemeral topic takes the topic with it.
    server
        .post(&format!("/channel/delete?topic={topic}&channel=c"), b"")
        .assert_empty();
    consumer.expect_closed();
    server
        .post(&format!("/topic/delete?topic={topic}"), b"")
        .assert_error(404, "TOPIC_NOT_FOUND");

    // An ephemeral channel of a durable topic.
    let mut ephemeral = subscriber(&server, "d", "c#ephemeral");
    server
        .post("/channel/delete?topic=d&channel=c%23ephemeral", b"")
        .assert_empty();
    ephemeral.expect_closed();
    server.post("/topic/delete?topic=d", b"").assert_empty();
    server
        .post("/topic/delete?topic=d", b"")
        .assert_error(404, "TOPIC_NOT_FOUND");
}
