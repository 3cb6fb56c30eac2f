//! nsqd's HTTP response shapes (`docs/nsq-wire.md` §5.1).
//!
//! Every response but `/ping` carries `X-NSQ-Content-Type: nsq; version=1.0`.
//! A string result is written raw as `text/plain`, an empty result is an
//! empty body, a structured result is JSON, and every error is
//! `{"message":"<TEXT>"}` as JSON.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The header go-nsq relies on to recognise the 1.0 response format.
pub const NSQ_CONTENT_TYPE_HEADER: &str = "x-nsq-content-type";
/// Its only value.
pub const NSQ_CONTENT_TYPE_V1: &str = "nsq; version=1.0";

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json; charset=utf-8";

/// A successful V1 reply.
#[derive(Debug)]
pub enum Reply {
    /// `OK` and the like, written raw.
    Text(&'static str),
    /// No body.
    Empty,
    /// A JSON document (serialized in field order, as Go does).
    Json(String),
}

impl Reply {
    /// JSON of any serializable value.
    pub fn json(value: &impl Serialize) -> Result<Reply, HttpError> {
        serde_json::to_string(value)
            .map(Reply::Json)
            .map_err(|_| HttpError::internal())
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self {
            Reply::Text(text) => v1(StatusCode::OK, Some(TEXT), Body::from(text)),
            Reply::Empty => v1(StatusCode::OK, None, Body::empty()),
            Reply::Json(text) => v1(StatusCode::OK, Some(JSON), Body::from(text)),
        }
    }
}

/// A failed V1 request: a status and nsqd's message text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: &'static str,
}

impl HttpError {
    pub const fn new(status: StatusCode, message: &'static str) -> Self {
        HttpError { status, message }
    }

    pub const fn bad_request(message: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub const fn too_large(message: &'static str) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    pub const fn not_found(message: &'static str) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub const fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
    }

    pub const fn exiting() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "EXITING")
    }

    /// Redundancy mode: no leader committed the write in time.
    pub const fn no_leader() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "NO_LEADER")
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "message": self.message }).to_string();
        v1(self.status, Some(JSON), Body::from(body))
    }
}

/// What every V1 handler returns.
pub type V1Result = Result<Reply, HttpError>;

/// 404 for an unknown path.
pub async fn not_found() -> HttpError {
    HttpError::not_found("NOT_FOUND")
}

/// 405 for a known path asked with the wrong method.
pub async fn method_not_allowed() -> HttpError {
    HttpError::new(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
}

/// A plain-text reply without the V1 header (`/ping`).
pub fn plain_text(status: StatusCode, text: String) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
    response
}

/// A V1 reply with a JSON body written as given (nsqd's hand-formatted
/// bodies, such as `TLS_REQUIRED`'s).
pub fn raw_json(status: StatusCode, body: String) -> Response {
    v1(status, Some(JSON), Body::from(body))
}

fn v1(status: StatusCode, content_type: Option<&'static str>, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Some(content_type) = content_type {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    headers.insert(
        NSQ_CONTENT_TYPE_HEADER,
        HeaderValue::from_static(NSQ_CONTENT_TYPE_V1),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_shape_is_nsqds() {
        let response = HttpError::bad_request("MSG_EMPTY").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CONTENT_TYPE], JSON);
        assert_eq!(
            response.headers()[NSQ_CONTENT_TYPE_HEADER],
            NSQ_CONTENT_TYPE_V1
        );
    }

    #[test]
    fn empty_reply_has_no_content_type() {
        let response = Reply::Empty.into_response();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get(header::CONTENT_TYPE).is_none());
        assert_eq!(
            response.headers()[NSQ_CONTENT_TYPE_HEADER],
            NSQ_CONTENT_TYPE_V1
        );
    }
}
