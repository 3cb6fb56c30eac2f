//! nsqd's HTTP API (`docs/nsq-wire.md` §5) on its own listener (`--http-address`).
//!
//! - [`response`]: the V1 response and error shapes and headers;
//! - [`query`]: query-string parameters, read as nsqd reads them;
//! - [`publish`]: `/pub` and `/mpub`, answered `OK` only once fsynced;
//! - [`topology`]: `/topic/create` and `/channel/create`;
//! - [`admin`]: `/topic/pause|unpause|delete` and `/channel/pause|unpause|delete`;
//! - [`info`]: `/ping` and `/info`;
//! - [`stats`]: `/stats`, as JSON or text;
//! - [`metrics`]: `/metrics` for Prometheus;
//! - [`config`]: `/config/:opt`, read and (lookupd addresses, log level) change;
//! - [`admin_guard`]: the admin writes' bearer token (`--http-admin-token-file`);
//! - [`https`]: the same API over TLS (`--https-address`), and the plain
//!   listener's 403 `TLS_REQUIRED` under `--tls-required=true`.
//! - [`publish_guard`]: `/pub` and `/mpub` behind the auth server (`--http-publish-auth`).
//! - [`inspect`]: `/channel/peek`, `/topic/peek` and `/message`, read-only;
//! - [`forward`]: a follower's inspection requests, forwarded to the leader.
//!
//! Connections are served by hyper with a header read timeout, so a client
//! that opens a connection and sends nothing (or half a request) is cut off;
//! a body must keep arriving (no pause longer than the same timeout). At
//! shutdown the listener closes and every connection finishes the request it
//! is answering, before the broker stops.

pub mod admin;
pub mod admin_guard;
pub mod cluster;
pub mod config;
pub mod forward;
pub mod https;
pub mod info;
pub mod inspect;
pub mod metrics;
pub mod publish;
pub mod publish_guard;
pub mod query;
pub mod response;
pub mod stats;
pub mod topology;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::routing::{get, post};
use axum::Router;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::accept::{accept_until, drain};
use crate::broker::Broker;
use crate::config::{ms, ServeArgs};
use response::HttpError;

/// How long connections get to finish their request at shutdown.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// What the handlers share.
pub struct HttpState {
    pub broker: Arc<Broker>,
    pub max_msg_size: u64,
    pub max_body_size: u64,
    pub max_req_timeout_ms: u64,
    /// Longest silence allowed while a request body is arriving.
    pub read_timeout: Duration,
    pub info: info::Info,
    pub metrics: crate::metrics::Metrics,
    /// The lookupds this node registers with (`/config/nsqlookupd_tcp_addresses`).
    pub lookup_peers: Arc<crate::lookup_peer::LookupPeers>,
    /// The settings `/config/:opt` reports.
    pub args: ServeArgs,
    /// The log level now (`PUT /config/log_level` changes it).
    pub log_level: std::sync::Mutex<String>,
    /// Redundancy mode: this node's replica group.
    pub replication: Option<Arc<crate::replication::Replication>>,
    /// Who may make admin writes (`--http-admin-token-file`).
    pub admin_policy: crate::admin::auth::Policy,
    /// Who may publish, with `--http-publish-auth` (anyone otherwise).
    pub publish_auth: Option<Arc<publish_guard::PublishAuth>>,
}

/// The other end of an HTTP connection, in every request's extensions
/// (`serve` puts it there; an HTTPS listener passes `tls: true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpPeer {
    pub address: SocketAddr,
    pub tls: bool,
}

