//! nsqd's HTTP API against the real binary: every endpoint, its error
//! shapes, and that what is published over HTTP is consumed over TCP (and
//! survives a SIGKILL, since `OK` means fsynced).
//!
//! The server and HTTP client are `common::http`'s; TCP checks use
//! `common::RawClient`.

mod common;

use common::http::*;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::DEADLINE;

fn binary_mpub(items: &[&[u8]]) -> Vec<u8> {
    let mut body = (items.len() as i32).to_be_bytes().to_vec();
    for item in items {
        body.extend_from_slice(&(item.len() as i32).to_be_bytes());
        body.extend_from_slice(item);
    }
    body
}

#[test]
fn ping_and_info() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);

    let ping = server.get("/ping");
    assert_eq!((ping.status, ping.body.as_str()), (200, "OK"));
    assert_eq!(ping.header("x-nsq-content-type"), None);

    let info = server.get("/info");
    assert_eq!(info.status, 200, "{info:?}");
    assert_eq!(
        info.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(info.header("x-nsq-content-type"), Some("nsq; version=1.0"));
    let json: serde_json::Value = serde_json::from_str(&info.body).unwrap();
    assert_eq!(json["version"], "1.3.0");
    assert_eq!(json["tcp_port"], server.tcp_address.port());
    assert_eq!(json["http_port"], server.http_address.port());
    assert_eq!(json["max_heartbeat_interval"], 60_000_000_000u64);
    assert_eq!(json["max_output_buffer_size"], 65_536);
    assert_eq!(json["max_output_buffer_timeout"], 30_000_000_000u64);
    assert_eq!(json["broadcast_address"], json["hostname"]);
    assert!(json["start_time"].as_u64().unwrap() > 1_600_000_000);
    // nsqd v1.3.0 has no topology keys (they came after its release).
    assert!(json.get("topology_zone").is_none() && json.get("topology_region").is_none());
}

#[test]
fn unknown_paths_and_wrong_methods() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    server.get("/nope").assert_error(404, "NOT_FOUND");
    server
        .post("/put?topic=t", b"x")
        .assert_error(404, "NOT_FOUND");
    server
        .get("/pub?topic=t")
        .assert_error(405, "METHOD_NOT_ALLOWED");
    server
        .get("/mpub?topic=t")
        .assert_error(405, "METHOD_NOT_ALLOWED");
    server
        .get("/topic/create?topic=t")
        .assert_error(405, "METHOD_NOT_ALLOWED");
    server
        .get("/channel/create?topic=t&channel=c")
        .assert_error(405, "METHOD_NOT_ALLOWED");
    server
        .post("/ping", b"")
        .assert_error(405, "METHOD_NOT_ALLOWED");
    server
        .post("/info", b"")
        .assert_error(405, "METHOD_NOT_ALLOWED");
}

#[test]
fn pub_is_consumed_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    let mut consumer = subscriber(&server, "events", "c");
    server.post("/pub?topic=events", b"hello http").assert_ok();
    let message = consumer.read_message();
    assert_eq!(message.body, b"hello http");
    assert_eq!(message.attempts, 1);
    // Headers clients send are accepted and ignored.
    let raw = b"POST /pub?topic=events HTTP/1.1\r\nHost: t\r\nAccept: application/vnd.nsq; version=1.0\r\nContent-Length: 3\r\nConnection: close\r\n\r\ntwo";
    exchange(server.http_address, raw).assert_ok();
    assert_eq!(consumer.read_message().body, b"two");
}

#[test]
fn pub_errors_in_nsqd_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &["--max-msg-size=8", "--max-req-timeout=10s"]);
    // Size is checked before the topic, emptiness before the topic too.
    server
        .post("/pub", b"123456789")
        .assert_error(413, "MSG_TOO_BIG");
    server.post("/pub", b"").assert_error(400, "MSG_EMPTY");
    server
        .post("/pub", b"x")
        .assert_error(400, "MISSING_ARG_TOPIC");
    server
        .post("/pub?topic=", b"x")
        .assert_error(400, "INVALID_TOPIC");
    server
        .post("/pub?topic=a%20b", b"x")
        .assert_error(400, "INVALID_TOPIC");
    server
        .post("/pub?topic=%zz", b"x")
        .assert_error(400, "INVALID_REQUEST");
    for bad in ["-1", "10001", "abc", "1.5", ""] {
        server
            .post(&format!("/pub?topic=t&defer={bad}"), b"x")
            .assert_error(400, "INVALID_DEFER");
    }
    server.post("/pub?topic=t&defer=10000", b"x").assert_ok();
    server.post("/pub?topic=t", b"12345678").assert_ok();

    // Without Content-Length (chunked), the read limit still applies.
    let chunked = |body: &str| {
        format!(
            "POST /pub?topic=t HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        )
    };
    exchange(server.http_address, chunked("123456789").as_bytes()).assert_error(413, "MSG_TOO_BIG");
    exchange(server.http_address, chunked("12345678").as_bytes()).assert_ok();
}

