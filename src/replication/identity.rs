//! Which cluster this node belongs to, and who it is in it.
//!
//! A cluster id (a UUID) is made when a group is initialized and persisted
//! on every member (in the raft log's meta, `RaftLogStore::set_cluster_id`).
//! Every RPC names its sender's cluster; a node that has an id refuses RPCs
//! of another cluster with `PERMISSION_DENIED`, and a node without one
//! refuses every raft RPC (`FAILED_PRECONDITION`). A node gets its id only
//! from an explicit hello that asks it to adopt one: the bootstrapping
//! member's (it makes its own id before it serves anything), or the
//! leader's when an operator adds the node with `/cluster/add`. Never from
//! a replicating leader: a node restarted with an empty data dir, or a
//! member of another group at a reused address, must not be pulled into a
//! group by a raft RPC.

use std::sync::RwLock;

use ledgerq_storage::raft::{Member, NodeId, RaftLogStore};
use tonic::Status;

pub struct ClusterIdentity {
    pub node_id: NodeId,
    /// This node's addresses, as it announces them to the group.
    pub member: Member,
    log: RaftLogStore,
    cluster_id: RwLock<Option<String>>,
}

impl ClusterIdentity {
    pub fn load(node_id: NodeId, member: Member, log: RaftLogStore) -> anyhow::Result<Self> {
        let cluster_id = log.cluster_id()?;
        Ok(ClusterIdentity {
            node_id,
            member,
            log,
            cluster_id: RwLock::new(cluster_id),
        })
    }

    /// This node's cluster id; empty until it has one.
    pub fn cluster_id(&self) -> String {
        self.cluster_id
            .read()
            .expect("cluster id lock")
            .clone()
            .unwrap_or_default()
    }

    /// Makes `cluster_id` this node's, durably, unless it has one already;
    /// a different one is an error.
    pub fn adopt(&self, cluster_id: &str) -> Result<(), Status> {
        let mut current = self.cluster_id.write().expect("cluster id lock");
        match current.as_deref() {
            Some(existing) if existing == cluster_id => Ok(()),
            Some(existing) => Err(mismatch(existing, cluster_id)),
            None => {
                self.log
                    .set_cluster_id(cluster_id)
                    .map_err(|e| Status::internal(format!("persisting the cluster id: {e}")))?;
                tracing::info!(cluster_id, "joined cluster");
                *current = Some(cluster_id.to_owned());
                Ok(())
            }
        }
    }

    /// Refuses an RPC of another cluster, and any RPC while this node
    /// belongs to no cluster.
    pub fn check(&self, cluster_id: &str) -> Result<(), Status> {
        let current = self.cluster_id.read().expect("cluster id lock").clone();
        match current {
            Some(existing) if existing == cluster_id => Ok(()),
            Some(existing) => Err(mismatch(&existing, cluster_id)),
            None => Err(Status::failed_precondition(
                "this node belongs to no cluster yet",
            )),
        }
    }
}

fn mismatch(ours: &str, theirs: &str) -> Status {
    Status::permission_denied(format!(
        "cluster id mismatch: this node belongs to cluster {ours}, the request comes from cluster {theirs:?}"
    ))
}
