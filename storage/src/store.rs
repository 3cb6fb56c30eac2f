//! The RocksDB database under a data directory: opening and recovering it,
//! reading the logs, and committing batches durably.
//!
//! A commit is `write` (WAL append, no sync) followed by an explicit WAL
//! fsync. The [`SyncHook`] between the two is the seam where tests stall or
//! fail the sync and check that nothing is acknowledged before it returns.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Direction,
    IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};

use bytes::Bytes;

use crate::dedup::{DedupEntry, DedupEvictions};
use crate::error::StorageError;
use crate::keys::{self, CF_CURSOR, CF_LOG, CF_META};
use crate::persist::{StoredState, WriteSink, DEFAULT_TRUNCATE_STEP};
use crate::record::{ChannelMeta, CursorRecord, MessageRecord, TopicMeta, FORMAT_VERSION};

/// How long the two steps of [`Store::commit`] took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitTimings {
    /// Appending the batch to the WAL and memtables.
    pub write: Duration,
    /// The WAL fsync (with the [`SyncHook`] in front of it); zero when
    /// durability is off, and in redundancy mode, where the raft log's
    /// fsync makes commands durable (reported on its own).
    pub sync: Duration,
}

/// Whether a commit waits for the WAL fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The default: a commit returns after the WAL is fsynced.
    Fsync,
    /// UNSAFE, for comparison only: the WAL is written but not fsynced, so an
    /// OS crash or power loss can lose acknowledged messages.
    NoFsync,
}

/// Called after a batch is written and before the WAL is fsynced.
pub trait SyncHook: Send + Sync {
    /// An `Err` is treated exactly like a failed fsync.
    fn before_sync(&self) -> Result<(), String>;
}

/// A [`SyncHook`] that lets a test hold syncs, release them, or make them fail.
#[derive(Default)]
pub struct SyncGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    held: bool,
    failure: Option<String>,
    waiting: usize,
    passed: u64,
}

impl SyncGate {
    pub fn new() -> Arc<Self> {
        Arc::new(SyncGate::default())
    }

    /// From now on, syncs block until [`SyncGate::release`].
    pub fn hold(&self) {
        self.state.lock().expect("gate lock").held = true;
    }

    pub fn release(&self) {
        self.state.lock().expect("gate lock").held = false;
        self.changed.notify_all();
    }

    /// From now on, syncs fail with `reason` (held ones too).
    pub fn fail(&self, reason: &str) {
        self.state.lock().expect("gate lock").failure = Some(reason.to_owned());
        self.changed.notify_all();
    }

    /// How many syncs are blocked right now.
    pub fn waiting(&self) -> usize {
        self.state.lock().expect("gate lock").waiting
    }

    /// How many syncs have gone through the gate (successfully or not).
    pub fn passed(&self) -> u64 {
        self.state.lock().expect("gate lock").passed
    }
}

impl SyncHook for SyncGate {
    fn before_sync(&self) -> Result<(), String> {
        let mut state = self.state.lock().expect("gate lock");
        state.waiting += 1;
        self.changed.notify_all();
        while state.held && state.failure.is_none() {
            state = self.changed.wait(state).expect("gate lock");
        }
        state.waiting -= 1;
        state.passed += 1;
        match &state.failure {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }
}

pub struct StoreOptions {
    pub path: PathBuf,
    pub durability: Durability,
    pub sync_hook: Option<Arc<dyn SyncHook>>,
    /// See [`DEFAULT_TRUNCATE_STEP`].
    pub truncate_step: u64,
    /// Redundancy mode: the raft log is this store's write-ahead log.
    /// [`Store::write_unsynced`] then skips RocksDB's WAL, and memtables of
    /// all column families are flushed together (atomic flush), so what is
    /// on disk is always one consistent applied prefix, whose end the
    /// state records beside it; the rest is applied again from the raft
    /// log at start.
    pub log_is_external: bool,
}

impl StoreOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StoreOptions {
            path: path.into(),
            durability: Durability::Fsync,
            sync_hook: None,
            truncate_step: DEFAULT_TRUNCATE_STEP,
            log_is_external: false,
        }
    }
}

pub struct Store {
    db: DB,
    durability: Durability,
    log_is_external: bool,
    sync_hook: Option<Arc<dyn SyncHook>>,
    path: PathBuf,
}

