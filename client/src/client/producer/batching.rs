//! Accumulation: the [`Command`]s a partition sender receives, the
//! [`Enqueued`] record waiting for its batch, the [`OpenBatch`] being
//! filled and the sealed [`ProducerBatch`].
//!
//! ## Invariants
//!
//! - A batch holds the records in the order they were enqueued, with one
//!   reply per record in the same order (record `i` is stored at
//!   `base_offset + i`).
//! - A batch holds the buffer bytes of all its records until it
//!   completes: they are released when it is dropped, delivered or failed.
//! - Once sealed, a batch's bytes and producer stamp never change, so a
//!   retry sends exactly the same batch; only
//!   [`ProducerBatch::restamped`] (when the broker cannot hold the old
//!   stamp) makes a new one with the same records.
//! - A batch's delivery timeout counts from when its first record was
//!   enqueued.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::time::Instant;

use super::now_ms;
use super::record::{ProducerRecord, RecordMetadata};
use crate::batch::{BatchBuilder, ProducerStamp};
use crate::client::error::ClientError;
use crate::client::session::SessionId;
use crate::protocol::{ProducePartition, ProduceRequest, Request};

/// The reply to one record: its metadata or the batch's error.
pub(super) type Reply = oneshot::Sender<Result<RecordMetadata, ClientError>>;

/// What a partition sender is asked to do.
#[derive(Debug)]
pub(super) enum Command {
    /// Send this record.
    Record(Enqueued),
    /// Send every record now; answer once all are delivered or failed.
    Flush(oneshot::Sender<()>),
}

/// A record waiting for its batch.
#[derive(Debug)]
pub(super) struct Enqueued {
    pub(super) record: ProducerRecord,
    pub(super) size: usize,
    pub(super) permit: OwnedSemaphorePermit,
    pub(super) enqueued_at: Instant,
    pub(super) reply: Reply,
}

/// A built batch: its bytes (and producer stamp) never change again, so a
/// retry sends exactly the same batch.
#[derive(Debug)]
pub(super) struct ProducerBatch {
    pub(super) topic: Arc<str>,
    pub(super) partition: u32,
    pub(super) bytes: Bytes,
    /// Producer id, epoch and base sequence (`NONE` without idempotence).
    pub(super) stamp: ProducerStamp,
    /// The session the stamp belongs to.
    pub(super) session: Option<SessionId>,
    pub(super) replies: Vec<Reply>,
    /// The buffer bytes of every record; released when the batch completes.
    pub(super) _permits: Option<OwnedSemaphorePermit>,
    /// When the first record was enqueued: the delivery timeout counts
    /// from here.
    pub(super) created_at: Instant,
}

/// A batch being filled.
pub(super) struct OpenBatch {
    pub(super) builder: BatchBuilder,
    pub(super) replies: Vec<Reply>,
    permits: Option<OwnedSemaphorePermit>,
    pub(super) created_at: Instant,
}

impl OpenBatch {
    /// A batch starting with `first`, its buffer sized for `expected`
    /// bytes (so a batch as large as the last one never reallocates).
    pub(super) fn new(first: Enqueued, expected: usize) -> Self {
        let mut batch = OpenBatch {
            builder: BatchBuilder::with_capacity(first.size.max(expected).max(4096)),
            replies: Vec::new(),
            permits: None,
            created_at: first.enqueued_at,
        };
        batch.push(first);
        batch
    }

    /// Whether `next` fits in the batch without making it larger than
    /// `max` bytes.
    pub(super) fn fits(&self, next: &Enqueued, max: usize) -> bool {
        self.builder.encoded_len() + next.size <= max
    }

    /// Appends a record; the batch takes over its reply and buffer bytes.
    pub(super) fn push(&mut self, enqueued: Enqueued) {
        let record = &enqueued.record;
        let headers: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_ref()))
            .collect();
        self.builder
            .push(record.key.as_deref(), &record.value, &headers);
        self.replies.push(enqueued.reply);
        match &mut self.permits {
            Some(permits) => permits.merge(enqueued.permit),
            None => self.permits = Some(enqueued.permit),
        }
    }

    /// Builds the batch's bytes, stamped with `stamp`, for good.
    pub(super) fn seal(
        self,
        topic: Arc<str>,
        partition: u32,
        stamp: ProducerStamp,
        session: Option<SessionId>,
    ) -> ProducerBatch {
        ProducerBatch {
            topic,
            partition,
            bytes: self.builder.build(stamp, now_ms()),
            stamp,
            session,
            replies: self.replies,
            _permits: self.permits,
            created_at: self.created_at,
        }
    }
}

impl ProducerBatch {
    /// The Produce request carrying the batch; the broker is given
    /// `timeout` (the configured request timeout).
    pub(super) fn produce_request(&self, timeout: Duration) -> Request {
        ProduceRequest {
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            topic: self.topic.to_string(),
            partitions: vec![ProducePartition {
                partition: self.partition,
                batches: vec![self.bytes.clone()],
            }],
        }
        .into()
    }

    /// The same records under a new producer stamp, of session `id`: a new
    /// batch, never sent yet.
    pub(super) fn restamped(self, stamp: ProducerStamp, id: SessionId) -> ProducerBatch {
        ProducerBatch {
            bytes: crate::batch::with_producer(&self.bytes, stamp),
            stamp,
            session: Some(id),
            ..self
        }
    }
}
