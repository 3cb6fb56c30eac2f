//! A small client for the NSQ TCP protocol "V2", written for benchmarks.
//!
//! It covers what a load generator needs and nothing more: connect and send
//! the magic, `IDENTIFY`, pipelined `PUB`/`MPUB` with a window of commands
//! awaiting their `OK` ([`Publisher`]), and a `SUB`/`RDY`/`FIN` consumer loop
//! that answers heartbeats ([`consume`]), snappy or deflate compression if
//! asked for ([`Compression`]). No TLS or AUTH.
//!
//! Wire format (all integers big-endian): commands are a text line, plus a
//! length-prefixed body for `IDENTIFY`, `PUB`, `MPUB` and `DPUB`. The server
//! answers with frames `[size i32][type i32][data]`, `size` counting the type
//! field; type 0 is a response (`OK`, `CLOSE_WAIT`, `_heartbeat_`, JSON),
//! 1 an error (`E_CODE text`), 2 a message
//! (`[timestamp i64][attempts u16][id 16 bytes][body]`).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The 4 bytes a client sends first to select protocol V2.
pub const MAGIC_V2: &[u8; 4] = b"  V2";
/// Body of the response frame the server sends as a heartbeat.
pub const HEARTBEAT: &[u8] = b"_heartbeat_";
/// Body of the response frame that acknowledges a command.
pub const OK: &[u8] = b"OK";
/// Body of the response frame that acknowledges `CLS`.
pub const CLOSE_WAIT: &[u8] = b"CLOSE_WAIT";

const FRAME_RESPONSE: i32 = 0;
const FRAME_ERROR: i32 = 1;
const FRAME_MESSAGE: i32 = 2;
/// Message frame data before the body: timestamp, attempts, id.
const MESSAGE_HEADER: usize = 8 + 2 + 16;
/// Frames larger than this are taken as a corrupt stream.
const MAX_FRAME: usize = 64 << 20;

/// One frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Response(Bytes),
    Error(Bytes),
    Message(Message),
}

impl Frame {
    pub fn is_heartbeat(&self) -> bool {
        matches!(self, Frame::Response(body) if body.as_ref() == HEARTBEAT)
    }
}

/// A message delivered to a subscribed connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Nanoseconds since the Unix epoch, set when the message was published.
    pub timestamp_ns: i64,
    /// Delivery count, 1 on the first delivery.
    pub attempts: u16,
    pub id: [u8; 16],
    pub body: Bytes,
}

/// An error frame from the server, split into its code and description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsqError {
    pub code: String,
    pub description: String,
}

impl NsqError {
    pub fn parse(data: &[u8]) -> Self {
        let text = String::from_utf8_lossy(data);
        match text.split_once(' ') {
            Some((code, description)) => NsqError {
                code: code.to_string(),
                description: description.to_string(),
            },
            None => NsqError {
                code: text.into_owned(),
                description: String::new(),
            },
        }
    }

    /// Whether the connection stays usable after this error (only FIN,
    /// REQ and TOUCH failures are non-fatal in nsqd).
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self.code.as_str(),
            "E_FIN_FAILED" | "E_REQ_FAILED" | "E_TOUCH_FAILED"
        )
    }
}

impl fmt::Display for NsqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.description.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} {}", self.code, self.description)
        }
    }
}

impl std::error::Error for NsqError {}

