//! `GET /metrics`, read by real exposition-format parsers: the Prometheus
//! text format 0.0.4 (prometheus-parse) and OpenMetrics (openmetrics-parser,
//! which checks the format strictly). Every value is checked against what
//! the test did.

mod common;

use std::collections::HashMap;

use common::http::HttpServer;
use common::{wait_until, RawClient, Server};
use openmetrics_parser::{
    MetricsExposition, OpenMetricsType, OpenMetricsValue, PrometheusType, PrometheusValue,
};
use prometheus_parse::{Scrape, Value};

fn scrape(server: &HttpServer) -> Scrape {
    let response = server.get("/metrics");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let lines = response.body.lines().map(|l| Ok(l.to_owned()));
    Scrape::parse(lines).expect("Prometheus text format")
}

/// The value of `name` whose labels include all of `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"));
    match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
        Value::Summary(_) => panic!("{name} is a summary"),
    }
}

fn kind(scrape: &Scrape, name: &str) -> &'static str {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name)
        .unwrap_or_else(|| panic!("no sample {name}"));
    match sample.value {
        Value::Counter(_) => "counter",
        Value::Gauge(_) => "gauge",
        Value::Histogram(_) => "histogram",
        Value::Summary(_) => "summary",
        Value::Untyped(_) => "untyped",
    }
}

#[test]
fn metrics_show_topics_channels_and_the_cost_of_durability() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let before = scrape(&server);
    let applied_before = value(&before, "ledgerq_last_applied_index", &[]);

    let mut consumer = RawClient::connect(server.tcp_address);
    consumer.subscribe("orders", "billing");
    for i in 0..5 {
        server
            .post("/pub?topic=orders", format!("order {i}").as_bytes())
            .assert_ok();
    }
    server
        .post("/pub?topic=orders&defer=600000", b"later")
        .assert_ok();
    consumer.command("RDY 2");
    let first = consumer.read_message();
    let second = consumer.read_message();
    consumer.finish(&first);
    consumer.command(&format!("REQ {} 0", String::from_utf8_lossy(&second.id)));
    wait_until("one FIN and one REQ counted", || {
        let now = scrape(&server);
        value(
            &now,
            "ledgerq_channel_requeues_total",
            &[("channel", "billing")],
        ) == 1.0
            && value(&now, "ledgerq_channel_in_flight", &[("channel", "billing")]) == 2.0
    });

    let now = scrape(&server);
    let t = [("topic", "orders")];
    let c = [("topic", "orders"), ("channel", "billing")];
    assert_eq!(value(&now, "ledgerq_topic_messages_total", &t), 6.0);
    assert_eq!(
        value(&now, "ledgerq_topic_message_bytes_total", &t),
        (5 * "order 0".len() + "later".len()) as f64
    );
    assert_eq!(value(&now, "ledgerq_topic_depth", &t), 0.0);
    assert_eq!(value(&now, "ledgerq_topic_paused", &t), 0.0);
    assert_eq!(value(&now, "ledgerq_channel_messages_total", &c), 6.0);
    assert_eq!(value(&now, "ledgerq_channel_deferred", &c), 1.0);
    assert_eq!(value(&now, "ledgerq_channel_clients", &c), 1.0);
    assert_eq!(value(&now, "ledgerq_channel_timeouts_total", &c), 0.0);
    // 5 published at once: 1 finished, 2 in flight (RDY 2 refilled after the
    // FIN and the REQ), 2 ready; the 6th is deferred.
    assert_eq!(value(&now, "ledgerq_channel_depth", &c), 2.0);
    assert_eq!(value(&now, "ledgerq_clients", &[]), 1.0);
    assert_eq!(value(&now, "ledgerq_storage_healthy", &[]), 1.0);

    for (name, expected) in [
        ("ledgerq_topic_messages_total", "counter"),
        ("ledgerq_channel_depth", "gauge"),
        ("ledgerq_wal_fsync_duration_seconds", "histogram"),
        ("ledgerq_commit_batch_commands", "histogram"),
        ("ledgerq_commit_batch_size_bytes", "histogram"),
        ("ledgerq_wal_written_bytes_total", "counter"),
        ("ledgerq_storage_size_bytes", "gauge"),
    ] {
        assert_eq!(kind(&now, name), expected, "{name}");
    }
    // Every durable command went through a batch that was fsynced.
    let batches = value(&now, "ledgerq_commit_batches_total", &[]);
    assert!(batches >= 6.0, "{batches} batches");
    assert_eq!(
        value(&now, "ledgerq_wal_fsync_duration_seconds", &[]),
        batches
    );
    assert_eq!(value(&now, "ledgerq_commit_batch_commands", &[]), batches);
    let applied = value(&now, "ledgerq_last_applied_index", &[]);
    assert_eq!(
        applied - applied_before,
        value(&now, "ledgerq_commit_commands_total", &[])
            - value(&before, "ledgerq_commit_commands_total", &[])
    );
    assert!(value(&now, "ledgerq_wal_written_bytes_total", &[]) > 6.0 * 5.0);
    assert!(value(&now, "ledgerq_storage_size_bytes", &[]) > 0.0);
}

#[test]
fn the_applied_index_survives_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path(), &[]);
    for _ in 0..3 {
        server.post("/pub?topic=t", b"x").assert_ok();
    }
    let applied = value(&scrape(&server), "ledgerq_last_applied_index", &[]);
    assert!(applied >= 4.0, "create topic + 3 publishes: {applied}");
    assert!(server.terminate().success());
    server.restart();
    let after = value(&scrape(&server), "ledgerq_last_applied_index", &[]);
    assert!(after >= applied, "{after} < {applied}");
    server.post("/pub?topic=t", b"x").assert_ok();
    let next = value(&scrape(&server), "ledgerq_last_applied_index", &[]);
    assert!(next > after);
}

#[test]
fn openmetrics_is_served_on_request_and_passes_a_strict_parser() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    server.post("/pub?topic=a", b"x").assert_ok();
    server
        .post("/channel/create?topic=a&channel=c", b"")
        .assert_empty();
    let raw = "GET /metrics HTTP/1.1\r\nHost: t\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\nConnection: close\r\n\r\n";
    let response = common::http::exchange(server.http_address, raw.as_bytes());
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(response.body.ends_with("# EOF\n"));
    let exposition: MetricsExposition<OpenMetricsType, OpenMetricsValue> =
        openmetrics_parser::openmetrics::parse_openmetrics(&response.body)
            .expect("valid OpenMetrics");
    let families: HashMap<&str, &OpenMetricsType> = exposition
        .families
        .iter()
        .map(|(name, family)| (name.as_str(), &family.family_type))
        .collect();
    assert!(matches!(
        families["ledgerq_topic_messages"],
        OpenMetricsType::Counter
    ));
    assert!(matches!(
        families["ledgerq_channel_depth"],
        OpenMetricsType::Gauge
    ));
    assert!(matches!(
        families["ledgerq_wal_fsync_duration_seconds"],
        OpenMetricsType::Histogram
    ));

    // The 0.0.4 text also passes the same crate's Prometheus parser.
    let text = server.get("/metrics").body;
    let _: MetricsExposition<PrometheusType, PrometheusValue> =
        openmetrics_parser::prometheus::parse_prometheus(&text).expect("valid Prometheus text");
}

#[test]
fn metrics_refuses_other_methods() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    server
        .post("/metrics", b"")
        .assert_error(405, "METHOD_NOT_ALLOWED");
}
