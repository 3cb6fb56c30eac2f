//! The wire encoding of [`Command`]s: compact, versioned protobuf.
//!
//! Commands travel as bytes in a Raft log entry and when a write is forwarded
//! to the leader over gRPC. The messages are defined in
//! `proto/ledgerq/command.proto` (package `ledgerq.command.v1`) and compiled
//! by prost-build (`build.rs`); the generated types stay private to this
//! module, which converts them to and from [`Command`].
//!
//! * [`encode_batch`] / [`decode_batch`]: a `CommandBatch`, the commands in
//!   apply order behind a [`COMMAND_FORMAT_VERSION`]. This is what is stored
//!   or sent; a reader refuses any version it does not know.
//! * [`encode_command`] / [`decode_command`]: one bare `Command` message, the
//!   same bytes as one element of a batch. It carries no version of its own,
//!   so it is for a context that carries it (a field of a versioned message),
//!   never for bytes stored on their own.
//! * [`decode_batch_bytes`] / [`decode_command_bytes`]: the same from a
//!   [`Bytes`] buffer; the bodies of a decoded `Publish` are then slices of
//!   that buffer, not copies.
//!
//! Decoding never panics, whatever the input. Beyond malformed protobuf it
//! refuses, with a [`DecodeError`], what the schema cannot express: an
//! unknown format version, a command with no kind (or a kind newer than this
//! build, which protobuf shows as none), and an attempts count above
//! `u16::MAX`. [`Urgency`](crate::Urgency) is not encoded: it concerns only
//! how soon the local node commits, not what the command does.
//!
//! Integers are varints (ids, offsets and most times are small or zero, and
//! zero takes no bytes at all); `timestamp_ns` is zigzag (`sint64`). A
//! `Publish` of one 200-byte body with a current timestamp takes 218 bytes
//! as a command, 223 in a batch (18 and 23 bytes of overhead).

use bytes::Bytes;
use prost::Message;

use crate::command::{Command, Dedup};

/// The newest version: bump it for any change an older reader would
/// misread or silently drop (see the rules in `command.proto`). Version 2
/// added `Publish.dedup`, which a version-1 reader would drop (storing a
/// duplicate). [`encode_batch`] writes the oldest version that can express
/// its commands ([`format_version_for`]), so a batch without `dedup` stays
/// readable by a version-1 build; [`decode_batch`] reads every version from
/// [`OLDEST_COMMAND_FORMAT_VERSION`] to this one.
pub const COMMAND_FORMAT_VERSION: u32 = 2;

/// The oldest version this build still reads.
pub const OLDEST_COMMAND_FORMAT_VERSION: u32 = 1;

/// The version to write for these commands: 2 if one of them is a
/// `Publish` with `dedup`, else 1.
pub fn format_version_for<'a>(commands: impl IntoIterator<Item = &'a Command>) -> u32 {
    let needs_dedup = commands
        .into_iter()
        .any(|c| matches!(c, Command::Publish { dedup: Some(_), .. }));
    if needs_dedup {
        2
    } else {
        OLDEST_COMMAND_FORMAT_VERSION
    }
}

/// Whether this build reads a batch or proposal of this version.
pub fn is_readable_version(version: u32) -> bool {
    (OLDEST_COMMAND_FORMAT_VERSION..=COMMAND_FORMAT_VERSION).contains(&version)
}

use crate::pb::command as pb;

use pb::command::Kind;

/// The first field of a `CommandBatch`, alone. `format_version` is field 1, a
/// `uint32`, in every version, so reading just this (prost skips the
/// commands without parsing them) tells whether the rest can be read at all:
/// a newer version is refused as such, not reported as malformed.
#[derive(Clone, PartialEq, prost::Message)]
struct BatchHeader {
    #[prost(uint32, tag = "1")]
    format_version: u32,
}

