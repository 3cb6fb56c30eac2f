//! The tools' NSQ client: one TCP protocol V2 connection (magic, IDENTIFY,
//! then TLS and AUTH when asked for; frames in, commands out), as any NSQ
//! client speaks it.
//!
//! Frames are decoded by [`FrameCodec`] (`super::frame_codec`); commands are
//! encoded by the `encode_*` functions, unit-tested against the server's own
//! parser in `crate::protocol`. Heartbeats must be answered with `NOP`
//! ([`Connection::answer_heartbeat`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::{BufMut, Bytes, BytesMut};
use clap::Args;
use futures::StreamExt as _;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, WriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

pub use super::frame_codec::{Frame, FrameCodec, Message};
use crate::protocol::frame::MESSAGE_ID_LENGTH_BYTES;
use crate::protocol::MAGIC_V2;

/// How long connecting and IDENTIFY may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The heartbeat interval the tools ask for.
const HEARTBEAT_INTERVAL_MS: u64 = 30_000;

fn line(buf: &mut BytesMut, parts: &[&[u8]]) {
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            buf.put_u8(b' ');
        }
        buf.put_slice(part);
    }
    buf.put_u8(b'\n');
}

fn put_body(buf: &mut BytesMut, body: &[u8]) {
    buf.put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
    buf.put_slice(body);
}

/// `SUB <topic> <channel>\n`.
pub fn encode_sub(buf: &mut BytesMut, topic: &str, channel: &str) {
    line(buf, &[b"SUB", topic.as_bytes(), channel.as_bytes()]);
}

/// `RDY <count>\n`.
pub fn encode_rdy(buf: &mut BytesMut, count: u64) {
    line(buf, &[b"RDY", count.to_string().as_bytes()]);
}

/// `FIN <id>\n`.
pub fn encode_fin(buf: &mut BytesMut, id: &[u8; MESSAGE_ID_LENGTH_BYTES]) {
    line(buf, &[b"FIN", id]);
}

/// `NOP\n`.
pub fn encode_nop(buf: &mut BytesMut) {
    line(buf, &[b"NOP"]);
}

/// `PUB <topic>\n[size][body]`.
pub fn encode_pub(buf: &mut BytesMut, topic: &str, body: &[u8]) {
    line(buf, &[b"PUB", topic.as_bytes()]);
    put_body(buf, body);
}

/// `MPUB <topic>\n[total size][count]([size][body])*`.
pub fn encode_mpub(buf: &mut BytesMut, topic: &str, bodies: &[Bytes]) {
    line(buf, &[b"MPUB", topic.as_bytes()]);
    let items_bytes: usize = bodies.iter().map(|body| 4 + body.len()).sum();
    buf.put_u32(u32::try_from(4 + items_bytes).unwrap_or(u32::MAX));
    buf.put_u32(u32::try_from(bodies.len()).unwrap_or(u32::MAX));
    for body in bodies {
        put_body(buf, body);
    }
}

/// `AUTH\n[size][secret]`.
pub fn encode_auth(buf: &mut BytesMut, secret: &[u8]) {
    line(buf, &[b"AUTH"]);
    put_body(buf, secret);
}

/// IDENTIFY with feature negotiation (the reply is JSON), asking for TLS
/// if `tls_v1`.
pub fn encode_identify(buf: &mut BytesMut, user_agent: &str, tls_v1: bool) {
    let hostname = crate::http::info::hostname();
    let short = hostname.split('.').next().unwrap_or_default().to_owned();
    let body = serde_json::json!({
        "client_id": short,
        "hostname": hostname,
        "user_agent": user_agent,
        "feature_negotiation": true,
        "heartbeat_interval": HEARTBEAT_INTERVAL_MS,
        "tls_v1": tls_v1,
    });
    line(buf, &[b"IDENTIFY"]);
    put_body(buf, body.to_string().as_bytes());
}

