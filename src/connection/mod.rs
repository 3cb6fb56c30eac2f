//! One client connection, read top to bottom like the NSQ protocol spec.
//!
//! A connection is two halves joined in one task:
//! - the reader checks the magic, decodes commands, enforces the connection
//!   state machine (init → subscribed → closing) and the read deadline, and
//!   turns each command into a [`Reply`] — now, or later for a publish that
//!   waits for its fsync;
//! - the writer sends replies strictly in command order (a pipelining
//!   publisher gets its `OK`s in order while later commands are read), the
//!   messages the broker hands this client, and heartbeats, each write
//!   under the write deadline.
//!
//! A fatal error is written after every earlier reply, then the connection
//! closes. Nothing here knows about storage.
//!
//! An IDENTIFY that negotiates TLS or compression ends the first phase:
//! the reader stops after it, the writer flushes its reply, and the socket
//! is upgraded ([`crate::transport`]) before a second phase runs the same
//! reader and writer over the new layers.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::auth::{session::AuthSession, Authenticator};
use crate::broker::channel::InFlightError;
use crate::broker::client::{ClientId, ClientInfo, TransportInfo};
use crate::broker::Broker;
use crate::config::{ms, ServeArgs};
use crate::protocol::frame::{encode_error, encode_response};
use crate::protocol::identify::{negotiate, IdentifyLimits, Negotiated, ServerFeatures};
use crate::protocol::{
    Admission, ClientCommand, CommandCodec, CommandGate, Limits, Line, ProtocolError, Verb,
    MAGIC_V2,
};
use crate::tls::ServerTls;
use crate::transport::{self, Compression, Upgrade};

mod writer;
use writer::{Writer, WriterExit, WriterQueues};

/// The connection's protocol state (nsqd's numbering in `/stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    Init,
    Subscribed,
    Closing,
    /// A fatal error was answered; nothing more is read.
    Closed,
}

/// The version reported to clients: nsqd's, since nsqadmin and clients parse it as semver
/// and gate features on it.
pub const NSQ_COMPATIBLE_VERSION: &str = "1.3.0";

/// nsqd's state checks, made before a command's parameters are looked at.
#[derive(Debug, Clone, Copy)]
pub struct StateGate {
    pub state: ConnState,
    pub heartbeats_enabled: bool,
    /// `--tls-required` and no TLS yet: only IDENTIFY may pass.
    pub tls_pending: bool,
}

impl CommandGate for StateGate {
    fn before_params(&mut self, line: &Line) -> Admission {
        use ConnState::{Closing, Init, Subscribed};
        if self.tls_pending && line.verb() != Verb::Identify {
            return Admission::Reject(ProtocolError::tls_required(line.name()));
        }
        let allowed = match line.verb() {
            Verb::Identify | Verb::Auth | Verb::Sub => self.state == Init,
            Verb::Rdy if self.state == Closing => return Admission::Ignore,
            Verb::Rdy | Verb::Cls => self.state == Subscribed,
            Verb::Fin | Verb::Req | Verb::Touch => matches!(self.state, Subscribed | Closing),
            Verb::Pub | Verb::Mpub | Verb::Dpub | Verb::Nop => true,
        };
        if !allowed {
            return Admission::Reject(ProtocolError::wrong_state(line.name()));
        }
        if line.verb() == Verb::Sub && !self.heartbeats_enabled {
            return Admission::Reject(ProtocolError::sub_without_heartbeats());
        }
        Admission::Proceed
    }
}

/// Replies a pipelining client may have outstanding before we stop reading.
const MAX_PENDING_REPLIES: usize = 1024;
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);
/// How long a closed connection keeps draining the client's input.
const LINGER_DEADLINE: Duration = Duration::from_secs(1);

/// Everything a connection needs from the flags.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    pub limits: Limits,
    pub identify: IdentifyLimits,
    pub features: ServerFeatures,
    pub max_channel_consumers: usize,
    /// The `tls_v1` upgrade's certificate and requirement.
    pub tls: Option<ServerTls>,
    /// The auth server (`--auth-http-address`), if any.
    pub authenticator: Option<Arc<Authenticator>>,
}

