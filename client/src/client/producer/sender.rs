//! The sender of one topic-partition ([`run_partition`]): one task per
//! partition that fills batches from its queue, sends them in order and
//! handles their answers oldest first, recovering the whole window in
//! order when one fails.
//!
//! ## How batches go
//!
//! Records are appended to an [`OpenBatch`] until
//! [`ProducerConfig::linger`](super::ProducerConfig::linger) has passed
//! since its first record was enqueued, or the next record would make it
//! larger than the largest batch, or a flush asks for it. An idempotent
//! producer does not wait for a batch's answer before sending the
//! partition's next *full* batches: up to
//! [`ProducerConfig::max_in_flight_batches`](super::ProducerConfig::max_in_flight_batches)
//! (at most [`MAX_IN_FLIGHT_BATCHES`]) are in flight on the connection, in
//! order (the broker appends a connection's produces to a partition in the
//! order it read them). A batch that is not full waits, after its linger,
//! until nothing of its partition is in flight, gathering the records that
//! arrive meanwhile, unless the linger is zero: then nothing waits, and a
//! batch goes with the records already queued as soon as the window has
//! room (the broker's group commit still shares one fsync among the
//! requests that arrive while one runs, so a record does not wait for the
//! round trip of the batch before it). A linger that is already over when
//! the batch opens (always, with a linger of zero) arms no timer: tokio's
//! timers fire on whole-millisecond ticks, so sleeping until an instant
//! just passed would hold the batch up to 1 ms.
//!
//! ## Invariants
//!
//! - A partition's batches are sent in the order their records were
//!   enqueued, and a retried batch is never overtaken: when the oldest
//!   batch in flight fails, the sender collects the answers of the batches
//!   sent after it and goes through them all again one at a time, in
//!   order ([`recover`]). Without idempotence one batch is in flight.
//! - The partition's sequence (`(session generation, next base
//!   sequence)`, see [`sequence`](super::sequence)) advances past each
//!   batch when it is stamped; after a failure it restarts from the failed
//!   batch's and follows what the broker really stored.
//! - A flush is answered once every record received before it was
//!   delivered or failed. When its queue closes, the sender delivers what
//!   it holds, then exits.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::batching::{Command, Enqueued, OpenBatch, ProducerBatch};
use super::config::MAX_IN_FLIGHT_BATCHES;
use super::context::SenderCtx;
use super::gather::{Answer, Part, Reply};
use super::outcome::{Failed, fail, interpret};
use super::retry::resend;
use super::sequence::{next_sequence, stamp_for};
use crate::batch::ProducerStamp;
use crate::client::error::ClientError;
use crate::protocol::ErrorCode;

/// A batch sent and waiting for its answer.
pub(super) struct Sent {
    batch: ProducerBatch,
    answer: Pin<Box<dyn Future<Output = Answer> + Send>>,
}

/// What woke a partition sender.
enum Event {
    Command(Option<Command>),
    Answer(Answer),
    Linger,
}

/// What a sender with no batch open got from its queue.
enum Idle {
    /// The first record of the next batch.
    Record(Enqueued),
    /// An answer or a flush, handled: wait again.
    Handled,
    /// The queue closed and everything in flight is done: exit.
    Closed,
}

/// Why a batch stopped filling.
struct Filled {
    /// The record that did not fit: the first of the next batch.
    carry: Option<Enqueued>,
    /// Flushes to answer once the batch and those before it are done.
    flush_acks: Vec<oneshot::Sender<()>>,
}

/// The answer of the oldest batch in flight (never ready when none is).
async fn front_answer(in_flight: &mut VecDeque<Sent>) -> Answer {
    match in_flight.front_mut() {
        Some(sent) => sent.answer.as_mut().await,
        None => std::future::pending().await,
    }
}

/// One partition sender's state.
struct PartitionSender {
    ctx: Arc<SenderCtx>,
    topic: Arc<str>,
    partition: u32,
    max_batch_bytes: usize,
    /// (session generation, base sequence of the next batch sealed).
    sequence: Option<(u64, i32)>,
    in_flight: VecDeque<Sent>,
    /// Size of the last batch: the next one's buffer starts that large (a
    /// buffer grown by doubling copies its bytes about once more).
    last_batch_bytes: usize,
}

