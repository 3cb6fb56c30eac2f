//! `/topic/empty` and `/channel/empty` against the real binary: nsqd's
//! errors; what emptying drops (the topic's waiting messages; the channel's
//! backlog, in-flight and deferred messages) and what it keeps; that new
//! publishes still flow and that the drop survives a SIGKILL.
//!
//! The helpers are those of `http_admin.rs`.

mod common;

use common::http::*;

use std::time::Duration;

use common::RawClient;

fn subscriber_with_rdy(server: &HttpServer, topic: &str, channel: &str, rdy: u32) -> RawClient {
    let mut client = RawClient::connect(server.tcp_address);
    client.subscribe(topic, channel);
    client.command(&format!("RDY {rdy}"));
    client
}

fn id_text(message: &common::RawMessage) -> String {
    String::from_utf8_lossy(&message.id).into_owned()
}

/// FIN of a message the server no longer has in flight.
fn expect_fin_failed(client: &mut RawClient, message: &common::RawMessage) {
    let id = id_text(message);
    client.command(&format!("FIN {id}"));
    client.expect_error(&format!("E_FIN_FAILED FIN {id} failed ID not in flight"));
}

#[test]
fn topic_empty_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    let path = "/topic/empty";
    server
        .post(path, b"")
        .assert_error(400, "MISSING_ARG_TOPIC");
    server
        .post(&format!("{path}?channel=c"), b"")
        .assert_error(400, "MISSING_ARG_TOPIC");
    // Unlike pause and delete, empty checks the name (nsqd's spelling).
    server
        .post(&format!("{path}?topic=a*b"), b"")
        .assert_error(400, "INVALID_TOPIC");
    server
        .post(&format!("{path}?topic="), b"")
        .assert_error(400, "INVALID_TOPIC");
    server
        .post(&format!("{path}?topic=nope"), b"")
        .assert_error(404, "TOPIC_NOT_FOUND");
    server
        .get(&format!("{path}?topic=nope"))
        .assert_error(405, "METHOD_NOT_ALLOWED");
    server
        .request("PUT", &format!("{path}?topic=nope"), b"")
        .assert_error(405, "METHOD_NOT_ALLOWED");
    server
        .post(&format!("{path}?topic=%zz"), b"")
        .assert_error(400, "INVALID_REQUEST");
    // An existing, empty topic: nothing to drop, still 200.
    server.post("/topic/create?topic=t", b"").assert_empty();
    server.post("/topic/empty?topic=t", b"").assert_empty();
}

#[test]
fn channel_empty_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    server.post("/topic/create?topic=t", b"").assert_empty();
    let path = "/channel/empty";
    server
        .post(&format!("{path}?channel=c"), b"")
        .assert_error(400, "MISSING_ARG_TOPIC");
    server
        .post(&format!("{path}?topic=a*b&channel=c"), b"")
        .assert_error(400, "INVALID_ARG_TOPIC");
    server
        .post(&format!("{path}?topic=t"), b"")
        .assert_error(400, "MISSING_ARG_CHANNEL");
    server
        .post(&format!("{path}?topic=t&channel=a*b"), b"")
        .assert_error(400, "INVALID_ARG_CHANNEL");
    server
        .post(&format!("{path}?topic=nope&channel=c"), b"")
        .assert_error(404, "TOPIC_NOT_FOUND");
    server
        .post(&format!("{path}?topic=t&channel=c"), b"")
        .assert_error(404, "CHANNEL_NOT_FOUND");
    server
        .get(&format!("{path}?topic=t&channel=c"))
        .assert_error(405, "METHOD_NOT_ALLOWED");
    server
        .post("/channel/create?topic=t&channel=c", b"")
        .assert_empty();
    server
        .post(&format!("{path}?topic=t&channel=c"), b"")
        .assert_empty();
}

