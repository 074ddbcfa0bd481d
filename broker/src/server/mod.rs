//! The network server: the protocol listener and the broker state shared
//! by every connection.
//!
//! ## Concurrency model
//!
//! - One tokio task accepts connections (at most `max_connections` at once,
//!   further ones wait in the kernel's backlog).
//! - One task per connection reads frames; each request runs in its own
//!   task (bounded per connection), so a slow fetch long-poll never holds up
//!   a produce on the same connection.
//! - Each partition log has its own writer thread fed by a bounded channel
//!   (see [`crate::log::committer`]): appends from every connection meet
//!   there and share fsyncs. Reads run on the request's task against the
//!   log's lock-free reader.
//!
//! ## Shutdown
//!
//! Cancelling [`Broker::shutdown`] stops the accept loop and makes every
//! connection stop reading; requests already accepted finish (long-polls
//! answer at once with what they have), their responses are written, then
//! every partition log is closed cleanly (final fsync, clean checkpoint).

pub mod connection;
pub mod group_handlers;
pub mod handlers;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::BrokerConfig;
use crate::metrics;
use crate::registry::ProducerRegistry;
use crate::topics::Topics;

/// Everything the request handlers share.
#[derive(Debug)]
pub struct Broker {
    /// Effective settings.
    pub config: BrokerConfig,
    /// Topics and their logs.
    pub topics: Topics,
    /// Idempotent producers' names, ids and epochs.
    pub producers: Arc<ProducerRegistry>,
    /// Consumer groups.
    pub groups: crate::groups::Groups,
    /// Cancelled when the broker shuts down.
    pub shutdown: CancellationToken,
    /// True while the broker accepts requests (for `/health`).
    pub serving: AtomicBool,
}

/// Accepts connections until shutdown; returns once every connection ended.
pub async fn run(broker: Arc<Broker>, listener: TcpListener) {
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(broker.config.max_connections as usize));
    loop {
        let Ok(permit) = (tokio::select! {
            p = slots.clone().acquire_owned() => p,
            _ = broker.shutdown.cancelled() => break,
        }) else {
            break;
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = broker.shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let broker = broker.clone();
                connections.spawn(async move {
                    metrics::connection_opened();
                    connection::serve(broker, stream).await;
                    metrics::connection_closed();
                    drop(permit);
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
