//! nsqd's AUTH: an external auth server decides what a secret may do
//! (`docs/auth.md`, the reference's §1.9).
//!
//! With `--auth-http-address`, a TCP client must send `AUTH <secret>` before
//! SUB, PUB, MPUB or DPUB; the node asks the auth server which topics and
//! channels the secret may subscribe to or publish on, caches the answer
//! for its TTL and checks every later command against it.
//!
//! - [`reply`]: the auth server's JSON reply as an [`Authorization`] (pure);
//! - [`server`]: the HTTP call to the auth servers ([`Authenticator`]);
//! - [`session`]: one TCP connection's AUTH state ([`AuthSession`]);
//! - [`cache`]: authorizations of HTTP publishers, per secret and address,
//!   for `--http-publish-auth` (ledgerq's addition; `src/http/publish_guard.rs`).

pub mod cache;
pub mod reply;
pub mod server;
pub mod session;

#[cfg(test)]
mod test_server;

use std::time::Duration;

use clap::{Args, ValueEnum};

pub use reply::Authorization;
pub use server::{AuthFailure, AuthRequest, Authenticator};
pub use session::{AuthGranted, AuthSession};

/// How the node sends its question to the auth server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMethod {
    /// `GET <url>?common_name=…&remote_ip=…&secret=…&tls=…`.
    Get,
    /// `POST <url>` with the same fields as a JSON object of arrays.
    Post,
}

impl AuthMethod {
    /// The flag's value, as `/config/auth_http_request_method` reports it.
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::Get => "get",
            AuthMethod::Post => "post",
        }
    }
}

/// The auth flags of `ledgerq serve` (nsqd's names and defaults, plus
/// `--http-publish-auth`).
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Auth server to ask about AUTH secrets (repeatable; tried in a random
    /// rotation): HOST:PORT (then `http://HOST:PORT/auth`) or a full
    /// `http://` URL. Enables AUTH: TCP clients must AUTH before SUB and
    /// publishing.
    #[arg(long = "auth-http-address", value_name = "ADDRESS")]
    pub auth_http_addresses: Vec<String>,

    /// How to send the question to the auth server: get or post.
    #[arg(long, value_enum, default_value = "get")]
    pub auth_http_request_method: AuthMethod,

    /// How long connecting to an auth server may take.
    #[arg(long, default_value = "2s", value_parser = crate::config::duration)]
    pub http_client_connect_timeout: Duration,

    /// How long one auth server call may take in all (connecting included).
    #[arg(long, default_value = "5s", value_parser = crate::config::duration)]
    pub http_client_request_timeout: Duration,

    /// Beyond nsqd: HTTP `/pub` and `/mpub` then need `Authorization:
    /// Bearer <secret>`, a secret the auth server grants `publish` on the
    /// topic (needs `--auth-http-address`).
    #[arg(long, default_value_t = false)]
    pub http_publish_auth: bool,
}
