//! A connected client as the broker sees it: its flow control (RDY, in
//! flight), its negotiated settings, its counters, and the queue through
//! which the broker hands it messages.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use super::message::Message;

pub type ClientId = u64;

/// What the broker pushes to a connection's writer.
#[derive(Debug)]
pub enum Outbound {
    Message {
        message: Arc<Message>,
        attempts: u16,
    },
    /// The channel or topic was deleted: close the connection.
    Close,
}

/// Self-description from IDENTIFY, shown in stats.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub remote_address: String,
    pub client_id: String,
    pub hostname: String,
    pub user_agent: String,
    pub connect_ts_s: i64,
    /// What AUTH proved (`Broker::set_client_auth`).
    pub auth: ClientAuth,
}

/// A client's AUTH as `/stats` shows it (`authed`, `auth_identity`,
/// `auth_identity_url`, each left out when false or empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientAuth {
    /// AUTH succeeded with at least one authorization.
    pub authed: bool,
    /// The auth server's name for the secret's owner.
    pub identity: String,
    pub identity_url: String,
}

/// How a client's bytes travel, for `/stats` (set once its IDENTIFY
/// upgrades are done).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportInfo {
    pub tls: bool,
    /// `TLS1.2` / `TLS1.3`.
    pub tls_version: String,
    pub tls_cipher_suite: String,
    pub tls_negotiated_protocol: String,
    /// The client presented a certificate.
    pub tls_mutual: bool,
    pub deflate: bool,
    pub snappy: bool,
}

#[derive(Debug)]
pub struct Client {
    pub id: ClientId,
    pub info: ClientInfo,
    pub transport: TransportInfo,
    pub outbound: UnboundedSender<Outbound>,
    /// `(topic id, channel id)` after SUB.
    pub subscription: Option<(u64, u64)>,
    pub ready_count: u64,
    pub in_flight_count: u64,
    pub closing: bool,
    pub msg_timeout_ms: u64,
    pub sample_rate: u8,
    pub message_count: u64,
    pub finish_count: u64,
    pub requeue_count: u64,
    /// Messages published over TCP, per topic, in first-publish order.
    pub pub_counts: Vec<(String, u64)>,
}

impl Client {
    pub fn new(
        id: ClientId,
        info: ClientInfo,
        outbound: UnboundedSender<Outbound>,
        msg_timeout_ms: u64,
    ) -> Self {
        Client {
            id,
            info,
            transport: TransportInfo::default(),
            outbound,
            subscription: None,
            ready_count: 0,
            in_flight_count: 0,
            closing: false,
            msg_timeout_ms,
            sample_rate: 0,
            message_count: 0,
            finish_count: 0,
            requeue_count: 0,
            pub_counts: Vec::new(),
        }
    }

    /// NSQ's rule: ready while RDY > 0 and in-flight < RDY (RDY is a cap).
    pub fn is_ready(&self) -> bool {
        !self.closing && self.in_flight_count < self.ready_count
    }
}