#[test]
fn deferred_pub_arrives_after_its_delay() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    let mut consumer = subscriber(&server, "later", "c");
    let sent = Instant::now();
    server
        .post("/pub?topic=later&defer=400", b"late")
        .assert_ok();
    server.post("/pub?topic=later", b"now").assert_ok();
    assert_eq!(consumer.read_message().body, b"now");
    assert_eq!(consumer.read_message().body, b"late");
    assert!(sent.elapsed() >= Duration::from_millis(400));
}

#[test]
fn mpub_text_and_binary() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    let mut consumer = subscriber(&server, "batch", "c");
    server.post("/mpub?topic=batch", b"a\n\nb\r\nc").assert_ok();
    server
        .post(
            "/mpub?topic=batch&binary=true",
            &binary_mpub(&[b"x\ny", b"z"]),
        )
        .assert_ok();
    // Trailing bytes after the declared items are ignored.
    let mut trailing = binary_mpub(&[b"t"]);
    trailing.extend_from_slice(b"junk");
    server
        .post("/mpub?topic=batch&binary=1", &trailing)
        .assert_ok();
    // Zero messages still answer OK.
    server.post("/mpub?topic=batch", b"\n\n").assert_ok();
    server.post("/mpub?topic=batch", b"").assert_ok();
    let bodies: Vec<Vec<u8>> = (0..6).map(|_| consumer.read_message().body).collect();
    let expected: Vec<&[u8]> = vec![b"a", b"b\r", b"c", b"x\ny", b"z", b"t"];
    assert_eq!(bodies, expected);
    assert!(consumer.read_barrier().is_empty());
}

#[test]
fn mpub_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &["--max-msg-size=4", "--max-body-size=24"]);
    let mut consumer = subscriber(&server, "t", "c");
    server
        .post("/mpub?topic=t", &[b'a'; 25])
        .assert_error(413, "BODY_TOO_BIG");
    server
        .post("/mpub", b"a")
        .assert_error(400, "MISSING_ARG_TOPIC");
    server
        .post("/mpub?topic=bad!", b"a")
        .assert_error(400, "INVALID_TOPIC");
    server
        .post("/mpub?topic=t", b"ab\nabcde\n")
        .assert_error(413, "MSG_TOO_BIG");
    server
        .post("/mpub?topic=t&binary=true", b"\0\0")
        .assert_error(413, "BAD_BODY");
    server
        .post("/mpub?topic=t&binary=true", &0i32.to_be_bytes())
        .assert_error(413, "BAD_BODY");
    server
        .post("/mpub?topic=t&binary=true", &binary_mpub(&[b"abcde"]))
        .assert_error(413, "BAD_MESSAGE");
    let mut short = binary_mpub(&[b"ab", b"cd"]);
    short.truncate(short.len() - 1);
    server
        .post("/mpub?topic=t&binary=true", &short)
        .assert_error(413, "BAD_MESSAGE");
    // Failed batches are atomic: nothing of them was published.
    server.post("/mpub?topic=t", b"ok\n").assert_ok();
    assert_eq!(consumer.read_message().body, b"ok");
    assert!(consumer.read_barrier().is_empty());
}

