//! The dead-letter pipeline of the [engine](super::engine): copying a
//! message the state machine gave up on (too many deliveries, or rejected)
//! to the group's dead-letter queue through a [`DeadLetterSink`], then
//! settling it, only once the copy is durable.
//!
//! A copy that fails stays pending in the state machine and is tried again
//! at the next run of the pipeline (the engine runs it after every settle,
//! leave and timer); dead letters a crash left pending are written again
//! when the engine starts.
//!
//! ## Crash story
//!
//! 1. The state machine marks the message dead-lettering
//!    (`DeadLetterStarted`, recording the dead-letter partition's end offset,
//!    which the engine tells it before anything that may dead-letter): it
//!    is out of delivery from then on.
//! 2. The pipeline waits until the journal holds that event durably (a
//!    barrier through the [journal writer](super::journal_writer)) — the one
//!    place the engine waits for the journal, apart from its stop. A crash before
//!    this point: the journal still has the lease, nothing was parked, the
//!    message comes back (an attempt).
//! 3. The sink is asked which of the dead letters are parked already (it
//!    searches the DLQ partition from the smallest recorded end offset on,
//!    matching each copy's identity: source topic and its incarnation,
//!    partition, offset, group and its incarnation); the others are written
//!    to the DLQ topic and made durable. A crash here: the journal says
//!    dead-lettering, so after the restart the copy is looked for from its
//!    recorded offset — it cannot be before it, since a DLQ partition only
//!    grows — found, and not written again.
//! 4. `DeadLettered` settles it (journaled lazily, like an ack; a crash
//!    before it is journaled is step 3 again).
//!
//! So a parked message is never delivered again, and never parked twice.

use std::collections::{BTreeMap, HashSet};

use pigeon_protocol::batch::Record;

use super::engine::SourceReader;
use super::journal_writer::JournalWriter;
use super::partition::{DeadLetter, PartitionDelivery};

