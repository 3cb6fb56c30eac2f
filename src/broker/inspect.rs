//! Inspection (`/channel/peek`, `/topic/peek`, `/message`): what a channel
//! would deliver next, what waits in a topic, and where one message stands
//! in each channel, read without changing anything.
//!
//! Two steps, as dispatch does: under the broker lock, a plan (what the
//! channel holds, the unread range, the messages already in memory); then,
//! without the lock, the store reads the plan names. Nothing moves: no
//! prefetch is filled, no cursor advances, no counter counts. The broker
//! goes on between the steps, so an answer is the state at the plan; a
//! message the store no longer has by the read is left out (dispatch would
//! drop it too).
//!
//! Cost: the plan is linear in the channel's requeued and deferred messages
//! (`/message`) or in `count` (peeks); the reads are at most `count` point
//! reads plus a scan of at most [`UNREAD_SCAN_ENTRIES`] log entries past
//! the cursor, in chunks of what is still missing.

use bytes::Bytes;
use ledgerq_storage::{StorageError, Store};

use super::channel::peek::{Held, OffsetState};
use super::client::ClientInfo;
use super::message::{decode_id, Message};
use super::topic::Topic;
use super::{Broker, BrokerError};
use crate::clock;
use reads::{Source, Unread};

mod reads;
#[cfg(test)]
mod tests;

/// The most messages one peek returns.
pub const MAX_PEEK_COUNT: usize = 100;
/// How many unread log entries one channel peek reads at most while
/// looking past deferred messages for ready ones.
pub const UNREAD_SCAN_ENTRIES: u64 = 1024;
/// The smallest store read while scanning past deferred messages.
const MIN_SCAN_CHUNK: usize = 32;
/// How much of a message body an inspection returns.
pub const BODY_LIMIT_BYTES: usize = 64 << 10;

/// Where a message stands in one channel (or in its topic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Not yet handed to the channels (the topic has none, or is paused).
    InTopic,
    Ready {
        attempts: u16,
    },
    Deferred {
        attempts: u16,
        deliver_at_ms: u64,
    },
    InFlight {
        attempts: u16,
        deadline_ms: u64,
        client: u64,
    },
    /// Read and no longer held: finished, sampled out, emptied, or
    /// published before the channel existed (it starts at the hand-over
    /// point of its creation).
    Finished,
}

/// One message as inspection shows it; the body cut at [`BODY_LIMIT_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub id: [u8; 16],
    pub offset: u64,
    pub timestamp_ns: i64,
    pub body: Bytes,
    pub body_size_bytes: usize,
}

impl Inspected {
    pub fn new(message: &Message) -> Self {
        let cut = message.body.len().min(BODY_LIMIT_BYTES);
        Inspected {
            id: message.id,
            offset: message.offset,
            timestamp_ns: message.timestamp_ns,
            body: Bytes::copy_from_slice(&message.body[..cut]),
            body_size_bytes: message.body.len(),
        }
    }

    pub fn body_truncated(&self) -> bool {
        self.body.len() < self.body_size_bytes
    }
}

/// A peeked message and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peeked {
    pub message: Inspected,
    pub position: Position,
}

impl Peeked {
    fn new(message: &Message, position: Position) -> Self {
        Peeked {
            message: Inspected::new(message),
            position,
        }
    }
}

/// `/message`: the message and its position in every channel, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageReport {
    pub message: Inspected,
    /// The delivery time the message was published with (0: none).
    pub published_deliver_at_ms: u64,
    pub channels: Vec<ChannelPosition>,
}

/// Where a message stands in one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPosition {
    pub channel: String,
    pub position: Position,
    /// In flight: the consumer that holds it.
    pub holder: Option<Holder>,
}

/// A consumer, as `/stats` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub client_id: String,
    pub hostname: String,
    pub remote_address: String,
}

impl Holder {
    fn of(info: &ClientInfo) -> Self {
        Holder {
            client_id: info.client_id.clone(),
            hostname: info.hostname.clone(),
            remote_address: info.remote_address.clone(),
        }
    }
}

