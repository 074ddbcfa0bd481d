//! [`PigeonTarget`]: the load generator's traits implemented with this
//! crate's own client, so `pigeon bench` measures Pigeon the way an
//! application would use it.
//!
//! - A publisher is a [`Producer`] (idempotent, as by default) on its own
//!   connection, with a name of its own (`pigeon-bench-<pid>-<n>`: two
//!   producers sharing a name would fence each other). Records carry no
//!   key, so the producer spreads them round robin over the partitions.
//! - A subscriber is a [`Consumer`] on its own connection. The group is
//!   created on first use with the subscriber's lease (ack timeout) and
//!   room for the batches it keeps in flight. [`Subscriber::ack`] sends one
//!   Settle for the whole batch ([`GroupDelivery::ack_all`]) and returns
//!   without waiting for the answer, so the next Receive is pipelined
//!   behind it; at most [`SETTLES_IN_FLIGHT`] Settles are unanswered, their
//!   failures surface on a later `ack` or on `close`. A `LeaseLost` answer
//!   is not a failure: that message comes back, and the harness counts it
//!   once.
//! - [`Target::create_topic`] deletes the topic (the broker deletes its
//!   groups with it) and the harness group's dead-letter topic (an ordinary
//!   topic, which stays), so every run starts from nothing.
//! - With [`PigeonTarget::with_metrics`], [`Target::stage_counts`] scrapes
//!   the broker's `/metrics` for its append stage histograms
//!   ([`super::stages`]).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;

use super::harness::GROUP;
use super::stages::{self, StageCounts};
use super::target::{PublishSettings, Publisher, Received, SubscribeSettings, Subscriber, Target};
use pigeon_client::client::{
    Admin, Client, ClientError, Consumer, ConsumerConfig, Delivery, GroupDelivery, NewTopic,
    Producer, ProducerConfig, ProducerRecord,
};
use pigeon_client::protocol::{ErrorCode, GroupSettings};

/// Settles one subscriber may have sent and not yet seen answered.
pub const SETTLES_IN_FLIGHT: usize = 2;

/// Pigeon as a system under test.
#[derive(Debug)]
pub struct PigeonTarget {
    client: Client,
    /// Numbers publisher and consumer names.
    members: AtomicU64,
    /// `host:port` of the broker's HTTP listener, to read its stages.
    metrics: Option<String>,
}

impl PigeonTarget {
    /// Connects to the broker at `addr` (`host:port`) with the client's
    /// default configuration.
    pub async fn connect(addr: &str) -> anyhow::Result<PigeonTarget> {
        let client = Client::connect(addr)
            .await
            .map_err(|err| anyhow::anyhow!("cannot connect to the broker at {addr}: {err}"))?;
        Ok(PigeonTarget::with_client(client))
    }

    /// Drives the broker `client` is connected to; publishers and
    /// subscribers get their own connections with the same configuration.
    pub fn with_client(client: Client) -> PigeonTarget {
        PigeonTarget {
            client,
            members: AtomicU64::new(0),
            metrics: None,
        }
    }

    /// Reads the broker's stage histograms from its HTTP listener at
    /// `addr` (`host:port`) around each run.
    pub fn with_metrics(mut self, addr: impl Into<String>) -> PigeonTarget {
        self.metrics = Some(addr.into());
        self
    }

    fn admin(&self) -> Admin {
        Admin::new(self.client.clone())
    }

    fn member_name(&self) -> String {
        let n = self.members.fetch_add(1, Ordering::Relaxed);
        format!("pigeon-bench-{}-{n}", std::process::id())
    }

    fn own_client(&self) -> Client {
        Client::lazy(self.client.addr(), self.client.config().clone())
    }
}

/// `Ok` when `result` succeeded or failed only with one of `codes`.
fn tolerate(result: Result<(), ClientError>, codes: &[ErrorCode]) -> Result<(), ClientError> {
    match result {
        Err(err) if err.code().is_some_and(|code| codes.contains(&code)) => Ok(()),
        other => other,
    }
}

impl Target for PigeonTarget {
    type Publisher = PigeonPublisher;
    type Subscriber = PigeonSubscriber;

    fn name(&self) -> &str {
        "pigeon"
    }

    async fn create_topic(&self, topic: &str, partitions: u32) -> anyhow::Result<()> {
        let admin = self.admin();
        let gone = [ErrorCode::UnknownTopic];
        // The topic first: it takes its groups with it, and a running
        // group's dead-letter topic cannot be deleted before the group.
        tolerate(admin.delete_topic(topic).await, &gone)?;
        tolerate(
            admin.delete_topic(&format!("{topic}.{GROUP}.dlq")).await,
            &gone,
        )?;
        admin
            .create_topic(NewTopic::new(topic, partitions))
            .await
            .map_err(anyhow::Error::from)
    }

