//! `/channel/peek`, `/topic/peek` and `/message` against the real binary:
//! a peek lists exactly what the next subscriber receives, in order
//! (requeued and deferred messages included) and changes nothing;
//! `/message` names each channel's state (ready, in flight, deferred,
//! finished); answers stay right across a restart; big bodies are cut; bad
//! input gets nsqd-style errors; a follower forwards to its leader.

mod common;

use base64::Engine;
use common::cluster::Cluster;
use common::http::*;
use common::{wait_until, RawClient, RawMessage};
use serde_json::Value;

fn json(server: &HttpServer, target: &str) -> Value {
    let response = server.get(target);
    assert_eq!(response.status, 200, "{target}: {response:?}");
    serde_json::from_str(&response.body).expect("JSON")
}

fn id_text(message: &RawMessage) -> String {
    String::from_utf8_lossy(&message.id).into_owned()
}

fn consumer(server: &HttpServer, topic: &str, channel: &str, rdy: u32) -> RawClient {
    let mut client = RawClient::connect(server.tcp_address);
    client.subscribe(topic, channel);
    client.command(&format!("RDY {rdy}"));
    client
}

/// `topics` of `/stats` (no uptime or other clocks in it).
fn topic_stats(server: &HttpServer) -> Value {
    json(server, "/stats?format=json")["topics"].clone()
}

