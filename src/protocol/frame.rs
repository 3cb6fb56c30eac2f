//! Server → client frames: `[size i32 BE][type i32 BE][data]`, with `size = 4 + data length`.
//!
//! Also owns the message layout inside a message frame
//! (`[timestamp_ns i64][attempts u16][16-byte id][body]`) and the 16-char hex message ID.

use bytes::{BufMut, BytesMut};

use super::error::ProtocolError;

/// Frame type of `OK`, `CLOSE_WAIT`, `_heartbeat_` and JSON replies.
pub const FRAME_TYPE_RESPONSE: i32 = 0;
/// Frame type of error frames.
pub const FRAME_TYPE_ERROR: i32 = 1;
/// Frame type of message frames.
pub const FRAME_TYPE_MESSAGE: i32 = 2;
/// Length of a message ID on the wire.
pub const MESSAGE_ID_LENGTH_BYTES: usize = 16;
/// Bytes of a message frame's data before the body (timestamp, attempts, id).
pub const MESSAGE_HEADER_LENGTH_BYTES: usize = 8 + 2 + MESSAGE_ID_LENGTH_BYTES;
/// Bytes of the frame header (size and type).
pub const FRAME_HEADER_LENGTH_BYTES: usize = 8;

/// Append a response frame (type 0) carrying `data`.
pub fn encode_response(buf: &mut BytesMut, data: &[u8]) {
    encode_frame(buf, FRAME_TYPE_RESPONSE, data);
}

/// Append an error frame (type 1) carrying [`ProtocolError::frame_body`].
pub fn encode_error(buf: &mut BytesMut, err: &ProtocolError) {
    encode_frame(buf, FRAME_TYPE_ERROR, err.frame_body().as_bytes());
}

/// Append a message frame (type 2).
///
/// Callers keep `body` far below `i32::MAX` bytes (it is bounded by max-msg-size); larger data
/// would saturate the size field instead of panicking.
pub fn encode_message(
    buf: &mut BytesMut,
    timestamp_ns: i64,
    attempts: u16,
    id: &[u8; 16],
    body: &[u8],
) {
    let data_len = MESSAGE_HEADER_LENGTH_BYTES.saturating_add(body.len());
    buf.reserve(FRAME_HEADER_LENGTH_BYTES.saturating_add(data_len));
    put_header(buf, FRAME_TYPE_MESSAGE, data_len);
    buf.put_i64(timestamp_ns);
    buf.put_u16(attempts);
    buf.put_slice(id);
    buf.put_slice(body);
}

fn encode_frame(buf: &mut BytesMut, frame_type: i32, data: &[u8]) {
    buf.reserve(FRAME_HEADER_LENGTH_BYTES.saturating_add(data.len()));
    put_header(buf, frame_type, data.len());
    buf.put_slice(data);
}

fn put_header(buf: &mut BytesMut, frame_type: i32, data_len: usize) {
    let size = data_len
        .checked_add(4)
        .and_then(|size| i32::try_from(size).ok())
        .unwrap_or(i32::MAX);
    buf.put_i32(size);
    buf.put_i32(frame_type);
}

/// The 16 lowercase hex ASCII characters of `value` (big-endian), nsqd's message ID form.
pub fn message_id_hex(value: u64) -> [u8; 16] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 16];
    for (index, slot) in id.iter_mut().enumerate() {
        let shift = 60 - 4 * index;
        *slot = DIGITS[((value >> shift) & 0xf) as usize];
    }
    id
}

/// Inverse of [`message_id_hex`]; `None` unless exactly 16 hex characters (either case).
pub fn parse_message_id(id: &[u8]) -> Option<u64> {
    if id.len() != MESSAGE_ID_LENGTH_BYTES {
        return None;
    }
    id.iter().try_fold(0u64, |value, &byte| {
        let digit = char::from(byte).to_digit(16)?;
        Some((value << 4) | u64::from(digit))
    })
}

