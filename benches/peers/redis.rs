//! Redis Streams as a harness [`Target`]: one stream per topic, consumer
//! groups with XREADGROUP and XACK.
//!
//! - **Publish**: `publish` hands the value to a background pipeliner
//!   task and gets a oneshot back. The pipeliner takes what is queued (up
//!   to [`PublishSettings::batch_bytes`] of values, waiting at most
//!   [`PublishSettings::linger`] after the first) and sends it as one
//!   pipeline of `XADD <stream> * v <value>` on the publisher's
//!   multiplexed connection, with up to [`PIPELINES_IN_FLIGHT`] pipelines
//!   outstanding. (A publisher may be given several connections, used in
//!   turn per pipeline: see [`RedisTarget::connect`].) Each message's oneshot is answered when the pipeline's
//!   replies arrive; Redis replies only after the write is in the AOF and,
//!   with `appendfsync always`, fsynced (one fsync per event-loop turn,
//!   covering every client's writes of that turn).
//! - **Subscribe**: `XGROUP CREATE <stream> <group> 0 MKSTREAM` (an
//!   existing group is kept), then `XREADGROUP GROUP <group> <consumer>
//!   COUNT <max> BLOCK <wait> STREAMS <stream> >` per receive.
//! - **Ack**: one `XACK <stream> <group> <id>...` with every id of the
//!   batch, sent without waiting for its reply (the multiplexed connection
//!   keeps it ahead of the next XREADGROUP); `close` waits for every reply.
//! - **Topic**: `create_topic` deletes the stream (`DEL`); XADD creates it.
//!   Redis has no partitions: one stream per topic.
//! - Redis has no lease: `ack_timeout` is not used, and every delivery is
//!   reported as attempt 1 (these runs never redeliver).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use pigeon_cli::bench::{
    PublishSettings, Publisher, Received, SubscribeSettings, Subscriber, Target,
};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::{AckFuture, RESPONSE_TIMEOUT, Window};

/// Pipelines one publisher may have sent and not yet had answered.
pub const PIPELINES_IN_FLIGHT: usize = 4;

/// The stream entry's only field; its value is the message.
const FIELD: &str = "v";

/// A Redis server reached over loopback.
pub struct RedisTarget {
    /// Opens connections (it holds only the address).
    client: redis::Client,
    /// Connections per publisher (1 unless asked otherwise).
    connections: usize,
    /// For DEL and other one-off commands.
    admin: MultiplexedConnection,
}

impl RedisTarget {
    /// Connects to the Redis server at `addr` (`host:port`); each
    /// publisher will spread its pipelines over `connections` connections.
    ///
    /// Why more than one can matter: Redis reads at most 16 KiB of one
    /// client's input per event-loop turn, and with `appendfsync always`
    /// each turn that wrote ends with one fsync, so one connection gets
    /// about 16 KiB of XADDs per fsync however deep its pipeline is.
    pub async fn connect(addr: &str, connections: usize) -> anyhow::Result<RedisTarget> {
        let client = redis::Client::open(format!("redis://{addr}/"))?;
        let admin = connection(&client).await?;
        Ok(RedisTarget {
            client,
            connections: connections.max(1),
            admin,
        })
    }
}

/// A new multiplexed connection whose replies may take up to
/// [`RESPONSE_TIMEOUT`] (the client's default of 500 ms is shorter than a
/// blocking read or a large pipeline behind fsyncs).
async fn connection(client: &redis::Client) -> anyhow::Result<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(Duration::from_secs(10)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .context("connect to redis")
}

impl Target for RedisTarget {
    type Publisher = RedisPublisher;
    type Subscriber = RedisSubscriber;

    fn name(&self) -> &str {
        "redis"
    }

    async fn create_topic(&self, topic: &str, _partitions: u32) -> anyhow::Result<()> {
        let mut admin = self.admin.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(super::stream_name(topic))
            .query_async(&mut admin)
            .await?;
        Ok(())
    }

    async fn publisher(
        &self,
        topic: &str,
        settings: &PublishSettings,
    ) -> anyhow::Result<RedisPublisher> {
        let mut connections = Vec::with_capacity(self.connections);
        for _ in 0..self.connections {
            connections.push(connection(&self.client).await?);
        }
        let (queue, pending) = mpsc::channel(QUEUE_MESSAGES);
        let pipeliner = Pipeliner {
            connections,
            stream: super::stream_name(topic),
            settings: settings.clone(),
        };
        Ok(RedisPublisher {
            queue,
            window: Window::new(),
            task: tokio::spawn(pipeliner.run(pending)),
        })
    }

