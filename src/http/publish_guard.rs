//! `--http-publish-auth` (ledgerq's addition; nsqd's HTTP API checks
//! nothing): `/pub` and `/mpub` then need `Authorization: Bearer <secret>`,
//! a secret the auth server (`--auth-http-address`) grants `publish` on the
//! topic, asked as a TCP AUTH would be with the HTTP client's IP address,
//! `tls` true only on the HTTPS listener and `common_name` "".
//! Authorizations are cached per (secret, address, TLS) until their TTL
//! (`src/auth/cache.rs`). The check comes before anything is read:
//!
//! - no bearer secret: 401 `{"message":"AUTH_REQUIRED"}` with
//!   `WWW-Authenticate: Bearer`;
//! - the auth server refused the secret (401 or 403), granted nothing, or
//!   does not allow publishing on the topic: 403 `UNAUTHORIZED`;
//! - the auth server failed (unreachable, too slow, other status, invalid
//!   reply): 502 `AUTH_FAILED`.
//!
//! A missing or invalid `topic` is left to the endpoint's own 400s, once the
//! secret has been accepted.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::query::Params;
use super::response::HttpError;
use super::topology::topic_param;
use super::{HttpPeer, HttpState};
use crate::auth::cache::{AuthCache, DEFAULT_CAPACITY};
use crate::auth::{AuthFailure, AuthRequest, Authenticator, Authorization};

/// The auth server and the authorizations it gave HTTP publishers.
#[derive(Debug)]
pub struct PublishAuth {
    authenticator: Arc<Authenticator>,
    cache: AuthCache,
}

impl PublishAuth {
    pub fn new(authenticator: Arc<Authenticator>) -> PublishAuth {
        PublishAuth {
            authenticator,
            cache: AuthCache::new(DEFAULT_CAPACITY),
        }
    }

    /// The cached authorization of `secret` from `remote_ip`, or the auth
    /// server's answer (kept if valid).
    async fn authorize(
        &self,
        secret: &[u8],
        remote_ip: &str,
        tls: bool,
        now: Instant,
    ) -> Result<Arc<Authorization>, AuthFailure> {
        if let Some(cached) = self.cache.get(secret, remote_ip, tls, now) {
            return Ok(cached);
        }
        let request = AuthRequest {
            remote_ip: remote_ip.to_owned(),
            tls,
            secret: secret.to_vec(),
            common_name: String::new(),
        };
        let authorization = Arc::new(self.authenticator.authorize(&request, now).await?);
        self.cache
            .insert(secret, remote_ip, tls, authorization.clone(), now);
        Ok(authorization)
    }
}

/// The secret of `Authorization: Bearer <secret>` (scheme in any case),
/// if there is a non-empty one.
fn bearer_secret(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, secret) = value.split_at_checked(b"Bearer ".len())?;
    if !scheme.eq_ignore_ascii_case(b"Bearer ") {
        return None;
    }
    let secret = secret.trim_ascii();
    (!secret.is_empty()).then_some(secret)
}

/// The topic `/pub` and `/mpub` will use, if the query names a valid one.
fn topic_of(query: Option<&str>) -> Option<String> {
    let params = Params::parse(query).ok()?;
    topic_param(&params).ok().map(str::to_owned)
}

/// The middleware on `/pub` and `/mpub`; lets everything through without
/// `--http-publish-auth`.
pub async fn require_publish_auth(
    State(state): State<Arc<HttpState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(guard) = &state.publish_auth else {
        return next.run(request).await;
    };
    let Some(secret) = bearer_secret(request.headers()) else {
        let mut response =
            HttpError::new(StatusCode::UNAUTHORIZED, "AUTH_REQUIRED").into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    };
    let peer = request.extensions().get::<HttpPeer>().copied();
    let remote_ip = peer.map_or(String::new(), |peer| peer.address.ip().to_string());
    let tls = peer.is_some_and(|peer| peer.tls);
    let authorization = match guard
        .authorize(secret, &remote_ip, tls, Instant::now())
        .await
    {
        Ok(authorization) => authorization,
        Err(failure) if failure.is_refusal() => return unauthorized(),
        Err(failure) => {
            tracing::warn!(%remote_ip, failure = %failure.detail, "HTTP publish: auth server failed");
            return HttpError::new(StatusCode::BAD_GATEWAY, "AUTH_FAILED").into_response();
        }
    };
    if authorization.permission_count() == 0 {
        return unauthorized();
    }
    match topic_of(request.uri().query()) {
        Some(topic) if !authorization.allows(&topic, "") => unauthorized(),
        _ => next.run(request).await,
    }
}

fn unauthorized() -> Response {
    HttpError::new(StatusCode::FORBIDDEN, "UNAUTHORIZED").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn reads_the_bearer_secret() {
        assert_eq!(
            bearer_secret(&headers("Bearer s3cr3t")),
            Some(&b"s3cr3t"[..])
        );
        assert_eq!(
            bearer_secret(&headers("bearer  s3cr3t ")),
            Some(&b"s3cr3t"[..])
        );
        assert_eq!(bearer_secret(&headers("Bearer ")), None);
        assert_eq!(bearer_secret(&headers("Basic czNjcjN0")), None);
        assert_eq!(bearer_secret(&headers("Bear")), None);
        assert_eq!(bearer_secret(&HeaderMap::new()), None);
    }

    #[test]
    fn reads_the_topic_as_the_endpoints_do() {
        assert_eq!(
            topic_of(Some("topic=orders&defer=5")).as_deref(),
            Some("orders")
        );
        assert_eq!(topic_of(Some("topic=a*b")), None);
        assert_eq!(topic_of(Some("x=1")), None);
        assert_eq!(topic_of(Some("topic=%zz")), None);
        assert_eq!(topic_of(None), None);
    }
}