/// `max_rdy_count` from an IDENTIFY reply (`None` for a plain `OK`).
pub fn max_rdy_count(reply: &[u8]) -> Option<u64> {
    let json: serde_json::Value = serde_json::from_slice(reply).ok()?;
    json.get("max_rdy_count")?.as_u64()
}

/// The tools' TLS and AUTH flags (nsq's tools take the same as
/// `--producer-opt`/`--consumer-opt` settings).
#[derive(Debug, Clone, Default, Args)]
pub struct ClientSecurity {
    /// Upgrade to TLS (IDENTIFY `tls_v1`), trusting the servers'
    /// certificates signed by this PEM CA.
    #[arg(long, value_name = "PATH")]
    pub tls_root_ca_file: Option<PathBuf>,

    /// PEM client certificate to present over TLS (with `--tls-key`).
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// A file holding the secret to send with AUTH (a trailing newline is
    /// dropped); `LEDGERQ_AUTH_SECRET` holds it otherwise.
    #[arg(long, value_name = "PATH")]
    pub auth_secret_file: Option<PathBuf>,
}

/// How the tools connect: their user agent, TLS and AUTH secret.
#[derive(Clone)]
pub struct ClientOptions {
    pub user_agent: String,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub auth_secret: Option<Vec<u8>>,
}

impl ClientSecurity {
    /// The options these flags ask for (files read and checked now).
    pub fn options(&self, user_agent: String) -> anyhow::Result<ClientOptions> {
        let tls = match &self.tls_root_ca_file {
            Some(ca) => Some(self.tls_config(ca)?),
            None if self.tls_cert.is_some() => bail!("--tls-cert needs --tls-root-ca-file"),
            None => None,
        };
        let auth_secret = match &self.auth_secret_file {
            Some(path) => {
                let text = std::fs::read(path)
                    .with_context(|| format!("reading --auth-secret-file {}", path.display()))?;
                Some(text.strip_suffix(b"\n").unwrap_or(&text).to_vec())
            }
            None => {
                std::env::var_os("LEDGERQ_AUTH_SECRET").map(|secret| secret.into_encoded_bytes())
            }
        };
        Ok(ClientOptions {
            user_agent,
            tls,
            auth_secret,
        })
    }

