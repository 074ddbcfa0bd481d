//! [`Reader`]: an async stream of the records of one partition.
//!
//! This module owns reading: resolving where to start ([`StartAt`]),
//! long-poll fetching, checking and decoding the fetched batches, and
//! deciding where to stop.
//!
//! ## Invariants
//!
//! - Records come out in offset order, each exactly once, starting at the
//!   resolved start offset: a fetched batch may begin before the requested
//!   offset, and its earlier records are skipped.
//! - Every fetched batch is checked with [`verify_stored`] (length, format
//!   version, CRC) before any of its records is decoded; a damaged batch is
//!   reported as [`ClientError::CorruptBatch`] and ends the stream.
//! - When following (`follow: true`) the stream never ends by itself: at
//!   the log end each fetch waits up to [`ReaderConfig::max_wait`] on the
//!   broker for new records. When not following, the stream ends at the
//!   high watermark read when the reader was opened: records appended later
//!   are not returned.
//! - Errors are yielded as items. After a retriable one (lost connection,
//!   timeout) the stream goes on, fetching again after a backoff; after any
//!   other (`OffsetOutOfRange`, whose message names the earliest offset,
//!   `UnknownTopic`, corruption) the stream ends.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, Stream, StreamExt};

use super::admin::list_offset;
use super::backoff::Backoff;
use super::connection::{Client, expect_response};
use super::error::ClientError;
use crate::batch::{BatchError, LOG_OVERHEAD, Record, read_prefix, records_of, verify_stored};
use crate::protocol::{ErrorCode, FetchPartition, FetchRequest, OffsetSpec};

/// Where a [`Reader`] starts.
///
/// ```
/// use pigeon_client::client::StartAt;
/// let from_the_top = StartAt::Earliest;
/// let since_noon = StartAt::Timestamp(1_700_000_000_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest record still stored.
    Earliest,
    /// The log end: only records appended after the reader opened.
    Latest,
    /// This offset.
    Offset(u64),
    /// The first record appended at or after this time (ms since the Unix
    /// epoch); the log end if there is none.
    Timestamp(i64),
}

/// How a [`Reader`] reads.
///
/// ```
/// use pigeon_client::client::{ReaderConfig, StartAt};
/// let config = ReaderConfig::new(StartAt::Offset(42)).follow(false);
/// assert!(!config.follow);
/// ```
#[derive(Debug, Clone)]
pub struct ReaderConfig {
    /// Where to start (`Earliest`).
    pub start: StartAt,
    /// Keep waiting for new records at the log end (`true`), or stop at the
    /// high watermark seen when opening (`false`).
    pub follow: bool,
    /// How long one fetch may wait at the log end for new records (500 ms).
    pub max_wait: Duration,
    /// Most record bytes per fetch (1 MiB; a larger first batch still
    /// comes whole).
    pub max_bytes: u32,
    /// Spacing of fetches after a retriable failure (100 ms doubling up
    /// to 5 s, ±20 %).
    pub retry_backoff: Backoff,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        ReaderConfig {
            start: StartAt::Earliest,
            follow: true,
            max_wait: Duration::from_millis(500),
            max_bytes: 1024 * 1024,
            retry_backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
        }
    }
}

impl ReaderConfig {
    /// Following reads from `start`, other settings at their defaults.
    ///
    /// ```
    /// # use pigeon_client::client::{ReaderConfig, StartAt};
    /// assert!(ReaderConfig::new(StartAt::Latest).follow);
    /// ```
    pub fn new(start: StartAt) -> Self {
        ReaderConfig {
            start,
            ..ReaderConfig::default()
        }
    }

    /// Sets whether to follow the log end.
    ///
    /// ```
    /// # use pigeon_client::client::{ReaderConfig, StartAt};
    /// assert!(!ReaderConfig::new(StartAt::Earliest).follow(false).follow);
    /// ```
    pub fn follow(mut self, follow: bool) -> Self {
        self.follow = follow;
        self
    }
}

/// The records of one partition, as a [`Stream`] of
/// `Result<Record, ClientError>`.
///
/// ```no_run
/// use futures_util::StreamExt;
/// use pigeon_client::client::{Client, Reader, ReaderConfig, StartAt};
///
/// # async fn demo() -> Result<(), pigeon_client::client::ClientError> {
/// let client = Client::connect("127.0.0.1:7420").await?;
/// let config = ReaderConfig::new(StartAt::Earliest).follow(false);
/// let mut reader = Reader::open(&client, "orders", 0, config).await?;
/// while let Some(record) = reader.next().await {
///     let record = record?;
///     println!("{}: {:?}", record.offset, record.value);
/// }
/// # Ok(()) }
/// ```
pub struct Reader {
    topic: String,
    partition: u32,
    position: u64,
    end: Option<u64>,
    buffered: VecDeque<Record>,
    phase: Phase,
}