/// Writes dead-letter copies (to the `<topic>.<group>.dlq` topic), and
/// finds those already written.
pub trait DeadLetterSink: Send + Sync + 'static {
    /// Where the dead-letter partition of source partition `partition`
    /// ends now: a copy written from now on lands at or after it.
    fn end_offset(&self, partition: usize) -> u64;

    /// The offsets of `dead` (dead letters of source partition `partition`)
    /// whose copy is already durable in the dead-letter partition, searched
    /// from each one's recorded `dlq_from` on (a bounded look back for a
    /// dead letter without one). An error says why the search failed.
    fn parked(&self, partition: usize, dead: &[DeadLetter]) -> Result<HashSet<u64>, String>;

    /// Makes the copy durable.
    fn write(
        &self,
        partition: usize,
        dead: &DeadLetter,
        record: &Record,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

/// Copies dead letters out, then settles each whose copy is durable: `dead`
/// (`(partition, dead letter)`), and every dead letter still pending in
/// `states` (a copy that failed before). A failed copy stays pending and is
/// tried again at the next call. Nothing is copied before the journal holds
/// the dead-lettering (see the module's crash story).
pub(super) async fn park<S: SourceReader, D: DeadLetterSink>(
    states: &mut [PartitionDelivery],
    journal: &JournalWriter,
    source: &S,
    sink: &D,
    dead: Vec<(usize, DeadLetter)>,
) {
    let dead = with_pending(states, dead);
    if dead.is_empty() {
        return;
    }
    if !journal.durable(states).await {
        tracing::warn!(
            count = dead.len(),
            "the group journal did not take the dead-lettering; the copies wait for the next try"
        );
        return;
    }
    for (p, dead) in by_partition(dead) {
        let parked = match sink.parked(p, &dead) {
            Ok(parked) => parked,
            Err(e) => {
                tracing::warn!(partition = p, count = dead.len(), error = %e, "cannot tell which dead letters are parked already; will retry");
                continue;
            }
        };
        for d in dead {
            if parked.contains(&d.offset) {
                states[p].dead_lettered(d.offset);
                continue;
            }
            copy(&mut states[p], p, &d, source, sink).await;
        }
    }
}

/// Writes the copy of `d` (of source partition `p`), then settles it; a
/// failed copy stays pending.
async fn copy<S: SourceReader, D: DeadLetterSink>(
    state: &mut PartitionDelivery,
    p: usize,
    d: &DeadLetter,
    source: &S,
    sink: &D,
) {
    let records = source.records(p, &[d.offset]);
    let written = match records.first() {
        Some(record) => sink.write(p, d, record).await,
        // Deleted by retention: nothing left to park.
        None => Ok(()),
    };
    match written {
        Ok(()) => state.dead_lettered(d.offset),
        Err(e) => {
            tracing::warn!(partition = p, offset = d.offset, error = %e, "dead-letter copy failed; will retry")
        }
    }
}

/// `dead` by partition, each partition's in the order given.
fn by_partition(dead: Vec<(usize, DeadLetter)>) -> BTreeMap<usize, Vec<DeadLetter>> {
    let mut out: BTreeMap<usize, Vec<DeadLetter>> = BTreeMap::new();
    for (p, d) in dead {
        out.entry(p).or_default().push(d);
    }
    out
}

/// `dead` followed by the dead letters pending in `states` that it does not
/// name already (one set lookup each, not a search of `dead`).
fn with_pending(
    states: &[PartitionDelivery],
    mut dead: Vec<(usize, DeadLetter)>,
) -> Vec<(usize, DeadLetter)> {
    let named: std::collections::HashSet<(usize, u64)> =
        dead.iter().map(|(p, d)| (*p, d.offset)).collect();
    for (p, state) in states.iter().enumerate() {
        for pending in state.pending_dead_letters() {
            if !named.contains(&(p, pending.offset)) {
                dead.push((p, pending));
            }
        }
    }
    dead
}

/// The dead letters to write when the engine starts: `recovered` (those the
/// recovery of open leases started) and those a crash left pending (their
/// copies are looked for first, so nothing is parked twice), in
/// `(partition, offset)` order, each once.
pub(super) fn left_by_a_crash(
    states: &[PartitionDelivery],
    mut recovered: Vec<(usize, DeadLetter)>,
) -> Vec<(usize, DeadLetter)> {
    for (p, state) in states.iter().enumerate() {
        recovered.extend(state.pending_dead_letters().map(|d| (p, d)));
    }
    recovered.sort_by_key(|(p, d)| (*p, d.offset));
    recovered.dedup_by_key(|(p, d)| (*p, d.offset));
    recovered
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use parking_lot::Mutex;

    use super::*;
    use crate::delivery::engine::{OffsetReport, Settle};
    use crate::delivery::test_support::{MemSink, MemSource, offsets, settings, start_engine};
    use crate::delivery::{DeadLetterReason, OffsetState};

    /// Fails its first write, then stores the offsets it is given.
    #[derive(Default)]
    struct FlakySink(Mutex<(u32, Vec<u64>)>);

    impl DeadLetterSink for FlakySink {
        fn end_offset(&self, _partition: usize) -> u64 {
            self.0.lock().1.len() as u64
        }

        fn parked(&self, _partition: usize, dead: &[DeadLetter]) -> Result<HashSet<u64>, String> {
            let written = &self.0.lock().1;
            let parked = dead.iter().filter(|d| {
                let from = d.dlq_from.unwrap_or(0) as usize;
                written.iter().skip(from).any(|o| *o == d.offset)
            });
            Ok(parked.map(|d| d.offset).collect())
        }

        async fn write(
            &self,
            _partition: usize,
            dead: &DeadLetter,
            _record: &Record,
        ) -> Result<(), String> {
            let mut sink = self.0.lock();
            sink.0 += 1;
            if sink.0 == 1 {
                return Err("disk full".into());
            }
            sink.1.push(dead.offset);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_failed_copy_stays_pending_and_is_written_at_the_next_call() {
        let source = MemSource::with(1, 2);
        let sink = FlakySink::default();
        let journal = JournalWriter::discarding();
        let mut states = vec![PartitionDelivery::new(0)];
        states[0].deliver(1, 2, 1_000, 2, &settings());
        let dead = states[0]
            .reject(1, 1, "bad".into())
            .expect("reject")
            .expect("dead-lettering");
        park(
            &mut states,
            &journal,
            source.as_ref(),
            &sink,
            vec![(0, dead)],
        )
        .await;
        assert_eq!(*sink.0.lock(), (1, vec![]), "the first copy failed");
        assert_eq!(states[0].pending_dead_letters().count(), 1);
        park(&mut states, &journal, source.as_ref(), &sink, Vec::new()).await;
        assert_eq!(*sink.0.lock(), (2, vec![1]), "written again, once");
        assert_eq!(states[0].pending_dead_letters().count(), 0);
        assert_eq!(states[0].state_of(1), OffsetState::Settled);
    }

    #[tokio::test(start_paused = true)]
    async fn a_poison_message_reaches_the_dlq_after_max_deliveries_and_the_rest_settle() {
        let (source, sink) = (MemSource::with(1, 5), Arc::new(MemSink::default()));
        let group = start_engine(&source, &sink);
        let consumer = group.join("test").await.expect("join");
        let first = group
            .receive(consumer, 10, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(
            offsets(&first),
            (0..5).map(|o| (0, o, 1)).collect::<Vec<_>>()
        );
        let acks = (0..4).map(|o| (0, o, Settle::Ack)).collect();
        assert!(
            group
                .settle(consumer, acks)
                .await
                .expect("settle")
                .iter()
                .all(Result::is_ok)
        );
        // Offset 4 is never acked: its lease expires, it comes back with
        // backoff, attempt 2 then 3, then it is parked.
        for attempt in 2..=3 {
            let again = group
                .receive(consumer, 10, Duration::from_secs(10))
                .await
                .expect("receive");
            assert_eq!(offsets(&again), vec![(0, 4, attempt)]);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while sink.0.lock().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never dead-lettered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            *sink.0.lock(),
            vec![(0, 4, 3, DeadLetterReason::MaxDeliveries)]
        );
        let (paused, figures) = group.describe().await.expect("describe");
        assert!(!paused);
        assert_eq!(
            (
                figures[0].lag,
                figures[0].dead_lettered,
                figures[0].committed_floor
            ),
            (0, 1, 5)
        );
        assert_eq!(
            group.state_of(0, 4).await.expect("state"),
            Some(OffsetReport {
                state: OffsetState::Settled,
                times: None,
                holder: None
            })
        );
    }
}
