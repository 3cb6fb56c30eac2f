//! The tools' NSQ client: one TCP protocol V2 connection (magic, IDENTIFY,
//! frames in, commands out), as any NSQ client speaks it.
//!
//! Frames are decoded by [`FrameCodec`] (`super::frame_codec`); commands are
//! encoded by the `encode_*` functions, unit-tested against the server's own
//! parser in `crate::protocol`. Heartbeats must be answered with `NOP`
//! ([`Connection::answer_heartbeat`]).

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

pub use super::frame_codec::{Frame, FrameCodec, Message};
use crate::protocol::frame::MESSAGE_ID_LENGTH_BYTES;
use crate::protocol::MAGIC_V2;

/// How long connecting and IDENTIFY may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The heartbeat interval the tools ask for.
const HEARTBEAT_INTERVAL_MS: u64 = 30_000;

fn line(buf: &mut BytesMut, parts: &[&[u8]]) {
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            buf.put_u8(b' ');
        }
        buf.put_slice(part);
    }
    buf.put_u8(b'\n');
}

fn put_body(buf: &mut BytesMut, body: &[u8]) {
    buf.put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
    buf.put_slice(body);
}

/// `SUB <topic> <channel>\n`.
pub fn encode_sub(buf: &mut BytesMut, topic: &str, channel: &str) {
    line(buf, &[b"SUB", topic.as_bytes(), channel.as_bytes()]);
}

/// `RDY <count>\n`.
pub fn encode_rdy(buf: &mut BytesMut, count: u64) {
    line(buf, &[b"RDY", count.to_string().as_bytes()]);
}

/// `FIN <id>\n`.
pub fn encode_fin(buf: &mut BytesMut, id: &[u8; MESSAGE_ID_LENGTH_BYTES]) {
    line(buf, &[b"FIN", id]);
}

/// `NOP\n`.
pub fn encode_nop(buf: &mut BytesMut) {
    line(buf, &[b"NOP"]);
}

/// `PUB <topic>\n[size][body]`.
pub fn encode_pub(buf: &mut BytesMut, topic: &str, body: &[u8]) {
    line(buf, &[b"PUB", topic.as_bytes()]);
    put_body(buf, body);
}

/// `MPUB <topic>\n[total size][count]([size][body])*`.
pub fn encode_mpub(buf: &mut BytesMut, topic: &str, bodies: &[Bytes]) {
    line(buf, &[b"MPUB", topic.as_bytes()]);
    let items_bytes: usize = bodies.iter().map(|body| 4 + body.len()).sum();
    buf.put_u32(u32::try_from(4 + items_bytes).unwrap_or(u32::MAX));
    buf.put_u32(u32::try_from(bodies.len()).unwrap_or(u32::MAX));
    for body in bodies {
        put_body(buf, body);
    }
}

/// IDENTIFY with feature negotiation (the reply is JSON).
pub fn encode_identify(buf: &mut BytesMut, user_agent: &str) {
    let hostname = crate::http::info::hostname();
    let short = hostname.split('.').next().unwrap_or_default().to_owned();
    let body = serde_json::json!({
        "client_id": short,
        "hostname": hostname,
        "user_agent": user_agent,
        "feature_negotiation": true,
        "heartbeat_interval": HEARTBEAT_INTERVAL_MS,
    });
    line(buf, &[b"IDENTIFY"]);
    put_body(buf, body.to_string().as_bytes());
}

/// `max_rdy_count` from an IDENTIFY reply (`None` for a plain `OK`).
pub fn max_rdy_count(reply: &[u8]) -> Option<u64> {
    let json: serde_json::Value = serde_json::from_slice(reply).ok()?;
    json.get("max_rdy_count")?.as_u64()
}

/// One connection to an nsqd (or ledgerq) TCP address.
pub struct Connection {
    pub address: String,
    /// The server's largest RDY (nsqd's default when it did not say).
    pub max_rdy_count: u64,
    reader: FramedRead<OwnedReadHalf, FrameCodec>,
    writer: OwnedWriteHalf,
}

impl Connection {
    /// Connects to `address` (`host:port`), sends the magic and IDENTIFY.
    pub async fn connect(address: &str, user_agent: &str) -> anyhow::Result<Connection> {
        let connect = async {
            let stream = TcpStream::connect(address).await?;
            let _ = stream.set_nodelay(true);
            let (read, write) = stream.into_split();
            let mut connection = Connection {
                address: address.to_owned(),
                max_rdy_count: 2500,
                reader: FramedRead::new(read, FrameCodec::default()),
                writer: write,
            };
            let mut buf = BytesMut::from(&MAGIC_V2[..]);
            encode_identify(&mut buf, user_agent);
            connection.send(&buf).await?;
            match connection.reply().await? {
                Frame::Response(reply) => {
                    if let Some(count) = max_rdy_count(&reply) {
                        connection.max_rdy_count = count;
                    }
                    Ok(connection)
                }
                Frame::Error(text) => bail!("IDENTIFY failed: {}", String::from_utf8_lossy(&text)),
                Frame::Message(_) => bail!("a message before IDENTIFY's reply"),
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| anyhow!("timed out after {CONNECT_TIMEOUT:?}"))
            .and_then(|result| result)
            .with_context(|| format!("connecting to nsqd at {address}"))
    }

    /// Writes `bytes` (one or more encoded commands).
    pub async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.writer
            .write_all(bytes)
            .await
            .with_context(|| format!("writing to {}", self.address))
    }