    fn tls_config(&self, ca: &std::path::Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(crate::tls::load_roots(ca)?);
        let config = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(crate::tls::load_certs(cert)?, crate::tls::load_key(key)?)
                .context("--tls-cert and --tls-key")?,
            _ => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

/// The socket under a connection: TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type Framed = FramedRead<Box<dyn Io>, FrameCodec>;

/// One connection to an nsqd (or ledgerq) TCP address.
pub struct Connection {
    pub address: String,
    /// The server's largest RDY (nsqd's default when it did not say).
    pub max_rdy_count: u64,
    reader: FramedRead<Box<dyn AsyncRead + Send + Unpin>, FrameCodec>,
    writer: WriteHalf<Box<dyn Io>>,
}

impl Connection {
    /// Connects to `address` (`host:port`), sends the magic and IDENTIFY,
    /// upgrades to TLS and sends AUTH as `options` say.
    pub async fn connect(address: &str, options: &ClientOptions) -> anyhow::Result<Connection> {
        let connect = async {
            let stream = TcpStream::connect(address).await?;
            let _ = stream.set_nodelay(true);
            let mut framed: Framed = FramedRead::new(Box::new(stream), FrameCodec::default());
            let mut buf = BytesMut::from(&MAGIC_V2[..]);
            encode_identify(&mut buf, &options.user_agent, options.tls.is_some());
            framed.get_mut().write_all(&buf).await?;
            let reply = match next_reply(&mut framed).await? {
                Frame::Response(reply) => reply,
                Frame::Error(text) => bail!("IDENTIFY failed: {}", String::from_utf8_lossy(&text)),
                Frame::Message(_) => bail!("a message before IDENTIFY's reply"),
            };
            if let Some(config) = &options.tls {
                framed = start_tls(framed, address, &reply, config.clone()).await?;
            }
            if let Some(secret) = &options.auth_secret {
                authenticate(&mut framed, secret).await?;
            }
            // What was read past the last reply (a heartbeat) stays first.
            let parts = framed.into_parts();
            let (read, write) = tokio::io::split(parts.io);
            let buffered = std::io::Cursor::new(parts.read_buf);
            let read: Box<dyn AsyncRead + Send + Unpin> = Box::new(buffered.chain(read));
            Ok(Connection {
                address: address.to_owned(),
                max_rdy_count: max_rdy_count(&reply).unwrap_or(2500),
                reader: FramedRead::new(read, FrameCodec::default()),
                writer: write,
            })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| anyhow!("timed out after {CONNECT_TIMEOUT:?}"))
            .and_then(|result| result)
            .with_context(|| format!("connecting to nsqd at {address}"))
    }

    /// Writes `bytes` (one or more encoded commands).
    pub async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.writer
            .write_all(bytes)
            .await
            .with_context(|| format!("writing to {}", self.address))
    }

    /// The next frame, heartbeats included (see [`Frame::is_heartbeat`]).
    /// Cancel-safe: a partly received frame stays buffered.
    pub async fn recv(&mut self) -> anyhow::Result<Frame> {
        match self.reader.next().await {
            Some(Ok(frame)) => Ok(frame),
            Some(Err(error)) => Err(anyhow!("reading from {}: {error}", self.address)),
            None => bail!("{} closed the connection", self.address),
        }
    }

    /// Answers a heartbeat with `NOP`.
    pub async fn answer_heartbeat(&mut self) -> anyhow::Result<()> {
        let mut nop = BytesMut::new();
        encode_nop(&mut nop);
        self.send(&nop).await
    }

    /// The next frame other than a heartbeat, answering heartbeats (not
    /// cancel-safe: for sequential exchanges such as IDENTIFY and SUB).
    pub async fn reply(&mut self) -> anyhow::Result<Frame> {
        loop {
            let frame = self.recv().await?;
            if !frame.is_heartbeat() {
                return Ok(frame);
            }
            self.answer_heartbeat().await?;
        }
    }

    /// Closes the write side (the server sees EOF).
    pub async fn shutdown(&mut self) {
        let _ = self.writer.shutdown().await;
    }
}

/// The next frame other than a heartbeat, during the handshake (before
/// any command that a heartbeat's NOP could get in the way of).
async fn next_reply(framed: &mut Framed) -> anyhow::Result<Frame> {
    loop {
        match framed.next().await {
            Some(Ok(frame)) if frame.is_heartbeat() => {
                let mut nop = BytesMut::new();
                encode_nop(&mut nop);
                framed.get_mut().write_all(&nop).await?;
            }
            Some(Ok(frame)) => return Ok(frame),
            Some(Err(error)) => bail!("reading: {error}"),
            None => bail!("the server closed the connection"),
        }
    }
}

/// The `tls_v1` upgrade: the handshake on the same socket, then the
/// server's `OK` inside the session.
async fn start_tls(
    framed: Framed,
    address: &str,
    identify_reply: &[u8],
    config: Arc<rustls::ClientConfig>,
) -> anyhow::Result<Framed> {
    let granted: serde_json::Value = serde_json::from_slice(identify_reply).unwrap_or_default();
    if granted["tls_v1"] != true {
        bail!("the server does not offer TLS (it has no --tls-cert?)");
    }
    let parts = framed.into_parts();
    if !parts.read_buf.is_empty() {
        bail!("the server sent bytes before the TLS handshake");
    }
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned()).context("the server's name for TLS")?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = connector
        .connect(name, parts.io)
        .await
        .context("TLS handshake")?;
    let mut framed: Framed = FramedRead::new(Box::new(stream), FrameCodec::default());
    match next_reply(&mut framed).await? {
        Frame::Response(ok) if &ok[..] == b"OK" => Ok(framed),
        other => bail!("unexpected answer to the TLS upgrade: {other:?}"),
    }
}