impl HttpState {
    pub fn log_level(&self) -> String {
        self.log_level
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl HttpState {
    pub fn new(
        broker: Arc<Broker>,
        args: &ServeArgs,
        tcp_address: SocketAddr,
        http_address: SocketAddr,
        metrics: crate::metrics::Metrics,
        lookup_peers: Arc<crate::lookup_peer::LookupPeers>,
        replication: Option<Arc<crate::replication::Replication>>,
    ) -> HttpState {
        HttpState {
            replication,
            admin_policy: crate::admin::auth::Policy::open(),
            publish_auth: None,
            metrics,
            lookup_peers,
            args: args.clone(),
            log_level: std::sync::Mutex::new(args.log_level.clone()),
            broker,
            max_msg_size: args.max_msg_size,
            max_body_size: args.max_body_size,
            max_req_timeout_ms: ms(args.max_req_timeout),
            read_timeout: args.http_read_timeout,
            info: info::Info::new(args, tcp_address, http_address),
        }
    }

    /// Admin writes need this policy's token (`--http-admin-token-file`).
    pub fn with_admin_policy(mut self, policy: crate::admin::auth::Policy) -> HttpState {
        self.admin_policy = policy;
        self
    }

    /// `/pub` and `/mpub` need a bearer secret this auth server grants
    /// (`--http-publish-auth`).
    pub fn with_publish_auth(mut self, publish_auth: publish_guard::PublishAuth) -> HttpState {
        self.publish_auth = Some(Arc::new(publish_auth));
        self
    }
}

/// Every route, with nsqd's 404 and 405 replies; the admin writes behind
/// `--http-admin-token-file` when it is set (`admin_guard.rs`), publishing
/// behind the auth server with `--http-publish-auth` (`publish_guard.rs`).
pub fn router(state: Arc<HttpState>) -> Router {
    let not_allowed = response::method_not_allowed;
    let admin_writes = Router::new()
        .route(
            "/config/{opt}",
            get(config::get_config)
                .put(config::put_config)
                .fallback(not_allowed),
        )
        .route("/cluster/add", post(cluster::add).fallback(not_allowed))
        .route(
            "/cluster/remove",
            post(cluster::remove).fallback(not_allowed),
        )
        .route(
            "/cluster/faults",
            axum::routing::put(cluster::faults).fallback(not_allowed),
        )
        .route(
            "/topic/create",
            post(topology::create_topic).fallback(not_allowed),
        )
        .route(
            "/channel/create",
            post(topology::create_channel).fallback(not_allowed),
        )
        .route(
            "/topic/pause",
            post(admin::pause_topic).fallback(not_allowed),
        )
        .route(
            "/topic/unpause",
            post(admin::unpause_topic).fallback(not_allowed),
        )
        .route(
            "/topic/delete",
            post(admin::delete_topic).fallback(not_allowed),
        )
        .route(
            "/channel/pause",
            post(admin::pause_channel).fallback(not_allowed),
        )
        .route(
            "/channel/unpause",
            post(admin::unpause_channel).fallback(not_allowed),
        )
        .route(
            "/channel/delete",
            post(admin::delete_channel).fallback(not_allowed),
        )
        .route(
            "/topic/empty",
            post(admin::empty_topic).fallback(not_allowed),
        )
        .route(
            "/channel/empty",
            post(admin::empty_channel).fallback(not_allowed),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin_guard::require_admin_token,
        ));
    let publishing = Router::new()
        .route("/pub", post(publish::publish).fallback(not_allowed))
        .route("/mpub", post(publish::multi_publish).fallback(not_allowed))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            publish_guard::require_publish_auth,
        ));
    Router::new()
        .route("/ping", get(info::ping).fallback(not_allowed))
        .route("/info", get(info::info).fallback(not_allowed))
        .route("/stats", get(stats::stats).fallback(not_allowed))
        .route("/metrics", get(metrics::metrics).fallback(not_allowed))
        .route("/cluster", get(cluster::cluster).fallback(not_allowed))
        .route(
            "/channel/peek",
            get(inspect::peek_channel).fallback(not_allowed),
        )
        .route(
            "/topic/peek",
            get(inspect::peek_topic).fallback(not_allowed),
        )
        .route("/message", get(inspect::message).fallback(not_allowed))
        .merge(publishing)
        .merge(admin_writes)
        .fallback(response::not_found)
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets
/// each connection finish its current request (bounded) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) {
    let plain = |socket: TcpStream| std::future::ready(Some(socket));
    let kind = Listener {
        what: "HTTP",
        tls: false,
    };
    serve_on(
        (listener, kind),
        router,
        header_read_timeout,
        shutdown,
        plain,
    )
    .await;
}

/// What a listener is, for logs and for each request's [`HttpPeer`].
#[derive(Debug, Clone, Copy)]
pub struct Listener {
    pub what: &'static str,
    pub tls: bool,
}

/// [`serve`] with a `handshake` that turns each accepted socket into the
/// stream HTTP is spoken on (TLS for [`https`]), or drops it (`None`).
pub async fn serve_on<H, F, IO>(
    (listener, kind): (TcpListener, Listener),
    router: Router,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
    handshake: H,
) where
    H: Fn(TcpStream) -> F,
    F: Future<Output = Option<IO>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connections = accept_until(listener, &shutdown, kind.what, |socket, address| {
        let peer = HttpPeer {
            address,
            tls: kind.tls,
        };
        let service = peer_service(&router, peer);
        let token = shutdown.clone();
        let stream = handshake(socket);
        async move {
            if let Some(stream) = stream.await {
                serve_connection(stream, service, header_read_timeout, token).await;
            }
        }
    })
    .await;
    drain(connections, DRAIN_DEADLINE, kind.what).await;
}

/// One HTTP/1.1 connection, until the client closes it or, at `shutdown`,
/// until it has answered the request in progress.
async fn serve_connection<IO, S>(
    stream: IO,
    service: S,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// `router` as a hyper service that records `peer` in each request's
/// extensions (for `/pub`'s auth check).
pub fn peer_service(
    router: &Router,
    peer: HttpPeer,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    let service = TowerToHyperService::new(router.clone());
    hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(peer);
        hyper::service::Service::call(&service, request)
    })
}

/// Why a request body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// The client stopped sending for longer than the read timeout.
    TimedOut,
    /// The connection failed.
    Failed,
}

impl From<BodyError> for HttpError {
    fn from(error: BodyError) -> HttpError {
        match error {
            BodyError::TimedOut => {
                HttpError::new(axum::http::StatusCode::REQUEST_TIMEOUT, "REQUEST_TIMEOUT")
            }
            BodyError::Failed => HttpError::internal(),
        }
    }
}

/// Reads at most `limit` bytes of `body` (like Go's `io.LimitReader`): a
/// result of exactly `limit` bytes means "at least that many were sent".
pub async fn read_body(body: Body, limit: usize, idle: Duration) -> Result<Bytes, BodyError> {
    let mut stream = body.into_data_stream();
    let mut collected = BytesMut::new();
    while collected.len() < limit {
        let next = tokio::time::timeout(idle, stream.next())
            .await
            .map_err(|_| BodyError::TimedOut)?;
        match next {
            None => break,
            Some(Ok(chunk)) => {
                let room = limit - collected.len();
                collected.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Some(Err(_)) => return Err(BodyError::Failed),
        }
    }
    Ok(collected.freeze())
}
