//! Crash tests against the real binary: SIGKILL in the middle of a
//! concurrent, pipelined publish load, attempts and deferrals across
//! SIGKILL, and SIGTERM's promise to answer what is pending and flush.
//!
//! Every wait is a poll with a deadline or a protocol barrier; the kill is
//! triggered by a count of acknowledged messages, never by a timer.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{wait_until, RawClient, RawMessage, Server, FRAME_MESSAGE, FRAME_RESPONSE};

/// Commands one publishing connection may have unanswered at once.
const WINDOW: usize = 64;
/// A bound on each publisher, should the server stop answering.
const MAX_COMMANDS_PER_CONNECTION: u64 = 40_000;

const HEARTBEAT: &[u8] = b"_heartbeat_";

// ----- a pipelined publish load ------------------------------------------

/// What the publishing connections did.
#[derive(Default)]
struct Published {
    /// Every body written (or being written) to a socket.
    sent: Vec<String>,
    /// Bodies whose command was answered `OK`.
    acked: Vec<String>,
    /// The bodies of each MPUB, as sent.
    mpubs: Vec<Vec<String>>,
    /// Answers other than `OK`.
    errors: Vec<String>,
}

impl Published {
    fn merge(&mut self, other: Published) {
        self.sent.extend(other.sent);
        self.acked.extend(other.acked);
        self.mpubs.extend(other.mpubs);
        self.errors.extend(other.errors);
    }
}

/// Several connections publishing PUB and MPUB as fast as the server
/// answers, each with up to [`WINDOW`] commands in flight.
struct Load {
    acked_messages: Arc<AtomicU64>,
    publishers: Vec<JoinHandle<Published>>,
}

impl Load {
    fn start(address: SocketAddr, topic: &'static str, connections: usize) -> Load {
        let acked_messages = Arc::new(AtomicU64::new(0));
        let publishers = (0..connections)
            .map(|connection| {
                let acked = acked_messages.clone();
                std::thread::spawn(move || publish_pipelined(address, topic, connection, &acked))
            })
            .collect();
        Load {
            acked_messages,
            publishers,
        }
    }

    fn acked_messages(&self) -> u64 {
        self.acked_messages.load(Ordering::SeqCst)
    }

    /// Waits for every publisher to see its connection end.
    fn join(self) -> Published {
        let mut all = Published::default();
        for publisher in self.publishers {
            all.merge(publisher.join().expect("publisher thread panicked"));
        }
        all
    }
}

fn body_of(connection: usize, command: u64, index: usize) -> String {
    // Unique, and long enough that batches are not trivially small.
    format!("c{connection}-{command}-{index}-{}", "p".repeat(80))
}

fn pub_bytes(topic: &str, body: &str) -> Vec<u8> {
    let mut bytes = format!("PUB {topic}\n").into_bytes();
    bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

fn mpub_bytes(topic: &str, bodies: &[String]) -> Vec<u8> {
    let mut payload = (bodies.len() as u32).to_be_bytes().to_vec();
    for body in bodies {
        payload.extend_from_slice(&(body.len() as u32).to_be_bytes());
        payload.extend_from_slice(body.as_bytes());
    }
    let mut bytes = format!("MPUB {topic}\n").into_bytes();
    bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&payload);
    bytes
}

