//! openraft's own storage test suite over [`RaftLogStore`] and
//! [`ReplicatedState`], and the raft log's durability (appends, truncate,
//! purge, vote, cluster id) across reopen, plus a single-node openraft over
//! both (appends flushed through the real `LogFlushed` callbacks).

mod raft_support;

use raft_support::*;

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
