//! The raft transport's server side: the `Raft` gRPC service of
//! `proto/ledgerq/cluster.proto`. Every request is checked against this
//! node's cluster id and the fault-injection seam, decoded (a malformed
//! request is `INVALID_ARGUMENT`, never a panic), and handed to openraft.

use std::sync::Arc;

use ledgerq_storage::raft::{log_id_to_pb, proposal_from_pb, NodeId};
use openraft::error::{ClientWriteError, RaftError};
use tonic::{Request, Response, Status};

use super::membership;
use super::rpc::{self, pb};
use super::Replication;

pub struct RaftService {
    pub replication: Arc<Replication>,
}

fn invalid(error: impl std::fmt::Display) -> Status {
    Status::invalid_argument(error.to_string())
}

fn unavailable(error: impl std::fmt::Display) -> Status {
    Status::unavailable(error.to_string())
}

impl RaftService {
    /// Cluster check, then the fault seam (a cut link refuses the sender).
    fn admit(&self, cluster_id: &str, sender: NodeId) -> Result<(), Status> {
        if self.replication.faults.is_cut(sender) {
            return Err(Status::unavailable(format!(
                "link from node {sender} cut by fault injection"
            )));
        }
        self.replication.peers.identity().check(cluster_id)
    }
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        let request = request.into_inner();
        let sender = request.vote.as_ref().map(|v| v.node_id).unwrap_or_default();
        self.admit(&request.cluster_id, sender)?;
        let rpc = rpc::append_from_pb(request).map_err(invalid)?;
        let response = self
            .replication
            .raft
            .append_entries(rpc)
            .await
            .map_err(unavailable)?;
        Ok(Response::new(rpc::append_response_to_pb(&response)))
    }

    async fn vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        let request = request.into_inner();
        let sender = request.vote.as_ref().map(|v| v.node_id).unwrap_or_default();
        self.admit(&request.cluster_id, sender)?;
        let rpc = rpc::vote_request_from_pb(request).map_err(invalid)?;
        let response = self.replication.raft.vote(rpc).await.map_err(unavailable)?;
        Ok(Response::new(rpc::vote_response_to_pb(&response)))
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::InstallSnapshotRequest>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        let request = request.into_inner();
        let sender = request.vote.as_ref().map(|v| v.node_id).unwrap_or_default();
        self.admit(&request.cluster_id, sender)?;
        let rpc = rpc::snapshot_from_pb(request).map_err(invalid)?;
        let response = self
            .replication
            .raft
            .install_snapshot(rpc)
            .await
            .map_err(unavailable)?;
        Ok(Response::new(rpc::snapshot_response_to_pb(&response)))
    }

    async fn forward(
        &self,
        request: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardResponse>, Status> {
        let request = request.into_inner();
        let proposal = request
            .proposal
            .ok_or_else(|| invalid("forward without a proposal"))?;
        self.admit(&request.cluster_id, proposal.origin_node)?;
        let proposal = proposal_from_pb(proposal).map_err(invalid)?;
        match self.replication.raft.client_write(proposal).await {
            Ok(response) => Ok(Response::new(pb::ForwardResponse {
                log_id: Some(log_id_to_pb(&response.log_id)),
            })),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => Err(
                Status::failed_precondition(format!("not the leader; leader: {:?}", to.leader_id)),
            ),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::ChangeMembershipResponse>, Status> {
        let request = request.into_inner();
        self.admit(&request.cluster_id, request.from_node)?;
        let change = membership::from_pb(request).ok_or_else(|| invalid("no change named"))?;
        match membership::on_leader(&self.replication, &change).await {
            Ok(log_id) => Ok(Response::new(membership::log_id_pb(&log_id))),
            Err(membership::ChangeError::NoLeader) => {
                Err(Status::failed_precondition("not the leader"))
            }
            Err(error) => Err(Status::aborted(error.to_string())),
        }
    }

    async fn hello(
        &self,
        request: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloResponse>, Status> {
        let request = request.into_inner();
        if self.replication.faults.is_cut(request.from_node) {
            return Err(Status::unavailable("link cut by fault injection"));
        }
        if request.adopt && !request.cluster_id.is_empty() {
            self.replication
                .peers
                .identity()
                .adopt(&request.cluster_id)?;
        }
        let initialized = self
            .replication
            .raft
            .is_initialized()
            .await
            .map_err(unavailable)?;
        let member = &self.replication.peers.identity().member;
        Ok(Response::new(pb::HelloResponse {
            node_id: self.replication.peers.identity().node_id,
            cluster_id: self.replication.peers.identity().cluster_id(),
            initialized,
            member: Some(ledgerq_storage::pb::raft::Member {
                grpc_address: member.grpc_address.clone(),
                tcp_address: member.tcp_address.clone(),
                http_address: member.http_address.clone(),
            }),
        }))
    }
}