enum Phase {
    Idle(Box<Cursor>),
    Fetching(BoxFuture<'static, (Box<Cursor>, Step)>),
    Finished,
}

/// What one fetch needs and advances.
struct Cursor {
    client: Client,
    topic: String,
    partition: u32,
    next_offset: u64,
    end: Option<u64>,
    config: ReaderConfig,
    failures: u32,
}

enum Step {
    Records(Vec<Record>),
    End,
    Failed(ClientError),
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("position", &self.position)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// Opens a reader of `topic`/`partition`: resolves the start offset
    /// (and, when not following, the end) with ListOffsets.
    ///
    /// ```no_run
    /// use pigeon_client::client::{Client, Reader, ReaderConfig, StartAt};
    /// # async fn demo(client: Client) -> Result<(), pigeon_client::client::ClientError> {
    /// let reader = Reader::open(&client, "orders", 0, ReaderConfig::new(StartAt::Latest)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn open(
        client: &Client,
        topic: &str,
        partition: u32,
        config: ReaderConfig,
    ) -> Result<Reader, ClientError> {
        let start = match config.start {
            StartAt::Offset(offset) => offset,
            StartAt::Earliest => {
                list_offset(client, topic, partition, OffsetSpec::Earliest)
                    .await?
                    .offset
            }
            StartAt::Latest => {
                list_offset(client, topic, partition, OffsetSpec::Latest)
                    .await?
                    .offset
            }
            StartAt::Timestamp(ts) => {
                list_offset(client, topic, partition, OffsetSpec::ByTimestamp(ts))
                    .await?
                    .offset
            }
        };
        let end = if config.follow {
            None
        } else {
            Some(
                list_offset(client, topic, partition, OffsetSpec::Latest)
                    .await?
                    .offset,
            )
        };
        Ok(Reader {
            topic: topic.to_string(),
            partition,
            position: start,
            end,
            buffered: VecDeque::new(),
            phase: Phase::Idle(Box::new(Cursor {
                client: client.clone(),
                topic: topic.to_string(),
                partition,
                next_offset: start,
                end,
                config,
                failures: 0,
            })),
        })
    }

    /// The offset of the next record this reader will return.
    ///
    /// ```no_run
    /// # async fn demo(reader: pigeon_client::client::Reader) {
    /// println!("at offset {}", reader.position());
    /// # }
    /// ```
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Where a non-following reader stops (exclusive); `None` when following.
    ///
    /// ```no_run
    /// # async fn demo(reader: pigeon_client::client::Reader) {
    /// if let Some(end) = reader.end_offset() { println!("stops before {end}"); }
    /// # }
    /// ```
    pub fn end_offset(&self) -> Option<u64> {
        self.end
    }

    /// The next record (the same as `StreamExt::next`).
    ///
    /// ```no_run
    /// # async fn demo(mut reader: pigeon_client::client::Reader) -> Result<(), pigeon_client::client::ClientError> {
    /// while let Some(record) = reader.next_record().await {
    ///     println!("{}", record?.offset);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn next_record(&mut self) -> Option<Result<Record, ClientError>> {
        self.next().await
    }
}

impl Stream for Reader {
    type Item = Result<Record, ClientError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(record) = this.buffered.pop_front() {
                this.position = record.offset + 1;
                return Poll::Ready(Some(Ok(record)));
            }
            match std::mem::replace(&mut this.phase, Phase::Finished) {
                Phase::Finished => return Poll::Ready(None),
                Phase::Idle(cursor) => {
                    this.phase = Phase::Fetching(fetch_step(cursor).boxed());
                }
                Phase::Fetching(mut fetch) => match fetch.poll_unpin(cx) {
                    Poll::Pending => {
                        this.phase = Phase::Fetching(fetch);
                        return Poll::Pending;
                    }
                    Poll::Ready((cursor, step)) => match step {
                        Step::Records(records) => {
                            this.buffered.extend(records);
                            this.phase = Phase::Idle(cursor);
                        }
                        Step::End => return Poll::Ready(None),
                        Step::Failed(err) => {
                            if err.is_retriable() {
                                this.phase = Phase::Idle(cursor);
                            }
                            return Poll::Ready(Some(Err(err)));
                        }
                    },
                },
            }
        }
    }
}

