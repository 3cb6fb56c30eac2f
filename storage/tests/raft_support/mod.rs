//! Fixtures shared by the raft storage tests: a node's storage on a temp
//! dir (raft log, state machine, event stream), entries and commands.

#![allow(dead_code, unused_imports)]

pub use std::collections::{BTreeMap, BTreeSet};
pub use std::path::{Path, PathBuf};
pub use std::sync::mpsc::{self, TryRecvError};
pub use std::sync::{Arc, Mutex};
pub use std::time::{Duration, Instant};

pub use bytes::Bytes;
pub use ledgerq_storage::log::AppliedEntry;
pub use ledgerq_storage::raft::NodeId;
pub use ledgerq_storage::raft::{
    Entry, LogId, Member, Membership, Origin, Proposal, RaftError, RaftLogStore,
    RaftLogStoreOptions, ReplicatedState, ReplicatedStateOptions, StoredMembership, TypeConfig,
    Vote, SNAPSHOT_DIR,
};
pub use ledgerq_storage::state::DEFAULT_TRUNCATE_STEP;
pub use ledgerq_storage::{
    ApplyError, Command, CommitStats, Durability, LogEvent, MessageRecord, Outcome, StorageError,
    Store, StoreOptions, Ticket,
};
pub use openraft::error::{
    InstallSnapshotError, RPCError, RaftError as OpenraftError, Unreachable,
};
pub use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
pub use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
pub use openraft::storage::{RaftLogStorage, RaftStateMachine};
pub use openraft::testing::{log_id, StoreBuilder, Suite};
pub use openraft::{EntryPayload, RaftLogReader, RaftSnapshotBuilder};
pub use tempfile::TempDir;
pub use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// This node, in this run of its process.
pub const ME: Origin = Origin { node: 0, boot: 1 };
/// How long an expected event or a reopen may take.
pub const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

pub fn raft_dir(root: &Path) -> PathBuf {
    root.join("raft")
}

pub fn state_dir(root: &Path) -> PathBuf {
    root.join("state")
}

pub fn snapshot_dir(root: &Path) -> PathBuf {
    root.join(SNAPSHOT_DIR)
}

/// Runs `open` until it does not fail for RocksDB's lock: a log or store
/// just dropped may hold it for a moment more (the raft log's syncer
/// thread, openraft's state machine task).
pub fn retry_locked<T>(
    mut open: impl FnMut() -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    let started = Instant::now();
    loop {
        match open() {
            Err(error) if started.elapsed() < DEADLINE && error.to_string().contains("lock") => {
                std::thread::sleep(Duration::from_millis(5));
            }
            result => return result,
        }
    }
}

pub fn open_log(root: &Path) -> RaftLogStore {
    retry_locked(|| {
        RaftLogStore::open(RaftLogStoreOptions {
            path: raft_dir(root),
            durability: Durability::Fsync,
            sync_hook: None,
            observer: None,
        })
    })
    .expect("open the raft log")
}

pub type StateParts = (Arc<Store>, ReplicatedState, mpsc::Receiver<LogEvent>);

pub fn open_state_result(root: &Path, origin: Origin) -> Result<StateParts, StorageError> {
    let store = retry_locked(|| {
        let mut options = StoreOptions::new(state_dir(root));
        options.log_is_external = true;
        Store::open(options)
    })?;
    let store = Arc::new(store);
    let (events, receiver) = mpsc::channel();
    let options = ReplicatedStateOptions {
        origin,
        snapshot_dir: snapshot_dir(root),
        truncate_step: DEFAULT_TRUNCATE_STEP,
        observer: None,
    };
    let stats = Arc::new(CommitStats::default());
    let sm = ReplicatedState::open(store.clone(), options, events, stats)?;
    Ok((store, sm, receiver))
}

pub fn open_state(root: &Path, origin: Origin) -> StateParts {
    open_state_result(root, origin).expect("open the replicated state")
}

/// One node's storage: its raft log, its state machine, its event stream.
pub struct Node {
    pub log: RaftLogStore,
    pub sm: ReplicatedState,
    pub store: Arc<Store>,
    pub events: mpsc::Receiver<LogEvent>,
}

