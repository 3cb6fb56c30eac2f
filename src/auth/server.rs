//! The call to the auth servers, as nsqd makes it (the reference's §1.9).
//!
//! Each `--auth-http-address` is a HOST:PORT (asked at
//! `http://HOST:PORT/auth`) or a full `http://` URL; `https://` is refused
//! at start (ledgerq's auth client speaks plain HTTP only). A call starts at
//! a random address and tries the next until one answers 200 with a valid
//! reply; the last failure is returned. The question carries `common_name`,
//! `remote_ip`, `secret` and `tls`: as a query string (keys sorted) with
//! `GET`, or as nsqd's JSON object of one-element arrays with `POST`.
//! Connecting is bounded by `--http-client-connect-timeout` and the whole
//! call to one address by `--http-client-request-timeout`, so a dead or
//! silent auth server fails the call, never hangs it; the reply body is
//! read up to [`MAX_REPLY_BYTES`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header;
use tokio::net::TcpStream;

use super::reply::{Authorization, MAX_REPLY_BYTES};
use super::{AuthArgs, AuthMethod};

/// The `Accept` header nsqd sends to auth servers.
const ACCEPT_NSQ_V1: &str = "application/vnd.nsq; version=1.0";

/// What the auth server is asked about one secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthRequest {
    /// The client's IP address ("" when unknown).
    pub remote_ip: String,
    /// Whether the client's connection is TLS.
    pub tls: bool,
    /// The AUTH body (or the HTTP bearer token), as sent.
    pub secret: Vec<u8>,
    /// The subject common name of the client's certificate, or "".
    pub common_name: String,
}

impl fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthRequest")
            .field("remote_ip", &self.remote_ip)
            .field("tls", &self.tls)
            .field("secret", &"<redacted>")
            .field("common_name", &self.common_name)
            .finish()
    }
}

impl AuthRequest {
    /// The four fields in key order, as Go's `url.Values` sorts them.
    fn fields(&self) -> [(&'static str, String); 4] {
        [
            ("common_name", self.common_name.clone()),
            ("remote_ip", self.remote_ip.clone()),
            ("secret", String::from_utf8_lossy(&self.secret).into_owned()),
            ("tls", self.tls.to_string()),
        ]
    }

    /// `common_name=…&remote_ip=…&secret=…&tls=…`, escaped as Go's
    /// `url.Values.Encode` does (the secret's bytes as they are).
    pub fn query_string(&self) -> String {
        let values: [(&str, &[u8]); 4] = [
            ("common_name", self.common_name.as_bytes()),
            ("remote_ip", self.remote_ip.as_bytes()),
            ("secret", &self.secret),
            ("tls", if self.tls { b"true" } else { b"false" }),
        ];
        let pairs: Vec<String> = values
            .iter()
            .map(|(key, value)| format!("{key}={}", query_escape(value)))
            .collect();
        pairs.join("&")
    }

    /// nsqd's POST body: `{"common_name":[""],"remote_ip":["…"],…}`.
    pub fn json_body(&self) -> String {
        let map: BTreeMap<&str, [String; 1]> = self
            .fields()
            .into_iter()
            .map(|(key, value)| (key, [value]))
            .collect();
        serde_json::to_string(&map).expect("a map of strings serializes")
    }
}

/// Go's `url.QueryEscape`: unreserved bytes kept, space as `+`, the rest
/// as `%XX`.
fn query_escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &byte in bytes {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(byte))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Why a call to the auth servers failed. The client is only told `AUTH
/// failed`; `detail` is for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailure {
    /// What went wrong, naming the auth server.
    pub detail: String,
    /// The auth server's HTTP status when it answered something else than 200.
    pub status: Option<u16>,
}

impl AuthFailure {
    fn new(endpoint: &Endpoint, detail: impl fmt::Display) -> AuthFailure {
        AuthFailure {
            detail: format!("auth server {}: {detail}", endpoint.label),
            status: None,
        }
    }