    async fn subscriber(
        &self,
        topic: &str,
        group: &str,
        _settings: &SubscribeSettings,
    ) -> anyhow::Result<RedisSubscriber> {
        let mut connection = connection(&self.client).await?;
        let stream = super::stream_name(topic);
        let created: redis::RedisResult<Value> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut connection)
            .await;
        if let Err(e) = created
            && e.code() != Some("BUSYGROUP")
        {
            return Err(e).context("XGROUP CREATE");
        }
        static MEMBERS: AtomicU64 = AtomicU64::new(0);
        let member = MEMBERS.fetch_add(1, Ordering::Relaxed);
        Ok(RedisSubscriber {
            connection,
            stream,
            group: group.to_string(),
            consumer: format!("member-{member}"),
            last_ids: Vec::new(),
            acks: JoinSet::new(),
        })
    }
}

/// Messages queued for the pipeliner before `publish` waits (the byte
/// window is the real bound; this only keeps the channel finite).
const QUEUE_MESSAGES: usize = 1 << 16;

/// One message waiting for its pipeline.
struct Pending {
    value: Bytes,
    /// Answered with the message's fate once its pipeline is answered.
    done: oneshot::Sender<Result<(), String>>,
}

/// Publishes to one stream through the background [`Pipeliner`].
pub struct RedisPublisher {
    /// To the pipeliner; closing it lets the pipeliner finish.
    queue: mpsc::Sender<Pending>,
    /// Bytes published and not yet acknowledged.
    window: Window,
    /// The pipeliner, which ends once the queue is closed and every
    /// pipeline it sent has been answered.
    task: JoinHandle<anyhow::Result<()>>,
}

impl Publisher for RedisPublisher {
    type Ack = AckFuture;

    async fn publish(&mut self, value: Bytes) -> anyhow::Result<AckFuture> {
        let permit = self.window.reserve(value.len()).await?;
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Pending { value, done })
            .await
            .map_err(|_| anyhow!("the redis pipeliner stopped"))?;
        Ok(Box::pin(async move {
            let fate = answer.await;
            drop(permit);
            match fate {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(anyhow!("XADD failed: {e}")),
                Err(_) => Err(anyhow!("the redis pipeliner dropped a message")),
            }
        }))
    }

    async fn close(self) -> anyhow::Result<()> {
        drop(self.queue);
        self.task.await?
    }
}

/// Turns queued messages into XADD pipelines.
struct Pipeliner {
    /// Used in turn, one pipeline each.
    connections: Vec<MultiplexedConnection>,
    stream: String,
    settings: PublishSettings,
}

impl Pipeliner {
    /// Sends pipelines until the queue closes, then waits for every reply.
    async fn run(self, mut queue: mpsc::Receiver<Pending>) -> anyhow::Result<()> {
        let mut in_flight = JoinSet::new();
        let mut turn = 0;
        while let Some(first) = queue.recv().await {
            while in_flight.len() >= PIPELINES_IN_FLIGHT {
                in_flight.join_next().await;
            }
            let batch = self.fill(first, &mut queue).await;
            let mut connection = self.connections[turn % self.connections.len()].clone();
            turn += 1;
            let stream = self.stream.clone();
            in_flight.spawn(async move { send(&mut connection, &stream, batch).await });
        }
        while in_flight.join_next().await.is_some() {}
        Ok(())
    }

    /// One pipeline's worth: `first` and whatever follows within the
    /// batch size and the linger.
    async fn fill(&self, first: Pending, queue: &mut mpsc::Receiver<Pending>) -> Vec<Pending> {
        let deadline = Instant::now() + self.settings.linger;
        let mut bytes = first.value.len();
        let mut batch = vec![first];
        while bytes < self.settings.batch_bytes {
            let next = match queue.try_recv() {
                Ok(next) => next,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, queue.recv()).await {
                        Ok(Some(next)) => next,
                        _ => break,
                    }
                }
            };
            bytes += next.value.len();
            batch.push(next);
        }
        batch
    }
}

