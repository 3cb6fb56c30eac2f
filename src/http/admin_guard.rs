//! `--http-admin-token-file`: the HTTP API's admin writes (topic and
//! channel create, delete, pause, unpause, empty; `PUT /config/:opt`;
//! `/cluster/add|remove|faults`) then need `Authorization: Bearer <token>`.
//! Reads (`GET`, `HEAD`) and publishing stay open, as in nsqd. A refused
//! request gets 401 `{"message":"UNAUTHORIZED"}` with `WWW-Authenticate:
//! Bearer`, before anything is read or changed.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::response::HttpError;
use super::HttpState;
use crate::admin::auth::Access;

/// The middleware on the admin-write routes.
pub async fn require_admin_token(
    State(state): State<Arc<HttpState>>,
    request: Request,
    next: Next,
) -> Response {
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if reads
        || state
            .admin_policy
            .admits(authorization, Access::Write)
            .is_ok()
    {
        return next.run(request).await;
    }
    let mut response = HttpError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED").into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}
