//! Dispatch: handing ready messages to ready clients, the timer pass, and
//! the store reads dispatch needs, done outside the broker lock.
//!
//! A channel dispatches from memory: its topic's cache, its prefetch, its
//! requeued messages. When it needs what only the store has, it stops and
//! names the read (`ReadRequest`); the reader thread does the read without
//! the lock, hands the result to the channel under the lock, and dispatches
//! it again. For a durable channel the deliveries are recorded
//! (`Command::Deliver`) before any frame is sent: the frames wait behind
//! the proposal's ticket.

use std::sync::{mpsc, Weak};

use ledgerq_storage::{Command, StorageError, Store, Urgency};

use super::channel::{DeliveryBatch, Frame, ReadRequest, ReadResult};
use super::client::Outbound;
use super::message::Message;
use super::waiters::Waiter;
use super::{Broker, BrokerState};
use crate::clock;
use std::sync::Arc;

/// Where a dispatch pass's deliveries are recorded.
struct Recorded {
    durable: bool,
    topic_id: u64,
    channel: u64,
    read_cursor: u64,
    /// [`Leadership::generation`](super::state::Leadership) when chosen.
    generation: u64,
}

/// A store read one channel waits for.
pub(super) struct ReadJob {
    topic_id: u64,
    channel_id: u64,
    request: ReadRequest,
}

pub(super) fn spawn_reader(broker: Weak<Broker>, jobs: mpsc::Receiver<ReadJob>) {
    std::thread::Builder::new()
        .name("broker-read".into())
        .spawn(move || {
            while let Ok(job) = jobs.recv() {
                let Some(broker) = broker.upgrade() else {
                    return;
                };
                let result = read(&broker.store, &job);
                broker.complete_read(job, result);
            }
        })
        .expect("spawn the reader thread");
}

fn read(store: &Store, job: &ReadJob) -> Result<ReadResult, StorageError> {
    let topic = job.topic_id;
    match &job.request {
        &ReadRequest::Range { from, below, limit } => {
            let messages = store
                .read_log(topic, from, limit)?
                .into_iter()
                .take_while(|(offset, _)| *offset < below)
                .map(|(offset, record)| Arc::new(Message::from_record(topic, offset, record)))
                .collect();
            Ok(ReadResult::Range {
                from,
                below,
                messages,
            })
        }
        ReadRequest::Messages(offsets) => {
            let mut found = Vec::with_capacity(offsets.len());
            for &offset in offsets {
                let record = store.read_message(topic, offset)?;
                let message = record.map(|r| Arc::new(Message::from_record(topic, offset, r)));
                found.push((offset, message));
            }
            Ok(ReadResult::Messages(found))
        }
    }
}

impl Broker {
    fn complete_read(&self, job: ReadJob, result: Result<ReadResult, StorageError>) {
        let mut state = self.lock();
        let Some(channel) = state.channel_by_id_mut(job.channel_id) else {
            return;
        };
        match result {
            Ok(result) => channel.fill(result),
            Err(error) => {
                tracing::error!(%error, "reading the log failed");
                channel.read_failed();
                return;
            }
        }
        self.dispatch_channel(&mut state, job.topic_id, job.channel_id);
    }

    /// Timer pass: expired in-flight messages and due deferred ones become
    /// ready, then get dispatched.
    pub fn tick(&self) {
        let now_ms = clock::now_ms();
        let mut state = self.lock();
        let mut due = Vec::new();
        let may_dispatch = state.leadership.may_dispatch();
        let topic_ids: Vec<u64> = state
            .topics()
            .filter(|t| may_dispatch || t.is_ephemeral())
            .map(|t| t.id())
            .collect();
        for topic_id in topic_ids {
            let (topic, clients) = state.topic_and_clients(topic_id).expect("listed above");
            for channel in topic.channels_mut().filter(|c| c.has_timers()) {
                for client in channel.expire(now_ms) {
                    if let Some(client) = clients.get_mut(&client) {
                        client.in_flight_count -= 1;
                    }
                }
                due.push((topic_id, channel.id()));
            }
        }
        for (topic, channel) in due {
            self.dispatch_channel(&mut state, topic, channel);
        }
    }

    pub(super) fn dispatch_topic(&self, state: &mut BrokerState, topic_id: u64) {
        let Some(topic) = state.topic_by_id_mut(topic_id) else {
            return;
        };
        let channels: Vec<u64> = topic.channels().map(|c| c.id()).collect();
        for channel in channels {
            self.dispatch_channel(state, topic_id, channel);
        }
    }

    pub(super) fn dispatch_channel_by_id(&self, state: &mut BrokerState, channel_id: u64) {
        if let Some(topic) = state.topic_of_channel(channel_id) {
            self.dispatch_channel(state, topic, channel_id);
        }
    }

    pub(super) fn dispatch_channel(&self, state: &mut BrokerState, topic_id: u64, channel_id: u64) {
        let may_dispatch = state.leadership.may_dispatch();
        let generation = state.leadership.generation;
        let Some((topic, clients)) = state.topic_and_clients(topic_id) else {
            return;
        };
        let durable_topic = !topic.is_ephemeral();
        // Replicated state is dispatched by the leader only; a memory-only
        // (#ephemeral) topic is this node's own and dispatched here.
        if durable_topic && !may_dispatch {
            return;
        }
        let Some((channel, view)) = topic.channel_and_view(channel_id) else {
            return;
        };
        let batch = channel.dispatch(&view, clients, clock::now_ms());
        if batch.is_empty() {
            return;
        }
        let durable = durable_topic && !channel.is_ephemeral();
        let read_cursor = channel.read_cursor();
        let recorded = Recorded {
            durable,
            topic_id,
            channel: channel_id,
            read_cursor,
            generation,
        };
        self.record_deliveries(recorded, batch);
    }

    /// Dispatches every channel of every topic (this node began to lead).
    pub(super) fn dispatch_all(&self, state: &mut BrokerState) {
        let topics: Vec<u64> = state.topics().map(|t| t.id()).collect();
        for topic in topics {
            self.dispatch_topic(state, topic);
        }
    }

    /// Sends the frames of `batch` — for a durable channel only after the
    /// deliveries (and so the attempt counts) are on disk — and queues the
    /// store read the channel asked for.
    fn record_deliveries(&self, recorded: Recorded, batch: DeliveryBatch) {
        let Recorded {
            durable,
            topic_id,
            channel,
            read_cursor,
            generation,
        } = recorded;
        let DeliveryBatch {
            frames,
            redeliveries,
            first_time,
            sampled_out,
            read,
        } = batch;
        if let Some(request) = read {
            let job = ReadJob {
                topic_id,
                channel_id: channel,
                request,
            };
            let _ = self.reads.send(job);
        }
        if !durable {
            send_frames(frames);
            return;
        }
        if !sampled_out.is_empty() {
            let command = Command::Finish {
                channel,
                offsets: sampled_out,
            };
            self.propose_detached(command, Urgency::Lazy);
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
        self.propose(
            command,
            Urgency::Now,
            Waiter::Deliveries { frames, generation },
        );
    }
}

pub(super) fn send_frames(frames: Vec<Frame>) {
    for (outbound, message, attempts) in frames {
        let _ = outbound.send(Outbound::Message { message, attempts });
    }
}
