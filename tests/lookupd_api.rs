//! `ledgerq lookupd` against nsqlookupd's wire behaviour (`docs/nsq-wire.md` §6):
//! the TCP protocol V1 byte by byte with its fatal errors, and the HTTP API
//! with its JSON shapes, status codes and headers. Nodes are simulated with
//! raw V1 connections, as nsqd would speak.

mod common;

use common::lookupd::{Lookupd, V1Client};
use common::wait_until;
use serde_json::json;

#[test]
fn bad_magic_is_answered_then_closed() {
    let lookupd = Lookupd::start(&[]);
    let mut client = V1Client::connect_without_magic(lookupd.tcp_address);
    client.send(b"  V2");
    assert_eq!(client.reply(), "E_BAD_PROTOCOL");
    client.expect_closed();
}

#[test]
fn identify_answers_with_the_lookupds_address_and_ports() {
    let lookupd = Lookupd::start(&["--broadcast-address=lookup.example"]);
    let mut client = V1Client::connect(lookupd.tcp_address);
    assert_eq!(client.command("PING"), "OK", "PING before IDENTIFY is fine");
    let reply: serde_json::Value =
        serde_json::from_str(&client.identify_as("node-a", 4150)).unwrap();
    assert_eq!(
        reply,
        json!({
            "broadcast_address": "lookup.example",
            "hostname": reply["hostname"],
            "http_port": lookupd.http_address.port(),
            "tcp_port": lookupd.tcp_address.port(),
            "version": "1.3.0",
        })
    );
    assert!(reply["hostname"].as_str().is_some_and(|h| !h.is_empty()));
    assert_eq!(client.command("REGISTER t c"), "OK");
    assert_eq!(client.command("PING"), "OK");
}

/// Each error of `docs/nsq-wire.md` §6.1: answered as `<code> <text>`, then closed.
#[test]
fn every_v1_error_is_fatal_with_nsqlookupds_text() {
    let lookupd = Lookupd::start(&[]);
    let cases: [(&[&str], &str); 7] = [
        (&["REGISTER t"], "E_INVALID client must IDENTIFY"),
        (&["UNREGISTER t c"], "E_INVALID client must IDENTIFY"),
        (&["FOO bar"], "E_INVALID invalid command FOO"),
        (
            &["IDENTIFY_OK", "REGISTER"],
            "E_INVALID REGISTER insufficient number of params",
        ),
        (
            &["IDENTIFY_OK", "REGISTER a*b"],
            "E_BAD_TOPIC REGISTER topic name 'a*b' is not valid",
        ),
        (
            &["IDENTIFY_OK", "UNREGISTER t c^"],
            "E_BAD_CHANNEL UNREGISTER channel name 'c^' is not valid",
        ),
        (
            &["IDENTIFY_OK", "IDENTIFY"],
            "E_INVALID cannot IDENTIFY again",
        ),
    ];
    for (lines, expected) in cases {
        let mut client = V1Client::connect(lookupd.tcp_address);
        let (last, before) = lines.split_last().unwrap();
        for line in before {
            assert_eq!(*line, "IDENTIFY_OK");
            assert!(client.identify_as("n", 4150).starts_with('{'));
        }
        assert_eq!(client.command(last), expected, "{lines:?}");
        client.expect_closed();
    }
    let bodies = [
        ("{", "E_BAD_BODY IDENTIFY failed to decode JSON body"),
        (
            r#"{"tcp_port":4150,"http_port":4151,"version":"1.3.0"}"#,
            "E_BAD_BODY IDENTIFY missing fields",
        ),
        (
            r#"{"broadcast_address":"b","tcp_port":4150,"version":"1.3.0"}"#,
            "E_BAD_BODY IDENTIFY missing fields",
        ),
    ];
    for (body, expected) in bodies {
        let mut client = V1Client::connect(lookupd.tcp_address);
        assert_eq!(client.identify(body), expected, "{body}");
        client.expect_closed();
    }
    let mut client = V1Client::connect(lookupd.tcp_address);
    client.send(b"IDENTIFY\n\x7f\xff\xff\xff");
    assert_eq!(client.reply(), "E_BAD_BODY IDENTIFY failed to read body");
    client.expect_closed();
    // None of this registered anything, and the lookupd still answers.
    assert_eq!(lookupd.json("/topics"), json!({"topics": []}));
}

