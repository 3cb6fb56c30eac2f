//! `ledgerq lookupd`: discovery compatible with nsqlookupd (`docs/nsq-wire.md` §6).
//!
//! Nodes (`ledgerq serve`, or a stock nsqd) connect over TCP, IDENTIFY and
//! REGISTER their topics and channels; consumers ask over HTTP where a
//! topic lives (`/lookup?topic=`). Like nsqlookupd it keeps its registry in
//! memory only and rebuilds it from registrations: nodes re-register
//! everything when they reconnect, and several lookupds can run side by
//! side (clients merge their answers).
//!
//! - [`protocol`]: the TCP protocol V1 as pure parsing, with its error texts;
//! - [`registry`]: the registrations, producers, inactivity and tombstones;
//! - [`tcp`]: one node's connection;
//! - [`http`]: the HTTP API, also over TLS with `--https-address` (not in
//!   nsqlookupd; off unless configured).

pub mod http;
pub mod protocol;
pub mod registry;
pub mod tcp;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{bail, Context};
use bytes::Bytes;
use rustls::ServerConfig;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::accept::{accept_until, drain};
use crate::config::LookupdArgs;
use crate::connection::NSQ_COMPATIBLE_VERSION;
use crate::tls::{TlsArgs, TlsMinVersion, TlsRequired};
use registry::{Lifetimes, Registry};

/// Bound on the wait for connections at shutdown.
const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// What the lookupd says about itself (IDENTIFY reply, `/info`).
#[derive(Debug, Clone, Serialize)]
pub struct LookupdInfo {
    // Field order is Go's sorted map-key order, as nsqlookupd marshals it.
    pub broadcast_address: String,
    pub hostname: String,
    pub http_port: u16,
    pub tcp_port: u16,
    pub version: String,
}

/// What the TCP and HTTP sides share.
pub struct LookupdState {
    registry: Mutex<Registry>,
    pub lifetimes: Lifetimes,
    pub info: LookupdInfo,
}

impl LookupdState {
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The JSON answer to a node's IDENTIFY.
    pub fn identify_reply(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(&self.info).expect("plain struct serializes"))
    }
}

/// A started lookupd.
pub struct Running {
    pub tcp_address: SocketAddr,
    pub http_address: SocketAddr,
    /// The HTTP API over TLS (`--https-address`), when configured.
    pub https_address: Option<SocketAddr>,
    pub state: Arc<LookupdState>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, closes every connection and returns when done.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Binds the listeners and starts serving.
pub async fn start(args: LookupdArgs) -> anyhow::Result<Running> {
    let https = bind_https(&args).await?;
    let https_address = https.as_ref().map(|(_, address, _)| *address);
    let tcp = TcpListener::bind(args.tcp_address)
        .await
        .with_context(|| format!("binding TCP {}", args.tcp_address))?;
    let http = TcpListener::bind(args.http_address)
        .await
        .with_context(|| format!("binding HTTP {}", args.http_address))?;
    let tcp_address = tcp.local_addr()?;
    let http_address = http.local_addr()?;
    let hostname = crate::http::info::hostname();
    let state = Arc::new(LookupdState {
        registry: Mutex::new(Registry::default()),
        lifetimes: Lifetimes {
            inactive_producer_timeout_ns: args.inactive_producer_timeout.as_nanos() as i64,
            tombstone_lifetime_ns: args.tombstone_lifetime.as_nanos() as i64,
        },
        info: LookupdInfo {
            broadcast_address: crate::http::info::broadcast_address(&args.broadcast_address),
            hostname,
            http_port: http_address.port(),
            tcp_port: tcp_address.port(),
            version: NSQ_COMPATIBLE_VERSION.to_owned(),
        },
    });
    tracing::info!(%tcp_address, %http_address, "lookupd: listening");
    let shutdown = CancellationToken::new();
    let router = http::router(state.clone());
    let mut http_tasks = vec![tokio::spawn(crate::http::serve(
        http,
        router.clone(),
        args.http_read_timeout,
        shutdown.clone(),
    ))];
    if let Some((listener, https_address, tls)) = https {
        tracing::info!(%https_address, "lookupd HTTPS: listening");
        http_tasks.push(tokio::spawn(crate::http::https::serve(
            listener,
            router,
            tls,
            args.http_read_timeout,
            shutdown.clone(),
        )));
    }
    let task = tokio::spawn(accept(tcp, state.clone(), http_tasks, shutdown.clone()));
    Ok(Running {
        tcp_address,
        http_address,
        https_address,
        state,
        shutdown,
        task,
    })
}

/// `--https-address` bound, with the certificate it serves; `None` unless
/// configured. A certificate without the address, or the reverse, is an
/// error rather than a silently plain lookupd.
async fn bind_https(
    args: &LookupdArgs,
) -> anyhow::Result<Option<(TcpListener, SocketAddr, Arc<ServerConfig>)>> {
    let tls = TlsArgs {
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        tls_root_ca_file: None,
        tls_client_auth_policy: None,
        tls_required: TlsRequired::False,
        tls_min_version: TlsMinVersion::Tls12,
    }
    .server_tls()?;
    let (address, tls) = match (args.https_address, tls) {
        (None, None) => return Ok(None),
        (Some(address), Some(tls)) => (address, tls.config),
        (Some(_), None) => bail!("--https-address needs --tls-cert and --tls-key"),
        (None, Some(_)) => bail!("--tls-cert and --tls-key need --https-address"),
    };
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding HTTPS {address}"))?;
    let address = listener.local_addr()?;
    Ok(Some((listener, address, tls)))
}

async fn accept(
    listener: TcpListener,
    state: Arc<LookupdState>,
    http_tasks: Vec<tokio::task::JoinHandle<()>>,
    shutdown: CancellationToken,
) {
    let connections = accept_until(listener, &shutdown, "lookupd TCP", |socket, peer| {
        tcp::serve(socket, peer, state.clone(), shutdown.clone())
    })
    .await;
    // Every connection ends at once on shutdown (nothing to flush).
    drain(connections, DRAIN_DEADLINE, "lookupd TCP").await;
    for http_task in http_tasks {
        let _ = http_task.await;
    }
    tracing::info!("lookupd: shutdown complete");
}