/// One connection: a writer (this thread) and a reader thread that pairs
/// each answer with the oldest unanswered command (answers come in
/// command order). Returns once the connection is gone.
fn publish_pipelined(
    address: SocketAddr,
    topic: &str,
    connection: usize,
    acked_messages: &Arc<AtomicU64>,
) -> Published {
    let client = RawClient::connect(address);
    let mut socket = client.stream.try_clone().expect("clone socket");
    let (unanswered, answers) = mpsc::sync_channel::<Vec<String>>(WINDOW);
    let counter = acked_messages.clone();
    let reader = std::thread::spawn(move || read_answers(client, &answers, &counter));
    let mut published = Published::default();
    for command in 0..MAX_COMMANDS_PER_CONNECTION {
        let (bytes, bodies) = if command % 3 == 2 {
            let count = 2 + (command as usize / 3) % 7;
            let bodies: Vec<String> = (0..count)
                .map(|index| body_of(connection, command, index))
                .collect();
            (mpub_bytes(topic, &bodies), bodies)
        } else {
            let body = body_of(connection, command, 0);
            (pub_bytes(topic, &body), vec![body])
        };
        published.sent.extend(bodies.iter().cloned());
        if bodies.len() > 1 {
            published.mpubs.push(bodies.clone());
        }
        // Blocks while WINDOW commands are unanswered; fails once the
        // reader has seen the connection end.
        if unanswered.send(bodies).is_err() {
            break;
        }
        if socket.write_all(&bytes).is_err() {
            break;
        }
    }
    drop(unanswered);
    let (acked, errors) = reader.join().expect("answer reader panicked");
    published.acked = acked;
    published.errors = errors;
    published
}

fn read_answers(
    mut client: RawClient,
    unanswered: &mpsc::Receiver<Vec<String>>,
    acked_messages: &AtomicU64,
) -> (Vec<String>, Vec<String>) {
    let mut acked = Vec::new();
    let mut errors = Vec::new();
    while let Some((frame_type, data)) = client.read_any_frame() {
        if frame_type == FRAME_RESPONSE && data == HEARTBEAT {
            continue;
        }
        let Ok(bodies) = unanswered.recv() else {
            errors.push(format!(
                "an answer to no command: {frame_type} {:?}",
                String::from_utf8_lossy(&data)
            ));
            break;
        };
        if frame_type == FRAME_RESPONSE && data == b"OK" {
            acked_messages.fetch_add(bodies.len() as u64, Ordering::SeqCst);
            acked.extend(bodies);
        } else {
            errors.push(format!("{frame_type} {:?}", String::from_utf8_lossy(&data)));
        }
    }
    (acked, errors)
}

// ----- consuming ----------------------------------------------------------

fn body_text(message: &RawMessage) -> String {
    String::from_utf8(message.body.clone()).expect("bodies are UTF-8")
}

fn id_text(message: &RawMessage) -> String {
    String::from_utf8_lossy(&message.id).into_owned()
}

/// A subscribed consumer that FINs everything until its connection ends.
fn consume_until_closed(mut client: RawClient) -> JoinHandle<Vec<RawMessage>> {
    std::thread::spawn(move || {
        let mut received = Vec::new();
        while let Some((frame_type, data)) = client.read_any_frame() {
            match frame_type {
                FRAME_MESSAGE => {
                    let message = RawMessage::decode(&data);
                    let fin = format!("FIN {}\n", id_text(&message));
                    let _ = client.stream.write_all(fin.as_bytes());
                    received.push(message);
                }
                FRAME_RESPONSE if data == HEARTBEAT => {}
                _ => panic!(
                    "consumer got an unexpected frame: {frame_type} {:?}",
                    String::from_utf8_lossy(&data)
                ),
            }
        }
        received
    })
}

/// Reads (and FINs) messages until `done` holds for what was received so
/// far, or the stream ends or stalls for the harness deadline.
fn consume_until(
    client: &mut RawClient,
    mut done: impl FnMut(&[RawMessage]) -> bool,
) -> Vec<RawMessage> {
    let mut received = Vec::new();
    while !done(&received) {
        let Some((frame_type, data)) = client.read_any_frame() else {
            break;
        };
        match frame_type {
            FRAME_MESSAGE => {
                let message = RawMessage::decode(&data);
                client.finish(&message);
                received.push(message);
            }
            FRAME_RESPONSE if data == HEARTBEAT => client.command("NOP"),
            _ => panic!(
                "consumer got an unexpected frame: {frame_type} {:?}",
                String::from_utf8_lossy(&data)
            ),
        }
    }
    received
}

