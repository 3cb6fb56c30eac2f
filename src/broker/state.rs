//! The broker's in-memory state behind its one lock: topics (by name, with
//! an index by id for the applied-entries stream), the channel-to-topic
//! index, connected clients, and the topology watch.
//!
//! Topics and channels enter and leave only through the methods here, so
//! the indexes and the topology watch never disagree with the maps.

use std::collections::HashMap;

use tokio::sync::watch;

use super::channel::Channel;
use super::client::{Client, ClientId, Outbound};
use super::topic::Topic;

/// Node-local ids of memory-only topics and channels start here, far above
/// any id the state machine hands out.
const FIRST_LOCAL_ID: u64 = 1 << 40;

/// Whether this node may hand messages to consumers.
///
/// Single node: always. Redundancy mode: only the group's leader, and only
/// once it has rebuilt its channels from the state as of its own first
/// entry of that term (every earlier entry applied): `led_term` comes from
/// raft's role, `rebuilt_term` from the applied-entries stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    single_node: bool,
    led_term: Option<u64>,
    rebuilt_term: Option<u64>,
    /// Bumped at every rebuild: deliveries recorded before it are not sent.
    pub generation: u64,
}

impl Leadership {
    pub fn single_node() -> Self {
        Leadership {
            single_node: true,
            led_term: None,
            rebuilt_term: None,
            generation: 0,
        }
    }

    pub fn replicated() -> Self {
        Leadership {
            single_node: false,
            ..Leadership::single_node()
        }
    }

    pub fn may_dispatch(&self) -> bool {
        self.single_node || (self.led_term.is_some() && self.led_term == self.rebuilt_term)
    }

    pub fn is_replicated(&self) -> bool {
        !self.single_node
    }

    pub fn set_led_term(&mut self, term: Option<u64>) {
        self.led_term = term;
    }

    pub fn rebuilt(&mut self, leader_term: Option<u64>) {
        self.rebuilt_term = leader_term;
        self.generation += 1;
    }
}

pub(crate) struct BrokerState {
    topics: HashMap<String, Topic>,
    topic_names: HashMap<u64, String>,
    /// Channel id → its topic's id.
    channel_topics: HashMap<u64, u64>,
    pub(crate) clients: HashMap<ClientId, Client>,
    next_client_id: ClientId,
    next_local_id: u64,
    /// Bumped whenever a topic or channel appears or disappears.
    topology: watch::Sender<u64>,
    pub(crate) leadership: Leadership,
}

impl BrokerState {
    pub fn new(recovered: Vec<Topic>, leadership: Leadership) -> Self {
        let mut state = BrokerState {
            topics: HashMap::new(),
            topic_names: HashMap::new(),
            channel_topics: HashMap::new(),
            clients: HashMap::new(),
            next_client_id: 1,
            next_local_id: FIRST_LOCAL_ID,
            topology: watch::Sender::new(0),
            leadership,
        };
        for topic in recovered {
            state.insert_topic(topic);
        }
        state
    }

    pub fn topics(&self) -> impl Iterator<Item = &Topic> {
        self.topics.values()
    }

    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    pub fn topic_mut(&mut self, name: &str) -> Option<&mut Topic> {
        self.topics.get_mut(name)
    }

    pub fn topic_by_id_mut(&mut self, id: u64) -> Option<&mut Topic> {
        let name = self.topic_names.get(&id)?;
        self.topics.get_mut(name)
    }

    /// The id of the topic that holds channel `id`.
    pub fn topic_of_channel(&self, id: u64) -> Option<u64> {
        self.channel_topics.get(&id).copied()
    }

    /// The channel with this id, and its topic.
    pub fn channel_by_id_mut(&mut self, id: u64) -> Option<&mut Channel> {
        let topic = self.topic_of_channel(id)?;
        self.topic_by_id_mut(topic)?.channel_by_id_mut(id)
    }

    /// The topic (mutable) and every client, borrowed together.
    pub fn topic_and_clients(
        &mut self,
        topic_id: u64,
    ) -> Option<(&mut Topic, &mut HashMap<ClientId, Client>)> {
        let name = self.topic_names.get(&topic_id)?;
        let topic = self.topics.get_mut(name)?;
        Some((topic, &mut self.clients))
    }

    /// A client and the name of topic `topic_id`, borrowed together.
    pub fn client_and_topic_name(
        &mut self,
        client: ClientId,
        topic_id: u64,
    ) -> Option<(&mut Client, &str)> {
        let name = self.topic_names.get(&topic_id)?;
        let client = self.clients.get_mut(&client)?;
        Some((client, name.as_str()))
    }

    pub fn next_client_id(&mut self) -> ClientId {
        let id = self.next_client_id;
        self.next_client_id += 1;
        id
    }

    /// An id for a memory-only topic or channel.
    pub fn next_local_id(&mut self) -> u64 {
        let id = self.next_local_id;
        self.next_local_id += 1;
        id
    }

    pub fn subscribe_topology(&self) -> watch::Receiver<u64> {
        self.topology.subscribe()
    }

    fn topology_changed(&self) {
        self.topology
            .send_modify(|version| *version = version.wrapping_add(1));
    }

