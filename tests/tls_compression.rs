//! The IDENTIFY upgrades of the NSQ TCP protocol (reference §1.5): TLS
//! (`tls_v1`), snappy and deflate, with certificates made in the test.
//!
//! The peers are things nobody here wrote: rustls' client for TLS, the
//! `snap` and `flate2` crates for the compressed streams, and pynsq, nsqjs
//! and tokio-nsq publishing and consuming through every combination. Then
//! the bad input: stalled handshakes, garbage instead of a ClientHello,
//! garbage and absurd lengths inside compressed streams — each costs only
//! its own connection.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::certs::{self, Certs, Pair};
use common::http::http_request;
use common::https::https_request;
use common::*;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tempfile::TempDir;

// ----- certificates ----------------------------------------------------------------------

/// `serve` flags presenting a node certificate of `certs`' CA, plus `extra`.
fn serve_args(certs: &Certs, extra: &[&str]) -> Vec<String> {
    let node = certs.ca.node("ledgerq-node");
    let mut args = vec![
        format!("--tls-cert={}", node.cert_arg()),
        format!("--tls-key={}", node.key_arg()),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn start_server(args: &[String]) -> (TempDir, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(dir.path(), &args);
    (dir, server)
}

/// A client trusting `ca`, presenting `client` if given.
fn client_config(ca: &Path, client: Option<&Pair>) -> Arc<rustls::ClientConfig> {
    certs::client_config(ca, client, &[])
}

// ----- a client whose bytes can be upgraded ------------------------------------------------

/// One end of a stream shared by a reader and a writer (TLS sessions are
/// one object; these tests use them from one thread, one step at a time).
struct Shared<S>(Arc<Mutex<S>>);

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<S: Read> Read for Shared<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.lock().unwrap().read(buf)
    }
}

impl<S: Write> Write for Shared<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.lock().unwrap().flush()
    }
}

/// Raw DEFLATE decoded as it arrives: flate2's `Decompress` with a sync
/// flush on every read (its `read::DeflateDecoder` holds back the end of
/// a sync-flushed block until more input comes, which a request/reply
/// protocol never sends).
struct Inflate<R> {
    inner: R,
    state: flate2::Decompress,
    input: Vec<u8>,
    start: usize,
}

impl<R: Read> Inflate<R> {
    fn new(inner: R) -> Self {
        Inflate {
            inner,
            state: flate2::Decompress::new(false),
            input: Vec::new(),
            start: 0,
        }
    }
}

impl<R: Read> Read for Inflate<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            // Output held back from earlier input comes first, even with no
            // new input.
            let (before_in, before_out) = (self.state.total_in(), self.state.total_out());
            self.state
                .decompress(
                    &self.input[self.start..],
                    out,
                    flate2::FlushDecompress::Sync,
                )
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            self.start += (self.state.total_in() - before_in) as usize;
            let produced = (self.state.total_out() - before_out) as usize;
            if produced > 0 || out.is_empty() {
                return Ok(produced);
            }
            if self.start == self.input.len() {
                let mut chunk = [0u8; 8192];
                let n = self.inner.read(&mut chunk)?;
                if n == 0 {
                    return Ok(0);
                }
                self.input = chunk[..n].to_vec();
                self.start = 0;
            }
        }
    }
}

/// An NSQ client speaking through whatever layers the test put on it.
struct Wire {
    tcp: TcpStream,
    reader: Box<dyn Read + Send>,
    writer: Box<dyn Write + Send>,
}

impl Wire {
    fn connect(address: SocketAddr) -> Wire {
        let tcp = TcpStream::connect(address).expect("connect");
        tcp.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut wire = Wire {
            reader: Box::new(tcp.try_clone().unwrap()),
            writer: Box::new(tcp.try_clone().unwrap()),
            tcp,
        };
        wire.send(b"  V2").unwrap();
        wire
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }

    fn command(&mut self, line: &str, body: Option<&[u8]>) -> io::Result<()> {
        let mut bytes = format!("{line}\n").into_bytes();
        if let Some(body) = body {
            bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
            bytes.extend_from_slice(body);
        }
        self.send(&bytes)
    }

