//! The registry of a lookupd (`docs/nsq-wire.md` §6.2): which nsqd-like nodes
//! (producers) hold which topics and channels. Pure data: no sockets and no
//! clock — every time is passed in as nanoseconds since the Unix epoch — so
//! it is tested without a network.
//!
//! A registration is a key `(category, key, subkey)`: `client` (one per
//! identified node), `topic T`, `channel T C`. A key maps to the set of its
//! producers and may exist with none (created over HTTP, or left behind when
//! a node disconnects). A producer in a topic registration may carry a
//! tombstone, which hides it from `/lookup` for the tombstone lifetime.

use crate::protocol::names::is_ephemeral;
use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::protocol::NodeInfo;

/// A registration's category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    Client,
    Topic,
    Channel,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Client => "client",
            Category::Topic => "topic",
            Category::Channel => "channel",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Registration {
    pub category: Category,
    pub key: String,
    pub subkey: String,
}

impl Registration {
    pub fn client() -> Self {
        Self::new(Category::Client, "", "")
    }

    pub fn topic(topic: &str) -> Self {
        Self::new(Category::Topic, topic, "")
    }

    pub fn channel(topic: &str, channel: &str) -> Self {
        Self::new(Category::Channel, topic, channel)
    }

    fn new(category: Category, key: &str, subkey: &str) -> Self {
        Registration {
            category,
            key: key.to_owned(),
            subkey: subkey.to_owned(),
        }
    }
}

/// A connection's identity: its peer address (`ip:port`), unique per
/// connection, as nsqlookupd uses it.
pub type PeerId = String;

/// What a node told in IDENTIFY, plus its address and liveness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerInfo {
    pub remote_address: String,
    #[serde(flatten)]
    pub node: NodeInfo,
    /// Last IDENTIFY or PING, ns since the epoch.
    #[serde(skip)]
    pub last_update_ns: i64,
}

/// A producer's place in one registration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Membership {
    /// When the producer was tombstoned for this registration.
    tombstoned_at_ns: Option<i64>,
}

/// How long producers stay visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// A producer silent for longer is hidden (`--inactive-producer-timeout`).
    pub inactive_producer_timeout_ns: i64,
    /// A tombstone hides a producer from `/lookup` this long (`--tombstone-lifetime`).
    pub tombstone_lifetime_ns: i64,
}

/// A producer as `/nodes` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    #[serde(flatten)]
    pub peer: PeerInfo,
    /// `tombstones[i]` belongs to `topics[i]`; the two always have equal length.
    pub tombstones: Vec<bool>,
    pub topics: Vec<String>,
}

/// One entry of `/debug`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DebugProducer {
    pub id: String,
    #[serde(flatten)]
    pub node: NodeInfo,
    pub last_update: i64,
    pub tombstoned: bool,
    pub tombstoned_at: i64,
}

#[derive(Debug, Default)]
pub struct Registry {
    peers: HashMap<PeerId, PeerInfo>,
    registrations: BTreeMap<Registration, BTreeMap<PeerId, Membership>>,
}

impl Registry {
    // ----- what nodes say over TCP ---------------------------------------

    /// IDENTIFY: the node becomes a producer of the `client` registration.
    pub fn identify(&mut self, id: &str, peer: PeerInfo) {
        self.peers.insert(id.to_owned(), peer);
        self.add_producer(Registration::client(), id);
    }

    /// PING: the node is alive.
    pub fn ping(&mut self, id: &str, now_ns: i64) {
        if let Some(peer) = self.peers.get_mut(id) {
            peer.last_update_ns = now_ns;
        }
    }

    /// `REGISTER topic [channel]`.
    pub fn register(&mut self, id: &str, topic: &str, channel: Option<&str>) {
        if let Some(channel) = channel {
            self.add_producer(Registration::channel(topic, channel), id);
        }
        self.add_producer(Registration::topic(topic), id);
    }

