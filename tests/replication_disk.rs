//! A member whose disk fails (its raft log fsync errors, through the
//! storage crate's `SyncGate`) acknowledges nothing from then on, and the
//! group goes on with the others. Three members in this process.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{free_address, replicas_flag};
use common::http::http_request;
use common::{RawClient, DEADLINE, FRAME_ERROR, FRAME_RESPONSE};
use ledgerq::config::ServeArgs;
use ledgerq::server::{self, Running};
use ledgerq_storage::{SyncGate, SyncHook};

fn member_args(dir: &Path, id: u64, replicas: &str, grpc: SocketAddr) -> ServeArgs {
    let mut args = ServeArgs::defaults();
    args.tcp_address = "127.0.0.1:0".parse().unwrap();
    args.http_address = "127.0.0.1:0".parse().unwrap();
    args.data_path = dir.join(format!("n{id}"));
    args.node_id = Some(id);
    args.replicas = Some(replicas.to_owned());
    args.grpc_address = grpc;
    args.forward_timeout = Duration::from_secs(1);
    args.raft_heartbeat_interval = Duration::from_millis(100);
    args.raft_election_timeout = Duration::from_millis(400);
    args
}

/// The leader's id once every member agrees on it.
fn wait_for_leader(members: &[(u64, std::net::SocketAddr)]) -> u64 {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let leaders: BTreeSet<Option<u64>> = members
            .iter()
            .map(|(_, http)| {
                let view = http_request(*http, "GET", "/cluster", b"");
                let view: serde_json::Value = serde_json::from_str(&view.body).unwrap();
                view["leader_id"].as_u64()
            })
            .collect();
        if let [Some(leader)] = leaders.iter().copied().collect::<Vec<_>>()[..] {
            return leader;
        }
        assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// PUB on a new connection: Ok(()) for OK, Err(the error frame) otherwise.
fn publish(address: std::net::SocketAddr, body: &str) -> Result<(), String> {
    let mut client = RawClient::connect(address);
    client.command_with_body("PUB disk", body.as_bytes());
    match client.read_frame() {
        (FRAME_RESPONSE, data) if data == b"OK" => Ok(()),
        (FRAME_ERROR, data) => Err(String::from_utf8_lossy(&data).into_owned()),
        (kind, data) => panic!(
            "unexpected frame {kind}: {:?}",
            String::from_utf8_lossy(&data)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_whose_disk_fails_acknowledges_nothing_and_the_group_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let grpc: BTreeMap<u64, SocketAddr> = (1..=3).map(|id| (id, free_address())).collect();
    let replicas = replicas_flag(&grpc);
    let gates: Vec<Arc<SyncGate>> = (0..3).map(|_| SyncGate::new()).collect();
    let mut running: Vec<Running> = Vec::new();
    for id in 1..=3u64 {
        let args = member_args(dir.path(), id, &replicas, grpc[&id]);
        let hook = gates[id as usize - 1].clone() as Arc<dyn SyncHook>;
        running.push(
            server::start(args, Some(hook))
                .await
                .expect("start a member"),
        );
    }
    let members: Vec<(u64, std::net::SocketAddr)> = (1..=3)
        .map(|id| (id, running[id as usize - 1].http_address))
        .collect();
    let tcp: Vec<std::net::SocketAddr> = running.iter().map(|r| r.tcp_address).collect();

    let (leader, sick, acked) = tokio::task::spawn_blocking(move || {
        let leader = wait_for_leader(&members);
        let sick = (1..=3).find(|&id| id != leader).unwrap();
        let mut acked = Vec::new();
        publish(tcp[leader as usize - 1], "before").expect("a healthy group acknowledges");
        acked.push("before".to_owned());
        (leader, sick, acked)
    })
    .await
    .unwrap();

    // The sick member's disk fails: every fsync of its raft log errors.
    gates[sick as usize - 1].fail("disk gone");
    let tcp: Vec<std::net::SocketAddr> = running.iter().map(|r| r.tcp_address).collect();
    let acked = tokio::task::spawn_blocking(move || {
        let mut acked = acked;
        // The leader replicates to the sick member, whose append fails.
        for i in 0..5 {
            let body = format!("healthy-{i}");
            publish(tcp[leader as usize - 1], &body).expect("the group goes on");
            acked.push(body);
        }
        // The sick member acknowledges nothing, whatever it is asked.
        for i in 0..3 {
            let body = format!("sick-{i}");
            match publish(tcp[sick as usize - 1], &body) {
                Err(error) => assert!(error.starts_with("E_PUB_FAILED"), "{error}"),
                Ok(()) => panic!("a member with a failed disk acknowledged {body}"),
            }
        }
        for i in 0..5 {
            let body = format!("after-{i}");
            publish(tcp[leader as usize - 1], &body).expect("the group goes on");
            acked.push(body);
        }
        let mut reader = RawClient::connect(tcp[leader as usize - 1]);
        reader.subscribe("disk", "c");
        reader.command("RDY 100");
        let mut seen = BTreeSet::new();
        while seen.len() < acked.len() {
            let message = reader.read_message();
            let body = String::from_utf8(message.body).unwrap();
            if !body.starts_with("sick-") {
                seen.insert(body);
            }
        }
        acked
    })
    .await
    .unwrap();
    assert_eq!(acked.len(), 11);
    for member in running {
        member.shutdown().await;
    }
}
