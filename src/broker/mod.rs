//! The broker: topics, channels and clients behind one lock, and the one
//! path by which they change durably (the [`GroupCommitter`]).
//!
//! Lock discipline: the state lock is never held while waiting. Commands
//! submitted while holding it have completions that do not take it (they
//! only push frames to connections). Completions that update the state
//! (publish, create, pause, delete) are submitted without holding it; they
//! run on the committer thread, in commit order.

pub mod channel;
pub mod client;
pub mod latency;
pub mod message;
pub mod recovery;
pub mod stats;
pub mod topic;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use bytes::Bytes;
use ledgerq_storage::{
    ApplyError, Command, CommitError, CommitOptions, GroupCommitter, Outcome, StorageError, Store,
    StoreOptions, Urgency,
};
use tokio::sync::{mpsc::UnboundedSender, oneshot, watch};

use crate::clock;
use channel::{Channel, DeliveryBatch, InFlightError, TopicView};
use client::{Client, ClientId, ClientInfo, Outbound};
use latency::{LatencySettings, LatencyWindow};
use message::Message;
use topic::Topic;

pub const EPHEMERAL_SUFFIX: &str = "#ephemeral";

/// Settings of the broker core (the NSQ flags of the same names).
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Messages per topic kept in memory (`--mem-queue-size`).
    pub mem_queue_size: usize,
    pub msg_timeout_ms: u64,
    pub max_msg_timeout_ms: u64,
    pub max_req_timeout_ms: u64,
    /// End-to-end latency quantiles for `/stats` (off when empty).
    pub e2e_latency: LatencySettings,
    pub commit: CommitOptions,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            mem_queue_size: 10_000,
            msg_timeout_ms: 60_000,
            max_msg_timeout_ms: 900_000,
            max_req_timeout_ms: 3_600_000,
            e2e_latency: LatencySettings {
                quantiles: Vec::new(),
                window_ms: 600_000,
            },
            commit: CommitOptions::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    #[error("exiting")]
    Exiting,
    #[error("{0}")]
    Storage(String),
    #[error("{0}")]
    Rejected(String),
    #[error("topic not found")]
    TopicNotFound,
    #[error("channel not found")]
    ChannelNotFound,
}

impl From<CommitError> for BrokerError {
    fn from(error: CommitError) -> Self {
        match error {
            CommitError::Closed => BrokerError::Exiting,
            CommitError::Storage(e) => BrokerError::Storage(e.to_string()),
            CommitError::Rejected(e) => BrokerError::Rejected(e.to_string()),
        }
    }
}

pub(crate) struct BrokerState {
    pub(crate) topics: HashMap<String, Topic>,
    pub(crate) clients: HashMap<ClientId, Client>,
    next_client_id: ClientId,
    next_local_id: u64,
    /// Bumped whenever a topic or channel appears or disappears.
    topology: watch::Sender<u64>,
}

impl BrokerState {
    fn topology_changed(&self) {
        self.topology
            .send_modify(|version| *version = version.wrapping_add(1));
    }
}

/// Which topics exist, each with its channels (both sorted).
pub type Topology = BTreeMap<String, BTreeSet<String>>;

/// Tells a new topic which channels exist for it elsewhere in the cluster.
pub trait ChannelDirectory: Send + Sync {
    /// The channel names known for `topic` (empty when none or unreachable).
    fn channels<'a>(
        &'a self,
        topic: &'a str,
    ) -> Pin<Box<dyn Future<Output = Vec<String>> + Send + 'a>>;
}

pub struct Broker {
    state: Mutex<BrokerState>,
    /// Not owned: the directory (the lookupd peers) holds the broker.
    channel_directory: OnceLock<Weak<dyn ChannelDirectory>>,
    store: Arc<Store>,
    committer: GroupCommitter,
    options: BrokerOptions,
    exiting: AtomicBool,
}

pub fn is_ephemeral(name: &str) -> bool {
    name.ends_with(EPHEMERAL_SUFFIX)
}

impl Broker {
    /// Opens the data directory, recovers every topic and channel, and
    /// starts the committer.
    pub fn open(
        store_options: StoreOptions,
        options: BrokerOptions,
    ) -> Result<Arc<Broker>, StorageError> {
        let (store, state) = Store::open(store_options)?;
        let store = Arc::new(store);
        let recovered = recovery::recover(&store, &state, options.mem_queue_size, clock::now_ms())?;
        let committer = GroupCommitter::start(store.clone(), state, options.commit.clone());
        let broker = Arc::new(Broker {
            state: Mutex::new(BrokerState {
                topics: recovered.topics,
                clients: HashMap::new(),
                next_client_id: 1,
                next_local_id: 1 << 40,
                topology: watch::Sender::new(0),
            }),
            store,
            committer,
            options,
            channel_directory: OnceLock::new(),
            exiting: AtomicBool::new(false),
        });
        for channel in recovered.stale_ephemeral_channels {
            broker.submit_detached(Command::DeleteChannel { channel }, Urgency::Now);
        }
        Ok(broker)
    }

