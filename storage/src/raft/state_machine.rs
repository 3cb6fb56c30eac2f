//! [`ReplicatedState`]: openraft's state machine, which is single-node
//! mode's [`StateMachine`] over the state store.
//!
//! `apply` runs every command of every committed entry through
//! [`StateMachine::apply`], in log order, into one write batch per call
//! together with the entry's raft log id and the last membership, writes it
//! (not fsynced: the raft log is the durable record, see
//! `docs/replication.md`), and only then sends each command's
//! [`LogEvent::Applied`] — with its ticket when this very process proposed
//! it. Two rules are the log's, not the state machine's:
//!
//! - a Deliver, Finish or Requeue is applied only in an entry of the term
//!   in which its proposer led ([`Proposal::dispatch_term`](super::Proposal));
//!   otherwise it is refused with [`ApplyError::StaleTerm`] on every node;
//! - a leader's first (blank) entry of a term, when that leader is this
//!   node, sends [`LogEvent::Rebuild`] with the state as of that entry.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use prost::Message;

use super::convert::{log_id_to_pb, stored_membership_to_pb};
use super::snapshot::{read_raft_meta, rewind, SnapshotFiles};
use super::{
    is_dispatch_command, CheckpointTar, Entry, LogId, Origin, RaftError, Snapshot, SnapshotData,
    SnapshotMeta, StoredMembership, TypeConfig,
};
use crate::error::{ApplyError, StorageError};
use crate::keys;
use crate::log::{AppliedEntry, BatchReport, CommitObserver, CommitStats, LogEvent};
use crate::persist::WriteSink;
use crate::state::StateMachine;
use crate::store::{CommitTimings, Store};

pub struct ReplicatedStateOptions {
    /// This node and this run of its process.
    pub origin: Origin,
    /// Where snapshots are kept (`<data-dir>/snapshots`).
    pub snapshot_dir: PathBuf,
    pub truncate_step: u64,
    /// Told about every applied batch (metrics).
    pub observer: Option<Arc<dyn CommitObserver>>,
}

pub struct ReplicatedState {
    store: Arc<Store>,
    state: StateMachine,
    applied: Option<LogId>,
    membership: StoredMembership,
    origin: Origin,
    truncate_step: u64,
    events: mpsc::Sender<LogEvent>,
    snapshots: Arc<SnapshotFiles>,
    receiving: Option<PathBuf>,
    stats: Arc<CommitStats>,
    observer: Option<Arc<dyn CommitObserver>>,
}

impl ReplicatedState {
    /// Opens the replicated state over `store`: finishes a snapshot install
    /// a crash interrupted, then rebuilds the state machine and reads the
    /// last applied raft log id and membership.
    pub fn open(
        store: Arc<Store>,
        options: ReplicatedStateOptions,
        events: mpsc::Sender<LogEvent>,
        stats: Arc<CommitStats>,
    ) -> Result<Self, StorageError> {
        let snapshots = SnapshotFiles::open(options.snapshot_dir)?;
        snapshots.finish_interrupted_install(&store)?;
        let state = StateMachine::recover(options.truncate_step, store.load_state()?);
        state.check_invariants();
        let (applied, membership) = read_raft_meta(|key| store.read_meta(key))?;
        stats
            .applied_index
            .store(state.applied_index(), Ordering::Relaxed);
        stats.record_dedup(state.dedup());
        Ok(ReplicatedState {
            store,
            state,
            applied,
            membership,
            origin: options.origin,
            truncate_step: options.truncate_step,
            events,
            snapshots: Arc::new(snapshots),
            receiving: None,
            stats,
            observer: options.observer,
        })
    }

    /// The state as applied so far (to build the broker at start).
    pub fn state(&self) -> &StateMachine {
        &self.state
    }

    /// The raft log id of the last applied entry.
    pub fn applied(&self) -> Option<LogId> {
        self.applied
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<usize, StorageError> {
        let started = Instant::now();
        let mut batch = self.store.batch();
        let mut events = Vec::new();
        let count = entries.len();
        let mut commands = 0;
        for entry in entries {
            if let Some(applied) = self.applied {
                assert!(
                    entry.log_id > applied,
                    "raft entries are applied once, in order"
                );
            }
            let term = entry.log_id.leader_id.term;
            match entry.payload {
                EntryPayload::Blank if entry.log_id.leader_id.node_id == self.origin.node => {
                    events.push(LogEvent::Rebuild {
                        state: Box::new(self.state.clone()),
                        leader_term: Some(term),
                    });
                }
                EntryPayload::Blank => {}
                EntryPayload::Normal(proposal) => {
                    let ours = proposal.origin == self.origin;
                    for (ticket, command) in proposal.commands {
                        let outcome =
                            if is_dispatch_command(&command) && proposal.dispatch_term != term {
                                self.state.skip();
                                Err(ApplyError::StaleTerm {
                                    made_in: proposal.dispatch_term,
                                    committed_in: term,
                                })
                            } else {
                                self.state.apply(&command, &mut batch)
                            };
                        commands += 1;
                        events.push(LogEvent::Applied(AppliedEntry {
                            index: self.state.applied_index(),
                            command,
                            outcome,
                            ticket: ours.then_some(ticket),
                        }));
                    }
                }
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    batch.put_meta(
                        keys::META_RAFT_MEMBERSHIP,
                        &stored_membership_to_pb(&self.membership).encode_to_vec(),
                    );
                }
            }
            self.applied = Some(entry.log_id);
        }
        self.state.flush_dirty(&mut batch);
        if let Some(applied) = &self.applied {
            batch.put_meta(
                keys::META_RAFT_APPLIED,
                &log_id_to_pb(applied).encode_to_vec(),
            );
        }
        let size_bytes = batch.size_bytes();
        self.store.write_unsynced(batch)?;
        self.report(commands, size_bytes, started);
        for event in events {
            // The broker may be gone at shutdown; nothing to tell then.
            let _ = self.events.send(event);
        }
        Ok(count)
    }

