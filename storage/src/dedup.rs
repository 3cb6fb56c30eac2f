//! Publish de-duplication: the window of idempotency keys seen per topic.
//!
//! A `Command::Publish` may carry a [`Dedup`]: a key, the window and the
//! count limit. Applying it (in [`crate::StateMachine::apply`], so on every
//! node alike and in log order) first evicts keys older than the window,
//! then looks the key up for that topic. A key still in the window makes the
//! publish a duplicate: nothing is stored, and the outcome repeats what the
//! first publish stored (`Outcome::Duplicate`). Otherwise the messages are
//! stored and the key recorded; if the window then holds more than
//! `max_keys` keys (all topics together), the oldest go.
//!
//! Determinism: "now" is the command's `timestamp_ns`, never the clock;
//! "oldest" is by (time seen, applied index at the time), a total order.
//!
//! On disk (the `meta` column family, see [`crate::keys`]):
//! `d | topic_id (u64 BE) | key` → [`DedupEntry`] (32 bytes), and
//! `DE` → the two eviction counters. Everything is in the state store, so a
//! restart ([`crate::Store::load_state`]) and a raft snapshot (a checkpoint
//! of that store) keep the window. In memory each key is held once (shared
//! by two ordered maps), about 270 bytes plus the key's length (measured).
//!
//! Invariants ([`DedupWindow::check_invariants`]): the two maps hold the
//! same entries, and no key is empty or longer than [`MAX_KEY_BYTES`].

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::command::TopicId;
use crate::error::StorageError;
use crate::keys;
use crate::persist::WriteSink;

/// The longest idempotency key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// The de-duplication part of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dedup {
    /// The idempotency key: 1 to [`MAX_KEY_BYTES`] bytes, per topic.
    pub key: Bytes,
    /// How long a key is remembered, in milliseconds (at least 1).
    pub window_ms: u64,
    /// How many keys the window holds at most, all topics together (at
    /// least 1).
    pub max_keys: u64,
}

impl Dedup {
    /// Whether a command may carry this (apply refuses anything else).
    pub fn is_valid(&self) -> bool {
        !self.key.is_empty()
            && self.key.len() <= MAX_KEY_BYTES
            && self.window_ms > 0
            && self.max_keys > 0
    }
}

/// What is remembered of a key: when it was seen and what its publish stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupEntry {
    /// The first publish's `timestamp_ns`.
    pub seen_ns: i64,
    /// The applied index of the first publish (orders keys seen at the same
    /// nanosecond).
    pub seen_index: u64,
    pub first_offset: u64,
    pub count: u64,
}

const ENTRY_BYTES: usize = 32;

impl DedupEntry {
    pub fn encode(&self) -> [u8; ENTRY_BYTES] {
        let mut out = [0u8; ENTRY_BYTES];
        out[..8].copy_from_slice(&self.seen_ns.to_be_bytes());
        out[8..16].copy_from_slice(&self.seen_index.to_be_bytes());
        out[16..24].copy_from_slice(&self.first_offset.to_be_bytes());
        out[24..].copy_from_slice(&self.count.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let corrupt = || StorageError::Corrupt {
            what: "dedup entry",
            detail: format!("{} bytes", bytes.len()),
        };
        if bytes.len() != ENTRY_BYTES {
            return Err(corrupt());
        }
        let word = |i: usize| <[u8; 8]>::try_from(&bytes[i * 8..i * 8 + 8]).expect("8 bytes");
        Ok(DedupEntry {
            seen_ns: i64::from_be_bytes(word(0)),
            seen_index: u64::from_be_bytes(word(1)),
            first_offset: u64::from_be_bytes(word(2)),
            count: u64::from_be_bytes(word(3)),
        })
    }
}

/// Keys evicted since the store was created, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DedupEvictions {
    /// Older than the window when a later publish with a key was applied.
    pub expired: u64,
    /// Pushed out, oldest first, by the count limit.
    pub over_limit: u64,
}

impl DedupEvictions {
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.expired.to_be_bytes());
        out[8..].copy_from_slice(&self.over_limit.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let bytes: [u8; 16] = bytes.try_into().map_err(|_| StorageError::Corrupt {
            what: "dedup evictions",
            detail: format!("{} bytes", bytes.len()),
        })?;
        Ok(DedupEvictions {
            expired: u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")),
            over_limit: u64::from_be_bytes(bytes[8..].try_into().expect("8 bytes")),
        })
    }
}

/// The keys in the window, per topic, and their age order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DedupWindow {
    entries: BTreeMap<(TopicId, Bytes), DedupEntry>,
    /// `(seen_ns, seen_index)` → the entry's key: eviction order.
    by_age: BTreeMap<(i64, u64), (TopicId, Bytes)>,
    evictions: DedupEvictions,
    evictions_dirty: bool,
}

