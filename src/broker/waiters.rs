//! Tickets and the waiters behind them.
//!
//! Every proposal carries a ticket. A proposer that cares about the answer
//! registers a [`Waiter`] under it first; the applier takes the waiter when
//! the ticket's entry has been applied here (or refused) and finishes it,
//! in log order. Detached proposals (FIN, REQ, background deletes) have no
//! waiter: their refusal is only logged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ledgerq_storage::{Outcome, Ticket};
use tokio::sync::oneshot;

use super::channel::Frame;
use super::client::ClientId;
use super::BrokerError;

pub(super) type Answer = Result<Outcome, BrokerError>;

/// What to do once a ticket's entry is applied (or refused).
pub(super) enum Waiter {
    /// Somebody awaits the outcome; `publisher` is the TCP client to credit
    /// for a publish in `/stats`.
    Reply {
        answer: oneshot::Sender<Answer>,
        publisher: Option<ClientId>,
    },
    /// A topic's creation: its pre-created channels are proposed before the
    /// answer, under the same lock, so they precede any publish to it.
    CreateTopic {
        answer: oneshot::Sender<Answer>,
        channels: Vec<String>,
    },
    /// Deliveries to send once recorded (never before), unless the
    /// channels were rebuilt since they were chosen (`generation`).
    Deliveries { frames: Vec<Frame>, generation: u64 },
}

impl Waiter {
    pub fn reply() -> (Waiter, oneshot::Receiver<Answer>) {
        Waiter::publish(None)
    }

    pub fn publish(publisher: Option<ClientId>) -> (Waiter, oneshot::Receiver<Answer>) {
        let (answer, receiver) = oneshot::channel();
        (Waiter::Reply { answer, publisher }, receiver)
    }

    pub fn create_topic(channels: Vec<String>) -> (Waiter, oneshot::Receiver<Answer>) {
        let (answer, receiver) = oneshot::channel();
        (Waiter::CreateTopic { answer, channels }, receiver)
    }
}

#[derive(Default)]
pub(super) struct Waiters {
    next_ticket: AtomicU64,
    waiting: Mutex<HashMap<Ticket, Waiter>>,
}

impl Waiters {
    /// A fresh ticket with `waiter` behind it.
    pub fn register(&self, waiter: Waiter) -> Ticket {
        let ticket = self.detached_ticket();
        self.lock().insert(ticket, waiter);
        ticket
    }

    /// A fresh ticket nobody waits on.
    pub fn detached_ticket(&self) -> Ticket {
        self.next_ticket.fetch_add(1, Ordering::Relaxed)
    }

    /// The waiter of `ticket`, once: a ticket is answered at most once.
    pub fn take(&self, ticket: Ticket) -> Option<Waiter> {
        self.lock().remove(&ticket)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Ticket, Waiter>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_unique_and_answered_once() {
        let waiters = Waiters::default();
        let (waiter, _answer) = Waiter::reply();
        let ticket = waiters.register(waiter);
        let detached = waiters.detached_ticket();
        assert_ne!(ticket, detached);
        assert!(waiters.take(detached).is_none());
        assert!(waiters.take(ticket).is_some());
        assert!(
            waiters.take(ticket).is_none(),
            "a second answer finds nobody"
        );
    }
}
