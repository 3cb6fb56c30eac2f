//! HTTP side of the harness: requests to the server's HTTP address with a
//! minimal HTTP/1.1 client that keeps status, headers and body exactly as
//! sent (for nsqd's shapes).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::{RawClient, DEADLINE};

/// The harness's server: it reads both listening addresses from the log.
pub type HttpServer = super::Server;

impl super::Server {
    pub fn request(&self, method: &str, target: &str, body: &[u8]) -> Response {
        http_request(self.http_address, method, target, body)
    }

    pub fn post(&self, target: &str, body: &[u8]) -> Response {
        self.request("POST", target, body)
    }

    pub fn get(&self, target: &str) -> Response {
        self.request("GET", target, b"")
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Asserts nsqd's V1 error shape.
    pub fn assert_error(&self, status: u16, message: &str) {
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
    pub fn assert_ok(&self) {
        assert_eq!((self.status, self.body.as_str()), (200, "OK"), "{self:?}");
        assert_eq!(self.header("x-nsq-content-type"), Some("nsq; version=1.0"));
        assert_eq!(
            self.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
    }

    /// Asserts a V1 empty 200.
    pub fn assert_empty(&self) {
        assert_eq!((self.status, self.body.as_str()), (200, ""), "{self:?}");
        assert_eq!(self.header("x-nsq-content-type"), Some("nsq; version=1.0"));
        assert_eq!(self.header("content-type"), None);
    }
}

/// One request on a new connection (`Connection: close`).
pub fn http_request(address: SocketAddr, method: &str, target: &str, body: &[u8]) -> Response {
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    exchange(address, &raw)
}

/// Sends raw request bytes on a new connection and reads the response up
/// to the end of the stream (requests say `Connection: close`).
pub fn exchange(address: SocketAddr, raw: &[u8]) -> Response {
    let mut stream = TcpStream::connect(address).expect("connect HTTP");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(raw).expect("send request");
    let mut data = Vec::new();
    // The server may answer (and close) before reading a refused body.
    let _ = stream.read_to_end(&mut data);
    parse_response(&data)
}

pub fn parse_response(data: &[u8]) -> Response {
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

pub fn dechunk(mut rest: &str) -> String {
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

pub fn subscriber(server: &HttpServer, topic: &str, channel: &str) -> RawClient {
    let mut client = RawClient::connect(server.tcp_address);
    client.subscribe(topic, channel);
    client.command("RDY 100");
    client
}

/// Asserts that nothing reaches `consumer`: a negative check, so it gives
/// a delivery that should not happen some time to show up first.
pub fn assert_quiet(consumer: &mut RawClient) {
    std::thread::sleep(Duration::from_millis(200));
    let messages = consumer.read_barrier();
    assert!(messages.is_empty(), "unexpected deliveries: {messages:?}");
}

pub fn body_text(consumer: &mut RawClient) -> String {
    String::from_utf8(consumer.read_message().body).unwrap()
}

/// Creates `topic` and its `channel` through the HTTP API at `address`.
pub fn create_topic_and_channel(address: SocketAddr, topic: &str, channel: &str) {
    http_request(
        address,
        "POST",
        &format!("/topic/create?topic={topic}"),
        b"",
    )
    .assert_empty();
    http_request(
        address,
        "POST",
        &format!("/channel/create?topic={topic}&channel={channel}"),
        b"",
    )
    .assert_empty();
}
