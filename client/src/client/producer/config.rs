//! [`ProducerConfig`]: how a [`Producer`](super::Producer) batches,
//! buffers and retries, and [`MAX_IN_FLIGHT_BATCHES`], the bound on its
//! pipelining.
//!
//! Invariant: the configuration never changes once the producer is built;
//! every partition sender reads the same one.

use std::time::Duration;

use crate::client::backoff::Backoff;

/// How a [`Producer`](super::Producer) batches, buffers and retries.
///
/// ```
/// use std::time::Duration;
/// use pigeon_client::client::ProducerConfig;
///
/// let config = ProducerConfig { linger: Duration::from_millis(20), ..ProducerConfig::default() };
/// assert_eq!(config.max_batch_bytes, 1 << 20);
/// ```
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a batch waits for more records after its first (5 ms).
    /// After its linger, a batch that is not full also waits until nothing
    /// of its partition is in flight, gathering records meanwhile; with a
    /// linger of zero it does not: it goes at once with the records
    /// already queued, pipelined behind the batches in flight (lowest
    /// latency, more and smaller requests).
    pub linger: Duration,
    /// Largest batch, in encoded bytes (1 MiB; also capped by the broker's
    /// max batch size once known).
    pub max_batch_bytes: usize,
    /// Bytes of records buffered and in flight before `send` waits
    /// (32 MiB; raised to `max_batch_bytes` if smaller).
    pub buffer_memory: usize,
    /// How long after it was enqueued a record may still be retried (2 min).
    pub delivery_timeout: Duration,
    /// Spacing of retries (100 ms doubling up to 10 s, ±20 %).
    pub retry_backoff: Backoff,
    /// Longest wait for the answer to one Produce request (30 s); also the
    /// `timeout_ms` the broker is given.
    pub request_timeout: Duration,
    /// Whether batches carry a producer id, epoch and sequence so that the
    /// broker appends each exactly once across retries (on by default).
    pub idempotent: bool,
    /// Stable name of this producer for idempotence (e.g. the service
    /// instance); a newer producer with the same name fences this one.
    /// `None`: derived from the host name and the process id.
    pub producer_name: Option<String>,
    /// Batches of one partition sent before the first is answered, when
    /// idempotent (5, at most [`MAX_IN_FLIGHT_BATCHES`]): the next batches
    /// travel and are staged while the first one's fsync runs. Without
    /// idempotence one batch is in flight per partition, so that a retry
    /// never lets a later batch overtake an earlier one.
    pub max_in_flight_batches: usize,
}

/// Most batches of a partition in flight at once: the broker remembers
/// the last five batches of each producer and partition to answer their
/// retries, so a retried batch is always recognised.
pub const MAX_IN_FLIGHT_BATCHES: usize = 5;

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::from_millis(5),
            max_batch_bytes: 1024 * 1024,
            buffer_memory: 32 * 1024 * 1024,
            delivery_timeout: Duration::from_secs(120),
            retry_backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
            request_timeout: Duration::from_secs(30),
            idempotent: true,
            producer_name: None,
            max_in_flight_batches: MAX_IN_FLIGHT_BATCHES,
        }
    }
}
