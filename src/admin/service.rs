//! The `ledgerq.admin.v1.Admin` service: each RPC checks the caller
//! ([`Policy`]), its names ([`status`](super::status)) and takes the broker
//! path a TCP or HTTP client's takes — the same durability, the same
//! forwarding to the leader in redundancy mode, the same errors.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tonic::{Request, Response, Status};

use super::auth::{Access, Policy};
use super::convert::{cluster_to_pb, topic_to_pb};
use super::pb;
use super::status::{broker_status, channel_names, not_replicated, topic_name};
use crate::broker::stats::StatsFilter;
use crate::broker::{AdminAction, AdminTarget, Broker};
use crate::replication::membership::{self, Change, ChangeError};
use crate::replication::view::cluster_view;
use crate::replication::Replication;

/// The limits a publish is held to (`--max-msg-size`, `--max-body-size`,
/// `--max-req-timeout`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_msg_size_bytes: u64,
    pub max_body_size_bytes: u64,
    pub max_req_timeout_ms: u64,
}

/// What the service works on, once the node has opened its storage.
pub struct AdminContext {
    pub broker: Arc<Broker>,
    pub replication: Option<Arc<Replication>>,
    pub limits: Limits,
}

/// The service. In redundancy mode the gRPC server starts (for raft) before
/// the broker exists; until [`AdminService::attach`] the API answers
/// `UNAVAILABLE`.
#[derive(Clone)]
pub struct AdminService {
    context: Arc<OnceLock<AdminContext>>,
    policy: Arc<Policy>,
}

impl AdminService {
    pub fn new(policy: Policy) -> AdminService {
        AdminService {
            context: Arc::new(OnceLock::new()),
            policy: Arc::new(policy),
        }
    }

    /// Starts answering with `context`.
    pub fn attach(&self, context: AdminContext) {
        if self.context.set(context).is_err() {
            tracing::error!("admin service attached twice; keeping the first broker");
        }
    }

    /// The caller's authorization, then the context.
    fn admit<T>(&self, request: &Request<T>, access: Access) -> Result<&AdminContext, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes());
        self.policy.check(authorization, access)?;
        self.context
            .get()
            .ok_or_else(|| Status::unavailable("STARTING: the node is opening its storage"))
    }

    async fn change(
        &self,
        request: Request<pb::TopicRef>,
        action: AdminAction,
    ) -> Result<Response<pb::Done>, Status> {
        let context = self.admit(&request, Access::Write)?;
        let topic = topic_name(&request.get_ref().topic)?;
        context
            .broker
            .admin(AdminTarget::Topic(topic), action)
            .await
            .map_err(broker_status)?;
        Ok(Response::new(pb::Done {}))
    }

    async fn change_channel(
        &self,
        request: Request<pb::ChannelRef>,
        action: AdminAction,
    ) -> Result<Response<pb::Done>, Status> {
        let context = self.admit(&request, Access::Write)?;
        let names = request.get_ref();
        let (topic, channel) = channel_names(&names.topic, &names.channel)?;
        context
            .broker
            .admin(AdminTarget::Channel(topic, channel), action)
            .await
            .map_err(broker_status)?;
        Ok(Response::new(pb::Done {}))
    }

    fn replication<'a>(&self, context: &'a AdminContext) -> Result<&'a Replication, Status> {
        context.replication.as_deref().ok_or_else(not_replicated)
    }
}

fn membership_status(error: ChangeError) -> Status {
    match error {
        ChangeError::NoLeader => Status::unavailable("NO_LEADER: no leader answered in time"),
        ChangeError::BadMember(detail) => {
            Status::failed_precondition(format!("BAD_MEMBER: {detail}"))
        }
        ChangeError::Refused(detail) => {
            Status::failed_precondition(format!("MEMBERSHIP_CHANGE_REFUSED: {detail}"))
        }
    }
}

fn node_id(id: u64) -> Result<u64, Status> {
    match id {
        0 => Err(Status::invalid_argument(
            "INVALID_ARG_NODE_ID: node ids start at 1",
        )),
        id => Ok(id),
    }
}