    /// `UNREGISTER topic [channel]`, with nsqlookupd's ephemeral rules: an
    /// `#ephemeral` key left without producers is removed.
    pub fn unregister(&mut self, id: &str, topic: &str, channel: Option<&str>) {
        match channel {
            Some(channel) => {
                let key = Registration::channel(topic, channel);
                let left = self.remove_producer(&key, id);
                if left == Some(0) && is_ephemeral(channel) {
                    self.registrations.remove(&key);
                }
            }
            None => {
                for key in self.keys_of(Category::Channel, topic) {
                    self.remove_producer(&key, id);
                }
                let key = Registration::topic(topic);
                let left = self.remove_producer(&key, id);
                if left == Some(0) && is_ephemeral(topic) {
                    self.registrations.remove(&key);
                }
            }
        }
    }

    /// The connection closed: the node leaves every registration; the keys stay.
    pub fn disconnect(&mut self, id: &str) {
        for producers in self.registrations.values_mut() {
            producers.remove(id);
        }
        self.peers.remove(id);
    }

    // ----- what operators do over HTTP ------------------------------------

    /// Adds a key with no producer (if absent).
    pub fn add_registration(&mut self, key: Registration) {
        self.registrations.entry(key).or_default();
    }

    /// Removes a key; `false` if it did not exist.
    pub fn remove_registration(&mut self, key: &Registration) -> bool {
        self.registrations.remove(key).is_some()
    }

    /// Removes the topic's key and every channel key of the topic.
    pub fn remove_topic(&mut self, topic: &str) {
        for key in self.keys_of(Category::Channel, topic) {
            self.registrations.remove(&key);
        }
        self.registrations.remove(&Registration::topic(topic));
    }

    /// Tombstones, in `topic`'s registration, every producer whose
    /// `broadcast_address:http_port` is `node`.
    pub fn tombstone(&mut self, topic: &str, node: &str, now_ns: i64) {
        let Some(producers) = self.registrations.get_mut(&Registration::topic(topic)) else {
            return;
        };
        for (id, membership) in producers.iter_mut() {
            if self
                .peers
                .get(id)
                .is_some_and(|p| p.node.http_node() == node)
            {
                membership.tombstoned_at_ns = Some(now_ns);
            }
        }
    }

    // ----- queries ---------------------------------------------------------

    /// Every topic key (with or without producers), sorted.
    pub fn topics(&self) -> Vec<String> {
        self.registrations
            .keys()
            .filter(|r| r.category == Category::Topic)
            .map(|r| r.key.clone())
            .collect()
    }

    /// Every channel key of `topic`, sorted.
    pub fn channels(&self, topic: &str) -> Vec<String> {
        self.keys_of(Category::Channel, topic)
            .into_iter()
            .map(|r| r.subkey)
            .collect()
    }

    /// Whether the topic key exists.
    pub fn has_topic(&self, topic: &str) -> bool {
        self.registrations.contains_key(&Registration::topic(topic))
    }

    /// The producers of `topic` that are active and not tombstoned.
    pub fn lookup(&self, topic: &str, now_ns: i64, lifetimes: Lifetimes) -> Vec<PeerInfo> {
        let Some(producers) = self.registrations.get(&Registration::topic(topic)) else {
            return Vec::new();
        };
        producers
            .iter()
            .filter(|(_, m)| !is_tombstoned(m, now_ns, lifetimes.tombstone_lifetime_ns))
            .filter_map(|(id, _)| self.peers.get(id))
            .filter(|p| is_active(p, now_ns, lifetimes.inactive_producer_timeout_ns))
            .cloned()
            .collect()
    }

    /// Every identified, active node with its topics and their tombstones.
    pub fn nodes(&self, now_ns: i64, lifetimes: Lifetimes) -> Vec<Node> {
        let Some(clients) = self.registrations.get(&Registration::client()) else {
            return Vec::new();
        };
        clients
            .keys()
            .filter_map(|id| self.peers.get(id).map(|peer| (id, peer)))
            .filter(|(_, p)| is_active(p, now_ns, lifetimes.inactive_producer_timeout_ns))
            .map(|(id, peer)| {
                let memberships: Vec<(String, bool)> = self
                    .registrations
                    .iter()
                    .filter(|(r, _)| r.category == Category::Topic)
                    .filter_map(|(r, producers)| {
                        let membership = producers.get(id)?;
                        let tombstoned =
                            is_tombstoned(membership, now_ns, lifetimes.tombstone_lifetime_ns);
                        Some((r.key.clone(), tombstoned))
                    })
                    .collect();
                let (topics, tombstones) = memberships.into_iter().unzip();
                Node {
                    peer: peer.clone(),
                    tombstones,
                    topics,
                }
            })
            .collect()
    }

