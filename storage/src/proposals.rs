//! The queue both command logs batch from: proposals in arrival order, cut
//! into batches bounded in commands and bytes, and the rule that a queue of
//! only lazy commands (FIN, REQ) may wait for company until its oldest is
//! `lazy_interval` old.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::command::{Command, Urgency};
use crate::log::Ticket;

/// One proposed command, waiting in a command log.
pub(crate) struct Pending {
    pub command: Command,
    pub urgency: Urgency,
    pub ticket: Ticket,
    pub queued_at: Instant,
}

impl Pending {
    pub fn new(command: Command, urgency: Urgency, ticket: Ticket) -> Self {
        Pending {
            command,
            urgency,
            ticket,
            queued_at: Instant::now(),
        }
    }
}

#[derive(Default)]
pub(crate) struct ProposalQueue {
    items: VecDeque<Pending>,
}

impl ProposalQueue {
    pub fn push(&mut self, pending: Pending) {
        self.items.push_back(pending);
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// When the queue holds only lazy commands: the time by which they go
    /// anyway. `None` when it is empty or an urgent command waits (go now).
    pub fn lazy_deadline(&self, lazy_interval: Duration) -> Option<Instant> {
        let oldest = self.items.front()?;
        let all_lazy = self.items.iter().all(|p| p.urgency == Urgency::Lazy);
        all_lazy.then(|| oldest.queued_at + lazy_interval)
    }

    /// The oldest commands, at most `max_commands` and `max_bytes` (but at
    /// least one).
    pub fn next_batch(&mut self, max_commands: usize, max_bytes: usize) -> Vec<Pending> {
        let mut items = Vec::new();
        let mut bytes = 0;
        while let Some(pending) = self.items.front() {
            let weight = pending.command.weight_bytes();
            let full =
                items.len() >= max_commands || (bytes + weight > max_bytes && !items.is_empty());
            if full {
                break;
            }
            bytes += weight;
            items.push(self.items.pop_front().expect("front exists"));
        }
        items
    }
}
