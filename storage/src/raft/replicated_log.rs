//! [`ReplicatedLog`]: the redundancy-mode [`CommandLog`]. Commands become
//! entries of the group's raft log; the state machine
//! ([`ReplicatedState`](super::ReplicatedState)) applies them and reports
//! on the node's event stream, exactly as the group committer does.
//!
//! One proposer task per node gathers queued commands (all connections,
//! all topics) into one [`Proposal`] — one raft entry, one fsync on each
//! member — and submits it: through `Raft::client_write` when this node
//! leads, else to the leader through the [`Forwarder`] (gRPC). While one
//! entry commits, the next fills. A proposal is answered by its entry
//! being applied here (the tickets ride in the entry); if no leader
//! commits it within `forward_timeout`, its tickets are refused with
//! [`CommitError::NoLeader`] — never answered as a success.
//!
//! Dispatch decisions (Deliver, Finish, Requeue) are stamped with the term
//! this node leads in and are never forwarded: on a node that does not
//! lead they are refused with [`CommitError::NotLeader`].
//!
//! A second task watches openraft's metrics and reports
//! [`LogEvent::Leadership`] whenever the role or the term changes.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use tokio::sync::mpsc as tokio_mpsc;
use tokio::time::Instant;

use super::{is_dispatch_command, LogId, Member, NodeId, Origin, Proposal, Raft};
use crate::command::{Command, Urgency};
use crate::error::{CommitError, StorageError};
use crate::log::{lock, CommandLog, CommitStats, LogEvent, Ticket};
use crate::proposals::{Pending, ProposalQueue};

/// Why a forwarded proposal was not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// The target does not lead; it may know who does.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// No answer (connection refused, timed out, cut).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The leader answered with an error it will not get over.
    #[error("refused: {0}")]
    Refused(String),
}

pub type ForwardFuture = Pin<Box<dyn Future<Output = Result<LogId, ForwardError>> + Send>>;

/// How a follower's proposal reaches the leader (the server's gRPC client).
pub trait Forwarder: Send + Sync + 'static {
    /// Appends `proposal` on `leader`; resolves once it is committed there,
    /// with the entry's log id.
    fn forward(&self, leader: NodeId, member: Member, proposal: Proposal) -> ForwardFuture;
}

#[derive(Debug, Clone)]
pub struct ReplicatedLogOptions {
    /// How long a proposal may wait for a leader to commit it.
    pub forward_timeout: Duration,
    /// How long a batch holding only lazy commands may wait for company.
    pub lazy_interval: Duration,
    pub max_batch_commands: usize,
    pub max_batch_bytes: usize,
}

pub struct ReplicatedLog {
    raft: Raft,
    input: Mutex<Option<tokio_mpsc::UnboundedSender<Pending>>>,
    events: mpsc::Sender<LogEvent>,
    stats: Arc<CommitStats>,
    failure: Arc<Mutex<Option<StorageError>>>,
    runtime: tokio::runtime::Handle,
    proposer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ReplicatedLog {
    /// Starts the proposer and the leadership watcher on `runtime`.
    /// `events` is the sender of the stream the state machine reports on.
    pub fn start(
        raft: Raft,
        origin: Origin,
        forwarder: Arc<dyn Forwarder>,
        events: mpsc::Sender<LogEvent>,
        stats: Arc<CommitStats>,
        options: ReplicatedLogOptions,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let (input, queue) = tokio_mpsc::unbounded_channel();
        let failure = Arc::new(Mutex::new(None));
        let proposer = Proposer {
            raft: raft.clone(),
            origin,
            forwarder,
            events: events.clone(),
            options,
            queue,
            pending: ProposalQueue::default(),
            closed: false,
            failure: failure.clone(),
            in_flight: VecDeque::new(),
        };
        let proposer = runtime.spawn(proposer.run());
        runtime.spawn(watch_leadership(raft.clone(), events.clone()));
        ReplicatedLog {
            raft,
            input: Mutex::new(Some(input)),
            events,
            stats,
            failure,
            runtime,
            proposer: Mutex::new(Some(proposer)),
        }
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    fn refuse(&self, ticket: Ticket, error: CommitError) {
        let _ = self.events.send(LogEvent::Refused { ticket, error });
    }
}

/// The term this node leads in, if it leads.
fn leading_term(raft: &Raft) -> Option<u64> {
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    (metrics.state == ServerState::Leader).then_some(metrics.current_term)
}

impl CommandLog for ReplicatedLog {
    fn propose(&self, command: Command, urgency: Urgency, ticket: Ticket) {
        if is_dispatch_command(&command) && leading_term(&self.raft).is_none() {
            return self.refuse(ticket, CommitError::NotLeader);
        }
        let pending = Pending::new(command, urgency, ticket);
        let input = lock(&self.input);
        let refused = match input.as_ref() {
            Some(sender) => sender.send(pending).err().map(|e| e.0.ticket),
            None => Some(ticket),
        };
        drop(input);
        if let Some(ticket) = refused {
            self.refuse(ticket, CommitError::Closed);
        }
    }

    fn failure(&self) -> Option<StorageError> {
        lock(&self.failure).clone()
    }

    fn stats(&self) -> &Arc<CommitStats> {
        &self.stats
    }

    /// Submits what is queued (each proposal still bounded by the forward
    /// timeout), then stops the raft node.
    fn shutdown(&self) {
        lock(&self.input).take();
        let proposer = lock(&self.proposer).take();
        let raft = self.raft.clone();
        let (done, finished) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            if let Some(proposer) = proposer {
                let _ = proposer.await;
            }
            let _ = raft.shutdown().await;
            let _ = done.send(());
        });
        let _ = finished.recv();
    }
}