#[test]
fn channel_empty_drops_backlog_in_flight_and_deferred_durably() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = HttpServer::start(dir.path(), &[]);
    server.post("/topic/create?topic=t", b"").assert_empty();
    for channel in ["c", "other"] {
        server
            .post(&format!("/channel/create?topic=t&channel={channel}"), b"")
            .assert_empty();
    }
    let mut consumer = subscriber_with_rdy(&server, "t", "c", 1);
    server.post("/mpub?topic=t", b"a\nb").assert_ok();
    server.post("/pub?topic=t&defer=500", b"later").assert_ok();
    let in_flight = consumer.read_message();
    assert_eq!(in_flight.body, b"a");

    server
        .post("/channel/empty?topic=t&channel=c", b"")
        .assert_empty();
    // The in-flight message is gone: its FIN fails (non-fatal), and neither
    // the backlog nor the deferred message is delivered.
    expect_fin_failed(&mut consumer, &in_flight);
    std::thread::sleep(Duration::from_millis(700));
    assert_quiet(&mut consumer);

    // The client's in-flight slot was given back: new messages flow.
    server.post("/pub?topic=t", b"new").assert_ok();
    let fresh = consumer.read_message();
    assert_eq!(fresh.body, b"new");
    consumer.finish(&fresh);
    assert_quiet(&mut consumer);

    // After a SIGKILL the emptied channel stays empty; the other channel
    // was untouched and still has everything.
    drop(consumer);
    server.kill();
    let server = HttpServer::start(dir.path(), &[]);
    let mut consumer = subscriber(&server, "t", "c");
    let mut other = subscriber(&server, "t", "other");
    for expected in ["a", "b", "later", "new"] {
        assert_eq!(body_text(&mut other), expected);
    }
    assert_quiet(&mut consumer);
    server.post("/pub?topic=t", b"after").assert_ok();
    assert_eq!(body_text(&mut consumer), "after");
}

#[test]
fn topic_empty_drops_only_the_waiting_messages_durably() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = HttpServer::start(dir.path(), &[]);
    let mut consumer = subscriber(&server, "held", "c");
    server.post("/pub?topic=held", b"one").assert_ok();
    assert_eq!(body_text(&mut consumer), "one");
    server.post("/topic/pause?topic=held", b"").assert_empty();
    server.post("/mpub?topic=held", b"two\nthree").assert_ok();

    server.post("/topic/empty?topic=held", b"").assert_empty();
    server.post("/topic/unpause?topic=held", b"").assert_empty();
    assert_quiet(&mut consumer);
    server.post("/pub?topic=held", b"four").assert_ok();
    assert_eq!(body_text(&mut consumer), "four");

    // A topic without channels keeps everything in the topic: all dropped.
    server.post("/mpub?topic=lonely", b"x\ny").assert_ok();
    server.post("/topic/empty?topic=lonely", b"").assert_empty();

    // Durable: after a SIGKILL the channel gets back its unfinished "one"
    // and "four" but never "two" or "three"; "lonely" has nothing.
    drop(consumer);
    server.kill();
    let server = HttpServer::start(dir.path(), &[]);
    let mut consumer = subscriber(&server, "held", "c");
    assert_eq!(body_text(&mut consumer), "one");
    assert_eq!(body_text(&mut consumer), "four");
    assert_quiet(&mut consumer);
    let mut lonely = subscriber(&server, "lonely", "c");
    assert_quiet(&mut lonely);
    server.post("/pub?topic=lonely", b"z").assert_ok();
    assert_eq!(body_text(&mut lonely), "z");
}

#[test]
fn empty_on_ephemeral_topics() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]);
    let topic = "e%23ephemeral";
    let mut consumer = subscriber_with_rdy(&server, "e#ephemeral", "c", 1);
    server
        .post(&format!("/mpub?topic={topic}"), b"one\ntwo")
        .assert_ok();
    let in_flight = consumer.read_message();
    assert_eq!(in_flight.body, b"one");
    server
        .post(&format!("/channel/empty?topic={topic}&channel=c"), b"")
        .assert_empty();
    expect_fin_failed(&mut consumer, &in_flight);
    assert_quiet(&mut consumer);

    server
        .post(&format!("/topic/pause?topic={topic}"), b"")
        .assert_empty();
    server
        .post(&format!("/pub?topic={topic}"), b"held")
        .assert_ok();
    server
        .post(&format!("/topic/empty?topic={topic}"), b"")
        .assert_empty();
    server
        .post(&format!("/topic/unpause?topic={topic}"), b"")
        .assert_empty();
    assert_quiet(&mut consumer);
    server
        .post(&format!("/pub?topic={topic}"), b"three")
        .assert_ok();
    assert_eq!(body_text(&mut consumer), "three");
}
