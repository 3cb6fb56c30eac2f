//! `/topic/empty` and `/channel/empty` against the real binary: nsqd's
//! errors; what emptying drops (the topic's waiting messages; the channel's
//! backlog, in-flight and deferred messages) and what it keeps; that new
//! publishes still flow and that the drop survives a SIGKILL.
//!
//! The helpers are those of `http_admin.rs`.

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

fn subscriber_with_rdy(server: &HttpServer, topic: &str, channel: &str, rdy: u32) -> RawClient {
    let mut client = RawClient::connect(server.tcp_address);
    client.subscribe(topic, channel);
    client.command(&format!("RDY {rdy}"));
    client
}

fn id_text(message: &common::RawMessage) -> String {
    String::from_utf8_lossy(&message.id).into_owned()
}

/// FIN of a message the server no longer has in flight.
fn expect_fin_failed(client: &mut RawClient, message: &common::RawMessage) {
    let id = id_text(message);
    client.command(&format!("FIN {id}"));
    client.expect_error(&format!("E_FIN_FAILED FIN {id} failed ID not in flight"));
}

#[test]
fn topic_empty_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    let path = "/topic/empty";
    server
        .post(path, b"")
        .assert_error(400, "MISSING_ARG_TOPIC");
    server
        .post(&format!("{path}?channel=c"), b"")
        .assert_error(400, "MISSING_ARG_TOPIC");
    // Unlike pause and delete, empty checks the name (nsqd's spelling).
    server
        .post(&format!("{path}?topic=a*b"), b"")
        .assert_error(400, "INVALID_TOPIC");
    server
        .post(&format!("{path}?topic="), b"")
        .assert_error(400, "INVALID_TOPIC");
    server
        .post(&format!("{path}?topic=nope"), b"")
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
    // An existing, empty topic: nothing to drop, still 200.
    server.post("/topic/create?topic=t", b"").assert_empty();
    server.post("/topic/empty?topic=t", b"").assert_empty();
}

#[test]
fn channel_empty_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    server.post("/topic/create?topic=t", b"").assert_empty();
    let path = "/channel/empty";
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
    server
        .post("/channel/create?topic=t&channel=c", b"")
        .assert_empty();
    server
        .post(&format!("{path}?topic=t&channel=c"), b"")
        .assert_empty();
}

#[test]
fn channel_empty_drops_backlog_in_flight_and_deferred_durably() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = HttpServer::start(dir.path(), &[]);
    server.post("/topic/create?topic=t", b"").assert_empty();
    for channel in ["c", "other"] {
        server
            .post(&format!("/channel/create?topic=t&channel={channel}"), b"")
            .assert_empty();
    }
    let mut consumer = subscriber_with_rdy(&server, "t", "c", 1);
    server.post("/mpub?topic=t", b"a\nb").assert_ok();
    server.post("/pub?topic=t&defer=500", b"later").assert_ok();
    let in_flight = consumer.read_message();
    assert_eq!(in_flight.body, b"a");

    server
        .post("/channel/empty?topic=t&channel=c", b"")
        .assert_empty();
    // The in-flight message is gone: its FIN fails (non-fatal), and neither
    // the backlog nor the deferred message is delivered.
    expect_fin_failed(&mut consumer, &in_flight);
    std::thread::sleep(Duration::from_millis(700));
    assert_quiet(&mut consumer);

    // The client's in-flight slot was given back: new messages flow.
    server.post("/pub?topic=t", b"new").assert_ok();
    let fresh = consumer.read_message();
    assert_eq!(fresh.body, b"new");
    consumer.finish(&fresh);
    assert_quiet(&mut consumer);

    // After a SIGKILL the emptied channel stays empty; the other channel
    // was untouched and still has everything.
    drop(consumer);
    server.kill();
    let server = HttpServer::start(dir.path(), &[]);
    let mut consumer = subscriber(&server, "t", "c");
    let mut other = subscriber(&server, "t", "other");
    for expected in ["a", "b", "later", "new"] {
        assert_eq!(body_text(&mut other), expected);
    }
    assert_quiet(&mut consumer);
    server.post("/pub?topic=t", b"after").assert_ok();
    assert_eq!(body_text(&mut consumer), "after");
}

#[test]
fn topic_empty_drops_only_the_waiting_messages_durably() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = HttpServer::start(dir.path(), &[]);
    let mut consumer = subscriber(&server, "held", "c");
    server.post("/pub?topic=held", b"one").assert_ok();
    assert_eq!(body_text(&mut consumer), "one");
    server.post("/topic/pause?topic=held", b"").assert_empty();
    server.post("/mpub?topic=held", b"two\nthree").assert_ok();

    server.post("/topic/empty?topic=held", b"").assert_empty();
    server.post("/topic/unpause?topic=held", b"").assert_empty();
    assert_quiet(&mut consumer);
    server.post("/pub?topic=held", b"four").assert_ok();
    assert_eq!(body_text(&mut consumer), "four");

    // A topic without channels keeps everything in the topic: all dropped.
    server.post("/mpub?topic=lonely", b"x\ny").assert_ok();
    server.post("/topic/empty?topic=lonely", b"").assert_empty();

    // Durable: after a SIGKILL the channel gets back its unfinished "one"
    // and "four" but never "two" or "three"; "lonely" has nothing.
    drop(consumer);
    server.kill();
    let server = HttpServer::start(dir.path(), &[]);
    let mut consumer = subscriber(&server, "held", "c");
    assert_eq!(body_text(&mut consumer), "one");
    assert_eq!(body_text(&mut consumer), "four");
    assert_quiet(&mut consumer);
    let mut lonely = subscriber(&server, "lonely", "c");
    assert_quiet(&mut lonely);
    server.post("/pub?topic=lonely", b"z").assert_ok();
    assert_eq!(body_text(&mut lonely), "z");
}

#[test]
fn empty_on_ephemeral_topics() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    let topic = "e%23ephemeral";
    let mut consumer = subscriber_with_rdy(&server, "e#ephemeral", "c", 1);
    server
        .post(&format!("/mpub?topic={topic}"), b"one\ntwo")
        .assert_ok();
    let in_flight = consumer.read_message();
    assert_eq!(in_flight.body, b"one");
    server
        .post(&format!("/channel/empty?topic={topic}&channel=c"), b"")
        .assert_empty();
    expect_fin_failed(&mut consumer, &in_flight);
    assert_quiet(&mut consumer);

    server
        .post(&format!("/topic/pause?topic={topic}"), b"")
        .assert_empty();
    server
        .post(&format!("/pub?topic={topic}"), b"held")
        .assert_ok();
    server
        .post(&format!("/topic/empty?topic={topic}"), b"")
        .assert_empty();
    server
        .post(&format!("/topic/unpause?topic={topic}"), b"")
        .assert_empty();
    assert_quiet(&mut consumer);
    server
        .post(&format!("/pub?topic={topic}"), b"three")
        .assert_ok();
    assert_eq!(body_text(&mut consumer), "three");
}
