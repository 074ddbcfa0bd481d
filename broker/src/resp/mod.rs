//! The Redis Streams adapter: a RESP2/RESP3 listener (`--resp`, default
//! `127.0.0.1:7422`) that serves Redis's stream commands over the service
//! layer ([`crate::service::Broker`]), so that any Redis client can
//! produce to and consume from Pigeon. What is supported, the mapping of
//! stream IDs and entries to offsets and records, and the differences
//! from Redis are in `docs/redis.md`.
//!
//! ## Layout
//!
//! | module | job |
//! | --- | --- |
//! | `request` | bytes → requests (multibulk and inline), limits checked before allocating |
//! | `reply` | [`reply::Reply`] and its RESP2 / RESP3 encoding |
//! | `connection` | one connection: pipelined requests in, replies out in order, timeouts |
//! | `session` | a connection's state (protocol, quit) and what a command runs with |
//! | `clients` | the connections served, for `CLIENT LIST` and `INFO clients` |
//! | `commands` | the command table, the arity check and every command, by family |
//! | `keyspace` | how a key names a stream (topic or `topic#partition`), glob patterns |
//! | `stream` | stream IDs ↔ offsets, entries ↔ records, reads by ID, append locks |
//! | `errors` | `BrokerError` → Redis error reply (one place), Redis's fixed error texts |
//!
//! ## Security
//!
//! With `--tls-cert` the listener speaks TLS only (the binary protocol's
//! configuration, reloaded at SIGHUP; a plain client is told so in a
//! Redis error and closed). With `--users`, Redis users are Pigeon users
//! (`commands/connection.rs`), and every command runs as the connection's
//! caller through the service layer's permission checks
//! ([`crate::service::Checked`]): a refusal is Redis's `NOPERM` error
//! naming the user, the permission and the stream.
//!
//! ## Concurrency model
//!
//! One task accepts connections (at most `max_connections` at once; one
//! more is told Redis's "max number of clients reached" and closed; at
//! most `max_connections_per_peer` from one IP address, counted with the
//! binary protocol's, see `crate::caps`). Sockets have TCP keepalive on,
//! and a connection that sends nothing for `idle_timeout_ms` between
//! commands is closed (`server/idle.rs`). One
//! task per connection runs its requests one after another, as Redis does:
//! a blocking read holds up only its own connection. Commands are
//! protocol-neutral calls on the service layer; the listener decides no
//! domain question.
//!
//! ## Shutdown
//!
//! When the broker's `shutdown` token is cancelled the accept loop stops,
//! every connection finishes the command it runs (a blocking read answers
//! at once) and closes; [`run`] returns once every connection has ended
//! (at most `shutdown_timeout_ms`).

pub mod clients;
pub mod commands;
pub mod connection;
pub mod errors;
pub mod keyspace;
pub mod reply;
pub mod request;
pub mod session;
pub mod stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::security::tls::ServerTls;
use crate::server::idle::IdleTimeout;
use crate::service::Broker;
use clients::Clients;

/// What every RESP connection shares.
#[derive(Debug)]
pub struct Listener {
    /// The service layer.
    pub broker: Arc<Broker>,
    /// The connections served.
    pub clients: Arc<Clients>,
    /// When the listener started (`INFO server` uptime).
    pub started: Instant,
    /// The port it listens on (`INFO server`).
    pub port: u16,
    /// One lock per partition `XADD` appends to (see [`stream`]).
    pub appends: stream::AppendLocks,
}

/// Accepts RESP connections until shutdown; returns once every connection
/// ended.
pub async fn run(broker: Arc<Broker>, listener: TcpListener, tls: Option<Arc<ServerTls>>) {
    let port = listener.local_addr().map_or(0, |a| a.port());
    let shared = Arc::new(Listener {
        broker: broker.clone(),
        clients: Arc::new(Clients::default()),
        started: Instant::now(),
        port,
        appends: stream::AppendLocks::default(),
    });
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(broker.config.max_connections as usize));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = broker.shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let per_peer = broker.config.caps.max_connections_per_peer;
                let Some(peer_slot) = broker.peers.admit(peer, per_peer) else {
                    crate::metrics::connection_refused(crate::metrics::Refusal::PerPeer);
                    let error = crate::caps::too_many_from_peer(peer, per_peer);
                    refuse(stream, format!("-ERR {error}\r\n"));
                    continue;
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    crate::metrics::connection_refused(crate::metrics::Refusal::MaxConnections);
                    refuse(stream, "-ERR max number of clients reached\r\n".into());
                    continue;
                };
                crate::caps::keepalive(&stream);
                let (shared, tls) = (shared.clone(), tls.clone());
                connections.spawn(async move {
                    serve_tcp(shared, stream, peer, tls).await;
                    drop((permit, peer_slot));
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "RESP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    connections.close();
    let drained = tokio::time::timeout(broker.config.shutdown_timeout, connections.wait());
    if drained.await.is_err() {
        tracing::warn!("some RESP connections were still running when the shutdown timeout passed");
    }
}

async fn serve_tcp(
    shared: Arc<Listener>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<ServerTls>>,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(peer);
    let mut link = connection::Link {
        peer,
        local,
        tls: false,
        certificate_user: None,
    };
    let idle = shared.broker.config.caps.idle_timeout;
    let Some(tls) = tls else {
        let stream = IdleTimeout::new(stream, idle, peer.to_string());
        let (read, write) = tokio::io::split(stream);
        return connection::serve(shared, read, write, link).await;
    };
    let timeout = shared.broker.config.frame_timeout;
    match crate::server::tls::shake_hands(&tls, stream, &peer.to_string(), timeout).await {
        Some(Ok(stream)) => {
            link.tls = true;
            link.certificate_user = crate::security::tls::peer_user(stream.get_ref().1);
            let stream = IdleTimeout::new(stream, idle, peer.to_string());
            let (read, write) = tokio::io::split(stream);
            connection::serve(shared, read, write, link).await;
        }
        Some(Err(mut plain)) => {
            crate::server::close_with(&mut plain, PLAIN_ON_TLS.as_bytes()).await;
        }
        None => {}
    }
}

/// The answer to a plain client on the TLS listener, in the clear.
const PLAIN_ON_TLS: &str = "-ERR this Pigeon Redis listener requires TLS: connect with TLS (for example redis-cli --tls --cacert ca.pem)\r\n";

/// Tells a connection over `max_connections` (or
/// `max_connections_per_peer`) why it is closed, as Redis does, and
/// closes it once the client read it (see [`crate::server::close_with`]).
fn refuse(stream: TcpStream, error: String) {
    tokio::spawn(async move {
        let mut stream = stream;
        crate::server::close_with(&mut stream, error.as_bytes()).await;
    });
}
