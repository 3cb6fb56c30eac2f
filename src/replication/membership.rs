//! Replacing members without downtime: add a node (first a learner that
//! catches up from the leader's log or a snapshot, then a voter) or remove
//! one. Runs on the leader; any other member passes the request to the
//! leader over gRPC (`ChangeMembership`). Answered once the new membership
//! is committed.

use std::collections::BTreeSet;
use std::time::Duration;

use ledgerq_storage::raft::{log_id_from_pb, log_id_to_pb, LogId, Member, NodeId};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};

use super::rpc::pb;
use super::Replication;

/// A membership change asked for by an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Add {
        node_id: NodeId,
        grpc_address: String,
    },
    Remove {
        node_id: NodeId,
    },
}

/// Why a membership change was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// No leader could be reached in time.
    #[error("no leader")]
    NoLeader,
    /// The node to add did not answer, or answered as another node or
    /// cluster.
    #[error("{0}")]
    BadMember(String),
    /// Raft refused the change (e.g. removing the last voter).
    #[error("{0}")]
    Refused(String),
}

const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(50);

/// Makes `change` on the leader, from any member.
pub async fn change(replication: &Replication, change: Change) -> Result<LogId, ChangeError> {
    let deadline = tokio::time::Instant::now() + replication.config.forward_timeout;
    loop {
        let (state, leader) = {
            let metrics = replication.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.state, metrics.current_leader)
        };
        let attempt = match leader {
            Some(_) if state == ServerState::Leader => Some(on_leader(replication, &change).await),
            Some(leader) => ask_leader(replication, leader, &change).await,
            None => None,
        };
        match attempt {
            Some(Ok(log_id)) => return Ok(log_id),
            Some(Err(ChangeError::NoLeader)) | None => {}
            Some(Err(error)) => return Err(error),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ChangeError::NoLeader);
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// The change, made here (this node leads).
pub async fn on_leader(replication: &Replication, change: &Change) -> Result<LogId, ChangeError> {
    let raft = &replication.raft;
    let written = match change {
        Change::Add {
            node_id,
            grpc_address,
        } => {
            let member = new_member(replication, *node_id, grpc_address).await?;
            tracing::info!(node_id, grpc_address, "adding a member: learner first");
            raft.add_learner(*node_id, member, true)
                .await
                .map_err(refused)?;
            tracing::info!(node_id, "learner caught up: making it a voter");
            raft.change_membership(
                ChangeMembers::AddVoterIds(BTreeSet::from([*node_id])),
                false,
            )
            .await
        }
        Change::Remove { node_id } => {
            tracing::info!(node_id, "removing a member");
            raft.change_membership(
                ChangeMembers::RemoveVoters(BTreeSet::from([*node_id])),
                false,
            )
            .await
        }
    };
    written.map(|response| response.log_id).map_err(refused)
}

fn refused(error: RaftError<NodeId, ClientWriteError<NodeId, Member>>) -> ChangeError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => ChangeError::NoLeader,
        other => ChangeError::Refused(other.to_string()),
    }
}

/// Greets the node to add (it adopts this cluster's id) and learns its
/// TCP and HTTP addresses.
async fn new_member(
    replication: &Replication,
    node_id: NodeId,
    grpc_address: &str,
) -> Result<Member, ChangeError> {
    let hello = replication
        .peers
        .hello(grpc_address, true, HELLO_TIMEOUT)
        .await
        .map_err(|e| {
            ChangeError::BadMember(format!("node at {grpc_address} did not answer: {e}"))
        })?;
    if hello.node_id != node_id {
        return Err(ChangeError::BadMember(format!(
            "the node at {grpc_address} is node {}, not {node_id}",
            hello.node_id
        )));
    }
    let ours = replication.peers.identity().cluster_id();
    if hello.cluster_id != ours {
        return Err(ChangeError::BadMember(format!(
            "node {node_id} belongs to cluster {:?}, not {ours}",
            hello.cluster_id
        )));
    }
    let announced = hello.member.unwrap_or_default();
    Ok(Member {
        grpc_address: grpc_address.to_owned(),
        tcp_address: announced.tcp_address,
        http_address: announced.http_address,
    })
}

/// Passes the change to the leader; `None` when it could not be reached.
async fn ask_leader(
    replication: &Replication,
    leader: NodeId,
    change: &Change,
) -> Option<Result<LogId, ChangeError>> {
    let address = {
        let metrics = replication.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&leader)?
            .grpc_address
            .clone()
    };
    let mut client = replication.peers.client(&address).ok()?;
    let request = to_pb(replication, change);
    match client.change_membership(request).await {
        Ok(response) => {
            let log_id = response.into_inner().log_id?;
            Some(Ok(log_id_from_pb(&log_id)))
        }
        Err(status) => match status.code() {
            tonic::Code::Unavailable | tonic::Code::FailedPrecondition => None,
            _ => Some(Err(ChangeError::Refused(status.message().to_owned()))),
        },
    }
}

pub fn to_pb(replication: &Replication, change: &Change) -> pb::ChangeMembershipRequest {
    use pb::change_membership_request::Change as C;
    let change = match change {
        Change::Add {
            node_id,
            grpc_address,
        } => C::Add(pb::AddMember {
            node_id: *node_id,
            grpc_address: grpc_address.clone(),
        }),
        Change::Remove { node_id } => C::Remove(*node_id),
    };
    pb::ChangeMembershipRequest {
        cluster_id: replication.peers.identity().cluster_id(),
        from_node: replication.config.node_id,
        change: Some(change),
    }
}

pub fn from_pb(request: pb::ChangeMembershipRequest) -> Option<Change> {
    use pb::change_membership_request::Change as C;
    Some(match request.change? {
        C::Add(add) => Change::Add {
            node_id: add.node_id,
            grpc_address: add.grpc_address,
        },
        C::Remove(node_id) => Change::Remove { node_id },
    })
}

pub fn log_id_pb(log_id: &LogId) -> pb::ChangeMembershipResponse {
    pb::ChangeMembershipResponse {
        log_id: Some(log_id_to_pb(log_id)),
    }
}
