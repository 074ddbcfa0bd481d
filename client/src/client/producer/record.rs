//! What a caller hands a [`Producer`](super::Producer) and gets back: the
//! [`ProducerRecord`] to send, the [`Delivery`] future of its outcome and
//! the [`RecordMetadata`] of where it was stored, and
//! [`partition_for_key`], the partition of a keyed record.
//!
//! ## Invariants
//!
//! - A key maps to one partition for a given partition count, stable
//!   across runs, builds and platforms (FNV-1a 64 of the key bytes).
//! - A [`Delivery`] completes exactly once: with the record's metadata,
//!   with its batch's error, or with [`ClientError::Closed`] if the
//!   producer's senders are gone without answering.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::batch::BatchBuilder;
use crate::client::error::ClientError;

/// A record to send.
///
/// ```
/// use pigeon_client::client::ProducerRecord;
///
/// let record = ProducerRecord::new("created")
///     .key("order-7")
///     .header("trace", "abc")
///     .partition(2);
/// assert_eq!(record.partition, Some(2));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProducerRecord {
    /// Optional key; keyed records of one key always go to one partition.
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
    /// Ordered headers; names may repeat.
    pub headers: Vec<(String, Bytes)>,
    /// Explicit partition, overriding the key.
    pub partition: Option<u32>,
}

impl ProducerRecord {
    /// A record with `value`, no key, no headers.
    ///
    /// ```
    /// # use pigeon_client::client::ProducerRecord;
    /// assert_eq!(ProducerRecord::new("v").value, "v");
    /// ```
    pub fn new(value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            value: value.into(),
            ..ProducerRecord::default()
        }
    }

    /// Sets the key.
    ///
    /// ```
    /// # use pigeon_client::client::ProducerRecord;
    /// assert!(ProducerRecord::new("v").key("k").key.is_some());
    /// ```
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Appends a header.
    ///
    /// ```
    /// # use pigeon_client::client::ProducerRecord;
    /// assert_eq!(ProducerRecord::new("v").header("h", "1").headers.len(), 1);
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sends the record to `partition`, whatever its key.
    ///
    /// ```
    /// # use pigeon_client::client::ProducerRecord;
    /// assert_eq!(ProducerRecord::new("v").partition(1).partition, Some(1));
    /// ```
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Encoded size of this record inside a batch (an upper bound).
    pub(super) fn encoded_size(&self) -> usize {
        let headers: Vec<(&str, &[u8])> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_ref()))
            .collect();
        BatchBuilder::record_size(self.key.as_deref(), &self.value, &headers)
    }
}

/// Where a record was stored.
///
/// ```
/// use pigeon_client::client::RecordMetadata;
/// let m = RecordMetadata { partition: 0, offset: 41, timestamp: 1_700_000_000_000 };
/// assert_eq!(m.offset + 1, 42);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordMetadata {
    /// The partition.
    pub partition: u32,
    /// The record's offset in the partition.
    pub offset: u64,
    /// The broker's append time, ms since the Unix epoch.
    pub timestamp: i64,
}

/// The partition of a keyed record: FNV-1a 64 of the key bytes modulo the
/// partition count. Stable across runs, builds and platforms.
///
/// ```
/// use pigeon_client::client::partition_for_key;
/// assert_eq!(partition_for_key(b"order-7", 8), partition_for_key(b"order-7", 8));
/// assert!(partition_for_key(b"anything", 3) < 3);
/// ```
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (fnv1a64(key) % u64::from(partitions.max(1))) as u32
}

/// FNV-1a, 64-bit.
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(PRIME)
    })
}

/// The outcome of one enqueued record: a future of its [`RecordMetadata`].
///
/// ```no_run
/// use pigeon_client::client::{Producer, ProducerRecord};
/// # async fn demo(producer: Producer) -> Result<(), pigeon_client::client::ClientError> {
/// let delivery = producer.enqueue("orders", ProducerRecord::new("a")).await?;
/// let metadata = delivery.await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Delivery {
    pub(super) answer: oneshot::Receiver<Result<RecordMetadata, ClientError>>,
}

impl Future for Delivery {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.answer)
            .poll(cx)
            .map(|answer| answer.unwrap_or(Err(ClientError::Closed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_known_answers() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(
            partition_for_key(b"foobar", 7),
            (0x8594_4171_f739_67e8u64 % 7) as u32
        );
    }
}
