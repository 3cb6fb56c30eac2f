//! A fault-injection seam in the raft transport, for tests: cut this
//! node's links to chosen members (every outgoing RPC to them fails as
//! unreachable, every incoming RPC from them is refused) or delay every
//! outgoing RPC. Off unless the node was started with
//! `--enable-fault-injection`; set through `PUT /cluster/faults`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use ledgerq_storage::raft::NodeId;

#[derive(Default)]
pub struct LinkFaults {
    cut: RwLock<BTreeSet<NodeId>>,
    delay_ms: AtomicU64,
}

impl LinkFaults {
    pub fn set(&self, cut: BTreeSet<NodeId>, delay_ms: u64) {
        tracing::warn!(?cut, delay_ms, "fault injection: raft links changed");
        *self.cut.write().expect("faults lock") = cut;
        self.delay_ms.store(delay_ms, Ordering::Relaxed);
    }

    pub fn is_cut(&self, peer: NodeId) -> bool {
        self.cut.read().expect("faults lock").contains(&peer)
    }

    pub fn cut(&self) -> BTreeSet<NodeId> {
        self.cut.read().expect("faults lock").clone()
    }

    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms.load(Ordering::Relaxed))
    }

    /// Waits the configured delay, then says whether the link to `peer` is up.
    pub async fn pass(&self, peer: NodeId) -> bool {
        let delay = self.delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        !self.is_cut(peer)
    }
}
