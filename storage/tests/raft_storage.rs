//! The replicated log's storage (`storage/src/raft`): openraft's own storage
//! test suite over [`RaftLogStore`] and [`ReplicatedState`], then ledgerq's
//! rules driven through `RaftStateMachine::apply` directly: tickets only for
//! this very process, stale dispatch decisions refused, a Rebuild at our own
//! leader's blank entry, applied state across a restart, snapshot transfer
//! and a snapshot install interrupted by a crash or refused; the raft log's
//! own durability (appends, truncate, purge, vote, cluster id) across
//! reopen; and a single-node openraft over both (appends flushed through
//! the real `LogFlushed` callbacks, which tests cannot build themselves).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ledgerq_storage::log::AppliedEntry;
use ledgerq_storage::raft::NodeId;
use ledgerq_storage::raft::{
    Entry, LogId, Member, Membership, Origin, Proposal, RaftError, RaftLogStore,
    RaftLogStoreOptions, ReplicatedState, ReplicatedStateOptions, StoredMembership, TypeConfig,
    Vote, SNAPSHOT_DIR,
};
use ledgerq_storage::state::DEFAULT_TRUNCATE_STEP;
use ledgerq_storage::{
    ApplyError, Command, CommitStats, Durability, LogEvent, MessageRecord, Outcome, StorageError,
    Store, StoreOptions, Ticket,
};
use openraft::error::{InstallSnapshotError, RPCError, RaftError as OpenraftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{log_id, StoreBuilder, Suite};
use openraft::{EntryPayload, RaftLogReader, RaftSnapshotBuilder};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// This node, in this run of its process.
const ME: Origin = Origin { node: 0, boot: 1 };
/// How long an expected event or a reopen may take.
const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

fn raft_dir(root: &Path) -> PathBuf {
    root.join("raft")
}

fn state_dir(root: &Path) -> PathBuf {
    root.join("state")
}

fn snapshot_dir(root: &Path) -> PathBuf {
    root.join(SNAPSHOT_DIR)
}

/// Runs `open` until it does not fail for RocksDB's lock: a log or store
/// just dropped may hold it for a moment more (the raft log's syncer
/// thread, openraft's state machine task).
fn retry_locked<T>(mut open: impl FnMut() -> Result<T, StorageError>) -> Result<T, StorageError> {
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

fn open_log(root: &Path) -> RaftLogStore {
    retry_locked(|| {
        RaftLogStore::open(RaftLogStoreOptions {
            path: raft_dir(root),
            durability: Durability::Fsync,
            sync_hook: None,
        })
    })
    .expect("open the raft log")
}

type StateParts = (Arc<Store>, ReplicatedState, mpsc::Receiver<LogEvent>);

fn open_state_result(root: &Path, origin: Origin) -> Result<StateParts, StorageError> {
    let store = retry_locked(|| Store::open(StoreOptions::new(state_dir(root))))?;
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

fn open_state(root: &Path, origin: Origin) -> StateParts {
    open_state_result(root, origin).expect("open the replicated state")
}

/// One node's storage: its raft log, its state machine, its event stream.
struct Node {
    log: RaftLogStore,
    sm: ReplicatedState,
    store: Arc<Store>,
    events: mpsc::Receiver<LogEvent>,
}

impl Node {
    fn open(root: &Path, origin: Origin) -> Node {
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
    fn close(self) {
        self.log.shutdown();
        drop(self);
    }

    async fn apply(&mut self, entries: Vec<Entry>) {
        let count = entries.len();
        let replies = self.sm.apply(entries).await.expect("apply");
        assert_eq!(replies.len(), count, "one reply per entry");
    }

    fn next_event(&self) -> LogEvent {
        self.events
            .recv_timeout(DEADLINE)
            .expect("an event before the deadline")
    }

    fn next_applied(&self) -> AppliedEntry {
        match self.next_event() {
            LogEvent::Applied(applied) => applied,
            other => panic!("expected an Applied event, got {other:?}"),
        }
    }

    /// Events are sent before `apply` returns: nothing pending means none.
    fn assert_no_event(&self) {
        match self.events.try_recv() {
            Err(TryRecvError::Empty) => {}
            Ok(event) => panic!("unexpected event {event:?}"),
            Err(TryRecvError::Disconnected) => panic!("event stream closed"),
        }
    }

    fn messages(&self, topic: u64) -> Vec<(u64, MessageRecord)> {
        self.store
            .read_log(topic, 0, 1000)
            .expect("read the topic log")
    }
}

fn entry(term: u64, leader: u64, index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
    Entry {
        log_id: log_id(term, leader, index),
        payload,
    }
}

fn normal(
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

fn blank(term: u64, leader: u64, index: u64) -> Entry {
    entry(term, leader, index, EntryPayload::Blank)
}

fn two_members() -> Membership {
    let nodes = BTreeMap::from([
        (0, Member::new("127.0.0.1:7000")),
        (1, Member::new("127.0.0.1:7001")),
    ]);
    Membership::new(vec![BTreeSet::from([0, 1])], nodes)
}

fn create_topic(name: &str) -> Command {
    Command::CreateTopic { name: name.into() }
}

fn create_channel(topic: u64, name: &str) -> Command {
    Command::CreateChannel {
        topic,
        name: name.into(),
        ephemeral: false,
    }
}

fn publish(topic: u64, bodies: &[&str]) -> Command {
    Command::Publish {
        topic,
        timestamp_ns: 1_700_000_000_000_000_000,
        deliver_at_ms: 0,
        bodies: bodies.iter().map(|b| Bytes::from(b.to_string())).collect(),
    }
}

fn deliver(channel: u64, delivered_up_to: u64) -> Command {
    Command::Deliver {
        channel,
        delivered_up_to,
        redeliveries: vec![],
    }
}

fn finish(channel: u64, offsets: &[u64]) -> Command {
    Command::Finish {
        channel,
        offsets: offsets.to_vec(),
    }
}

async fn read_all(file: &mut tokio::fs::File) -> Vec<u8> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .await
        .expect("read a snapshot file");
    bytes
}

// ---------------------------------------------------------------------------
// 1. openraft's storage test suite
// ---------------------------------------------------------------------------

/// Keeps a suite store's directory and event receiver alive.
type Guard = (TempDir, Mutex<mpsc::Receiver<LogEvent>>);

struct Builder;

impl StoreBuilder<TypeConfig, RaftLogStore, ReplicatedState, Guard> for Builder {
    async fn build(&self) -> Result<(Guard, RaftLogStore, ReplicatedState), RaftError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = open_log(dir.path());
        let (_store, sm, events) = open_state(dir.path(), ME);
        Ok(((dir, Mutex::new(events)), log, sm))
    }
}

type OurSuite = Suite<TypeConfig, RaftLogStore, ReplicatedState, Builder, Guard>;

/// The whole suite, as openraft means it to be run. Its last case,
/// `transfer_snapshot`, replaces the file inside the box that
/// `begin_receiving_snapshot` returned with the leader's snapshot file
/// before calling `install_snapshot` with it.
#[test]
fn openraft_storage_suite() {
    OurSuite::test_all(Builder).expect("openraft's storage suite passes");
}

/// Runs one case of openraft's suite on a fresh store, in a fresh runtime
/// (as `Suite::test_all` does).
fn run_suite_case<F, Fut>(name: &str, case: F)
where
    F: FnOnce(RaftLogStore, ReplicatedState) -> Fut,
    Fut: std::future::Future<Output = Result<(), RaftError>>,
{
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(async {
            let (_guard, log, sm) = Builder.build().await?;
            case(log, sm).await
        })
        .unwrap_or_else(|error| panic!("suite case {name}: {error}"));
}

macro_rules! suite_cases {
    ($($case:ident),* $(,)?) => {
        $(run_suite_case(stringify!($case), OurSuite::$case);)*
    };
}

/// Every case of `Suite::test_store` but `transfer_snapshot` (which hands
/// `install_snapshot` a file other than the one `begin_receiving_snapshot`
/// gave; see `openraft_storage_suite`), one by one, so that a failure
/// names its case.
#[test]
fn openraft_storage_suite_case_by_case() {
    suite_cases!(
        last_membership_in_log_initial,
        last_membership_in_log,
        last_membership_in_log_multi_step,
        get_membership_initial,
        get_membership_from_log_and_empty_sm,
        get_membership_from_empty_log_and_sm,
        get_membership_from_log_le_sm_last_applied,
        get_membership_from_log_gt_sm_last_applied_1,
        get_membership_from_log_gt_sm_last_applied_2,
        get_initial_state_without_init,
        get_initial_state_membership_from_log_and_sm,
        get_initial_state_with_state,
        get_initial_state_last_log_gt_sm,
        get_initial_state_last_log_lt_sm,
        get_initial_state_log_ids,
        get_initial_state_re_apply_committed,
        save_vote,
        get_log_entries,
        limited_get_log_entries,
        try_get_log_entry,
        initial_logs,
        get_log_state,
        get_log_id,
        last_id_in_log,
        last_applied_state,
        purge_logs_upto_0,
        purge_logs_upto_5,
        purge_logs_upto_20,
        delete_logs_since_11,
        delete_logs_since_0,
        append_to_log,
        snapshot_meta,
        apply_single,
        apply_multiple,
    );
}

// ---------------------------------------------------------------------------
// 2. ledgerq's rules of the replicated state machine
// ---------------------------------------------------------------------------

#[tokio::test]
async fn tickets_are_reported_only_to_the_process_that_proposed() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::open(dir.path(), ME);

    let commands = vec![(7, create_topic("t")), (8, publish(1, &["a", "b"]))];
    node.apply(vec![normal((1, 0, 1), ME, 0, commands)]).await;
    let first = node.next_applied();
    assert_eq!(
        first,
        AppliedEntry {
            index: 1,
            command: create_topic("t"),
            outcome: Ok(Outcome::TopicCreated {
                topic: 1,
                created: true
            }),
            ticket: Some(7),
        }
    );
    let second = node.next_applied();
    assert_eq!(
        second,
        AppliedEntry {
            index: 2,
            command: publish(1, &["a", "b"]),
            outcome: Ok(Outcome::Published {
                topic: 1,
                first_offset: 0,
                count: 2,
                handed_over: 0
            }),
            ticket: Some(8),
        }
    );

    // The same node in another run of its process, then another node: the
    // tickets are not ours.
    let restarted = Origin { node: 0, boot: 2 };
    let other_node = Origin { node: 2, boot: 1 };
    let entries = vec![
        normal(
            (1, 0, 2),
            restarted,
            0,
            vec![(7, create_topic("u")), (8, publish(1, &["c"]))],
        ),
        normal(
            (1, 0, 3),
            other_node,
            0,
            vec![(7, create_topic("v")), (8, publish(1, &["d"]))],
        ),
    ];
    node.apply(entries).await;
    let expected = [
        (
            3,
            Outcome::TopicCreated {
                topic: 2,
                created: true,
            },
        ),
        (
            4,
            Outcome::Published {
                topic: 1,
                first_offset: 2,
                count: 1,
                handed_over: 0,
            },
        ),
        (
            5,
            Outcome::TopicCreated {
                topic: 3,
                created: true,
            },
        ),
        (
            6,
            Outcome::Published {
                topic: 1,
                first_offset: 3,
                count: 1,
                handed_over: 0,
            },
        ),
    ];
    for (index, outcome) in expected {
        let applied = node.next_applied();
        assert_eq!(applied.index, index);
        assert_eq!(applied.outcome, Ok(outcome));
        assert_eq!(
            applied.ticket, None,
            "not proposed by this process: {applied:?}"
        );
    }
    node.assert_no_event();

    let (applied, _) = node.sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 0, 3)));
    assert_eq!(node.sm.state().applied_index(), 6);
    let bodies: Vec<Bytes> = node.messages(1).into_iter().map(|(_, m)| m.body).collect();
    assert_eq!(bodies, ["a", "b", "c", "d"].map(Bytes::from));
}

