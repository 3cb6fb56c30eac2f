//! NSQ's topic and channel lifecycle rules against the real binary: the first
//! channel of a topic receives the backlog, later channels start at the head,
//! and `#ephemeral` topics and channels live in memory only.
//!
//! Delivery order is requeued-first then log order, so "message X was not
//! delivered" is shown by the next delivery being a later marker message.

mod common;

use common::{RawClient, Server};

fn consumer(server: &Server, topic: &str, channel: &str, rdy: u32) -> RawClient {
    let mut client = RawClient::connect(server.tcp_address);
    client.subscribe(topic, channel);
    client.command(&format!("RDY {rdy}"));
    client
}

fn next_body(client: &mut RawClient) -> Vec<u8> {
    let message = client.read_message();
    client.finish(&message);
    message.body
}

#[test]
fn first_channel_gets_the_backlog_later_channels_start_at_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut producer = RawClient::connect(server.tcp_address);
    producer.publish("orders", b"backlog-1");
    producer.publish("orders", b"backlog-2");

    let mut first = consumer(&server, "orders", "first", 10);
    assert_eq!(next_body(&mut first), b"backlog-1");
    assert_eq!(next_body(&mut first), b"backlog-2");

    let mut later = consumer(&server, "orders", "later", 10);
    producer.publish("orders", b"after-later");
    assert_eq!(next_body(&mut later), b"after-later");
    assert_eq!(next_body(&mut first), b"after-later");
}

#[test]
fn an_ephemeral_channel_disappears_with_its_last_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut producer = RawClient::connect(server.tcp_address);
    producer.publish("audit", b"durable-start");

    let mut durable = consumer(&server, "audit", "keep", 10);
    assert_eq!(next_body(&mut durable), b"durable-start");

    let mut watcher = consumer(&server, "audit", "tail#ephemeral", 1);
    producer.publish("audit", b"seen-unfinished");
    let held = watcher.read_message();
    assert_eq!(held.body, b"seen-unfinished");
    // The last consumer leaves: the channel and its in-flight message go too.
    // The server closes its side only after it has let go of the client.
    watcher.stream.shutdown(std::net::Shutdown::Write).unwrap();
    watcher.expect_closed();

    producer.publish("audit", b"while-gone");
    let mut again = consumer(&server, "audit", "tail#ephemeral", 10);
    producer.publish("audit", b"marker");
    assert_eq!(
        next_body(&mut again),
        b"marker",
        "a recreated ephemeral channel starts at the head"
    );

    for expected in [&b"seen-unfinished"[..], b"while-gone", b"marker"] {
        assert_eq!(next_body(&mut durable), expected);
    }
}

#[test]
fn ephemeral_topics_and_channels_do_not_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let mut producer = RawClient::connect(server.tcp_address);
    producer.publish("scratch#ephemeral", b"memory-only");
    let mut durable = consumer(&server, "ledger", "keep", 10);
    let _ephemeral = consumer(&server, "ledger", "tail#ephemeral", 10);
    producer.publish("ledger", b"durable");
    assert_eq!(next_body(&mut durable), b"durable");
    // The FIN is lazy: once the server has handled it (the barrier), the
    // next publish's fsync carries it, so the SIGKILL below cannot undo it
    // (an unsynced FIN would legitimately redeliver "durable").
    assert!(durable.read_barrier().is_empty());
    producer.publish("ledger", b"unread-durable");

    server.kill();
    server.restart();

    let mut producer = RawClient::connect(server.tcp_address);
    let mut scratch = consumer(&server, "scratch#ephemeral", "c", 10);
    producer.publish("scratch#ephemeral", b"scratch-marker");
    assert_eq!(next_body(&mut scratch), b"scratch-marker");

    let mut tail = consumer(&server, "ledger", "tail#ephemeral", 10);
    let mut durable = consumer(&server, "ledger", "keep", 10);
    assert_eq!(next_body(&mut durable), b"unread-durable");
    producer.publish("ledger", b"ledger-marker");
    assert_eq!(next_body(&mut tail), b"ledger-marker");
    assert_eq!(next_body(&mut durable), b"ledger-marker");
}
