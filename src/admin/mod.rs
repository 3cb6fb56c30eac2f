//! The gRPC admin API (`proto/ledgerq/admin/v1/admin.proto`) and the
//! `ledgerq admin` command that calls it.
//!
//! Files: `service.rs` (the server side: every RPC on the broker path TCP
//! and HTTP clients take), `status.rs` (names and errors as gRPC statuses),
//! `auth.rs` (the bearer token), `convert.rs` (stats and cluster view as
//! messages), `cli.rs` (the client command). The server that carries the
//! service is `src/grpc.rs`.

pub mod auth;
pub mod cli;
pub mod convert;
pub mod service;
pub mod status;

/// The generated messages, client and server.
pub mod pb {
    tonic::include_proto!("ledgerq.admin.v1");

    /// The encoded file descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("admin_descriptor");
}