    /// The next frame that is not a heartbeat.
    fn frame(&mut self) -> io::Result<(i32, Vec<u8>)> {
        loop {
            let mut header = [0u8; 8];
            self.reader.read_exact(&mut header)?;
            let size = i32::from_be_bytes(header[..4].try_into().unwrap());
            let kind = i32::from_be_bytes(header[4..].try_into().unwrap());
            let mut data = vec![0u8; (size - 4) as usize];
            self.reader.read_exact(&mut data)?;
            if (kind, data.as_slice()) != (FRAME_RESPONSE, b"_heartbeat_".as_slice()) {
                return Ok((kind, data));
            }
        }
    }

    fn expect(&mut self, kind: i32, text: &str) {
        let (got_kind, data) = self.frame().expect("a frame");
        assert_eq!(
            (got_kind, String::from_utf8_lossy(&data).into_owned()),
            (kind, text.to_string())
        );
    }

    /// IDENTIFY with feature negotiation; the JSON reply.
    fn identify(&mut self, features: Value) -> Value {
        let mut body = serde_json::json!({"feature_negotiation": true, "client_id": "wire"});
        body.as_object_mut()
            .unwrap()
            .extend(features.as_object().unwrap().clone());
        self.command("IDENTIFY", Some(body.to_string().as_bytes()))
            .unwrap();
        let (kind, data) = self.frame().expect("IDENTIFY reply");
        assert_eq!(kind, FRAME_RESPONSE, "{}", String::from_utf8_lossy(&data));
        serde_json::from_slice(&data).expect("JSON reply")
    }

    /// The client side of the `tls_v1` upgrade.
    fn start_tls(&mut self, config: Arc<rustls::ClientConfig>) {
        let name = ServerName::try_from("localhost").unwrap();
        let session = rustls::ClientConnection::new(config, name).unwrap();
        let stream = Shared(Arc::new(Mutex::new(rustls::StreamOwned::new(
            session,
            self.tcp.try_clone().unwrap(),
        ))));
        self.reader = Box::new(stream.clone());
        self.writer = Box::new(stream);
    }

    fn start_snappy(&mut self) {
        self.reader = Box::new(snap::read::FrameDecoder::new(self.tcp.try_clone().unwrap()));
        self.writer = Box::new(snap::write::FrameEncoder::new(
            self.tcp.try_clone().unwrap(),
        ));
    }

    fn start_deflate(&mut self, level: u32) {
        self.reader = Box::new(Inflate::new(self.tcp.try_clone().unwrap()));
        let tcp = self.tcp.try_clone().unwrap();
        let level = flate2::Compression::new(level);
        self.writer = Box::new(flate2::write::DeflateEncoder::new(tcp, level));
    }

    /// Bytes straight onto the socket, under every layer.
    fn send_raw(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).unwrap();
    }

    fn publish(&mut self, topic: &str, body: &[u8]) {
        self.command(&format!("PUB {topic}"), Some(body)).unwrap();
        self.expect(FRAME_RESPONSE, "OK");
    }

    /// SUB, RDY 1 and the next message's body.
    fn consume_one(&mut self, topic: &str) -> Vec<u8> {
        self.command(&format!("SUB {topic} c"), None).unwrap();
        self.expect(FRAME_RESPONSE, "OK");
        self.command("RDY 1", None).unwrap();
        let (kind, data) = self.frame().unwrap();
        assert_eq!(kind, FRAME_MESSAGE);
        data[26..].to_vec()
    }

    /// The server closed the connection (EOF or an error, no more frames).
    fn expect_closed(&mut self) {
        match self.frame() {
            Err(_) => {}
            Ok(frame) => panic!("expected a close, got {frame:?}"),
        }
    }
}

/// The client entries of `/stats` for `client_id` "wire".
fn wire_stats(server: &Server) -> Value {
    let response = http_request(server.http_address, "GET", "/stats?format=json", b"");
    let stats: Value = serde_json::from_slice(response.body.as_bytes()).unwrap();
    let producers = stats["producers"].as_array().cloned().unwrap_or_default();
    let subscribed = stats["topics"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["channels"].as_array().cloned().unwrap_or_default())
        .flat_map(|c| c["clients"].as_array().cloned().unwrap_or_default());
    producers
        .into_iter()
        .chain(subscribed)
        .find(|c| c["client_id"] == "wire")
        .unwrap_or(Value::Null)
}

/// A plain client on the same server still publishes and consumes.
fn assert_others_unaffected(server: &Server, topic: &str) {
    let mut other = RawClient::connect(server.tcp_address);
    other.publish(topic, b"still fine");
    other.subscribe(topic, "others");
    other.command("RDY 1");
    assert_eq!(other.read_message().body, b"still fine");
}

// ----- TLS ---------------------------------------------------------------------------------