/// Topic 1 with channel 2 and three messages handed over to it, in one
/// entry at index 1 of `term`; the events are consumed.
async fn topic_with_channel(node: &mut Node, term: u64) {
    let commands = vec![
        (1, create_topic("t")),
        (2, create_channel(1, "c")),
        (3, publish(1, &["m0", "m1", "m2"])),
    ];
    node.apply(vec![normal((term, 0, 1), ME, 0, commands)])
        .await;
    assert_eq!(
        node.next_applied().outcome,
        Ok(Outcome::TopicCreated {
            topic: 1,
            created: true
        })
    );
    assert!(matches!(
        node.next_applied().outcome,
        Ok(Outcome::ChannelCreated {
            topic: 1,
            channel: 2,
            created: true,
            ..
        })
    ));
    assert_eq!(
        node.next_applied().outcome,
        Ok(Outcome::Published {
            topic: 1,
            first_offset: 0,
            count: 3,
            handed_over: 3
        })
    );
}

#[tokio::test]
async fn dispatch_decisions_of_another_term_are_refused_but_take_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::open(dir.path(), ME);
    topic_with_channel(&mut node, 4).await;

    // Made by the leader of term 3, committed in an entry of term 4.
    node.apply(vec![normal((4, 0, 2), ME, 3, vec![(10, deliver(2, 2))])])
        .await;
    let stale = node.next_applied();
    assert_eq!(stale.index, 4);
    assert_eq!(stale.ticket, Some(10));
    assert_eq!(
        stale.outcome,
        Err(ApplyError::StaleTerm {
            made_in: 3,
            committed_in: 4
        })
    );
    assert_eq!(node.sm.state().applied_index(), 4);
    assert_eq!(node.sm.state().channel(2).unwrap().meta.delivered_up_to, 0);

    // A stale proposal's other commands apply; only dispatch is refused.
    let mixed = vec![(11, publish(1, &["m3"])), (12, finish(2, &[0]))];
    node.apply(vec![normal((4, 0, 3), ME, 3, mixed)]).await;
    let published = node.next_applied();
    assert_eq!(published.index, 5);
    assert_eq!(
        published.outcome,
        Ok(Outcome::Published {
            topic: 1,
            first_offset: 3,
            count: 1,
            handed_over: 4
        })
    );
    let stale_finish = node.next_applied();
    assert_eq!(stale_finish.index, 6);
    assert_eq!(
        stale_finish.outcome,
        Err(ApplyError::StaleTerm {
            made_in: 3,
            committed_in: 4
        })
    );

    // The same decisions made in term 4 apply.
    let current = vec![(13, deliver(2, 2)), (14, finish(2, &[0]))];
    node.apply(vec![normal((4, 0, 4), ME, 4, current)]).await;
    let delivered = node.next_applied();
    assert_eq!(
        (delivered.index, delivered.outcome),
        (7, Ok(Outcome::Delivered))
    );
    let finished = node.next_applied();
    assert_eq!(
        (finished.index, finished.outcome),
        (
            8,
            Ok(Outcome::Finished {
                channel: 2,
                floor: 1
            })
        )
    );
    node.assert_no_event();
    let channel = &node.sm.state().channel(2).unwrap().meta;
    assert_eq!((channel.delivered_up_to, channel.floor), (2, 1));

    // The refusal holds after a restart too (the index was persisted).
    let before = node.sm.state().clone();
    node.close();
    let node = Node::open(dir.path(), ME);
    assert_eq!(node.sm.state(), &before);
    assert_eq!(node.sm.state().applied_index(), 8);
}

