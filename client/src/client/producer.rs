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
//!    topic-partition, which appends records to a [`BatchBuilder`] until
//!    [`ProducerConfig::linger`] has passed since the batch's first record
//!    was enqueued, or the next record would make the batch larger than
//!    [`ProducerConfig::max_batch_bytes`], or a flush asks for it.
//! 4. The batch is built once (its bytes and, later, its producer stamp
//!    fixed from then on) and sent in one Produce request. An idempotent
//!    producer does not wait for the answer before sending the partition's
//!    next *full* batches: up to [`ProducerConfig::max_in_flight_batches`]
//!    are in flight on the connection, in order (the broker appends a
//!    connection's produces to a partition in the order it read them), so
//!    the next batches travel while the first one's fsync runs. A batch
//!    that is not full waits, after its linger, until nothing of its
//!    partition is in flight, gathering the records that arrive meanwhile
//!    (at a moderate rate, one request per commit rather than one per
//!    record). Answers
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
//!   [`ClientError::CircuitOpen`]; batches already buffered keep retrying
//!   until their delivery timeout, and their requests serve as probes.
//! - Produce quota: when a Produce response carries `throttle_ms` (the
//!   broker's per-connection byte-rate quota was exceeded; Produce v1), no
//!   partition sender of this producer sends another request before that
//!   much time has passed (the broker would not read it before then
//!   anyway). [`Producer::throttle_stats`] reports how often and how long.
//! - [`Producer::flush`] returns once every record enqueued before it was
//!   delivered or failed; [`Producer::close`] refuses new records, then
//!   flushes. Dropping a producer without closing still delivers what was
//!   enqueued, in the background.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::admin::describe_topic;
use super::backoff::Backoff;
use super::connection::{Client, expect_response};
use super::error::ClientError;
use super::session::{Session, SessionId, default_producer_name};
use crate::batch::{BatchBuilder, HEADER_LEN, ProducerStamp};
use crate::protocol::{ErrorCode, ProducePartition, ProduceRequest, Response};

/// How a [`Producer`] batches, buffers and retries.
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

/// How much the broker's produce quota has held a [`Producer`] back.
///
/// ```
/// use pigeon_client::client::ThrottleStats;
/// assert_eq!(ThrottleStats::default().throttled_responses, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThrottleStats {
    /// Produce responses that asked the producer to wait (`throttle_ms` > 0).
    pub throttled_responses: u64,
    /// The waits those responses asked for, summed.
    pub throttle_time: Duration,
    /// How long sends were actually held back because of them, summed over
    /// the partition senders that had something to send.
    pub waited: Duration,
}

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
    fn encoded_size(&self) -> usize {
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
    answer: oneshot::Receiver<Result<RecordMetadata, ClientError>>,
}

impl Future for Delivery {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.answer)
            .poll(cx)
            .map(|answer| answer.unwrap_or(Err(ClientError::Closed)))
    }
}

/// Publishes records to topics; cheap to clone, safe to share.
///
/// ```no_run
/// use pigeon_client::client::{Client, Producer, ProducerConfig, ProducerRecord};
/// # async fn demo() -> Result<(), pigeon_client::client::ClientError> {
/// let client = Client::connect("127.0.0.1:7420").await?;
/// let producer = Producer::new(client, ProducerConfig::default());
/// let stored = producer.send("orders", ProducerRecord::new("created").key("order-7")).await?;
/// println!("partition {} offset {}", stored.partition, stored.offset);
/// producer.close().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Producer {
    shared: Arc<ProducerShared>,
}

#[derive(Debug)]
struct ProducerShared {
    ctx: Arc<SenderCtx>,
    buffer: Arc<Semaphore>,
    buffer_memory: usize,
    senders: Mutex<HashMap<TopicPartition, mpsc::UnboundedSender<Command>>>,
    round_robin: AtomicU32,
    closed: AtomicBool,
}

/// A topic and a partition of it.
type TopicPartition = (Arc<str>, u32);

/// What partition senders need (not the senders map: dropping the
/// producer closes their queues).
#[derive(Debug)]
struct SenderCtx {
    client: Client,
    config: ProducerConfig,
    partition_counts: Mutex<HashMap<String, u32>>,
    /// The idempotent session; `None` when idempotence is off.
    session: Option<Arc<Session>>,
    /// Until when the broker asked for no more produce requests, and the
    /// statistics of it.
    throttle: Mutex<(Option<Instant>, ThrottleStats)>,
}

#[derive(Debug)]
enum Command {
    Record(Enqueued),
    Flush(oneshot::Sender<()>),
}

/// A record waiting for its batch.
#[derive(Debug)]
struct Enqueued {
    record: ProducerRecord,
    size: usize,
    permit: OwnedSemaphorePermit,
    enqueued_at: Instant,
    reply: oneshot::Sender<Result<RecordMetadata, ClientError>>,
}

