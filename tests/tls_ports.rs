//! TLS on the listeners other than NSQ's TCP port, against the real binary
//! with certificates made in the test (`common/certs.rs`): nsqd's HTTPS
//! listener and `--tls-required`, client certificates on it, handshakes
//! that stall or are garbage, lookupd over HTTPS, and mutual TLS on the
//! gRPC port of a replica group (raft, the admin CLI, strangers refused).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::certs::{client_config, Certs, Pair};
use common::cluster::Cluster;
use common::http::{http_request, Response};
use common::https::{connect, https_request};
use common::lookupd::Lookupd;
use common::Server;

/// The flags of a node serving `pair` over TLS.
fn tls_flags(pair: &Pair) -> Vec<String> {
    vec![
        format!("--tls-cert={}", pair.cert.display()),
        format!("--tls-key={}", pair.key.display()),
    ]
}

fn start(dir: &std::path::Path, flags: &[String]) -> Server {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Server::start(dir, &flags)
}

fn https_get(address: SocketAddr, certs: &Certs, client: Option<&Pair>, target: &str) -> Response {
    let config = client_config(&certs.ca.cert, client, &[b"http/1.1"]);
    https_request(address, config, "GET", target)
        .unwrap_or_else(|e| panic!("GET {target} over TLS: {e}"))
}