    /// The auth server answered 401 or 403: it refused the secret (rather
    /// than failing to answer).
    pub fn is_refusal(&self) -> bool {
        matches!(self.status, Some(401 | 403))
    }
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// One auth server address, resolved into what an HTTP/1 request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    /// The address as given on the command line.
    label: String,
    /// `host:port` to connect to.
    dial: String,
    /// The `Host` header.
    host: String,
    /// The request target: the path, and the URL's own query if any.
    path_and_query: String,
}

impl Endpoint {
    fn parse(address: &str) -> anyhow::Result<Endpoint> {
        let url = if address.contains("://") {
            address.to_owned()
        } else {
            format!("http://{address}/auth")
        };
        let context = || format!("--auth-http-address {address:?}");
        let uri: hyper::Uri = url.parse().with_context(context)?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => bail!(
                "--auth-http-address {address:?}: https:// auth servers are not supported \
                 (ledgerq asks auth servers over plain http:// only)"
            ),
            _ => bail!("--auth-http-address {address:?}: only http:// URLs are supported"),
        }
        let authority = uri.authority().with_context(context)?;
        if authority.as_str().contains('@') || authority.host().is_empty() {
            bail!("--auth-http-address {address:?}: expected http://HOST[:PORT]/PATH");
        }
        let port = authority.port_u16().unwrap_or(80);
        let path_and_query = uri.path_and_query().map_or("/", |target| target.as_str());
        Ok(Endpoint {
            label: address.to_owned(),
            dial: format!("{}:{port}", authority.host()),
            host: authority.as_str().to_owned(),
            path_and_query: path_and_query.to_owned(),
        })
    }

    /// The GET target: the query appended to the URL's own, if it has one.
    fn get_target(&self, query: &str) -> String {
        let separator = if self.path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{separator}{query}", self.path_and_query)
    }
}

