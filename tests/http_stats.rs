//! `GET /stats` against the real binary: nsqd's exact JSON key set and
//! types, counts that follow publishing and consuming (depth, in flight,
//! deferred, requeues, timeouts), per-client fields from IDENTIFY, the
//! `topic` / `channel` / `include_clients` / `include_mem` filters, and the
//! text format.
//!
//! The server start and raw HTTP helpers are copied from `http_api.rs`.

mod common;

use common::http::*;

use common::{wait_until, RawClient};
use serde_json::Value;

// ----- stats helpers ---------------------------------------------------------

/// `GET /stats?format=json&<extra>`, checked for nsqd's headers, parsed.
fn stats(server: &HttpServer, extra: &str) -> Value {
    let response = server.get(&format!("/stats?format=json{extra}"));
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        response.header("x-nsq-content-type"),
        Some("nsq; version=1.0")
    );
    serde_json::from_str(&response.body).expect("stats JSON")
}

fn topic<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["topics"]
        .as_array()
        .expect("topics array")
        .iter()
        .find(|t| t["topic_name"] == name)
        .unwrap_or_else(|| panic!("topic {name} in {doc}"))
}

fn channel<'a>(doc: &'a Value, topic_name: &str, name: &str) -> &'a Value {
    topic(doc, topic_name)["channels"]
        .as_array()
        .expect("channels array")
        .iter()
        .find(|c| c["channel_name"] == name)
        .unwrap_or_else(|| panic!("channel {name} in {doc}"))
}

/// Polls `/stats` until `condition` holds on the channel's stats.
fn wait_for_channel(
    server: &HttpServer,
    topic_name: &str,
    name: &str,
    what: &str,
    condition: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    wait_until(what, || {
        last = stats(server, "");
        condition(channel(&last, topic_name, name))
    });
    last
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Str,
    Int,
    Bool,
    Array,
    Object,
    Null,
    ArrayOrNull,
}

fn kind_of(value: &Value) -> Kind {
    match value {
        Value::String(_) => Kind::Str,
        Value::Number(n) if n.is_u64() || n.is_i64() => Kind::Int,
        Value::Bool(_) => Kind::Bool,
        Value::Array(_) => Kind::Array,
        Value::Object(_) => Kind::Object,
        Value::Null => Kind::Null,
        Value::Number(_) => panic!("non-integer number {value}"),
    }
}

/// Asserts `value` is an object with exactly these keys, in this order, of
/// these JSON types.
fn assert_shape(value: &Value, expected: &[(&str, Kind)]) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("object expected: {value}"));
    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
    let wanted: Vec<&str> = expected.iter().map(|(key, _)| *key).collect();
    let (mut sorted_keys, mut sorted_wanted) = (keys.clone(), wanted.clone());
    sorted_keys.sort_unstable();
    sorted_wanted.sort_unstable();
    assert_eq!(sorted_keys, sorted_wanted, "key set of {value}");
    for (key, kind) in expected {
        let actual = kind_of(&object[*key]);
        let fits = match kind {
            Kind::ArrayOrNull => matches!(actual, Kind::Array | Kind::Null),
            other => actual == *other,
        };
        assert!(fits, "{key} should be {kind:?}, is {actual:?} in {value}");
    }
}

const E2E_SHAPE: &[(&str, Kind)] = &[("count", Kind::Int), ("percentiles", Kind::Null)];

const TOPIC_SHAPE: &[(&str, Kind)] = &[
    ("topic_name", Kind::Str),
    ("channels", Kind::Array),
    ("depth", Kind::Int),
    ("backend_depth", Kind::Int),
    ("message_count", Kind::Int),
    ("message_bytes", Kind::Int),
    ("paused", Kind::Bool),
    ("e2e_processing_latency", Kind::Object),
];

const CHANNEL_SHAPE: &[(&str, Kind)] = &[
    ("channel_name", Kind::Str),
    ("depth", Kind::Int),
    ("backend_depth", Kind::Int),
    ("in_flight_count", Kind::Int),
    ("deferred_count", Kind::Int),
    ("message_count", Kind::Int),
    ("requeue_count", Kind::Int),
    ("timeout_count", Kind::Int),
    ("client_count", Kind::Int),
    ("clients", Kind::ArrayOrNull),
    ("paused", Kind::Bool),
    ("e2e_processing_latency", Kind::Object),
];

