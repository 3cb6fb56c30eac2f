//! The group committer: nothing is reported done before its fsync returns,
//! a failed fsync is never reported as success and poisons every later write,
//! and concurrent commands share batches.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ledgerq_storage::{
    Command, CommitError, CommitOptions, GroupCommitter, Outcome, Store, StoreOptions, SyncGate,
    Urgency,
};

type Reply = Result<Outcome, CommitError>;

fn start(gate: Option<Arc<SyncGate>>) -> (tempfile::TempDir, GroupCommitter) {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path());
    options.sync_hook = gate.map(|g| g as _);
    let (store, state) = Store::open(options).unwrap();
    let committer = GroupCommitter::start(Arc::new(store), state, CommitOptions::default());
    (dir, committer)
}

fn submit(committer: &GroupCommitter, command: Command) -> mpsc::Receiver<Reply> {
    let (sender, receiver) = mpsc::channel();
    committer.submit(
        command,
        Urgency::Now,
        Box::new(move |reply| {
            let _ = sender.send(reply);
        }),
    );
    receiver
}

fn publish(topic: u64) -> Command {
    Command::Publish {
        topic,
        timestamp_ns: 1,
        deliver_at_ms: 0,
        bodies: vec![Bytes::from_static(b"payload")],
    }
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn create_topic(committer: &GroupCommitter) -> u64 {
    let reply = submit(committer, Command::CreateTopic { name: "t".into() })
        .recv()
        .unwrap();
    match reply.unwrap() {
        Outcome::TopicCreated { topic, .. } => topic,
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_completion_before_the_sync_returns() {
    let gate = SyncGate::new();
    let (_dir, committer) = start(Some(gate.clone()));
    let topic = create_topic(&committer);
    gate.hold();
    let reply = submit(&committer, publish(topic));
    wait_until("the sync to be held", || gate.waiting() == 1);
    // The batch is written and its sync is blocked: no answer may exist yet.
    assert!(matches!(reply.try_recv(), Err(mpsc::TryRecvError::Empty)));
    // Commands arriving meanwhile queue up for the next batch.
    let later: Vec<_> = (0..20)
        .map(|_| submit(&committer, publish(topic)))
        .collect();
    assert!(later.iter().all(|r| r.try_recv().is_err()));
    gate.release();
    assert!(matches!(
        reply.recv().unwrap(),
        Ok(Outcome::Published {
            first_offset: 0,
            ..
        })
    ));
    for r in later {
        assert!(r.recv().unwrap().is_ok());
    }
    let stats = committer.stats();
    let batches = stats
        .batches_total
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        batches < 23,
        "20 waiting publishes shared batches ({batches} batches)"
    );
}

#[test]
fn a_failed_sync_is_never_success_and_refuses_all_later_writes() {
    let gate = SyncGate::new();
    let (_dir, committer) = start(Some(gate.clone()));
    let topic = create_topic(&committer);
    gate.fail("injected EIO");
    let reply = submit(&committer, publish(topic)).recv().unwrap();
    match reply {
        Err(CommitError::Storage(error)) => assert!(error.to_string().contains("injected EIO")),
        other => panic!("expected a storage error, got {other:?}"),
    }
    let later = submit(&committer, publish(topic)).recv().unwrap();
    match later {
        Err(CommitError::Storage(error)) => assert!(error.to_string().contains("refused")),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn after_shutdown_submissions_are_answered_closed() {
    let (_dir, committer) = start(None);
    let topic = create_topic(&committer);
    let queued = submit(&committer, publish(topic));
    committer.shutdown();
    assert!(
        queued.recv().unwrap().is_ok(),
        "queued work is committed before stopping"
    );
    assert_eq!(
        submit(&committer, publish(topic)).recv().unwrap(),
        Err(CommitError::Closed)
    );
}

#[test]
fn lazy_commands_wait_at_most_the_interval() {
    let (_dir, committer) = start(None);
    let topic = create_topic(&committer);
    let started = Instant::now();
    let (sender, receiver) = mpsc::channel();
    committer.submit(
        publish(topic),
        Urgency::Lazy,
        Box::new(move |reply| {
            let _ = sender.send(reply);
        }),
    );
    assert!(receiver.recv().unwrap().is_ok());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(100),
        "a lone lazy command waits for company ({waited:?})"
    );
}
