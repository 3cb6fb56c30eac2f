//! One node's TCP connection to the lookupd (protocol V1, `docs/nsq-wire.md` §6.1),
//! top to bottom: magic, then commands answered in order; every error is
//! answered and closes the connection; on close the node leaves every
//! registration it had.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use super::protocol::{DecodeError, LookupCodec, NodeInfo, ReplyEncoder, Request, MAGIC_V1};
use super::registry::PeerInfo;
use super::LookupdState;
use crate::clock;
use crate::connection::linger;

/// Serves one connection until the peer closes, an error is answered, or
/// the lookupd shuts down.
pub async fn serve(
    socket: TcpStream,
    peer: SocketAddr,
    state: Arc<LookupdState>,
    shutdown: CancellationToken,
) {
    let id = peer.to_string();
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = run(socket, &id, &state) => {}
    }
    state.registry().disconnect(&id);
    tracing::debug!(%peer, "lookupd: connection closed");
}

async fn run(socket: TcpStream, id: &str, state: &LookupdState) {
    let (mut read, write) = socket.into_split();
    let mut replies = FramedWrite::new(write, ReplyEncoder);
    let mut magic = [0u8; 4];
    if read.read_exact(&mut magic).await.is_err() {
        return;
    }
    if &magic != MAGIC_V1 {
        let _ = replies.send(Bytes::from_static(b"E_BAD_PROTOCOL")).await;
        linger(read).await;
        return;
    }
    let mut commands = FramedRead::new(read, LookupCodec::default());
    while let Some(next) = commands.next().await {
        let reply = match next {
            Ok(request) => answer(request, id, state, commands.decoder_mut()),
            Err(DecodeError::Io(_)) => return,
            Err(DecodeError::Client(error)) => {
                tracing::info!(peer = id, code = error.code, text = %error.text, "lookupd: client error");
                let _ = replies.send(error.to_reply()).await;
                linger(commands.into_inner()).await;
                return;
            }
        };
        if replies.send(reply).await.is_err() {
            return;
        }
    }
}

fn answer(request: Request, id: &str, state: &LookupdState, codec: &mut LookupCodec) -> Bytes {
    match request {
        Request::Ping => {
            // A PING before IDENTIFY is answered but refreshes nothing.
            state.registry().ping(id, clock::now_ns());
        }
        Request::Identify(body) => {
            codec.identified = true;
            let peer = peer_info(id, body);
            tracing::info!(peer = id, node = %peer.node.http_node(), "lookupd: node identified");
            state.registry().identify(id, peer);
            return state.identify_reply();
        }
        Request::Register { topic, channel } => {
            state.registry().register(id, &topic, channel.as_deref());
        }
        Request::Unregister { topic, channel } => {
            state.registry().unregister(id, &topic, channel.as_deref());
        }
    }
    Bytes::from_static(b"OK")
}

fn peer_info(id: &str, node: NodeInfo) -> PeerInfo {
    PeerInfo {
        remote_address: id.to_owned(),
        node,
        last_update_ns: clock::now_ns(),
    }
}
