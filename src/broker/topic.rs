//! A topic as the broker serves it: the committed head of its log, how far
//! it has handed messages to its channels, a bounded cache of its most
//! recent messages, and its channels.
//!
//! A durable topic's log lives in the store; the cache only saves reads. An
//! `#ephemeral` topic has no log: the cache is all there is, and what falls
//! out of it is dropped (NSQ's memory-only rule).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use ledgerq_storage::TopicMeta;

use super::channel::Channel;
use super::message::Message;

/// The most recent messages of a topic, by offset, contiguous.
#[derive(Debug)]
pub struct MessageCache {
    base: u64,
    messages: VecDeque<Arc<Message>>,
    capacity: usize,
}

impl MessageCache {
    pub fn new(base: u64, capacity: usize) -> Self {
        MessageCache {
            base,
            messages: VecDeque::new(),
            capacity,
        }
    }

    /// Appends the message at the end offset; evicts the oldest past capacity.
    pub fn push(&mut self, message: Arc<Message>) {
        assert_eq!(
            message.offset,
            self.end(),
            "cache offsets must be contiguous"
        );
        if self.capacity == 0 {
            self.base += 1;
            return;
        }
        self.messages.push_back(message);
        if self.messages.len() > self.capacity {
            self.messages.pop_front();
            self.base += 1;
        }
    }

    pub fn get(&self, offset: u64) -> Option<&Arc<Message>> {
        let index = offset.checked_sub(self.base)?;
        self.messages.get(usize::try_from(index).ok()?)
    }

    /// The lowest offset the cache holds (or would hold).
    pub fn base(&self) -> u64 {
        self.base
    }

    /// One past the highest offset.
    pub fn end(&self) -> u64 {
        self.base + self.messages.len() as u64
    }

    /// Forgets the messages at or above `end`; the next push is at `end`.
    pub fn truncate(&mut self, end: u64) {
        if end <= self.base {
            self.messages.clear();
            self.base = end;
        } else if let Ok(keep) = usize::try_from(end - self.base) {
            self.messages.truncate(keep);
        }
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

/// What a topic lends one of its channels while it dispatches.
pub struct TopicView<'a> {
    pub topic_id: u64,
    pub handed_over: u64,
    pub log_start: u64,
    pub cache: &'a MessageCache,
    /// Whether the log is on disk (what the cache lacks can be read back).
    pub durable: bool,
}

#[derive(Debug)]
pub struct Topic {
    /// Storage id (durable) or a node-local id (ephemeral).
    id: u64,
    name: String,
    ephemeral: bool,
    paused: bool,
    /// One past the last committed (durable) or accepted (ephemeral) offset.
    next_offset: u64,
    /// Offsets below this are visible to channels.
    handed_over: u64,
    /// The lowest offset that can still be read.
    log_start: u64,
    cache: MessageCache,
    channels: BTreeMap<String, Channel>,
    message_count: u64,
    message_bytes: u64,
}

impl Topic {
    pub fn new(
        id: u64,
        name: String,
        ephemeral: bool,
        next_offset: u64,
        cache_capacity: usize,
    ) -> Self {
        Topic {
            id,
            name,
            ephemeral,
            paused: false,
            next_offset,
            handed_over: next_offset,
            log_start: next_offset,
            cache: MessageCache::new(next_offset, cache_capacity),
            channels: BTreeMap::new(),
            message_count: 0,
            message_bytes: 0,
        }
    }

    /// A durable topic as the store recorded it (no channels yet).
    pub fn recovered(id: u64, meta: &TopicMeta, cache_capacity: usize) -> Self {
        let mut topic = Topic::new(
            id,
            meta.name.clone(),
            false,
            meta.next_offset,
            cache_capacity,
        );
        topic.paused = meta.paused;
        topic.handed_over = meta.handed_over;
        topic.log_start = meta.log_start;
        topic
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn handed_over(&self) -> u64 {
        self.handed_over
    }

    pub fn message_count(&self) -> u64 {
        self.message_count
    }

    /// Keeps the "since start" counters of `old` (this topic before a
    /// rebuild) and of its channels: a rebuild is not a restart.
    pub fn keep_counters_of(&mut self, old: &mut Topic) {
        self.message_count = old.message_count;
        self.message_bytes = old.message_bytes;
        for channel in self.channels_mut() {
            if let Some(before) = old.channel_by_id_mut(channel.id()) {
                channel.keep_counters_of(before);
            }
        }
    }

    pub fn message_bytes(&self) -> u64 {
        self.message_bytes
    }

    /// Messages waiting in the topic itself (not yet handed to channels).
    pub fn depth(&self) -> u64 {
        self.next_offset - self.handed_over.max(self.log_start).min(self.next_offset)
    }

    /// Unread messages in `[from, handed_over)` still in the cache whose
    /// delivery time is after `now_ms` (for `/stats`).
    pub fn cached_deferred(&self, from: u64, now_ms: u64) -> u64 {
        (from.max(self.log_start)..self.handed_over)
            .filter_map(|offset| self.cache.get(offset))
            .filter(|message| message.deliver_at_ms > now_ms)
            .count() as u64
    }

    /// Unread messages of a channel whose cursor is `read_cursor`.
    pub fn unread(&self, read_cursor: u64) -> u64 {
        self.handed_over
            .saturating_sub(read_cursor.max(self.log_start))
    }

    pub fn channels(&self) -> impl Iterator<Item = &Channel> {
        self.channels.values()
    }

    pub fn channels_mut(&mut self) -> impl Iterator<Item = &mut Channel> {
        self.channels.values_mut()
    }

    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.get(name)
    }

