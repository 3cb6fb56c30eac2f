//! The sending half of a connection: replies strictly in command order
//! (a pipelining publisher gets its `OK`s in order while later commands are
//! read), the messages the broker hands this client, and heartbeats, each
//! write under the write deadline. Generic over the socket, so a plain
//! connection and an upgraded one (TLS, compression) share it.

use std::time::Duration;

use bytes::BytesMut;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{response, PendingReply, Reply, MAX_PENDING_REPLIES};
use crate::broker::client::Outbound;
use crate::protocol::frame::encode_message;

/// What the writer consumes: replies in command order (some still waiting
/// for their fsync) and the messages the broker hands this client.
pub(super) struct WriterQueues {
    replies: mpsc::Receiver<PendingReply>,
    replies_open: bool,
    pending: FuturesOrdered<PendingReply>,
    outbound: mpsc::UnboundedReceiver<Outbound>,
}

impl WriterQueues {
    pub(super) fn new(
        replies: mpsc::Receiver<PendingReply>,
        outbound: mpsc::UnboundedReceiver<Outbound>,
    ) -> Self {
        WriterQueues {
            replies,
            replies_open: true,
            pending: FuturesOrdered::new(),
            outbound,
        }
    }
}

/// The sending half: replies in order, messages, heartbeats.
pub(super) struct Writer<W> {
    pub(super) socket: BufWriter<W>,
    heartbeat: Option<Duration>,
    output_buffer_size_bytes: usize,
    scratch: BytesMut,
}

enum Step {
    Continue,
    /// The heartbeat interval changed (IDENTIFY): re-arm the timer.
    Reconfigured,
    /// An IDENTIFY reply that upgrades the socket was flushed.
    Upgrade,
    Stop,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum WriterExit {
    Closed,
    Upgrade,
}

/// A writer's settings without its socket, across an upgrade.
pub(super) struct WriterSettings {
    heartbeat: Option<Duration>,
    output_buffer_size_bytes: usize,
    scratch: BytesMut,
}

const WRITE_BUFFER_BYTES: usize = 64 << 10;

impl<W: AsyncWrite + Unpin> Writer<W> {
    pub(super) fn new(socket: W, heartbeat: Duration) -> Self {
        Writer {
            socket: BufWriter::with_capacity(WRITE_BUFFER_BYTES, socket),
            heartbeat: Some(heartbeat),
            output_buffer_size_bytes: 16 << 10,
            scratch: BytesMut::with_capacity(1024),
        }
    }

    /// Gives the socket back; every write was flushed, so nothing is lost.
    pub(super) fn into_parts(self) -> (WriterSettings, W) {
        assert!(self.socket.buffer().is_empty(), "writes are flushed");
        let settings = WriterSettings {
            heartbeat: self.heartbeat,
            output_buffer_size_bytes: self.output_buffer_size_bytes,
            scratch: self.scratch,
        };
        (settings, self.socket.into_inner())
    }

    pub(super) async fn run(
        &mut self,
        queues: &mut WriterQueues,
        done: CancellationToken,
    ) -> WriterExit {
        let mut beat = Box::pin(tokio::time::sleep(self.heartbeat_period()));
        let exit = loop {
            let step = tokio::select! {
                biased;
                Some(reply) = queues.pending.next(), if !queues.pending.is_empty() => self.write_reply(reply).await,
                next = queues.replies.recv(), if queues.replies_open && queues.pending.len() < MAX_PENDING_REPLIES => {
                    match next {
                        Some(reply) => queues.pending.push_back(reply),
                        None => queues.replies_open = false,
                    }
                    Step::Continue
                }
                Some(item) = queues.outbound.recv() => self.write_outbound(item, &mut queues.outbound).await,
                _ = &mut beat => {
                    beat.as_mut().reset(tokio::time::Instant::now() + self.heartbeat_period());
                    self.write_frame(&response(b"_heartbeat_")).await
                }
            };
            match step {
                Step::Reconfigured => beat
                    .as_mut()
                    .reset(tokio::time::Instant::now() + self.heartbeat_period()),
                Step::Upgrade => {
                    // The reader stopped at this IDENTIFY: nothing follows it.
                    assert!(queues.pending.is_empty(), "no reply after an upgrade");
                    break WriterExit::Upgrade;
                }
                Step::Stop => break WriterExit::Closed,
                Step::Continue => {}
            }
            if !queues.replies_open && queues.pending.is_empty() {
                break WriterExit::Closed;
            }
        };
        done.cancel();
        exit
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
                upgrade,
            } => {
                self.heartbeat = heartbeat;
                self.output_buffer_size_bytes = output_buffer_size_bytes.max(1);
                match self.write_frame(&frame).await {
                    Step::Continue if upgrade => Step::Upgrade,
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

impl WriterSettings {
    pub(super) fn with_socket<W: AsyncWrite + Unpin>(self, socket: W) -> Writer<W> {
        Writer {
            socket: BufWriter::with_capacity(WRITE_BUFFER_BYTES, socket),
            heartbeat: self.heartbeat,
            output_buffer_size_bytes: self.output_buffer_size_bytes,
            scratch: self.scratch,
        }
    }
}