/// What a channel peek found under the lock.
struct ChannelPlan {
    source: Source,
    now_ms: u64,
    ready: Vec<Held>,
    deferred: Vec<Held>,
    unread: Unread,
}

impl Broker {
    /// Whether this node answers inspections of `topic` itself: it
    /// dispatches (single node, or the leader), or the topic is its own
    /// memory-only one.
    pub fn inspects_here(&self, topic: &str) -> bool {
        let state = self.lock();
        state.leadership.may_dispatch() || state.topic(topic).is_some_and(Topic::is_ephemeral)
    }

    /// The next `count` messages channel `channel` of `topic` would deliver:
    /// the ready ones in delivery order, then deferred ones, soonest first.
    pub fn peek_channel(
        &self,
        topic: &str,
        channel: &str,
        count: usize,
    ) -> Result<Vec<Peeked>, BrokerError> {
        assert!(count <= MAX_PEEK_COUNT, "count is checked at the door");
        let plan = self.plan_channel_peek(topic, channel, count)?;
        resolve_channel_peek(plan, &self.store, count).map_err(storage_error)
    }

    fn plan_channel_peek(
        &self,
        topic: &str,
        channel: &str,
        count: usize,
    ) -> Result<ChannelPlan, BrokerError> {
        let now_ms = clock::now_ms();
        let state = self.lock();
        let topic = state.topic(topic).ok_or(BrokerError::TopicNotFound)?;
        let channel = topic.channel(channel).ok_or(BrokerError::ChannelNotFound)?;
        let with_cached = |mut held: Held| {
            if held.message.is_none() {
                held.message = topic.cache().get(held.offset).cloned();
            }
            held
        };
        let ready: Vec<Held> = channel.peek_ready(now_ms, count);
        let ready = ready.into_iter().map(with_cached).collect();
        let deferred = channel.peek_deferred(now_ms, count);
        let deferred = deferred.into_iter().map(with_cached).collect();
        let from = channel.read_cursor().max(topic.log_start());
        let below = topic
            .handed_over()
            .min(from.saturating_add(UNREAD_SCAN_ENTRIES));
        Ok(ChannelPlan {
            source: Source::of(topic),
            now_ms,
            ready,
            deferred,
            unread: Unread::of(topic, from, below.max(from)),
        })
    }

    /// The first `count` messages waiting in `topic` (not yet handed to
    /// its channels), in publish order.
    pub fn peek_topic(&self, topic: &str, count: usize) -> Result<Vec<Peeked>, BrokerError> {
        assert!(count <= MAX_PEEK_COUNT, "count is checked at the door");
        let (source, unread) = {
            let state = self.lock();
            let topic = state.topic(topic).ok_or(BrokerError::TopicNotFound)?;
            let from = topic.handed_over().max(topic.log_start());
            let below = topic.next_offset().min(from + count as u64).max(from);
            (Source::of(topic), Unread::of(topic, from, below))
        };
        let mut found = Vec::with_capacity(count);
        let walked = unread.walk(source, &self.store, count, |message| {
            found.push(Peeked::new(message, Position::InTopic));
            found.len() < count
        });
        walked.map_err(storage_error)?;
        Ok(found)
    }

    /// The message `id` of `topic` and its position in each channel;
    /// `None` when the topic holds no such message (any more).
    pub fn inspect_message(
        &self,
        topic: &str,
        id: &[u8; 16],
    ) -> Result<Option<MessageReport>, BrokerError> {
        let now_ms = clock::now_ms();
        let (source, offset, cached, positions) = {
            let state = self.lock();
            let topic = state.topic(topic).ok_or(BrokerError::TopicNotFound)?;
            let offset = decode_id(topic.id(), id);
            let Some(offset) =
                offset.filter(|&o| o >= topic.log_start() && o < topic.next_offset())
            else {
                return Ok(None);
            };
            let positions: Vec<(String, Option<Position>, Option<Holder>)> = topic
                .channels()
                .map(|channel| {
                    let found = if offset >= topic.handed_over() {
                        Some(Position::InTopic)
                    } else {
                        position(channel.state_of(offset))
                    };
                    let holder = match found {
                        Some(Position::InFlight { client, .. }) => {
                            state.clients.get(&client).map(|c| Holder::of(&c.info))
                        }
                        _ => None,
                    };
                    (channel.name().to_owned(), found, holder)
                })
                .collect();
            let cached = topic.cache().get(offset).cloned();
            (Source::of(topic), offset, cached, positions)
        };
        let message = source.message(&self.store, offset, cached);
        let Some(message) = message.map_err(storage_error)? else {
            return Ok(None);
        };
        let channels = positions
            .into_iter()
            .map(|(channel, position, holder)| ChannelPosition {
                channel,
                position: position.unwrap_or_else(|| first_position(&message, 0, now_ms)),
                holder,
            })
            .collect();
        let published_deliver_at_ms = message.deliver_at_ms;
        Ok(Some(MessageReport {
            message: Inspected::new(&message),
            published_deliver_at_ms,
            channels,
        }))
    }
}

