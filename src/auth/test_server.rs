//! Auth servers for tests: a tiny axum one on `127.0.0.1:0` whose answer
//! is a function of the question and which records every request, and raw
//! sockets that answer fixed bytes or nothing at all.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::http::query::Params;

/// The four fields of a question, decoded.
pub type Question = HashMap<String, String>;

/// One request the test server received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub accept: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
    pub params: Question,
}

type Answer = dyn Fn(&Question) -> (u16, String) + Send + Sync;

struct Shared {
    answer: Box<Answer>,
    seen: Mutex<Vec<Seen>>,
}

/// A running test auth server; stops when dropped.
pub struct TestAuthServer {
    address: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestAuthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestAuthServer {
    /// Serves `answer(question) -> (status, body)` on a free port.
    pub async fn start(
        answer: impl Fn(&Question) -> (u16, String) + Send + Sync + 'static,
    ) -> TestAuthServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            answer: Box::new(answer),
            seen: Mutex::new(Vec::new()),
        });
        let router = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        TestAuthServer {
            address,
            shared,
            task,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.shared.seen.lock().expect("seen").clone()
    }

    pub fn calls(&self) -> usize {
        self.shared.seen.lock().expect("seen").len()
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    Some(headers.get(name)?.to_str().ok()?.to_owned())
}

/// The question from a GET query or nsqd's POST body.
fn question(query: Option<&str>, body: &[u8]) -> Question {
    let mut question = Question::new();
    if let Ok(fields) = serde_json::from_slice::<HashMap<String, Vec<String>>>(body) {
        for (key, values) in fields {
            question.insert(key, values.into_iter().next().unwrap_or_default());
        }
        return question;
    }
    let params = Params::parse(query).unwrap_or_default();
    for key in ["common_name", "remote_ip", "secret", "tls"] {
        if let Some(value) = params.get(key) {
            question.insert(key.to_owned(), value.to_owned());
        }
    }
    question
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let params = question(parts.uri.query(), &body);
    let (status, reply) = (shared.answer)(&params);
    shared.seen.lock().expect("seen").push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        accept: header_text(&parts.headers, header::ACCEPT),
        content_type: header_text(&parts.headers, header::CONTENT_TYPE),
        body: String::from_utf8_lossy(&body).into_owned(),
        params,
    });
    let status = StatusCode::from_u16(status).expect("a valid status");
    (status, reply).into_response()
}

/// A reply granting `permission` on topics matching `topic`, every channel.
pub fn grant(topic: &str, permission: &str, ttl_s: u64) -> String {
    serde_json::json!({
        "ttl": ttl_s,
        "identity": "alice",
        "identity_url": "https://id.example/alice",
        "authorizations": [{"topic": topic, "channels": [".*"], "permissions": [permission]}],
    })
    .to_string()
}

/// A server that reads a request, answers `reply` and keeps the socket open.
pub async fn raw_server(reply: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(reply).await;
                std::future::pending::<()>().await;
            });
        }
    });
    address
}

/// A server that accepts connections and never answers.
pub async fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    address
}