const CLIENT_SHAPE: &[(&str, Kind)] = &[
    ("client_id", Kind::Str),
    ("hostname", Kind::Str),
    ("version", Kind::Str),
    ("remote_address", Kind::Str),
    ("state", Kind::Int),
    ("ready_count", Kind::Int),
    ("in_flight_count", Kind::Int),
    ("message_count", Kind::Int),
    ("finish_count", Kind::Int),
    ("requeue_count", Kind::Int),
    ("connect_ts", Kind::Int),
    ("sample_rate", Kind::Int),
    ("deflate", Kind::Bool),
    ("snappy", Kind::Bool),
    ("user_agent", Kind::Str),
    ("tls", Kind::Bool),
    ("tls_cipher_suite", Kind::Str),
    ("tls_version", Kind::Str),
    ("tls_negotiated_protocol", Kind::Str),
    ("tls_negotiated_protocol_is_mutual", Kind::Bool),
];

const MEMORY_KEYS: &[&str] = &[
    "heap_objects",
    "heap_idle_bytes",
    "heap_in_use_bytes",
    "heap_released_bytes",
    "gc_pause_usec_100",
    "gc_pause_usec_99",
    "gc_pause_usec_95",
    "next_gc_bytes",
    "gc_total_runs",
];

/// A TCP client that IDENTIFYs with recognisable fields.
fn identified(server: &HttpServer, client_id: &str, hostname: &str, user_agent: &str) -> RawClient {
    let mut client = RawClient::connect(server.tcp_address);
    client.identify(&format!(
        r#"{{"client_id":"{client_id}","hostname":"{hostname}","user_agent":"{user_agent}","feature_negotiation":true}}"#
    ));
    client
}

// ----- tests -------------------------------------------------------------------

#[test]
fn json_document_has_nsqds_exact_shape() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);

    // No topics yet: an empty list, no producers.
    let empty = stats(&server, "");
    assert_shape(
        &empty,
        &[
            ("version", Kind::Str),
            ("health", Kind::Str),
            ("start_time", Kind::Int),
            ("topics", Kind::Array),
            ("memory", Kind::Object),
            ("producers", Kind::Null),
        ],
    );
    assert_eq!(empty["version"], "1.3.0");
    assert_eq!(empty["health"], "OK");
    assert_eq!(empty["topics"], Value::Array(Vec::new()));
    let memory_shape: Vec<(&str, Kind)> = MEMORY_KEYS.iter().map(|k| (*k, Kind::Int)).collect();
    assert_shape(&empty["memory"], &memory_shape);
    assert!(empty["memory"]["heap_in_use_bytes"].as_u64().unwrap() > 0);
    let info: Value = serde_json::from_str(&server.get("/info").body).unwrap();
    assert_eq!(empty["start_time"], info["start_time"]);

    let mut publisher = identified(&server, "pub-1", "pubhost", "pubagent/2.0");
    publisher.publish("shape", b"hello");
    publisher.publish("shape", b"world!");
    let mut consumer = identified(&server, "con-1", "conhost", "conagent/1.0");
    consumer.subscribe("shape", "ch");
    consumer.command("RDY 5");

    let doc = wait_for_channel(&server, "shape", "ch", "both messages in flight", |c| {
        c["in_flight_count"] == 2
    });
    assert_shape(
        &doc,
        &[
            ("version", Kind::Str),
            ("health", Kind::Str),
            ("start_time", Kind::Int),
            ("topics", Kind::Array),
            ("memory", Kind::Object),
            ("producers", Kind::Array),
        ],
    );
    let topic_stats = topic(&doc, "shape");
    assert_shape(topic_stats, TOPIC_SHAPE);
    assert_shape(&topic_stats["e2e_processing_latency"], E2E_SHAPE);
    assert_eq!(topic_stats["message_count"], 2);
    assert_eq!(topic_stats["message_bytes"], 11);
    assert_eq!(topic_stats["paused"], false);
    let channel_stats = channel(&doc, "shape", "ch");
    assert_shape(channel_stats, CHANNEL_SHAPE);
    assert_shape(&channel_stats["e2e_processing_latency"], E2E_SHAPE);
    assert_eq!(channel_stats["client_count"], 1);

    let clients = channel_stats["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1);
    let client = &clients[0];
    assert_shape(client, CLIENT_SHAPE);
    assert_eq!(client["client_id"], "con-1");
    assert_eq!(client["hostname"], "conhost");
    assert_eq!(client["user_agent"], "conagent/1.0");
    assert_eq!(client["version"], "V2");
    assert_eq!(client["state"], 3);
    assert_eq!(client["ready_count"], 5);
    assert_eq!(client["in_flight_count"], 2);
    assert_eq!(client["message_count"], 2);
    let local = consumer.stream.local_addr().unwrap();
    assert_eq!(client["remote_address"], local.to_string());
    assert!(client["connect_ts"].as_i64().unwrap() >= empty["start_time"].as_i64().unwrap());

    // The publisher is listed among the producers with its pub_counts.
    let producers = doc["producers"].as_array().unwrap();
    assert_eq!(producers.len(), 1, "{doc}");
    let producer = &producers[0];
    let mut producer_shape = CLIENT_SHAPE.to_vec();
    producer_shape.push(("pub_counts", Kind::Array));
    assert_shape(producer, &producer_shape);
    assert_eq!(producer["client_id"], "pub-1");
    assert_eq!(producer["state"], 0);
    assert_eq!(
        producer["pub_counts"],
        serde_json::json!([{"topic": "shape", "count": 2}])
    );
}