/// A built batch: its bytes (and producer stamp) never change again, so a
/// retry sends exactly the same batch.
#[derive(Debug)]
struct ProducerBatch {
    topic: Arc<str>,
    partition: u32,
    bytes: Bytes,
    /// Producer id, epoch and base sequence (`NONE` without idempotence).
    stamp: ProducerStamp,
    /// The session the stamp belongs to.
    session: Option<SessionId>,
    replies: Vec<oneshot::Sender<Result<RecordMetadata, ClientError>>>,
    /// The buffer bytes of every record; released when the batch completes.
    _permits: Option<OwnedSemaphorePermit>,
    /// When the first record was enqueued: the delivery timeout counts
    /// from here.
    created_at: Instant,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Producer {
    /// A producer sending through `client`.
    ///
    /// ```
    /// use pigeon_client::client::{Client, ClientConfig, Producer, ProducerConfig};
    /// let client = Client::lazy("127.0.0.1:7420", ClientConfig::default());
    /// let producer = Producer::new(client, ProducerConfig::default());
    /// assert_eq!(producer.buffered_bytes(), 0);
    /// ```
    pub fn new(client: Client, config: ProducerConfig) -> Producer {
        let buffer_memory = config
            .buffer_memory
            .max(config.max_batch_bytes)
            .min(Semaphore::MAX_PERMITS);
        Producer {
            shared: Arc::new(ProducerShared {
                ctx: Arc::new(SenderCtx::new(client, config)),
                buffer: Arc::new(Semaphore::new(buffer_memory)),
                buffer_memory,
                senders: Mutex::new(HashMap::new()),
                round_robin: AtomicU32::new(0),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// The configuration.
    ///
    /// ```
    /// # use pigeon_client::client::{Client, ClientConfig, Producer, ProducerConfig};
    /// # let producer = Producer::new(Client::lazy("h:1", ClientConfig::default()), ProducerConfig::default());
    /// assert_eq!(producer.config().linger.as_millis(), 5);
    /// ```
    pub fn config(&self) -> &ProducerConfig {
        &self.shared.ctx.config
    }

    /// Bytes of records currently buffered or in flight.
    ///
    /// ```
    /// # use pigeon_client::client::{Client, ClientConfig, Producer, ProducerConfig};
    /// # let producer = Producer::new(Client::lazy("h:1", ClientConfig::default()), ProducerConfig::default());
    /// assert_eq!(producer.buffered_bytes(), 0);
    /// ```
    pub fn buffered_bytes(&self) -> usize {
        self.shared.buffer_memory - self.shared.buffer.available_permits()
    }

    /// How often and how long the broker's produce quota held this
    /// producer back.
    ///
    /// ```
    /// # use pigeon_client::client::{Client, ClientConfig, Producer, ProducerConfig};
    /// # let producer = Producer::new(Client::lazy("h:1", ClientConfig::default()), ProducerConfig::default());
    /// assert_eq!(producer.throttle_stats().throttled_responses, 0);
    /// ```
    pub fn throttle_stats(&self) -> ThrottleStats {
        lock(&self.shared.ctx.throttle).1
    }

    /// Sends one record to `topic` and waits until the broker stored it
    /// (or the delivery failed). Concurrent sends are batched together.
    ///
    /// ```no_run
    /// use pigeon_client::client::{Producer, ProducerRecord};
    /// # async fn demo(producer: Producer) -> Result<(), pigeon_client::client::ClientError> {
    /// let stored = producer.send("orders", ProducerRecord::new("created").key("order-7")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send(
        &self,
        topic: &str,
        record: ProducerRecord,
    ) -> Result<RecordMetadata, ClientError> {
        self.enqueue(topic, record).await?.await
    }

    /// Puts one record in the buffer (waiting while the buffer is full)
    /// and returns a future of its delivery, so a caller can enqueue many
    /// records before waiting for any.
    ///
    /// ```no_run
    /// use pigeon_client::client::{Producer, ProducerRecord};
    /// # async fn demo(producer: Producer) -> Result<(), pigeon_client::client::ClientError> {
    /// let mut deliveries = Vec::new();
    /// for i in 0..100 {
    ///     deliveries.push(producer.enqueue("orders", ProducerRecord::new(format!("{i}"))).await?);
    /// }
    /// for delivery in deliveries {
    ///     delivery.await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn enqueue(
        &self,
        topic: &str,
        record: ProducerRecord,
    ) -> Result<Delivery, ClientError> {
        let shared = &self.shared;
        if shared.closed.load(Ordering::SeqCst) {
            return Err(ClientError::Closed);
        }
        if let Some(fenced) = shared.ctx.session.as_ref().and_then(|s| s.fenced()) {
            return Err(fenced);
        }
        shared.ctx.client.check_circuit()?;
        let size = record.encoded_size();
        let max = self.max_batch_bytes();
        if HEADER_LEN + size > max {
            return Err(ClientError::RecordTooLarge {
                size: HEADER_LEN + size,
                max,
            });
        }
        let partition = match record.partition {
            Some(partition) => partition,
            None => {
                let count = shared.ctx.partition_count(topic).await?;
                match &record.key {
                    Some(key) => partition_for_key(key, count),
                    None => shared.round_robin.fetch_add(1, Ordering::Relaxed) % count,
                }
            }
        };
        let permits = u32::try_from(size.min(shared.buffer_memory)).unwrap_or(u32::MAX);
        let permit = shared
            .buffer
            .clone()
            .acquire_many_owned(permits)
            .await
            .map_err(|_| ClientError::Closed)?;
        let (reply, answer) = oneshot::channel();
        let enqueued = Enqueued {
            record,
            size,
            permit,
            enqueued_at: Instant::now(),
            reply,
        };
        self.sender(topic, partition)
            .send(Command::Record(enqueued))
            .map_err(|_| ClientError::Closed)?;
        Ok(Delivery { answer })
    }

    /// The largest batch: the configured one, capped by the broker's limit.
    fn max_batch_bytes(&self) -> usize {
        let configured = self.shared.ctx.config.max_batch_bytes;
        match self.shared.ctx.client.server_limits() {
            Some(limits) => configured.min(limits.max_batch_size as usize),
            None => configured,
        }
    }

    /// The queue of the sender of `topic`/`partition`, started on first use.
    fn sender(&self, topic: &str, partition: u32) -> mpsc::UnboundedSender<Command> {
        let mut senders = lock(&self.shared.senders);
        let key = (Arc::<str>::from(topic), partition);
        if let Some(sender) = senders.get(&key)
            && !sender.is_closed()
        {
            return sender.clone();
        }
        let (sender, commands) = mpsc::unbounded_channel();
        let max_batch_bytes = self.max_batch_bytes();
        tokio::spawn(run_partition(
            self.shared.ctx.clone(),
            key.0.clone(),
            partition,
            max_batch_bytes,
            commands,
        ));
        senders.insert(key, sender.clone());
        sender
    }

    /// Sends every buffered record now (without waiting for linger) and
    /// waits until each record enqueued before this call is delivered or
    /// has failed.
    ///
    /// ```no_run
    /// # async fn demo(producer: pigeon_client::client::Producer) {
    /// producer.flush().await;
    /// # }
    /// ```
    pub async fn flush(&self) {
        let senders: Vec<_> = lock(&self.shared.senders).values().cloned().collect();
        let mut acks = Vec::with_capacity(senders.len());
        for sender in senders {
            let (ack, done) = oneshot::channel();
            if sender.send(Command::Flush(ack)).is_ok() {
                acks.push(done);
            }
        }
        for done in acks {
            // An error means the sender exited, after delivering its records.
            let _ = done.await;
        }
    }

    /// Refuses new records (sends waiting for buffer space fail with
    /// [`ClientError::Closed`]), delivers what is buffered and waits for it.
    /// The client stays open.
    ///
    /// ```no_run
    /// # async fn demo(producer: pigeon_client::client::Producer) {
    /// producer.close().await;
    /// # }
    /// ```
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.buffer.close();
        self.flush().await;
        lock(&self.shared.senders).clear();
    }
}

impl SenderCtx {
    /// The senders' context of a producer: with an idempotent session
    /// named by the configuration (or the host and process) when
    /// idempotence is on.
    fn new(client: Client, config: ProducerConfig) -> SenderCtx {
        SenderCtx {
            session: config.idempotent.then(|| {
                let name = config
                    .producer_name
                    .clone()
                    .unwrap_or_else(default_producer_name);
                Arc::new(Session::new(name))
            }),
            client,
            config,
            partition_counts: Mutex::new(HashMap::new()),
            throttle: Mutex::new((None, ThrottleStats::default())),
        }
    }

    /// The producer's current session id (registering if needed, until
    /// `deadline`); the error names the producer.
    async fn registered(
        &self,
        session: &Session,
        deadline: Instant,
    ) -> Result<SessionId, ClientError> {
        session
            .current(&self.client, &self.config.retry_backoff, deadline)
            .await
            .map_err(|err| wrap(err, &format!("registering producer {}", session.name())))
    }
    /// The partition count of `topic`, from the cache or DescribeTopic.
    async fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        if let Some(&count) = lock(&self.partition_counts).get(topic) {
            return Ok(count);
        }
        let description = describe_topic(&self.client, topic).await?;
        let count = u32::try_from(description.partitions.len()).unwrap_or(u32::MAX);
        if count == 0 {
            return Err(ClientError::broker(
                ErrorCode::UnknownPartition,
                format!("topic {topic} has no partitions"),
            ));
        }
        lock(&self.partition_counts).insert(topic.to_string(), count);
        Ok(count)
    }

    fn forget_partition_count(&self, topic: &str) {
        lock(&self.partition_counts).remove(topic);
    }

    /// Notes a Produce response's `throttle_ms`.
    fn throttled(&self, throttle_ms: u32) {
        if throttle_ms == 0 {
            return;
        }
        let wait = Duration::from_millis(u64::from(throttle_ms));
        let until = Instant::now() + wait;
        let mut throttle = lock(&self.throttle);
        throttle.0 = Some(throttle.0.map_or(until, |u| u.max(until)));
        throttle.1.throttled_responses += 1;
        throttle.1.throttle_time += wait;
        tracing::debug!(throttle_ms, "the broker throttles this producer");
    }

    /// Waits until the broker's throttle (if any) is over, or `deadline`.
    async fn wait_out_throttle(&self, deadline: Instant) {
        let until = lock(&self.throttle).0;
        let Some(until) = until else { return };
        let start = Instant::now();
        if until <= start {
            return;
        }
        tokio::time::sleep_until(until.min(deadline)).await;
        lock(&self.throttle).1.waited += start.elapsed();
    }
}

/// A batch being filled.
struct OpenBatch {
    builder: BatchBuilder,
    replies: Vec<oneshot::Sender<Result<RecordMetadata, ClientError>>>,
    permits: Option<OwnedSemaphorePermit>,
    created_at: Instant,
}

impl OpenBatch {
    /// A batch starting with `first`, its buffer sized for `expected`
    /// bytes (so a batch as large as the last one never reallocates).
    fn new(first: Enqueued, expected: usize) -> Self {
        let mut batch = OpenBatch {
            builder: BatchBuilder::with_capacity(first.size.max(expected).max(4096)),
            replies: Vec::new(),
            permits: None,
            created_at: first.enqueued_at,
        };
        batch.push(first);
        batch
    }

