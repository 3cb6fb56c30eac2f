//! `GET /config/:opt` and `PUT /config/:opt` (`docs/nsq-wire.md` §5.5).
//!
//! GET reports a setting by its nsqd config-file name, as Go marshals it
//! (durations in nanoseconds, the log level as 1–5, lists as arrays). PUT
//! changes the two settings nsqd lets change at run time:
//! `nsqlookupd_tcp_addresses` (a JSON array of `host:port`; lookupd
//! connections follow at once) and `log_level` (`debug` .. `fatal`). As in
//! nsqd, a PUT body is checked (empty, or over `--max-msg-size`: 413
//! `INVALID_VALUE`) before the option name.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use serde_json::{json, Value};

use super::response::{HttpError, Reply, V1Result};
use super::{read_body, HttpState};
use crate::config::ServeArgs;
use crate::logging::level_number;

fn invalid_option() -> HttpError {
    HttpError::bad_request("INVALID_OPTION")
}

fn nanos(duration: Duration) -> Value {
    json!(duration.as_nanos() as u64)
}

/// The value of setting `name`, or `None` if there is no such setting.
fn setting(args: &ServeArgs, name: &str, lookupd: Vec<String>, log_level: &str) -> Option<Value> {
    Some(match name {
        "nsqlookupd_tcp_addresses" => json!(lookupd),
        "log_level" => json!(level_number(log_level)),
        "tcp_address" => json!(args.tcp_address.to_string()),
        "http_address" => json!(args.http_address.to_string()),
        "https_address" => json!(args.https_address.to_string()),
        "broadcast_address" => json!(super::info::broadcast_address(&args.broadcast_address)),
        "broadcast_tcp_port" => json!(args.broadcast_tcp_port),
        "broadcast_http_port" => json!(args.broadcast_http_port),
        "data_path" => json!(args.data_path.display().to_string()),
        "mem_queue_size" => json!(args.mem_queue_size),
        "msg_timeout" => nanos(args.msg_timeout),
        "max_msg_timeout" => nanos(args.max_msg_timeout),
        "max_msg_size" => json!(args.max_msg_size),
        "max_body_size" => json!(args.max_body_size),
        "max_req_timeout" => nanos(args.max_req_timeout),
        "max_rdy_count" => json!(args.max_rdy_count),
        "max_heartbeat_interval" => nanos(args.max_heartbeat_interval),
        "max_output_buffer_size" => json!(args.max_output_buffer_size),
        "max_output_buffer_timeout" => nanos(args.max_output_buffer_timeout),
        "min_output_buffer_timeout" => nanos(args.min_output_buffer_timeout),
        "output_buffer_timeout" => nanos(args.output_buffer_timeout),
        "max_channel_consumers" => json!(args.max_channel_consumers),
        "http_read_timeout" => nanos(args.http_read_timeout),
        "finish_sync_interval" => nanos(args.finish_sync_interval),
        "unsafe_no_fsync" => json!(args.unsafe_no_fsync),
        "auth_http_addresses" => json!(args.auth.auth_http_addresses),
        "auth_http_request_method" => json!(args.auth.auth_http_request_method.name()),
        "http_client_connect_timeout" => nanos(args.auth.http_client_connect_timeout),
        "http_client_request_timeout" => nanos(args.auth.http_client_request_timeout),
        "http_publish_auth" => json!(args.auth.http_publish_auth),
        _ => return None,
    })
}

fn current(state: &HttpState, name: &str) -> V1Result {
    let log_level = state.log_level();
    let value = setting(
        &state.args,
        name,
        state.lookup_peers.addresses(),
        &log_level,
    )
    .ok_or_else(invalid_option)?;
    Reply::json(&value)
}

/// `GET /config/:opt`.
pub async fn get_config(State(state): State<Arc<HttpState>>, Path(name): Path<String>) -> V1Result {
    current(&state, &name)
}

/// `PUT /config/:opt`.
pub async fn put_config(
    State(state): State<Arc<HttpState>>,
    Path(name): Path<String>,
    body: Body,
) -> V1Result {
    let limit = state.max_msg_size as usize + 1;
    let body = read_body(body, limit, state.read_timeout).await?;
    if body.is_empty() || body.len() == limit {
        return Err(HttpError::too_large("INVALID_VALUE"));
    }
    let invalid_value = || HttpError::bad_request("INVALID_VALUE");
    match name.as_str() {
        "nsqlookupd_tcp_addresses" => {
            let addresses: Vec<String> =
                serde_json::from_slice(&body).map_err(|_| invalid_value())?;
            tracing::info!(?addresses, "lookupd addresses changed");
            state.lookup_peers.set_addresses(addresses);
        }
        "log_level" => {
            let text = std::str::from_utf8(&body).map_err(|_| invalid_value())?;
            level_number(text).ok_or_else(invalid_value)?;
            let level = text.trim().to_ascii_lowercase();
            if let Some(control) = &state.args.log_control {
                control.set(&level).map_err(|_| HttpError::internal())?;
            }
            *state.log_level.lock().unwrap_or_else(|p| p.into_inner()) = level;
        }
        _ => return Err(invalid_option()),
    }
    current(&state, &name)
}