    async fn publisher(
        &self,
        topic: &str,
        settings: &PublishSettings,
    ) -> anyhow::Result<PigeonPublisher> {
        let client = Client::connect_with(self.client.addr(), self.client.config().clone()).await?;
        let config = ProducerConfig {
            linger: settings.linger,
            max_batch_bytes: settings.batch_bytes,
            max_in_flight_batches: settings.in_flight,
            producer_name: Some(self.member_name()),
            ..ProducerConfig::default()
        };
        Ok(PigeonPublisher {
            producer: Producer::new(client.clone(), config),
            client,
            topic: topic.to_string(),
        })
    }

    async fn subscriber(
        &self,
        topic: &str,
        group: &str,
        settings: &SubscribeSettings,
    ) -> anyhow::Result<PigeonSubscriber> {
        let max_messages = u32::try_from(settings.max_messages.max(1)).unwrap_or(u32::MAX);
        let group_settings = GroupSettings {
            ack_timeout_ms: u32::try_from(settings.ack_timeout.as_millis()).unwrap_or(u32::MAX),
            // The batch being received plus those still being settled.
            max_in_flight: max_messages
                .saturating_mul(SETTLES_IN_FLIGHT as u32 + 2)
                .max(GroupSettings::default().max_in_flight),
            ..GroupSettings::default()
        };
        let created = self
            .admin()
            .create_group(topic, group, group_settings)
            .await;
        tolerate(created, &[ErrorCode::GroupAlreadyExists])?;
        let config = ConsumerConfig {
            consumer_name: self.member_name(),
            max_messages,
            ..ConsumerConfig::default()
        };
        let consumer = Consumer::join(&self.own_client(), topic, group, config).await?;
        Ok(PigeonSubscriber {
            consumer,
            last: Vec::new(),
            settling: VecDeque::new(),
        })
    }

    async fn stage_counts(&self) -> anyhow::Result<Option<StageCounts>> {
        let Some(addr) = &self.metrics else {
            return Ok(None);
        };
        let text = stages::scrape(addr).await?;
        Ok(Some(StageCounts::parse(&text)))
    }
}

/// A [`Producer`] on its own connection.
#[derive(Debug)]
pub struct PigeonPublisher {
    producer: Producer,
    client: Client,
    topic: String,
}

/// The acknowledgement of one published record.
#[derive(Debug)]
pub struct PigeonAck(Delivery);

impl Future for PigeonAck {
    type Output = anyhow::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|stored| stored.map(|_| ()).map_err(anyhow::Error::from))
    }
}

impl Publisher for PigeonPublisher {
    type Ack = PigeonAck;

    async fn publish(&mut self, value: Bytes) -> anyhow::Result<PigeonAck> {
        let delivery = self
            .producer
            .enqueue(&self.topic, ProducerRecord::new(value))
            .await?;
        Ok(PigeonAck(delivery))
    }

    async fn close(self) -> anyhow::Result<()> {
        self.producer.close().await;
        self.client.close().await;
        Ok(())
    }
}

/// A [`Consumer`] that acks whole batches with pipelined Settles.
#[derive(Debug)]
pub struct PigeonSubscriber {
    consumer: Consumer,
    /// The batch `receive` returned last, until it is acked.
    last: Vec<GroupDelivery>,
    /// Settles sent and not yet answered, oldest first.
    settling: VecDeque<JoinHandle<anyhow::Result<()>>>,
}

impl PigeonSubscriber {
    /// Waits for the oldest Settle in flight.
    async fn settle_oldest(&mut self) -> anyhow::Result<()> {
        match self.settling.pop_front() {
            Some(settle) => settle
                .await
                .map_err(|err| anyhow::anyhow!("a Settle task failed: {err}"))?,
            None => Ok(()),
        }
    }
}

/// Acks `batch` in one Settle; a lease already lost is not a failure (the
/// message comes back).
async fn settle(batch: Vec<GroupDelivery>) -> anyhow::Result<()> {
    let results = GroupDelivery::ack_all(&batch).await?;
    for result in results {
        match result {
            Err(err) if err.code() != Some(ErrorCode::LeaseLost) => return Err(err.into()),
            _ => {}
        }
    }
    Ok(())
}

impl Subscriber for PigeonSubscriber {
    async fn receive(&mut self, max: usize, wait: Duration) -> anyhow::Result<Vec<Received>> {
        let batch = self.consumer.next_batch_within(max.max(1), wait).await?;
        let received = batch
            .iter()
            .map(|d| Received {
                value: d.value.clone(),
                attempt: d.attempt,
            })
            .collect();
        self.last = batch;
        Ok(received)
    }

    async fn ack(&mut self) -> anyhow::Result<()> {
        let batch = std::mem::take(&mut self.last);
        if batch.is_empty() {
            return Ok(());
        }
        // Failures of earlier Settles surface here, as soon as known.
        while self.settling.front().is_some_and(JoinHandle::is_finished) {
            self.settle_oldest().await?;
        }
        while self.settling.len() >= SETTLES_IN_FLIGHT {
            self.settle_oldest().await?;
        }
        self.settling.push_back(tokio::spawn(settle(batch)));
        Ok(())
    }

    async fn close(mut self) -> anyhow::Result<()> {
        let mut outcome = Ok(());
        while !self.settling.is_empty() {
            outcome = outcome.and(self.settle_oldest().await);
        }
        self.consumer.close().await;
        outcome
    }
}
