//! The binary-protocol adapter: the TCP listener, connections, and the
//! translation of each request into one call to the service layer
//! ([`crate::service::Broker`]).
//!
//! ## Concurrency model
//!
//! - One tokio task accepts connections. At most `max_connections` are
//!   served at once; one more is answered, at once, with a
//!   connection-level `TooManyConnections` error and closed, so a client
//!   learns why instead of hanging in the kernel's backlog.
//! - At most `max_connections_per_peer` connections come from one IP
//!   address (counted with the Redis listener's, see `crate::caps`); one
//!   more gets `TooManyConnections` saying so, the same way. Every
//!   accepted socket has TCP keepalive on (a peer that vanished is
//!   noticed), and a connection with nothing in flight that sends nothing
//!   for `idle_timeout_ms` is closed (`connection.rs`).
//! - One task per connection reads frames; each request runs in its own
//!   task (bounded per connection), so a slow fetch long-poll never holds up
//!   a produce on the same connection. A produce's batches are queued at
//!   their partitions by the connection task before it reads the next
//!   frame (only the wait for the commit runs in the request's task), so a
//!   connection's produces reach each partition in the order sent.
//! - Each partition log has its own writer fed by a bounded channel and run
//!   on the shared writer pool (see [`crate::log::committer`]): appends from every connection meet
//!   there and share fsyncs. Reads run on the request's task against the
//!   log's lock-free reader.
//!
//! ## Shutdown
//!
//! Cancelling the broker's `shutdown` token stops the accept loop and makes every
//! connection stop reading; requests already accepted finish (long-polls
//! answer at once with what they have), their responses are written, then
//! every group's engine hands its last events to its journal and closes it,
//! then every partition log is closed cleanly (final fsync, clean
//! checkpoint).

