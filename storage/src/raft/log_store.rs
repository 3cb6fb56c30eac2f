//! [`RaftLogStore`]: openraft's log storage in its own RocksDB
//! (`<data-dir>/raft`).
//!
//! Column families: `entries` (big-endian index → `raft.proto` `Entry`) and
//! `raft_meta` (the vote, the committed and last purged log ids, the
//! cluster id). openraft's contract, and how it is kept:
//!
//! - an append is readable when [`RaftLogStorage::append`] returns (it is
//!   in the memtable) and reported flushed only after the WAL fsync that
//!   covers it: the syncer thread gathers every append waiting, fsyncs
//!   once, then calls their callbacks in order (group commit for the log);
//! - a vote, a truncation, a purge and the cluster id are written with
//!   `sync = true`: durable before the call returns;
//! - all writes go through one RocksDB handle in call order, and a synced
//!   write also makes every earlier write durable (one WAL).
//!
//! The newest entries are also kept decoded in memory ([`LogTail`]), so
//! that replication and apply, which read what was just appended, do not
//! read RocksDB back. Each change of the log (append, truncate, purge)
//! updates RocksDB and the tail under the tail's lock.
//!
//! Invariants asserted: entries of one append have consecutive indexes and
//! follow the last entry present.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader, StorageIOError};
use prost::Message;
use rocksdb::{
    ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions, DB,
};

use super::convert::{
    entry_from_pb, entry_to_pb, log_id_from_pb, log_id_to_pb, vote_from_pb, vote_to_pb,
};
use super::log_tail::LogTail;
use super::{Entry, LogId, RaftError, TypeConfig, Vote};
use crate::error::StorageError;
use crate::log::CommitObserver;
use crate::pb::raft as pb;
use crate::store::{Durability, SyncHook};

const CF_ENTRIES: &str = "entries";
const CF_META: &str = "raft_meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"purged";
const KEY_CLUSTER_ID: &[u8] = b"cluster_id";
/// How much of the log's newest entries (encoded size) stays in memory.
const TAIL_SIZE_BYTES: usize = 32 << 20;

pub struct RaftLogStoreOptions {
    pub path: PathBuf,
    /// `NoFsync` only for `--unsafe-no-fsync` (benchmarks): appends are
    /// reported flushed once written.
    pub durability: Durability,
    /// Called before every append fsync (tests: stall or fail it).
    pub sync_hook: Option<Arc<dyn SyncHook>>,
    /// Told how long each append fsync took (`/metrics`).
    pub observer: Option<Arc<dyn CommitObserver>>,
}

/// openraft's `RaftLogStorage` (and its log reader): cheap to clone.
#[derive(Clone)]
pub struct RaftLogStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<DB>,
    durability: Durability,
    tail: Mutex<LogTail>,
    /// Appends waiting for their fsync; `None` after shutdown.
    syncer: Mutex<Option<mpsc::Sender<LogFlushed<TypeConfig>>>>,
    /// The syncer thread (it holds the database too): joined at drop, so
    /// the database is closed when the last handle goes.
    sync_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.syncer.lock().expect("syncer lock").take();
        if let Some(thread) = self.sync_thread.lock().expect("sync thread lock").take() {
            let _ = thread.join();
        }
    }
}

