//! One TCP connection's AUTH state, as nsqd's `protocolV2.AUTH` and
//! `CheckAuth` keep it (the reference's §1.5 AUTH, §1.9).
//!
//! The connection makes one [`AuthSession`] when it starts, tells it about a
//! TLS upgrade ([`AuthSession::set_tls`]), hands it each AUTH body
//! ([`AuthSession::auth`]) and asks it before every SUB, PUB, MPUB and DPUB
//! ([`AuthSession::check`]). Every error it returns is fatal, with nsqd's
//! code and text. Without an auth server every check passes and AUTH is
//! `E_AUTH_DISABLED`. An authorization past its TTL is asked for again, with
//! the same secret, at the next check. Whenever the authorization changes,
//! the reporter given to [`AuthSession::reporting_to`] learns the identity
//! `/stats` shows.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::reply::Authorization;
use super::server::{AuthRequest, Authenticator};
use crate::broker::client::ClientAuth;
use crate::protocol::error::ProtocolError;

/// The reply to a successful AUTH, a JSON response frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthGranted {
    pub identity: String,
    pub identity_url: String,
    pub permission_count: usize,
}

impl AuthGranted {
    /// `{"identity":"…","identity_url":"…","permission_count":N}`.
    pub fn response_json(&self) -> String {
        serde_json::to_string(self).expect("strings and a number serialize")
    }
}

type Reporter = Box<dyn Fn(&ClientAuth) + Send + Sync>;

/// What one connection has proven with AUTH.
pub struct AuthSession {
    authenticator: Option<Arc<Authenticator>>,
    remote_ip: String,
    tls: bool,
    common_name: String,
    secret: Vec<u8>,
    /// The last valid reply (nsqd keeps one with no authorizations too).
    authorization: Option<Authorization>,
    reporter: Option<Reporter>,
}

impl fmt::Debug for AuthSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSession")
            .field("auth_required", &self.auth_required())
            .field("remote_ip", &self.remote_ip)
            .field("tls", &self.tls)
            .field("common_name", &self.common_name)
            .field("authed", &self.is_authed())
            .finish_non_exhaustive()
    }
}

impl AuthSession {
    /// A connection from `remote_ip` (its IP address only, no port); no
    /// auth server means AUTH is disabled and nothing is checked.
    pub fn new(authenticator: Option<Arc<Authenticator>>, remote_ip: impl Into<String>) -> Self {
        AuthSession {
            authenticator,
            remote_ip: remote_ip.into(),
            tls: false,
            common_name: String::new(),
            secret: Vec::new(),
            authorization: None,
            reporter: None,
        }
    }

    /// Calls `reporter` with the identity each time the authorization
    /// changes (AUTH, and a refresh after the TTL); the connection passes
    /// it on to `Broker::set_client_auth` for `/stats`.
    pub fn reporting_to(mut self, reporter: impl Fn(&ClientAuth) + Send + Sync + 'static) -> Self {
        self.reporter = Some(Box::new(reporter));
        self
    }

    /// The connection is now TLS; `common_name` is the client
    /// certificate's subject CN, or "" (`PeerTls::common_name`).
    pub fn set_tls(&mut self, common_name: &str) {
        self.tls = true;
        self.common_name = common_name.to_owned();
    }

    /// IDENTIFY's `auth_required`: an auth server is configured.
    pub fn auth_required(&self) -> bool {
        self.authenticator.is_some()
    }

    /// nsqd's `HasAuthorizations`: AUTH succeeded with at least one entry.
    pub fn is_authed(&self) -> bool {
        self.authorization
            .as_ref()
            .is_some_and(|authorization| authorization.permission_count() > 0)
    }

    /// What `/stats` shows about this connection's AUTH.
    pub fn client_auth(&self) -> ClientAuth {
        let Some(authorization) = &self.authorization else {
            return ClientAuth::default();
        };
        ClientAuth {
            authed: self.is_authed(),
            identity: authorization.identity.clone(),
            identity_url: authorization.identity_url.clone(),
        }
    }

    /// AUTH with `secret` (the command's body) at `now`: the JSON reply,
    /// or nsqd's fatal error.
    pub async fn auth(
        &mut self,
        secret: &[u8],
        now: Instant,
    ) -> Result<AuthGranted, ProtocolError> {
        if self.is_authed() {
            return Err(ProtocolError::auth_already_set());
        }
        if self.authenticator.is_none() {
            return Err(ProtocolError::auth_disabled());
        }
        self.secret = secret.to_vec();
        self.query(now).await?;
        let authorization = self.authorization.as_ref().expect("just stored");
        if authorization.permission_count() == 0 {
            return Err(ProtocolError::auth_no_authorizations());
        }
        let granted = AuthGranted {
            identity: authorization.identity.clone(),
            identity_url: authorization.identity_url.clone(),
            permission_count: authorization.permission_count(),
        };
        assert!(self.is_authed());
        Ok(granted)
    }

