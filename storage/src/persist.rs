//! The seam between the state machine and the store, in both directions.
//!
//! [`WriteSink`]: what applying a command writes (the [`Store`]'s batch
//! implements it; tests may record into a plain list). [`StoredState`]: what
//! the store reads back at open, from which the state machine is rebuilt.
//! Neither `state.rs` nor `store.rs` imports the other; both import this.
//!
//! [`Store`]: crate::Store

use bytes::Bytes;

use crate::command::{ChannelId, TopicId};
use crate::dedup::{DedupEntry, DedupEvictions};
use crate::record::{ChannelMeta, CursorRecord, TopicMeta};

/// Log entries are deleted in steps of at least this many offsets, so that
/// range tombstones stay few.
pub const DEFAULT_TRUNCATE_STEP: u64 = 65_536;

/// Where [`StateMachine::apply`](crate::StateMachine::apply) puts its writes.
/// Keys are laid out by [`crate::keys`]; each method names its column family.
pub trait WriteSink {
    fn put_meta(&mut self, key: &[u8], value: &[u8]);
    fn delete_meta(&mut self, key: &[u8]);
    fn put_log(&mut self, key: &[u8], value: &[u8]);
    /// Deletes the keys in `[from, to)`.
    fn delete_log_range(&mut self, from: &[u8], to: &[u8]);
    fn put_cursor(&mut self, key: &[u8], value: &[u8]);
    fn delete_cursor(&mut self, key: &[u8]);
    /// Deletes the keys in `[from, to)`.
    fn delete_cursor_range(&mut self, from: &[u8], to: &[u8]);
}

/// Everything durable except the logs themselves: the input of
/// [`StateMachine::recover`](crate::StateMachine::recover).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredState {
    /// The next topic or channel id to hand out (ids are never reused).
    pub next_id: u64,
    /// How many commands have been applied (0 for a new store).
    pub applied_index: u64,
    pub topics: Vec<(TopicId, TopicMeta)>,
    pub channels: Vec<(ChannelId, ChannelMeta)>,
    /// `(channel, offset, record)`: the sparse cursor records.
    pub records: Vec<(ChannelId, u64, CursorRecord)>,
    /// `(topic, key, entry)`: the publish de-duplication window.
    pub dedup: Vec<(TopicId, Bytes, DedupEntry)>,
    pub dedup_evictions: DedupEvictions,
}
