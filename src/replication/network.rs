//! The raft transport's client side: openraft's `RaftNetworkFactory` over
//! tonic, and the [`Forwarder`] that sends a follower's proposals to the
//! leader. One lazily connected channel per peer address; every call is
//! bounded by openraft's TTL (or the forward timeout) and passes the
//! fault-injection seam first. With `--grpc-tls-*` every channel is mutual
//! TLS (`src/grpc_tls.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledgerq_storage::raft::{
    log_id_from_pb, proposal_to_pb, ForwardError, ForwardFuture, Forwarder, Member, NodeId,
    Proposal, TypeConfig,
};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::faults::LinkFaults;
use super::identity::ClusterIdentity;
use super::rpc::{self, pb};

type Client = pb::raft_client::RaftClient<Channel>;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Channels to peers, by gRPC address; shared by raft and forwarding.
#[derive(Clone)]
pub struct Peers {
    identity: Arc<ClusterIdentity>,
    faults: Arc<LinkFaults>,
    /// Mutual TLS (`--grpc-tls-*`): this node's certificate, peers'
    /// checked against the group's CA.
    tls: Option<ClientTlsConfig>,
    channels: Arc<Mutex<HashMap<String, Client>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

impl Peers {
    pub fn new(
        identity: Arc<ClusterIdentity>,
        faults: Arc<LinkFaults>,
        tls: Option<ClientTlsConfig>,
    ) -> Self {
        Peers {
            identity,
            faults,
            tls,
            channels: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn identity(&self) -> &Arc<ClusterIdentity> {
        &self.identity
    }

    /// A client for `address` (connected on first use).
    pub fn client(&self, address: &str) -> Result<Client, String> {
        let mut channels = self.channels.lock().expect("peers lock");
        if let Some(client) = channels.get(address) {
            return Ok(client.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|e| format!("bad address {address}: {e}"))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("TLS for {address}: {e}"))?;
        }
        let endpoint = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .initial_stream_window_size(super::HTTP2_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(super::HTTP2_CONNECTION_WINDOW_BYTES)
            .tcp_nodelay(true);
        let client = Client::new(endpoint.connect_lazy())
            .max_decoding_message_size(super::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(super::MAX_MESSAGE_BYTES);
        channels.insert(address.to_owned(), client.clone());
        Ok(client)
    }

    /// Says hello to the node at `address` (bootstrap, `/cluster`).
    pub async fn hello(
        &self,
        address: &str,
        adopt: bool,
        timeout: Duration,
    ) -> Result<pb::HelloResponse, String> {
        let mut client = self.client(address)?;
        let request = pb::HelloRequest {
            cluster_id: self.identity.cluster_id(),
            from_node: self.identity.node_id,
            adopt,
        };
        match tokio::time::timeout(timeout, client.hello(request)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(status.message().to_owned()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }
}

/// openraft's network factory: one [`PeerLink`] per target.
pub struct Network {
    pub peers: Peers,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerLink;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerLink {
        PeerLink {
            target,
            address: node.grpc_address.clone(),
            peers: self.peers.clone(),
        }
    }
}

pub struct PeerLink {
    target: NodeId,
    address: String,
    peers: Peers,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, Member, RaftError<NodeId, E>>>;

fn unreachable<E: std::error::Error>(
    message: impl Into<String>,
) -> RPCError<NodeId, Member, RaftError<NodeId, E>> {
    RPCError::Unreachable(Unreachable::new(&TransportError(message.into())))
}

fn network<E: std::error::Error>(
    message: impl Into<String>,
) -> RPCError<NodeId, Member, RaftError<NodeId, E>> {
    RPCError::Network(NetworkError::new(&TransportError(message.into())))
}

fn status_error<E: std::error::Error>(
    status: tonic::Status,
) -> RPCError<NodeId, Member, RaftError<NodeId, E>> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => {
            unreachable(status.message())
        }
        _ => network(format!("{:?}: {}", status.code(), status.message())),
    }
}

impl PeerLink {
    /// The client, after the fault seam; `None` when the link is cut.
    async fn client(&self) -> Result<Client, String> {
        if !self.peers.faults.pass(self.target).await {
            return Err(format!(
                "link to node {} cut by fault injection",
                self.target
            ));
        }
        self.peers.client(&self.address)
    }
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let mut client = self.client().await.map_err(unreachable)?;
        let request = rpc::append_to_pb(&self.peers.identity.cluster_id(), &rpc);
        let response = tokio::time::timeout(option.hard_ttl(), client.append_entries(request))
            .await
            .map_err(|_| unreachable("append entries timed out"))?
            .map_err(status_error)?;
        rpc::append_response_from_pb(response.into_inner()).map_err(|e| network(e.to_string()))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let mut client = self.client().await.map_err(unreachable)?;
        let request = rpc::snapshot_to_pb(&self.peers.identity.cluster_id(), &rpc);
        let response = tokio::time::timeout(option.hard_ttl(), client.install_snapshot(request))
            .await
            .map_err(|_| unreachable("install snapshot timed out"))?
            .map_err(status_error)?;
        rpc::snapshot_response_from_pb(response.into_inner()).map_err(|e| network(e.to_string()))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let mut client = self.client().await.map_err(unreachable)?;
        let request = rpc::vote_request_to_pb(&self.peers.identity.cluster_id(), &rpc);
        let response = tokio::time::timeout(option.hard_ttl(), client.vote(request))
            .await
            .map_err(|_| unreachable("vote timed out"))?
            .map_err(status_error)?;
        rpc::vote_response_from_pb(response.into_inner()).map_err(|e| network(e.to_string()))
    }
}

/// Sends a follower's proposal to the leader (the `Forward` RPC).
pub struct GrpcForwarder {
    pub peers: Peers,
    pub timeout: Duration,
    pub counters: Arc<super::Counters>,
}

impl Forwarder for GrpcForwarder {
    fn forward(&self, leader: NodeId, member: Member, proposal: Proposal) -> ForwardFuture {
        let peers = self.peers.clone();
        let timeout = self.timeout;
        let counters = self.counters.clone();
        Box::pin(async move {
            if !peers.faults.pass(leader).await {
                return Err(ForwardError::Unreachable(format!(
                    "link to node {leader} cut"
                )));
            }
            let mut client = peers
                .client(&member.grpc_address)
                .map_err(ForwardError::Unreachable)?;
            let request = pb::ForwardRequest {
                cluster_id: peers.identity.cluster_id(),
                proposal: Some(proposal_to_pb(&proposal)),
            };
            let response = tokio::time::timeout(timeout, client.forward(request))
                .await
                .map_err(|_| ForwardError::Unreachable("forward timed out".into()))?;
            match response {
                Ok(response) => {
                    let log_id = response.into_inner().log_id.ok_or_else(|| {
                        ForwardError::Refused("forward answer without a log id".into())
                    })?;
                    counters
                        .forwarded_proposals
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Ok(log_id_from_pb(&log_id))
                }
                Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                    Err(ForwardError::NotLeader { leader: None })
                }
                Err(status) if status.code() == tonic::Code::PermissionDenied => {
                    Err(ForwardError::Refused(status.message().to_owned()))
                }
                Err(status) => Err(ForwardError::Unreachable(status.message().to_owned())),
            }
        })
    }
}