/// Takes one complete frame off the front of `buf`, or returns `None` if
/// `buf` does not hold a complete frame yet.
pub fn decode_frame(buf: &mut BytesMut) -> Result<Option<Frame>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if size < 4 || size as usize > MAX_FRAME {
        bail!("invalid frame size {size}");
    }
    let size = size as usize;
    if buf.len() < 4 + size {
        buf.reserve(4 + size - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let mut data = buf.split_to(size).freeze();
    let frame_type = data.get_i32();
    Ok(Some(match frame_type {
        FRAME_RESPONSE => Frame::Response(data),
        FRAME_ERROR => Frame::Error(data),
        FRAME_MESSAGE => {
            if data.len() < MESSAGE_HEADER {
                bail!("message frame of {} bytes is too short", data.len());
            }
            let timestamp_ns = data.get_i64();
            let attempts = data.get_u16();
            let mut id = [0u8; 16];
            data.copy_to_slice(&mut id);
            Frame::Message(Message {
                timestamp_ns,
                attempts,
                id,
                body: data,
            })
        }
        other => bail!("unknown frame type {other}"),
    }))
}

/// Encoders that append one command to a write buffer.
pub mod command {
    use super::*;

    fn put_line(buf: &mut BytesMut, parts: &[&[u8]]) {
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                buf.put_u8(b' ');
            }
            buf.put_slice(part);
        }
        buf.put_u8(b'\n');
    }

    fn body_len(len: usize) -> Result<u32> {
        u32::try_from(len)
            .ok()
            .filter(|&n| n <= i32::MAX as u32)
            .ok_or_else(|| anyhow!("body of {len} bytes is too large"))
    }

    pub fn identify(buf: &mut BytesMut, identify: &Identify) -> Result<()> {
        let json = serde_json::to_vec(identify)?;
        put_line(buf, &[b"IDENTIFY"]);
        buf.put_u32(body_len(json.len())?);
        buf.put_slice(&json);
        Ok(())
    }

    pub fn sub(buf: &mut BytesMut, topic: &str, channel: &str) {
        put_line(buf, &[b"SUB", topic.as_bytes(), channel.as_bytes()]);
    }

    pub fn rdy(buf: &mut BytesMut, count: u64) {
        put_line(buf, &[b"RDY", count.to_string().as_bytes()]);
    }

    pub fn fin(buf: &mut BytesMut, id: &[u8; 16]) {
        put_line(buf, &[b"FIN", id]);
    }

    pub fn req(buf: &mut BytesMut, id: &[u8; 16], delay: Duration) {
        let ms = delay.as_millis().to_string();
        put_line(buf, &[b"REQ", id, ms.as_bytes()]);
    }

    pub fn touch(buf: &mut BytesMut, id: &[u8; 16]) {
        put_line(buf, &[b"TOUCH", id]);
    }

    pub fn nop(buf: &mut BytesMut) {
        put_line(buf, &[b"NOP"]);
    }

    pub fn cls(buf: &mut BytesMut) {
        put_line(buf, &[b"CLS"]);
    }

    pub fn publish(buf: &mut BytesMut, topic: &str, body: &[u8]) -> Result<()> {
        put_line(buf, &[b"PUB", topic.as_bytes()]);
        buf.put_u32(body_len(body.len())?);
        buf.put_slice(body);
        Ok(())
    }

    pub fn dpub(buf: &mut BytesMut, topic: &str, defer: Duration, body: &[u8]) -> Result<()> {
        let ms = defer.as_millis().to_string();
        put_line(buf, &[b"DPUB", topic.as_bytes(), ms.as_bytes()]);
        buf.put_u32(body_len(body.len())?);
        buf.put_slice(body);
        Ok(())
    }

    /// `MPUB`; returns the number of messages encoded (at least one).
    pub fn mpub<I, B>(buf: &mut BytesMut, topic: &str, bodies: I) -> Result<u32>
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        let command_start = buf.len();
        put_line(buf, &[b"MPUB", topic.as_bytes()]);
        let size_at = buf.len();
        buf.put_u32(0); // body size, patched below
        buf.put_u32(0); // message count, patched below
        let mut count: u32 = 0;
        for body in bodies {
            let body = body.as_ref();
            buf.put_u32(body_len(body.len())?);
            buf.put_slice(body);
            count += 1;
        }
        if count == 0 {
            buf.truncate(command_start);
            bail!("MPUB needs at least one message");
        }
        let size = body_len(buf.len() - size_at - 4)?;
        buf[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
        buf[size_at + 4..size_at + 8].copy_from_slice(&count.to_be_bytes());
        Ok(count)
    }
}