impl RaftLogStore {
    pub fn open(options: RaftLogStoreOptions) -> Result<Self, StorageError> {
        std::fs::create_dir_all(&options.path)
            .map_err(|e| StorageError::Rocks(format!("create {}: {e}", options.path.display())))?;
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_keep_log_file_num(3);
        db_options.set_max_total_wal_size(128 << 20);
        // Entries live until the next snapshot purges them: compressing
        // them when a memtable is flushed costs CPU for nothing kept.
        let mut entries_options = Options::default();
        entries_options.set_compression_type(DBCompressionType::None);
        let families = vec![
            ColumnFamilyDescriptor::new(CF_ENTRIES, entries_options),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
        ];
        let db = Arc::new(DB::open_cf_descriptors(
            &db_options,
            &options.path,
            families,
        )?);
        let (syncer, pending) = mpsc::channel();
        let sync_db = db.clone();
        let durability = options.durability;
        let hook = options.sync_hook;
        let observer = options.observer;
        let sync_thread = std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || {
                let syncer = Syncer {
                    db: &sync_db,
                    durability,
                    hook: hook.as_deref(),
                    observer: observer.as_deref(),
                };
                syncer.run(&pending)
            })
            .expect("spawn the raft log syncer");
        Ok(RaftLogStore {
            inner: Arc::new(Inner {
                db,
                durability,
                tail: Mutex::new(LogTail::new(TAIL_SIZE_BYTES)),
                syncer: Mutex::new(Some(syncer)),
                sync_thread: Mutex::new(Some(sync_thread)),
            }),
        })
    }

    /// The cluster this log belongs to, once a group was initialized or
    /// joined.
    pub fn cluster_id(&self) -> Result<Option<String>, StorageError> {
        let raw = self.inner.db.get_cf(self.cf(CF_META), KEY_CLUSTER_ID)?;
        raw.map(|raw| {
            String::from_utf8(raw).map_err(|e| StorageError::Corrupt {
                what: "cluster id",
                detail: e.to_string(),
            })
        })
        .transpose()
    }

    /// Records the cluster id, durably. A log belongs to one cluster for
    /// life: setting a different one is refused.
    pub fn set_cluster_id(&self, cluster_id: &str) -> Result<(), StorageError> {
        if let Some(existing) = self.cluster_id()? {
            if existing == cluster_id {
                return Ok(());
            }
            return Err(StorageError::Corrupt {
                what: "cluster id",
                detail: format!("this log belongs to cluster {existing}, not {cluster_id}"),
            });
        }
        self.put_meta(KEY_CLUSTER_ID, cluster_id.as_bytes(), true)
    }

    /// Whether this log has ever held a vote or an entry (a node that was
    /// part of a group, as opposed to a fresh one).
    pub fn is_initialized(&self) -> Result<bool, StorageError> {
        let db = &self.inner.db;
        let has_vote = db.get_cf(self.cf(CF_META), KEY_VOTE)?.is_some();
        let has_entry = db
            .iterator_cf(self.cf(CF_ENTRIES), IteratorMode::Start)
            .next()
            .transpose()?
            .is_some();
        Ok(has_vote || has_entry || self.read_log_id(KEY_PURGED)?.is_some())
    }

    /// Stops the syncer once appends already queued are flushed.
    pub fn shutdown(&self) {
        self.inner.syncer.lock().expect("syncer lock").take();
        if let Some(thread) = self
            .inner
            .sync_thread
            .lock()
            .expect("sync thread lock")
            .take()
        {
            let _ = thread.join();
        }
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.inner
            .db
            .cf_handle(name)
            .expect("column family opened at start")
    }

    fn put_meta(&self, key: &[u8], value: &[u8], sync: bool) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META), key, value);
        self.write(batch, sync)
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StorageError> {
        let mut options = WriteOptions::default();
        options.set_sync(sync && self.inner.durability == Durability::Fsync);
        self.inner.db.write_opt(batch, &options)?;
        Ok(())
    }

    fn read_log_id(&self, key: &[u8]) -> Result<Option<LogId>, StorageError> {
        let raw = self.inner.db.get_cf(self.cf(CF_META), key)?;
        raw.map(|raw| decode::<pb::LogId>(&raw, "raft log id").map(|id| log_id_from_pb(&id)))
            .transpose()
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, LogTail> {
        self.inner.tail.lock().expect("log tail lock")
    }

    /// The last entry's id: from the tail when it holds any entry.
    fn last_log_id(&self, tail: &LogTail) -> Result<Option<LogId>, StorageError> {
        match tail.last_log_id() {
            Some(last) => Ok(Some(last)),
            None => self.last_entry_log_id(),
        }
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let mut iter = self
            .inner
            .db
            .iterator_cf(self.cf(CF_ENTRIES), IteratorMode::End);
        match iter.next().transpose()? {
            Some((_, value)) => Ok(Some(decode_entry(&value)?.log_id)),
            None => Ok(None),
        }
    }

    fn entries(&self, from: u64, to_exclusive: u64) -> Result<Vec<Entry>, StorageError> {
        if let Some(entries) = self.tail().get(from, to_exclusive) {
            return Ok(entries);
        }
        let start = from.to_be_bytes();
        let mode = IteratorMode::From(&start, Direction::Forward);
        let mut entries = Vec::new();
        for item in self.inner.db.iterator_cf(self.cf(CF_ENTRIES), mode) {
            let (key, value) = item?;
            if index_of(&key)? >= to_exclusive {
                break;
            }
            entries.push(decode_entry(&value)?);
        }
        Ok(entries)
    }
}

/// The thread that fsyncs appends: gathers every append waiting, fsyncs
/// once, then reports each flushed, in order (group commit for the log).
struct Syncer<'a> {
    db: &'a DB,
    durability: Durability,
    hook: Option<&'a dyn SyncHook>,
    observer: Option<&'a dyn CommitObserver>,
}

impl Syncer<'_> {
    fn run(&self, pending: &mpsc::Receiver<LogFlushed<TypeConfig>>) {
        while let Ok(first) = pending.recv() {
            let mut callbacks = vec![first];
            callbacks.extend(pending.try_iter());
            let result = self.sync();
            if let Err(error) = &result {
                tracing::error!(%error, "raft log fsync failed; the log is not durable");
            }
            for callback in callbacks {
                let result = match &result {
                    Ok(()) => Ok(()),
                    Err(error) => Err(std::io::Error::other(error.to_string())),
                };
                callback.log_io_completed(result);
            }
        }
    }

    fn sync(&self) -> std::io::Result<()> {
        self.hook
            .map_or(Ok(()), |hook| hook.before_sync())
            .map_err(std::io::Error::other)?;
        if self.durability == Durability::NoFsync {
            return Ok(());
        }
        let started = std::time::Instant::now();
        self.db
            .flush_wal(true)
            .map_err(|e| std::io::Error::other(e.into_string()))?;
        if let Some(observer) = self.observer {
            observer.log_synced(started.elapsed());
        }
        Ok(())
    }
}