    /// nsqd's `CheckAuth` before `verb` (SUB with its channel; PUB, MPUB
    /// and DPUB with channel ""): asks again once the TTL has passed.
    pub async fn check(
        &mut self,
        verb: &str,
        topic: &str,
        channel: &str,
        now: Instant,
    ) -> Result<(), ProtocolError> {
        assert!(matches!(verb, "SUB" | "PUB" | "MPUB" | "DPUB"), "{verb}");
        assert_eq!(verb == "SUB", !channel.is_empty(), "{verb} {channel:?}");
        if self.authenticator.is_none() {
            return Ok(());
        }
        if !self.is_authed() {
            return Err(ProtocolError::auth_first(verb));
        }
        let authorization = self.authorization.as_ref().expect("authed");
        if authorization.is_expired(now) {
            self.query(now).await?;
        }
        let authorization = self.authorization.as_ref().expect("authed once");
        if !authorization.allows(topic, channel) {
            return Err(ProtocolError::unauthorized(verb, topic, channel));
        }
        Ok(())
    }

    /// Asks the auth servers about the stored secret; a valid reply
    /// replaces the authorization and is reported.
    async fn query(&mut self, now: Instant) -> Result<(), ProtocolError> {
        let authenticator = self.authenticator.as_ref().expect("auth is enabled");
        let request = AuthRequest {
            remote_ip: self.remote_ip.clone(),
            tls: self.tls,
            secret: self.secret.clone(),
            common_name: self.common_name.clone(),
        };
        let authorization = match authenticator.authorize(&request, now).await {
            Ok(authorization) => authorization,
            Err(failure) => {
                tracing::warn!(remote_ip = %self.remote_ip, failure = %failure.detail, "AUTH failed");
                return Err(ProtocolError::auth_failed());
            }
        };
        self.authorization = Some(authorization);
        if let Some(reporter) = &self.reporter {
            reporter(&self.client_auth());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::super::test_server::{grant, raw_server, silent_server, TestAuthServer};
    use super::super::{AuthArgs, AuthMethod};
    use super::*;

    fn authenticator(address: &str, request_timeout_ms: u64) -> Arc<Authenticator> {
        let args = AuthArgs {
            auth_http_addresses: vec![address.to_owned()],
            auth_http_request_method: AuthMethod::Get,
            http_client_connect_timeout: Duration::from_secs(2),
            http_client_request_timeout: Duration::from_millis(request_timeout_ms),
            http_publish_auth: false,
        };
        Authenticator::from_args(&args).unwrap().unwrap()
    }

    /// Grants per secret: `pub` publishes on `^orders$`, `sub` subscribes
    /// to `^orders$`, `none` gets an empty list, anything else a 403.
    async fn per_secret_server(ttl_s: u64) -> TestAuthServer {
        TestAuthServer::start(move |question| match question["secret"].as_str() {
            "pub" => (200, grant("^orders$", "publish", ttl_s)),
            "sub" => (200, grant("^orders$", "subscribe", ttl_s)),
            "none" => (200, r#"{"ttl":60,"authorizations":[]}"#.to_owned()),
            _ => (403, r#"{"message":"denied"}"#.to_owned()),
        })
        .await
    }

    fn session(server: &TestAuthServer) -> AuthSession {
        AuthSession::new(Some(authenticator(&server.address(), 5_000)), "10.1.2.3")
    }

    fn frame(result: Result<impl fmt::Debug, ProtocolError>) -> String {
        let error = result.expect_err("an error");
        assert!(error.fatal);
        error.frame_body()
    }

    #[tokio::test]
    async fn without_an_auth_server_auth_is_disabled_and_nothing_is_checked() {
        let mut session = AuthSession::new(None, "10.1.2.3");
        let now = Instant::now();
        assert!(!session.auth_required());
        assert_eq!(
            frame(session.auth(b"secret", now).await),
            "E_AUTH_DISABLED AUTH disabled"
        );
        session.check("PUB", "t", "", now).await.unwrap();
        session.check("SUB", "t", "c", now).await.unwrap();
        assert_eq!(session.client_auth(), ClientAuth::default());
    }

    #[tokio::test]
    async fn commands_before_auth_are_refused() {
        let server = per_secret_server(60).await;
        let mut session = session(&server);
        assert!(session.auth_required());
        for (verb, channel) in [("SUB", "c"), ("PUB", ""), ("MPUB", ""), ("DPUB", "")] {
            assert_eq!(
                frame(session.check(verb, "orders", channel, Instant::now()).await),
                format!("E_AUTH_FIRST AUTH required before {verb}")
            );
        }
        assert_eq!(server.calls(), 0);
    }

    #[tokio::test]
    async fn auth_grants_per_topic_and_permission() {
        let server = per_secret_server(60).await;
        let reported = Arc::new(Mutex::new(Vec::new()));
        let sink = reported.clone();
        let mut publisher =
            session(&server).reporting_to(move |auth| sink.lock().unwrap().push(auth.clone()));
        let now = Instant::now();
        let granted = publisher.auth(b"pub", now).await.unwrap();
        assert_eq!(
            granted.response_json(),
            r#"{"identity":"alice","identity_url":"https://id.example/alice","permission_count":1}"#
        );
        assert!(publisher.is_authed());
        let expected = ClientAuth {
            authed: true,
            identity: "alice".to_owned(),
            identity_url: "https://id.example/alice".to_owned(),
        };
        assert_eq!(*reported.lock().unwrap(), vec![expected.clone()]);
        assert_eq!(publisher.client_auth(), expected);
        publisher.check("PUB", "orders", "", now).await.unwrap();
        publisher.check("MPUB", "orders", "", now).await.unwrap();
        assert_eq!(
            frame(publisher.check("PUB", "orders2", "", now).await),
            r#"E_UNAUTHORIZED AUTH failed for PUB on "orders2" """#
        );
        assert_eq!(
            frame(publisher.check("SUB", "orders", "c", now).await),
            r#"E_UNAUTHORIZED AUTH failed for SUB on "orders" "c""#
        );
        assert_eq!(
            frame(publisher.auth(b"pub", now).await),
            "E_INVALID AUTH already set"
        );
        let mut subscriber = session(&server);
        subscriber.auth(b"sub", now).await.unwrap();
        subscriber.check("SUB", "orders", "c", now).await.unwrap();
        assert_eq!(
            frame(subscriber.check("DPUB", "orders", "", now).await),
            r#"E_UNAUTHORIZED AUTH failed for DPUB on "orders" """#
        );
        assert_eq!(server.calls(), 2, "checks within the TTL ask nobody");
        let seen = server.requests();
        assert_eq!(seen[0].params["remote_ip"], "10.1.2.3");
        assert_eq!(seen[0].params["tls"], "false");
        assert_eq!(seen[0].params["common_name"], "");
    }

    #[tokio::test]
    async fn refusals_and_empty_grants_are_nsqds_errors() {
        let server = per_secret_server(60).await;
        let now = Instant::now();
        let mut refused = session(&server);
        assert_eq!(
            frame(refused.auth(b"wrong", now).await),
            "E_AUTH_FAILED AUTH failed"
        );
        assert!(!refused.is_authed());
        let mut empty = session(&server);
        assert_eq!(
            frame(empty.auth(b"none", now).await),
            "E_UNAUTHORIZED AUTH no authorizations found"
        );
        assert!(!empty.is_authed());
        assert_eq!(
            frame(empty.check("PUB", "orders", "", now).await),
            "E_AUTH_FIRST AUTH required before PUB"
        );
    }

    #[tokio::test]
    async fn tls_and_common_name_reach_the_auth_server() {
        let server = per_secret_server(60).await;
        let mut session = session(&server);
        session.set_tls("client.example");
        session.auth(b"pub", Instant::now()).await.unwrap();
        let seen = server.requests();
        assert_eq!(seen[0].params["tls"], "true");
        assert_eq!(seen[0].params["common_name"], "client.example");
    }

    #[tokio::test]
    async fn an_expired_authorization_is_asked_for_again() {
        let server = per_secret_server(1).await;
        let reported = Arc::new(Mutex::new(0));
        let count = reported.clone();
        let mut session = session(&server).reporting_to(move |_| *count.lock().unwrap() += 1);
        let start = Instant::now();
        session.auth(b"pub", start).await.unwrap();
        session
            .check("PUB", "orders", "", start + Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(server.calls(), 1);
        let later = start + Duration::from_secs(2);
        session.check("PUB", "orders", "", later).await.unwrap();
        assert_eq!(server.calls(), 2);
        assert_eq!(server.requests()[1].params["secret"], "pub");
        // The refreshed reply counts from `later`: no third call before its TTL.
        session
            .check("PUB", "orders", "", later + Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(server.calls(), 2);
        assert_eq!(*reported.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn a_failed_refresh_is_auth_failed() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let server = TestAuthServer::start(move |_| {
            match calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 => (200, grant("^orders$", "subscribe", 1)),
                _ => (500, "down".to_owned()),
            }
        })
        .await;
        let mut session = session(&server);
        let start = Instant::now();
        session.auth(b"sub", start).await.unwrap();
        let later = start + Duration::from_secs(2);
        assert_eq!(
            frame(session.check("SUB", "orders", "c", later).await),
            "E_AUTH_FAILED AUTH failed"
        );
        assert_eq!(server.calls(), 2);
    }

    #[tokio::test]
    async fn a_silent_auth_server_fails_auth_within_the_timeout() {
        let silent = silent_server().await;
        let mut session = AuthSession::new(Some(authenticator(&silent.to_string(), 200)), "");
        let started = Instant::now();
        assert_eq!(
            frame(session.auth(b"pub", Instant::now()).await),
            "E_AUTH_FAILED AUTH failed"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn junk_500s_and_huge_replies_fail_auth() {
        for reply in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\njunk"[..],
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2147483648\r\n\r\n{",
        ] {
            let server = raw_server(reply).await;
            let mut session = AuthSession::new(Some(authenticator(&server.to_string(), 5_000)), "");
            assert_eq!(
                frame(session.auth(b"pub", Instant::now()).await),
                "E_AUTH_FAILED AUTH failed"
            );
        }
    }
}
