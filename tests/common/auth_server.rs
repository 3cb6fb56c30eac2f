//! A tiny auth server for AUTH tests (nsqd's protocol, reference §1.9):
//! axum on a free loopback port, in its own runtime, answering by secret
//! and recording every question.
//!
//! Secrets: `publisher` may publish on `^orders$`; `subscriber` may
//! subscribe to `^orders$` on channels matching `^c`; `short` may publish
//! on `^orders$` for one second (a TTL of 1); `pubsub` may publish to and
//! subscribe to `^orders`, any channel; `nothing` gets an empty list;
//! `slow` is answered after 30 s; `junk` gets a 200 that is not JSON; any
//! other secret a 403.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

type Questions = Arc<Mutex<Vec<HashMap<String, String>>>>;

pub struct AuthServer {
    pub address: SocketAddr,
    questions: Questions,
    _runtime: tokio::runtime::Runtime,
}

impl AuthServer {
    pub fn start() -> AuthServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let questions = Questions::default();
        let router = Router::new()
            .route("/auth", get(answer))
            .with_state(questions.clone());
        runtime.spawn(async move { axum::serve(listener, router).await });
        AuthServer {
            address,
            questions,
            _runtime: runtime,
        }
    }

    /// `--auth-http-address=<this server>`.
    pub fn flag(&self) -> String {
        format!("--auth-http-address={}", self.address)
    }

    /// Every question asked so far, in order.
    pub fn questions(&self) -> Vec<HashMap<String, String>> {
        self.questions.lock().expect("questions").clone()
    }

    /// How many questions carried `secret`.
    pub fn asked(&self, secret: &str) -> usize {
        let questions = self.questions();
        questions.iter().filter(|q| q["secret"] == secret).count()
    }
}

fn grant(ttl_s: u64, topic: &str, channel: &str, permissions: &[&str]) -> String {
    serde_json::json!({
        "ttl": ttl_s,
        "identity": "alice",
        "identity_url": "https://id.example/alice",
        "authorizations": [{"topic": topic, "channels": [channel], "permissions": permissions}],
    })
    .to_string()
}

async fn answer(
    State(questions): State<Questions>,
    Query(question): Query<HashMap<String, String>>,
) -> (StatusCode, String) {
    let secret = question.get("secret").cloned().unwrap_or_default();
    questions.lock().expect("questions").push(question);
    match secret.as_str() {
        "publisher" => (StatusCode::OK, grant(3600, "^orders$", ".*", &["publish"])),
        "subscriber" => (
            StatusCode::OK,
            grant(3600, "^orders$", "^c", &["subscribe"]),
        ),
        "short" => (StatusCode::OK, grant(1, "^orders$", ".*", &["publish"])),
        "pubsub" => {
            let both = ["subscribe", "publish"];
            (StatusCode::OK, grant(3600, "^orders", ".*", &both))
        }
        "nothing" => (
            StatusCode::OK,
            r#"{"ttl":3600,"authorizations":[]}"#.to_owned(),
        ),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            (StatusCode::OK, grant(3600, ".*", ".*", &["publish"]))
        }
        "junk" => (StatusCode::OK, "this is not JSON".to_owned()),
        _ => (StatusCode::FORBIDDEN, r#"{"message":"no"}"#.to_owned()),
    }
}