#[tokio::test]
async fn our_leaders_blank_entry_rebuilds_as_of_that_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::open(dir.path(), ME);

    // One apply call: a proposal, our own leader's blank, another proposal.
    let entries = vec![
        normal(
            (1, 1, 1),
            ME,
            0,
            vec![(1, create_topic("t")), (2, publish(1, &["x"]))],
        ),
        blank(2, 0, 2),
        normal((2, 0, 3), ME, 0, vec![(3, publish(1, &["y"]))]),
    ];
    node.apply(entries).await;
    let mut last_applied = 0;
    for _ in 0..2 {
        last_applied = node.next_applied().index;
    }
    assert_eq!(last_applied, 2);
    match node.next_event() {
        LogEvent::Rebuild { state, leader_term } => {
            assert_eq!(leader_term, Some(2));
            assert_eq!(state.applied_index(), last_applied);
            let topic = state.topic(1).expect("the topic of the entry before");
            assert_eq!(topic.meta.next_offset, 1, "as of the blank, not after");
        }
        other => panic!("expected a Rebuild, got {other:?}"),
    }
    assert_eq!(node.next_applied().index, 3);
    node.assert_no_event();

    // Another leader's blank entry: nothing to rebuild here.
    node.apply(vec![blank(3, 1, 4)]).await;
    node.assert_no_event();
    let (applied, _) = node.sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(3, 1, 4)));
}