/// The auth servers of `--auth-http-address` and how to ask them.
#[derive(Debug)]
pub struct Authenticator {
    endpoints: Vec<Endpoint>,
    method: AuthMethod,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl Authenticator {
    /// `None` without `--auth-http-address`; an error for an address that
    /// is not plain HTTP, a zero timeout, or `--http-publish-auth` alone.
    pub fn from_args(args: &AuthArgs) -> anyhow::Result<Option<Arc<Authenticator>>> {
        if args.auth_http_addresses.is_empty() {
            if args.http_publish_auth {
                bail!("--http-publish-auth needs an auth server (--auth-http-address)");
            }
            return Ok(None);
        }
        if args.http_client_connect_timeout.is_zero() || args.http_client_request_timeout.is_zero()
        {
            bail!("--http-client-connect-timeout and --http-client-request-timeout must be > 0");
        }
        let endpoints = args
            .auth_http_addresses
            .iter()
            .map(|address| Endpoint::parse(address))
            .collect::<anyhow::Result<Vec<Endpoint>>>()?;
        Ok(Some(Arc::new(Authenticator {
            endpoints,
            method: args.auth_http_request_method,
            connect_timeout: args.http_client_connect_timeout,
            request_timeout: args.http_client_request_timeout,
        })))
    }

    /// Asks the auth servers, from a random one on, until one grants a
    /// valid reply; its TTL counts from `now`.
    pub async fn authorize(
        &self,
        request: &AuthRequest,
        now: Instant,
    ) -> Result<Authorization, AuthFailure> {
        let start = rand::random_range(0..self.endpoints.len());
        self.authorize_from(start, request, now).await
    }

    async fn authorize_from(
        &self,
        start: usize,
        request: &AuthRequest,
        now: Instant,
    ) -> Result<Authorization, AuthFailure> {
        assert!(!self.endpoints.is_empty());
        let count = self.endpoints.len();
        let mut last_failure = None;
        for step in 0..count {
            let endpoint = &self.endpoints[(start + step) % count];
            match self.ask(endpoint, request, now).await {
                Ok(authorization) => return Ok(authorization),
                Err(failure) => {
                    tracing::warn!(failure = %failure.detail, "auth server call failed");
                    last_failure = Some(failure);
                }
            }
        }
        Err(last_failure.expect("at least one auth server was asked"))
    }

    /// One auth server, within the request timeout.
    async fn ask(
        &self,
        endpoint: &Endpoint,
        request: &AuthRequest,
        now: Instant,
    ) -> Result<Authorization, AuthFailure> {
        let http_request = self.http_request(endpoint, request)?;
        let body =
            tokio::time::timeout(self.request_timeout, self.exchange(endpoint, http_request))
                .await
                .map_err(|_| {
                    let timeout = self.request_timeout;
                    AuthFailure::new(endpoint, format!("no reply within {timeout:?}"))
                })??;
        Authorization::parse(&body, now).map_err(|error| AuthFailure::new(endpoint, error))
    }

    fn http_request(
        &self,
        endpoint: &Endpoint,
        request: &AuthRequest,
    ) -> Result<hyper::Request<Full<Bytes>>, AuthFailure> {
        let builder = hyper::Request::builder()
            .header(header::HOST, &endpoint.host)
            .header(header::ACCEPT, ACCEPT_NSQ_V1);
        let built = match self.method {
            AuthMethod::Get => builder
                .method(hyper::Method::GET)
                .uri(endpoint.get_target(&request.query_string()))
                .body(Full::new(Bytes::new())),
            AuthMethod::Post => builder
                .method(hyper::Method::POST)
                .uri(endpoint.path_and_query.as_str())
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(request.json_body()))),
        };
        built.map_err(|error| AuthFailure::new(endpoint, format!("building the request: {error}")))
    }

    /// Connects, sends, and reads a 200's body (bounded); the caller
    /// bounds the time.
    async fn exchange(
        &self,
        endpoint: &Endpoint,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<Bytes, AuthFailure> {
        let fail = |detail: String| AuthFailure::new(endpoint, detail);
        let connect =
            tokio::time::timeout(self.connect_timeout, TcpStream::connect(&endpoint.dial));
        let stream = connect
            .await
            .map_err(|_| {
                fail(format!(
                    "connecting timed out after {:?}",
                    self.connect_timeout
                ))
            })?
            .map_err(|error| fail(format!("connecting: {error}")))?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|error| fail(format!("HTTP handshake: {error}")))?;
        let reply = async move {
            let response = sender
                .send_request(request)
                .await
                .map_err(|error| fail(format!("sending the request: {error}")))?;
            read_reply(endpoint, response).await
        };
        // The connection is driven here, not spawned: when the caller's
        // timeout drops this future, the socket goes with it.
        tokio::pin!(connection, reply);
        tokio::select! {
            result = &mut reply => result,
            ended = &mut connection => match ended {
                Ok(()) => reply.await,
                Err(error) => Err(fail(format!("connection failed: {error}"))),
            },
        }
    }
}

