//! `GET /stats` (`docs/nsq-wire.md` §5.7): nsqd's JSON document (`format=json`) or
//! its text layout, with the `topic`, `channel`, `include_clients` and
//! `include_mem` parameters.
//!
//! `e2e_processing_latency` is nsqd's: `{"count":0,"percentiles":null}`
//! unless `--e2e-processing-latency-percentile` is given, then the count of
//! FINs in the window and each quantile's latency in nanoseconds. What
//! ledgerq has no equivalent for is reported as nsqd reports it when the
//! feature is off: compression and TLS fields are `false`/empty. A client's
//! `authed`, `auth_identity` and `auth_identity_url` are left out when
//! false or empty, as nsqd does; the text format adds ` authed[: identity]`
//! to an authed client's line. ledgerq has no garbage collector: `memory`
//! reports the process's resident set as `heap_in_use_bytes` and zero for
//! the Go-runtime-only keys.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::query::Params;
use super::response::{Reply, NSQ_CONTENT_TYPE_HEADER, NSQ_CONTENT_TYPE_V1};
use super::HttpState;
use crate::broker::client::ClientAuth;
use crate::broker::latency::LatencySummary;
use crate::broker::stats::{
    ChannelSnapshot, ClientSnapshot, StatsFilter, StatsSnapshot, TopicSnapshot,
};

/// The protocol name nsqd shows as each TCP client's `version`.
const CLIENT_VERSION: &str = "V2";

#[derive(Debug, Serialize)]
struct StatsDoc<'a> {
    version: &'static str,
    health: String,
    start_time: u64,
    topics: Option<Vec<TopicDoc<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<MemoryDoc>,
    producers: Option<Vec<ClientDoc<'a>>>,
}

#[derive(Debug, Serialize)]
struct TopicDoc<'a> {
    topic_name: &'a str,
    channels: Vec<ChannelDoc<'a>>,
    depth: u64,
    backend_depth: u64,
    message_count: u64,
    message_bytes: u64,
    paused: bool,
    e2e_processing_latency: E2eDoc,
}

#[derive(Debug, Serialize)]
struct ChannelDoc<'a> {
    channel_name: &'a str,
    depth: u64,
    backend_depth: u64,
    in_flight_count: u64,
    deferred_count: u64,
    message_count: u64,
    requeue_count: u64,
    timeout_count: u64,
    client_count: u64,
    clients: Option<Vec<ClientDoc<'a>>>,
    paused: bool,
    e2e_processing_latency: E2eDoc,
}

/// nsqd's `e2e_processing_latency` object: `{"count":0,"percentiles":null}`
/// when no quantiles are configured (never null itself: nsqadmin needs it).
#[derive(Debug, Serialize)]
struct E2eDoc {
    count: u64,
    percentiles: Option<Vec<PercentileDoc>>,
}

/// One quantile, as Go marshals nsqd's `map[string]float64` (sorted keys).
#[derive(Debug, Serialize)]
struct PercentileDoc {
    quantile: f64,
    /// Nanoseconds.
    value: f64,
}

fn e2e_doc(summary: Option<&LatencySummary>) -> E2eDoc {
    match summary {
        None => E2eDoc {
            count: 0,
            percentiles: None,
        },
        Some(summary) => E2eDoc {
            count: summary.count,
            percentiles: Some(
                summary
                    .percentiles
                    .iter()
                    .map(|&(quantile, value)| PercentileDoc { quantile, value })
                    .collect(),
            ),
        },
    }
}

/// nsqd's text rendering of the quantiles' values: `1.2ms, 300.0us`.
fn e2e_text(summary: Option<&LatencySummary>) -> String {
    let Some(summary) = summary else {
        return String::new();
    };
    let human = |ns: f64| match ns {
        v if v > 1e9 => format!("{:.1}s", v / 1e9),
        v if v > 1e6 => format!("{:.1}ms", v / 1e6),
        v if v > 1e3 => format!("{:.1}us", v / 1e3),
        v => format!("{v:.1}ns"),
    };
    let values: Vec<String> = summary.percentiles.iter().map(|&(_, v)| human(v)).collect();
    values.join(", ")
}

#[derive(Debug, Serialize)]
struct PubCountDoc<'a> {
    topic: &'a str,
    count: u64,
}

