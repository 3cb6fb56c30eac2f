//! Redundancy mode: this node as a member of a raft replica group
//! (`docs/replication.md`).
//!
//! [`open`] lays out the data directory (`raft/` the raft log, `state/`
//! the state store, `snapshots/`), opens openraft over the storage crate's
//! [`RaftLogStore`] and [`ReplicatedState`], serves the group's gRPC
//! service on `--grpc-address`, bootstraps the group if needed, and starts
//! the broker over a [`ReplicatedLog`] — the same broker as single-node
//! mode, told to dispatch only while it leads.
//!
//! Files: `config.rs` (the flags), `rpc.rs` (messages), `network.rs`
//! (client side, forwarding), `service.rs` (server side), `identity.rs`
//! (cluster id), `bootstrap.rs`, `faults.rs` (the test seam), `view.rs`
//! (what `/cluster` and the admin API show).

pub mod bootstrap;
pub mod config;
pub mod faults;
pub mod identity;
pub mod membership;
pub mod network;
pub mod rpc;
pub mod service;
pub mod view;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{bail, Context};
use ledgerq_storage::raft::{
    Member, Origin, Raft, RaftLogStore, RaftLogStoreOptions, ReplicatedLog, ReplicatedLogOptions,
    ReplicatedState, ReplicatedStateOptions, SNAPSHOT_DIR,
};
use ledgerq_storage::{CommitStats, Store, StoreOptions};
use openraft::SnapshotPolicy;
use tokio_util::sync::CancellationToken;

use crate::broker::{recovery, Broker, BrokerOptions, Leadership};
use config::ReplicaConfig;
use faults::LinkFaults;
use identity::ClusterIdentity;
use network::{GrpcForwarder, Network, Peers};

/// The largest gRPC message either side accepts (a batch of entries).
const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// The longest a single forward attempt waits for the leader's answer.
const MAX_FORWARD_ATTEMPT: Duration = Duration::from_secs(2);
/// The largest proposal (one raft entry) the proposer builds.
const MAX_PROPOSAL_BYTES: usize = 1 << 20;

/// HTTP/2 flow-control windows of the raft links. h2's default (64 KiB)
/// would make every append-entries RPC larger than that wait for a window
/// update, one more round trip on the commit path.
pub const HTTP2_STREAM_WINDOW_BYTES: u32 = 8 << 20;
pub const HTTP2_CONNECTION_WINDOW_BYTES: u32 = 16 << 20;

/// openraft's settings from ours, checked (before anything is opened or
/// written, so that bad timing flags leave the data dir untouched).
fn raft_config(tuning: &RaftTuning) -> anyhow::Result<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "ledgerq".into(),
        heartbeat_interval: tuning.heartbeat_interval.as_millis() as u64,
        election_timeout_min: tuning.election_timeout_min.as_millis() as u64,
        election_timeout_max: election_timeout_max(tuning.election_timeout_min).as_millis() as u64,
        install_snapshot_timeout: 5_000,
        // With MAX_PROPOSAL_BYTES, one append-entries RPC carries at most
        // 8 MiB, so it is answered within a heartbeat interval (openraft's
        // timeout for it) even under load; a follower whose appends time out
        // falls behind and, unable to win, disrupts the leader's term.
        max_payload_entries: 8,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_entries),
        max_in_snapshot_log_to_keep: 0,
        ..openraft::Config::default()
    }
    .validate()
    .context("raft settings")?;
    Ok(config)
}

/// The top of the election timeout's random range: a third above its
/// bottom. openraft 0.9 also makes it the leader lease: a follower of a
/// live leader refuses votes for this long after the leader's last message,
/// and starts an election itself only this long plus its own random timeout
/// after it. A failover therefore takes `max + [min, max)` (0.7 to 0.8 s
/// with the default 300 ms), while a follower keeps waiting through more
/// than three missed heartbeats of the default 200 ms.
pub fn election_timeout_max(min: Duration) -> Duration {
    min + min / 3
}

/// Raft timing and log compaction.
#[derive(Debug, Clone)]
pub struct RaftTuning {
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    /// Build a snapshot (and purge the log behind it) every this many
    /// entries.
    pub snapshot_entries: u64,
}

/// A running member: what `/cluster` and the admin endpoints use.
pub struct Replication {
    pub raft: Raft,
    pub config: ReplicaConfig,
    pub peers: Peers,
    pub faults: Arc<LinkFaults>,
    pub fault_injection: bool,
    pub counters: Arc<Counters>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Proposals this node forwarded to the leader and saw committed.
    pub forwarded_proposals: AtomicU64,
    /// Terms this node has seen begin (each is an election).
    pub elections: AtomicU64,
}

/// Counts every term this node sees begin.
async fn count_elections(raft: Raft, counters: Arc<Counters>) {
    let mut metrics = raft.metrics();
    let mut term = metrics.borrow().current_term;
    while metrics.changed().await.is_ok() {
        let now = metrics.borrow().current_term;
        if now > term {
            counters.elections.fetch_add(now - term, Ordering::Relaxed);
            term = now;
        }
    }
}

/// Where a data directory says which mode made it.
pub fn check_mode(data_path: &Path, replicated: bool) -> anyhow::Result<()> {
    let single = data_path.join("CURRENT").exists();
    let raft = data_path.join("raft").exists();
    if replicated && single {
        bail!(
            "data path {} was made by a single-node ledgerq; it cannot be a replica (start it without --replicas, or use an empty data path)",
            data_path.display()
        );
    }
    if !replicated && raft {
        bail!(
            "data path {} was made by a replica-group member; start it with its --node-id and --replicas",
            data_path.display()
        );
    }
    Ok(())
}

