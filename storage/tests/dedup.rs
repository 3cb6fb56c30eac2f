//! Publish de-duplication on a real store: a repeated key stores nothing and
//! answers what the first publish stored; keys are per topic; the window
//! expires by the commands' own times and is bounded by a count, oldest
//! first, with both evictions counted; a malformed key is refused; and the
//! whole window, counters included, survives reopening the store.

use bytes::Bytes;
use ledgerq_storage::{
    ApplyError, Command, Dedup, DedupEvictions, Outcome, StateMachine, Store, StoreOptions,
};

const MS: i64 = 1_000_000;

struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
    state: StateMachine,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (store, state) = ledgerq_storage::open(StoreOptions::new(dir.path())).unwrap();
        Fixture { dir, store, state }
    }

    fn reopen(self) -> Self {
        let Fixture { dir, store, state } = self;
        drop(store);
        let (store, recovered) = ledgerq_storage::open(StoreOptions::new(dir.path())).unwrap();
        assert_eq!(recovered, state, "the window is recovered exactly");
        Fixture {
            dir,
            store,
            state: recovered,
        }
    }

    fn apply(&mut self, command: Command) -> Result<Outcome, ApplyError> {
        let mut batch = self.store.batch();
        let outcome = self.state.apply(&command, &mut batch);
        self.state.flush_dirty(&mut batch);
        self.store.commit(batch).unwrap();
        self.state.check_invariants();
        outcome
    }

    fn topic(&mut self, name: &str) -> u64 {
        match self.apply(Command::CreateTopic { name: name.into() }) {
            Ok(Outcome::TopicCreated { topic, .. }) => topic,
            other => panic!("{other:?}"),
        }
    }

    fn log_entries(&self) -> usize {
        self.store
            .dump()
            .into_iter()
            .filter(|(cf, _, _)| *cf == "log")
            .count()
    }
}

fn publish(topic: u64, at_ms: i64, count: u8, key: Option<&str>, max_keys: u64) -> Command {
    Command::Publish {
        topic,
        timestamp_ns: at_ms * MS,
        deliver_at_ms: 0,
        bodies: (0..count).map(|i| Bytes::from(vec![i; 3])).collect(),
        dedup: key.map(|key| Dedup {
            key: Bytes::copy_from_slice(key.as_bytes()),
            window_ms: 1_000,
            max_keys,
        }),
    }
}

#[test]
fn a_repeated_key_stores_nothing_and_repeats_the_first_answer() {
    let mut f = Fixture::new();
    let topic = f.topic("orders");
    f.apply(publish(topic, 0, 1, None, 10)).unwrap();
    let first = f.apply(publish(topic, 10, 3, Some("k"), 10)).unwrap();
    assert!(matches!(
        first,
        Outcome::Published {
            first_offset: 1,
            count: 3,
            ..
        }
    ));
    let again = f.apply(publish(topic, 20, 5, Some("k"), 10)).unwrap();
    assert_eq!(
        again,
        Outcome::Duplicate {
            topic,
            first_offset: 1,
            count: 3
        }
    );
    assert_eq!(f.log_entries(), 4);
    assert_eq!(f.state.topic(topic).unwrap().meta.next_offset, 4);

    // Keys are per topic; no key means no de-duplication.
    let other = f.topic("billing");
    let elsewhere = f.apply(publish(other, 30, 1, Some("k"), 10)).unwrap();
    assert!(matches!(elsewhere, Outcome::Published { .. }));
    f.apply(publish(topic, 40, 1, None, 10)).unwrap();
    f.apply(publish(topic, 40, 1, None, 10)).unwrap();
    assert_eq!(f.log_entries(), 7);
    assert_eq!(f.state.dedup().len(), 2);

    // After a restart the key is still known.
    let mut f = f.reopen();
    let after = f.apply(publish(topic, 50, 1, Some("k"), 10)).unwrap();
    assert!(matches!(
        after,
        Outcome::Duplicate {
            first_offset: 1,
            ..
        }
    ));
    assert_eq!(f.log_entries(), 7);
}

