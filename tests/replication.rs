//! Redundancy mode with real processes on loopback: a three-member group
//! forms itself, accepts writes on every member, delivers only from the
//! leader, and loses no acknowledged message when leaders are SIGKILLed
//! under load; bad flags and mixed-up data dirs are refused at start.
//!
//! Every wait polls with a deadline; kills are triggered by counts of
//! acknowledged messages, never by timers.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::http::{create_topic_and_channel, http_request};
use common::{RawClient, DEADLINE, FRAME_ERROR, FRAME_RESPONSE};

/// Subscribes to `topic`/`channel` at `address` with `rdy` in flight.
fn consumer(address: SocketAddr, topic: &str, channel: &str, rdy: u32) -> RawClient {
    let mut client = RawClient::connect(address);
    client.subscribe(topic, channel);
    client.command(&format!("RDY {rdy}"));
    client
}

/// Every delivery a consumer saw.
#[derive(Default)]
struct Deliveries {
    /// body → the IDs it arrived under (more than one: published twice,
    /// e.g. a forward retried after its leader died; allowed).
    ids_by_body: BTreeMap<String, BTreeSet<[u8; 16]>>,
    /// ID → (body, attempts) of each delivery, in arrival order.
    by_id: BTreeMap<[u8; 16], Vec<(String, u16)>>,
}

impl Deliveries {
    fn bodies(&self) -> BTreeSet<String> {
        self.ids_by_body.keys().cloned().collect()
    }

    /// A redelivered message keeps its ID and body, and its attempts count
    /// goes on from the last one (never reset).
    fn assert_redeliveries_keep_ids(&self) {
        for (id, deliveries) in &self.by_id {
            let id = String::from_utf8_lossy(id);
            for pair in deliveries.windows(2) {
                assert_eq!(pair[0].0, pair[1].0, "message {id} changed its body");
                assert!(
                    pair[1].1 > pair[0].1,
                    "message {id}: attempts went from {} to {}",
                    pair[0].1,
                    pair[1].1
                );
            }
        }
    }
}

/// Reads messages (FINing each) until every body of `expected` was seen.
fn consume_all(client: &mut RawClient, expected: &BTreeSet<String>) -> Deliveries {
    let deadline = Instant::now() + DEADLINE * 2;
    let mut seen = Deliveries::default();
    while !expected
        .iter()
        .all(|body| seen.ids_by_body.contains_key(body))
    {
        assert!(
            Instant::now() < deadline,
            "{} acknowledged messages never delivered, e.g. {:?}",
            expected
                .iter()
                .filter(|b| !seen.ids_by_body.contains_key(*b))
                .count(),
            expected.iter().find(|b| !seen.ids_by_body.contains_key(*b))
        );
        let message = client.read_message();
        client.command(&format!("FIN {}", String::from_utf8_lossy(&message.id)));
        let body = String::from_utf8(message.body).expect("utf-8 body");
        seen.ids_by_body
            .entry(body.clone())
            .or_default()
            .insert(message.id);
        seen.by_id
            .entry(message.id)
            .or_default()
            .push((body, message.attempts));
    }
    seen
}

