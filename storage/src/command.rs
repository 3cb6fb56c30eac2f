//! Commands: every durable state change, as a value.
//!
//! Applying the same sequence of commands to the same state gives the same
//! state on any node ([`crate::StateMachine::apply`]). Wall-clock time appears
//! only as a value inside a command (`timestamp_ns`, `deliver_at_ms`), never
//! read while applying. Offsets and ids are assigned by the apply itself, in
//! command order, so they too are a function of the sequence.

use bytes::Bytes;

pub use crate::dedup::Dedup;

/// A topic's id: assigned at creation, never reused.
pub type TopicId = u64;
/// A channel's id: assigned at creation, never reused.
pub type ChannelId = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Creates the topic if no topic has this name.
    CreateTopic {
        name: String,
    },
    /// Deletes the topic, its channels and its whole log.
    DeleteTopic {
        topic: TopicId,
    },
    SetTopicPaused {
        topic: TopicId,
        paused: bool,
    },
    /// Drops the messages waiting in the topic itself (nsqd's
    /// `/topic/empty`): those at or above the hand-over point, which no
    /// channel has seen. Their offsets are taken back and reused by later
    /// publishes; the channels keep what they hold.
    EmptyTopic {
        topic: TopicId,
    },
    /// Creates the channel if the topic has none of this name. The first
    /// channel of a topic starts at the backlog; later ones at the head.
    CreateChannel {
        topic: TopicId,
        name: String,
        ephemeral: bool,
    },
    DeleteChannel {
        channel: ChannelId,
    },
    SetChannelPaused {
        channel: ChannelId,
        paused: bool,
    },
    /// Drops everything the channel holds (nsqd's `/channel/empty`): its
    /// floor and delivery cursor jump to the topic's hand-over point and its
    /// cursor records go; later messages flow as before.
    EmptyChannel {
        channel: ChannelId,
    },
    /// Appends messages to the topic's log, atomically. With `dedup`, a
    /// key still in the topic's window makes it a duplicate that stores
    /// nothing (`crate::dedup`); `timestamp_ns` is then also "now".
    Publish {
        topic: TopicId,
        timestamp_ns: i64,
        /// 0, or not before this time (ms since the epoch).
        deliver_at_ms: u64,
        bodies: Vec<Bytes>,
        dedup: Option<Dedup>,
    },
    /// Records deliveries: every offset below `delivered_up_to` that was
    /// handed out for the first time, and explicit attempt counts for
    /// redeliveries (and first deliveries of deferred messages).
    Deliver {
        channel: ChannelId,
        delivered_up_to: u64,
        redeliveries: Vec<(u64, u16)>,
    },
    /// Marks offsets finished; the ack floor advances over finished runs.
    Finish {
        channel: ChannelId,
        offsets: Vec<u64>,
    },
    /// Puts a message back, not to be delivered before `deliver_at_ms`.
    Requeue {
        channel: ChannelId,
        offset: u64,
        attempts: u16,
        deliver_at_ms: u64,
    },
}

impl Command {
    /// Approximate bytes this command adds to a batch (for batch limits).
    pub fn weight_bytes(&self) -> usize {
        match self {
            Command::Publish { bodies, dedup, .. } => {
                let key = dedup.as_ref().map_or(0, |d| d.key.len() + 16);
                key + bodies.iter().map(|b| b.len() + 32).sum::<usize>()
            }
            Command::Deliver { redeliveries, .. } => 32 + redeliveries.len() * 32,
            Command::Finish { offsets, .. } => 32 + offsets.len() * 32,
            _ => 64,
        }
    }
}

/// How soon a command must reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// Somebody waits for it: commit with the next batch, no added wait.
    Now,
    /// May wait up to the committer's lazy interval to share a batch
    /// (FIN, REQ: a crash in that window only causes a redelivery).
    Lazy,
}

/// What applying a command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    TopicCreated {
        topic: TopicId,
        created: bool,
    },
    TopicDeleted {
        topic: TopicId,
    },
    TopicPaused {
        topic: TopicId,
        paused: bool,
        handed_over: u64,
    },
    TopicEmptied {
        topic: TopicId,
        /// The head of the log after the drop (the hand-over point).
        next_offset: u64,
        log_start: u64,
    },
    ChannelCreated {
        topic: TopicId,
        channel: ChannelId,
        created: bool,
        floor: u64,
        handed_over: u64,
    },
    ChannelDeleted {
        topic: TopicId,
        channel: ChannelId,
    },
    ChannelPaused {
        channel: ChannelId,
        paused: bool,
    },
    ChannelEmptied {
        channel: ChannelId,
        /// The new floor: everything below it is gone for this channel.
        floor: u64,
    },
    Published {
        topic: TopicId,
        first_offset: u64,
        count: u64,
        handed_over: u64,
    },
    /// A publish whose idempotency key was in the window: nothing was
    /// stored; these are what the first publish with the key stored.
    Duplicate {
        topic: TopicId,
        first_offset: u64,
        count: u64,
    },
    Delivered,
    Finished {
        channel: ChannelId,
        floor: u64,
    },
    Requeued,
}