#[tokio::test]
async fn applied_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::open(dir.path(), ME);
    assert_eq!(
        node.sm.applied_state().await.unwrap(),
        (None, StoredMembership::default())
    );

    let entries = vec![
        entry(1, 0, 1, EntryPayload::Membership(two_members())),
        normal(
            (1, 0, 2),
            ME,
            0,
            vec![(1, create_topic("t")), (2, publish(1, &["a"]))],
        ),
        blank(2, 1, 3),
    ];
    node.apply(entries).await;
    let expected = (
        Some(log_id(2, 1, 3)),
        StoredMembership::new(Some(log_id(1, 0, 1)), two_members()),
    );
    assert_eq!(node.sm.applied_state().await.unwrap(), expected);
    let state = node.sm.state().clone();
    node.close();

    let mut node = Node::open(dir.path(), ME);
    assert_eq!(node.sm.applied_state().await.unwrap(), expected);
    assert_eq!(node.sm.applied(), Some(log_id(2, 1, 3)));
    assert_eq!(node.sm.state(), &state);
    assert_eq!(node.sm.state().applied_index(), 2);
    assert_eq!(node.messages(1).len(), 1);
    node.assert_no_event();

    // Applying goes on from there.
    node.apply(vec![normal(
        (2, 1, 4),
        ME,
        0,
        vec![(3, publish(1, &["b"]))],
    )])
    .await;
    let applied = node.next_applied();
    assert_eq!(applied.index, 3);
    assert_eq!(
        applied.outcome,
        Ok(Outcome::Published {
            topic: 1,
            first_offset: 1,
            count: 1,
            handed_over: 0
        })
    );
}

