//! The journal writer of a group: the ordered channel, and the task behind
//! it, through which the [engine](super::engine) hands the state changes of
//! its partitions (the [`Event`]s the state machine records) to the group's
//! journals, one partition log per source partition (see
//! [`store`](super::store)).
//!
//! ## Invariants
//!
//! - **Order**: each partition's events are appended in the order the engine
//!   made them (one channel, read by one task, one round at a time).
//! - **Group commit**: a round takes everything queued, and appends it with
//!   one append per partition, so the journal's group commit covers many
//!   engine steps.
//! - **Concurrency across partitions**: a round appends the partitions'
//!   events concurrently, so one partition's fsync does not hold up the
//!   others', and acks reach the disk sooner.
//! - **Barriers**: a barrier is answered once everything handed over before
//!   it is appended (durable under the journal's fsync policy): `true`, or
//!   `false` if an append of its round failed. A failed append is logged and
//!   its events are not tried again.
//!
//! ## Crash story
//!
//! The engine hands events over without waiting for them (acks are
//! persisted lazily, in group commits), so a crash forgets the events not yet
//! appended: the last commit window of acks is redelivered after a restart,
//! never lost. The engine waits for a barrier in two places only: before a
//! dead-letter copy is written (the [`dead_letter`](super::dead_letter)
//! crash story) and when it is stopped (every change is appended before the
//! journals are closed).
//!
//! The task ends when the engine, which holds the only sender, is dropped.

use std::collections::BTreeMap;

use tokio::sync::{mpsc, oneshot};

use super::journal::Event;
use super::partition::PartitionDelivery;
use crate::log::PartitionLog;

/// What the journal writer is asked to do.
enum Work {
    /// Append these events of a partition (after those sent before).
    Events(usize, Vec<Event>),
    /// Answer once everything sent before is appended: `true`, or `false`
    /// if an append failed.
    Barrier(oneshot::Sender<bool>),
}

/// The engine's end of the journal writer.
pub(super) struct JournalWriter {
    /// `None`: no journal (an engine without storage, in tests); the events
    /// are taken and dropped.
    work: Option<mpsc::UnboundedSender<Work>>,
}

impl JournalWriter {
    /// Starts the journal writer of a group over its journals (indexed by
    /// partition).
    pub(super) fn spawn(journals: Vec<PartitionLog>) -> JournalWriter {
        let (work, mut queue) = mpsc::unbounded_channel::<Work>();
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let (by_partition, barriers) = take_round(first, &mut queue);
                let all_ok = append_round(&journals, by_partition).await;
                for done in barriers {
                    let _ = done.send(all_ok);
                }
            }
        });
        JournalWriter { work: Some(work) }
    }

    /// A writer without a journal: the events are taken and dropped, and
    /// every barrier passes at once (tests without storage).
    pub(super) fn discarding() -> JournalWriter {
        JournalWriter { work: None }
    }

    /// Hands the state changes of every partition to the writer, in order
    /// (not awaited: acks are persisted lazily, in group commits).
    pub(super) fn hand_over(&self, states: &mut [PartitionDelivery]) {
        for (p, state) in states.iter_mut().enumerate() {
            let events = state.take_events();
            if let Some(work) = &self.work
                && !events.is_empty()
            {
                let _ = work.send(Work::Events(p, events));
            }
        }
    }

    /// Hands the state changes to the writer and waits until every change
    /// made so far is appended (durable under the journal's fsync policy);
    /// `false` if an append failed. `true` at once without a journal.
    pub(super) async fn durable(&self, states: &mut [PartitionDelivery]) -> bool {
        self.hand_over(states);
        let Some(work) = &self.work else {
            return true;
        };
        let (done, appended) = oneshot::channel();
        if work.send(Work::Barrier(done)).is_err() {
            return false;
        }
        appended.await.unwrap_or(false)
    }
}

/// Everything queued, starting with `first`: each partition's events in the
/// order they were sent, and the barriers to answer once they are appended.
fn take_round(
    first: Work,
    queue: &mut mpsc::UnboundedReceiver<Work>,
) -> (BTreeMap<usize, Vec<Event>>, Vec<oneshot::Sender<bool>>) {
    let mut by_partition: BTreeMap<usize, Vec<Event>> = BTreeMap::new();
    let mut barriers = Vec::new();
    let mut work = Some(first);
    while let Some(next) = work {
        match next {
            Work::Events(p, events) => by_partition.entry(p).or_default().extend(events),
            Work::Barrier(done) => barriers.push(done),
        }
        work = queue.try_recv().ok();
    }
    (by_partition, barriers)
}

/// Appends a round, one append per partition, the partitions concurrently;
/// `true` if every append succeeded.
async fn append_round(
    journals: &[PartitionLog],
    by_partition: BTreeMap<usize, Vec<Event>>,
) -> bool {
    let appends = by_partition.into_iter().map(|(p, events)| {
        let journal = journals.get(p);
        async move {
            let Some(journal) = journal else {
                return true;
            };
            match super::store::append_to(journal, &events).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::error!(partition = p, error = %e, "writing the group journal failed");
                    false
                }
            }
        }
    });
    futures_util::future::join_all(appends)
        .await
        .into_iter()
        .all(|ok| ok)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::delivery::GroupSettings;
    use crate::delivery::store::{GroupMeta, GroupStore};
    use crate::io::StdFs;
    use crate::log::{Clock, LogConfig, SystemClock};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_barrier_is_answered_once_everything_handed_over_before_it_is_appended() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let settings = GroupSettings::default();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (store, mut states) = GroupStore::create(
            Arc::new(StdFs),
            &tmp.path().join("t").join("g"),
            GroupMeta::new("t", "g", &settings, 1),
            &[0, 0],
            LogConfig::default(),
            clock,
        )
        .expect("create");
        let journals = store.journals();
        let writer = JournalWriter::spawn(store.journals());
        // Partition 0: 5 leases, then 2 acks in a later hand-over;
        // partition 1: 3 leases. One event each.
        states[0].deliver(1, 5, 1_000, 5, &settings);
        states[1].deliver(1, 3, 1_000, 3, &settings);
        writer.hand_over(&mut states);
        states[0].ack(1, 0).expect("ack");
        states[0].ack(1, 3).expect("ack");
        assert!(writer.durable(&mut states).await, "every append succeeded");
        let ends: Vec<u64> = journals.iter().map(|j| j.reader().end_offset()).collect();
        assert_eq!(ends, vec![7, 3]);
        store.close().await;
    }

    #[tokio::test]
    async fn without_a_journal_the_events_are_dropped_and_barriers_pass() {
        let settings = GroupSettings::default();
        let mut states = vec![PartitionDelivery::new(0)];
        states[0].deliver(1, 2, 1_000, 2, &settings);
        assert!(JournalWriter::discarding().durable(&mut states).await);
        assert!(states[0].take_events().is_empty(), "the events were taken");
    }
}
