//! `--http-publish-auth` against the real binary and a tiny auth server
//! (axum, in this process): `/pub` and `/mpub` need a bearer secret the
//! auth server grants `publish` on the topic; 401 without one, 403 when it
//! does not allow the topic, 502 when the auth server fails; the answer is
//! cached for its TTL. Without the flag publishing stays open, as in nsqd.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::auth_server::AuthServer;
use common::http::*;
use common::DEADLINE;

/// `POST target` with `Authorization: Bearer <secret>` if given.
fn publish(server: &HttpServer, target: &str, secret: Option<&str>, body: &[u8]) -> Response {
    let authorization = secret
        .map(|secret| format!("Authorization: Bearer {secret}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: test\r\n{authorization}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    exchange(server.http_address, &raw)
}

/// `message_count` of each topic in `/stats`.
fn topic_counts(server: &HttpServer) -> HashMap<String, u64> {
    let stats = server.get("/stats?format=json");
    assert_eq!(stats.status, 200, "{stats:?}");
    let stats: serde_json::Value = serde_json::from_str(&stats.body).expect("JSON stats");
    stats["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .map(|topic| {
            let name = topic["topic_name"].as_str().expect("name").to_owned();
            (name, topic["message_count"].as_u64().expect("count"))
        })
        .collect()
}

#[test]
fn publishing_needs_a_secret_granting_the_topic() {
    let auth = AuthServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[&auth.flag(), "--http-publish-auth"]);

    let missing = publish(&server, "/pub?topic=orders", None, b"m");
    missing.assert_error(401, "AUTH_REQUIRED");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    publish(&server, "/mpub?topic=orders", None, b"m").assert_error(401, "AUTH_REQUIRED");
    assert!(auth.questions().is_empty());

    publish(&server, "/pub?topic=orders", Some("publisher"), b"m1").assert_ok();
    publish(&server, "/mpub?topic=orders", Some("publisher"), b"m2\nm3").assert_ok();
    let questions = auth.questions();
    assert_eq!(questions.len(), 1, "the grant is cached: {questions:?}");
    assert_eq!(questions[0]["secret"], "publisher");
    assert_eq!(questions[0]["remote_ip"], "127.0.0.1");
    assert_eq!(questions[0]["tls"], "false");
    assert_eq!(questions[0]["common_name"], "");

    publish(&server, "/pub?topic=payments", Some("publisher"), b"m")
        .assert_error(403, "UNAUTHORIZED");
    publish(&server, "/mpub?topic=payments", Some("publisher"), b"m")
        .assert_error(403, "UNAUTHORIZED");
    for secret in ["subscriber", "nothing", "wrong"] {
        publish(&server, "/pub?topic=orders", Some(secret), b"m").assert_error(403, "UNAUTHORIZED");
    }
    // Once the secret is accepted, the endpoints' own checks answer.
    publish(&server, "/pub", Some("publisher"), b"m").assert_error(400, "MISSING_ARG_TOPIC");
    publish(&server, "/pub?topic=a*b", Some("publisher"), b"m").assert_error(400, "INVALID_TOPIC");

    let counts = topic_counts(&server);
    assert_eq!(counts.get("orders"), Some(&3));
    assert!(!counts.contains_key("payments"), "{counts:?}");
}

#[test]
fn an_auth_server_that_fails_is_a_bad_gateway() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let flag = format!("--auth-http-address={dead}");
    let server = HttpServer::start(dir.path(), &[&flag, "--http-publish-auth"]);
    publish(&server, "/pub?topic=orders", Some("publisher"), b"m").assert_error(502, "AUTH_FAILED");
    assert!(topic_counts(&server).is_empty());
}

#[test]
fn without_the_flag_http_publishing_stays_open() {
    let auth = AuthServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[&auth.flag()]);
    publish(&server, "/pub?topic=orders", None, b"m").assert_ok();
    publish(&server, "/pub?topic=payments", Some("wrong"), b"m").assert_ok();
    assert!(auth.questions().is_empty());
    let config = server.get("/config/auth_http_addresses");
    assert_eq!(config.body, format!(r#"["{}"]"#, auth.address));
}

/// `ledgerq serve <flags>` must exit with an error naming `expected`.
fn refuses_to_start(flags: &[&str], expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data_path = format!("--data-path={}", dir.path().display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledgerq"))
        .args(["serve", &data_path, "--tcp-address=127.0.0.1:0"])
        .args(["--http-address=127.0.0.1:0", "--grpc-address=127.0.0.1:0"])
        .args(flags)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ledgerq");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("ledgerq {flags:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{flags:?}");
    assert!(stderr.contains(expected), "{flags:?}: {stderr}");
}

#[test]
fn impossible_auth_settings_stop_the_start() {
    refuses_to_start(
        &["--http-publish-auth"],
        "--http-publish-auth needs an auth server",
    );
    refuses_to_start(
        &["--auth-http-address=https://auth.example/auth"],
        "https:// auth servers are not supported",
    );
}