#[test]
fn lookup_lists_live_producers_and_all_channels() {
    let lookupd = Lookupd::start(&[]);
    lookupd
        .get("/lookup?topic=t")
        .assert_error(404, "TOPIC_NOT_FOUND");
    lookupd
        .get("/lookup")
        .assert_error(400, "MISSING_ARG_TOPIC");

    let mut a = V1Client::connect(lookupd.tcp_address);
    a.identify_as("node-a", 4150);
    assert_eq!(a.command("REGISTER t c1"), "OK");
    let mut b = V1Client::connect(lookupd.tcp_address);
    b.identify_as("node-b", 5150);
    assert_eq!(b.command("REGISTER t c2"), "OK");
    assert_eq!(b.command("REGISTER u"), "OK");

    let found = lookupd.json("/lookup?topic=t");
    let mut channels: Vec<&str> = found["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    channels.sort();
    assert_eq!(channels, ["c1", "c2"]);
    assert_eq!(lookupd.producers("t"), ["node-a:4150", "node-b:5150"]);
    let producer = &found["producers"][0];
    let keys: Vec<&str> = producer
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "broadcast_address",
            "hostname",
            "http_port",
            "remote_address",
            "tcp_port",
            "version"
        ],
        "PeerInfo's fields (serde_json sorts keys)"
    );
    assert_eq!(
        producer["remote_address"],
        a.stream.local_addr().unwrap().to_string()
    );

    let response = lookupd.get("/topics");
    assert_eq!(
        response.header("x-nsq-content-type"),
        Some("nsq; version=1.0")
    );
    assert_eq!(
        response.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(lookupd.json("/topics"), json!({"topics": ["t", "u"]}));
    assert_eq!(lookupd.json("/channels?topic=u"), json!({"channels": []}));
    assert_eq!(
        lookupd.json("/channels?topic=nope"),
        json!({"channels": []})
    );
    lookupd
        .get("/channels")
        .assert_error(400, "MISSING_ARG_TOPIC");

    // UNREGISTER of a channel leaves its (durable) key; a closed connection
    // takes the node out of every registration but leaves the keys.
    assert_eq!(a.command("UNREGISTER t c1"), "OK");
    assert_eq!(lookupd.producers("t"), ["node-a:4150", "node-b:5150"]);
    drop(b);
    wait_until("node-b dropped on disconnect", || {
        lookupd.producers("t") == ["node-a:4150"]
    });
    assert_eq!(lookupd.json("/topics"), json!({"topics": ["t", "u"]}));
    assert_eq!(lookupd.json("/lookup?topic=u")["producers"], json!([]));
}

#[test]
fn ephemeral_keys_go_when_their_last_producer_unregisters() {
    let lookupd = Lookupd::start(&[]);
    let mut a = V1Client::connect(lookupd.tcp_address);
    a.identify_as("node-a", 4150);
    assert_eq!(a.command("REGISTER t c#ephemeral"), "OK");
    assert_eq!(a.command("REGISTER e#ephemeral"), "OK");
    assert_eq!(
        lookupd.json("/channels?topic=t"),
        json!({"channels": ["c#ephemeral"]})
    );
    assert_eq!(a.command("UNREGISTER t c#ephemeral"), "OK");
    assert_eq!(lookupd.json("/channels?topic=t"), json!({"channels": []}));
    assert_eq!(a.command("UNREGISTER e#ephemeral"), "OK");
    assert_eq!(lookupd.json("/topics"), json!({"topics": ["t"]}));
}

#[test]
fn nodes_show_topics_with_tombstones_of_equal_length() {
    let lookupd = Lookupd::start(&[]);
    assert_eq!(lookupd.json("/nodes"), json!({"producers": []}));
    let mut a = V1Client::connect(lookupd.tcp_address);
    a.identify_as("node-a", 4150);
    for line in ["REGISTER x c", "REGISTER y", "REGISTER z"] {
        assert_eq!(a.command(line), "OK");
    }
    lookupd
        .post("/topic/tombstone?topic=y")
        .assert_error(400, "MISSING_ARG_NODE");
    lookupd
        .post("/topic/tombstone?node=node-a:4151")
        .assert_error(400, "MISSING_ARG_TOPIC");
    lookupd
        .post("/topic/tombstone?topic=y&node=node-a:4151")
        .assert_empty();
    lookupd
        .post("/topic/tombstone?topic=y&node=elsewhere:1")
        .assert_empty();

    let nodes = lookupd.json("/nodes");
    let node = &nodes["producers"][0];
    assert_eq!(node["broadcast_address"], "node-a");
    assert_eq!(node["tcp_port"], 4150);
    assert_eq!(node["http_port"], 4151);
    assert_eq!(node["topics"], json!(["x", "y", "z"]));
    assert_eq!(node["tombstones"], json!([false, true, false]));
    // Tombstoned for y only: hidden from /lookup?topic=y, still in x.
    assert!(lookupd.producers("y").is_empty());
    assert_eq!(lookupd.producers("x"), ["node-a:4150"]);
    let debug = lookupd.json("/debug");
    assert_eq!(debug["topic:y:"][0]["tombstoned"], true);
    assert_eq!(debug["client::"][0]["broadcast_address"], "node-a");
}

#[test]
fn tombstones_lapse_after_their_lifetime() {
    let lookupd = Lookupd::start(&["--tombstone-lifetime=300ms"]);
    let mut a = V1Client::connect(lookupd.tcp_address);
    a.identify_as("node-a", 4150);
    assert_eq!(a.command("REGISTER t"), "OK");
    lookupd
        .post("/topic/tombstone?topic=t&node=node-a:4151")
        .assert_empty();
    assert!(lookupd.producers("t").is_empty());
    wait_until("tombstone lapses", || {
        lookupd.producers("t") == ["node-a:4150"]
    });
}

