//! The accept loop, the timer task and graceful shutdown.
//!
//! Shutdown (SIGTERM, SIGINT, or [`Running::shutdown`]): stop accepting,
//! tell every connection to stop reading, let each answer what it has
//! pending and flush, then commit what is queued and stop the committer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ledgerq_storage::{CommitOptions, Durability, StoreOptions, SyncHook};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::accept::{accept_until, drain};
use crate::admin::auth::Policy;
use crate::admin::service::{AdminContext, AdminService, Limits};
use crate::auth::Authenticator;
use crate::broker::latency::LatencySettings;
use crate::broker::{Broker, BrokerOptions, ChannelDirectory};
use crate::config::{ms, ServeArgs};
use crate::connection::{self, ConnectionSettings};
use crate::grpc;
use crate::http::publish_guard::PublishAuth;
use crate::http::{self, HttpState};
use crate::lookup_peer::LookupPeers;
use crate::lookupd::protocol::NodeInfo;
use crate::metrics::{CommitMetrics, Metrics};
use crate::replication::{self, config::ReplicaConfig, RaftTuning};
use crate::tls::ServerTls;
use ledgerq_storage::raft::Member;

/// How often in-flight timeouts and deferred messages are checked.
const TIMER_PERIOD: Duration = Duration::from_millis(25);
/// How long connections get to answer what is pending at shutdown.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// A started server.
pub struct Running {
    pub tcp_address: SocketAddr,
    pub http_address: SocketAddr,
    /// The HTTP API over TLS, when a certificate is configured.
    pub https_address: Option<SocketAddr>,
    /// The admin API (and, in redundancy mode, raft).
    pub grpc_address: SocketAddr,
    pub broker: Arc<Broker>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Graceful shutdown; returns when everything is flushed.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// A token that shuts the server down when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

pub fn broker_options(args: &ServeArgs, observer: Arc<CommitMetrics>) -> BrokerOptions {
    BrokerOptions {
        mem_queue_size: args.mem_queue_size,
        msg_timeout_ms: ms(args.msg_timeout),
        max_msg_timeout_ms: ms(args.max_msg_timeout),
        max_req_timeout_ms: ms(args.max_req_timeout),
        dedup_window_ms: ms(args.dedup_window),
        dedup_max_keys: args.dedup_max_keys,
        e2e_latency: LatencySettings {
            quantiles: args.e2e_processing_latency_percentiles.clone(),
            window_ms: ms(args.e2e_processing_latency_window_time),
        },
        commit: CommitOptions {
            lazy_interval: args.finish_sync_interval,
            observer: Some(observer),
            ..CommitOptions::default()
        },
    }
}

pub fn store_options(args: &ServeArgs, sync_hook: Option<Arc<dyn SyncHook>>) -> StoreOptions {
    let mut options = StoreOptions::new(&args.data_path);
    options.durability = if args.unsafe_no_fsync {
        Durability::NoFsync
    } else {
        Durability::Fsync
    };
    options.sync_hook = sync_hook;
    options
}

/// Binds the listeners, opens the data directory (alone, or as a member of
/// a replica group with `--replicas`) and starts serving.
pub async fn start(
    args: ServeArgs,
    sync_hook: Option<Arc<dyn SyncHook>>,
) -> anyhow::Result<Running> {
    let http_admin_policy = Policy::from_flags(args.http_admin_token_file.as_deref(), false)?;
    let server_tls = args.tls.server_tls()?;
    let authenticator = Authenticator::from_args(&args.auth)?;
    let replica_config = ReplicaConfig::from_flags(
        args.node_id,
        args.replicas.as_deref(),
        args.grpc_address,
        args.forward_timeout,
    )?;
    let listener = TcpListener::bind(args.tcp_address)
        .await
        .with_context(|| format!("binding TCP {}", args.tcp_address))?;
    let tcp_address = listener.local_addr()?;
    let http_listener = bind_http(&args).await?;
    let http_address = http_listener.local_addr()?;
    let https = bind_https(&args, server_tls.clone()).await?;
    let https_address = https.as_ref().map(|h| h.address);
    let grpc = grpc_endpoint(&args).await?;
    let shutdown = CancellationToken::new();
    let store = store_options(&args, sync_hook);
    let commit_metrics = Arc::new(CommitMetrics::default());
    let options = broker_options(&args, commit_metrics.clone());
    let (broker, replication, grpc) = match replica_config {
        None => {
            let broker = open_single(&args, store, options).await?;
            (broker, None, grpc::serve(grpc, None, shutdown.clone())?)
        }
        Some(config) => {
            let announced = Member {
                grpc_address: String::new(),
                tcp_address: announced_address(&args, tcp_address),
                http_address: announced_address(&args, http_address),
            };
            let tuning = RaftTuning {
                heartbeat_interval: args.raft_heartbeat_interval,
                election_timeout_min: args.raft_election_timeout,
                snapshot_entries: args.raft_snapshot_entries,
            };
            let opened = replication::open(
                config,
                tuning,
                &args.data_path,
                store,
                options,
                announced,
                args.enable_fault_injection,
                grpc,
                shutdown.clone(),
            )
            .await
            .with_context(|| {
                format!(
                    "opening data path {} as a replica",
                    args.data_path.display()
                )
            })?;
            (opened.broker, Some(opened.replication), opened.grpc)
        }
    };
    grpc.attach(AdminContext {
        broker: broker.clone(),
        replication: replication.clone(),
        limits: Limits {
            max_msg_size_bytes: args.max_msg_size,
            max_body_size_bytes: args.max_body_size,
            max_req_timeout_ms: ms(args.max_req_timeout),
        },
    });
    tracing::info!(%tcp_address, data_path = %args.data_path.display(), fsync = !args.unsafe_no_fsync, "TCP: listening");
    tracing::info!(%http_address, "HTTP: listening");
    if let Some(https_address) = https_address {
        tracing::info!(%https_address, "HTTPS: listening");
    }
    let metrics = Metrics::new(broker.clone(), &commit_metrics, replication.clone());
    let identity = node_identity(&args, tcp_address, http_address);
    let lookup_peers = LookupPeers::new(broker.clone(), identity, shutdown.clone());
    lookup_peers.set_addresses(args.lookupd_tcp_addresses.clone());
    let directory: Arc<dyn ChannelDirectory> = lookup_peers.clone();
    broker.set_channel_directory(Arc::downgrade(&directory));
    let mut state = HttpState::new(
        broker.clone(),
        &args,
        tcp_address,
        http_address,
        metrics,
        lookup_peers,
        replication,
    )
    .with_admin_policy(http_admin_policy);
    if let Some(authenticator) = authenticator
        .as_ref()
        .filter(|_| args.auth.http_publish_auth)
    {
        state = state.with_publish_auth(PublishAuth::new(authenticator.clone()));
    }
    let state = Arc::new(state);
    let http_tasks = serve_http(&args, http_listener, https, http::router(state), &shutdown);
    let settings = Arc::new(ConnectionSettings::from_args(
        &args,
        server_tls,
        authenticator,
    ));
    let task = tokio::spawn(serve(
        listener,
        broker.clone(),
        settings,
        http_tasks,
        shutdown.clone(),
    ));
    Ok(Running {
        tcp_address,
        http_address,
        https_address,
        grpc_address: grpc.address,
        broker,
        shutdown,
        task,
    })
}

/// Single-node mode: the data directory is one store.
async fn open_single(
    args: &ServeArgs,
    store: StoreOptions,
    options: BrokerOptions,
) -> anyhow::Result<Arc<Broker>> {
    replication::check_mode(&args.data_path, false)?;
    let broker = tokio::task::spawn_blocking(move || Broker::open(store, options))
        .await?
        .with_context(|| format!("opening data path {}", args.data_path.display()))?;
    Ok(broker)
}

/// `HOST:PORT` as other members and clients should dial it.
fn announced_address(args: &ServeArgs, listening: SocketAddr) -> String {
    let host = crate::http::info::broadcast_address(&args.broadcast_address);
    format!("{host}:{}", listening.port())
}

/// What this node tells lookupds about itself.
fn node_identity(args: &ServeArgs, tcp_address: SocketAddr, http_address: SocketAddr) -> NodeInfo {
    let hostname = crate::http::info::hostname();
    let port = |broadcast: u16, listening: SocketAddr| match broadcast {
        0 => listening.port(),
        port => port,
    };
    NodeInfo {
        version: crate::connection::NSQ_COMPATIBLE_VERSION.to_owned(),
        tcp_port: port(args.broadcast_tcp_port, tcp_address),
        http_port: port(args.broadcast_http_port, http_address),
        broadcast_address: crate::http::info::broadcast_address(&args.broadcast_address),
        hostname,
    }
}

/// Binds `--grpc-address`, with the admin API's access policy
/// (`--grpc-admin-token-file`) and the port's TLS (`--grpc-tls-*`) read
/// first: a bad token or certificate file stops the start before anything
/// is opened.
async fn grpc_endpoint(args: &ServeArgs) -> anyhow::Result<grpc::Endpoint> {
    let policy = Policy::from_flags(
        args.grpc_admin_token_file.as_deref(),
        args.grpc_admin_open_reads,
    )?;
    let tls = args.grpc_tls.load()?;
    let listener = TcpListener::bind(args.grpc_address)
        .await
        .with_context(|| format!("binding gRPC {}", args.grpc_address))?;
    Ok(grpc::Endpoint {
        listener,
        admin: AdminService::new(policy),
        max_body_size_bytes: args.max_body_size,
        tls,
    })
}

/// The HTTPS listener and the TLS it speaks, when a certificate is set.
struct Https {
    listener: TcpListener,
    address: SocketAddr,
    tls: crate::tls::ServerTls,
}

/// With a certificate (`--tls-*`, read before anything is opened), binds
/// `--https-address`.
async fn bind_https(args: &ServeArgs, tls: Option<ServerTls>) -> anyhow::Result<Option<Https>> {
    let Some(tls) = tls else {
        return Ok(None);
    };
    let listener = TcpListener::bind(args.https_address)
        .await
        .with_context(|| format!("binding HTTPS {}", args.https_address))?;
    let address = listener.local_addr()?;
    Ok(Some(Https {
        listener,
        address,
        tls,
    }))
}

/// Serves the HTTP API on the plain listener (nsqd's 403 `TLS_REQUIRED`
/// to everything under `--tls-required=true`) and on the HTTPS one.
fn serve_http(
    args: &ServeArgs,
    plain: TcpListener,
    https: Option<Https>,
    router: axum::Router,
    shutdown: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let timeout = args.http_read_timeout;
    let plain_router = match &https {
        Some(https) if https.tls.required_for_http => {
            http::https::tls_required_router(https.address.port())
        }
        _ => router.clone(),
    };
    let mut tasks = vec![tokio::spawn(http::serve(
        plain,
        plain_router,
        timeout,
        shutdown.clone(),
    ))];
    if let Some(https) = https {
        let serving = http::https::serve(
            https.listener,
            router,
            https.tls.config,
            timeout,
            shutdown.clone(),
        );
        tasks.push(tokio::spawn(serving));
    }
    tasks
}

/// Binds `--http-address`.
async fn bind_http(args: &ServeArgs) -> anyhow::Result<TcpListener> {
    let address = args.http_address;
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding HTTP {address}"))?;
    Ok(listener)
}

async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    settings: Arc<ConnectionSettings>,
    http_tasks: Vec<tokio::task::JoinHandle<()>>,
    shutdown: CancellationToken,
) {
    let timers = tokio::spawn(run_timers(broker.clone(), shutdown.clone()));
    let connections = accept_until(listener, &shutdown, "TCP", |socket, peer| {
        connection::serve(
            socket,
            peer,
            broker.clone(),
            settings.clone(),
            shutdown.child_token(),
        )
    })
    .await;
    tracing::info!(
        open = connections.len(),
        "shutting down: draining connections"
    );
    drain(connections, DRAIN_DEADLINE, "TCP").await;
    for http_task in http_tasks {
        // Bounded by the HTTP servers' own drain deadline.
        let _ = http_task.await;
    }
    timers.abort();
    let closing = broker.clone();
    let _ = tokio::task::spawn_blocking(move || closing.shutdown()).await;
    tracing::info!("shutdown complete");
}

async fn run_timers(broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(TIMER_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => broker.tick(),
        }
    }
}
