//! In-process tests of "OK means fsynced", using the storage crate's
//! [`SyncGate`] between the WAL write and its fsync: a stalled fsync holds
//! every acknowledgement back, publishers of several connections share one
//! fsync, a failed fsync is never acknowledged and stops all later writes,
//! and a graceful shutdown still answers a publish that is waiting for its
//! fsync.
//!
//! The client side of each scenario runs on a blocking thread with the
//! harness's raw client; the server runs on the test's runtime.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use common::{wait_until, RawClient, DEADLINE, FRAME_ERROR};
use ledgerq::broker::Broker;
use ledgerq::config::ServeArgs;
use ledgerq::server::{self, Running};
use ledgerq_storage::{SyncGate, SyncHook};

fn serve_args(dir: &Path) -> ServeArgs {
    let mut args = ServeArgs::defaults();
    args.tcp_address = "127.0.0.1:0".parse().unwrap();
    args.http_address = "127.0.0.1:0".parse().unwrap();
    args.grpc_address = "127.0.0.1:0".parse().unwrap();
    args.data_path = dir.to_path_buf();
    args
}

/// Releases the gate when dropped, also when the test panics: a failing
/// test must not leave the committer (joined when the broker is dropped)
/// blocked in a held sync forever.
struct ReleaseOnDrop(Arc<SyncGate>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.release();
    }
}

async fn start(dir: &Path, gate: Option<&Arc<SyncGate>>) -> Running {
    let hook = gate.map(|gate| gate.clone() as Arc<dyn SyncHook>);
    server::start(serve_args(dir), hook)
        .await
        .expect("start the server")
}

/// Waits until the broker (and so the database) is gone, so that the data
/// directory can be opened again in this process.
async fn wait_released(broker: Weak<Broker>) {
    let deadline = Instant::now() + DEADLINE;
    while broker.strong_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "the broker was not released after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn stop(running: Running) {
    let broker = Arc::downgrade(&running.broker);
    running.shutdown().await;
    wait_released(broker).await;
}

/// Runs the client side of a scenario on a blocking thread; its panic is
/// the test's.
async fn client_side<T: Send + 'static>(scenario: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(scenario).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

fn subscribed(address: SocketAddr, topic: &str, channel: &str, rdy: u32) -> RawClient {
    let mut client = RawClient::connect(address);
    client.subscribe(topic, channel);
    client.command(&format!("RDY {rdy}"));
    client
}

/// The next frame, which must be an error starting with `prefix`; returns
/// its text.
fn expect_error_starting(client: &mut RawClient, prefix: &str) -> String {
    let (frame_type, data) = client.read_frame();
    let text = String::from_utf8_lossy(&data).into_owned();
    assert!(
        frame_type == FRAME_ERROR && text.starts_with(prefix),
        "expected an error {prefix:?}..., got frame type {frame_type}: {text:?}"
    );
    text
}