impl DedupWindow {
    /// Rebuilds the window from what the store read back.
    pub fn recover(entries: Vec<(TopicId, Bytes, DedupEntry)>, evictions: DedupEvictions) -> Self {
        let mut window = DedupWindow {
            evictions,
            ..DedupWindow::default()
        };
        for (topic, key, entry) in entries {
            window.insert(topic, key, entry);
        }
        window
    }

    /// How many keys the window holds (all topics).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn evictions(&self) -> DedupEvictions {
        self.evictions
    }

    /// The entry of `key` for `topic`, if it is in the window.
    pub fn get(&self, topic: TopicId, key: &[u8]) -> Option<&DedupEntry> {
        self.entries.get(&(topic, Bytes::copy_from_slice(key)))
    }

    /// Evicts every key seen at least `window_ms` before `now_ns`.
    pub fn expire(&mut self, now_ns: i64, window_ms: u64, batch: &mut impl WriteSink) {
        let window_ns = i64::try_from(window_ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
        let cutoff = now_ns.saturating_sub(window_ns);
        while let Some((&(seen_ns, _), _)) = self.by_age.first_key_value() {
            if seen_ns > cutoff {
                break;
            }
            self.evict_oldest(batch);
            self.evictions.expired += 1;
        }
    }

    /// Records a key not in the window, then evicts the oldest keys until
    /// at most `max_keys` remain.
    pub fn record(
        &mut self,
        topic: TopicId,
        key: &[u8],
        entry: DedupEntry,
        max_keys: u64,
        batch: &mut impl WriteSink,
    ) {
        assert!(max_keys > 0, "a window holds at least one key");
        // A copy: the command's key may be a slice of a whole raft entry.
        let key = Bytes::copy_from_slice(key);
        batch.put_meta(&keys::dedup(topic, &key), &entry.encode());
        let fresh = self.insert(topic, key, entry);
        assert!(fresh, "recorded a key already in the window");
        while self.entries.len() as u64 > max_keys {
            self.evict_oldest(batch);
            self.evictions.over_limit += 1;
        }
    }

    /// Forgets every key of a deleted topic (not an eviction).
    pub fn drop_topic(&mut self, topic: TopicId, batch: &mut impl WriteSink) {
        let next = topic.checked_add(1);
        let doomed: Vec<(TopicId, Bytes)> = self
            .entries
            .range((topic, Bytes::new())..)
            .take_while(|((t, _), _)| Some(*t) != next)
            .map(|(k, _)| k.clone())
            .collect();
        for (topic, key) in doomed {
            let entry = self.entries.remove(&(topic, key.clone())).expect("listed");
            self.by_age.remove(&(entry.seen_ns, entry.seen_index));
            batch.delete_meta(&keys::dedup(topic, &key));
        }
    }

    /// Writes the eviction counters if this batch changed them.
    pub fn flush(&mut self, batch: &mut impl WriteSink) {
        if std::mem::take(&mut self.evictions_dirty) {
            batch.put_meta(keys::META_DEDUP_EVICTIONS, &self.evictions.encode());
        }
    }

    /// Panics unless the invariants of the module documentation hold.
    pub fn check_invariants(&self) {
        assert_eq!(self.entries.len(), self.by_age.len(), "dedup maps differ");
        for ((topic, key), entry) in &self.entries {
            assert!(
                !key.is_empty() && key.len() <= MAX_KEY_BYTES,
                "dedup key size"
            );
            let aged = self.by_age.get(&(entry.seen_ns, entry.seen_index));
            assert_eq!(aged, Some(&(*topic, key.clone())), "dedup age index");
        }
    }

    fn insert(&mut self, topic: TopicId, key: Bytes, entry: DedupEntry) -> bool {
        let age = (entry.seen_ns, entry.seen_index);
        let displaced = self.by_age.insert(age, (topic, key.clone()));
        assert!(displaced.is_none(), "two keys of one age");
        self.entries.insert((topic, key), entry).is_none()
    }

    fn evict_oldest(&mut self, batch: &mut impl WriteSink) {
        let (_, (topic, key)) = self.by_age.pop_first().expect("not empty");
        self.entries
            .remove(&(topic, key.clone()))
            .expect("in both maps");
        batch.delete_meta(&keys::dedup(topic, &key));
        self.evictions_dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Sink(Vec<(bool, Vec<u8>)>);

    impl WriteSink for Sink {
        fn put_meta(&mut self, key: &[u8], _: &[u8]) {
            self.0.push((true, key.to_vec()));
        }
        fn delete_meta(&mut self, key: &[u8]) {
            self.0.push((false, key.to_vec()));
        }
        fn put_log(&mut self, _: &[u8], _: &[u8]) {}
        fn delete_log_range(&mut self, _: &[u8], _: &[u8]) {}
        fn put_cursor(&mut self, _: &[u8], _: &[u8]) {}
        fn delete_cursor(&mut self, _: &[u8]) {}
        fn delete_cursor_range(&mut self, _: &[u8], _: &[u8]) {}
    }

    fn entry(seen_ns: i64, seen_index: u64) -> DedupEntry {
        DedupEntry {
            seen_ns,
            seen_index,
            first_offset: seen_index * 10,
            count: 1,
        }
    }

    #[test]
    fn entries_and_counters_round_trip() {
        let e = DedupEntry {
            seen_ns: -5,
            seen_index: 7,
            first_offset: 9,
            count: 3,
        };
        assert_eq!(DedupEntry::decode(&e.encode()).unwrap(), e);
        assert!(DedupEntry::decode(&[0; 31]).is_err());
        let c = DedupEvictions {
            expired: 4,
            over_limit: 2,
        };
        assert_eq!(DedupEvictions::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn expiry_is_by_age_and_counted() {
        let mut window = DedupWindow::default();
        let mut sink = Sink::default();
        window.record(1, b"a", entry(1_000_000, 1), 10, &mut sink);
        window.record(1, b"b", entry(3_000_000, 2), 10, &mut sink);
        // Window 2 ms at now = 3 ms: "a" (seen at 1 ms) is exactly 2 ms old.
        window.expire(3_000_000, 2, &mut sink);
        assert!(window.get(1, b"a").is_none());
        assert!(window.get(1, b"b").is_some());
        assert_eq!(window.evictions().expired, 1);
        assert_eq!(sink.0.last(), Some(&(false, keys::dedup(1, b"a"))));
        window.check_invariants();
    }

    #[test]
    fn the_count_limit_evicts_oldest_first_across_topics() {
        let mut window = DedupWindow::default();
        let mut sink = Sink::default();
        window.record(2, b"x", entry(5, 1), 2, &mut sink);
        window.record(1, b"x", entry(5, 2), 2, &mut sink);
        window.record(1, b"y", entry(4, 3), 2, &mut sink);
        // Oldest by time: "y" at 4 ns, although recorded last.
        assert!(window.get(1, b"y").is_none());
        assert_eq!(window.len(), 2);
        assert_eq!(window.evictions().over_limit, 1);
        window.record(3, b"z", entry(6, 4), 2, &mut sink);
        assert!(window.get(2, b"x").is_none(), "index breaks the tie");
        assert!(window.get(1, b"x").is_some());
        window.flush(&mut sink);
        assert_eq!(
            sink.0.last(),
            Some(&(true, keys::META_DEDUP_EVICTIONS.to_vec()))
        );
        window.check_invariants();
    }

    #[test]
    fn dropping_a_topic_forgets_only_its_keys() {
        let mut window = DedupWindow::default();
        let mut sink = Sink::default();
        window.record(1, b"k", entry(1, 1), 9, &mut sink);
        window.record(2, b"k", entry(2, 2), 9, &mut sink);
        window.record(2, b"l", entry(3, 3), 9, &mut sink);
        window.record(3, b"k", entry(4, 4), 9, &mut sink);
        window.drop_topic(2, &mut sink);
        assert_eq!(window.len(), 2);
        assert!(window.get(1, b"k").is_some() && window.get(3, b"k").is_some());
        assert_eq!(window.evictions(), DedupEvictions::default());
        let recovered = DedupWindow::recover(
            vec![
                (1, Bytes::from_static(b"k"), entry(1, 1)),
                (3, Bytes::from_static(b"k"), entry(4, 4)),
            ],
            DedupEvictions::default(),
        );
        assert_eq!(recovered, window);
        window.check_invariants();
    }

    #[test]
    fn validity_of_a_dedup() {
        let dedup = |key: &[u8], window_ms, max_keys| Dedup {
            key: Bytes::copy_from_slice(key),
            window_ms,
            max_keys,
        };
        assert!(dedup(b"k", 1, 1).is_valid());
        assert!(dedup(&[7; MAX_KEY_BYTES], 1, 1).is_valid());
        assert!(!dedup(&[7; MAX_KEY_BYTES + 1], 1, 1).is_valid());
        assert!(!dedup(b"", 1, 1).is_valid());
        assert!(!dedup(b"k", 0, 1).is_valid());
        assert!(!dedup(b"k", 1, 0).is_valid());
    }
}
