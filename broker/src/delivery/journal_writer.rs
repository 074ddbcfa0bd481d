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
//!   it has been tried: `true` if all of it is appended (durable under the
//!   journal's fsync policy), `false` if some of it is not.
//! - **Fail-stop**: a failed append is neither logged and forgotten nor
//!   skipped: its partition's events stay queued, ahead of any later ones,
//!   and are tried again (after a backoff, 50 ms doubling to 5 s) until
//!   they are appended. Meanwhile the writer reports the group as not
//!   durable (`JournalWriter::failure`), and the engine refuses receives
//!   and settles with that cause: nothing is handed out or acknowledged
//!   that the journal cannot record. A journal that failed an fsync is
//!   read-only until the broker restarts, so its group stays refused until
//!   then and recovers from what is durable; a full disk clears once space
//!   returns.
//! - **Snapshots in order**: once a partition's events handed over since its
//!   last snapshot reach `snapshot_every` bytes (estimated at
//!   `EVENT_BYTES_ESTIMATE` per event), the engine hands over a copy of the
//!   partition's state right after them. The writer appends everything
//!   before it, syncs the journal, writes the snapshot as of the journal's
//!   end offset (exact: this task is the journal's only writer) off the
//!   async runtime, then deletes the segments it covers. A failed snapshot
//!   is logged and skipped (the journal still has every event). A stop
//!   snapshots every partition that changed
//!   (`JournalWriter::durable_with_snapshots`).
//! - **Bounded**: the queue holds at most `QUEUE_DEPTH` (1,024) hand-overs; an
//!   engine that produces events faster than the journal takes them waits.
//! - **Threads**: the journals' appends run on the log writer pool
//!   ([`crate::log::pool`]), shared with the partition logs, and snapshot
//!   files are written on the runtime's blocking threads, at most four at
//!   once over the whole broker: many groups cost no thread of their own.
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
//! The task ends when the engine, which holds the only sender, is dropped:
//! at once if everything is appended, or after the next failed retry if
//! not (those events were never durable, so nothing acknowledged as
//! durable is lost; a restart recovers from what the journal holds).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::journal::Event;
use super::partition::{PartitionDelivery, SnapshotParts};
use super::store::SnapshotFiles;
use crate::log::PartitionLog;

/// Hand-overs the queue holds before the engine waits for room.
pub(super) const QUEUE_DEPTH: usize = 1024;

/// First wait before a failed append is tried again; doubles up to
/// [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(50);

/// Longest wait between two tries of a failed append.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Group snapshots written at once, over every group of the broker (each
/// on a thread of the runtime's blocking pool).
static SNAPSHOT_WRITES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// What the journal writer is asked to do.
enum Work {
    /// Append these events of a partition (after those sent before).
    Events(usize, Vec<Event>),
    /// Snapshot a partition: its state as it was right after the events
    /// sent before (boxed: a state can be large, the events small).
    Snapshot(usize, Box<SnapshotParts>),
    /// Answer once everything sent before has been tried: `true` if it is
    /// all appended.
    Barrier(oneshot::Sender<bool>),
}

/// The engine's end of the journal writer.
pub(super) struct JournalWriter {
    /// `None`: no journal (an engine without storage, in tests); the events
    /// are taken and dropped.
    work: Option<mpsc::Sender<Work>>,
    /// Why the journal is behind (an append failed and is being retried);
    /// `None` while everything handed over is appended or on its way.
    failure: Arc<Mutex<Option<String>>>,
    /// Estimated journal bytes handed over per partition since its last
    /// snapshot was asked for.
    since_snapshot: Mutex<Vec<u64>>,
    /// A partition is snapshotted once this many journal bytes were handed
    /// over since its last snapshot; `u64::MAX`: never (no storage).
    snapshot_every: u64,
}

/// What one event is taken to add to its journal, for the snapshot
/// interval: an event is 9 to 21 bytes (more with a reject reason) plus its
/// record's framing.
const EVENT_BYTES_ESTIMATE: u64 = 32;