#[test]
fn a_group_forms_replicates_and_only_the_leader_delivers() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3]);
    let views: Vec<_> = (1..=3).map(|id| cluster.view(id)).collect();
    let cluster_id = views[0]["cluster_id"]
        .as_str()
        .expect("a cluster id")
        .to_owned();
    for (index, view) in views.iter().enumerate() {
        assert_eq!(view["mode"], "replicated");
        assert_eq!(view["node_id"], index as u64 + 1);
        assert_eq!(view["cluster_id"], cluster_id.as_str());
        assert_eq!(view["members"].as_array().map(Vec::len), Some(3), "{view}");
    }

    // Every member accepts writes; followers forward them.
    let mut expected = BTreeSet::new();
    for id in 1..=3 {
        let mut publisher = RawClient::connect(cluster.node(id).tcp_address);
        for i in 0..5 {
            let body = format!("via-{id}-{i}");
            publisher.publish("orders", body.as_bytes());
            expected.insert(body);
        }
        let body = format!("http-via-{id}");
        let response = http_request(
            cluster.node(id).http_address,
            "POST",
            "/pub?topic=orders",
            body.as_bytes(),
        );
        response.assert_ok();
        expected.insert(body);
    }

    // Consumers on every member; only the leader's receive anything.
    let follower = cluster.others(leader)[0];
    let mut on_follower = consumer(cluster.node(follower).tcp_address, "orders", "audit", 100);
    let mut on_leader = consumer(cluster.node(leader).tcp_address, "orders", "audit", 100);
    let seen = consume_all(&mut on_leader, &expected);
    assert_eq!(seen.bodies(), expected);
    assert!(
        on_follower.read_barrier().is_empty(),
        "a follower delivered a message"
    );

    // The group is visible in /metrics.
    let metrics = http_request(cluster.node(leader).http_address, "GET", "/metrics", b"").body;
    assert!(
        metrics.contains("ledgerq_raft_role{role=\"leader\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ledgerq_raft_replication_lag{node_id=\""),
        "{metrics}"
    );
    let metrics = http_request(cluster.node(follower).http_address, "GET", "/metrics", b"").body;
    assert!(
        metrics.contains("ledgerq_raft_role{role=\"follower\"} 1"),
        "{metrics}"
    );
    let forwarded = metrics
        .lines()
        .find_map(|line| line.strip_prefix("ledgerq_forwarded_proposals_total "))
        .and_then(|value| value.trim().parse::<u64>().ok());
    assert!(forwarded.is_some_and(|n| n >= 1), "{metrics}");
    // Durability here is the raft log's fsync: it is what the fsync
    // histogram shows (not zeros for every applied batch).
    let fsync_seconds = metrics
        .lines()
        .find_map(|line| line.strip_prefix("ledgerq_wal_fsync_duration_seconds_sum "))
        .and_then(|value| value.trim().parse::<f64>().ok());
    assert!(fsync_seconds.is_some_and(|s| s > 0.0), "{metrics}");

    // Every member applies the same entries and so shows the same state:
    // everything published, nothing left in the channel (all finished).
    for id in 1..=3 {
        cluster.wait_for_topic_stats(id, "orders", |topic| {
            let channel = &topic["channels"][0];
            topic["message_count"] == expected.len() as u64
                && channel["depth"] == 0
                && channel["in_flight_count"] == 0
        });
    }
}

/// What publishers did: every body answered OK, and every error seen.
#[derive(Default)]
struct Acked {
    bodies: Vec<String>,
    errors: Vec<String>,
}

/// Publishers that PUB one at a time to members round-robin, moving on to
/// the next member on any error or closed connection.
struct Load {
    addresses: Arc<Mutex<BTreeMap<u64, SocketAddr>>>,
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Acked>>,
}

impl Load {
    fn start(cluster: &Cluster, topic: &'static str, publishers: u64) -> Load {
        let addresses = Arc::new(Mutex::new(
            cluster
                .nodes
                .iter()
                .map(|(id, s)| (*id, s.tcp_address))
                .collect(),
        ));
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..publishers)
            .map(|publisher| {
                let (addresses, acked, stop) = (addresses.clone(), acked.clone(), stop.clone());
                std::thread::spawn(move || {
                    publish_until_stopped(publisher, topic, &addresses, &acked, &stop)
                })
            })
            .collect();
        Load {
            addresses,
            acked,
            stop,
            threads,
        }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    fn update_addresses(&self, cluster: &Cluster) {
        *self.addresses.lock().unwrap() = cluster
            .nodes
            .iter()
            .map(|(id, s)| (*id, s.tcp_address))
            .collect();
    }