    /// Every registration as `category:key:subkey` with its producers.
    pub fn debug(&self) -> BTreeMap<String, Vec<DebugProducer>> {
        self.registrations
            .iter()
            .map(|(r, producers)| {
                let name = format!("{}:{}:{}", r.category.as_str(), r.key, r.subkey);
                let listed = producers
                    .iter()
                    .filter_map(|(id, m)| {
                        let p = self.peers.get(id)?;
                        Some(DebugProducer {
                            id: id.clone(),
                            node: p.node.clone(),
                            last_update: p.last_update_ns,
                            tombstoned: m.tombstoned_at_ns.is_some(),
                            tombstoned_at: m.tombstoned_at_ns.unwrap_or(0),
                        })
                    })
                    .collect();
                (name, listed)
            })
            .collect()
    }

    // ----- internals -------------------------------------------------------

    fn add_producer(&mut self, key: Registration, id: &str) {
        // Re-registering keeps the existing membership (and its tombstone).
        self.registrations
            .entry(key)
            .or_default()
            .entry(id.to_owned())
            .or_default();
    }

    /// Removes `id` from `key`; how many producers are left (`None`: no key).
    fn remove_producer(&mut self, key: &Registration, id: &str) -> Option<usize> {
        let producers = self.registrations.get_mut(key)?;
        producers.remove(id);
        Some(producers.len())
    }

    fn keys_of(&self, category: Category, key: &str) -> Vec<Registration> {
        self.registrations
            .keys()
            .filter(|r| r.category == category && r.key == key)
            .cloned()
            .collect()
    }
}

fn is_active(peer: &PeerInfo, now_ns: i64, timeout_ns: i64) -> bool {
    now_ns.saturating_sub(peer.last_update_ns) <= timeout_ns
}

