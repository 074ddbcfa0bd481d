//! [`Consumer`]: a member of a consumer group, yielding leased deliveries.
//!
//! This module owns joining a group (JoinGroup), long-polling for
//! deliveries (Receive), settling them (Settle: ack, nack, reject, extend)
//! and rejoining after the connection drops.
//!
//! ## Invariants
//!
//! - The consumer talks over its own connection (a [`Client`] with the same
//!   address and configuration as the one it was joined with): the broker
//!   ties a consumer's membership to the connection it joined on, so no
//!   other traffic may reconnect it behind the consumer's back.
//! - Deliveries are asked for only when none is buffered, and never more
//!   than [`ConsumerConfig::max_messages`] at once: nothing is leased (and
//!   no attempt counted) long before the application asks for it.
//! - When a Receive or Settle fails because the connection was lost (or
//!   timed out), the consumer joins again (a new consumer id) before its
//!   next Receive; the broker hands the old consumer's leases back to the
//!   group when its connection closes. Settling a delivery of the old
//!   membership then fails with `LeaseLost`, like any lost lease.
//! - A settle answer of `LeaseLost` (or any per-item error) is returned as
//!   [`ClientError::Broker`] with the broker's code.
//! - The connection lives as long as the consumer or any of its deliveries:
//!   dropping them all (or [`Consumer::close`]) closes it, and the broker
//!   hands the leases still held back to the group (each counted as an
//!   attempt).
//! - [`Consumer::close`] first **releases** what the application never
//!   received: the buffered deliveries, and those of a Receive still in
//!   flight (awaited for at most its wait and a second). A release (Settle
//!   version 2) returns the message at once without counting the delivery,
//!   so the next consumer gets it with the same attempt number. With a
//!   broker that does not speak Settle v2, or if the release fails, they
//!   come back with the connection, counted, as before.
//! - A Receive runs as a task of its own: when a caller stops waiting for
//!   [`Consumer::next_within`] (or the others) part-way, e.g. in a
//!   `select!`, its answer is kept and its deliveries buffered at the next
//!   call or released by `close`, never lost while their leases run.
//!
//! - A delivery handed to the application keeps its lease until it is
//!   settled or dropped: the [lease keeper](super::lease_keeper) extends it
//!   by the group's ack timeout every third of it (unless
//!   [`ConsumerConfig::keep_leases`] is false). A buffered delivery
//!   whose lease ran out before the application asked for it (received an
//!   ack timeout ago) is dropped, never handed out: the group has given, or
//!   will give, that message to someone again.
//!
//! - A connection that dies while no request of the consumer is outstanding
//!   (e.g. during a long handler) is noticed through the client's
//!   [`connection_generation`](Client::connection_generation): the next
//!   Receive joins the group again first.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::Stream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::backoff::Backoff;
use super::connection::{Client, expect_response};
use super::error::ClientError;
pub use super::group_delivery::GroupDelivery;
use super::group_delivery::settle_items;
use super::lease_keeper::{self, LeaseKeeper, ReceivedBatch};
use crate::batch::Header;
use crate::protocol::{
    GroupSettings, JoinGroupRequest, ReceiveRequest, ReceiveResponse, SettleItem,
};

/// How a [`Consumer`] receives.
///
/// ```
/// use std::time::Duration;
/// use pigeon_client::client::ConsumerConfig;
/// let config = ConsumerConfig { max_messages: 10, ..ConsumerConfig::default() };
/// assert_eq!(config.max_wait, Duration::from_secs(1));
/// ```
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Name shown in message states (`<host>-<pid>` style; default
    /// `pigeon-consumer-<pid>`), 1 to 255 bytes.
    pub consumer_name: String,
    /// Most deliveries asked for in one Receive (100).
    pub max_messages: u32,
    /// Most bytes of deliveries one Receive may return (always at least
    /// one message); 0 (the default): only the frame limit. Sent with
    /// Receive version 1; a broker that speaks only version 0 ignores it.
    pub max_bytes: u32,
    /// How long one Receive waits on the broker while nothing is
    /// available (1 s).
    pub max_wait: Duration,
    /// Spacing of attempts after a retriable failure (100 ms doubling up
    /// to 5 s, ±20 %).
    pub retry_backoff: Backoff,
    /// Keep the leases of deliveries handed out and not settled yet alive
    /// (true): slow work keeps its message. False lets a lease run out
    /// after the group's ack timeout whatever the application is doing,
    /// so a hung handler's message goes to someone else.
    pub keep_leases: bool,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            consumer_name: format!("pigeon-consumer-{}", std::process::id()),
            max_messages: 100,
            max_bytes: 0,
            max_wait: Duration::from_secs(1),
            retry_backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            keep_leases: true,
        }
    }
}

