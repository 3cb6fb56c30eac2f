//! `GET /ping` and `GET /info` (`docs/nsq-wire.md` §5.6).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;

use super::response::{plain_text, Reply, V1Result};
use super::HttpState;
use crate::config::ServeArgs;
use crate::connection::NSQ_COMPATIBLE_VERSION;

/// The `/info` document, fixed at start (durations in nanoseconds, as Go
/// marshals a `time.Duration`).
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    pub version: &'static str,
    pub broadcast_address: String,
    pub hostname: String,
    pub http_port: u16,
    pub tcp_port: u16,
    pub start_time: u64,
    pub max_heartbeat_interval: u128,
    pub max_output_buffer_size: u64,
    pub max_output_buffer_timeout: u128,
    pub max_deflate_level: u32,
}

/// nsqd's `--max-deflate-level` default (ledgerq does not negotiate deflate).
const MAX_DEFLATE_LEVEL: u32 = 6;

impl Info {
    pub fn new(args: &ServeArgs, tcp_address: SocketAddr, http_address: SocketAddr) -> Info {
        let hostname = hostname();
        let start_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0);
        Info {
            version: NSQ_COMPATIBLE_VERSION,
            broadcast_address: broadcast_address(&args.broadcast_address),
            hostname,
            http_port: http_address.port(),
            tcp_port: tcp_address.port(),
            start_time,
            max_heartbeat_interval: args.max_heartbeat_interval.as_nanos(),
            max_output_buffer_size: args.max_output_buffer_size,
            max_output_buffer_timeout: args.max_output_buffer_timeout.as_nanos(),
            max_deflate_level: MAX_DEFLATE_LEVEL,
        }
    }
}

/// The address a node or lookupd announces: `--broadcast-address`, or by
/// default the host name (as nsqd and nsqlookupd do).
pub fn broadcast_address(configured: &Option<String>) -> String {
    configured.clone().unwrap_or_else(hostname)
}

/// The machine's host name, as Go's `os.Hostname`.
pub fn hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the pointer and length describe `buffer`, which outlives the call.
    let status = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if status != 0 {
        return String::new();
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

/// `GET /ping`: plain `OK` (no V1 header), or 500 once a write or fsync has
/// failed (the node refuses writes from then on) or while shutting down.
pub async fn ping(State(state): State<Arc<HttpState>>) -> Response {
    match state.broker.health() {
        Ok(()) => plain_text(StatusCode::OK, "OK".to_owned()),
        Err(error) => plain_text(StatusCode::INTERNAL_SERVER_ERROR, error),
    }
}

/// `GET /info`.
pub async fn info(State(state): State<Arc<HttpState>>) -> V1Result {
    Reply::json(&state.info)
}