#[test]
fn counts_follow_publishing_and_consuming() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    server
        .post("/topic/create?topic=counts", b"")
        .assert_empty();
    // With no channel, messages wait in the topic.
    for body in [&b"a"[..], b"bb", b"ccc"] {
        let response = server.post("/pub?topic=counts", body);
        assert_eq!(response.status, 200, "{response:?}");
    }
    let doc = stats(&server, "");
    let topic_stats = topic(&doc, "counts");
    assert_eq!(topic_stats["depth"], 3);
    assert_eq!(topic_stats["backend_depth"], 3);
    assert_eq!(topic_stats["message_count"], 3);
    assert_eq!(topic_stats["message_bytes"], 6);
    assert_eq!(topic_stats["channels"], Value::Array(Vec::new()));

    // A subscriber creates the channel; the topic hands the messages over.
    let mut consumer = identified(&server, "c", "h", "ua");
    consumer.subscribe("counts", "ch");
    let doc = wait_for_channel(&server, "counts", "ch", "hand-over", |c| c["depth"] == 3);
    let channel_stats = channel(&doc, "counts", "ch");
    assert_eq!(topic(&doc, "counts")["depth"], 0);
    assert_eq!(channel_stats["message_count"], 3);
    assert_eq!(channel_stats["backend_depth"], 3);
    assert_eq!(channel_stats["in_flight_count"], 0);
    assert_eq!(channel_stats["clients"][0]["ready_count"], 0);

    // One in flight.
    consumer.command("RDY 1");
    let first = consumer.read_message();
    let doc = wait_for_channel(&server, "counts", "ch", "one in flight", |c| {
        c["in_flight_count"] == 1
    });
    let channel_stats = channel(&doc, "counts", "ch");
    assert_eq!(channel_stats["depth"], 2);
    assert_eq!(channel_stats["clients"][0]["in_flight_count"], 1);
    assert_eq!(channel_stats["clients"][0]["ready_count"], 1);

    // REQ without delay: counted, and ready again (redelivered at once).
    let id = String::from_utf8_lossy(&first.id).into_owned();
    consumer.command(&format!("REQ {id} 0"));
    let again = consumer.read_message();
    let doc = wait_for_channel(&server, "counts", "ch", "requeue counted", |c| {
        c["requeue_count"] == 1 && c["in_flight_count"] == 1
    });
    let client = &channel(&doc, "counts", "ch")["clients"][0];
    assert_eq!(client["requeue_count"], 1);
    assert_eq!(client["message_count"], 2);

    // FIN: counted for the client, the next message goes in flight.
    consumer.finish(&again);
    let second = consumer.read_message();
    let doc = wait_for_channel(&server, "counts", "ch", "finish counted", |c| {
        c["clients"][0]["finish_count"] == 1 && c["in_flight_count"] == 1
    });
    assert_eq!(channel(&doc, "counts", "ch")["depth"], 1);

    // REQ with a delay: deferred, neither ready nor in flight.
    let id = String::from_utf8_lossy(&second.id).into_owned();
    consumer.command(&format!("REQ {id} 60000"));
    let third = consumer.read_message();
    let doc = wait_for_channel(&server, "counts", "ch", "deferred", |c| {
        c["deferred_count"] == 1 && c["requeue_count"] == 2
    });
    let channel_stats = channel(&doc, "counts", "ch");
    assert_eq!(channel_stats["depth"], 0);
    assert_eq!(channel_stats["in_flight_count"], 1);
    consumer.finish(&third);
    wait_for_channel(&server, "counts", "ch", "all settled", |c| {
        c["in_flight_count"] == 0 && c["clients"][0]["finish_count"] == 2
    });

    // CLS: the client shows as closing with RDY 0.
    consumer.command("CLS");
    consumer.expect_response("CLOSE_WAIT");
    wait_for_channel(&server, "counts", "ch", "closing state", |c| {
        c["clients"][0]["state"] == 4 && c["clients"][0]["ready_count"] == 0
    });
}