fn subscribed(address: SocketAddr, topic: &str, channel: &str, rdy: u32) -> RawClient {
    let mut client = RawClient::connect(address);
    client.subscribe(topic, channel);
    client.command(&format!("RDY {rdy}"));
    client
}

/// The next message, with the instant it arrived (heartbeats answered).
fn next_message(client: &mut RawClient) -> (RawMessage, Instant) {
    loop {
        let (frame_type, data) = client.read_any_frame().expect("connection ended");
        match frame_type {
            FRAME_MESSAGE => return (RawMessage::decode(&data), Instant::now()),
            FRAME_RESPONSE if data == HEARTBEAT => client.command("NOP"),
            _ => panic!(
                "expected a message, got {frame_type} {:?}",
                String::from_utf8_lossy(&data)
            ),
        }
    }
}

fn count_by_body<'a>(messages: impl IntoIterator<Item = &'a RawMessage>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for message in messages {
        *counts.entry(body_text(message)).or_insert(0) += 1;
    }
    counts
}

fn sample<'a>(items: impl IntoIterator<Item = &'a String>) -> Vec<&'a str> {
    let mut sample: Vec<&str> = items.into_iter().map(String::as_str).collect();
    sample.sort_unstable();
    sample.truncate(5);
    sample
}

// ----- (a) SIGKILL under load ---------------------------------------------

