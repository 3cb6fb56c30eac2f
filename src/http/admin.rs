//! `POST /topic/pause`, `/topic/unpause`, `/topic/delete`, `/topic/empty`,
//! and the same four for channels (`docs/nsq-wire.md` §5.4, §4.6).
//!
//! As in nsqd, `/topic/pause|unpause|delete` do not check the topic name (an
//! invalid name is simply not found), `/topic/empty` checks it as
//! `/topic/create` does (`INVALID_TOPIC`), and the `/channel/*` endpoints
//! check both names as `/channel/create` does. Each answers an empty 200 once the
//! change is on disk (ephemeral topics: once it is made in memory).

use std::sync::Arc;

use axum::extract::{RawQuery, State};

use super::query::Params;
use super::response::{HttpError, Reply, V1Result};
use super::topology::{broker_error, topic_channel_params, topic_param};
use super::HttpState;
use crate::broker::{AdminAction, AdminTarget};

/// `topic` as the `/topic/pause|unpause|delete` endpoints read it: present,
/// not validated.
fn existing_topic_param(params: &Params) -> Result<&str, HttpError> {
    params
        .get("topic")
        .ok_or(HttpError::bad_request("MISSING_ARG_TOPIC"))
}

async fn set_topic_paused(state: &HttpState, query: Option<String>, paused: bool) -> V1Result {
    let params = Params::parse(query.as_deref())?;
    let topic = existing_topic_param(&params)?;
    state
        .broker
        .admin(AdminTarget::Topic(topic), AdminAction::Pause(paused))
        .await
        .map_err(broker_error)?;
    Ok(Reply::Empty)
}

async fn set_channel_paused(state: &HttpState, query: Option<String>, paused: bool) -> V1Result {
    let params = Params::parse(query.as_deref())?;
    let (topic, channel) = topic_channel_params(&params)?;
    state
        .broker
        .admin(
            AdminTarget::Channel(topic, channel),
            AdminAction::Pause(paused),
        )
        .await
        .map_err(broker_error)?;
    Ok(Reply::Empty)
}

/// `POST /topic/pause?topic=T`: the topic keeps its messages.
pub async fn pause_topic(
    State(state): State<Arc<HttpState>>,
    RawQuery(query): RawQuery,
) -> V1Result {
    set_topic_paused(&state, query, true).await
}

/// `POST /topic/unpause?topic=T`: the backlog flows to the channels.
pub async fn unpause_topic(
    State(state): State<Arc<HttpState>>,
    RawQuery(query): RawQuery,
) -> V1Result {
    set_topic_paused(&state, query, false).await
}

/// `POST /topic/delete?topic=T`: the topic, its channels and its messages.
pub async fn delete_topic(
    State(state): State<Arc<HttpState>>,
    RawQuery(query): RawQuery,
) -> V1Result {
    let params = Params::parse(query.as_deref())?;
    let topic = existing_topic_param(&params)?;
    state
        .broker
        .admin(AdminTarget::Topic(topic), AdminAction::Delete)
        .await
        .map_err(broker_error)?;
    Ok(Reply::Empty)
}

/// `POST /channel/pause?topic=T&channel=C`: no deliveries until unpaused.
pub async fn pause_channel(
    State(state): State<Arc<HttpState>>,
    RawQuery(query): RawQuery,
) -> V1Result {
    set_channel_paused(&state, query, true).await
}

/// `POST /channel/unpause?topic=T&channel=C`: deliveries resume.
pub async fn unpause_channel(
    State(state): State<Arc<HttpState>>,
    RawQuery(query): RawQuery,
) -> V1Result {
    set_channel_paused(&state, query, false).await
}

/// `POST /channel/delete?topic=T&channel=C`: the channel and its messages.
pub async fn delete_channel(
    State(state): State<Arc<HttpState>>,
    RawQuery(query): RawQuery,
) -> V1Result {
    let params = Params::parse(query.as_deref())?;
    let (topic, channel) = topic_channel_params(&params)?;
    state
        .broker
        .admin(AdminTarget::Channel(topic, channel), AdminAction::Delete)
        .await
        .map_err(broker_error)?;
    Ok(Reply::Empty)
}

/// `POST /topic/empty?topic=T`: drops the messages waiting in the topic
/// (not yet handed to its channels); the channels keep theirs.
pub async fn empty_topic(
    State(state): State<Arc<HttpState>>,
    RawQuery(query): RawQuery,
) -> V1Result {
    let params = Params::parse(query.as_deref())?;
    let topic = topic_param(&params)?;
    state
        .broker
        .admin(AdminTarget::Topic(topic), AdminAction::Empty)
        .await
        .map_err(broker_error)?;
    Ok(Reply::Empty)
}

/// `POST /channel/empty?topic=T&channel=C`: drops every message the channel
/// holds, in flight and deferred included; its clients stay subscribed.
pub async fn empty_channel(
    State(state): State<Arc<HttpState>>,
    RawQuery(query): RawQuery,
) -> V1Result {
    let params = Params::parse(query.as_deref())?;
    let (topic, channel) = topic_channel_params(&params)?;
    state
        .broker
        .admin(AdminTarget::Channel(topic, channel), AdminAction::Empty)
        .await
        .map_err(broker_error)?;
    Ok(Reply::Empty)
}
