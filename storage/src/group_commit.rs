//! The `GroupCommitter`: one thread that owns the [`StateMachine`] and is the
//! only writer of the store.
//!
//! Commands arrive from every connection and topic. The thread takes all that
//! are queued, applies them in arrival order into one batch, writes it with
//! one WAL fsync, and only then calls each command's completion, in order.
//! While a batch syncs, the next one fills in the queue. When idle, a lone
//! command is committed at once; a batch of only [`Urgency::Lazy`] commands
//! waits up to `lazy_interval` to share its fsync.
//!
//! After a failed write or fsync the committer is poisoned: that batch and
//! every later command are answered with [`CommitError::Storage`]; the node
//! never carries on as if the write had happened.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::command::{Command, Outcome, Urgency};
use crate::error::{CommitError, StorageError};
use crate::state::StateMachine;
use crate::store::{CommitTimings, Store};

/// Called once per command, on the committer thread, after its batch is
/// durable (or failed). Completions run in commit order; they must not block.
pub type Completion = Box<dyn FnOnce(Result<Outcome, CommitError>) + Send>;

/// What one committed batch cost, as told to a [`CommitObserver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchReport {
    pub commands: usize,
    /// The size of the RocksDB write batch (what went into the WAL).
    pub size_bytes: u64,
    pub timings: CommitTimings,
    /// [`StateMachine::applied_index`] after the batch.
    pub applied_index: u64,
}

/// Told about every batch that became durable, on the committer thread,
/// before the batch's completions run. Must be quick and must not block.
pub trait CommitObserver: Send + Sync {
    fn batch_committed(&self, report: &BatchReport);
}

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

/// Counters of the committer's work, readable from any thread.
#[derive(Debug, Default)]
pub struct CommitStats {
    pub batches_total: AtomicU64,
    pub commands_total: AtomicU64,
    pub bytes_total: AtomicU64,
    pub sync_micros_total: AtomicU64,
    pub last_sync_micros: AtomicU64,
    /// [`StateMachine::applied_index`] after the last durable batch.
    pub applied_index: AtomicU64,
}

struct Pending {
    command: Command,
    urgency: Urgency,
    queued_at: Instant,
    done: Completion,
}

enum Message {
    Command(Pending),
    Shutdown,
}

pub struct GroupCommitter {
    sender: mpsc::Sender<Message>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<CommitStats>,
    failure: Arc<Mutex<Option<StorageError>>>,
}

impl GroupCommitter {
    pub fn start(store: Arc<Store>, state: StateMachine, options: CommitOptions) -> Self {
        let (sender, receiver) = mpsc::channel();
        let stats = Arc::new(CommitStats::default());
        let failure = Arc::new(Mutex::new(None));
        stats
            .applied_index
            .store(state.applied_index(), Ordering::Relaxed);
        let mut worker = Worker {
            failure: failure.clone(),
            store,
            state,
            options,
            receiver,
            queue: VecDeque::new(),
            poisoned: None,
            shutting_down: false,
            stats: stats.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || worker.run())
            .expect("spawn group-commit thread");
        GroupCommitter {
            sender,
            thread: Mutex::new(Some(thread)),
            stats,
            failure,
        }
    }

