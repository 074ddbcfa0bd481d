//! [`PartitionLog`]: a partition log driven by a writer on the shared
//! [writer pool](super::pool), with group commit behind an async API.
//!
//! Appends arrive on a bounded channel (back-pressure: when the writer falls
//! behind, `append` waits for room instead of growing a queue). Queueing a
//! command schedules the log on the pool; a worker then runs one *turn*:
//! it takes every append waiting (up to [`MAX_GROUP_BYTES`], at most a
//! queue's worth of commands), stages them all, then commits once: under
//! `fsync=always` one `fdatasync` covers the whole group, and each
//! append's future completes only after it. While that sync runs, new
//! appends queue up and form the next group (the log goes back on the run
//! queue after its turn), so the number of syncs adapts to the load: one
//! per append when idle, one per many when busy. Each append's answer is
//! its own, not the group's: a group can be written in pieces and one
//! piece can fail while the others are stored (see "What each append's
//! answer says" in [`super::writer::commit`]). A turn touches one log
//! only, and one log has at most one turn running: its commands are
//! committed in order, as by a thread of its own (the pool's invariants).
//! An idle log holds no thread.
//!
//! The writer also runs the interval policy's timed sync, a background
//! seal's poll, the idle checkpoint (see [`super::writer::commit`]) and
//! periodic retention (on the pool's timer, which puts the log on the run
//! queue when they come due), takes retention changes
//! ([`PartitionLog::set_retention`], applied at once), and counts each
//! commit group's records and bytes in the log's
//! [`LogStats`](super::stats::LogStats) (the fsync time is counted where
//! the sync runs, in [`Log::sync`]).
//!
//! ## Stage timings
//!
//! Every append is timed through its [stages](super::stats::Stage), which
//! follow each other without gap: `queued` from the moment its caller
//! queues it (waiting for room in the queue and for a worker included)
//! until the writer takes its group; `write` until the group's staging and
//! positioned write are done; `fsync` until the commit is done; `wake`
//! until the task that waits for it runs again (recorded by that task, from
//! the commit's end carried in the answer). The log end watch moves as
//! soon as the commit is done, before the appends are answered, so a
//! waiting consumer's wake-up does not queue behind the producers' answers.
//!
//! Dropping every handle, or [`PartitionLog::close`], shuts the log
//! down cleanly (sync, clean checkpoint). A command sent while the log
//! closes gets its answer or `Closed`, never a wait without end: once the
//! writer has closed, its queue is dropped (a later send fails; a command
//! still queued is dropped unanswered), and the handles also watch for the
//! writer to end. A turn that panics stops the log as a panicking thread
//! of its own did: the log is dropped unclosed (the next start recovers
//! its tail) and every command gets `Closed`.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use pigeon_protocol::batch::RecordBatch;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::clock::Clock;
use super::config::LogConfig;
use super::error::{LogError, LogResult};
use super::pool::{self, Job, WriterPool};
use super::reader::LogReader;
use super::stats::{LogStats, Stage};
use super::writer::{AppendInfo, Log};
use crate::io::FileSystem;

/// Most bytes of batches staged into one commit group.
pub const MAX_GROUP_BYTES: usize = 8 * 1024 * 1024;
/// Appends that may wait for the writer before `append` itself waits.
const QUEUE_DEPTH: usize = 1024;
/// How often retention runs when nothing rolls.
const RETENTION_CHECK: Duration = Duration::from_secs(60);

/// The writer's answer to an append.
#[derive(Debug)]
struct Answered {
    result: LogResult<AppendInfo>,
    /// When the commit that settled it ended (the start of its `wake`).
    committed_at: Instant,
}

enum Command {
    Append {
        batch: RecordBatch,
        /// When the caller queued it (the start of its `queued` stage).
        queued_at: Instant,
        reply: oneshot::Sender<Answered>,
    },
    Retention {
        reply: oneshot::Sender<LogResult<usize>>,
    },
    Trim {
        before: u64,
        reply: oneshot::Sender<usize>,
    },
    Sync {
        reply: oneshot::Sender<LogResult<()>>,
    },
    SetRetention {
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
        reply: oneshot::Sender<LogResult<usize>>,
    },
    Close {
        reply: oneshot::Sender<LogResult<()>>,
    },
}