#[test]
fn https_serves_the_same_api_as_plain_http() {
    let certs = Certs::generate();
    let node = certs.ca.node("node-1");
    let server = start(&certs.dir.path().join("data"), &tls_flags(&node));
    let https = server.https_address.expect("an HTTPS listener");
    let ping = https_get(https, &certs, None, "/ping");
    assert_eq!((ping.status, ping.body.as_str()), (200, "OK"), "{ping:?}");
    // The same state: a topic made over plain HTTP shows over HTTPS.
    server
        .post("/topic/create?topic=secured", b"")
        .assert_empty();
    let stats = https_get(https, &certs, None, "/stats?format=json");
    assert_eq!(stats.status, 200, "{stats:?}");
    let stats: serde_json::Value = serde_json::from_str(&stats.body).unwrap();
    assert_eq!(stats["topics"][0]["topic_name"], "secured", "{stats}");
    // Without --tls-required the plain listener stays open.
    let plain = server.get("/ping");
    assert_eq!((plain.status, plain.body.as_str()), (200, "OK"));
    // ALPN: HTTP/1.1, even to a client that would rather speak h2.
    let config = client_config(&certs.ca.cert, None, &[b"h2", b"http/1.1"]);
    let stream = connect(https, config).unwrap();
    assert_eq!(stream.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let h2_only = client_config(&certs.ca.cert, None, &[b"h2"]);
    assert!(connect(https, h2_only).is_err(), "h2 is not offered");
}

#[test]
fn tls_required_true_closes_plain_http_and_tcp_https_does_not() {
    let certs = Certs::generate();
    let node = certs.ca.node("node-1");
    let mut flags = tls_flags(&node);
    flags.push("--tls-required=true".into());
    let required = start(&certs.dir.path().join("required"), &flags);
    let https_port = required.https_address.unwrap().port();
    let expected = format!(r#"{{"message": "TLS_REQUIRED", "https_port": {https_port}}}"#);
    // Every request, /ping included (nsqd checks before routing).
    for (method, target) in [
        ("GET", "/ping"),
        ("GET", "/stats"),
        ("POST", "/pub?topic=t"),
        ("GET", "/nowhere"),
    ] {
        let response = required.request(method, target, b"x");
        assert_eq!(
            (response.status, response.body.as_str()),
            (403, expected.as_str()),
            "{method} {target}"
        );
        assert_eq!(
            response.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(
            response.header("x-nsq-content-type"),
            Some("nsq; version=1.0")
        );
    }
    // Nothing was published through the refused /pub.
    let stats = https_get(
        required.https_address.unwrap(),
        &certs,
        None,
        "/stats?format=json",
    );
    let stats: serde_json::Value = serde_json::from_str(&stats.body).unwrap();
    assert_eq!(stats["topics"], serde_json::json!([]), "{stats}");

    let mut flags = tls_flags(&node);
    flags.push("--tls-required=tcp-https".into());
    let tcp_only = start(&certs.dir.path().join("tcp-only"), &flags);
    let ping = tcp_only.get("/ping");
    assert_eq!((ping.status, ping.body.as_str()), (200, "OK"));
}

#[test]
fn https_requires_and_verifies_client_certificates_per_policy() {
    let certs = Certs::generate();
    let node = certs.ca.node("node-1");
    let good = certs.ca.client("alice");
    let foreign = certs.other_ca.client("mallory");
    let request = |address, client: Option<&Pair>| {
        let config = client_config(&certs.ca.cert, client, &[b"http/1.1"]);
        https_request(address, config, "GET", "/ping").map(|r| r.status)
    };

    let mut flags = tls_flags(&node);
    flags.push("--tls-client-auth-policy=require-verify".into());
    flags.push(format!("--tls-root-ca-file={}", certs.ca.cert.display()));
    let verify = start(&certs.dir.path().join("verify"), &flags);
    let https = verify.https_address.unwrap();
    assert!(request(https, None).is_err(), "no certificate");
    assert!(request(https, Some(&foreign)).is_err(), "another CA's");
    assert_eq!(request(https, Some(&good)), Ok(200));
    // A policy makes TLS required, on plain HTTP too (as in nsqd).
    assert_eq!(verify.get("/ping").status, 403);

    let mut flags = tls_flags(&node);
    flags.push("--tls-client-auth-policy=require".into());
    let any = start(&certs.dir.path().join("any"), &flags);
    let https = any.https_address.unwrap();
    assert!(request(https, None).is_err(), "no certificate");
    assert_eq!(request(https, Some(&foreign)), Ok(200));
}

#[test]
fn a_stalled_or_garbage_handshake_costs_only_its_own_connection() {
    let certs = Certs::generate();
    let node = certs.ca.node("node-1");
    let server = start(&certs.dir.path().join("data"), &tls_flags(&node));
    let https = server.https_address.unwrap();
    let opened = Instant::now();
    let mut stalled = TcpStream::connect(https).unwrap();
    let mut garbage = TcpStream::connect(https).unwrap();
    garbage.set_read_timeout(Some(common::DEADLINE)).unwrap();
    let junk: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8).collect();
    garbage.write_all(&junk).unwrap();
    // A good client is served while both are still open.
    let ping = https_get(https, &certs, None, "/ping");
    assert_eq!(ping.status, 200, "{ping:?}");
    assert!(
        opened.elapsed() < Duration::from_secs(5),
        "served only after the stalled handshake gave up"
    );
    // The garbage is refused at once; the stalled client is cut off at
    // the handshake deadline (5 s), not before.
    assert_closed(&mut garbage);
    stalled
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert_closed(&mut stalled);
    assert!(opened.elapsed() >= Duration::from_secs(5));
    assert_eq!(https_get(https, &certs, None, "/ping").status, 200);
}

/// Reads until the server closes the connection (a TLS alert may come
/// first); fails if it stays open past the socket's read timeout.
fn assert_closed(stream: &mut TcpStream) {
    let mut buffer = [0u8; 512];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the connection stayed open: {e}"),
        }
    }
}