/// The `IDENTIFY` body. Fields left `None` are not sent (server default).
#[derive(Debug, Clone, Serialize)]
pub struct Identify {
    pub client_id: String,
    pub hostname: String,
    pub user_agent: String,
    pub feature_negotiation: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_buffer_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_buffer_timeout: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg_timeout: Option<i64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub snappy: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deflate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deflate_level: Option<i64>,
}

/// The compression a connection asks for in IDENTIFY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    /// Snappy's framing format.
    Snappy,
    /// Raw DEFLATE at nsqd's default level (6).
    Deflate,
}

impl Identify {
    /// Asks for `compression`.
    pub fn with_compression(mut self, compression: Compression) -> Identify {
        self.snappy = compression == Compression::Snappy;
        self.deflate = compression == Compression::Deflate;
        self.deflate_level = self.deflate.then_some(6);
        self
    }
}

impl Default for Identify {
    fn default() -> Self {
        let hostname = crate::util::hostname();
        Identify {
            client_id: hostname.split('.').next().unwrap_or_default().to_string(),
            hostname,
            user_agent: concat!("ledgerq-bench/", env!("CARGO_PKG_VERSION")).to_string(),
            feature_negotiation: true,
            heartbeat_interval: None,
            output_buffer_size: None,
            output_buffer_timeout: None,
            msg_timeout: None,
            snappy: false,
            deflate: false,
            deflate_level: None,
        }
    }
}

/// The read half of a connection: decodes frames from a buffer.
pub struct FrameReader {
    half: Box<dyn AsyncRead + Send + Unpin>,
    buf: BytesMut,
}

impl FrameReader {
    /// The next frame, or `None` at end of stream. Cancel-safe: dropping the
    /// future loses no data.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>> {
        loop {
            if let Some(frame) = decode_frame(&mut self.buf)? {
                return Ok(Some(frame));
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 << 10);
            }
            let read = self.half.read_buf(&mut self.buf).await?;
            if read == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                bail!("connection closed inside a frame");
            }
        }
    }

    /// A frame already received in full, without waiting for the socket.
    pub fn buffered_frame(&mut self) -> Result<Option<Frame>> {
        decode_frame(&mut self.buf)
    }
}

/// The write half of a connection: commands are encoded into a buffer and
/// sent by [`FrameWriter::flush`].
pub struct FrameWriter {
    half: Box<dyn AsyncWrite + Send + Unpin>,
    buf: BytesMut,
}

impl FrameWriter {
    /// The buffer to encode commands into (see [`command`]).
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    pub async fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.half.write_all(&self.buf).await?;
            self.half.flush().await?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Flushes, then closes the sending direction.
    pub async fn shutdown(mut self) -> Result<()> {
        self.flush().await?;
        self.half.shutdown().await?;
        Ok(())
    }
}

/// A connection that has sent the magic.
pub struct Connection {
    pub reader: FrameReader,
    pub writer: FrameWriter,
}

impl Connection {
    /// Connects and sends the `"  V2"` magic.
    pub async fn connect(address: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(address)
            .await
            .with_context(|| format!("connecting to {address}"))?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let mut connection = Connection::over(Box::new(read), Box::new(write));
        connection.writer.buf().put_slice(MAGIC_V2);
        connection.writer.flush().await?;
        Ok(connection)
    }

    fn over(
        read: Box<dyn AsyncRead + Send + Unpin>,
        write: Box<dyn AsyncWrite + Send + Unpin>,
    ) -> Connection {
        Connection {
            reader: FrameReader {
                half: read,
                buf: BytesMut::with_capacity(64 << 10),
            },
            writer: FrameWriter {
                half: write,
                buf: BytesMut::with_capacity(64 << 10),
            },
        }
    }

    /// Connects, then sends `IDENTIFY` and waits for its reply; switches to
    /// the compression it asked for once the server grants it.
    pub async fn connect_identified(address: SocketAddr, identify: &Identify) -> Result<Self> {
        let mut connection = Connection::connect(address).await?;
        let reply = connection.identify(identify).await?;
        let granted = |key: &str| reply[key].as_bool().unwrap_or(false);
        if identify.snappy || identify.deflate {
            if !(granted("snappy") || granted("deflate")) {
                bail!("the server did not grant the compression asked for");
            }
            connection = connection.compressed(identify.snappy)?;
            expect_ok(connection.request().await.context("compression upgrade")?)?;
        }
        Ok(connection)
    }

