//! The replica group's gRPC service against bad and foreign input: a
//! request of another cluster is refused with PERMISSION_DENIED, a
//! malformed one with INVALID_ARGUMENT, and the member keeps serving.

mod common;

use common::cluster::Cluster;
use ledgerq::replication::rpc::pb;
use ledgerq::replication::rpc::pb::raft_client::RaftClient;
use ledgerq_storage::pb::raft as raft_pb;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

#[test]
fn foreign_and_malformed_rpcs_are_refused_and_the_group_goes_on() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3]);
    let follower = cluster.others(leader)[0];
    let cluster_id = cluster.view(follower)["cluster_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let address = format!("http://{}", cluster.grpc[&follower]);
    runtime().block_on(async {
        let mut client = RaftClient::connect(address)
            .await
            .expect("connect to the member");
        let vote = raft_pb::Vote {
            term: 1_000,
            node_id: 9,
            committed: true,
        };

        // A leader of another cluster, with a huge term: refused, and the
        // member's term does not move.
        let foreign = pb::AppendEntriesRequest {
            cluster_id: "another-cluster".into(),
            vote: Some(vote),
            ..Default::default()
        };
        let status = client.append_entries(foreign).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().contains("cluster id mismatch"),
            "{status:?}"
        );
        let request = pb::VoteRequest {
            cluster_id: "another-cluster".into(),
            vote: Some(vote),
            last_log_id: None,
        };
        let status = client.vote(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

        // Our cluster id, but no vote: malformed.
        let malformed = pb::AppendEntriesRequest {
            cluster_id: cluster_id.clone(),
            vote: None,
            ..Default::default()
        };
        let status = client.append_entries(malformed).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        let forward = pb::ForwardRequest {
            cluster_id: cluster_id.clone(),
            proposal: None,
        };
        let status = client.forward(forward).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        // A proposal of an unknown format version.
        let forward = pb::ForwardRequest {
            cluster_id: cluster_id.clone(),
            proposal: Some(raft_pb::Proposal {
                format_version: 99,
                origin_node: follower,
                ..Default::default()
            }),
        };
        let status = client.forward(forward).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    });

    let view = cluster.view(follower);
    assert_eq!(view["cluster_id"], cluster_id.as_str());
    assert!(view["term"].as_u64().unwrap() < 1_000, "{view}");
    assert_eq!(cluster.wait_for_leader(&[1, 2, 3]), leader);
    let mut publisher = common::RawClient::connect(cluster.node(follower).tcp_address);
    publisher.publish("still-serving", b"yes");
}
