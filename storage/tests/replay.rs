//! One apply path: a random workload's commands, applied in random batches,
//! replayed one by one into a fresh store, give identical bytes on disk and an
//! identical state machine; and reopening the store recovers that same state.
//! Publishes carry idempotency keys at times, so the de-duplication window
//! (duplicates, expiry, the count limit, topic deletion) is replayed too.

use bytes::Bytes;
use ledgerq_storage::{ChannelId, Command, Dedup, StateMachine, Store, StoreOptions, TopicId};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    CreateTopic(u8),
    DeleteTopic(u8),
    PauseTopic(u8, bool),
    EmptyTopic(u8),
    CreateChannel(u8, u8, bool),
    DeleteChannel(u8),
    PauseChannel(u8, bool),
    EmptyChannel(u8),
    /// topic, bodies, deferred, time (ms), idempotency key (if any).
    Publish(u8, u8, bool, u8, Option<u8>),
    Deliver(u8, u8),
    Redeliver(u8, u8),
    Finish(u8, u8),
    Requeue(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => any::<u8>().prop_map(Op::CreateTopic),
        1 => any::<u8>().prop_map(Op::DeleteTopic),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(t, p)| Op::PauseTopic(t, p)),
        1 => any::<u8>().prop_map(Op::EmptyTopic),
        3 => (any::<u8>(), any::<u8>(), any::<bool>()).prop_map(|(t, c, e)| Op::CreateChannel(t, c, e)),
        1 => any::<u8>().prop_map(Op::DeleteChannel),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(c, p)| Op::PauseChannel(c, p)),
        1 => any::<u8>().prop_map(Op::EmptyChannel),
        6 => (any::<u8>(), 1u8..6, any::<bool>(), any::<u8>(), prop::option::of(0u8..6))
            .prop_map(|(t, n, d, ms, key)| Op::Publish(t, n, d, ms, key)),
        5 => (any::<u8>(), any::<u8>()).prop_map(|(c, k)| Op::Deliver(c, k)),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(c, k)| Op::Redeliver(c, k)),
        8 => (any::<u8>(), any::<u8>()).prop_map(|(c, k)| Op::Finish(c, k)),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(c, k)| Op::Requeue(c, k)),
    ]
}

fn pick<T: Copy>(items: &[T], index: u8) -> Option<T> {
    (!items.is_empty()).then(|| items[usize::from(index) % items.len()])
}

/// Turns an abstract op into a command that is usually valid in `state`.
fn command(state: &StateMachine, op: &Op) -> Option<Command> {
    let topics: Vec<TopicId> = state.topics().map(|t| t.id).collect();
    let channels: Vec<ChannelId> = state.channels().map(|c| c.id).collect();
    let window = |channel: ChannelId, k: u8| {
        let c = state.channel(channel).unwrap();
        let handed = state.topic(c.meta.topic_id).unwrap().meta.handed_over;
        let span = handed.saturating_sub(c.meta.floor).max(1);
        (c.meta.floor + u64::from(k) % span, handed)
    };
    Some(match *op {
        Op::CreateTopic(n) => Command::CreateTopic {
            name: format!("topic-{}", n % 4),
        },
        Op::DeleteTopic(t) => Command::DeleteTopic {
            topic: pick(&topics, t)?,
        },
        Op::PauseTopic(t, paused) => Command::SetTopicPaused {
            topic: pick(&topics, t)?,
            paused,
        },
        Op::EmptyTopic(t) => Command::EmptyTopic {
            topic: pick(&topics, t)?,
        },
        Op::CreateChannel(t, c, ephemeral) => Command::CreateChannel {
            topic: pick(&topics, t)?,
            name: format!("channel-{}", c % 3),
            ephemeral,
        },
        Op::DeleteChannel(c) => Command::DeleteChannel {
            channel: pick(&channels, c)?,
        },
        Op::PauseChannel(c, paused) => Command::SetChannelPaused {
            channel: pick(&channels, c)?,
            paused,
        },
        Op::EmptyChannel(c) => Command::EmptyChannel {
            channel: pick(&channels, c)?,
        },
        Op::Publish(t, n, deferred, ms, key) => Command::Publish {
            topic: pick(&topics, t)?,
            // Times go back and forth, so keys expire (a 60 ms window) and
            // stay, in either order; at most 4 keys, so the limit evicts too.
            timestamp_ns: 1_000_000 * i64::from(ms) + i64::from(n),
            deliver_at_ms: if deferred { 5_000 } else { 0 },
            bodies: (0..n)
                .map(|i| Bytes::from(vec![i; usize::from(n)]))
                .collect(),
            dedup: key.map(|k| Dedup {
                key: Bytes::from(format!("key-{k}")),
                window_ms: 60,
                max_keys: 4,
            }),
        },
        Op::Deliver(c, k) => {
            let channel = pick(&channels, c)?;
            let (offset, handed) = window(channel, k);
            let cursor = state.channel(channel).unwrap().meta.delivered_up_to;
            Command::Deliver {
                channel,
                delivered_up_to: (offset + 1).min(handed).max(cursor),
                redeliveries: vec![],
            }
        }
        Op::Redeliver(c, k) => {
            let channel = pick(&channels, c)?;
            let (offset, _) = window(channel, k);
            let cursor = state.channel(channel).unwrap().meta.delivered_up_to;
            Command::Deliver {
                channel,
                delivered_up_to: cursor.max(offset + 1),
                redeliveries: vec![(offset, u16::from(k % 7) + 1)],
            }
        }
        Op::Finish(c, k) => {
            let channel = pick(&channels, c)?;
            let (offset, _) = window(channel, k);
            Command::Finish {
                channel,
                offsets: vec![offset, offset + 1],
            }
        }
        Op::Requeue(c, k) => {
            let channel = pick(&channels, c)?;
            let (offset, _) = window(channel, k);
            Command::Requeue {
                channel,
                offset,
                attempts: 2,
                deliver_at_ms: 9_000 + u64::from(k),
            }
        }
    })
}

fn open(dir: &std::path::Path) -> (Store, StateMachine) {
    let mut options = StoreOptions::new(dir);
    options.truncate_step = 4;
    ledgerq_storage::open(options).expect("open store")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn replaying_the_commands_gives_identical_state(
        ops in prop::collection::vec(op(), 1..160),
        batch_sizes in prop::collection::vec(1usize..12, 1..40),
    ) {
        let dir_a = tempfile::tempdir().unwrap();
        let dir_b = tempfile::tempdir().unwrap();
        let (store_a, mut state_a) = open(dir_a.path());
        let mut recorded = Vec::new();
        let mut sizes = batch_sizes.iter().cycle();
        let mut ops = ops.iter().peekable();
        while ops.peek().is_some() {
            let mut batch = store_a.batch();
            for op in ops.by_ref().take(*sizes.next().unwrap()) {
                if let Some(command) = command(&state_a, op) {
                    let _ = state_a.apply(&command, &mut batch);
                    recorded.push(command);
                }
            }
            state_a.flush_dirty(&mut batch);
            store_a.commit(batch).unwrap();
        }
        state_a.check_invariants();

        let (store_b, mut state_b) = open(dir_b.path());
        for command in &recorded {
            let mut batch = store_b.batch();
            let _ = state_b.apply(command, &mut batch);
            state_b.flush_dirty(&mut batch);
            store_b.commit(batch).unwrap();
        }
        prop_assert_eq!(&state_a, &state_b);
        prop_assert_eq!(store_a.dump(), store_b.dump());

        drop(store_a);
        let (_reopened, recovered) = open(dir_a.path());
        prop_assert_eq!(&recovered, &state_a);
    }
}
