//! The command wire encoding (`ledgerq_storage::encoding`): every command
//! round-trips, alone and in batches; arbitrary bytes never make decoding
//! panic; versions, missing kinds and out-of-range attempts are refused; the
//! exact bytes of a few small commands are pinned; and it is compact.

use std::mem::discriminant;

use bytes::Bytes;
use ledgerq_storage::encoding::{
    decode_batch, decode_batch_bytes, decode_command, decode_command_bytes, encode_batch,
    encode_command, format_version_for, DecodeError, COMMAND_FORMAT_VERSION,
    OLDEST_COMMAND_FORMAT_VERSION,
};
use ledgerq_storage::{Command, Dedup};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

/// Ids, offsets and times: the edges as often as arbitrary values.
fn u64_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(127),
        Just(128),
        Just(u64::MAX),
        0..100_000u64,
        any::<u64>(),
    ]
}

fn attempts() -> impl Strategy<Value = u16> {
    prop_oneof![Just(0), Just(1), Just(u16::MAX), any::<u16>()]
}

fn timestamp_ns() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0),
        Just(-1),
        Just(i64::MIN),
        Just(i64::MAX),
        -1_000_000i64..1_000_000,
        any::<i64>(),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-zA-Z0-9._-]{1,64}(#ephemeral)?",
        any::<String>()
    ]
}

/// A publish's de-duplication, valid or not (apply judges it, not decoding).
fn dedup() -> impl Strategy<Value = Dedup> {
    (vec(any::<u8>(), 0..300), u64_value(), u64_value()).prop_map(|(key, window_ms, max_keys)| {
        Dedup {
            key: Bytes::from(key),
            window_ms,
            max_keys,
        }
    })
}

/// Arbitrary bytes, often empty, sometimes large enough for a 3-byte length.
fn body() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        2 => Just(Bytes::new()),
        8 => vec(any::<u8>(), 0..300).prop_map(Bytes::from),
        1 => (any::<u8>(), 16_384..70_000usize).prop_map(|(byte, len)| Bytes::from(vec![byte; len])),
    ]
}