async fn watch_leadership(raft: Raft, events: mpsc::Sender<LogEvent>) {
    let mut metrics = raft.metrics();
    let mut last = None;
    loop {
        let now = {
            let m = metrics.borrow_and_update();
            (m.current_term, m.state == ServerState::Leader)
        };
        if last != Some(now) {
            last = Some(now);
            let (term, leading) = now;
            tracing::info!(term, leading, "leadership");
            if events.send(LogEvent::Leadership { term, leading }).is_err() {
                return;
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

struct Proposer {
    raft: Raft,
    origin: Origin,
    forwarder: Arc<dyn Forwarder>,
    events: mpsc::Sender<LogEvent>,
    options: ReplicatedLogOptions,
    queue: tokio_mpsc::UnboundedReceiver<Pending>,
    pending: ProposalQueue,
    closed: bool,
    failure: Arc<Mutex<Option<StorageError>>>,
    /// Entries appended here (this node leads) whose commit is awaited,
    /// oldest first: openraft appends them in submission order, so several
    /// may be in flight without reordering anything.
    in_flight: VecDeque<Flight>,
}

/// How many entries the leader's proposer keeps in flight at once.
const MAX_IN_FLIGHT: usize = 4;

/// One entry appended on this (leading) node, awaiting its commit.
struct Flight {
    commands: Vec<(Ticket, Command)>,
    deadline: Instant,
    /// `Ok(true)`: committed (and applied here); `Ok(false)`: this node
    /// stopped leading before it committed; `Err`: raft refused it.
    outcome: tokio::sync::oneshot::Receiver<Result<bool, CommitError>>,
}

impl Proposer {
    async fn run(mut self) {
        loop {
            if self.pending.is_empty() {
                if self.in_flight.is_empty() {
                    match self.queue.recv().await {
                        Some(pending) => self.pending.push(pending),
                        None => return,
                    }
                } else if self.closed {
                    self.settle_oldest().await;
                    continue;
                } else {
                    let oldest = &mut self.in_flight.front_mut().expect("not empty").outcome;
                    tokio::select! {
                        biased;
                        input = self.queue.recv() => match input {
                            Some(pending) => self.pending.push(pending),
                            None => self.closed = true,
                        },
                        outcome = oldest => {
                            let flight = self.in_flight.pop_front().expect("not empty");
                            self.settle(flight, outcome).await;
                        }
                    }
                    continue;
                }
            }
            self.drain();
            self.wait_if_lazy().await;
            let batch = self.next_batch();
            if !self.append_here(&batch) {
                while !self.in_flight.is_empty() {
                    self.settle_oldest().await;
                }
                self.submit(batch).await;
                continue;
            }
            if self.in_flight.len() >= MAX_IN_FLIGHT {
                self.settle_oldest().await;
            }
            self.append(batch).await;
        }
    }

    /// Whether this node leads, so `batch` can be appended here and
    /// pipelined (dispatch decisions included: they carry this term).
    fn append_here(&self, batch: &[(Ticket, Command)]) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        !batch.is_empty()
            && metrics.state == ServerState::Leader
            && metrics.current_leader == Some(self.origin.node)
    }

    /// Appends `commands` as one entry on this leading node without
    /// waiting for its commit.
    async fn append(&mut self, commands: Vec<(Ticket, Command)>) {
        let term = self.raft.metrics().borrow().current_term;
        let has_dispatch = commands.iter().any(|(_, c)| is_dispatch_command(c));
        let proposal = Proposal {
            origin: self.origin,
            dispatch_term: if has_dispatch { term } else { 0 },
            commands: commands.clone(),
        };
        let deadline = Instant::now() + self.options.forward_timeout;
        let receiver = match self.raft.client_write_ff(proposal).await {
            Ok(receiver) => receiver,
            Err(fatal) => {
                let error = StorageError::Rocks(format!("raft stopped: {fatal}"));
                *lock(&self.failure) = Some(error.clone());
                self.refuse(
                    commands.iter().map(|(t, _)| *t),
                    &CommitError::Storage(error),
                );
                return;
            }
        };
        let (sender, outcome) = tokio::sync::oneshot::channel();
        // Resolves by the deadline, whatever raft does: a leader cut off
        // from its majority never commits, and its proposals are refused.
        tokio::spawn(async move {
            let result = match tokio::time::timeout_at(deadline, receiver).await {
                Err(_) => Err(CommitError::NoLeader),
                Ok(Ok(Ok(_))) => Ok(true),
                Ok(Ok(Err(ClientWriteError::ForwardToLeader(_))) | Err(_)) => Ok(false),
                Ok(Ok(Err(error))) => {
                    Err(CommitError::Storage(StorageError::Rocks(error.to_string())))
                }
            };
            let _ = sender.send(result);
        });
        self.in_flight.push_back(Flight {
            commands,
            deadline,
            outcome,
        });
    }

    async fn settle_oldest(&mut self) {
        let Some(mut flight) = self.in_flight.pop_front() else {
            return;
        };
        let outcome = (&mut flight.outcome).await;
        self.settle(flight, outcome).await;
    }

    /// Answers a flight's commit: committed entries were answered by the
    /// state machine already; an entry this node could not commit because
    /// it stopped leading is proposed again through the leader (dispatch
    /// decisions are refused then); one that missed its deadline is refused.
    async fn settle(
        &mut self,
        flight: Flight,
        outcome: Result<Result<bool, CommitError>, tokio::sync::oneshot::error::RecvError>,
    ) {
        let tickets = flight.commands.iter().map(|(t, _)| *t);
        match outcome {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) | Err(_) if Instant::now() < flight.deadline => {
                self.submit(flight.commands).await;
            }
            Ok(Ok(false)) | Err(_) => self.refuse(tickets, &CommitError::NoLeader),
            Ok(Err(error)) => self.refuse(tickets, &error),
        }
    }

    fn drain(&mut self) {
        while let Ok(pending) = self.queue.try_recv() {
            self.pending.push(pending);
        }
    }

    /// Holds a batch of only lazy commands until the oldest is
    /// `lazy_interval` old or an urgent command arrives.
    async fn wait_if_lazy(&mut self) {
        while !self.closed {
            let Some(deadline) = self.pending.lazy_deadline(self.options.lazy_interval) else {
                return;
            };
            let deadline = Instant::from_std(deadline);
            match tokio::time::timeout_at(deadline, self.queue.recv()).await {
                Ok(Some(pending)) => self.pending.push(pending),
                Ok(None) => self.closed = true,
                Err(_) => return,
            }
        }
    }

    fn next_batch(&mut self) -> Vec<(Ticket, Command)> {
        let options = &self.options;
        self.pending
            .next_batch(options.max_batch_commands, options.max_batch_bytes)
            .into_iter()
            .map(|pending| (pending.ticket, pending.command))
            .collect()
    }

    fn refuse(&self, tickets: impl IntoIterator<Item = Ticket>, error: &CommitError) {
        for ticket in tickets {
            let _ = self.events.send(LogEvent::Refused {
                ticket,
                error: error.clone(),
            });
        }
    }

    /// Gets `commands` committed by the group's leader within the forward
    /// timeout, or refuses them.
    async fn submit(&mut self, mut commands: Vec<(Ticket, Command)>) {
        let deadline = Instant::now() + self.options.forward_timeout;
        let mut metrics = self.raft.metrics();
        loop {
            let (leader, term, leading) = {
                let m = metrics.borrow_and_update();
                (
                    m.current_leader,
                    m.current_term,
                    m.state == ServerState::Leader,
                )
            };
            if !leading {
                self.refuse_dispatch_commands(&mut commands);
                if commands.is_empty() {
                    return;
                }
            }
            let has_dispatch = commands.iter().any(|(_, c)| is_dispatch_command(c));
            let proposal = Proposal {
                origin: self.origin,
                dispatch_term: if has_dispatch { term } else { 0 },
                commands: commands.clone(),
            };
            let attempt = match leader {
                Some(leader) if leading && leader == self.origin.node => {
                    self.write_locally(proposal, deadline).await
                }
                Some(leader) => self.forward(leader, proposal).await,
                None => Attempt::Retry,
            };
            match attempt {
                Attempt::Committed(log_id) => {
                    if !self.wait_applied(log_id, deadline).await {
                        self.refuse(commands.iter().map(|(t, _)| *t), &CommitError::NoLeader);
                    }
                    return;
                }
                Attempt::Failed(error) => {
                    self.refuse(commands.iter().map(|(t, _)| *t), &error);
                    return;
                }
                Attempt::Retry => {}
            }
            // Wait for the membership or leader to change, or a moment.
            let pause = tokio::time::sleep(Duration::from_millis(20));
            tokio::select! {
                _ = metrics.changed() => {}
                _ = pause => {}
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    commands = commands.len(),
                    "no leader committed a proposal in time"
                );
                self.refuse(commands.iter().map(|(t, _)| *t), &CommitError::NoLeader);
                return;
            }
        }
    }

    fn refuse_dispatch_commands(&self, commands: &mut Vec<(Ticket, Command)>) {
        let (dispatch, rest): (Vec<_>, Vec<_>) = std::mem::take(commands)
            .into_iter()
            .partition(|(_, c)| is_dispatch_command(c));
        self.refuse(
            dispatch.into_iter().map(|(t, _)| t),
            &CommitError::NotLeader,
        );
        *commands = rest;
    }

    /// Appends the proposal here (this node leads) and waits, until
    /// `deadline`, for it to commit: a leader cut off from its majority
    /// never commits, and its proposals are refused, never acknowledged.
    async fn write_locally(&self, proposal: Proposal, deadline: Instant) -> Attempt {
        let written = tokio::time::timeout_at(deadline, self.raft.client_write(proposal)).await;
        let Ok(written) = written else {
            return Attempt::Failed(CommitError::NoLeader);
        };
        match written {
            Ok(response) => Attempt::Committed(response.log_id),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Attempt::Retry,
            Err(RaftError::APIError(error)) => {
                Attempt::Failed(CommitError::Storage(StorageError::Rocks(error.to_string())))
            }
            Err(RaftError::Fatal(fatal)) => {
                let error = StorageError::Rocks(format!("raft stopped: {fatal}"));
                *lock(&self.failure) = Some(error.clone());
                Attempt::Failed(CommitError::Storage(error))
            }
        }
    }

    async fn forward(&self, leader: NodeId, proposal: Proposal) -> Attempt {
        let member = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            metrics
                .membership_config
                .membership()
                .get_node(&leader)
                .cloned()
        };
        let Some(member) = member else {
            return Attempt::Retry;
        };
        match self.forwarder.forward(leader, member, proposal).await {
            Ok(log_id) => Attempt::Committed(log_id),
            Err(ForwardError::NotLeader { .. } | ForwardError::Unreachable(_)) => Attempt::Retry,
            Err(ForwardError::Refused(reason)) => {
                Attempt::Failed(CommitError::Storage(StorageError::Rocks(reason)))
            }
        }
    }

    /// Waits until this node has applied `log_id` (its answers are then on
    /// the stream); false if the deadline passed first.
    async fn wait_applied(&self, log_id: LogId, deadline: Instant) -> bool {
        let mut metrics = self.raft.metrics();
        loop {
            if metrics
                .borrow_and_update()
                .last_applied
                .is_some_and(|a| a.index >= log_id.index)
            {
                return true;
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }
}

enum Attempt {
    Committed(LogId),
    Failed(CommitError),
    Retry,
}