/// Bodies delivered on `client` (FINed) up to and including `last`.
fn bodies_until(client: &mut RawClient, last: &[u8]) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    loop {
        let message = client.read_message();
        client.finish(&message);
        let done = message.body == last;
        bodies.push(message.body);
        if done {
            return bodies;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_is_not_acknowledged_or_delivered_while_its_fsync_is_stalled() {
    let dir = tempfile::tempdir().unwrap();
    let gate = SyncGate::new();
    let _release = ReleaseOnDrop(gate.clone());
    let running = start(dir.path(), Some(&gate)).await;
    let address = running.tcp_address;
    client_side(move || {
        let mut publisher = RawClient::connect(address);
        publisher.publish("stall", b"before");
        let mut consumer = subscribed(address, "stall", "c", 10);
        // Left in flight: no FIN is waiting to be committed below.
        assert_eq!(consumer.read_message().body, b"before");

        gate.hold();
        let passed = gate.passed();
        publisher.command_with_body("PUB stall", b"stalled");
        wait_until("the publish's fsync to stall", || gate.waiting() >= 1);
        // A round trip through the server (an ephemeral topic needs no
        // write) gives a premature OK every chance to show up.
        RawClient::connect(address).publish("tick#ephemeral", b"tick");
        assert!(
            !publisher.has_readable_bytes(),
            "the publisher was answered while its fsync was stalled"
        );
        assert!(
            !consumer.has_readable_bytes(),
            "a message was delivered before it was durable"
        );
        assert_eq!(gate.passed(), passed, "a sync got through a held gate");

        gate.release();
        publisher.expect_response("OK");
        assert_eq!(consumer.read_message().body, b"stalled");
        assert!(gate.passed() > passed);
    })
    .await;
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_on_different_connections_share_one_fsync() {
    const PUBLISHERS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let gate = SyncGate::new();
    let _release = ReleaseOnDrop(gate.clone());
    let running = start(dir.path(), Some(&gate)).await;
    let address = running.tcp_address;
    let stats = running.broker.log().stats().clone();
    client_side(move || {
        let mut first = RawClient::connect(address);
        // Creates the topic: the publishes below are one command each.
        first.publish("group", b"warmup");
        // Shows, without writing anything, that a publisher's connection
        // has handled its PUB: a connection handles its commands in order,
        // and a message of an ephemeral topic is delivered at once.
        let mut watcher = subscribed(address, "probe#ephemeral", "watch#ephemeral", 100);

        gate.hold();
        let passed = gate.passed();
        let batches = stats.batches_total.load(Ordering::SeqCst);
        let commands = stats.commands_total.load(Ordering::SeqCst);
        first.command_with_body("PUB group", b"first");
        wait_until("the first publish's fsync to stall", || gate.waiting() >= 1);

        let mut others: Vec<RawClient> = (0..PUBLISHERS)
            .map(|i| {
                let mut client = RawClient::connect(address);
                client.command_with_body("PUB group", format!("queued-{i}").as_bytes());
                client.command_with_body("PUB probe#ephemeral", format!("{i}").as_bytes());
                client
            })
            .collect();
        let mut probed = HashSet::new();
        while probed.len() < PUBLISHERS {
            let message = watcher.read_message();
            watcher.finish(&message);
            probed.insert(message.body);
        }
        // Every publish is queued behind the stalled fsync; none is answered.
        assert_eq!(gate.waiting(), 1);
        assert_eq!(gate.passed(), passed);
        assert!(
            !first.has_readable_bytes(),
            "answered during a stalled fsync"
        );
        for client in &others {
            assert!(
                !client.has_readable_bytes(),
                "answered during a stalled fsync"
            );
        }

        gate.release();
        first.expect_response("OK");
        for client in &mut others {
            client.expect_response("OK");
            client.expect_response("OK");
        }
        assert_eq!(
            gate.passed() - passed,
            2,
            "the stalled fsync, then one fsync for all {PUBLISHERS} publishers queued behind it"
        );
        assert_eq!(stats.batches_total.load(Ordering::SeqCst) - batches, 2);
        assert_eq!(
            stats.commands_total.load(Ordering::SeqCst) - commands,
            1 + PUBLISHERS as u64
        );
    })
    .await;
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_is_never_acknowledged_and_stops_all_writes() {
    let dir = tempfile::tempdir().unwrap();
    let gate = SyncGate::new();
    let _release = ReleaseOnDrop(gate.clone());
    let running = start(dir.path(), Some(&gate)).await;
    let address = running.tcp_address;
    client_side(move || {
        let mut publisher = RawClient::connect(address);
        for body in ["acked-1", "acked-2", "acked-3"] {
            publisher.publish("doomed", body.as_bytes());
        }

        gate.hold();
        let mut victim = RawClient::connect(address);
        victim.command_with_body("PUB doomed", b"failed");
        wait_until("the publish's fsync to stall", || gate.waiting() >= 1);
        gate.fail("injected");
        let text = expect_error_starting(&mut victim, "E_PUB_FAILED PUB failed ");
        assert!(text.contains("injected"), "{text:?}");
        victim.expect_closed();

        // Every later write is refused, without another attempt at the disk.
        let passed = gate.passed();
        let mut mpub = RawClient::connect(address);
        let mut body = 2u32.to_be_bytes().to_vec();
        for message in [&b"refused-mpub-1"[..], b"refused-mpub-2"] {
            body.extend_from_slice(&(message.len() as u32).to_be_bytes());
            body.extend_from_slice(message);
        }
        mpub.command_with_body("MPUB doomed", &body);
        expect_error_starting(&mut mpub, "E_MPUB_FAILED MPUB failed ");
        mpub.expect_closed();

        let mut dpub = RawClient::connect(address);
        dpub.command_with_body("DPUB doomed 1", b"refused-dpub");
        expect_error_starting(&mut dpub, "E_DPUB_FAILED DPUB failed ");
        dpub.expect_closed();

        publisher.command_with_body("PUB doomed", b"refused-pub");
        expect_error_starting(&mut publisher, "E_PUB_FAILED PUB failed ");
        publisher.expect_closed();

        let mut fresh = RawClient::connect(address);
        fresh.command_with_body("PUB fresh_topic", b"refused-new-topic");
        expect_error_starting(&mut fresh, "E_PUB_FAILED PUB failed ");
        fresh.expect_closed();
        assert_eq!(gate.passed(), passed, "a refused write reached the disk");
    })
    .await;
    stop(running).await;

    // Restart on the same directory, with a sound disk.
    let running = start(dir.path(), None).await;
    let address = running.tcp_address;
    client_side(move || {
        let mut consumer = subscribed(address, "doomed", "c", 100);
        // Writes are accepted again.
        RawClient::connect(address).publish("doomed", b"after-restart");
        let bodies = bodies_until(&mut consumer, b"after-restart");
        let bodies: Vec<String> = bodies
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        assert_eq!(
            bodies[..3],
            ["acked-1", "acked-2", "acked-3"],
            "acknowledged messages must survive a failed fsync: {bodies:?}"
        );
        let rest = &bodies[3..];
        assert!(
            rest == ["after-restart"] || rest == ["failed", "after-restart"],
            "after the acknowledged messages: {rest:?} (the failed one may or may not \
             be there; refused ones must not)"
        );
        eprintln!(
            "the message whose fsync failed is {} after the restart",
            if rest.len() == 2 { "present" } else { "absent" }
        );
    })
    .await;
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_a_publish_waiting_for_its_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let gate = SyncGate::new();
    let _release = ReleaseOnDrop(gate.clone());
    let running = start(dir.path(), Some(&gate)).await;
    let address = running.tcp_address;
    let stalled_gate = gate.clone();
    let (mut publisher, mut bystander) = client_side(move || {
        let gate = stalled_gate;
        let mut publisher = RawClient::connect(address);
        publisher.publish("drain", b"before");
        let bystander = RawClient::connect(address);
        gate.hold();
        publisher.command_with_body("PUB drain", b"pending");
        wait_until("the publish's fsync to stall", || gate.waiting() >= 1);
        (publisher, bystander)
    })
    .await;

    let broker = Arc::downgrade(&running.broker);
    let shutdown = tokio::spawn(running.shutdown());
    client_side(move || {
        // An idle connection is closed at once: the shutdown has begun.
        bystander.expect_closed();
        assert!(
            !publisher.has_readable_bytes(),
            "the pending publish was answered or dropped while its fsync was stalled"
        );
        gate.release();
        publisher.expect_response("OK");
        publisher.expect_closed();
    })
    .await;
    tokio::time::timeout(DEADLINE, shutdown)
        .await
        .expect("the shutdown did not finish")
        .expect("the shutdown task panicked");
    wait_released(broker).await;

    let running = start(dir.path(), None).await;
    let address = running.tcp_address;
    client_side(move || {
        let mut consumer = subscribed(address, "drain", "c", 10);
        RawClient::connect(address).publish("drain", b"after-restart");
        let bodies = bodies_until(&mut consumer, b"after-restart");
        assert_eq!(
            bodies,
            [&b"before"[..], b"pending", b"after-restart"],
            "the publish answered during the shutdown is stored"
        );
    })
    .await;
    stop(running).await;
}

/// `GET /ping` over a raw HTTP/1.1 connection: (status line, body).
fn http_ping(address: SocketAddr) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect HTTP");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let request = "GET /ping HTTP/1.1\r\nHost: ledgerq\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_reports_a_failed_fsync_as_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let gate = SyncGate::new();
    let _release = ReleaseOnDrop(gate.clone());
    let running = start(dir.path(), Some(&gate)).await;
    let (tcp, http) = (running.tcp_address, running.http_address);
    client_side(move || {
        assert_eq!(
            http_ping(http),
            ("HTTP/1.1 200 OK".to_owned(), "OK".to_owned())
        );
        gate.fail("injected");
        let mut publisher = RawClient::connect(tcp);
        publisher.command_with_body("PUB health", b"never acknowledged");
        let (frame_type, _) = publisher.read_frame();
        assert_eq!(frame_type, FRAME_ERROR);
        let (status, body) = http_ping(http);
        assert_eq!(status, "HTTP/1.1 500 Internal Server Error");
        assert!(
            body.starts_with("NOK - ") && body.contains("injected"),
            "unexpected /ping body {body:?}"
        );
    })
    .await;
    stop(running).await;
}
