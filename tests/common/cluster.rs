//! A replica group of real `ledgerq serve` processes on loopback: start,
//! SIGKILL, restart, SIGSTOP/SIGCONT members, and ask each for its view of
//! the group (`GET /cluster`). Every wait polls with a deadline.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::http::http_request;
use super::{Server, DEADLINE};

/// Raft timing for tests: fast elections, so failover tests stay short, but
/// a heartbeat (openraft's append-entries timeout) long enough for a busy
/// CI machine's fsyncs.
pub const FAST_RAFT: [&str; 2] = [
    "--raft-heartbeat-interval=100ms",
    "--raft-election-timeout=400ms",
];

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub replicas: String,
    pub grpc: BTreeMap<u64, SocketAddr>,
    pub nodes: BTreeMap<u64, Server>,
    pub extra_args: Vec<String>,
}

pub use ledgerq_bench::ports::free_address;

/// The `--replicas` value naming these members' gRPC addresses.
pub fn replicas_flag(grpc: &BTreeMap<u64, SocketAddr>) -> String {
    grpc.iter()
        .map(|(id, address)| format!("{id}={address}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Cluster {
    /// Starts members `1..=size` with `extra_args` (plus [`FAST_RAFT`]).
    pub fn start(size: u64, extra_args: &[&str]) -> Cluster {
        let grpc: BTreeMap<u64, SocketAddr> = (1..=size).map(|id| (id, free_address())).collect();
        let replicas = replicas_flag(&grpc);
        let mut cluster = Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            replicas,
            grpc,
            nodes: BTreeMap::new(),
            extra_args: FAST_RAFT
                .iter()
                .chain(extra_args)
                .map(|s| s.to_string())
                .collect(),
        };
        for id in 1..=size {
            cluster.start_node(id);
        }
        cluster
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("n{id}"))
    }

    /// The flags of member `id` (without `--data-path` and listen addresses).
    pub fn node_args(&self, id: u64) -> Vec<String> {
        let mut args = vec![
            format!("--node-id={id}"),
            format!("--replicas={}", self.replicas),
            format!("--grpc-address={}", self.grpc[&id]),
        ];
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Starts (or restarts) member `id` on its data dir.
    pub fn start_node(&mut self, id: u64) {
        let args = self.node_args(id);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = Server::start(&self.data_dir(id), &args);
        self.nodes.insert(id, server);
    }

    /// Starts a new node `id` (empty data dir) that knows the group but
    /// is not a member yet: its `--replicas` lists the group and itself,
    /// and it is not the lowest id, so it waits to be added.
    pub fn start_new_member(&mut self, id: u64) -> SocketAddr {
        let grpc = free_address();
        self.grpc.insert(id, grpc);
        self.replicas = format!("{},{id}={grpc}", self.replicas);
        self.start_node(id);
        grpc
    }

    pub fn node(&self, id: u64) -> &Server {
        &self.nodes[&id]
    }

    /// SIGKILL: the member is gone without a chance to flush.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut server) = self.nodes.remove(&id) {
            server.kill();
        }
    }

    pub fn signal(&self, id: u64, signal: i32) {
        let pid = self.nodes[&id].pid() as i32;
        // SAFETY: sends a signal to our own child process.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// Member `id`'s `GET /cluster`.
    pub fn view(&self, id: u64) -> serde_json::Value {
        let response = http_request(self.nodes[&id].http_address, "GET", "/cluster", b"");
        assert_eq!(response.status, 200, "{response:?}");
        serde_json::from_str(&response.body).expect("/cluster is JSON")
    }

    /// Member `id`'s view, or `None` if it does not answer in time.
    pub fn try_view(&self, id: u64, timeout: Duration) -> Option<serde_json::Value> {
        let address = self.nodes.get(&id)?.http_address;
        let stream = std::net::TcpStream::connect_timeout(&address, timeout).ok()?;
        drop(stream);
        Some(self.view(id))
    }

    /// Waits until every running member in `members` names the same leader,
    /// which is one of them and calls itself leader; returns its id.
    pub fn wait_for_leader(&self, members: &[u64]) -> u64 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let views: Vec<serde_json::Value> = members.iter().map(|id| self.view(*id)).collect();
            let leaders: Vec<Option<u64>> = views.iter().map(|v| v["leader_id"].as_u64()).collect();
            if let Some(Some(leader)) = leaders.first() {
                let agreed = leaders.iter().all(|l| *l == Some(*leader));
                let index = members.iter().position(|id| id == leader);
                if agreed {
                    if let Some(index) = index {
                        if views[index]["role"] == "leader" {
                            return *leader;
                        }
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader among {members:?}: {views:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until member `id` has applied at least raft index `index`.
    pub fn wait_applied(&self, id: u64, index: u64) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let view = self.view(id);
            if view["applied_index"].as_u64().unwrap_or(0) >= index {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} did not apply index {index}: {view}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls member `id`'s `/stats` (JSON) of `topic` until `done` holds
    /// for its first topic entry; returns that entry.
    pub fn wait_for_topic_stats(
        &self,
        id: u64,
        topic: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + DEADLINE;
        let target = format!("/stats?format=json&topic={topic}");
        loop {
            let response = http_request(self.nodes[&id].http_address, "GET", &target, b"");
            let stats: serde_json::Value =
                serde_json::from_str(&response.body).expect("JSON stats");
            let entry = stats["topics"][0].clone();
            if done(&entry) {
                return entry;
            }
            assert!(Instant::now() < deadline, "node {id} shows {stats}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// The members other than `id` that are running.
    pub fn others(&self, id: u64) -> Vec<u64> {
        self.running().into_iter().filter(|&n| n != id).collect()
    }
}