    /// The same socket through snappy's framing format or raw DEFLATE.
    fn compressed(self, snappy: bool) -> Result<Connection> {
        use async_compression::tokio::{bufread::DeflateDecoder, write::DeflateEncoder};
        use ledgerq::transport::snappy::{SnappyReader, SnappyWriter};
        // The server may have sent its first compressed frame (`OK`) along
        // with the IDENTIFY reply: what is buffered is compressed already.
        let buffered = std::io::Cursor::new(self.reader.buf.to_vec());
        let read: Box<dyn AsyncRead + Send + Unpin> =
            Box::new(AsyncReadExt::chain(buffered, self.reader.half));
        let write = self.writer.half;
        Ok(if snappy {
            Connection::over(
                Box::new(SnappyReader::new(read)),
                Box::new(SnappyWriter::new(write)),
            )
        } else {
            let level = async_compression::Level::Precise(6);
            Connection::over(
                Box::new(DeflateDecoder::new(tokio::io::BufReader::new(read))),
                Box::new(DeflateEncoder::with_quality(write, level)),
            )
        })
    }

    /// Sends `IDENTIFY`; returns the server's JSON reply (`Null` when it
    /// answered a plain `OK`). TLS and compression are never requested.
    pub async fn identify(&mut self, identify: &Identify) -> Result<serde_json::Value> {
        command::identify(self.writer.buf(), identify)?;
        let reply = self.request().await.context("IDENTIFY")?;
        if reply.as_ref() == OK {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&reply).context("IDENTIFY reply is not JSON")
    }

    /// Flushes the buffered commands and waits for the next response frame,
    /// answering heartbeats meanwhile. An error frame becomes an [`NsqError`].
    pub async fn request(&mut self) -> Result<Bytes> {
        self.writer.flush().await?;
        loop {
            match self.reader.read_frame().await? {
                None => bail!("server closed the connection"),
                Some(frame) if frame.is_heartbeat() => {
                    command::nop(self.writer.buf());
                    self.writer.flush().await?;
                }
                Some(Frame::Response(body)) => return Ok(body),
                Some(Frame::Error(data)) => return Err(NsqError::parse(&data).into()),
                Some(Frame::Message(_)) => bail!("unexpected message frame"),
            }
        }
    }

    /// Sends `SUB` and waits for its `OK`.
    pub async fn sub(&mut self, topic: &str, channel: &str) -> Result<()> {
        command::sub(self.writer.buf(), topic, channel);
        expect_ok(self.request().await.context("SUB")?)
    }

    /// Publishes one message and waits for its `OK` (no pipelining).
    pub async fn publish(&mut self, topic: &str, body: &[u8]) -> Result<()> {
        command::publish(self.writer.buf(), topic, body)?;
        expect_ok(self.request().await.context("PUB")?)
    }

    /// Sends `NOP` (no reply is expected).
    pub async fn nop(&mut self) -> Result<()> {
        command::nop(self.writer.buf());
        self.writer.flush().await
    }
}

fn expect_ok(body: Bytes) -> Result<()> {
    if body.as_ref() == OK {
        Ok(())
    } else {
        bail!(
            "expected OK, got response {:?}",
            String::from_utf8_lossy(&body)
        )
    }
}

mod consumer;
mod publisher;

