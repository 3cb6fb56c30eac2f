//! The HTTP API over TLS (`--https-address`, nsqd's HTTPS listener): the
//! same router and state as the plain listener, spoken after a rustls
//! handshake (ALPN `http/1.1`) with the client-certificate policy of
//! `--tls-client-auth-policy`. Each handshake runs in its connection's own
//! task and is given [`HANDSHAKE_DEADLINE`], so a client that stalls or
//! sends something other than a ClientHello costs that task only.
//!
//! Also the plain listener's answer under `--tls-required=true`: every
//! request, whatever its method and path (`/ping` included, as in nsqd),
//! gets 403 `{"message": "TLS_REQUIRED", "https_port": <port>}`.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use axum::Router;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::response::raw_json;

/// How long a client has to finish the TLS handshake (nsqd's 5 s).
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);

/// The only application protocol offered: hyper serves HTTP/1.1 here.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Serves `router` over TLS on `listener` until `shutdown` is cancelled,
/// then lets each connection finish its current request (bounded).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Arc<ServerConfig>,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(with_http1_alpn(&tls));
    let handshake = move |socket| accept(acceptor.clone(), socket);
    let kind = super::Listener {
        what: "HTTPS",
        tls: true,
    };
    super::serve_on(
        (listener, kind),
        router,
        header_read_timeout,
        shutdown,
        handshake,
    )
    .await;
}

/// `tls` with ALPN `http/1.1` (a client offering only `h2` is refused
/// rather than spoken to in a protocol it did not ask for).
pub fn with_http1_alpn(tls: &ServerConfig) -> Arc<ServerConfig> {
    let mut config = tls.clone();
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Arc::new(config)
}

/// The server side of one handshake, bounded by [`HANDSHAKE_DEADLINE`];
/// `None` (the socket closed) when it fails or takes too long.
async fn accept(acceptor: TlsAcceptor, socket: TcpStream) -> Option<TlsStream<TcpStream>> {
    let peer = socket.peer_addr().ok();
    match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(?peer, %error, "HTTPS: TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(?peer, "HTTPS: TLS handshake timed out");
            None
        }
    }
}

/// The plain listener's router under `--tls-required=true`.
pub fn tls_required_router(https_port: u16) -> Router {
    Router::new().fallback(move || async move { tls_required(https_port) })
}

/// nsqd's answer, byte for byte (its body is formatted by hand, with the
/// spaces).
pub fn tls_required(https_port: u16) -> Response {
    let body = format!(r#"{{"message": "TLS_REQUIRED", "https_port": {https_port}}}"#);
    raw_json(StatusCode::FORBIDDEN, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::response::{NSQ_CONTENT_TYPE_HEADER, NSQ_CONTENT_TYPE_V1};
    use axum::body::to_bytes;
    use axum::http::{header, Request};
    use tower::ServiceExt;

    #[tokio::test]
    async fn every_request_gets_nsqds_tls_required_answer() {
        for (method, path) in [("GET", "/ping"), ("POST", "/pub?topic=t"), ("PUT", "/x")] {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .body(axum::body::Body::empty())
                .unwrap();
            let response = tls_required_router(4152).oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{method} {path}");
            let headers = response.headers();
            assert_eq!(
                headers[header::CONTENT_TYPE],
                "application/json; charset=utf-8"
            );
            assert_eq!(headers[NSQ_CONTENT_TYPE_HEADER], NSQ_CONTENT_TYPE_V1);
            let body = to_bytes(response.into_body(), 1 << 10).await.unwrap();
            assert_eq!(
                &body[..],
                br#"{"message": "TLS_REQUIRED", "https_port": 4152}"#
            );
        }
    }
}
