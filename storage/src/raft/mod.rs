//! The replicated command log's storage: openraft's log and state machine
//! on RocksDB (redundancy mode; `docs/replication.md`).
//!
//! - [`TypeConfig`]: the openraft types of a ledgerq replica group. An
//!   entry's payload is a [`Proposal`]: commands from one node, in order.
//! - `log_store.rs`: [`RaftLogStore`], openraft's `RaftLogStorage` in its own
//!   RocksDB (`<data-dir>/raft`): entries, vote, committed and purged ids,
//!   the cluster id. A vote, a truncation and a purge are fsynced before
//!   the call returns; appends are written at once and reported flushed
//!   only after their WAL fsync.
//! - `log_tail.rs`: [`LogTail`](log_tail::LogTail), the log's newest
//!   entries kept decoded in memory for replication and apply.
//! - `state_machine.rs`: [`ReplicatedState`], openraft's `RaftStateMachine`:
//!   the very [`StateMachine::apply`](crate::StateMachine::apply) of single-node mode over
//!   the state [`Store`](crate::Store) (`<data-dir>/state`), reporting on the
//!   same [`LogEvent`](crate::LogEvent) stream.
//! - `snapshot.rs`: a snapshot is a RocksDB checkpoint of the state store,
//!   archived into one file; installing one copies it into the live store.
//! - `convert.rs`: openraft's types to and from `proto/ledgerq/raft.proto`,
//!   the one encoding of entries, votes and memberships on disk and on the
//!   wire.
//!
//! Nothing here knows of sockets: the network lives in the server crate.

mod convert;
mod log_store;
mod log_tail;
mod replicated_log;
mod snapshot;
mod snapshot_data;
mod state_machine;

use std::fmt;

use crate::command::Command;
use crate::log::Ticket;

pub use convert::{
    entry_from_pb, entry_to_pb, log_id_from_pb, log_id_to_pb, membership_from_pb, membership_to_pb,
    proposal_from_pb, proposal_to_pb, snapshot_meta_from_pb, snapshot_meta_to_pb, vote_from_pb,
    vote_to_pb, ConvertError,
};
pub use log_store::{RaftLogStore, RaftLogStoreOptions};
pub use replicated_log::{
    ForwardError, ForwardFuture, Forwarder, ReplicatedLog, ReplicatedLogOptions,
};
pub use snapshot::SNAPSHOT_DIR;
pub use snapshot_data::{CheckpointTar, SnapshotData};
pub use state_machine::{ReplicatedState, ReplicatedStateOptions};

/// A member's id in its replica group (`--node-id`).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The openraft types of a ledgerq replica group.
    pub TypeConfig:
        D = Proposal,
        R = (),
        NodeId = NodeId,
        Node = Member,
        SnapshotData = SnapshotData,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Membership = openraft::Membership<NodeId, Member>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type Raft = openraft::Raft<TypeConfig>;
pub type RaftError = openraft::StorageError<NodeId>;

/// Where a member of the group is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    /// Raft RPCs and the admin API.
    pub grpc_address: String,
    /// NSQ TCP and HTTP, as the member announced them (empty until known).
    pub tcp_address: String,
    pub http_address: String,
}

impl Member {
    pub fn new(grpc_address: impl Into<String>) -> Self {
        Member {
            grpc_address: grpc_address.into(),
            ..Member::default()
        }
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.grpc_address)
    }
}

/// Who proposed an entry: a node, and which run of its process (tickets
/// are only meaningful to the process that made them; a restarted node
/// replaying its old entries must not take their tickets for its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Origin {
    pub node: NodeId,
    pub boot: u64,
}

/// The payload of a normal entry: commands from one node, applied in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proposal {
    pub origin: Origin,
    /// The term in which the origin led and dispatched, when the proposal
    /// holds Deliver, Finish or Requeue commands (0 otherwise). They are
    /// applied only if the entry was written in that same term: a deposed
    /// leader's dispatch decisions never take effect under a new leader.
    pub dispatch_term: u64,
    pub commands: Vec<(Ticket, Command)>,
}

impl Proposal {
    /// Bytes of command payload (for batch limits).
    pub fn weight_bytes(&self) -> usize {
        self.commands.iter().map(|(_, c)| c.weight_bytes()).sum()
    }
}

/// Whether a command records a dispatch decision (who got what, when),
/// which only the leader of the term that made it may commit.
pub fn is_dispatch_command(command: &Command) -> bool {
    matches!(
        command,
        Command::Deliver { .. } | Command::Finish { .. } | Command::Requeue { .. }
    )
}
