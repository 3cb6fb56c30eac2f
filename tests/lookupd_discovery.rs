//! `ledgerq serve` registering with `ledgerq lookupd` as nsqd does
//! (`docs/nsq-wire.md` §6.3), `/config/nsqlookupd_tcp_addresses` at run time, and
//! a real NSQ client library (tokio-nsq) finding ledgerq nodes through the
//! lookupd: a topic spread over two nodes, one of which restarts.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::lookupd::Lookupd;
use common::{wait_until, Server, DEADLINE};
use serde_json::json;
use tokio_nsq::{
    NSQChannel, NSQConfigShared, NSQConsumerConfig, NSQConsumerConfigSources,
    NSQConsumerLookupConfig, NSQEvent, NSQTopic,
};

fn node(lookupd: &Lookupd, data: &std::path::Path) -> Server {
    let lookupd_flag = format!("--lookupd-tcp-address={}", lookupd.tcp_address);
    Server::start(data, &[&lookupd_flag, "--broadcast-address=127.0.0.1"])
}

fn address_of(server: &Server) -> String {
    format!("127.0.0.1:{}", server.tcp_address.port())
}

fn channels(lookupd: &Lookupd, topic: &str) -> serde_json::Value {
    lookupd.json(&format!("/channels?topic={topic}"))["channels"].clone()
}

#[test]
fn topics_and_channels_are_registered_and_unregistered_as_they_change() {
    let lookupd = Lookupd::start(&[]);
    let data = tempfile::tempdir().unwrap();
    let server = node(&lookupd, data.path());
    let me = address_of(&server);

    server
        .post("/topic/create?topic=orders", b"")
        .assert_empty();
    wait_until("topic registered", || {
        lookupd.producers("orders") == [me.clone()]
    });
    let nodes = lookupd.json("/nodes");
    let node = &nodes["producers"][0];
    assert_eq!(node["broadcast_address"], "127.0.0.1");
    assert_eq!(node["tcp_port"], server.tcp_address.port());
    assert_eq!(node["http_port"], server.http_address.port());
    assert_eq!(node["version"], "1.3.0");

    server
        .post("/channel/create?topic=orders&channel=billing", b"")
        .assert_empty();
    wait_until("channel registered", || {
        channels(&lookupd, "orders") == json!(["billing"])
    });

    server
        .post("/channel/delete?topic=orders&channel=billing", b"")
        .assert_empty();
    wait_until("channel unregistered", || {
        lookupd.json("/debug")["channel:orders:billing"] == json!([])
    });

    server
        .post("/topic/delete?topic=orders", b"")
        .assert_empty();
    wait_until("topic unregistered", || {
        lookupd.producers("orders").is_empty()
    });

    // An ephemeral channel lives while it has a subscriber; lookupd drops
    // its key with the last producer.
    let mut consumer = common::RawClient::connect(server.tcp_address);
    consumer.subscribe("events", "tail#ephemeral");
    wait_until("ephemeral channel registered", || {
        channels(&lookupd, "events") == json!(["tail#ephemeral"])
    });
    drop(consumer);
    wait_until("ephemeral channel gone", || {
        channels(&lookupd, "events") == json!([])
    });
    assert_eq!(lookupd.producers("events"), [me]);
}

#[test]
fn a_restarted_node_and_a_restarted_lookupd_see_everything_again() {
    let mut lookupd = Lookupd::start(&[]);
    let data = tempfile::tempdir().unwrap();
    let mut server = node(&lookupd, data.path());
    server
        .post("/channel/create?topic=t", b"")
        .assert_error(400, "MISSING_ARG_CHANNEL");
    server.post("/topic/create?topic=t", b"").assert_empty();
    server
        .post("/channel/create?topic=t&channel=c", b"")
        .assert_empty();
    wait_until("registered", || channels(&lookupd, "t") == json!(["c"]));

    // The node restarts (new ports): its topics come back from disk and it
    // registers them again; the old connection's registrations are gone.
    assert!(server.terminate().success());
    wait_until("old node gone", || lookupd.producers("t").is_empty());
    server.restart();
    let me = address_of(&server);
    wait_until("restarted node registered", || {
        lookupd.producers("t") == [me.clone()]
    });

    // The lookupd restarts on the same port, empty: the node reconnects
    // (with backoff) and registers everything again.
    let tcp = lookupd.tcp_address;
    let http = lookupd.http_address;
    drop(lookupd);
    lookupd = Lookupd::start_at(tcp, http, &[]);
    wait_until("re-registered with the new lookupd", || {
        lookupd.producers("t") == [me.clone()] && channels(&lookupd, "t") == json!(["c"])
    });
}

