//! [`Producer`]: the public handle. It refuses what cannot be sent,
//! picks each record's partition, reserves its bytes in the buffer and
//! hands it to its partition's sender (see [`sender`](super::sender)),
//! started on first use; it also flushes and closes.
//!
//! ## Invariants
//!
//! - Partition: the record's explicit partition, else
//!   [`partition_for_key`] for keyed records, else round robin, over the
//!   topic's partition count (cached, see [`context`](super::context)).
//! - Bytes buffered and in flight never exceed the buffer
//!   ([`ProducerConfig::buffer_memory`], raised to
//!   [`ProducerConfig::max_batch_bytes`] if smaller): `enqueue` waits for
//!   room (back-pressure) and a record's bytes are released when its batch
//!   completes.
//! - A record larger than a batch may be, a closed producer, a fenced
//!   producer and an open circuit are refused before anything is buffered.
//! - One sender per topic-partition at a time: a sender whose queue
//!   closed is replaced on the next record.
//! - [`Producer::flush`] returns once every record enqueued before it was
//!   delivered or failed; [`Producer::close`] refuses new records, then
//!   flushes. Dropping every clone without closing still delivers what was
//!   enqueued, in the background (the senders exit once their queues
//!   close and drain).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::batching::{Command, Enqueued};
use super::config::ProducerConfig;
use super::context::{SenderCtx, ThrottleStats};
use super::lock;
use super::record::{Delivery, ProducerRecord, RecordMetadata, partition_for_key};
use super::sender::run_partition;
use crate::batch::HEADER_LEN;
use crate::client::connection::Client;
use crate::client::error::ClientError;

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
        self.shared.ctx.throttle_stats()
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
        self.shared.ctx.max_batch_bytes()
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