fn is_tombstoned(membership: &Membership, now_ns: i64, lifetime_ns: i64) -> bool {
    membership
        .tombstoned_at_ns
        .is_some_and(|at| now_ns.saturating_sub(at) < lifetime_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND_NS: i64 = 1_000_000_000;
    const LIFETIMES: Lifetimes = Lifetimes {
        inactive_producer_timeout_ns: 300 * SECOND_NS,
        tombstone_lifetime_ns: 45 * SECOND_NS,
    };

    fn peer(address: &str, now_ns: i64) -> PeerInfo {
        PeerInfo {
            remote_address: format!("{address}:5000"),
            node: NodeInfo {
                hostname: address.to_owned(),
                broadcast_address: address.to_owned(),
                tcp_port: 4150,
                http_port: 4151,
                version: "1.3.0".to_owned(),
            },
            last_update_ns: now_ns,
        }
    }

    fn addresses(peers: &[PeerInfo]) -> Vec<&str> {
        peers
            .iter()
            .map(|p| p.node.broadcast_address.as_str())
            .collect()
    }

    #[test]
    fn register_adds_topic_and_channel_keys() {
        let mut r = Registry::default();
        r.identify("a", peer("a", 0));
        r.register("a", "t", Some("c"));
        r.register("a", "u", None);
        assert_eq!(r.topics(), ["t", "u"]);
        assert_eq!(r.channels("t"), ["c"]);
        assert!(r.channels("u").is_empty());
        assert_eq!(addresses(&r.lookup("t", 0, LIFETIMES)), ["a"]);
    }

    #[test]
    fn disconnect_removes_the_producer_but_keeps_keys() {
        let mut r = Registry::default();
        r.identify("a", peer("a", 0));
        r.register("a", "t", Some("c"));
        r.disconnect("a");
        assert_eq!(r.topics(), ["t"]);
        assert_eq!(r.channels("t"), ["c"]);
        assert!(r.lookup("t", 0, LIFETIMES).is_empty());
        assert!(r.nodes(0, LIFETIMES).is_empty());
    }

    #[test]
    fn unregistering_an_ephemeral_channel_or_topic_removes_its_key_when_last() {
        let mut r = Registry::default();
        r.identify("a", peer("a", 0));
        r.identify("b", peer("b", 0));
        r.register("a", "t", Some("c#ephemeral"));
        r.register("b", "t", Some("c#ephemeral"));
        r.unregister("a", "t", Some("c#ephemeral"));
        assert_eq!(r.channels("t"), ["c#ephemeral"]);
        r.unregister("b", "t", Some("c#ephemeral"));
        assert!(r.channels("t").is_empty());

        r.register("a", "e#ephemeral", Some("c"));
        r.unregister("a", "e#ephemeral", None);
        assert!(!r.has_topic("e#ephemeral"));
        // A durable channel key stays, without producers.
        assert_eq!(r.channels("e#ephemeral"), ["c"]);
        r.register("a", "d", None);
        r.unregister("a", "d", None);
        assert!(r.has_topic("d"));
    }

    #[test]
    fn inactive_producers_are_hidden_until_they_ping() {
        let mut r = Registry::default();
        r.identify("a", peer("a", 0));
        r.register("a", "t", None);
        let late = LIFETIMES.inactive_producer_timeout_ns + 1;
        assert!(r.lookup("t", late, LIFETIMES).is_empty());
        assert!(r.nodes(late, LIFETIMES).is_empty());
        r.ping("a", late);
        assert_eq!(addresses(&r.lookup("t", late, LIFETIMES)), ["a"]);
    }

    #[test]
    fn a_tombstone_hides_a_node_from_lookup_for_its_lifetime_only() {
        let mut r = Registry::default();
        r.identify("a", peer("a", 0));
        r.identify("b", peer("b", 0));
        r.register("a", "t", None);
        r.register("a", "u", None);
        r.register("b", "t", None);
        r.tombstone("t", "a:4151", 10);
        assert_eq!(addresses(&r.lookup("t", 10, LIFETIMES)), ["b"]);
        assert_eq!(addresses(&r.lookup("u", 10, LIFETIMES)), ["a"]);
        // Re-registering does not clear it.
        r.register("a", "t", None);
        assert_eq!(addresses(&r.lookup("t", 11, LIFETIMES)), ["b"]);
        let nodes = r.nodes(11, LIFETIMES);
        let a = nodes.iter().find(|n| n.peer.node.hostname == "a").unwrap();
        assert_eq!(a.topics, ["t", "u"]);
        assert_eq!(a.tombstones, [true, false]);
        let after = 10 + LIFETIMES.tombstone_lifetime_ns;
        assert_eq!(addresses(&r.lookup("t", after, LIFETIMES)), ["a", "b"]);
    }

    #[test]
    fn removing_a_topic_removes_its_channels() {
        let mut r = Registry::default();
        r.add_registration(Registration::channel("t", "c"));
        r.add_registration(Registration::topic("t"));
        r.add_registration(Registration::channel("t2", "c"));
        r.remove_topic("t");
        assert!(!r.has_topic("t"));
        assert!(r.channels("t").is_empty());
        assert_eq!(r.channels("t2"), ["c"]);
    }

    #[test]
    fn nodes_keep_topics_and_tombstones_in_step() {
        let mut r = Registry::default();
        r.identify("a", peer("a", 0));
        for topic in ["x", "y", "z"] {
            r.register("a", topic, Some("c"));
        }
        r.tombstone("y", "a:4151", 0);
        let nodes = r.nodes(0, LIFETIMES);
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].topics.len(), nodes[0].tombstones.len());
        assert_eq!(nodes[0].tombstones, [false, true, false]);
        let debug = r.debug();
        assert!(debug["topic:y:"][0].tombstoned);
        assert_eq!(debug["channel:x:c"].len(), 1);
        assert_eq!(debug["client::"][0].id, "a");
    }
}
