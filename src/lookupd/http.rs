//! nsqlookupd's HTTP API (`docs/nsq-wire.md` §6.4), with nsqd's V1 response shapes
//! (shared with [`crate::http::response`]): `/ping`, `/info`, `/lookup`,
//! `/topics`, `/channels`, `/nodes`, `/debug`, and the registry edits
//! `/topic/create|delete|tombstone` and `/channel/create|delete`.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;

use super::registry::{PeerInfo, Registration};
use super::LookupdState;
use crate::clock;
use crate::http::query::Params;
use crate::http::response::{self, plain_text, HttpError, Reply, V1Result};
use crate::http::topology::topic_channel_params;
use crate::protocol::names::is_valid_topic_name;

/// Every route, with nsqlookupd's 404 and 405 replies.
pub fn router(state: Arc<LookupdState>) -> Router {
    let not_allowed = response::method_not_allowed;
    Router::new()
        .route("/ping", get(ping).fallback(not_allowed))
        .route("/info", get(info).fallback(not_allowed))
        .route("/debug", get(debug).fallback(not_allowed))
        .route("/lookup", get(lookup).fallback(not_allowed))
        .route("/topics", get(topics).fallback(not_allowed))
        .route("/channels", get(channels).fallback(not_allowed))
        .route("/nodes", get(nodes).fallback(not_allowed))
        .route("/topic/create", post(create_topic).fallback(not_allowed))
        .route("/topic/delete", post(delete_topic).fallback(not_allowed))
        .route("/topic/tombstone", post(tombstone).fallback(not_allowed))
        .route(
            "/channel/create",
            post(create_channel).fallback(not_allowed),
        )
        .route(
            "/channel/delete",
            post(delete_channel).fallback(not_allowed),
        )
        .fallback(response::not_found)
        .with_state(state)
}

type Shared = State<Arc<LookupdState>>;

fn topic_arg(params: &Params) -> Result<&str, HttpError> {
    params
        .get("topic")
        .ok_or(HttpError::bad_request("MISSING_ARG_TOPIC"))
}

async fn ping() -> Response {
    plain_text(StatusCode::OK, "OK".to_owned())
}

async fn info(State(state): Shared) -> V1Result {
    #[derive(Serialize)]
    struct Info<'a> {
        version: &'a str,
    }
    Reply::json(&Info {
        version: &state.info.version,
    })
}

async fn debug(State(state): Shared) -> V1Result {
    Reply::json(&state.registry().debug())
}

/// `GET /lookup?topic=T`: the topic's channels and its live producers.
async fn lookup(State(state): Shared, RawQuery(query): RawQuery) -> V1Result {
    #[derive(Serialize)]
    struct Lookup {
        channels: Vec<String>,
        producers: Vec<PeerInfo>,
    }
    let params = Params::parse(query.as_deref())?;
    let topic = topic_arg(&params)?;
    let registry = state.registry();
    if !registry.has_topic(topic) {
        return Err(HttpError::not_found("TOPIC_NOT_FOUND"));
    }
    let found = Lookup {
        channels: registry.channels(topic),
        producers: registry.lookup(topic, clock::now_ns(), state.lifetimes),
    };
    drop(registry);
    Reply::json(&found)
}

async fn topics(State(state): Shared) -> V1Result {
    #[derive(Serialize)]
    struct Topics {
        topics: Vec<String>,
    }
    let topics = state.registry().topics();
    Reply::json(&Topics { topics })
}

async fn channels(State(state): Shared, RawQuery(query): RawQuery) -> V1Result {
    #[derive(Serialize)]
    struct Channels {
        channels: Vec<String>,
    }
    let params = Params::parse(query.as_deref())?;
    let topic = topic_arg(&params)?;
    let channels = state.registry().channels(topic);
    Reply::json(&Channels { channels })
}

async fn nodes(State(state): Shared) -> V1Result {
    #[derive(Serialize)]
    struct Nodes {
        producers: Vec<super::registry::Node>,
    }
    let producers = state.registry().nodes(clock::now_ns(), state.lifetimes);
    Reply::json(&Nodes { producers })
}

async fn create_topic(State(state): Shared, RawQuery(query): RawQuery) -> V1Result {
    let params = Params::parse(query.as_deref())?;
    let topic = topic_arg(&params)?;
    if !is_valid_topic_name(topic) {
        return Err(HttpError::bad_request("INVALID_ARG_TOPIC"));
    }
    state
        .registry()
        .add_registration(Registration::topic(topic));
    Ok(Reply::Empty)
}

async fn delete_topic(State(state): Shared, RawQuery(query): RawQuery) -> V1Result {
    let params = Params::parse(query.as_deref())?;
    let topic = topic_arg(&params)?;
    state.registry().remove_topic(topic);
    Ok(Reply::Empty)
}

async fn tombstone(State(state): Shared, RawQuery(query): RawQuery) -> V1Result {
    let params = Params::parse(query.as_deref())?;
    let topic = topic_arg(&params)?;
    let node = params
        .get("node")
        .ok_or(HttpError::bad_request("MISSING_ARG_NODE"))?;
    state.registry().tombstone(topic, node, clock::now_ns());
    Ok(Reply::Empty)
}

async fn create_channel(State(state): Shared, RawQuery(query): RawQuery) -> V1Result {
    let params = Params::parse(query.as_deref())?;
    let (topic, channel) = topic_channel_params(&params)?;
    let mut registry = state.registry();
    registry.add_registration(Registration::channel(topic, channel));
    registry.add_registration(Registration::topic(topic));
    Ok(Reply::Empty)
}

async fn delete_channel(State(state): Shared, RawQuery(query): RawQuery) -> V1Result {
    let params = Params::parse(query.as_deref())?;
    let (topic, channel) = topic_channel_params(&params)?;
    if !state
        .registry()
        .remove_registration(&Registration::channel(topic, channel))
    {
        return Err(HttpError::not_found("CHANNEL_NOT_FOUND"));
    }
    Ok(Reply::Empty)
}
