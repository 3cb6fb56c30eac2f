//! A channel's in-flight table and timers: FIN, REQ and TOUCH by the
//! client that holds a message, timeouts, emptying, and giving messages
//! back when a client leaves or this node stops leading. Asserted: every
//! in-flight message has exactly one deadline in `timeouts`.

use std::sync::Arc;

use super::super::client::ClientId;
use super::super::message::Message;
use super::{Channel, InFlight, InFlightError, Pending};

impl Channel {
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

    /// This node stopped leading: every in-flight message is ready again
    /// (the new leader redelivers it; this copy only serves stats until
    /// the next rebuild).
    /// Returns the client of each released message.
    pub fn release_in_flight(&mut self) -> Vec<ClientId> {
        let offsets: Vec<u64> = self.in_flight.keys().copied().collect();
        let mut clients = Vec::with_capacity(offsets.len());
        for offset in offsets {
            let flight = self.take_in_flight(offset).expect("listed above");
            clients.push(flight.client);
            self.requeue_now(offset, flight.attempts, Some(flight.message));
        }
        clients
    }

    pub(super) fn take_in_flight(&mut self, offset: u64) -> Option<InFlight> {
        let flight = self.in_flight.remove(&offset)?;
        self.timeouts.remove(&(flight.deadline_ms, offset));
        Some(flight)
    }

    pub(super) fn requeue_now(
        &mut self,
        offset: u64,
        attempts: u16,
        message: Option<Arc<Message>>,
    ) {
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
        self.counters.requeue_count += 1;
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
            self.counters.timeout_count += 1;
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
}