/// Sends one pipeline of XADDs and answers each message.
async fn send(connection: &mut MultiplexedConnection, stream: &str, batch: Vec<Pending>) {
    let mut pipe = redis::pipe();
    for message in &batch {
        pipe.cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg(FIELD)
            .arg(message.value.as_ref());
    }
    let replies: redis::RedisResult<Vec<Value>> = pipe.query_async(connection).await;
    let fate = replies.map(|_| ()).map_err(|e| e.to_string());
    for message in batch {
        let _ = message.done.send(fate.clone());
    }
}

/// One member of a Redis consumer group.
pub struct RedisSubscriber {
    connection: MultiplexedConnection,
    stream: String,
    group: String,
    /// This member's consumer name, unique in the process.
    consumer: String,
    /// Entry ids of the last batch received, acked by `ack`.
    last_ids: Vec<Bytes>,
    /// XACKs sent and not yet answered.
    acks: JoinSet<anyhow::Result<()>>,
}

impl Subscriber for RedisSubscriber {
    async fn receive(&mut self, max: usize, wait: Duration) -> anyhow::Result<Vec<Received>> {
        self.reap_acks()?;
        // BLOCK 0 would wait forever: ask for at least 1 ms.
        let block_ms = wait.as_millis().max(1);
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            .arg(block_ms as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(&mut self.connection)
            .await
            .context("XREADGROUP")?;
        let entries = entries_of(reply)?;
        self.last_ids.clear();
        let mut received = Vec::with_capacity(entries.len());
        for (id, value) in entries {
            self.last_ids.push(id);
            received.push(Received { value, attempt: 1 });
        }
        Ok(received)
    }

    async fn ack(&mut self) -> anyhow::Result<()> {
        if self.last_ids.is_empty() {
            return Ok(());
        }
        let mut xack = redis::cmd("XACK");
        xack.arg(&self.stream).arg(&self.group);
        for id in self.last_ids.drain(..) {
            xack.arg(id.as_ref());
        }
        let mut connection = self.connection.clone();
        self.acks.spawn(async move {
            let _: i64 = xack.query_async(&mut connection).await.context("XACK")?;
            Ok(())
        });
        Ok(())
    }

    async fn close(mut self) -> anyhow::Result<()> {
        while let Some(done) = self.acks.join_next().await {
            done??;
        }
        let _: i64 = redis::cmd("XGROUP")
            .arg("DELCONSUMER")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .query_async(&mut self.connection)
            .await
            .context("XGROUP DELCONSUMER")?;
        Ok(())
    }
}

impl RedisSubscriber {
    /// Surfaces the error of any XACK already answered.
    fn reap_acks(&mut self) -> anyhow::Result<()> {
        while let Some(done) = self.acks.try_join_next() {
            done??;
        }
        Ok(())
    }
}

/// The `(id, value)` pairs of an XREADGROUP reply (RESP2: nil when the
/// wait ran out, else `[[stream, [[id, [field, value]], ...]]]`).
fn entries_of(reply: Value) -> anyhow::Result<Vec<(Bytes, Bytes)>> {
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams,
        other => bail!("unexpected XREADGROUP reply: {other:?}"),
    };
    let mut out = Vec::new();
    for stream in streams {
        let [_name, Value::Array(entries)] = array::<2>(stream)? else {
            bail!("unexpected XREADGROUP stream shape");
        };
        out.reserve(entries.len());
        for entry in entries {
            let [id, Value::Array(fields)] = array::<2>(entry)? else {
                bail!("unexpected XREADGROUP entry shape");
            };
            let value = fields
                .into_iter()
                .nth(1)
                .ok_or_else(|| anyhow!("stream entry without a value"))?;
            out.push((bulk(id)?, bulk(value)?));
        }
    }
    Ok(out)
}

/// The `N` items of an array reply.
fn array<const N: usize>(value: Value) -> anyhow::Result<[Value; N]> {
    match value {
        Value::Array(items) => items
            .try_into()
            .map_err(|items: Vec<Value>| anyhow!("expected {N} items, got {}", items.len())),
        other => bail!("expected an array, got {other:?}"),
    }
}

/// The bytes of a bulk-string reply, without copying.
fn bulk(value: Value) -> anyhow::Result<Bytes> {
    match value {
        Value::BulkString(bytes) => Ok(Bytes::from(bytes)),
        Value::SimpleString(text) => Ok(Bytes::from(text)),
        other => bail!("expected a string, got {other:?}"),
    }
}
