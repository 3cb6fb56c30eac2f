//! The group committer: nothing is reported done before its fsync returns,
//! a failed fsync is never reported as success and poisons every later write,
//! and concurrent commands share batches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ledgerq_storage::{
    AppliedEntry, ApplyError, Command, CommandLog, CommitError, CommitOptions, GroupCommitter,
    LogEvent, LogEvents, Outcome, StoreOptions, SyncGate, Ticket, Urgency,
};

type Reply = Result<Outcome, CommitError>;

/// A committer and its event stream, read the way the broker reads it:
/// answers are matched to tickets, every applied entry is kept in order.
struct Log {
    _dir: tempfile::TempDir,
    committer: GroupCommitter,
    events: LogEvents,
    next_ticket: Ticket,
    answers: HashMap<Ticket, Reply>,
    applied: Vec<AppliedEntry>,
}

fn start(gate: Option<Arc<SyncGate>>) -> Log {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path());
    options.sync_hook = gate.map(|g| g as _);
    let (store, state) = ledgerq_storage::open(options).unwrap();
    let (committer, events) =
        GroupCommitter::start(Arc::new(store), state, CommitOptions::default());
    Log {
        _dir: dir,
        committer,
        events,
        next_ticket: 1,
        answers: HashMap::new(),
        applied: Vec::new(),
    }
}

impl Log {
    fn submit(&mut self, command: Command) -> Ticket {
        self.propose(command, Urgency::Now)
    }

    fn propose(&mut self, command: Command, urgency: Urgency) -> Ticket {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.committer.propose(command, urgency, ticket);
        ticket
    }

    fn take(&mut self, event: LogEvent) {
        let (ticket, reply) = match event {
            LogEvent::Applied(entry) => {
                let reply = entry.outcome.clone().map_err(CommitError::Rejected);
                let ticket = entry.ticket.expect("every command is proposed here");
                self.applied.push(entry);
                (ticket, reply)
            }
            LogEvent::Refused { ticket, error } => (ticket, Err(error)),
            other => panic!("the group committer sent a redundancy-mode event: {other:?}"),
        };
        let earlier = self.answers.insert(ticket, reply);
        assert!(earlier.is_none(), "ticket {ticket} answered twice");
    }

    /// The answer of `ticket`, waiting for it.
    fn answer(&mut self, ticket: Ticket) -> Reply {
        loop {
            if let Some(reply) = self.answers.remove(&ticket) {
                return reply;
            }
            let event = self
                .events
                .recv_timeout(Duration::from_secs(10))
                .expect("an answer within 10 s");
            self.take(event);
        }
    }

    /// Whether `ticket` is answered by now, without waiting.
    fn answered(&mut self, ticket: Ticket) -> bool {
        while let Ok(event) = self.events.try_recv() {
            self.take(event);
        }
        self.answers.contains_key(&ticket)
    }
}

fn publish(topic: u64) -> Command {
    Command::Publish {
        topic,
        timestamp_ns: 1,
        deliver_at_ms: 0,
        bodies: vec![Bytes::from_static(b"payload")],
        dedup: None,
    }
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn create_topic(log: &mut Log) -> u64 {
    let ticket = log.submit(Command::CreateTopic { name: "t".into() });
    match log.answer(ticket).unwrap() {
        Outcome::TopicCreated { topic, .. } => topic,
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_answer_before_the_sync_returns() {
    let gate = SyncGate::new();
    let mut log = start(Some(gate.clone()));
    let topic = create_topic(&mut log);
    gate.hold();
    let first = log.submit(publish(topic));
    wait_until("the sync to be held", || gate.waiting() == 1);
    // The batch is written and its sync is blocked: no answer may exist yet.
    assert!(!log.answered(first));
    // Commands arriving meanwhile queue up for the next batch.
    let later: Vec<_> = (0..20).map(|_| log.submit(publish(topic))).collect();
    assert!(later.iter().all(|&t| !log.answered(t)));
    gate.release();
    assert!(matches!(
        log.answer(first),
        Ok(Outcome::Published {
            first_offset: 0,
            ..
        })
    ));
    for ticket in later {
        assert!(log.answer(ticket).is_ok());
    }
    let batches = log
        .committer
        .stats()
        .batches_total
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        batches < 23,
        "20 waiting publishes shared batches ({batches} batches)"
    );
}

#[test]
fn applied_entries_arrive_in_order_with_consecutive_indexes() {
    let mut log = start(None);
    let topic = create_topic(&mut log);
    let tickets: Vec<_> = (0..50).map(|_| log.submit(publish(topic))).collect();
    let refused = log.submit(Command::Finish {
        channel: 999,
        offsets: vec![1],
    });
    for &ticket in &tickets {
        log.answer(ticket).unwrap();
    }
    assert_eq!(
        log.answer(refused),
        Err(CommitError::Rejected(ApplyError::UnknownChannel))
    );
    let indexes: Vec<u64> = log.applied.iter().map(|e| e.index).collect();
    assert_eq!(indexes, (1..=52).collect::<Vec<_>>());
    let order: Vec<Ticket> = log.applied.iter().map(|e| e.ticket.unwrap()).collect();
    let mut proposed = vec![1];
    proposed.extend(&tickets);
    proposed.push(refused);
    assert_eq!(order, proposed, "applied in the order proposed");
    for (entry, offset) in log.applied[1..51].iter().zip(0..) {
        assert!(matches!(entry.command, Command::Publish { .. }));
        assert!(matches!(
            entry.outcome,
            Ok(Outcome::Published { first_offset, .. }) if first_offset == offset
        ));
    }
}

#[test]
fn a_failed_sync_is_never_success_and_refuses_all_later_writes() {
    let gate = SyncGate::new();
    let mut log = start(Some(gate.clone()));
    let topic = create_topic(&mut log);
    gate.fail("injected EIO");
    let ticket = log.submit(publish(topic));
    match log.answer(ticket) {
        Err(CommitError::Storage(error)) => assert!(error.to_string().contains("injected EIO")),
        other => panic!("expected a storage error, got {other:?}"),
    }
    let ticket = log.submit(publish(topic));
    match log.answer(ticket) {
        Err(CommitError::Storage(error)) => assert!(error.to_string().contains("refused")),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(log.committer.failure().is_some());
    assert_eq!(log.applied.len(), 1, "only the topic was ever applied");
}

#[test]
fn after_shutdown_proposals_are_answered_closed() {
    let mut log = start(None);
    let topic = create_topic(&mut log);
    let queued = log.submit(publish(topic));
    log.committer.shutdown();
    assert!(
        log.answer(queued).is_ok(),
        "queued work is committed before stopping"
    );
    let late = log.submit(publish(topic));
    assert_eq!(log.answer(late), Err(CommitError::Closed));
}

#[test]
fn lazy_commands_wait_at_most_the_interval() {
    let mut log = start(None);
    let topic = create_topic(&mut log);
    let started = Instant::now();
    let ticket = log.propose(publish(topic), Urgency::Lazy);
    assert!(log.answer(ticket).is_ok());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(100),
        "a lone lazy command waits for company ({waited:?})"
    );
}