#[test]
fn tls_upgrade_answers_ok_inside_the_session_and_stats_show_it() {
    let certs = Certs::generate();
    let (_dir, server) = start_server(&serve_args(&certs, &[]));
    let mut wire = Wire::connect(server.tcp_address);
    let reply = wire.identify(serde_json::json!({"tls_v1": true}));
    assert_eq!(reply["tls_v1"], true);
    wire.start_tls(client_config(&certs.ca.cert, None));
    wire.expect(FRAME_RESPONSE, "OK");
    wire.publish("secure", b"over tls");
    let stats = wire_stats(&server);
    assert_eq!(stats["tls"], true, "{stats}");
    assert_eq!(stats["tls_version"], "TLS1.3");
    assert!(
        stats["tls_cipher_suite"]
            .as_str()
            .unwrap()
            .starts_with("TLS_"),
        "{stats}"
    );
    assert_eq!(stats["tls_negotiated_protocol_is_mutual"], false);
    assert_eq!(wire.consume_one("secure"), b"over tls");
}

#[test]
fn without_a_certificate_tls_v1_is_refused_and_the_client_stays_plain() {
    let (_dir, server) = start_server(&[]);
    let mut wire = Wire::connect(server.tcp_address);
    let reply = wire.identify(serde_json::json!({"tls_v1": true}));
    assert_eq!(reply["tls_v1"], false);
    wire.publish("plain", b"no tls");
    assert_eq!(wire_stats(&server)["tls"], false);
}

#[test]
fn tls_required_refuses_every_command_but_identify_before_the_upgrade() {
    let certs = Certs::generate();
    let (_dir, server) = start_server(&serve_args(&certs, &["--tls-required=tcp-https"]));
    for command in ["PUB t", "SUB t c", "NOP", "RDY 1", "CLS"] {
        let mut wire = Wire::connect(server.tcp_address);
        let body = command.starts_with("PUB").then_some(b"x".as_slice());
        wire.command(command, body).unwrap();
        let verb = command.split(' ').next().unwrap();
        let text = format!("E_INVALID cannot {verb} in current state (TLS required)");
        wire.expect(FRAME_ERROR, &text);
        wire.expect_closed();
    }
    // IDENTIFY without tls_v1 is answered; what follows is still refused.
    let mut wire = Wire::connect(server.tcp_address);
    assert_eq!(wire.identify(serde_json::json!({}))["tls_v1"], false);
    wire.command("SUB t c", None).unwrap();
    wire.expect(
        FRAME_ERROR,
        "E_INVALID cannot SUB in current state (TLS required)",
    );
    // After the upgrade everything works.
    let mut wire = Wire::connect(server.tcp_address);
    wire.identify(serde_json::json!({"tls_v1": true}));
    wire.start_tls(client_config(&certs.ca.cert, None));
    wire.expect(FRAME_RESPONSE, "OK");
    wire.publish("t", b"after tls");
    // tcp-https leaves plain HTTP open.
    let ping = http_request(server.http_address, "GET", "/ping", b"");
    assert_eq!(ping.status, 200);
}

/// Upgrades with `client` as the client certificate; whether the server
/// answered `OK` inside the session.
fn upgrade_with(server: &Server, ca_file: &Path, client: Option<&Pair>) -> bool {
    let mut wire = Wire::connect(server.tcp_address);
    wire.identify(serde_json::json!({"tls_v1": true}));
    wire.start_tls(client_config(ca_file, client));
    match wire.frame() {
        Ok(frame) => frame == (FRAME_RESPONSE, b"OK".to_vec()),
        Err(_) => false,
    }
}