/// The sender of one topic-partition: fills batches from its queue and
/// sends them in order, with up to `max_in_flight_batches` of them in
/// flight when idempotent (one otherwise), answers handled oldest first.
pub(super) async fn run_partition(
    ctx: Arc<SenderCtx>,
    topic: Arc<str>,
    partition: u32,
    max_batch_bytes: usize,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let window = if ctx.session.is_some() {
        ctx.config
            .max_in_flight_batches
            .clamp(1, MAX_IN_FLIGHT_BATCHES)
    } else {
        1
    };
    let mut sender = PartitionSender {
        ctx,
        topic,
        partition,
        max_batch_bytes,
        sequence: None,
        in_flight: VecDeque::new(),
        last_batch_bytes: 0,
    };
    let mut carry: Option<Enqueued> = None;
    loop {
        if sender.in_flight.len() >= window {
            let answer = front_answer(&mut sender.in_flight).await;
            sender.on_front_answer(answer).await;
            continue;
        }
        let first = match carry.take() {
            Some(first) => first,
            None => match sender.idle(&mut commands).await {
                Idle::Record(first) => first,
                Idle::Handled => continue,
                Idle::Closed => return,
            },
        };
        carry = sender.batch_and_send(first, &mut commands).await;
    }
}

impl PartitionSender {
    /// With no batch open: waits for the next command or answer and
    /// handles it.
    async fn idle(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>) -> Idle {
        let event = tokio::select! {
            biased;
            answer = front_answer(&mut self.in_flight) => Event::Answer(answer),
            command = commands.recv() => Event::Command(command),
        };
        match event {
            Event::Answer(answer) => {
                self.on_front_answer(answer).await;
                Idle::Handled
            }
            Event::Linger | Event::Command(None) => {
                self.drain().await;
                Idle::Closed
            }
            Event::Command(Some(Command::Flush(ack))) => {
                self.drain().await;
                let _ = ack.send(());
                Idle::Handled
            }
            Event::Command(Some(Command::Record(first))) => Idle::Record(first),
        }
    }

