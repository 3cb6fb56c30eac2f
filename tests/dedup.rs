//! Publish de-duplication with a real HTTP client (curl): a retried `/pub`
//! or `/mpub` with the same `Idempotency-Key` is stored once, across a
//! crash and restart, and in redundancy mode across a leader kill and
//! through another member; the window's flags hold across a restart, with
//! its size and evictions in `/metrics`; bad keys are refused with nsqd's
//! error shape.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::cluster::Cluster;
use common::{wait_until, Server};

/// `curl -X POST` with an optional `Idempotency-Key`; (status, body).
fn curl(address: SocketAddr, target: &str, key: Option<&str>, body: &str) -> (u16, String) {
    let url = format!("http://{address}{target}");
    let mut command = Command::new("curl");
    command.args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"]);
    if let Some(key) = key {
        command.args(["-H", &format!("Idempotency-Key: {key}")]);
    }
    command.args(["--data-binary", body, &url]);
    let output = command.output().expect("run curl");
    assert!(output.status.success(), "curl failed: {output:?}");
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let (body, status) = text.rsplit_once('\n').expect("status line");
    (status.parse().expect("status"), body.to_string())
}

fn ok(answer: (u16, String)) {
    assert_eq!(answer, (200, "OK".to_string()));
}

/// The topic's depth (no channel: every stored message waits in it).
fn depth(address: SocketAddr, topic: &str) -> u64 {
    let target = format!("/stats?format=json&topic={topic}");
    let response = common::http::http_request(address, "GET", &target, b"");
    let stats: serde_json::Value = serde_json::from_str(&response.body).expect("JSON stats");
    stats["topics"][0]["depth"].as_u64().unwrap_or(0)
}

/// The value of one sample line of `/metrics`, e.g. `ledgerq_dedup_keys`.
fn metric(address: SocketAddr, sample: &str) -> f64 {
    let response = common::http::http_request(address, "GET", "/metrics", b"");
    response
        .body
        .lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {sample} in {}", response.body))
        .parse()
        .expect("a number")
}

#[test]
fn a_retried_http_publish_is_stored_once_across_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path(), &[]);
    let http = server.http_address;
    ok(curl(http, "/pub?topic=orders", Some("order-1"), "first"));
    ok(curl(http, "/pub?topic=orders", Some("order-1"), "retry"));
    ok(curl(
        http,
        "/mpub?topic=orders",
        Some("batch-1"),
        "a\nb\nc\n",
    ));
    ok(curl(
        http,
        "/mpub?topic=orders",
        Some("batch-1"),
        "a\nb\nc\n",
    ));
    // Without a key nothing is de-duplicated; keys are per topic.
    ok(curl(http, "/pub?topic=orders", None, "plain"));
    ok(curl(http, "/pub?topic=orders", None, "plain"));
    ok(curl(http, "/pub?topic=audit", Some("order-1"), "elsewhere"));
    assert_eq!(depth(http, "orders"), 6);
    assert_eq!(depth(http, "audit"), 1);
    assert_eq!(metric(http, "ledgerq_dedup_keys"), 3.0);

    // A crash, then the publisher retries: still known.
    server.kill();
    server.restart();
    let http = server.http_address;
    ok(curl(
        http,
        "/pub?topic=orders",
        Some("order-1"),
        "after restart",
    ));
    ok(curl(
        http,
        "/mpub?topic=orders",
        Some("batch-1"),
        "a\nb\nc\n",
    ));
    assert_eq!(depth(http, "orders"), 6);
    assert_eq!(metric(http, "ledgerq_dedup_keys"), 3.0);
    ok(curl(http, "/pub?topic=orders", Some("order-2"), "new"));
    assert_eq!(depth(http, "orders"), 7);
}