/// Handle to a partition log and its writer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PartitionLog {
    /// Declared before `slot`: when the last handle is dropped, the channel
    /// is disconnected before [`Handles`] schedules the writer to close.
    commands: flume::Sender<Command>,
    slot: Arc<Handles>,
    reader: LogReader,
    end: watch::Receiver<u64>,
    /// Cancelled when the writer has stopped.
    stopped: CancellationToken,
}

/// Held by every handle: when the last one goes, the writer is scheduled
/// (it finds its queue disconnected, commits what is queued and closes).
#[derive(Debug)]
struct Handles(Arc<Slot>);

impl Drop for Handles {
    fn drop(&mut self) {
        self.0.clone().schedule();
    }
}

/// The writer's answer to a command, or `Closed` once the writer has
/// stopped. A command queued just as the writer closed is never taken, and
/// the channel keeps it (with its reply sender) as long as any handle
/// lives: without this, its caller would wait forever.
async fn answer<T>(
    stopped: &CancellationToken,
    response: oneshot::Receiver<LogResult<T>>,
) -> LogResult<T> {
    tokio::select! {
        biased;
        answer = response => answer.unwrap_or(Err(LogError::Closed)),
        () = stopped.cancelled() => Err(LogError::Closed),
    }
}

/// [`answer`] to an append: records its `wake` stage in `stats`.
async fn appended(
    stopped: &CancellationToken,
    stats: &LogStats,
    response: oneshot::Receiver<Answered>,
) -> LogResult<AppendInfo> {
    tokio::select! {
        biased;
        answered = response => match answered {
            Ok(answered) => {
                stats.stages.record(Stage::Wake, answered.committed_at.elapsed());
                answered.result
            }
            Err(_) => Err(LogError::Closed),
        },
        () = stopped.cancelled() => Err(LogError::Closed),
    }
}

