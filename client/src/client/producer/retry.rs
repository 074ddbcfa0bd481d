//! Retries: [`deliver`] sends one batch until it is stored, fails for
//! good or its delivery timeout passes; [`resend`] does so for a batch of
//! an idempotent producer on its own, keeping the partition's sequence
//! numbers in step with what the broker did.
//!
//! ## Invariants
//!
//! - Retriable failures (lost connection, timeout, open circuit, retriable
//!   broker codes) resend the *same bytes* after an exponential backoff
//!   with jitter ([`ProducerConfig::retry_backoff`]), until
//!   [`ProducerConfig::delivery_timeout`] after the batch's first record
//!   was enqueued; a retry that could not start before then is not made.
//!   While the circuit is open, buffered batches keep retrying until their
//!   delivery timeout, and their requests serve as probes.
//! - Idempotence: every retry resends the same stamp, so the broker
//!   appends the batch once and answers a retry with the original
//!   offsets. A batch is renumbered only when the broker cannot hold its
//!   stamp: stamped after a batch that was finally not stored (its
//!   sequence had a gap), or under a session that was reset. Renumbered,
//!   it was never sent, so what the broker said to the old stamp does not
//!   apply to it.
//! - A batch that may have been appended under a session that had to be
//!   abandoned fails with [`ClientError::OutcomeUnknown`] rather than
//!   risk a duplicate; a batch whose outcome stays unknown resets the
//!   session, so that no later batch can be mistaken for it. A fenced
//!   batch fences the producer (see [`session`](crate::client::session)).
//! - Without idempotence, a retry after a lost answer may append a batch
//!   twice; each record's future reports the offsets of the append that
//!   was acknowledged.
//!
//! [`ProducerConfig::retry_backoff`]: super::ProducerConfig::retry_backoff
//! [`ProducerConfig::delivery_timeout`]: super::ProducerConfig::delivery_timeout

use tokio::time::Instant;

use super::batching::ProducerBatch;
use super::config::ProducerConfig;
use super::context::SenderCtx;
use super::outcome::{Failed, fail, interpret, not_appended};
use super::sequence::{next_sequence, stamp_for};
use crate::client::error::ClientError;
use crate::client::session::{Session, SessionId};
use crate::protocol::ErrorCode;

/// What became of a batch.
pub(super) enum Delivered {
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

/// What came of one Produce request of a batch.
enum Attempt {
    /// Stored; every future completed.
    Stored,
    /// Not stored, or not known to be: the batch and the error.
    Failed(Failed),
    /// The delivery deadline passed before the request could go.
    TooLate(ProducerBatch),
}

/// Sends one batch until it is stored, fails for good, or its delivery
/// timeout passes; completes every record's future (except when the
/// caller must decide: fenced, unknown producer). `prior` is the error of
/// an attempt already made, handled as this loop's first answer.
pub(super) async fn deliver(
    ctx: &SenderCtx,
    batch: ProducerBatch,
    prior: Option<ClientError>,
) -> Delivered {
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
            None => match attempt_once(ctx, batch, deadline).await {
                Attempt::Stored => return Delivered::Stored,
                Attempt::TooLate(batch) => {
                    let err = delivery_timeout(config, last_error);
                    return give_up(batch, err, maybe_appended);
                }
                Attempt::Failed(failed) => {
                    let (back, err) = *failed;
                    batch = back;
                    err
                }
            },
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
            return give_up(batch, err, maybe_appended);
        }
        let delay = config.retry_backoff.delay(attempt);
        attempt = attempt.saturating_add(1);
        if Instant::now() + delay >= deadline {
            return give_up(batch, delivery_timeout(config, err), maybe_appended);
        }
        tracing::debug!(
            topic = %batch.topic, partition = batch.partition, attempt, ?delay, error = %err,
            "retrying produce"
        );
        last_error = err;
        tokio::time::sleep(delay).await;
    }
}