/// Node A with a membership, a topic, a channel and messages, and a
/// snapshot of it, built: (A, the snapshot's meta, its bytes).
async fn leader_with_snapshot(root: &Path) -> (Node, ledgerq_storage::raft::SnapshotMeta, Vec<u8>) {
    let mut a = Node::open(root, ME);
    let entries = vec![
        entry(1, 0, 1, EntryPayload::Membership(two_members())),
        normal(
            (1, 0, 2),
            ME,
            0,
            vec![
                (1, create_topic("t")),
                (2, create_channel(1, "c")),
                (3, publish(1, &["m0", "m1"])),
            ],
        ),
        normal(
            (1, 0, 3),
            ME,
            1,
            vec![(4, deliver(2, 1)), (5, publish(1, &["m2", "m3", "m4"]))],
        ),
        normal((1, 0, 4), ME, 1, vec![(6, finish(2, &[0]))]),
    ];
    a.apply(entries).await;
    while a.events.try_recv().is_ok() {}

    let mut snapshot =
        a.sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build a snapshot");
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 0, 4)));
    assert_eq!(
        snapshot.meta.last_membership,
        StoredMembership::new(Some(log_id(1, 0, 1)), two_members())
    );
    let bytes = read_all(&mut snapshot.snapshot).await;
    assert!(!bytes.is_empty(), "a snapshot archive has content");
    (a, snapshot.meta, bytes)
}

/// Streams A's current snapshot into B as openraft does: begin receiving,
/// write the bytes into the file handed out, install with that file.
async fn transfer_snapshot(a: &mut Node, b: &mut Node) -> ledgerq_storage::raft::SnapshotMeta {
    let current =
        a.sm.get_current_snapshot()
            .await
            .unwrap()
            .expect("A has a current snapshot");
    let mut source = current.snapshot;
    let mut received =
        b.sm.begin_receiving_snapshot()
            .await
            .expect("begin receiving");
    let copied = tokio::io::copy(&mut *source, &mut *received)
        .await
        .expect("copy the snapshot");
    assert!(copied > 0);
    received.flush().await.unwrap();
    received.shutdown().await.unwrap();
    b.sm.install_snapshot(&current.meta, received)
        .await
        .expect("install the snapshot");
    current.meta
}

