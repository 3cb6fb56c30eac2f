//! `GET /channel/peek`, `GET /topic/peek` and `GET /message`: what a
//! channel would deliver next, what waits in a topic, and where one message
//! stands in each channel, without changing anything (`broker/inspect.rs`).
//!
//! Bad parameters are 400 with nsqd-style texts (`MISSING_ARG_TOPIC`,
//! `INVALID_COUNT`, `INVALID_ID`, ...); a topic, channel or message that
//! does not exist is 404 (`TOPIC_NOT_FOUND`, `CHANNEL_NOT_FOUND`,
//! `MESSAGE_NOT_FOUND`), as nsqd answers a missing topic. Bodies are base64
//! (`body`), also as text when they are UTF-8 (`body_text`), cut at
//! [`BODY_LIMIT_BYTES`](crate::broker::inspect::BODY_LIMIT_BYTES) with their full size (`body_size`,
//! `body_truncated`). In redundancy mode a follower forwards to the leader
//! (`forward.rs`).

use std::sync::Arc;

use super::forward;
use super::query::Params;
use super::response::{HttpError, Reply};
use super::topology::{broker_error, topic_channel_params, topic_param};
use super::HttpState;
use crate::broker::inspect::{Peeked, MAX_PEEK_COUNT};
use crate::broker::BrokerError;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};

mod json;

/// How many messages a peek returns without `count`.
pub const DEFAULT_PEEK_COUNT: usize = 1;

/// `GET /channel/peek?topic=T&channel=C&count=N`.
pub async fn peek_channel(
    State(state): State<Arc<HttpState>>,
    RawQuery(query): RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let answer = channel_peek(&state, query.as_deref(), &uri, &headers).await;
    answer.unwrap_or_else(IntoResponse::into_response)
}

async fn channel_peek(
    state: &HttpState,
    query: Option<&str>,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, HttpError> {
    let params = Params::parse(query)?;
    let (topic, channel) = topic_channel_params(&params)?;
    let count = count_param(&params)?;
    if let Some(forwarded) = forward::elsewhere(state, topic, uri, headers).await {
        return Ok(forwarded);
    }
    let (t, c) = (topic.to_owned(), channel.to_owned());
    let broker = state.broker.clone();
    let peeked = blocking(move || broker.peek_channel(&t, &c, count)).await?;
    peek_reply(topic, Some(channel), peeked)
}

/// `GET /topic/peek?topic=T&count=N`.
pub async fn peek_topic(
    State(state): State<Arc<HttpState>>,
    RawQuery(query): RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let answer = topic_peek(&state, query.as_deref(), &uri, &headers).await;
    answer.unwrap_or_else(IntoResponse::into_response)
}

async fn topic_peek(
    state: &HttpState,
    query: Option<&str>,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, HttpError> {
    let params = Params::parse(query)?;
    let topic = topic_param(&params)?;
    let count = count_param(&params)?;
    if let Some(forwarded) = forward::elsewhere(state, topic, uri, headers).await {
        return Ok(forwarded);
    }
    let t = topic.to_owned();
    let broker = state.broker.clone();
    let peeked = blocking(move || broker.peek_topic(&t, count)).await?;
    peek_reply(topic, None, peeked)
}

/// `GET /message?topic=T&id=ID`.
pub async fn message(
    State(state): State<Arc<HttpState>>,
    RawQuery(query): RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let answer = message_report(&state, query.as_deref(), &uri, &headers).await;
    answer.unwrap_or_else(IntoResponse::into_response)
}

async fn message_report(
    state: &HttpState,
    query: Option<&str>,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, HttpError> {
    let params = Params::parse(query)?;
    let topic = topic_param(&params)?;
    let id = id_param(&params)?;
    if let Some(forwarded) = forward::elsewhere(state, topic, uri, headers).await {
        return Ok(forwarded);
    }
    let t = topic.to_owned();
    let broker = state.broker.clone();
    let report = blocking(move || broker.inspect_message(&t, &id)).await?;
    let report = report.ok_or(HttpError::not_found("MESSAGE_NOT_FOUND"))?;
    Ok(Reply::json(&json::message(topic, report))?.into_response())
}

/// Runs a store-reading broker call off the async workers.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, BrokerError> + Send + 'static,
) -> Result<T, HttpError> {
    let joined = tokio::task::spawn_blocking(call).await;
    joined
        .map_err(|_| HttpError::internal())?
        .map_err(broker_error)
}

/// `count`: 1 to [`MAX_PEEK_COUNT`], [`DEFAULT_PEEK_COUNT`] when absent.
fn count_param(params: &Params) -> Result<usize, HttpError> {
    let Some(text) = params.get("count") else {
        return Ok(DEFAULT_PEEK_COUNT);
    };
    match text.parse::<usize>() {
        Ok(count) if (1..=MAX_PEEK_COUNT).contains(&count) => Ok(count),
        _ => Err(HttpError::bad_request("INVALID_COUNT")),
    }
}

/// `id`: a message ID, 16 hex digits (as every delivery shows it).
fn id_param(params: &Params) -> Result<[u8; 16], HttpError> {
    let text = params
        .get("id")
        .ok_or(HttpError::bad_request("MISSING_ARG_ID"))?;
    let invalid = || HttpError::bad_request("INVALID_ID");
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    let id: [u8; 16] = text
        .to_ascii_lowercase()
        .into_bytes()
        .try_into()
        .map_err(|_| invalid())?;
    Ok(id)
}

fn peek_reply(
    topic: &str,
    channel: Option<&str>,
    peeked: Vec<Peeked>,
) -> Result<Response, HttpError> {
    Ok(Reply::json(&json::peek(topic, channel, peeked))?.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> Params {
        Params::parse(Some(query)).unwrap()
    }

    #[test]
    fn count_is_one_to_a_hundred() {
        assert_eq!(count_param(&params("")), Ok(DEFAULT_PEEK_COUNT));
        assert_eq!(count_param(&params("count=100")), Ok(100));
        for bad in ["count=0", "count=101", "count=-1", "count=x", "count="] {
            let error = count_param(&params(bad)).unwrap_err();
            assert_eq!(error.message, "INVALID_COUNT", "{bad}");
        }
    }

    #[test]
    fn ids_are_sixteen_hex_digits() {
        assert_eq!(
            &id_param(&params("id=00010000000000FF")).unwrap(),
            b"00010000000000ff"
        );
        assert_eq!(id_param(&params("")).unwrap_err().message, "MISSING_ARG_ID");
        for bad in [
            "id=",
            "id=0001",
            "id=00010000000000fff",
            "id=000100000000000g",
        ] {
            assert_eq!(
                id_param(&params(bad)).unwrap_err().message,
                "INVALID_ID",
                "{bad}"
            );
        }
    }
}