impl ConnectionSettings {
    pub fn from_args(
        args: &ServeArgs,
        tls: Option<ServerTls>,
        authenticator: Option<Arc<Authenticator>>,
    ) -> Self {
        let limits = Limits {
            max_msg_size_bytes: args.max_msg_size,
            max_body_size_bytes: args.max_body_size,
            max_rdy_count: args.max_rdy_count,
            max_req_timeout_ms: ms(args.max_req_timeout),
        };
        let identify = IdentifyLimits {
            max_heartbeat_interval_ms: ms(args.max_heartbeat_interval) as i64,
            max_output_buffer_size_bytes: args.max_output_buffer_size as i64,
            min_output_buffer_timeout_ms: ms(args.min_output_buffer_timeout) as i64,
            max_output_buffer_timeout_ms: ms(args.max_output_buffer_timeout) as i64,
            max_msg_timeout_ms: ms(args.max_msg_timeout) as i64,
            default_msg_timeout_ms: ms(args.msg_timeout) as i64,
            default_output_buffer_timeout_ms: ms(args.output_buffer_timeout) as i64,
            ..IdentifyLimits::default()
        };
        let features = ServerFeatures {
            max_rdy_count: args.max_rdy_count,
            max_msg_timeout_ms: ms(args.max_msg_timeout),
            max_deflate_level: args.max_deflate_level,
            tls_v1_available: tls.is_some(),
            deflate_available: args.deflate,
            snappy_available: args.snappy,
            auth_required: authenticator.is_some(),
            ..ServerFeatures::new(NSQ_COMPATIBLE_VERSION)
        };
        ConnectionSettings {
            limits,
            identify,
            features,
            max_channel_consumers: args.max_channel_consumers,
            tls,
            authenticator,
        }
    }
}

/// What the writer does next, in command order.
enum Reply {
    Frame(Bytes),
    /// Write this error frame, then close.
    Fatal(Bytes),
    /// The IDENTIFY answer; from now on these heartbeat interval (None:
    /// disabled) and output buffer size apply. `upgrade`: the socket is
    /// upgraded once this is flushed, so the writer stops after it.
    Configured {
        frame: Bytes,
        heartbeat: Option<Duration>,
        output_buffer_size_bytes: usize,
        upgrade: bool,
    },
}

type PendingReply = Pin<Box<dyn Future<Output = Reply> + Send>>;

fn response(data: &[u8]) -> Bytes {
    let mut buf = BytesMut::new();
    encode_response(&mut buf, data);
    buf.freeze()
}

fn error_frame(error: &ProtocolError) -> Bytes {
    let mut buf = BytesMut::new();
    encode_error(&mut buf, error);
    buf.freeze()
}

fn error_reply(error: &ProtocolError) -> Reply {
    if error.fatal {
        Reply::Fatal(error_frame(error))
    } else {
        Reply::Frame(error_frame(error))
    }
}

fn ready(reply: Reply) -> PendingReply {
    Box::pin(std::future::ready(reply))
}

