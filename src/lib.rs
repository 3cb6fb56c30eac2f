//! ledgerq: an NSQ-compatible message broker whose `OK` means "fsynced".
//!
//! - [`protocol`]: the NSQ TCP protocol V2 as pure parsing and encoding.
//! - [`broker`]: topics, channels, clients and delivery, over the storage
//!   crate's state machine and group committer.
//! - [`connection`]: one client connection, top to bottom like the spec.
//! - [`http`]: nsqd's HTTP API (`/pub`, `/mpub`, `/info`, ...).
//! - [`auth`]: AUTH against an external auth server, as nsqd's
//!   `--auth-http-address` (and `--http-publish-auth` for HTTP publishing).
//! - [`admin`]: the gRPC admin API and the `ledgerq admin` command;
//!   [`grpc`]: the server that carries it (and raft, in redundancy mode);
//!   [`grpc_tls`]: mutual TLS on that port.
//! - [`tls`]: the `--tls-*` flags as a rustls configuration (HTTPS, TCP).
//! - [`lookup_peer`]: registration of a node with its lookupds, as nsqd does.
//! - [`lookupd`]: `ledgerq lookupd`, discovery compatible with nsqlookupd.
//! - [`metrics`]: Prometheus `/metrics`, including the cost of durability.
//! - [`server`]: the accept loop, timers and graceful shutdown.
//! - [`config`]: command-line flags (nsqd's names and defaults).
//! - [`tools`]: NSQ's command-line tools (`pub`, `tail`, `to-file`, `stat`).

pub mod accept;
pub mod admin;
pub mod auth;
pub mod broker;
pub mod clock;
pub mod config;
pub mod connection;
pub mod grpc;
pub mod grpc_tls;
pub mod http;
pub mod logging;
pub mod lookup_peer;
pub mod lookupd;
pub mod metrics;
pub mod protocol;
pub mod replication;
pub mod server;
pub mod tls;
pub mod tools;
pub mod transport;