#[test]
fn require_verify_accepts_only_certificates_of_the_root_ca() {
    let certs = Certs::generate();
    let ca = format!("--tls-root-ca-file={}", certs.ca.cert_arg());
    let args = serve_args(&certs, &["--tls-client-auth-policy=require-verify", &ca]);
    let (_dir, server) = start_server(&args);
    let ca_file = &certs.ca.cert;
    assert!(!upgrade_with(&server, ca_file, None), "no certificate");
    let foreign = certs.other_ca.client("intruder");
    assert!(!upgrade_with(&server, ca_file, Some(&foreign)), "other CA");
    let good = certs.ca.client("consumer");
    assert!(upgrade_with(&server, ca_file, Some(&good)));
    // The policy makes TLS required, as in nsqd.
    let mut plain = Wire::connect(server.tcp_address);
    plain.command("PUB t", Some(b"x")).unwrap();
    plain.expect(
        FRAME_ERROR,
        "E_INVALID cannot PUB in current state (TLS required)",
    );
    // A verified client's session is mutual in /stats (read over HTTPS:
    // the policy closes plain HTTP too).
    let mut wire = Wire::connect(server.tcp_address);
    wire.identify(serde_json::json!({"tls_v1": true}));
    wire.start_tls(client_config(ca_file, Some(&good)));
    wire.expect(FRAME_RESPONSE, "OK");
    wire.publish("mutual", b"m");
    let https = server.https_address.expect("an HTTPS listener");
    let config = certs::client_config(ca_file, Some(&good), &[b"http/1.1"]);
    let stats = https_request(https, config, "GET", "/stats?format=json").unwrap();
    let stats: Value = serde_json::from_str(&stats.body).unwrap();
    let producer = stats["producers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == "wire")
        .cloned()
        .expect("the TLS publisher in /stats");
    assert_eq!(
        producer["tls_negotiated_protocol_is_mutual"], true,
        "{producer}"
    );
}

#[test]
fn require_accepts_any_certificate_but_not_none() {
    let certs = Certs::generate();
    let args = serve_args(&certs, &["--tls-client-auth-policy=require"]);
    let (_dir, server) = start_server(&args);
    assert!(!upgrade_with(&server, &certs.ca.cert, None));
    let stranger = certs.other_ca.client("anyone");
    assert!(upgrade_with(&server, &certs.ca.cert, Some(&stranger)));
}

#[test]
fn stalled_truncated_or_garbage_handshakes_cost_one_connection() {
    let certs = Certs::generate();
    let (_dir, server) = start_server(&serve_args(&certs, &[]));
    // Asks for TLS, then says nothing: closed after the handshake deadline.
    let mut stalled = Wire::connect(server.tcp_address);
    stalled.identify(serde_json::json!({"tls_v1": true}));
    let started = Instant::now();
    // Meanwhile others are served.
    assert_others_unaffected(&server, "during-stall");
    let mut byte = [0u8; 1];
    let read = stalled.tcp.read(&mut byte);
    assert!(matches!(read, Ok(0) | Err(_)), "closed, got {read:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
    // Garbage where the ClientHello belongs.
    let mut garbage = Wire::connect(server.tcp_address);
    garbage.identify(serde_json::json!({"tls_v1": true}));
    garbage.send_raw(&[0x42; 300]);
    let mut rest = Vec::new();
    let _ = garbage.tcp.read_to_end(&mut rest);
    assert!(
        !rest.starts_with(&[0, 0, 0, 6, 0, 0, 0, 0]),
        "no plaintext OK"
    );
    assert_others_unaffected(&server, "after-garbage");
    // Half of a real ClientHello record, then silence: closed at the deadline.
    let mut truncated = Wire::connect(server.tcp_address);
    truncated.identify(serde_json::json!({"tls_v1": true}));
    let name = ServerName::try_from("localhost").unwrap();
    let config = client_config(&certs.ca.cert, None);
    let mut session = rustls::ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    session.write_tls(&mut hello).unwrap();
    truncated.send_raw(&hello[..hello.len() / 2]);
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = truncated.tcp.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing answers half a record: {rest:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_others_unaffected(&server, "after-truncated");
}

// ----- compression -------------------------------------------------------------------------

#[test]
fn snappy_speaks_the_framing_format_both_ways() {
    let (_dir, server) = start_server(&[]);
    let mut wire = Wire::connect(server.tcp_address);
    let reply = wire.identify(serde_json::json!({"snappy": true}));
    assert_eq!(
        (reply["snappy"].clone(), reply["deflate"].clone()),
        (true.into(), false.into())
    );
    wire.start_snappy();
    wire.expect(FRAME_RESPONSE, "OK");
    let body = "compressible ".repeat(1000);
    wire.publish("snappy", body.as_bytes());
    assert_eq!(wire_stats(&server)["snappy"], true);
    assert_eq!(wire.consume_one("snappy"), body.as_bytes());
}

#[test]
fn deflate_speaks_raw_deflate_at_the_negotiated_level() {
    let (_dir, server) = start_server(&["--max-deflate-level=5".to_string()]);
    let mut wire = Wire::connect(server.tcp_address);
    let reply = wire.identify(serde_json::json!({"deflate": true, "deflate_level": 9}));
    assert_eq!(reply["deflate"], true);
    assert_eq!(reply["deflate_level"], 5);
    assert_eq!(reply["max_deflate_level"], 5);
    wire.start_deflate(5);
    wire.expect(FRAME_RESPONSE, "OK");
    let body = "deflated ".repeat(1000);
    wire.publish("deflate", body.as_bytes());
    assert_eq!(wire_stats(&server)["deflate"], true);
    assert_eq!(wire.consume_one("deflate"), body.as_bytes());
}

#[test]
fn compression_can_be_switched_off_and_both_at_once_is_fatal() {
    let args = ["--snappy=false".to_string(), "--deflate=false".to_string()];
    let (_dir, server) = start_server(&args);
    let mut wire = Wire::connect(server.tcp_address);
    let reply = wire.identify(serde_json::json!({"snappy": true, "deflate": true}));
    assert_eq!(
        (reply["snappy"].clone(), reply["deflate"].clone()),
        (false.into(), false.into())
    );
    wire.publish("t", b"plain");
    drop(server);
    let (_dir, server) = start_server(&[]);
    let mut wire = Wire::connect(server.tcp_address);
    let body = r#"{"feature_negotiation":true,"snappy":true,"deflate":true}"#;
    wire.command("IDENTIFY", Some(body.as_bytes())).unwrap();
    let text = "E_IDENTIFY_FAILED cannot enable both deflate and snappy compression";
    wire.expect(FRAME_ERROR, text);
    wire.expect_closed();
}

/// A compressed connection after its upgrade `OK`.
fn compressed(server: &Server, snappy: bool) -> Wire {
    let mut wire = Wire::connect(server.tcp_address);
    if snappy {
        wire.identify(serde_json::json!({"snappy": true}));
        wire.start_snappy();
    } else {
        wire.identify(serde_json::json!({"deflate": true}));
        wire.start_deflate(6);
    }
    wire.expect(FRAME_RESPONSE, "OK");
    wire
}

#[test]
fn garbage_inside_a_compressed_stream_closes_that_connection_only() {
    let (_dir, server) = start_server(&[]);
    for snappy in [true, false] {
        // Between commands: closed without a frame, as nsqd.
        let mut wire = compressed(&server, snappy);
        wire.publish("g", b"before");
        wire.send_raw(b"\xff\x00\x13 this is not a compressed stream at all");
        wire.expect_closed();
        // Inside a body: nsqd's error for the failed read, then the close.
        let mut wire = compressed(&server, snappy);
        wire.command("PUB g", None).unwrap();
        wire.send(&10u32.to_be_bytes()).unwrap();
        wire.send_raw(b"\x01\x02\x03 garbage garbage garbage garbage");
        // The corrupt bytes may end the size or the body (the decoder may
        // refuse a whole read that holds both valid bytes and garbage).
        if let Ok((kind, text)) = wire.frame() {
            let text = String::from_utf8_lossy(&text).into_owned();
            assert_eq!(kind, FRAME_ERROR, "{text}");
            assert!(
                text.starts_with("E_BAD_MESSAGE PUB failed to read message body"),
                "{text}"
            );
        }
        wire.expect_closed();
        assert_others_unaffected(&server, if snappy { "g-snappy" } else { "g-deflate" });
    }
}

#[test]
fn a_huge_length_inside_a_compressed_stream_is_refused_without_buffering_it() {
    let (_dir, server) = start_server(&[]);
    for snappy in [true, false] {
        let mut wire = compressed(&server, snappy);
        wire.command("PUB big", None).unwrap();
        wire.send(&0x7fff_ffffu32.to_be_bytes()).unwrap();
        wire.expect(
            FRAME_ERROR,
            "E_BAD_MESSAGE PUB message too big 2147483647 > 1048576",
        );
        wire.expect_closed();
        let mut wire = compressed(&server, snappy);
        wire.command("MPUB big", None).unwrap();
        wire.send(&0x7fff_fff0u32.to_be_bytes()).unwrap();
        wire.expect(
            FRAME_ERROR,
            "E_BAD_BODY MPUB body too big 2147483632 > 5242880",
        );
        wire.expect_closed();
    }
    assert_others_unaffected(&server, "big-after");
}

// ----- third-party clients -----------------------------------------------------------------

fn expected_bodies(prefix: &str, count: usize) -> Vec<String> {
    let mut bodies: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    bodies.sort();
    bodies
}

#[test]
fn pynsq_publishes_and_consumes_over_tls_snappy_and_deflate() {
    let certs = Certs::generate();
    let (_dir, server) = start_server(&serve_args(&certs, &[]));
    let ca = certs.ca.cert.display().to_string();
    let tls = serde_json::json!({"tls_v1": true, "tls_options": {"ca_certs": ca}});
    let modes = [
        ("tls", tls.clone()),
        (
            "tls-snappy",
            merged(&tls, serde_json::json!({"snappy": true})),
        ),
        (
            "tls-deflate",
            merged(
                &tls,
                serde_json::json!({"deflate": true, "deflate_level": 3}),
            ),
        ),
        ("snappy", serde_json::json!({"snappy": true})),
        ("deflate", serde_json::json!({"deflate": true})),
    ];
    for (mode, options) in modes {
        let script = clients_dir().join("pynsq_secure.py");
        let topic = format!("pynsq-{mode}");
        let args = [
            script.display().to_string(),
            server.tcp_address.to_string(),
            topic,
            "50".to_string(),
            "30".to_string(),
            options.to_string(),
        ];
        let report = run_client("python3", &args);
        assert_eq!(report["published"], 50, "{mode}: {report}");
        let received: Vec<String> = serde_json::from_value(report["received"].clone()).unwrap();
        assert_eq!(received, expected_bodies("pynsq", 50), "{mode}");
    }
}

#[test]
fn nsqjs_publishes_and_consumes_over_tls_snappy_and_deflate() {
    let certs = Certs::generate();
    let (_dir, server) = start_server(&serve_args(&certs, &[]));
    let ca = certs.ca.cert.display().to_string();
    let tls = serde_json::json!({"tls": true, "tlsVerification": true, "caFile": ca});
    let modes = [
        ("tls", tls.clone()),
        (
            "tls-snappy",
            merged(&tls, serde_json::json!({"snappy": true})),
        ),
        (
            "tls-deflate",
            merged(
                &tls,
                serde_json::json!({"deflate": true, "deflateLevel": 6}),
            ),
        ),
        ("deflate", serde_json::json!({"deflate": true})),
    ];
    for (mode, options) in modes {
        let script = clients_dir().join("nsqjs_secure.js");
        let args = [
            script.display().to_string(),
            server.tcp_address.ip().to_string(),
            server.tcp_address.port().to_string(),
            format!("nsqjs-{mode}"),
            "50".to_string(),
            "30".to_string(),
            options.to_string(),
        ];
        let report = run_client("node", &args);
        let received: Vec<String> = serde_json::from_value(report["received"].clone()).unwrap();
        assert_eq!(received, expected_bodies("nsqjs", 50), "{mode}: {report}");
    }
}

fn merged(base: &Value, extra: Value) -> Value {
    let mut value = base.clone();
    value
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    value
}

#[test]
fn auth_after_tls_sends_the_client_certificates_common_name() {
    let auth = common::auth_server::AuthServer::start();
    let certs = Certs::generate();
    let ca = format!("--tls-root-ca-file={}", certs.ca.cert_arg());
    let auth_flag = auth.flag();
    let policy = "--tls-client-auth-policy=require-verify";
    let (_dir, server) = start_server(&serve_args(&certs, &[policy, &ca, &auth_flag]));
    let mut wire = Wire::connect(server.tcp_address);
    let reply = wire.identify(serde_json::json!({"tls_v1": true, "deflate": true}));
    assert_eq!(reply["auth_required"], true);
    let client = certs.ca.client("consumer-7");
    wire.start_tls(client_config(&certs.ca.cert, Some(&client)));
    wire.expect(FRAME_RESPONSE, "OK");
    // Deflate inside TLS, by hand: both layers over the one session.
    let session = std::mem::replace(&mut wire.writer, Box::new(io::sink()));
    let reader = std::mem::replace(&mut wire.reader, Box::new(io::empty()));
    wire.reader = Box::new(Inflate::new(reader));
    wire.writer = Box::new(flate2::write::DeflateEncoder::new(
        session,
        flate2::Compression::new(6),
    ));
    wire.expect(FRAME_RESPONSE, "OK");
    wire.command("AUTH", Some(b"publisher")).unwrap();
    let (kind, _) = wire.frame().unwrap();
    assert_eq!(kind, FRAME_RESPONSE);
    wire.publish("orders", b"over tls and deflate");
    let question = &auth.questions()[0];
    assert_eq!(question["tls"], "true");
    assert_eq!(question["common_name"], "consumer-7");
}
