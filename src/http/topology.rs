//! `POST /topic/create` and `POST /channel/create`, and the topic and
//! channel parameter rules shared with the publish endpoints.

use std::sync::Arc;

use axum::extract::{RawQuery, State};

use super::query::Params;
use super::response::{HttpError, Reply, V1Result};
use super::HttpState;
use crate::broker::BrokerError;
use crate::protocol::names::{is_valid_channel_name, is_valid_topic_name};

/// The `topic` parameter as `/pub`, `/mpub` and `/topic/create` check it.
pub fn topic_param(params: &Params) -> Result<&str, HttpError> {
    let topic = params
        .get("topic")
        .ok_or(HttpError::bad_request("MISSING_ARG_TOPIC"))?;
    if !is_valid_topic_name(topic) {
        return Err(HttpError::bad_request("INVALID_TOPIC"));
    }
    Ok(topic)
}

/// `topic` and `channel` as the `/channel/*` endpoints check them (note
/// nsqd's other spelling: `INVALID_ARG_TOPIC`).
pub fn topic_channel_params(params: &Params) -> Result<(&str, &str), HttpError> {
    let topic = params
        .get("topic")
        .ok_or(HttpError::bad_request("MISSING_ARG_TOPIC"))?;
    if !is_valid_topic_name(topic) {
        return Err(HttpError::bad_request("INVALID_ARG_TOPIC"));
    }
    let channel = params
        .get("channel")
        .ok_or(HttpError::bad_request("MISSING_ARG_CHANNEL"))?;
    if !is_valid_channel_name(channel) {
        return Err(HttpError::bad_request("INVALID_ARG_CHANNEL"));
    }
    Ok((topic, channel))
}

/// A broker failure as nsqd would report it.
pub fn broker_error(error: BrokerError) -> HttpError {
    match error {
        BrokerError::Exiting => HttpError::exiting(),
        BrokerError::NoLeader => HttpError::no_leader(),
        BrokerError::TopicNotFound => HttpError::not_found("TOPIC_NOT_FOUND"),
        BrokerError::ChannelNotFound => HttpError::not_found("CHANNEL_NOT_FOUND"),
        BrokerError::Storage(_)
        | BrokerError::Rejected(_)
        | BrokerError::DeletedWhileSubscribing
        | BrokerError::TooManyConsumers { .. } => {
            tracing::warn!(%error, "HTTP request failed");
            HttpError::internal()
        }
    }
}

/// `POST /topic/create?topic=T`: creates the topic (idempotent).
pub async fn create_topic(
    State(state): State<Arc<HttpState>>,
    RawQuery(query): RawQuery,
) -> V1Result {
    let params = Params::parse(query.as_deref())?;
    let topic = topic_param(&params)?;
    state
        .broker
        .ensure_topic(topic)
        .await
        .map_err(broker_error)?;
    Ok(Reply::Empty)
}

/// `POST /channel/create?topic=T&channel=C`: the topic must exist.
pub async fn create_channel(
    State(state): State<Arc<HttpState>>,
    RawQuery(query): RawQuery,
) -> V1Result {
    let params = Params::parse(query.as_deref())?;
    let (topic, channel) = topic_channel_params(&params)?;
    if !state.broker.has_topic(topic) {
        return Err(HttpError::not_found("TOPIC_NOT_FOUND"));
    }
    state
        .broker
        .ensure_channel(topic, channel)
        .await
        .map_err(broker_error)?;
    Ok(Reply::Empty)
}