    fn fits(&self, next: &Enqueued, max: usize) -> bool {
        self.builder.encoded_len() + next.size <= max
    }

    fn push(&mut self, enqueued: Enqueued) {
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

    fn seal(
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

/// A batch sent and waiting for its answer.
struct Sent {
    batch: ProducerBatch,
    answer: Pin<Box<dyn Future<Output = Result<Response, ClientError>> + Send>>,
    /// Whether the request was queued on a connection (else its error
    /// came before: the broker never saw it).
    queued: bool,
}

/// What woke a partition sender.
enum Event {
    Command(Option<Command>),
    Answer(Result<Response, ClientError>),
    Linger,
}

/// The answer of the oldest batch in flight (never ready when none is).
async fn front_answer(in_flight: &mut VecDeque<Sent>) -> Result<Response, ClientError> {
    match in_flight.front_mut() {
        Some(sent) => sent.answer.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The sender of one topic-partition: fills batches from its queue and
/// sends them in order, with up to `max_in_flight_batches` of them in
/// flight when idempotent (one otherwise), answers handled oldest first.
async fn run_partition(
    ctx: Arc<SenderCtx>,
    topic: Arc<str>,
    partition: u32,
    max_batch_bytes: usize,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let linger = ctx.config.linger;
    let window = if ctx.session.is_some() {
        ctx.config
            .max_in_flight_batches
            .clamp(1, MAX_IN_FLIGHT_BATCHES)
    } else {
        1
    };
    let mut carry: Option<Enqueued> = None;
    // (session generation, base sequence of the next batch sealed).
    let mut sequence: Option<(u64, i32)> = None;
    let mut in_flight: VecDeque<Sent> = VecDeque::new();
    // Size of the last batch: the next one's buffer starts that large (a
    // buffer grown by doubling copies its bytes about once more).
    let mut last_batch_bytes = 0;
    loop {
        if in_flight.len() >= window {
            let answer = front_answer(&mut in_flight).await;
            on_front_answer(&ctx, &mut sequence, &mut in_flight, answer).await;
            continue;
        }
        let first = match carry.take() {
            Some(first) => first,
            None => {
                let event = tokio::select! {
                    biased;
                    answer = front_answer(&mut in_flight) => Event::Answer(answer),
                    command = commands.recv() => Event::Command(command),
                };
                match event {
                    Event::Answer(answer) => {
                        on_front_answer(&ctx, &mut sequence, &mut in_flight, answer).await;
                        continue;
                    }
                    Event::Linger | Event::Command(None) => {
                        drain(&ctx, &mut sequence, &mut in_flight).await;
                        return;
                    }
                    Event::Command(Some(Command::Flush(ack))) => {
                        drain(&ctx, &mut sequence, &mut in_flight).await;
                        let _ = ack.send(());
                        continue;
                    }
                    Event::Command(Some(Command::Record(first))) => first,
                }
            }
        };
        let mut batch = OpenBatch::new(first, last_batch_bytes);
        let deadline = batch.created_at + linger;
        let mut lingered = false;
        let mut flush_acks = Vec::new();
        // A batch goes when it is full, or once its linger is over and no
        // batch of the partition is in flight: only full batches are
        // pipelined. At a moderate rate the records that arrive while one
        // batch is committed share the next batch (one request, one
        // commit) instead of each taking a request of its own.
        while batch.builder.encoded_len() < max_batch_bytes {
            let event = tokio::select! {
                biased;
                command = commands.recv() => Event::Command(command),
                _ = tokio::time::sleep_until(deadline), if !lingered => Event::Linger,
                answer = front_answer(&mut in_flight) => Event::Answer(answer),
            };
            match event {
                Event::Command(None) => break,
                Event::Linger => {
                    lingered = true;
                    if in_flight.is_empty() {
                        break;
                    }
                }
                Event::Answer(answer) => {
                    on_front_answer(&ctx, &mut sequence, &mut in_flight, answer).await;
                    if lingered && in_flight.is_empty() {
                        break;
                    }
                }
                Event::Command(Some(Command::Flush(ack))) => {
                    flush_acks.push(ack);
                    break;
                }
                Event::Command(Some(Command::Record(next))) => {
                    if batch.fits(&next, max_batch_bytes) {
                        batch.push(next);
                    } else {
                        carry = Some(next);
                        break;
                    }
                }
            }
        }
        last_batch_bytes = batch.builder.encoded_len().min(max_batch_bytes);
        send_batch(
            &ctx,
            &mut sequence,
            &mut in_flight,
            batch,
            topic.clone(),
            partition,
        )
        .await;
        if !flush_acks.is_empty() {
            drain(&ctx, &mut sequence, &mut in_flight).await;
            for ack in flush_acks {
                let _ = ack.send(());
            }
        }
    }
}

/// Waits for every batch in flight to be delivered or to fail.
async fn drain(ctx: &SenderCtx, sequence: &mut Option<(u64, i32)>, in_flight: &mut VecDeque<Sent>) {
    while !in_flight.is_empty() {
        let answer = front_answer(in_flight).await;
        on_front_answer(ctx, sequence, in_flight, answer).await;
    }
}

/// Stamps a batch for the idempotent session (if any), advancing the
/// partition's sequence past it, and sends it without waiting for the
/// answer.
async fn send_batch(
    ctx: &SenderCtx,
    sequence: &mut Option<(u64, i32)>,
    in_flight: &mut VecDeque<Sent>,
    open: OpenBatch,
    topic: Arc<str>,
    partition: u32,
) {
    let deadline = open.created_at + ctx.config.delivery_timeout;
    let batch = match ctx.session.clone() {
        None => open.seal(topic, partition, ProducerStamp::NONE, None),
        Some(session) => {
            let id = match ctx.registered(&session, deadline).await {
                Ok(id) => id,
                Err(err) => {
                    return fail(open.seal(topic, partition, ProducerStamp::NONE, None), err);
                }
            };
            let count = open.replies.len() as u32;
            let stamp = stamp_for(sequence, id);
            *sequence = Some((id.generation, next_sequence(stamp.base_sequence, count)));
            open.seal(topic, partition, stamp, Some(id))
        }
    };
    ctx.wait_out_throttle(deadline).await;
    let remaining = deadline.saturating_duration_since(Instant::now());
    let sent = if remaining.is_zero() {
        // Its records waited past their delivery timeout (an outage):
        // never sent; the retry path fails it as not stored.
        Err(ClientError::Timeout {
            after: ctx.config.delivery_timeout,
        })
    } else {
        ctx.client
            .send_request(
                produce_request(ctx, &batch),
                ctx.config.request_timeout.min(remaining),
            )
            .await
    };
    let (answer, queued): (Pin<Box<dyn Future<Output = _> + Send>>, bool) = match sent {
        Ok(pending) => (Box::pin(pending.answer()), true),
        Err(err) => (Box::pin(std::future::ready(Err(err))), false),
    };
    in_flight.push_back(Sent {
        batch,
        answer,
        queued,
    });
}

/// The Produce request carrying `batch`.
fn produce_request(ctx: &SenderCtx, batch: &ProducerBatch) -> crate::protocol::Request {
    ProduceRequest {
        timeout_ms: u32::try_from(ctx.config.request_timeout.as_millis()).unwrap_or(u32::MAX),
        topic: batch.topic.to_string(),
        partitions: vec![ProducePartition {
            partition: batch.partition,
            batches: vec![batch.bytes.clone()],
        }],
    }
    .into()
}

/// Handles the answer of the oldest batch in flight: completes it, or, if
/// it failed, recovers the whole window in order.
async fn on_front_answer(
    ctx: &SenderCtx,
    sequence: &mut Option<(u64, i32)>,
    in_flight: &mut VecDeque<Sent>,
    answer: Result<Response, ClientError>,
) {
    let Some(sent) = in_flight.pop_front() else {
        return;
    };
    if let Err(failed) = interpret(ctx, sent.batch, answer) {
        recover(ctx, sequence, (failed, sent.queued), in_flight).await;
    }
}

/// After the oldest batch in flight failed: collects the answers of the
/// batches sent after it, then goes through them all in order, one at a
/// time: a batch already stored is done; a failed one is retried (see
/// [`deliver`]), restamped first if an earlier batch was not stored. A
/// batch that may have been appended under a session that had to be
/// abandoned fails with an unknown outcome rather than risk a duplicate.
async fn recover(
    ctx: &SenderCtx,
    sequence: &mut Option<(u64, i32)>,
    failed: (Failed, bool),
    in_flight: &mut VecDeque<Sent>,
) {
    let mut later = Vec::with_capacity(in_flight.len());
    while let Some(sent) = in_flight.pop_front() {
        let answer = sent.answer.await;
        later.push((interpret(ctx, sent.batch, answer), sent.queued));
    }
    // Sequences restart from the failed batch's: later batches are
    // renumbered from what is really stored.
    let (first, first_queued) = failed;
    if let Some(id) = first.0.session {
        *sequence = Some((id.generation, first.0.stamp.base_sequence));
    }
    for (outcome, queued) in std::iter::once((Err(first), first_queued)).chain(later) {
        match outcome {
            Ok(stored) => {
                if let Some(id) = stored.session {
                    *sequence = Some((
                        id.generation,
                        next_sequence(stored.base_sequence, stored.count),
                    ));
                }
            }
            Err(failed) => {
                let (batch, err) = *failed;
                // A batch never queued, or refused only because an earlier
                // one was missing, goes again fresh, in its turn; otherwise
                // its error counts as the first attempt.
                let prior =
                    (queued && err.code() != Some(ErrorCode::OutOfOrderSequence)).then_some(err);
                resend(ctx, sequence, batch, prior).await;
            }
        }
    }
}

/// Delivers one batch on its own (retrying as [`deliver`] does), keeping
/// the partition's sequence numbers in step with what the broker did.
/// `prior` is the error of an attempt already made.
async fn resend(
    ctx: &SenderCtx,
    sequence: &mut Option<(u64, i32)>,
    batch: ProducerBatch,
    prior: Option<ClientError>,
) {
    let Some(session) = ctx.session.clone() else {
        deliver(ctx, batch, prior).await;
        return;
    };
    let deadline = batch.created_at + ctx.config.delivery_timeout;
    let id = match ctx.registered(&session, deadline).await {
        Ok(id) => id,
        Err(err) => return fail(batch, err),
    };
    let stamp = stamp_for(sequence, id);
    let mut batch = batch;
    let mut prior = prior;
    if batch.session != Some(id) || batch.stamp != stamp {
        let same_session = batch.session.is_some_and(|s| s.generation == id.generation);
        // In the same session a batch stamped past the sequence was sent
        // after one that was not stored, so the broker refused it (a gap).
        // Under an abandoned session it may be stored if its earlier
        // batch was: only an error proving it was not may send it again.
        if !same_session && prior.as_ref().is_some_and(|e| !not_appended(e)) {
            let cause = prior.unwrap_or(ClientError::Closed);
            let err = ClientError::OutcomeUnknown(format!(
                "it was in flight when an earlier batch of partition {} failed with an unknown outcome (its own error: {cause})",
                batch.partition
            ));
            return fail(batch, err);
        }
        batch = ProducerBatch {
            bytes: crate::batch::with_producer(&batch.bytes, stamp),
            stamp,
            session: Some(id),
            ..batch
        };
        // Renumbered, it was never sent: what was said to the old stamp
        // (fenced, a gap) does not apply to it.
        prior = None;
    }
    loop {
        let count = batch.replies.len() as u32;
        let id = batch.session.unwrap_or(id);
        match deliver(ctx, batch, prior.take()).await {
            Delivered::Stored => {
                let first = sequence.map_or(0, |s| s.1);
                *sequence = Some((id.generation, next_sequence(first, count)));
                return;
            }
            Delivered::NotStored => return,
            Delivered::Unknown => {
                // The broker may hold it: start a new session so that no
                // later batch can be mistaken for it.
                session.reset(id.generation).await;
                *sequence = None;
                return;
            }
            Delivered::Fenced(failed, err) => {
                let err = session.on_fenced(id, err).await;
                return fail(failed, err);
            }
            Delivered::UnknownProducer(retry) => {
                // The broker forgot this producer (state expired): the batch
                // was not appended, so it can go again under a new session.
                session.reset(id.generation).await;
                let deadline = retry.created_at + ctx.config.delivery_timeout;
                let fresh = match session
                    .current(&ctx.client, &ctx.config.retry_backoff, deadline)
                    .await
                {
                    Ok(fresh) => fresh,
                    Err(err) => return fail(retry, err),
                };
                *sequence = None;
                let stamp = stamp_for(sequence, fresh);
                batch = ProducerBatch {
                    bytes: crate::batch::with_producer(&retry.bytes, stamp),
                    stamp,
                    session: Some(fresh),
                    ..retry
                };
            }
        }
    }
}

/// The stamp of the next batch of a partition in session `id`.
fn stamp_for(sequence: &mut Option<(u64, i32)>, id: SessionId) -> ProducerStamp {
    let next = match *sequence {
        Some((generation, next)) if generation == id.generation => next,
        _ => 0,
    };
    *sequence = Some((id.generation, next));
    ProducerStamp {
        producer_id: id.producer_id,
        producer_epoch: id.epoch,
        base_sequence: next,
    }
}

/// The sequence after a batch of `count` records starting at `first`.
fn next_sequence(first: i32, count: u32) -> i32 {
    ((i64::from(first) + i64::from(count)) % (i64::from(i32::MAX) + 1)) as i32
}

fn wrap(err: ClientError, context: &str) -> ClientError {
    match err {
        ClientError::Broker { code, message } => ClientError::Broker {
            code,
            message: format!("{context}: {message}"),
        },
        other => other,
    }
}

/// What became of a batch.
enum Delivered {
    /// Appended (or found already appended); every future completed.
    Stored,
    /// Refused for a reason that proves it was not appended; futures failed.
    NotStored,
    /// Failed after attempts whose outcome is unknown; futures failed.
    Unknown,
    /// Refused as fenced; futures not completed yet.
    Fenced(ProducerBatch, ClientError),
    /// Refused because the broker has no state for the producer; futures
    /// not completed yet.
    UnknownProducer(ProducerBatch),
}

/// Whether an error proves the batch was not appended.
fn not_appended(err: &ClientError) -> bool {
    match err {
        ClientError::CircuitOpen { .. } | ClientError::RecordTooLarge { .. } => true,
        ClientError::Broker { code, .. } => matches!(
            code,
            ErrorCode::CorruptMessage
                | ErrorCode::BatchTooLarge
                | ErrorCode::InvalidTimestamp
                | ErrorCode::UnknownTopic
                | ErrorCode::UnknownPartition
                | ErrorCode::ProducerFenced
                | ErrorCode::OutOfOrderSequence
                | ErrorCode::UnknownProducer
                | ErrorCode::InvalidRequest
                | ErrorCode::DiskFull
                | ErrorCode::UnsupportedVersion
                | ErrorCode::UnknownApi
                | ErrorCode::TooManyRequestsInFlight
                | ErrorCode::TooManyConnections
                | ErrorCode::ShuttingDown
        ),
        _ => false,
    }
}

/// A batch the broker stored: what its sequence numbers were.
struct Stored {
    session: Option<SessionId>,
    base_sequence: i32,
    count: u32,
}

/// A batch handed back with the error that failed it.
type Failed = Box<(ProducerBatch, ClientError)>;

/// Reads the answer to a batch's Produce request: on success completes
/// every record's future; otherwise hands the batch back with the error.
fn interpret(
    ctx: &SenderCtx,
    batch: ProducerBatch,
    answer: Result<Response, ClientError>,
) -> Result<Stored, Failed> {
    let answer = answer.and_then(|response| expect_response!(response, Produce));
    if let Ok(response) = &answer {
        ctx.throttled(response.throttle_ms);
    }
    let err = match answer {
        Ok(response) => match response
            .partitions
            .iter()
            .find(|p| p.partition == batch.partition)
        {
            Some(stored) if stored.error_code == ErrorCode::None => {
                let expected = batch.replies.len() as u64;
                if stored.last_offset.checked_sub(stored.base_offset) != Some(expected - 1) {
                    tracing::warn!(
                        topic = %batch.topic, partition = batch.partition,
                        base = stored.base_offset, last = stored.last_offset, expected,
                        "broker acknowledged a different number of records than the batch holds"
                    );
                }
                for (index, reply) in batch.replies.into_iter().enumerate() {
                    let _ = reply.send(Ok(RecordMetadata {
                        partition: batch.partition,
                        offset: stored.base_offset + index as u64,
                        timestamp: stored.append_time_ms,
                    }));
                }
                return Ok(Stored {
                    session: batch.session,
                    base_sequence: batch.stamp.base_sequence,
                    count: expected as u32,
                });
            }
            Some(stored) => ClientError::broker_said(
                stored.error_code,
                format!("produce to {}/{}", batch.topic, batch.partition),
                &stored.error_message,
            ),
            None => ClientError::UnexpectedResponse(format!(
                "Produce answer without {}/{}",
                batch.topic, batch.partition
            )),
        },
        Err(err) => err,
    };
    if matches!(
        err.code(),
        Some(ErrorCode::UnknownTopic | ErrorCode::UnknownPartition)
    ) {
        ctx.forget_partition_count(&batch.topic);
    }
    Err(Box::new((batch, err)))
}

/// Sends one batch until it is stored, fails for good, or its delivery
/// timeout passes; completes every record's future (except when the
/// caller must decide: fenced, unknown producer). `prior` is the error of
/// an attempt already made, handled as this loop's first answer.
async fn deliver(ctx: &SenderCtx, batch: ProducerBatch, prior: Option<ClientError>) -> Delivered {
    let mut batch = batch;
    let mut prior = prior;
    let mut maybe_appended = false;
    let config = &ctx.config;
    let deadline = batch.created_at + config.delivery_timeout;
    let mut attempt = 0u32;
    let mut last_error = ClientError::Timeout {
        after: config.delivery_timeout,
    };
    loop {
        let err = match prior.take() {
            Some(err) => err,
            None => {
                ctx.wait_out_throttle(deadline).await;
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    fail(
                        batch,
                        ClientError::DeliveryTimeout {
                            after: config.delivery_timeout,
                            last_error: Box::new(last_error),
                        },
                    );
                    return if maybe_appended {
                        Delivered::Unknown
                    } else {
                        Delivered::NotStored
                    };
                }
                let answer = ctx
                    .client
                    .request_with_timeout(
                        produce_request(ctx, &batch),
                        config.request_timeout.min(remaining),
                    )
                    .await;
                match interpret(ctx, batch, answer) {
                    Ok(_) => return Delivered::Stored,
                    Err(failed) => {
                        let (back, err) = *failed;
                        batch = back;
                        err
                    }
                }
            }
        };
        let idempotent = batch.session.is_some();
        match err.code() {
            Some(ErrorCode::ProducerFenced) if idempotent => return Delivered::Fenced(batch, err),
            Some(ErrorCode::UnknownProducer) if idempotent && !maybe_appended => {
                return Delivered::UnknownProducer(batch);
            }
            _ => {}
        }
        maybe_appended |= !not_appended(&err);
        if !err.is_retriable() {
            fail(batch, err);
            return if maybe_appended {
                Delivered::Unknown
            } else {
                Delivered::NotStored
            };
        }
        let delay = config.retry_backoff.delay(attempt);
        attempt = attempt.saturating_add(1);
        if Instant::now() + delay >= deadline {
            fail(
                batch,
                ClientError::DeliveryTimeout {
                    after: config.delivery_timeout,
                    last_error: Box::new(err),
                },
            );
            return if maybe_appended {
                Delivered::Unknown
            } else {
                Delivered::NotStored
            };
        }
        tracing::debug!(
            topic = %batch.topic, partition = batch.partition, attempt, ?delay, error = %err,
            "retrying produce"
        );
        last_error = err;
        tokio::time::sleep(delay).await;
    }
}

fn fail(batch: ProducerBatch, err: ClientError) {
    tracing::warn!(
        topic = %batch.topic, partition = batch.partition, sequence = batch.stamp.base_sequence,
        error = %err, "batch failed"
    );
    for reply in batch.replies {
        let _ = reply.send(Err(err.clone()));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tests::fake_broker::FakeBroker;
    use super::super::tests::{fast_client_config, fast_producer_config};
    use super::*;

    /// A fake broker with topic `t` (one partition) and the senders'
    /// context of an idempotent producer connected to it, with its session.
    async fn idempotent_sender(config: ProducerConfig) -> (FakeBroker, SenderCtx, Arc<Session>) {
        let broker = FakeBroker::start().await;
        broker.create_topic("t", 1);
        let client = Client::connect_with(broker.addr(), fast_client_config())
            .await
            .unwrap();
        let ctx = SenderCtx::new(
            client,
            ProducerConfig {
                idempotent: true,
                ..config
            },
        );
        let session = ctx.session.clone().unwrap();
        (broker, ctx, session)
    }

    /// The bug the crash loop found: a batch stamped under a session that
    /// was then reset (another partition's batch had an unknown outcome)
    /// is answered `ProducerFenced`; renumbered under the new session, it
    /// must be sent again, not taken as proof that the *new* session is
    /// fenced (which fenced the producer for good).
    #[tokio::test]
    async fn a_batch_renumbered_under_a_new_session_forgets_the_old_stamps_fenced_answer() {
        let (_broker, ctx, session) = idempotent_sender(fast_producer_config()).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        let old = ctx.registered(&session, deadline).await.unwrap();
        session.reset(old.generation).await;
        let new = ctx.registered(&session, deadline).await.unwrap();
        assert_ne!(old.epoch, new.epoch);
        let stamp = ProducerStamp {
            producer_id: old.producer_id,
            producer_epoch: old.epoch,
            base_sequence: 0,
        };
        let mut builder = BatchBuilder::new();
        builder.push(None, b"late", &[]);
        let (reply, stored) = oneshot::channel();
        let batch = ProducerBatch {
            topic: "t".into(),
            partition: 0,
            bytes: builder.build(stamp, now_ms()),
            stamp,
            session: Some(old),
            replies: vec![reply],
            _permits: None,
            created_at: Instant::now(),
        };
        let fenced = ClientError::Broker {
            code: ErrorCode::ProducerFenced,
            message: "a newer epoch of this producer exists".into(),
        };
        let mut sequence = Some((old.generation, 0));
        resend(&ctx, &mut sequence, batch, Some(fenced)).await;
        let stored = stored.await.unwrap().expect("stored under the new session");
        assert_eq!(stored.offset, 0);
        assert!(session.fenced().is_none(), "the producer fenced itself");
        assert_eq!(sequence, Some((new.generation, 1)));
    }

    /// A batch whose records waited past their delivery timeout (during
    /// an outage) is never sent, so its outcome is known: not stored. It
    /// fails without resetting the session (a reset after every outage
    /// would also renumber every partition for nothing).
    #[tokio::test]
    async fn a_batch_too_late_to_send_fails_as_not_stored_without_a_session_reset() {
        let (broker, ctx, session) = idempotent_sender(ProducerConfig {
            delivery_timeout: Duration::from_millis(200),
            ..fast_producer_config()
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        let before = ctx.registered(&session, deadline).await.unwrap();
        let buffer = Arc::new(Semaphore::new(1024));
        let (reply, failed) = oneshot::channel();
        let enqueued = Enqueued {
            record: ProducerRecord::new("stale").partition(0),
            size: 16,
            permit: buffer.clone().try_acquire_many_owned(16).unwrap(),
            enqueued_at: Instant::now() - Duration::from_secs(1),
            reply,
        };
        let mut sequence = None;
        let mut in_flight = VecDeque::new();
        let open = OpenBatch::new(enqueued, 0);
        send_batch(&ctx, &mut sequence, &mut in_flight, open, "t".into(), 0).await;
        drain(&ctx, &mut sequence, &mut in_flight).await;
        let err = failed.await.unwrap().expect_err("too late");
        assert!(matches!(err, ClientError::DeliveryTimeout { .. }), "{err}");
        assert_eq!(broker.produce_requests(), 0, "sent anyway");
        let after = ctx.registered(&session, deadline).await.unwrap();
        assert_eq!(after, before, "the session was reset");
        assert_eq!(buffer.available_permits(), 1024, "buffer bytes released");
    }

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
