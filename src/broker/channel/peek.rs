//! Reading a channel's delivery state without changing it (`/channel/peek`,
//! `/message`): which held messages dispatch would take next, in its order,
//! and where one offset stands.
//!
//! Dispatch takes, in order: the requeued queue; then, once the timer pass
//! has run, in-flight messages past their deadline (by deadline) and due
//! deferred ones (by time), both appended to that queue; then unread offsets
//! from the cursor. The unread range is the caller's to read (it may need
//! the store); this file only reports what the channel itself holds. Nothing
//! here takes `&mut self`.

use std::sync::Arc;

use super::super::message::Message;
use super::Channel;

/// A message the channel holds outside its unread range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub offset: u64,
    /// Deliveries so far (the next delivery carries one more).
    pub attempts: u16,
    /// 0, or not before this time (deferred).
    pub deliver_at_ms: u64,
    /// The message when the channel already has it in memory.
    pub message: Option<Arc<Message>>,
}

/// Where one offset stands in a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetState {
    /// Not yet read by the channel (ready unless its own delivery time is
    /// still to come: the caller decides from the message).
    Unread,
    /// Requeued, or timed out and awaiting the timer pass.
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
    /// Read and no longer held: finished, dropped by sampling or emptied.
    Finished,
}

impl Channel {
    /// Up to `limit` held messages ready at `now_ms`, in the order dispatch
    /// would take them.
    pub fn peek_ready(&self, now_ms: u64, limit: usize) -> Vec<Held> {
        let requeued = self.requeued.iter().map(|pending| Held {
            offset: pending.offset,
            attempts: pending.attempts,
            deliver_at_ms: 0,
            message: pending.message.clone(),
        });
        let expired = self
            .timeouts
            .iter()
            .take_while(|&&(deadline_ms, _)| deadline_ms <= now_ms)
            .map(|&(_, offset)| {
                let flight = &self.in_flight[&offset];
                Held {
                    offset,
                    attempts: flight.attempts,
                    deliver_at_ms: 0,
                    message: Some(flight.message.clone()),
                }
            });
        let due = self
            .deferred
            .iter()
            .take_while(|(&(at, _), _)| at <= now_ms)
            .map(|(&(_, offset), &attempts)| Held {
                offset,
                attempts,
                deliver_at_ms: 0,
                message: None,
            });
        requeued.chain(expired).chain(due).take(limit).collect()
    }

    /// Up to `limit` held messages deferred past `now_ms`, soonest first.
    pub fn peek_deferred(&self, now_ms: u64, limit: usize) -> Vec<Held> {
        self.deferred
            .range((now_ms.saturating_add(1), 0)..)
            .take(limit)
            .map(|(&(deliver_at_ms, offset), &attempts)| Held {
                offset,
                attempts,
                deliver_at_ms,
                message: None,
            })
            .collect()
    }

    /// Where `offset` stands, for an offset the topic has handed over.
    /// Linear in the requeued and deferred messages.
    pub fn state_of(&self, offset: u64) -> OffsetState {
        if let Some(flight) = self.in_flight.get(&offset) {
            return OffsetState::InFlight {
                attempts: flight.attempts,
                deadline_ms: flight.deadline_ms,
                client: flight.client,
            };
        }
        if let Some(pending) = self.requeued.iter().find(|p| p.offset == offset) {
            let attempts = pending.attempts;
            return OffsetState::Ready { attempts };
        }
        let deferred = self.deferred.iter().find(|(&(_, o), _)| o == offset);
        if let Some((&(deliver_at_ms, _), &attempts)) = deferred {
            return OffsetState::Deferred {
                attempts,
                deliver_at_ms,
            };
        }
        if offset >= self.read_cursor {
            return OffsetState::Unread;
        }
        OffsetState::Finished
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn message(offset: u64) -> Arc<Message> {
        Arc::new(Message::new(1, offset, 0, 0, Bytes::from_static(b"m")))
    }

    fn offsets(held: &[Held]) -> Vec<u64> {
        held.iter().map(|h| h.offset).collect()
    }

    /// Cursor at 10: 3 and 4 requeued, 5 deferred to 2 000, 6 to 9 000,
    /// 7 in flight until 1 500, 8 in flight until 5 000, 0..3 finished.
    fn sample() -> Channel {
        let mut channel = Channel::new(1, "c".into(), false, 10);
        channel.restore(3, 2, 0, 1_000);
        channel.restore(4, 1, 0, 1_000);
        channel.restore(5, 1, 2_000, 1_000);
        channel.restore(6, 3, 9_000, 1_000);
        for (offset, deadline_ms) in [(7, 1_500), (8, 5_000)] {
            let flight = super::super::InFlight {
                client: 9,
                attempts: 1,
                deadline_ms,
                delivered_at_ms: 1_000,
                message: message(offset),
            };
            channel.in_flight.insert(offset, flight);
            channel.timeouts.insert((deadline_ms, offset));
        }
        channel
    }

    #[test]
    fn ready_follows_dispatch_order_after_the_timer_pass() {
        let channel = sample();
        assert_eq!(offsets(&channel.peek_ready(1_000, 10)), vec![3, 4]);
        assert_eq!(offsets(&channel.peek_ready(2_000, 10)), vec![3, 4, 7, 5]);
        assert_eq!(offsets(&channel.peek_ready(2_000, 3)), vec![3, 4, 7]);
        let ready = channel.peek_ready(2_000, 10);
        assert_eq!(ready[0].attempts, 2);
        assert!(ready[2].message.is_some(), "in flight: held in memory");
        // What the timer pass and dispatch really do, in that order.
        let mut moved = sample();
        moved.expire(2_000);
        let requeued: Vec<u64> = moved.requeued.iter().map(|p| p.offset).collect();
        assert_eq!(requeued, offsets(&channel.peek_ready(2_000, 10)));
    }

    #[test]
    fn deferred_lists_only_what_is_not_due_soonest_first() {
        let channel = sample();
        let deferred = channel.peek_deferred(1_000, 10);
        assert_eq!(offsets(&deferred), vec![5, 6]);
        assert_eq!(deferred[0].deliver_at_ms, 2_000);
        assert_eq!(offsets(&channel.peek_deferred(2_000, 10)), vec![6]);
        assert_eq!(offsets(&channel.peek_deferred(1_000, 1)), vec![5]);
    }

    #[test]
    fn every_offset_has_exactly_one_state() {
        let channel = sample();
        assert_eq!(channel.state_of(0), OffsetState::Finished);
        assert_eq!(channel.state_of(3), OffsetState::Ready { attempts: 2 });
        assert_eq!(
            channel.state_of(6),
            OffsetState::Deferred {
                attempts: 3,
                deliver_at_ms: 9_000
            }
        );
        assert_eq!(
            channel.state_of(8),
            OffsetState::InFlight {
                attempts: 1,
                deadline_ms: 5_000,
                client: 9
            }
        );
        assert_eq!(channel.state_of(10), OffsetState::Unread);
    }
}