#[derive(Debug, Serialize)]
struct ClientDoc<'a> {
    client_id: &'a str,
    hostname: &'a str,
    version: &'static str,
    remote_address: &'a str,
    state: u8,
    ready_count: u64,
    in_flight_count: u64,
    message_count: u64,
    finish_count: u64,
    requeue_count: u64,
    connect_ts: i64,
    sample_rate: u8,
    deflate: bool,
    snappy: bool,
    user_agent: &'a str,
    #[serde(skip_serializing_if = "is_false")]
    authed: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    auth_identity: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    auth_identity_url: &'a str,
    tls: bool,
    tls_cipher_suite: &'a str,
    tls_version: &'a str,
    tls_negotiated_protocol: &'a str,
    tls_negotiated_protocol_is_mutual: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub_counts: Vec<PubCountDoc<'a>>,
}

#[derive(Debug, Serialize)]
struct MemoryDoc {
    heap_objects: u64,
    heap_idle_bytes: u64,
    heap_in_use_bytes: u64,
    heap_released_bytes: u64,
    gc_pause_usec_100: u64,
    gc_pause_usec_99: u64,
    gc_pause_usec_95: u64,
    next_gc_bytes: u64,
    gc_total_runs: u64,
}

impl MemoryDoc {
    fn now() -> MemoryDoc {
        MemoryDoc {
            heap_objects: 0,
            heap_idle_bytes: 0,
            heap_in_use_bytes: resident_bytes(),
            heap_released_bytes: 0,
            gc_pause_usec_100: 0,
            gc_pause_usec_99: 0,
            gc_pause_usec_95: 0,
            next_gc_bytes: 0,
            gc_total_runs: 0,
        }
    }

    fn rows(&self) -> [(&'static str, u64); 9] {
        [
            ("heap_objects", self.heap_objects),
            ("heap_idle_bytes", self.heap_idle_bytes),
            ("heap_in_use_bytes", self.heap_in_use_bytes),
            ("heap_released_bytes", self.heap_released_bytes),
            ("gc_pause_usec_100", self.gc_pause_usec_100),
            ("gc_pause_usec_99", self.gc_pause_usec_99),
            ("gc_pause_usec_95", self.gc_pause_usec_95),
            ("next_gc_bytes", self.next_gc_bytes),
            ("gc_total_runs", self.gc_total_runs),
        ]
    }
}

/// The resident set size from `/proc/self/statm` (0 where unavailable).
fn resident_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page_size).unwrap_or(0)
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn client_doc(client: &ClientSnapshot) -> ClientDoc<'_> {
    ClientDoc {
        client_id: &client.client_id,
        hostname: &client.hostname,
        version: CLIENT_VERSION,
        remote_address: &client.remote_address,
        state: client.state,
        ready_count: client.ready_count,
        in_flight_count: client.in_flight_count,
        message_count: client.message_count,
        finish_count: client.finish_count,
        requeue_count: client.requeue_count,
        connect_ts: client.connect_ts,
        sample_rate: client.sample_rate,
        deflate: client.transport.deflate,
        snappy: client.transport.snappy,
        user_agent: &client.user_agent,
        authed: client.auth.authed,
        auth_identity: &client.auth.identity,
        auth_identity_url: &client.auth.identity_url,
        tls: client.transport.tls,
        tls_cipher_suite: &client.transport.tls_cipher_suite,
        tls_version: &client.transport.tls_version,
        tls_negotiated_protocol: &client.transport.tls_negotiated_protocol,
        tls_negotiated_protocol_is_mutual: client.transport.tls_mutual,
        pub_counts: client
            .pub_counts
            .iter()
            .map(|(topic, count)| PubCountDoc {
                topic,
                count: *count,
            })
            .collect(),
    }
}

fn channel_doc(channel: &ChannelSnapshot, include_clients: bool) -> ChannelDoc<'_> {
    ChannelDoc {
        channel_name: &channel.name,
        depth: channel.depth,
        backend_depth: channel.backend_depth,
        in_flight_count: channel.in_flight_count,
        deferred_count: channel.deferred_count,
        message_count: channel.message_count,
        requeue_count: channel.requeue_count,
        timeout_count: channel.timeout_count,
        client_count: channel.client_count,
        clients: include_clients.then(|| channel.clients.iter().map(client_doc).collect()),
        paused: channel.paused,
        e2e_processing_latency: e2e_doc(channel.e2e_latency.as_ref()),
    }
}

