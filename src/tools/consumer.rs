//! A consumer of one topic/channel over connections to every node, shared by
//! `tail` and `to-file`: connect, SUB, RDY (the max-in-flight split across
//! the connections as go-nsq does), then one task per connection that passes
//! messages on and writes the FINs it is given, answering heartbeats.
//!
//! Any connection that fails ends the consumer with its error: the tools
//! exit non-zero and are restarted by their supervisor (for `to-file`,
//! without losing or duplicating anything).

use anyhow::{bail, Context as _};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use super::nsq_client::Message;
use super::nsq_client::{
    encode_fin, encode_rdy, encode_sub, is_fatal_error, ClientOptions, Connection, Frame,
};

/// A message and the connection it came from.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub node: usize,
    pub message: Message,
}

/// Messages from every connection, FINs back to their connections.
pub struct Consumer {
    deliveries: mpsc::UnboundedReceiver<anyhow::Result<Delivery>>,
    commands: Vec<mpsc::UnboundedSender<Bytes>>,
    tasks: Vec<JoinHandle<()>>,
}

/// RDY per connection: `max_in_flight` split across `connections`, at least
/// 1 each and at most the server's `max_rdy_count`.
pub fn rdy_per_connection(max_in_flight: u64, connections: usize, max_rdy_count: u64) -> u64 {
    let connections = u64::try_from(connections.max(1)).unwrap_or(u64::MAX);
    (max_in_flight / connections).clamp(1, max_rdy_count.max(1))
}

impl Consumer {
    /// Connects to every node and subscribes with `max_in_flight` in total.
    pub async fn subscribe(
        nodes: &[String],
        topic: &str,
        channel: &str,
        max_in_flight: u64,
        options: &ClientOptions,
    ) -> anyhow::Result<Consumer> {
        let connections = futures::future::try_join_all(
            nodes
                .iter()
                .map(|address| subscribe_one(address, topic, channel, options)),
        )
        .await?;
        let (sender, deliveries) = mpsc::unbounded_channel();
        let mut commands = Vec::new();
        let mut tasks = Vec::new();
        let count = connections.len();
        for (node, mut connection) in connections.into_iter().enumerate() {
            let rdy = rdy_per_connection(max_in_flight, count, connection.max_rdy_count);
            let mut buf = BytesMut::new();
            encode_rdy(&mut buf, rdy);
            connection.send(&buf).await?;
            let (command_sender, receiver) = mpsc::unbounded_channel();
            commands.push(command_sender);
            tasks.push(tokio::spawn(serve(
                connection,
                node,
                sender.clone(),
                receiver,
            )));
        }
        Ok(Consumer {
            deliveries,
            commands,
            tasks,
        })
    }

    /// The next message, or the first connection's failure.
    pub async fn next(&mut self) -> anyhow::Result<Delivery> {
        match self.deliveries.recv().await {
            Some(delivery) => delivery,
            None => bail!("every connection closed"),
        }
    }

    /// A message already received, without waiting.
    pub fn try_next(&mut self) -> Option<anyhow::Result<Delivery>> {
        self.deliveries.try_recv().ok()
    }

    /// Queues the FIN of `delivery` on its connection.
    pub fn finish(&self, delivery: &Delivery) {
        let mut buf = BytesMut::new();
        encode_fin(&mut buf, &delivery.message.id);
        // A closed connection has already reported its error through `next`.
        let _ = self.commands[delivery.node].send(buf.freeze());
    }

    /// Writes every queued FIN, then closes the connections.
    pub async fn close(self) {
        drop(self.commands);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn subscribe_one(
    address: &str,
    topic: &str,
    channel: &str,
    options: &ClientOptions,
) -> anyhow::Result<Connection> {
    let mut connection = Connection::connect(address, options).await?;
    let mut buf = BytesMut::new();
    encode_sub(&mut buf, topic, channel);
    connection.send(&buf).await?;
    match connection.reply().await.context("SUB")? {
        Frame::Response(text) if &text[..] == b"OK" => Ok(connection),
        Frame::Error(text) => bail!("{address}: {}", String::from_utf8_lossy(&text)),
        other => bail!("{address}: unexpected reply to SUB: {other:?}"),
    }
}

/// One connection: messages out to the consumer, queued commands to the
/// server, until the command queue closes (then the write side is shut).
async fn serve(
    mut connection: Connection,
    node: usize,
    deliveries: mpsc::UnboundedSender<anyhow::Result<Delivery>>,
    mut commands: mpsc::UnboundedReceiver<Bytes>,
) {
    let failed = loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(bytes) => {
                    if let Err(error) = connection.send(&bytes).await {
                        break error;
                    }
                }
                None => {
                    connection.shutdown().await;
                    return;
                }
            },
            frame = connection.recv() => match frame {
                Err(error) => break error,
                Ok(frame) if frame.is_heartbeat() => {
                    if let Err(error) = connection.answer_heartbeat().await {
                        break error;
                    }
                }
                Ok(Frame::Message(message)) => {
                    let _ = deliveries.send(Ok(Delivery { node, message }));
                }
                Ok(Frame::Error(text)) if !is_fatal_error(&text) => {
                    let text = String::from_utf8_lossy(&text);
                    tracing::warn!(nsqd = %connection.address, "{text}");
                }
                Ok(Frame::Error(text)) => {
                    let text = String::from_utf8_lossy(&text);
                    break anyhow::anyhow!("{}: {text}", connection.address);
                }
                Ok(Frame::Response(_)) => {}
            },
        }
    };
    let _ = deliveries.send(Err(failed));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_in_flight_is_split_across_connections() {
        assert_eq!(rdy_per_connection(200, 1, 2500), 200);
        assert_eq!(rdy_per_connection(200, 3, 2500), 66);
        assert_eq!(rdy_per_connection(2, 3, 2500), 1);
        assert_eq!(rdy_per_connection(10_000, 1, 2500), 2500);
        assert_eq!(rdy_per_connection(0, 0, 0), 1);
    }
}
