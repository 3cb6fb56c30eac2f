//! [`LogTail`]: the newest raft entries, kept decoded in memory beside the
//! RocksDB log.
//!
//! Replication (the leader sends what it just appended) and apply (every
//! member applies what it just appended) read the log's newest entries.
//! Served from here, they neither read RocksDB nor decode. The tail is
//! always a contiguous run of entries ending at the last entry of the log,
//! so any read that starts at or after its first index is answered exactly
//! as the RocksDB log would answer it. It is bounded by bytes: the oldest
//! entries leave first, and older reads go to RocksDB.

use std::collections::VecDeque;

use super::{Entry, LogId};

pub struct LogTail {
    /// Each entry with its encoded size.
    entries: VecDeque<(Entry, usize)>,
    size_bytes: usize,
    max_size_bytes: usize,
}

impl LogTail {
    pub fn new(max_size_bytes: usize) -> Self {
        LogTail {
            entries: VecDeque::new(),
            size_bytes: 0,
            max_size_bytes,
        }
    }

    /// The id of the newest entry held: the log's last entry, if any is
    /// held at all.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.entries.back().map(|(entry, _)| entry.log_id)
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(entry, _)| entry.log_id.index)
    }

    /// Adds the entry just appended to the log. After a truncation the
    /// run may restart anywhere; otherwise it follows the newest entry.
    pub fn push(&mut self, entry: Entry, size_bytes: usize) {
        if let Some(last) = self.last_log_id() {
            assert_eq!(
                entry.log_id.index,
                last.index + 1,
                "the log tail is contiguous"
            );
        }
        self.entries.push_back((entry, size_bytes));
        self.size_bytes += size_bytes;
        while self.size_bytes > self.max_size_bytes && self.entries.len() > 1 {
            self.pop_front();
        }
    }

    /// Entries `from..to_exclusive`, if the tail holds every entry of the
    /// log at `from` and after (else `None`: read RocksDB).
    pub fn get(&self, from: u64, to_exclusive: u64) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        if from < first {
            return None;
        }
        let skip = usize::try_from(from - first).unwrap_or(usize::MAX);
        let take = usize::try_from(to_exclusive.saturating_sub(from)).unwrap_or(usize::MAX);
        Some(
            self.entries
                .iter()
                .skip(skip)
                .take(take)
                .map(|(entry, _)| entry.clone())
                .collect(),
        )
    }

    /// Drops the entries at `index` and after (the log was truncated).
    pub fn truncate(&mut self, index: u64) {
        while self.last_log_id().is_some_and(|last| last.index >= index) {
            let (_, size_bytes) = self.entries.pop_back().expect("not empty");
            self.size_bytes -= size_bytes;
        }
    }

    /// Drops the entries up to `index` included (the log was purged).
    pub fn purge(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        let (_, size_bytes) = self.entries.pop_front().expect("not empty");
        self.size_bytes -= size_bytes;
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|entries| entries.iter().map(|e| e.log_id.index).collect())
    }

    fn tail_of(range: std::ops::Range<u64>, max_size_bytes: usize) -> LogTail {
        let mut tail = LogTail::new(max_size_bytes);
        for index in range {
            tail.push(entry(index), 10);
        }
        tail
    }

    #[test]
    fn reads_inside_the_tail_are_served_and_older_ones_are_not() {
        let tail = tail_of(5..10, 1_000);
        assert_eq!(indexes(tail.get(5, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(tail.get(7, 9)), Some(vec![7, 8]));
        assert_eq!(indexes(tail.get(8, u64::MAX)), Some(vec![8, 9]));
        assert_eq!(indexes(tail.get(10, 20)), Some(vec![]));
        assert_eq!(indexes(tail.get(4, 6)), None);
        assert_eq!(indexes(LogTail::new(1_000).get(0, 10)), None);
    }

    #[test]
    fn the_oldest_entries_leave_when_the_tail_is_full() {
        let tail = tail_of(0..10, 35);
        assert_eq!(indexes(tail.get(7, 100)), Some(vec![7, 8, 9]));
        assert_eq!(indexes(tail.get(6, 100)), None);
        // One entry larger than the bound is still held: it is the last.
        let mut tail = LogTail::new(5);
        tail.push(entry(3), 10);
        assert_eq!(tail.last_log_id().map(|id| id.index), Some(3));
    }

    #[test]
    fn truncate_and_purge_keep_it_the_logs_suffix() {
        let mut tail = tail_of(0..10, 1_000);
        tail.truncate(6);
        assert_eq!(tail.last_log_id().map(|id| id.index), Some(5));
        tail.push(entry(6), 10);
        tail.purge(3);
        assert_eq!(indexes(tail.get(4, 100)), Some(vec![4, 5, 6]));
        assert_eq!(indexes(tail.get(3, 100)), None);
        tail.truncate(0);
        assert_eq!(tail.last_log_id(), None);
        assert_eq!(tail.size_bytes, 0);
        // After a truncation to nothing, the run restarts anywhere.
        tail.push(entry(42), 10);
        assert_eq!(indexes(tail.get(42, 43)), Some(vec![42]));
    }

    #[test]
    #[should_panic(expected = "contiguous")]
    fn a_hole_is_refused() {
        let mut tail = tail_of(0..3, 1_000);
        tail.push(entry(4), 10);
    }
}