fn index_of(key: &[u8]) -> Result<u64, StorageError> {
    key.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StorageError::Corrupt {
            what: "raft entry key",
            detail: format!("{key:?}"),
        })
}

fn decode<M: Message + Default>(raw: &[u8], what: &'static str) -> Result<M, StorageError> {
    M::decode(raw).map_err(|e| StorageError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

fn decode_entry(raw: &[u8]) -> Result<Entry, StorageError> {
    entry_from_pb(decode(raw, "raft entry")?).map_err(|e| StorageError::Corrupt {
        what: "raft entry",
        detail: e.to_string(),
    })
}

fn read_error(error: StorageError) -> RaftError {
    StorageIOError::read_logs(&error).into()
}

fn write_error(error: StorageError) -> RaftError {
    StorageIOError::write_logs(&error).into()
}

impl RaftLogReader<TypeConfig> for RaftLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, RaftError> {
        let from = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let to_exclusive = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        self.entries(from, to_exclusive).map_err(read_error)
    }
}

impl RaftLogStorage<TypeConfig> for RaftLogStore {
    type LogReader = RaftLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftError> {
        let last_purged_log_id = self.read_log_id(KEY_PURGED).map_err(read_error)?;
        let last_log_id = self
            .last_log_id(&self.tail())
            .map_err(read_error)?
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), RaftError> {
        let raw = vote_to_pb(vote).encode_to_vec();
        self.put_meta(KEY_VOTE, &raw, true)
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, RaftError> {
        let raw = self.inner.db.get_cf(self.cf(CF_META), KEY_VOTE);
        let raw = raw.map_err(|e| StorageIOError::read_vote(&e))?;
        raw.map(|raw| decode::<pb::Vote>(&raw, "raft vote").map(|v| vote_from_pb(&v)))
            .transpose()
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), RaftError> {
        // A hint for replay at start (openraft re-applies up to it); not
        // synced: losing it only delays applying until the leader says.
        let result = match committed {
            Some(log_id) => {
                self.put_meta(KEY_COMMITTED, &log_id_to_pb(&log_id).encode_to_vec(), false)
            }
            None => Ok(()),
        };
        result.map_err(write_error)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, RaftError> {
        self.read_log_id(KEY_COMMITTED).map_err(read_error)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), RaftError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut tail = self.tail();
        let mut expected = self
            .last_log_id(&tail)
            .map_err(read_error)?
            .map(|id| id.index + 1);
        let mut batch = WriteBatch::default();
        let mut appended = Vec::new();
        let cf = self.cf(CF_ENTRIES);
        for entry in entries {
            let index = entry.log_id.index;
            if let Some(expected) = expected {
                assert_eq!(index, expected, "raft log appends leave no hole");
            }
            expected = Some(index + 1);
            let encoded = entry_to_pb(&entry).encode_to_vec();
            appended.push((entry, encoded.len()));
            batch.put_cf(cf, index.to_be_bytes(), encoded);
        }
        self.write(batch, false).map_err(write_error)?;
        for (entry, size_bytes) in appended {
            tail.push(entry, size_bytes);
        }
        drop(tail);
        let syncer = self.inner.syncer.lock().expect("syncer lock").clone();
        match syncer {
            Some(syncer) => {
                if let Err(mpsc::SendError(callback)) = syncer.send(callback) {
                    callback.log_io_completed(Err(std::io::Error::other("raft log shut down")));
                }
            }
            None => callback.log_io_completed(Err(std::io::Error::other("raft log shut down"))),
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), RaftError> {
        tracing::info!(%log_id, "truncating the raft log");
        let mut tail = self.tail();
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.cf(CF_ENTRIES),
            log_id.index.to_be_bytes(),
            u64::MAX.to_be_bytes(),
        );
        batch.delete_cf(self.cf(CF_ENTRIES), u64::MAX.to_be_bytes());
        self.write(batch, true).map_err(write_error)?;
        tail.truncate(log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), RaftError> {
        tracing::debug!(%log_id, "purging the raft log");
        let mut tail = self.tail();
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_META),
            KEY_PURGED,
            log_id_to_pb(&log_id).encode_to_vec(),
        );
        batch.delete_range_cf(
            self.cf(CF_ENTRIES),
            0u64.to_be_bytes(),
            (log_id.index + 1).to_be_bytes(),
        );
        self.write(batch, true).map_err(write_error)?;
        tail.purge(log_id.index);
        Ok(())
    }
}