impl JournalWriter {
    /// Starts the journal writer of a group over its journals (indexed by
    /// partition).
    /// partition), snapshotting each partition into `snapshots` once
    /// `snapshot_every` bytes of its journal were written since the last.
    pub(super) fn spawn(
        journals: Vec<PartitionLog>,
        snapshots: SnapshotFiles,
        snapshot_every: u64,
    ) -> JournalWriter {
        let (work, queue) = mpsc::channel::<Work>(QUEUE_DEPTH);
        let failure = Arc::new(Mutex::new(None));
        let partitions = journals.len();
        let target = Journals {
            logs: journals,
            snapshots,
        };
        tokio::spawn(write_rounds(target, queue, failure.clone()));
        JournalWriter {
            work: Some(work),
            failure,
            since_snapshot: Mutex::new(vec![0; partitions]),
            snapshot_every: snapshot_every.max(1),
        }
    }

    /// A writer without a journal: the events are taken and dropped, and
    /// every barrier passes at once (tests without storage).
    pub(super) fn discarding() -> JournalWriter {
        JournalWriter {
            work: None,
            failure: Arc::new(Mutex::new(None)),
            since_snapshot: Mutex::new(Vec::new()),
            snapshot_every: u64::MAX,
        }
    }

    /// Why the group's state is not durable now, if it is not: an append
    /// failed and its events wait to be tried again.
    pub(super) fn failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }

    /// Hands the state changes of every partition to the writer, in order
    /// (not awaited: acks are persisted lazily, in group commits); waits
    /// only for room in the queue. A partition whose journal grew by the
    /// snapshot interval since its last snapshot is snapshotted too, as of
    /// these events.
    pub(super) async fn hand_over(&self, states: &mut [PartitionDelivery]) {
        self.hand_over_and_snapshot(states, false).await;
    }

    /// Hands the state changes to the writer and waits until every change
    /// made so far has been tried: `true` if it is all appended (durable
    /// under the journal's fsync policy). `true` at once without a journal.
    pub(super) async fn durable(&self, states: &mut [PartitionDelivery]) -> bool {
        self.hand_over(states).await;
        self.barrier().await
    }

    /// Like [`durable`](Self::durable), and snapshots every partition whose
    /// journal grew since its last snapshot, so that the next open replays
    /// nothing (before the group's journals are closed).
    pub(super) async fn durable_with_snapshots(&self, states: &mut [PartitionDelivery]) -> bool {
        self.hand_over_and_snapshot(states, true).await;
        self.barrier().await
    }

    async fn hand_over_and_snapshot(&self, states: &mut [PartitionDelivery], all: bool) {
        for (p, state) in states.iter_mut().enumerate() {
            let events = state.take_events();
            let Some(work) = &self.work else { continue };
            let due = {
                let mut since = self.since_snapshot.lock();
                let Some(since) = since.get_mut(p) else {
                    continue;
                };
                *since += events.len() as u64 * EVENT_BYTES_ESTIMATE;
                let due = *since >= self.snapshot_every || (all && *since > 0);
                if due {
                    *since = 0;
                }
                due
            };
            if !events.is_empty() {
                let _ = work.send(Work::Events(p, events)).await;
            }
            if due {
                let parts = Box::new(state.parts());
                let _ = work.send(Work::Snapshot(p, parts)).await;
            }
        }
    }

    /// Waits until everything handed over has been tried: `true` if it is
    /// all appended.
    async fn barrier(&self) -> bool {
        let Some(work) = &self.work else {
            return true;
        };
        let (done, appended) = oneshot::channel();
        if work.send(Work::Barrier(done)).await.is_err() {
            return false;
        }
        appended.await.unwrap_or(false)
    }
}

/// What the writer task writes into: a group's journals (indexed by
/// partition) and its snapshot files.
struct Journals {
    logs: Vec<PartitionLog>,
    snapshots: SnapshotFiles,
}

/// A partition's work not yet done, in order.
enum Pending {
    Events(Vec<Event>),
    Snapshot(Box<SnapshotParts>),
}

