//! AUTH on the NSQ TCP protocol against a tiny auth server in this process
//! (`common::auth_server`, nsqd's exchange, reference §1.9): AUTH first,
//! per-topic and per-channel permissions for publish and subscribe, nsqd's
//! error texts, re-authorization once the TTL has passed, and auth servers
//! that are slow, dead or talk nonsense — each fails that AUTH only.
//! pynsq and nsqjs send their secrets the way they do against nsqd.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::auth_server::AuthServer;
use common::*;
use serde_json::Value;
use tempfile::TempDir;

fn start(auth: &AuthServer, extra: &[&str]) -> (TempDir, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let flag = auth.flag();
    let mut args = vec![flag.as_str()];
    args.extend_from_slice(extra);
    let server = Server::start(dir.path(), &args);
    (dir, server)
}

/// A connection that has sent AUTH `secret`; the reply frame.
fn authed(server: &Server, secret: &str) -> (RawClient, (i32, Vec<u8>)) {
    let mut client = RawClient::connect(server.tcp_address);
    let reply = client.identify(r#"{"feature_negotiation":true}"#);
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["auth_required"], true);
    client.command_with_body("AUTH", secret.as_bytes());
    let frame = client.read_frame();
    (client, frame)
}

fn text(frame: &(i32, Vec<u8>)) -> (i32, String) {
    (frame.0, String::from_utf8_lossy(&frame.1).into_owned())
}