#[test]
fn acknowledged_publishes_survive_sigkill_under_concurrent_pipelined_load() {
    const TOPIC: &str = "crash_load";
    const CHANNEL: &str = "all";
    const CONNECTIONS: usize = 6;
    const KILL_AFTER_ACKED: u64 = 5_000;
    const SENTINEL: &str = "sentinel-after-restart";
    const SENTINEL_AFTER_SIGTERM: &str = "sentinel-after-sigterm";

    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);

    // The channel exists before the first publish, so it gets everything;
    // it consumes (and FINs) while the load runs.
    let consumer = consume_until_closed(subscribed(server.tcp_address, TOPIC, CHANNEL, 500));
    let load = Load::start(server.tcp_address, TOPIC, CONNECTIONS);
    wait_until("thousands of acknowledged messages", || {
        load.acked_messages() >= KILL_AFTER_ACKED
    });
    server.kill();
    let published = load.join();
    let before = consumer.join().expect("consumer thread panicked");
    assert!(
        published.errors.is_empty(),
        "publishes refused under load: {:?}",
        &published.errors[..published.errors.len().min(5)]
    );
    assert!(published.acked.len() as u64 >= KILL_AFTER_ACKED);

    let sent: HashSet<&str> = published.sent.iter().map(String::as_str).collect();
    let acked: HashSet<&str> = published.acked.iter().map(String::as_str).collect();
    assert_eq!(sent.len(), published.sent.len(), "bodies are unique");
    let before_attempts: HashMap<String, (String, u16)> = before
        .iter()
        .map(|m| (body_text(m), (id_text(m), m.attempts)))
        .collect();

    // Restart on the same data; consume until every acknowledged message
    // has been seen (before or after the crash) and a message published
    // after the restart (the last offset) has arrived.
    server.restart();
    let mut consumer = subscribed(server.tcp_address, TOPIC, CHANNEL, 1000);
    RawClient::connect(server.tcp_address).publish(TOPIC, SENTINEL.as_bytes());
    let mut missing: HashSet<String> = acked
        .iter()
        .filter(|body| !before_attempts.contains_key(**body))
        .map(|body| body.to_string())
        .collect();
    let mut sentinel_seen = false;
    let mut after = consume_until(&mut consumer, |received| {
        if let Some(last) = received.last() {
            let body = body_text(last);
            sentinel_seen |= body == SENTINEL;
            missing.remove(&body);
        }
        sentinel_seen && missing.is_empty()
    });
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages were never delivered after SIGKILL, e.g. {:?}",
        missing.len(),
        acked.len(),
        sample(&missing)
    );
    // Whatever else is queued for this consumer (nothing is expected).
    loop {
        let late = consumer.read_barrier();
        if late.is_empty() {
            break;
        }
        for message in &late {
            consumer.finish(message);
        }
        after.extend(late);
    }

    // Every delivery is of a message that was published, under the same ID
    // each time; one delivered before the crash comes back with more
    // attempts, never fewer (its delivery was durable before it was sent).
    let mut ids: HashMap<String, String> = HashMap::new();
    for message in before.iter().chain(&after) {
        let body = body_text(message);
        assert!(
            sent.contains(body.as_str()) || body == SENTINEL,
            "delivered a message nobody published: {body:?}"
        );
        let id = ids.entry(body.clone()).or_insert_with(|| id_text(message));
        assert_eq!(*id, id_text(message), "message {body:?} changed its ID");
        assert!(message.attempts >= 1, "attempts 0 for {body:?}");
    }
    for message in &after {
        if let Some((_, attempts_before)) = before_attempts.get(&body_text(message)) {
            assert!(
                message.attempts > *attempts_before,
                "{:?} was delivered with attempts {} before the crash and {} after",
                body_text(message),
                attempts_before,
                message.attempts
            );
        }
    }

    // A clean stop flushes the FINs: nothing comes back after it.
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exit: {status:?}");
    server.restart();
    let mut consumer = subscribed(server.tcp_address, TOPIC, CHANNEL, 1000);
    RawClient::connect(server.tcp_address).publish(TOPIC, SENTINEL_AFTER_SIGTERM.as_bytes());
    let (first, _) = next_message(&mut consumer);
    let first_body = body_text(&first);
    let delivered: HashSet<String> = before.iter().chain(&after).map(body_text).collect();
    assert!(
        first_body == SENTINEL_AFTER_SIGTERM,
        "after SIGTERM, {first_body:?} (attempts {}) came back; it was {}",
        first.attempts,
        if delivered.contains(&first_body) {
            "delivered and FINed before the SIGTERM"
        } else {
            "never drained after the SIGKILL"
        }
    );

    // The drain was complete, so an MPUB is all there or not at all.
    for bodies in &published.mpubs {
        let present = bodies.iter().filter(|b| delivered.contains(*b)).count();
        assert!(
            present == 0 || present == bodies.len(),
            "MPUB of {} messages partly stored ({present}): {:?}",
            bodies.len(),
            &bodies[0]
        );
    }

    let before_counts = count_by_body(&before);
    let after_counts = count_by_body(&after);
    let delivered_twice = delivered
        .iter()
        .filter(|b| {
            before_counts.get(*b).copied().unwrap_or(0) + after_counts.get(*b).copied().unwrap_or(0)
                > 1
        })
        .count();
    let unacked_delivered = delivered
        .iter()
        .filter(|b| sent.contains(b.as_str()) && !acked.contains(b.as_str()))
        .count();
    let redelivered_after_fin = before
        .iter()
        .filter(|m| after_counts.contains_key(&body_text(m)))
        .count();
    eprintln!(
        "crash under load: {} sent, {} acknowledged, {} delivered before SIGKILL, {} after; \
         {} delivered more than once ({} FINed before the crash came back), \
         {} delivered without an OK (allowed)",
        sent.len(),
        acked.len(),
        before.len(),
        after.len(),
        delivered_twice,
        redelivered_after_fin,
        unacked_delivered
    );
}

// ----- (b) attempts and deferrals across SIGKILL ----------------------------

