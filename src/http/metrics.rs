//! `GET /metrics`: the Prometheus scrape endpoint (not an nsqd endpoint, so
//! it answers in Prometheus' conventions, not nsqd's V1 shape).
//!
//! The Prometheus text format 0.0.4 by default; OpenMetrics when the
//! scraper's `Accept` header names `application/openmetrics-text`, as
//! Prometheus' own does.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::HttpState;
use crate::metrics::{OPENMETRICS_TEXT, PROMETHEUS_TEXT};

/// Whether the scraper prefers OpenMetrics.
pub fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text"))
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    let openmetrics = wants_openmetrics(&headers);
    let body = state.metrics.render(openmetrics);
    let content_type = if openmetrics {
        OPENMETRICS_TEXT
    } else {
        PROMETHEUS_TEXT
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}
