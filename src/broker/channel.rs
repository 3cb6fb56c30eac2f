//! A channel: a cursor over its topic's log plus the live delivery state.
//!
//! Offsets below `read_cursor` have been read; each one that is not finished
//! sits in exactly one of: `requeued` (ready to deliver again), `deferred`
//! (not before a time), or `in_flight` (with a client, until a deadline).
//! Offsets from `read_cursor` up to the topic's hand-over point are ready for
//! their first delivery. Which client holds a message, RDY counts and timers
//! are live state only; after a restart every unfinished message is ready
//! again.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use ledgerq_storage::Store;

use super::client::{Client, ClientId, Outbound};
use super::message::Message;
use super::topic::MessageCache;

/// How many log entries one store read fetches ahead of the cursor.
const PREFETCH_ENTRIES: usize = 256;

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

/// What the topic lends a channel while it dispatches.
pub struct TopicView<'a> {
    pub topic_id: u64,
    pub handed_over: u64,
    pub log_start: u64,
    pub cache: &'a MessageCache,
    /// `None` for an ephemeral topic.
    pub store: Option<&'a Store>,
}

/// Deliveries chosen by one dispatch pass, to be recorded and then sent.
#[derive(Debug, Default)]
pub struct DeliveryBatch {
    pub frames: Vec<(
        tokio::sync::mpsc::UnboundedSender<Outbound>,
        Arc<Message>,
        u16,
    )>,
    /// Offsets delivered again (or for the first time after a deferral).
    pub redeliveries: Vec<(u64, u16)>,
    /// Whether any first-time delivery happened (the cursor must be recorded).
    pub first_time: bool,
    /// Offsets dropped by sampling: finished for this channel, counted.
    pub sampled_out: Vec<u64>,
}

impl DeliveryBatch {
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.sampled_out.is_empty()
    }
}

#[derive(Debug)]
pub struct Channel {
    /// Publish-to-FIN latencies, once the first FIN is recorded (only with
    /// `--e2e-processing-latency-percentile`).
    pub e2e_latency: Option<super::latency::LatencyWindow>,
    pub id: u64,
    pub name: String,
    pub ephemeral: bool,
    pub paused: bool,
    /// A delete is on its way to the disk: no more deliveries.
    pub deleting: bool,
    pub read_cursor: u64,
    requeued: VecDeque<Pending>,
    deferred: BTreeMap<(u64, u64), u16>,
    in_flight: HashMap<u64, InFlight>,
    timeouts: BTreeSet<(u64, u64)>,
    pub clients: Vec<ClientId>,
    next_client: usize,
    prefetch: VecDeque<Arc<Message>>,
    pub message_count: u64,
    pub requeue_count: u64,
    pub timeout_count: u64,
    pub sampled_out_count: u64,
}

/// Why a FIN, REQ or TOUCH was refused (NSQ's non-fatal reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InFlightError {
    NotInFlight,
    NotOwner,
}

