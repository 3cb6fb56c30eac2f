//! The gRPC admin API and `ledgerq admin`, against real servers: driven by
//! a Python client generated from the proto (grpcio-tools, PyPI) and by the
//! CLI; in single-node mode and on a replica group's follower.

mod common;

use std::future::Future;
use std::process::{Command, Output};

use common::cluster::Cluster;
use common::{RawClient, Server};

const PYTHON_MISSING: &str = "No module named 'grp";

fn python(args: &[&str]) -> Output {
    let script = format!("{}/tests/clients/admin_grpc.py", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3 (apt-get install python3)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains(PYTHON_MISSING),
        "not installed: pip install grpcio grpcio-tools grpcio-reflection grpcio-health-checking"
    );
    output
}

fn assert_python_ok(args: &[&str]) {
    let output = python(args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.trim() == "ok",
        "admin_grpc.py {args:?}:\n{stdout}\n{stderr}"
    );
}

#[test]
fn a_python_grpc_client_administers_and_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    assert_python_ok(&["scenario", &server.grpc_address.to_string()]);
    // What the gRPC Publish acknowledged is there for an NSQ consumer.
    let mut consumer = RawClient::connect(server.tcp_address);
    consumer.subscribe("from_grpc", "check");
    consumer.command("RDY 10");
    let mut bodies: Vec<String> = (0..5)
        .map(|_| {
            let message = consumer.read_message();
            consumer.finish(&message);
            String::from_utf8(message.body).unwrap()
        })
        .collect();
    bodies.sort();
    assert_eq!(bodies, ["grpc-0", "grpc-1", "grpc-2", "grpc-3", "grpc-4"]);
}

fn token_file(dir: &std::path::Path, token: &str) -> String {
    let path = dir.join("admin.token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    format!("--grpc-admin-token-file={}", path.display())
}

#[test]
fn the_admin_token_is_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let flag = token_file(dir.path(), "s3cret-token");
    let closed = Server::start(&dir.path().join("closed"), &[&flag]);
    assert_python_ok(&[
        "auth",
        &closed.grpc_address.to_string(),
        "s3cret-token",
        "0",
    ]);
    let open_reads = Server::start(
        &dir.path().join("open"),
        &[&flag, "--grpc-admin-open-reads"],
    );
    assert_python_ok(&[
        "auth",
        &open_reads.grpc_address.to_string(),
        "s3cret-token",
        "1",
    ]);
}

#[test]
fn an_unreadable_or_empty_token_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    for (file, expected) in [
        ("missing", "reading the admin token file"),
        ("empty", "is empty"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_ledgerq"))
            .args([
                "serve",
                "--tcp-address=127.0.0.1:0",
                "--http-address=127.0.0.1:0",
            ])
            .arg("--grpc-address=127.0.0.1:0")
            .arg(format!("--data-path={}", dir.path().join("data").display()))
            .arg(format!(
                "--grpc-admin-token-file={}",
                dir.path().join(file).display()
            ))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{file}: started");
        assert!(stderr.contains(expected), "{file}: {stderr}");
    }
}

