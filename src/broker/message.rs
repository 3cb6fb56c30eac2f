//! A message as the broker hands it out, and its NSQ message ID.
//!
//! The ID is a pure function of the topic and the log offset: 16 lowercase
//! hex characters of `(topic_id mod 2^16) << 48 | offset`. It is therefore
//! the same on every delivery, after a restart, and on every replica, and a
//! FIN needs no lookup table to find the offset again.

use std::sync::Arc;

use bytes::Bytes;
use ledgerq_storage::MessageRecord;

const OFFSET_BITS: u32 = 48;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub offset: u64,
    pub id: [u8; 16],
    pub timestamp_ns: i64,
    /// 0, or not before this time (ms since the epoch).
    pub deliver_at_ms: u64,
    pub body: Bytes,
}

impl Message {
    pub fn new(
        topic_id: u64,
        offset: u64,
        timestamp_ns: i64,
        deliver_at_ms: u64,
        body: Bytes,
    ) -> Self {
        Message {
            offset,
            id: encode_id(topic_id, offset),
            timestamp_ns,
            deliver_at_ms,
            body,
        }
    }
}

impl Message {
    /// The message stored at `offset` of topic `topic_id`.
    pub fn from_record(topic_id: u64, offset: u64, record: MessageRecord) -> Self {
        Message::new(
            topic_id,
            offset,
            record.timestamp_ns,
            record.deliver_at_ms,
            record.body,
        )
    }

    /// The messages of one publish, at consecutive offsets from `first_offset`.
    pub fn batch(
        topic_id: u64,
        first_offset: u64,
        timestamp_ns: i64,
        deliver_at_ms: u64,
        bodies: Vec<Bytes>,
    ) -> Vec<Arc<Message>> {
        (first_offset..)
            .zip(bodies)
            .map(|(offset, body)| {
                let message = Message::new(topic_id, offset, timestamp_ns, deliver_at_ms, body);
                Arc::new(message)
            })
            .collect()
    }
}

/// The 16-byte NSQ message ID of `offset` in topic `topic_id`.
pub fn encode_id(topic_id: u64, offset: u64) -> [u8; 16] {
    debug_assert!(offset <= OFFSET_MASK, "offset space exhausted");
    let value = ((topic_id & 0xffff) << OFFSET_BITS) | (offset & OFFSET_MASK);
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        let nibble = (value >> (60 - 4 * i)) & 0xf;
        *byte = b"0123456789abcdef"[nibble as usize];
    }
    out
}

/// The offset named by `id` if it is an ID of topic `topic_id`.
pub fn decode_id(topic_id: u64, id: &[u8; 16]) -> Option<u64> {
    let text = std::str::from_utf8(id).ok()?;
    let value = u64::from_str_radix(text, 16).ok()?;
    (value >> OFFSET_BITS == topic_id & 0xffff).then_some(value & OFFSET_MASK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_lowercase_hex() {
        let id = encode_id(3, 258);
        assert_eq!(&id, b"0003000000000102");
        assert_eq!(decode_id(3, &id), Some(258));
        assert_eq!(decode_id(4, &id), None);
        assert_eq!(decode_id(3, b"zzzzzzzzzzzzzzzz"), None);
        assert_eq!(decode_id(0x1_0003, &id), Some(258));
    }
}