/// A `WriteBatch` with the column families resolved.
pub struct Batch<'a> {
    inner: WriteBatch,
    meta: &'a ColumnFamily,
    log: &'a ColumnFamily,
    cursor: &'a ColumnFamily,
}

impl WriteSink for Batch<'_> {
    fn put_meta(&mut self, key: &[u8], value: &[u8]) {
        self.inner.put_cf(self.meta, key, value);
    }
    fn delete_meta(&mut self, key: &[u8]) {
        self.inner.delete_cf(self.meta, key);
    }
    fn put_log(&mut self, key: &[u8], value: &[u8]) {
        self.inner.put_cf(self.log, key, value);
    }
    fn delete_log_range(&mut self, from: &[u8], to: &[u8]) {
        self.inner.delete_range_cf(self.log, from, to);
    }
    fn put_cursor(&mut self, key: &[u8], value: &[u8]) {
        self.inner.put_cf(self.cursor, key, value);
    }
    fn delete_cursor(&mut self, key: &[u8]) {
        self.inner.delete_cf(self.cursor, key);
    }
    fn delete_cursor_range(&mut self, from: &[u8], to: &[u8]) {
        self.inner.delete_range_cf(self.cursor, from, to);
    }
}

impl Batch<'_> {
    /// Bytes this batch will append to the WAL.
    pub fn size_bytes(&self) -> usize {
        self.inner.size_in_bytes()
    }
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

/// Every column family of the store.
const FAMILIES: [&str; 3] = [CF_META, CF_LOG, CF_CURSOR];

/// A checkpoint made by [`Store::checkpoint`], opened read-only.
fn open_checkpoint(dir: &Path) -> Result<DB, StorageError> {
    Ok(DB::open_cf_for_read_only(
        &Options::default(),
        dir,
        FAMILIES,
        false,
    )?)
}

/// All memtables of all column families together stay below this, whatever
/// the disk's flush speed: the server's memory is bounded, not the backlog.
const MEMTABLE_BUDGET_BYTES: usize = 128 << 20;
/// One block cache shared by every column family.
const BLOCK_CACHE_BYTES: usize = 32 << 20;

fn db_options(log_is_external: bool) -> Options {
    let mut options = Options::default();
    options.set_atomic_flush(log_is_external);
    options.set_db_write_buffer_size(MEMTABLE_BUDGET_BYTES);
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.increase_parallelism(2);
    options.set_keep_log_file_num(3);
    options.set_max_total_wal_size(256 << 20);
    options
}

fn table_options(cache: &Cache) -> BlockBasedOptions {
    let mut table = BlockBasedOptions::default();
    table.set_block_size(64 << 10);
    table.set_block_cache(cache);
    table
}

fn log_options(cache: &Cache) -> Options {
    let mut options = Options::default();
    options.set_write_buffer_size(64 << 20);
    options.set_max_write_buffer_number(3);
    options.set_compression_type(DBCompressionType::Lz4);
    options.set_block_based_table_factory(&table_options(cache));
    options
}

fn small_cf_options(cache: &Cache) -> Options {
    let mut options = Options::default();
    options.set_write_buffer_size(16 << 20);
    options.set_block_based_table_factory(&table_options(cache));
    options
}

impl Store {
    /// Opens (or creates) the data directory and checks its format version.
    /// [`crate::open`] also rebuilds the state machine from it.
    pub fn open(options: StoreOptions) -> Result<Store, StorageError> {
        std::fs::create_dir_all(&options.path)
            .map_err(|e| StorageError::Rocks(format!("create {}: {e}", options.path.display())))?;
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let families = vec![
            ColumnFamilyDescriptor::new(CF_META, small_cf_options(&cache)),
            ColumnFamilyDescriptor::new(CF_LOG, log_options(&cache)),
            ColumnFamilyDescriptor::new(CF_CURSOR, small_cf_options(&cache)),
        ];
        let db_options = db_options(options.log_is_external);
        let db = DB::open_cf_descriptors(&db_options, &options.path, families)?;
        let store = Store {
            db,
            durability: options.durability,
            log_is_external: options.log_is_external,
            sync_hook: options.sync_hook,
            path: options.path,
        };
        store.check_format()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family opened at start")
    }

