//! The state machine's NSQ-shaped rules, on a real RocksDB store: backlog to
//! the first channel, later channels at the head, the ack floor over
//! out-of-order finishes, log truncation, pause.

use bytes::Bytes;
use ledgerq_storage::{Command, Outcome, StateMachine, Store, StoreOptions, WriteSink};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    state: StateMachine,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut options = StoreOptions::new(dir.path());
        options.truncate_step = 4;
        let (store, state) = ledgerq_storage::open(options).unwrap();
        Fixture {
            _dir: dir,
            store,
            state,
        }
    }

    fn apply(&mut self, command: Command) -> Outcome {
        let mut batch = self.store.batch();
        let outcome = self
            .state
            .apply(&command, &mut batch)
            .expect("command applies");
        self.state.flush_dirty(&mut batch);
        self.store.commit(batch).unwrap();
        self.state.check_invariants();
        outcome
    }

    fn topic(&mut self, name: &str) -> u64 {
        match self.apply(Command::CreateTopic { name: name.into() }) {
            Outcome::TopicCreated { topic, .. } => topic,
            other => panic!("{other:?}"),
        }
    }

    fn channel(&mut self, topic: u64, name: &str) -> (u64, u64) {
        let command = Command::CreateChannel {
            topic,
            name: name.into(),
            ephemeral: false,
        };
        match self.apply(command) {
            Outcome::ChannelCreated { channel, floor, .. } => (channel, floor),
            other => panic!("{other:?}"),
        }
    }

    fn publish(&mut self, topic: u64, count: usize) -> u64 {
        let bodies = (0..count).map(|i| Bytes::from(format!("m{i}"))).collect();
        let command = Command::Publish {
            topic,
            timestamp_ns: 1,
            deliver_at_ms: 0,
            bodies,
            dedup: None,
        };
        match self.apply(command) {
            Outcome::Published { first_offset, .. } => first_offset,
            other => panic!("{other:?}"),
        }
    }

    fn floor(&self, channel: u64) -> u64 {
        self.state.channel(channel).unwrap().meta.floor
    }
}

#[test]
fn first_channel_gets_the_backlog_later_channels_start_at_the_head() {
    let mut f = Fixture::new();
    let topic = f.topic("orders");
    f.publish(topic, 3);
    assert_eq!(
        f.state.topic(topic).unwrap().meta.handed_over,
        0,
        "no channel yet: messages wait in the topic"
    );
    let (_, first_floor) = f.channel(topic, "billing");
    assert_eq!(first_floor, 0);
    assert_eq!(f.state.topic(topic).unwrap().meta.handed_over, 3);
    let (_, second_floor) = f.channel(topic, "audit");
    assert_eq!(second_floor, 3);
    let (again, _) = f.channel(topic, "billing");
    assert_eq!(
        f.state.channels().filter(|c| c.id == again).count(),
        1,
        "create is idempotent"
    );
}

