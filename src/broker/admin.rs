//! Creating, pausing, emptying and deleting topics and channels.
//!
//! A durable topic or channel changes only through its command: the
//! request proposes it and waits for its ticket, and the applier makes the
//! change in memory (`apply.rs`). An `#ephemeral` one changes in memory at
//! once. [`Broker::admin`] is the one shape every admin operation takes.

use std::sync::{Arc, Weak};

use ledgerq_storage::{Command, Outcome};

use super::apply::empty_channel;
use super::channel::Channel;
use super::topic::Topic;
use super::waiters::Waiter;
use super::{Broker, BrokerError, BrokerState, ChannelDirectory};
use crate::protocol::names::is_ephemeral;

/// What an admin request does to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    /// Pause (or resume) hand-over to channels / delivery to clients.
    Pause(bool),
    /// nsqd's `/topic/empty`, `/channel/empty`.
    Empty,
    /// Delete with every message; subscribers are disconnected.
    Delete,
}

/// A topic, or a channel of a topic, by name.
#[derive(Debug, Clone, Copy)]
pub enum AdminTarget<'a> {
    Topic(&'a str),
    Channel(&'a str, &'a str),
}

impl Broker {
    /// Pauses, empties or deletes a topic or channel; returns once the
    /// change is durable and applied.
    pub async fn admin(
        self: &Arc<Self>,
        target: AdminTarget<'_>,
        action: AdminAction,
    ) -> Result<(), BrokerError> {
        if self.is_exiting() {
            return Err(BrokerError::Exiting);
        }
        let Some(command) = self.prepare_admin(target, action)? else {
            return Ok(());
        };
        let result = self.propose_and_wait(command).await;
        if result.is_err() && action == AdminAction::Delete {
            self.undo_deleting(target);
        }
        result.map(|_| ())
    }

    /// Resolves the target under the lock: an ephemeral one is changed
    /// here and now (`None`), a durable one gets its command. A delete stops
    /// deliveries at once, before the command is durable.
    fn prepare_admin(
        &self,
        target: AdminTarget<'_>,
        action: AdminAction,
    ) -> Result<Option<Command>, BrokerError> {
        let mut state = self.lock();
        let topic = state
            .topic_mut(target.topic())
            .ok_or(BrokerError::TopicNotFound)?;
        let (topic_id, in_memory) = (topic.id(), topic.is_ephemeral());
        let channel_id = match target {
            AdminTarget::Topic(_) => None,
            AdminTarget::Channel(_, name) => {
                let channel = topic.channel(name).ok_or(BrokerError::ChannelNotFound)?;
                Some(channel.id())
            }
        };
        if in_memory {
            self.admin_in_memory(&mut state, topic_id, channel_id, action);
            return Ok(None);
        }
        if action == AdminAction::Delete {
            set_deleting(&mut state, topic_id, channel_id, true);
        }
        Ok(Some(admin_command(topic_id, channel_id, action)))
    }

    /// The memory-only twin of what the applier does for each outcome.
    fn admin_in_memory(
        &self,
        state: &mut BrokerState,
        topic_id: u64,
        channel_id: Option<u64>,
        action: AdminAction,
    ) {
        let topic = state.topic_by_id_mut(topic_id).expect("resolved");
        match (channel_id, action) {
            (None, AdminAction::Pause(paused)) => {
                let handed_over = if paused {
                    topic.handed_over()
                } else {
                    topic.resumed_hand_over()
                };
                topic.set_paused(paused, handed_over);
                self.dispatch_topic(state, topic_id);
            }
            (None, AdminAction::Empty) => {
                let (next_offset, log_start) = topic.emptied_in_memory();
                topic.drop_waiting(next_offset, log_start);
            }
            (None, AdminAction::Delete) => state.remove_topic(topic_id),
            (Some(channel), AdminAction::Pause(paused)) => {
                let entry = topic.channel_by_id_mut(channel).expect("resolved");
                entry.set_paused(paused);
                self.dispatch_channel(state, topic_id, channel);
            }
            (Some(channel), AdminAction::Empty) => {
                let floor = topic.handed_over();
                empty_channel(state, channel, floor);
                self.dispatch_channel(state, topic_id, channel);
            }
            (Some(channel), AdminAction::Delete) => state.remove_channel(channel, true),
        }
    }

    /// A delete failed: the target delivers again.
    fn undo_deleting(&self, target: AdminTarget<'_>) {
        let mut state = self.lock();
        let Some(topic) = state.topic_mut(target.topic()) else {
            return;
        };
        let topic_id = topic.id();
        let channel_id = match target {
            AdminTarget::Topic(_) => None,
            AdminTarget::Channel(_, name) => match topic.channel(name) {
                Some(channel) => Some(channel.id()),
                None => return,
            },
        };
        set_deleting(&mut state, topic_id, channel_id, false);
        self.dispatch_topic(&mut state, topic_id);
    }

    // ----- creation ------------------------------------------------------