    fn check_format(&self) -> Result<(), StorageError> {
        let meta = self.cf(CF_META);
        match self.db.get_cf(meta, keys::META_FORMAT)? {
            Some(raw) => {
                let found = raw
                    .as_slice()
                    .try_into()
                    .map(u32::from_be_bytes)
                    .map_err(|_| StorageError::Corrupt {
                        what: "format version",
                        detail: format!("{} bytes", raw.len()),
                    })?;
                if found != FORMAT_VERSION {
                    return Err(StorageError::UnsupportedFormat {
                        found,
                        expected: FORMAT_VERSION,
                    });
                }
                Ok(())
            }
            None => {
                let mut batch = self.batch();
                batch.put_meta(keys::META_FORMAT, &FORMAT_VERSION.to_be_bytes());
                self.commit(batch).map(|_| ())
            }
        }
    }

    /// Reads back every topic, channel and cursor record (not the logs).
    pub fn load_state(&self) -> Result<StoredState, StorageError> {
        let mut stored = StoredState {
            next_id: 1,
            ..StoredState::default()
        };
        for item in self.db.iterator_cf(self.cf(CF_META), IteratorMode::Start) {
            let (key, value) = item?;
            let corrupt = || StorageError::Corrupt {
                what: "meta key",
                detail: format!("{key:?}"),
            };
            match key.first() {
                Some(&keys::META_TOPIC_PREFIX) => {
                    let id = keys::meta_id(&key).ok_or_else(corrupt)?;
                    stored.topics.push((id, TopicMeta::decode(&value)?));
                }
                Some(&keys::META_CHANNEL_PREFIX) => {
                    let id = keys::meta_id(&key).ok_or_else(corrupt)?;
                    stored.channels.push((id, ChannelMeta::decode(&value)?));
                }
                Some(&keys::META_DEDUP_PREFIX) => {
                    let (topic, dedup_key) = keys::split_dedup(&key).ok_or_else(corrupt)?;
                    let entry = DedupEntry::decode(&value)?;
                    stored
                        .dedup
                        .push((topic, Bytes::copy_from_slice(dedup_key), entry));
                }
                _ if &*key == keys::META_DEDUP_EVICTIONS => {
                    stored.dedup_evictions = DedupEvictions::decode(&value)?;
                }
                _ if &*key == keys::META_NEXT_ID => {
                    stored.next_id =
                        u64::from_be_bytes((*value).try_into().map_err(|_| corrupt())?);
                }
                _ if &*key == keys::META_APPLIED_INDEX => {
                    stored.applied_index =
                        u64::from_be_bytes((*value).try_into().map_err(|_| corrupt())?);
                }
                _ => {}
            }
        }
        for item in self.db.iterator_cf(self.cf(CF_CURSOR), IteratorMode::Start) {
            let (key, value) = item?;
            let (channel, offset) =
                keys::split_id_offset(&key).ok_or_else(|| StorageError::Corrupt {
                    what: "cursor key",
                    detail: format!("{key:?}"),
                })?;
            let record = CursorRecord::decode(&value)?;
            stored.records.push((channel, offset, record));
        }
        Ok(stored)
    }

