//! The real `ledgerq` binary driven by an unmodified third-party NSQ client,
//! the `tokio-nsq` crate: publish/consume/FIN, REQ, in-flight timeouts, DPUB,
//! channel fan-out, consumers sharing a channel, redelivery after a
//! restart on the same data dir, and `/channel/peek` against what it then
//! receives.
//!
//! Nothing here sleeps to wait for something: every await runs under a
//! deadline (`common::DEADLINE`), and timing assertions are lower bounds
//! measured around the event.
//!
//! Facts about tokio-nsq 0.14 these tests rely on (read from its source):
//! * a consumer with `max_in_flight = n` and one nsqd sends `RDY n` once its
//!   connection is healthy; `NSQEvent::Healthy` is emitted after the `SUB`
//!   got its `OK`, so a consumer that reported healthy has a channel;
//! * dropping an `NSQMessage` sends nothing (its `Drop` builds a `REQ` future
//!   and never polls it), so an unhandled message stays in flight;
//! * commands are buffered and flushed every `flush_interval`;
//! * a non-fatal `E_FIN_FAILED ...` error frame is treated as fatal by the
//!   client (it compares the whole frame with the bare code), so a test never
//!   FINs a message it no longer owns.

mod common;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Server, DEADLINE};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_nsq::{
    NSQChannel, NSQConfigShared, NSQConsumer, NSQConsumerConfig, NSQConsumerConfigSources,
    NSQEvent, NSQMessage, NSQProducer, NSQProducerConfig, NSQRequeueDelay, NSQTopic,
};

/// The protocol's delays and timeouts are whole milliseconds and the server
/// reads a millisecond wall clock, so a deadline may fire up to this much
/// before the same instant measured with `Instant`.
const CLOCK_RESOLUTION: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------- helpers

/// Awaits `future`, failing the test once `DEADLINE` has passed.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

fn topic(name: &str) -> Arc<NSQTopic> {
    NSQTopic::new(name).expect("valid topic name")
}

fn channel(name: &str) -> Arc<NSQChannel> {
    NSQChannel::new(name).expect("valid channel name")
}

/// Client settings: flush what we write every 5 ms instead of 250 ms so FIN,
/// REQ and PUB reach the server promptly.
fn client_settings() -> NSQConfigShared {
    NSQConfigShared::new().set_flush_interval(Duration::from_millis(5))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn wall_clock_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// Leaves a message in flight on purpose: neither FIN nor REQ.
fn abandon(message: NSQMessage) {
    // Dropping would also send nothing (see the module comment); forgetting
    // keeps that true whatever the client's Drop does.
    std::mem::forget(message);
}

/// A producer whose connection completed IDENTIFY.
async fn connect_producer(server: &Server) -> NSQProducer {
    let mut producer = NSQProducerConfig::new(server.tcp_address.to_string())
        .set_shared(client_settings())
        .build();
    match within("the producer's handshake", producer.consume()).await {
        Some(NSQEvent::Healthy()) => producer,
        other => panic!("producer: expected Healthy, got {other:?}"),
    }
}

async fn expect_ok(producer: &mut NSQProducer, what: &str) {
    match within(what, producer.consume()).await {
        Some(NSQEvent::Ok()) => {}
        other => panic!("{what}: expected OK, got {other:?}"),
    }
}

/// PUB, then waits for its OK (fsynced, by ledgerq's contract).
async fn publish(producer: &mut NSQProducer, topic: &Arc<NSQTopic>, body: &str) {
    producer
        .publish(topic, body.as_bytes().to_vec())
        .await
        .expect("queue PUB");
    expect_ok(producer, &format!("the OK of PUB {body:?}")).await;
}

/// MPUB, then waits for its single OK.
async fn publish_multiple(producer: &mut NSQProducer, topic: &Arc<NSQTopic>, bodies: &[String]) {
    let bodies = bodies.iter().map(|b| b.as_bytes().to_vec()).collect();
    producer
        .publish_multiple(topic, bodies)
        .await
        .expect("queue MPUB");
    expect_ok(producer, "the OK of MPUB").await;
}

/// A consumer of `topic`/`channel` on `server` whose SUB got its OK.
async fn subscribe(
    server: &Server,
    topic: &Arc<NSQTopic>,
    channel: &Arc<NSQChannel>,
    max_in_flight: u32,
) -> NSQConsumer {
    let mut consumer = NSQConsumerConfig::new(topic.clone(), channel.clone())
        .set_max_in_flight(max_in_flight)
        .set_sources(NSQConsumerConfigSources::Daemons(vec![server
            .tcp_address
            .to_string()]))
        .set_shared(client_settings())
        .build();
    match within("the consumer's SUB", consumer.consume()).await {
        Some(NSQEvent::Healthy()) => consumer,
        other => panic!("consumer: expected Healthy, got {other:?}"),
    }
}

/// The consumer's next message; any other event (a dropped connection above
/// all) fails the test.
async fn next_message(consumer: &mut NSQConsumer, what: &str) -> NSQMessage {
    match within(what, consumer.consume()).await {
        Some(NSQEvent::Message(message)) => message,
        other => panic!("{what}: expected a message, got {other:?}"),
    }
}

/// Moves every event of `consumer` to `sink`, tagged with `index`, so one
/// task can wait on several consumers at once. Aborting the task drops the
/// consumer (and closes its connection).
fn forward(
    index: usize,
    mut consumer: NSQConsumer,
    sink: mpsc::UnboundedSender<(usize, Option<NSQEvent>)>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let event = consumer.consume().await;
            let closed = event.is_none();
            if sink.send((index, event)).is_err() || closed {
                return;
            }
        }
    })
}