#[test]
fn lookupd_serves_its_http_api_over_https_when_configured() {
    let certs = Certs::generate();
    let node = certs.ca.node("lookupd");
    let lookupd = Lookupd::start(&[
        "--https-address=127.0.0.1:0",
        &format!("--tls-cert={}", node.cert.display()),
        &format!("--tls-key={}", node.key.display()),
    ]);
    let https = lookupd.https_address.expect("an HTTPS listener");
    let ping = https_get(https, &certs, None, "/ping");
    assert_eq!((ping.status, ping.body.as_str()), (200, "OK"));
    lookupd.post("/topic/create?topic=found").assert_empty();
    let topics = https_get(https, &certs, None, "/topics");
    let topics: serde_json::Value = serde_json::from_str(&topics.body).unwrap();
    assert_eq!(topics["topics"], serde_json::json!(["found"]));
    assert_eq!(lookupd.get("/ping").status, 200, "plain HTTP stays");

    // A certificate without the address is refused, not ignored.
    let output = Command::new(env!("CARGO_BIN_EXE_ledgerq"))
        .args(["lookupd", "--tcp-address=127.0.0.1:0"])
        .arg("--http-address=127.0.0.1:0")
        .arg(format!("--tls-cert={}", node.cert.display()))
        .arg(format!("--tls-key={}", node.key.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started: {stderr}");
    assert!(stderr.contains("need --https-address"), "{stderr}");
}

fn admin(server: SocketAddr, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ledgerq"))
        .arg("admin")
        .arg(format!("--server={server}"))
        .arg("--timeout=10s")
        .args(args)
        .env_remove("LEDGERQ_ADMIN_TOKEN")
        .output()
        .expect("run ledgerq admin")
}

/// `Hello` to a member over TLS with `client` as the client certificate;
/// Err if the connection or the call fails.
fn hello(address: SocketAddr, ca: &std::path::Path, client: Option<&Pair>) -> Result<u64, String> {
    use ledgerq::replication::rpc::pb::{raft_client::RaftClient, HelloRequest};
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()));
    if let Some(pair) = client {
        let cert = std::fs::read(&pair.cert).unwrap();
        let key = std::fs::read(&pair.key).unwrap();
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let endpoint = Endpoint::from_shared(format!("https://{address}"))
            .unwrap()
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .timeout(common::DEADLINE);
        let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
        let request = HelloRequest {
            cluster_id: String::new(),
            from_node: 99,
            adopt: false,
        };
        let answer = RaftClient::new(channel).hello(request).await;
        answer
            .map(|r| r.into_inner().node_id)
            .map_err(|s| s.to_string())
    })
}

#[test]
fn a_group_with_grpc_mutual_tls_replicates_and_refuses_strangers() {
    let certs = Certs::generate();
    let node = certs.ca.node("member");
    let ca = certs.ca.cert_arg();
    let flags = [
        format!("--grpc-tls-cert={}", node.cert.display()),
        format!("--grpc-tls-key={}", node.key.display()),
        format!("--grpc-tls-root-ca-file={ca}"),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cluster = Cluster::start(3, &flags);
    let leader = cluster.wait_for_leader(&[1, 2, 3]);
    let leader_http = cluster.node(leader).http_address;
    http_request(leader_http, "POST", "/pub?topic=secure", b"sealed").assert_ok();
    for id in [1, 2, 3] {
        cluster.wait_for_topic_stats(id, "secure", |t| t["message_count"] == 1);
    }

    // The admin CLI with a client certificate of the group's CA.
    let follower = cluster.others(leader)[0];
    let grpc = cluster.grpc[&follower];
    let admin_cert = certs.ca.client("operator");
    let tls_args = [
        format!("--tls-ca-file={ca}"),
        format!("--tls-cert={}", admin_cert.cert.display()),
        format!("--tls-key={}", admin_cert.key.display()),
    ];
    let mut with_cert: Vec<&str> = tls_args.iter().map(String::as_str).collect();
    with_cert.extend(["--output=json", "cluster", "status"]);
    let output = admin(grpc, &with_cert);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ledgerq admin: {stderr}");
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["mode"], "replicated");
    assert_eq!(status["leader_id"].as_u64(), Some(leader));
    assert_eq!(status["members"].as_array().map(Vec::len), Some(3));
    // Without TLS, or without a client certificate, it gets nothing.
    assert!(!admin(grpc, &["cluster", "status"]).status.success());
    let ca_only = [tls_args[0].as_str(), "cluster", "status"];
    assert!(!admin(grpc, &ca_only).status.success());

    // Raft's service: a certificate of the group's CA gets an answer,
    // none or another CA's gets no further than the handshake.
    let ca_path = &certs.ca.cert;
    assert_eq!(hello(grpc, ca_path, Some(&admin_cert)), Ok(follower));
    assert!(hello(grpc, ca_path, None).is_err(), "no certificate");
    let stranger = certs.other_ca.node("stranger");
    assert!(hello(grpc, ca_path, Some(&stranger)).is_err(), "other CA");
    // The group did not notice.
    assert_eq!(cluster.wait_for_leader(&[1, 2, 3]), leader);
}