/// Why bytes are not a valid command or batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not valid protobuf for these messages: truncated, a wrong wire type,
    /// a string that is not UTF-8, and so on.
    #[error("malformed command encoding: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The batch's `format_version` is not one this build reads
    /// ([`is_readable_version`]). An empty or versionless input reads as
    /// version 0.
    #[error(
        "unsupported command format version {found} (this build reads versions {} to {})",
        OLDEST_COMMAND_FORMAT_VERSION,
        COMMAND_FORMAT_VERSION
    )]
    UnsupportedVersion { found: u32 },
    /// A `Command` with no kind set: empty, or a kind this build does not
    /// know (protobuf skips a field it does not know).
    #[error("command has no kind: empty, or a kind this build does not know")]
    MissingKind,
    /// An attempts count that does not fit a `u16`.
    #[error(
        "{command} of offset {offset}: attempts {attempts} exceeds {}",
        u16::MAX
    )]
    AttemptsOutOfRange {
        /// The command carrying it: `Deliver` or `Requeue`.
        command: &'static str,
        offset: u64,
        attempts: u32,
    },
    /// One command of a batch is invalid.
    #[error("command {index} of the batch: {error}")]
    InBatch {
        /// Its position in the batch, from 0.
        index: usize,
        error: Box<DecodeError>,
    },
}

/// Encodes one command as a bare `Command` message (no version: see the
/// module documentation).
pub fn encode_command(command: &Command) -> Vec<u8> {
    to_pb(command).encode_to_vec()
}

/// Decodes one bare `Command` message. The bodies of a `Publish` are copied
/// out of `bytes`; [`decode_command_bytes`] slices them instead.
pub fn decode_command(bytes: &[u8]) -> Result<Command, DecodeError> {
    from_pb(pb::Command::decode(bytes)?)
}

/// Decodes one bare `Command` message from a shared buffer: the bodies of a
/// `Publish` are slices of `bytes`, not copies.
pub fn decode_command_bytes(bytes: Bytes) -> Result<Command, DecodeError> {
    from_pb(pb::Command::decode(bytes)?)
}

/// Encodes commands, in apply order, as a `CommandBatch` of the version
/// [`format_version_for`] them.
pub fn encode_batch(commands: &[Command]) -> Vec<u8> {
    pb::CommandBatch {
        format_version: format_version_for(commands),
        commands: commands.iter().map(to_pb).collect(),
    }
    .encode_to_vec()
}

/// Decodes a `CommandBatch`, refusing any version this build does not read
/// ([`is_readable_version`]). The bodies of a `Publish` are copied out of
/// `bytes`; [`decode_batch_bytes`] slices them instead.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Command>, DecodeError> {
    check_version(bytes)?;
    from_pb_batch(pb::CommandBatch::decode(bytes)?)
}

/// Decodes a `CommandBatch` from a shared buffer, as [`decode_batch`] does,
/// but the bodies of a `Publish` are slices of `bytes`, not copies.
pub fn decode_batch_bytes(bytes: Bytes) -> Result<Vec<Command>, DecodeError> {
    check_version(&bytes[..])?;
    from_pb_batch(pb::CommandBatch::decode(bytes)?)
}

fn check_version(bytes: &[u8]) -> Result<(), DecodeError> {
    let found = BatchHeader::decode(bytes)?.format_version;
    if is_readable_version(found) {
        Ok(())
    } else {
        Err(DecodeError::UnsupportedVersion { found })
    }
}

fn from_pb_batch(batch: pb::CommandBatch) -> Result<Vec<Command>, DecodeError> {
    // Checked again: the header was read first, but this is what decoded.
    if !is_readable_version(batch.format_version) {
        return Err(DecodeError::UnsupportedVersion {
            found: batch.format_version,
        });
    }
    batch
        .commands
        .into_iter()
        .enumerate()
        .map(|(index, command)| {
            from_pb(command).map_err(|error| DecodeError::InBatch {
                index,
                error: Box::new(error),
            })
        })
        .collect()
}

