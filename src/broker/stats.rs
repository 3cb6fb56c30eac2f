//! A point-in-time view of every topic, channel and client, taken under the
//! broker lock so its counts agree with each other (`docs/nsq-wire.md` §5.7, §4.7).
//!
//! Depths count messages, not bytes. A durable topic or channel keeps every
//! message it counts in its on-disk log, so its `backend_depth` equals its
//! `depth`; an `#ephemeral` one keeps them only in memory (`backend_depth`
//! 0).
//!
//! A channel reads its topic's log lazily, when a client is ready. Messages
//! handed over but not yet read count in the channel's `message_count`
//! (received) and, when their deferred delivery time has not come, in
//! `deferred_count` rather than `depth`. That time is known for the messages
//! still in the topic's memory cache (`--mem-queue-size` most recent); an
//! unread deferred message older than that counts in `depth` until a
//! dispatch reads it.

use super::client::{Client, ClientAuth, ClientId, TransportInfo};
use super::latency::{summarize, LatencySummary};
use super::{Broker, BrokerState};
use crate::clock;

/// nsqd's numeric client states, as `/stats` shows them.
pub const CLIENT_STATE_INIT: u8 = 0;
pub const CLIENT_STATE_SUBSCRIBED: u8 = 3;
pub const CLIENT_STATE_CLOSING: u8 = 4;

