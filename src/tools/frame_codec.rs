//! Server → client frames of the NSQ TCP protocol V2, as the tools' client
//! reads them: [`FrameCodec`] (a `tokio-util` decoder) turns
//! `[size i32][type i32][data]` into [`Frame`]s, message frames into
//! [`Message`]s. Pure; unit-tested against the server's own encoders in
//! `crate::protocol`.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::protocol::frame::{MESSAGE_HEADER_LENGTH_BYTES, MESSAGE_ID_LENGTH_BYTES};
use crate::protocol::{FRAME_TYPE_ERROR, FRAME_TYPE_MESSAGE, FRAME_TYPE_RESPONSE};

/// Largest frame accepted from a server (a message of up to 256 MiB).
pub const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;
/// The heartbeat frame's data.
pub const HEARTBEAT: &[u8] = b"_heartbeat_";

/// One message delivered to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub timestamp_ns: i64,
    pub attempts: u16,
    pub id: [u8; MESSAGE_ID_LENGTH_BYTES],
    pub body: Bytes,
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Response(Bytes),
    Error(Bytes),
    Message(Message),
}

impl Frame {
    /// nsqd's `_heartbeat_`, to be answered with `NOP`.
    pub fn is_heartbeat(&self) -> bool {
        matches!(self, Frame::Response(data) if &data[..] == HEARTBEAT)
    }
}

/// Decoder of server frames: `[size i32][type i32][data]`.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    pub max_frame_bytes: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec {
            max_frame_bytes: MAX_FRAME_BYTES,
        }
    }
}

fn invalid(text: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, text)
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Frame>> {
        let Some(size) = src.get(..4) else {
            return Ok(None);
        };
        let size = i32::from_be_bytes(size.try_into().expect("four bytes"));
        let size_bytes = usize::try_from(size)
            .ok()
            .filter(|&size_bytes| (4..=self.max_frame_bytes).contains(&size_bytes))
            .ok_or_else(|| invalid(format!("invalid frame size {size}")))?;
        let total_bytes = 4 + size_bytes;
        if src.len() < total_bytes {
            src.reserve(total_bytes - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(total_bytes).freeze();
        frame.advance(4);
        let frame_type = frame.get_i32();
        match frame_type {
            FRAME_TYPE_RESPONSE => Ok(Some(Frame::Response(frame))),
            FRAME_TYPE_ERROR => Ok(Some(Frame::Error(frame))),
            FRAME_TYPE_MESSAGE => parse_message(frame).map(|m| Some(Frame::Message(m))),
            other => Err(invalid(format!("unknown frame type {other}"))),
        }
    }
}

/// `[timestamp i64][attempts u16][id 16 bytes][body]`.
fn parse_message(mut data: Bytes) -> io::Result<Message> {
    if data.len() < MESSAGE_HEADER_LENGTH_BYTES {
        return Err(invalid(format!("message frame of {} bytes", data.len())));
    }
    let timestamp_ns = data.get_i64();
    let attempts = data.get_u16();
    let mut id = [0u8; MESSAGE_ID_LENGTH_BYTES];
    data.copy_to_slice(&mut id);
    Ok(Message {
        timestamp_ns,
        attempts,
        id,
        body: data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{encode_error, encode_message, encode_response, ProtocolError};
    use bytes::BufMut;

    fn decode_all(bytes: &[u8]) -> Vec<Frame> {
        let mut buf = BytesMut::from(bytes);
        let mut codec = FrameCodec::default();
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode(&mut buf).expect("valid frames") {
            frames.push(frame);
        }
        assert!(buf.is_empty(), "undecoded bytes left");
        frames
    }

    #[test]
    fn decodes_the_servers_frames() {
        let mut buf = BytesMut::new();
        encode_response(&mut buf, b"OK");
        encode_error(&mut buf, &ProtocolError::invalid("x"));
        encode_message(&mut buf, 7, 2, b"0123456789abcdef", b"body");
        let frames = decode_all(&buf);
        assert_eq!(
            frames,
            vec![
                Frame::Response(Bytes::from_static(b"OK")),
                Frame::Error(Bytes::from_static(b"E_INVALID x")),
                Frame::Message(Message {
                    timestamp_ns: 7,
                    attempts: 2,
                    id: *b"0123456789abcdef",
                    body: Bytes::from_static(b"body"),
                }),
            ]
        );
    }

    #[test]
    fn waits_for_partial_frames_byte_by_byte() {
        let mut whole = BytesMut::new();
        encode_message(&mut whole, 1, 1, b"0123456789abcdef", b"hello");
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        for (index, byte) in whole.iter().enumerate() {
            buf.put_u8(*byte);
            let frame = codec.decode(&mut buf).expect("valid");
            assert_eq!(frame.is_some(), index + 1 == whole.len());
        }
    }

    #[test]
    fn rejects_bad_sizes_and_types() {
        let mut codec = FrameCodec {
            max_frame_bytes: 100,
        };
        for bad in [
            &b"\x00\x00\x00\x03\x00\x00\x00\x00"[..],
            b"\xff\xff\xff\xff\x00\x00\x00\x00",
            b"\x00\x00\x00\x65\x00\x00\x00\x00",
            b"\x00\x00\x00\x04\x00\x00\x00\x07",
            b"\x00\x00\x00\x05\x00\x00\x00\x02x",
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(codec.decode(&mut buf).is_err(), "{bad:?}");
        }
    }
}
