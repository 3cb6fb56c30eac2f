//! The `GroupCommitter`: the single-node [`CommandLog`]. One thread owns the
//! [`StateMachine`] and is the only writer of the store.
//!
//! Commands arrive from every connection and topic. The thread takes all that
//! are queued, applies them in arrival order into one batch, writes it with
//! one WAL fsync, and only then sends each command's [`LogEvent`], in order.
//! It never waits for anybody but the disk: sending an event does not block.
//! While a batch syncs, the next one fills in the queue. When idle, a lone
//! command is committed at once; a batch of only [`Urgency::Lazy`] commands
//! waits up to `lazy_interval` to share its fsync.
//!
//! After a failed write or fsync the committer is poisoned: that batch and
//! every later command are refused with [`CommitError::Storage`]; the node
//! never carries on as if the write had happened.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::command::{Command, Urgency};
use crate::error::{CommitError, StorageError};
use crate::log::{
    lock, AppliedEntry, BatchReport, CommandLog, CommitObserver, CommitStats, LogEvent, LogEvents,
    Ticket,
};
use crate::proposals::{Pending, ProposalQueue};
use crate::state::StateMachine;
use crate::store::Store;

#[derive(Clone)]
pub struct CommitOptions {
    /// How long a batch holding only lazy commands may wait for company.
    pub lazy_interval: Duration,
    pub max_batch_commands: usize,
    pub max_batch_bytes: usize,
    /// Told about each durable batch (metrics).
    pub observer: Option<Arc<dyn CommitObserver>>,
}

impl std::fmt::Debug for CommitOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitOptions")
            .field("lazy_interval", &self.lazy_interval)
            .field("max_batch_commands", &self.max_batch_commands)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

impl Default for CommitOptions {
    fn default() -> Self {
        CommitOptions {
            lazy_interval: Duration::from_millis(100),
            max_batch_commands: 8192,
            max_batch_bytes: 16 << 20,
            observer: None,
        }
    }
}

enum Input {
    Command(Pending),
    Shutdown,
}

pub struct GroupCommitter {
    /// `None` once shut down: nothing enters the queue after the
    /// [`Input::Shutdown`] marker, so everything before it is answered.
    input: Mutex<Option<mpsc::Sender<Input>>>,
    /// For refusing proposals that arrive after shutdown.
    events: mpsc::Sender<LogEvent>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<CommitStats>,
    failure: Arc<Mutex<Option<StorageError>>>,
}

impl GroupCommitter {
    /// Starts the committer thread; the events of every proposal arrive on
    /// the returned stream, in commit order.
    pub fn start(
        store: Arc<Store>,
        state: StateMachine,
        options: CommitOptions,
    ) -> (Self, LogEvents) {
        let (input, receiver) = mpsc::channel();
        let (events, event_receiver) = mpsc::channel();
        let stats = Arc::new(CommitStats::default());
        let failure = Arc::new(Mutex::new(None));
        stats
            .applied_index
            .store(state.applied_index(), Ordering::Relaxed);
        stats.record_dedup(state.dedup());
        let mut worker = Worker {
            failure: failure.clone(),
            store,
            state,
            options,
            receiver,
            events: events.clone(),
            queue: ProposalQueue::default(),
            poisoned: None,
            shutting_down: false,
            stats: stats.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || worker.run())
            .expect("spawn group-commit thread");
        let committer = GroupCommitter {
            input: Mutex::new(Some(input)),
            events,
            thread: Mutex::new(Some(thread)),
            stats,
            failure,
        };
        (committer, event_receiver)
    }

    fn refuse(&self, ticket: Ticket, error: CommitError) {
        let _ = self.events.send(LogEvent::Refused { ticket, error });
    }
}

impl CommandLog for GroupCommitter {
    fn propose(&self, command: Command, urgency: Urgency, ticket: Ticket) {
        let pending = Pending::new(command, urgency, ticket);
        let input = lock(&self.input);
        let sent = match input.as_ref() {
            Some(sender) => sender.send(Input::Command(pending)).is_ok(),
            None => false,
        };
        drop(input);
        if !sent {
            self.refuse(ticket, CommitError::Closed);
        }
    }

    fn failure(&self) -> Option<StorageError> {
        lock(&self.failure).clone()
    }

    fn stats(&self) -> &Arc<CommitStats> {
        &self.stats
    }

    /// Commits everything queued so far, then stops the thread.
    fn shutdown(&self) {
        if let Some(sender) = lock(&self.input).take() {
            let _ = sender.send(Input::Shutdown);
        }
        if let Some(handle) = lock(&self.thread).take() {
            let _ = handle.join();
        }
    }
}

