//! Connected clients: registration, SUB, RDY, CLS, and the in-flight
//! operations FIN, REQ and TOUCH.
//!
//! Which client holds which message is live state only (never durable):
//! a FIN or REQ changes the channel in memory at once, then proposes its
//! command lazily (it may share the next batch's fsync; a crash in that
//! window only causes a redelivery).

use std::sync::Arc;

use ledgerq_storage::{Command, Urgency};
use tokio::sync::mpsc::UnboundedSender;

use super::channel::InFlightError;
use super::client::{Client, ClientAuth, ClientId, ClientInfo, Outbound, TransportInfo};
use super::message::decode_id;
use super::{Broker, BrokerError, BrokerState};
use crate::clock;

/// The channel a client's FIN, REQ or TOUCH is about, and the offset.
struct InFlightRef {
    topic_id: u64,
    channel_id: u64,
    offset: u64,
    /// Whether the channel's cursor is recorded in the store.
    durable: bool,
}

impl Broker {
    pub fn register_client(
        &self,
        info: ClientInfo,
        outbound: UnboundedSender<Outbound>,
    ) -> ClientId {
        let mut state = self.lock();
        let id = state.next_client_id();
        let client = Client::new(id, info, outbound, self.options.msg_timeout_ms);
        state.clients.insert(id, client);
        id
    }

    /// Applies what IDENTIFY negotiated.
    pub fn configure_client(
        &self,
        id: ClientId,
        info: ClientInfo,
        msg_timeout_ms: u64,
        sample_rate: u8,
    ) {
        let mut state = self.lock();
        if let Some(client) = state.clients.get_mut(&id) {
            client.info = ClientInfo {
                remote_address: client.info.remote_address.clone(),
                connect_ts_s: client.info.connect_ts_s,
                auth: client.info.auth.clone(),
                ..info
            };
            client.msg_timeout_ms = msg_timeout_ms;
            client.sample_rate = sample_rate;
        }
    }

    /// A connection finished its IDENTIFY upgrades (TLS, compression).
    pub fn set_client_transport(&self, id: ClientId, transport: TransportInfo) {
        if let Some(client) = self.lock().clients.get_mut(&id) {
            client.transport = transport;
        }
    }

    /// Records what AUTH proved (after AUTH, and after each refresh of an
    /// expired authorization), for `/stats`.
    pub fn set_client_auth(&self, id: ClientId, auth: ClientAuth) {
        let mut state = self.lock();
        if let Some(client) = state.clients.get_mut(&id) {
            client.info.auth = auth;
        }
    }

    /// A connection went away: its in-flight messages are ready again now.
    /// A memory-only channel goes with its last client.
    pub fn unregister_client(&self, id: ClientId) {
        let mut state = self.lock();
        let Some(client) = state.clients.remove(&id) else {
            return;
        };
        let Some((topic_id, channel_id)) = client.subscription else {
            return;
        };
        let Some(topic) = state.topic_by_id_mut(topic_id) else {
            return;
        };
        let durable_topic = !topic.is_ephemeral();
        let Some(channel) = topic.channel_by_id_mut(channel_id) else {
            return;
        };
        channel.remove_client(id);
        if !(channel.is_ephemeral() && channel.clients().is_empty()) {
            self.dispatch_channel(&mut state, topic_id, channel_id);
            return;
        }
        state.remove_channel(channel_id, false);
        if durable_topic {
            let command = Command::DeleteChannel {
                channel: channel_id,
            };
            self.propose_detached(command, Urgency::Now);
        }
    }

    /// SUB: creates topic and channel as needed and subscribes the client.
    /// `max_consumers` of 0 means unlimited.
    pub async fn subscribe(
        self: &Arc<Self>,
        client: ClientId,
        topic_name: &str,
        channel_name: &str,
        max_consumers: usize,
    ) -> Result<(), BrokerError> {
        self.ensure_channel(topic_name, channel_name).await?;
        let mut state = self.lock();
        let topic = state
            .topic_mut(topic_name)
            .ok_or(BrokerError::DeletedWhileSubscribing)?;
        let topic_id = topic.id();
        let channel = topic
            .channel_mut(channel_name)
            .ok_or(BrokerError::DeletedWhileSubscribing)?;
        if max_consumers > 0 && channel.clients().len() >= max_consumers {
            return Err(BrokerError::TooManyConsumers {
                limit: max_consumers,
            });
        }
        channel.add_client(client);
        let channel_id = channel.id();
        if let Some(client) = state.clients.get_mut(&client) {
            client.subscription = Some((topic_id, channel_id));
        }
        Ok(())
    }

    /// RDY: the client's cap on outstanding messages.
    pub fn ready(&self, client: ClientId, count: u64) {
        let mut state = self.lock();
        let Some(entry) = state.clients.get_mut(&client) else {
            return;
        };
        if entry.closing {
            return;
        }
        entry.ready_count = count;
        if let Some((topic, channel)) = entry.subscription {
            self.dispatch_channel(&mut state, topic, channel);
        }
    }