async fn next_forwarded(
    events: &mut mpsc::UnboundedReceiver<(usize, Option<NSQEvent>)>,
    what: &str,
) -> (usize, NSQMessage) {
    match within(what, events.recv()).await {
        Some((index, Some(NSQEvent::Message(message)))) => (index, message),
        other => panic!("{what}: expected a message, got {other:?}"),
    }
}

// ------------------------------------------------------------------ tests

/// PUB and MPUB are delivered once each with attempts 1, a printable 16-byte
/// ID and the publish time; FIN frees the RDY slot (with RDY 1 and the
/// default 60 s msg-timeout, every next delivery within the 30 s deadline
/// proves the previous FIN was accepted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_consume_and_finish() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let orders = topic("orders");
    let mut consumer = subscribe(&server, &orders, &channel("billing"), 1).await;
    let mut producer = connect_producer(&server).await;

    let before_ns = wall_clock_ns();
    publish(&mut producer, &orders, "hello").await;
    publish_multiple(
        &mut producer,
        &orders,
        &["m1".to_string(), "m2".to_string()],
    )
    .await;
    let after_ok_ns = wall_clock_ns();

    let mut bodies = HashSet::new();
    let mut ids = HashSet::new();
    for n in 0..3 {
        let message = next_message(&mut consumer, &format!("message #{n}")).await;
        let body = text(&message.body);
        assert_eq!(message.attempt, 1, "first delivery of {body:?}");
        assert!(
            message.id.iter().all(|b| b.is_ascii_graphic()),
            "message ID {:?} is not printable ASCII",
            message.id
        );
        assert!(
            (before_ns..=after_ok_ns).contains(&message.timestamp),
            "timestamp {} of {body:?} not within the publish window [{before_ns}, {after_ok_ns}]",
            message.timestamp
        );
        assert!(
            ids.insert(message.id),
            "message ID reused: {:?}",
            text(&message.id)
        );
        assert!(bodies.insert(body.clone()), "{body:?} delivered twice");
        message.finish().await;
    }
    assert_eq!(
        bodies,
        HashSet::from(["hello", "m1", "m2"].map(String::from)),
        "delivered bodies"
    );

    // The last FIN must free the slot too: one more message gets through.
    publish(&mut producer, &orders, "after").await;
    let message = next_message(&mut consumer, "the message after the last FIN").await;
    assert_eq!(
        (text(&message.body), message.attempt),
        ("after".to_string(), 1)
    );
    assert!(!ids.contains(&message.id), "message ID reused");
    message.finish().await;
}

