//! The reads of an inspection: single messages (the cache's copy when the
//! plan found one, else the store's) and the unread range of a channel or
//! topic. [`Unread::of`] runs under the broker lock and only clones the
//! cached part; [`Unread::walk`] and [`Source::message`] run outside it and
//! read the store, in offset order, before the cached part.

use std::sync::Arc;

use ledgerq_storage::{StorageError, Store};

use super::super::message::Message;
use super::super::topic::Topic;

/// Where the messages of a topic are read from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Source {
    topic_id: u64,
    durable: bool,
}

impl Source {
    pub(super) fn of(topic: &Topic) -> Self {
        Source {
            topic_id: topic.id(),
            durable: !topic.is_ephemeral(),
        }
    }

    /// The message at `offset`: `cached`, else from the store (durable).
    pub(super) fn message(
        &self,
        store: &Store,
        offset: u64,
        cached: Option<Arc<Message>>,
    ) -> Result<Option<Arc<Message>>, StorageError> {
        if cached.is_some() || !self.durable {
            return Ok(cached);
        }
        let record = store.read_message(self.topic_id, offset)?;
        Ok(record.map(|r| Arc::new(Message::from_record(self.topic_id, offset, r))))
    }

    /// Up to `limit` stored messages in `[from, below)`, in order.
    fn range(
        &self,
        store: &Store,
        from: u64,
        below: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Message>>, StorageError> {
        if !self.durable || from >= below || limit == 0 {
            return Ok(Vec::new());
        }
        let topic = self.topic_id;
        Ok(store
            .read_log(topic, from, limit)?
            .into_iter()
            .take_while(|(offset, _)| *offset < below)
            .map(|(offset, record)| Arc::new(Message::from_record(topic, offset, record)))
            .collect())
    }
}

/// Unread offsets `[from, below)`: those at or above `cache_base` are in
/// `cached` (in order); below it they are in the store, if anywhere.
pub(super) struct Unread {
    from: u64,
    cache_base: u64,
    cached: Vec<Arc<Message>>,
}

impl Unread {
    pub(super) fn of(topic: &Topic, from: u64, below: u64) -> Self {
        let cache_base = topic.cache().base().clamp(from, below);
        let cached = (cache_base..below)
            .map_while(|offset| topic.cache().get(offset).cloned())
            .collect();
        Unread {
            from,
            cache_base,
            cached,
        }
    }

    /// Walks the unread messages in order until `visit` says stop, reading
    /// the store part in chunks of `chunk` entries.
    pub(super) fn walk(
        &self,
        source: Source,
        store: &Store,
        chunk: usize,
        mut visit: impl FnMut(&Message) -> bool,
    ) -> Result<(), StorageError> {
        let mut next = self.from;
        while next < self.cache_base {
            let messages = source.range(store, next, self.cache_base, chunk.max(1))?;
            let Some(last) = messages.last() else {
                break;
            };
            next = last.offset + 1;
            for message in &messages {
                if !visit(message) {
                    return Ok(());
                }
            }
        }
        for message in &self.cached {
            if !visit(message) {
                return Ok(());
            }
        }
        Ok(())
    }
}