    /// Fills a batch starting with `first`, sends it, and answers the
    /// flushes that asked for it once everything in flight is done.
    /// Returns the record that did not fit, if any.
    async fn batch_and_send(
        &mut self,
        first: Enqueued,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Option<Enqueued> {
        let mut batch = OpenBatch::new(first, self.last_batch_bytes);
        let filled = self.fill(&mut batch, commands).await;
        self.last_batch_bytes = batch.builder.encoded_len().min(self.max_batch_bytes);
        send_batch(
            &self.ctx,
            &mut self.sequence,
            &mut self.in_flight,
            batch,
            self.topic.clone(),
            self.partition,
        )
        .await;
        if !filled.flush_acks.is_empty() {
            self.drain().await;
            for ack in filled.flush_acks {
                let _ = ack.send(());
            }
        }
        filled.carry
    }

    /// Adds records from the queue to `batch` until it is full, its
    /// linger is over with nothing in flight (with a linger of zero: at
    /// once, with the records already queued), a flush asks for it or the
    /// queue closes; handles the answers that arrive meanwhile.
    async fn fill(
        &mut self,
        batch: &mut OpenBatch,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Filled {
        let deadline = batch.created_at + self.ctx.config.linger;
        // A linger already over (always with no linger) arms no timer:
        // tokio's timers fire on whole-millisecond ticks, so a sleep until
        // an instant just passed would hold the batch up to 1 ms.
        let mut lingered = deadline <= Instant::now();
        let mut filled = Filled {
            carry: None,
            flush_acks: Vec::new(),
        };
        // A batch goes when it is full, or once its linger is over and no
        // batch of the partition is in flight: with a linger, only full
        // batches are pipelined, and at a moderate rate the records that
        // arrive while one batch is committed share the next batch (one
        // request) instead of each taking a request of its own. A linger
        // of zero asks for latency: the batch goes now, pipelined behind
        // those in flight (the caller left room in the window), and the
        // broker commits the requests that queue during one fsync with the
        // next one.
        let pipeline_partial = self.ctx.config.linger.is_zero();
        while batch.builder.encoded_len() < self.max_batch_bytes {
            let event = if lingered && (pipeline_partial || self.in_flight.is_empty()) {
                // The batch goes now, with the records already queued.
                match commands.try_recv() {
                    Ok(command) => Event::Command(Some(command)),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => Event::Command(None),
                }
            } else {
                tokio::select! {
                    biased;
                    command = commands.recv() => Event::Command(command),
                    _ = tokio::time::sleep_until(deadline), if !lingered => Event::Linger,
                    answer = front_answer(&mut self.in_flight) => Event::Answer(answer),
                }
            };
            match event {
                Event::Command(None) => break,
                Event::Linger => {
                    lingered = true;
                    if self.in_flight.is_empty() {
                        break;
                    }
                }
                Event::Answer(answer) => {
                    self.on_front_answer(answer).await;
                    if lingered && self.in_flight.is_empty() {
                        break;
                    }
                }
                Event::Command(Some(Command::Flush(ack))) => {
                    filled.flush_acks.push(ack);
                    break;
                }
                Event::Command(Some(Command::Record(next))) => {
                    if batch.fits(&next, self.max_batch_bytes) {
                        batch.push(next);
                    } else {
                        filled.carry = Some(next);
                        break;
                    }
                }
            }
        }
        filled
    }

    /// Handles the answer of the oldest batch in flight (see
    /// [`on_front_answer`]).
    async fn on_front_answer(&mut self, answer: Answer) {
        on_front_answer(&self.ctx, &mut self.sequence, &mut self.in_flight, answer).await;
    }

    /// Waits for every batch in flight to be delivered or to fail.
    async fn drain(&mut self) {
        drain(&self.ctx, &mut self.sequence, &mut self.in_flight).await;
    }
}

/// Waits for every batch in flight to be delivered or to fail.
pub(super) async fn drain(
    ctx: &SenderCtx,
    sequence: &mut Option<(u64, i32)>,
    in_flight: &mut VecDeque<Sent>,
) {
    while !in_flight.is_empty() {
        let answer = front_answer(in_flight).await;
        on_front_answer(ctx, sequence, in_flight, answer).await;
    }
}

/// Stamps a batch for the idempotent session (if any), advancing the
/// partition's sequence past it, and hands it to the producer's gatherer
/// (which sends it, with other partitions' batches ready at the same
/// moment) without waiting for the answer.
pub(super) async fn send_batch(
    ctx: &SenderCtx,
    sequence: &mut Option<(u64, i32)>,
    in_flight: &mut VecDeque<Sent>,
    open: OpenBatch,
    topic: Arc<str>,
    partition: u32,
) {
    let deadline = open.created_at + ctx.config.delivery_timeout;
    let batch = match ctx.session.clone() {
        None => open.seal(topic, partition, ProducerStamp::NONE, None),
        Some(session) => {
            let id = match ctx.registered(&session, deadline).await {
                Ok(id) => id,
                Err(err) => {
                    return fail(open.seal(topic, partition, ProducerStamp::NONE, None), err);
                }
            };
            let count = open.replies.len() as u32;
            let stamp = stamp_for(sequence, id);
            *sequence = Some((id.generation, next_sequence(stamp.base_sequence, count)));
            open.seal(topic, partition, stamp, Some(id))
        }
    };
    ctx.wait_out_throttle(deadline).await;
    let remaining = deadline.saturating_duration_since(Instant::now());
    let answer: Pin<Box<dyn Future<Output = Answer> + Send>> = if remaining.is_zero() {
        // Its records waited past their delivery timeout (an outage):
        // never sent; the retry path fails it as not stored.
        Box::pin(std::future::ready(Answer {
            result: Err(ClientError::Timeout {
                after: ctx.config.delivery_timeout,
            }),
            queued: false,
        }))
    } else {
        let (reply, replied) = oneshot::channel();
        let timeout = ctx.config.request_timeout.min(remaining);
        ctx.gatherer().send(Part {
            topic: batch.topic.clone(),
            partition: batch.partition,
            bytes: batch.bytes.clone(),
            timeout,
            deadline: Instant::now() + timeout,
            reply,
        });
        Box::pin(async move {
            match replied.await {
                Ok(Reply::Alone(pending, _in_flight)) => Answer {
                    result: pending.answer().await,
                    queued: true,
                },
                Ok(Reply::Answered(answer)) => answer,
                // The gatherer dropped the batch unanswered (it panicked):
                // whether it was sent is unknown.
                Err(_) => Answer {
                    result: Err(ClientError::Closed),
                    queued: true,
                },
            }
        })
    };
    in_flight.push_back(Sent { batch, answer });
}

/// Handles the answer of the oldest batch in flight: completes it, or, if
/// it failed, recovers the whole window in order.
async fn on_front_answer(
    ctx: &SenderCtx,
    sequence: &mut Option<(u64, i32)>,
    in_flight: &mut VecDeque<Sent>,
    answer: Answer,
) {
    let Some(sent) = in_flight.pop_front() else {
        return;
    };
    if let Err(failed) = interpret(ctx, sent.batch, answer.result) {
        recover(ctx, sequence, (failed, answer.queued), in_flight).await;
    }
}

/// After the oldest batch in flight failed: collects the answers of the
/// batches sent after it, then goes through them all in order, one at a
/// time: a batch already stored is done; a failed one is retried (see
/// [`deliver`](super::retry::deliver)), restamped first if an earlier
/// batch was not stored. A batch that may have been appended under a
/// session that had to be abandoned fails with an unknown outcome rather
/// than risk a duplicate.
async fn recover(
    ctx: &SenderCtx,
    sequence: &mut Option<(u64, i32)>,
    failed: (Failed, bool),
    in_flight: &mut VecDeque<Sent>,
) {
    let mut later = Vec::with_capacity(in_flight.len());
    while let Some(sent) = in_flight.pop_front() {
        let answer = sent.answer.await;
        later.push((interpret(ctx, sent.batch, answer.result), answer.queued));
    }
    // Sequences restart from the failed batch's: later batches are
    // renumbered from what is really stored.
    let (first, first_queued) = failed;
    if let Some(id) = first.0.session {
        *sequence = Some((id.generation, first.0.stamp.base_sequence));
    }
    for (outcome, queued) in std::iter::once((Err(first), first_queued)).chain(later) {
        match outcome {
            Ok(stored) => {
                if let Some(id) = stored.session {
                    *sequence = Some((
                        id.generation,
                        next_sequence(stored.base_sequence, stored.count),
                    ));
                }
            }
            Err(failed) => {
                let (batch, err) = *failed;
                // A batch never queued, or refused only because an earlier
                // one was missing, goes again fresh, in its turn; otherwise
                // its error counts as the first attempt.
                let prior =
                    (queued && err.code() != Some(ErrorCode::OutOfOrderSequence)).then_some(err);
                resend(ctx, sequence, batch, prior).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use tokio::sync::Semaphore;

    use super::*;
    use crate::client::connection::Client;
    use crate::client::producer::{ProducerConfig, ProducerRecord};
    use crate::client::tests::fake_broker::FakeBroker;
    use crate::client::tests::{fast_client_config, fast_producer_config};

    /// With no linger and nothing in flight, a batch goes at once: on a
    /// paused clock, filling it must not move time. It used to sleep until
    /// its (already passed) linger deadline, which tokio rounds up to the
    /// next millisecond tick: up to 1 ms added to every such batch
    /// (issue 16, W3 latency).
    #[tokio::test]
    async fn a_batch_without_linger_goes_without_waiting_for_a_timer_tick() {
        let broker = FakeBroker::start().await;
        broker.create_topic("t", 1);
        let client = Client::connect_with(broker.addr(), fast_client_config())
            .await
            .unwrap();
        let config = ProducerConfig {
            linger: Duration::ZERO,
            ..fast_producer_config()
        };
        let mut sender = PartitionSender {
            ctx: Arc::new(SenderCtx::new(client, config)),
            topic: "t".into(),
            partition: 0,
            max_batch_bytes: 1 << 20,
            sequence: None,
            in_flight: VecDeque::new(),
            last_batch_bytes: 0,
        };
        let (queue, mut commands) = mpsc::unbounded_channel();
        let buffer = Arc::new(Semaphore::new(1024));
        let record = |value: &'static str| Enqueued {
            record: ProducerRecord::new(value).partition(0),
            size: 16,
            permit: buffer.clone().try_acquire_many_owned(16).unwrap(),
            enqueued_at: Instant::now(),
            reply: oneshot::channel().0,
        };
        tokio::time::pause();
        // Mid-tick, so that a timer would have to wait for the next one.
        tokio::time::advance(Duration::from_micros(300)).await;
        queue.send(Command::Record(record("queued"))).unwrap();
        let mut batch = OpenBatch::new(record("first"), 0);
        let before = Instant::now();
        let filled = sender.fill(&mut batch, &mut commands).await;
        assert_eq!(Instant::now(), before, "the batch waited for a timer");
        assert!(filled.carry.is_none());
        assert_eq!(batch.replies.len(), 2, "what was queued went with it");
    }
}