pub struct Opened {
    pub broker: Arc<Broker>,
    pub replication: Arc<Replication>,
    pub grpc: crate::grpc::Serving,
}

/// Opens this member's storage, starts raft, the gRPC service, the
/// bootstrap and the broker.
#[allow(clippy::too_many_arguments)]
pub async fn open(
    config: ReplicaConfig,
    tuning: RaftTuning,
    data_path: &Path,
    store_options: StoreOptions,
    broker_options: BrokerOptions,
    announced: Member,
    fault_injection: bool,
    grpc: crate::grpc::Endpoint,
    shutdown: CancellationToken,
) -> anyhow::Result<Opened> {
    let raft_config = raft_config(&tuning)?;
    check_mode(data_path, true)?;
    let member = Member {
        grpc_address: config.replicas[&config.node_id].clone(),
        ..announced
    };
    let durability = store_options.durability;
    // The sync hook (tests) guards the raft log's fsync: that is where a
    // write becomes durable in this mode.
    let sync_hook = store_options.sync_hook.clone();
    let truncate_step = store_options.truncate_step;
    let mut state_options = store_options;
    state_options.path = data_path.join("state");
    state_options.log_is_external = true;
    let store = Arc::new(Store::open(state_options)?);
    let log_store = RaftLogStore::open(RaftLogStoreOptions {
        path: data_path.join("raft"),
        durability,
        sync_hook,
        observer: broker_options.commit.observer.clone(),
    })?;
    let origin = Origin {
        node: config.node_id,
        boot: rand::random::<u64>() | 1,
    };
    let (events, event_stream) = mpsc::channel();
    let stats = Arc::new(CommitStats::default());
    let state = ReplicatedState::open(
        store.clone(),
        ReplicatedStateOptions {
            origin,
            snapshot_dir: data_path.join(SNAPSHOT_DIR),
            truncate_step,
            observer: broker_options.commit.observer.clone(),
        },
        events.clone(),
        stats.clone(),
    )?;
    let now_ms = crate::clock::now_ms();
    let recovered = recovery::recover(
        &store,
        state.state(),
        broker_options.mem_queue_size,
        now_ms,
        true,
    )?;
    let identity = Arc::new(ClusterIdentity::load(
        config.node_id,
        member,
        log_store.clone(),
    )?);
    // The member that initializes a new group makes its cluster id before it
    // serves anything, so no RPC ever finds it without one.
    let initializes = config.node_id == config.initializer() && !log_store.is_initialized()?;
    if initializes && identity.cluster_id().is_empty() {
        let cluster_id = uuid::Uuid::new_v4().to_string();
        identity
            .adopt(&cluster_id)
            .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    }
    let faults = Arc::new(LinkFaults::default());
    let peer_tls = grpc.tls.as_ref().map(crate::grpc_tls::GrpcTls::client);
    let peers = Peers::new(identity.clone(), faults.clone(), peer_tls);
    let network = Network {
        peers: peers.clone(),
    };
    let raft = Raft::new(
        config.node_id,
        Arc::new(raft_config),
        network,
        log_store.clone(),
        state,
    )
    .await
    .context("starting raft")?;
    let counters = Arc::new(Counters::default());
    tokio::spawn(count_elections(raft.clone(), counters.clone()));
    let replication = Arc::new(Replication {
        raft: raft.clone(),
        config: config.clone(),
        peers: peers.clone(),
        faults: faults.clone(),
        fault_injection,
        counters: counters.clone(),
    });
    let service = service::RaftService {
        replication: replication.clone(),
    };
    let server = rpc::pb::raft_server::RaftServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let serving = crate::grpc::serve(grpc, Some(server), shutdown.clone())?;
    tracing::info!(node_id = config.node_id, cluster_id = %identity.cluster_id(), "raft: serving on the gRPC address");
    tokio::spawn(bootstrap::run(
        config.clone(),
        raft.clone(),
        peers.clone(),
        shutdown.clone(),
    ));
    // One forward attempt waits at most this long, so that a proposal sent
    // to a leader that hangs (paused, partitioned) is retried at the next
    // leader within the same --forward-timeout.
    let attempt_timeout = config.forward_timeout.min(MAX_FORWARD_ATTEMPT);
    let forwarder = Arc::new(GrpcForwarder {
        peers: peers.clone(),
        timeout: attempt_timeout,
        counters,
    });
    let log = ReplicatedLog::start(
        raft.clone(),
        origin,
        forwarder,
        events,
        stats,
        ReplicatedLogOptions {
            forward_timeout: config.forward_timeout,
            lazy_interval: broker_options.commit.lazy_interval,
            max_batch_commands: broker_options.commit.max_batch_commands,
            max_batch_bytes: broker_options
                .commit
                .max_batch_bytes
                .min(MAX_PROPOSAL_BYTES),
        },
        tokio::runtime::Handle::current(),
    );
    let broker = Broker::start(
        store,
        Box::new(log),
        event_stream,
        recovered,
        broker_options,
        Leadership::replicated(),
    );
    Ok(Opened {
        broker,
        replication,
        grpc: serving,
    })
}