#[test]
fn attempts_survive_sigkill_and_grow_by_one_per_delivery() {
    const TOPIC: &str = "attempts";
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    RawClient::connect(server.tcp_address).publish(TOPIC, b"counted");

    let deliver_once = |server: &Server| {
        let mut consumer = subscribed(server.tcp_address, TOPIC, "c", 1);
        let (message, _) = next_message(&mut consumer);
        (consumer, message)
    };

    let (consumer, first) = deliver_once(&server);
    assert_eq!(
        (first.body.as_slice(), first.attempts),
        (&b"counted"[..], 1)
    );
    server.kill();
    drop(consumer);

    for expected_attempts in [2u16, 3] {
        server.restart();
        let (consumer, again) = deliver_once(&server);
        assert_eq!(again.id, first.id, "a redelivery keeps the message ID");
        assert_eq!(again.body, first.body);
        assert_eq!(
            again.attempts,
            expected_attempts,
            "attempts after {} deliveries and a SIGKILL",
            expected_attempts - 1
        );
        server.kill();
        drop(consumer);
    }

    // Restarts without a delivery do not count as attempts.
    server.restart();
    server.kill();
    server.restart();
    let (mut consumer, again) = deliver_once(&server);
    assert_eq!((again.id, again.attempts), (first.id, 4));

    // FIN, then a PUB on the same connection: its OK means the FIN (queued
    // before it) is durable too. After SIGKILL the message is gone.
    consumer.finish(&again);
    consumer.publish("attempts_barrier", b"x");
    server.kill();
    server.restart();
    let mut consumer = subscribed(server.tcp_address, TOPIC, "c", 10);
    RawClient::connect(server.tcp_address).publish(TOPIC, b"next");
    let (next, _) = next_message(&mut consumer);
    assert_eq!(
        (body_text(&next), next.attempts),
        ("next".to_string(), 1),
        "a FINed message came back after SIGKILL"
    );
}

#[test]
fn requeued_and_deferred_messages_stay_deferred_across_sigkill() {
    const TOPIC: &str = "deferrals";
    const DELAY: Duration = Duration::from_millis(3000);
    // Wall clock (the server's) against the monotonic clock (ours), and
    // millisecond rounding.
    const CLOCK_SLACK: Duration = Duration::from_millis(10);
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);

    let mut publisher = RawClient::connect(server.tcp_address);
    publisher.publish(TOPIC, b"requeued");
    let mut consumer = subscribed(server.tcp_address, TOPIC, "c", 1);
    let (first, _) = next_message(&mut consumer);
    assert_eq!((body_text(&first), first.attempts), ("requeued".into(), 1));

    let requeued_at = Instant::now();
    consumer.command(&format!("REQ {} {}", id_text(&first), DELAY.as_millis()));
    let deferred_published_at = Instant::now();
    publisher.command_with_body(&format!("DPUB {TOPIC} {}", DELAY.as_millis()), b"deferred");
    publisher.expect_response("OK");
    // The REQ is queued before this PUB on the same connection: once the
    // PUB is OK the REQ is durable too.
    consumer.publish("deferrals_barrier", b"x");

    server.kill();
    drop((consumer, publisher));
    server.restart();
    let mut consumer = subscribed(server.tcp_address, TOPIC, "c", 2);
    let subscribed_at = Instant::now();
    assert!(
        subscribed_at + Duration::from_millis(300) < requeued_at + DELAY,
        "the restart took {:?}, too long for the deferral to be checked",
        subscribed_at - requeued_at
    );

    let mut arrivals = HashMap::new();
    for _ in 0..2 {
        let (message, arrived) = next_message(&mut consumer);
        consumer.finish(&message);
        arrivals.insert(body_text(&message), (message, arrived));
    }
    let (requeued, arrived) = &arrivals["requeued"];
    assert_eq!(requeued.id, first.id);
    assert_eq!(
        requeued.attempts, 2,
        "a REQed message's attempts after SIGKILL"
    );
    assert!(
        *arrived + CLOCK_SLACK >= requeued_at + DELAY,
        "the REQ delay was lost: delivered {:?} after the REQ of {:?}",
        *arrived - requeued_at,
        DELAY
    );
    let (deferred, arrived) = &arrivals["deferred"];
    assert_eq!(deferred.attempts, 1, "a DPUB message's first delivery");
    assert!(
        *arrived + CLOCK_SLACK >= deferred_published_at + DELAY,
        "the DPUB delay was lost: delivered {:?} after the DPUB of {:?}",
        *arrived - deferred_published_at,
        DELAY
    );
}