    /// Waits until `count` more messages are acknowledged.
    fn wait_for_more(&self, count: u64) {
        let target = self.acked() + count;
        let deadline = Instant::now() + DEADLINE * 2;
        while self.acked() < target {
            assert!(
                Instant::now() < deadline,
                "publishing stalled at {} acks",
                self.acked()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(self) -> Acked {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Acked::default();
        for thread in self.threads {
            let acked = thread.join().expect("publisher thread");
            all.bodies.extend(acked.bodies);
            all.errors.extend(acked.errors);
        }
        all
    }
}

fn publish_until_stopped(
    publisher: u64,
    topic: &str,
    addresses: &Mutex<BTreeMap<u64, SocketAddr>>,
    acked: &AtomicU64,
    stop: &AtomicBool,
) -> Acked {
    let mut result = Acked::default();
    let mut sequence = 0u64;
    let mut turn = publisher as usize;
    while !stop.load(Ordering::SeqCst) {
        let targets: Vec<SocketAddr> = addresses.lock().unwrap().values().copied().collect();
        turn += 1;
        let address = targets[turn % targets.len()];
        let Ok(stream) = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1))
        else {
            continue;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut client = RawClient { stream };
        client.send(b"  V2");
        while !stop.load(Ordering::SeqCst) {
            let body = format!("p{publisher}-{sequence}");
            sequence += 1;
            client.command_with_body(&format!("PUB {topic}"), body.as_bytes());
            match client.read_any_frame() {
                Some((FRAME_RESPONSE, data)) if data == b"OK" => {
                    result.bodies.push(body);
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                Some((FRAME_RESPONSE, data)) if data == b"_heartbeat_" => {
                    client.command("NOP");
                }
                Some((FRAME_ERROR, data)) => {
                    result
                        .errors
                        .push(String::from_utf8_lossy(&data).into_owned());
                    break;
                }
                _ => break,
            }
        }
    }
    result
}

#[test]
fn killing_leaders_under_load_loses_no_acknowledged_message() {
    let mut cluster = Cluster::start(3, &["--forward-timeout=2s"]);
    let leader = cluster.wait_for_leader(&[1, 2, 3]);
    let http = cluster.node(leader).http_address;
    create_topic_and_channel(http, "payments", "ledger");
    let load = Load::start(&cluster, "payments", 3);
    let mut killed = Vec::new();
    for _ in 0..2 {
        load.wait_for_more(150);
        let leader = cluster.wait_for_leader(&cluster.running());
        cluster.kill(leader);
        killed.push(leader);
        load.update_addresses(&cluster);
        let survivors = cluster.running();
        let new_leader = cluster.wait_for_leader(&survivors);
        assert_ne!(new_leader, leader);
        load.wait_for_more(150);
        cluster.start_node(leader);
        load.update_addresses(&cluster);
    }
    let acked = load.stop();
    assert!(
        acked.bodies.len() >= 600,
        "only {} acks",
        acked.bodies.len()
    );
    for error in &acked.errors {
        assert!(
            error.starts_with("E_PUB_FAILED"),
            "a publisher got an unexpected error: {error}"
        );
    }

    let leader = cluster.wait_for_leader(&[1, 2, 3]);
    let expected: BTreeSet<String> = acked.bodies.iter().cloned().collect();
    let mut reader = consumer(cluster.node(leader).tcp_address, "payments", "ledger", 500);
    let seen = consume_all(&mut reader, &expected);
    seen.assert_redeliveries_keep_ids();
    let published_twice = seen
        .ids_by_body
        .values()
        .filter(|ids| ids.len() > 1)
        .count();
    eprintln!(
        "killed leaders {killed:?}; {} acked, {} errors, {published_twice} published twice",
        acked.bodies.len(),
        acked.errors.len()
    );
}

/// Followers SIGKILLed under load lose their unflushed applied state (the
/// state store has no WAL of its own: the raft log is its WAL) and replay it
/// from their raft log at restart; then the leader is killed, so that a
/// replayed follower leads. Every acknowledged message is delivered, and all
/// three members end with the same topic.
#[test]
fn killed_followers_replay_their_log_and_lose_nothing() {
    let mut cluster = Cluster::start(3, &["--forward-timeout=2s"]);
    let leader = cluster.wait_for_leader(&[1, 2, 3]);
    let http = cluster.node(leader).http_address;
    create_topic_and_channel(http, "invoices", "books");
    let load = Load::start(&cluster, "invoices", 3);
    let followers: Vec<u64> = [1, 2, 3].into_iter().filter(|&id| id != leader).collect();
    for &follower in &followers {
        load.wait_for_more(150);
        cluster.kill(follower);
        load.update_addresses(&cluster);
        load.wait_for_more(100);
        cluster.start_node(follower);
        load.update_addresses(&cluster);
    }
    load.wait_for_more(100);
    cluster.kill(leader);
    load.update_addresses(&cluster);
    let new_leader = cluster.wait_for_leader(&followers);
    load.wait_for_more(150);
    cluster.start_node(leader);
    load.update_addresses(&cluster);
    load.wait_for_more(50);
    let acked = load.stop();
    for error in &acked.errors {
        assert!(
            error.starts_with("E_PUB_FAILED"),
            "a publisher got an unexpected error: {error}"
        );
    }

    // The three members converge on one topic.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let counts: Vec<u64> = [1, 2, 3]
            .iter()
            .map(|&id| {
                cluster.wait_for_topic_stats(id, "invoices", |_| true)["message_count"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .collect();
        if counts.iter().all(|&c| c == counts[0]) {
            assert!(counts[0] >= acked.bodies.len() as u64, "{counts:?}");
            break;
        }
        assert!(Instant::now() < deadline, "members differ: {counts:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let final_leader = cluster.wait_for_leader(&[1, 2, 3]);
    let expected: BTreeSet<String> = acked.bodies.iter().cloned().collect();
    let mut reader = consumer(
        cluster.node(final_leader).tcp_address,
        "invoices",
        "books",
        500,
    );
    let seen = consume_all(&mut reader, &expected);
    seen.assert_redeliveries_keep_ids();
    eprintln!(
        "killed followers {followers:?}, then leader {leader} (next: {new_leader}); {} acked",
        acked.bodies.len()
    );
}

/// `ledgerq serve` with these flags must exit at once, saying `expected`.
fn assert_refused(args: &[&str], expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data_path = format!("--data-path={}", dir.path().display());
    assert_refused_on(&data_path, args, expected);
}

fn assert_refused_on(data_path: &str, args: &[&str], expected: &str) {
    let grpc = match args.iter().any(|a| a.starts_with("--grpc-address")) {
        true => None,
        false => Some("--grpc-address=127.0.0.1:0"),
    };
    let output = Command::new(env!("CARGO_BIN_EXE_ledgerq"))
        .args([
            "serve",
            data_path,
            "--tcp-address=127.0.0.1:0",
            "--http-address=127.0.0.1:0",
        ])
        .args(grpc)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ledgerq");
    assert!(!output.status.success(), "{args:?} started");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(expected),
        "{args:?}: expected {expected:?} in {stderr}"
    );
}

#[test]
fn bad_replica_flags_are_refused_at_start() {
    assert_refused(
        &["--node-id=4", "--replicas=1=127.0.0.1:1,2=127.0.0.1:2"],
        "does not list this node's --node-id 4",
    );
    assert_refused(
        &["--node-id=1", "--replicas=1=127.0.0.1:1,1=127.0.0.1:2"],
        "lists node 1 twice",
    );
    assert_refused(
        &["--node-id=1", "--replicas=1=127.0.0.1:1,2=nowhere"],
        "is not HOST:PORT",
    );
    assert_refused(&["--replicas=1=127.0.0.1:1"], "needs --node-id");
    // Raft timing openraft refuses: refused before the data dir is touched.
    let dir = tempfile::tempdir().unwrap();
    let data_path = format!("--data-path={}", dir.path().display());
    let grpc = common::cluster::free_address();
    assert_refused_on(
        &data_path,
        &[
            "--node-id=1",
            &format!("--replicas=1={grpc}"),
            &format!("--grpc-address={grpc}"),
            "--raft-election-timeout=100ms",
            "--raft-heartbeat-interval=200ms",
        ],
        "election_timeout_min(100) must be > heartbeat_interval(200)",
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "the data dir was written"
    );
}

#[test]
fn a_data_dir_of_one_mode_refuses_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let data_path = format!("--data-path={}", dir.path().join("single").display());
    let mut single = common::Server::start(&dir.path().join("single"), &[]);
    single.terminate();
    let grpc = common::cluster::free_address();
    let replica_flags = [
        "--node-id=1".to_owned(),
        format!("--replicas=1={grpc}"),
        format!("--grpc-address={grpc}"),
    ];
    let flags: Vec<&str> = replica_flags.iter().map(String::as_str).collect();
    assert_refused_on(&data_path, &flags, "was made by a single-node ledgerq");

    let replica_dir = dir.path().join("replica");
    let mut replica = common::Server::start(&replica_dir, &flags);
    replica.terminate();
    let data_path = format!("--data-path={}", replica_dir.display());
    assert_refused_on(&data_path, &[], "was made by a replica-group member");
}

#[test]
fn a_killed_leaders_in_flight_messages_come_back_with_their_ids() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3]);
    let http = cluster.node(leader).http_address;
    create_topic_and_channel(http, "invoices", "billing");
    let mut publisher = RawClient::connect(cluster.node(leader).tcp_address);
    let expected: BTreeSet<String> = (0..20).map(|i| format!("invoice-{i}")).collect();
    for body in &expected {
        publisher.publish("invoices", body.as_bytes());
    }
    // Take ten in flight on the leader, finish five of them, then kill it.
    let mut first = consumer(cluster.node(leader).tcp_address, "invoices", "billing", 10);
    let in_flight: Vec<_> = (0..10).map(|_| first.read_message()).collect();
    for message in &in_flight[..5] {
        first.command(&format!("FIN {}", String::from_utf8_lossy(&message.id)));
    }
    assert!(
        first.read_barrier().is_empty(),
        "more than RDY messages in flight"
    );
    cluster.kill(leader);
    let survivors = cluster.running();
    let new_leader = cluster.wait_for_leader(&survivors);

    // A consumer on the new leader gets every unfinished message; the five
    // left in flight come back under their IDs, with attempts 2.
    let finished: BTreeSet<String> = in_flight[..5]
        .iter()
        .map(|m| String::from_utf8(m.body.clone()).unwrap())
        .collect();
    let unfinished: BTreeSet<String> = expected.difference(&finished).cloned().collect();
    let mut second = consumer(
        cluster.node(new_leader).tcp_address,
        "invoices",
        "billing",
        20,
    );
    let seen = consume_all(&mut second, &unfinished);
    seen.assert_redeliveries_keep_ids();
    for message in &in_flight[5..] {
        let body = String::from_utf8(message.body.clone()).unwrap();
        assert_eq!(message.attempts, 1);
        assert_eq!(
            seen.ids_by_body[&body],
            BTreeSet::from([message.id]),
            "{body} changed its ID"
        );
        let attempts: Vec<u16> = seen.by_id[&message.id].iter().map(|(_, a)| *a).collect();
        assert_eq!(attempts, vec![2], "{body}: attempts after the failover");
    }
}

#[test]
fn a_dead_member_is_replaced_without_losing_messages() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3]);
    let http = cluster.node(leader).http_address;
    create_topic_and_channel(http, "ledger", "books");
    let mut expected = BTreeSet::new();
    let mut publish = |cluster: &Cluster, via: u64, label: &str| {
        let mut publisher = RawClient::connect(cluster.node(via).tcp_address);
        for i in 0..30 {
            let body = format!("{label}-{i}");
            publisher.publish("ledger", body.as_bytes());
            expected.insert(body);
        }
    };
    publish(&cluster, leader, "before");

    // Member 3 dies for good (its disk is lost).
    cluster.kill(3);
    let leader = cluster.wait_for_leader(&[1, 2]);
    publish(&cluster, leader, "degraded");

    // A fresh node 4 replaces it: added through a follower, 3 removed.
    let grpc = cluster.start_new_member(4);
    let follower = cluster
        .others(leader)
        .into_iter()
        .find(|&id| id != 4)
        .unwrap();
    let add = format!("/cluster/add?node_id=4&grpc_address={grpc}");
    http_request(cluster.node(follower).http_address, "POST", &add, b"").assert_ok();
    http_request(
        cluster.node(leader).http_address,
        "POST",
        "/cluster/remove?node_id=3",
        b"",
    )
    .assert_ok();
    let view = cluster.view(leader);
    let voters: BTreeSet<u64> = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["voter"] == true)
        .map(|m| m["node_id"].as_u64().unwrap())
        .collect();
    assert_eq!(voters, BTreeSet::from([1, 2, 4]), "{view}");
    assert_eq!(cluster.view(4)["cluster_id"], view["cluster_id"]);

    // Now the leader dies too: 4 and the other survivor carry on.
    publish(&cluster, leader, "replaced");
    cluster.kill(leader);
    let survivors = cluster.running();
    let new_leader = cluster.wait_for_leader(&survivors);
    publish(&cluster, new_leader, "after");
    let mut reader = consumer(cluster.node(new_leader).tcp_address, "ledger", "books", 200);
    let seen = consume_all(&mut reader, &expected);
    seen.assert_redeliveries_keep_ids();

    let bad = http_request(
        cluster.node(new_leader).http_address,
        "POST",
        "/cluster/add?node_id=x&grpc_address=a:1",
        b"",
    );
    bad.assert_error(400, "INVALID_ARG_NODE_ID");
}

