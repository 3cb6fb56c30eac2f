//! The broker: topics, channels and clients behind one lock, kept in step
//! with the durable state by one ordered stream of applied entries.
//!
//! How a durable change happens, in every mode:
//! 1. a request (PUB, SUB, an admin call, a dispatch recording deliveries)
//!    proposes a [`Command`] to the node's [`CommandLog`] with a fresh
//!    ticket, and registers a waiter for it (`waiters.rs`);
//! 2. the log makes it durable and applies it to the state machine;
//! 3. the applier thread (`apply.rs`) reads the log's events in order,
//!    updates topics and channels from each applied entry, and only then
//!    answers the entry's waiter: the proposer's `OK` follows both the
//!    fsync and the in-memory change.
//!
//! Files by concept: `admin.rs` (create, pause, empty, delete),
//! `publish.rs`, `clients.rs` (connections, SUB, RDY, FIN, REQ, TOUCH),
//! `dispatch.rs` (handing messages to clients, timers, store reads),
//! `inspect.rs` (peeks and `/message`, read without changing anything),
//! `recovery.rs`, `stats.rs`; `topic.rs`, `channel.rs`, `client.rs`,
//! `message.rs` are the nouns.
//!
//! Lock discipline: the state lock is never held while waiting or reading
//! the store. Proposing under it is allowed (it only queues). Store reads
//! happen on the reader thread, outside the lock (`dispatch.rs`).

mod admin;
pub use admin::{AdminAction, AdminTarget};
mod apply;
pub mod channel;
pub mod client;
mod clients;
mod dispatch;
pub mod inspect;
pub mod latency;
pub mod message;
mod publish;
pub mod recovery;
mod state;
pub mod stats;
pub mod topic;
mod waiters;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock, Weak};

use ledgerq_storage::{
    ApplyError, Command, CommandLog, CommitError, CommitOptions, GroupCommitter, LogEvents,
    StorageError, Store, StoreOptions, Urgency,
};
use tokio::sync::watch;

use crate::clock;
use dispatch::ReadJob;
use latency::LatencySettings;
pub use publish::PublishTicket;
pub(crate) use state::BrokerState;
pub use state::Leadership;
use waiters::{Waiter, Waiters};

/// Settings of the broker core (the NSQ flags of the same names).
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Messages per topic kept in memory (`--mem-queue-size`).
    pub mem_queue_size: usize,
    pub msg_timeout_ms: u64,
    pub max_msg_timeout_ms: u64,
    pub max_req_timeout_ms: u64,
    /// End-to-end latency quantiles for `/stats` (off when empty).
    pub e2e_latency: LatencySettings,
    pub commit: CommitOptions,
    /// How long a publish's idempotency key is remembered
    /// (`--dedup-window`); 0 turns de-duplication off.
    pub dedup_window_ms: u64,
    /// At most this many keys in the window, all topics together
    /// (`--dedup-max-keys`).
    pub dedup_max_keys: u64,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            mem_queue_size: 10_000,
            msg_timeout_ms: 60_000,
            max_msg_timeout_ms: 900_000,
            max_req_timeout_ms: 3_600_000,
            e2e_latency: LatencySettings {
                quantiles: Vec::new(),
                window_ms: 600_000,
            },
            commit: CommitOptions::default(),
            dedup_window_ms: 120_000,
            dedup_max_keys: 100_000,
        }
    }
}

/// Why the broker did not do what was asked. The protocol and HTTP layers
/// turn these into nsqd's error texts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The node is shutting down.
    #[error("exiting")]
    Exiting,
    /// Storage failed (now or earlier): nothing was written.
    #[error("{0}")]
    Storage(String),
    #[error("{0}")]
    Rejected(String),
    #[error("topic not found")]
    TopicNotFound,
    #[error("channel not found")]
    ChannelNotFound,
    /// The topic or channel was deleted while a SUB was creating it.
    #[error("deleted while subscribing")]
    DeletedWhileSubscribing,
    /// Redundancy mode: no leader committed the write in time.
    #[error("no leader")]
    NoLeader,
    /// The channel has `--max-channel-consumers` clients already.
    #[error("channel has {limit} consumers already")]
    TooManyConsumers { limit: usize },
}

impl From<CommitError> for BrokerError {
    fn from(error: CommitError) -> Self {
        match error {
            CommitError::Closed => BrokerError::Exiting,
            CommitError::Storage(e) => BrokerError::Storage(e.to_string()),
            CommitError::Rejected(e) => e.into(),
            CommitError::NoLeader | CommitError::NotLeader => BrokerError::NoLeader,
        }
    }
}

impl From<ApplyError> for BrokerError {
    fn from(error: ApplyError) -> Self {
        match error {
            ApplyError::UnknownTopic => BrokerError::TopicNotFound,
            ApplyError::UnknownChannel => BrokerError::ChannelNotFound,
            other => BrokerError::Rejected(other.to_string()),
        }
    }
}

/// Which topics exist, each with its channels (both sorted).
pub type Topology = BTreeMap<String, BTreeSet<String>>;