#[tokio::test]
async fn a_snapshot_moves_the_whole_state_to_another_node() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let (mut a, built, built_bytes) = leader_with_snapshot(a_dir.path()).await;

    let mut b = Node::open(b_dir.path(), Origin { node: 1, boot: 1 });
    assert!(b.sm.get_current_snapshot().await.unwrap().is_none());
    let meta = transfer_snapshot(&mut a, &mut b).await;
    assert_eq!(meta, built);

    assert_eq!(
        b.sm.applied_state().await.unwrap(),
        (meta.last_log_id, meta.last_membership.clone())
    );
    assert_eq!(b.messages(1), a.messages(1));
    assert_eq!(b.messages(1).len(), 5);
    assert_eq!(b.sm.state(), a.sm.state());
    match b.next_event() {
        LogEvent::Rebuild { state, leader_term } => {
            assert_eq!(leader_term, None);
            assert_eq!(&*state, a.sm.state());
            assert_eq!(state.applied_index(), 6);
        }
        other => panic!("expected a Rebuild, got {other:?}"),
    }
    b.assert_no_event();

    let mut current =
        b.sm.get_current_snapshot()
            .await
            .unwrap()
            .expect("B keeps the installed snapshot");
    assert_eq!(current.meta, meta);
    assert_eq!(read_all(&mut current.snapshot).await, built_bytes);

    // B applies what follows the snapshot, numbering commands on from it.
    b.apply(vec![normal(
        (2, 1, 5),
        ME,
        0,
        vec![(9, publish(1, &["m5"]))],
    )])
    .await;
    let applied = b.next_applied();
    assert_eq!(applied.index, 7);
    assert_eq!(applied.ticket, None, "proposed by node 0, not by B");
    assert_eq!(
        applied.outcome,
        Ok(Outcome::Published {
            topic: 1,
            first_offset: 5,
            count: 1,
            handed_over: 6
        })
    );
}

#[tokio::test]
async fn an_install_interrupted_by_a_crash_is_redone_at_start() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let (mut a, _, _) = leader_with_snapshot(a_dir.path()).await;
    let b_origin = Origin { node: 1, boot: 1 };
    let mut b = Node::open(b_dir.path(), b_origin);
    let meta = transfer_snapshot(&mut a, &mut b).await;
    let snapshot_state = b.sm.state().clone();
    let snapshot_messages = b.messages(1);

    // B goes on past the snapshot, then "crashes" with the marker present,
    // as if the install were still copying.
    let more = vec![(1, publish(1, &["late"])), (2, create_topic("x"))];
    b.apply(vec![normal((2, 1, 5), b_origin, 0, more)]).await;
    assert_ne!(b.sm.state(), &snapshot_state);
    assert_ne!(b.messages(1), snapshot_messages);
    b.close();
    let marker = snapshot_dir(b_dir.path()).join("INSTALLING");
    std::fs::write(&marker, b"").unwrap();

    let mut b = Node::open(b_dir.path(), b_origin);
    assert!(
        !marker.exists(),
        "the marker is removed once the install is redone"
    );
    assert_eq!(b.sm.state(), &snapshot_state);
    assert_eq!(b.sm.state().topic_id("x"), None);
    assert_eq!(b.messages(1), snapshot_messages);
    assert_eq!(
        b.sm.applied_state().await.unwrap(),
        (meta.last_log_id, meta.last_membership.clone())
    );
    let current =
        b.sm.get_current_snapshot()
            .await
            .unwrap()
            .expect("still current");
    assert_eq!(current.meta, meta);
}

// ---------------------------------------------------------------------------
// 3. The raft log store
// ---------------------------------------------------------------------------

async fn log_state(log: &mut RaftLogStore) -> (Option<LogId>, Option<LogId>) {
    let state = log.get_log_state().await.unwrap();
    (state.last_purged_log_id, state.last_log_id)
}

async fn indexes(log: &mut RaftLogStore) -> Vec<u64> {
    let entries = log.try_get_log_entries(0..u64::MAX).await.unwrap();
    entries.iter().map(|e| e.log_id.index).collect()
}

fn reopen_log(log: RaftLogStore, root: &Path) -> RaftLogStore {
    log.shutdown();
    drop(log);
    open_log(root)
}