/// Which part of the broker to describe.
#[derive(Debug, Clone, Default)]
pub struct StatsFilter {
    /// Only this topic.
    pub topic: Option<String>,
    /// Only this channel (topics without it are left out).
    pub channel: Option<String>,
    /// Whether to list each channel's clients and the producers.
    pub include_clients: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicSnapshot {
    pub name: String,
    pub paused: bool,
    pub depth: u64,
    pub backend_depth: u64,
    pub message_count: u64,
    pub message_bytes: u64,
    pub channels: Vec<ChannelSnapshot>,
    /// The channels' latencies merged; `None` unless configured.
    pub e2e_latency: Option<LatencySummary>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChannelSnapshot {
    pub name: String,
    pub paused: bool,
    pub depth: u64,
    pub backend_depth: u64,
    pub in_flight_count: u64,
    pub deferred_count: u64,
    pub message_count: u64,
    pub requeue_count: u64,
    pub timeout_count: u64,
    pub client_count: u64,
    /// Empty unless clients were asked for.
    pub clients: Vec<ClientSnapshot>,
    /// `None` unless e2e latency quantiles are configured.
    pub e2e_latency: Option<LatencySummary>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSnapshot {
    pub client_id: String,
    pub hostname: String,
    pub user_agent: String,
    pub remote_address: String,
    pub state: u8,
    pub ready_count: u64,
    pub in_flight_count: u64,
    pub message_count: u64,
    pub finish_count: u64,
    pub requeue_count: u64,
    pub connect_ts: i64,
    pub sample_rate: u8,
    /// Messages published over TCP, per topic, in first-publish order.
    pub pub_counts: Vec<(String, u64)>,
    pub transport: TransportInfo,
    pub auth: ClientAuth,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsSnapshot {
    /// Sorted by name; `None` when the filtered topic does not exist.
    pub topics: Option<Vec<TopicSnapshot>>,
    /// TCP clients that have published (sorted by client number).
    pub producers: Vec<ClientSnapshot>,
}

impl ClientSnapshot {
    fn of(client: &Client) -> ClientSnapshot {
        let state = if client.closing {
            CLIENT_STATE_CLOSING
        } else if client.subscription.is_some() {
            CLIENT_STATE_SUBSCRIBED
        } else {
            CLIENT_STATE_INIT
        };
        ClientSnapshot {
            client_id: client.info.client_id.clone(),
            hostname: client.info.hostname.clone(),
            user_agent: client.info.user_agent.clone(),
            remote_address: client.info.remote_address.clone(),
            transport: client.transport.clone(),
            state,
            ready_count: client.ready_count,
            in_flight_count: client.in_flight_count,
            message_count: client.message_count,
            finish_count: client.finish_count,
            requeue_count: client.requeue_count,
            connect_ts: client.info.connect_ts_s,
            sample_rate: client.sample_rate,
            pub_counts: client.pub_counts.clone(),
            auth: client.info.auth.clone(),
        }
    }
}

impl Broker {
    /// `Ok` while the node takes writes; else why not (a write or fsync
    /// failed, so it refuses writes from then on; or it is shutting down).
    pub fn health(&self) -> Result<(), String> {
        if let Some(error) = self.log().failure() {
            return Err(format!("NOK - {error}"));
        }
        if self.is_exiting() {
            return Err("NOK - exiting".to_owned());
        }
        Ok(())
    }

    /// Everything `filter` selects, read under one lock.
    pub fn stats(&self, filter: &StatsFilter) -> StatsSnapshot {
        let now_ms = clock::now_ms();
        let e2e = &self.options.e2e_latency;
        let state = self.lock();
        let mut names: Vec<&str> = match &filter.topic {
            Some(name) => state.topic(name).map(|t| t.name()).into_iter().collect(),
            None => state.topics().map(|t| t.name()).collect(),
        };
        if filter.topic.is_some() && names.is_empty() {
            return StatsSnapshot {
                topics: None,
                producers: Vec::new(),
            };
        }
        names.sort();
        let mut topics = Vec::with_capacity(names.len());
        for name in names {
            let topic = state.topic(name).expect("listed above");
            if let Some(wanted) = &filter.channel {
                if !topic.has_channel(wanted) {
                    continue;
                }
            }
            let on_disk = |depth: u64, ephemeral: bool| if ephemeral { 0 } else { depth };
            let channels = topic
                .channels()
                .filter(|c| {
                    filter
                        .channel
                        .as_ref()
                        .is_none_or(|wanted| c.name() == wanted)
                })
                .map(|channel| {
                    // The unread range was handed over but not yet read by
                    // a dispatch: received by the channel, and deferred if
                    // its delivery time has not come.
                    let unread = topic.unread(channel.read_cursor());
                    let unread_deferred = topic.cached_deferred(channel.read_cursor(), now_ms);
                    let depth = channel
                        .depth(topic.handed_over())
                        .saturating_sub(unread_deferred);
                    let counters = channel.counters();
                    let clients = if filter.include_clients {
                        channel
                            .clients()
                            .iter()
                            .filter_map(|id| state.clients.get(id))
                            .map(ClientSnapshot::of)
                            .collect()
                    } else {
                        Vec::new()
                    };
                    ChannelSnapshot {
                        name: channel.name().to_owned(),
                        paused: channel.is_paused(),
                        depth,
                        backend_depth: on_disk(
                            depth,
                            channel.is_ephemeral() || topic.is_ephemeral(),
                        ),
                        in_flight_count: channel.in_flight_count() as u64,
                        deferred_count: channel.deferred_count() as u64 + unread_deferred,
                        message_count: counters.message_count + unread,
                        requeue_count: counters.requeue_count,
                        timeout_count: counters.timeout_count,
                        client_count: channel.clients().len() as u64,
                        clients,
                        e2e_latency: e2e
                            .enabled()
                            .then(|| summarize(channel.e2e_latency(), now_ms, &e2e.quantiles)),
                    }
                })
                .collect();
            let depth = topic.depth();
            topics.push(TopicSnapshot {
                name: topic.name().to_owned(),
                paused: topic.is_paused(),
                depth,
                backend_depth: on_disk(depth, topic.is_ephemeral()),
                message_count: topic.message_count(),
                message_bytes: topic.message_bytes(),
                channels,
                e2e_latency: e2e.enabled().then(|| {
                    let windows = topic.channels().filter_map(|c| c.e2e_latency());
                    summarize(windows, now_ms, &e2e.quantiles)
                }),
            });
        }
        let producers = if filter.include_clients {
            let mut ids: Vec<ClientId> = state
                .clients
                .values()
                .filter(|c| !c.pub_counts.is_empty())
                .map(|c| c.id)
                .collect();
            ids.sort_unstable();
            ids.iter()
                .map(|id| ClientSnapshot::of(&state.clients[id]))
                .collect()
        } else {
            Vec::new()
        };
        StatsSnapshot {
            topics: Some(topics),
            producers,
        }
    }
}

/// Counts `count` messages that TCP client `publisher` published to topic
/// `topic_id` (its `pub_counts` among the producers); called under the
/// broker lock the publish already holds.
pub(super) fn count_publish(
    state: &mut BrokerState,
    publisher: Option<ClientId>,
    topic_id: u64,
    count: u64,
) {
    let Some((entry, topic)) = publisher.and_then(|id| state.client_and_topic_name(id, topic_id))
    else {
        return;
    };
    match entry.pub_counts.iter_mut().find(|(name, _)| name == topic) {
        Some((_, total)) => *total += count,
        None => entry.pub_counts.push((topic.to_owned(), count)),
    }
}