impl PartitionLog {
    /// Opens (recovering if needed) the log in `dir` and starts its writer.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        config: LogConfig,
        clock: Arc<dyn Clock>,
    ) -> LogResult<PartitionLog> {
        let log = Log::open(fs, dir, config, clock)?;
        Ok(Self::start(log))
    }

    /// Starts the writer of an opened log on the [writer pool](super::pool).
    pub fn start(log: Log) -> PartitionLog {
        Self::start_on(WriterPool::global(), log)
    }

    /// Starts the writer of an opened log on `pool`.
    pub(crate) fn start_on(pool: &'static WriterPool, log: Log) -> PartitionLog {
        let (commands, receiver) = flume::bounded(QUEUE_DEPTH);
        let reader = log.reader();
        let (end_tx, end) = watch::channel(reader.end_offset());
        let stopped = CancellationToken::new();
        let writer = Writer { log, end: end_tx };
        let slot = Arc::new(Slot {
            pool,
            scheduled: AtomicBool::new(false),
            state: Mutex::new(SlotState {
                writer: Some(writer),
                commands: Some(receiver),
                next_retention: Instant::now() + RETENTION_CHECK,
                timer_at: None,
                // Dropped (cancelling `stopped`) once the writer has
                // answered its last command and closed.
                stopped: Some(stopped.clone().drop_guard()),
            }),
        });
        // The first timer (retention).
        slot.clone().arm_timer();
        PartitionLog {
            commands,
            slot: Arc::new(Handles(slot)),
            reader,
            end,
            stopped,
        }
    }

    /// Appends a validated batch; completes when it is as durable as the
    /// fsync policy promises (and visible to readers).
    pub async fn append(&self, batch: RecordBatch) -> LogResult<AppendInfo> {
        let (reply, response) = oneshot::channel();
        let queued_at = Instant::now();
        self.commands
            .send_async(Command::Append {
                batch,
                queued_at,
                reply,
            })
            .await
            .map_err(|_| LogError::Closed)?;
        self.slot.0.clone().schedule();
        appended(&self.stopped, self.reader.stats(), response).await
    }

    /// Appends batches in order, letting them share commits; one result
    /// per batch, in the same order.
    pub async fn append_all(&self, batches: Vec<RecordBatch>) -> Vec<LogResult<AppendInfo>> {
        self.submit_all(batches).await.wait().await
    }

    /// Queues batches for the writer, in order, and returns once they are
    /// queued (waiting for room if the writer is behind); their results
    /// come from [`Submitted::wait`]. Batches submitted one after another
    /// are appended in that order, which is what lets a connection submit
    /// a producer's pipelined requests in the order it read them while
    /// their commits overlap.
    pub async fn submit_all(&self, batches: Vec<RecordBatch>) -> Submitted {
        let mut responses = Vec::with_capacity(batches.len());
        for batch in batches {
            let (reply, response) = oneshot::channel();
            let queued_at = Instant::now();
            match self
                .commands
                .send_async(Command::Append {
                    batch,
                    queued_at,
                    reply,
                })
                .await
            {
                Ok(()) => {
                    self.slot.0.clone().schedule();
                    responses.push(Some(response));
                }
                Err(_) => responses.push(None),
            }
        }
        Submitted {
            responses,
            stopped: self.stopped.clone(),
            reader: self.reader.clone(),
        }
    }

    /// The reader of this log.
    pub fn reader(&self) -> &LogReader {
        &self.reader
    }

    /// Watches the log end offset (high watermark): changes after every
    /// commit, so a fetch at the end can wait for new data without polling.
    pub fn watch_end(&self) -> watch::Receiver<u64> {
        self.end.clone()
    }

    /// Runs retention now; returns the number of segments deleted.
    pub async fn enforce_retention(&self) -> LogResult<usize> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send_async(Command::Retention { reply })
            .await
            .map_err(|_| LogError::Closed)?;
        self.slot.0.clone().schedule();
        answer(&self.stopped, response).await
    }

    /// Changes the log's retention (`None`: no limit of that kind) and
    /// applies it at once; returns the number of segments deleted. The
    /// setting lives in memory only: whoever persists the topic's settings
    /// passes it again when the log is next opened.
    pub async fn set_retention(
        &self,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
    ) -> LogResult<usize> {
        let (reply, response) = oneshot::channel();
        let command = Command::SetRetention {
            retention_ms,
            retention_bytes,
            reply,
        };
        self.commands
            .send_async(command)
            .await
            .map_err(|_| LogError::Closed)?;
        self.slot.0.clone().schedule();
        answer(&self.stopped, response).await
    }

    /// Deletes the sealed segments holding only offsets below `before`;
    /// returns how many.
    pub async fn trim_before(&self, before: u64) -> LogResult<usize> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send_async(Command::Trim { before, reply })
            .await
            .map_err(|_| LogError::Closed)?;
        self.slot.0.clone().schedule();
        tokio::select! {
            biased;
            deleted = response => deleted.map_err(|_| LogError::Closed),
            () = self.stopped.cancelled() => Err(LogError::Closed),
        }
    }

    /// Writes and fsyncs everything appended so far, whatever the fsync
    /// policy (e.g. before a snapshot that covers it is written).
    pub async fn sync(&self) -> LogResult<()> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send_async(Command::Sync { reply })
            .await
            .map_err(|_| LogError::Closed)?;
        self.slot.0.clone().schedule();
        answer(&self.stopped, response).await
    }

    /// Commits what is queued, shuts down cleanly, and stops the writer.
    pub async fn close(&self) -> LogResult<()> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send_async(Command::Close { reply })
            .await
            .map_err(|_| LogError::Closed)?;
        self.slot.0.clone().schedule();
        answer(&self.stopped, response).await
    }
}

/// Batches queued by [`PartitionLog::submit_all`], waiting for their commit.
#[derive(Debug)]
pub struct Submitted {
    responses: Vec<Option<oneshot::Receiver<Answered>>>,
    stopped: CancellationToken,
    /// Where the `wake` stage is counted.
    reader: LogReader,
}

impl Submitted {
    /// One result per batch, in order, once each is as durable as the
    /// fsync policy promises ([`LogError::Closed`] for a batch the writer
    /// never took).
    pub async fn wait(self) -> Vec<LogResult<AppendInfo>> {
        let mut results = Vec::with_capacity(self.responses.len());
        for response in self.responses {
            let result = match response {
                Some(response) => appended(&self.stopped, self.reader.stats(), response).await,
                None => Err(LogError::Closed),
            };
            results.push(result);
        }
        results
    }
}

struct Writer {
    log: Log,
    end: watch::Sender<u64>,
}