#[test]
fn lookupd_addresses_change_at_run_time() {
    let lookupd = Lookupd::start(&[]);
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--broadcast-address=127.0.0.1"]);
    let me = address_of(&server);
    server.post("/topic/create?topic=t", b"").assert_empty();

    let get = server.get("/config/nsqlookupd_tcp_addresses");
    assert_eq!((get.status, get.body.as_str()), (200, "[]"));
    assert_eq!(get.header("x-nsq-content-type"), Some("nsq; version=1.0"));

    let addresses = format!(r#"["{}"]"#, lookupd.tcp_address);
    let put = server.request(
        "PUT",
        "/config/nsqlookupd_tcp_addresses",
        addresses.as_bytes(),
    );
    assert_eq!((put.status, put.body.as_str()), (200, addresses.as_str()));
    wait_until("registered after PUT", || {
        lookupd.producers("t") == [me.clone()]
    });
    let get = server.get("/config/nsqlookupd_tcp_addresses");
    assert_eq!(get.body, addresses);

    let put = server.request("PUT", "/config/nsqlookupd_tcp_addresses", b"[]");
    assert_eq!((put.status, put.body.as_str()), (200, "[]"));
    wait_until("gone after PUT []", || lookupd.producers("t").is_empty());
}

#[test]
fn config_endpoint_answers_as_nsqd() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--max-msg-size=64"]);
    let value = |name: &str| {
        let response = server.get(&format!("/config/{name}"));
        assert_eq!(response.status, 200, "{name}: {response:?}");
        serde_json::from_str::<serde_json::Value>(&response.body).unwrap()
    };
    assert_eq!(value("msg_timeout"), json!(60_000_000_000u64));
    assert_eq!(value("max_msg_size"), json!(64));
    assert_eq!(value("mem_queue_size"), json!(10_000));
    assert_eq!(value("log_level"), json!(2));
    server
        .get("/config/no_such_option")
        .assert_error(400, "INVALID_OPTION");

    let put = |name: &str, body: &[u8]| server.request("PUT", &format!("/config/{name}"), body);
    put("log_level", b"").assert_error(413, "INVALID_VALUE");
    put("log_level", &[b'x'; 65]).assert_error(413, "INVALID_VALUE");
    put("no_such_option", b"").assert_error(413, "INVALID_VALUE");
    put("no_such_option", b"1").assert_error(400, "INVALID_OPTION");
    put("msg_timeout", b"1").assert_error(400, "INVALID_OPTION");
    put("log_level", b"loud").assert_error(400, "INVALID_VALUE");
    put("nsqlookupd_tcp_addresses", b"not json").assert_error(400, "INVALID_VALUE");
    put("nsqlookupd_tcp_addresses", b"[1]").assert_error(400, "INVALID_VALUE");
    let response = put("log_level", b"debug");
    assert_eq!((response.status, response.body.as_str()), (200, "1"));
    assert_eq!(value("log_level"), json!(1));
    server
        .post("/config/log_level", b"")
        .assert_error(405, "METHOD_NOT_ALLOWED");
}

