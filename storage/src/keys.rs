//! Key layout of the three column families.
//!
//! - `meta`:   `F` → format version; `N` → next id; `A` → applied index; `t|topic_id` → [`TopicMeta`];
//!   `c|channel_id` → [`ChannelMeta`]; `d|topic_id|key` → [`DedupEntry`] (an idempotency
//!   key in the publish de-duplication window); `DE` → its eviction counters.
//! - `log`:    `topic_id | offset` → [`MessageRecord`] (both u64 big-endian, so
//!   a topic's log is one contiguous, ordered key range).
//! - `cursor`: `channel_id | offset` → [`CursorRecord`], the sparse per-message
//!   state of a channel above its ack floor.
//!
//! [`TopicMeta`]: crate::record::TopicMeta
//! [`ChannelMeta`]: crate::record::ChannelMeta
//! [`MessageRecord`]: crate::record::MessageRecord
//! [`CursorRecord`]: crate::record::CursorRecord
//! [`DedupEntry`]: crate::dedup::DedupEntry

pub const CF_META: &str = "meta";
pub const CF_LOG: &str = "log";
pub const CF_CURSOR: &str = "cursor";

pub const META_FORMAT: &[u8] = b"F";
pub const META_NEXT_ID: &[u8] = b"N";
pub const META_APPLIED_INDEX: &[u8] = b"A";
/// Redundancy mode: the raft log id of the last applied entry, and the
/// membership applied last (`raft.proto` `LogId`, `StoredMembership`).
pub const META_RAFT_APPLIED: &[u8] = b"RA";
pub const META_RAFT_MEMBERSHIP: &[u8] = b"RM";
pub const META_TOPIC_PREFIX: u8 = b't';
pub const META_CHANNEL_PREFIX: u8 = b'c';
pub const META_DEDUP_PREFIX: u8 = b'd';
pub const META_DEDUP_EVICTIONS: &[u8] = b"DE";

/// `id | offset`, both big-endian: the key of a log entry or a cursor record.
pub fn id_offset(id: u64, offset: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&id.to_be_bytes());
    key[8..].copy_from_slice(&offset.to_be_bytes());
    key
}

/// Splits a key made by [`id_offset`].
pub fn split_id_offset(key: &[u8]) -> Option<(u64, u64)> {
    let id = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let offset = u64::from_be_bytes(key.get(8..16)?.try_into().ok()?);
    (key.len() == 16).then_some((id, offset))
}

pub fn topic_meta(topic_id: u64) -> [u8; 9] {
    prefixed(META_TOPIC_PREFIX, topic_id)
}

pub fn channel_meta(channel_id: u64) -> [u8; 9] {
    prefixed(META_CHANNEL_PREFIX, channel_id)
}

fn prefixed(prefix: u8, id: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = prefix;
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

/// `d | topic_id | key`: an idempotency key of a topic's de-duplication window.
pub fn dedup(topic_id: u64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + key.len());
    out.extend_from_slice(&prefixed(META_DEDUP_PREFIX, topic_id));
    out.extend_from_slice(key);
    out
}

/// Splits a key made by [`dedup`] into the topic id and the idempotency key.
pub fn split_dedup(key: &[u8]) -> Option<(u64, &[u8])> {
    if key.first() != Some(&META_DEDUP_PREFIX) || key.len() < 10 {
        return None;
    }
    let topic = u64::from_be_bytes(key[1..9].try_into().expect("8 bytes"));
    Some((topic, &key[9..]))
}

/// The id inside a `t|id` or `c|id` key.
pub fn meta_id(key: &[u8]) -> Option<u64> {
    (key.len() == 9).then(|| u64::from_be_bytes(key[1..9].try_into().expect("8 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_offset_orders_by_id_then_offset() {
        assert!(id_offset(1, u64::MAX) < id_offset(2, 0));
        assert!(id_offset(7, 255) < id_offset(7, 256));
        assert_eq!(split_id_offset(&id_offset(7, 300)), Some((7, 300)));
        assert_eq!(split_id_offset(&[1, 2, 3]), None);
    }

    #[test]
    fn meta_keys_round_trip() {
        assert_eq!(meta_id(&topic_meta(42)), Some(42));
        assert_eq!(topic_meta(1)[0], b't');
        assert_eq!(channel_meta(1)[0], b'c');
        assert_eq!(split_dedup(&dedup(42, b"key")), Some((42, &b"key"[..])));
        assert_eq!(split_dedup(&dedup(42, b"")), None);
        assert_eq!(split_dedup(&topic_meta(42)), None);
    }
}
