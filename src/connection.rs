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

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::broker::channel::InFlightError;
use crate::broker::client::{ClientId, ClientInfo, Outbound};
use crate::broker::Broker;
use crate::config::{ms, ServeArgs};
use crate::protocol::frame::{encode_error, encode_message, encode_response};
use crate::protocol::identify::{negotiate, IdentifyLimits, Negotiated, ServerFeatures};
use crate::protocol::{
    Admission, ClientCommand, CommandCodec, CommandGate, Limits, Line, ProtocolError, Verb,
    MAGIC_V2,
};

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
}

impl CommandGate for StateGate {
    fn before_params(&mut self, line: &Line) -> Admission {
        use ConnState::{Closing, Init, Subscribed};
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
}

impl ConnectionSettings {
    pub fn from_args(args: &ServeArgs) -> Self {
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
            ..ServerFeatures::new(NSQ_COMPATIBLE_VERSION)
        };
        ConnectionSettings {
            limits,
            identify,
            features,
            max_channel_consumers: args.max_channel_consumers,
        }
    }
}

/// What the writer does next, in command order.
enum Reply {
    Frame(Bytes),
    /// Write this error frame, then close.
    Fatal(Bytes),
    /// The IDENTIFY answer; from now on these heartbeat interval (None:
    /// disabled) and output buffer size apply.
    Configured {
        frame: Bytes,
        heartbeat: Option<Duration>,
        output_buffer_size_bytes: usize,
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
    let (read_half, write_half) = socket.into_split();
    let (replies_sender, replies) = mpsc::channel(MAX_PENDING_REPLIES);
    let writer_done = CancellationToken::new();
    let reader = Reader {
        broker: broker.clone(),
        settings,
        client,
        state: ConnState::Init,
        heartbeat: Some(DEFAULT_HEARTBEAT),
        replies: replies_sender,
    };
    let gate = StateGate {
        state: ConnState::Init,
        heartbeats_enabled: true,
    };
    let codec = FramedRead::new(
        read_half,
        CommandCodec::with_gate(reader.settings.limits, gate),
    );
    let writer = Writer::new(write_half, DEFAULT_HEARTBEAT);
    let (commands, mut socket) = tokio::join!(
        reader.run(codec, shutdown, writer_done.clone()),
        writer.run(replies, outbound, writer_done),
    );
    // In-flight messages are ready again before the client sees the close.
    broker.unregister_client(client);
    let _ = socket.shutdown().await;
    linger(commands.into_inner()).await;
    tracing::debug!(%peer, client, "client disconnected");
}

/// Reads and discards what the client still sends, until it closes or
/// [`LINGER_DEADLINE`] passes. Closing a socket with unread input makes the
/// kernel send RST, which destroys replies the client has not read yet (the
/// `OK`s of a pipelining publisher at shutdown, or a fatal error frame).
pub(crate) async fn linger(mut socket: OwnedReadHalf) {
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
    replies: mpsc::Sender<PendingReply>,
}

type CommandStream = FramedRead<OwnedReadHalf, CommandCodec<StateGate>>;

impl Reader {
    async fn run(
        mut self,
        mut commands: CommandStream,
        shutdown: CancellationToken,
        writer_done: CancellationToken,
    ) -> CommandStream {
        self.read_commands(&mut commands, shutdown, writer_done)
            .await;
        commands
    }

