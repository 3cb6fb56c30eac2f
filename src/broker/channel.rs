//! A channel: a cursor over its topic's log plus the live delivery state.
//!
//! Offsets below `read_cursor` have been read; each one that is not finished
//! sits in exactly one of: `requeued` (ready to deliver again), `deferred`
//! (not before a time), or `in_flight` (with a client, until a deadline).
//! Offsets from `read_cursor` up to the topic's hand-over point are ready for
//! their first delivery. Which client holds a message, RDY counts and timers
//! are live state only; after a restart every unfinished message is ready
//! again.
//!
//! A channel never touches the store: what its topic's cache lacks it asks
//! for with a [`ReadRequest`] and gets back through [`Channel::fill`] (the
//! broker reads outside its lock). Asserted: messages are read in offset
//! order, and every in-flight message has exactly one deadline.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use super::client::{Client, ClientId, Outbound};
mod follower;
mod in_flight;
pub mod peek;

use super::latency::LatencyWindow;
use super::message::Message;
use super::topic::TopicView;

/// How many log entries one store read fetches ahead of the cursor.
pub const PREFETCH_ENTRIES: usize = 256;

#[derive(Debug)]
pub struct InFlight {
    pub client: ClientId,
    pub attempts: u16,
    pub deadline_ms: u64,
    pub delivered_at_ms: u64,
    pub message: Arc<Message>,
}

/// A message waiting to be delivered again.
#[derive(Debug)]
struct Pending {
    offset: u64,
    /// Deliveries so far.
    attempts: u16,
    message: Option<Arc<Message>>,
}

/// What a channel needs from the store before it can go on dispatching.
/// The broker reads it outside its lock and hands it back with
/// [`Channel::fill`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadRequest {
    /// Up to `limit` log entries at or after `from`, below `below`.
    Range { from: u64, below: u64, limit: usize },
    /// These messages, to be delivered again.
    Messages(Vec<u64>),
}

/// The answer to a [`ReadRequest`].
#[derive(Debug)]
pub enum ReadResult {
    Range {
        from: u64,
        below: u64,
        messages: Vec<Arc<Message>>,
    },
    /// Each requested offset, with its message if still stored.
    Messages(Vec<(u64, Option<Arc<Message>>)>),
}

/// The outbound queue of a client, a message and its attempts count.
pub type Frame = (
    tokio::sync::mpsc::UnboundedSender<Outbound>,
    Arc<Message>,
    u16,
);

/// Deliveries chosen by one dispatch pass, to be recorded and then sent.
#[derive(Debug, Default)]
pub struct DeliveryBatch {
    pub frames: Vec<Frame>,
    /// Offsets delivered again (or for the first time after a deferral).
    pub redeliveries: Vec<(u64, u16)>,
    /// Whether any first-time delivery happened (the cursor must be recorded).
    pub first_time: bool,
    /// Offsets dropped by sampling: finished for this channel, counted.
    pub sampled_out: Vec<u64>,
    /// Set when dispatch stopped for a store read.
    pub read: Option<ReadRequest>,
}

impl DeliveryBatch {
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.sampled_out.is_empty() && self.read.is_none()
    }
}

/// A channel's counters, as `/stats` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelCounters {
    pub message_count: u64,
    pub requeue_count: u64,
    pub timeout_count: u64,
    pub sampled_out_count: u64,
}

#[derive(Debug)]
pub struct Channel {
    id: u64,
    name: String,
    ephemeral: bool,
    paused: bool,
    /// A delete is on its way to the disk: no more deliveries.
    deleting: bool,
    /// A store read is under way; dispatch waits for [`Channel::fill`].
    read_pending: bool,
    read_cursor: u64,
    requeued: VecDeque<Pending>,
    deferred: BTreeMap<(u64, u64), u16>,
    in_flight: HashMap<u64, InFlight>,
    timeouts: BTreeSet<(u64, u64)>,
    clients: Vec<ClientId>,
    next_client: usize,
    prefetch: VecDeque<Arc<Message>>,
    counters: ChannelCounters,
    /// Publish-to-FIN latencies, once the first FIN is recorded (only with
    /// `--e2e-processing-latency-percentile`).
    e2e_latency: Option<LatencyWindow>,
}