/// The messages of a publish if they keep to `limits`.
fn checked_messages(request: &pb::PublishRequest, limits: &Limits) -> Result<Vec<Bytes>, Status> {
    if request.messages.is_empty() {
        return Err(Status::invalid_argument("MSG_EMPTY: no messages"));
    }
    if request.defer_ms > limits.max_req_timeout_ms {
        return Err(Status::invalid_argument(format!(
            "INVALID_DEFER: defer_ms must be at most {}",
            limits.max_req_timeout_ms
        )));
    }
    let mut total_bytes = 0u64;
    for message in &request.messages {
        let size_bytes = message.len() as u64;
        if size_bytes == 0 {
            return Err(Status::invalid_argument("MSG_EMPTY: a message is empty"));
        }
        if size_bytes > limits.max_msg_size_bytes {
            return Err(Status::invalid_argument(format!(
                "MSG_TOO_BIG: a message of {size_bytes} bytes, more than --max-msg-size {}",
                limits.max_msg_size_bytes
            )));
        }
        total_bytes += size_bytes;
    }
    if total_bytes > limits.max_body_size_bytes {
        return Err(Status::invalid_argument(format!(
            "BODY_TOO_BIG: {total_bytes} bytes of messages, more than --max-body-size {}",
            limits.max_body_size_bytes
        )));
    }
    Ok(request.messages.clone())
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let context = self.admit(&request, Access::Read)?;
        let snapshot = context.broker.stats(&StatsFilter::default());
        let topics = snapshot
            .topics
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.name)
            .collect();
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn get_topic(
        &self,
        request: Request<pb::TopicRef>,
    ) -> Result<Response<pb::TopicStats>, Status> {
        let context = self.admit(&request, Access::Read)?;
        let topic = topic_name(&request.get_ref().topic)?;
        let filter = StatsFilter {
            topic: Some(topic.to_owned()),
            ..StatsFilter::default()
        };
        let found = context
            .broker
            .stats(&filter)
            .topics
            .and_then(|topics| topics.into_iter().next());
        match found {
            Some(topic) => Ok(Response::new(topic_to_pb(topic))),
            None => Err(broker_status(crate::broker::BrokerError::TopicNotFound)),
        }
    }

    async fn create_topic(
        &self,
        request: Request<pb::TopicRef>,
    ) -> Result<Response<pb::Done>, Status> {
        let context = self.admit(&request, Access::Write)?;
        let topic = topic_name(&request.get_ref().topic)?;
        context
            .broker
            .ensure_topic(topic)
            .await
            .map_err(broker_status)?;
        Ok(Response::new(pb::Done {}))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::TopicRef>,
    ) -> Result<Response<pb::Done>, Status> {
        self.change(request, AdminAction::Delete).await
    }

    async fn pause_topic(
        &self,
        request: Request<pb::TopicRef>,
    ) -> Result<Response<pb::Done>, Status> {
        self.change(request, AdminAction::Pause(true)).await
    }

    async fn unpause_topic(
        &self,
        request: Request<pb::TopicRef>,
    ) -> Result<Response<pb::Done>, Status> {
        self.change(request, AdminAction::Pause(false)).await
    }

    async fn empty_topic(
        &self,
        request: Request<pb::TopicRef>,
    ) -> Result<Response<pb::Done>, Status> {
        self.change(request, AdminAction::Empty).await
    }

    async fn create_channel(
        &self,
        request: Request<pb::ChannelRef>,
    ) -> Result<Response<pb::Done>, Status> {
        let context = self.admit(&request, Access::Write)?;
        let names = request.get_ref();
        let (topic, channel) = channel_names(&names.topic, &names.channel)?;
        if !context.broker.has_topic(topic) {
            return Err(broker_status(crate::broker::BrokerError::TopicNotFound));
        }
        context
            .broker
            .ensure_channel(topic, channel)
            .await
            .map_err(broker_status)?;
        Ok(Response::new(pb::Done {}))
    }

    async fn delete_channel(
        &self,
        request: Request<pb::ChannelRef>,
    ) -> Result<Response<pb::Done>, Status> {
        self.change_channel(request, AdminAction::Delete).await
    }

    async fn pause_channel(
        &self,
        request: Request<pb::ChannelRef>,
    ) -> Result<Response<pb::Done>, Status> {
        self.change_channel(request, AdminAction::Pause(true)).await
    }

    async fn unpause_channel(
        &self,
        request: Request<pb::ChannelRef>,
    ) -> Result<Response<pb::Done>, Status> {
        self.change_channel(request, AdminAction::Pause(false))
            .await
    }

    async fn empty_channel(
        &self,
        request: Request<pb::ChannelRef>,
    ) -> Result<Response<pb::Done>, Status> {
        self.change_channel(request, AdminAction::Empty).await
    }

    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::Stats>, Status> {
        let context = self.admit(&request, Access::Read)?;
        let asked = request.get_ref();
        let filter = StatsFilter {
            topic: (!asked.topic.is_empty()).then(|| asked.topic.clone()),
            channel: (!asked.channel.is_empty()).then(|| asked.channel.clone()),
            include_clients: asked.include_clients,
        };
        let snapshot = context.broker.stats(&filter);
        let health = context.broker.health();
        Ok(Response::new(pb::Stats {
            topics: snapshot
                .topics
                .unwrap_or_default()
                .into_iter()
                .map(topic_to_pb)
                .collect(),
            healthy: health.is_ok(),
            health: health.err().unwrap_or_else(|| "OK".to_owned()),
        }))
    }

    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let context = self.admit(&request, Access::Write)?;
        let asked = request.get_ref();
        let topic = topic_name(&asked.topic)?;
        let messages = checked_messages(asked, &context.limits)?;
        let published = messages.len() as u64;
        context
            .broker
            .publish(topic, messages, asked.defer_ms)
            .await
            .map_err(broker_status)?;
        Ok(Response::new(pb::PublishResponse { published }))
    }

    async fn cluster_status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let context = self.admit(&request, Access::Read)?;
        let view = cluster_view(&context.broker, context.replication.as_deref());
        Ok(Response::new(cluster_to_pb(view)))
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::Done>, Status> {
        let context = self.admit(&request, Access::Write)?;
        let replication = self.replication(context)?;
        let asked = request.into_inner();
        let node_id = node_id(asked.node_id)?;
        if !crate::replication::config::is_host_port(&asked.grpc_address) {
            return Err(Status::invalid_argument(format!(
                "INVALID_ARG_GRPC_ADDRESS: {:?} is not HOST:PORT",
                asked.grpc_address
            )));
        }
        let change = Change::Add {
            node_id,
            grpc_address: asked.grpc_address,
        };
        membership::change(replication, change)
            .await
            .map_err(membership_status)?;
        Ok(Response::new(pb::Done {}))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::Done>, Status> {
        let context = self.admit(&request, Access::Write)?;
        let replication = self.replication(context)?;
        let node_id = node_id(request.get_ref().node_id)?;
        membership::change(replication, Change::Remove { node_id })
            .await
            .map_err(membership_status)?;
        Ok(Response::new(pb::Done {}))
    }

    async fn health(
        &self,
        request: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        let context = self.admit(&request, Access::Read)?;
        let health = context.broker.health();
        Ok(Response::new(pb::HealthResponse {
            healthy: health.is_ok(),
            status: health.err().unwrap_or_else(|| "OK".to_owned()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    const LIMITS: Limits = Limits {
        max_msg_size_bytes: 4,
        max_body_size_bytes: 6,
        max_req_timeout_ms: 100,
    };

    fn publish(messages: &[&[u8]], defer_ms: u64) -> pb::PublishRequest {
        pb::PublishRequest {
            topic: "t".into(),
            messages: messages.iter().map(|m| Bytes::copy_from_slice(m)).collect(),
            defer_ms,
        }
    }

    fn refused(request: pb::PublishRequest) -> String {
        let error = checked_messages(&request, &LIMITS).unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
        error.message().split(':').next().unwrap().to_owned()
    }

    #[test]
    fn a_publish_keeps_to_the_limits() {
        assert_eq!(
            checked_messages(&publish(&[b"ab", b"cdef"], 100), &LIMITS)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(refused(publish(&[], 0)), "MSG_EMPTY");
        assert_eq!(refused(publish(&[b"a", b""], 0)), "MSG_EMPTY");
        assert_eq!(refused(publish(&[b"abcde"], 0)), "MSG_TOO_BIG");
        assert_eq!(refused(publish(&[b"abcd", b"efg"], 0)), "BODY_TOO_BIG");
        assert_eq!(refused(publish(&[b"a"], 101)), "INVALID_DEFER");
    }

    #[test]
    fn node_ids_start_at_one() {
        assert_eq!(node_id(0).unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(node_id(4).unwrap(), 4);
    }
}
