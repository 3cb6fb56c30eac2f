//! The replica group's gRPC messages (`proto/ledgerq/cluster.proto`) and
//! their conversion to and from openraft's request and response types.
//! Pure: no sockets here. Entries, votes and memberships use the storage
//! crate's encoding (`ledgerq_storage::raft`), the one the raft log stores.

use ledgerq_storage::raft::{
    entry_from_pb, entry_to_pb, log_id_from_pb, log_id_to_pb, snapshot_meta_from_pb,
    snapshot_meta_to_pb, vote_from_pb, vote_to_pb, ConvertError, NodeId, TypeConfig,
};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

/// The code tonic-prost-build generates from `cluster.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/ledgerq.cluster.v1.rs"));
}

pub fn append_to_pb(
    cluster_id: &str,
    rpc: &AppendEntriesRequest<TypeConfig>,
) -> pb::AppendEntriesRequest {
    pb::AppendEntriesRequest {
        cluster_id: cluster_id.to_owned(),
        vote: Some(vote_to_pb(&rpc.vote)),
        prev_log_id: rpc.prev_log_id.as_ref().map(log_id_to_pb),
        entries: rpc.entries.iter().map(entry_to_pb).collect(),
        leader_commit: rpc.leader_commit.as_ref().map(log_id_to_pb),
    }
}

pub fn append_from_pb(
    rpc: pb::AppendEntriesRequest,
) -> Result<AppendEntriesRequest<TypeConfig>, ConvertError> {
    let vote = rpc.vote.ok_or(ConvertError::Missing("vote"))?;
    let entries = rpc
        .entries
        .into_iter()
        .map(entry_from_pb)
        .collect::<Result<_, _>>()?;
    Ok(AppendEntriesRequest {
        vote: vote_from_pb(&vote),
        prev_log_id: rpc.prev_log_id.as_ref().map(log_id_from_pb),
        entries,
        leader_commit: rpc.leader_commit.as_ref().map(log_id_from_pb),
    })
}

pub fn append_response_to_pb(
    response: &AppendEntriesResponse<NodeId>,
) -> pb::AppendEntriesResponse {
    use pb::append_entries_response::Result as R;
    let result = match response {
        AppendEntriesResponse::Success => R::Success(pb::Empty {}),
        AppendEntriesResponse::PartialSuccess(matching) => R::PartialSuccess(pb::PartialSuccess {
            matching: matching.as_ref().map(log_id_to_pb),
        }),
        AppendEntriesResponse::Conflict => R::Conflict(pb::Empty {}),
        AppendEntriesResponse::HigherVote(vote) => R::HigherVote(vote_to_pb(vote)),
    };
    pb::AppendEntriesResponse {
        result: Some(result),
    }
}

pub fn append_response_from_pb(
    response: pb::AppendEntriesResponse,
) -> Result<AppendEntriesResponse<NodeId>, ConvertError> {
    use pb::append_entries_response::Result as R;
    Ok(
        match response
            .result
            .ok_or(ConvertError::Missing("append result"))?
        {
            R::Success(_) => AppendEntriesResponse::Success,
            R::PartialSuccess(p) => {
                AppendEntriesResponse::PartialSuccess(p.matching.as_ref().map(log_id_from_pb))
            }
            R::Conflict(_) => AppendEntriesResponse::Conflict,
            R::HigherVote(vote) => AppendEntriesResponse::HigherVote(vote_from_pb(&vote)),
        },
    )
}

pub fn vote_request_to_pb(cluster_id: &str, rpc: &VoteRequest<NodeId>) -> pb::VoteRequest {
    pb::VoteRequest {
        cluster_id: cluster_id.to_owned(),
        vote: Some(vote_to_pb(&rpc.vote)),
        last_log_id: rpc.last_log_id.as_ref().map(log_id_to_pb),
    }
}

pub fn vote_request_from_pb(rpc: pb::VoteRequest) -> Result<VoteRequest<NodeId>, ConvertError> {
    let vote = rpc.vote.ok_or(ConvertError::Missing("vote"))?;
    Ok(VoteRequest {
        vote: vote_from_pb(&vote),
        last_log_id: rpc.last_log_id.as_ref().map(log_id_from_pb),
    })
}