    /// An empty batch for [`crate::StateMachine::apply`].
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            inner: WriteBatch::default(),
            meta: self.cf(CF_META),
            log: self.cf(CF_LOG),
            cursor: self.cf(CF_CURSOR),
        }
    }

    /// Writes the batch and, unless durability is off, fsyncs the WAL.
    /// Returns only once the batch is durable (or the write failed), with
    /// how long the write and the fsync took.
    pub fn commit(&self, batch: Batch) -> Result<CommitTimings, StorageError> {
        let started = Instant::now();
        let mut write_options = WriteOptions::default();
        write_options.set_sync(false);
        self.db.write_opt(batch.inner, &write_options)?;
        let written = Instant::now();
        if let Some(hook) = &self.sync_hook {
            hook.before_sync().map_err(StorageError::Sync)?;
        }
        match self.durability {
            Durability::Fsync => self
                .db
                .flush_wal(true)
                .map_err(|e| StorageError::Sync(e.into_string()))?,
            Durability::NoFsync => {}
        }
        Ok(CommitTimings {
            write: written - started,
            sync: written.elapsed(),
        })
    }

    /// Writes the batch without waiting for any fsync. For the replicated
    /// state, whose durability is the raft log's: a crash loses at most a
    /// suffix of applied entries, which are applied again from the log at
    /// start. RocksDB recovers a prefix, never a mix: from its WAL, or,
    /// when the raft log is the WAL ([`StoreOptions::log_is_external`]),
    /// from its last atomic flush.
    pub fn write_unsynced(&self, batch: Batch) -> Result<(), StorageError> {
        let mut write_options = WriteOptions::default();
        write_options.set_sync(false);
        write_options.disable_wal(self.log_is_external);
        self.db.write_opt(batch.inner, &write_options)?;
        Ok(())
    }

    /// Makes every write so far durable (one WAL fsync).
    pub fn sync(&self) -> Result<(), StorageError> {
        self.db
            .flush_wal(true)
            .map_err(|e| StorageError::Sync(e.into_string()))
    }

    /// One value of the `meta` column family.
    pub fn read_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db.get_cf(self.cf(CF_META), key)?)
    }

    /// A consistent copy of the whole store in `dir` (which must not
    /// exist): a RocksDB checkpoint, memtables flushed, SST files
    /// hard-linked.
    pub fn checkpoint(&self, dir: &Path) -> Result<(), StorageError> {
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.db)?;
        checkpoint.create_checkpoint(dir)?;
        Ok(())
    }

    /// One `meta` value of a checkpoint made by [`Store::checkpoint`].
    pub fn read_checkpoint_meta(dir: &Path, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let db = open_checkpoint(dir)?;
        let meta = db
            .cf_handle(CF_META)
            .expect("checkpoint has the meta family");
        Ok(db.get_cf(meta, key)?)
    }

    /// Replaces everything this store holds with the contents of the
    /// checkpoint in `dir`, in bounded batches, then fsyncs. Not atomic:
    /// the caller marks the replacement as under way (and redoes it after a
    /// crash) until this returns.
    pub fn replace_with_checkpoint(&self, dir: &Path) -> Result<(), StorageError> {
        const CHUNK_BYTES: usize = 4 << 20;
        let source = open_checkpoint(dir)?;
        for name in FAMILIES {
            let target = self.cf(name);
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(target, &[][..], &[0xffu8; 64][..]);
            let from = source.cf_handle(name).expect("checkpoint has every family");
            for item in source.iterator_cf(from, IteratorMode::Start) {
                let (key, value) = item?;
                batch.put_cf(target, key, value);
                if batch.size_in_bytes() >= CHUNK_BYTES {
                    self.db.write(std::mem::take(&mut batch))?;
                }
            }
            self.db.write(batch)?;
        }
        self.sync()
    }

    /// Up to `limit` log entries of `topic` at offsets `>= from`, in order.
    pub fn read_log(
        &self,
        topic: u64,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, MessageRecord)>, StorageError> {
        let mut read_options = ReadOptions::default();
        read_options.set_iterate_upper_bound(keys::id_offset(topic + 1, 0).to_vec());
        let start = keys::id_offset(topic, from);
        let mode = IteratorMode::From(&start, Direction::Forward);
        let mut entries = Vec::with_capacity(limit.min(4096));
        for item in self.db.iterator_cf_opt(self.cf(CF_LOG), read_options, mode) {
            if entries.len() >= limit {
                break;
            }
            let (key, value) = item?;
            // `ok_or_else`: the error text is built only for a corrupt key,
            // not for every entry read (it showed up in drain profiles).
            let (_, offset) = keys::split_id_offset(&key).ok_or_else(|| StorageError::Corrupt {
                what: "log key",
                detail: format!("{key:?}"),
            })?;
            entries.push((offset, MessageRecord::decode(&value)?));
        }
        Ok(entries)
    }

    /// One log entry, if still stored.
    pub fn read_message(
        &self,
        topic: u64,
        offset: u64,
    ) -> Result<Option<MessageRecord>, StorageError> {
        let raw = self
            .db
            .get_cf(self.cf(CF_LOG), keys::id_offset(topic, offset))?;
        raw.map(|raw| MessageRecord::decode(&raw)).transpose()
    }

    /// Every key and value of every column family, in order (for tests).
    pub fn dump(&self) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for name in FAMILIES {
            for item in self.db.iterator_cf(self.cf(name), IteratorMode::Start) {
                let (key, value) = item.expect("dump read");
                out.push((name, key.to_vec(), value.to_vec()));
            }
        }
        out
    }

    /// What the data directory holds: the sizes of its files (SST files,
    /// WAL, manifest, options). RocksDB keeps them in one flat directory.
    pub fn disk_size_bytes(&self) -> u64 {
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.metadata().ok())
            .filter(|metadata| metadata.is_file())
            .map(|metadata| metadata.len())
            .sum()
    }
}