    pub fn channel_mut(&mut self, name: &str) -> Option<&mut Channel> {
        self.channels.get_mut(name)
    }

    pub fn channel_by_id_mut(&mut self, id: u64) -> Option<&mut Channel> {
        self.channels.values_mut().find(|c| c.id() == id)
    }

    pub fn has_channel(&self, name: &str) -> bool {
        self.channels.contains_key(name)
    }

    pub fn has_channels(&self) -> bool {
        !self.channels.is_empty()
    }

    /// Adds a channel unless one of its name exists. A memory-only topic
    /// hands the new channel what arrives from now on (a durable topic's
    /// hand-over point comes from the state machine, see
    /// [`Topic::set_handed_over`]).
    pub fn add_channel(&mut self, channel: Channel) -> &mut Channel {
        if self.ephemeral && !self.paused {
            self.handed_over = self.next_offset;
        }
        self.channels
            .entry(channel.name().to_owned())
            .or_insert(channel)
    }

    pub fn remove_channel(&mut self, name: &str) -> Option<Channel> {
        self.channels.remove(name)
    }

    /// The channel and what it may read of this topic, borrowed together.
    pub fn channel_and_view(&mut self, id: u64) -> Option<(&mut Channel, TopicView<'_>)> {
        let view = TopicView {
            topic_id: self.id,
            handed_over: self.handed_over,
            log_start: self.log_start,
            cache: &self.cache,
            durable: !self.ephemeral,
        };
        let channel = self.channels.values_mut().find(|c| c.id() == id)?;
        Some((channel, view))
    }

    /// Pauses or resumes hand-over; `handed_over` is the new hand-over point
    /// (the state machine's for a durable topic).
    pub fn set_paused(&mut self, paused: bool, handed_over: u64) {
        self.paused = paused;
        self.set_handed_over(handed_over);
    }

    /// Where a memory-only topic's hand-over point goes when it is resumed.
    pub fn resumed_hand_over(&self) -> u64 {
        if self.channels.is_empty() {
            self.handed_over
        } else {
            self.next_offset
        }
    }

    /// Moves the hand-over point; it never goes back and never passes the head.
    pub fn set_handed_over(&mut self, handed_over: u64) {
        assert!(handed_over <= self.next_offset, "hand-over past head");
        debug_assert!(handed_over >= self.handed_over, "hand-over went back");
        self.handed_over = handed_over;
    }

    /// nsqd's `/topic/empty`: drops the messages waiting in the topic (at
    /// or above `next_offset`, none handed over); the next message published
    /// gets `next_offset`.
    pub fn drop_waiting(&mut self, next_offset: u64, log_start: u64) {
        self.next_offset = self.next_offset.min(next_offset);
        self.handed_over = self.handed_over.min(self.next_offset);
        self.log_start = log_start.min(self.next_offset);
        self.cache.truncate(self.next_offset);
    }

    /// What `/topic/empty` leaves of a memory-only topic: `(next_offset, log_start)`.
    pub fn emptied_in_memory(&self) -> (u64, u64) {
        (self.handed_over, self.log_start)
    }

    /// Adds committed (durable) or accepted (memory-only) messages; their
    /// offsets must continue the log without a hole.
    pub fn append(&mut self, messages: Vec<Arc<Message>>) {
        for message in messages {
            assert_eq!(
                message.offset, self.next_offset,
                "offsets strictly increasing, no hole"
            );
            self.message_count += 1;
            self.message_bytes += message.body.len() as u64;
            self.next_offset += 1;
            self.cache.push(message);
        }
        if self.ephemeral {
            self.log_start = self.log_start.max(self.cache.base());
            if !self.paused && !self.channels.is_empty() {
                self.handed_over = self.next_offset;
            }
        }
    }

    /// The offset the next accepted message gets (memory-only topics).
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// The lowest offset that can still be read.
    pub fn log_start(&self) -> u64 {
        self.log_start
    }

    /// The most recent messages, held in memory.
    pub fn cache(&self) -> &MessageCache {
        &self.cache
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(offset: u64) -> Arc<Message> {
        Arc::new(Message::new(1, offset, 0, 0, Bytes::from_static(b"x")))
    }

    #[test]
    fn cache_is_bounded_and_contiguous() {
        let mut cache = MessageCache::new(5, 2);
        for offset in 5..9 {
            cache.push(message(offset));
        }
        assert_eq!((cache.base(), cache.end(), cache.len()), (7, 9, 2));
        assert!(cache.get(6).is_none());
        assert_eq!(cache.get(8).unwrap().offset, 8);
    }

    #[test]
    fn truncated_cache_continues_at_the_new_end() {
        let mut cache = MessageCache::new(0, 3);
        for offset in 0..5 {
            cache.push(message(offset));
        }
        cache.truncate(4);
        assert_eq!((cache.base(), cache.end()), (2, 4));
        cache.truncate(1);
        assert_eq!((cache.base(), cache.end()), (1, 1));
        cache.push(message(1));
        assert_eq!(cache.get(1).unwrap().offset, 1);
    }

    #[test]
    #[should_panic(expected = "contiguous")]
    fn cache_refuses_a_hole() {
        let mut cache = MessageCache::new(0, 4);
        cache.push(message(1));
    }
}
