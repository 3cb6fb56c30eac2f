//! The applier: the one place where durable changes reach the in-memory
//! topics and channels.
//!
//! A thread reads the command log's events in order. For each applied
//! entry it updates topics and channels from the command and its outcome
//! (on every node, whoever proposed it), then finishes the entry's waiter if
//! it was proposed here. It never blocks on anything but the broker lock:
//! answers are oneshot sends, deliveries are queue pushes, follow-up
//! proposals only queue.

use std::sync::{Arc, Weak};

use ledgerq_storage::{ApplyError, Command, LogEvent, LogEvents, Outcome, StateMachine};

use super::channel::Channel;
use super::dispatch::send_frames;
use super::message::Message;
use super::recovery;
use super::stats::count_publish;
use super::topic::Topic;
use super::waiters::Waiter;
use super::{Broker, BrokerState};
use ledgerq_storage::Urgency;

/// Events applied under one hold of the lock, at most.
const MAX_EVENTS_PER_LOCK: usize = 1024;

pub(super) fn spawn_applier(broker: Weak<Broker>, events: LogEvents) {
    std::thread::Builder::new()
        .name("broker-apply".into())
        .spawn(move || run(broker, events))
        .expect("spawn the applier thread");
}

/// Ends when the log's stream ends (the log stopped) or the broker is gone.
fn run(broker: Weak<Broker>, events: LogEvents) {
    let mut last_index = None;
    while let Ok(first) = events.recv() {
        let Some(broker) = broker.upgrade() else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_EVENTS_PER_LOCK {
            match events.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        broker.apply_events(batch, &mut last_index);
    }
}

impl Broker {
    fn apply_events(self: &Arc<Self>, events: Vec<LogEvent>, last_index: &mut Option<u64>) {
        let mut state = self.lock();
        for event in events {
            match event {
                LogEvent::Applied(entry) => {
                    if let Some(last) = *last_index {
                        assert_eq!(
                            entry.index,
                            last + 1,
                            "applied entries in order, none skipped"
                        );
                    }
                    *last_index = Some(entry.index);
                    let outcome = entry.outcome;
                    if let Ok(done) = &outcome {
                        self.apply_entry(&mut state, entry.command, done);
                    }
                    let waiter = entry.ticket.and_then(|t| self.waiters.take(t));
                    if let Some(waiter) = waiter {
                        self.finish_waiter(&mut state, waiter, outcome);
                    }
                }
                LogEvent::Rebuild {
                    state: stored,
                    leader_term,
                } => {
                    self.rebuild(&mut state, &stored);
                    *last_index = Some(stored.applied_index());
                    state.leadership.rebuilt(leader_term);
                    self.dispatch_all(&mut state);
                }
                LogEvent::Leadership { term, leading } => {
                    let was_dispatching = state.leadership.may_dispatch();
                    state.leadership.set_led_term(leading.then_some(term));
                    if was_dispatching && !state.leadership.may_dispatch() {
                        state.release_in_flight();
                    }
                    self.dispatch_all(&mut state);
                }
                LogEvent::Refused { ticket, error } => match self.waiters.take(ticket) {
                    Some(Waiter::Reply { answer, .. } | Waiter::CreateTopic { answer, .. }) => {
                        let _ = answer.send(Err(error.into()));
                    }
                    Some(Waiter::Deliveries { .. }) => {
                        tracing::error!(%error, "recording deliveries failed; not sending them");
                    }
                    None => tracing::warn!(%error, "background command failed"),
                },
            }
        }
    }

    /// Makes the in-memory topics and channels show an applied command.
    /// Deliver, Finish and Requeue change nothing on the node that
    /// dispatches (it changed its channel before proposing them); a node
    /// that does not dispatch follows them (`channel/follower.rs`).
    fn apply_entry(&self, state: &mut BrokerState, command: Command, outcome: &Outcome) {
        match (*outcome, command) {
            (Outcome::TopicCreated { topic, created }, Command::CreateTopic { name }) => {
                if created {
                    let capacity = self.options.mem_queue_size;
                    state.insert_topic(Topic::new(topic, name, false, 0, capacity));
                }
            }
            (Outcome::TopicDeleted { topic }, _) => state.remove_topic(topic),
            (
                Outcome::TopicPaused {
                    topic,
                    paused,
                    handed_over,
                },
                _,
            ) => {
                if let Some(entry) = state.topic_by_id_mut(topic) {
                    entry.set_paused(paused, handed_over);
                    self.dispatch_topic(state, topic);
                }
            }
            (
                Outcome::TopicEmptied {
                    topic,
                    next_offset,
                    log_start,
                },
                _,
            ) => {
                if let Some(entry) = state.topic_by_id_mut(topic) {
                    entry.drop_waiting(next_offset, log_start);
                }
            }
            (
                Outcome::ChannelCreated {
                    topic,
                    channel,
                    created,
                    floor,
                    handed_over,
                },
                Command::CreateChannel {
                    name, ephemeral, ..
                },
            ) => {
                if !created {
                    return;
                }
                let Some(entry) = state.topic_by_id_mut(topic) else {
                    return;
                };
                entry.set_handed_over(handed_over);
                state.insert_channel(topic, Channel::new(channel, name, ephemeral, floor));
                self.dispatch_topic(state, topic);
            }
            (Outcome::ChannelDeleted { channel, .. }, _) => state.remove_channel(channel, true),
            (Outcome::ChannelPaused { channel, paused }, _) => {
                if let Some(entry) = state.channel_by_id_mut(channel) {
                    entry.set_paused(paused);
                    self.dispatch_channel_by_id(state, channel);
                }
            }
            (Outcome::ChannelEmptied { channel, floor }, _) => {
                empty_channel(state, channel, floor);
                self.dispatch_channel_by_id(state, channel);
            }
            (
                Outcome::Published {
                    topic,
                    first_offset,
                    handed_over,
                    ..
                },
                Command::Publish {
                    timestamp_ns,
                    deliver_at_ms,
                    bodies,
                    ..
                },
            ) => {
                let Some(entry) = state.topic_by_id_mut(topic) else {
                    return;
                };
                let messages =
                    Message::batch(topic, first_offset, timestamp_ns, deliver_at_ms, bodies);
                entry.append(messages);
                entry.set_handed_over(handed_over);
                self.dispatch_topic(state, topic);
            }
            // A duplicate publish stored nothing: nothing to show.
            (Outcome::Duplicate { .. }, Command::Publish { .. }) => {}
            (Outcome::Delivered | Outcome::Finished { .. } | Outcome::Requeued, _)
                if state.leadership.may_dispatch() => {}
            (
                Outcome::Delivered,
                Command::Deliver {
                    channel,
                    delivered_up_to,
                    redeliveries,
                },
            ) => {
                if let Some(entry) = state.channel_by_id_mut(channel) {
                    let offsets: Vec<u64> =
                        redeliveries.iter().map(|(offset, _)| *offset).collect();
                    entry.follow_deliver(delivered_up_to, &offsets);
                }
            }
            (Outcome::Finished { .. }, Command::Finish { channel, offsets }) => {
                if let Some(entry) = state.channel_by_id_mut(channel) {
                    entry.follow_finish(&offsets);
                }
            }
            (
                Outcome::Requeued,
                Command::Requeue {
                    channel,
                    offset,
                    attempts,
                    deliver_at_ms,
                },
            ) => {
                if let Some(entry) = state.channel_by_id_mut(channel) {
                    entry.follow_requeue(offset, attempts, deliver_at_ms, crate::clock::now_ms());
                }
            }
            (outcome, command) => {
                unreachable!("{command:?} cannot have had the outcome {outcome:?}")
            }
        }
    }

    /// Finishes a waiter whose entry was applied (after [`Broker::apply_entry`]).
    fn finish_waiter(
        self: &Arc<Self>,
        state: &mut BrokerState,
        waiter: Waiter,
        outcome: Result<Outcome, ApplyError>,
    ) {
        match waiter {
            Waiter::Reply { answer, publisher } => {
                if let (Some(_), Ok(Outcome::Published { topic, count, .. })) =
                    (publisher, &outcome)
                {
                    count_publish(state, publisher, *topic, *count);
                }
                let _ = answer.send(outcome.map_err(Into::into));
            }
            Waiter::CreateTopic { answer, channels } => {
                if let Ok(Outcome::TopicCreated {
                    topic,
                    created: true,
                }) = outcome
                {
                    for name in channels {
                        let command = Command::CreateChannel {
                            topic,
                            name,
                            ephemeral: false,
                        };
                        self.propose_detached(command, Urgency::Now);
                    }
                }
                let _ = answer.send(outcome.map_err(Into::into));
            }
            Waiter::Deliveries { generation, .. } if generation != state.leadership.generation => {
                tracing::debug!(
                    "channels were rebuilt since these deliveries were chosen; not sending them"
                );
            }
            Waiter::Deliveries { frames, .. } => match outcome {
                Ok(_) => send_frames(frames),
                Err(error) => {
                    tracing::error!(%error, "recording deliveries was refused; not sending them")
                }
            },
        }
    }
}

impl Broker {
    /// Rebuilds every durable topic and channel from `stored` (the
    /// recovery path): everything delivered and unfinished is ready again,
    /// with its persisted attempts. A store read failure leaves the old
    /// topics and stops dispatch until the next rebuild.
    fn rebuild(&self, state: &mut BrokerState, stored: &StateMachine) {
        let now_ms = crate::clock::now_ms();
        let capacity = self.options.mem_queue_size;
        match recovery::recover(&self.store, stored, capacity, now_ms, true) {
            Ok(recovered) => {
                state.replace_durable_topics(recovered.topics);
                tracing::info!(
                    applied_index = stored.applied_index(),
                    "rebuilt topics and channels"
                );
            }
            Err(error) => {
                tracing::error!(%error, "rebuilding channels failed; not dispatching");
                state.leadership.rebuilt(None);
            }
        }
    }
}

/// Drops what the channel holds below `floor`, and gives its clients back
/// the in-flight slots it held.
pub(super) fn empty_channel(state: &mut BrokerState, channel_id: u64, floor: u64) {
    let Some(topic) = state
        .topic_of_channel(channel_id)
        .and_then(|topic| state.topic_by_id_mut(topic))
    else {
        return;
    };
    let Some(read_cursor) = topic
        .channel_by_id_mut(channel_id)
        .map(|channel| channel.read_cursor())
    else {
        return;
    };
    // nsqd counts a message in `message_count` when it enters the channel;
    // here a message counts when it is read, or now, if it is dropped unread.
    let dropped_unread = topic.unread(read_cursor) - topic.unread(floor.max(read_cursor));
    let channel = topic.channel_by_id_mut(channel_id).expect("found above");
    channel.count_dropped_unread(dropped_unread);
    for client in channel.empty(floor) {
        if let Some(client) = state.clients.get_mut(&client) {
            client.in_flight_count = client.in_flight_count.saturating_sub(1);
        }
    }
}
