//! The accept loop every listener shares (NSQ TCP, HTTP, lookupd TCP):
//! accept until shutdown, one task per connection, finished tasks reaped;
//! then a bounded wait for the connections still open.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Pause after a failed accept (out of file descriptors, say), so the loop
/// does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// Accepts connections on `listener` and runs `serve` for each until
/// `shutdown` is cancelled; closes the listener and returns the
/// connections still running.
pub async fn accept_until<F>(
    listener: TcpListener,
    shutdown: &CancellationToken,
    what: &'static str,
    mut serve: impl FnMut(TcpStream, SocketAddr) -> F,
) -> JoinSet<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    connections.spawn(serve(socket, peer));
                }
                Err(error) => {
                    tracing::warn!(%error, listener = what, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections
}

/// Waits up to `deadline` for `connections` to finish, then aborts the rest.
pub async fn drain(mut connections: JoinSet<()>, deadline: Duration, what: &'static str) {
    let drained = tokio::time::timeout(deadline, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            listener = what,
            "connections did not drain in time; closing them"
        );
        connections.shutdown().await;
    }
}
