//! ledgerq's storage engine.
//!
//! One append-only log per topic, channels as cursors over it, and a single
//! deterministic apply path ([`StateMachine::apply`]) that turns every durable
//! state change (a [`Command`]) into RocksDB writes. The [`GroupCommitter`]
//! gathers commands from every producer into one `WriteBatch` and one WAL
//! fsync, and only then reports them done.
//!
//! This crate knows nothing of sockets or of the NSQ protocol: it speaks of
//! topics, channels, offsets and message records.

pub mod command;
pub mod error;
pub mod group_commit;
pub mod keys;
pub mod record;
pub mod state;
pub mod store;

pub use command::{ChannelId, Command, Outcome, TopicId, Urgency};
pub use error::{ApplyError, CommitError, StorageError};
pub use group_commit::{
    BatchReport, CommitObserver, CommitOptions, CommitStats, Completion, GroupCommitter,
};
pub use record::{ChannelMeta, CursorRecord, MessageRecord, TopicMeta};
pub use state::{ChannelState, StateMachine, TopicState};
pub use store::{CommitTimings, Durability, Store, StoreOptions, SyncGate, SyncHook};
