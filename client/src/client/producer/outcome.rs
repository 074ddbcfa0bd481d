//! Delivery of results: reading the answer to a batch's Produce request
//! ([`interpret`]), completing each record's future with its offset, or
//! failing them all ([`fail`]), and telling whether an error proves a
//! batch was not appended ([`not_appended`]).
//!
//! ## Invariants
//!
//! - When a batch is stored, its record `i` completes with `base_offset +
//!   i`, the partition and the broker's append time, and the batch is
//!   dropped, releasing its buffer bytes. When it is not, [`interpret`]
//!   hands it back untouched with the error, for the caller to retry or
//!   [`fail`], which completes every record with that error.
//! - Each Produce response's `throttle_ms` is noted for the producer's
//!   throttle, whatever the outcome.
//! - An `UnknownTopic` or `UnknownPartition` answer forgets the topic's
//!   cached partition count.

use super::batching::ProducerBatch;
use super::context::SenderCtx;
use super::record::RecordMetadata;
use crate::client::connection::expect_response;
use crate::client::error::ClientError;
use crate::client::session::SessionId;
use crate::protocol::{ErrorCode, Response};

/// Whether an error proves the batch was not appended.
pub(super) fn not_appended(err: &ClientError) -> bool {
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
pub(super) struct Stored {
    pub(super) session: Option<SessionId>,
    pub(super) base_sequence: i32,
    pub(super) count: u32,
}

/// A batch handed back with the error that failed it.
pub(super) type Failed = Box<(ProducerBatch, ClientError)>;

/// Reads the answer to a batch's Produce request: on success completes
/// every record's future; otherwise hands the batch back with the error.
pub(super) fn interpret(
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

/// Fails every record of `batch` with `err`.
pub(super) fn fail(batch: ProducerBatch, err: ClientError) {
    tracing::warn!(
        topic = %batch.topic, partition = batch.partition, sequence = batch.stamp.base_sequence,
        error = %err, "batch failed"
    );
    for reply in batch.replies {
        let _ = reply.send(Err(err.clone()));
    }
}
