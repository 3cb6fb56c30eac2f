//! Registration with lookupds, as nsqd does it (`docs/nsq-wire.md` §6.3).
//!
//! One [`LookupPeers`] owns a task per `--lookupd-tcp-address`. A task
//! connects (1 s dial timeout), sends the magic and IDENTIFY, then keeps the
//! lookupd's view equal to the broker's [`Topology`]: `REGISTER t` for every
//! topic and `REGISTER t c` for every channel, `UNREGISTER` for what
//! disappeared. It recomputes the difference whenever the broker says its
//! topology changed, and PINGs every 15 s. Any error closes the connection
//! (the lookupd then drops this node's registrations); the task reconnects
//! with backoff and registers everything again. At shutdown nothing is
//! sent: the lookupd cleans up when the connection closes.
//!
//! The set of addresses can change at run time (`PUT
//! /config/nsqlookupd_tcp_addresses`).
//!
//! The lookupds also serve as the broker's [`ChannelDirectory`]: a new
//! topic asks every identified lookupd's HTTP API (`GET /channels?topic=`,
//! nsqd's 2 s connect and 5 s request timeouts) which channels exist for it
//! elsewhere, and creates them before any message is handed over.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, ChannelDirectory, Topology};
use crate::lookupd::protocol::NodeInfo;

/// nsqd's lookupd dial timeout and per-read/write deadline.
const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// nsqd's PING period.
pub const PING_PERIOD: Duration = Duration::from_secs(15);
/// First reconnect delay; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// A lookupd reply larger than this is a protocol error.
const MAX_REPLY_BYTES: u32 = 1 << 20;
/// nsqd's HTTP client timeouts, for `/channels` queries.
const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const HTTP_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The HTTP address (`broadcast_address:http_port`) each identified
/// lookupd gave in its IDENTIFY reply, by TCP address.
type HttpAddresses = Arc<Mutex<BTreeMap<String, String>>>;

/// A registration as sent to a lookupd: a topic, or a topic's channel.
type Key = (String, Option<String>);

/// The registrations `topology` calls for.
fn desired(topology: &Topology) -> BTreeSet<Key> {
    let mut keys = BTreeSet::new();
    for (topic, channels) in topology {
        keys.insert((topic.clone(), None));
        for channel in channels {
            keys.insert((topic.clone(), Some(channel.clone())));
        }
    }
    keys
}

/// The commands that turn `registered` into `wanted`: unregistrations
/// first (channels before their topic), then registrations (topics before
/// their channels).
fn commands(registered: &BTreeSet<Key>, wanted: &BTreeSet<Key>) -> Vec<String> {
    let line = |verb: &str, (topic, channel): &Key| match channel {
        Some(channel) => format!("{verb} {topic} {channel}\n"),
        None => format!("{verb} {topic}\n"),
    };
    let gone = registered.difference(wanted);
    let mut out: Vec<String> = gone
        .clone()
        .filter(|(_, c)| c.is_some())
        .chain(gone.filter(|(_, c)| c.is_none()))
        .map(|key| line("UNREGISTER", key))
        .collect();
    out.extend(
        wanted
            .difference(registered)
            .map(|key| line("REGISTER", key)),
    );
    out
}

/// The lookupd peers of one node.
pub struct LookupPeers {
    broker: Arc<Broker>,
    identity: NodeInfo,
    shutdown: CancellationToken,
    inner: Mutex<PeerSet>,
    http_addresses: HttpAddresses,
}

#[derive(Default)]
struct PeerSet {
    /// As configured (order and duplicates kept, as nsqd's option).
    addresses: Vec<String>,
    running: BTreeMap<String, CancellationToken>,
}

impl LookupPeers {
    pub fn new(
        broker: Arc<Broker>,
        identity: NodeInfo,
        shutdown: CancellationToken,
    ) -> Arc<LookupPeers> {
        Arc::new(LookupPeers {
            broker,
            identity,
            shutdown,
            inner: Mutex::new(PeerSet::default()),
            http_addresses: HttpAddresses::default(),
        })
    }

    /// The HTTP addresses of the lookupds this node is identified with.
    pub fn lookupd_http_addresses(&self) -> Vec<String> {
        lock(&self.http_addresses).values().cloned().collect()
    }

    /// The configured addresses.
    pub fn addresses(&self) -> Vec<String> {
        self.lock().addresses.clone()
    }