/// One fetch: waits out the backoff after a failure, fetches from the
/// cursor's position and decodes what came back.
async fn fetch_step(mut cursor: Box<Cursor>) -> (Box<Cursor>, Step) {
    if cursor.end.is_some_and(|end| cursor.next_offset >= end) {
        return (cursor, Step::End);
    }
    if cursor.failures > 0 {
        let delay = cursor.config.retry_backoff.delay(cursor.failures - 1);
        tokio::time::sleep(delay).await;
    }
    let step = match fetch_once(&mut cursor).await {
        Ok(records) => {
            cursor.failures = 0;
            if records.is_empty() && cursor.end.is_some_and(|end| cursor.next_offset >= end) {
                Step::End
            } else {
                Step::Records(records)
            }
        }
        Err(err) => {
            cursor.failures = cursor.failures.saturating_add(1);
            Step::Failed(err)
        }
    };
    (cursor, step)
}

async fn fetch_once(cursor: &mut Cursor) -> Result<Vec<Record>, ClientError> {
    let config = &cursor.config;
    let max_wait_ms = u32::try_from(config.max_wait.as_millis()).unwrap_or(u32::MAX);
    let request = FetchRequest {
        max_wait_ms,
        min_bytes: 1,
        max_bytes: config.max_bytes,
        partitions: vec![FetchPartition {
            topic: cursor.topic.clone(),
            partition: cursor.partition,
            offset: cursor.next_offset,
            max_bytes: config.max_bytes,
        }],
    };
    // The broker may legitimately hold the request for `max_wait`.
    let timeout = cursor.client.config().request_timeout + config.max_wait;
    let response = cursor
        .client
        .request_with_timeout(request.into(), timeout)
        .await?;
    let response = expect_response!(response, Fetch)?;
    let part = response
        .partitions
        .into_iter()
        .find(|p| p.topic == cursor.topic && p.partition == cursor.partition)
        .ok_or_else(|| {
            ClientError::UnexpectedResponse(format!(
                "Fetch answer without {}/{}",
                cursor.topic, cursor.partition
            ))
        })?;
    match part.error_code {
        ErrorCode::None => {}
        ErrorCode::OffsetOutOfRange => {
            return Err(ClientError::Broker {
                code: ErrorCode::OffsetOutOfRange,
                message: format!(
                    "offset {} of {}/{} is out of range: the earliest offset is {}, the log end is {}",
                    cursor.next_offset,
                    cursor.topic,
                    cursor.partition,
                    part.log_start_offset,
                    part.high_watermark
                ),
            });
        }
        code => {
            return Err(ClientError::broker_said(
                code,
                format!(
                    "fetch {}/{} at offset {}",
                    cursor.topic, cursor.partition, cursor.next_offset
                ),
                &part.error_message,
            ));
        }
    }
    decode_batches(cursor, part.records)
}

/// Checks and decodes whole batches, skipping records below the cursor and
/// at or past its end; advances the cursor.
fn decode_batches(cursor: &mut Cursor, records: Bytes) -> Result<Vec<Record>, ClientError> {
    let corrupt = |offset: u64, source: BatchError| ClientError::CorruptBatch {
        topic: cursor.topic.clone(),
        partition: cursor.partition,
        offset,
        source,
    };
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some((base_offset, batch_length)) = records.get(at..).and_then(read_prefix) {
        let total = LOG_OVERHEAD + batch_length as usize;
        let available = records.len() - at;
        if total > available {
            if at == 0 {
                return Err(corrupt(
                    base_offset,
                    BatchError::Truncated {
                        at: available,
                        needed: total,
                    },
                ));
            }
            // A cut-off batch after whole ones: fetch it again next time.
            break;
        }
        let batch = records.slice(at..at + total);
        at += total;
        verify_stored(&batch, usize::MAX).map_err(|e| corrupt(base_offset, e))?;
        for record in records_of(batch).map_err(|e| corrupt(base_offset, e))? {
            let record = record.map_err(|e| corrupt(base_offset, e))?;
            if record.offset < cursor.next_offset {
                continue;
            }
            if cursor.end.is_some_and(|end| record.offset >= end) {
                return Ok(out);
            }
            cursor.next_offset = record.offset + 1;
            out.push(record);
        }
    }
    Ok(out)
}