/// A log's place in the [writer pool](super::pool): its writer, its
/// command queue, and its timer.
struct Slot {
    pool: &'static WriterPool,
    /// Set while the slot is on the run queue or running a turn.
    scheduled: AtomicBool,
    /// Locked by the turn (one at a time, see the pool's invariants), and
    /// briefly after it to look at the queue.
    state: Mutex<SlotState>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").finish_non_exhaustive()
    }
}

struct SlotState {
    /// `None` once the log is closed (or its turn panicked).
    writer: Option<Writer>,
    /// Dropped with the writer: commands sent after that fail with
    /// `Closed`, and those still queued are dropped unanswered (their
    /// callers see `Closed`).
    commands: Option<flume::Receiver<Command>>,
    /// When retention next runs if nothing asks for it.
    next_retention: Instant,
    /// The earliest instant the timer thread holds for this slot (it may
    /// hold later ones too, which wake it for nothing).
    timer_at: Option<Instant>,
    /// Cancels the handles' `stopped` when dropped.
    stopped: Option<tokio_util::sync::DropGuard>,
}

impl SlotState {
    /// Closes the writer (if `reply`, answering it) and stops the slot.
    fn close(&mut self, reply: Option<oneshot::Sender<LogResult<()>>>) {
        if let Some(writer) = self.writer.take() {
            let closed = writer.close();
            if let Some(reply) = reply {
                let _ = reply.send(closed);
            }
        }
        self.stop();
    }

    /// Drops the queue, then cancels `stopped`: nothing more is answered.
    fn stop(&mut self) {
        self.writer = None;
        self.commands = None;
        self.timer_at = None;
        self.stopped = None;
    }
}

impl Slot {
    fn schedule(self: Arc<Self>) {
        let pool = self.pool;
        pool::schedule(pool, self);
    }