#[test]
fn timeouts_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &["--msg-timeout=200ms"]);
    let mut consumer = identified(&server, "c", "h", "ua");
    consumer.subscribe("slow", "ch");
    consumer.command("RDY 1");
    let response = server.post("/pub?topic=slow", b"late");
    assert_eq!(response.status, 200, "{response:?}");
    let first = consumer.read_message();
    // Not finished: it times out and comes back.
    let again = consumer.read_message();
    assert_eq!(again.id, first.id);
    assert_eq!(again.attempts, 2);
    let doc = wait_for_channel(&server, "slow", "ch", "timeout counted", |c| {
        c["timeout_count"].as_u64() >= Some(1)
    });
    let channel_stats = channel(&doc, "slow", "ch");
    assert_eq!(channel_stats["requeue_count"], 0);
    assert_eq!(channel_stats["message_count"], 1);
}

#[test]
fn deferred_publish_and_pause_show() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    server.post("/topic/create?topic=later", b"").assert_empty();
    server
        .post("/channel/create?topic=later&channel=ch", b"")
        .assert_empty();
    let response = server.post("/pub?topic=later&defer=60000", b"x");
    assert_eq!(response.status, 200, "{response:?}");
    let doc = wait_for_channel(&server, "later", "ch", "deferred publish", |c| {
        c["deferred_count"] == 1
    });
    let channel_stats = channel(&doc, "later", "ch");
    assert_eq!(channel_stats["depth"], 0);
    assert_eq!(channel_stats["message_count"], 1);
    assert_eq!(channel_stats["client_count"], 0);
    assert_eq!(channel_stats["clients"], Value::Array(Vec::new()));

    server.post("/topic/pause?topic=later", b"").assert_empty();
    server
        .post("/channel/pause?topic=later&channel=ch", b"")
        .assert_empty();
    let doc = stats(&server, "");
    assert_eq!(topic(&doc, "later")["paused"], true);
    assert_eq!(channel(&doc, "later", "ch")["paused"], true);
    let text = server.get("/stats").body;
    assert!(text.contains("*P [later          ]"), "{text}");
    assert!(text.contains("   *P [ch                       ]"), "{text}");

    // An ephemeral channel keeps nothing on disk.
    server
        .post("/channel/create?topic=later&channel=eph%23ephemeral", b"")
        .assert_empty();
    server
        .post("/topic/unpause?topic=later", b"")
        .assert_empty();
    let response = server.post("/pub?topic=later", b"y");
    assert_eq!(response.status, 200, "{response:?}");
    let doc = wait_for_channel(&server, "later", "eph#ephemeral", "ephemeral depth", |c| {
        c["depth"] == 1
    });
    assert_eq!(channel(&doc, "later", "eph#ephemeral")["backend_depth"], 0);
    assert_eq!(channel(&doc, "later", "ch")["backend_depth"], 1);
}

