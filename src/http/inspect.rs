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

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Serialize;

use super::forward;
use super::query::Params;
use super::response::{HttpError, Reply};
use super::topology::{broker_error, topic_channel_params, topic_param};
use super::HttpState;
use crate::broker::inspect::{
    ChannelPosition, Holder, Inspected, MessageReport, Peeked, Position, MAX_PEEK_COUNT,
};
use crate::broker::BrokerError;

/// How many messages a peek returns without `count`.
pub const DEFAULT_PEEK_COUNT: usize = 1;

/// A message body as inspection shows it.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct BodyJson {
    /// Base64 (standard alphabet, padded) of the body, or of its first
    /// `BODY_LIMIT_BYTES`.
    body: String,
    /// The same bytes as text, when they are UTF-8 (a character cut by the
    /// truncation is left out).
    #[serde(skip_serializing_if = "Option::is_none")]
    body_text: Option<String>,
    body_size: usize,
    body_truncated: bool,
}

#[derive(Debug, Serialize)]
struct PeekedJson {
    id: String,
    offset: u64,
    /// Deliveries so far; the next one carries one more.
    attempts: u16,
    /// Publish time, ns since the epoch.
    timestamp: i64,
    /// "ready", "deferred" or "in_topic".
    state: &'static str,
    /// Deferred: not delivered before this time, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    deliver_at: Option<u64>,
    #[serde(flatten)]
    body: BodyJson,
}

#[derive(Debug, Serialize)]
struct PeekJson<'a> {
    topic: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    messages: Vec<PeekedJson>,
}

#[derive(Debug, Serialize)]
struct ChannelJson {
    channel: String,
    /// "in_topic", "ready", "deferred", "in_flight" or "finished".
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deliver_at: Option<u64>,
    /// In flight: when it times out, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    deadline: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_address: Option<String>,
}

#[derive(Debug, Serialize)]
struct MessageJson<'a> {
    topic: &'a str,
    id: String,
    offset: u64,
    timestamp: i64,
    /// Published deferred (DPUB): not before this time, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    deliver_at: Option<u64>,
    #[serde(flatten)]
    body: BodyJson,
    channels: Vec<ChannelJson>,
}

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
    Ok(Reply::json(&message_json(topic, report))?.into_response())
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
    let messages = peeked.into_iter().map(peeked_json).collect();
    let json = PeekJson {
        topic,
        channel,
        messages,
    };
    Ok(Reply::json(&json)?.into_response())
}

fn peeked_json(peeked: Peeked) -> PeekedJson {
    let Peeked { message, position } = peeked;
    let (state, attempts, deliver_at) = match position {
        Position::InTopic => ("in_topic", 0, None),
        Position::Ready { attempts } => ("ready", attempts, None),
        Position::Deferred {
            attempts,
            deliver_at_ms,
        } => ("deferred", attempts, Some(deliver_at_ms)),
        Position::InFlight { .. } | Position::Finished => {
            unreachable!("a peek lists only what is still to be delivered")
        }
    };
    PeekedJson {
        id: id_text(&message),
        offset: message.offset,
        attempts,
        timestamp: message.timestamp_ns,
        state,
        deliver_at,
        body: body_json(&message),
    }
}

fn message_json(topic: &str, report: MessageReport) -> MessageJson<'_> {
    let MessageReport {
        message,
        published_deliver_at_ms,
        channels,
    } = report;
    MessageJson {
        topic,
        id: id_text(&message),
        offset: message.offset,
        timestamp: message.timestamp_ns,
        deliver_at: (published_deliver_at_ms != 0).then_some(published_deliver_at_ms),
        body: body_json(&message),
        channels: channels.into_iter().map(channel_json).collect(),
    }
}

fn channel_json(found: ChannelPosition) -> ChannelJson {
    let ChannelPosition {
        channel,
        position,
        holder,
    } = found;
    let mut json = ChannelJson {
        channel,
        state: "in_topic",
        attempts: None,
        deliver_at: None,
        deadline: None,
        client_id: None,
        hostname: None,
        remote_address: None,
    };
    match position {
        Position::InTopic => {}
        Position::Finished => json.state = "finished",
        Position::Ready { attempts } => (json.state, json.attempts) = ("ready", Some(attempts)),
        Position::Deferred {
            attempts,
            deliver_at_ms,
        } => {
            (json.state, json.attempts) = ("deferred", Some(attempts));
            json.deliver_at = Some(deliver_at_ms);
        }
        Position::InFlight {
            attempts,
            deadline_ms,
            ..
        } => {
            (json.state, json.attempts) = ("in_flight", Some(attempts));
            json.deadline = Some(deadline_ms);
        }
    }
    if let Some(Holder {
        client_id,
        hostname,
        remote_address,
    }) = holder
    {
        json.client_id = Some(client_id);
        json.hostname = Some(hostname);
        json.remote_address = Some(remote_address);
    }
    json
}

fn id_text(message: &Inspected) -> String {
    String::from_utf8_lossy(&message.id).into_owned()
}

fn body_json(message: &Inspected) -> BodyJson {
    let truncated = message.body_truncated();
    BodyJson {
        body: base64::engine::general_purpose::STANDARD.encode(&message.body),
        body_text: body_text(&message.body, truncated).map(str::to_owned),
        body_size: message.body_size_bytes,
        body_truncated: truncated,
    }
}

/// `bytes` as text if they are UTF-8; when `truncated`, a character cut at
/// the end does not count against them (it is left out).
fn body_text(bytes: &[u8], truncated: bool) -> Option<&str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Some(text),
        Err(error) if truncated && error.error_len().is_none() => {
            std::str::from_utf8(&bytes[..error.valid_up_to()]).ok()
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::inspect::BODY_LIMIT_BYTES;

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

    #[test]
    fn body_text_only_for_utf8_and_a_cut_character_is_left_out() {
        assert_eq!(body_text(b"invoice 4711", false), Some("invoice 4711"));
        assert_eq!(body_text(&[0xff, 0x00], false), None);
        let euro = "a€".as_bytes();
        assert_eq!(body_text(&euro[..2], true), Some("a"));
        assert_eq!(
            body_text(&euro[..2], false),
            None,
            "whole bodies must be UTF-8"
        );
        assert_eq!(body_text(&[b'a', 0xff, b'b'], true), None);
    }

    #[test]
    fn big_bodies_are_cut_with_their_size() {
        let body = bytes::Bytes::from(vec![b'x'; BODY_LIMIT_BYTES + 10]);
        let message = crate::broker::message::Message::new(1, 2, 3, 0, body);
        let json = body_json(&Inspected::new(&message));
        assert_eq!(json.body_size, BODY_LIMIT_BYTES + 10);
        assert!(json.body_truncated);
        assert_eq!(json.body_text.map(|t| t.len()), Some(BODY_LIMIT_BYTES));
        let decoded = base64::engine::general_purpose::STANDARD.decode(&json.body);
        assert_eq!(decoded.unwrap().len(), BODY_LIMIT_BYTES);
    }
}