/// AUTH with `secret`; the server's error ends the connection.
async fn authenticate(framed: &mut Framed, secret: &[u8]) -> anyhow::Result<()> {
    let mut buf = BytesMut::new();
    encode_auth(&mut buf, secret);
    framed.get_mut().write_all(&buf).await?;
    match next_reply(framed).await? {
        Frame::Response(_) => Ok(()),
        Frame::Error(text) => bail!("AUTH: {}", String::from_utf8_lossy(&text)),
        Frame::Message(_) => bail!("a message before AUTH's reply"),
    }
}

/// Whether an error frame ends the connection. nsqd keeps the connection
/// after `E_FIN_FAILED`, `E_REQ_FAILED` and `E_TOUCH_FAILED` only.
pub fn is_fatal_error(text: &[u8]) -> bool {
    !(text.starts_with(b"E_FIN_FAILED")
        || text.starts_with(b"E_REQ_FAILED")
        || text.starts_with(b"E_TOUCH_FAILED"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ClientCommand, CommandCodec, Limits};
    use tokio_util::codec::Decoder as _;

    fn server_parse(bytes: &[u8]) -> Vec<ClientCommand> {
        let mut codec = CommandCodec::new(Limits::default());
        let mut buf = BytesMut::from(bytes);
        let mut commands = Vec::new();
        while let Some(command) = codec.decode(&mut buf).expect("valid commands") {
            commands.push(command);
        }
        commands
    }

    #[test]
    fn the_server_parses_the_encoded_commands() {
        let mut buf = BytesMut::new();
        encode_sub(&mut buf, "orders", "tail1#ephemeral");
        encode_rdy(&mut buf, 200);
        encode_fin(&mut buf, b"0123456789abcdef");
        encode_nop(&mut buf);
        encode_pub(&mut buf, "orders", b"one");
        let bodies = [Bytes::from_static(b"a"), Bytes::from_static(b"bc")];
        encode_mpub(&mut buf, "orders", &bodies);
        let commands = server_parse(&buf);
        assert_eq!(
            commands,
            vec![
                ClientCommand::Sub {
                    topic: "orders".into(),
                    channel: "tail1#ephemeral".into()
                },
                ClientCommand::Rdy { count: 200 },
                ClientCommand::Fin {
                    id: *b"0123456789abcdef"
                },
                ClientCommand::Nop,
                ClientCommand::Pub {
                    topic: "orders".into(),
                    body: Bytes::from_static(b"one")
                },
                ClientCommand::Mpub {
                    topic: "orders".into(),
                    bodies: bodies.to_vec()
                },
            ]
        );
    }

    #[test]
    fn identify_is_json_with_feature_negotiation() {
        let mut buf = BytesMut::new();
        encode_identify(&mut buf, "ledgerq-tail/0.1.0", true);
        let commands = server_parse(&buf);
        let [ClientCommand::Identify(body)] = &commands[..] else {
            panic!("{commands:?}");
        };
        let json: serde_json::Value = serde_json::from_slice(body).expect("JSON");
        assert_eq!(json["feature_negotiation"], true);
        assert_eq!(json["user_agent"], "ledgerq-tail/0.1.0");
        assert_eq!(json["tls_v1"], true);
        assert_eq!(max_rdy_count(br#"{"max_rdy_count":2500}"#), Some(2500));
        assert_eq!(max_rdy_count(b"OK"), None);
    }

    #[test]
    fn only_fin_req_and_touch_failures_are_not_fatal() {
        assert!(!is_fatal_error(b"E_FIN_FAILED FIN 0123 failed"));
        assert!(!is_fatal_error(b"E_REQ_FAILED x"));
        assert!(is_fatal_error(b"E_BAD_TOPIC PUB topic name is not valid"));
        assert!(is_fatal_error(b"E_INVALID invalid command"));
    }
}
