//! Error types: storage failures (never acknowledged as success), commands the
//! state machine refuses, and what a committer's submitter gets back.

use thiserror::Error;

/// A failure of the storage engine itself: I/O, fsync, corruption, format.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    Rocks(String),
    #[error("fsync failed: {0}")]
    Sync(String),
    #[error("corrupt record in {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("data directory has format version {found}; this build reads version {expected}")]
    UnsupportedFormat { found: u32, expected: u32 },
}

impl From<rocksdb::Error> for StorageError {
    fn from(error: rocksdb::Error) -> Self {
        StorageError::Rocks(error.into_string())
    }
}

/// A command the state machine refuses; nothing was written for it.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ApplyError {
    #[error("unknown topic")]
    UnknownTopic,
    #[error("unknown channel")]
    UnknownChannel,
    #[error("offset {offset} is beyond what the topic has handed to its channels ({handed_over})")]
    OffsetNotHandedOver { offset: u64, handed_over: u64 },
    #[error("empty publish")]
    EmptyPublish,
    /// A publish's de-duplication is malformed: an empty key or one over
    /// 256 bytes, a zero window or a zero count limit.
    #[error("invalid idempotency key or window")]
    InvalidDedup,
    /// Redundancy mode: a dispatch decision (Deliver, Finish, Requeue) made
    /// by the leader of one term reached the log in another term's entry.
    #[error("made by the leader of term {made_in}, committed in term {committed_in}")]
    StaleTerm { made_in: u64, committed_in: u64 },
}

/// What the submitter of a command learns when it did not succeed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CommitError {
    /// The command was refused by the state machine (it is not a storage failure).
    #[error("{0}")]
    Rejected(#[from] ApplyError),
    /// The write or its fsync failed, now or earlier: the node refuses writes.
    #[error("{0}")]
    Storage(StorageError),
    /// The committer has shut down.
    #[error("exiting")]
    Closed,
    /// Redundancy mode: no leader committed the command in time (none
    /// elected, or unreachable). It may still be committed later.
    #[error("no leader")]
    NoLeader,
    /// Redundancy mode: a dispatch decision proposed on a node that no
    /// longer leads.
    #[error("not the leader")]
    NotLeader,
}
