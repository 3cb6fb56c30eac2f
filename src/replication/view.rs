//! This node's view of its replica group (or that it runs alone): what
//! `GET /cluster`, the admin API's `ClusterStatus` and `/metrics` show.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use ledgerq_storage::raft::NodeId;
use openraft::ServerState;
use serde::Serialize;

use super::Replication;
use crate::broker::Broker;

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

/// The view in either mode.
pub fn cluster_view(broker: &Broker, replication: Option<&Replication>) -> ClusterView {
    if let Some(replication) = replication {
        return replicated_view(replication);
    }
    let applied = broker.log().stats().applied_index.load(Ordering::Relaxed);
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