    fn report(&self, commands: usize, size_bytes: usize, started: Instant) {
        let applied_index = self.state.applied_index();
        let stats = &self.stats;
        stats.batches_total.fetch_add(1, Ordering::Relaxed);
        stats
            .commands_total
            .fetch_add(commands as u64, Ordering::Relaxed);
        stats
            .bytes_total
            .fetch_add(size_bytes as u64, Ordering::Relaxed);
        stats.applied_index.store(applied_index, Ordering::Relaxed);
        stats.record_dedup(self.state.dedup());
        if let Some(observer) = &self.observer {
            observer.batch_committed(&BatchReport {
                commands,
                size_bytes: size_bytes as u64,
                timings: CommitTimings {
                    write: started.elapsed(),
                    sync: std::time::Duration::ZERO,
                },
                applied_index,
            });
        }
    }

    /// Writes `archive` into a new receiving file.
    fn receive(&mut self, archive: &CheckpointTar) -> Result<std::fs::File, StorageError> {
        use std::io::Write;
        let (path, mut file) = self.snapshots.receiving()?;
        self.receiving = Some(path);
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0;
        loop {
            let read = archive
                .read_at(offset, &mut buf)
                .map_err(|e| StorageError::Rocks(format!("read a snapshot: {e}")))?;
            if read == 0 {
                return Ok(file);
            }
            file.write_all(&buf[..read])
                .map_err(|e| StorageError::Rocks(format!("write a received snapshot: {e}")))?;
            offset += read as u64;
        }
    }

    fn install(
        &mut self,
        meta: &SnapshotMeta,
        received: &mut std::fs::File,
    ) -> Result<(), StorageError> {
        self.snapshots
            .install_received(meta, received, &self.store)?;
        if let Some(abandoned) = self.receiving.take() {
            let _ = std::fs::remove_file(abandoned);
        }
        self.state = StateMachine::recover(self.truncate_step, self.store.load_state()?);
        self.state.check_invariants();
        let (applied, membership) = read_raft_meta(|key| self.store.read_meta(key))?;
        assert_eq!(
            applied, meta.last_log_id,
            "the installed state is the snapshot's"
        );
        self.applied = applied;
        self.membership = membership;
        self.stats
            .applied_index
            .store(self.state.applied_index(), Ordering::Relaxed);
        self.stats.record_dedup(self.state.dedup());
        tracing::info!(snapshot = %meta.snapshot_id, applied = ?self.applied, "installed a snapshot");
        let _ = self.events.send(LogEvent::Rebuild {
            state: Box::new(self.state.clone()),
            leader_term: None,
        });
        Ok(())
    }
}

fn sm_write_error(error: StorageError) -> RaftError {
    StorageIOError::write_state_machine(&error).into()
}

fn snapshot_error(error: StorageError) -> RaftError {
    StorageIOError::write_snapshot(None, &error).into()
}

/// Builds a snapshot off the state machine's task: a checkpoint is
/// consistent by itself, whatever is applied meanwhile.
pub struct SnapshotBuilder {
    store: Arc<Store>,
    snapshots: Arc<SnapshotFiles>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, RaftError> {
        let store = self.store.clone();
        let snapshots = self.snapshots.clone();
        let built = tokio::task::spawn_blocking(move || snapshots.build(&store))
            .await
            .map_err(|e| snapshot_error(StorageError::Rocks(e.to_string())))?;
        let (meta, path) = built.map_err(snapshot_error)?;
        tracing::info!(snapshot = %meta.snapshot_id, "built a snapshot");
        let data = SnapshotFiles::open_data(&path).map_err(snapshot_error)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for ReplicatedState {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), RaftError> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, RaftError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let count = self.apply_entries(entries).map_err(sm_write_error)?;
        Ok(vec![(); count])
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, RaftError> {
        if let Some(abandoned) = self.receiving.take() {
            let _ = std::fs::remove_file(abandoned);
        }
        let (path, file) = self.snapshots.receiving().map_err(snapshot_error)?;
        self.receiving = Some(path);
        Ok(Box::new(SnapshotData::File(tokio::fs::File::from_std(
            file,
        ))))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), RaftError> {
        let mut file = match *snapshot {
            SnapshotData::File(file) => file.into_std().await,
            // Handed over in memory (openraft's test suite does): received
            // into a file first, as one from the network is.
            SnapshotData::Archive(archive) => self.receive(&archive).map_err(snapshot_error)?,
        };
        rewind(&mut file).map_err(snapshot_error)?;
        let multi_thread = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread;
        let installed = if multi_thread {
            tokio::task::block_in_place(|| self.install(meta, &mut file))
        } else {
            self.install(meta, &mut file)
        };
        installed.map_err(snapshot_error)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, RaftError> {
        let Some((meta, path)) = self.snapshots.current().map_err(snapshot_error)? else {
            return Ok(None);
        };
        let data = SnapshotFiles::open_data(&path).map_err(snapshot_error)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(data),
        }))
    }
}