#[test]
fn paused_topic_holds_messages_until_unpaused() {
    let mut f = Fixture::new();
    let topic = f.topic("orders");
    f.channel(topic, "c");
    f.apply(Command::SetTopicPaused {
        topic,
        paused: true,
    });
    f.publish(topic, 2);
    assert_eq!(f.state.topic(topic).unwrap().meta.handed_over, 0);
    match f.apply(Command::SetTopicPaused {
        topic,
        paused: false,
    }) {
        Outcome::TopicPaused { handed_over, .. } => assert_eq!(handed_over, 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn floor_advances_over_out_of_order_finishes_and_the_log_is_truncated() {
    let mut f = Fixture::new();
    let topic = f.topic("orders");
    let (channel, _) = f.channel(topic, "c");
    f.publish(topic, 10);
    f.apply(Command::Deliver {
        channel,
        delivered_up_to: 10,
        redeliveries: vec![],
    });
    f.apply(Command::Finish {
        channel,
        offsets: vec![1, 2, 4],
    });
    assert_eq!(f.floor(channel), 0, "offset 0 is unfinished");
    assert_eq!(f.state.channel(channel).unwrap().records.len(), 3);
    f.apply(Command::Finish {
        channel,
        offsets: vec![0],
    });
    assert_eq!(f.floor(channel), 3);
    assert_eq!(
        f.state.channel(channel).unwrap().records.len(),
        1,
        "records below the floor are deleted"
    );
    f.apply(Command::Finish {
        channel,
        offsets: vec![3, 5, 6, 7],
    });
    assert_eq!(f.floor(channel), 8);
    let log_start = f.state.topic(topic).unwrap().meta.log_start;
    assert_eq!(
        log_start, 8,
        "step of 4 reached: the log below the floor is deleted"
    );
    let remaining: Vec<u64> = f
        .store
        .read_log(topic, 0, 100)
        .unwrap()
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    assert_eq!(remaining, vec![8, 9]);
}

#[test]
fn finishing_beyond_the_hand_over_point_is_refused_without_writing() {
    let mut f = Fixture::new();
    let topic = f.topic("orders");
    let (channel, _) = f.channel(topic, "c");
    f.publish(topic, 1);
    let before = f.store.dump();
    let mut batch = f.store.batch();
    let result = f.state.apply(
        &Command::Finish {
            channel,
            offsets: vec![5],
        },
        &mut batch,
    );
    assert!(result.is_err());
    assert!(batch.is_empty());
    assert_eq!(f.store.dump(), before);
}

#[test]
fn delete_topic_removes_log_channels_and_cursor_records() {
    let mut f = Fixture::new();
    let topic = f.topic("orders");
    let (channel, _) = f.channel(topic, "c");
    f.publish(topic, 3);
    f.apply(Command::Finish {
        channel,
        offsets: vec![2],
    });
    f.apply(Command::DeleteTopic { topic });
    assert!(f.state.topic(topic).is_none());
    assert!(f.state.channel(channel).is_none());
    let left: Vec<_> = f
        .store
        .dump()
        .into_iter()
        .filter(|(cf, _, _)| *cf != "meta")
        .collect();
    assert!(left.is_empty(), "log and cursor entries remain: {left:?}");
    let again = f.topic("orders");
    assert_ne!(again, topic, "ids are never reused");
}

#[test]
fn unknown_format_version_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(StoreOptions::new(dir.path())).unwrap();
        let mut batch = store.batch();
        batch.put_meta(b"F", &99u32.to_be_bytes());
        store.commit(batch).unwrap();
    }
    let error = Store::open(StoreOptions::new(dir.path()))
        .err()
        .expect("refused");
    assert_eq!(
        error.to_string(),
        "data directory has format version 99; this build reads version 1"
    );
}

#[test]
fn empty_channel_drops_its_backlog_and_records_but_not_other_channels() {
    let mut f = Fixture::new();
    let topic = f.topic("orders");
    let (a, _) = f.channel(topic, "a");
    let (b, _) = f.channel(topic, "b");
    f.publish(topic, 6);
    f.apply(Command::Deliver {
        channel: a,
        delivered_up_to: 3,
        redeliveries: vec![],
    });
    f.apply(Command::Finish {
        channel: a,
        offsets: vec![1],
    });
    f.apply(Command::Requeue {
        channel: a,
        offset: 2,
        attempts: 1,
        deliver_at_ms: 9_000,
    });
    let outcome = f.apply(Command::EmptyChannel { channel: a });
    assert_eq!(
        outcome,
        Outcome::ChannelEmptied {
            channel: a,
            floor: 6
        }
    );
    let meta = &f.state.channel(a).unwrap().meta;
    assert_eq!((meta.floor, meta.delivered_up_to), (6, 6));
    assert!(f.state.channel(a).unwrap().records.is_empty());
    assert!(
        !f.store.dump().iter().any(|(cf, _, _)| *cf == "cursor"),
        "cursor records remain"
    );
    // The other channel still has everything; the log is kept for it.
    assert_eq!(f.floor(b), 0);
    assert_eq!(f.state.topic(topic).unwrap().meta.log_start, 0);

    // A late FIN of an emptied message changes nothing.
    f.apply(Command::Finish {
        channel: a,
        offsets: vec![0],
    });
    assert_eq!(f.floor(a), 6);

    // Emptying the last holder lets the log be truncated.
    f.apply(Command::EmptyChannel { channel: b });
    assert_eq!(f.floor(b), 6);
    assert_eq!(f.state.topic(topic).unwrap().meta.log_start, 6);

    // New messages flow as before.
    assert_eq!(f.publish(topic, 2), 6);
    f.apply(Command::Finish {
        channel: a,
        offsets: vec![6, 7],
    });
    assert_eq!(f.floor(a), 8);

    let mut batch = f.store.batch();
    let refused = f
        .state
        .apply(&Command::EmptyChannel { channel: 999 }, &mut batch);
    assert_eq!(refused, Err(ledgerq_storage::ApplyError::UnknownChannel));
}

#[test]
fn an_emptied_channel_stays_empty_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let options = || {
        let mut options = StoreOptions::new(dir.path());
        options.truncate_step = 4;
        options
    };
    let expected = {
        let (store, state) = ledgerq_storage::open(options()).unwrap();
        let mut f = Fixture {
            _dir: tempfile::tempdir().unwrap(),
            store,
            state,
        };
        let topic = f.topic("orders");
        let (channel, _) = f.channel(topic, "c");
        f.publish(topic, 5);
        f.apply(Command::Requeue {
            channel,
            offset: 3,
            attempts: 2,
            deliver_at_ms: 9_000,
        });
        f.apply(Command::EmptyChannel { channel });
        f.state.clone()
    };
    let (_store, recovered) = ledgerq_storage::open(options()).unwrap();
    assert_eq!(recovered, expected);
    let channel = recovered.channels().next().unwrap();
    assert_eq!((channel.meta.floor, channel.records.len()), (5, 0));
}