    /// The write or fsync failure that stopped all writes, if any.
    pub fn failure(&self) -> Option<StorageError> {
        self.failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Queues a command; `done` is called once it is durable or refused.
    pub fn submit(&self, command: Command, urgency: Urgency, done: Completion) {
        let pending = Pending {
            command,
            urgency,
            queued_at: Instant::now(),
            done,
        };
        if let Err(mpsc::SendError(Message::Command(pending))) =
            self.sender.send(Message::Command(pending))
        {
            (pending.done)(Err(CommitError::Closed));
        }
    }

    pub fn stats(&self) -> &Arc<CommitStats> {
        &self.stats
    }

    /// Commits everything queued so far, then stops the thread. Commands
    /// submitted afterwards are answered with [`CommitError::Closed`].
    pub fn shutdown(&self) {
        let _ = self.sender.send(Message::Shutdown);
        let handle = self.thread.lock().expect("committer lock").take();
        // A completion may drop the last owner of the committer on the
        // committer's own thread: it then stops after the current batch,
        // and must not wait for itself.
        if let Some(handle) = handle.filter(|h| h.thread().id() != std::thread::current().id()) {
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
    receiver: mpsc::Receiver<Message>,
    queue: VecDeque<Pending>,
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
                    Ok(message) => self.take(message),
                    Err(_) => return,
                }
            }
            self.drain();
            self.wait_if_lazy();
            self.commit_next_batch();
        }
    }

    fn take(&mut self, message: Message) {
        match message {
            Message::Command(pending) => self.queue.push_back(pending),
            Message::Shutdown => self.shutting_down = true,
        }
    }

    fn drain(&mut self) {
        while let Ok(message) = self.receiver.try_recv() {
            self.take(message);
        }
    }

    /// Holds a batch of only lazy commands until the oldest is
    /// `lazy_interval` old or an urgent command arrives.
    fn wait_if_lazy(&mut self) {
        while !self.shutting_down && self.queue.iter().all(|p| p.urgency == Urgency::Lazy) {
            let Some(oldest) = self.queue.front() else {
                return;
            };
            let deadline = oldest.queued_at + self.options.lazy_interval;
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            match self.receiver.recv_timeout(left) {
                Ok(message) => self.take(message),
                Err(RecvTimeoutError::Timeout) => return,
                Err(RecvTimeoutError::Disconnected) => self.shutting_down = true,
            }
        }
    }

    fn next_batch(&mut self) -> Vec<Pending> {
        let mut items = Vec::new();
        let mut bytes = 0;
        while let Some(pending) = self.queue.front() {
            let weight = pending.command.weight_bytes();
            let full = items.len() >= self.options.max_batch_commands
                || (bytes + weight > self.options.max_batch_bytes && !items.is_empty());
            if full {
                break;
            }
            bytes += weight;
            items.push(self.queue.pop_front().expect("front exists"));
        }
        items
    }

    fn commit_next_batch(&mut self) {
        let items = self.next_batch();
        if items.is_empty() {
            return;
        }
        if let Some(error) = &self.poisoned {
            let error =
                StorageError::Sync(format!("storage failed earlier, writes refused: {error}"));
            for pending in items {
                (pending.done)(Err(CommitError::Storage(error.clone())));
            }
            return;
        }
        let mut batch = self.store.batch();
        let results: Vec<_> = items
            .iter()
            .map(|p| self.state.apply(&p.command, &mut batch))
            .collect();
        self.state.flush_dirty(&mut batch);
        let size_bytes = batch.size_bytes() as u64;
        debug_assert!(!batch.is_empty(), "every batch writes the applied index");
        match self.store.commit(batch) {
            Ok(timings) => {
                self.record(&BatchReport {
                    commands: items.len(),
                    size_bytes,
                    timings,
                    applied_index: self.state.applied_index(),
                });
                for (pending, result) in items.into_iter().zip(results) {
                    (pending.done)(result.map_err(CommitError::from));
                }
            }
            Err(error) => {
                tracing::error!(%error, "commit failed; refusing all further writes");
                self.poisoned = Some(error.clone());
                *self
                    .failure
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(error.clone());
                for pending in items {
                    (pending.done)(Err(CommitError::Storage(error.clone())));
                }
            }
        }
    }

    fn record(&self, report: &BatchReport) {
        let micros = report.timings.sync.as_micros() as u64;
        self.stats.batches_total.fetch_add(1, Ordering::Relaxed);
        self.stats
            .commands_total
            .fetch_add(report.commands as u64, Ordering::Relaxed);
        self.stats
            .bytes_total
            .fetch_add(report.size_bytes, Ordering::Relaxed);
        self.stats
            .sync_micros_total
            .fetch_add(micros, Ordering::Relaxed);
        self.stats.last_sync_micros.store(micros, Ordering::Relaxed);
        self.stats
            .applied_index
            .store(report.applied_index, Ordering::Relaxed);
        if let Some(observer) = &self.options.observer {
            observer.batch_committed(report);
        }
    }
}