pub use consumer::{consume, ConsumeTotals, Disposition};
pub use publisher::{Ack, PublishTotals, Publisher};

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(frame_type: i32, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(data.len() as i32 + 4).to_be_bytes());
        out.extend_from_slice(&frame_type.to_be_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn decodes_responses_errors_and_messages() {
        let mut message = Vec::new();
        message.extend_from_slice(&123i64.to_be_bytes());
        message.extend_from_slice(&2u16.to_be_bytes());
        message.extend_from_slice(b"0123456789abcdef");
        message.extend_from_slice(b"hi");
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(0, b"OK"));
        buf.extend_from_slice(&frame(1, b"E_INVALID invalid command FOO"));
        buf.extend_from_slice(&frame(2, &message));
        buf.extend_from_slice(&frame(0, HEARTBEAT)[..7]);

        assert_eq!(
            decode_frame(&mut buf).unwrap(),
            Some(Frame::Response(Bytes::from_static(b"OK")))
        );
        let Some(Frame::Error(error)) = decode_frame(&mut buf).unwrap() else {
            panic!("expected an error frame");
        };
        let error = NsqError::parse(&error);
        assert_eq!(error.code, "E_INVALID");
        assert_eq!(error.description, "invalid command FOO");
        assert!(error.is_fatal());
        assert_eq!(
            decode_frame(&mut buf).unwrap(),
            Some(Frame::Message(Message {
                timestamp_ns: 123,
                attempts: 2,
                id: *b"0123456789abcdef",
                body: Bytes::from_static(b"hi"),
            }))
        );
        // An incomplete frame stays in the buffer until the rest arrives.
        assert_eq!(decode_frame(&mut buf).unwrap(), None);
        buf.extend_from_slice(&frame(0, HEARTBEAT)[7..]);
        assert!(decode_frame(&mut buf).unwrap().unwrap().is_heartbeat());
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_bad_frames() {
        let mut buf = BytesMut::from(&frame(7, b"x")[..]);
        assert!(decode_frame(&mut buf).is_err());
        let mut buf = BytesMut::from(&[0u8, 0, 0, 2, 0, 0][..]);
        assert!(decode_frame(&mut buf).is_err());
        let mut buf = BytesMut::from(&frame(2, b"short")[..]);
        assert!(decode_frame(&mut buf).is_err());
        assert!(!NsqError::parse(b"E_FIN_FAILED FIN x failed").is_fatal());
    }

    #[test]
    fn encodes_commands() {
        let mut buf = BytesMut::new();
        command::publish(&mut buf, "test", b"hello").unwrap();
        assert_eq!(&buf[..], b"PUB test\n\x00\x00\x00\x05hello");

        buf.clear();
        let count = command::mpub(&mut buf, "t", [&b"ab"[..], b"c"]).unwrap();
        assert_eq!(count, 2);
        assert_eq!(
            &buf[..],
            b"MPUB t\n\x00\x00\x00\x0f\x00\x00\x00\x02\x00\x00\x00\x02ab\x00\x00\x00\x01c"
        );
        assert!(command::mpub(&mut buf, "t", Vec::<Vec<u8>>::new()).is_err());
        assert_eq!(
            buf.len(),
            7 + 8 + 6 + 5,
            "a failed MPUB leaves nothing behind"
        );

        buf.clear();
        command::sub(&mut buf, "t", "c");
        command::rdy(&mut buf, 200);
        command::fin(&mut buf, b"0123456789abcdef");
        command::req(&mut buf, b"0123456789abcdef", Duration::from_secs(1));
        command::touch(&mut buf, b"0123456789abcdef");
        command::nop(&mut buf);
        command::cls(&mut buf);
        command::dpub(&mut buf, "t", Duration::from_millis(5), b"x").unwrap();
        assert_eq!(
            &buf[..],
            &b"SUB t c\nRDY 200\nFIN 0123456789abcdef\nREQ 0123456789abcdef 1000\n\
               TOUCH 0123456789abcdef\nNOP\nCLS\nDPUB t 5\n\x00\x00\x00\x01x"[..]
        );

        buf.clear();
        let identify = Identify {
            heartbeat_interval: Some(5000),
            ..Identify::default()
        };
        command::identify(&mut buf, &identify).unwrap();
        assert!(buf.starts_with(b"IDENTIFY\n"));
        let len = u32::from_be_bytes(buf[9..13].try_into().unwrap()) as usize;
        let json: serde_json::Value = serde_json::from_slice(&buf[13..]).unwrap();
        assert_eq!(len, buf.len() - 13);
        assert_eq!(json["heartbeat_interval"], 5000);
        assert_eq!(json["feature_negotiation"], true);
        assert!(json.get("msg_timeout").is_none());
    }
}