/// A channel's state as a position; `None` for an unread offset, whose
/// position depends on the message's own delivery time.
fn position(state: OffsetState) -> Option<Position> {
    Some(match state {
        OffsetState::Unread => return None,
        OffsetState::Ready { attempts } => Position::Ready { attempts },
        OffsetState::Deferred {
            attempts,
            deliver_at_ms,
        } => Position::Deferred {
            attempts,
            deliver_at_ms,
        },
        OffsetState::InFlight {
            attempts,
            deadline_ms,
            client,
        } => Position::InFlight {
            attempts,
            deadline_ms,
            client,
        },
        OffsetState::Finished => Position::Finished,
    })
}

/// An unread (or held, `attempts` so far) message: deferred while its
/// delivery time is after `now_ms`, as dispatch decides.
fn first_position(message: &Message, attempts: u16, now_ms: u64) -> Position {
    if message.deliver_at_ms > now_ms {
        let deliver_at_ms = message.deliver_at_ms;
        Position::Deferred {
            attempts,
            deliver_at_ms,
        }
    } else {
        Position::Ready { attempts }
    }
}

/// The plan's held messages read where missing, then the unread range
/// walked until `count` ready messages are found or the scan ends.
fn resolve_channel_peek(
    plan: ChannelPlan,
    store: &Store,
    count: usize,
) -> Result<Vec<Peeked>, StorageError> {
    let ChannelPlan {
        source,
        now_ms,
        ready,
        deferred,
        unread,
    } = plan;
    let mut out = Vec::with_capacity(count);
    for held in ready {
        if let Some(message) = source.message(store, held.offset, held.message)? {
            let attempts = held.attempts;
            out.push(Peeked::new(&message, Position::Ready { attempts }));
        }
    }
    // Deferred messages found unread, by (delivery time, offset), bounded.
    let mut later: Vec<(u64, Peeked)> = Vec::new();
    let missing = count.saturating_sub(out.len());
    if missing > 0 {
        let chunk = missing.max(MIN_SCAN_CHUNK);
        unread.walk(source, store, chunk, |message| {
            let position = first_position(message, 0, now_ms);
            let peeked = Peeked::new(message, position);
            match position {
                Position::Deferred { deliver_at_ms, .. } => later.push((deliver_at_ms, peeked)),
                _ => out.push(peeked),
            }
            if later.len() > 2 * count {
                by_time(&mut later);
                later.truncate(count);
            }
            out.len() < count
        })?;
    }
    for held in deferred {
        if let Some(message) = source.message(store, held.offset, held.message)? {
            let position = Position::Deferred {
                attempts: held.attempts,
                deliver_at_ms: held.deliver_at_ms,
            };
            later.push((held.deliver_at_ms, Peeked::new(&message, position)));
        }
    }
    by_time(&mut later);
    let room = count.saturating_sub(out.len());
    out.extend(later.into_iter().take(room).map(|(_, m)| m));
    debug_assert!(out.len() <= count);
    Ok(out)
}

/// Deferred messages, soonest first (by offset at the same time).
fn by_time(later: &mut [(u64, Peeked)]) {
    later.sort_by_key(|(at, peeked)| (*at, peeked.message.offset));
}

fn storage_error(error: StorageError) -> BrokerError {
    BrokerError::Storage(error.to_string())
}