#[test]
fn finished_messages_are_not_redelivered_after_sigterm() {
    const TOPIC: &str = "finished";
    let dir = tempfile::tempdir().unwrap();
    // FINs wait for company up to an hour: only the SIGTERM flush makes
    // them durable here.
    let mut server = Server::start(dir.path(), &["--finish-sync-interval=1h"]);
    let mut publisher = RawClient::connect(server.tcp_address);
    for body in ["m1", "m2", "m3"] {
        publisher.publish(TOPIC, body.as_bytes());
    }
    let mut consumer = subscribed(server.tcp_address, TOPIC, "c", 3);
    let mut received = HashMap::new();
    for _ in 0..3 {
        let (message, _) = next_message(&mut consumer);
        received.insert(body_text(&message), message);
    }
    consumer.finish(&received["m1"]);
    consumer.finish(&received["m2"]);
    // m3 stays in flight. Make sure the server has read both FINs.
    assert!(consumer.read_barrier().is_empty());

    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "SIGTERM exit: {status:?}");
    drop((consumer, publisher));
    server.restart();
    let mut consumer = subscribed(server.tcp_address, TOPIC, "c", 10);
    RawClient::connect(server.tcp_address).publish(TOPIC, b"sentinel");
    let after = consume_until(&mut consumer, |received| {
        received.last().is_some_and(|m| m.body == b"sentinel")
    });
    let bodies: Vec<String> = after.iter().map(body_text).collect();
    assert_eq!(
        bodies,
        ["m3", "sentinel"],
        "after SIGTERM only the unfinished message comes back"
    );
    assert_eq!(after[0].id, received["m3"].id);
    assert_eq!(after[0].attempts, 2);
}

// ----- (c) SIGTERM under load ---------------------------------------------

#[test]
fn sigterm_answers_every_publish_it_stored_and_exits_zero() {
    const TOPIC: &str = "sigterm_load";
    const CONNECTIONS: usize = 4;
    const SIGNAL_AFTER_ACKED: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);

    let load = Load::start(server.tcp_address, TOPIC, CONNECTIONS);
    wait_until("acknowledged messages", || {
        load.acked_messages() >= SIGNAL_AFTER_ACKED
    });
    let acked_at_signal = load.acked_messages();
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "SIGTERM exit: {status:?}");
    let published = load.join();
    assert!(
        published.errors.is_empty(),
        "a graceful shutdown answered publishes with errors: {:?}",
        &published.errors[..published.errors.len().min(5)]
    );

    // Every message the server stored was answered OK: after the restart
    // the topic holds exactly the acknowledged messages (the first channel
    // gets the backlog).
    server.restart();
    let mut consumer = subscribed(server.tcp_address, TOPIC, "c", 1000);
    RawClient::connect(server.tcp_address).publish(TOPIC, b"sentinel");
    let stored = consume_until(&mut consumer, |received| {
        received.last().is_some_and(|m| m.body == b"sentinel")
    });
    let stored: HashSet<String> = stored
        .iter()
        .map(body_text)
        .filter(|b| b != "sentinel")
        .collect();
    let acked: HashSet<String> = published.acked.iter().cloned().collect();
    let lost: Vec<&String> = acked.difference(&stored).collect();
    let unanswered: Vec<&String> = stored.difference(&acked).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost after SIGTERM, e.g. {:?}",
        lost.len(),
        sample(lost.iter().copied())
    );
    assert!(
        unanswered.is_empty(),
        "{} messages were stored but their publisher never got an answer, e.g. {:?}",
        unanswered.len(),
        sample(unanswered.iter().copied())
    );
    eprintln!(
        "SIGTERM under load: {} sent, {} acknowledged ({} of them answered after the signal)",
        published.sent.len(),
        acked.len(),
        acked.len() as u64 - acked_at_signal
    );
}
