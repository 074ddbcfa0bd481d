//! Drivers of the peer systems for the side-by-side benchmark: Redis
//! Streams ([`redis::RedisTarget`]) and NATS JetStream
//! ([`nats::NatsTarget`]), each implementing the harness traits of
//! `pigeon_cli::bench::target`, so that Pigeon and its peers are driven
//! by the same load generator and only the system under test differs.
//!
//! | module | job |
//! | --- | --- |
//! | [`redis`] | XADD pipelined from a background task, XREADGROUP + XACK |
//! | [`nats`] | JetStream publish with many PubAcks outstanding, durable pull consumer with explicit acks |
//!
//! Rules both drivers keep (and that Pigeon's producer keeps by default):
//!
//! 1. At most [`OUTSTANDING_BYTES`] of values are published and not yet
//!    acknowledged per publisher ([`Window`]); `publish` waits for room.
//! 2. An ack future resolves only once the server has answered for that
//!    message; it never claims more than the server's configured policy.
//! 3. Values are delivered unchanged (the harness stamps its clock in them).
//! 4. A topic is one stream: neither peer spreads one topic over several
//!    streams here, so `partitions` is ignored (the side-by-side runs use
//!    one partition for every system).

pub mod nats;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The boxed future a peer's `publish` returns.
pub type AckFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'static>>;

/// Bytes of values a publisher may have unacknowledged: the default
/// `buffer_memory` of Pigeon's `Producer` (32 MiB), so every system gets
/// the same room to pipeline.
pub const OUTSTANDING_BYTES: usize = 32 * 1024 * 1024;

/// Longest wait for any one server answer (a blocking read waits for
/// less; this only catches a hung server).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);

/// Bounds the bytes a publisher has in flight (rule 1).
#[derive(Clone)]
pub struct Window {
    /// One permit per byte of value published and not yet acknowledged.
    room: Arc<Semaphore>,
}

impl Window {
    /// A window of [`OUTSTANDING_BYTES`].
    pub fn new() -> Window {
        Window {
            room: Arc::new(Semaphore::new(OUTSTANDING_BYTES)),
        }
    }

    /// Waits until `bytes` more fit (a value larger than the whole window
    /// takes all of it), and returns the permit that frees them when the
    /// message's ack resolves or is dropped.
    pub async fn reserve(&self, bytes: usize) -> anyhow::Result<OwnedSemaphorePermit> {
        let bytes = bytes.clamp(1, OUTSTANDING_BYTES);
        // OUTSTANDING_BYTES fits in u32, so the clamped value does too.
        let permits = u32::try_from(bytes)?;
        Ok(Arc::clone(&self.room).acquire_many_owned(permits).await?)
    }

    /// Waits until nothing is outstanding (the caller must be resolving or
    /// dropping the ack futures meanwhile, as the harness does).
    pub async fn drain(&self) -> anyhow::Result<()> {
        // OUTSTANDING_BYTES fits in u32.
        let all = u32::try_from(OUTSTANDING_BYTES)?;
        drop(self.room.acquire_many(all).await?);
        Ok(())
    }
}

/// Turns a stream or topic name into a name both peers accept: letters,
/// digits, `-` and `_` (JetStream stream names may not hold `.`).
pub fn stream_name(topic: &str) -> String {
    topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