/// REQ with a delay: the message comes back with the same ID, body and
/// timestamp, attempts 2, and not before the delay; REQ 0 then brings it
/// back with attempts 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_with_delay_redelivers_with_next_attempt() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let jobs = topic("jobs");
    let mut consumer = subscribe(&server, &jobs, &channel("worker"), 1).await;
    let mut producer = connect_producer(&server).await;

    publish(&mut producer, &jobs, "retry-me").await;
    let first = next_message(&mut consumer, "the first delivery").await;
    assert_eq!(
        (text(&first.body), first.attempt),
        ("retry-me".to_string(), 1)
    );
    let (id, timestamp) = (first.id, first.timestamp);

    let delay = Duration::from_millis(700);
    let requeued_at = Instant::now();
    first.requeue(NSQRequeueDelay::CustomDelay(delay)).await;
    let second = next_message(&mut consumer, "the redelivery after REQ with a delay").await;
    let waited = requeued_at.elapsed();
    assert_eq!(
        (
            text(&second.id),
            text(&second.body),
            second.attempt,
            second.timestamp
        ),
        (text(&id), "retry-me".to_string(), 2, timestamp),
        "(id, body, attempts, timestamp) after REQ {}ms",
        delay.as_millis()
    );
    assert!(
        waited + CLOCK_RESOLUTION >= delay,
        "REQ with {delay:?} delay came back after only {waited:?}"
    );

    second.requeue(NSQRequeueDelay::NoDelay).await;
    let third = next_message(&mut consumer, "the redelivery after REQ 0").await;
    assert_eq!(
        (
            text(&third.id),
            text(&third.body),
            third.attempt,
            third.timestamp
        ),
        (text(&id), "retry-me".to_string(), 3, timestamp),
        "(id, body, attempts, timestamp) after REQ 0"
    );
    third.finish().await;

    // The FIN took: the slot is free and nothing else is pending.
    publish(&mut producer, &jobs, "next").await;
    let next = next_message(&mut consumer, "the message after FIN").await;
    assert_eq!((text(&next.body), next.attempt), ("next".to_string(), 1));
    next.finish().await;
}

/// A message neither FINed nor REQed is redelivered once `--msg-timeout`
/// passes, same ID, attempts + 1, and not before the timeout; the new
/// delivery can be FINed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_timeout_redelivers_with_next_attempt() {
    let msg_timeout = Duration::from_secs(1);
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--msg-timeout=1s"]);
    let events = topic("events");
    let mut consumer = subscribe(&server, &events, &channel("slow"), 1).await;
    let mut producer = connect_producer(&server).await;

    let published_at = Instant::now();
    publish(&mut producer, &events, "ignored").await;
    let first = next_message(&mut consumer, "the first delivery").await;
    assert_eq!(
        (text(&first.body), first.attempt),
        ("ignored".to_string(), 1)
    );
    let (id, timestamp) = (first.id, first.timestamp);
    abandon(first);

    let second = next_message(&mut consumer, "the redelivery after the msg-timeout").await;
    let waited = published_at.elapsed();
    assert_eq!(
        (
            text(&second.id),
            text(&second.body),
            second.attempt,
            second.timestamp
        ),
        (text(&id), "ignored".to_string(), 2, timestamp),
        "(id, body, attempts, timestamp) after a timeout"
    );
    assert!(
        waited + CLOCK_RESOLUTION >= msg_timeout,
        "redelivered {waited:?} after the publish, before the {msg_timeout:?} msg-timeout"
    );
    abandon(second);

    let third = next_message(&mut consumer, "the redelivery after a second timeout").await;
    assert!(
        published_at.elapsed() + CLOCK_RESOLUTION >= 2 * msg_timeout,
        "second timeout after only {:?}",
        published_at.elapsed()
    );
    assert_eq!((text(&third.id), third.attempt), (text(&id), 3));
    third.finish().await;

    // The FIN of the current delivery took: the next message is the new one,
    // not a fourth attempt.
    publish(&mut producer, &events, "sentinel").await;
    let next = next_message(&mut consumer, "the message after FIN").await;
    assert_eq!(
        (text(&next.body), next.attempt),
        ("sentinel".to_string(), 1)
    );
    next.finish().await;
}

