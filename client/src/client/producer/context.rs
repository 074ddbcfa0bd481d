//! [`SenderCtx`]: what every partition sender of one producer shares, and
//! [`ThrottleStats`], what the broker's produce quota cost it.
//!
//! It holds the client, the configuration, the idempotent session (see
//! [`session`](crate::client::session)), the cache of partition counts and
//! the produce-quota throttle. It does not hold the senders' queues:
//! dropping the producer closes them, and the senders then deliver what
//! they hold and exit.
//!
//! ## Invariants
//!
//! - A topic's cached partition count comes from DescribeTopic and is
//!   never zero; it is forgotten when the broker answers `UnknownTopic` or
//!   `UnknownPartition`, so the next lookup asks again.
//! - Throttle: once a Produce response carried `throttle_ms`, no sender
//!   of this producer sends another request before that much time has
//!   passed (or its batch's delivery deadline, whichever is first); the
//!   throttle's end only moves later.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use super::config::ProducerConfig;
use super::gather::Gatherer;
use super::lock;
use crate::client::admin::describe_topic;
use crate::client::connection::Client;
use crate::client::error::ClientError;
use crate::client::session::{Session, SessionId, default_producer_name};
use crate::protocol::ErrorCode;

/// How much the broker's produce quota has held a [`Producer`](super::Producer)
/// back.
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

/// What partition senders need (not the senders map: dropping the
/// producer closes their queues).
#[derive(Debug)]
pub(super) struct SenderCtx {
    pub(super) client: Client,
    pub(super) config: ProducerConfig,
    partition_counts: Mutex<HashMap<String, u32>>,
    /// The idempotent session; `None` when idempotence is off.
    pub(super) session: Option<Arc<Session>>,
    /// Until when the broker asked for no more produce requests, and the
    /// statistics of it.
    throttle: Mutex<(Option<Instant>, ThrottleStats)>,
    /// The task that puts the senders' batches together into requests,
    /// started by the first batch sent.
    gatherer: OnceLock<Gatherer>,
}

impl SenderCtx {
    /// The senders' context of a producer: with an idempotent session
    /// named by the configuration (or the host and process) when
    /// idempotence is on.
    pub(super) fn new(client: Client, config: ProducerConfig) -> SenderCtx {
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
            gatherer: OnceLock::new(),
        }
    }

    /// The largest batch: the configured one, capped by the broker's
    /// largest once known.
    pub(super) fn max_batch_bytes(&self) -> usize {
        let configured = self.config.max_batch_bytes;
        match self.client.server_limits() {
            Some(limits) => configured.min(limits.max_batch_size as usize),
            None => configured,
        }
    }

    /// The producer's gatherer (see [`gather`](super::gather)), started
    /// on first use (from a sender task, so on the producer's runtime).
    pub(super) fn gatherer(&self) -> &Gatherer {
        self.gatherer.get_or_init(|| {
            Gatherer::start(
                self.client.clone(),
                self.config.request_timeout,
                self.max_batch_bytes(),
            )
        })
    }

    /// The producer's current session id (registering if needed, until
    /// `deadline`); the error names the producer.
    pub(super) async fn registered(
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
    pub(super) async fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
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

    pub(super) fn forget_partition_count(&self, topic: &str) {
        lock(&self.partition_counts).remove(topic);
    }

    /// Notes a Produce response's `throttle_ms`.
    pub(super) fn throttled(&self, throttle_ms: u32) {
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

    /// How often and how long the broker's produce quota held the
    /// producer back.
    pub(super) fn throttle_stats(&self) -> ThrottleStats {
        lock(&self.throttle).1
    }

    /// Waits until the broker's throttle (if any) is over, or `deadline`.
    pub(super) async fn wait_out_throttle(&self, deadline: Instant) {
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

/// `err` with `context` before its message, if the broker said it.
fn wrap(err: ClientError, context: &str) -> ClientError {
    match err {
        ClientError::Broker { code, message } => ClientError::Broker {
            code,
            message: format!("{context}: {message}"),
        },
        other => other,
    }
}
