//! NATS JetStream as a harness [`Target`]: one file-storage stream per
//! topic (one subject), durable pull consumers with explicit acks.
//!
//! - **Publish**: `Context::publish` queues the message on the
//!   publisher's own connection and returns the PubAck future at once, so
//!   many acks are outstanding (bounded by the byte [`Window`]). The
//!   client coalesces queued messages into large socket writes by itself;
//!   JetStream has no batch publish, so [`PublishSettings`] are not used.
//!   The server sends the PubAck once the message is stored under the
//!   server's sync policy (see `docs/benchmarks.md` for what the installed
//!   server does).
//! - **Subscribe**: a durable pull consumer named after the group
//!   (`deliver_policy: all`, `ack_policy: explicit`, `ack_wait` = the
//!   lease asked for, `max_ack_pending` = [`max_ack_pending`]), read
//!   through the client's continuous pull stream (it keeps pull requests of
//!   `max_messages` outstanding). `receive` waits for the first message and
//!   takes what else is already buffered, up to `max`.
//! - **Ack**: JetStream acks are per message. Each is a fire-and-forget
//!   `+ACK` publish, except the last of each batch, which asks the server
//!   to confirm (`double_ack`, awaited in the background). The server
//!   handles one connection's acks in order, so the confirmation of the
//!   last implies the earlier ones; `close` waits for every confirmation.
//! - **Topic**: `create_topic` deletes the stream if it exists and creates
//!   it afresh (file storage, 1 replica). No partitions: one stream.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use pigeon_cli::bench::{
    PublishSettings, Publisher, Received, SubscribeSettings, Subscriber, Target,
};
use tokio::task::JoinSet;

use super::{AckFuture, RESPONSE_TIMEOUT, Window};

/// Most PubAcks the client itself lets be outstanding; above the byte
/// window for any value size used here, so the window is the bound.
const CLIENT_ACKS_IN_FLIGHT: usize = 1 << 20;

/// `max_ack_pending` of a consumer for receives of up to `max` messages:
/// room for a few batches received and not yet acked, so acks sent in the
/// background never hold up delivery.
pub fn max_ack_pending(max: usize) -> i64 {
    i64::try_from(max.saturating_mul(4).max(1_000)).unwrap_or(i64::MAX)
}

/// A NATS server with JetStream enabled, reached over loopback.
pub struct NatsTarget {
    /// `host:port`, for the connections of publishers and subscribers.
    addr: String,
    /// For stream management.
    admin: jetstream::Context,
}

impl NatsTarget {
    /// Connects to the NATS server at `addr` (`host:port`) and waits, up to
    /// `within`, until JetStream answers.
    pub async fn connect(addr: &str, within: Duration) -> anyhow::Result<NatsTarget> {
        let admin = context(addr).await?;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let why = match jetstream_ready(&admin.client()).await {
                Ok(()) => break,
                Err(why) => why,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(anyhow!(
                    "JetStream did not answer within {within:?}: {why:#}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(NatsTarget {
            addr: addr.to_string(),
            admin,
        })
    }
}

/// Whether JetStream answers its account-info request without an error.
/// (The raw request, not the client's typed one: the client's account
/// type may not parse what an older server sends.)
async fn jetstream_ready(client: &async_nats::Client) -> anyhow::Result<()> {
    let reply = client.request("$JS.API.INFO", Bytes::new()).await?;
    let text = String::from_utf8_lossy(&reply.payload);
    if text.contains("\"error\"") {
        return Err(anyhow!("{text}"));
    }
    Ok(())
}

/// A JetStream context on a new connection to `addr`.
async fn context(addr: &str) -> anyhow::Result<jetstream::Context> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(10))
        .request_timeout(Some(RESPONSE_TIMEOUT))
        .connect(addr)
        .await
        .context("connect to nats")?;
    Ok(jetstream::ContextBuilder::new()
        .timeout(RESPONSE_TIMEOUT)
        .max_ack_inflight(CLIENT_ACKS_IN_FLIGHT)
        .backpressure_on_inflight(true)
        .build(client))
}

impl Target for NatsTarget {
    type Publisher = NatsPublisher;
    type Subscriber = NatsSubscriber;

    fn name(&self) -> &str {
        "nats"
    }