    /// The topic's id, creating the topic if needed. A new topic first
    /// gets the channels the cluster's lookupds know of (nsqd's
    /// pre-creation, `#ephemeral` ones excepted), created before any
    /// message is handed over, so that no known channel misses one.
    pub async fn ensure_topic(self: &Arc<Self>, name: &str) -> Result<u64, BrokerError> {
        if self.is_exiting() {
            return Err(BrokerError::Exiting);
        }
        if let Some(topic) = self.lock().topic(name) {
            return Ok(topic.id());
        }
        let known_channels = self.channels_known_elsewhere(name).await;
        if is_ephemeral(name) {
            return Ok(self.create_ephemeral_topic(name, &known_channels));
        }
        let (waiter, answer) = Waiter::create_topic(known_channels);
        let command = Command::CreateTopic {
            name: name.to_owned(),
        };
        self.propose(command, ledgerq_storage::Urgency::Now, waiter);
        match answer.await.map_err(|_| BrokerError::Exiting)?? {
            Outcome::TopicCreated { topic, .. } => Ok(topic),
            other => unreachable!("CreateTopic answered {other:?}"),
        }
    }

    /// Where a new topic learns its channels (the node's lookupds).
    pub fn set_channel_directory(&self, directory: Weak<dyn ChannelDirectory>) {
        let _ = self.channel_directory.set(directory);
    }

    async fn channels_known_elsewhere(&self, topic: &str) -> Vec<String> {
        let Some(directory) = self.channel_directory.get().and_then(Weak::upgrade) else {
            return Vec::new();
        };
        let mut names = directory.channels(topic).await;
        names.retain(|name| !is_ephemeral(name));
        names.sort();
        names.dedup();
        names
    }

    fn create_ephemeral_topic(&self, name: &str, channels: &[String]) -> u64 {
        let mut state = self.lock();
        if let Some(topic) = state.topic(name) {
            return topic.id();
        }
        let id = state.next_local_id();
        let topic = Topic::new(id, name.to_owned(), true, 0, self.options.mem_queue_size);
        state.insert_topic(topic);
        for channel in channels {
            add_memory_channel(&mut state, id, channel);
        }
        id
    }

    /// Creates the channel if needed (and its topic).
    pub async fn ensure_channel(
        self: &Arc<Self>,
        topic_name: &str,
        channel_name: &str,
    ) -> Result<(), BrokerError> {
        let topic_id = self.ensure_topic(topic_name).await?;
        {
            let mut state = self.lock();
            let topic = state
                .topic_mut(topic_name)
                .ok_or(BrokerError::TopicNotFound)?;
            if topic.has_channel(channel_name) {
                return Ok(());
            }
            if topic.is_ephemeral() {
                add_memory_channel(&mut state, topic_id, channel_name);
                return Ok(());
            }
        }
        let command = Command::CreateChannel {
            topic: topic_id,
            name: channel_name.to_owned(),
            ephemeral: is_ephemeral(channel_name),
        };
        self.propose_and_wait(command).await?;
        Ok(())
    }
}

impl AdminTarget<'_> {
    fn topic(&self) -> &str {
        match self {
            AdminTarget::Topic(topic) | AdminTarget::Channel(topic, _) => topic,
        }
    }
}

/// The durable command of an admin action.
fn admin_command(topic: u64, channel: Option<u64>, action: AdminAction) -> Command {
    match (channel, action) {
        (None, AdminAction::Pause(paused)) => Command::SetTopicPaused { topic, paused },
        (None, AdminAction::Empty) => Command::EmptyTopic { topic },
        (None, AdminAction::Delete) => Command::DeleteTopic { topic },
        (Some(channel), AdminAction::Pause(paused)) => {
            Command::SetChannelPaused { channel, paused }
        }
        (Some(channel), AdminAction::Empty) => Command::EmptyChannel { channel },
        (Some(channel), AdminAction::Delete) => Command::DeleteChannel { channel },
    }
}

/// Marks the channel (or every channel of the topic) as being deleted.
fn set_deleting(state: &mut BrokerState, topic_id: u64, channel_id: Option<u64>, deleting: bool) {
    let Some(topic) = state.topic_by_id_mut(topic_id) else {
        return;
    };
    for channel in topic.channels_mut() {
        if channel_id.is_none_or(|id| id == channel.id()) {
            channel.set_deleting(deleting);
        }
    }
}

/// Adds a memory-only channel to the (ephemeral) topic; it starts at the
/// topic's hand-over point, so the first channel gets what waits.
fn add_memory_channel(state: &mut BrokerState, topic_id: u64, channel_name: &str) {
    let id = state.next_local_id();
    let topic = state.topic_by_id_mut(topic_id).expect("caller created it");
    debug_assert!(topic.is_ephemeral());
    let channel = Channel::new(id, channel_name.to_owned(), true, topic.handed_over());
    state.insert_channel(topic_id, channel);
}