/// `ledgerq admin --server <grpc> <args>`.
fn admin(server: std::net::SocketAddr, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ledgerq"))
        .arg("admin")
        .arg(format!("--server={server}"))
        .args(args)
        .env_remove("LEDGERQ_ADMIN_TOKEN")
        .output()
        .expect("run ledgerq admin")
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The one line on stderr and the exit code of a failed command.
fn failure_of(output: &Output) -> (i32, String) {
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    (output.status.code().expect("exited"), stderr)
}

#[test]
fn the_admin_cli_manages_topics_and_channels() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let grpc = server.grpc_address;
    stdout_of(&admin(grpc, &["topic", "create", "orders"]));
    stdout_of(&admin(grpc, &["channel", "create", "orders", "billing"]));
    let mut producer = RawClient::connect(server.tcp_address);
    producer.publish("orders", b"one");
    producer.publish("orders", b"two");
    let list: serde_json::Value = serde_json::from_str(&stdout_of(&admin(
        grpc,
        &["--output=json", "topic", "list"],
    )))
    .unwrap();
    assert_eq!(list["topics"], serde_json::json!(["orders"]));
    let stats: serde_json::Value =
        serde_json::from_str(&stdout_of(&admin(grpc, &["stats", "--output=json"]))).unwrap();
    let channel = &stats["topics"][0]["channels"][0];
    assert_eq!(
        (channel["name"].as_str(), channel["depth"].as_u64()),
        (Some("billing"), Some(2))
    );
    let table = stdout_of(&admin(grpc, &["stats"]));
    let row = table
        .lines()
        .find(|l| l.contains("billing"))
        .expect("billing row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..4], ["orders", "billing", "false", "2"], "{table}");

    stdout_of(&admin(grpc, &["channel", "pause", "orders", "billing"]));
    let topic: serde_json::Value = serde_json::from_str(&stdout_of(&admin(
        grpc,
        &["topic", "get", "orders", "--output=json"],
    )))
    .unwrap();
    assert_eq!(topic["channels"][0]["paused"], true);
    stdout_of(&admin(grpc, &["channel", "unpause", "orders", "billing"]));
    stdout_of(&admin(grpc, &["channel", "empty", "orders", "billing"]));
    stdout_of(&admin(grpc, &["topic", "pause", "orders"]));
    stdout_of(&admin(grpc, &["topic", "unpause", "orders"]));
    stdout_of(&admin(grpc, &["topic", "empty", "orders"]));
    assert_eq!(stdout_of(&admin(grpc, &["health"])).trim(), "OK");
    let status = stdout_of(&admin(grpc, &["cluster", "status"]));
    assert!(status.starts_with("mode single"), "{status}");

    let (code, line) = failure_of(&admin(grpc, &["topic", "create", "bad name"]));
    assert_eq!(code, 1);
    assert!(line.contains("InvalidArgument: INVALID_TOPIC"), "{line}");
    let (code, line) = failure_of(&admin(grpc, &["channel", "delete", "orders", "nope"]));
    assert_eq!(
        (code, line.contains("NotFound: CHANNEL_NOT_FOUND")),
        (1, true),
        "{line}"
    );
    let (code, line) = failure_of(&admin(grpc, &["cluster", "remove", "--node-id=2"]));
    assert_eq!((code, line.contains("NOT_REPLICATED")), (1, true), "{line}");
    stdout_of(&admin(grpc, &["channel", "delete", "orders", "billing"]));
    stdout_of(&admin(grpc, &["topic", "delete", "orders"]));
    assert_eq!(stdout_of(&admin(grpc, &["topic", "list"])).trim(), "");
}

#[test]
fn the_admin_cli_reports_an_unreachable_server_and_uses_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let free = common::cluster::free_address();
    let (code, line) = failure_of(&admin(free, &["topic", "list"]));
    assert_eq!(code, 3, "{line}");
    assert!(line.contains("cannot reach"), "{line}");

    let flag = token_file(dir.path(), "tok");
    let server = Server::start(&dir.path().join("data"), &[&flag]);
    let grpc = server.grpc_address;
    let (code, line) = failure_of(&admin(grpc, &["topic", "create", "t"]));
    assert_eq!(
        (code, line.contains("Unauthenticated")),
        (1, true),
        "{line}"
    );
    let token_path = dir.path().join("admin.token");
    let with_file = format!("--token-file={}", token_path.display());
    stdout_of(&admin(grpc, &[&with_file, "topic", "create", "t"]));
    let with_env = Command::new(env!("CARGO_BIN_EXE_ledgerq"))
        .args(["admin", &format!("--server={grpc}"), "topic", "list"])
        .env("LEDGERQ_ADMIN_TOKEN", "tok")
        .output()
        .unwrap();
    assert_eq!(stdout_of(&with_env).trim(), "t");
}

#[test]
fn a_follower_takes_admin_writes_and_reports_the_group() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3]);
    let follower = cluster.others(leader)[0];
    let grpc = cluster.node(follower).grpc_address;
    stdout_of(&admin(grpc, &["topic", "create", "replicated"]));
    stdout_of(&admin(grpc, &["channel", "create", "replicated", "c"]));
    let status: serde_json::Value = serde_json::from_str(&stdout_of(&admin(
        grpc,
        &["cluster", "status", "--output=json"],
    )))
    .unwrap();
    assert_eq!(status["mode"], "replicated");
    assert_eq!(status["role"], "follower");
    assert_eq!(status["leader_id"].as_u64(), Some(leader));
    assert_eq!(status["members"].as_array().map(Vec::len), Some(3));
    // The leader has what the follower acknowledged.
    let topic: serde_json::Value = serde_json::from_str(&stdout_of(&admin(
        cluster.node(leader).grpc_address,
        &["topic", "get", "replicated", "--output=json"],
    )))
    .unwrap();
    assert_eq!(topic["channels"][0]["name"], "c");
}

/// A client opening thousands of streams on one connection is held to the
/// server's advertised limit (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
#[tokio::test]
async fn a_connection_may_have_256_streams_open() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let tcp = tokio::net::TcpStream::connect(server.grpc_address)
        .await
        .unwrap();
    let (_client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    // Drive the connection until the server's SETTINGS have been applied.
    while connection.max_concurrent_send_streams() != 256 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server advertised {} streams",
            connection.max_concurrent_send_streams()
        );
        let step = futures::future::poll_fn(|cx| {
            let _ = std::pin::Pin::new(&mut connection).poll(cx);
            std::task::Poll::Ready(())
        });
        step.await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
