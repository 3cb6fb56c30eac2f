//! Publishing: PUB, MPUB, DPUB and HTTP `/pub` and `/mpub` all come here.
//!
//! A durable publish is one `Command::Publish`; its messages join the topic
//! (and reach its channels) when the applier sees it applied, and only then
//! is the publisher answered. An `#ephemeral` topic takes the messages in
//! memory at once.
//!
//! A publish may carry an idempotency key (HTTP's `Idempotency-Key`): with
//! `--dedup-window` on, the command carries it with the window and the count
//! limit, and the apply path stores nothing for a key still in the topic's
//! window (`ledgerq_storage::dedup`); the publisher is answered as the first
//! time. Ephemeral topics are not durable, so they ignore keys.

use std::sync::Arc;

use bytes::Bytes;
use ledgerq_storage::{Command, Dedup, Urgency};
use tokio::sync::oneshot;

use super::client::ClientId;
use super::message::Message;
use super::stats::count_publish;
use super::waiters::{Answer, Waiter};
use super::{Broker, BrokerError};
use crate::clock;
use crate::protocol::names::is_ephemeral;

/// A publish on its way to the disk.
pub enum PublishTicket {
    Done(Result<(), BrokerError>),
    Waiting(oneshot::Receiver<Answer>),
}

impl PublishTicket {
    /// Resolves once the messages are durable and visible (or refused).
    pub async fn wait(self) -> Result<(), BrokerError> {
        match self {
            PublishTicket::Done(result) => result,
            PublishTicket::Waiting(receiver) => {
                receiver.await.map_err(|_| BrokerError::Exiting)??;
                Ok(())
            }
        }
    }
}

impl Broker {
    /// Publishes `bodies` atomically; returns once they are durable.
    pub async fn publish(
        self: &Arc<Self>,
        topic_name: &str,
        bodies: Vec<Bytes>,
        defer_ms: u64,
    ) -> Result<(), BrokerError> {
        self.publish_keyed(topic_name, bodies, defer_ms, None).await
    }

    /// [`Broker::publish`] with an idempotency key (1 to
    /// [`ledgerq_storage::MAX_KEY_BYTES`] bytes, checked by the caller): a
    /// key seen for this topic within the window stores nothing and
    /// answers as the first publish did.
    pub async fn publish_keyed(
        self: &Arc<Self>,
        topic_name: &str,
        bodies: Vec<Bytes>,
        defer_ms: u64,
        key: Option<Bytes>,
    ) -> Result<(), BrokerError> {
        let topic_id = self.ensure_topic(topic_name).await?;
        self.submit(topic_name, topic_id, bodies, defer_ms, None, key)
            .wait()
            .await
    }

    /// Queues a publish to an existing topic without waiting, so that one
    /// connection's publishes are committed in the order it sent them.
    /// `publisher` is the TCP client to credit in `/stats`, if any.
    pub fn submit_publish(
        self: &Arc<Self>,
        topic_name: &str,
        topic_id: u64,
        bodies: Vec<Bytes>,
        defer_ms: u64,
        publisher: Option<ClientId>,
    ) -> PublishTicket {
        self.submit(topic_name, topic_id, bodies, defer_ms, publisher, None)
    }

    fn submit(
        self: &Arc<Self>,
        topic_name: &str,
        topic_id: u64,
        bodies: Vec<Bytes>,
        defer_ms: u64,
        publisher: Option<ClientId>,
        key: Option<Bytes>,
    ) -> PublishTicket {
        if self.is_exiting() {
            return PublishTicket::Done(Err(BrokerError::Exiting));
        }
        let timestamp_ns = clock::now_ns();
        let deliver_at_ms = if defer_ms > 0 {
            clock::now_ms() + defer_ms
        } else {
            0
        };
        if is_ephemeral(topic_name) {
            let messages = (timestamp_ns, deliver_at_ms, bodies);
            let result = self.publish_in_memory(topic_name, messages, publisher);
            return PublishTicket::Done(result);
        }
        let command = Command::Publish {
            topic: topic_id,
            timestamp_ns,
            deliver_at_ms,
            bodies,
            dedup: key.and_then(|key| self.dedup(key)),
        };
        let (waiter, answer) = Waiter::publish(publisher);
        self.propose(command, Urgency::Now, waiter);
        PublishTicket::Waiting(answer)
    }

    /// The command's de-duplication for `key`, unless the window is off.
    fn dedup(&self, key: Bytes) -> Option<Dedup> {
        let window_ms = self.options.dedup_window_ms;
        (window_ms > 0).then(|| {
            let dedup = Dedup {
                key,
                window_ms,
                max_keys: self.options.dedup_max_keys,
            };
            assert!(dedup.is_valid(), "idempotency keys are checked at the door");
            dedup
        })
    }

    fn publish_in_memory(
        &self,
        topic_name: &str,
        (timestamp_ns, deliver_at_ms, bodies): (i64, u64, Vec<Bytes>),
        publisher: Option<ClientId>,
    ) -> Result<(), BrokerError> {
        let mut state = self.lock();
        let topic = state
            .topic_mut(topic_name)
            .ok_or(BrokerError::TopicNotFound)?;
        let (topic_id, first_offset) = (topic.id(), topic.next_offset());
        let count = bodies.len() as u64;
        let messages = Message::batch(topic_id, first_offset, timestamp_ns, deliver_at_ms, bodies);
        topic.append(messages);
        count_publish(&mut state, publisher, topic_id, count);
        self.dispatch_topic(&mut state, topic_id);
        Ok(())
    }
}
