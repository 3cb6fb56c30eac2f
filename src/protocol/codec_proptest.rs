//! Property tests of [`super::codec::CommandCodec`]: arbitrary input never panics, and valid
//! command streams decode to the same commands however they are chunked.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

use super::codec::CommandCodec;
use super::command::ClientCommand;
use super::limits::Limits;

/// Feed `input` split at `cuts`; stop at the first error; end with EOF.
fn decode_chunked(input: &[u8], cuts: &[usize]) -> (Vec<ClientCommand>, Option<String>) {
    let mut codec = CommandCodec::new(small_limits());
    let mut buf = BytesMut::new();
    let mut commands = Vec::new();
    let mut start = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|&cut| cut % (input.len() + 1)).collect();
    bounds.sort_unstable();
    bounds.push(input.len());
    for end in bounds {
        buf.extend_from_slice(input.get(start..end).unwrap_or_default());
        start = start.max(end);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(command)) => commands.push(command),
                Ok(None) => break,
                Err(err) => return (commands, Some(err.frame_body())),
            }
        }
    }
    match codec.decode_eof(&mut buf) {
        Ok(Some(command)) => commands.push(command),
        Ok(None) => {}
        Err(err) => return (commands, Some(err.frame_body())),
    }
    (commands, None)
}

fn small_limits() -> Limits {
    Limits {
        max_msg_size_bytes: 64,
        max_body_size_bytes: 512,
        ..Limits::default()
    }
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,20}(#ephemeral)?"
}

fn body() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 1..64).prop_map(Bytes::from)
}

fn id() -> impl Strategy<Value = [u8; 16]> {
    "[!-~]{16}".prop_map(|id| {
        let mut out = [0u8; 16];
        out.copy_from_slice(id.as_bytes());
        out
    })
}

fn command() -> impl Strategy<Value = ClientCommand> {
    prop_oneof![
        body().prop_map(ClientCommand::Identify),
        body().prop_map(ClientCommand::Auth),
        (name(), name()).prop_map(|(topic, channel)| ClientCommand::Sub { topic, channel }),
        (name(), body()).prop_map(|(topic, body)| ClientCommand::Pub { topic, body }),
        (name(), vec(body(), 1..5))
            .prop_map(|(topic, bodies)| ClientCommand::Mpub { topic, bodies }),
        (name(), 0..=3_600_000u64, body()).prop_map(|(topic, defer_ms, body)| {
            ClientCommand::Dpub {
                topic,
                defer_ms,
                body,
            }
        }),
        (0..=2500u64).prop_map(|count| ClientCommand::Rdy { count }),
        id().prop_map(|id| ClientCommand::Fin { id }),
        (id(), any::<u64>()).prop_map(|(id, timeout_ms)| ClientCommand::Req { id, timeout_ms }),
        id().prop_map(|id| ClientCommand::Touch { id }),
        Just(ClientCommand::Cls),
        Just(ClientCommand::Nop),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(input in vec(any::<u8>(), 0..2048), cuts in vec(any::<usize>(), 0..16)) {
        let _ = decode_chunked(&input, &cuts);
    }

    #[test]
    fn arbitrary_bodies_after_valid_lines_never_panic(
        line in prop_oneof![
            Just(&b"MPUB t\n"[..]), Just(&b"PUB t\n"[..]), Just(&b"IDENTIFY\n"[..]),
            Just(&b"DPUB t 5\n"[..]), Just(&b"AUTH\n"[..]),
        ],
        tail in vec(any::<u8>(), 0..600),
        cuts in vec(any::<usize>(), 0..8),
    ) {
        let mut input = line.to_vec();
        input.extend_from_slice(&tail);
        let _ = decode_chunked(&input, &cuts);
    }

    #[test]
    fn valid_streams_decode_the_same_however_chunked(
        commands in vec(command(), 1..12),
        cuts in vec(any::<usize>(), 0..24),
    ) {
        let mut wire = BytesMut::new();
        for command in &commands {
            command.encode(&mut wire);
        }
        let (whole, whole_err) = decode_chunked(&wire, &[]);
        prop_assert_eq!(&whole, &commands);
        prop_assert_eq!(whole_err, None);
        let (chunked, chunked_err) = decode_chunked(&wire, &cuts);
        prop_assert_eq!(&chunked, &commands);
        prop_assert_eq!(chunked_err, None);
        let every_byte: Vec<usize> = (0..wire.len()).collect();
        let (bytewise, bytewise_err) = decode_chunked(&wire, &every_byte);
        prop_assert_eq!(&bytewise, &commands);
        prop_assert_eq!(bytewise_err, None);
    }
}