/// What a consumer and its deliveries share: the connection and the group.
#[derive(Debug)]
pub(super) struct Membership {
    pub(super) client: Client,
    pub(super) topic: String,
    pub(super) group: String,
    /// Set when the connection was lost: join again before receiving.
    lost: AtomicBool,
    /// The client's connection generation when the consumer joined: the
    /// membership ends with that connection.
    joined_on: std::sync::atomic::AtomicU64,
    /// The group's ack timeout as of the last join, ms.
    ack_timeout_ms: std::sync::atomic::AtomicU64,
    /// Leases of the deliveries handed out and not settled, kept alive.
    keeper: LeaseKeeper,
    /// Set by [`Consumer::close`]: the keeper stops.
    closed: AtomicBool,
}

impl Membership {
    /// The group's ack timeout as of the last join.
    pub(super) fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.ack_timeout_ms.load(Ordering::Relaxed))
    }

    /// Notes that `err` may have cost the connection (and so the membership).
    pub(super) fn observe(&self, err: &ClientError) {
        if matches!(
            err,
            ClientError::Connection { .. }
                | ClientError::Timeout { .. }
                | ClientError::CircuitOpen { .. }
        ) {
            self.lost.store(true, Ordering::SeqCst);
        }
    }
}

/// A member of a consumer group: receives leased deliveries, one at a time
/// ([`Consumer::next_delivery`]) or as a [`Stream`] ([`Consumer::into_stream`]).
///
/// ```no_run
/// use futures_util::StreamExt;
/// use pigeon_client::client::{Client, Consumer, ConsumerConfig};
///
/// # async fn demo() -> Result<(), pigeon_client::client::ClientError> {
/// let client = Client::connect("127.0.0.1:7420").await?;
/// let mut consumer = Consumer::join(&client, "orders", "billing", ConsumerConfig::default()).await?;
/// loop {
///     let delivery = consumer.next_delivery().await?;
///     println!("{}@{} attempt {}", delivery.partition, delivery.offset, delivery.attempt);
///     delivery.ack().await?;
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Consumer {
    shared: Arc<Membership>,
    config: ConsumerConfig,
    consumer_id: u64,
    settings: GroupSettings,
    /// Received and not handed out yet, with when they were received.
    buffered: VecDeque<(Instant, GroupDelivery)>,
    /// The Receive in flight, if a caller stopped waiting for it.
    receiving: Option<Receiving>,
    failures: u32,
}

/// A Receive request running as a task of its own, so that no answer is
/// lost when the caller waiting for it goes away.
#[derive(Debug)]
struct Receiving {
    /// The membership it was sent for.
    consumer_id: u64,
    /// By when a broker in good health has answered it (its wait and a
    /// second): how long `close` waits for it.
    expected_by: Instant,
    task: JoinHandle<Result<ReceiveResponse, ClientError>>,
}

