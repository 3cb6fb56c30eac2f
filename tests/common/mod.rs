//! Shared test harness: the real `ledgerq` binary on a free loopback port
//! and a temporary data dir, and a raw NSQ protocol client for byte-exact
//! checks. Everything waits by polling with deadlines, never by sleeping.

#![allow(dead_code)]

pub mod auth_server;
pub mod certs;
pub mod cluster;
pub mod http;
pub mod https;
pub mod lookupd;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(30);

/// A `ledgerq serve` child process.
pub struct Server {
    pub child: Child,
    pub tcp_address: SocketAddr,
    pub http_address: SocketAddr,
    /// The HTTPS listener, when started with `--tls-cert`.
    pub https_address: Option<SocketAddr>,
    /// The admin API (and raft, in redundancy mode).
    pub grpc_address: SocketAddr,
    pub data_dir: PathBuf,
    pub extra_args: Vec<String>,
}

impl Server {
    /// Starts the binary on `data_dir` and waits until it listens.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> Server {
        let data_path = format!("--data-path={}", data_dir.display());
        let mut args = vec!["serve", &data_path];
        args.extend_from_slice(extra_args);
        let spawned = spawn_serving(&args);
        Server {
            child: spawned.child,
            tcp_address: spawned.tcp_address,
            http_address: spawned.http_address,
            https_address: spawned.https_address,
            grpc_address: spawned.grpc_address,
            data_dir: data_dir.to_path_buf(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Starts a new process on the same data dir and flags.
    pub fn restart(&mut self) {
        let args: Vec<&str> = self.extra_args.iter().map(String::as_str).collect();
        let data_dir = self.data_dir.clone();
        *self = Server::start(&data_dir, &args);
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit (bounded).
    pub fn terminate(&mut self) -> ExitStatus {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ledgerq did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `ledgerq <args>` on free loopback ports and waits until it has
/// reported both listening addresses (`serve` and `lookupd` alike).
pub fn spawn_listening(args: &[&str]) -> (Child, SocketAddr, SocketAddr) {
    spawn_listening_at(args, "127.0.0.1:0", "127.0.0.1:0")
}

/// As [`spawn_listening`], on the given addresses.
pub fn spawn_listening_at(args: &[&str], tcp: &str, http: &str) -> (Child, SocketAddr, SocketAddr) {
    let spawned = spawn_at(args, tcp, http);
    (spawned.child, spawned.tcp_address, spawned.http_address)
}

/// A started `ledgerq serve` and where it listens.
pub struct Spawned {
    pub child: Child,
    pub tcp_address: SocketAddr,
    pub http_address: SocketAddr,
    pub grpc_address: SocketAddr,
    /// `serve` with `--tls-cert`, or `lookupd` with `--https-address`.
    pub https_address: Option<SocketAddr>,
}

/// Runs `ledgerq serve <args>` on free loopback ports (gRPC included) and
/// waits until it has reported all three listening addresses.
pub fn spawn_serving(args: &[&str]) -> Spawned {
    assert_eq!(args.first(), Some(&"serve"));
    spawn_at(args, "127.0.0.1:0", "127.0.0.1:0")
}

/// `serve` also gets a free gRPC port unless `args` name one; its address
/// is then awaited too (`lookupd` has none: its `grpc_address` is its TCP
/// one). Likewise a free HTTPS port for `serve` with a certificate; the
/// HTTPS address is awaited for it and for `lookupd --https-address`.
pub fn spawn_at(args: &[&str], tcp: &str, http: &str) -> Spawned {
    let serve = args.first() == Some(&"serve");
    let given = |flag: &str| args.iter().any(|a| a.starts_with(flag));
    let free_grpc = serve && !given("--grpc-address");
    let https = if serve {
        given("--tls-cert")
    } else {
        given("--https-address")
    };
    let free_https = serve && https && !given("--https-address");
    let mut command = Command::new(env!("CARGO_BIN_EXE_ledgerq"));
    command
        .args(&args[..1])
        .arg(format!("--tcp-address={tcp}"))
        .arg(format!("--http-address={http}"));
    if free_grpc {
        command.arg("--grpc-address=127.0.0.1:0");
    }
    if free_https {
        command.arg("--https-address=127.0.0.1:0");
    }
    let mut child = command
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ledgerq");
    let stderr = child.stderr.take().expect("stderr piped");
    let (sender, receiver) = mpsc::channel();
    let recent = Arc::new(Mutex::new(VecDeque::new()));
    let recent_lines = Arc::clone(&recent);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if std::env::var_os("LEDGERQ_TEST_LOG").is_some() {
                eprintln!("[ledgerq] {line}");
            }
            for field in [
                "tcp_address=",
                "http_address=",
                "grpc_address=",
                "https_address=",
            ] {
                if let Some(address) = listening_address(&line, field) {
                    let _ = sender.send((field, address));
                }
            }
            remember(&recent_lines, line);
        }
    });
    let fields = 2 + usize::from(serve) + usize::from(https);
    let mut reported = std::collections::HashMap::new();
    while reported.len() < fields {
        match receiver.recv_timeout(DEADLINE) {
            Ok((field, address)) => {
                reported.insert(field, address);
            }
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                let lines = recent.lock().expect("stderr lines");
                let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
                panic!(
                    "ledgerq {args:?} did not report its listening addresses ({error}); \
                     its last stderr lines:\n{}",
                    lines.join("\n")
                );
            }
        }
    }
    let tcp_address = reported["tcp_address="];
    Spawned {
        child,
        tcp_address,
        http_address: reported["http_address="],
        grpc_address: reported
            .get("grpc_address=")
            .copied()
            .unwrap_or(tcp_address),
        https_address: reported.get("https_address=").copied(),
    }
}

/// Keeps the last lines a child wrote to stderr, for a failure message.
fn remember(recent: &Mutex<VecDeque<String>>, line: String) {
    const KEPT_LINES: usize = 40;
    let mut recent = recent.lock().expect("stderr lines");
    if recent.len() == KEPT_LINES {
        recent.pop_front();
    }
    recent.push_back(line);
}

/// The address after `field` in a `... listening` log line.
fn listening_address(line: &str, field: &str) -> Option<SocketAddr> {
    if !line.contains(": listening") {
        return None;
    }
    let rest = &line[line.find(field)? + field.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Frame types of the NSQ protocol.
pub const FRAME_RESPONSE: i32 = 0;
pub const FRAME_ERROR: i32 = 1;
pub const FRAME_MESSAGE: i32 = 2;

/// A blocking raw protocol client.
pub struct RawClient {
    pub stream: TcpStream,
}

/// A decoded message frame.
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub timestamp_ns: i64,
    pub attempts: u16,
    pub id: [u8; 16],
    pub body: Vec<u8>,
}

impl RawClient {
    /// Connects and sends the `  V2` magic.
    pub fn connect(address: SocketAddr) -> RawClient {
        let mut client = RawClient::connect_without_magic(address);
        client.send(b"  V2");
        client
    }

    pub fn connect_without_magic(address: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.set_nodelay(true).unwrap();
        RawClient { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Sends `line` plus `\n`.
    pub fn command(&mut self, line: &str) {
        self.send(format!("{line}\n").as_bytes());
    }

    /// Sends `line\n` and a length-prefixed body.
    pub fn command_with_body(&mut self, line: &str, body: &[u8]) {
        let mut bytes = format!("{line}\n").into_bytes();
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(body);
        self.send(&bytes);
    }

    /// The next frame, skipping heartbeats.
    pub fn read_frame(&mut self) -> (i32, Vec<u8>) {
        loop {
            let frame = self
                .read_any_frame()
                .expect("connection closed while reading a frame");
            if frame != (FRAME_RESPONSE, b"_heartbeat_".to_vec()) {
                return frame;
            }
        }
    }

    /// The next frame, or None once the server closed the connection.
    pub fn read_any_frame(&mut self) -> Option<(i32, Vec<u8>)> {
        let mut header = [0u8; 8];
        self.stream.read_exact(&mut header).ok()?;
        let size = i32::from_be_bytes(header[..4].try_into().unwrap());
        let frame_type = i32::from_be_bytes(header[4..].try_into().unwrap());
        let mut data = vec![0u8; (size - 4) as usize];
        self.stream.read_exact(&mut data).ok()?;
        Some((frame_type, data))
    }

    /// Asserts the next frame is the response `text`.
    pub fn expect_response(&mut self, text: &str) {
        let (frame_type, data) = self.read_frame();
        assert_eq!(
            (frame_type, String::from_utf8_lossy(&data).into_owned()),
            (FRAME_RESPONSE, text.to_string())
        );
    }

    /// Asserts the next frame is the error `text` (code and description).
    pub fn expect_error(&mut self, text: &str) {
        let (frame_type, data) = self.read_frame();
        assert_eq!(
            (frame_type, String::from_utf8_lossy(&data).into_owned()),
            (FRAME_ERROR, text.to_string())
        );
    }

    /// Asserts the server closes the connection (after any heartbeats).
    pub fn expect_closed(&mut self) {
        while let Some(frame) = self.read_any_frame() {
            assert_eq!(
                frame,
                (FRAME_RESPONSE, b"_heartbeat_".to_vec()),
                "expected the connection to close"
            );
        }
    }

    /// The next message frame, decoded.
    pub fn read_message(&mut self) -> RawMessage {
        let (frame_type, data) = self.read_frame();
        assert_eq!(
            frame_type,
            FRAME_MESSAGE,
            "expected a message, got {:?}",
            String::from_utf8_lossy(&data)
        );
        RawMessage {
            timestamp_ns: i64::from_be_bytes(data[..8].try_into().unwrap()),
            attempts: u16::from_be_bytes(data[8..10].try_into().unwrap()),
            id: data[10..26].try_into().unwrap(),
            body: data[26..].to_vec(),
        }
    }

    pub fn identify(&mut self, json: &str) -> Vec<u8> {
        self.command_with_body("IDENTIFY", json.as_bytes());
        let (frame_type, data) = self.read_frame();
        assert_eq!(
            frame_type,
            FRAME_RESPONSE,
            "{}",
            String::from_utf8_lossy(&data)
        );
        data
    }

    pub fn publish(&mut self, topic: &str, body: &[u8]) {
        self.command_with_body(&format!("PUB {topic}"), body);
        self.expect_response("OK");
    }

    pub fn subscribe(&mut self, topic: &str, channel: &str) {
        self.command(&format!("SUB {topic} {channel}"));
        self.expect_response("OK");
    }
}

impl RawMessage {
    /// Decodes the data of a message frame.
    pub fn decode(data: &[u8]) -> RawMessage {
        assert!(
            data.len() >= 26,
            "message frame too short: {} bytes",
            data.len()
        );
        RawMessage {
            timestamp_ns: i64::from_be_bytes(data[..8].try_into().unwrap()),
            attempts: u16::from_be_bytes(data[8..10].try_into().unwrap()),
            id: data[10..26].try_into().unwrap(),
            body: data[26..].to_vec(),
        }
    }
}

/// An ID no topic owns (topic bits all ones): FIN of it is always refused.
pub const FOREIGN_ID: &str = "ffffffffffffffff";

impl RawClient {
    /// Whether a byte (or the end of the stream) can be read right now,
    /// without blocking.
    pub fn has_readable_bytes(&self) -> bool {
        self.stream.set_nonblocking(true).expect("set nonblocking");
        let mut byte = [0u8; 1];
        let peeked = self.stream.peek(&mut byte);
        self.stream.set_nonblocking(false).expect("set blocking");
        match peeked {
            Ok(_) => true,
            Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
        }
    }

    /// A read barrier for a subscribed connection that costs no write: a FIN
    /// of an ID no topic owns is answered with the non-fatal `E_FIN_FAILED`
    /// once the server has read (and so handled) every command sent before
    /// it. Returns the messages that arrived before that answer, in order.
    pub fn read_barrier(&mut self) -> Vec<RawMessage> {
        self.command(&format!("FIN {FOREIGN_ID}"));
        let mut messages = Vec::new();
        loop {
            let (frame_type, data) = self.read_frame();
            match frame_type {
                FRAME_MESSAGE => messages.push(RawMessage::decode(&data)),
                FRAME_ERROR if data.starts_with(b"E_FIN_FAILED ") => return messages,
                _ => panic!(
                    "unexpected frame while waiting for the barrier: {frame_type} {:?}",
                    String::from_utf8_lossy(&data)
                ),
            }
        }
    }

    /// FIN of a message (no response expected).
    pub fn finish(&mut self, message: &RawMessage) {
        let id = String::from_utf8_lossy(&message.id).into_owned();
        self.command(&format!("FIN {id}"));
    }
}

/// Polls `condition` until it holds or the deadline passes.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `tests/clients/`: the third-party client scripts (pynsq, nsqjs, grpcio).
pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Runs a client script (`program` with `args`) to its end; its JSON
/// report from stdout. A failing script fails the test with its output.
pub fn run_client(program: &str, args: &[String]) -> serde_json::Value {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("client report")
}