    /// One turn: the next commit group (at most [`MAX_GROUP_BYTES`] of
    /// batches, at most [`QUEUE_DEPTH`] commands), then whatever timer is
    /// due, then the next timer armed. As the loop of a writer thread of
    /// its own did, but one group per turn so that the pool's workers take
    /// turns between logs.
    fn run(self: &Arc<Self>) {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let (Some(writer), Some(commands)) = (state.writer.as_mut(), state.commands.as_ref())
        else {
            return;
        };
        if state.timer_at.is_some_and(|t| t <= Instant::now()) {
            state.timer_at = None;
        }
        let mut group = Vec::new();
        let mut bytes = 0;
        let mut disconnected = false;
        while bytes < MAX_GROUP_BYTES && group.len() < QUEUE_DEPTH {
            match commands.try_recv() {
                Ok(command) => {
                    if let Command::Append { batch, .. } = &command {
                        bytes += batch.bytes().len();
                    }
                    group.push(command);
                }
                Err(flume::TryRecvError::Empty) => break,
                Err(flume::TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        if bytes > 0 {
            let synced = writer.log.config().fsync == super::config::FsyncPolicy::Always;
            self.pool.note_commit(bytes as u64, synced);
        }
        if !group.is_empty()
            && let Some(reply) = writer.run_group(group)
        {
            state.close(Some(reply));
            return;
        }
        if disconnected {
            // Every handle is gone and the queue is empty.
            state.close(None);
            return;
        }
        let now = Instant::now();
        let due = writer
            .log
            .timer_due_at()
            .map_or(state.next_retention, |t| t.min(state.next_retention));
        if due <= now {
            writer.on_timer(&mut state.next_retention);
        }
        drop(guard);
        self.clone().arm_timer();
    }

    /// Gives the timer thread the instant of the writer's next timer,
    /// unless it already holds one as early.
    fn arm_timer(self: Arc<Self>) {
        let mut state = self.state.lock();
        let Some(writer) = state.writer.as_ref() else {
            return;
        };
        let due = writer
            .log
            .timer_due_at()
            .map_or(state.next_retention, |t| t.min(state.next_retention));
        if state
            .timer_at
            .is_some_and(|t| t <= due && t > Instant::now())
        {
            return;
        }
        state.timer_at = Some(due);
        drop(state);
        let weak: Weak<dyn Job> = Arc::downgrade(&(self.clone() as Arc<dyn Job>));
        self.pool.wake_at(due, weak);
    }
}

impl Job for Slot {
    fn scheduled(&self) -> &AtomicBool {
        &self.scheduled
    }

    fn turn(self: Arc<Self>, _pool: &WriterPool) {
        let turn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run()));
        if turn.is_err() {
            // As when a writer thread of its own panicked: the log is
            // dropped unclosed (the next start recovers its tail), and
            // every command gets `Closed`.
            tracing::error!("a partition writer panicked; the partition is closed");
            self.state.lock().stop();
        }
    }

    fn has_work(&self) -> bool {
        self.state
            .lock()
            .commands
            .as_ref()
            .is_some_and(|c| !c.is_empty() || c.is_disconnected())
    }
}

impl Writer {
    /// Stages and commits one group; returns the close reply if asked to close.
    fn run_group(&mut self, group: Vec<Command>) -> Option<oneshot::Sender<LogResult<()>>> {
        let started = Instant::now();
        let shared = Arc::clone(&self.log.shared);
        let stats = &shared.stats;
        let mut staged = Vec::with_capacity(group.len());
        let mut syncs = Vec::new();
        let mut close = None;
        for command in group {
            match command {
                Command::Append {
                    batch,
                    queued_at,
                    reply,
                } => {
                    let queued = started.saturating_duration_since(queued_at);
                    stats.stages.record(Stage::Queued, queued);
                    match self.log.append_tracked(&batch) {
                        Ok(tracked) => staged.push((reply, tracked, batch.bytes().len() as u64)),
                        Err(e) => {
                            let answered = Answered {
                                result: Err(e),
                                committed_at: Instant::now(),
                            };
                            let _ = reply.send(answered);
                        }
                    }
                }
                Command::Retention { reply } => {
                    let _ = reply.send(self.log.enforce_retention());
                }
                Command::Trim { before, reply } => {
                    let _ = reply.send(self.log.trim_before(before));
                }
                // After the group's appends, which it follows in the queue.
                Command::Sync { reply } => syncs.push(reply),
                Command::SetRetention {
                    retention_ms,
                    retention_bytes,
                    reply,
                } => {
                    self.log.set_retention(retention_ms, retention_bytes);
                    let _ = reply.send(self.log.enforce_retention());
                }
                Command::Close { reply } => close = Some(reply),
            }
        }
        // Each append gets its own answer: a group can be written in
        // pieces, and one piece can fail while the others are stored.
        let committed = self.log.commit_tracked();
        let committed_at = Instant::now();
        // Readers first: a consumer waiting at the end wakes while the
        // producers are answered.
        self.end.send_replace(self.log.reader().end_offset());
        let write = committed.written_at.saturating_duration_since(started);
        let fsync = committed_at.saturating_duration_since(committed.written_at);
        let (mut records, mut bytes) = (0, 0);
        for (reply, tracked, size) in staged {
            stats.stages.record(Stage::Write, write);
            stats.stages.record(Stage::Fsync, fsync);
            let result = committed.result(&tracked).map(|()| tracked.info);
            if let Ok(info) = &result
                && !info.duplicate
            {
                records += info.last_offset - info.base_offset + 1;
                bytes += size;
            }
            let _ = reply.send(Answered {
                result,
                committed_at,
            });
        }
        if !syncs.is_empty() {
            let synced = self.log.sync();
            for reply in syncs {
                let _ = reply.send(synced.clone());
            }
        }
        stats.committed(records, bytes);
        close
    }

    fn on_timer(&mut self, next_retention: &mut Instant) {
        if self.log.sync_due_at().is_some_and(|t| t <= Instant::now())
            && let Err(e) = self.log.commit()
        {
            tracing::error!(error = %e, "timed fsync failed");
        }
        self.log.checkpoint_if_idle(Instant::now());
        if Instant::now() >= *next_retention {
            if let Err(e) = self.log.enforce_retention() {
                tracing::warn!(error = %e, "retention failed");
            }
            *next_retention = Instant::now() + RETENTION_CHECK;
        }
        self.end.send_replace(self.log.reader().end_offset());
    }