    /// CLS: no more deliveries to this client.
    pub fn close(&self, client: ClientId) {
        let mut state = self.lock();
        if let Some(entry) = state.clients.get_mut(&client) {
            entry.ready_count = 0;
            entry.closing = true;
        }
    }

    /// FIN: the message is done; its slot frees up at once.
    pub fn finish(&self, client: ClientId, id: &[u8; 16]) -> Result<(), InFlightError> {
        let mut state = self.lock();
        let target = resolve(&mut state, client, id)?;
        let channel = channel_of(&mut state, &target);
        let finished = channel.finish(client, target.offset)?;
        let e2e = &self.options.e2e_latency;
        if e2e.enabled() {
            // One clock reading for both the window and the latency.
            let now_ns = clock::now_ns();
            let latency_ns = now_ns.saturating_sub(finished.message.timestamp_ns);
            channel.record_e2e(
                e2e.window_ms,
                (now_ns / 1_000_000) as u64,
                latency_ns.max(0) as u64,
            );
        }
        // A channel being deleted takes its cursor records with it.
        let durable = target.durable && !channel.is_deleting();
        if let Some(c) = state.clients.get_mut(&client) {
            c.in_flight_count -= 1;
            c.finish_count += 1;
        }
        if durable {
            let command = Command::Finish {
                channel: target.channel_id,
                offsets: vec![target.offset],
            };
            self.propose_detached(command, Urgency::Lazy);
        }
        self.dispatch_channel(&mut state, target.topic_id, target.channel_id);
        Ok(())
    }

    /// REQ: back to ready now, or after `timeout_ms` (clamped to
    /// `--max-req-timeout`); a delayed requeue is durable.
    pub fn requeue(
        &self,
        client: ClientId,
        id: &[u8; 16],
        timeout_ms: u64,
    ) -> Result<(), InFlightError> {
        let timeout_ms = timeout_ms.min(self.options.max_req_timeout_ms);
        let deliver_at_ms = (timeout_ms > 0).then(|| clock::now_ms() + timeout_ms);
        let mut state = self.lock();
        let target = resolve(&mut state, client, id)?;
        let channel = channel_of(&mut state, &target);
        let attempts = channel.requeue(client, target.offset, deliver_at_ms)?;
        if let Some(c) = state.clients.get_mut(&client) {
            c.in_flight_count -= 1;
            c.requeue_count += 1;
        }
        if let (true, Some(deliver_at_ms)) = (target.durable, deliver_at_ms) {
            let command = Command::Requeue {
                channel: target.channel_id,
                offset: target.offset,
                attempts,
                deliver_at_ms,
            };
            self.propose_detached(command, Urgency::Lazy);
        }
        self.dispatch_channel(&mut state, target.topic_id, target.channel_id);
        Ok(())
    }

    /// TOUCH: a new deadline, never past `--max-msg-timeout` after delivery.
    pub fn touch(&self, client: ClientId, id: &[u8; 16]) -> Result<(), InFlightError> {
        let mut state = self.lock();
        let target = resolve(&mut state, client, id)?;
        let msg_timeout_ms = state.clients.get(&client).map_or(0, |c| c.msg_timeout_ms);
        let max_msg_timeout_ms = self.options.max_msg_timeout_ms;
        let channel = channel_of(&mut state, &target);
        let now_ms = clock::now_ms();
        channel.touch(
            client,
            target.offset,
            now_ms,
            msg_timeout_ms,
            max_msg_timeout_ms,
        )
    }
}

/// The client's channel and the offset named by `id`.
fn resolve(
    state: &mut BrokerState,
    client: ClientId,
    id: &[u8; 16],
) -> Result<InFlightRef, InFlightError> {
    let (topic_id, channel_id) = state
        .clients
        .get(&client)
        .and_then(|c| c.subscription)
        .ok_or(InFlightError::NotInFlight)?;
    let topic = state
        .topic_by_id_mut(topic_id)
        .ok_or(InFlightError::NotInFlight)?;
    let durable_topic = !topic.is_ephemeral();
    let channel = topic
        .channel_by_id_mut(channel_id)
        .ok_or(InFlightError::NotInFlight)?;
    let offset = decode_id(topic_id, id).ok_or(InFlightError::NotInFlight)?;
    Ok(InFlightRef {
        topic_id,
        channel_id,
        offset,
        durable: durable_topic && !channel.is_ephemeral(),
    })
}

fn channel_of<'a>(
    state: &'a mut BrokerState,
    target: &InFlightRef,
) -> &'a mut super::channel::Channel {
    state
        .topic_by_id_mut(target.topic_id)
        .and_then(|t| t.channel_by_id_mut(target.channel_id))
        .expect("resolved under the same lock")
}