/// What [`Channel::next_message`] found.
enum Next {
    /// `(message, attempts so far, first_time)`.
    Message(Arc<Message>, u16, bool),
    Read(ReadRequest),
    Nothing,
}

/// Why a FIN, REQ or TOUCH was refused (NSQ's non-fatal reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InFlightError {
    NotInFlight,
    NotOwner,
}

impl Channel {
    pub fn new(id: u64, name: String, ephemeral: bool, read_cursor: u64) -> Self {
        Channel {
            e2e_latency: None,
            id,
            name,
            ephemeral,
            paused: false,
            deleting: false,
            read_pending: false,
            read_cursor,
            requeued: VecDeque::new(),
            deferred: BTreeMap::new(),
            in_flight: HashMap::new(),
            timeouts: BTreeSet::new(),
            clients: Vec::new(),
            next_client: 0,
            prefetch: VecDeque::new(),
            counters: ChannelCounters::default(),
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Memory-only: its cursor is not recorded in the store.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    pub fn is_deleting(&self) -> bool {
        self.deleting
    }

    /// Stops (or, when a delete failed, resumes) deliveries.
    pub fn set_deleting(&mut self, deleting: bool) {
        self.deleting = deleting;
    }

    /// Offsets below this have been read (delivered at least once, or
    /// dropped).
    pub fn read_cursor(&self) -> u64 {
        self.read_cursor
    }

    pub fn clients(&self) -> &[ClientId] {
        &self.clients
    }

    pub fn counters(&self) -> ChannelCounters {
        self.counters
    }

    /// Counts messages that entered the channel and were emptied before
    /// they were read (`message_count` counts every message that entered).
    pub fn count_dropped_unread(&mut self, count: u64) {
        self.counters.message_count += count;
    }

    /// Keeps the "since start" counters and latency window of `old`.
    pub fn keep_counters_of(&mut self, old: &mut Channel) {
        self.counters = old.counters;
        self.e2e_latency = old.e2e_latency.take();
    }

    pub fn e2e_latency(&self) -> Option<&LatencyWindow> {
        self.e2e_latency.as_ref()
    }

    /// Records one publish-to-FIN latency in the channel's window.
    pub fn record_e2e(&mut self, window_ms: u64, now_ms: u64, latency_ns: u64) {
        self.e2e_latency
            .get_or_insert_with(|| LatencyWindow::new(window_ms, now_ms))
            .record(now_ms, latency_ns);
    }

    /// Recovery: an unfinished message below the cursor, delivered
    /// `attempts` times, not to be delivered before `deliver_at_ms`.
    pub fn restore(&mut self, offset: u64, attempts: u16, deliver_at_ms: u64, now_ms: u64) {
        debug_assert!(self.in_flight.is_empty(), "restored before any delivery");
        assert!(
            offset < self.read_cursor,
            "restored offsets lie below the cursor"
        );
        if deliver_at_ms > now_ms {
            self.deferred.insert((deliver_at_ms, offset), attempts);
        } else {
            let message = None;
            self.requeued.push_back(Pending {
                offset,
                attempts,
                message,
            });
        }
    }

    /// Messages ready to deliver (excludes in-flight and deferred).
    pub fn depth(&self, handed_over: u64) -> u64 {
        self.requeued.len() as u64 + handed_over.saturating_sub(self.read_cursor)
    }

    pub fn in_flight_count(&self) -> usize {
        self.in_flight.len()
    }

    pub fn deferred_count(&self) -> usize {
        self.deferred.len()
    }

    pub fn add_client(&mut self, client: ClientId) {
        if !self.clients.contains(&client) {
            self.clients.push(client);
        }
    }

    /// Hands ready messages to ready clients, round-robin, until either
    /// runs out, or until a message must first be read from the store (then
    /// `read` says what; nothing more is dispatched until [`Channel::fill`]).
    pub fn dispatch(
        &mut self,
        topic: &TopicView,
        clients: &mut HashMap<ClientId, Client>,
        now_ms: u64,
    ) -> DeliveryBatch {
        let mut batch = DeliveryBatch::default();
        if self.paused || self.deleting || self.read_pending {
            return batch;
        }
        while let Some(client_id) = self.pick_client(clients) {
            let (message, attempts, first_time) = match self.next_message(topic, now_ms) {
                Next::Message(message, attempts, first_time) => (message, attempts, first_time),
                Next::Read(request) => {
                    self.read_pending = true;
                    batch.read = Some(request);
                    break;
                }
                Next::Nothing => break,
            };
            let client = clients.get_mut(&client_id).expect("picked from the map");
            if client.sample_rate > 0 && rand::random_range(0..100u8) > client.sample_rate {
                self.counters.sampled_out_count += 1;
                batch.sampled_out.push(message.offset);
                continue;
            }
            let attempts = attempts.saturating_add(1);
            let offset = message.offset;
            let deadline_ms = now_ms + client.msg_timeout_ms;
            client.in_flight_count += 1;
            client.message_count += 1;
            self.timeouts.insert((deadline_ms, offset));
            let flight = InFlight {
                client: client_id,
                attempts,
                deadline_ms,
                delivered_at_ms: now_ms,
                message: message.clone(),
            };
            self.in_flight.insert(offset, flight);
            if first_time {
                batch.first_time = true;
            } else {
                batch.redeliveries.push((offset, attempts));
            }
            batch
                .frames
                .push((client.outbound.clone(), message, attempts));
        }
        debug_assert_eq!(self.in_flight.len(), self.timeouts.len());
        batch
    }

    fn pick_client(&mut self, clients: &HashMap<ClientId, Client>) -> Option<ClientId> {
        let count = self.clients.len();
        for step in 0..count {
            let index = (self.next_client + step) % count;
            let id = self.clients[index];
            if clients.get(&id).is_some_and(Client::is_ready) {
                self.next_client = (index + 1) % count;
                return Some(id);
            }
        }
        None
    }

    /// The next message to deliver: a requeued one first, else the next
    /// unread offset.
    fn next_message(&mut self, topic: &TopicView, now_ms: u64) -> Next {
        while let Some(front) = self.requeued.front_mut() {
            if front.message.is_none() {
                front.message = topic.cache.get(front.offset).cloned();
            }
            if front.message.is_some() {
                let pending = self.requeued.pop_front().expect("front exists");
                let message = pending.message.expect("checked above");
                return Next::Message(message, pending.attempts, false);
            }
            if topic.durable {
                let offsets = self
                    .requeued
                    .iter()
                    .filter(|p| p.message.is_none())
                    .take(PREFETCH_ENTRIES)
                    .map(|p| p.offset)
                    .collect();
                return Next::Read(ReadRequest::Messages(offsets));
            }
            // Memory-only: what left the cache is gone.
            let gone = self.requeued.pop_front().expect("front exists");
            tracing::warn!(offset = gone.offset, "requeued message no longer held");
        }
        loop {
            let message = match self.next_unread(topic) {
                Next::Message(message, ..) => message,
                other => return other,
            };
            if message.deliver_at_ms > now_ms {
                self.deferred
                    .insert((message.deliver_at_ms, message.offset), 0);
                continue;
            }
            // A deferred message's first delivery is recorded like a
            // redelivery (its attempts), not by the cursor.
            let first_time = message.deliver_at_ms == 0;
            return Next::Message(message, 0, first_time);
        }
    }

    /// The message at the read cursor, advancing it; skips what the topic
    /// no longer holds (a memory-only overflow, a truncated log).
    fn next_unread(&mut self, topic: &TopicView) -> Next {
        if self.read_cursor < topic.log_start {
            self.prefetch.clear();
            self.read_cursor = topic.log_start;
        }
        if self.read_cursor >= topic.handed_over {
            return Next::Nothing;
        }
        let message = if let Some(message) = topic.cache.get(self.read_cursor) {
            self.prefetch.clear();
            message.clone()
        } else {
            while self
                .prefetch
                .front()
                .is_some_and(|m| m.offset < self.read_cursor)
            {
                self.prefetch.pop_front();
            }
            if self.prefetch.is_empty() {
                if topic.durable {
                    let limit = (topic.handed_over - self.read_cursor).min(PREFETCH_ENTRIES as u64);
                    return Next::Read(ReadRequest::Range {
                        from: self.read_cursor,
                        below: topic.handed_over,
                        limit: limit as usize,
                    });
                }
                // Memory-only: whatever is not cached is gone.
                self.read_cursor = topic.cache.base().min(topic.handed_over);
                match topic.cache.get(self.read_cursor) {
                    Some(message) => self.prefetch.push_back(message.clone()),
                    None => return Next::Nothing,
                }
            }
            let front = self.prefetch.front().expect("filled above");
            if front.offset > self.read_cursor {
                // The log has a hole here: those entries were removed.
                self.read_cursor = front.offset;
            }
            self.prefetch.pop_front().expect("filled above")
        };
        assert_eq!(message.offset, self.read_cursor, "log read out of order");
        self.read_cursor += 1;
        self.counters.message_count += 1;
        Next::Message(message, 0, true)
    }

    /// Takes the answer of the store read that [`Channel::dispatch`] asked
    /// for. An answer that no longer fits (the channel was emptied
    /// meanwhile) is dropped; the next dispatch asks again.
    pub fn fill(&mut self, result: ReadResult) {
        self.read_pending = false;
        match result {
            ReadResult::Range {
                from,
                below,
                messages,
            } => {
                if from != self.read_cursor {
                    return;
                }
                self.prefetch = messages.into_iter().filter(|m| m.offset < below).collect();
                if self.prefetch.is_empty() {
                    // Nothing is stored in [from, below): the entries were removed.
                    self.read_cursor = below;
                }
                debug_assert!(self.prefetch.iter().all(|m| m.offset >= from));
            }
            ReadResult::Messages(found) => {
                let found: HashMap<u64, Option<Arc<Message>>> = found.into_iter().collect();
                self.requeued.retain_mut(|pending| {
                    if pending.message.is_some() {
                        return true;
                    }
                    match found.get(&pending.offset) {
                        Some(Some(message)) => {
                            pending.message = Some(message.clone());
                            true
                        }
                        Some(None) => {
                            tracing::warn!(
                                offset = pending.offset,
                                "requeued message no longer stored"
                            );
                            false
                        }
                        None => true,
                    }
                });
            }
        }
    }

    /// A store read failed: dispatch may ask again later.
    pub fn read_failed(&mut self) {
        self.read_pending = false;
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio::sync::mpsc;

    use super::*;
    use crate::broker::client::ClientInfo;
    use crate::broker::topic::MessageCache;

    const TOPIC: u64 = 7;

    fn message(offset: u64) -> Arc<Message> {
        Arc::new(Message::new(TOPIC, offset, 0, 0, Bytes::from_static(b"m")))
    }

    /// A cache holding `[base, end)`.
    fn cache(base: u64, end: u64) -> MessageCache {
        let mut cache = MessageCache::new(base, 1024);
        for offset in base..end {
            cache.push(message(offset));
        }
        cache
    }

    fn view(cache: &MessageCache, handed_over: u64) -> TopicView<'_> {
        TopicView {
            topic_id: TOPIC,
            handed_over,
            log_start: 0,
            cache,
            durable: true,
        }
    }

    fn clients(
        rdy: &[u64],
    ) -> (
        HashMap<ClientId, Client>,
        Vec<mpsc::UnboundedReceiver<Outbound>>,
    ) {
        let mut map = HashMap::new();
        let mut receivers = Vec::new();
        for (id, &ready) in (1..).zip(rdy) {
            let (sender, receiver) = mpsc::unbounded_channel();
            let mut client = Client::new(id, ClientInfo::default(), sender, 1_000);
            client.ready_count = ready;
            map.insert(id, client);
            receivers.push(receiver);
        }
        (map, receivers)
    }

    fn subscribed(clients: &HashMap<ClientId, Client>) -> Channel {
        let mut channel = Channel::new(1, "c".into(), false, 0);
        let mut ids: Vec<_> = clients.keys().copied().collect();
        ids.sort();
        for id in ids {
            channel.add_client(id);
        }
        channel
    }

    fn offsets(batch: &DeliveryBatch) -> Vec<u64> {
        batch.frames.iter().map(|(_, m, _)| m.offset).collect()
    }

    #[test]
    fn dispatch_is_round_robin_and_capped_by_rdy() {
        let cache = cache(0, 10);
        let (mut clients, _rx) = clients(&[2, 3]);
        let mut channel = subscribed(&clients);
        let batch = channel.dispatch(&view(&cache, 10), &mut clients, 0);
        assert_eq!(offsets(&batch), vec![0, 1, 2, 3, 4]);
        assert!(batch.first_time && batch.redeliveries.is_empty() && batch.read.is_none());
        assert_eq!(clients[&1].in_flight_count, 2);
        assert_eq!(clients[&2].in_flight_count, 3);
        assert_eq!((channel.read_cursor(), channel.in_flight_count()), (5, 5));
        // Nobody is ready: nothing more, the cursor stays.
        let batch = channel.dispatch(&view(&cache, 10), &mut clients, 0);
        assert!(batch.is_empty());
        assert_eq!(channel.depth(10), 5);
    }

    #[test]
    fn past_the_cache_a_durable_channel_asks_for_a_read_and_waits_for_it() {
        let cache = cache(300, 310);
        let (mut clients, _rx) = clients(&[1000]);
        let mut channel = subscribed(&clients);
        let batch = channel.dispatch(&view(&cache, 310), &mut clients, 0);
        assert_eq!(
            batch.read,
            Some(ReadRequest::Range {
                from: 0,
                below: 310,
                limit: PREFETCH_ENTRIES
            })
        );
        assert!(batch.frames.is_empty());
        // While the read is pending nothing else is dispatched.
        assert!(channel
            .dispatch(&view(&cache, 310), &mut clients, 0)
            .is_empty());
        // The store has a hole at 0..2 (removed entries): the cursor jumps it.
        let messages = (2..256).map(message).collect();
        channel.fill(ReadResult::Range {
            from: 0,
            below: 310,
            messages,
        });
        let batch = channel.dispatch(&view(&cache, 310), &mut clients, 0);
        assert_eq!(offsets(&batch), (2..256).collect::<Vec<_>>());
        assert!(matches!(
            batch.read,
            Some(ReadRequest::Range { from: 256, .. })
        ));
        // Nothing stored in [256, 300): the cursor jumps to what is.
        channel.fill(ReadResult::Range {
            from: 256,
            below: 310,
            messages: (300..310).map(message).collect(),
        });
        let batch = channel.dispatch(&view(&cache, 310), &mut clients, 0);
        assert_eq!(offsets(&batch), (300..310).collect::<Vec<_>>());
    }

    #[test]
    fn an_empty_range_moves_the_cursor_past_it() {
        let cache = cache(50, 50);
        let (mut clients, _rx) = clients(&[10]);
        let mut channel = subscribed(&clients);
        assert!(channel
            .dispatch(&view(&cache, 20), &mut clients, 0)
            .read
            .is_some());
        channel.fill(ReadResult::Range {
            from: 0,
            below: 20,
            messages: Vec::new(),
        });
        assert_eq!(channel.read_cursor(), 20);
        assert!(channel
            .dispatch(&view(&cache, 20), &mut clients, 0)
            .is_empty());
    }

    #[test]
    fn a_read_answer_that_no_longer_fits_is_dropped() {
        let cache = cache(100, 110);
        let (mut clients, _rx) = clients(&[10]);
        let mut channel = subscribed(&clients);
        let batch = channel.dispatch(&view(&cache, 110), &mut clients, 0);
        assert!(batch.read.is_some());
        // Emptied while the read was under way: the answer is for offset 0.
        assert!(channel.empty(100).is_empty());
        channel.fill(ReadResult::Range {
            from: 0,
            below: 110,
            messages: (0..50).map(message).collect(),
        });
        let batch = channel.dispatch(&view(&cache, 110), &mut clients, 0);
        assert_eq!(offsets(&batch), (100..110).collect::<Vec<_>>());
    }

    #[test]
    fn recovered_messages_are_read_back_and_missing_ones_dropped() {
        let cache = cache(500, 500);
        let (mut clients, _rx) = clients(&[10]);
        let mut channel = Channel::new(1, "c".into(), false, 10);
        channel.add_client(1);
        channel.restore(3, 2, 0, 0);
        channel.restore(4, 1, 0, 0);
        let batch = channel.dispatch(&view(&cache, 10), &mut clients, 0);
        assert_eq!(batch.read, Some(ReadRequest::Messages(vec![3, 4])));
        channel.fill(ReadResult::Messages(vec![(3, Some(message(3))), (4, None)]));
        let batch = channel.dispatch(&view(&cache, 10), &mut clients, 0);
        assert_eq!(offsets(&batch), vec![3]);
        assert_eq!(
            batch.redeliveries,
            vec![(3, 3)],
            "attempts continue, never reset"
        );
        assert!(!batch.first_time);
    }

    #[test]
    fn fin_req_touch_check_ownership_and_timeouts_requeue() {
        let cache = cache(0, 3);
        let (mut clients, _rx) = clients(&[1, 1]);
        let mut channel = subscribed(&clients);
        channel.dispatch(&view(&cache, 3), &mut clients, 0);
        assert_eq!(channel.finish(2, 0).err(), Some(InFlightError::NotOwner));
        assert_eq!(channel.finish(1, 2).err(), Some(InFlightError::NotInFlight));
        assert_eq!(channel.finish(1, 0).unwrap().attempts, 1);
        assert_eq!(channel.finish(1, 0).err(), Some(InFlightError::NotInFlight));
        channel.touch(2, 1, 500, 1_000, 10_000).unwrap();
        assert!(channel.expire(1_000).is_empty(), "touched: not expired yet");
        assert_eq!(channel.expire(1_500), vec![2]);
        assert_eq!(channel.counters().timeout_count, 1);
        // The timed-out message comes back with its attempts counted.
        clients.get_mut(&2).unwrap().in_flight_count = 0;
        let batch = channel.dispatch(&view(&cache, 3), &mut clients, 2_000);
        assert!(batch.redeliveries.contains(&(1, 2)));
        // REQ with a delay defers it; it is due at its time only.
        assert_eq!(channel.requeue(2, 1, Some(5_000)), Ok(2));
        assert_eq!(channel.deferred_count(), 1);
        channel.expire(4_999);
        assert_eq!(channel.deferred_count(), 1);
        channel.expire(5_000);
        assert_eq!(channel.deferred_count(), 0);
        assert_eq!(channel.depth(3), 2, "offset 2 unread, offset 1 requeued");
    }

    #[test]
    fn paused_or_deleting_channels_deliver_nothing() {
        let cache = cache(0, 3);
        let (mut clients, _rx) = clients(&[5]);
        let mut channel = subscribed(&clients);
        channel.set_paused(true);
        assert!(channel
            .dispatch(&view(&cache, 3), &mut clients, 0)
            .is_empty());
        channel.set_paused(false);
        channel.set_deleting(true);
        assert!(channel
            .dispatch(&view(&cache, 3), &mut clients, 0)
            .is_empty());
        channel.set_deleting(false);
        assert_eq!(
            offsets(&channel.dispatch(&view(&cache, 3), &mut clients, 0)),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn a_departing_client_gives_its_messages_back_at_once() {
        let cache = cache(0, 4);
        let (mut clients, _rx) = clients(&[2, 2]);
        let mut channel = subscribed(&clients);
        channel.dispatch(&view(&cache, 4), &mut clients, 0);
        channel.remove_client(1);
        assert_eq!(channel.in_flight_count(), 2);
        assert_eq!(channel.depth(4), 2);
        clients.get_mut(&2).unwrap().in_flight_count = 0;
        let mut batch = channel.dispatch(&view(&cache, 4), &mut clients, 0);
        batch.redeliveries.sort();
        assert_eq!(batch.redeliveries, vec![(0, 2), (2, 2)]);
    }
}