    fn close(self) -> LogResult<()> {
        self.log.close()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use pigeon_protocol::batch::{BatchBuilder, ProducerStamp, records_of};

    use super::*;
    use crate::io::{Fault, FaultPlan, FaultyFs, Op};
    use crate::log::ManualClock;

    /// Three of these pass the staging limit, so the third append writes
    /// the first two out in the middle of the group.
    const BIG: usize = 1536 * 1024;

    fn batch_of(len: usize, tag: u8, producer: ProducerStamp) -> RecordBatch {
        let mut builder = BatchBuilder::new();
        builder.push(None, &vec![tag; len], &[]);
        RecordBatch::validate(builder.build(producer, 0), 8 << 20).expect("valid batch")
    }

    fn plain(len: usize, tag: u8) -> RecordBatch {
        batch_of(len, tag, ProducerStamp::NONE)
    }

    fn idempotent(len: usize, tag: u8, sequence: i32) -> RecordBatch {
        let producer = ProducerStamp {
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: sequence,
        };
        batch_of(len, tag, producer)
    }

    fn writer(dir: &Path, plan: &FaultPlan) -> Writer {
        let log = Log::open(
            Arc::new(FaultyFs::new(plan.clone())),
            dir,
            LogConfig::default(),
            Arc::new(ManualClock::new(1_700_000_000_000)),
        )
        .expect("open");
        let (end, _) = watch::channel(0);
        Writer { log, end }
    }

    /// Runs one group of appends through the writer, as its thread would;
    /// returns each reply.
    fn run_group(writer: &mut Writer, batches: Vec<RecordBatch>) -> Vec<LogResult<AppendInfo>> {
        let mut responses = Vec::new();
        let group = batches
            .into_iter()
            .map(|batch| {
                let (reply, response) = oneshot::channel();
                responses.push(response);
                Command::Append {
                    batch,
                    queued_at: Instant::now(),
                    reply,
                }
            })
            .collect();
        assert!(writer.run_group(group).is_none());
        responses
            .into_iter()
            .map(|mut r| r.try_recv().expect("every append is answered").result)
            .collect()
    }

    /// Offset → tag of every record the log serves.
    fn stored(writer: &Writer) -> BTreeMap<u64, u8> {
        let reader = writer.log.reader();
        let mut out = BTreeMap::new();
        let mut offset = reader.start_offset();
        while offset < reader.end_offset() {
            let bytes = reader.read(offset, 1).expect("read").bytes;
            let total = 12
                + pigeon_protocol::batch::read_prefix(&bytes)
                    .expect("prefix")
                    .1 as usize;
            for record in records_of(Bytes::copy_from_slice(&bytes[..total])).expect("records") {
                let record = record.expect("record");
                out.insert(record.offset, record.value[0]);
                offset = record.offset + 1;
            }
        }
        out
    }

    /// Offset → tag of every batch whose reply said it was stored.
    fn acknowledged(replies: &[LogResult<AppendInfo>], tags: &[u8], into: &mut BTreeMap<u64, u8>) {
        for (reply, tag) in replies.iter().zip(tags) {
            if let Ok(info) = reply {
                into.insert(info.base_offset, *tag);
            }
        }
    }

    #[test]
    fn a_failed_write_mid_group_fails_only_the_batches_it_lost() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let plan = FaultPlan::new();
        let mut writer = writer(tmp.path(), &plan);
        // The mid-group write of a and b fails; d is written at commit.
        plan.inject(Op::Write, ".log", Fault::NoSpace, 0, Some(1));
        let tags = [b'a', b'b', b'c', b'd'];
        let replies = run_group(
            &mut writer,
            vec![
                plain(BIG, b'a'),
                plain(BIG, b'b'),
                plain(BIG, b'c'),
                plain(10, b'd'),
            ],
        );
        for (reply, tag) in replies.iter().zip(tags).take(3) {
            let err = reply.as_ref().expect_err("lost by the failed write");
            assert!(
                matches!(err, LogError::DiskFull { .. }),
                "{}: {err}",
                tag as char
            );
        }
        let mut acked = BTreeMap::new();
        acknowledged(&replies, &tags, &mut acked);
        assert_eq!(
            stored(&writer),
            acked,
            "each reply says whether its batch was stored"
        );
        let d = replies[3].as_ref().expect("d was stored");
        assert_eq!(d.base_offset, 0, "the lost batches' offsets were reused");
    }