/// Every `Command` variant, with arbitrary field values.
fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        name().prop_map(|name| Command::CreateTopic { name }),
        u64_value().prop_map(|topic| Command::DeleteTopic { topic }),
        (u64_value(), any::<bool>())
            .prop_map(|(topic, paused)| Command::SetTopicPaused { topic, paused }),
        u64_value().prop_map(|topic| Command::EmptyTopic { topic }),
        (u64_value(), name(), any::<bool>()).prop_map(|(topic, name, ephemeral)| {
            Command::CreateChannel {
                topic,
                name,
                ephemeral,
            }
        }),
        u64_value().prop_map(|channel| Command::DeleteChannel { channel }),
        (u64_value(), any::<bool>())
            .prop_map(|(channel, paused)| Command::SetChannelPaused { channel, paused }),
        u64_value().prop_map(|channel| Command::EmptyChannel { channel }),
        (
            u64_value(),
            timestamp_ns(),
            u64_value(),
            vec(body(), 0..6),
            proptest::option::of(dedup())
        )
            .prop_map(|(topic, timestamp_ns, deliver_at_ms, bodies, dedup)| {
                Command::Publish {
                    topic,
                    timestamp_ns,
                    deliver_at_ms,
                    bodies,
                    dedup,
                }
            }),
        (
            u64_value(),
            u64_value(),
            vec((u64_value(), attempts()), 0..20)
        )
            .prop_map(
                |(channel, delivered_up_to, redeliveries)| Command::Deliver {
                    channel,
                    delivered_up_to,
                    redeliveries,
                }
            ),
        (u64_value(), vec(u64_value(), 0..50))
            .prop_map(|(channel, offsets)| Command::Finish { channel, offsets }),
        (u64_value(), u64_value(), attempts(), u64_value()).prop_map(
            |(channel, offset, attempts, deliver_at_ms)| Command::Requeue {
                channel,
                offset,
                attempts,
                deliver_at_ms,
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn a_command_round_trips(command in command()) {
        let encoded = encode_command(&command);
        prop_assert_eq!(decode_command(&encoded), Ok(command.clone()));
        prop_assert_eq!(decode_command_bytes(Bytes::from(encoded)), Ok(command));
    }

    #[test]
    fn a_batch_round_trips(commands in vec(command(), 0..20)) {
        let encoded = encode_batch(&commands);
        prop_assert_eq!(decode_batch(&encoded), Ok(commands.clone()));
        prop_assert_eq!(decode_batch_bytes(Bytes::from(encoded)), Ok(commands));
    }

    /// A batch is its version, then each command's own encoding as one
    /// element: the single-command bytes are exactly a batch element's.
    #[test]
    fn a_batch_element_is_the_single_command_encoding(command in command()) {
        let single = encode_command(&command);
        let batch = encode_batch(std::slice::from_ref(&command));
        prop_assert!(batch.ends_with(&single));
        let version = format_version_for([&command]) as u8;
        prop_assert_eq!(&batch[..3], &[0x08, version, 0x12][..]);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in vec(any::<u8>(), 0..1024)) {
        let shared = Bytes::from(bytes.clone());
        // Whatever decodes, re-encodes to something that decodes the same.
        if let Ok(command) = decode_command(&bytes) {
            prop_assert_eq!(decode_command(&encode_command(&command)), Ok(command));
        }
        let _ = decode_command_bytes(shared.clone());
        if let Ok(commands) = decode_batch(&bytes) {
            prop_assert_eq!(decode_batch(&encode_batch(&commands)), Ok(commands));
        }
        let _ = decode_batch_bytes(shared);
    }

    /// Near-valid input reaches deeper than random bytes: a real batch with
    /// bytes overwritten and its tail cut.
    #[test]
    fn decoding_damaged_batches_never_panics(
        commands in vec(command(), 1..6),
        damage in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encode_batch(&commands);
        for (at, byte) in damage {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        if let Ok(decoded) = decode_batch(&bytes) {
            prop_assert_eq!(decode_batch(&encode_batch(&decoded)), Ok(decoded));
        }
        let _ = decode_batch_bytes(Bytes::from(bytes.clone()));
        let _ = decode_command(&bytes);
    }
}

#[test]
fn the_strategy_generates_every_variant() {
    let all = [
        Command::CreateTopic {
            name: String::new(),
        },
        Command::DeleteTopic { topic: 0 },
        Command::SetTopicPaused {
            topic: 0,
            paused: false,
        },
        Command::EmptyTopic { topic: 0 },
        Command::CreateChannel {
            topic: 0,
            name: String::new(),
            ephemeral: false,
        },
        Command::DeleteChannel { channel: 0 },
        Command::SetChannelPaused {
            channel: 0,
            paused: false,
        },
        Command::EmptyChannel { channel: 0 },
        Command::Publish {
            topic: 0,
            timestamp_ns: 0,
            deliver_at_ms: 0,
            bodies: vec![],
            dedup: None,
        },
        Command::Deliver {
            channel: 0,
            delivered_up_to: 0,
            redeliveries: vec![],
        },
        Command::Finish {
            channel: 0,
            offsets: vec![],
        },
        Command::Requeue {
            channel: 0,
            offset: 0,
            attempts: 0,
            deliver_at_ms: 0,
        },
    ];
    let mut runner = TestRunner::deterministic();
    let strategy = command();
    let generated: Vec<_> = (0..2000)
        .map(|_| discriminant(&strategy.new_tree(&mut runner).unwrap().current()))
        .collect();
    for command in &all {
        assert!(
            generated.contains(&discriminant(command)),
            "never generated: {command:?}"
        );
    }
}

/// The exact bytes of small commands: an accidental change to the format
/// (a field number, a type, sint64 to int64, unpacked offsets) fails here.
#[test]
fn the_encoding_of_small_commands_is_pinned() {
    let cases: [(Command, &[u8]); 5] = [
        (
            Command::Publish {
                topic: 3,
                timestamp_ns: -1,
                deliver_at_ms: 0,
                bodies: vec![Bytes::from_static(b"hi")],
                dedup: None,
            },
            // Command.publish (9, length 8): topic 3, timestamp_ns zigzag(-1)
            // = 1, deliver_at_ms 0 omitted, one body "hi".
            &[0x4a, 0x08, 0x08, 0x03, 0x10, 0x01, 0x22, 0x02, b'h', b'i'],
        ),
        (
            Command::Requeue {
                channel: 7,
                offset: 300,
                attempts: 2,
                deliver_at_ms: 1,
            },
            &[
                0x62, 0x09, 0x08, 0x07, 0x10, 0xac, 0x02, 0x18, 0x02, 0x20, 0x01,
            ],
        ),
        (
            Command::Finish {
                channel: 1,
                offsets: vec![1, 300],
            },
            // Packed: one length-delimited field 2 holding both varints.
            &[0x5a, 0x07, 0x08, 0x01, 0x12, 0x03, 0x01, 0xac, 0x02],
        ),
        (
            Command::Deliver {
                channel: 2,
                delivered_up_to: 5,
                redeliveries: vec![(4, 3)],
            },
            &[
                0x52, 0x0a, 0x08, 0x02, 0x10, 0x05, 0x1a, 0x04, 0x08, 0x04, 0x10, 0x03,
            ],
        ),
        (
            Command::CreateChannel {
                topic: 1,
                name: "c".into(),
                ephemeral: true,
            },
            &[0x2a, 0x07, 0x08, 0x01, 0x12, 0x01, b'c', 0x18, 0x01],
        ),
    ];
    for (command, expected) in cases {
        assert_eq!(encode_command(&command), expected, "{command:?}");
        assert_eq!(decode_command(expected), Ok(command));
    }

    let publish = Command::Publish {
        topic: 3,
        timestamp_ns: -1,
        deliver_at_ms: 0,
        bodies: vec![Bytes::from_static(b"hi")],
        dedup: None,
    };
    let batch: &[u8] = &[
        0x08, 0x01, // format_version 1
        0x12, 0x0a, // commands[0], length 10
        0x4a, 0x08, 0x08, 0x03, 0x10, 0x01, 0x22, 0x02, b'h', b'i',
    ];
    assert_eq!(encode_batch(std::slice::from_ref(&publish)), batch);
    assert_eq!(decode_batch(batch), Ok(vec![publish]));
    assert_eq!(encode_batch(&[]), [0x08, 0x01]);
    assert_eq!(decode_batch(&[0x08, 0x01]), Ok(vec![]));
}

#[test]
fn a_wrong_format_version_is_refused() {
    assert_eq!(
        (OLDEST_COMMAND_FORMAT_VERSION, COMMAND_FORMAT_VERSION),
        (1, 2)
    );
    let commands = [Command::DeleteTopic { topic: 9 }];
    let mut bytes = encode_batch(&commands);
    assert_eq!(&bytes[..2], &[0x08, 0x01]);

    // Version 2 reads these commands as version 1 does.
    bytes[1] = 0x02;
    assert_eq!(decode_batch(&bytes), Ok(commands.to_vec()));

    bytes[1] = 0x03;
    let error = decode_batch(&bytes).unwrap_err();
    assert_eq!(error, DecodeError::UnsupportedVersion { found: 3 });
    assert_eq!(
        error.to_string(),
        "unsupported command format version 3 (this build reads versions 1 to 2)"
    );
    assert_eq!(
        decode_batch_bytes(Bytes::from(bytes)),
        Err(DecodeError::UnsupportedVersion { found: 3 })
    );

    // No version at all (or the empty input) reads as version 0.
    let mut versionless = encode_batch(&commands);
    versionless.drain(..2);
    assert_eq!(
        decode_batch(&versionless),
        Err(DecodeError::UnsupportedVersion { found: 0 })
    );
    assert_eq!(
        decode_batch(&[]),
        Err(DecodeError::UnsupportedVersion { found: 0 })
    );
    assert_eq!(
        decode_batch(&[0x08, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        Err(DecodeError::UnsupportedVersion { found: u32::MAX })
    );

    // A newer batch whose commands this build cannot even parse (field 2
    // as a varint) is still refused for its version, not as malformed.
    assert_eq!(
        decode_batch(&[0x08, 0x03, 0x10, 0x05]),
        Err(DecodeError::UnsupportedVersion { found: 3 })
    );
    assert!(matches!(
        decode_batch(&[0x08, 0x01, 0x10, 0x05]),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn a_command_without_a_kind_is_refused() {
    assert_eq!(decode_command(&[]), Err(DecodeError::MissingKind));
    // A kind from the future (field 99, a varint) is skipped by protobuf,
    // which leaves none: refused, never silently dropped.
    assert_eq!(
        decode_command(&[0x98, 0x06, 0x01]),
        Err(DecodeError::MissingKind)
    );
    assert_eq!(
        decode_batch(&[0x08, 0x01, 0x12, 0x00]),
        Err(DecodeError::InBatch {
            index: 0,
            error: Box::new(DecodeError::MissingKind)
        })
    );

    let mut bytes = encode_batch(&[Command::EmptyTopic { topic: 1 }]);
    bytes.extend_from_slice(&[0x12, 0x03, 0x98, 0x06, 0x01]);
    let error = decode_batch(&bytes).unwrap_err();
    assert_eq!(
        error,
        DecodeError::InBatch {
            index: 1,
            error: Box::new(DecodeError::MissingKind)
        }
    );
    assert_eq!(
        error.to_string(),
        "command 1 of the batch: command has no kind: empty, or a kind this build does not know"
    );
}

#[test]
fn attempts_above_u16_max_are_refused() {
    // Requeue { attempts: 65536 }
    assert_eq!(
        decode_command(&[0x62, 0x04, 0x18, 0x80, 0x80, 0x04]),
        Err(DecodeError::AttemptsOutOfRange {
            command: "Requeue",
            offset: 0,
            attempts: 65_536
        })
    );
    // Requeue { attempts: 65535 } is fine.
    assert_eq!(
        decode_command(&[0x62, 0x04, 0x18, 0xff, 0xff, 0x03]),
        Ok(Command::Requeue {
            channel: 0,
            offset: 0,
            attempts: u16::MAX,
            deliver_at_ms: 0
        })
    );
    // Deliver { redeliveries: [Redelivery { offset: 4, attempts: u32::MAX }] }
    let error = decode_command(&[
        0x52, 0x0a, 0x1a, 0x08, 0x08, 0x04, 0x10, 0xff, 0xff, 0xff, 0xff, 0x0f,
    ])
    .unwrap_err();
    assert_eq!(
        error,
        DecodeError::AttemptsOutOfRange {
            command: "Deliver",
            offset: 4,
            attempts: u32::MAX
        }
    );
    assert_eq!(
        error.to_string(),
        "Deliver of offset 4: attempts 4294967295 exceeds 65535"
    );
}

#[test]
fn malformed_input_is_refused() {
    // CreateTopic { name: [0xff] }: not UTF-8.
    assert!(matches!(
        decode_command(&[0x0a, 0x03, 0x0a, 0x01, 0xff]),
        Err(DecodeError::Malformed(_))
    ));
    // A length running past the end.
    assert!(matches!(
        decode_command(&[0x4a, 0x05, 0x08]),
        Err(DecodeError::Malformed(_))
    ));
    // Truncated anywhere, a valid batch does not decode.
    let bytes = encode_batch(&[Command::Publish {
        topic: 1,
        timestamp_ns: 5,
        deliver_at_ms: 0,
        bodies: vec![Bytes::from_static(b"body")],
        dedup: None,
    }]);
    for len in 3..bytes.len() {
        assert!(decode_batch(&bytes[..len]).is_err(), "{len}");
    }
}

#[test]
fn bodies_decoded_from_bytes_are_slices_of_the_buffer() {
    let body = Bytes::from(vec![7u8; 1000]);
    let commands = [Command::Publish {
        topic: 1,
        timestamp_ns: 1,
        deliver_at_ms: 0,
        bodies: vec![body.clone(), Bytes::new(), body],
        dedup: None,
    }];
    let buffer = Bytes::from(encode_batch(&commands));
    let range = buffer.as_ptr_range();
    let within = |bytes: &Bytes| range.contains(&bytes.as_ptr());

    let decoded = decode_batch_bytes(buffer.clone()).unwrap();
    assert_eq!(decoded, commands);
    let Command::Publish { bodies, .. } = &decoded[0] else {
        unreachable!()
    };
    assert!(within(&bodies[0]) && within(&bodies[2]));

    let single = Bytes::from(encode_command(&commands[0]));
    let range = single.as_ptr_range();
    let Command::Publish { bodies, .. } = decode_command_bytes(single.clone()).unwrap() else {
        unreachable!()
    };
    assert!(range.contains(&bodies[0].as_ptr()));
}

#[test]
fn a_publish_of_one_200_byte_body_is_compact() {
    // A current timestamp (2026), a small topic id, no deferral.
    let publish = Command::Publish {
        topic: 12,
        timestamp_ns: 1_780_000_000_000_000_000,
        deliver_at_ms: 0,
        bodies: vec![Bytes::from(vec![0xa5; 200])],
        dedup: None,
    };
    let single = encode_command(&publish).len();
    let batch = encode_batch(std::slice::from_ref(&publish)).len();
    eprintln!("Publish of one 200-byte body: {single} bytes as a command, {batch} in a batch");
    assert!(single < 230, "{single}");
    assert!(batch < 230, "{batch}");

    // 18 bytes over the body as a command: body tag and length 3, topic 2,
    // timestamp 10, the Command framing 3; a batch adds its version 2 and
    // the element framing 3.
    assert_eq!((single, batch), (218, 223));

    // Deferred (DPUB): the deliver_at_ms varint adds 7 bytes.
    let deferred = Command::Publish {
        topic: 12,
        timestamp_ns: 1_780_000_000_000_000_000,
        deliver_at_ms: 1_780_000_060_000,
        bodies: vec![Bytes::from(vec![0xa5; 200])],
        dedup: None,
    };
    let single = encode_command(&deferred).len();
    let batch = encode_batch(std::slice::from_ref(&deferred)).len();
    eprintln!("deferred: {single} bytes as a command, {batch} in a batch");
    assert_eq!((single, batch), (225, 230));

    // A hundred undeferred publishes in one batch: 3 bytes of framing each.
    let many = vec![publish; 100];
    let batch = encode_batch(&many).len();
    eprintln!("100 of them in one batch: {batch} bytes");
    assert_eq!(batch, 2 + 100 * (218 + 3));
}

/// A batch is written in the oldest version that can express it: only a
/// publish with an idempotency key needs version 2, which a version-1 build
/// refuses instead of dropping the key and storing a duplicate.
#[test]
fn only_a_deduplicated_publish_needs_version_2() {
    let plain = Command::Publish {
        topic: 3,
        timestamp_ns: -1,
        deliver_at_ms: 0,
        bodies: vec![Bytes::from_static(b"hi")],
        dedup: None,
    };
    let Command::Publish {
        topic,
        timestamp_ns,
        deliver_at_ms,
        ref bodies,
        ..
    } = plain
    else {
        unreachable!()
    };
    let keyed = Command::Publish {
        topic,
        timestamp_ns,
        deliver_at_ms,
        bodies: bodies.clone(),
        dedup: Some(Dedup {
            key: Bytes::from_static(b"k"),
            window_ms: 1,
            max_keys: 2,
        }),
    };
    assert_eq!(format_version_for([&plain]), 1);
    assert_eq!(format_version_for([&plain, &keyed]), 2);
    let bytes = encode_batch(&[plain.clone(), keyed.clone()]);
    assert_eq!(&bytes[..2], &[0x08, 0x02]);
    assert_eq!(decode_batch(&bytes), Ok(vec![plain, keyed.clone()]));
    // Publish field 5 (Dedup): key "k", window_ms 1, max_keys 2.
    let single = encode_command(&keyed);
    assert!(single.ends_with(&[0x2a, 0x07, 0x0a, 0x01, b'k', 0x10, 0x01, 0x18, 0x02]));
}