impl Node {
    pub fn open(root: &Path, origin: Origin) -> Node {
        let log = open_log(root);
        let (store, sm, events) = open_state(root, origin);
        Node {
            log,
            sm,
            store,
            events,
        }
    }

    /// Closes everything this node holds (as a process exit would).
    pub fn close(self) {
        self.log.shutdown();
        drop(self);
    }

    pub async fn apply(&mut self, entries: Vec<Entry>) {
        let count = entries.len();
        let replies = self.sm.apply(entries).await.expect("apply");
        assert_eq!(replies.len(), count, "one reply per entry");
    }

    pub fn next_event(&self) -> LogEvent {
        self.events
            .recv_timeout(DEADLINE)
            .expect("an event before the deadline")
    }

    pub fn next_applied(&self) -> AppliedEntry {
        match self.next_event() {
            LogEvent::Applied(applied) => applied,
            other => panic!("expected an Applied event, got {other:?}"),
        }
    }

    /// Events are sent before `apply` returns: nothing pending means none.
    pub fn assert_no_event(&self) {
        match self.events.try_recv() {
            Err(TryRecvError::Empty) => {}
            Ok(event) => panic!("unexpected event {event:?}"),
            Err(TryRecvError::Disconnected) => panic!("event stream closed"),
        }
    }

    pub fn messages(&self, topic: u64) -> Vec<(u64, MessageRecord)> {
        self.store
            .read_log(topic, 0, 1000)
            .expect("read the topic log")
    }
}

pub fn entry(term: u64, leader: u64, index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
    Entry {
        log_id: log_id(term, leader, index),
        payload,
    }
}

pub fn normal(
    (term, leader, index): (u64, u64, u64),
    origin: Origin,
    dispatch_term: u64,
    commands: Vec<(Ticket, Command)>,
) -> Entry {
    let proposal = Proposal {
        origin,
        dispatch_term,
        commands,
    };
    entry(term, leader, index, EntryPayload::Normal(proposal))
}

pub fn blank(term: u64, leader: u64, index: u64) -> Entry {
    entry(term, leader, index, EntryPayload::Blank)
}

pub fn two_members() -> Membership {
    let nodes = BTreeMap::from([
        (0, Member::new("127.0.0.1:7000")),
        (1, Member::new("127.0.0.1:7001")),
    ]);
    Membership::new(vec![BTreeSet::from([0, 1])], nodes)
}

pub fn create_topic(name: &str) -> Command {
    Command::CreateTopic { name: name.into() }
}

pub fn create_channel(topic: u64, name: &str) -> Command {
    Command::CreateChannel {
        topic,
        name: name.into(),
        ephemeral: false,
    }
}

pub fn publish(topic: u64, bodies: &[&str]) -> Command {
    Command::Publish {
        topic,
        timestamp_ns: 1_700_000_000_000_000_000,
        deliver_at_ms: 0,
        bodies: bodies.iter().map(|b| Bytes::from(b.to_string())).collect(),
        dedup: None,
    }
}

/// A publish with an idempotency key (a 2-minute window).
pub fn publish_keyed(topic: u64, bodies: &[&str], key: &'static str) -> Command {
    let Command::Publish {
        topic,
        timestamp_ns,
        deliver_at_ms,
        bodies,
        ..
    } = publish(topic, bodies)
    else {
        unreachable!()
    };
    Command::Publish {
        topic,
        timestamp_ns,
        deliver_at_ms,
        bodies,
        dedup: Some(ledgerq_storage::Dedup {
            key: Bytes::from_static(key.as_bytes()),
            window_ms: 120_000,
            max_keys: 100,
        }),
    }
}

pub fn deliver(channel: u64, delivered_up_to: u64) -> Command {
    Command::Deliver {
        channel,
        delivered_up_to,
        redeliveries: vec![],
    }
}

pub fn finish(channel: u64, offsets: &[u64]) -> Command {
    Command::Finish {
        channel,
        offsets: offsets.to_vec(),
    }
}

pub async fn read_all(file: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .await
        .expect("read a snapshot file");
    bytes
}