#[test]
fn a_deferred_message_survives_a_failover_and_keeps_its_time() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3]);
    let http = cluster.node(leader).http_address;
    create_topic_and_channel(http, "reminders", "mail");
    let follower = cluster.others(leader)[0];
    let mut publisher = RawClient::connect(cluster.node(follower).tcp_address);
    let defer_ms = 2_000;
    let published_at = Instant::now();
    publisher.command_with_body(&format!("DPUB reminders {defer_ms}"), b"later");
    publisher.expect_response("OK");
    cluster.kill(leader);
    let survivors = cluster.running();
    let new_leader = cluster.wait_for_leader(&survivors);
    let mut reader = consumer(cluster.node(new_leader).tcp_address, "reminders", "mail", 1);
    let message = reader.read_message();
    let waited = published_at.elapsed();
    assert_eq!(message.body, b"later");
    assert!(
        waited >= Duration::from_millis(defer_ms),
        "delivered {waited:?} after a DPUB of {defer_ms} ms"
    );
}

#[test]
fn followers_serve_admin_calls_and_their_own_memory_only_topics() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3]);
    let follower = cluster.others(leader)[0];
    let on_follower = cluster.node(follower).http_address;
    create_topic_and_channel(on_follower, "audit", "c");
    let pause = http_request(
        on_follower,
        "POST",
        "/channel/pause?topic=audit&channel=c",
        b"",
    );
    assert_eq!(pause.status, 200, "{pause:?}");
    for id in 1..=3 {
        cluster.wait_for_topic_stats(id, "audit", |topic| topic["channels"][0]["paused"] == true);
    }

    // A memory-only topic belongs to the node it lives on: a follower
    // delivers it itself.
    let mut reader = consumer(
        cluster.node(follower).tcp_address,
        "scratch#ephemeral",
        "c#ephemeral",
        1,
    );
    let mut publisher = RawClient::connect(cluster.node(follower).tcp_address);
    publisher.publish("scratch#ephemeral", b"local");
    assert_eq!(reader.read_message().body, b"local");
}