impl Drop for GroupCommitter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Worker {
    store: Arc<Store>,
    state: StateMachine,
    options: CommitOptions,
    receiver: mpsc::Receiver<Input>,
    events: mpsc::Sender<LogEvent>,
    queue: ProposalQueue,
    poisoned: Option<StorageError>,
    /// Shared with [`GroupCommitter::failure`] for health checks.
    failure: Arc<Mutex<Option<StorageError>>>,
    shutting_down: bool,
    stats: Arc<CommitStats>,
}

impl Worker {
    fn run(&mut self) {
        loop {
            if self.queue.is_empty() {
                if self.shutting_down {
                    return;
                }
                match self.receiver.recv() {
                    Ok(input) => self.take(input),
                    Err(_) => return,
                }
            }
            self.drain();
            self.wait_if_lazy();
            self.commit_next_batch();
        }
    }

    fn take(&mut self, input: Input) {
        match input {
            Input::Command(pending) => self.queue.push(pending),
            Input::Shutdown => self.shutting_down = true,
        }
    }

    fn drain(&mut self) {
        while let Ok(input) = self.receiver.try_recv() {
            self.take(input);
        }
    }

    /// Holds a batch of only lazy commands until the oldest is
    /// `lazy_interval` old or an urgent command arrives.
    fn wait_if_lazy(&mut self) {
        while !self.shutting_down {
            let Some(deadline) = self.queue.lazy_deadline(self.options.lazy_interval) else {
                return;
            };
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            match self.receiver.recv_timeout(left) {
                Ok(input) => self.take(input),
                Err(RecvTimeoutError::Timeout) => return,
                Err(RecvTimeoutError::Disconnected) => self.shutting_down = true,
            }
        }
    }

    fn next_batch(&mut self) -> Vec<Pending> {
        let options = &self.options;
        self.queue
            .next_batch(options.max_batch_commands, options.max_batch_bytes)
    }

    fn commit_next_batch(&mut self) {
        let items = self.next_batch();
        if items.is_empty() {
            return;
        }
        if let Some(error) = &self.poisoned {
            let error =
                StorageError::Sync(format!("storage failed earlier, writes refused: {error}"));
            self.refuse_all(items, &error);
            return;
        }
        let mut batch = self.store.batch();
        let mut applied = Vec::with_capacity(items.len());
        for pending in items {
            let outcome = self.state.apply(&pending.command, &mut batch);
            let index = self.state.applied_index();
            applied.push(AppliedEntry {
                index,
                command: pending.command,
                outcome,
                ticket: Some(pending.ticket),
            });
        }
        self.state.flush_dirty(&mut batch);
        debug_assert!(!batch.is_empty(), "every batch writes the applied index");
        let size_bytes = batch.size_bytes() as u64;
        match self.store.commit(batch) {
            Ok(timings) => {
                self.stats.record_dedup(self.state.dedup());
                self.record(&BatchReport {
                    commands: applied.len(),
                    size_bytes,
                    timings,
                    applied_index: self.state.applied_index(),
                });
                for entry in applied {
                    let _ = self.events.send(LogEvent::Applied(entry));
                }
            }
            Err(error) => {
                tracing::error!(%error, "commit failed; refusing all further writes");
                self.poisoned = Some(error.clone());
                *lock(&self.failure) = Some(error.clone());
                for entry in applied {
                    let ticket = entry.ticket.expect("proposed here");
                    let error = CommitError::Storage(error.clone());
                    let _ = self.events.send(LogEvent::Refused { ticket, error });
                }
            }
        }
    }

    fn refuse_all(&self, items: Vec<Pending>, error: &StorageError) {
        for pending in items {
            let error = CommitError::Storage(error.clone());
            let ticket = pending.ticket;
            let _ = self.events.send(LogEvent::Refused { ticket, error });
        }
    }

    fn record(&self, report: &BatchReport) {
        self.stats.batches_total.fetch_add(1, Ordering::Relaxed);
        self.stats
            .commands_total
            .fetch_add(report.commands as u64, Ordering::Relaxed);
        self.stats
            .bytes_total
            .fetch_add(report.size_bytes, Ordering::Relaxed);
        self.stats
            .applied_index
            .store(report.applied_index, Ordering::Relaxed);
        if let Some(observer) = &self.options.observer {
            observer.batch_committed(report);
            observer.log_synced(report.timings.sync);
        }
    }
}