/// A 200's body, at most [`MAX_REPLY_BYTES`]; any other status fails.
async fn read_reply(
    endpoint: &Endpoint,
    response: hyper::Response<hyper::body::Incoming>,
) -> Result<Bytes, AuthFailure> {
    let status = response.status().as_u16();
    if status != 200 {
        return Err(AuthFailure {
            status: Some(status),
            ..AuthFailure::new(endpoint, format!("answered status {status}"))
        });
    }
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_REPLY_BYTES as u64) {
        let length = declared.unwrap_or_default();
        let detail = format!("reply of {length} bytes is over the {MAX_REPLY_BYTES}-byte limit");
        return Err(AuthFailure::new(endpoint, detail));
    }
    let body = Limited::new(response.into_body(), MAX_REPLY_BYTES)
        .collect()
        .await
        .map_err(|error| AuthFailure::new(endpoint, format!("reading the reply: {error}")))?
        .to_bytes();
    assert!(body.len() <= MAX_REPLY_BYTES);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::super::test_server::{grant, raw_server, silent_server, TestAuthServer};
    use super::*;

    fn args(addresses: &[&str], method: AuthMethod, request_timeout_ms: u64) -> AuthArgs {
        AuthArgs {
            auth_http_addresses: addresses.iter().map(|a| a.to_string()).collect(),
            auth_http_request_method: method,
            http_client_connect_timeout: Duration::from_secs(2),
            http_client_request_timeout: Duration::from_millis(request_timeout_ms),
            http_publish_auth: false,
        }
    }

    fn authenticator(addresses: &[&str], method: AuthMethod) -> Arc<Authenticator> {
        Authenticator::from_args(&args(addresses, method, 5_000))
            .unwrap()
            .expect("an address was given")
    }

    fn request(secret: &[u8]) -> AuthRequest {
        AuthRequest {
            remote_ip: "10.0.0.5".to_owned(),
            tls: false,
            secret: secret.to_vec(),
            common_name: String::new(),
        }
    }

    #[test]
    fn the_question_is_encoded_as_nsqd_does() {
        let question = request(b"s3cr3t");
        assert_eq!(
            question.query_string(),
            "common_name=&remote_ip=10.0.0.5&secret=s3cr3t&tls=false"
        );
        assert_eq!(
            question.json_body(),
            r#"{"common_name":[""],"remote_ip":["10.0.0.5"],"secret":["s3cr3t"],"tls":["false"]}"#
        );
        let odd = AuthRequest {
            tls: true,
            common_name: "Jo Doe".to_owned(),
            ..request(b"a+b/c&d=e%\xff~")
        };
        assert_eq!(
            odd.query_string(),
            "common_name=Jo+Doe&remote_ip=10.0.0.5&secret=a%2Bb%2Fc%26d%3De%25%FF~&tls=true"
        );
        assert!(!format!("{odd:?}").contains("a+b"));
    }

    #[test]
    fn addresses_become_urls_as_in_nsqd() {
        let plain = Endpoint::parse("auth.local:4181").unwrap();
        assert_eq!(plain.dial, "auth.local:4181");
        assert_eq!(plain.host, "auth.local:4181");
        assert_eq!(plain.path_and_query, "/auth");
        assert_eq!(plain.get_target("a=1"), "/auth?a=1");
        let url = Endpoint::parse("http://[::1]:9/check?realm=x").unwrap();
        assert_eq!(url.dial, "[::1]:9");
        assert_eq!(url.path_and_query, "/check?realm=x");
        assert_eq!(url.get_target("a=1"), "/check?realm=x&a=1");
        let default_port = Endpoint::parse("http://auth.local").unwrap();
        assert_eq!(default_port.dial, "auth.local:80");
        assert_eq!(default_port.path_and_query, "/");
    }

    #[test]
    fn start_refuses_what_it_cannot_ask() {
        let error = |addresses: &[&str]| {
            Authenticator::from_args(&args(addresses, AuthMethod::Get, 5_000))
                .unwrap_err()
                .to_string()
        };
        assert!(
            error(&["https://auth.local/auth"]).contains("https:// auth servers are not supported")
        );
        assert!(error(&["ftp://auth.local/auth"]).contains("only http://"));
        assert!(error(&["http://user:pw@auth.local/"]).contains("expected http://HOST"));
        assert!(error(&["a b:1"]).contains("--auth-http-address"));
        let mut zero = args(&["a:1"], AuthMethod::Get, 5_000);
        zero.http_client_request_timeout = Duration::ZERO;
        assert!(Authenticator::from_args(&zero).is_err());
        let mut publish_alone = args(&[], AuthMethod::Get, 5_000);
        assert!(Authenticator::from_args(&publish_alone).unwrap().is_none());
        publish_alone.http_publish_auth = true;
        assert!(Authenticator::from_args(&publish_alone).is_err());
    }

    #[tokio::test]
    async fn get_sends_the_query_and_reads_the_grant() {
        let server = TestAuthServer::start(|_| (200, grant("^orders$", "publish", 60))).await;
        let authenticator = authenticator(&[&server.address()], AuthMethod::Get);
        let now = Instant::now();
        let authorization = authenticator
            .authorize(&request(b"s 1"), now)
            .await
            .unwrap();
        assert!(authorization.allows("orders", ""));
        assert_eq!(authorization.expires_at(), now + Duration::from_secs(60));
        let seen = server.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, "GET");
        assert_eq!(seen[0].path, "/auth");
        assert_eq!(
            seen[0].query.as_deref(),
            Some("common_name=&remote_ip=10.0.0.5&secret=s+1&tls=false")
        );
        assert_eq!(seen[0].accept.as_deref(), Some(ACCEPT_NSQ_V1));
        assert_eq!(seen[0].params["secret"], "s 1");
    }

    #[tokio::test]
    async fn post_sends_nsqds_json_body() {
        let server = TestAuthServer::start(|_| (200, grant(".*", "subscribe", 60))).await;
        let url = format!("http://{}/custom/path", server.address());
        let authenticator = authenticator(&[&url], AuthMethod::Post);
        authenticator
            .authorize(&request(b"s3cr3t"), Instant::now())
            .await
            .unwrap();
        let seen = server.requests();
        assert_eq!(seen[0].method, "POST");
        assert_eq!(seen[0].path, "/custom/path");
        assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
        assert_eq!(seen[0].body, request(b"s3cr3t").json_body());
        assert_eq!(seen[0].params["remote_ip"], "10.0.0.5");
    }

    #[tokio::test]
    async fn other_statuses_and_bad_replies_fail() {
        let refusing = TestAuthServer::start(|_| (403, "{}".to_owned())).await;
        let failure = authenticator(&[&refusing.address()], AuthMethod::Get)
            .authorize(&request(b"s"), Instant::now())
            .await
            .unwrap_err();
        assert_eq!(failure.status, Some(403));
        assert!(failure.is_refusal());
        for reply in [
            &b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\n\r\n{}"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n<html>!",
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ttl\":0}\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2147483648\r\n\r\n{\"ttl\":60,",
            b"not http at all\r\n\r\n",
        ] {
            let server = raw_server(reply).await;
            let failure = authenticator(&[&server.to_string()], AuthMethod::Get)
                .authorize(&request(b"s"), Instant::now())
                .await
                .unwrap_err();
            assert!(!failure.is_refusal(), "{failure}");
            assert!(failure.detail.contains(&server.to_string()), "{failure}");
        }
    }

    #[tokio::test]
    async fn a_silent_server_fails_within_the_request_timeout() {
        let silent = silent_server().await;
        let authenticator =
            Authenticator::from_args(&args(&[&silent.to_string()], AuthMethod::Get, 300))
                .unwrap()
                .unwrap();
        let started = Instant::now();
        let failure = authenticator
            .authorize(&request(b"s"), Instant::now())
            .await
            .unwrap_err();
        assert!(
            failure.detail.contains("no reply within 300ms"),
            "{failure}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn every_address_is_tried_from_any_start() {
        let server = TestAuthServer::start(|_| (200, grant(".*", "publish", 60))).await;
        let dead = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let one_dead = authenticator(&[&dead, &server.address()], AuthMethod::Get);
        for start in 0..2 {
            one_dead
                .authorize_from(start, &request(b"s"), Instant::now())
                .await
                .unwrap();
        }
        assert_eq!(server.calls(), 2);
        let failure = authenticator(&[&dead, &dead], AuthMethod::Post)
            .authorize(&request(b"s"), Instant::now())
            .await
            .unwrap_err();
        assert!(failure.detail.contains("connecting"), "{failure}");
    }
}
