//! [`Producer`]: batching, partitioning, bounded buffering, retries and
//! fail-fast delivery of records to the broker.
//!
//! ## How a record travels
//!
//! 1. [`Producer::send`] (or [`Producer::enqueue`]) picks the partition:
//!    the record's explicit partition, else `FNV-1a-64(key) mod
//!    partition_count` for keyed records ([`partition_for_key`]), else
//!    round robin. Partition counts come from DescribeTopic, cached per
//!    topic and forgotten when the broker answers `UnknownTopic` or
//!    `UnknownPartition`.
//! 2. It reserves the record's encoded size in the buffer, a byte
//!    semaphore of [`ProducerConfig::buffer_memory`]: when the buffer is
//!    full, `send` waits (back-pressure; memory never grows without bound).
//! 3. The record goes to its partition's *sender*, one task per
//!    topic-partition, which appends records to a
//!    [`BatchBuilder`](crate::batch::BatchBuilder) until
//!    [`ProducerConfig::linger`] has passed since the batch's first record
//!    was enqueued, or the next record would make the batch larger than
//!    [`ProducerConfig::max_batch_bytes`], or a flush asks for it.
//! 4. The batch is built once (its bytes and, later, its producer stamp
//!    fixed from then on) and sent in a Produce request: the producer's
//!    gatherer puts the batches of many partitions of a topic that are
//!    ready at the same moment into one request (see
//!    [`gather`](self::gather)), so a producer spread over thousands of
//!    partitions does not pay a request per record. An idempotent
//!    producer does not wait for the answer before sending the partition's
//!    next *full* batches: up to [`ProducerConfig::max_in_flight_batches`]
//!    are in flight on the connection, in order (the broker appends a
//!    connection's produces to a partition in the order it read them), so
//!    the next batches travel while the first one's fsync runs. A batch
//!    that is not full waits, after its linger, until nothing of its
//!    partition is in flight, gathering the records that arrive meanwhile
//!    (at a moderate rate, one request per commit rather than one per
//!    record); with a linger of zero it goes at once, pipelined too (the
//!    broker's group commit still shares the fsync). Answers
//!    are handled oldest first. Retriable failures (lost connection,
//!    timeout, open circuit, retriable broker codes) resend the *same
//!    bytes* after an exponential backoff with jitter, until
//!    [`ProducerConfig::delivery_timeout`] after the batch's first record
//!    was enqueued. Each record's future then completes with its own
//!    offset (`base_offset + index`), or with the batch's error, and its
//!    buffer bytes are released.
//!
//! ## Invariants
//!
//! - A partition's batches are sent in the order their records were
//!   enqueued, and a retried batch is never overtaken: when the oldest
//!   batch in flight fails, the sender collects the answers of the batches
//!   sent after it and goes through them all again one at a time, in
//!   order. A batch the broker refused only because an earlier one was
//!   missing (`OutOfOrderSequence`) is sent again in its turn; one stamped
//!   after a batch that was finally not stored is renumbered first (the
//!   broker cannot have stored it: its sequence had a gap). Without
//!   idempotence one batch per partition is in flight.
//! - Idempotence (on by default, [`ProducerConfig::idempotent`]): the
//!   producer registers its name ([`ProducerConfig::producer_name`]) and
//!   stamps each batch, when it is built, with the producer id, epoch and the
//!   partition's next sequence number; every retry resends the same stamp
//!   (unless renumbered as above, when the broker cannot hold it),
//!   so the broker appends the batch once and answers a retry with the
//!   original offsets. See [`session`](super::session) for what happens
//!   after a failure whose outcome is unknown, and for fencing.
//! - Without idempotence, a retry after a lost answer may append a batch
//!   twice; each record's future reports the offsets of the append that
//!   was acknowledged.
//! - While the broker's circuit is open (see
//!   [`CircuitConfig`](super::CircuitConfig)), new sends fail at once with
//!   [`ClientError::CircuitOpen`](crate::client::ClientError::CircuitOpen);
//!   batches already buffered keep retrying until their delivery timeout,
//!   and their requests serve as probes.
//! - Produce quota: when a Produce response carries `throttle_ms` (the
//!   broker's per-connection byte-rate quota was exceeded; Produce v1), no
//!   partition sender of this producer sends another request before that
//!   much time has passed (the broker would not read it before then
//!   anyway). [`Producer::throttle_stats`] reports how often and how long.
//! - [`Producer::flush`] returns once every record enqueued before it was
//!   delivered or failed; [`Producer::close`] refuses new records, then
//!   flushes. Dropping a producer without closing still delivers what was
//!   enqueued, in the background.
//!
//! ## Layout
//!
//! | file | job |
//! | --- | --- |
//! | `config.rs` | [`ProducerConfig`], [`MAX_IN_FLIGHT_BATCHES`] |
//! | `record.rs` | [`ProducerRecord`], [`RecordMetadata`], the [`Delivery`] future, [`partition_for_key`] |
//! | `handle.rs` | [`Producer`]: checks, partition choice, buffer, one sender per partition, flush, close |
//! | `context.rs` | what the senders share: client, config, session, partition counts, throttle ([`ThrottleStats`]) |
//! | `batching.rs` | records waiting for a batch, the batch being filled, the sealed batch |
//! | `sender.rs` | the per-partition sender loop: linger, in-flight window, recovery of the window in order |
//! | `gather.rs` | the senders' batches put together, per topic, into multi-partition Produce requests |
//! | `retry.rs` | retries of one batch: backoff, delivery timeout, renumbering, session reset and fencing |
//! | `outcome.rs` | reading a Produce answer; completing or failing each record's future |
//! | `sequence.rs` | a partition's sequence numbers for idempotent batches |

mod batching;
mod config;
mod context;
mod gather;
mod handle;
mod outcome;
mod record;
mod retry;
mod sender;
mod sequence;

#[cfg(test)]
mod tests;

use std::sync::{Mutex, MutexGuard};

pub use config::{MAX_IN_FLIGHT_BATCHES, ProducerConfig};
pub use context::ThrottleStats;
#[cfg(test)]
pub(crate) use gather::MAX_REQUESTS_IN_FLIGHT;
pub use handle::Producer;
pub use record::{Delivery, ProducerRecord, RecordMetadata, partition_for_key};

/// Locks `mutex`; a panic while it was held leaves consistent data (each
/// critical section is a few map or field operations), so poisoning is
/// ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The wall clock in ms since the Unix epoch (0 before it).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