/// DPUB: OK at once, delivered (attempts 1) not before its delay, while an
/// ordinary PUB sent after it is delivered normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_publish_is_not_delivered_before_its_delay() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let reminders = topic("reminders");
    let mut consumer = subscribe(&server, &reminders, &channel("mail"), 10).await;
    let mut producer = connect_producer(&server).await;

    let delay = Duration::from_millis(1200);
    let published_at = Instant::now();
    producer
        .publish_deferred(&reminders, b"later".to_vec(), delay.as_millis() as u32)
        .await
        .expect("queue DPUB");
    expect_ok(&mut producer, "the OK of DPUB").await;
    publish(&mut producer, &reminders, "now").await;

    let mut arrivals = HashMap::new();
    while arrivals.len() < 2 {
        let message = next_message(&mut consumer, "the PUB and DPUB messages").await;
        let waited = published_at.elapsed();
        let body = text(&message.body);
        assert_eq!(message.attempt, 1, "attempts of {body:?}");
        assert!(
            arrivals.insert(body.clone(), waited).is_none(),
            "{body:?} delivered twice"
        );
        message.finish().await;
    }
    let later = arrivals.get("later").expect("the deferred message arrived");
    assert!(arrivals.contains_key("now"), "the PUB message arrived");
    assert!(
        *later + CLOCK_RESOLUTION >= delay,
        "DPUB with a {delay:?} delay was delivered after only {later:?}"
    );
}

/// Every channel of a topic gets every message, under the same message ID;
/// a channel created afterwards gets only what is published afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_channel_gets_every_message() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let clicks = topic("clicks");
    let mut consumers = Vec::new();
    for name in ["archive", "metrics", "search"] {
        consumers.push((name, subscribe(&server, &clicks, &channel(name), 10).await));
    }
    let mut producer = connect_producer(&server).await;

    let bodies: Vec<String> = (0..20).map(|n| format!("click-{n}")).collect();
    for body in &bodies[..10] {
        publish(&mut producer, &clicks, body).await;
    }
    publish_multiple(&mut producer, &clicks, &bodies[10..]).await;
    let expected: HashSet<String> = bodies.iter().cloned().collect();

    let mut ids_by_channel: Vec<(&str, HashMap<String, String>)> = Vec::new();
    for (name, consumer) in &mut consumers {
        let mut ids = HashMap::new();
        while ids.len() < expected.len() {
            let message = next_message(consumer, &format!("channel {name}'s messages")).await;
            let body = text(&message.body);
            assert!(
                expected.contains(&body),
                "channel {name} got unexpected {body:?}"
            );
            assert_eq!(message.attempt, 1, "channel {name}: attempts of {body:?}");
            assert!(
                ids.insert(body.clone(), text(&message.id)).is_none(),
                "channel {name} got {body:?} twice"
            );
            message.finish().await;
        }
        ids_by_channel.push((name, ids));
    }
    let (first_name, first_ids) = &ids_by_channel[0];
    for (name, ids) in &ids_by_channel[1..] {
        assert_eq!(
            ids, first_ids,
            "message IDs of channel {name} vs {first_name}"
        );
    }
    let distinct: HashSet<&String> = first_ids.values().collect();
    assert_eq!(distinct.len(), expected.len(), "message IDs are unique");

    // A late channel starts with what is published after it exists.
    let mut late = subscribe(&server, &clicks, &channel("late"), 1).await;
    publish(&mut producer, &clicks, "after-late-sub").await;
    let message = next_message(&mut late, "the late channel's first message").await;
    assert_eq!(
        (text(&message.body), message.attempt),
        ("after-late-sub".to_string(), 1),
        "a channel created after a publish must not get that message"
    );
    message.finish().await;
    for (name, consumer) in &mut consumers {
        let message = next_message(consumer, &format!("channel {name}'s last message")).await;
        assert_eq!(text(&message.body), "after-late-sub", "channel {name}");
        message.finish().await;
    }
}