    /// Connects to new addresses and drops peers no longer listed.
    pub fn set_addresses(&self, addresses: Vec<String>) {
        let mut set = self.lock();
        let wanted: BTreeSet<&String> = addresses.iter().collect();
        set.running.retain(|address, stop| {
            let keep = wanted.contains(address);
            if !keep {
                tracing::info!(lookupd = %address, "lookupd peer removed");
                stop.cancel();
                lock(&self.http_addresses).remove(address);
            }
            keep
        });
        for address in wanted {
            if set.running.contains_key(address) {
                continue;
            }
            let stop = self.shutdown.child_token();
            let peer = Peer {
                address: address.clone(),
                broker: self.broker.clone(),
                identity: self.identity.clone(),
                http_addresses: self.http_addresses.clone(),
            };
            tokio::spawn(peer.run(stop.clone()));
            set.running.insert(address.clone(), stop);
        }
        set.addresses = addresses;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PeerSet> {
        lock(&self.inner)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ChannelDirectory for LookupPeers {
    fn channels<'a>(
        &'a self,
        topic: &'a str,
    ) -> Pin<Box<dyn Future<Output = Vec<String>> + Send + 'a>> {
        Box::pin(async move {
            let lookupds = self.lookupd_http_addresses();
            if lookupds.is_empty() {
                if !self.addresses().is_empty() {
                    tracing::error!(
                        topic,
                        "no lookupd available to ask for channels to pre-create"
                    );
                }
                return Vec::new();
            }
            let queries = lookupds.iter().map(|address| channels_from(address, topic));
            let mut names = Vec::new();
            for (address, answer) in lookupds
                .iter()
                .zip(futures::future::join_all(queries).await)
            {
                match answer {
                    Ok(found) => names.extend(found),
                    Err(error) => {
                        tracing::warn!(lookupd = %address, topic, %error, "asking lookupd for channels failed")
                    }
                }
            }
            names
        })
    }
}

/// `GET http://<address>/channels?topic=<topic>` → the channel names.
async fn channels_from(address: &str, topic: &str) -> anyhow::Result<Vec<String>> {
    use http_body_util::{BodyExt, Empty};
    #[derive(serde::Deserialize)]
    struct Channels {
        channels: Vec<String>,
    }
    let stream = tokio::time::timeout(HTTP_CONNECT_TIMEOUT, TcpStream::connect(address)).await??;
    let request = async {
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(connection);
        // Topic names are [.a-zA-Z0-9_-] with an optional `#ephemeral`.
        let path = format!("/channels?topic={}", topic.replace('#', "%23"));
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, address)
            .header(hyper::header::ACCEPT, "application/vnd.nsq; version=1.0")
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "status {}",
            response.status()
        );
        let body = http_body_util::Limited::new(response.into_body(), MAX_REPLY_BYTES as usize)
            .collect()
            .await
            .map_err(|error| anyhow::anyhow!("reading the body: {error}"))?
            .to_bytes();
        Ok(serde_json::from_slice::<Channels>(&body)?.channels)
    };
    tokio::time::timeout(HTTP_REQUEST_TIMEOUT, request).await?
}

/// Why a session with a lookupd ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    TimedOut,
    #[error("lookupd answered {0:?}")]
    Refused(String),
    #[error("reply of {0} bytes")]
    Oversized(u32),
}

/// One lookupd address's connection loop.
struct Peer {
    address: String,
    broker: Arc<Broker>,
    identity: NodeInfo,
    http_addresses: HttpAddresses,
}

impl Peer {
    async fn run(self, stop: CancellationToken) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let mut identified = false;
            let session = async {
                let mut socket = self.connect().await?;
                self.identify(&mut socket).await?;
                identified = true;
                tracing::info!(lookupd = %self.address, "identified to lookupd");
                let result = self.keep_registered(&mut socket).await;
                lock(&self.http_addresses).remove(&self.address);
                result
            };
            let error = tokio::select! {
                _ = stop.cancelled() => return,
                result = session => match result {
                    Err(error) => error,
                    Ok(never) => match never {},
                },
            };
            if identified {
                // The lookupd was reachable: retry soon.
                backoff = MIN_BACKOFF;
            }
            tracing::warn!(lookupd = %self.address, %error, retry_in = ?backoff, "lookupd connection lost");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn connect(&self) -> Result<TcpStream, SessionError> {
        let socket = deadline(TcpStream::connect(&self.address)).await??;
        let _ = socket.set_nodelay(true);
        Ok(socket)
    }