/// Serves one accepted socket until it closes.
pub async fn serve(
    mut socket: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    settings: Arc<ConnectionSettings>,
    shutdown: CancellationToken,
) {
    let mut magic = [0u8; 4];
    let read = tokio::select! {
        _ = shutdown.cancelled() => return,
        read = socket.read_exact(&mut magic) => read,
    };
    if read.is_err() {
        return;
    }
    if &magic != MAGIC_V2 {
        let frame = error_frame(&ProtocolError::bad_protocol());
        let _ = socket.write_all(&frame).await;
        return;
    }
    let (outbound_sender, outbound) = mpsc::unbounded_channel();
    let info = ClientInfo {
        remote_address: peer.to_string(),
        client_id: peer.ip().to_string(),
        hostname: peer.ip().to_string(),
        connect_ts_s: crate::clock::now_ms() as i64 / 1000,
        ..ClientInfo::default()
    };
    let client = broker.register_client(info, outbound_sender);
    tracing::debug!(%peer, client, "client connected");
    let (replies_sender, replies) = mpsc::channel(MAX_PENDING_REPLIES);
    let mut reader = Reader {
        broker: broker.clone(),
        settings: settings.clone(),
        client,
        state: ConnState::Init,
        heartbeat: Some(DEFAULT_HEARTBEAT),
        replies: Some(replies_sender),
        pending_upgrade: None,
        upgraded: false,
        auth: auth_session(&broker, &settings, client, peer),
    };
    let mut queues = WriterQueues::new(replies, outbound);
    let gate = StateGate {
        state: ConnState::Init,
        heartbeats_enabled: true,
        tls_pending: settings
            .tls
            .as_ref()
            .is_some_and(|tls| tls.required_for_tcp),
    };
    let (read_half, write_half) = socket.into_split();
    let codec = CommandCodec::with_gate(settings.limits, gate);
    let mut commands = FramedRead::new(read_half, codec);
    let mut writer = Writer::new(write_half, DEFAULT_HEARTBEAT);
    let phase = run_phase(
        &mut reader,
        &mut commands,
        &mut writer,
        &mut queues,
        &shutdown,
    );
    let Some(upgrade) = phase.await else {
        return close(&broker, client, commands.into_inner(), writer).await;
    };
    // The upgrade replaces the reader, as nsqd does: anything the client sent
    // before its handshake is not expected to survive.
    let parts = commands.into_parts();
    let (writer, write_half) = writer.into_parts();
    let Ok(socket) = parts.io.reunite(write_half) else {
        return broker.unregister_client(client);
    };
    let upgraded = tokio::select! {
        _ = shutdown.cancelled() => None,
        upgraded = upgrade_socket(socket, upgrade, &settings) => upgraded,
    };
    let Some(upgraded) = upgraded else {
        tracing::debug!(%peer, client, "IDENTIFY upgrade failed");
        return broker.unregister_client(client);
    };
    broker.set_client_transport(client, transport_info(&upgraded, upgrade));
    if let Some(tls) = &upgraded.tls {
        reader.auth.set_tls(&tls.common_name);
    }
    reader.upgraded = true;
    let mut codec = parts.codec;
    codec.gate_mut().tls_pending &= !upgrade.tls;
    let mut commands = FramedRead::new(upgraded.reader, codec);
    let mut writer = writer.with_socket(upgraded.writer);
    let phase = run_phase(
        &mut reader,
        &mut commands,
        &mut writer,
        &mut queues,
        &shutdown,
    );
    let again = phase.await;
    assert!(
        again.is_none(),
        "an upgraded connection is never upgraded again"
    );
    close(&broker, client, commands.into_inner(), writer).await;
    tracing::debug!(%peer, client, "client disconnected");
}

/// The connection's AUTH state; what it proves shows in `/stats`.
fn auth_session(
    broker: &Arc<Broker>,
    settings: &ConnectionSettings,
    client: ClientId,
    peer: SocketAddr,
) -> AuthSession {
    let broker = broker.clone();
    AuthSession::new(settings.authenticator.clone(), peer.ip().to_string())
        .reporting_to(move |auth| broker.set_client_auth(client, auth.clone()))
}

/// Reader and writer over one transport, until the connection closes
/// (None) or its IDENTIFY asks for an upgrade, whose reply is then flushed.
async fn run_phase<R, W>(
    reader: &mut Reader,
    commands: &mut FramedRead<R, CommandCodec<StateGate>>,
    writer: &mut Writer<W>,
    queues: &mut WriterQueues,
    shutdown: &CancellationToken,
) -> Option<Upgrade>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let writer_done = CancellationToken::new();
    let (_, writer_exit) = tokio::join!(
        reader.read_phase(commands, shutdown.clone(), writer_done.clone()),
        writer.run(queues, writer_done),
    );
    match (writer_exit, reader.pending_upgrade.take()) {
        (WriterExit::Upgrade, Some(upgrade)) => Some(upgrade),
        _ => None,
    }
}