#[test]
fn filters_select_topics_channels_clients_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    let mut publisher = identified(&server, "p", "h", "ua");
    publisher.publish("alpha", b"1");
    publisher.publish("beta", b"2");
    let mut consumer = identified(&server, "c", "h", "ua");
    consumer.subscribe("alpha", "one");
    server
        .post("/channel/create?topic=alpha&channel=two", b"")
        .assert_empty();
    server
        .post("/channel/create?topic=beta&channel=two", b"")
        .assert_empty();

    // Everything, topics sorted by name, channels sorted by name.
    let all = stats(&server, "");
    let names: Vec<&str> = all["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["topic_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    let channels: Vec<&str> = topic(&all, "alpha")["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel_name"].as_str().unwrap())
        .collect();
    assert_eq!(channels, ["one", "two"]);

    // topic=
    let doc = stats(&server, "&topic=beta");
    assert_eq!(doc["topics"].as_array().unwrap().len(), 1);
    assert_eq!(doc["topics"][0]["topic_name"], "beta");
    // Unknown topic: null topics and producers.
    let doc = stats(&server, "&topic=nope");
    assert_eq!(doc["topics"], Value::Null);
    assert_eq!(doc["producers"], Value::Null);
    // channel= drops topics without it.
    let doc = stats(&server, "&channel=one");
    assert_eq!(doc["topics"].as_array().unwrap().len(), 1);
    let only = &doc["topics"][0];
    assert_eq!(only["topic_name"], "alpha");
    assert_eq!(only["channels"].as_array().unwrap().len(), 1);
    assert_eq!(only["channels"][0]["channel_name"], "one");
    let doc = stats(&server, "&topic=alpha&channel=two");
    assert_eq!(doc["topics"][0]["channels"][0]["channel_name"], "two");
    let doc = stats(&server, "&topic=alpha&channel=nope");
    assert_eq!(doc["topics"], Value::Array(Vec::new()));

    // include_clients=false: clients and producers null, client_count kept.
    for value in ["false", "0"] {
        let doc = stats(&server, &format!("&include_clients={value}"));
        let one = channel(&doc, "alpha", "one");
        assert_eq!(one["clients"], Value::Null);
        assert_eq!(one["client_count"], 1);
        assert_eq!(doc["producers"], Value::Null);
    }
    let doc = stats(&server, "&include_clients=true");
    assert_eq!(
        channel(&doc, "alpha", "one")["clients"][0]["client_id"],
        "c"
    );
    assert_eq!(doc["producers"].as_array().unwrap().len(), 1);

    // include_mem=false omits memory.
    let doc = stats(&server, "&include_mem=false");
    assert!(doc.get("memory").is_none(), "{doc}");
    assert!(doc.get("topics").is_some());

    // A malformed query and a wrong method.
    server
        .get("/stats?format=json&topic=%zz")
        .assert_error(400, "INVALID_REQUEST");
    server
        .post("/stats", b"")
        .assert_error(405, "METHOD_NOT_ALLOWED");
}

#[test]
fn text_format_is_nsqds_layout() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    let empty = server.get("/stats");
    assert_eq!(empty.status, 200);
    assert_eq!(
        empty.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(empty.header("x-nsq-content-type"), Some("nsq; version=1.0"));
    let lines: Vec<&str> = empty.body.lines().collect();
    assert!(lines[0].starts_with("nsqd v1.3.0 "), "{}", empty.body);
    assert!(lines[1].starts_with("start_time ") && lines[1].ends_with('Z'));
    assert!(lines[2].starts_with("uptime "));
    assert!(empty.body.contains("\nHealth: OK\n"));
    assert!(empty.body.contains("\nMemory:\n   heap_objects"));
    assert!(empty.body.contains("\nTopics: None\n"));
    assert!(empty.body.ends_with("\nProducers: None\n"));

    let mut publisher = identified(&server, "p", "pubhost", "pubagent");
    publisher.publish("txt", b"abc");
    publisher.publish("txt", b"def");
    let mut consumer = identified(&server, "c", "conhost", "conagent");
    consumer.subscribe("txt", "ch");
    consumer.command("RDY 3");
    consumer.read_message();
    consumer.read_message();
    wait_for_channel(&server, "txt", "ch", "in flight", |c| {
        c["in_flight_count"] == 2
    });
    let text = server.get("/stats?format=text&include_mem=false").body;
    assert!(!text.contains("Memory:"), "{text}");
    assert!(
        text.contains(
            "\nTopics:\n   [txt            ] depth: 0     be-depth: 0     msgs: 2        e2e%: \n"
        ),
        "{text}"
    );
    assert!(
        text.contains("      [ch                       ] depth: 0     be-depth: 0     inflt: 2    def: 0    re-q: 0     timeout: 0     msgs: 2        e2e%: \n"),
        "{text}"
    );
    let port = consumer.stream.local_addr().unwrap().port();
    let id = format!("conhost:{port} conagent");
    assert!(
        text.contains(&format!(
            "        [V2 {id:<21}] state: 3 inflt: 2    rdy: 3    fin: 0        re-q: 0        msgs: 2        connected: "
        )),
        "{text}"
    );
    let port = publisher.stream.local_addr().unwrap().port();
    let id = format!("pubhost:{port} pubagent");
    assert!(
        text.contains(&format!(
            "\nProducers:\n   [V2 {id:<21}] msgs: 2        topics: txt=2 connected: "
        )),
        "{text}"
    );
}