#[test]
fn bad_idempotency_keys_are_refused_with_400() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let http = server.http_address;
    let refused = (400, r#"{"message":"INVALID_IDEMPOTENCY_KEY"}"#.to_string());
    let long = "k".repeat(257);
    assert_eq!(curl(http, "/pub?topic=t", Some(&long), "m"), refused);
    assert_eq!(curl(http, "/mpub?topic=t", Some(&long), "m\n"), refused);
    // curl sends an empty header for "Name;".
    let url = format!("http://{http}/pub?topic=t");
    let output = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "-H", "Idempotency-Key;"])
        .args(["--data-binary", "m", &url])
        .output()
        .expect("run curl");
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        text, "{\"message\":\"INVALID_IDEMPOTENCY_KEY\"}\n400",
        "an empty key"
    );
    let longest = "k".repeat(256);
    ok(curl(http, "/pub?topic=t", Some(&longest), "m"));
    ok(curl(http, "/pub?topic=t", Some(&longest), "m"));
    assert_eq!(depth(http, "t"), 1);
}

#[test]
fn the_window_settings_hold_across_a_restart_and_evictions_are_counted() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path(), &["--dedup-max-keys=2"]);
    let http = server.http_address;
    for key in ["a", "b", "c"] {
        ok(curl(http, "/pub?topic=t", Some(key), key));
    }
    let over_limit = r#"ledgerq_dedup_evictions_total{reason="over_limit"}"#;
    assert_eq!(metric(http, over_limit), 1.0);
    assert_eq!(metric(http, "ledgerq_dedup_keys"), 2.0);

    server.terminate();
    server.restart();
    let http = server.http_address;
    assert_eq!(metric(http, over_limit), 1.0, "the count is durable");
    ok(curl(http, "/pub?topic=t", Some("c"), "c"));
    assert_eq!(depth(http, "t"), 3, "c is still in the window");
    // "a" was the oldest, evicted: it is stored again (and evicts "b").
    ok(curl(http, "/pub?topic=t", Some("a"), "a"));
    assert_eq!(depth(http, "t"), 4);
    assert_eq!(metric(http, over_limit), 2.0);

    // --dedup-window=0: keys are ignored.
    server.terminate();
    let mut off = Server::start(data.path(), &["--dedup-window=0"]);
    let http = off.http_address;
    ok(curl(http, "/pub?topic=t", Some("c"), "c"));
    assert_eq!(depth(http, "t"), 5);
    off.terminate();
}

#[test]
fn a_retry_after_a_leader_kill_or_through_another_member_is_stored_once() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3]);
    let address = |cluster: &Cluster, id: u64| cluster.node(id).http_address;
    ok(curl(
        address(&cluster, leader),
        "/pub?topic=orders",
        Some("k1"),
        "one",
    ));
    let follower = cluster.others(leader)[0];
    // Through a follower (forwarded to the leader): the same key.
    ok(curl(
        address(&cluster, follower),
        "/pub?topic=orders",
        Some("k1"),
        "one",
    ));
    ok(curl(
        address(&cluster, follower),
        "/mpub?topic=orders",
        Some("k2"),
        "x\ny\n",
    ));
    wait_until("every member has the three messages", || {
        [1, 2, 3]
            .iter()
            .all(|&id| depth(address(&cluster, id), "orders") == 3)
    });

    cluster.kill(leader);
    let survivors = cluster.running();
    let new_leader = cluster.wait_for_leader(&survivors);
    for &id in &survivors {
        let http = address(&cluster, id);
        ok(curl(http, "/pub?topic=orders", Some("k1"), "one"));
        ok(curl(http, "/mpub?topic=orders", Some("k2"), "x\ny\n"));
    }
    ok(curl(
        address(&cluster, new_leader),
        "/pub?topic=orders",
        Some("k3"),
        "two",
    ));
    wait_until(
        "the survivors stored one more message, no duplicate",
        || {
            survivors
                .iter()
                .all(|&id| depth(address(&cluster, id), "orders") == 4)
        },
    );
    for &id in &survivors {
        assert_eq!(metric(address(&cluster, id), "ledgerq_dedup_keys"), 3.0);
    }
}