pub fn vote_response_to_pb(response: &VoteResponse<NodeId>) -> pb::VoteResponse {
    pb::VoteResponse {
        vote: Some(vote_to_pb(&response.vote)),
        vote_granted: response.vote_granted,
        last_log_id: response.last_log_id.as_ref().map(log_id_to_pb),
    }
}

pub fn vote_response_from_pb(
    response: pb::VoteResponse,
) -> Result<VoteResponse<NodeId>, ConvertError> {
    let vote = response.vote.ok_or(ConvertError::Missing("vote"))?;
    Ok(VoteResponse {
        vote: vote_from_pb(&vote),
        vote_granted: response.vote_granted,
        last_log_id: response.last_log_id.as_ref().map(log_id_from_pb),
    })
}

pub fn snapshot_to_pb(
    cluster_id: &str,
    rpc: &InstallSnapshotRequest<TypeConfig>,
) -> pb::InstallSnapshotRequest {
    pb::InstallSnapshotRequest {
        cluster_id: cluster_id.to_owned(),
        vote: Some(vote_to_pb(&rpc.vote)),
        meta: Some(snapshot_meta_to_pb(&rpc.meta)),
        offset: rpc.offset,
        data: rpc.data.clone().into(),
        done: rpc.done,
    }
}

pub fn snapshot_from_pb(
    rpc: pb::InstallSnapshotRequest,
) -> Result<InstallSnapshotRequest<TypeConfig>, ConvertError> {
    let vote = rpc.vote.ok_or(ConvertError::Missing("vote"))?;
    let meta = rpc.meta.ok_or(ConvertError::Missing("snapshot meta"))?;
    Ok(InstallSnapshotRequest {
        vote: vote_from_pb(&vote),
        meta: snapshot_meta_from_pb(meta),
        offset: rpc.offset,
        data: rpc.data.to_vec(),
        done: rpc.done,
    })
}

pub fn snapshot_response_to_pb(
    response: &InstallSnapshotResponse<NodeId>,
) -> pb::InstallSnapshotResponse {
    pb::InstallSnapshotResponse {
        vote: Some(vote_to_pb(&response.vote)),
    }
}

pub fn snapshot_response_from_pb(
    response: pb::InstallSnapshotResponse,
) -> Result<InstallSnapshotResponse<NodeId>, ConvertError> {
    let vote = response.vote.ok_or(ConvertError::Missing("vote"))?;
    Ok(InstallSnapshotResponse {
        vote: vote_from_pb(&vote),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerq_storage::raft::{Entry, LogId, Vote};
    use openraft::{EntryPayload, LeaderId};

    #[test]
    fn append_entries_round_trip() {
        let log_id = LogId::new(LeaderId::new(2, 1), 7);
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(LogId::new(LeaderId::new(1, 1), 6)),
            entries: vec![Entry {
                log_id,
                payload: EntryPayload::Blank,
            }],
            leader_commit: None,
        };
        let encoded = append_to_pb("c", &rpc);
        assert_eq!(encoded.cluster_id, "c");
        let decoded = append_from_pb(encoded).unwrap();
        assert_eq!(decoded.vote, rpc.vote);
        assert_eq!(decoded.prev_log_id, rpc.prev_log_id);
        assert_eq!(decoded.entries.len(), 1);
        assert_eq!(decoded.entries[0].log_id, log_id);
        assert_eq!(decoded.leader_commit, None);
    }

    #[test]
    fn every_append_response_round_trips() {
        let log_id = LogId::new(LeaderId::new(3, 2), 9);
        for response in [
            AppendEntriesResponse::Success,
            AppendEntriesResponse::PartialSuccess(Some(log_id)),
            AppendEntriesResponse::PartialSuccess(None),
            AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(Vote::new(4, 3)),
        ] {
            let decoded = append_response_from_pb(append_response_to_pb(&response)).unwrap();
            assert_eq!(decoded, response);
        }
    }

    #[test]
    fn a_request_without_a_vote_is_refused() {
        let rpc = pb::VoteRequest::default();
        assert_eq!(
            vote_request_from_pb(rpc).unwrap_err(),
            ConvertError::Missing("vote")
        );
        assert!(append_response_from_pb(pb::AppendEntriesResponse::default()).is_err());
    }
}