/// A consumer that knows only the lookupd gets every message of a topic
/// spread over two nodes, and finds a node again after it restarted on new
/// ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_library_consumes_through_lookupd_across_two_nodes() {
    let lookupd = Lookupd::start(&[]);
    let data_a = tempfile::tempdir().unwrap();
    let data_b = tempfile::tempdir().unwrap();
    let node_a = node(&lookupd, data_a.path());
    let mut node_b = node(&lookupd, data_b.path());

    let mut expected = HashSet::new();
    for (server, name) in [(&node_a, "a"), (&node_b, "b")] {
        for i in 0..50 {
            let body = format!("{name}-{i}");
            server
                .post("/pub?topic=spread", body.as_bytes())
                .assert_ok();
            expected.insert(body);
        }
    }
    wait_until("both nodes registered", || {
        lookupd.producers("spread").len() == 2
    });

    let lookup = NSQConsumerLookupConfig::new()
        .set_poll_interval(Duration::from_millis(100))
        .set_addresses(HashSet::from([format!("http://{}", lookupd.http_address)]));
    let mut consumer = NSQConsumerConfig::new(
        NSQTopic::new("spread").unwrap(),
        NSQChannel::new("all").unwrap(),
    )
    .set_max_in_flight(20)
    .set_sources(NSQConsumerConfigSources::Lookup(lookup))
    .set_shared(NSQConfigShared::new().set_flush_interval(Duration::from_millis(5)))
    .build();

    let mut received = HashSet::new();
    let receive_all = async |consumer: &mut tokio_nsq::NSQConsumer,
                             received: &mut HashSet<String>,
                             expected: &HashSet<String>| {
        while !expected.is_subset(received) {
            match consumer.consume().await {
                Some(NSQEvent::Message(message)) => {
                    received.insert(String::from_utf8(message.body.clone()).unwrap());
                    message.finish().await;
                }
                Some(_) => {}
                None => panic!("consumer closed"),
            }
        }
    };
    tokio::time::timeout(
        DEADLINE,
        receive_all(&mut consumer, &mut received, &expected),
    )
    .await
    .expect("every message of both nodes within the deadline");

    // Node b restarts on new ports; what is published there afterwards
    // reaches the consumer once its lookupd poll finds the new address.
    assert!(node_b.terminate().success());
    node_b.restart();
    let new_b = address_of(&node_b);
    wait_until("node b registered again", || {
        lookupd.producers("spread").contains(&new_b)
    });
    for i in 0..20 {
        let body = format!("b-after-restart-{i}");
        node_b
            .post("/pub?topic=spread", body.as_bytes())
            .assert_ok();
        expected.insert(body);
    }
    tokio::time::timeout(
        DEADLINE,
        receive_all(&mut consumer, &mut received, &expected),
    )
    .await
    .expect("the restarted node's messages within the deadline");
    assert_eq!(received, expected);
}

/// nsqd's channel pre-creation (`docs/nsq-wire.md` §6.3): a topic new to a node
/// first gets the durable channels its lookupds know of, before its first
/// message is handed over, so each of them receives every message.
#[test]
fn a_new_topic_gets_the_channels_lookupd_knows_before_any_message() {
    // The node asks the lookupd's HTTP API at the address the lookupd
    // announces, which is the host name by default.
    let lookupd = Lookupd::start(&["--broadcast-address=127.0.0.1"]);
    for channel in ["billing", "audit", "tail%23ephemeral"] {
        lookupd
            .post(&format!("/channel/create?topic=orders&channel={channel}"))
            .assert_empty();
    }
    let data = tempfile::tempdir().unwrap();
    let server = node(&lookupd, data.path());
    // Once a registration arrived, the node has read the lookupd's IDENTIFY reply.
    server
        .post("/topic/create?topic=warmup", b"")
        .assert_empty();
    wait_until("node identified", || {
        !lookupd.producers("warmup").is_empty()
    });

    for i in 0..5 {
        server
            .post("/pub?topic=orders", format!("order {i}").as_bytes())
            .assert_ok();
    }
    let stats: serde_json::Value =
        serde_json::from_str(&server.get("/stats?format=json&topic=orders").body).unwrap();
    let channels = stats["topics"][0]["channels"].as_array().unwrap();
    let names: Vec<&str> = channels
        .iter()
        .map(|c| c["channel_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["audit", "billing"],
        "no ephemeral channel is pre-created"
    );
    for channel in channels {
        assert_eq!(channel["message_count"], 5, "{channel}");
        assert_eq!(channel["depth"], 5, "{channel}");
    }
    assert_eq!(stats["topics"][0]["depth"], 0);
}
