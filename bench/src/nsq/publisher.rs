//! Pipelined publishing over one connection: a window of `PUB`/`MPUB`
//! commands awaiting their `OK`, each acknowledgement timed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore, TryAcquireError};
use tokio::task::JoinHandle;

use super::{command, Connection, Frame, FrameReader, FrameWriter, NsqError, OK};

/// One acknowledged publish command.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    /// Messages in the command (1 for `PUB`).
    pub messages: u32,
    /// From the command being written to the socket (or the origin given
    /// to [`Publisher::measure_next_from`]) until its `OK` arrived.
    pub latency: Duration,
}

/// Totals of a [`Publisher`] once every command was acknowledged.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PublishTotals {
    pub commands: u64,
    pub messages: u64,
}

/// Publishes over one connection with up to `window` commands awaiting
/// their `OK` at once. The server answers commands in order, so each `OK`
/// acknowledges the oldest outstanding one. A reader task takes the
/// responses, reports each [`Ack`] to a callback and asks the writer to
/// answer heartbeats.
pub struct Publisher {
    writer: FrameWriter,
    window: Arc<Semaphore>,
    window_size: u32,
    sent: mpsc::UnboundedSender<(Instant, u32)>,
    heartbeats: mpsc::UnboundedReceiver<()>,
    reader: JoinHandle<Result<()>>,
    totals: PublishTotals,
    /// Start of the next command's latency, if not its write.
    latency_origin: Option<Instant>,
}

impl Publisher {
    /// Takes over `connection` (already identified). `on_ack` runs on the
    /// reader task for every acknowledged command.
    pub fn start<F>(connection: Connection, window: u32, on_ack: F) -> Self
    where
        F: FnMut(Ack) + Send + 'static,
    {
        let window_size = window.max(1);
        let semaphore = Arc::new(Semaphore::new(window_size as usize));
        let (sent_tx, sent_rx) = mpsc::unbounded_channel();
        let (beat_tx, beat_rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(publisher_reader(
            connection.reader,
            semaphore.clone(),
            sent_rx,
            beat_tx,
            on_ack,
        ));
        Publisher {
            writer: connection.writer,
            window: semaphore,
            window_size,
            sent: sent_tx,
            heartbeats: beat_rx,
            reader,
            totals: PublishTotals::default(),
            latency_origin: None,
        }
    }

    /// Sends `PUB`, waiting first for room in the window.
    pub async fn publish(&mut self, topic: &str, body: &[u8]) -> Result<()> {
        self.wait_for_room().await?;
        command::publish(self.writer.buf(), topic, body)?;
        self.sent(1).await
    }

    /// Sends `MPUB`, waiting first for room in the window.
    pub async fn mpub<I, B>(&mut self, topic: &str, bodies: I) -> Result<()>
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        self.wait_for_room().await?;
        let count = command::mpub(self.writer.buf(), topic, bodies)?;
        self.sent(count).await
    }

    /// Measures the next command's latency from `origin` instead of from its
    /// write: from when it was due on a fixed schedule, so that time spent
    /// waiting for room in the window counts (no coordinated omission).
    pub fn measure_next_from(&mut self, origin: Instant) {
        self.latency_origin = Some(origin);
    }

    /// Commands sent and not yet acknowledged.
    pub fn outstanding(&self) -> u32 {
        self.window_size - self.window.available_permits() as u32
    }

    /// Waits until every command is acknowledged, then closes the
    /// connection.
    pub async fn finish(mut self) -> Result<PublishTotals> {
        self.writer.flush().await?;
        loop {
            let window = self.window.clone();
            tokio::select! {
                all = window.acquire_many_owned(self.window_size) => {
                    if all.is_err() {
                        return Err(self.reader_error().await);
                    }
                    break;
                }
                Some(()) = self.heartbeats.recv() => self.answer_heartbeat().await?,
            }
        }
        self.reader.abort();
        let _ = self.writer.shutdown().await;
        Ok(self.totals)
    }

    async fn wait_for_room(&mut self) -> Result<()> {
        while self.heartbeats.try_recv().is_ok() {
            command::nop(self.writer.buf());
        }
        loop {
            match self.window.clone().try_acquire_owned() {
                Ok(permit) => {
                    permit.forget();
                    return Ok(());
                }
                Err(TryAcquireError::Closed) => return Err(self.reader_error().await),
                Err(TryAcquireError::NoPermits) => {}
            }
            self.writer.flush().await?;
            let window = self.window.clone();
            tokio::select! {
                permit = window.acquire_owned() => match permit {
                    Ok(permit) => {
                        permit.forget();
                        return Ok(());
                    }
                    Err(_) => return Err(self.reader_error().await),
                },
                Some(()) = self.heartbeats.recv() => self.answer_heartbeat().await?,
            }
        }
    }

    async fn sent(&mut self, messages: u32) -> Result<()> {
        // Registered before the write so that the reader always finds it.
        let origin = self.latency_origin.take().unwrap_or_else(Instant::now);
        let _ = self.sent.send((origin, messages));
        self.totals.commands += 1;
        self.totals.messages += u64::from(messages);
        self.writer.flush().await
    }

    async fn answer_heartbeat(&mut self) -> Result<()> {
        command::nop(self.writer.buf());
        self.writer.flush().await
    }

    /// The reader's error once it has stopped (it closes the window first).
    async fn reader_error(&mut self) -> anyhow::Error {
        match (&mut self.reader).await {
            Ok(Err(error)) => error,
            Ok(Ok(())) => anyhow!("server closed the connection with commands outstanding"),
            Err(join) => anyhow!("publisher reader task failed: {join}"),
        }
    }
}

async fn publisher_reader<F>(
    mut reader: FrameReader,
    window: Arc<Semaphore>,
    mut sent: mpsc::UnboundedReceiver<(Instant, u32)>,
    heartbeats: mpsc::UnboundedSender<()>,
    mut on_ack: F,
) -> Result<()>
where
    F: FnMut(Ack),
{
    let result = async {
        loop {
            let frame = match reader.read_frame().await? {
                Some(frame) => frame,
                None => return Ok(()),
            };
            match frame {
                frame if frame.is_heartbeat() => {
                    let _ = heartbeats.send(());
                }
                Frame::Response(body) if body.as_ref() == OK => {
                    let (sent_at, messages) = sent
                        .try_recv()
                        .map_err(|_| anyhow!("OK received with no command outstanding"))?;
                    on_ack(Ack {
                        messages,
                        latency: sent_at.elapsed(),
                    });
                    window.add_permits(1);
                }
                Frame::Response(body) => bail!(
                    "unexpected response {:?} to a publish",
                    String::from_utf8_lossy(&body)
                ),
                Frame::Error(data) => return Err(NsqError::parse(&data).into()),
                Frame::Message(_) => bail!("unexpected message frame on a publisher"),
            }
        }
    }
    .await;
    window.close();
    result
}