#[tokio::test]
async fn the_raft_log_keeps_entries_votes_truncations_and_purges() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open_log(dir.path());
    assert!(!log.is_initialized().unwrap(), "a fresh log");
    assert_eq!(log_state(&mut log).await, (None, None));
    assert_eq!(log.read_vote().await.unwrap(), None);

    // Entries 0..=10 and a vote, through the suite's own append (which
    // waits for the flush callback).
    OurSuite::feed_10_logs_vote_self(&mut log).await.unwrap();
    assert!(log.is_initialized().unwrap());
    assert_eq!(indexes(&mut log).await, (0..=10).collect::<Vec<_>>());
    log.save_committed(Some(log_id(1, 0, 7))).await.unwrap();

    let mut log = reopen_log(log, dir.path());
    assert_eq!(indexes(&mut log).await, (0..=10).collect::<Vec<_>>());
    assert_eq!(log_state(&mut log).await, (None, Some(log_id(1, 0, 10))));
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(1, 0)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 0, 7)));
    let entries = log.try_get_log_entries(3..5).await.unwrap();
    assert_eq!(
        entries.iter().map(|e| e.log_id).collect::<Vec<_>>(),
        vec![log_id(1, 0, 3), log_id(1, 0, 4)]
    );
    assert!(matches!(entries[0].payload, EntryPayload::Blank));

    // A committed vote replaces the vote, durably.
    log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();

    log.truncate(log_id(1, 0, 6)).await.unwrap();
    assert_eq!(indexes(&mut log).await, (0..=5).collect::<Vec<_>>());
    let mut log = reopen_log(log, dir.path());
    assert_eq!(indexes(&mut log).await, (0..=5).collect::<Vec<_>>());
    assert_eq!(log_state(&mut log).await, (None, Some(log_id(1, 0, 5))));
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(Vote::new_committed(2, 1))
    );

    log.purge(log_id(1, 0, 3)).await.unwrap();
    let mut log = reopen_log(log, dir.path());
    assert_eq!(indexes(&mut log).await, vec![4, 5]);
    assert_eq!(
        log_state(&mut log).await,
        (Some(log_id(1, 0, 3)), Some(log_id(1, 0, 5)))
    );

    // Everything purged: the last log id is the purged one.
    log.purge(log_id(1, 0, 5)).await.unwrap();
    let mut log = reopen_log(log, dir.path());
    assert_eq!(indexes(&mut log).await, Vec::<u64>::new());
    assert_eq!(
        log_state(&mut log).await,
        (Some(log_id(1, 0, 5)), Some(log_id(1, 0, 5)))
    );
    assert!(log.is_initialized().unwrap());
}

#[tokio::test]
async fn a_vote_alone_initializes_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open_log(dir.path());
    assert!(!log.is_initialized().unwrap());
    log.save_vote(&Vote::new(1, 0)).await.unwrap();
    assert!(log.is_initialized().unwrap());
    let mut log = reopen_log(log, dir.path());
    assert!(log.is_initialized().unwrap());
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(1, 0)));
    assert_eq!(log_state(&mut log).await, (None, None));
}

#[tokio::test]
async fn a_log_belongs_to_one_cluster_for_life() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    assert_eq!(log.cluster_id().unwrap(), None);
    log.set_cluster_id("cluster-a").unwrap();
    log.set_cluster_id("cluster-a")
        .expect("the same id again is fine");
    assert!(log.set_cluster_id("cluster-b").is_err());
    assert_eq!(log.cluster_id().unwrap().as_deref(), Some("cluster-a"));

    let log = reopen_log(log, dir.path());
    assert_eq!(log.cluster_id().unwrap().as_deref(), Some("cluster-a"));
    log.set_cluster_id("cluster-a").unwrap();
    assert!(log.set_cluster_id("cluster-b").is_err());
}

/// What a received snapshot that cannot be installed must leave behind:
/// the install fails, nothing else changes, and the node still starts.
#[tokio::test]
async fn a_snapshot_that_cannot_be_installed_changes_nothing() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let (mut a, _, _) = leader_with_snapshot(a_dir.path()).await;
    let b_origin = Origin { node: 1, boot: 1 };
    let mut b = Node::open(b_dir.path(), b_origin);
    let good = transfer_snapshot(&mut a, &mut b).await;
    let state = b.sm.state().clone();

    // A later snapshot whose bytes are not an archive (a truncated or
    // garbled stream).
    let mut bad = good.clone();
    bad.last_log_id = Some(log_id(2, 0, 9));
    bad.snapshot_id = "2-9-garbled".into();
    let mut received = b.sm.begin_receiving_snapshot().await.unwrap();
    received.write_all(b"not a tar archive").await.unwrap();
    received.flush().await.unwrap();
    assert!(b.sm.install_snapshot(&bad, received).await.is_err());

    assert_eq!(b.sm.state(), &state);
    assert_eq!(b.sm.applied(), good.last_log_id);

    // Restart: the node must come up as it was, with its good snapshot.
    b.close();
    let (_store, mut sm, _events) = open_state_result(b_dir.path(), b_origin)
        .expect("the node starts again after a failed install");
    assert_eq!(sm.state(), &state);
    assert_eq!(sm.applied(), good.last_log_id);
    let current = sm.get_current_snapshot().await.unwrap().map(|s| s.meta);
    assert_eq!(
        current.map(|m| m.snapshot_id),
        Some(good.snapshot_id),
        "a snapshot that failed to install must not be offered to others"
    );
}