impl Consumer {
    /// Joins `group` of `topic` over a new connection to `client`'s broker
    /// (same address and configuration). Fails with `UnknownTopic` or
    /// `UnknownGroup` broker errors, or if the broker cannot be reached.
    ///
    /// ```no_run
    /// # use pigeon_client::client::{Client, Consumer, ConsumerConfig};
    /// # async fn demo(client: Client) -> Result<(), pigeon_client::client::ClientError> {
    /// let consumer = Consumer::join(&client, "orders", "billing", ConsumerConfig::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn join(
        client: &Client,
        topic: &str,
        group: &str,
        config: ConsumerConfig,
    ) -> Result<Consumer, ClientError> {
        let own = Client::lazy(client.addr(), client.config().clone());
        let shared = Arc::new(Membership {
            client: own,
            topic: topic.to_string(),
            group: group.to_string(),
            lost: AtomicBool::new(false),
            joined_on: std::sync::atomic::AtomicU64::new(0),
            ack_timeout_ms: std::sync::atomic::AtomicU64::new(0),
            keeper: LeaseKeeper::default(),
            closed: AtomicBool::new(false),
        });
        let (consumer_id, settings) = join_group(&shared, &config.consumer_name).await?;
        if config.keep_leases {
            keep_leases(&shared);
        }
        Ok(Consumer {
            shared,
            config,
            consumer_id,
            settings,
            buffered: VecDeque::new(),
            receiving: None,
            failures: 0,
        })
    }

    /// The id the broker gave this consumer (changes when it rejoins).
    pub fn consumer_id(&self) -> u64 {
        self.consumer_id
    }

    /// The group's settings, as of the last join.
    pub fn settings(&self) -> &GroupSettings {
        &self.settings
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.shared.group
    }

    /// Changes how many deliveries one Receive asks for (at least 1), e.g.
    /// to take no more than a caller still needs.
    pub fn set_max_messages(&mut self, max: u32) {
        self.config.max_messages = max.max(1);
    }

    /// The next delivery, waiting as long as it takes. Retriable failures
    /// (a lost connection, a timeout) are retried after a backoff, joining
    /// again if needed; other failures are returned.
    pub async fn next_delivery(&mut self) -> Result<GroupDelivery, ClientError> {
        loop {
            match self.next_within(self.config.max_wait).await? {
                Some(delivery) => return Ok(delivery),
                None => continue,
            }
        }
    }

    /// The next delivery if one is available within `wait`, else `None`.
    /// Retriable failures are retried (after a backoff) until `wait` has
    /// passed; other failures are returned.
    pub async fn next_within(
        &mut self,
        wait: Duration,
    ) -> Result<Option<GroupDelivery>, ClientError> {
        if let Some(delivery) = self.pop_live() {
            return Ok(Some(delivery));
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let poll = left.min(self.config.max_wait);
            match self.receive(poll).await {
                Ok(()) => {
                    self.failures = 0;
                    if let Some(delivery) = self.pop_live() {
                        return Ok(Some(delivery));
                    }
                }
                Err(err) if err.is_retriable() => {
                    let delay = self.config.retry_backoff.delay(self.failures);
                    self.failures = self.failures.saturating_add(1);
                    tracing::debug!(error = %err, ?delay, "receive failed; retrying");
                    if Instant::now() + delay >= deadline {
                        tokio::time::sleep_until(deadline).await;
                        return Ok(None);
                    }
                    tokio::time::sleep(delay).await;
                }
                Err(err) => return Err(err),
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Up to `max` deliveries at once (at least one) if any is available
    /// within `wait`, else none: what is buffered, or else what one Receive
    /// returns (asking for [`ConsumerConfig::max_messages`]). Whatever
    /// exceeds `max` stays buffered for the next call. Retries like
    /// [`Consumer::next_within`].
    pub async fn next_batch_within(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<GroupDelivery>, ClientError> {
        let Some(first) = self.next_within(wait).await? else {
            return Ok(Vec::new());
        };
        let mut batch = Vec::with_capacity(max.min(1 + self.buffered.len()));
        batch.push(first);
        while batch.len() < max {
            match self.pop_live() {
                Some(delivery) => batch.push(delivery),
                None => break,
            }
        }
        Ok(batch)
    }

    /// The deliveries as a stream; it ends after the first failure that is
    /// not retriable.
    pub fn into_stream(self) -> impl Stream<Item = Result<GroupDelivery, ClientError>> + Send {
        futures_util::stream::unfold(Some(self), |state| async move {
            let mut consumer = state?;
            match consumer.next_delivery().await {
                Ok(delivery) => Some((Ok(delivery), Some(consumer))),
                Err(err) => Some((Err(err), None)),
            }
        })
    }

    /// Leaves the group now. First the deliveries the application never
    /// received (buffered, or in the answer of a Receive still in flight)
    /// are released: back to the group at once, not counted as an attempt.
    /// Then the consumer's connection closes, so that the broker hands
    /// every lease it still holds (deliveries handed out and not settled)
    /// back to the group, each counted as an attempt, and the leases of
    /// those are no longer kept.
    pub async fn close(mut self) {
        self.collect_in_flight().await;
        let released = self.release_buffered().await;
        if released > 0 {
            tracing::debug!(released, "released deliveries never handed out");
        }
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.client.close().await;
    }

    /// Waits (at most until it must have been answered) for the Receive a
    /// caller stopped waiting for, and buffers its deliveries.
    async fn collect_in_flight(&mut self) {
        let Some(mut receiving) = self.receiving.take() else {
            return;
        };
        match tokio::time::timeout_at(receiving.expected_by, &mut receiving.task).await {
            Ok(Ok(Ok(answer))) => self.buffer(receiving.consumer_id, answer),
            Ok(_) => {}
            Err(_) => receiving.task.abort(),
        }
    }

    /// Releases every buffered delivery whose lease may still be alive, with
    /// one Settle request per membership: how many the broker took back.
    /// Those it refused, or all of them if the request fails (e.g. a broker
    /// without Settle v2), come back when their lease ends or the
    /// connection closes, counted as before.
    async fn release_buffered(&mut self) -> usize {
        let ack_timeout = self.shared.ack_timeout();
        let live: Vec<GroupDelivery> = self
            .buffered
            .drain(..)
            .filter(|(received, _)| received.elapsed() < ack_timeout)
            .map(|(_, delivery)| delivery)
            .collect();
        let mut released = 0;
        for run in live.chunk_by(|a, b| a.consumer_id == b.consumer_id) {
            let items = run
                .iter()
                .map(|d| SettleItem::release(d.partition, d.offset, d.attempt))
                .collect();
            match settle_items(&self.shared, run[0].consumer_id, items).await {
                Ok(results) => released += results.iter().filter(|r| r.is_ok()).count(),
                Err(err) => tracing::debug!(
                    error = %err,
                    count = run.len(),
                    "cannot release buffered deliveries; they return when the connection closes"
                ),
            }
            for d in run {
                d.batch.settled(d.index);
            }
        }
        released
    }

    /// The next buffered delivery whose lease can still be alive (received
    /// less than an ack timeout ago), tracked from now on so that its lease
    /// is kept while the application works on it. One whose lease has run
    /// out while it waited in the buffer is dropped, not handed out: the
    /// group gives that message to someone again.
    fn pop_live(&mut self) -> Option<GroupDelivery> {
        let ack_timeout = self.shared.ack_timeout();
        while let Some((received, delivery)) = self.buffered.pop_front() {
            if received.elapsed() >= ack_timeout {
                tracing::debug!(
                    partition = delivery.partition,
                    offset = delivery.offset,
                    "dropping a buffered delivery whose lease ran out before it was handed out"
                );
                delivery.batch.settled(delivery.index);
                continue;
            }
            delivery.batch.handed(delivery.index);
            return Some(delivery);
        }
        None
    }

    /// One Receive of up to `max_messages`, waiting up to `wait` (or the
    /// one a caller stopped waiting for, if any); joins again first if the
    /// connection was lost. Cancel-safe: the Receive runs as a task, kept
    /// in `receiving` until its answer is buffered.
    async fn receive(&mut self, wait: Duration) -> Result<(), ClientError> {
        if self.receiving.is_none() {
            self.rejoin_if_lost().await?;
            self.receiving = Some(self.start_receive(wait));
        }
        let Some(receiving) = self.receiving.as_mut() else {
            return Ok(());
        };
        let joined = (&mut receiving.task).await;
        let consumer_id = receiving.consumer_id;
        self.receiving = None;
        let answer = joined.unwrap_or_else(|err| {
            Err(ClientError::UnexpectedResponse(format!(
                "the Receive task ended without an answer: {err}"
            )))
        });
        match answer {
            Ok(answer) => {
                self.buffer(consumer_id, answer);
                Ok(())
            }
            Err(err) => {
                self.shared.observe(&err);
                Err(err)
            }
        }
    }

    /// Joins the group again if the connection was lost since the last
    /// join.
    async fn rejoin_if_lost(&mut self) -> Result<(), ClientError> {
        let reconnected = self.shared.client.connection_generation()
            != self.shared.joined_on.load(Ordering::SeqCst);
        if self.shared.lost.swap(false, Ordering::SeqCst) || reconnected {
            match join_group(&self.shared, &self.config.consumer_name).await {
                Ok((id, settings)) => {
                    tracing::info!(consumer_id = id, "joined the group again");
                    self.consumer_id = id;
                    self.settings = settings;
                }
                Err(err) => {
                    self.shared.observe(&err);
                    if err.is_retriable() {
                        self.shared.lost.store(true, Ordering::SeqCst);
                    }
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    /// Sends a Receive of up to `max_messages`, waiting up to `wait`, as a
    /// task of its own.
    fn start_receive(&self, wait: Duration) -> Receiving {
        let request = ReceiveRequest {
            topic: self.shared.topic.clone(),
            group: self.shared.group.clone(),
            consumer_id: self.consumer_id,
            max_messages: self.config.max_messages.max(1),
            max_wait_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
            max_bytes: self.config.max_bytes,
        };
        let timeout = self.shared.client.config().request_timeout + wait;
        let client = self.shared.client.clone();
        let task = tokio::spawn(async move {
            client
                .request_with_timeout(request.into(), timeout)
                .await
                .and_then(|response| expect_response!(response, Receive))
        });
        Receiving {
            consumer_id: self.consumer_id,
            expected_by: Instant::now() + wait + Duration::from_secs(1),
            task,
        }
    }

    /// Buffers the deliveries of a Receive answered for `consumer_id` (and
    /// has their leases kept once handed out).
    fn buffer(&mut self, consumer_id: u64, answer: ReceiveResponse) {
        let received = Instant::now();
        let items = answer
            .deliveries
            .iter()
            .map(|d| (d.partition, d.offset, d.attempt))
            .collect();
        let batch = Arc::new(ReceivedBatch::new(consumer_id, items));
        if self.config.keep_leases {
            self.shared.keeper.watch(&batch);
        }
        for (index, d) in answer.deliveries.into_iter().enumerate() {
            let delivery = GroupDelivery {
                topic: self.shared.topic.clone(),
                partition: d.partition,
                offset: d.offset,
                attempt: d.attempt,
                lease_deadline_ms: d.lease_deadline_ms,
                timestamp: d.timestamp_ms,
                key: d.key,
                value: d.value,
                headers: d
                    .headers
                    .into_iter()
                    .map(|h| Header {
                        name: h.name,
                        value: h.value,
                    })
                    .collect(),
                consumer_id,
                shared: Arc::clone(&self.shared),
                batch: Arc::clone(&batch),
                index,
            };
            self.buffered.push_back((received, delivery));
        }
    }
}

async fn join_group(
    shared: &Membership,
    consumer_name: &str,
) -> Result<(u64, GroupSettings), ClientError> {
    let request = JoinGroupRequest {
        topic: shared.topic.clone(),
        group: shared.group.clone(),
        consumer_name: consumer_name.to_string(),
    };
    let response = shared.client.request(request.into()).await?;
    let joined = expect_response!(response, JoinGroup)?;
    shared
        .joined_on
        .store(shared.client.connection_generation(), Ordering::SeqCst);
    let ack_timeout_ms = u64::from(joined.settings.ack_timeout_ms);
    shared
        .ack_timeout_ms
        .store(ack_timeout_ms, Ordering::Relaxed);
    Ok((joined.consumer_id, joined.settings))
}

/// Starts the task that keeps the leases of `shared`'s outstanding
/// deliveries alive (see [`LeaseKeeper`]). It holds the membership only
/// while it extends, and ends once it is dropped or closed.
fn keep_leases(shared: &Arc<Membership>) {
    let membership = Arc::downgrade(shared);
    tokio::spawn(async move {
        loop {
            let every = match membership.upgrade() {
                Some(shared) if !shared.closed.load(Ordering::SeqCst) => {
                    lease_keeper::every(shared.ack_timeout())
                }
                _ => return,
            };
            tokio::time::sleep(every).await;
            let Some(shared) = membership.upgrade() else {
                return;
            };
            if shared.closed.load(Ordering::SeqCst) {
                return;
            }
            extend_outstanding(&shared).await;
        }
    });
}

/// Extends every outstanding delivery's lease by the ack timeout; a
/// delivery whose lease is lost is no longer extended. A failed request is
/// tried at the next tick.
async fn extend_outstanding(shared: &Membership) {
    for (consumer_id, due) in shared.keeper.due(shared.ack_timeout()) {
        match settle_items(shared, consumer_id, due.items).await {
            Ok(results) => {
                for ((batch, index), result) in due.from.into_iter().zip(results) {
                    if result.is_err() {
                        batch.settled(index);
                    }
                }
            }
            Err(err) => tracing::debug!(error = %err, "extending leases failed; retrying"),
        }
    }
}