/// nsqd's upgrade steps, bounded in time: a client that stalls its
/// handshake or does not read its `OK` costs this connection only.
async fn upgrade_socket(
    socket: TcpStream,
    upgrade: Upgrade,
    settings: &ConnectionSettings,
) -> Option<transport::Upgraded> {
    let deadline = transport::TLS_HANDSHAKE_DEADLINE * 2;
    let ok = response(b"OK");
    let tls = settings.tls.as_ref();
    match tokio::time::timeout(deadline, transport::apply(socket, upgrade, tls, &ok)).await {
        Ok(Ok(upgraded)) => Some(upgraded),
        Ok(Err(error)) => {
            tracing::debug!(%error, "upgrade failed");
            None
        }
        Err(_) => None,
    }
}

fn transport_info(upgraded: &transport::Upgraded, upgrade: Upgrade) -> TransportInfo {
    let tls = upgraded.tls.clone().unwrap_or_default();
    TransportInfo {
        tls: upgraded.tls.is_some(),
        tls_version: tls.version,
        tls_cipher_suite: tls.cipher_suite,
        tls_negotiated_protocol: tls.negotiated_protocol,
        tls_mutual: tls.mutual,
        deflate: matches!(upgrade.compression, Compression::Deflate { .. }),
        snappy: upgrade.compression == Compression::Snappy,
    }
}

/// In-flight messages are ready again before the client sees the close.
async fn close<R, W>(broker: &Broker, client: ClientId, reader: R, writer: Writer<W>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    broker.unregister_client(client);
    let mut socket = writer.socket;
    let _ = socket.shutdown().await;
    linger(reader).await;
}