/// With `--e2e-processing-latency-percentile`, each FIN's publish-to-FIN
/// latency is reported per channel and merged per topic, as nsqd does.
#[test]
fn e2e_processing_latency_quantiles_are_reported_when_configured() {
    let data = tempfile::tempdir().unwrap();
    let server = HttpServer::start(
        data.path(),
        &["--e2e-processing-latency-percentile=0.99,0.5"],
    );
    let mut consumer = RawClient::connect(server.tcp_address);
    consumer.subscribe("lat", "c");
    for i in 0..10 {
        server
            .post("/pub?topic=lat", format!("m{i}").as_bytes())
            .assert_ok();
    }
    let idle = stats(&server, "");
    assert_eq!(
        channel(&idle, "lat", "c")["e2e_processing_latency"],
        serde_json::json!({"count": 0, "percentiles": [
            {"quantile": 0.99, "value": 0.0}, {"quantile": 0.5, "value": 0.0}]})
    );
    consumer.command("RDY 10");
    for _ in 0..10 {
        let message = consumer.read_message();
        consumer.finish(&message);
    }
    let doc = wait_for_channel(&server, "lat", "c", "10 FINs counted", |c| {
        c["e2e_processing_latency"]["count"] == 10
    });
    for e2e in [
        &channel(&doc, "lat", "c")["e2e_processing_latency"],
        &topic(&doc, "lat")["e2e_processing_latency"],
    ] {
        assert_eq!(e2e["count"], 10, "{e2e}");
        let percentiles = e2e["percentiles"].as_array().unwrap();
        assert_eq!(percentiles[0]["quantile"], 0.99);
        assert_eq!(percentiles[1]["quantile"], 0.5);
        let p99 = percentiles[0]["value"].as_f64().unwrap();
        let p50 = percentiles[1]["value"].as_f64().unwrap();
        // Publish to FIN took more than a microsecond and far less than the deadline.
        assert!(p50 >= 1_000.0 && p50 <= p99 && p99 < 30e9, "{e2e}");
    }
    let text = server.get("/stats").body;
    let line = text
        .lines()
        .find(|l| l.contains("[lat"))
        .expect("topic line");
    let after = line.split("e2e%: ").nth(1).expect("e2e% column");
    assert_eq!(after.split(", ").count(), 2, "{line}");
    assert!(after.ends_with('s'), "{line}");
}

/// nsqd counts a message in a channel's `message_count` when it enters the
/// channel: emptying the channel does not take it back (nsqd v1.3.0: publish
/// 3, empty, `message_count` 3).
#[test]
fn message_count_keeps_what_an_empty_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    server.post("/topic/create?topic=t", b"").assert_empty();
    server
        .post("/channel/create?topic=t&channel=c", b"")
        .assert_empty();
    server.post("/mpub?topic=t", b"a\nb\nc").assert_ok();
    let mut consumer = RawClient::connect(server.tcp_address);
    consumer.subscribe("t", "c");
    consumer.command("RDY 1");
    let read = consumer.read_message();
    let doc = stats(&server, "");
    assert_eq!(channel(&doc, "t", "c")["message_count"], 3);
    server
        .post("/channel/empty?topic=t&channel=c", b"")
        .assert_empty();
    let doc = stats(&server, "");
    let emptied = channel(&doc, "t", "c");
    assert_eq!(
        (emptied["message_count"].as_u64(), emptied["depth"].as_u64()),
        (Some(3), Some(0))
    );
    let id = String::from_utf8_lossy(&read.id).into_owned();
    consumer.command(&format!("FIN {id}"));
    consumer.expect_error(&format!("E_FIN_FAILED FIN {id} failed ID not in flight"));
    server.post("/pub?topic=t", b"d").assert_ok();
    let fresh = consumer.read_message();
    assert_eq!(fresh.body, b"d");
    let doc = stats(&server, "");
    assert_eq!(channel(&doc, "t", "c")["message_count"], 4);
}