    pub fn options(&self) -> &BrokerOptions {
        &self.options
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn committer(&self) -> &GroupCommitter {
        &self.committer
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, BrokerState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a topic of this name exists (durable or ephemeral).
    pub fn has_topic(&self, name: &str) -> bool {
        self.lock().topics.contains_key(name)
    }

    /// Every topic and its channels, durable and ephemeral.
    pub fn topology(&self) -> Topology {
        let state = self.lock();
        state
            .topics
            .iter()
            .map(|(name, topic)| (name.clone(), topic.channels.keys().cloned().collect()))
            .collect()
    }

    /// Changes whenever [`Broker::topology`] may have changed.
    pub fn watch_topology(&self) -> watch::Receiver<u64> {
        self.lock().topology.subscribe()
    }

    /// Connected TCP clients.
    pub fn client_count(&self) -> usize {
        self.lock().clients.len()
    }

    pub fn is_exiting(&self) -> bool {
        self.exiting.load(Ordering::SeqCst)
    }

    /// Stops accepting writes, commits what is queued and stops the committer.
    pub fn shutdown(&self) {
        self.exiting.store(true, Ordering::SeqCst);
        self.committer.shutdown();
    }

    /// Submits a command nobody waits for.
    fn submit_detached(&self, command: Command, urgency: Urgency) {
        self.committer.submit(
            command,
            urgency,
            Box::new(|result| {
                if let Err(error) = result {
                    tracing::warn!(%error, "background command failed");
                }
            }),
        );
    }

    // ----- clients -------------------------------------------------------

    pub fn register_client(
        &self,
        info: ClientInfo,
        outbound: UnboundedSender<Outbound>,
    ) -> ClientId {
        let mut state = self.lock();
        let id = state.next_client_id;
        state.next_client_id += 1;
        let client = Client::new(id, info, outbound, self.options.msg_timeout_ms);
        state.clients.insert(id, client);
        id
    }

    /// Applies what IDENTIFY negotiated.
    pub fn configure_client(
        &self,
        id: ClientId,
        info: ClientInfo,
        msg_timeout_ms: u64,
        sample_rate: u8,
    ) {
        let mut state = self.lock();
        if let Some(client) = state.clients.get_mut(&id) {
            client.info = ClientInfo {
                remote_address: client.info.remote_address.clone(),
                connect_ts_s: client.info.connect_ts_s,
                ..info
            };
            client.msg_timeout_ms = msg_timeout_ms;
            client.sample_rate = sample_rate;
        }
    }

    /// A connection went away: its in-flight messages are ready again now.
    pub fn unregister_client(&self, id: ClientId) {
        let mut state = self.lock();
        let Some(client) = state.clients.remove(&id) else {
            return;
        };
        let Some((topic_name, channel_name)) = client.subscription else {
            return;
        };
        let Some(topic) = state.topics.get_mut(&topic_name) else {
            return;
        };
        let Some(channel) = topic.channels.get_mut(&channel_name) else {
            return;
        };
        channel.remove_client(id);
        if channel.ephemeral && channel.clients.is_empty() {
            self.delete_ephemeral_channel(&mut state, &topic_name, &channel_name);
        } else {
            self.dispatch_channel(&mut state, &topic_name, &channel_name);
        }
    }

    fn delete_ephemeral_channel(
        &self,
        state: &mut BrokerState,
        topic_name: &str,
        channel_name: &str,
    ) {
        let topic = state.topics.get_mut(topic_name).expect("caller found it");
        let channel = topic
            .channels
            .remove(channel_name)
            .expect("caller found it");
        if topic.ephemeral {
            if topic.channels.is_empty() {
                state.topics.remove(topic_name);
            }
        } else {
            self.submit_detached(
                Command::DeleteChannel {
                    channel: channel.id,
                },
                Urgency::Now,
            );
        }
        state.topology_changed();
    }

    // ----- topics and channels -------------------------------------------

    /// The topic's id, creating the topic if needed. A new topic first
    /// gets the channels the cluster's lookupds know of (nsqd's
    /// pre-creation, `#ephemeral` ones excepted), created before any
    /// message is handed over, so that no known channel misses one.
    pub async fn ensure_topic(self: &Arc<Self>, name: &str) -> Result<u64, BrokerError> {
        if self.is_exiting() {
            return Err(BrokerError::Exiting);
        }
        if let Some(topic) = self.lock().topics.get(name) {
            return Ok(topic.id);
        }
        let known_channels = self.channels_known_elsewhere(name).await;
        if is_ephemeral(name) {
            return Ok(self.create_ephemeral_topic(name, &known_channels));
        }
        let (sender, receiver) = oneshot::channel();
        let broker = self.clone();
        let owned_name = name.to_owned();
        self.committer.submit(
            Command::CreateTopic {
                name: name.to_owned(),
            },
            Urgency::Now,
            Box::new(move |result| {
                if let Ok(Outcome::TopicCreated { topic, .. }) = &result {
                    broker.on_topic_created(&owned_name, *topic, known_channels);
                }
                let _ = sender.send(result);
            }),
        );
        match receiver.await.map_err(|_| BrokerError::Exiting)?? {
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

    /// Runs on the committer thread once `CreateTopic` is durable: adds the
    /// topic and queues the creation of `channels` under the same lock, so
    /// that every publish to the new topic is queued after them.
    fn on_topic_created(self: &Arc<Self>, name: &str, id: u64, channels: Vec<String>) {
        let mut state = self.lock();
        if state.topics.contains_key(name) {
            return;
        }
        let capacity = self.options.mem_queue_size;
        state.topics.insert(
            name.to_owned(),
            Topic::new(id, name.to_owned(), false, 0, capacity),
        );
        state.topology_changed();
        for channel in channels {
            let broker = self.clone();
            let topic_name = name.to_owned();
            self.committer.submit(
                Command::CreateChannel {
                    topic: id,
                    name: channel.clone(),
                    ephemeral: false,
                },
                Urgency::Now,
                Box::new(move |result| match result {
                    Ok(outcome) => broker.on_channel_created(&topic_name, &channel, false, &outcome),
                    Err(error) => tracing::warn!(%error, topic = topic_name, channel, "pre-creating a channel failed"),
                }),
            );
        }
    }

    fn create_ephemeral_topic(&self, name: &str, channels: &[String]) -> u64 {
        let mut state = self.lock();
        if let Some(topic) = state.topics.get(name) {
            return topic.id;
        }
        let id = state.next_local_id;
        state.next_local_id += 1;
        let topic = Topic::new(id, name.to_owned(), true, 0, self.options.mem_queue_size);
        state.topics.insert(name.to_owned(), topic);
        for channel in channels {
            add_memory_channel(&mut state, name, channel);
        }
        state.topology_changed();
        id
    }

    /// Creates the channel if needed (the topic must exist).
    pub async fn ensure_channel(
        self: &Arc<Self>,
        topic_name: &str,
        channel_name: &str,
    ) -> Result<(), BrokerError> {
        let topic_id = self.ensure_topic(topic_name).await?;
        let ephemeral = is_ephemeral(channel_name);
        {
            let mut state = self.lock();
            let topic = state
                .topics
                .get_mut(topic_name)
                .ok_or(BrokerError::Exiting)?;
            if topic.channels.contains_key(channel_name) {
                return Ok(());
            }
            if topic.ephemeral {
                add_memory_channel(&mut state, topic_name, channel_name);
                state.topology_changed();
                return Ok(());
            }
        }
        let command = Command::CreateChannel {
            topic: topic_id,
            name: channel_name.to_owned(),
            ephemeral,
        };
        let (sender, receiver) = oneshot::channel();
        let broker = self.clone();
        let (topic_name, channel_name) = (topic_name.to_owned(), channel_name.to_owned());
        self.committer.submit(
            command,
            Urgency::Now,
            Box::new(move |result| {
                if let Ok(outcome) = &result {
                    broker.on_channel_created(&topic_name, &channel_name, ephemeral, outcome);
                }
                let _ = sender.send(result);
            }),
        );
        receiver.await.map_err(|_| BrokerError::Exiting)??;
        Ok(())
    }

    fn on_channel_created(
        &self,
        topic_name: &str,
        channel_name: &str,
        ephemeral: bool,
        outcome: &Outcome,
    ) {
        let Outcome::ChannelCreated {
            topic,
            channel,
            floor,
            handed_over,
            ..
        } = *outcome
        else {
            unreachable!("CreateChannel answered {outcome:?}");
        };
        let mut state = self.lock();
        let Some(entry) = state.topics.get_mut(topic_name).filter(|t| t.id == topic) else {
            return;
        };
        entry.handed_over = handed_over;
        entry
            .channels
            .entry(channel_name.to_owned())
            .or_insert_with(|| Channel::new(channel, channel_name.to_owned(), ephemeral, floor));
        state.topology_changed();
        self.dispatch_topic(&mut state, topic_name);
    }

    // ----- pause and delete ----------------------------------------------

    /// Submits a durable command and waits for it; `on_commit` runs on the
    /// committer thread, in commit order, once the command is on disk. A
    /// topic or channel deleted meanwhile is reported as not found.
    async fn submit_and_wait(
        &self,
        command: Command,
        on_commit: impl FnOnce(&Outcome) + Send + 'static,
    ) -> Result<Outcome, BrokerError> {
        let (sender, receiver) = oneshot::channel();
        self.committer.submit(
            command,
            Urgency::Now,
            Box::new(move |result| {
                if let Ok(outcome) = &result {
                    on_commit(outcome);
                }
                let _ = sender.send(result);
            }),
        );
        match receiver.await.map_err(|_| BrokerError::Exiting)? {
            Ok(outcome) => Ok(outcome),
            Err(CommitError::Rejected(ApplyError::UnknownTopic)) => Err(BrokerError::TopicNotFound),
            Err(CommitError::Rejected(ApplyError::UnknownChannel)) => {
                Err(BrokerError::ChannelNotFound)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Pauses (or resumes) a topic: while paused it hands nothing over to
    /// its channels; unpausing hands over the backlog and dispatches it.
    pub async fn pause_topic(
        self: &Arc<Self>,
        name: &str,
        paused: bool,
    ) -> Result<(), BrokerError> {
        if self.is_exiting() {
            return Err(BrokerError::Exiting);
        }
        let topic_id = {
            let mut state = self.lock();
            let topic = state
                .topics
                .get_mut(name)
                .ok_or(BrokerError::TopicNotFound)?;
            if topic.ephemeral {
                topic.paused = paused;
                if !paused && !topic.channels.is_empty() {
                    topic.handed_over = topic.next_offset;
                }
                self.dispatch_topic(&mut state, name);
                return Ok(());
            }
            topic.id
        };
        let broker = self.clone();
        let name = name.to_owned();
        let command = Command::SetTopicPaused {
            topic: topic_id,
            paused,
        };
        self.submit_and_wait(command, move |outcome| {
            let Outcome::TopicPaused { handed_over, .. } = *outcome else {
                unreachable!("SetTopicPaused answered {outcome:?}");
            };
            let mut state = broker.lock();
            let Some(topic) = state.topics.get_mut(&name).filter(|t| t.id == topic_id) else {
                return;
            };
            topic.paused = paused;
            topic.handed_over = handed_over;
            broker.dispatch_topic(&mut state, &name);
        })
        .await?;
        Ok(())
    }

    /// Pauses (or resumes) delivery to a channel's clients; they stay
    /// connected and FIN, REQ and TOUCH keep working.
    pub async fn pause_channel(
        self: &Arc<Self>,
        topic_name: &str,
        channel_name: &str,
        paused: bool,
    ) -> Result<(), BrokerError> {
        if self.is_exiting() {
            return Err(BrokerError::Exiting);
        }
        let channel_id = {
            let mut state = self.lock();
            let (topic, channel) = find_channel(&mut state, topic_name, channel_name)?;
            if topic.ephemeral {
                channel.paused = paused;
                self.dispatch_channel(&mut state, topic_name, channel_name);
                return Ok(());
            }
            channel.id
        };
        let broker = self.clone();
        let (topic_name, channel_name) = (topic_name.to_owned(), channel_name.to_owned());
        let command = Command::SetChannelPaused {
            channel: channel_id,
            paused,
        };
        self.submit_and_wait(command, move |_| {
            let mut state = broker.lock();
            let channel = state
                .topics
                .get_mut(&topic_name)
                .and_then(|t| t.channels.get_mut(&channel_name))
                .filter(|c| c.id == channel_id);
            if let Some(channel) = channel {
                channel.paused = paused;
                broker.dispatch_channel(&mut state, &topic_name, &channel_name);
            }
        })
        .await?;
        Ok(())
    }

    /// Deletes a channel and its messages; its clients are disconnected.
    pub async fn delete_channel(
        self: &Arc<Self>,
        topic_name: &str,
        channel_name: &str,
    ) -> Result<(), BrokerError> {
        if self.is_exiting() {
            return Err(BrokerError::Exiting);
        }
        let channel_id = {
            let mut state = self.lock();
            let (topic, channel) = find_channel(&mut state, topic_name, channel_name)?;
            let channel_id = channel.id;
            if topic.ephemeral {
                remove_channel(&mut state, topic_name, channel_name, channel_id);
                return Ok(());
            }
            channel.deleting = true;
            channel_id
        };
        let broker = self.clone();
        let (topic, channel) = (topic_name.to_owned(), channel_name.to_owned());
        let command = Command::DeleteChannel {
            channel: channel_id,
        };
        let result = self
            .submit_and_wait(command, move |_| {
                remove_channel(&mut broker.lock(), &topic, &channel, channel_id);
            })
            .await;
        if result.is_err() {
            let mut state = self.lock();
            let channel = state
                .topics
                .get_mut(topic_name)
                .and_then(|t| t.channels.get_mut(channel_name))
                .filter(|c| c.id == channel_id);
            if let Some(channel) = channel {
                channel.deleting = false;
                self.dispatch_channel(&mut state, topic_name, channel_name);
            }
        }
        result.map(|_| ())
    }

    /// Empties a topic (nsqd's `/topic/empty`): the messages waiting in the
    /// topic itself, not yet handed to its channels, are dropped durably;
    /// the channels keep theirs.
    pub async fn empty_topic(self: &Arc<Self>, name: &str) -> Result<(), BrokerError> {
        if self.is_exiting() {
            return Err(BrokerError::Exiting);
        }
        let topic_id = {
            let mut state = self.lock();
            let topic = state
                .topics
                .get_mut(name)
                .ok_or(BrokerError::TopicNotFound)?;
            if topic.ephemeral {
                let (next_offset, log_start) = (topic.handed_over, topic.log_start);
                topic.drop_waiting(next_offset, log_start);
                return Ok(());
            }
            topic.id
        };
        let broker = self.clone();
        let owned = name.to_owned();
        let command = Command::EmptyTopic { topic: topic_id };
        self.submit_and_wait(command, move |outcome| {
            let Outcome::TopicEmptied {
                next_offset,
                log_start,
                ..
            } = *outcome
            else {
                unreachable!("EmptyTopic answered {outcome:?}");
            };
            let mut state = broker.lock();
            if let Some(topic) = state.topics.get_mut(&owned).filter(|t| t.id == topic_id) {
                topic.drop_waiting(next_offset, log_start);
            }
        })
        .await?;
        Ok(())
    }

    /// Empties a channel (nsqd's `/channel/empty`): every message it holds
    /// (unread, requeued, deferred and in flight) is dropped, durably; the
    /// clients stay subscribed and later messages flow as before.
    pub async fn empty_channel(
        self: &Arc<Self>,
        topic_name: &str,
        channel_name: &str,
    ) -> Result<(), BrokerError> {
        if self.is_exiting() {
            return Err(BrokerError::Exiting);
        }
        let channel_id = {
            let mut state = self.lock();
            let (topic, channel) = find_channel(&mut state, topic_name, channel_name)?;
            let (channel_id, handed_over) = (channel.id, topic.handed_over);
            if topic.ephemeral {
                empty_channel(
                    &mut state,
                    topic_name,
                    channel_name,
                    channel_id,
                    handed_over,
                );
                self.dispatch_channel(&mut state, topic_name, channel_name);
                return Ok(());
            }
            channel_id
        };
        let broker = self.clone();
        let (topic_name, channel_name) = (topic_name.to_owned(), channel_name.to_owned());
        let command = Command::EmptyChannel {
            channel: channel_id,
        };
        self.submit_and_wait(command, move |outcome| {
            let Outcome::ChannelEmptied { floor, .. } = *outcome else {
                unreachable!("EmptyChannel answered {outcome:?}");
            };
            let mut state = broker.lock();
            empty_channel(&mut state, &topic_name, &channel_name, channel_id, floor);
            broker.dispatch_channel(&mut state, &topic_name, &channel_name);
        })
        .await?;
        Ok(())
    }

    /// Deletes a topic, its channels and its whole log; the channels'
    /// clients are disconnected.
    pub async fn delete_topic(self: &Arc<Self>, name: &str) -> Result<(), BrokerError> {
        if self.is_exiting() {
            return Err(BrokerError::Exiting);
        }
        let topic_id = {
            let mut state = self.lock();
            let topic = state
                .topics
                .get_mut(name)
                .ok_or(BrokerError::TopicNotFound)?;
            let topic_id = topic.id;
            if topic.ephemeral {
                remove_topic(&mut state, name, topic_id);
                return Ok(());
            }
            for channel in topic.channels.values_mut() {
                channel.deleting = true;
            }
            topic_id
        };
        let broker = self.clone();
        let owned = name.to_owned();
        let command = Command::DeleteTopic { topic: topic_id };
        let result = self
            .submit_and_wait(command, move |_| {
                remove_topic(&mut broker.lock(), &owned, topic_id);
            })
            .await;
        if result.is_err() {
            let mut state = self.lock();
            if let Some(topic) = state.topics.get_mut(name).filter(|t| t.id == topic_id) {
                for channel in topic.channels.values_mut() {
                    channel.deleting = false;
                }
                self.dispatch_topic(&mut state, name);
            }
        }
        result.map(|_| ())
    }

    // ----- publishing ----------------------------------------------------

    /// Publishes `bodies` atomically; returns once they are durable.
    pub async fn publish(
        self: &Arc<Self>,
        topic_name: &str,
        bodies: Vec<Bytes>,
        defer_ms: u64,
    ) -> Result<(), BrokerError> {
        let topic_id = self.ensure_topic(topic_name).await?;
        self.submit_publish(topic_name, topic_id, bodies, defer_ms, None)
            .wait()
            .await
    }

    /// Queues a publish to an existing topic without waiting, so that one
    /// connection's publishes are committed in the order it sent them.
    /// `publisher` is the TCP client to credit in `/stats`, if any.
    pub fn submit_publish(
        self: &Arc<Self>,
        topic_name: &str,
        topic_id: u64,
        bodies: Vec<Bytes>,
        defer_ms: u64,
        publisher: Option<ClientId>,
    ) -> PublishTicket {
        if self.is_exiting() {
            return PublishTicket::Done(Err(BrokerError::Exiting));
        }
        let stamp = Stamp {
            timestamp_ns: clock::now_ns(),
            deliver_at_ms: if defer_ms > 0 {
                clock::now_ms() + defer_ms
            } else {
                0
            },
        };
        if is_ephemeral(topic_name) {
            let result = self.publish_in_memory(topic_name, stamp, bodies, publisher);
            return PublishTicket::Done(result);
        }
        let command = Command::Publish {
            topic: topic_id,
            timestamp_ns: stamp.timestamp_ns,
            deliver_at_ms: stamp.deliver_at_ms,
            bodies: bodies.clone(),
        };
        let (sender, receiver) = oneshot::channel();
        let broker = self.clone();
        let topic_name = topic_name.to_owned();
        self.committer.submit(
            command,
            Urgency::Now,
            Box::new(move |result| {
                if let Ok(Outcome::Published {
                    first_offset,
                    handed_over,
                    ..
                }) = &result
                {
                    let offsets = (*first_offset, *handed_over);
                    broker.on_published(&topic_name, topic_id, offsets, stamp, bodies, publisher);
                }
                let _ = sender.send(result);
            }),
        );
        PublishTicket::Waiting(receiver)
    }

    /// Commit completion of a durable publish: the messages join the
    /// topic's cache and are handed to its channels.
    fn on_published(
        &self,
        topic_name: &str,
        topic_id: u64,
        (first_offset, handed_over): (u64, u64),
        stamp: Stamp,
        bodies: Vec<Bytes>,
        publisher: Option<ClientId>,
    ) {
        let mut state = self.lock();
        stats::count_publish(&mut state, publisher, topic_name, bodies.len() as u64);
        let Some(topic) = state
            .topics
            .get_mut(topic_name)
            .filter(|t| t.id == topic_id)
        else {
            return;
        };
        topic.append(stamp.messages(topic_id, first_offset, bodies));
        topic.handed_over = handed_over;
        self.dispatch_topic(&mut state, topic_name);
    }

    fn publish_in_memory(
        &self,
        topic_name: &str,
        stamp: Stamp,
        bodies: Vec<Bytes>,
        publisher: Option<ClientId>,
    ) -> Result<(), BrokerError> {
        let mut state = self.lock();
        stats::count_publish(&mut state, publisher, topic_name, bodies.len() as u64);
        let topic = state
            .topics
            .get_mut(topic_name)
            .ok_or(BrokerError::Exiting)?;
        let (topic_id, first_offset) = (topic.id, topic.next_offset);
        topic.append(stamp.messages(topic_id, first_offset, bodies));
        self.dispatch_topic(&mut state, topic_name);
        Ok(())
    }

    // ----- consuming -----------------------------------------------------

    /// SUB: creates topic and channel as needed and subscribes the client.
    /// `max_consumers` of 0 means unlimited.
    pub async fn subscribe(
        self: &Arc<Self>,
        client: ClientId,
        topic_name: &str,
        channel_name: &str,
        max_consumers: usize,
    ) -> Result<(), BrokerError> {
        self.ensure_channel(topic_name, channel_name).await?;
        let mut state = self.lock();
        let channel = state
            .topics
            .get_mut(topic_name)
            .and_then(|t| t.channels.get_mut(channel_name))
            .ok_or_else(|| BrokerError::Rejected("to deleted topic/channel".into()))?;
        if max_consumers > 0 && channel.clients.len() >= max_consumers {
            let reason = format!(
                "consumers for {topic_name}:{channel_name} exceeds limit of {max_consumers}"
            );
            return Err(BrokerError::Rejected(reason));
        }
        channel.add_client(client);
        if let Some(client) = state.clients.get_mut(&client) {
            client.subscription = Some((topic_name.to_owned(), channel_name.to_owned()));
        }
        Ok(())
    }

    /// RDY: the client's cap on outstanding messages.
    pub fn ready(&self, client: ClientId, count: u64) {
        let mut state = self.lock();
        let Some(entry) = state.clients.get_mut(&client) else {
            return;
        };
        if entry.closing {
            return;
        }
        entry.ready_count = count;
        if let Some((topic, channel)) = entry.subscription.clone() {
            self.dispatch_channel(&mut state, &topic, &channel);
        }
    }

    /// CLS: no more deliveries to this client.
    pub fn close(&self, client: ClientId) {
        let mut state = self.lock();
        if let Some(entry) = state.clients.get_mut(&client) {
            entry.ready_count = 0;
            entry.closing = true;
        }
    }

    pub fn finish(&self, client: ClientId, id: &[u8; 16]) -> Result<(), InFlightError> {
        self.with_in_flight(client, id, |broker, state, topic, channel, offset| {
            let topic_entry = state.topics.get_mut(topic).expect("resolved");
            let topic_ephemeral = topic_entry.ephemeral;
            let entry = topic_entry.channels.get_mut(channel).expect("resolved");
            let finished = entry.finish(client, offset)?;
            let e2e = &broker.options.e2e_latency;
            if e2e.enabled() {
                // One clock reading for both the window and the latency.
                let now_ns = clock::now_ns();
                let now_ms = (now_ns / 1_000_000) as u64;
                let latency_ns = now_ns.saturating_sub(finished.message.timestamp_ns);
                entry
                    .e2e_latency
                    .get_or_insert_with(|| LatencyWindow::new(e2e.window_ms, now_ms))
                    .record(now_ms, latency_ns.max(0) as u64);
            }
            // A channel being deleted takes its cursor records with it.
            let durable = !entry.ephemeral && !topic_ephemeral && !entry.deleting;
            let channel_id = entry.id;
            if let Some(c) = state.clients.get_mut(&client) {
                c.in_flight_count -= 1;
                c.finish_count += 1;
            }
            if durable {
                let offsets = vec![offset];
                broker.submit_detached(
                    Command::Finish {
                        channel: channel_id,
                        offsets,
                    },
                    Urgency::Lazy,
                );
            }
            Ok(())
        })
    }

    pub fn requeue(
        &self,
        client: ClientId,
        id: &[u8; 16],
        timeout_ms: u64,
    ) -> Result<(), InFlightError> {
        let timeout_ms = timeout_ms.min(self.options.max_req_timeout_ms);
        let deliver_at_ms = (timeout_ms > 0).then(|| clock::now_ms() + timeout_ms);
        self.with_in_flight(client, id, |broker, state, topic, channel, offset| {
            let topic_entry = state.topics.get_mut(topic).expect("resolved");
            let topic_ephemeral = topic_entry.ephemeral;
            let entry = topic_entry.channels.get_mut(channel).expect("resolved");
            let attempts = entry.requeue(client, offset, deliver_at_ms)?;
            let durable = !entry.ephemeral && !topic_ephemeral;
            let channel_id = entry.id;
            if let Some(c) = state.clients.get_mut(&client) {
                c.in_flight_count -= 1;
                c.requeue_count += 1;
            }
            if let (true, Some(deliver_at_ms)) = (durable, deliver_at_ms) {
                let command = Command::Requeue {
                    channel: channel_id,
                    offset,
                    attempts,
                    deliver_at_ms,
                };
                broker.submit_detached(command, Urgency::Lazy);
            }
            Ok(())
        })
    }

    pub fn touch(&self, client: ClientId, id: &[u8; 16]) -> Result<(), InFlightError> {
        let max_msg_timeout_ms = self.options.max_msg_timeout_ms;
        self.with_in_flight(client, id, |_, state, topic, channel, offset| {
            let msg_timeout_ms = state.clients.get(&client).map_or(0, |c| c.msg_timeout_ms);
            let entry = state
                .topics
                .get_mut(topic)
                .and_then(|t| t.channels.get_mut(channel));
            let entry = entry.expect("resolved by with_in_flight");
            entry.touch(
                client,
                offset,
                clock::now_ms(),
                msg_timeout_ms,
                max_msg_timeout_ms,
            )
        })
    }

    /// Resolves the client's channel and the offset named by `id`, runs `f`
    /// under the lock, then dispatches the channel (a slot may be free).
    fn with_in_flight(
        &self,
        client: ClientId,
        id: &[u8; 16],
        f: impl FnOnce(&Self, &mut BrokerState, &str, &str, u64) -> Result<(), InFlightError>,
    ) -> Result<(), InFlightError> {
        let mut state = self.lock();
        let (topic, channel) = state
            .clients
            .get(&client)
            .and_then(|c| c.subscription.clone())
            .ok_or(InFlightError::NotInFlight)?;
        let topic_entry = state.topics.get(&topic).ok_or(InFlightError::NotInFlight)?;
        if !topic_entry.channels.contains_key(&channel) {
            return Err(InFlightError::NotInFlight);
        }
        let offset = message::decode_id(topic_entry.id, id).ok_or(InFlightError::NotInFlight)?;
        f(self, &mut state, &topic, &channel, offset)?;
        self.dispatch_channel(&mut state, &topic, &channel);
        Ok(())
    }

    /// Timer pass: expired in-flight messages and due deferred ones become
    /// ready, then get dispatched.
    pub fn tick(&self) {
        let now_ms = clock::now_ms();
        let mut state = self.lock();
        let mut due = Vec::new();
        let BrokerState {
            topics, clients, ..
        } = &mut *state;
        for topic in topics.values_mut() {
            for channel in topic.channels.values_mut().filter(|c| c.has_timers()) {
                for client in channel.expire(now_ms) {
                    if let Some(client) = clients.get_mut(&client) {
                        client.in_flight_count -= 1;
                    }
                }
                due.push((topic.name.clone(), channel.name.clone()));
            }
        }
        for (topic, channel) in due {
            self.dispatch_channel(&mut state, &topic, &channel);
        }
    }

    // ----- dispatch ------------------------------------------------------

    fn dispatch_topic(&self, state: &mut BrokerState, topic_name: &str) {
        let Some(topic) = state.topics.get(topic_name) else {
            return;
        };
        let channels: Vec<String> = topic.channels.keys().cloned().collect();
        for channel in channels {
            self.dispatch_channel(state, topic_name, &channel);
        }
    }

    fn dispatch_channel(&self, state: &mut BrokerState, topic_name: &str, channel_name: &str) {
        let BrokerState {
            topics, clients, ..
        } = state;
        let Some(topic) = topics.get_mut(topic_name) else {
            return;
        };
        let Topic {
            id,
            ephemeral,
            handed_over,
            log_start,
            cache,
            channels,
            ..
        } = topic;
        let Some(channel) = channels.get_mut(channel_name) else {
            return;
        };
        let view = TopicView {
            topic_id: *id,
            handed_over: *handed_over,
            log_start: *log_start,
            cache,
            store: (!*ephemeral).then_some(&*self.store),
        };
        let batch = channel.dispatch(&view, clients, clock::now_ms());
        if batch.is_empty() {
            return;
        }
        let durable = !*ephemeral && !channel.ephemeral;
        self.record_deliveries(durable, channel.id, channel.read_cursor, batch);
    }

    /// Sends the frames of `batch` — for a durable channel only after the
    /// deliveries (and so the attempt counts) are on disk.
    fn record_deliveries(
        &self,
        durable: bool,
        channel: u64,
        read_cursor: u64,
        batch: DeliveryBatch,
    ) {
        let DeliveryBatch {
            frames,
            redeliveries,
            first_time,
            sampled_out,
        } = batch;
        if !durable {
            send_frames(frames);
            return;
        }
        if !sampled_out.is_empty() {
            let command = Command::Finish {
                channel,
                offsets: sampled_out,
            };
            self.submit_detached(command, Urgency::Lazy);
        }
        if frames.is_empty() {
            return;
        }
        debug_assert!(first_time || !redeliveries.is_empty());
        let command = Command::Deliver {
            channel,
            delivered_up_to: read_cursor,
            redeliveries,
        };
        self.committer.submit(
            command,
            Urgency::Now,
            Box::new(move |result| match result {
                Ok(_) => send_frames(frames),
                Err(error) => {
                    tracing::error!(%error, "recording deliveries failed; not sending them")
                }
            }),
        );
    }
}

/// The times every message of one publish carries.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    timestamp_ns: i64,
    deliver_at_ms: u64,
}

impl Stamp {
    /// The messages of one publish, at consecutive offsets from `first_offset`.
    fn messages(self, topic_id: u64, first_offset: u64, bodies: Vec<Bytes>) -> Vec<Arc<Message>> {
        (first_offset..)
            .zip(bodies)
            .map(|(offset, body)| {
                let message = Message::new(
                    topic_id,
                    offset,
                    self.timestamp_ns,
                    self.deliver_at_ms,
                    body,
                );
                Arc::new(message)
            })
            .collect()
    }
}

/// What admin commands need to know of a channel's topic.
struct TopicFacts {
    ephemeral: bool,
    handed_over: u64,
}

/// The named channel and facts of its topic, or nsqd's not-found errors.
fn find_channel<'a>(
    state: &'a mut BrokerState,
    topic_name: &str,
    channel_name: &str,
) -> Result<(TopicFacts, &'a mut Channel), BrokerError> {
    let topic = state
        .topics
        .get_mut(topic_name)
        .ok_or(BrokerError::TopicNotFound)?;
    let facts = TopicFacts {
        ephemeral: topic.ephemeral,
        handed_over: topic.handed_over,
    };
    let channel = topic
        .channels
        .get_mut(channel_name)
        .ok_or(BrokerError::ChannelNotFound)?;
    Ok((facts, channel))
}

/// A publish on its way to the disk.
pub enum PublishTicket {
    Done(Result<(), BrokerError>),
    Waiting(oneshot::Receiver<Result<Outcome, CommitError>>),
}

impl PublishTicket {
    /// Resolves once the messages are durable (or refused).
    pub async fn wait(self) -> Result<(), BrokerError> {
        match self {
            PublishTicket::Done(result) => result,
            PublishTicket::Waiting(receiver) => {
                receiver.await.map_err(|_| BrokerError::Exiting)??;
                Ok(())
            }
        }
    }
}

fn send_frames(frames: Vec<(UnboundedSender<Outbound>, Arc<Message>, u16)>) {
    for (outbound, message, attempts) in frames {
        let _ = outbound.send(Outbound::Message { message, attempts });
    }
}

/// Drops the channel (if it is still the one with this id) and closes its
/// clients' connections. An ephemeral topic goes with its last channel.
fn remove_channel(state: &mut BrokerState, topic_name: &str, channel_name: &str, channel_id: u64) {
    let Some(topic) = state.topics.get_mut(topic_name) else {
        return;
    };
    if topic
        .channels
        .get(channel_name)
        .is_none_or(|c| c.id != channel_id)
    {
        return;
    }
    let channel = topic.channels.remove(channel_name).expect("checked above");
    if topic.ephemeral && topic.channels.is_empty() {
        state.topics.remove(topic_name);
    }
    state.topology_changed();
    disconnect_clients(&mut state.clients, &channel);
}

/// Adds a memory-only channel to the (ephemeral) topic; the topic hands it
/// what arrives from now on, like any later channel.
fn add_memory_channel(state: &mut BrokerState, topic_name: &str, channel_name: &str) {
    let id = state.next_local_id;
    state.next_local_id += 1;
    let topic = state.topics.get_mut(topic_name).expect("caller created it");
    debug_assert!(topic.ephemeral);
    let channel = Channel::new(id, channel_name.to_owned(), true, topic.handed_over);
    topic.channels.insert(channel_name.to_owned(), channel);
    if !topic.paused {
        topic.handed_over = topic.next_offset;
    }
}

/// Drops what the channel (if it is still the one with this id) holds below
/// `floor`, and gives its clients back the in-flight slots it held.
fn empty_channel(
    state: &mut BrokerState,
    topic_name: &str,
    channel_name: &str,
    channel_id: u64,
    floor: u64,
) {
    let channel = state
        .topics
        .get_mut(topic_name)
        .and_then(|t| t.channels.get_mut(channel_name))
        .filter(|c| c.id == channel_id);
    let Some(channel) = channel else {
        return;
    };
    for client in channel.empty(floor) {
        if let Some(client) = state.clients.get_mut(&client) {
            client.in_flight_count = client.in_flight_count.saturating_sub(1);
        }
    }
}

/// Drops the topic (if it is still the one with this id) with its channels,
/// and closes the connections of their clients.
fn remove_topic(state: &mut BrokerState, name: &str, topic_id: u64) {
    if state.topics.get(name).is_none_or(|t| t.id != topic_id) {
        return;
    }
    let topic = state.topics.remove(name).expect("checked above");
    state.topology_changed();
    for channel in topic.channels.values() {
        disconnect_clients(&mut state.clients, channel);
    }
}

/// nsqd closes the connections of a deleted channel's subscribers. Until
/// the connection is gone the client receives nothing more, and its FIN,
/// REQ and TOUCH find no message in flight.
fn disconnect_clients(clients: &mut HashMap<ClientId, Client>, channel: &Channel) {
    for id in &channel.clients {
        if let Some(client) = clients.get_mut(id) {
            client.subscription = None;
            client.ready_count = 0;
            client.in_flight_count = 0;
            client.closing = true;
            let _ = client.outbound.send(Outbound::Close);
        }
    }
}