pub mod admin_handlers;
pub mod audit;
pub mod auth;
pub mod connection;
pub mod errors;
pub mod group_handlers;
pub mod handlers;
pub mod idle;
pub mod tls;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pigeon_protocol::{ErrorCode, Limits, encode_response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use crate::metrics;
use crate::security::tls::ServerTls;
use crate::service::Broker;

/// Refused connections kept open for a moment so that their client reads
/// the error before the close; past this many, further refused connections
/// get the error and are closed at once.
const MAX_LINGERING_REFUSALS: usize = 256;

/// Longest a refused connection is kept to deliver its error.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Accepts connections until shutdown; returns once every connection ended.
/// With `tls`, every connection shakes hands first (see [`tls`]).
pub async fn run(broker: Arc<Broker>, listener: TcpListener, tls: Option<Arc<ServerTls>>) {
    let connections = TaskTracker::new();
    let max_connections = broker.config.max_connections;
    let slots = Arc::new(Semaphore::new(max_connections as usize));
    let refusals = Arc::new(Semaphore::new(MAX_LINGERING_REFUSALS));
    let refusal = refusal_frame(max_connections);
    let mut refused = 0u64;
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = broker.shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let per_peer = broker.config.caps.max_connections_per_peer;
                let Some(peer_slot) = broker.peers.admit(peer, per_peer) else {
                    metrics::connection_refused(metrics::Refusal::PerPeer);
                    if last_refusal_log.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                        last_refusal_log = Some(Instant::now());
                        tracing::warn!(%peer, max_connections_per_peer = per_peer,
                            "refusing a connection: its address already has max_connections_per_peer");
                    }
                    let error = encoded_refusal(crate::caps::too_many_from_peer(peer, per_peer));
                    refuse(stream, &error, refusals.clone().try_acquire_owned().ok());
                    continue;
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    refused += 1;
                    metrics::connection_refused(metrics::Refusal::MaxConnections);
                    if last_refusal_log.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                        last_refusal_log = Some(Instant::now());
                        tracing::warn!(%peer, max_connections, refused,
                            "refusing connections: max_connections are already served");
                    }
                    refuse(stream, &refusal, refusals.clone().try_acquire_owned().ok());
                    continue;
                };
                let broker = broker.clone();
                let _ = stream.set_nodelay(true);
                crate::caps::keepalive(&stream);
                let tls = tls.clone();
                connections.spawn(async move {
                    metrics::connection_opened();
                    serve_stream(broker, stream, peer, tls).await;
                    metrics::connection_closed();
                    drop((permit, peer_slot));
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(broker.config.shutdown_timeout, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("some requests were still running when the shutdown timeout passed");
    }
}

/// Serves one accepted connection: over TLS (after the handshake) when the
/// listener has it, else over plain TCP.
async fn serve_stream(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    tls: Option<Arc<ServerTls>>,
) {
    let name = peer.to_string();
    match tls {
        None => {
            let shutdown = broker.shutdown.clone();
            let Some(stream) = tls::refuse_tls_on_plain(stream, &name, &shutdown).await else {
                return;
            };
            let (read, write) = stream.into_split();
            let link = auth::Link {
                peer,
                tls: false,
                certificate_user: None,
            };
            connection::serve(broker, read, write, link).await;
        }
        Some(tls) => {
            let timeout = broker.config.frame_timeout;
            let Some(stream) = tls::accept(&tls, stream, &name, timeout).await else {
                return;
            };
            let link = auth::Link {
                peer,
                tls: true,
                certificate_user: crate::security::tls::peer_user(stream.get_ref().1),
            };
            let (read, write) = tokio::io::split(stream);
            connection::serve(broker, read, write, link).await;
        }
    }
}

/// The connection-level `TooManyConnections` error, encoded.
fn refusal_frame(max_connections: u32) -> BytesMut {
    encoded_refusal(format!(
        "the broker already serves {max_connections} connections (max_connections); close idle connections or retry later"
    ))
}

/// A connection-level `TooManyConnections` error saying `message`, encoded.
fn encoded_refusal(message: String) -> BytesMut {
    let frame = connection::connection_error(ErrorCode::TooManyConnections, message);
    let mut bytes = BytesMut::new();
    if let Err(e) = encode_response(&frame, Limits::default(), &mut bytes) {
        tracing::error!(error = %e, "cannot encode the TooManyConnections error");
    }
    bytes
}

/// Tells a connection over the limit why it is closed: the connection-level
/// `TooManyConnections` error (a new socket's buffer always has room for
/// it), then the end of the stream. With a `lingering` permit, what the
/// client sends is drained for up to [`REFUSAL_LINGER`] before the close,
/// so that the close cannot reset the connection before the client has
/// read the error; without one, what already arrived is drained and the
/// socket closed at once.
fn refuse(stream: TcpStream, error: &[u8], lingering: Option<OwnedSemaphorePermit>) {
    let _ = stream.try_write(error);
    match lingering {
        Some(permit) => {
            tokio::spawn(async move {
                let mut stream = stream;
                close_with(&mut stream, &[]).await;
                drop(permit);
            });
        }
        None => {
            let mut drained = [0u8; 1024];
            while matches!(stream.try_read(&mut drained), Ok(n) if n > 0) {}
            if let Ok(stream) = stream.into_std() {
                let _ = stream.shutdown(std::net::Shutdown::Write);
            }
        }
    }
}

/// Ends a refused connection gracefully, all within [`REFUSAL_LINGER`]:
/// writes `last_words`, shuts the broker's side (the client reads them,
/// then the end of the stream) and reads and drops what the client still
/// sends until it closes. Closing a socket with unread bytes would reset
/// the connection, and a client still writing its request, or yet to read
/// the refusal, would see the reset instead of the refusal.
pub(crate) async fn close_with(stream: &mut TcpStream, last_words: &[u8]) {
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(last_words).await?;
        stream.shutdown().await?;
        let mut drained = [0u8; 1024];
        while stream.read(&mut drained).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_the_documented_connection_level_error() {
        let bytes = refusal_frame(4096);
        // docs/protocol.md, "Examples": 115 bytes.
        assert_eq!(bytes.len(), 115);
        assert_eq!(
            &bytes[..16],
            &[
                0x6f, 0, 0, 0, 0xff, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x1d, 0, 0x63, 0
            ]
        );
        assert!(bytes.ends_with(b"(max_connections); close idle connections or retry later"));
    }
}