fn topic_doc(topic: &TopicSnapshot, include_clients: bool) -> TopicDoc<'_> {
    TopicDoc {
        topic_name: &topic.name,
        channels: topic
            .channels
            .iter()
            .map(|channel| channel_doc(channel, include_clients))
            .collect(),
        depth: topic.depth,
        backend_depth: topic.backend_depth,
        message_count: topic.message_count,
        message_bytes: topic.message_bytes,
        paused: topic.paused,
        e2e_processing_latency: e2e_doc(topic.e2e_latency.as_ref()),
    }
}

/// nsqd's boolean parameters: `true`/`1`, `false`/`0`; absent or anything
/// else means the default (true).
fn flag(params: &Params, key: &str) -> bool {
    !matches!(params.get(key), Some("false" | "0"))
}

/// `GET /stats`.
pub async fn stats(State(state): State<Arc<HttpState>>, RawQuery(query): RawQuery) -> Response {
    match render(&state, query.as_deref()) {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

fn render(state: &HttpState, query: Option<&str>) -> Result<Response, super::response::HttpError> {
    let params = Params::parse(query)?;
    let include_clients = flag(&params, "include_clients");
    let include_mem = flag(&params, "include_mem");
    let filter = StatsFilter {
        topic: params.get("topic").map(str::to_owned),
        channel: params.get("channel").map(str::to_owned),
        include_clients,
    };
    let snapshot = state.broker.stats(&filter);
    let health = match state.broker.log().failure() {
        Some(error) => format!("NOK - {error}"),
        None => "OK".to_owned(),
    };
    let memory = include_mem.then(MemoryDoc::now);
    if params.get("format") == Some("json") {
        let doc = StatsDoc {
            version: state.info.version,
            health,
            start_time: state.info.start_time,
            topics: snapshot.topics.as_ref().map(|topics| {
                topics
                    .iter()
                    .map(|topic| topic_doc(topic, include_clients))
                    .collect()
            }),
            memory,
            producers: (include_clients && !snapshot.producers.is_empty())
                .then(|| snapshot.producers.iter().map(client_doc).collect()),
        };
        return Ok(Reply::json(&doc)?.into_response());
    }
    let text = text_stats(state, &health, memory.as_ref(), &snapshot);
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        NSQ_CONTENT_TYPE_HEADER,
        HeaderValue::from_static(NSQ_CONTENT_TYPE_V1),
    );
    Ok(response)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// A whole-second duration as Go prints one: `1h2m3s`, `5m0s`, `7s`.
fn go_duration(seconds: u64) -> String {
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// ledgerq's addition to a client line of an authed client: ` authed`,
/// then its identity if it has one (nsqd's text omits AUTH).
fn auth_text(auth: &ClientAuth) -> String {
    match (auth.authed, auth.identity.as_str()) {
        (false, _) => String::new(),
        (true, "") => " authed".to_owned(),
        (true, identity) => format!(" authed: {identity}"),
    }
}

/// One client line of the text format (nsqd's `ClientStats.String`).
fn client_line(client: &ClientSnapshot, now: u64) -> String {
    let connected = go_duration(now.saturating_sub(u64::try_from(client.connect_ts).unwrap_or(0)));
    let port = client
        .remote_address
        .rsplit_once(':')
        .map_or("", |(_, port)| port);
    let id = format!("{}:{} {}", client.hostname, port, client.user_agent);
    if !client.pub_counts.is_empty() {
        let total: u64 = client.pub_counts.iter().map(|(_, count)| count).sum();
        let topics: Vec<String> = client
            .pub_counts
            .iter()
            .map(|(topic, count)| format!("{topic}={count}"))
            .collect();
        return format!(
            "[{CLIENT_VERSION} {id:<21}] msgs: {total:<8} topics: {} connected: {connected}{}",
            topics.join(","),
            auth_text(&client.auth)
        );
    }
    format!(
        "[{CLIENT_VERSION} {id:<21}] state: {} inflt: {:<4} rdy: {:<4} fin: {:<8} re-q: {:<8} msgs: {:<8} connected: {connected}{}",
        client.state,
        client.in_flight_count,
        client.ready_count,
        client.finish_count,
        client.requeue_count,
        client.message_count,
        auth_text(&client.auth),
    )
}

/// nsqd's human-readable layout (`docs/nsq-wire.md` §5.7).
fn text_stats(
    state: &HttpState,
    health: &str,
    memory: Option<&MemoryDoc>,
    snapshot: &StatsSnapshot,
) -> String {
    let now = unix_now();
    let start = UNIX_EPOCH + Duration::from_secs(state.info.start_time);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "nsqd v{} (built w/ledgerq {})",
        state.info.version,
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        out,
        "start_time {}",
        humantime::format_rfc3339_seconds(start)
    );
    let _ = writeln!(
        out,
        "uptime {}",
        go_duration(now.saturating_sub(state.info.start_time))
    );
    let _ = writeln!(out, "\nHealth: {health}");
    if let Some(memory) = memory {
        out.push_str("\nMemory:\n");
        for (key, value) in memory.rows() {
            let _ = writeln!(out, "   {key:<25}\t{value}");
        }
    }
    let topics = snapshot.topics.as_deref().unwrap_or(&[]);
    if topics.is_empty() {
        out.push_str("\nTopics: None\n");
    } else {
        out.push_str("\nTopics:");
    }
    for topic in topics {
        let prefix = if topic.paused { "*P " } else { "   " };
        let _ = writeln!(
            out,
            "\n{prefix}[{:<15}] depth: {:<5} be-depth: {:<5} msgs: {:<8} e2e%: {}",
            topic.name,
            topic.depth,
            topic.backend_depth,
            topic.message_count,
            e2e_text(topic.e2e_latency.as_ref())
        );
        for channel in &topic.channels {
            let prefix = if channel.paused { "   *P " } else { "      " };
            let _ = writeln!(
                out,
                "{prefix}[{:<25}] depth: {:<5} be-depth: {:<5} inflt: {:<4} def: {:<4} re-q: {:<5} timeout: {:<5} msgs: {:<8} e2e%: {}",
                channel.name,
                channel.depth,
                channel.backend_depth,
                channel.in_flight_count,
                channel.deferred_count,
                channel.requeue_count,
                channel.timeout_count,
                channel.message_count,
                e2e_text(channel.e2e_latency.as_ref())
            );
            for client in &channel.clients {
                let _ = writeln!(out, "        {}", client_line(client, now));
            }
        }
    }
    if snapshot.producers.is_empty() {
        out.push_str("\nProducers: None\n");
    } else {
        out.push_str("\nProducers:\n");
        for producer in &snapshot.producers {
            let _ = writeln!(out, "   {}", client_line(producer, now));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(auth: ClientAuth) -> ClientSnapshot {
        ClientSnapshot {
            client_id: "c1".to_owned(),
            hostname: "h".to_owned(),
            user_agent: "ua".to_owned(),
            remote_address: "10.0.0.5:53122".to_owned(),
            state: 3,
            ready_count: 1,
            in_flight_count: 0,
            message_count: 0,
            finish_count: 0,
            requeue_count: 0,
            connect_ts: 0,
            sample_rate: 0,
            pub_counts: Vec::new(),
            transport: Default::default(),
            auth,
        }
    }

    #[test]
    fn auth_keys_are_left_out_unless_set() {
        let plain = serde_json::to_value(client_doc(&client(ClientAuth::default()))).unwrap();
        for key in ["authed", "auth_identity", "auth_identity_url"] {
            assert!(plain.get(key).is_none(), "{key}");
        }
        assert!(!client_line(&client(ClientAuth::default()), 0).contains("authed"));
        let authed = ClientAuth {
            authed: true,
            identity: "alice".to_owned(),
            identity_url: "https://id/alice".to_owned(),
        };
        let doc = serde_json::to_value(client_doc(&client(authed.clone()))).unwrap();
        assert_eq!(doc["authed"], true);
        assert_eq!(doc["auth_identity"], "alice");
        assert_eq!(doc["auth_identity_url"], "https://id/alice");
        assert!(client_line(&client(authed), 0).ends_with(" authed: alice"));
        let anonymous = ClientAuth {
            authed: true,
            ..ClientAuth::default()
        };
        let doc = serde_json::to_value(client_doc(&client(anonymous.clone()))).unwrap();
        assert_eq!(doc["authed"], true);
        assert!(doc.get("auth_identity").is_none());
        assert!(client_line(&client(anonymous), 0).ends_with(" authed"));
    }

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(300), "5m0s");
        assert_eq!(go_duration(3723), "1h2m3s");
    }

    #[test]
    fn boolean_parameters_default_to_true() {
        let params = Params::parse(Some("a=false&b=0&c=1&d=maybe")).unwrap();
        assert!(!flag(&params, "a"));
        assert!(!flag(&params, "b"));
        assert!(flag(&params, "c"));
        assert!(flag(&params, "d"));
        assert!(flag(&params, "missing"));
    }
}