    async fn read_commands(
        &mut self,
        commands: &mut CommandStream,
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
                Ok(Some(Err(error))) if error.is_silent_close() => return,
                Ok(Some(Err(error))) => Some(self.fail(error)),
                Ok(Some(Ok(command))) => self.handle(command).await,
            };
            if let Some(reply) = reply {
                if self.replies.send(reply).await.is_err() {
                    return;
                }
            }
            if self.state == ConnState::Closed {
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
            ClientCommand::Auth(_) => Some(self.auth()),
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

    // IDENTIFY: once, before SUB; negotiates heartbeats, buffering, timeouts.
    fn identify(&mut self, body: &[u8]) -> PendingReply {
        let negotiated = match negotiate(body, &self.settings.identify) {
            Ok(negotiated) => negotiated,
            Err(error) => return self.fail(error),
        };
        self.apply_identify(&negotiated);
        let frame = if negotiated.feature_negotiation {
            response(negotiated.response_json(&self.settings.features).as_bytes())
        } else {
            response(b"OK")
        };
        ready(Reply::Configured {
            frame,
            heartbeat: self.heartbeat,
            output_buffer_size_bytes: negotiated.output_buffer_size_bytes as usize,
        })
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

    // AUTH: ledgerq has no auth server support yet, as nsqd without one.
    fn auth(&mut self) -> PendingReply {
        self.fail(ProtocolError::fatal("E_AUTH_DISABLED", "AUTH disabled"))
    }

    // SUB <topic> <channel>: creates both as needed; RDY starts at 0.
    async fn sub(&mut self, topic: &str, channel: &str) -> PendingReply {
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

/// The sending half: replies in order, messages, heartbeats.
struct Writer {
    socket: BufWriter<OwnedWriteHalf>,
    heartbeat: Option<Duration>,
    output_buffer_size_bytes: usize,
    scratch: BytesMut,
}

enum Step {
    Continue,
    /// The heartbeat interval changed (IDENTIFY): re-arm the timer.
    Reconfigured,
    Stop,
}

impl Writer {
    fn new(socket: OwnedWriteHalf, heartbeat: Duration) -> Self {
        Writer {
            socket: BufWriter::with_capacity(64 << 10, socket),
            heartbeat: Some(heartbeat),
            output_buffer_size_bytes: 16 << 10,
            scratch: BytesMut::with_capacity(1024),
        }
    }

    async fn run(
        mut self,
        mut replies: mpsc::Receiver<PendingReply>,
        mut outbound: mpsc::UnboundedReceiver<Outbound>,
        done: CancellationToken,
    ) -> BufWriter<OwnedWriteHalf> {
        let mut pending = FuturesOrdered::new();
        let mut replies_open = true;
        let mut beat = Box::pin(tokio::time::sleep(self.heartbeat_period()));
        loop {
            let step = tokio::select! {
                biased;
                Some(reply) = pending.next(), if !pending.is_empty() => self.write_reply(reply).await,
                next = replies.recv(), if replies_open && pending.len() < MAX_PENDING_REPLIES => {
                    match next {
                        Some(reply) => pending.push_back(reply),
                        None => replies_open = false,
                    }
                    Step::Continue
                }
                Some(item) = outbound.recv() => self.write_outbound(item, &mut outbound).await,
                _ = &mut beat => {
                    beat.as_mut().reset(tokio::time::Instant::now() + self.heartbeat_period());
                    self.write_frame(&response(b"_heartbeat_")).await
                }
            };
            if matches!(step, Step::Reconfigured) {
                beat.as_mut()
                    .reset(tokio::time::Instant::now() + self.heartbeat_period());
            }
            if matches!(step, Step::Stop) || (!replies_open && pending.is_empty()) {
                break;
            }
        }
        done.cancel();
        self.socket
    }

    fn heartbeat_period(&self) -> Duration {
        // Disabled heartbeats: a timer that never fires in practice.
        self.heartbeat.unwrap_or(Duration::from_secs(86_400 * 365))
    }

    /// Writes and flushes under the write deadline (one heartbeat interval).
    async fn write_frame(&mut self, frame: &[u8]) -> Step {
        let limit = self.heartbeat;
        let io = async {
            self.socket.write_all(frame).await?;
            self.socket.flush().await
        };
        let result = match limit {
            Some(limit) => tokio::time::timeout(limit, io)
                .await
                .unwrap_or(Err(std::io::ErrorKind::TimedOut.into())),
            None => io.await,
        };
        match result {
            Ok(()) => Step::Continue,
            Err(_) => Step::Stop,
        }
    }

    async fn write_reply(&mut self, reply: Reply) -> Step {
        match reply {
            Reply::Frame(frame) => self.write_frame(&frame).await,
            Reply::Fatal(frame) => {
                self.write_frame(&frame).await;
                Step::Stop
            }
            Reply::Configured {
                frame,
                heartbeat,
                output_buffer_size_bytes,
            } => {
                self.heartbeat = heartbeat;
                self.output_buffer_size_bytes = output_buffer_size_bytes.max(1);
                match self.write_frame(&frame).await {
                    Step::Continue => Step::Reconfigured,
                    other => other,
                }
            }
        }
    }

    /// Writes one message and whatever else is queued (up to the output
    /// buffer size), then flushes.
    async fn write_outbound(
        &mut self,
        first: Outbound,
        outbound: &mut mpsc::UnboundedReceiver<Outbound>,
    ) -> Step {
        let mut item = first;
        self.scratch.clear();
        loop {
            match item {
                Outbound::Close => return Step::Stop,
                Outbound::Message { message, attempts } => {
                    encode_message(
                        &mut self.scratch,
                        message.timestamp_ns,
                        attempts,
                        &message.id,
                        &message.body,
                    );
                }
            }
            if self.scratch.len() >= self.output_buffer_size_bytes {
                break;
            }
            match outbound.try_recv() {
                Ok(next) => item = next,
                Err(_) => break,
            }
        }
        let frame = std::mem::take(&mut self.scratch);
        let step = self.write_frame(&frame).await;
        self.scratch = frame;
        step
    }
}
