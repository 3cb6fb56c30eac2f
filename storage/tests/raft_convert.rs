//! The raft encoding (`raft.proto`, `ledgerq_storage::raft::convert`): every
//! entry round-trips, and bytes a peer or a damaged disk could send (valid
//! encodings with bytes flipped, cut short, or arbitrary) decode to an
//! entry or to an error, never to a panic.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use ledgerq_storage::pb::raft as pb;
use ledgerq_storage::raft::{
    entry_from_pb, entry_to_pb, snapshot_meta_from_pb, Entry, LogId, Member, Origin, Proposal,
};
use ledgerq_storage::{Command, Dedup};
use openraft::{CommittedLeaderId, EntryPayload, Membership};
use proptest::collection::{btree_set, vec};
use proptest::prelude::*;
use prost::Message;

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        "[a-z#]{0,12}".prop_map(|name| Command::CreateTopic { name }),
        (
            any::<u64>(),
            any::<i64>(),
            vec(vec(any::<u8>(), 0..40), 0..4),
            proptest::option::of((vec(any::<u8>(), 1..40), any::<u64>()))
        )
            .prop_map(|(topic, timestamp_ns, bodies, key)| Command::Publish {
                topic,
                timestamp_ns,
                deliver_at_ms: 0,
                bodies: bodies.into_iter().map(Bytes::from).collect(),
                dedup: key.map(|(key, window_ms)| Dedup {
                    key: Bytes::from(key),
                    window_ms,
                    max_keys: 100_000,
                }),
            }),
        (any::<u64>(), vec(any::<u64>(), 0..8))
            .prop_map(|(channel, offsets)| Command::Finish { channel, offsets }),
    ]
}

fn proposal() -> impl Strategy<Value = Proposal> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        vec((any::<u64>(), command()), 0..5),
    )
        .prop_map(|(node, boot, dispatch_term, commands)| Proposal {
            origin: Origin { node, boot },
            dispatch_term,
            commands,
        })
}

/// One or two (joint) voter sets over ids 1..6, every voter a known node,
/// plus maybe a learner.
fn membership() -> impl Strategy<Value = Membership<u64, Member>> {
    (
        vec(btree_set(1u64..6, 1..4), 1..3),
        proptest::option::of(6u64..9),
    )
        .prop_map(|(configs, learner)| {
            let mut ids: BTreeSet<u64> = configs.iter().flatten().copied().collect();
            ids.extend(learner);
            let nodes: BTreeMap<u64, Member> = ids
                .into_iter()
                .map(|id| (id, Member::new(format!("127.0.0.1:{}", 4000 + id))))
                .collect();
            Membership::new(configs, nodes)
        })
}

fn entry() -> impl Strategy<Value = Entry> {
    let payload = prop_oneof![
        Just(EntryPayload::Blank),
        proposal().prop_map(EntryPayload::Normal),
        membership().prop_map(EntryPayload::Membership),
    ];
    (0u64..5, 0u64..5, any::<u64>(), payload).prop_map(|(term, node, index, payload)| Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, node), index),
        payload,
    })
}

/// Decodes `bytes` as an entry as the log store and the RPC service do:
/// whatever the bytes, the answer is a value or an error.
fn decode(bytes: &[u8]) -> Option<Entry> {
    let message = pb::Entry::decode(bytes).ok()?;
    entry_from_pb(message).ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn an_entry_round_trips(entry in entry()) {
        let bytes = entry_to_pb(&entry).encode_to_vec();
        let decoded = decode(&bytes).expect("a valid encoding decodes");
        prop_assert_eq!(decoded.log_id, entry.log_id);
        prop_assert_eq!(format!("{:?}", decoded.payload), format!("{:?}", entry.payload));
    }

    #[test]
    fn a_damaged_entry_decodes_or_is_refused(
        entry in entry(),
        flips in vec((any::<prop::sample::Index>(), 1u8..=255), 1..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = entry_to_pb(&entry).encode_to_vec();
        prop_assume!(!bytes.is_empty());
        for (at, xor) in flips {
            let at = at.index(bytes.len());
            bytes[at] ^= xor;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        let _ = decode(&bytes);
    }

    #[test]
    fn arbitrary_bytes_decode_or_are_refused(bytes in vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
        if let Ok(meta) = pb::SnapshotMeta::decode(&bytes[..]) {
            let _ = snapshot_meta_from_pb(meta);
        }
    }
}
