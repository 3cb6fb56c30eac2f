//! openraft's types to and from the messages of `proto/ledgerq/raft.proto`.
//!
//! Pure functions. Decoding refuses what openraft cannot hold (a log entry
//! without its id, a proposal of an unknown format version, a command that
//! does not decode) with a [`ConvertError`]; it never panics.

use std::collections::{BTreeMap, BTreeSet};

use openraft::{EntryPayload, LeaderId};

use super::{
    Entry, LogId, Member, Membership, Origin, Proposal, SnapshotMeta, StoredMembership, Vote,
};
use crate::encoding::{format_version_for, from_pb, is_readable_version, to_pb, DecodeError};
use crate::pb::raft as pb;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvertError {
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error(transparent)]
    Command(#[from] DecodeError),
    #[error(transparent)]
    Malformed(#[from] prost::DecodeError),
}

pub fn log_id_to_pb(log_id: &LogId) -> pb::LogId {
    pb::LogId {
        term: log_id.leader_id.term,
        node_id: log_id.leader_id.node_id,
        index: log_id.index,
    }
}

pub fn log_id_from_pb(log_id: &pb::LogId) -> LogId {
    LogId::new(LeaderId::new(log_id.term, log_id.node_id), log_id.index)
}

pub fn vote_to_pb(vote: &Vote) -> pb::Vote {
    pb::Vote {
        term: vote.leader_id.term,
        node_id: vote.leader_id.node_id,
        committed: vote.committed,
    }
}

pub fn vote_from_pb(vote: &pb::Vote) -> Vote {
    if vote.committed {
        Vote::new_committed(vote.term, vote.node_id)
    } else {
        Vote::new(vote.term, vote.node_id)
    }
}

fn member_to_pb(member: &Member) -> pb::Member {
    pb::Member {
        grpc_address: member.grpc_address.clone(),
        tcp_address: member.tcp_address.clone(),
        http_address: member.http_address.clone(),
    }
}

fn member_from_pb(member: pb::Member) -> Member {
    Member {
        grpc_address: member.grpc_address,
        tcp_address: member.tcp_address,
        http_address: member.http_address,
    }
}

pub fn membership_to_pb(membership: &Membership) -> pb::Membership {
    pb::Membership {
        configs: membership
            .get_joint_config()
            .iter()
            .map(|ids| pb::NodeIds {
                ids: ids.iter().copied().collect(),
            })
            .collect(),
        nodes: membership
            .nodes()
            .map(|(id, member)| (*id, member_to_pb(member)))
            .collect(),
    }
}

pub fn membership_from_pb(membership: pb::Membership) -> Membership {
    let configs: Vec<BTreeSet<u64>> = membership
        .configs
        .into_iter()
        .map(|ids| ids.ids.into_iter().collect())
        .collect();
    let nodes: BTreeMap<u64, Member> = membership
        .nodes
        .into_iter()
        .map(|(id, member)| (id, member_from_pb(member)))
        .collect();
    Membership::new(configs, nodes)
}

pub fn stored_membership_to_pb(stored: &StoredMembership) -> pb::StoredMembership {
    pb::StoredMembership {
        log_id: stored.log_id().as_ref().map(log_id_to_pb),
        membership: Some(membership_to_pb(stored.membership())),
    }
}

pub fn stored_membership_from_pb(stored: pb::StoredMembership) -> StoredMembership {
    let membership = stored
        .membership
        .map(membership_from_pb)
        .unwrap_or_default();
    StoredMembership::new(stored.log_id.as_ref().map(log_id_from_pb), membership)
}

pub fn proposal_to_pb(proposal: &Proposal) -> pb::Proposal {
    pb::Proposal {
        format_version: format_version_for(proposal.commands.iter().map(|(_, c)| c)),
        origin_node: proposal.origin.node,
        origin_boot: proposal.origin.boot,
        dispatch_term: proposal.dispatch_term,
        commands: proposal
            .commands
            .iter()
            .map(|(ticket, command)| pb::ProposedCommand {
                ticket: *ticket,
                command: Some(to_pb(command)),
            })
            .collect(),
    }
}

pub fn proposal_from_pb(proposal: pb::Proposal) -> Result<Proposal, ConvertError> {
    if !is_readable_version(proposal.format_version) {
        return Err(DecodeError::UnsupportedVersion {
            found: proposal.format_version,
        }
        .into());
    }
    let mut commands = Vec::with_capacity(proposal.commands.len());
    for (index, proposed) in proposal.commands.into_iter().enumerate() {
        let command = proposed.command.ok_or(DecodeError::MissingKind);
        let command = command
            .and_then(from_pb)
            .map_err(|error| DecodeError::InBatch {
                index,
                error: Box::new(error),
            })?;
        commands.push((proposed.ticket, command));
    }
    Ok(Proposal {
        origin: Origin {
            node: proposal.origin_node,
            boot: proposal.origin_boot,
        },
        dispatch_term: proposal.dispatch_term,
        commands,
    })
}

pub fn entry_to_pb(entry: &Entry) -> pb::Entry {
    let payload = match &entry.payload {
        EntryPayload::Blank => pb::entry::Payload::Blank(pb::Blank {}),
        EntryPayload::Normal(proposal) => pb::entry::Payload::Proposal(proposal_to_pb(proposal)),
        EntryPayload::Membership(membership) => {
            pb::entry::Payload::Membership(membership_to_pb(membership))
        }
    };
    pb::Entry {
        log_id: Some(log_id_to_pb(&entry.log_id)),
        payload: Some(payload),
    }
}

pub fn entry_from_pb(entry: pb::Entry) -> Result<Entry, ConvertError> {
    let log_id = entry.log_id.ok_or(ConvertError::Missing("entry log id"))?;
    let payload = match entry
        .payload
        .ok_or(ConvertError::Missing("entry payload"))?
    {
        pb::entry::Payload::Blank(_) => EntryPayload::Blank,
        pb::entry::Payload::Proposal(proposal) => EntryPayload::Normal(proposal_from_pb(proposal)?),
        pb::entry::Payload::Membership(membership) => {
            EntryPayload::Membership(membership_from_pb(membership))
        }
    };
    Ok(Entry {
        log_id: log_id_from_pb(&log_id),
        payload,
    })
}

pub fn snapshot_meta_to_pb(meta: &SnapshotMeta) -> pb::SnapshotMeta {
    pb::SnapshotMeta {
        last_log_id: meta.last_log_id.as_ref().map(log_id_to_pb),
        last_membership: Some(stored_membership_to_pb(&meta.last_membership)),
        snapshot_id: meta.snapshot_id.clone(),
    }
}

pub fn snapshot_meta_from_pb(meta: pb::SnapshotMeta) -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: meta.last_log_id.as_ref().map(log_id_from_pb),
        last_membership: meta
            .last_membership
            .map(stored_membership_from_pb)
            .unwrap_or_default(),
        snapshot_id: meta.snapshot_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use bytes::Bytes;

    #[test]
    fn an_entry_of_each_kind_round_trips() {
        let members = BTreeMap::from([(1, Member::new("127.0.0.1:1")), (2, Member::new("h:2"))]);
        let membership = Membership::new(vec![BTreeSet::from([1, 2])], members);
        let proposal = Proposal {
            origin: Origin { node: 2, boot: 77 },
            dispatch_term: 3,
            commands: vec![
                (9, Command::CreateTopic { name: "t".into() }),
                (
                    10,
                    Command::Publish {
                        topic: 1,
                        timestamp_ns: -5,
                        deliver_at_ms: 0,
                        bodies: vec![Bytes::from_static(b"hello")],
                        dedup: None,
                    },
                ),
                (
                    11,
                    Command::Publish {
                        topic: 1,
                        timestamp_ns: 7,
                        deliver_at_ms: 0,
                        bodies: vec![Bytes::from_static(b"once")],
                        dedup: Some(crate::command::Dedup {
                            key: Bytes::from_static(b"k-1"),
                            window_ms: 120_000,
                            max_keys: 10,
                        }),
                    },
                ),
            ],
        };
        let log_id = LogId::new(LeaderId::new(3, 1), 42);
        for payload in [
            EntryPayload::Blank,
            EntryPayload::Normal(proposal),
            EntryPayload::Membership(membership),
        ] {
            let entry = Entry { log_id, payload };
            let decoded = entry_from_pb(entry_to_pb(&entry)).expect("decodes");
            assert_eq!(decoded.log_id, entry.log_id);
            assert_eq!(
                format!("{:?}", decoded.payload),
                format!("{:?}", entry.payload)
            );
        }
    }

    #[test]
    fn votes_keep_their_committed_flag() {
        for vote in [Vote::new(4, 2), Vote::new_committed(5, 3)] {
            assert_eq!(vote_from_pb(&vote_to_pb(&vote)), vote);
        }
    }

    #[test]
    fn an_entry_without_an_id_or_payload_is_refused() {
        let no_id = pb::Entry {
            log_id: None,
            payload: Some(pb::entry::Payload::Blank(pb::Blank {})),
        };
        assert_eq!(
            entry_from_pb(no_id).unwrap_err(),
            ConvertError::Missing("entry log id")
        );
        let no_payload = pb::Entry {
            log_id: Some(pb::LogId::default()),
            payload: None,
        };
        assert!(entry_from_pb(no_payload).is_err());
    }

    #[test]
    fn a_proposal_of_another_format_version_is_refused() {
        let proposal = pb::Proposal {
            format_version: crate::encoding::COMMAND_FORMAT_VERSION + 1,
            ..pb::Proposal::default()
        };
        assert!(matches!(
            proposal_from_pb(proposal),
            Err(ConvertError::Command(
                DecodeError::UnsupportedVersion { .. }
            ))
        ));
    }
}