/// Reads and discards what the client still sends, until it closes or
/// [`LINGER_DEADLINE`] passes. Closing a socket with unread input makes the
/// kernel send RST, which destroys replies the client has not read yet (the
/// `OK`s of a pipelining publisher at shutdown, or a fatal error frame).
pub(crate) async fn linger<R: AsyncRead + Unpin>(mut socket: R) {
    let mut sink = [0u8; 4096];
    let drain = async { while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(LINGER_DEADLINE, drain).await;
}

struct Reader {
    broker: Arc<Broker>,
    settings: Arc<ConnectionSettings>,
    client: ClientId,
    state: ConnState,
    heartbeat: Option<Duration>,
    /// Dropped when the reader is done for good: the writer then finishes
    /// what is pending and stops.
    replies: Option<mpsc::Sender<PendingReply>>,
    /// Set by an IDENTIFY that negotiated an upgrade: reading stops there.
    pending_upgrade: Option<Upgrade>,
    /// The connection has been upgraded; a later IDENTIFY offers nothing.
    upgraded: bool,
    /// AUTH and the permission checks of SUB and the publishes.
    auth: AuthSession,
}

impl Reader {
    async fn read_phase<R: AsyncRead + Unpin>(
        &mut self,
        commands: &mut FramedRead<R, CommandCodec<StateGate>>,
        shutdown: CancellationToken,
        writer_done: CancellationToken,
    ) {
        self.read_commands(commands, shutdown, writer_done).await;
        if self.pending_upgrade.is_none() {
            self.replies = None;
        }
    }

    async fn read_commands<R: AsyncRead + Unpin>(
        &mut self,
        commands: &mut FramedRead<R, CommandCodec<StateGate>>,
        shutdown: CancellationToken,
        writer_done: CancellationToken,
    ) {
        loop {
            // Read deadline: two heartbeat intervals of silence close the connection.
            let deadline = self.heartbeat.map_or(Duration::MAX, |h| h * 2);
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = writer_done.cancelled() => return,
                next = tokio::time::timeout(deadline, commands.next()) => next,
            };
            let reply = match next {
                // A deadline inside a command gets nsqd's "failed to read" error.
                Err(_) => match commands.decoder().read_failure() {
                    Some(error) => Some(self.fail(error)),
                    None => return,
                },
                Ok(None) => return,
                // A failed read inside a command (a corrupt compressed
                // stream, a reset): nsqd's "failed to read" error for it.
                Ok(Some(Err(error))) if error.is_silent_close() => {
                    match commands.decoder().read_failure() {
                        Some(error) => Some(self.fail(error)),
                        None => return,
                    }
                }
                Ok(Some(Err(error))) => Some(self.fail(error)),
                Ok(Some(Ok(command))) => self.handle(command).await,
            };
            if let Some(reply) = reply {
                let Some(replies) = &self.replies else { return };
                if replies.send(reply).await.is_err() {
                    return;
                }
            }
            if self.state == ConnState::Closed || self.pending_upgrade.is_some() {
                return;
            }
            let gate = commands.decoder_mut().gate_mut();
            gate.state = self.state;
            gate.heartbeats_enabled = self.heartbeat.is_some();
        }
    }

    fn fail(&mut self, error: ProtocolError) -> PendingReply {
        if error.fatal {
            self.state = ConnState::Closed;
        }
        ready(error_reply(&error))
    }

    async fn handle(&mut self, command: ClientCommand) -> Option<PendingReply> {
        match command {
            ClientCommand::Identify(body) => Some(self.identify(&body)),
            ClientCommand::Auth(secret) => Some(self.auth(&secret).await),
            ClientCommand::Sub { topic, channel } => Some(self.sub(&topic, &channel).await),
            ClientCommand::Pub { topic, body } => {
                Some(self.publish("PUB", &topic, vec![body], 0).await)
            }
            ClientCommand::Mpub { topic, bodies } => {
                Some(self.publish("MPUB", &topic, bodies, 0).await)
            }
            ClientCommand::Dpub {
                topic,
                defer_ms,
                body,
            } => Some(self.publish("DPUB", &topic, vec![body], defer_ms).await),
            ClientCommand::Rdy { count } => self.rdy(count),
            ClientCommand::Fin { id } => self.fin(&id),
            ClientCommand::Req { id, timeout_ms } => self.req(&id, timeout_ms),
            ClientCommand::Touch { id } => self.touch(&id),
            ClientCommand::Cls => Some(self.cls()),
            ClientCommand::Nop => None,
        }
    }

    // IDENTIFY: once, before SUB; negotiates heartbeats, buffering, timeouts,
    // and TLS and compression, applied once the reply is flushed.
    fn identify(&mut self, body: &[u8]) -> PendingReply {
        let negotiated = match negotiate(body, &self.settings.identify) {
            Ok(negotiated) => negotiated,
            Err(error) => return self.fail(error),
        };
        self.apply_identify(&negotiated);
        let mut upgrade = None;
        let frame = if negotiated.feature_negotiation {
            let features = self.offered_features();
            let upgrades = match negotiated.upgrades(&features) {
                Ok(upgrades) => upgrades,
                Err(error) => return self.fail(error),
            };
            let compression = match (upgrades.snappy, upgrades.deflate) {
                (true, _) => Compression::Snappy,
                (_, true) => Compression::Deflate {
                    level: upgrades.deflate_level.clamp(1, 9) as u32,
                },
                _ => Compression::None,
            };
            let wanted = Upgrade {
                tls: upgrades.tls_v1,
                compression,
            };
            upgrade = Some(wanted).filter(Upgrade::is_needed);
            response(negotiated.response_json(&features).as_bytes())
        } else {
            response(b"OK")
        };
        self.pending_upgrade = upgrade;
        ready(Reply::Configured {
            frame,
            heartbeat: self.heartbeat,
            output_buffer_size_bytes: negotiated.output_buffer_size_bytes as usize,
            upgrade: upgrade.is_some(),
        })
    }

    /// What this connection may still negotiate: nothing once upgraded.
    fn offered_features(&self) -> ServerFeatures {
        let features = self.settings.features.clone();
        if !self.upgraded {
            return features;
        }
        ServerFeatures {
            tls_v1_available: false,
            deflate_available: false,
            snappy_available: false,
            ..features
        }
    }

    fn apply_identify(&mut self, negotiated: &Negotiated) {
        self.heartbeat = negotiated.heartbeat_interval_ms.map(Duration::from_millis);
        let info = ClientInfo {
            client_id: negotiated.client_id.clone(),
            hostname: negotiated.hostname.clone(),
            user_agent: negotiated.user_agent.clone(),
            ..ClientInfo::default()
        };
        let sample_rate = u8::try_from(negotiated.sample_rate).unwrap_or(0);
        self.broker
            .configure_client(self.client, info, negotiated.msg_timeout_ms, sample_rate);
    }

    // AUTH <secret>: asks the auth server (bounded by its timeouts); the
    // reply lists who the secret belongs to. Without one: E_AUTH_DISABLED.
    async fn auth(&mut self, secret: &[u8]) -> PendingReply {
        match self.auth.auth(secret, Instant::now()).await {
            Ok(granted) => ready(Reply::Frame(response(granted.response_json().as_bytes()))),
            Err(error) => self.fail(error),
        }
    }

    // SUB <topic> <channel>: creates both as needed; RDY starts at 0.
    async fn sub(&mut self, topic: &str, channel: &str) -> PendingReply {
        if let Err(error) = self.auth.check("SUB", topic, channel, Instant::now()).await {
            return self.fail(error);
        }
        let limit = self.settings.max_channel_consumers;
        match self
            .broker
            .subscribe(self.client, topic, channel, limit)
            .await
        {
            Ok(()) => {
                self.state = ConnState::Subscribed;
                ready(Reply::Frame(response(b"OK")))
            }
            Err(error) => self.fail(ProtocolError::sub_failed(topic, channel, &error)),
        }
    }

    // PUB / MPUB / DPUB: OK only once the messages are fsynced. Queued in
    // command order; later commands are read while this one syncs.
    async fn publish(
        &mut self,
        verb: &'static str,
        topic: &str,
        bodies: Vec<Bytes>,
        defer_ms: u64,
    ) -> PendingReply {
        if let Err(error) = self.auth.check(verb, topic, "", Instant::now()).await {
            return self.fail(error);
        }
        let topic_id = match self.broker.ensure_topic(topic).await {
            Ok(id) => id,
            Err(error) => return self.fail(ProtocolError::publish_failed(verb, &error)),
        };
        let ticket =
            self.broker
                .submit_publish(topic, topic_id, bodies, defer_ms, Some(self.client));
        Box::pin(async move {
            match ticket.wait().await {
                Ok(()) => Reply::Frame(response(b"OK")),
                Err(error) => error_reply(&ProtocolError::publish_failed(verb, &error)),
            }
        })
    }

    // RDY <count>: the cap on this client's in-flight messages.
    fn rdy(&mut self, count: u64) -> Option<PendingReply> {
        self.broker.ready(self.client, count);
        None
    }

    // FIN <id>: done with a message.
    fn fin(&mut self, id: &[u8; 16]) -> Option<PendingReply> {
        let result = self.broker.finish(self.client, id);
        in_flight_reply("FIN", id, result)
    }

    // REQ <id> <timeout_ms>: put back, now or after a delay (clamped).
    fn req(&mut self, id: &[u8; 16], timeout_ms: u64) -> Option<PendingReply> {
        let result = self.broker.requeue(self.client, id, timeout_ms);
        in_flight_reply("REQ", id, result)
    }

    // TOUCH <id>: reset the in-flight deadline.
    fn touch(&mut self, id: &[u8; 16]) -> Option<PendingReply> {
        let result = self.broker.touch(self.client, id);
        in_flight_reply("TOUCH", id, result)
    }

    // CLS: no more messages; the client closes once it has answered its in-flight ones.
    fn cls(&mut self) -> PendingReply {
        self.broker.close(self.client);
        self.state = ConnState::Closing;
        ready(Reply::Frame(response(b"CLOSE_WAIT")))
    }
}

fn in_flight_reply(
    verb: &str,
    id: &[u8; 16],
    result: Result<(), InFlightError>,
) -> Option<PendingReply> {
    let error = result.err()?;
    let error = ProtocolError::in_flight_failed(verb, id, error);
    Some(ready(error_reply(&error)))
}
