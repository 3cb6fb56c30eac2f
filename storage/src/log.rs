//! The command log: the one seam through which a command becomes durable
//! and applied, whatever the mode.
//!
//! A proposer hands a [`Command`] to a [`CommandLog`] together with a
//! [`Ticket`] of its own choosing, and does not wait inside the log. The log
//! orders the command among all others (this node's, or the whole replica
//! group's), makes it durable, applies it with
//! [`StateMachine::apply`](crate::StateMachine::apply), and reports it on the
//! node's one ordered stream of [`LogEvent`]s:
//!
//! - [`LogEvent::Applied`]: the applied index, the command and its outcome,
//!   in apply order, on every node, with the ticket when the command was
//!   proposed on this node;
//! - [`LogEvent::Refused`]: a ticket whose command will not be applied
//!   (storage failed, the log shut down, no leader in time);
//! - redundancy mode only: [`LogEvent::Rebuild`] and [`LogEvent::Leadership`],
//!   which tell the broker when it may dispatch (only the leader does).
//!
//! Every ticket is answered on the stream; a proposer waits for its answer
//! (the broker keeps the waiters), not for a callback run inside the log.
//! Implementations: [`GroupCommitter`](crate::GroupCommitter) (single node:
//! one WAL fsync per batch) and [`ReplicatedLog`](crate::raft::ReplicatedLog)
//! (redundancy mode: one raft entry per batch, committed on a majority). The stream is the only way the broker learns of
//! durable changes, so a node whose commands arrive from elsewhere (a
//! follower) is kept up to date by the same code as the node that proposed.

use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc};

use crate::command::{Command, Outcome, Urgency};
use crate::error::{ApplyError, CommitError, StorageError};
use crate::state::StateMachine;
use crate::store::CommitTimings;

/// A proposer's own tag for a command, handed back with its answer.
pub type Ticket = u64;

/// One applied command, as every node's broker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedEntry {
    /// The state machine's applied index after this command: 1 for the
    /// first command ever applied, then one more per command.
    pub index: u64,
    pub command: Command,
    /// What [`StateMachine::apply`](crate::StateMachine::apply) answered;
    /// a refused command changed nothing but still took an index.
    pub outcome: Result<Outcome, ApplyError>,
    /// Set when the command was proposed on this node.
    pub ticket: Option<Ticket>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    Applied(AppliedEntry),
    /// The command of `ticket` will not be applied.
    Refused {
        ticket: Ticket,
        error: CommitError,
    },
    /// Redundancy mode: from this point of the stream the durable state is
    /// `state`; rebuild topics and channels from it (the recovery path),
    /// then go on with the entries that follow. Sent when this node's own
    /// first entry of a term was applied (`leader_term`: every entry of
    /// earlier terms is applied, so this node may lead from here), and when
    /// a snapshot replaced the state (`leader_term: None`).
    Rebuild {
        state: Box<StateMachine>,
        leader_term: Option<u64>,
    },
    /// Redundancy mode: whether this node is the group's leader, in `term`.
    /// Only a leader dispatches, and only once it has seen the
    /// [`LogEvent::Rebuild`] of that same term.
    Leadership {
        term: u64,
        leading: bool,
    },
}

/// The receiving end of a log's event stream (one per log).
pub type LogEvents = mpsc::Receiver<LogEvent>;

/// Orders, persists and applies commands; see the module doc.
pub trait CommandLog: Send + Sync {
    /// Queues `command`; its answer arrives on the event stream with `ticket`.
    fn propose(&self, command: Command, urgency: Urgency, ticket: Ticket);

    /// The write or fsync failure that stopped all writes on this node.
    fn failure(&self) -> Option<StorageError>;

    /// Counters of the durable batches this node wrote.
    fn stats(&self) -> &Arc<CommitStats>;

    /// Answers everything proposed so far (applied, or refused), then stops;
    /// later proposals are refused with [`CommitError::Closed`].
    fn shutdown(&self);
}

/// What one durable batch cost, as told to a [`CommitObserver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchReport {
    pub commands: usize,
    /// The size of the RocksDB write batch (what went into the WAL).
    pub size_bytes: u64,
    pub timings: CommitTimings,
    /// [`StateMachine::applied_index`](crate::StateMachine::applied_index)
    /// after the batch.
    pub applied_index: u64,
}

/// Told about every batch that became durable, on the writing thread,
/// before the batch's events are sent, and about every fsync of the log
/// that makes commands durable. Must be quick and must not block.
pub trait CommitObserver: Send + Sync {
    fn batch_committed(&self, report: &BatchReport);
    /// One fsync of the log: the group committer's WAL (once per batch), or
    /// in redundancy mode the raft log's (once per round of the syncer).
    fn log_synced(&self, duration: std::time::Duration);
}

/// Counters of a log's durable batches, readable from any thread.
#[derive(Debug, Default)]
pub struct CommitStats {
    pub batches_total: AtomicU64,
    pub commands_total: AtomicU64,
    pub bytes_total: AtomicU64,
    /// [`StateMachine::applied_index`](crate::StateMachine::applied_index)
    /// after the last durable batch.
    pub applied_index: AtomicU64,
    /// Keys in the publish de-duplication window after the last batch.
    pub dedup_keys: AtomicU64,
    /// Keys evicted from the window since the store was created: expired,
    /// and pushed out by the count limit.
    pub dedup_evicted_expired: AtomicU64,
    pub dedup_evicted_over_limit: AtomicU64,
}

impl CommitStats {
    /// Copies the de-duplication window's size and eviction counts.
    pub fn record_dedup(&self, window: &crate::dedup::DedupWindow) {
        use std::sync::atomic::Ordering::Relaxed;
        let evictions = window.evictions();
        self.dedup_keys.store(window.len() as u64, Relaxed);
        self.dedup_evicted_expired.store(evictions.expired, Relaxed);
        self.dedup_evicted_over_limit
            .store(evictions.over_limit, Relaxed);
    }
}

/// Locks a command log's own mutex. Its critical sections only put or
/// take a whole value (a sender, a handle, a failure), so a panic elsewhere
/// cannot leave what it guards half-changed: a poisoned lock is taken as is.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
