//! ledgerq's storage engine.
//!
//! One append-only log per topic, channels as cursors over it, and a single
//! deterministic apply path ([`StateMachine::apply`]) that turns every durable
//! state change (a [`Command`]) into RocksDB writes. Commands enter through
//! the [`CommandLog`] seam (`log.rs`) and come out, applied and durable, on
//! its ordered stream of [`LogEvent`]s. The single-node log is the
//! [`GroupCommitter`]: it gathers commands from every producer into one
//! `WriteBatch` and one WAL fsync, and only then reports them.
//!
//! This crate knows nothing of sockets or of the NSQ protocol: it speaks of
//! topics, channels, offsets and message records.

pub mod command;
pub mod dedup;
pub mod encoding;
pub mod error;
pub mod group_commit;
pub mod keys;
pub mod log;
pub mod pb;
pub mod persist;
mod proposals;
pub mod raft;
pub mod record;
pub mod state;
pub mod store;

pub use command::{ChannelId, Command, Outcome, TopicId, Urgency};
pub use dedup::{Dedup, DedupEvictions, DedupWindow, MAX_KEY_BYTES};
pub use error::{ApplyError, CommitError, StorageError};
pub use group_commit::{CommitOptions, GroupCommitter};
pub use log::{
    AppliedEntry, BatchReport, CommandLog, CommitObserver, CommitStats, LogEvent, LogEvents, Ticket,
};
pub use persist::{StoredState, WriteSink};
pub use record::{ChannelMeta, CursorRecord, MessageRecord, TopicMeta};
pub use state::{ChannelState, StateMachine, TopicState};
pub use store::{CommitTimings, Durability, Store, StoreOptions, SyncGate, SyncHook};

/// Opens (or creates) the data directory and rebuilds the state machine
/// from it; the invariants are checked before anything is served.
pub fn open(options: StoreOptions) -> Result<(Store, StateMachine), StorageError> {
    let truncate_step = options.truncate_step;
    let store = Store::open(options)?;
    let state = StateMachine::recover(truncate_step, store.load_state()?);
    state.check_invariants();
    Ok((store, state))
}