    async fn create_topic(&self, topic: &str, _partitions: u32) -> anyhow::Result<()> {
        let name = super::stream_name(topic);
        if self.admin.get_stream(&name).await.is_ok() {
            self.admin.delete_stream(&name).await?;
        }
        self.admin
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![name],
                storage: stream::StorageType::File,
                num_replicas: 1,
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    async fn publisher(
        &self,
        topic: &str,
        _settings: &PublishSettings,
    ) -> anyhow::Result<NatsPublisher> {
        Ok(NatsPublisher {
            context: context(&self.addr).await?,
            subject: super::stream_name(topic),
            window: Window::new(),
        })
    }

    async fn subscriber(
        &self,
        topic: &str,
        group: &str,
        settings: &SubscribeSettings,
    ) -> anyhow::Result<NatsSubscriber> {
        let context = context(&self.addr).await?;
        let stream = context.get_stream(super::stream_name(topic)).await?;
        let durable = super::stream_name(group);
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                &durable,
                consumer::pull::Config {
                    durable_name: Some(durable.clone()),
                    deliver_policy: consumer::DeliverPolicy::All,
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: settings.ack_timeout,
                    max_ack_pending: max_ack_pending(settings.max_messages),
                    ..Default::default()
                },
            )
            .await?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(settings.max_messages.max(1))
            .messages()
            .await?;
        Ok(NatsSubscriber {
            client: context.client(),
            messages,
            last: Vec::new(),
            confirms: JoinSet::new(),
        })
    }
}

/// Publishes to one stream's subject.
pub struct NatsPublisher {
    context: jetstream::Context,
    subject: String,
    /// Bytes published and not yet acknowledged.
    window: Window,
}

impl Publisher for NatsPublisher {
    type Ack = AckFuture;

    async fn publish(&mut self, value: Bytes) -> anyhow::Result<AckFuture> {
        let permit = self.window.reserve(value.len()).await?;
        let ack = self.context.publish(self.subject.clone(), value).await?;
        Ok(Box::pin(async move {
            let stored = ack.await;
            drop(permit);
            stored.map(drop).context("JetStream publish")
        }))
    }

    async fn close(self) -> anyhow::Result<()> {
        self.context.client().flush().await?;
        // Every ack future frees its bytes once it resolved (or was
        // dropped): the whole window free means none is outstanding.
        self.window.drain().await
    }
}

/// One member of a durable pull consumer.
pub struct NatsSubscriber {
    client: async_nats::Client,
    /// The client's continuous pull stream.
    messages: consumer::pull::Stream,
    /// Ackers of the last batch received.
    last: Vec<jetstream::message::Acker>,
    /// Confirmed acks (one per batch) still awaited.
    confirms: JoinSet<anyhow::Result<()>>,
}

impl Subscriber for NatsSubscriber {
    async fn receive(&mut self, max: usize, wait: Duration) -> anyhow::Result<Vec<Received>> {
        while let Some(done) = self.confirms.try_join_next() {
            done??;
        }
        self.last.clear();
        let mut received = Vec::new();
        let first = match tokio::time::timeout(wait, self.messages.next()).await {
            Err(_) => return Ok(received),
            Ok(None) => return Err(anyhow!("the JetStream pull stream ended")),
            Ok(Some(message)) => message?,
        };
        self.take(first, &mut received);
        while received.len() < max {
            match self.messages.next().now_or_never() {
                Some(Some(message)) => self.take(message?, &mut received),
                Some(None) => return Err(anyhow!("the JetStream pull stream ended")),
                None => break,
            }
        }
        Ok(received)
    }

    async fn ack(&mut self) -> anyhow::Result<()> {
        let Some(last) = self.last.pop() else {
            return Ok(());
        };
        for acker in self.last.drain(..) {
            acker.ack().await.map_err(|e| anyhow!("ack: {e}"))?;
        }
        self.confirms.spawn(async move {
            last.double_ack()
                .await
                .map_err(|e| anyhow!("confirmed ack: {e}"))
        });
        Ok(())
    }

    async fn close(mut self) -> anyhow::Result<()> {
        while let Some(done) = self.confirms.join_next().await {
            done??;
        }
        self.client.flush().await?;
        Ok(())
    }
}

impl NatsSubscriber {
    /// Hands `message` to the caller and keeps its acker for `ack`.
    fn take(&mut self, message: jetstream::Message, received: &mut Vec<Received>) {
        let attempt = message
            .info()
            .map(|info| u32::try_from(info.delivered).unwrap_or(u32::MAX))
            .unwrap_or(1);
        let (message, acker) = message.split();
        received.push(Received {
            value: message.payload,
            attempt,
        });
        self.last.push(acker);
    }
}
