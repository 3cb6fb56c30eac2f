//! The state machine: the one place where commands become state changes.
//!
//! [`StateMachine::apply`] validates a command, mutates the in-memory durable
//! state and adds the matching writes to a [`WriteSink`]. Every implementation
//! of the command log (the single-node group committer, the replicated log)
//! drives this same function, in log order. Metadata that many commands touch
//! (a topic's next offset, a channel's floor) is marked dirty and written once
//! per batch by [`StateMachine::flush_dirty`], so the final state does not
//! depend on where batch boundaries fall.
//!
//! Invariants (checked by [`StateMachine::check_invariants`] after every apply
//! in debug builds, and at every open):
//! `log_start ≤ floor ≤ delivered_up_to ≤ handed_over ≤ next_offset` for
//! every durable channel, every cursor record lies at or above its channel's
//! floor and below its topic's hand-over point, and the applied index only
//! grows (one per command, refused ones included). The publish
//! de-duplication window (`crate::dedup`) checks its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::command::{ChannelId, Command, Dedup, Outcome, TopicId};
use crate::dedup::{DedupEntry, DedupWindow};
use crate::error::ApplyError;
use crate::keys;
use crate::persist::{StoredState, WriteSink};
use crate::record::{ChannelMeta, CursorRecord, MessageRecord, TopicMeta};

