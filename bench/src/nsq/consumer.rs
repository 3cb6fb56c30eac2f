//! A consumer loop over one connection: `SUB`, `RDY`, then `FIN` or `REQ`
//! for every message, `NOP` for heartbeats, `CLS` at the end.

use std::time::Duration;

use anyhow::{bail, Result};
use serde::Serialize;
use tokio::sync::watch;

use super::{command, Connection, Frame, Message, NsqError, CLOSE_WAIT};

/// What a consumer does with a delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// `FIN`: done with it.
    Finish,
    /// `REQ` with this delay.
    Requeue(Duration),
    /// Neither; the server redelivers it after the message timeout.
    Leave,
}

/// Counts of one [`consume`] run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ConsumeTotals {
    pub messages: u64,
    pub finished: u64,
    pub requeued: u64,
    pub heartbeats: u64,
    /// Non-fatal errors (`E_FIN_FAILED`, `E_REQ_FAILED`, `E_TOUCH_FAILED`).
    pub soft_errors: u64,
}

/// Subscribes `connection` (already identified) to `topic`/`channel`, sends
/// `RDY rdy` and hands every message to `handler`, answering with `FIN` or
/// `REQ` as it decides. Heartbeats are answered with `NOP`. Once `stop`
/// becomes true it sends `CLS`, handles what is still in transit, and
/// returns at `CLOSE_WAIT`.
pub async fn consume<F>(
    mut connection: Connection,
    topic: &str,
    channel: &str,
    rdy: u64,
    mut stop: watch::Receiver<bool>,
    mut handler: F,
) -> Result<ConsumeTotals>
where
    F: FnMut(&Message) -> Disposition,
{
    connection.sub(topic, channel).await?;
    command::rdy(connection.writer.buf(), rdy);
    connection.writer.flush().await?;
    let mut totals = ConsumeTotals::default();
    let mut closing = false;
    loop {
        let frame = tokio::select! {
            frame = connection.reader.read_frame() => frame?,
            () = stopped(&mut stop), if !closing => {
                command::cls(connection.writer.buf());
                connection.writer.flush().await?;
                closing = true;
                continue;
            }
        };
        let mut next = frame;
        loop {
            let Some(frame) = next else {
                if closing {
                    return Ok(totals);
                }
                bail!("server closed the consumer connection");
            };
            match frame {
                Frame::Message(message) => {
                    totals.messages += 1;
                    match handler(&message) {
                        Disposition::Finish => {
                            command::fin(connection.writer.buf(), &message.id);
                            totals.finished += 1;
                        }
                        Disposition::Requeue(delay) => {
                            command::req(connection.writer.buf(), &message.id, delay);
                            totals.requeued += 1;
                        }
                        Disposition::Leave => {}
                    }
                }
                frame if frame.is_heartbeat() => {
                    command::nop(connection.writer.buf());
                    totals.heartbeats += 1;
                }
                Frame::Response(body) if closing && body.as_ref() == CLOSE_WAIT => {
                    connection.writer.flush().await?;
                    return Ok(totals);
                }
                Frame::Response(body) => bail!(
                    "unexpected response {:?} on a consumer",
                    String::from_utf8_lossy(&body)
                ),
                Frame::Error(data) => {
                    let error = NsqError::parse(&data);
                    if error.is_fatal() {
                        return Err(error.into());
                    }
                    totals.soft_errors += 1;
                }
            }
            // Handle everything already received before flushing, so that
            // FINs go out in batches.
            match connection.reader.buffered_frame()? {
                Some(frame) => next = Some(frame),
                None => break,
            }
        }
        connection.writer.flush().await?;
    }
}

/// Resolves once `stop` is true, or never if its sender is dropped first.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}
