//! [`GroupDelivery`]: one message leased to a [`Consumer`](super::Consumer), and the Settle
//! requests that settle it (ack, nack, reject, extend; one request for
//! many with [`GroupDelivery::ack_all`], releases on close).
//!
//! A delivery shares its consumer's membership (the connection and the
//! group) and the flags of its Receive's batch: whether it was handed out
//! and settled, for the lease keeper. Settling it (or failing to) ends the
//! keeper's interest in it; an extend does not.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::connection::expect_response;
use super::consumer::Membership;
use super::error::ClientError;
use super::lease_keeper::ReceivedBatch;
use crate::batch::{Header, Record};
use crate::protocol::{ErrorCode, SettleAction, SettleItem, SettleRequest};

/// One message leased to a [`Consumer`](super::Consumer) until `lease_deadline_ms`: settle
/// it with [`ack`](GroupDelivery::ack), [`nack`](GroupDelivery::nack),
/// [`reject`](GroupDelivery::reject), or keep it longer with
/// [`extend`](GroupDelivery::extend).
#[derive(Debug, Clone)]
pub struct GroupDelivery {
    /// The topic.
    pub topic: String,
    /// Partition id.
    pub partition: u32,
    /// The message's offset in its partition.
    pub offset: u64,
    /// Which delivery of this message to the group this is: 1 the first.
    pub attempt: u32,
    /// When the lease ends, ms since the Unix epoch (broker clock).
    pub lease_deadline_ms: i64,
    /// The record's append time, ms since the Unix epoch.
    pub timestamp: i64,
    /// The record's key, if any.
    pub key: Option<Bytes>,
    /// The record's value.
    pub value: Bytes,
    /// The record's headers, in order.
    pub headers: Vec<Header>,
    pub(super) consumer_id: u64,
    pub(super) shared: Arc<Membership>,
    /// The deliveries of the same Receive, with whether each was handed
    /// out and settled (for the lease keeper), and this one's index there.
    pub(super) batch: Arc<ReceivedBatch>,
    pub(super) index: usize,
}

impl GroupDelivery {
    /// The message as a plain record (offset, timestamp, key, value, headers).
    pub fn record(&self) -> Record {
        Record {
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.clone(),
            value: self.value.clone(),
            headers: self.headers.clone(),
        }
    }

    /// Settles the message: done for the group. Returns once the broker
    /// has answered; `LeaseLost` if the lease had already ended.
    pub async fn ack(&self) -> Result<(), ClientError> {
        self.settle(SettleAction::Ack, 0, String::new()).await
    }

    /// Asks for redelivery after `delay` (`None`: the group's backoff).
    pub async fn nack(&self, delay: Option<Duration>) -> Result<(), ClientError> {
        let ms = delay.map_or(0, |d| millis(d).max(1));
        self.settle(SettleAction::Nack, ms, String::new()).await
    }

    /// Dead-letters the message at once, recording `reason` (at most
    /// 1024 bytes; longer is cut at a character boundary).
    pub async fn reject(&self, reason: impl Into<String>) -> Result<(), ClientError> {
        let mut reason = reason.into();
        let keep = crate::protocol::truncate_at_char_boundary(
            &reason,
            crate::protocol::MAX_SETTLE_REASON_LEN,
        )
        .len();
        reason.truncate(keep);
        self.settle(SettleAction::Reject, 0, reason).await
    }

    /// Makes the lease end `by` from now (for slow work).
    pub async fn extend(&self, by: Duration) -> Result<(), ClientError> {
        self.settle(SettleAction::Extend, millis(by).max(1), String::new())
            .await
    }

    async fn settle(
        &self,
        action: SettleAction,
        delay_ms: u32,
        reason: String,
    ) -> Result<(), ClientError> {
        let item = SettleItem {
            partition: self.partition,
            offset: self.offset,
            attempt: self.attempt,
            action,
            delay_ms,
            reason,
        };
        let settled = settle_items(&self.shared, self.consumer_id, vec![item]).await;
        if action != SettleAction::Extend {
            // Settled, or failed: either way no longer the keeper's to extend.
            self.batch.settled(self.index);
        }
        settled?.into_iter().next().unwrap_or_else(|| {
            Err(ClientError::UnexpectedResponse(
                "Settle answer without a result".into(),
            ))
        })
    }

    /// Acks many deliveries with one Settle request per consumer
    /// membership (usually exactly one), instead of one round trip each.
    ///
    /// The outer error is a failed request (nothing is known to be
    /// settled; the leases come back when they expire or the connection
    /// closes); otherwise there is one result per delivery, in order,
    /// `LeaseLost` for a lease that had already ended.
    pub async fn ack_all(
        deliveries: &[GroupDelivery],
    ) -> Result<Vec<Result<(), ClientError>>, ClientError> {
        let mut results = Vec::with_capacity(deliveries.len());
        let mut rest = deliveries;
        while let Some(first) = rest.first() {
            let same = rest
                .iter()
                .take_while(|d| {
                    Arc::ptr_eq(&d.shared, &first.shared) && d.consumer_id == first.consumer_id
                })
                .count();
            let (run, tail) = rest.split_at(same);
            let items = run
                .iter()
                .map(|d| SettleItem::ack(d.partition, d.offset, d.attempt))
                .collect();
            let answers = settle_items(&first.shared, first.consumer_id, items).await;
            for d in run {
                d.batch.settled(d.index);
            }
            let answers = answers?;
            if answers.len() != run.len() {
                return Err(ClientError::UnexpectedResponse(format!(
                    "Settle answer with {} results for {} items",
                    answers.len(),
                    run.len()
                )));
            }
            results.extend(answers);
            rest = tail;
        }
        Ok(results)
    }
}

/// Sends one Settle request with `items` for `consumer_id`; one result per
/// item, in order, naming the message when the broker refused it.
pub(super) async fn settle_items(
    shared: &Membership,
    consumer_id: u64,
    items: Vec<SettleItem>,
) -> Result<Vec<Result<(), ClientError>>, ClientError> {
    let actions: Vec<SettleAction> = items.iter().map(|i| i.action).collect();
    let request = SettleRequest {
        topic: shared.topic.clone(),
        group: shared.group.clone(),
        consumer_id,
        items,
    };
    let answer = shared
        .client
        .request(request.into())
        .await
        .and_then(|response| expect_response!(response, Settle));
    let answer = match answer {
        Ok(answer) => answer,
        Err(err) => {
            shared.observe(&err);
            return Err(err);
        }
    };
    Ok(answer
        .results
        .into_iter()
        .zip(actions)
        .map(|(result, action)| {
            if result.error_code == ErrorCode::None {
                Ok(())
            } else {
                Err(ClientError::broker_said(
                    result.error_code,
                    format!(
                        "{action:?} of {}/{}@{}",
                        shared.topic, result.partition, result.offset
                    ),
                    &result.error_message,
                ))
            }
        })
        .collect())
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}