/// Sends `batch` once, after the broker's throttle, and reads the answer;
/// [`Attempt::TooLate`] if `deadline` passes first.
async fn attempt_once(ctx: &SenderCtx, batch: ProducerBatch, deadline: Instant) -> Attempt {
    ctx.wait_out_throttle(deadline).await;
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Attempt::TooLate(batch);
    }
    let answer = ctx
        .client
        .request_with_timeout(
            batch.produce_request(ctx.config.request_timeout),
            ctx.config.request_timeout.min(remaining),
        )
        .await;
    match interpret(ctx, batch, answer) {
        Ok(_) => Attempt::Stored,
        Err(failed) => Attempt::Failed(failed),
    }
}

/// The error of a batch whose delivery timeout passed, `last_error` the
/// error of its last attempt.
fn delivery_timeout(config: &ProducerConfig, last_error: ClientError) -> ClientError {
    ClientError::DeliveryTimeout {
        after: config.delivery_timeout,
        last_error: Box::new(last_error),
    }
}

/// Fails every record of `batch` with `err`: [`Delivered::Unknown`] if an
/// attempt may have appended it, else [`Delivered::NotStored`].
fn give_up(batch: ProducerBatch, err: ClientError, maybe_appended: bool) -> Delivered {
    fail(batch, err);
    if maybe_appended {
        Delivered::Unknown
    } else {
        Delivered::NotStored
    }
}

/// Delivers one batch on its own (retrying as [`deliver`] does), keeping
/// the partition's sequence numbers in step with what the broker did.
/// `prior` is the error of an attempt already made.
pub(super) async fn resend(
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
    let Some((batch, prior)) = in_step(sequence, id, batch, prior) else {
        return;
    };
    deliver_in_session(ctx, &session, sequence, id, batch, prior).await;
}

/// `batch` with the stamp that follows the partition's sequence in
/// session `id`, and the prior error that still applies to it. A batch
/// stamped otherwise is renumbered (forgetting what was said to its old
/// stamp), unless it may already be stored under an abandoned session: it
/// then fails with an unknown outcome, and `None` is returned.
fn in_step(
    sequence: &mut Option<(u64, i32)>,
    id: SessionId,
    batch: ProducerBatch,
    prior: Option<ClientError>,
) -> Option<(ProducerBatch, Option<ClientError>)> {
    let stamp = stamp_for(sequence, id);
    if batch.session == Some(id) && batch.stamp == stamp {
        return Some((batch, prior));
    }
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
        fail(batch, err);
        return None;
    }
    // Renumbered, it was never sent: what was said to the old stamp
    // (fenced, a gap) does not apply to it.
    Some((batch.restamped(stamp, id), None))
}

/// Delivers `batch`, stamped in step in session `id`, and brings the
/// partition's sequence and the session up to date with the outcome:
/// advanced past a stored batch, reset after an unknown outcome, fenced,
/// or, when the broker forgot the producer, a new session to send the
/// batch again under.
async fn deliver_in_session(
    ctx: &SenderCtx,
    session: &Session,
    sequence: &mut Option<(u64, i32)>,
    id: SessionId,
    batch: ProducerBatch,
    prior: Option<ClientError>,
) {
    let mut batch = batch;
    let mut prior = prior;
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
                match under_new_session(ctx, session, sequence, id, retry).await {
                    Some(restamped) => batch = restamped,
                    None => return,
                }
            }
        }
    }
}

/// After the broker forgot this producer (state expired): the batch was
/// not appended, so it can go again under a new session. Returns it
/// restamped, first of the partition in that session, or `None` once it
/// failed because no session could be registered.
async fn under_new_session(
    ctx: &SenderCtx,
    session: &Session,
    sequence: &mut Option<(u64, i32)>,
    id: SessionId,
    retry: ProducerBatch,
) -> Option<ProducerBatch> {
    session.reset(id.generation).await;
    let deadline = retry.created_at + ctx.config.delivery_timeout;
    let fresh = match session
        .current(&ctx.client, &ctx.config.retry_backoff, deadline)
        .await
    {
        Ok(fresh) => fresh,
        Err(err) => {
            fail(retry, err);
            return None;
        }
    };
    *sequence = None;
    let stamp = stamp_for(sequence, fresh);
    Some(retry.restamped(stamp, fresh))
}
