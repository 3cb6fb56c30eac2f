//! The one gRPC server on `--grpc-address`: the admin API
//! (`ledgerq.admin.v1.Admin`), the standard health service
//! (`grpc.health.v1.Health`) and server reflection, and in redundancy mode
//! the replica group's raft service (`ledgerq.cluster.v1.Raft`).
//!
//! Limits: an admin request larger than `--max-body-size` plus framing is
//! refused before it is decoded (`RESOURCE_EXHAUSTED`); a connection has at
//! most [`MAX_CONCURRENT_STREAMS`] streams open, so a client opening
//! thousands waits for its own to finish. A request that does not decode
//! (a name that is not UTF-8 among them) is `INVALID_ARGUMENT`; unknown
//! fields are ignored.
//!
//! With `--grpc-tls-*` the port speaks TLS only and every client must
//! present a certificate of the configured CA (`src/grpc_tls.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{MapOk, TryFutureExt};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Status};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::admin::pb::admin_server::AdminServer;
use crate::admin::service::{AdminContext, AdminService};
use crate::broker::Broker;
use crate::grpc_tls::GrpcTls;
use crate::replication::rpc::pb::raft_server::RaftServer;
use crate::replication::service::RaftService;
use crate::replication::{HTTP2_CONNECTION_WINDOW_BYTES, HTTP2_STREAM_WINDOW_BYTES};

/// Streams one client connection may have open at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Room for a publish request's framing beyond its messages' bytes.
const ADMIN_FRAMING_BYTES: usize = 64 << 10;
/// How often the health service re-reads the broker's health.
const HEALTH_PERIOD: Duration = Duration::from_secs(1);
/// The admin service's name, as health checks ask for it.
const ADMIN_SERVICE: &str = "ledgerq.admin.v1.Admin";

/// A bound gRPC listener and the admin service it will carry.
pub struct Endpoint {
    pub listener: TcpListener,
    pub admin: AdminService,
    /// `--max-body-size`: the largest publish the admin API takes.
    pub max_body_size_bytes: u64,
    /// Mutual TLS (`--grpc-tls-*`): the server's, and the raft client's.
    pub tls: Option<GrpcTls>,
}

/// A serving gRPC server.
pub struct Serving {
    pub address: SocketAddr,
    admin: AdminService,
    health: HealthReporter,
    shutdown: CancellationToken,
}

impl Serving {
    /// Starts answering admin calls with `context`, and keeps the health
    /// service's status in step with the broker's.
    pub fn attach(&self, context: AdminContext) {
        let broker = context.broker.clone();
        self.admin.attach(context);
        tokio::spawn(report_health(
            broker,
            self.health.clone(),
            self.shutdown.clone(),
        ));
    }
}

/// Serves `endpoint` (with `raft` in redundancy mode) until `shutdown`.
pub fn serve(
    endpoint: Endpoint,
    raft: Option<RaftServer<RaftService>>,
    shutdown: CancellationToken,
) -> anyhow::Result<Serving> {
    let address = endpoint.listener.local_addr()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    // Both reflection versions: grpcurl asks v1, many clients v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::admin::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let max_admin_bytes = usize::try_from(endpoint.max_body_size_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(ADMIN_FRAMING_BYTES);
    let admin = AdminServer::new(endpoint.admin.clone()).max_decoding_message_size(max_admin_bytes);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &endpoint.tls {
        builder = builder.tls_config(tls.server())?;
    }
    let router = builder
        .initial_stream_window_size(HTTP2_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW_BYTES)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .layer(tower::layer::layer_fn(|inner| ContractCodes { inner }))
        .add_service(admin)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_optional_service(raft);
    let incoming = TcpIncoming::from(endpoint.listener).with_nodelay(Some(true));
    let stop = shutdown.clone();
    tokio::spawn(async move {
        if let Err(error) = router
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await
        {
            tracing::error!(%error, "gRPC server failed");
        }
    });
    let tls = endpoint.tls.is_some();
    tracing::info!(grpc_address = %address, mutual_tls = tls, "gRPC: listening");
    Ok(Serving {
        address,
        admin: endpoint.admin,
        health,
        shutdown,
    })
}

/// `SERVING` while the broker takes writes, `NOT_SERVING` once storage
/// failed or the node is shutting down.
async fn report_health(broker: Arc<Broker>, health: HealthReporter, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(HEALTH_PERIOD);
    loop {
        let status = match broker.health() {
            Ok(()) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        };
        health.set_service_status("", status).await;
        health.set_service_status(ADMIN_SERVICE, status).await;
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => break,
        }
    }
    for service in ["", ADMIN_SERVICE] {
        health
            .set_service_status(service, ServingStatus::NotServing)
            .await;
    }
}

/// The codes the admin API promises where tonic answers otherwise: a
/// request over the size limit is `RESOURCE_EXHAUSTED` (tonic:
/// `OUT_OF_RANGE`), one that does not decode is `INVALID_ARGUMENT` (tonic:
/// `INTERNAL`, which would blame the server).
#[derive(Debug, Clone)]
struct ContractCodes<S> {
    inner: S,
}

type FixCodes<B> = fn(http::Response<B>) -> http::Response<B>;

impl<S, Request, B> tower::Service<Request> for ContractCodes<S>
where
    S: tower::Service<Request, Response = http::Response<B>>,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = MapOk<S::Future, FixCodes<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.inner
            .call(request)
            .map_ok(fix_codes::<B> as FixCodes<B>)
    }
}

fn fix_codes<B>(mut response: http::Response<B>) -> http::Response<B> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    if let Some(code) = contract_code(&status) {
        let fixed = Status::new(code, status.message().to_owned());
        if fixed.add_header(response.headers_mut()).is_err() {
            tracing::warn!(%status, "could not rewrite a gRPC status");
        }
    }
    response
}

/// The code a status must carry instead of its own, if any.
fn contract_code(status: &Status) -> Option<Code> {
    match status.code() {
        Code::OutOfRange if status.message().contains("message length too large") => {
            Some(Code::ResourceExhausted)
        }
        Code::Internal
            if status
                .message()
                .contains("failed to decode Protobuf message") =>
        {
            Some(Code::InvalidArgument)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_and_undecodable_requests_get_the_promised_codes() {
        let too_large = Status::out_of_range(
            "Error, decoded message length too large: found 9 bytes, the limit is: 8 bytes",
        );
        assert_eq!(contract_code(&too_large), Some(Code::ResourceExhausted));
        let bad = Status::internal("failed to decode Protobuf message: invalid string value");
        assert_eq!(contract_code(&bad), Some(Code::InvalidArgument));
        assert_eq!(contract_code(&Status::internal("disk")), None);
        assert_eq!(contract_code(&Status::not_found("x")), None);
        let mut response =
            Status::internal("failed to decode Protobuf message: x").into_http::<()>();
        response = fix_codes(response);
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "failed to decode Protobuf message: x");
    }
}
