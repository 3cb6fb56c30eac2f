//! A topic as the broker serves it: the committed head of its log, how far
//! it has handed messages to its channels, a bounded cache of its most
//! recent messages, and its channels.
//!
//! A durable topic's log lives in the store; the cache only saves reads. An
//! `#ephemeral` topic has no log: the cache is all there is, and what falls
//! out of it is dropped (NSQ's memory-only rule).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

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

#[derive(Debug)]
pub struct Topic {
    /// Storage id (durable) or a node-local id (ephemeral).
    pub id: u64,
    pub name: String,
    pub ephemeral: bool,
    pub paused: bool,
    /// One past the last committed (durable) or accepted (ephemeral) offset.
    pub next_offset: u64,
    /// Offsets below this are visible to channels.
    pub handed_over: u64,
    /// The lowest offset that can still be read.
    pub log_start: u64,
    pub cache: MessageCache,
    pub channels: BTreeMap<String, Channel>,
    pub message_count: u64,
    pub message_bytes: u64,
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

    /// Messages waiting in the topic itself (not yet handed to channels).
    pub fn depth(&self) -> u64 {
        self.next_offset - self.handed_over.max(self.log_start).min(self.next_offset)
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

    /// Adds committed (or, for ephemeral topics, accepted) messages.
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
