//! Redundancy mode: inspection requests (`/channel/peek`, `/topic/peek`,
//! `/message`) that reach a member which does not dispatch are forwarded
//! to the leader's HTTP address and its answer is passed back unchanged.
//!
//! Why forward rather than answer from this member's applied state: only
//! the leader dispatches, so only it knows what is in flight, which
//! timeouts have fired and the order of its requeued queue. A follower
//! sees deliveries and finishes as they are applied, but a message in
//! flight and one that timed out look the same to it, so its answer could
//! be wrong exactly when an operator needs it. Memory-only (`#ephemeral`)
//! topics are each node's own and are answered where they are asked.
//!
//! A forwarded request carries [`FORWARDED_HEADER`]; a node that gets one
//! and does not dispatch (leadership moved meanwhile) answers 503
//! `NO_LEADER` instead of forwarding again, as it does when no leader is
//! known or the leader does not answer within [`FORWARD_TIMEOUT`].

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use tokio::net::TcpStream;

use super::response::{HttpError, NSQ_CONTENT_TYPE_HEADER};
use super::HttpState;
use crate::replication::Replication;

/// Marks a request one member forwarded to another.
pub const FORWARDED_HEADER: &str = "x-ledgerq-forwarded";
/// The longest a forwarded request may take, connection included.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer passed back (100 messages of 64 KiB, encoded twice,
/// fit with room to spare).
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// `None` when this node answers `topic`'s inspection itself; otherwise
/// the leader's answer (or why there is none).
pub async fn elsewhere(
    state: &HttpState,
    topic: &str,
    uri: &Uri,
    headers: &HeaderMap,
) -> Option<Response> {
    let replication = state.replication.as_deref()?;
    if state.broker.inspects_here(topic) {
        return None;
    }
    if headers.contains_key(FORWARDED_HEADER) {
        return Some(HttpError::no_leader().into_response());
    }
    let Some(address) = leader_http_address(replication) else {
        return Some(HttpError::no_leader().into_response());
    };
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let answer = tokio::time::timeout(FORWARD_TIMEOUT, get(&address, target)).await;
    match answer {
        Ok(Ok(response)) => Some(response),
        Ok(Err(error)) => {
            tracing::warn!(%address, %error, "forwarding an inspection to the leader failed");
            Some(HttpError::no_leader().into_response())
        }
        Err(_) => {
            tracing::warn!(%address, "the leader did not answer an inspection in time");
            Some(HttpError::no_leader().into_response())
        }
    }
}

/// The HTTP address the current leader announced, if a leader is known
/// and it is not this node.
fn leader_http_address(replication: &Replication) -> Option<String> {
    let metrics = replication.raft.metrics().borrow().clone();
    let leader = metrics.current_leader?;
    if leader == replication.config.node_id {
        return None;
    }
    let membership = metrics.membership_config.membership();
    let member = membership.get_node(&leader)?;
    Some(member.http_address.clone())
}

/// `GET http://<address><target>` marked as forwarded; the answer's
/// status, content type, NSQ header and body.
async fn get(address: &str, target: &str) -> anyhow::Result<Response> {
    let stream = TcpStream::connect(address).await?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    let request = hyper::Request::get(target)
        .header(header::HOST, address)
        .header(FORWARDED_HEADER, "1")
        .body(Empty::<Bytes>::new())?;
    let exchange = async move {
        let answer = sender.send_request(request).await?;
        let (parts, body) = answer.into_parts();
        let body = Limited::new(body, MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|error| anyhow::anyhow!("reading the answer: {error}"))?
            .to_bytes();
        anyhow::Ok((parts, body))
    };
    // The connection is driven here, so it ends with this future.
    tokio::pin!(connection, exchange);
    let (parts, body) = tokio::select! {
        result = &mut exchange => result?,
        ended = &mut connection => {
            ended?;
            exchange.await?
        }
    };
    Ok(relay(parts.status, &parts.headers, body))
}

/// The leader's answer as this node's.
fn relay(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let nsq = header::HeaderName::from_static(NSQ_CONTENT_TYPE_HEADER);
    for name in [header::CONTENT_TYPE, nsq] {
        if let Some(value) = headers.get(&name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}