// ---------------------------------------------------------------------------
// 4. A single-node openraft over both: real appends, real flush callbacks
// ---------------------------------------------------------------------------

/// A network for a group of one: there is never anybody to call.
struct NoNetwork;

fn no_peer<E: std::error::Error>() -> RPCError<NodeId, Member, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(
        "a group of one has no peers",
    )))
}

impl RaftNetworkFactory<TypeConfig> for NoNetwork {
    type Network = NoNetwork;

    async fn new_client(&mut self, _target: NodeId, _node: &Member) -> NoNetwork {
        NoNetwork
    }
}

impl RaftNetwork<TypeConfig> for NoNetwork {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, OpenraftError<NodeId>>>
    {
        Err(no_peer())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, OpenraftError<NodeId, InstallSnapshotError>>,
    > {
        Err(no_peer())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, OpenraftError<NodeId>>> {
        Err(no_peer())
    }
}

/// Entries appended by openraft itself (so flushed through our syncer's
/// callbacks) are committed and applied, and both the log and the applied
/// state hold them after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_one_commits_through_our_storage_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let (store, sm, events) = open_state(dir.path(), ME);
    let config = openraft::Config {
        cluster_name: "raft-storage-test".into(),
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        ..Default::default()
    };
    let config = Arc::new(config.validate().unwrap());
    let raft = openraft::Raft::new(0, config, NoNetwork, log.clone(), sm)
        .await
        .expect("start raft");
    let members = BTreeMap::from([(0, Member::new("127.0.0.1:7000"))]);
    raft.initialize(members).await.expect("initialize");
    raft.wait(Some(DEADLINE))
        .current_leader(0, "node 0 leads its group of one")
        .await
        .expect("a leader");

    let proposal = Proposal {
        origin: ME,
        dispatch_term: 0,
        commands: vec![(1, create_topic("t")), (2, publish(1, &["a", "b"]))],
    };
    let written = raft
        .client_write(proposal.clone())
        .await
        .expect("committed")
        .log_id;

    // Our leader's blank entry, then our commands with their tickets.
    let term = written.leader_id.term;
    let mut rebuilt = false;
    let mut tickets = Vec::new();
    while tickets.len() < 2 {
        match events.recv_timeout(DEADLINE).expect("an event") {
            LogEvent::Rebuild { leader_term, .. } => {
                assert_eq!(leader_term, Some(term));
                rebuilt = true;
            }
            LogEvent::Applied(applied) => {
                assert!(rebuilt, "the leader's blank entry comes first");
                assert!(applied.outcome.is_ok(), "{applied:?}");
                tickets.push(applied.ticket);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(tickets, vec![Some(1), Some(2)]);
    let mut reader = log.clone();
    let stored = reader
        .try_get_log_entries(written.index..=written.index)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].log_id, written);

    raft.shutdown().await.expect("raft stops");
    drop(raft);
    log.shutdown();
    drop((log, reader, store, events));

    let mut log = open_log(dir.path());
    let entries = log.try_get_log_entries(0..u64::MAX).await.unwrap();
    let last = entries.last().expect("entries survive");
    assert_eq!(last.log_id, written);
    match &last.payload {
        EntryPayload::Normal(stored) => assert_eq!(stored, &proposal),
        other => panic!("expected the proposal, got {other:?}"),
    }
    assert!(matches!(entries[0].payload, EntryPayload::Membership(_)));
    let vote = log.read_vote().await.unwrap().expect("a vote");
    assert_eq!(vote.leader_id.term, term);
    assert_eq!(vote.leader_id.node_id, 0);
    let (_store, sm, _events) = open_state(dir.path(), ME);
    assert_eq!(sm.applied(), Some(written));
    assert_eq!(sm.state().applied_index(), 2);
    assert_eq!(sm.state().topic_id("t"), Some(1));
}