#[test]
fn producers_that_stop_pinging_expire_and_come_back_with_a_ping() {
    let lookupd = Lookupd::start(&["--inactive-producer-timeout=400ms"]);
    let mut a = V1Client::connect(lookupd.tcp_address);
    a.identify_as("node-a", 4150);
    assert_eq!(a.command("REGISTER t"), "OK");
    assert_eq!(lookupd.producers("t"), ["node-a:4150"]);
    wait_until("silent producer expires", || {
        lookupd.producers("t").is_empty()
    });
    assert_eq!(lookupd.json("/nodes"), json!({"producers": []}));
    assert_eq!(a.command("PING"), "OK");
    assert_eq!(lookupd.producers("t"), ["node-a:4150"]);
}

#[test]
fn http_registry_edits_follow_nsqlookupd() {
    let lookupd = Lookupd::start(&[]);
    lookupd
        .post("/topic/create")
        .assert_error(400, "MISSING_ARG_TOPIC");
    lookupd
        .post("/topic/create?topic=a*")
        .assert_error(400, "INVALID_ARG_TOPIC");
    lookupd.post("/topic/create?topic=t").assert_empty();
    assert_eq!(
        lookupd.json("/lookup?topic=t"),
        json!({"channels": [], "producers": []})
    );

    lookupd
        .post("/channel/create?topic=t")
        .assert_error(400, "MISSING_ARG_CHANNEL");
    lookupd
        .post("/channel/create?channel=c")
        .assert_error(400, "MISSING_ARG_TOPIC");
    lookupd
        .post("/channel/create?topic=t&channel=c!")
        .assert_error(400, "INVALID_ARG_CHANNEL");
    lookupd
        .post("/channel/create?topic=t!&channel=c")
        .assert_error(400, "INVALID_ARG_TOPIC");
    lookupd
        .post("/channel/create?topic=t2&channel=c")
        .assert_empty();
    assert_eq!(lookupd.json("/topics"), json!({"topics": ["t", "t2"]}));
    assert_eq!(
        lookupd.json("/channels?topic=t2"),
        json!({"channels": ["c"]})
    );

    lookupd
        .post("/channel/delete?topic=t2&channel=nope")
        .assert_error(404, "CHANNEL_NOT_FOUND");
    lookupd
        .post("/channel/delete?topic=t2&channel=c")
        .assert_empty();
    assert_eq!(lookupd.json("/channels?topic=t2"), json!({"channels": []}));

    lookupd
        .post("/channel/create?topic=t&channel=c")
        .assert_empty();
    lookupd
        .post("/topic/delete")
        .assert_error(400, "MISSING_ARG_TOPIC");
    lookupd.post("/topic/delete?topic=t").assert_empty();
    lookupd
        .post("/topic/delete?topic=never-there")
        .assert_empty();
    assert_eq!(lookupd.json("/topics"), json!({"topics": ["t2"]}));
    assert_eq!(lookupd.json("/channels?topic=t"), json!({"channels": []}));
}

#[test]
fn ping_info_404_405_and_malformed_queries() {
    let lookupd = Lookupd::start(&[]);
    let ping = lookupd.get("/ping");
    assert_eq!((ping.status, ping.body.as_str()), (200, "OK"));
    assert_eq!(ping.header("x-nsq-content-type"), None);
    assert_eq!(lookupd.json("/info"), json!({"version": "1.3.0"}));
    lookupd.get("/nope").assert_error(404, "NOT_FOUND");
    lookupd
        .post("/lookup?topic=t")
        .assert_error(405, "METHOD_NOT_ALLOWED");
    lookupd
        .get("/topic/create?topic=t")
        .assert_error(405, "METHOD_NOT_ALLOWED");
    lookupd
        .get("/lookup?topic=%zz")
        .assert_error(400, "INVALID_REQUEST");
}

/// Hundreds of connections registering (and some misbehaving) do not stop
/// `/lookup` from answering, and each node's view stays exact.
#[test]
fn a_flood_of_registrations_does_not_stop_lookup() {
    let lookupd = Lookupd::start(&[]);
    let address = lookupd.tcp_address;
    let nodes: Vec<_> = (0..8)
        .map(|n| {
            std::thread::spawn(move || {
                let mut clients = Vec::new();
                for i in 0..25u16 {
                    let mut client = V1Client::connect(address);
                    client.identify_as(&format!("n{n}-{i}"), 4000 + i);
                    for topic in 0..20 {
                        assert_eq!(client.command(&format!("REGISTER flood{topic} c")), "OK");
                    }
                    clients.push(client);
                    let mut junk = V1Client::connect(address);
                    junk.send(b"GARBAGE\n");
                }
                clients
            })
        })
        .collect();
    for _ in 0..50 {
        assert_eq!(lookupd.get("/ping").status, 200);
        let response = lookupd.get("/lookup?topic=flood0");
        assert!(matches!(response.status, 200 | 404), "{response:?}");
    }
    let clients: Vec<_> = nodes.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert_eq!(lookupd.producers("flood7").len(), 200);
    drop(clients);
    wait_until("all nodes gone", || lookupd.producers("flood7").is_empty());
}
