//! What the load generator drives: one system under test ([`Target`]),
//! its publishers and its group subscribers.
//!
//! Pigeon implements these traits in this crate; the peers (Redis Streams,
//! NATS JetStream) implement them in `benches/`, so every system is driven
//! by the same harness and the load generator is never what differs.
//!
//! ## Contract
//!
//! - [`Publisher::publish`] queues one message, waiting only for buffer
//!   space (back-pressure), and returns a future that resolves once the
//!   system has acknowledged the message as durable under its configured
//!   policy. Many acks may be outstanding at once: that is how batching
//!   and pipelining systems are driven at full speed.
//! - [`Subscriber::receive`] returns up to `max` messages leased to this
//!   member of the group, waiting at most `wait` (an empty batch means
//!   none was available in time).
//! - [`Subscriber::ack`] settles every message of one received batch,
//!   batched into as few requests as the system allows. It may return once
//!   the acks are sent; [`Subscriber::close`] waits until every ack sent
//!   has been confirmed.
//! - The harness owns the payload: it writes the publish time into the
//!   first 8 bytes of each value, so targets must deliver values unchanged.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use super::stages::StageCounts;

/// How a publisher batches (what `--batch-bytes`, `--linger-ms` and
/// `--in-flight` set).
#[derive(Debug, Clone)]
pub struct PublishSettings {
    /// Largest batch (or pipeline chunk) in bytes.
    pub batch_bytes: usize,
    /// How long a publisher may wait to fill a batch.
    pub linger: Duration,
    /// Batches of one partition a publisher may have in flight (Pigeon's
    /// `ProducerConfig::max_in_flight_batches`; the peers' drivers keep
    /// their own pipelining).
    pub in_flight: usize,
}

/// How a subscriber receives.
#[derive(Debug, Clone)]
pub struct SubscribeSettings {
    /// Most messages one receive may return.
    pub max_messages: usize,
    /// Lease (ack timeout) asked for, where the system has one.
    pub ack_timeout: Duration,
}

/// One message handed to a subscriber.
#[derive(Debug, Clone)]
pub struct Received {
    /// The value exactly as published.
    pub value: Bytes,
    /// Which delivery of the message this is (1 the first), where the
    /// system says; 1 otherwise.
    pub attempt: u32,
}

/// One system under test.
pub trait Target: Send + Sync + 'static {
    /// What publishes.
    type Publisher: Publisher;
    /// What receives for a group.
    type Subscriber: Subscriber;

    /// The name shown in reports: `pigeon`, `redis`, `nats`.
    fn name(&self) -> &str;

    /// Creates `topic` afresh with `partitions` partitions (or the
    /// system's closest equivalent), deleting any earlier one of that name.
    fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// A new publisher to `topic`, on its own connection.
    fn publisher(
        &self,
        topic: &str,
        settings: &PublishSettings,
    ) -> impl Future<Output = anyhow::Result<Self::Publisher>> + Send;

    /// A new member of consumer group `group` of `topic`, creating the
    /// group (from the earliest message) if it does not exist.
    fn subscriber(
        &self,
        topic: &str,
        group: &str,
        settings: &SubscribeSettings,
    ) -> impl Future<Output = anyhow::Result<Self::Subscriber>> + Send;

    /// The system's own stage histograms now (cumulative), where it
    /// exposes them: the harness reads them before and after the timed
    /// phase ([`super::stages`]). `None`, the default, when it has none.
    fn stage_counts(&self) -> impl Future<Output = anyhow::Result<Option<StageCounts>>> + Send {
        async { Ok(None) }
    }
}

/// Publishes messages to one topic.
pub trait Publisher: Send + 'static {
    /// Resolves once the message is acknowledged as durable.
    type Ack: Future<Output = anyhow::Result<()>> + Send + 'static;

    /// Queues `value` (waiting only for buffer space) and returns the
    /// future of its acknowledgement.
    fn publish(&mut self, value: Bytes) -> impl Future<Output = anyhow::Result<Self::Ack>> + Send;

    /// Sends what is buffered, waits for every outstanding ack, and closes.
    fn close(self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Receives and acks messages as one member of a consumer group.
pub trait Subscriber: Send + 'static {
    /// One batch of up to `max` messages
    /// ([`SubscribeSettings::max_messages`] at most), waiting at most
    /// `wait` for the first; empty if none came in time.
    fn receive(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = anyhow::Result<Vec<Received>>> + Send;

    /// Acks every message of the last batch `receive` returned.
    fn ack(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Waits for every ack sent to be confirmed, then leaves the group.
    fn close(self) -> impl Future<Output = anyhow::Result<()>> + Send;
}
