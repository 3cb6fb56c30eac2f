//! Value encodings of everything stored. All integers big-endian; the whole
//! data directory carries one format version ([`FORMAT_VERSION`]).

use bytes::Bytes;

use crate::error::StorageError;

/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// One published message as stored in its topic's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// Wall-clock time of the publish, chosen by whoever built the command.
    pub timestamp_ns: i64,
    /// 0 for an immediate message; else the time (ms since the epoch) before
    /// which no channel may deliver it (DPUB).
    pub deliver_at_ms: u64,
    pub body: Bytes,
}

/// Durable topic metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub paused: bool,
    /// The offset the next published message gets.
    pub next_offset: u64,
    /// Offsets below this have been handed to the topic's channels; those at or
    /// above it wait in the topic (no channel yet, or topic paused).
    pub handed_over: u64,
    /// The lowest offset still stored in the log.
    pub log_start: u64,
}

/// Durable channel metadata: the cursor's fixed points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMeta {
    pub topic_id: u64,
    pub name: String,
    pub paused: bool,
    /// Memory-only semantics: its cursor is not tracked durably, and it is
    /// dropped when the node restarts.
    pub ephemeral: bool,
    /// The ack floor: every offset below it is finished.
    pub floor: u64,
    /// Every offset in `[floor, delivered_up_to)` whose message was not
    /// deferred at publish and that has no cursor record was delivered
    /// exactly once.
    pub delivered_up_to: u64,
}

/// The sparse state of one message in one channel, above the ack floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CursorRecord {
    /// Deliveries so far.
    pub attempts: u16,
    /// 0, or the time (ms since the epoch) before which it may not be delivered.
    pub deliver_at_ms: u64,
    pub finished: bool,
}

struct FieldDecoder<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> FieldDecoder<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Self {
        FieldDecoder { bytes, what }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], StorageError> {
        if self.bytes.len() < len {
            return Err(StorageError::Corrupt {
                what: self.what,
                detail: format!("wanted {len} bytes, {} left", self.bytes.len()),
            });
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, StorageError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, StorageError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, StorageError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn string(&mut self) -> Result<String, StorageError> {
        let len = usize::from(self.u16()?);
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map_err(|e| StorageError::Corrupt {
            what: self.what,
            detail: e.to_string(),
        })
    }

    fn finish(self) -> Result<(), StorageError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(StorageError::Corrupt {
                what: self.what,
                detail: format!("{} trailing bytes", self.bytes.len()),
            })
        }
    }
}

fn put_string(out: &mut Vec<u8>, value: &str) {
    let len = u16::try_from(value.len()).expect("names are at most 64 bytes");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value.as_bytes());
}

impl MessageRecord {
    pub const HEADER_BYTES: usize = 16;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::HEADER_BYTES + self.body.len());
        out.extend_from_slice(&self.timestamp_ns.to_be_bytes());
        out.extend_from_slice(&self.deliver_at_ms.to_be_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let mut reader = FieldDecoder::new(bytes, "message record");
        let timestamp_ns = reader.u64()? as i64;
        let deliver_at_ms = reader.u64()?;
        let body = Bytes::copy_from_slice(reader.bytes);
        Ok(MessageRecord {
            timestamp_ns,
            deliver_at_ms,
            body,
        })
    }
}

impl TopicMeta {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(27 + self.name.len());
        out.push(u8::from(self.paused));
        out.extend_from_slice(&self.next_offset.to_be_bytes());
        out.extend_from_slice(&self.handed_over.to_be_bytes());
        out.extend_from_slice(&self.log_start.to_be_bytes());
        put_string(&mut out, &self.name);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let mut reader = FieldDecoder::new(bytes, "topic meta");
        let meta = TopicMeta {
            paused: reader.u8()? != 0,
            next_offset: reader.u64()?,
            handed_over: reader.u64()?,
            log_start: reader.u64()?,
            name: reader.string()?,
        };
        reader.finish()?;
        Ok(meta)
    }
}

impl ChannelMeta {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(27 + self.name.len());
        out.extend_from_slice(&self.topic_id.to_be_bytes());
        out.push(u8::from(self.paused) | (u8::from(self.ephemeral) << 1));
        out.extend_from_slice(&self.floor.to_be_bytes());
        out.extend_from_slice(&self.delivered_up_to.to_be_bytes());
        put_string(&mut out, &self.name);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let mut reader = FieldDecoder::new(bytes, "channel meta");
        let topic_id = reader.u64()?;
        let flags = reader.u8()?;
        let meta = ChannelMeta {
            topic_id,
            paused: flags & 1 != 0,
            ephemeral: flags & 2 != 0,
            floor: reader.u64()?,
            delivered_up_to: reader.u64()?,
            name: reader.string()?,
        };
        reader.finish()?;
        Ok(meta)
    }
}

impl CursorRecord {
    pub fn encode(&self) -> [u8; 11] {
        let mut out = [0u8; 11];
        out[..2].copy_from_slice(&self.attempts.to_be_bytes());
        out[2..10].copy_from_slice(&self.deliver_at_ms.to_be_bytes());
        out[10] = u8::from(self.finished);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let mut reader = FieldDecoder::new(bytes, "cursor record");
        let record = CursorRecord {
            attempts: reader.u16()?,
            deliver_at_ms: reader.u64()?,
            finished: reader.u8()? != 0,
        };
        reader.finish()?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let message = MessageRecord {
            timestamp_ns: -5,
            deliver_at_ms: 9,
            body: Bytes::from_static(b"hello"),
        };
        assert_eq!(MessageRecord::decode(&message.encode()).unwrap(), message);
        let topic = TopicMeta {
            name: "orders".into(),
            paused: true,
            next_offset: 10,
            handed_over: 8,
            log_start: 2,
        };
        assert_eq!(TopicMeta::decode(&topic.encode()).unwrap(), topic);
        let channel = ChannelMeta {
            topic_id: 3,
            name: "billing#ephemeral".into(),
            paused: false,
            ephemeral: true,
            floor: 4,
            delivered_up_to: 7,
        };
        assert_eq!(ChannelMeta::decode(&channel.encode()).unwrap(), channel);
        let cursor = CursorRecord {
            attempts: 3,
            deliver_at_ms: 77,
            finished: true,
        };
        assert_eq!(CursorRecord::decode(&cursor.encode()).unwrap(), cursor);
    }

    #[test]
    fn truncated_records_are_corrupt_not_panics() {
        let topic = TopicMeta {
            name: "t".into(),
            paused: false,
            next_offset: 1,
            handed_over: 1,
            log_start: 0,
        }
        .encode();
        for len in 0..topic.len() {
            assert!(TopicMeta::decode(&topic[..len]).is_err());
        }
        assert!(CursorRecord::decode(&[0; 10]).is_err());
        assert!(MessageRecord::decode(&[0; 15]).is_err());
    }
}