pub(crate) fn to_pb(command: &Command) -> pb::Command {
    let kind = match command {
        Command::CreateTopic { name } => Kind::CreateTopic(pb::CreateTopic { name: name.clone() }),
        &Command::DeleteTopic { topic } => Kind::DeleteTopic(pb::DeleteTopic { topic }),
        &Command::SetTopicPaused { topic, paused } => {
            Kind::SetTopicPaused(pb::SetTopicPaused { topic, paused })
        }
        &Command::EmptyTopic { topic } => Kind::EmptyTopic(pb::EmptyTopic { topic }),
        Command::CreateChannel {
            topic,
            name,
            ephemeral,
        } => Kind::CreateChannel(pb::CreateChannel {
            topic: *topic,
            name: name.clone(),
            ephemeral: *ephemeral,
        }),
        &Command::DeleteChannel { channel } => Kind::DeleteChannel(pb::DeleteChannel { channel }),
        &Command::SetChannelPaused { channel, paused } => {
            Kind::SetChannelPaused(pb::SetChannelPaused { channel, paused })
        }
        &Command::EmptyChannel { channel } => Kind::EmptyChannel(pb::EmptyChannel { channel }),
        Command::Publish {
            topic,
            timestamp_ns,
            deliver_at_ms,
            bodies,
            dedup,
        } => Kind::Publish(pb::Publish {
            topic: *topic,
            timestamp_ns: *timestamp_ns,
            deliver_at_ms: *deliver_at_ms,
            // Reference counts, not copies of the bodies.
            bodies: bodies.clone(),
            dedup: dedup.as_ref().map(|d| pb::Dedup {
                key: d.key.clone(),
                window_ms: d.window_ms,
                max_keys: d.max_keys,
            }),
        }),
        Command::Deliver {
            channel,
            delivered_up_to,
            redeliveries,
        } => Kind::Deliver(pb::Deliver {
            channel: *channel,
            delivered_up_to: *delivered_up_to,
            redeliveries: redeliveries
                .iter()
                .map(|&(offset, attempts)| pb::Redelivery {
                    offset,
                    attempts: attempts.into(),
                })
                .collect(),
        }),
        Command::Finish { channel, offsets } => Kind::Finish(pb::Finish {
            channel: *channel,
            offsets: offsets.clone(),
        }),
        &Command::Requeue {
            channel,
            offset,
            attempts,
            deliver_at_ms,
        } => Kind::Requeue(pb::Requeue {
            channel,
            offset,
            attempts: attempts.into(),
            deliver_at_ms,
        }),
    };
    pb::Command { kind: Some(kind) }
}

pub(crate) fn from_pb(command: pb::Command) -> Result<Command, DecodeError> {
    let command = match command.kind.ok_or(DecodeError::MissingKind)? {
        Kind::CreateTopic(pb::CreateTopic { name }) => Command::CreateTopic { name },
        Kind::DeleteTopic(pb::DeleteTopic { topic }) => Command::DeleteTopic { topic },
        Kind::SetTopicPaused(pb::SetTopicPaused { topic, paused }) => {
            Command::SetTopicPaused { topic, paused }
        }
        Kind::EmptyTopic(pb::EmptyTopic { topic }) => Command::EmptyTopic { topic },
        Kind::CreateChannel(pb::CreateChannel {
            topic,
            name,
            ephemeral,
        }) => Command::CreateChannel {
            topic,
            name,
            ephemeral,
        },
        Kind::DeleteChannel(pb::DeleteChannel { channel }) => Command::DeleteChannel { channel },
        Kind::SetChannelPaused(pb::SetChannelPaused { channel, paused }) => {
            Command::SetChannelPaused { channel, paused }
        }
        Kind::EmptyChannel(pb::EmptyChannel { channel }) => Command::EmptyChannel { channel },
        Kind::Publish(pb::Publish {
            topic,
            timestamp_ns,
            deliver_at_ms,
            bodies,
            dedup,
        }) => Command::Publish {
            topic,
            timestamp_ns,
            deliver_at_ms,
            bodies,
            dedup: dedup.map(|d| Dedup {
                key: d.key,
                window_ms: d.window_ms,
                max_keys: d.max_keys,
            }),
        },
        Kind::Deliver(pb::Deliver {
            channel,
            delivered_up_to,
            redeliveries,
        }) => Command::Deliver {
            channel,
            delivered_up_to,
            redeliveries: redeliveries
                .into_iter()
                .map(|pb::Redelivery { offset, attempts }| {
                    Ok((offset, attempts_u16("Deliver", offset, attempts)?))
                })
                .collect::<Result<_, DecodeError>>()?,
        },
        Kind::Finish(pb::Finish { channel, offsets }) => Command::Finish { channel, offsets },
        Kind::Requeue(pb::Requeue {
            channel,
            offset,
            attempts,
            deliver_at_ms,
        }) => Command::Requeue {
            channel,
            offset,
            attempts: attempts_u16("Requeue", offset, attempts)?,
            deliver_at_ms,
        },
    };
    Ok(command)
}

fn attempts_u16(command: &'static str, offset: u64, attempts: u32) -> Result<u16, DecodeError> {
    u16::try_from(attempts).map_err(|_| DecodeError::AttemptsOutOfRange {
        command,
        offset,
        attempts,
    })
}
