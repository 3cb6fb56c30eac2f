//! Redundancy mode under faults, with real processes on loopback: a paused
//! (SIGSTOP) leader, a leader or a follower partitioned off by the
//! fault-injection seam (`PUT /cluster/faults`), a follower that comes back
//! behind the purged log and must be caught up by a snapshot, and a node of
//! another cluster answering at a member's address.
//!
//! The invariant every test checks: an `OK` means committed, so every body
//! answered `OK` is delivered later from the current leader; a write that a
//! cut-off node could not commit is refused (`E_PUB_FAILED`, HTTP 503
//! `NO_LEADER`) and never delivered.
//!
//! Every wait polls with a deadline. The tests in this file run one at a
//! time (they share the machine's two cores with three servers each, and
//! the raft timing is fast).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, FAST_RAFT};
use common::http::{create_topic_and_channel, http_request};
use common::{RawClient, RawMessage, DEADLINE, FRAME_ERROR, FRAME_RESPONSE};

/// The tests of this file run one after the other.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Polls `probe` until it yields a value or `timeout` passes.
fn poll<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    poll_showing(what, timeout, || probe().ok_or(String::new()))
}

/// As [`poll`]; `probe` says what it saw when it is not done yet, and the
/// last of those is in the timeout's message.
fn poll_showing<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = match probe() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last seen: {seen}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET /cluster` of the server at `address`.
fn view_at(address: SocketAddr) -> serde_json::Value {
    let response = http_request(address, "GET", "/cluster", b"");
    assert_eq!(response.status, 200, "{response:?}");
    serde_json::from_str(&response.body).expect("/cluster is JSON")
}

fn applied(view: &serde_json::Value) -> u64 {
    view["applied_index"].as_u64().unwrap_or(0)
}

/// Cuts member `id`'s raft links to `cut` (an empty list heals them).
fn set_cut(cluster: &Cluster, id: u64, cut: &[u64]) {
    let list = cut.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let response = http_request(
        cluster.node(id).http_address,
        "PUT",
        &format!("/cluster/faults?cut={list}"),
        b"",
    );
    response.assert_ok();
}

/// Cuts `isolated` off from every other running member, both ways.
fn isolate(cluster: &Cluster, isolated: u64) {
    let others = cluster.others(isolated);
    set_cut(cluster, isolated, &others);
    for id in others {
        set_cut(cluster, id, &[isolated]);
    }
}

fn heal(cluster: &Cluster) {
    for id in cluster.running() {
        set_cut(cluster, id, &[]);
    }
}

/// Publishes each body (one PUB at a time, each answered OK) at `address`.
fn publish_all(address: SocketAddr, topic: &str, bodies: &[String]) {
    let mut publisher = RawClient::connect(address);
    for body in bodies {
        publisher.publish(topic, body.as_bytes());
    }
}

fn bodies(label: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{label}-{i}")).collect()
}

/// A frame, skipping heartbeats: `Ok(None)` once the server closed the
/// connection, `Err` if nothing came within the read timeout.
fn next_frame(client: &mut RawClient) -> std::io::Result<Option<(i32, Vec<u8>)>> {
    loop {
        let mut header = [0u8; 8];
        match client.stream.read_exact(&mut header) {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::UnexpectedEof => return Ok(None),
            Err(error) if error.kind() == ErrorKind::ConnectionReset => return Ok(None),
            Err(error) => return Err(error),
        }
        let size = i32::from_be_bytes(header[..4].try_into().unwrap());
        let frame_type = i32::from_be_bytes(header[4..].try_into().unwrap());
        let mut data = vec![0u8; (size - 4) as usize];
        client.stream.read_exact(&mut data)?;
        if (frame_type, data.as_slice()) != (FRAME_RESPONSE, b"_heartbeat_".as_slice()) {
            return Ok(Some((frame_type, data)));
        }
    }
}

/// Sends one PUB to `address` and asserts it is refused with
/// `E_PUB_FAILED` (never OK) within `within`.
fn assert_pub_refused(address: SocketAddr, topic: &str, body: &str, within: Duration) {
    let mut client = RawClient::connect(address);
    client.stream.set_read_timeout(Some(within)).unwrap();
    let started = Instant::now();
    client.command_with_body(&format!("PUB {topic}"), body.as_bytes());
    let frame = next_frame(&mut client)
        .unwrap_or_else(|e| panic!("PUB {body:?} was not answered within {within:?}: {e}"));
    let (frame_type, data) = frame.expect("the connection closed without an answer");
    let text = String::from_utf8_lossy(&data).into_owned();
    assert_eq!(
        frame_type, FRAME_ERROR,
        "PUB {body:?} on a node cut off from the majority was answered {text:?}"
    );
    assert!(text.starts_with("E_PUB_FAILED"), "{text}");
    eprintln!("{body}: {text:?} after {:?}", started.elapsed());
}

/// `topics[topic]` of `/stats?format=json` at `address`, if present.
fn topic_stats(address: SocketAddr, topic: &str) -> Option<serde_json::Value> {
    let response = http_request(
        address,
        "GET",
        &format!("/stats?format=json&topic={topic}"),
        b"",
    );
    assert_eq!(response.status, 200, "{response:?}");
    let stats: serde_json::Value = serde_json::from_str(&response.body).expect("stats JSON");
    stats["topics"]
        .as_array()?
        .iter()
        .find(|t| t["topic_name"] == topic)
        .cloned()
}

fn channel_stats(topic: &serde_json::Value, channel: &str) -> Option<serde_json::Value> {
    topic["channels"]
        .as_array()?
        .iter()
        .find(|c| c["channel_name"] == channel)
        .cloned()
}

/// Waits until member `id` shows `channel` of `topic` holding `depth`
/// messages (on disk too), none in flight: followers follow the leader's
/// Deliver, Finish and Requeue, so every member shows the same channel.
fn wait_channel_shows(cluster: &Cluster, id: u64, topic: &str, channel: &str, depth: u64) {
    let http = cluster.node(id).http_address;
    poll_showing(
        &format!("node {id} to show {topic}/{channel} with depth {depth}"),
        DEADLINE,
        || {
            let topic_doc = topic_stats(http, topic).ok_or("no topic".to_owned())?;
            let doc = channel_stats(&topic_doc, channel).ok_or(topic_doc.to_string())?;
            let shows = doc["depth"] == depth
                && doc["backend_depth"] == depth
                && doc["in_flight_count"] == 0;
            shows.then_some(()).ok_or(doc.to_string())
        },
    );
}

fn consumer(address: SocketAddr, topic: &str, channel: &str, rdy: u32) -> RawClient {
    let mut client = RawClient::connect(address);
    client.subscribe(topic, channel);
    client.command(&format!("RDY {rdy}"));
    client
}

/// body → the IDs it arrived under, in order.
type Seen = BTreeMap<String, Vec<[u8; 16]>>;

fn record(seen: &mut Seen, message: &RawMessage) {
    let body = String::from_utf8(message.body.clone()).expect("utf-8 body");
    seen.entry(body).or_default().push(message.id);
}

/// Consumes (FINing each) from the leader at `tcp`/`http` until every body
/// of `expected` arrived and the channel there is empty: nothing ready,
/// nothing in flight. So the result holds every message the group
/// committed to the topic, not only the expected ones.
fn drain(
    tcp: SocketAddr,
    http: SocketAddr,
    topic: &str,
    channel: &str,
    expected: &BTreeSet<String>,
) -> Seen {
    let mut client = consumer(tcp, topic, channel, 200);
    let deadline = Instant::now() + DEADLINE * 2;
    let mut seen = Seen::new();
    loop {
        let messages = client.read_barrier();
        for message in &messages {
            client.finish(message);
            record(&mut seen, message);
        }
        let missing: Vec<&String> = expected.iter().filter(|b| !seen.contains_key(*b)).collect();
        if missing.is_empty() && messages.is_empty() {
            let topic_doc = topic_stats(http, topic).expect("the topic exists");
            let channel_doc = channel_stats(&topic_doc, channel).expect("the channel exists");
            if channel_doc["depth"] == 0 && channel_doc["in_flight_count"] == 0 {
                // Everything committed was delivered and finished; make sure
                // nothing is still on its way to this client.
                let late = client.read_barrier();
                if late.is_empty() {
                    return seen;
                }
                for message in &late {
                    client.finish(message);
                    record(&mut seen, message);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged messages never delivered, e.g. {:?}",
            missing.len(),
            missing.first()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn assert_none_delivered(seen: &Seen, refused: &[&str]) {
    for body in refused {
        assert!(
            !seen.contains_key(*body),
            "{body:?} was refused by a node that could not commit it, yet it was delivered"
        );
    }
}

/// Waits until member `id` names `leader` as leader and calls itself a
/// follower.
fn wait_follower_of(cluster: &Cluster, id: u64, leader: u64) {
    poll(
        &format!("node {id} to follow node {leader}"),
        DEADLINE,
        || {
            let view = cluster.view(id);
            (view["role"] == "follower" && view["leader_id"] == leader).then_some(())
        },
    );
}

/// Waits until member `id` has applied what the leader has applied.
fn wait_caught_up(cluster: &Cluster, id: u64, leader: u64) {
    let target = applied(&cluster.view(leader));
    cluster.wait_applied(id, target);
}

#[test]
fn a_paused_leader_never_acknowledges_an_uncommitted_write() {
    let _serial = serial();
    const TOPIC: &str = "pause";
    const CHANNEL: &str = "audit";
    const PAUSED: usize = 20;
    let cluster = Cluster::start(3, &["--forward-timeout=2s"]);
    let old = cluster.wait_for_leader(&[1, 2, 3]);
    create_topic_and_channel(cluster.node(old).http_address, TOPIC, CHANNEL);
    let mut expected: BTreeSet<String> = BTreeSet::new();

    // A publisher on the leader, with the topic known everywhere.
    let mut paused = RawClient::connect(cluster.node(old).tcp_address);
    for body in bodies("before", 5) {
        paused.publish(TOPIC, body.as_bytes());
        expected.insert(body);
    }

    // The leader stops; the PUBs wait in its socket's receive buffer.
    cluster.signal(old, libc::SIGSTOP);
    let sent = bodies("paused", PAUSED);
    for body in &sent {
        paused.command_with_body(&format!("PUB {TOPIC}"), body.as_bytes());
    }

    // The two others go on without it.
    let others = cluster.others(old);
    let new_leader = cluster.wait_for_leader(&others);
    assert_ne!(new_leader, old);
    for id in &others {
        let after = bodies(&format!("after-via-{id}"), 10);
        publish_all(cluster.node(*id).tcp_address, TOPIC, &after);
        expected.extend(after);
    }

    // The old leader resumes and reads the PUBs while it still believes it
    // leads. Each is answered in order: OK only if committed, else
    // E_PUB_FAILED (fatal: the connection closes).
    cluster.signal(old, libc::SIGCONT);
    paused
        .stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut acked = Vec::new();
    let mut refused = None;
    for body in &sent {
        match next_frame(&mut paused) {
            Ok(Some((FRAME_RESPONSE, data))) if data == b"OK" => acked.push(body.clone()),
            Ok(Some((FRAME_ERROR, data))) => {
                let text = String::from_utf8_lossy(&data).into_owned();
                assert!(text.starts_with("E_PUB_FAILED"), "unexpected error {text}");
                refused = Some(text);
                break;
            }
            Ok(Some((frame_type, data))) => panic!(
                "unexpected frame {frame_type} {:?} for {body}",
                String::from_utf8_lossy(&data)
            ),
            Ok(None) => {
                refused = Some("connection closed".to_owned());
                break;
            }
            Err(error) => panic!("the resumed old leader never answered PUB {body}: {error}"),
        }
    }
    eprintln!(
        "paused leader {old}: {} of {PAUSED} PUBs answered OK, then {refused:?}",
        acked.len()
    );
    expected.extend(acked.iter().cloned());

    // The old leader is a follower of the new one.
    let current = cluster.wait_for_leader(&[1, 2, 3]);
    assert_ne!(current, old, "the stale leader came back as leader");
    wait_follower_of(&cluster, old, current);
    let view = cluster.view(old);
    assert!(
        view["term"].as_u64() >= cluster.view(current)["term"].as_u64(),
        "{view}"
    );
    wait_caught_up(&cluster, old, current);

    // Every OK'd body is delivered by the current leader.
    let seen = drain(
        cluster.node(current).tcp_address,
        cluster.node(current).http_address,
        TOPIC,
        CHANNEL,
        &expected,
    );
    for body in &expected {
        assert!(seen.contains_key(body), "{body} lost");
    }
}

/// A group whose raft links can be cut (`--forward-timeout=1s`), with
/// `topic` and `channel` made on its leader and five messages published
/// there and replicated to every member: (the group, its leader, those
/// messages).
fn faultable_group(topic: &str, channel: &str) -> (Cluster, u64, BTreeSet<String>) {
    let cluster = Cluster::start(3, &["--enable-fault-injection", "--forward-timeout=1s"]);
    let leader = cluster.wait_for_leader(&[1, 2, 3]);
    create_topic_and_channel(cluster.node(leader).http_address, topic, channel);
    let before = bodies("before", 5);
    publish_all(cluster.node(leader).tcp_address, topic, &before);
    for id in cluster.others(leader) {
        wait_caught_up(&cluster, id, leader);
    }
    (cluster, leader, before.into_iter().collect())
}

#[test]
fn a_partitioned_leader_cannot_accept_writes_and_the_majority_goes_on() {
    let _serial = serial();
    const TOPIC: &str = "split";
    const CHANNEL: &str = "audit";
    let (cluster, old, mut expected) = faultable_group(TOPIC, CHANNEL);

    // The leader is cut off from both followers (both directions).
    isolate(&cluster, old);
    assert_pub_refused(
        cluster.node(old).tcp_address,
        TOPIC,
        "isolated-tcp",
        Duration::from_secs(5),
    );
    let response = http_request(
        cluster.node(old).http_address,
        "POST",
        &format!("/pub?topic={TOPIC}"),
        b"isolated-http",
    );
    response.assert_error(503, "NO_LEADER");

    // The two others elect a leader among themselves and take writes
    // through either of them.
    let others = cluster.others(old);
    let new_leader = cluster.wait_for_leader(&others);
    assert_ne!(new_leader, old);
    for id in &others {
        let majority = bodies(&format!("majority-via-{id}"), 10);
        publish_all(cluster.node(*id).tcp_address, TOPIC, &majority);
        expected.extend(majority);
        let body = format!("majority-http-via-{id}");
        http_request(
            cluster.node(*id).http_address,
            "POST",
            &format!("/pub?topic={TOPIC}"),
            body.as_bytes(),
        )
        .assert_ok();
        expected.insert(body);
    }
    // Still cut off, the old leader still refuses.
    assert_pub_refused(
        cluster.node(old).tcp_address,
        TOPIC,
        "isolated-tcp-late",
        Duration::from_secs(5),
    );

    // Healed, the old leader follows the new one and catches up.
    heal(&cluster);
    let current = cluster.wait_for_leader(&[1, 2, 3]);
    assert_ne!(current, old, "the deposed leader won again");
    wait_follower_of(&cluster, old, current);
    wait_caught_up(&cluster, old, current);
    assert_eq!(
        cluster.view(old)["cluster_id"],
        cluster.view(current)["cluster_id"]
    );

    let seen = drain(
        cluster.node(current).tcp_address,
        cluster.node(current).http_address,
        TOPIC,
        CHANNEL,
        &expected,
    );
    assert_none_delivered(
        &seen,
        &["isolated-tcp", "isolated-http", "isolated-tcp-late"],
    );
    // Every member shows the channel drained, as the leader does.
    for id in 1..=3 {
        wait_channel_shows(&cluster, id, TOPIC, CHANNEL, 0);
    }
}

#[test]
fn a_minority_follower_cut_off_accepts_no_writes() {
    let _serial = serial();
    const TOPIC: &str = "minority";
    const CHANNEL: &str = "audit";
    let (cluster, leader, mut expected) = faultable_group(TOPIC, CHANNEL);
    let cut = cluster.others(leader)[0];
    let rest = cluster.others(cut);

    isolate(&cluster, cut);
    assert_pub_refused(
        cluster.node(cut).tcp_address,
        TOPIC,
        "cut-tcp",
        Duration::from_secs(5),
    );
    // The other two keep accepting, through the leader and the follower.
    for id in &rest {
        let majority = bodies(&format!("majority-via-{id}"), 10);
        publish_all(cluster.node(*id).tcp_address, TOPIC, &majority);
        expected.extend(majority);
    }
    let response = http_request(
        cluster.node(cut).http_address,
        "POST",
        &format!("/pub?topic={TOPIC}"),
        b"cut-http",
    );
    response.assert_error(503, "NO_LEADER");
    assert_pub_refused(
        cluster.node(cut).tcp_address,
        TOPIC,
        "cut-tcp-late",
        Duration::from_secs(5),
    );
    let view = cluster.view(cut);
    assert_ne!(view["role"], "leader", "a cut-off minority leads: {view}");

    // Healed, it catches up (its elections may have moved the leader).
    heal(&cluster);
    let current = cluster.wait_for_leader(&[1, 2, 3]);
    let after = bodies("after-heal", 5);
    publish_all(cluster.node(current).tcp_address, TOPIC, &after);
    expected.extend(after);
    for id in cluster.others(current) {
        wait_caught_up(&cluster, id, current);
    }
    let seen = drain(
        cluster.node(current).tcp_address,
        cluster.node(current).http_address,
        TOPIC,
        CHANNEL,
        &expected,
    );
    assert_none_delivered(&seen, &["cut-tcp", "cut-http", "cut-tcp-late"]);
    for id in 1..=3 {
        wait_channel_shows(&cluster, id, TOPIC, CHANNEL, 0);
    }
}

/// The snapshot files (`<id>.meta` stems) in a member's data dir.
fn snapshot_ids(data_dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("snapshots")) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "meta"))
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect()
}

/// The raft index of a snapshot id `<term>-<index>-<nanos>`.
fn snapshot_index(id: &str) -> u64 {
    id.split('-')
        .nth(1)
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("snapshot id {id:?} is not <term>-<index>-<nanos>"))
}

#[test]
fn a_follower_behind_the_purged_log_catches_up_by_snapshot() {
    let _serial = serial();
    const TOPIC: &str = "snap";
    const CHANNEL: &str = "books";
    const PUBLISHED: usize = 300;
    const FINISHED: usize = 100;
    let mut cluster = Cluster::start(3, &["--raft-snapshot-entries=20"]);
    let leader = cluster.wait_for_leader(&[1, 2, 3]);
    create_topic_and_channel(cluster.node(leader).http_address, TOPIC, CHANNEL);
    let behind = cluster.others(leader)[0];
    let other = cluster.others(leader)[1];
    wait_caught_up(&cluster, behind, leader);
    let applied_at_kill = applied(&cluster.view(behind));
    let own_before = snapshot_ids(&cluster.data_dir(behind));
    cluster.kill(behind);

    // One PUB at a time: each is at least one raft entry.
    let all = bodies("msg", PUBLISHED);
    publish_all(cluster.node(leader).tcp_address, TOPIC, &all);

    // Finish some: take FINISHED in flight, stop, FIN them all.
    let mut reader = consumer(
        cluster.node(leader).tcp_address,
        TOPIC,
        CHANNEL,
        FINISHED as u32,
    );
    let taken: Vec<RawMessage> = (0..FINISHED).map(|_| reader.read_message()).collect();
    reader.command("RDY 0");
    for message in &taken {
        reader.finish(message);
    }
    assert!(
        reader.read_barrier().is_empty(),
        "more than RDY messages in flight"
    );
    let finished: BTreeSet<String> = taken
        .iter()
        .map(|m| String::from_utf8(m.body.clone()).unwrap())
        .collect();
    assert_eq!(finished.len(), FINISHED);
    let unfinished: BTreeSet<String> = all
        .iter()
        .filter(|b| !finished.contains(*b))
        .cloned()
        .collect();
    let leader_http = cluster.node(leader).http_address;
    let leader_topic = poll("the leader to apply the FINs", DEADLINE, || {
        let topic = topic_stats(leader_http, TOPIC)?;
        let channel = channel_stats(&topic, CHANNEL)?;
        let settled = channel["in_flight_count"] == 0
            && channel["depth"] == (PUBLISHED - FINISHED) as u64
            && topic["message_count"] == PUBLISHED as u64;
        settled.then_some(topic)
    });
    drop(reader);

    // The leader has made a snapshot past everything the dead follower has.
    let leader_ids = poll("a snapshot on the leader", DEADLINE, || {
        let ids = snapshot_ids(&cluster.data_dir(leader));
        ids.iter()
            .any(|id| snapshot_index(id) > applied_at_kill + 20)
            .then_some(ids)
    });
    eprintln!(
        "follower {behind} died at index {applied_at_kill} (its snapshots: {own_before:?}); leader {leader} has {leader_ids:?}, view {}",
        cluster.view(leader)
    );

    // The follower comes back and catches up.
    let mut seen_leader_ids = leader_ids;
    cluster.start_node(behind);
    let target = applied(&cluster.view(leader));
    poll(
        &format!("node {behind} to apply index {target}"),
        DEADLINE,
        || {
            seen_leader_ids.extend(snapshot_ids(&cluster.data_dir(leader)));
            (applied(&cluster.view(behind)) >= target).then_some(())
        },
    );
    seen_leader_ids.extend(snapshot_ids(&cluster.data_dir(leader)));
    let own = snapshot_ids(&cluster.data_dir(behind));
    eprintln!("follower {behind} caught up with snapshots {own:?}");
    assert!(
        !own.is_empty(),
        "node {behind} caught up without a snapshot in its data dir"
    );
    assert!(
        own.iter().any(|id| seen_leader_ids.contains(id)),
        "node {behind}'s snapshot {own:?} is none of the leader's {seen_leader_ids:?}: not installed from the leader"
    );

    // It holds what the leader holds: the same unfinished messages in the
    // channel, none in flight. (Not the topic's `message_count`: that counts
    // messages published since the process started, and the snapshot
    // brought these in without publishing them here.)
    wait_channel_shows(
        &cluster,
        behind,
        TOPIC,
        CHANNEL,
        (PUBLISHED - FINISHED) as u64,
    );
    eprintln!(
        "topic on the caught-up node {behind}: {}; on the leader: {leader_topic}",
        topic_stats(cluster.node(behind).http_address, TOPIC).unwrap()
    );

    // Without the leader, the caught-up node is half of the new majority;
    // the new leader delivers every unfinished message and no finished one.
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader(&[behind, other]);
    let seen = drain(
        cluster.node(new_leader).tcp_address,
        cluster.node(new_leader).http_address,
        TOPIC,
        CHANNEL,
        &unfinished,
    );
    let delivered: BTreeSet<String> = seen.keys().cloned().collect();
    assert_eq!(
        delivered, unfinished,
        "the new leader delivered finished messages or unknown ones"
    );
}

#[test]
fn a_member_of_another_cluster_is_refused() {
    let _serial = serial();
    const TOPIC: &str = "identity";
    let mut a = Cluster::start(3, &[]);
    let leader = a.wait_for_leader(&[1, 2, 3]);
    let a_cluster_id = a.view(leader)["cluster_id"]
        .as_str()
        .expect("a cluster id")
        .to_owned();
    publish_all(a.node(leader).tcp_address, TOPIC, &bodies("a", 3));

    // Node 3 of A dies; a one-member group B takes its address.
    a.kill(3);
    let leader = a.wait_for_leader(&[1, 2]);
    let address = a.grpc[&3];
    let dir = tempfile::tempdir().expect("temp dir");
    let mut flags = vec![
        "--node-id=3".to_owned(),
        format!("--replicas=3={address}"),
        format!("--grpc-address={address}"),
    ];
    flags.extend(FAST_RAFT.iter().map(|s| s.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    // B must make its own cluster id (it is the initializer of its group)
    // even though A's leader is already knocking at its address: it must
    // not adopt A's id from A's AppendEntries.
    let b = common::Server::start(dir.path(), &flags);
    let b_start = poll_showing("B to lead its own group", DEADLINE, || {
        let view = view_at(b.http_address);
        let ready = view["role"] == "leader" && view["cluster_id"].is_string();
        ready.then_some(view.clone()).ok_or(view.to_string())
    });
    let b_cluster_id = b_start["cluster_id"].as_str().unwrap().to_owned();
    assert_ne!(
        b_cluster_id, a_cluster_id,
        "B adopted A's cluster id (from A's AppendEntries, before its own bootstrap made one): {b_start}"
    );
    assert_eq!(b_start["node_id"], 3);
    assert_eq!(
        b_start["members"].as_array().map(Vec::len),
        Some(1),
        "{b_start}"
    );

    // Over a window in which A's leader keeps sending AppendEntries to
    // address 3: B keeps its id, term and applied index, and A (2 of 3)
    // keeps accepting writes.
    let window = Instant::now() + Duration::from_secs(3);
    let mut round = 0;
    let a_applied_before = applied(&a.view(leader));
    while Instant::now() < window {
        let view = view_at(b.http_address);
        assert_eq!(view["cluster_id"], b_cluster_id.as_str(), "{view}");
        assert_eq!(view["term"], b_start["term"], "B's term moved: {view}");
        assert_eq!(
            view["applied_index"], b_start["applied_index"],
            "B applied something: {view}"
        );
        assert_eq!(view["role"], "leader", "{view}");
        assert_eq!(view["members"].as_array().map(Vec::len), Some(1), "{view}");
        let via = [1, 2][round % 2];
        publish_all(
            a.node(via).tcp_address,
            TOPIC,
            &[format!("a-during-{round}")],
        );
        round += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let a_view = a.view(leader);
    assert_eq!(a_view["role"], "leader", "{a_view}");
    assert_eq!(a_view["cluster_id"], a_cluster_id.as_str());
    assert!(applied(&a_view) > a_applied_before, "{a_view}");
    // A still sees member 3 behind: B answered none of its AppendEntries.
    let member3 = a_view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node_id"] == 3)
        .cloned()
        .expect("A still lists member 3");
    assert!(
        member3["matched_index"].as_u64().unwrap_or(0) < applied(&a_view),
        "{a_view}"
    );
    assert!(round >= 10, "A took only {round} writes in the window");
}
