//! `GET /cluster`: this node's view of its replica group (or that it runs
//! alone); `POST /cluster/add` and `POST /cluster/remove`: membership
//! changes, on any member, answered once committed; `PUT /cluster/faults`
//! (tests only: cut or delay raft links).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use ledgerq_storage::raft::NodeId;

use super::query::Params;
use super::response::{HttpError, Reply, V1Result};
use super::HttpState;
use crate::replication::membership::{self, Change, ChangeError};
use crate::replication::view::cluster_view;
use crate::replication::Replication;

/// `GET /cluster`.
pub async fn cluster(State(state): State<Arc<HttpState>>) -> V1Result {
    Reply::json(&cluster_view(&state.broker, state.replication.as_deref()))
}

fn replication(state: &HttpState) -> Result<&Arc<Replication>, HttpError> {
    state
        .replication
        .as_ref()
        .ok_or(HttpError::bad_request("NOT_REPLICATED"))
}

fn node_id_param(params: &Params) -> Result<NodeId, HttpError> {
    let text = params
        .get("node_id")
        .ok_or(HttpError::bad_request("MISSING_ARG_NODE_ID"))?;
    match text.parse() {
        Ok(0) | Err(_) => Err(HttpError::bad_request("INVALID_ARG_NODE_ID")),
        Ok(id) => Ok(id),
    }
}

async fn apply_change(replication: &Replication, change: Change) -> V1Result {
    match membership::change(replication, change).await {
        Ok(_) => Ok(Reply::Text("OK")),
        Err(ChangeError::NoLeader) => Err(HttpError::no_leader()),
        Err(error @ ChangeError::BadMember(_)) => {
            tracing::warn!(%error, "membership change refused");
            Err(HttpError::bad_request("BAD_MEMBER"))
        }
        Err(error @ ChangeError::Refused(_)) => {
            tracing::warn!(%error, "membership change refused");
            Err(HttpError::bad_request("MEMBERSHIP_CHANGE_REFUSED"))
        }
    }
}

/// `POST /cluster/add?node_id=N&grpc_address=HOST:PORT`: the node (started
/// with `--node-id N` and an empty data dir) joins as a learner, catches
/// up, and becomes a voter.
pub async fn add(State(state): State<Arc<HttpState>>, RawQuery(query): RawQuery) -> V1Result {
    let replication = replication(&state)?;
    let params = Params::parse(query.as_deref())?;
    let node_id = node_id_param(&params)?;
    let grpc_address = params
        .get("grpc_address")
        .ok_or(HttpError::bad_request("MISSING_ARG_GRPC_ADDRESS"))?;
    if !crate::replication::config::is_host_port(grpc_address) {
        return Err(HttpError::bad_request("INVALID_ARG_GRPC_ADDRESS"));
    }
    let change = Change::Add {
        node_id,
        grpc_address: grpc_address.to_owned(),
    };
    apply_change(replication, change).await
}

/// `POST /cluster/remove?node_id=N`: the member leaves the group.
pub async fn remove(State(state): State<Arc<HttpState>>, RawQuery(query): RawQuery) -> V1Result {
    let replication = replication(&state)?;
    let params = Params::parse(query.as_deref())?;
    let node_id = node_id_param(&params)?;
    apply_change(replication, Change::Remove { node_id }).await
}

/// `PUT /cluster/faults?cut=2,3&delay_ms=0`: cuts this node's raft links to
/// the listed members (both directions, as far as this node is concerned)
/// and delays its outgoing RPCs. Only with `--enable-fault-injection`.
pub async fn faults(State(state): State<Arc<HttpState>>, RawQuery(query): RawQuery) -> V1Result {
    let replication = match &state.replication {
        Some(r) if r.fault_injection => r,
        _ => return Err(HttpError::not_found("NOT_FOUND")),
    };
    let params = Params::parse(query.as_deref())?;
    let cut = params
        .get("cut")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<BTreeSet<NodeId>, _>>()
        .map_err(|_| HttpError::bad_request("INVALID_ARG_CUT"))?;
    let delay_ms = match params.get("delay_ms") {
        Some(text) => text
            .parse()
            .map_err(|_| HttpError::bad_request("INVALID_ARG_DELAY_MS"))?,
        None => 0,
    };
    replication.faults.set(cut, delay_ms);
    Ok(Reply::Text("OK"))
}