/// The writer task: takes rounds from `queue` and does them; a partition's
/// work from a failed append on is kept, in order, and tried again after a
/// backoff while `failure` says why.
async fn write_rounds(
    journals: Journals,
    mut queue: mpsc::Receiver<Work>,
    failure: Arc<Mutex<Option<String>>>,
) {
    let journals = Arc::new(journals);
    let mut pending: BTreeMap<usize, VecDeque<Pending>> = BTreeMap::new();
    let mut delay = FIRST_RETRY_DELAY;
    loop {
        let first = if pending.is_empty() {
            match queue.recv().await {
                Some(first) => Some(first),
                None => return,
            }
        } else {
            // Retry what failed after the backoff, with whatever came meanwhile.
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY_DELAY);
            queue.try_recv().ok()
        };
        let barriers = take_round(first, &mut queue, &mut pending);
        let failed = run_round(&journals, &mut pending).await;
        if failed.is_none() {
            delay = FIRST_RETRY_DELAY;
        }
        let all_ok = failed.is_none();
        *failure.lock() = failed;
        for done in barriers {
            let _ = done.send(all_ok);
        }
        if !all_ok && queue.is_closed() && queue.is_empty() {
            // The engine is gone (group deleted, broker stopping): nobody
            // is refused any more, and the journals are closing. What was
            // not appended is not durable; a restart recovers from what is.
            tracing::error!(
                partitions = pending.len(),
                "the group stopped with journal events not appended; they are dropped"
            );
            return;
        }
    }
}

/// Everything queued, starting with `first`, added to `pending` (each
/// partition's work in the order it was sent, after what was kept from a
/// failed append); returns the barriers to answer once it is tried.
fn take_round(
    first: Option<Work>,
    queue: &mut mpsc::Receiver<Work>,
    pending: &mut BTreeMap<usize, VecDeque<Pending>>,
) -> Vec<oneshot::Sender<bool>> {
    let mut barriers = Vec::new();
    let mut work = first;
    while let Some(next) = work {
        match next {
            Work::Events(p, events) => {
                let queue = pending.entry(p).or_default();
                match queue.back_mut() {
                    Some(Pending::Events(last)) => last.extend(events),
                    _ => queue.push_back(Pending::Events(events)),
                }
            }
            Work::Snapshot(p, parts) => pending
                .entry(p)
                .or_default()
                .push_back(Pending::Snapshot(parts)),
            Work::Barrier(done) => barriers.push(done),
        }
        work = queue.try_recv().ok();
    }
    barriers
}

/// Does what is pending, the partitions concurrently (so one partition's
/// fsync does not hold up the others'); what was done leaves `pending`.
/// `None` if every append succeeded, else the first failure.
async fn run_round(
    journals: &Arc<Journals>,
    pending: &mut BTreeMap<usize, VecDeque<Pending>>,
) -> Option<String> {
    let round = std::mem::take(pending);
    let work = round
        .into_iter()
        .map(|(p, queue)| run_partition(journals.clone(), p, queue));
    let mut first_failure = None;
    for (p, rest, failed) in futures_util::future::join_all(work).await {
        if let Some(cause) = failed {
            pending.insert(p, rest);
            first_failure.get_or_insert(cause);
        }
    }
    first_failure
}

/// Does partition `p`'s work in order: appends its events, and writes each
/// snapshot once the events before it are appended. On a failed append,
/// returns the work from there on (only the events not appended) and why.
async fn run_partition(
    journals: Arc<Journals>,
    p: usize,
    mut queue: VecDeque<Pending>,
) -> (usize, VecDeque<Pending>, Option<String>) {
    let Some(journal) = journals.logs.get(p) else {
        return (p, VecDeque::new(), None);
    };
    while let Some(work) = queue.pop_front() {
        match work {
            Pending::Events(events) => {
                if let Err((appended, e)) = super::store::append_counted(journal, &events).await {
                    let cause = format!("appending to the journal of partition {p}: {e}");
                    tracing::error!(partition = p, error = %e, "writing the group journal failed; retrying, and refusing receives and settles meanwhile");
                    // Only what was not appended is tried again.
                    let rest = events.into_iter().skip(appended).collect();
                    queue.push_front(Pending::Events(rest));
                    return (p, queue, Some(cause));
                }
            }
            Pending::Snapshot(parts) => snapshot(&journals, p, journal, parts).await,
        }
    }
    (p, queue, None)
}