pub use crate::persist::DEFAULT_TRUNCATE_STEP;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    pub id: TopicId,
    pub meta: TopicMeta,
    pub channels: BTreeSet<ChannelId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelState {
    pub id: ChannelId,
    pub meta: ChannelMeta,
    /// Sparse per-offset state at or above the floor.
    pub records: BTreeMap<u64, CursorRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateMachine {
    next_id: u64,
    topics: BTreeMap<TopicId, TopicState>,
    topic_ids: HashMap<String, TopicId>,
    channels: BTreeMap<ChannelId, ChannelState>,
    dirty_topics: BTreeSet<TopicId>,
    dirty_channels: BTreeSet<ChannelId>,
    next_id_dirty: bool,
    /// How many commands have been applied since the store was created
    /// (refused ones included: they are entries of the command sequence too).
    applied_index: u64,
    /// Whether `applied_index` changed since the last [`StateMachine::flush_dirty`].
    applied_index_dirty: bool,
    truncate_step: u64,
    /// Idempotency keys of recent publishes, per topic.
    dedup: DedupWindow,
}

impl StateMachine {
    pub fn new(truncate_step: u64) -> Self {
        assert!(truncate_step > 0);
        StateMachine {
            next_id: 1,
            topics: BTreeMap::new(),
            topic_ids: HashMap::new(),
            channels: BTreeMap::new(),
            dirty_topics: BTreeSet::new(),
            dirty_channels: BTreeSet::new(),
            next_id_dirty: false,
            applied_index: 0,
            applied_index_dirty: false,
            truncate_step,
            dedup: DedupWindow::default(),
        }
    }

    /// Rebuilds the state from what the store read back at open.
    pub fn recover(truncate_step: u64, stored: StoredState) -> Self {
        let mut state = StateMachine::new(truncate_step);
        state.next_id = stored.next_id.max(1);
        state.applied_index = stored.applied_index;
        state.dedup = DedupWindow::recover(stored.dedup, stored.dedup_evictions);
        for (id, meta) in stored.topics {
            state.topic_ids.insert(meta.name.clone(), id);
            let channels = BTreeSet::new();
            state.topics.insert(id, TopicState { id, meta, channels });
        }
        for (id, meta) in stored.channels {
            if let Some(topic) = state.topics.get_mut(&meta.topic_id) {
                topic.channels.insert(id);
                let records = BTreeMap::new();
                state
                    .channels
                    .insert(id, ChannelState { id, meta, records });
            }
        }
        for (channel, offset, record) in stored.records {
            if let Some(channel) = state.channels.get_mut(&channel) {
                channel.records.insert(offset, record);
            }
        }
        state
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicState> {
        self.topics.values()
    }

    pub fn channels(&self) -> impl Iterator<Item = &ChannelState> {
        self.channels.values()
    }

    pub fn topic(&self, id: TopicId) -> Option<&TopicState> {
        self.topics.get(&id)
    }

    pub fn channel(&self, id: ChannelId) -> Option<&ChannelState> {
        self.channels.get(&id)
    }

    pub fn topic_id(&self, name: &str) -> Option<TopicId> {
        self.topic_ids.get(name).copied()
    }

    /// The index of the last applied command (1 for the first; 0 before
    /// any). Persisted with each batch, so it survives a restart.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The publish de-duplication window (its size and evictions).
    pub fn dedup(&self) -> &DedupWindow {
        &self.dedup
    }

    /// Applies one command: validates it, then changes state and `batch`.
    /// On `Err` nothing was changed.
    pub fn apply(
        &mut self,
        command: &Command,
        batch: &mut impl WriteSink,
    ) -> Result<Outcome, ApplyError> {
        let outcome = match command {
            Command::CreateTopic { name } => Ok(self.create_topic(name)),
            Command::DeleteTopic { topic } => self.delete_topic(*topic, batch),
            Command::SetTopicPaused { topic, paused } => self.set_topic_paused(*topic, *paused),
            Command::EmptyTopic { topic } => self.empty_topic(*topic, batch),
            Command::CreateChannel {
                topic,
                name,
                ephemeral,
            } => self.create_channel(*topic, name, *ephemeral),
            Command::DeleteChannel { channel } => self.delete_channel(*channel, batch),
            Command::SetChannelPaused { channel, paused } => {
                self.set_channel_paused(*channel, *paused)
            }
            Command::EmptyChannel { channel } => self.empty_channel(*channel, batch),
            Command::Publish {
                topic,
                timestamp_ns,
                deliver_at_ms,
                bodies,
                dedup,
            } => {
                let message = (*timestamp_ns, *deliver_at_ms, &bodies[..]);
                self.publish(*topic, message, dedup.as_ref(), batch)
            }
            Command::Deliver {
                channel,
                delivered_up_to,
                redeliveries,
            } => self.deliver(*channel, *delivered_up_to, redeliveries, batch),
            Command::Finish { channel, offsets } => self.finish(*channel, offsets, batch),
            Command::Requeue {
                channel,
                offset,
                attempts,
                deliver_at_ms,
            } => self.requeue(*channel, *offset, *attempts, *deliver_at_ms, batch),
        };
        self.applied_index += 1;
        self.applied_index_dirty = true;
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
        outcome
    }

    /// Counts a command that the log refused before apply (a dispatch
    /// decision of an earlier term, in redundancy mode): it takes an index
    /// like any refused command, so every node numbers commands alike.
    pub fn skip(&mut self) {
        self.applied_index += 1;
        self.applied_index_dirty = true;
    }

    /// Writes the metadata that commands of this batch changed.
    pub fn flush_dirty(&mut self, batch: &mut impl WriteSink) {
        for id in std::mem::take(&mut self.dirty_topics) {
            if let Some(topic) = self.topics.get(&id) {
                batch.put_meta(&keys::topic_meta(id), &topic.meta.encode());
            }
        }
        for id in std::mem::take(&mut self.dirty_channels) {
            if let Some(channel) = self.channels.get(&id) {
                batch.put_meta(&keys::channel_meta(id), &channel.meta.encode());
            }
        }
        if std::mem::take(&mut self.next_id_dirty) {
            batch.put_meta(keys::META_NEXT_ID, &self.next_id.to_be_bytes());
        }
        self.dedup.flush(batch);
        if std::mem::take(&mut self.applied_index_dirty) {
            batch.put_meta(keys::META_APPLIED_INDEX, &self.applied_index.to_be_bytes());
        }
    }

    fn allocate_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.next_id_dirty = true;
        id
    }

    fn create_topic(&mut self, name: &str) -> Outcome {
        if let Some(&topic) = self.topic_ids.get(name) {
            return Outcome::TopicCreated {
                topic,
                created: false,
            };
        }
        let id = self.allocate_id();
        let meta = TopicMeta {
            name: name.to_owned(),
            paused: false,
            next_offset: 0,
            handed_over: 0,
            log_start: 0,
        };
        self.topic_ids.insert(name.to_owned(), id);
        let channels = BTreeSet::new();
        self.topics.insert(id, TopicState { id, meta, channels });
        self.dirty_topics.insert(id);
        Outcome::TopicCreated {
            topic: id,
            created: true,
        }
    }

    fn delete_topic(
        &mut self,
        id: TopicId,
        batch: &mut impl WriteSink,
    ) -> Result<Outcome, ApplyError> {
        let topic = self.topics.remove(&id).ok_or(ApplyError::UnknownTopic)?;
        for channel in &topic.channels {
            self.channels.remove(channel);
            self.dirty_channels.remove(channel);
            Self::erase_channel(*channel, batch);
        }
        self.topic_ids.remove(&topic.meta.name);
        self.dirty_topics.remove(&id);
        self.dedup.drop_topic(id, batch);
        batch.delete_meta(&keys::topic_meta(id));
        batch.delete_log_range(&keys::id_offset(id, 0), &keys::id_offset(id + 1, 0));
        Ok(Outcome::TopicDeleted { topic: id })
    }

    fn set_topic_paused(&mut self, id: TopicId, paused: bool) -> Result<Outcome, ApplyError> {
        let topic = self.topics.get_mut(&id).ok_or(ApplyError::UnknownTopic)?;
        topic.meta.paused = paused;
        Self::hand_over(topic);
        self.dirty_topics.insert(id);
        Ok(Outcome::TopicPaused {
            topic: id,
            paused,
            handed_over: topic.meta.handed_over,
        })
    }

    fn empty_topic(
        &mut self,
        id: TopicId,
        batch: &mut impl WriteSink,
    ) -> Result<Outcome, ApplyError> {
        let topic = self.topics.get_mut(&id).ok_or(ApplyError::UnknownTopic)?;
        let meta = &mut topic.meta;
        let kept = meta.handed_over;
        assert!(kept <= meta.next_offset, "handed over past head");
        if meta.next_offset > kept {
            // No channel has read at or above the hand-over point (every
            // delivery cursor lies at or below it), so these offsets can be
            // dropped and given out again.
            batch.delete_log_range(
                &keys::id_offset(id, kept),
                &keys::id_offset(id, meta.next_offset),
            );
            meta.next_offset = kept;
        }
        if topic.channels.is_empty() && meta.log_start < kept {
            // Left behind by deleted channels: a new channel starts at the
            // hand-over point, so nobody can read these any more.
            batch.delete_log_range(
                &keys::id_offset(id, meta.log_start),
                &keys::id_offset(id, kept),
            );
            meta.log_start = kept;
        }
        meta.log_start = meta.log_start.min(meta.next_offset);
        let (next_offset, log_start) = (meta.next_offset, meta.log_start);
        self.dirty_topics.insert(id);
        Ok(Outcome::TopicEmptied {
            topic: id,
            next_offset,
            log_start,
        })
    }

    /// NSQ's rule: a topic hands its messages to its channels while it has at
    /// least one channel and is not paused; otherwise they wait in the topic.
    fn hand_over(topic: &mut TopicState) {
        if !topic.meta.paused && !topic.channels.is_empty() {
            topic.meta.handed_over = topic.meta.next_offset;
        }
    }

    fn create_channel(
        &mut self,
        topic_id: TopicId,
        name: &str,
        ephemeral: bool,
    ) -> Result<Outcome, ApplyError> {
        let topic = self.topics.get(&topic_id).ok_or(ApplyError::UnknownTopic)?;
        let existing = topic
            .channels
            .iter()
            .find(|c| self.channels.get(c).is_some_and(|c| c.meta.name == name));
        if let Some(&channel) = existing {
            let floor = self.channels[&channel].meta.floor;
            return Ok(Outcome::ChannelCreated {
                topic: topic_id,
                channel,
                created: false,
                floor,
                handed_over: topic.meta.handed_over,
            });
        }
        let id = self.allocate_id();
        let topic = self.topics.get_mut(&topic_id).expect("checked above");
        let floor = topic.meta.handed_over;
        let meta = ChannelMeta {
            topic_id,
            name: name.to_owned(),
            paused: false,
            ephemeral,
            floor,
            delivered_up_to: floor,
        };
        topic.channels.insert(id);
        Self::hand_over(topic);
        let handed_over = topic.meta.handed_over;
        let records = BTreeMap::new();
        self.channels.insert(id, ChannelState { id, meta, records });
        self.dirty_channels.insert(id);
        self.dirty_topics.insert(topic_id);
        Ok(Outcome::ChannelCreated {
            topic: topic_id,
            channel: id,
            created: true,
            floor,
            handed_over,
        })
    }

    fn delete_channel(
        &mut self,
        id: ChannelId,
        batch: &mut impl WriteSink,
    ) -> Result<Outcome, ApplyError> {
        let channel = self
            .channels
            .remove(&id)
            .ok_or(ApplyError::UnknownChannel)?;
        let topic_id = channel.meta.topic_id;
        self.dirty_channels.remove(&id);
        Self::erase_channel(id, batch);
        if let Some(topic) = self.topics.get_mut(&topic_id) {
            topic.channels.remove(&id);
        }
        self.truncate_log(topic_id, batch);
        Ok(Outcome::ChannelDeleted {
            topic: topic_id,
            channel: id,
        })
    }

    fn erase_channel(id: ChannelId, batch: &mut impl WriteSink) {
        batch.delete_meta(&keys::channel_meta(id));
        batch.delete_cursor_range(&keys::id_offset(id, 0), &keys::id_offset(id + 1, 0));
    }

    fn set_channel_paused(&mut self, id: ChannelId, paused: bool) -> Result<Outcome, ApplyError> {
        let channel = self
            .channels
            .get_mut(&id)
            .ok_or(ApplyError::UnknownChannel)?;
        channel.meta.paused = paused;
        self.dirty_channels.insert(id);
        Ok(Outcome::ChannelPaused {
            channel: id,
            paused,
        })
    }

    fn empty_channel(
        &mut self,
        id: ChannelId,
        batch: &mut impl WriteSink,
    ) -> Result<Outcome, ApplyError> {
        let channel = self.channels.get(&id).ok_or(ApplyError::UnknownChannel)?;
        let handed_over = self.handed_over_of(channel);
        let channel = self.channels.get_mut(&id).expect("checked above");
        // Every cursor record lies below the hand-over point (deliveries and
        // requeues beyond it are refused), so all of them go.
        debug_assert!(channel.records.keys().all(|&o| o < handed_over));
        if !channel.records.is_empty() {
            channel.records.clear();
            batch.delete_cursor_range(&keys::id_offset(id, 0), &keys::id_offset(id + 1, 0));
        }
        assert!(channel.meta.floor <= handed_over, "floor past hand-over");
        channel.meta.floor = handed_over;
        channel.meta.delivered_up_to = handed_over;
        let topic = channel.meta.topic_id;
        self.dirty_channels.insert(id);
        self.truncate_log(topic, batch);
        Ok(Outcome::ChannelEmptied {
            channel: id,
            floor: handed_over,
        })
    }

    /// `message`: the publish's `(timestamp_ns, deliver_at_ms, bodies)`.
    fn publish(
        &mut self,
        id: TopicId,
        (timestamp_ns, deliver_at_ms, bodies): (i64, u64, &[bytes::Bytes]),
        dedup: Option<&Dedup>,
        batch: &mut impl WriteSink,
    ) -> Result<Outcome, ApplyError> {
        if !self.topics.contains_key(&id) {
            return Err(ApplyError::UnknownTopic);
        }
        if bodies.is_empty() {
            return Err(ApplyError::EmptyPublish);
        }
        if let Some(dedup) = dedup {
            if !dedup.is_valid() {
                return Err(ApplyError::InvalidDedup);
            }
            self.dedup.expire(timestamp_ns, dedup.window_ms, batch);
            if let Some(first) = self.dedup.get(id, &dedup.key) {
                return Ok(Outcome::Duplicate {
                    topic: id,
                    first_offset: first.first_offset,
                    count: first.count,
                });
            }
        }
        let topic = self.topics.get_mut(&id).expect("checked above");
        let first_offset = topic.meta.next_offset;
        for (offset, body) in (first_offset..).zip(bodies) {
            let record = MessageRecord {
                timestamp_ns,
                deliver_at_ms,
                body: body.clone(),
            };
            batch.put_log(&keys::id_offset(id, offset), &record.encode());
        }
        let count = bodies.len() as u64;
        topic.meta.next_offset += count;
        Self::hand_over(topic);
        let handed_over = topic.meta.handed_over;
        self.dirty_topics.insert(id);
        if let Some(dedup) = dedup {
            let entry = DedupEntry {
                seen_ns: timestamp_ns,
                // This command's index (counted once apply returns).
                seen_index: self.applied_index + 1,
                first_offset,
                count,
            };
            self.dedup
                .record(id, &dedup.key, entry, dedup.max_keys, batch);
        }
        Ok(Outcome::Published {
            topic: id,
            first_offset,
            count,
            handed_over,
        })
    }

    fn handed_over_of(&self, channel: &ChannelState) -> u64 {
        self.topics[&channel.meta.topic_id].meta.handed_over
    }

    fn deliver(
        &mut self,
        id: ChannelId,
        delivered_up_to: u64,
        redeliveries: &[(u64, u16)],
        batch: &mut impl WriteSink,
    ) -> Result<Outcome, ApplyError> {
        let channel = self.channels.get(&id).ok_or(ApplyError::UnknownChannel)?;
        let handed_over = self.handed_over_of(channel);
        let current = channel.meta.delivered_up_to;
        let highest = redeliveries.iter().map(|(o, _)| o + 1).max().unwrap_or(0);
        let offset = delivered_up_to.max(highest);
        if offset > handed_over {
            return Err(ApplyError::OffsetNotHandedOver {
                offset,
                handed_over,
            });
        }
        let channel = self.channels.get_mut(&id).expect("checked above");
        if delivered_up_to > current {
            channel.meta.delivered_up_to = delivered_up_to;
            self.dirty_channels.insert(id);
        }
        for &(offset, attempts) in redeliveries {
            if offset < channel.meta.floor {
                continue;
            }
            let record = channel.records.entry(offset).or_default();
            if record.finished {
                continue;
            }
            *record = CursorRecord {
                attempts,
                deliver_at_ms: 0,
                finished: false,
            };
            batch.put_cursor(&keys::id_offset(id, offset), &record.encode());
        }
        Ok(Outcome::Delivered)
    }

    fn finish(
        &mut self,
        id: ChannelId,
        offsets: &[u64],
        batch: &mut impl WriteSink,
    ) -> Result<Outcome, ApplyError> {
        let channel = self.channels.get(&id).ok_or(ApplyError::UnknownChannel)?;
        let handed_over = self.handed_over_of(channel);
        if let Some(&offset) = offsets.iter().find(|&&o| o >= handed_over) {
            return Err(ApplyError::OffsetNotHandedOver {
                offset,
                handed_over,
            });
        }
        let channel = self.channels.get_mut(&id).expect("checked above");
        for &offset in offsets {
            Self::mark_finished(channel, offset, batch);
        }
        Self::advance_floor(channel, batch);
        let (topic, floor) = (channel.meta.topic_id, channel.meta.floor);
        self.dirty_channels.insert(id);
        self.truncate_log(topic, batch);
        Ok(Outcome::Finished { channel: id, floor })
    }

    fn mark_finished(channel: &mut ChannelState, offset: u64, batch: &mut impl WriteSink) {
        if offset < channel.meta.floor {
            return;
        }
        let key = keys::id_offset(channel.id, offset);
        if offset == channel.meta.floor {
            if channel.records.remove(&offset).is_some() {
                batch.delete_cursor(&key);
            }
            channel.meta.floor += 1;
            return;
        }
        let record = channel.records.entry(offset).or_default();
        if !record.finished {
            record.finished = true;
            batch.put_cursor(&key, &record.encode());
        }
    }

    /// Moves the floor over the run of finished records that starts at it.
    fn advance_floor(channel: &mut ChannelState, batch: &mut impl WriteSink) {
        while let Some(record) = channel.records.get(&channel.meta.floor) {
            if !record.finished {
                break;
            }
            channel.records.remove(&channel.meta.floor);
            batch.delete_cursor(&keys::id_offset(channel.id, channel.meta.floor));
            channel.meta.floor += 1;
        }
        let floor = channel.meta.floor;
        channel.meta.delivered_up_to = channel.meta.delivered_up_to.max(floor);
    }

    fn requeue(
        &mut self,
        id: ChannelId,
        offset: u64,
        attempts: u16,
        deliver_at_ms: u64,
        batch: &mut impl WriteSink,
    ) -> Result<Outcome, ApplyError> {
        let channel = self.channels.get(&id).ok_or(ApplyError::UnknownChannel)?;
        let handed_over = self.handed_over_of(channel);
        if offset >= handed_over {
            return Err(ApplyError::OffsetNotHandedOver {
                offset,
                handed_over,
            });
        }
        let channel = self.channels.get_mut(&id).expect("checked above");
        if offset < channel.meta.floor {
            return Ok(Outcome::Requeued);
        }
        let record = channel.records.entry(offset).or_default();
        if !record.finished {
            *record = CursorRecord {
                attempts,
                deliver_at_ms,
                finished: false,
            };
            batch.put_cursor(&keys::id_offset(id, offset), &record.encode());
        }
        Ok(Outcome::Requeued)
    }

    /// Deletes log entries that every durable channel has finished, in steps.
    fn truncate_log(&mut self, topic_id: TopicId, batch: &mut impl WriteSink) {
        let Some(topic) = self.topics.get(&topic_id) else {
            return;
        };
        if topic.channels.is_empty() {
            return;
        }
        let durable_floor = topic
            .channels
            .iter()
            .map(|c| &self.channels[c].meta)
            .filter(|m| !m.ephemeral)
            .map(|m| m.floor)
            .min();
        let low_water = durable_floor.unwrap_or(topic.meta.handed_over);
        let log_start = topic.meta.log_start;
        if low_water < log_start + self.truncate_step {
            return;
        }
        batch.delete_log_range(
            &keys::id_offset(topic_id, log_start),
            &keys::id_offset(topic_id, low_water),
        );
        let topic = self.topics.get_mut(&topic_id).expect("checked above");
        topic.meta.log_start = low_water;
        self.dirty_topics.insert(topic_id);
    }

    /// Panics if an invariant of the module doc does not hold.
    pub fn check_invariants(&self) {
        self.dedup.check_invariants();
        for topic in self.topics.values() {
            let meta = &topic.meta;
            assert!(
                meta.log_start <= meta.next_offset,
                "log starts past its head"
            );
            assert!(
                meta.handed_over <= meta.next_offset,
                "handed over past head"
            );
            assert_eq!(self.topic_ids.get(&meta.name), Some(&topic.id));
            for id in &topic.channels {
                let channel = &self.channels[id];
                let c = &channel.meta;
                assert_eq!(c.topic_id, topic.id);
                assert!(c.floor <= c.delivered_up_to, "floor past delivery cursor");
                assert!(
                    c.delivered_up_to <= meta.handed_over,
                    "delivered past handover"
                );
                if !c.ephemeral {
                    assert!(meta.log_start <= c.floor, "log truncated above a floor");
                }
                if let Some((&highest, _)) = channel.records.iter().next_back() {
                    assert!(highest < meta.handed_over, "cursor record past handover");
                }
                if let Some((&lowest, _)) = channel.records.iter().next() {
                    assert!(lowest > c.floor || !channel.records[&lowest].finished);
                    assert!(lowest >= c.floor, "cursor record below floor");
                }
            }
        }
        assert_eq!(
            self.channels.len(),
            self.topics
                .values()
                .map(|t| t.channels.len())
                .sum::<usize>()
        );
    }
}