fn decoded(entry: &Value) -> Vec<u8> {
    let text = entry["body"].as_str().expect("a base64 body");
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

/// Publishes `m0..m3` with a deferred message (`late`, due in `delay_ms`)
/// between m2 and m3, and leaves m0 requeued with one attempt by a
/// consumer that stays connected with RDY 0 (returned).
fn backlog_with_a_requeue(server: &HttpServer, delay_ms: u64) -> RawClient {
    create_topic_and_channel(server.http_address, "t", "c");
    let mut publisher = RawClient::connect(server.tcp_address);
    for body in ["m0", "m1", "m2"] {
        publisher.publish("t", body.as_bytes());
    }
    publisher.command_with_body(&format!("DPUB t {delay_ms}"), b"late");
    publisher.expect_response("OK");
    publisher.publish("t", b"m3");
    let mut first = consumer(server, "t", "c", 1);
    let m0 = first.read_message();
    assert_eq!(m0.body, b"m0");
    first.command("RDY 0");
    first.command(&format!("REQ {} 0", id_text(&m0)));
    assert!(first.read_barrier().is_empty());
    first
}

#[test]
fn a_peek_lists_what_the_next_subscriber_receives_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    // Long enough for the peek to come first on a slow machine.
    let _idle = backlog_with_a_requeue(&server, 4_000);
    let stats_before = topic_stats(&server);
    let peek = json(&server, "/channel/peek?topic=t&channel=c&count=10");
    assert_eq!(peek["topic"], "t");
    assert_eq!(peek["channel"], "c");
    let messages = peek["messages"].as_array().unwrap();
    let bodies: Vec<&str> = messages
        .iter()
        .map(|m| m["body_text"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["m0", "m1", "m2", "m3", "late"]);
    let states: Vec<&str> = messages
        .iter()
        .map(|m| m["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["ready", "ready", "ready", "ready", "deferred"]);
    assert_eq!(messages[0]["attempts"], 1, "m0 was delivered once");
    assert_eq!(messages[1]["attempts"], 0);
    assert!(messages[4]["deliver_at"].as_u64().unwrap() > 0);
    assert!(messages[0].get("deliver_at").is_none());
    // Peeking again, and asking for fewer, gives the same answer.
    assert_eq!(
        json(&server, "/channel/peek?topic=t&channel=c&count=10"),
        peek
    );
    let first_two = json(&server, "/channel/peek?topic=t&channel=c&count=2");
    assert_eq!(first_two["messages"].as_array().unwrap()[..], messages[..2]);
    assert_eq!(
        topic_stats(&server),
        stats_before,
        "a peek changes no state"
    );

    let mut next = consumer(&server, "t", "c", 10);
    for expected in messages {
        let received = next.read_message();
        assert_eq!(id_text(&received), expected["id"].as_str().unwrap());
        assert_eq!(received.body, decoded(expected));
        assert_eq!(
            received.timestamp_ns,
            expected["timestamp"].as_i64().unwrap()
        );
        let attempts = expected["attempts"].as_u64().unwrap() + 1;
        assert_eq!(u64::from(received.attempts), attempts, "{expected}");
    }
    let peek = json(&server, "/channel/peek?topic=t&channel=c&count=10");
    assert_eq!(peek["messages"], Value::Array(Vec::new()), "all in flight");
}

/// Channel `c`: m0 finished, m1 deferred for a minute, m2 in flight;
/// channel `d` has read nothing. Returns the IDs of m0, m1, m2.
fn spread_over_states(server: &HttpServer) -> ([String; 3], RawClient) {
    create_topic_and_channel(server.http_address, "t", "c");
    server
        .post("/channel/create?topic=t&channel=d", b"")
        .assert_empty();
    let mut publisher = RawClient::connect(server.tcp_address);
    for body in ["m0", "m1", "m2"] {
        publisher.publish("t", body.as_bytes());
    }
    let mut holder = RawClient::connect(server.tcp_address);
    holder.identify(r#"{"client_id":"invoicer","hostname":"billing-7"}"#);
    holder.subscribe("t", "c");
    holder.command("RDY 3");
    let received: Vec<RawMessage> = (0..3).map(|_| holder.read_message()).collect();
    holder.command("RDY 0");
    holder.finish(&received[0]);
    holder.command(&format!("REQ {} 60000", id_text(&received[1])));
    assert!(holder.read_barrier().is_empty());
    let ids = [0, 1, 2].map(|i| id_text(&received[i]));
    (ids, holder)
}

fn channel_state<'a>(report: &'a Value, channel: &str) -> &'a Value {
    report["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == channel)
        .unwrap_or_else(|| panic!("no channel {channel} in {report}"))
}

fn assert_states(server: &HttpServer, ids: &[String; 3], in_flight: bool) {
    let report = |id: &str| json(server, &format!("/message?topic=t&id={id}"));
    let m0 = report(&ids[0]);
    assert_eq!(m0["id"], ids[0].as_str());
    assert_eq!(m0["body_text"], "m0");
    assert_eq!(m0["body_size"], 2);
    assert_eq!(m0["body_truncated"], false);
    assert_eq!(channel_state(&m0, "c")["state"], "finished");
    assert_eq!(channel_state(&m0, "d")["state"], "ready");
    assert_eq!(channel_state(&m0, "d")["attempts"], 0);
    let m1 = report(&ids[1]);
    let c = channel_state(&m1, "c");
    assert_eq!(
        (&c["state"], &c["attempts"]),
        (&"deferred".into(), &1.into())
    );
    let due_ms = c["deliver_at"].as_u64().unwrap();
    let now_ms = chrono_now_ms();
    assert!(due_ms > now_ms && due_ms <= now_ms + 60_000, "{c}");
    let m2 = report(&ids[2]);
    let c = channel_state(&m2, "c");
    if in_flight {
        assert_eq!(c["state"], "in_flight", "{m2}");
        assert_eq!(c["attempts"], 1);
        assert!(c["deadline"].as_u64().unwrap() > now_ms);
        assert_eq!(c["client_id"], "invoicer");
        assert_eq!(c["hostname"], "billing-7");
    } else {
        // After a restart nothing is in flight: ready, attempts kept.
        assert_eq!((&c["state"], &c["attempts"]), (&"ready".into(), &1.into()));
    }
}

fn chrono_now_ms() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.unwrap().as_millis() as u64
}

#[test]
fn a_message_shows_its_state_in_every_channel_and_a_restart_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = HttpServer::start(dir.path(), &[]);
    let (ids, holder) = spread_over_states(&server);
    assert_states(&server, &ids, true);
    let deferred_before = json(&server, &format!("/message?topic=t&id={}", ids[1]));

    drop(holder);
    server.terminate();
    server.restart();
    assert_states(&server, &ids, false);
    let deferred_after = json(&server, &format!("/message?topic=t&id={}", ids[1]));
    assert_eq!(
        channel_state(&deferred_after, "c")["deliver_at"],
        channel_state(&deferred_before, "c")["deliver_at"],
        "a deferred message keeps its time"
    );
    let peek = json(&server, "/channel/peek?topic=t&channel=c&count=10");
    let listed: Vec<(&str, &str)> = peek["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m["state"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [(&*ids[2], "ready"), (&*ids[1], "deferred")]);
    let mut next = consumer(&server, "t", "c", 10);
    assert_eq!(id_text(&next.read_message()), ids[2]);
}

#[test]
fn a_topic_peek_lists_what_waits_for_a_channel() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    server.post("/topic/create?topic=w", b"").assert_empty();
    let big = vec![0xffu8; 100 << 10];
    server.post("/pub?topic=w", b"small").assert_ok();
    server.post("/pub?topic=w", &big).assert_ok();
    let peek = json(&server, "/topic/peek?topic=w&count=5");
    assert!(peek.get("channel").is_none());
    let messages = peek["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["state"], "in_topic");
    assert_eq!(messages[0]["body_text"], "small");
    assert_eq!(messages[1]["body_size"], 100 << 10);
    assert_eq!(messages[1]["body_truncated"], true);
    assert!(messages[1].get("body_text").is_none(), "not UTF-8");
    assert_eq!(decoded(&messages[1]), big[..64 << 10]);
    let id = messages[0]["id"].as_str().unwrap();
    let report = json(&server, &format!("/message?topic=w&id={id}"));
    assert!(report["channels"].as_array().unwrap().is_empty());
    // A channel takes the backlog: nothing waits in the topic any more.
    server
        .post("/channel/create?topic=w&channel=c", b"")
        .assert_empty();
    wait_until("the backlog handed to the channel", || {
        json(&server, "/topic/peek?topic=w&count=5")["messages"]
            .as_array()
            .unwrap()
            .is_empty()
    });
    let report = json(&server, &format!("/message?topic=w&id={id}"));
    assert_eq!(channel_state(&report, "c")["state"], "ready");
}

#[test]
fn bad_inspection_requests_get_nsqd_style_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    create_topic_and_channel(server.http_address, "t", "c");
    server.post("/pub?topic=t", b"x").assert_ok();
    let cases = [
        ("/channel/peek?channel=c", 400, "MISSING_ARG_TOPIC"),
        ("/channel/peek?topic=t", 400, "MISSING_ARG_CHANNEL"),
        (
            "/channel/peek?topic=a*b&channel=c",
            400,
            "INVALID_ARG_TOPIC",
        ),
        (
            "/channel/peek?topic=t&channel=c&count=0",
            400,
            "INVALID_COUNT",
        ),
        (
            "/channel/peek?topic=t&channel=c&count=101",
            400,
            "INVALID_COUNT",
        ),
        (
            "/channel/peek?topic=t&channel=c&count=x",
            400,
            "INVALID_COUNT",
        ),
        ("/channel/peek?topic=nope&channel=c", 404, "TOPIC_NOT_FOUND"),
        (
            "/channel/peek?topic=t&channel=nope",
            404,
            "CHANNEL_NOT_FOUND",
        ),
        ("/topic/peek", 400, "MISSING_ARG_TOPIC"),
        ("/topic/peek?topic=t&count=-1", 400, "INVALID_COUNT"),
        ("/topic/peek?topic=nope", 404, "TOPIC_NOT_FOUND"),
        ("/message?topic=t", 400, "MISSING_ARG_ID"),
        ("/message?topic=t&id=xyz", 400, "INVALID_ID"),
        ("/message?topic=t&id=00000000000000000", 400, "INVALID_ID"),
        (
            "/message?topic=nope&id=0000000000000000",
            404,
            "TOPIC_NOT_FOUND",
        ),
        (
            "/message?topic=t&id=ffffffffffffffff",
            404,
            "MESSAGE_NOT_FOUND",
        ),
        ("/message?topic=t&id=%zz", 400, "INVALID_REQUEST"),
    ];
    for (target, status, message) in cases {
        server.get(target).assert_error(status, message);
    }
    // The one message there is has the ID of offset 0; offset 1 is unused.
    let peek = json(&server, "/channel/peek?topic=t&channel=c");
    let id = peek["messages"][0]["id"].as_str().unwrap().to_owned();
    let unused = format!("{}1", &id[..15]);
    assert_eq!(&id[15..], "0");
    server
        .get(&format!("/message?topic=t&id={unused}"))
        .assert_error(404, "MESSAGE_NOT_FOUND");
    server
        .post("/channel/peek?topic=t&channel=c", b"")
        .assert_error(405, "METHOD_NOT_ALLOWED");
}

#[test]
fn a_follower_forwards_inspection_to_the_leader() {
    let cluster = Cluster::start(3, &["--broadcast-address=127.0.0.1"]);
    let leader = cluster.wait_for_leader(&[1, 2, 3]);
    let follower = cluster.others(leader)[0];
    let (on_leader, on_follower) = (cluster.node(leader), cluster.node(follower));
    create_topic_and_channel(on_leader.http_address, "t", "c");
    for body in ["m0", "m1"] {
        on_leader.post("/pub?topic=t", body.as_bytes()).assert_ok();
    }
    let mut holder = consumer(on_leader, "t", "c", 1);
    let held = holder.read_message();
    let target = format!("/message?topic=t&id={}", id_text(&held));
    // Only the leader knows m0 is in flight; the follower's answer is its.
    let report = json(on_follower, &target);
    assert_eq!(
        channel_state(&report, "c")["state"],
        "in_flight",
        "{report}"
    );
    assert_eq!(report, json(on_leader, &target));
    let peek = "/channel/peek?topic=t&channel=c&count=5";
    assert_eq!(json(on_follower, peek), json(on_leader, peek));
    assert_eq!(json(on_follower, peek)["messages"][0]["body_text"], "m1");
    on_follower
        .get("/channel/peek?topic=t&channel=nope")
        .assert_error(404, "CHANNEL_NOT_FOUND");
}
