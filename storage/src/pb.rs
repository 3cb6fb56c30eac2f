//! The types prost-build generates from `proto/ledgerq/command.proto` and
//! `proto/ledgerq/raft.proto` (see `build.rs`). Public so that the gRPC
//! service (`proto/ledgerq/cluster.proto`, compiled in the server crate)
//! carries these very messages instead of its own copies.

// Generated code is not ours to lint: clean under the default lints with
// prost-build 0.14, but a later release (or `clippy::pedantic`, for its doc
// comments) must not fail the build over it.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod ledgerq {
    pub mod command {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/ledgerq.command.v1.rs"));
        }
    }
    pub mod raft {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/ledgerq.raft.v1.rs"));
        }
    }
}

pub use ledgerq::command::v1 as command;
pub use ledgerq::raft::v1 as raft;