    #[test]
    fn a_failed_write_at_commit_does_not_fail_the_batches_written_before_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let plan = FaultPlan::new();
        let mut writer = writer(tmp.path(), &plan);
        // a and b are written mid-group; writing c and d at commit fails.
        plan.inject(Op::Write, ".log", Fault::NoSpace, 1, Some(1));
        let tags = [b'a', b'a', b'b', b'c', b'd'];
        let replies = run_group(
            &mut writer,
            vec![
                idempotent(BIG, b'a', 0),
                idempotent(BIG, b'a', 0), // a retry of a, in the same group
                plain(BIG, b'b'),
                plain(BIG, b'c'),
                plain(10, b'd'),
            ],
        );
        let mut acked = BTreeMap::new();
        acknowledged(&replies, &tags, &mut acked);
        let later = run_group(&mut writer, vec![plain(10, b'e')]);
        acknowledged(&later, b"e", &mut acked);
        assert_eq!(
            stored(&writer),
            acked,
            "each reply says whether its batch was stored"
        );
        let retry = replies[1].as_ref().expect("the retry shares a's fate");
        assert!(retry.duplicate);
        assert_eq!(retry.base_offset, 0);
        for reply in &replies[3..] {
            let err = reply.as_ref().expect_err("lost by the failed write");
            assert!(matches!(err, LogError::DiskFull { .. }), "{err}");
        }
        assert_eq!(
            writer.log.durable_position().1,
            writer.log.end_position().1,
            "what was acknowledged is synced"
        );
    }

    fn open_on(pool: &'static WriterPool, dir: &Path) -> PartitionLog {
        let log = Log::open(
            Arc::new(crate::io::StdFs),
            dir,
            LogConfig::default(),
            Arc::new(ManualClock::new(1_700_000_000_000)),
        )
        .expect("open");
        PartitionLog::start_on(pool, log)
    }

    /// One worker serves many logs: their appends all complete, each log's
    /// in order, and dropping the handles closes every log cleanly.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pool_of_one_thread_serves_many_logs_and_closes_them_when_dropped() {
        let pool = WriterPool::fixed(1);
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs: Vec<_> = (0..50).map(|i| tmp.path().join(i.to_string())).collect();
        let logs: Vec<_> = dirs.iter().map(|d| open_on(pool, d)).collect();
        let mut tasks = Vec::new();
        for log in &logs {
            for i in 0..20u8 {
                let log = log.clone();
                tasks.push(tokio::spawn(async move { log.append(plain(10, i)).await }));
            }
        }
        for task in tasks {
            task.await.expect("join").expect("append");
        }
        for log in &logs {
            assert_eq!(log.reader().end_offset(), 20);
        }
        let stopped: Vec<_> = logs.iter().map(|l| l.stopped.clone()).collect();
        drop(logs);
        for token in stopped {
            tokio::time::timeout(Duration::from_secs(30), token.cancelled())
                .await
                .expect("every log closes once its handles are gone");
        }
        for dir in &dirs {
            let log = Log::open(
                Arc::new(crate::io::StdFs),
                dir,
                LogConfig::default(),
                Arc::new(ManualClock::new(1_700_000_000_000)),
            )
            .expect("reopen");
            assert!(
                log.recovery_report().clean,
                "{} closed cleanly",
                dir.display()
            );
            assert_eq!(log.next_offset(), 20);
        }
    }

    /// A log whose queue never empties does not keep the pool's only worker
    /// from another log: each turn takes one group, then the log goes to the
    /// back of the run queue.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_log_does_not_starve_another_on_the_same_worker() {
        let pool = WriterPool::fixed(1);
        let tmp = tempfile::tempdir().expect("tempdir");
        let busy = open_on(pool, &tmp.path().join("busy"));
        let other = open_on(pool, &tmp.path().join("other"));
        let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flood = {
            let busy = busy.clone();
            let flooding = flooding.clone();
            tokio::spawn(async move {
                while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                    let batches = (0..256).map(|i| plain(100, i as u8)).collect();
                    let submitted = busy.submit_all(batches).await;
                    tokio::spawn(submitted.wait());
                }
            })
        };
        // Let the flood fill the busy log's queue.
        while busy.reader().end_offset() < 2_000 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let appended = tokio::time::timeout(Duration::from_secs(10), other.append(plain(10, 1)))
            .await
            .expect("the other log's append is not starved")
            .expect("append");
        assert_eq!(appended.base_offset, 0);
        assert!(!flood.is_finished(), "the busy log was still being flooded");
        flooding.store(false, std::sync::atomic::Ordering::Relaxed);
        flood.await.expect("flood");
        busy.close().await.expect("close");
        other.close().await.expect("close");
    }
}