    /// The next frame, heartbeats included (see [`Frame::is_heartbeat`]).
    /// Cancel-safe: a partly received frame stays buffered.
    pub async fn recv(&mut self) -> anyhow::Result<Frame> {
        match self.reader.next().await {
            Some(Ok(frame)) => Ok(frame),
            Some(Err(error)) => Err(anyhow!("reading from {}: {error}", self.address)),
            None => bail!("{} closed the connection", self.address),
        }
    }

    /// Answers a heartbeat with `NOP`.
    pub async fn answer_heartbeat(&mut self) -> anyhow::Result<()> {
        let mut nop = BytesMut::new();
        encode_nop(&mut nop);
        self.send(&nop).await
    }

    /// The next frame other than a heartbeat, answering heartbeats (not
    /// cancel-safe: for sequential exchanges such as IDENTIFY and SUB).
    pub async fn reply(&mut self) -> anyhow::Result<Frame> {
        loop {
            let frame = self.recv().await?;
            if !frame.is_heartbeat() {
                return Ok(frame);
            }
            self.answer_heartbeat().await?;
        }
    }

    /// Closes the write side (the server sees EOF).
    pub async fn shutdown(&mut self) {
        let _ = self.writer.shutdown().await;
    }
}

/// Whether an error frame ends the connection. nsqd keeps the connection
/// after `E_FIN_FAILED`, `E_REQ_FAILED` and `E_TOUCH_FAILED` only.
pub fn is_fatal_error(text: &[u8]) -> bool {
    !(text.starts_with(b"E_FIN_FAILED")
        || text.starts_with(b"E_REQ_FAILED")
        || text.starts_with(b"E_TOUCH_FAILED"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ClientCommand, CommandCodec, Limits};
    use tokio_util::codec::Decoder as _;

    fn server_parse(bytes: &[u8]) -> Vec<ClientCommand> {
        let mut codec = CommandCodec::new(Limits::default());
        let mut buf = BytesMut::from(bytes);
        let mut commands = Vec::new();
        while let Some(command) = codec.decode(&mut buf).expect("valid commands") {
            commands.push(command);
        }
        commands
    }

    #[test]
    fn the_server_parses_the_encoded_commands() {
        let mut buf = BytesMut::new();
        encode_sub(&mut buf, "orders", "tail1#ephemeral");
        encode_rdy(&mut buf, 200);
        encode_fin(&mut buf, b"0123456789abcdef");
        encode_nop(&mut buf);
        encode_pub(&mut buf, "orders", b"one");
        let bodies = [Bytes::from_static(b"a"), Bytes::from_static(b"bc")];
        encode_mpub(&mut buf, "orders", &bodies);
        let commands = server_parse(&buf);
        assert_eq!(
            commands,
            vec![
                ClientCommand::Sub {
                    topic: "orders".into(),
                    channel: "tail1#ephemeral".into()
                },
                ClientCommand::Rdy { count: 200 },
                ClientCommand::Fin {
                    id: *b"0123456789abcdef"
                },
                ClientCommand::Nop,
                ClientCommand::Pub {
                    topic: "orders".into(),
                    body: Bytes::from_static(b"one")
                },
                ClientCommand::Mpub {
                    topic: "orders".into(),
                    bodies: bodies.to_vec()
                },
            ]
        );
    }

    #[test]
    fn identify_is_json_with_feature_negotiation() {
        let mut buf = BytesMut::new();
        encode_identify(&mut buf, "ledgerq-tail/0.1.0");
        let commands = server_parse(&buf);
        let [ClientCommand::Identify(body)] = &commands[..] else {
            panic!("{commands:?}");
        };
        let json: serde_json::Value = serde_json::from_slice(body).expect("JSON");
        assert_eq!(json["feature_negotiation"], true);
        assert_eq!(json["user_agent"], "ledgerq-tail/0.1.0");
        assert_eq!(max_rdy_count(br#"{"max_rdy_count":2500}"#), Some(2500));
        assert_eq!(max_rdy_count(b"OK"), None);
    }

    #[test]
    fn only_fin_req_and_touch_failures_are_not_fatal() {
        assert!(!is_fatal_error(b"E_FIN_FAILED FIN 0123 failed"));
        assert!(!is_fatal_error(b"E_REQ_FAILED x"));
        assert!(is_fatal_error(b"E_BAD_TOPIC PUB topic name is not valid"));
        assert!(is_fatal_error(b"E_INVALID invalid command"));
    }
}