#[test]
fn empty_topic_drops_only_what_no_channel_has_seen() {
    let mut f = Fixture::new();
    let topic = f.topic("orders");
    let (channel, _) = f.channel(topic, "c");
    f.publish(topic, 3);
    f.apply(Command::SetTopicPaused {
        topic,
        paused: true,
    });
    f.publish(topic, 4);
    let outcome = f.apply(Command::EmptyTopic { topic });
    assert_eq!(
        outcome,
        Outcome::TopicEmptied {
            topic,
            next_offset: 3,
            log_start: 0
        }
    );
    let log_keys = |f: &Fixture| {
        f.store
            .dump()
            .into_iter()
            .filter(|(cf, _, _)| *cf == "log")
            .count()
    };
    assert_eq!(log_keys(&f), 3, "the channel keeps what it was handed");
    f.apply(Command::SetTopicPaused {
        topic,
        paused: false,
    });
    assert_eq!(f.state.topic(topic).unwrap().meta.handed_over, 3);
    // The dropped offsets are given out again.
    assert_eq!(f.publish(topic, 2), 3);
    f.apply(Command::Finish {
        channel,
        offsets: vec![0, 1, 2, 3, 4],
    });
    assert_eq!(f.floor(channel), 5);
}

#[test]
fn empty_topic_without_channels_drops_the_whole_backlog() {
    let mut f = Fixture::new();
    let topic = f.topic("orders");
    f.publish(topic, 5);
    f.apply(Command::EmptyTopic { topic });
    let meta = &f.state.topic(topic).unwrap().meta;
    assert_eq!(
        (meta.next_offset, meta.handed_over, meta.log_start),
        (0, 0, 0)
    );
    assert!(!f.store.dump().iter().any(|(cf, _, _)| *cf == "log"));
    let (channel, floor) = f.channel(topic, "c");
    assert_eq!(floor, 0);
    assert_eq!(f.publish(topic, 1), 0);
    f.apply(Command::Finish {
        channel,
        offsets: vec![0],
    });
    assert_eq!(f.floor(channel), 1);

    let mut batch = f.store.batch();
    let refused = f
        .state
        .apply(&Command::EmptyTopic { topic: 999 }, &mut batch);
    assert_eq!(refused, Err(ledgerq_storage::ApplyError::UnknownTopic));
}