/// Tells a new topic which channels exist for it elsewhere in the cluster.
pub trait ChannelDirectory: Send + Sync {
    /// The channel names known for `topic` (empty when none or unreachable).
    fn channels<'a>(
        &'a self,
        topic: &'a str,
    ) -> Pin<Box<dyn Future<Output = Vec<String>> + Send + 'a>>;
}

pub struct Broker {
    state: Mutex<BrokerState>,
    /// Not owned: the directory (the lookupd peers) holds the broker.
    channel_directory: OnceLock<Weak<dyn ChannelDirectory>>,
    store: Arc<Store>,
    log: Box<dyn CommandLog>,
    waiters: Waiters,
    /// Store reads for dispatch, done on the reader thread.
    reads: mpsc::Sender<ReadJob>,
    options: BrokerOptions,
    exiting: AtomicBool,
}

impl Broker {
    /// Opens the data directory, recovers every topic and channel, and
    /// starts the single-node command log (the group committer).
    pub fn open(
        store_options: StoreOptions,
        options: BrokerOptions,
    ) -> Result<Arc<Broker>, StorageError> {
        let (store, state) = ledgerq_storage::open(store_options)?;
        let store = Arc::new(store);
        let recovered = recovery::recover(
            &store,
            &state,
            options.mem_queue_size,
            clock::now_ms(),
            false,
        )?;
        let (log, events) = GroupCommitter::start(store.clone(), state, options.commit.clone());
        Ok(Broker::start(
            store,
            Box::new(log),
            events,
            recovered,
            options,
            Leadership::single_node(),
        ))
    }

    /// Starts a broker over any command log: the applier thread reads
    /// `events` (the log's stream), the reader thread serves store reads.
    /// `leadership` says when it may dispatch: always (single node), or
    /// only while it leads its replica group.
    pub fn start(
        store: Arc<Store>,
        log: Box<dyn CommandLog>,
        events: LogEvents,
        recovered: recovery::Recovered,
        options: BrokerOptions,
        leadership: Leadership,
    ) -> Arc<Broker> {
        let (reads, read_jobs) = mpsc::channel();
        let broker = Arc::new(Broker {
            state: Mutex::new(BrokerState::new(recovered.topics, leadership)),
            store,
            log,
            waiters: Waiters::default(),
            reads,
            options,
            channel_directory: OnceLock::new(),
            exiting: AtomicBool::new(false),
        });
        apply::spawn_applier(Arc::downgrade(&broker), events);
        dispatch::spawn_reader(Arc::downgrade(&broker), read_jobs);
        for channel in recovered.stale_ephemeral_channels {
            broker.propose_detached(Command::DeleteChannel { channel }, Urgency::Now);
        }
        broker
    }

    pub fn options(&self) -> &BrokerOptions {
        &self.options
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The command log: its health and counters.
    pub fn log(&self) -> &dyn CommandLog {
        &*self.log
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, BrokerState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a topic of this name exists (durable or ephemeral).
    pub fn has_topic(&self, name: &str) -> bool {
        self.lock().topic(name).is_some()
    }

    /// Every topic and its channels, durable and ephemeral.
    pub fn topology(&self) -> Topology {
        let state = self.lock();
        state
            .topics()
            .map(|topic| {
                let channels = topic.channels().map(|c| c.name().to_owned()).collect();
                (topic.name().to_owned(), channels)
            })
            .collect()
    }

    /// Changes whenever [`Broker::topology`] may have changed.
    pub fn watch_topology(&self) -> watch::Receiver<u64> {
        self.lock().subscribe_topology()
    }

    /// Connected TCP clients.
    pub fn client_count(&self) -> usize {
        self.lock().clients.len()
    }

    pub fn is_exiting(&self) -> bool {
        self.exiting.load(Ordering::SeqCst)
    }

    /// Stops accepting writes, commits what is queued and stops the log;
    /// the applier answers the last entries as they come.
    pub fn shutdown(&self) {
        self.exiting.store(true, Ordering::SeqCst);
        self.log.shutdown();
    }

    /// Proposes a command and waits until it is applied here (durable, and
    /// the topics and channels updated), or refused.
    async fn propose_and_wait(
        &self,
        command: Command,
    ) -> Result<ledgerq_storage::Outcome, BrokerError> {
        let (waiter, answer) = Waiter::reply();
        self.propose(command, Urgency::Now, waiter);
        answer.await.map_err(|_| BrokerError::Exiting)?
    }

    /// Proposes a command whose answer `waiter` takes.
    fn propose(&self, command: Command, urgency: Urgency, waiter: Waiter) {
        let ticket = self.waiters.register(waiter);
        self.log.propose(command, urgency, ticket);
    }

    /// Proposes a command nobody waits for (a refusal is logged).
    fn propose_detached(&self, command: Command, urgency: Urgency) {
        self.log
            .propose(command, urgency, self.waiters.detached_ticket());
    }
}

#[cfg(test)]
mod tests;