    /// Replaces every durable topic with `rebuilt` (the recovery path, run
    /// again at a leadership change or after a snapshot): memory-only
    /// topics stay, subscribed clients join their channel again with
    /// nothing in flight, and clients whose channel is gone are closed.
    pub fn replace_durable_topics(&mut self, rebuilt: Vec<Topic>) {
        let durable: Vec<u64> = self
            .topics
            .values()
            .filter(|t| !t.is_ephemeral())
            .map(|t| t.id())
            .collect();
        let mut before = HashMap::new();
        for id in durable {
            let name = self.topic_names.remove(&id).expect("indexed");
            let topic = self.topics.remove(&name).expect("indexed");
            for channel in topic.channels() {
                self.channel_topics.remove(&channel.id());
            }
            before.insert(id, topic);
        }
        for mut topic in rebuilt {
            if let Some(old) = before.get_mut(&topic.id()) {
                topic.keep_counters_of(old);
            }
            self.insert_topic(topic);
        }
        let subscribed: Vec<(ClientId, (u64, u64))> = self
            .clients
            .values()
            .filter_map(|c| c.subscription.map(|s| (c.id, s)))
            .collect();
        for (client_id, (topic_id, channel_id)) in subscribed {
            let memory_only = self
                .topic_names
                .get(&topic_id)
                .and_then(|name| self.topics.get(name))
                .is_some_and(Topic::is_ephemeral);
            if memory_only {
                continue;
            }
            let client = self.clients.get_mut(&client_id).expect("listed above");
            client.in_flight_count = 0;
            let channel = self
                .channel_topics
                .get(&channel_id)
                .and_then(|topic| self.topic_names.get(topic))
                .and_then(|name| self.topics.get_mut(name))
                .and_then(|topic| topic.channel_by_id_mut(channel_id));
            match channel {
                Some(channel) => channel.add_client(client_id),
                None => {
                    client.subscription = None;
                    client.ready_count = 0;
                    client.closing = true;
                    let _ = client.outbound.send(Outbound::Close);
                }
            }
        }
        self.topology_changed();
    }

    /// This node stopped leading: nothing stays in flight here.
    /// (Memory-only topics are this node's own and keep theirs.)
    pub fn release_in_flight(&mut self) {
        let durable = self.topics.values_mut().filter(|t| !t.is_ephemeral());
        let released: Vec<ClientId> = durable
            .flat_map(|topic| {
                topic
                    .channels_mut()
                    .flat_map(Channel::release_in_flight)
                    .collect::<Vec<_>>()
            })
            .collect();
        for id in released {
            if let Some(client) = self.clients.get_mut(&id) {
                client.in_flight_count = client.in_flight_count.saturating_sub(1);
            }
        }
    }

    /// Adds the topic unless one of its name exists (then nothing changes).
    pub fn insert_topic(&mut self, topic: Topic) {
        if self.topics.contains_key(topic.name()) {
            return;
        }
        self.topic_names.insert(topic.id(), topic.name().to_owned());
        for channel in topic.channels() {
            self.channel_topics.insert(channel.id(), topic.id());
        }
        self.topics.insert(topic.name().to_owned(), topic);
        self.topology_changed();
    }

    /// Adds the channel to topic `topic_id` unless one of its name exists.
    pub fn insert_channel(&mut self, topic_id: u64, channel: Channel) {
        let Some(topic) = self.topic_by_id_mut(topic_id) else {
            return;
        };
        if topic.has_channel(channel.name()) {
            return;
        }
        let id = channel.id();
        topic.add_channel(channel);
        self.channel_topics.insert(id, topic_id);
        self.topology_changed();
    }

    /// Drops the topic with this id and its channels, and closes the
    /// connections of their clients.
    pub fn remove_topic(&mut self, topic_id: u64) {
        let Some(name) = self.topic_names.remove(&topic_id) else {
            return;
        };
        let topic = self.topics.remove(&name).expect("indexed");
        for channel in topic.channels() {
            self.channel_topics.remove(&channel.id());
            disconnect_clients(&mut self.clients, channel);
        }
        self.topology_changed();
    }

    /// Drops the channel with this id; its clients are disconnected when
    /// `disconnect` (a delete), left alone otherwise (the last client of a
    /// memory-only channel left). A memory-only topic goes with its last
    /// channel.
    pub fn remove_channel(&mut self, channel_id: u64, disconnect: bool) {
        let Some(topic_id) = self.channel_topics.remove(&channel_id) else {
            return;
        };
        let topic = self.topic_by_id_mut(topic_id).expect("indexed");
        let name = topic
            .channels()
            .find(|c| c.id() == channel_id)
            .map(|c| c.name().to_owned())
            .expect("indexed");
        let channel = topic.remove_channel(&name).expect("found above");
        let drop_topic = topic.is_ephemeral() && !topic.has_channels();
        if disconnect {
            disconnect_clients(&mut self.clients, &channel);
        }
        if drop_topic {
            self.remove_topic(topic_id);
        } else {
            self.topology_changed();
        }
    }
}

/// nsqd closes the connections of a deleted channel's subscribers. Until
/// the connection is gone the client receives nothing more, and its FIN,
/// REQ and TOUCH find no message in flight.
fn disconnect_clients(clients: &mut HashMap<ClientId, Client>, channel: &Channel) {
    for id in channel.clients() {
        if let Some(client) = clients.get_mut(id) {
            client.subscription = None;
            client.ready_count = 0;
            client.in_flight_count = 0;
            client.closing = true;
            let _ = client.outbound.send(Outbound::Close);
        }
    }
}