/// Decode one frame from the front of `buf`: `(frame_type, data, consumed_bytes)`.
///
/// `None` when the frame is incomplete, or malformed (size field below 4).
pub fn decode_frame(buf: &[u8]) -> Option<(i32, &[u8], usize)> {
    let size = i32::from_be_bytes(buf.get(0..4)?.try_into().ok()?);
    let frame_type = i32::from_be_bytes(buf.get(4..8)?.try_into().ok()?);
    let data_len = usize::try_from(size).ok()?.checked_sub(4)?;
    let end = FRAME_HEADER_LENGTH_BYTES.checked_add(data_len)?;
    let data = buf.get(FRAME_HEADER_LENGTH_BYTES..end)?;
    Some((frame_type, data, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_response_bytes() {
        let mut buf = BytesMut::new();
        encode_response(&mut buf, b"OK");
        assert_eq!(&buf[..], b"\x00\x00\x00\x06\x00\x00\x00\x00OK");
    }

    #[test]
    fn heartbeat_and_close_wait_bytes() {
        let mut buf = BytesMut::new();
        encode_response(&mut buf, b"_heartbeat_");
        encode_response(&mut buf, b"CLOSE_WAIT");
        assert_eq!(&buf[..8], b"\x00\x00\x00\x0f\x00\x00\x00\x00");
        assert_eq!(&buf[19..27], b"\x00\x00\x00\x0e\x00\x00\x00\x00");
    }

    #[test]
    fn error_frame_bytes() {
        let mut buf = BytesMut::new();
        encode_error(&mut buf, &ProtocolError::invalid("invalid command FOO"));
        let mut expected = b"\x00\x00\x00\x21\x00\x00\x00\x01".to_vec();
        expected.extend_from_slice(b"E_INVALID invalid command FOO");
        assert_eq!(&buf[..], &expected[..]);
    }

    #[test]
    fn bad_protocol_frame_bytes() {
        let mut buf = BytesMut::new();
        encode_error(&mut buf, &ProtocolError::bad_protocol());
        assert_eq!(&buf[..], b"\x00\x00\x00\x12\x00\x00\x00\x01E_BAD_PROTOCOL");
    }

    #[test]
    fn message_frame_bytes() {
        let mut buf = BytesMut::new();
        let id = *b"0123456789abcdef";
        encode_message(&mut buf, 0x0102030405060708, 1, &id, b"hi");
        let mut expected = b"\x00\x00\x00\x20\x00\x00\x00\x02".to_vec();
        expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 0, 1]);
        expected.extend_from_slice(&id);
        expected.extend_from_slice(b"hi");
        assert_eq!(&buf[..], &expected[..]);
    }

    #[test]
    fn message_id_hex_round_trips() {
        assert_eq!(&message_id_hex(0), b"0000000000000000");
        assert_eq!(&message_id_hex(0x0123_4567_89ab_cdef), b"0123456789abcdef");
        assert_eq!(&message_id_hex(u64::MAX), b"ffffffffffffffff");
        assert_eq!(
            parse_message_id(b"0123456789ABCDEF"),
            Some(0x0123_4567_89ab_cdef)
        );
        assert_eq!(parse_message_id(&message_id_hex(42)), Some(42));
    }

    #[test]
    fn parse_message_id_rejects_bad_input() {
        assert_eq!(parse_message_id(b"0123456789abcde"), None);
        assert_eq!(parse_message_id(b"0123456789abcdef0"), None);
        assert_eq!(parse_message_id(b"0123456789abcdeg"), None);
        assert_eq!(parse_message_id(b"+123456789abcdef"), None);
    }

    #[test]
    fn decode_frame_round_trips_and_waits() {
        let mut buf = BytesMut::new();
        encode_response(&mut buf, b"OK");
        encode_error(&mut buf, &ProtocolError::invalid("x"));
        let (frame_type, data, consumed) = decode_frame(&buf).expect("first frame");
        assert_eq!((frame_type, data, consumed), (0, &b"OK"[..], 10));
        let (frame_type, data, _) = decode_frame(&buf[consumed..]).expect("second frame");
        assert_eq!((frame_type, data), (1, &b"E_INVALID x"[..]));
        for cut in 0..10 {
            assert_eq!(decode_frame(&buf[..cut]), None);
        }
    }

    #[test]
    fn decode_frame_rejects_short_size() {
        assert_eq!(decode_frame(b"\x00\x00\x00\x03\x00\x00\x00\x00"), None);
        assert_eq!(decode_frame(b"\xff\xff\xff\xff\x00\x00\x00\x00"), None);
        let empty = decode_frame(b"\x00\x00\x00\x04\x00\x00\x00\x00");
        assert_eq!(empty, Some((0, &b""[..], 8)));
    }
}
