//! `GET /cluster`: this node's view of its replica group (or that it runs
//! alone); `POST /cluster/add` and `POST /cluster/remove`: membership
//! changes, on any member, answered once committed; `PUT /cluster/faults`
//! (tests only: cut or delay raft links).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use ledgerq_storage::raft::NodeId;
use openraft::ServerState;
use serde::Serialize;

use super::query::Params;
use super::response::{HttpError, Reply, V1Result};
use super::HttpState;
use crate::replication::membership::{self, Change, ChangeError};
use crate::replication::Replication;

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ClusterView {
    /// "single" or "replicated".
    pub mode: &'static str,
    pub node_id: Option<NodeId>,
    /// "leader", "follower", "candidate", "learner" (or "shutdown").
    pub role: &'static str,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    /// On the leader: the highest raft index a majority of voters holds;
    /// elsewhere: the highest index known applied (a lower bound).
    pub committed_index: u64,
    pub applied_index: u64,
    pub cluster_id: Option<String>,
    pub members: Vec<MemberView>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct MemberView {
    pub node_id: NodeId,
    pub grpc_address: String,
    pub tcp_address: String,
    pub http_address: String,
    pub voter: bool,
    /// Leader only: the last raft index the member is known to hold, and
    /// how far it is behind the leader's last index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
}

/// The role's name in `/cluster` and `/metrics`.
pub fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

/// The index a majority of `voters` hold, given what each matched.
pub fn majority_index(voters: &BTreeSet<NodeId>, matched: &BTreeMap<NodeId, u64>) -> u64 {
    let mut indexes: Vec<u64> = voters
        .iter()
        .map(|id| matched.get(id).copied().unwrap_or(0))
        .collect();
    if indexes.is_empty() {
        return 0;
    }
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    indexes[indexes.len() / 2]
}

pub fn replicated_view(replication: &Replication) -> ClusterView {
    let metrics = replication.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let matched: Option<BTreeMap<NodeId, u64>> = metrics.replication.as_ref().map(|r| {
        r.iter()
            .map(|(id, log_id)| (*id, log_id.map(|l| l.index).unwrap_or(0)))
            .collect()
    });
    let applied_index = metrics.last_applied.map(|l| l.index).unwrap_or(0);
    let last_index = metrics.last_log_index.unwrap_or(0);
    let committed_index = match &matched {
        Some(matched) => majority_index(&voters, matched),
        None => applied_index,
    };
    let members = membership
        .nodes()
        .map(|(id, member)| {
            let matched_index = matched.as_ref().map(|m| m.get(id).copied().unwrap_or(0));
            MemberView {
                node_id: *id,
                grpc_address: member.grpc_address.clone(),
                tcp_address: member.tcp_address.clone(),
                http_address: member.http_address.clone(),
                voter: voters.contains(id),
                matched_index,
                lag: matched_index.map(|m| last_index.saturating_sub(m)),
            }
        })
        .collect();
    let cluster_id = replication.peers.identity().cluster_id();
    ClusterView {
        mode: "replicated",
        node_id: Some(replication.config.node_id),
        role: role_name(metrics.state),
        leader_id: metrics.current_leader,
        term: metrics.current_term,
        committed_index,
        applied_index,
        cluster_id: (!cluster_id.is_empty()).then_some(cluster_id),
        members,
    }
}

/// `GET /cluster`.
pub async fn cluster(State(state): State<Arc<HttpState>>) -> V1Result {
    let view = match &state.replication {
        Some(replication) => replicated_view(replication),
        None => {
            let applied = state
                .broker
                .log()
                .stats()
                .applied_index
                .load(Ordering::Relaxed);
            ClusterView {
                mode: "single",
                node_id: None,
                role: "leader",
                leader_id: None,
                term: 0,
                committed_index: applied,
                applied_index: applied,
                cluster_id: None,
                members: Vec::new(),
            }
        }
    };
    Reply::json(&view)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_majority_index_is_what_most_voters_hold() {
        let voters = BTreeSet::from([1, 2, 3]);
        let matched = BTreeMap::from([(1, 10), (2, 7), (3, 3)]);
        assert_eq!(majority_index(&voters, &matched), 7);
        let matched = BTreeMap::from([(1, 10)]);
        assert_eq!(majority_index(&voters, &matched), 0);
        let five = BTreeSet::from([1, 2, 3, 4, 5]);
        let matched = BTreeMap::from([(1, 9), (2, 9), (3, 8), (4, 1), (5, 0)]);
        assert_eq!(majority_index(&five, &matched), 8);
        assert_eq!(majority_index(&BTreeSet::new(), &matched), 0);
    }
}