/// Consumers sharing one channel split its messages: each gets one while
/// the others hold theirs (RDY 1 each), and together, FINing as they go,
/// they get each message exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_sharing_a_channel_split_the_messages() {
    const CONSUMERS: usize = 3;
    const MESSAGES: usize = 30;
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let tasks_topic = topic("tasks");
    let workers = channel("workers");
    let (sink, mut events) = mpsc::unbounded_channel();
    let mut forwarders = Vec::new();
    for index in 0..CONSUMERS {
        let consumer = subscribe(&server, &tasks_topic, &workers, 1).await;
        forwarders.push(forward(index, consumer, sink.clone()));
    }
    let mut producer = connect_producer(&server).await;
    let bodies: Vec<String> = (0..MESSAGES).map(|n| format!("task-{n}")).collect();

    // Phase 1: as many messages as consumers; each holds the one it gets, so
    // with RDY 1 the next must go to another consumer.
    publish_multiple(&mut producer, &tasks_topic, &bodies[..CONSUMERS]).await;
    let mut seen = HashSet::new();
    let mut held = Vec::new();
    let mut holders = HashSet::new();
    for _ in 0..CONSUMERS {
        let (index, message) = next_forwarded(&mut events, "one message per consumer").await;
        assert!(
            seen.insert(text(&message.body)),
            "{:?} twice",
            text(&message.body)
        );
        assert!(
            holders.insert(index),
            "consumer {index} got a second message while holding one with RDY 1"
        );
        held.push(message);
    }
    for message in held {
        message.finish().await;
    }

    // Phase 2: the rest, FINed on receipt; each exactly once overall.
    publish_multiple(&mut producer, &tasks_topic, &bodies[CONSUMERS..]).await;
    let mut per_consumer = [0usize; CONSUMERS];
    while seen.len() < MESSAGES {
        let (index, message) = next_forwarded(&mut events, "the remaining messages").await;
        let body = text(&message.body);
        assert!(bodies.contains(&body), "unexpected message {body:?}");
        assert_eq!(message.attempt, 1, "attempts of {body:?}");
        assert!(seen.insert(body.clone()), "{body:?} delivered twice");
        per_consumer[index] += 1;
        message.finish().await;
    }
    eprintln!("phase 2 split across consumers: {per_consumer:?}");

    // Phase 3: one sentinel per consumer. Each consumer's next delivery is a
    // sentinel: nothing was left over or duplicated, and (RDY 1) each
    // consumer's last FIN was accepted.
    let sentinels: Vec<String> = (0..CONSUMERS).map(|n| format!("sentinel-{n}")).collect();
    publish_multiple(&mut producer, &tasks_topic, &sentinels).await;
    let mut holders = HashSet::new();
    let mut held = Vec::new();
    for _ in 0..CONSUMERS {
        let (index, message) = next_forwarded(&mut events, "the sentinels").await;
        let body = text(&message.body);
        assert!(
            sentinels.contains(&body),
            "consumer {index} got {body:?}, expected a sentinel"
        );
        assert!(holders.insert(index), "consumer {index} got two sentinels");
        held.push(message);
    }
    for message in held {
        message.finish().await;
    }
    for forwarder in forwarders {
        forwarder.abort();
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    /// SIGTERM: graceful; every FIN the server received must stay done.
    Terminate,
    /// SIGKILL: a FIN may be lost (it waits up to --finish-sync-interval for
    /// an fsync), which may redeliver that message; nothing may be lost.
    Kill,
}