    async fn identify(&self, socket: &mut TcpStream) -> Result<(), SessionError> {
        let body = serde_json::to_vec(&self.identity).expect("plain struct serializes");
        let mut request = b"  V1IDENTIFY\n".to_vec();
        request.extend_from_slice(&(body.len() as u32).to_be_bytes());
        request.extend_from_slice(&body);
        let reply = exchange(socket, &request).await?;
        #[derive(serde::Deserialize)]
        struct Lookupd {
            broadcast_address: String,
            http_port: u16,
        }
        let lookupd: Lookupd = serde_json::from_slice(&reply)
            .map_err(|_| SessionError::Refused(String::from_utf8_lossy(&reply).into_owned()))?;
        let http = format!("{}:{}", lookupd.broadcast_address, lookupd.http_port);
        lock(&self.http_addresses).insert(self.address.clone(), http);
        Ok(())
    }

    /// Registers, re-registers on every topology change, pings; returns
    /// only on an error.
    async fn keep_registered(
        &self,
        socket: &mut TcpStream,
    ) -> Result<std::convert::Infallible, SessionError> {
        let mut changes: watch::Receiver<u64> = self.broker.watch_topology();
        let mut registered = BTreeSet::new();
        let mut ping = tokio::time::interval(PING_PERIOD);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            changes.borrow_and_update();
            let wanted = desired(&self.broker.topology());
            for line in commands(&registered, &wanted) {
                expect_ok(exchange(socket, line.as_bytes()).await?)?;
                tracing::debug!(lookupd = %self.address, command = line.trim_end(), "lookupd");
            }
            registered = wanted;
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        // The broker is gone: the node is shutting down.
                        std::future::pending::<()>().await;
                    }
                }
                _ = ping.tick() => expect_ok(exchange(socket, b"PING\n").await?)?,
            }
        }
    }
}

async fn deadline<T>(work: impl std::future::Future<Output = T>) -> Result<T, SessionError> {
    tokio::time::timeout(IO_TIMEOUT, work)
        .await
        .map_err(|_| SessionError::TimedOut)
}

/// Writes `request` and reads one `[u32 size][bytes]` reply, each step
/// under nsqd's 1 s deadline.
async fn exchange(socket: &mut TcpStream, request: &[u8]) -> Result<Bytes, SessionError> {
    deadline(socket.write_all(request)).await??;
    let size = deadline(socket.read_u32()).await??;
    if size > MAX_REPLY_BYTES {
        return Err(SessionError::Oversized(size));
    }
    let mut reply = vec![0u8; size as usize];
    deadline(socket.read_exact(&mut reply)).await??;
    Ok(Bytes::from(reply))
}

fn expect_ok(reply: Bytes) -> Result<(), SessionError> {
    if &reply[..] == b"OK" {
        Ok(())
    } else {
        Err(SessionError::Refused(
            String::from_utf8_lossy(&reply).into_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(entries: &[(&str, &[&str])]) -> Topology {
        entries
            .iter()
            .map(|(t, cs)| (t.to_string(), cs.iter().map(|c| c.to_string()).collect()))
            .collect()
    }

    #[test]
    fn a_fresh_session_registers_every_topic_and_channel() {
        let wanted = desired(&topology(&[("a", &[]), ("b", &["x", "y"])]));
        assert_eq!(
            commands(&BTreeSet::new(), &wanted),
            [
                "REGISTER a\n",
                "REGISTER b\n",
                "REGISTER b x\n",
                "REGISTER b y\n"
            ]
        );
    }

    #[test]
    fn changes_become_unregistrations_then_registrations() {
        let before = desired(&topology(&[("a", &["x"]), ("b", &["x", "y"])]));
        let after = desired(&topology(&[("b", &["y", "z"]), ("c", &[])]));
        assert_eq!(
            commands(&before, &after),
            [
                "UNREGISTER a x\n",
                "UNREGISTER b x\n",
                "UNREGISTER a\n",
                "REGISTER b z\n",
                "REGISTER c\n"
            ]
        );
        assert!(commands(&after, &after).is_empty());
    }
}
