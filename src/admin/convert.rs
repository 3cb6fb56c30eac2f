//! The broker's stats and the cluster view as the admin API's messages.

use super::pb;
use crate::broker::stats::{ChannelSnapshot, ClientSnapshot, TopicSnapshot};
use crate::replication::view::{ClusterView, MemberView};

pub fn topic_to_pb(topic: TopicSnapshot) -> pb::TopicStats {
    pb::TopicStats {
        name: topic.name,
        paused: topic.paused,
        depth: topic.depth,
        backend_depth: topic.backend_depth,
        message_count: topic.message_count,
        message_bytes: topic.message_bytes,
        channels: topic.channels.into_iter().map(channel_to_pb).collect(),
    }
}

fn channel_to_pb(channel: ChannelSnapshot) -> pb::ChannelStats {
    pb::ChannelStats {
        name: channel.name,
        paused: channel.paused,
        depth: channel.depth,
        backend_depth: channel.backend_depth,
        in_flight_count: channel.in_flight_count,
        deferred_count: channel.deferred_count,
        message_count: channel.message_count,
        requeue_count: channel.requeue_count,
        timeout_count: channel.timeout_count,
        client_count: channel.client_count,
        clients: channel.clients.into_iter().map(client_to_pb).collect(),
    }
}

fn client_to_pb(client: ClientSnapshot) -> pb::ClientStats {
    pb::ClientStats {
        client_id: client.client_id,
        hostname: client.hostname,
        user_agent: client.user_agent,
        remote_address: client.remote_address,
        ready_count: client.ready_count,
        in_flight_count: client.in_flight_count,
        message_count: client.message_count,
        finish_count: client.finish_count,
        requeue_count: client.requeue_count,
        connect_ts: client.connect_ts,
    }
}

pub fn cluster_to_pb(view: ClusterView) -> pb::ClusterStatusResponse {
    pb::ClusterStatusResponse {
        mode: view.mode.to_owned(),
        node_id: view.node_id.unwrap_or(0),
        role: view.role.to_owned(),
        leader_id: view.leader_id,
        term: view.term,
        committed_index: view.committed_index,
        applied_index: view.applied_index,
        cluster_id: view.cluster_id.unwrap_or_default(),
        members: view.members.into_iter().map(member_to_pb).collect(),
    }
}

fn member_to_pb(member: MemberView) -> pb::Member {
    pb::Member {
        node_id: member.node_id,
        grpc_address: member.grpc_address,
        tcp_address: member.tcp_address,
        http_address: member.http_address,
        voter: member.voter,
        matched_index: member.matched_index,
        lag: member.lag,
    }
}