/// Before the stop: X is FINed, Y is delivered twice (REQ 0 in between) and
/// left in flight, Z is published but never delivered. After a restart on
/// the same data dir: Y comes back with its ID, body and timestamp and
/// attempts 3; Z with attempts 1; X not at all (or, after SIGKILL only, at
/// most once more, with attempts 2); new messages get new IDs.
async fn restart_redelivers_unfinished_messages(stop: Stop) {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path(), &[]);
    let payments = topic("payments");
    let ledger = channel("ledger");
    let mut consumer = subscribe(&server, &payments, &ledger, 1).await;
    let mut producer = connect_producer(&server).await;

    publish(&mut producer, &payments, "x").await;
    publish(&mut producer, &payments, "y").await;
    let x = next_message(&mut consumer, "the first message").await;
    assert_eq!(x.attempt, 1);
    let x_body = text(&x.body);
    let x_id = text(&x.id);
    x.finish().await;
    // With RDY 1, this delivery proves the server received the FIN.
    let y = next_message(&mut consumer, "the second message").await;
    assert_eq!(y.attempt, 1);
    assert_ne!(text(&y.body), x_body);
    let (y_id, y_body, y_timestamp) = (text(&y.id), text(&y.body), y.timestamp);
    y.requeue(NSQRequeueDelay::NoDelay).await;
    let y = next_message(&mut consumer, "the second message again after REQ 0").await;
    assert_eq!(
        (text(&y.id), text(&y.body), y.attempt),
        (y_id.clone(), y_body.clone(), 2)
    );
    abandon(y);
    // Never delivered: the only RDY slot is taken by y.
    publish(&mut producer, &payments, "z").await;

    match stop {
        Stop::Terminate => {
            let status = server.terminate();
            assert!(
                status.success(),
                "ledgerq exited with {status} after SIGTERM"
            );
        }
        Stop::Kill => server.kill(),
    }
    // Both clients would reconnect to the old address; drop them before a
    // new server could be given the same port.
    drop(consumer);
    drop(producer);
    server.restart();

    let mut consumer = subscribe(&server, &payments, &ledger, 10).await;
    let mut producer = connect_producer(&server).await;
    let mut y_again = false;
    let mut z_seen = None;
    let mut x_again = 0;
    while !(y_again && z_seen.is_some()) {
        let message = next_message(&mut consumer, "the redeliveries after the restart").await;
        let body = text(&message.body);
        if body == y_body {
            assert!(!y_again, "y delivered twice after the restart");
            assert_eq!(
                (text(&message.id), message.attempt, message.timestamp),
                (y_id.clone(), 3, y_timestamp),
                "y after the restart: (id, attempts, timestamp); attempts must continue from 2"
            );
            y_again = true;
        } else if body == "z" {
            assert!(z_seen.is_none(), "z delivered twice after the restart");
            assert_eq!(
                message.attempt, 1,
                "z was never delivered before the restart"
            );
            z_seen = Some(text(&message.id));
        } else if body == x_body && stop == Stop::Kill {
            x_again += 1;
            assert_eq!(
                (text(&message.id), message.attempt, x_again),
                (x_id.clone(), 2, 1),
                "x redelivered after SIGKILL: (id, attempts, times)"
            );
        } else {
            panic!(
                "unexpected delivery after the restart: {body:?} attempts {}",
                message.attempt
            );
        }
        message.finish().await;
    }
    let z_id = z_seen.expect("z seen");
    let old_ids = HashSet::from([x_id, y_id, z_id]);
    assert_eq!(
        old_ids.len(),
        3,
        "message IDs before the restart are unique"
    );

    // Nothing else is pending (a wrongly revived x would be queued ahead of
    // this), and a message published after the restart gets a fresh ID.
    publish(&mut producer, &payments, "after-restart").await;
    loop {
        let message = next_message(&mut consumer, "the message published after the restart").await;
        let body = text(&message.body);
        if body == x_body && stop == Stop::Kill && x_again == 0 {
            x_again += 1;
            assert_eq!(message.attempt, 2, "x redelivered after SIGKILL");
            message.finish().await;
            continue;
        }
        assert_eq!(
            (body, message.attempt),
            ("after-restart".to_string(), 1),
            "the only pending message"
        );
        assert!(
            !old_ids.contains(&text(&message.id)),
            "message ID {:?} reused after the restart",
            text(&message.id)
        );
        message.finish().await;
        break;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_sigterm_redelivers_unfinished_with_same_id_and_attempts() {
    restart_redelivers_unfinished_messages(Stop::Terminate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_sigkill_redelivers_unfinished_with_same_id_and_attempts() {
    restart_redelivers_unfinished_messages(Stop::Kill).await;
}

/// tokio-nsq through its own TLS (rustls 0.19, certificate unchecked: its
/// default) and its own deflate and snappy streams, publishing and
/// consuming a batch each way. The server's certificate is made by rcgen.
#[tokio::test(flavor = "multi_thread")]
async fn tls_deflate_and_snappy_round_trip() {
    use tokio_nsq::{NSQConfigSharedCompression, NSQConfigSharedTLS, NSQDeflateLevel};
    let certs = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_file, key_file) = (certs.path().join("c.pem"), certs.path().join("k.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_flag = format!("--tls-cert={}", cert_file.display());
    let key_flag = format!("--tls-key={}", key_file.display());
    let server = Server::start(dir.path(), &[&cert_flag, &key_flag]);
    let deflate = NSQConfigSharedCompression::Deflate(NSQDeflateLevel::new(6).unwrap());
    let variants = [
        ("tls-deflate", true, Some(deflate)),
        ("tls-snappy", true, Some(NSQConfigSharedCompression::Snappy)),
        ("snappy", false, Some(NSQConfigSharedCompression::Snappy)),
        ("tls", true, None),
    ];
    for (name, tls, compression) in variants {
        let mut shared = client_settings();
        if tls {
            shared = shared.set_tls(NSQConfigSharedTLS::new("localhost"));
        }
        if let Some(compression) = compression {
            shared = shared.set_compression(compression);
        }
        let topic = topic(&format!("tokio-nsq-{name}"));
        let mut producer = NSQProducerConfig::new(server.tcp_address.to_string())
            .set_shared(shared.clone())
            .build();
        match within("the producer's upgrades", producer.consume()).await {
            Some(NSQEvent::Healthy()) => {}
            other => panic!("{name}: expected Healthy, got {other:?}"),
        }
        let bodies: Vec<String> = (0..20).map(|i| format!("{name}-{i}")).collect();
        publish_multiple(&mut producer, &topic, &bodies).await;
        let mut consumer = NSQConsumerConfig::new(topic.clone(), channel("c"))
            .set_max_in_flight(20)
            .set_sources(NSQConsumerConfigSources::Daemons(vec![server
                .tcp_address
                .to_string()]))
            .set_shared(shared)
            .build();
        let mut received = HashSet::new();
        while received.len() < bodies.len() {
            match within(name, consumer.consume()).await {
                Some(NSQEvent::Message(message)) => {
                    received.insert(text(&message.body));
                    message.finish().await;
                }
                Some(NSQEvent::Healthy()) => {}
                other => panic!("{name}: expected a message, got {other:?}"),
            }
        }
        assert_eq!(
            received,
            bodies.into_iter().collect::<HashSet<_>>(),
            "{name}"
        );
    }
}

/// `/channel/peek` lists, in order, what the client then receives: a message
/// it put back with REQ (attempts counted) before the unread ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peek_lists_what_the_client_then_receives() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let orders = topic("orders");
    let billing = channel("billing");
    let mut producer = connect_producer(&server).await;
    let bodies: Vec<String> = (0..4).map(|i| format!("invoice {}", 4710 + i)).collect();
    publish_multiple(&mut producer, &orders, &bodies).await;
    let mut first = subscribe(&server, &orders, &billing, 1).await;
    let message = next_message(&mut first, "the first delivery").await;
    message.requeue(NSQRequeueDelay::NoDelay).await;
    // The client may have had it redelivered before it closed; once the
    // connection is gone, all four are ready again.
    drop(first);
    let address = server.http_address;
    let target = "/channel/peek?topic=orders&channel=billing&count=10";
    let peeked = tokio::task::spawn_blocking(move || {
        let mut peeked = serde_json::Value::Null;
        common::wait_until("all four ready", || {
            let response = common::http::http_request(address, "GET", target, b"");
            assert_eq!(response.status, 200, "{response:?}");
            peeked = serde_json::from_str(&response.body).expect("JSON");
            peeked["messages"].as_array().map(Vec::len) == Some(4)
        });
        peeked
    });
    let peeked = within("the peek", peeked).await.expect("the peek");
    let messages = peeked["messages"].as_array().expect("messages");
    let listed: Vec<&str> = messages
        .iter()
        .map(|m| m["body_text"].as_str().expect("text"))
        .collect();
    assert_eq!(
        listed,
        [
            "invoice 4710",
            "invoice 4711",
            "invoice 4712",
            "invoice 4713"
        ]
    );

    let mut next = subscribe(&server, &orders, &billing, 10).await;
    for expected in messages {
        let message = next_message(&mut next, "a peeked message").await;
        assert_eq!(text(&message.id), expected["id"].as_str().unwrap());
        assert_eq!(text(&message.body), expected["body_text"].as_str().unwrap());
        let attempts = expected["attempts"].as_u64().unwrap() + 1;
        assert_eq!(u64::from(message.attempt), attempts, "{expected}");
        message.finish().await;
    }
}