impl InFlightError {
    pub fn reason(self) -> &'static str {
        match self {
            InFlightError::NotInFlight => "ID not in flight",
            InFlightError::NotOwner => "client does not own message",
        }
    }
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
            read_cursor,
            requeued: VecDeque::new(),
            deferred: BTreeMap::new(),
            in_flight: HashMap::new(),
            timeouts: BTreeSet::new(),
            clients: Vec::new(),
            next_client: 0,
            prefetch: VecDeque::new(),
            message_count: 0,
            requeue_count: 0,
            timeout_count: 0,
            sampled_out_count: 0,
        }
    }

    /// Recovery: an unfinished message below the cursor, delivered
    /// `attempts` times, not to be delivered before `deliver_at_ms`.
    pub fn restore(&mut self, offset: u64, attempts: u16, deliver_at_ms: u64, now_ms: u64) {
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

    /// Removes a client; its in-flight messages are ready again at once.
    pub fn remove_client(&mut self, client: ClientId) {
        self.clients.retain(|&c| c != client);
        let owned: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.client == client)
            .map(|(&offset, _)| offset)
            .collect();
        for offset in owned {
            let flight = self.take_in_flight(offset).expect("listed above");
            self.requeue_now(offset, flight.attempts, Some(flight.message));
        }
    }

    fn take_in_flight(&mut self, offset: u64) -> Option<InFlight> {
        let flight = self.in_flight.remove(&offset)?;
        self.timeouts.remove(&(flight.deadline_ms, offset));
        Some(flight)
    }

    fn requeue_now(&mut self, offset: u64, attempts: u16, message: Option<Arc<Message>>) {
        self.requeued.push_back(Pending {
            offset,
            attempts,
            message,
        });
    }

    fn owned(&self, client: ClientId, offset: u64) -> Result<&InFlight, InFlightError> {
        let flight = self
            .in_flight
            .get(&offset)
            .ok_or(InFlightError::NotInFlight)?;
        if flight.client != client {
            return Err(InFlightError::NotOwner);
        }
        Ok(flight)
    }

    /// FIN: the message leaves in-flight for good.
    pub fn finish(&mut self, client: ClientId, offset: u64) -> Result<InFlight, InFlightError> {
        self.owned(client, offset)?;
        Ok(self.take_in_flight(offset).expect("owned"))
    }

    /// REQ: back to ready now, or deferred until `deliver_at_ms`. Returns
    /// the attempts so far.
    pub fn requeue(
        &mut self,
        client: ClientId,
        offset: u64,
        deliver_at_ms: Option<u64>,
    ) -> Result<u16, InFlightError> {
        self.owned(client, offset)?;
        let flight = self.take_in_flight(offset).expect("owned");
        self.requeue_count += 1;
        match deliver_at_ms {
            None => self.requeue_now(offset, flight.attempts, Some(flight.message)),
            Some(at) => {
                self.deferred.insert((at, offset), flight.attempts);
            }
        }
        Ok(flight.attempts)
    }

    /// TOUCH: a new deadline, never past `delivered_at + max_msg_timeout`.
    pub fn touch(
        &mut self,
        client: ClientId,
        offset: u64,
        now_ms: u64,
        msg_timeout_ms: u64,
        max_msg_timeout_ms: u64,
    ) -> Result<(), InFlightError> {
        let flight = self.owned(client, offset)?;
        let cap = flight.delivered_at_ms + max_msg_timeout_ms;
        let deadline_ms = (now_ms + msg_timeout_ms).min(cap);
        let old = flight.deadline_ms;
        self.timeouts.remove(&(old, offset));
        self.timeouts.insert((deadline_ms, offset));
        self.in_flight.get_mut(&offset).expect("owned").deadline_ms = deadline_ms;
        Ok(())
    }

    /// nsqd's `/channel/empty`: drops every message below `floor` the
    /// channel holds, whether unread, requeued, deferred or in flight; a
    /// later FIN, REQ or TOUCH of a dropped one is refused as not in flight.
    /// Returns the client of each dropped in-flight message.
    pub fn empty(&mut self, floor: u64) -> Vec<ClientId> {
        self.requeued.retain(|p| p.offset >= floor);
        self.deferred.retain(|&(_, offset), _| offset >= floor);
        let dropped: Vec<u64> = self
            .in_flight
            .keys()
            .copied()
            .filter(|&offset| offset < floor)
            .collect();
        let freed = dropped
            .into_iter()
            .map(|offset| self.take_in_flight(offset).expect("listed above").client)
            .collect();
        if self.read_cursor < floor {
            self.read_cursor = floor;
            self.prefetch.clear();
        }
        freed
    }

    /// Moves expired in-flight messages and due deferred ones to ready.
    /// Returns the clients whose in-flight count dropped.
    pub fn expire(&mut self, now_ms: u64) -> Vec<ClientId> {
        let mut freed = Vec::new();
        while let Some(&(deadline_ms, offset)) = self.timeouts.first() {
            if deadline_ms > now_ms {
                break;
            }
            let flight = self
                .take_in_flight(offset)
                .expect("timeouts mirror in_flight");
            self.timeout_count += 1;
            freed.push(flight.client);
            self.requeue_now(offset, flight.attempts, Some(flight.message));
        }
        while let Some((&(at, offset), &attempts)) = self.deferred.first_key_value() {
            if at > now_ms {
                break;
            }
            self.deferred.remove(&(at, offset));
            self.requeue_now(offset, attempts, None);
        }
        freed
    }

    pub fn has_timers(&self) -> bool {
        !self.timeouts.is_empty() || !self.deferred.is_empty()
    }

    /// Hands ready messages to ready clients, round-robin, until either runs out.
    pub fn dispatch(
        &mut self,
        topic: &TopicView,
        clients: &mut HashMap<ClientId, Client>,
        now_ms: u64,
    ) -> DeliveryBatch {
        let mut batch = DeliveryBatch::default();
        if self.paused || self.deleting {
            return batch;
        }
        while let Some(client_id) = self.pick_client(clients) {
            let Some((message, attempts, first_time)) = self.next_message(topic, now_ms) else {
                break;
            };
            let client = clients.get_mut(&client_id).expect("picked from the map");
            if client.sample_rate > 0 && rand::random_range(0..100u8) > client.sample_rate {
                self.sampled_out_count += 1;
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
    /// unread offset. Returns `(message, attempts so far, first_time)`.
    fn next_message(
        &mut self,
        topic: &TopicView,
        now_ms: u64,
    ) -> Option<(Arc<Message>, u16, bool)> {
        while let Some(pending) = self.requeued.pop_front() {
            let message = pending
                .message
                .or_else(|| Self::fetch(topic, pending.offset));
            match message {
                Some(message) => return Some((message, pending.attempts, false)),
                None => {
                    tracing::warn!(offset = pending.offset, "requeued message no longer stored")
                }
            }
        }
        loop {
            let message = self.next_unread(topic)?;
            if message.deliver_at_ms > now_ms {
                self.deferred
                    .insert((message.deliver_at_ms, message.offset), 0);
                continue;
            }
            if message.deliver_at_ms > 0 {
                return Some((message, 0, false));
            }
            return Some((message, 0, true));
        }
    }

    fn fetch(topic: &TopicView, offset: u64) -> Option<Arc<Message>> {
        if let Some(message) = topic.cache.get(offset) {
            return Some(message.clone());
        }
        let store = topic.store?;
        match store.read_message(topic.topic_id, offset) {
            Ok(Some(record)) => Some(Arc::new(Message::new(
                topic.topic_id,
                offset,
                record.timestamp_ns,
                record.deliver_at_ms,
                record.body,
            ))),
            Ok(None) => None,
            Err(error) => {
                tracing::error!(%error, "reading a message back failed");
                None
            }
        }
    }

    /// The message at the read cursor, advancing it; skips what the topic
    /// no longer holds (an ephemeral overflow).
    fn next_unread(&mut self, topic: &TopicView) -> Option<Arc<Message>> {
        if self.read_cursor < topic.log_start {
            self.prefetch.clear();
            self.read_cursor = topic.log_start;
        }
        if self.read_cursor >= topic.handed_over {
            return None;
        }
        let message = match topic.cache.get(self.read_cursor) {
            Some(message) => {
                self.prefetch.clear();
                message.clone()
            }
            None => self.next_prefetched(topic)?,
        };
        assert_eq!(message.offset, self.read_cursor, "log read out of order");
        self.read_cursor += 1;
        self.message_count += 1;
        Some(message)
    }

    fn next_prefetched(&mut self, topic: &TopicView) -> Option<Arc<Message>> {
        while self
            .prefetch
            .front()
            .is_some_and(|m| m.offset < self.read_cursor)
        {
            self.prefetch.pop_front();
        }
        if self.prefetch.is_empty() {
            self.fill_prefetch(topic);
        }
        let front = self.prefetch.front()?;
        if front.offset > self.read_cursor {
            // The log has a hole here: those entries were removed.
            self.read_cursor = front.offset;
        }
        self.prefetch.pop_front()
    }

    fn fill_prefetch(&mut self, topic: &TopicView) {
        let Some(store) = topic.store else {
            // Ephemeral: whatever is not cached is gone.
            self.read_cursor = topic.cache.base().min(topic.handed_over);
            if let Some(message) = topic.cache.get(self.read_cursor) {
                self.prefetch.push_back(message.clone());
            }
            return;
        };
        let wanted = (topic.handed_over - self.read_cursor).min(PREFETCH_ENTRIES as u64);
        match store.read_log(topic.topic_id, self.read_cursor, wanted as usize) {
            Ok(entries) => {
                for (offset, record) in entries {
                    if offset >= topic.handed_over {
                        break;
                    }
                    let message = Message::new(
                        topic.topic_id,
                        offset,
                        record.timestamp_ns,
                        record.deliver_at_ms,
                        record.body,
                    );
                    self.prefetch.push_back(Arc::new(message));
                }
            }
            Err(error) => tracing::error!(%error, "reading the log failed"),
        }
    }
}