#[test]
fn topic_and_channel_create() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);

    server
        .post("/topic/create", b"")
        .assert_error(400, "MISSING_ARG_TOPIC");
    server
        .post("/topic/create?topic=a*b", b"")
        .assert_error(400, "INVALID_TOPIC");
    server
        .post("/channel/create?channel=c", b"")
        .assert_error(400, "MISSING_ARG_TOPIC");
    server
        .post("/channel/create?topic=a*b&channel=c", b"")
        .assert_error(400, "INVALID_ARG_TOPIC");
    server
        .post("/channel/create?topic=orders", b"")
        .assert_error(400, "MISSING_ARG_CHANNEL");
    server
        .post("/channel/create?topic=orders&channel=", b"")
        .assert_error(400, "INVALID_ARG_CHANNEL");
    server
        .post("/channel/create?topic=orders&channel=c", b"")
        .assert_error(404, "TOPIC_NOT_FOUND");

    server
        .post("/topic/create?topic=orders", b"")
        .assert_empty();
    server
        .post("/topic/create?topic=orders", b"")
        .assert_empty();
    server
        .post("/channel/create?topic=orders&channel=audit", b"")
        .assert_empty();
    server
        .post("/channel/create?topic=orders&channel=audit", b"")
        .assert_empty();

    // The channel exists before anyone subscribes, so it keeps what is
    // published now for a consumer that comes later.
    server.post("/pub?topic=orders", b"first").assert_ok();
    let mut consumer = subscriber(&server, "orders", "audit");
    assert_eq!(consumer.read_message().body, b"first");
}

#[test]
fn http_publish_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = HttpServer::start(dir.path(), &[]);
    server
        .post("/channel/create?topic=d&channel=c", b"")
        .assert_error(404, "TOPIC_NOT_FOUND");
    server.post("/topic/create?topic=d", b"").assert_empty();
    server
        .post("/channel/create?topic=d&channel=c", b"")
        .assert_empty();
    server.post("/pub?topic=d", b"one").assert_ok();
    server.post("/mpub?topic=d", b"two\nthree").assert_ok();
    server.kill();

    let server = HttpServer::start(dir.path(), &[]);
    let mut consumer = subscriber(&server, "d", "c");
    let bodies: Vec<Vec<u8>> = (0..3).map(|_| consumer.read_message().body).collect();
    assert_eq!(
        bodies,
        vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
}

#[test]
fn slow_clients_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &["--http-read-timeout=300ms"]);
    let started = Instant::now();

    // A connection that never sends anything is closed.
    let mut stream = TcpStream::connect(server.http_address).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut data = Vec::new();
    let _ = stream.read_to_end(&mut data);
    assert!(data.is_empty());
    assert!(started.elapsed() < Duration::from_secs(10));

    // A kept-alive connection that goes idle after a request is closed.
    let mut stream = TcpStream::connect(server.http_address).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
        .write_all(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut data = Vec::new();
    let _ = stream.read_to_end(&mut data);
    assert!(String::from_utf8_lossy(&data).ends_with("\r\n\r\nOK"));
    assert!(started.elapsed() < Duration::from_secs(10));

    // Half a request line, then silence: the connection is closed.
    let mut stream = TcpStream::connect(server.http_address).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(b"GET /ping HTTP/1.1\r\nHost:").unwrap();
    let mut data = Vec::new();
    let _ = stream.read_to_end(&mut data);
    assert!(started.elapsed() < Duration::from_secs(10));

    // A body that stops arriving is abandoned, and nothing is published.
    let mut stream = TcpStream::connect(server.http_address).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
        .write_all(b"POST /pub?topic=slow HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    let mut data = Vec::new();
    let _ = stream.read_to_end(&mut data);
    parse_response(&data).assert_error(408, "REQUEST_TIMEOUT");

    // The server still answers others.
    let ping = server.get("/ping");
    assert_eq!((ping.status, ping.body.as_str()), (200, "OK"));
}

#[test]
fn an_explicit_http_address_must_bind() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledgerq"))
        .arg("serve")
        .arg("--tcp-address=127.0.0.1:0")
        .arg(format!("--http-address={address}"))
        .arg("--grpc-address=127.0.0.1:0")
        .arg(format!("--data-path={}", dir.path().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ledgerq");
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "ledgerq kept running");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(!status.success());
}

#[test]
fn sigterm_does_not_wait_for_idle_http_clients() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = HttpServer::start(dir.path(), &["--http-read-timeout=1h"]);
    // A kept-alive connection, idle after one request.
    let mut idle = TcpStream::connect(server.http_address).unwrap();
    idle.set_read_timeout(Some(DEADLINE)).unwrap();
    idle.write_all(b"POST /pub?topic=t HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx")
        .unwrap();
    let mut reply = [0u8; 512];
    let read = idle.read(&mut reply).unwrap();
    assert!(String::from_utf8_lossy(&reply[..read]).starts_with("HTTP/1.1 200 OK"));

    let started = Instant::now();
    unsafe {
        libc::kill(server.child.id() as i32, libc::SIGTERM);
    }
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < DEADLINE, "ledgerq did not exit");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success());
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
}
