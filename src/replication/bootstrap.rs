//! How a replica group comes to be, once: the initial member with the
//! lowest id (which made a new cluster id before serving, see `open`)
//! waits until every member of `--replicas` answers its hello, hands them
//! its cluster id (each persists it before answering), learns
//! their TCP and HTTP addresses, and initializes the raft group with all of
//! them as voters. Every other member just waits to be contacted. A node
//! whose raft state exists (a restart with the same flags) skips all this
//! and rejoins.

use std::collections::BTreeMap;
use std::time::Duration;

use ledgerq_storage::raft::{Member, NodeId, Raft};
use tokio_util::sync::CancellationToken;

use super::config::ReplicaConfig;
use super::network::Peers;

const HELLO_TIMEOUT: Duration = Duration::from_millis(500);
const RETRY: Duration = Duration::from_millis(100);

/// Runs until the group is initialized (by this node or another), or
/// shutdown. Errors are logged; a member of another cluster stops it.
pub async fn run(config: ReplicaConfig, raft: Raft, peers: Peers, shutdown: CancellationToken) {
    match raft.is_initialized().await {
        Ok(true) => {
            tracing::info!("raft state found: rejoining the group");
            return;
        }
        Ok(false) => {}
        Err(error) => {
            tracing::error!(%error, "raft is not running");
            return;
        }
    }
    if config.node_id != config.initializer() {
        tracing::info!(
            initializer = config.initializer(),
            "waiting for the group to be initialized"
        );
        return;
    }
    if peers.identity().cluster_id().is_empty() {
        tracing::error!("the initializing member has no cluster id; not initializing");
        return;
    }
    let Some(members) = gather(&config, &peers, &shutdown).await else {
        return;
    };
    match raft.initialize(members).await {
        Ok(()) => {
            tracing::info!(cluster_id = %peers.identity().cluster_id(), "initialized the replica group")
        }
        Err(error) => tracing::warn!(%error, "initializing the replica group"),
    }
}

/// Every initial member, once all have answered (with this cluster id).
async fn gather(
    config: &ReplicaConfig,
    peers: &Peers,
    shutdown: &CancellationToken,
) -> Option<BTreeMap<NodeId, Member>> {
    let cluster_id = peers.identity().cluster_id();
    let mut members = BTreeMap::new();
    let mut attempts: u64 = 0;
    loop {
        for (&id, address) in &config.replicas {
            if members.contains_key(&id) {
                continue;
            }
            if id == config.node_id {
                members.insert(id, peers.identity().member.clone());
                continue;
            }
            match peers.hello(address, true, HELLO_TIMEOUT).await {
                Ok(hello) if hello.node_id != id => {
                    tracing::error!(
                        address,
                        expected = id,
                        found = hello.node_id,
                        "--replicas names the wrong node id for this address"
                    );
                    return None;
                }
                Ok(hello) if hello.cluster_id != cluster_id => {
                    tracing::error!(node = id, theirs = %hello.cluster_id, ours = %cluster_id, "member belongs to another cluster; not initializing");
                    return None;
                }
                Ok(hello) => {
                    let member = hello.member.unwrap_or_default();
                    members.insert(
                        id,
                        Member {
                            grpc_address: address.clone(),
                            tcp_address: member.tcp_address,
                            http_address: member.http_address,
                        },
                    );
                }
                Err(error) if attempts.is_multiple_of(50) => {
                    tracing::info!(node = id, address, %error, "waiting for member");
                }
                Err(_) => {}
            }
        }
        if members.len() == config.replicas.len() {
            return Some(members);
        }
        attempts += 1;
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}