/// Writes partition `p`'s snapshot as of the journal's end (everything
/// before it in the queue is appended, nothing after it yet), then deletes
/// the journal segments it covers. The journal is synced first, whatever
/// its fsync policy, so a snapshot never covers journal that a crash can
/// lose. A failure is logged and the snapshot skipped: the journal still
/// holds every event, the next snapshot tries again.
async fn snapshot(
    journals: &Arc<Journals>,
    p: usize,
    journal: &PartitionLog,
    parts: Box<SnapshotParts>,
) {
    if let Err(e) = journal.sync().await {
        tracing::warn!(partition = p, error = %e, "syncing the group journal before a snapshot failed; no snapshot this time");
        return;
    }
    let covered = journal.reader().end_offset();
    let files = journals.snapshots.clone();
    // Bounded across every group: without it, many groups snapshotting at
    // once would each take a thread of the runtime's blocking pool (up to
    // its 512).
    let Ok(_permit) = SNAPSHOT_WRITES.acquire().await else {
        return;
    };
    let written = tokio::task::spawn_blocking(move || files.write(p, &parts, covered)).await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(partition = p, error = %e, "writing a group snapshot failed; the journal keeps everything until the next one");
            return;
        }
        Err(e) => {
            tracing::warn!(partition = p, error = %e, "the group snapshot task failed");
            return;
        }
    }
    if let Err(e) = journal.trim_before(covered).await {
        tracing::warn!(partition = p, error = %e, "deleting group journal segments a snapshot covers failed; the next snapshot tries again");
    }
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
        let writer = JournalWriter::spawn(store.journals(), store.snapshot_files(), u64::MAX);
        // Partition 0: 5 leases, then 2 acks in a later hand-over;
        // partition 1: 3 leases. One event each.
        states[0].deliver(1, 5, 1_000, 5, &settings);
        states[1].deliver(1, 3, 1_000, 3, &settings);
        writer.hand_over(&mut states).await;
        states[0].ack(1, 0).expect("ack");
        states[0].ack(1, 3).expect("ack");
        assert!(writer.durable(&mut states).await, "every append succeeded");
        let ends: Vec<u64> = journals.iter().map(|j| j.reader().end_offset()).collect();
        assert_eq!(ends, vec![7, 3]);
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_ends_once_its_engine_is_gone_even_with_a_failed_append_pending() {
        use crate::io::{Fault, FaultPlan, FaultyFs, Op};
        let tmp = tempfile::tempdir().expect("tempdir");
        let plan = FaultPlan::new();
        let settings = GroupSettings::default();
        let (store, mut states) = GroupStore::create(
            Arc::new(FaultyFs::new(plan.clone())),
            &tmp.path().join("t").join("g"),
            GroupMeta::new("t", "g", &settings, 1),
            &[0],
            LogConfig::default(),
            Arc::new(SystemClock),
        )
        .expect("create");
        // The disk stays full: the append keeps failing.
        plan.inject(Op::Write, ".log", Fault::NoSpace, 0, None);
        let (work, queue) = mpsc::channel(QUEUE_DEPTH);
        let failure = Arc::new(Mutex::new(None));
        let target = Journals {
            logs: store.journals(),
            snapshots: store.snapshot_files(),
        };
        let task = tokio::spawn(write_rounds(target, queue, failure.clone()));
        states[0].deliver(1, 3, 1_000, 3, &settings);
        let events = states[0].take_events();
        work.send(Work::Events(0, events)).await.expect("send");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while failure.lock().is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the append never failed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The engine goes away (group deleted, broker stopping).
        drop(work);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the writer gave up its retries and ended")
            .expect("no panic");
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