#[test]
fn the_window_expires_by_the_commands_times() {
    let mut f = Fixture::new();
    let topic = f.topic("t");
    f.apply(publish(topic, 0, 1, Some("a"), 10)).unwrap();
    f.apply(publish(topic, 500, 1, Some("b"), 10)).unwrap();
    // 999 ms after "a": still a duplicate.
    let dup = f.apply(publish(topic, 999, 1, Some("a"), 10)).unwrap();
    assert!(matches!(dup, Outcome::Duplicate { .. }));
    // 1000 ms after "a": it expired, so this publish stores and records it
    // again; "b" (500 ms old) stays.
    let fresh = f.apply(publish(topic, 1_000, 1, Some("a"), 10)).unwrap();
    assert!(matches!(
        fresh,
        Outcome::Published {
            first_offset: 2,
            ..
        }
    ));
    assert_eq!(
        f.state.dedup().evictions(),
        DedupEvictions {
            expired: 1,
            over_limit: 0
        }
    );
    let dup = f.apply(publish(topic, 1_400, 1, Some("b"), 10)).unwrap();
    assert!(matches!(
        dup,
        Outcome::Duplicate {
            first_offset: 1,
            ..
        }
    ));
    let f = f.reopen();
    assert_eq!(f.state.dedup().evictions().expired, 1);
}

#[test]
fn the_count_limit_evicts_the_oldest_keys_first() {
    let mut f = Fixture::new();
    let topic = f.topic("t");
    for (at, key) in [(1, "a"), (2, "b"), (3, "c")] {
        f.apply(publish(topic, at, 1, Some(key), 2)).unwrap();
    }
    assert_eq!(f.state.dedup().len(), 2);
    assert_eq!(f.state.dedup().evictions().over_limit, 1);
    // "a" was evicted: publishing it again stores it (and evicts "b").
    let again = f.apply(publish(topic, 4, 1, Some("a"), 2)).unwrap();
    assert!(matches!(
        again,
        Outcome::Published {
            first_offset: 3,
            ..
        }
    ));
    let dup = f.apply(publish(topic, 5, 1, Some("c"), 2)).unwrap();
    assert!(matches!(
        dup,
        Outcome::Duplicate {
            first_offset: 2,
            ..
        }
    ));
    let mut f = f.reopen();
    assert_eq!(f.state.dedup().evictions().over_limit, 2);
    let b = f.apply(publish(topic, 6, 1, Some("b"), 2)).unwrap();
    assert!(matches!(b, Outcome::Published { .. }), "b was evicted");
}

#[test]
fn deleting_a_topic_forgets_its_keys_on_disk() {
    let mut f = Fixture::new();
    let topic = f.topic("t");
    f.apply(publish(topic, 1, 1, Some("a"), 10)).unwrap();
    f.apply(Command::DeleteTopic { topic }).unwrap();
    assert!(f.state.dedup().is_empty());
    let dedup_keys = f
        .store
        .dump()
        .into_iter()
        .filter(|(cf, key, _)| *cf == "meta" && key.first() == Some(&b'd'))
        .count();
    assert_eq!(dedup_keys, 0);
    f.reopen();
}

#[test]
fn malformed_keys_and_windows_are_refused_without_a_change() {
    let mut f = Fixture::new();
    let topic = f.topic("t");
    let long = "x".repeat(257);
    for key in ["", long.as_str()] {
        let result = f.apply(publish(topic, 1, 1, Some(key), 10));
        assert_eq!(result, Err(ApplyError::InvalidDedup));
    }
    assert_eq!(
        f.apply(publish(topic, 1, 1, Some("k"), 0)),
        Err(ApplyError::InvalidDedup)
    );
    let fits = "y".repeat(256);
    assert!(f.apply(publish(topic, 1, 1, Some(&fits), 10)).is_ok());
    assert_eq!(f.log_entries(), 1);
    assert_eq!(f.state.dedup().len(), 1);
}