#[test]
fn commands_need_auth_first_and_a_permission_for_their_topic_and_channel() {
    let auth = AuthServer::start();
    let (_dir, server) = start(&auth, &[]);
    for (line, body) in [("PUB orders", Some("m")), ("SUB orders c", None)] {
        let mut client = RawClient::connect(server.tcp_address);
        match body {
            Some(body) => client.command_with_body(line, body.as_bytes()),
            None => client.command(line),
        }
        let verb = line.split(' ').next().unwrap();
        client.expect_error(&format!("E_AUTH_FIRST AUTH required before {verb}"));
        client.expect_closed();
    }
    // A publisher: its reply, its topic, not another, not subscribing.
    let (mut client, reply) = authed(&server, "publisher");
    let reply: Value = serde_json::from_slice(&reply.1).unwrap();
    assert_eq!(
        reply,
        serde_json::json!({"identity": "alice", "identity_url": "https://id.example/alice", "permission_count": 1})
    );
    client.publish("orders", b"paid");
    let stats = server.get("/stats?format=json");
    let stats: Value = serde_json::from_str(&stats.body).unwrap();
    let producer = &stats["producers"][0];
    assert_eq!(producer["authed"], true, "{producer}");
    assert_eq!(producer["auth_identity"], "alice");
    assert_eq!(producer["auth_identity_url"], "https://id.example/alice");
    client.command_with_body("PUB refunds", b"m");
    client.expect_error(r#"E_UNAUTHORIZED AUTH failed for PUB on "refunds" """#);
    client.expect_closed();
    let (mut client, _) = authed(&server, "publisher");
    client.command("SUB orders c");
    client.expect_error(r#"E_UNAUTHORIZED AUTH failed for SUB on "orders" "c""#);
    // A subscriber: channels matching ^c only; it cannot publish.
    let (mut client, _) = authed(&server, "subscriber");
    client.subscribe("orders", "consumers");
    client.command("RDY 1");
    assert_eq!(client.read_message().body, b"paid");
    let (mut client, _) = authed(&server, "subscriber");
    client.command("SUB orders audit");
    client.expect_error(r#"E_UNAUTHORIZED AUTH failed for SUB on "orders" "audit""#);
    let (mut client, _) = authed(&server, "subscriber");
    client.command_with_body("MPUB orders", &mpub_body(&[b"x"]));
    client.expect_error(r#"E_UNAUTHORIZED AUTH failed for MPUB on "orders" """#);
    // The questions are nsqd's.
    let question = &auth.questions()[0];
    assert_eq!(question["remote_ip"], "127.0.0.1");
    assert_eq!(question["tls"], "false");
    assert_eq!(question["common_name"], "");
}

fn mpub_body(bodies: &[&[u8]]) -> Vec<u8> {
    let mut body = (bodies.len() as u32).to_be_bytes().to_vec();
    for item in bodies {
        body.extend_from_slice(&(item.len() as u32).to_be_bytes());
        body.extend_from_slice(item);
    }
    body
}

#[test]
fn auth_refusals_are_nsqds_fatal_errors() {
    let auth = AuthServer::start();
    let (_dir, server) = start(&auth, &[]);
    let cases = [
        ("nothing", "E_UNAUTHORIZED AUTH no authorizations found"),
        ("stranger", "E_AUTH_FAILED AUTH failed"),
        ("junk", "E_AUTH_FAILED AUTH failed"),
    ];
    for (secret, error) in cases {
        let (mut client, reply) = authed(&server, secret);
        assert_eq!(text(&reply), (FRAME_ERROR, error.to_string()), "{secret}");
        client.expect_closed();
    }
    let (mut client, _) = authed(&server, "publisher");
    client.command_with_body("AUTH", b"publisher");
    client.expect_error("E_INVALID AUTH already set");
    client.expect_closed();
}

#[test]
fn an_expired_authorization_is_asked_for_again() {
    let auth = AuthServer::start();
    let (_dir, server) = start(&auth, &[]);
    let (mut client, reply) = authed(&server, "short");
    assert_eq!(reply.0, FRAME_RESPONSE);
    // The TTL is 1 s: publishing goes on, and once it has passed the next
    // publish asks the auth server again.
    let deadline = Instant::now() + DEADLINE;
    while auth.asked("short") < 2 {
        assert!(Instant::now() < deadline, "never asked again");
        client.publish("orders", b"again");
        std::thread::sleep(Duration::from_millis(50));
    }
    client.publish("orders", b"after the refresh");
}

#[test]
fn a_slow_or_dead_auth_server_fails_auth_within_its_timeout_and_nothing_else() {
    let auth = AuthServer::start();
    let (_dir, server) = start(&auth, &["--http-client-request-timeout=1s"]);
    let started = Instant::now();
    let (mut slow, reply) = authed(&server, "slow");
    assert_eq!(
        text(&reply),
        (FRAME_ERROR, "E_AUTH_FAILED AUTH failed".to_string())
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    slow.expect_closed();
    // Meanwhile, and after, other connections are served.
    let (mut client, _) = authed(&server, "publisher");
    client.publish("orders", b"unaffected");
    // A dead auth server: nothing listens on its port.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_address = dead.local_addr().unwrap();
    drop(dead);
    let dir = tempfile::tempdir().unwrap();
    let flag = format!("--auth-http-address={dead_address}");
    let server = Server::start(dir.path(), &[&flag]);
    let (_, reply) = authed(&server, "anything");
    assert_eq!(
        text(&reply),
        (FRAME_ERROR, "E_AUTH_FAILED AUTH failed".to_string())
    );
}

#[test]
fn without_an_auth_server_auth_is_disabled_and_nothing_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut client = RawClient::connect(server.tcp_address);
    let reply = client.identify(r#"{"feature_negotiation":true}"#);
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["auth_required"], false);
    client.publish("orders", b"open");
    client.command_with_body("AUTH", b"secret");
    client.expect_error("E_AUTH_DISABLED AUTH disabled");
}

#[test]
fn pynsq_and_nsqjs_send_their_secrets_and_are_served() {
    let auth = AuthServer::start();
    let (_dir, server) = start(&auth, &[]);
    let script = clients_dir().join("pynsq_secure.py");
    let options = serde_json::json!({"auth_secret": "pubsub"});
    let args = [
        script.display().to_string(),
        server.tcp_address.to_string(),
        "orders-py".to_string(),
        "20".to_string(),
        "30".to_string(),
        options.to_string(),
    ];
    let report = run_client("python3", &args);
    assert_eq!(report["received"].as_array().unwrap().len(), 20, "{report}");
    let script = clients_dir().join("nsqjs_secure.js");
    let options = serde_json::json!({"authSecret": "pubsub"});
    let args = [
        script.display().to_string(),
        server.tcp_address.ip().to_string(),
        server.tcp_address.port().to_string(),
        "orders-js".to_string(),
        "20".to_string(),
        "30".to_string(),
        options.to_string(),
    ];
    let report = run_client("node", &args);
    assert_eq!(report["received"].as_array().unwrap().len(), 20, "{report}");
    assert!(auth.asked("pubsub") >= 4, "each connection sent AUTH");
}
