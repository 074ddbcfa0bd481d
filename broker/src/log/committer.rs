//! [`PartitionLog`]: a partition log driven by its own writer thread, with
//! group commit behind an async API.
//!
//! Appends arrive on a bounded channel (back-pressure: when the writer falls
//! behind, `append` waits for room instead of growing a queue). The thread
//! takes every append waiting (up to [`MAX_GROUP_BYTES`]), stages them all,
//! then commits once: under `fsync=always` one `fdatasync` covers the whole
//! group, and each append's future completes only after it. While that sync
//! runs, new appends queue up and form the next group, so the number of
//! syncs adapts to the load: one per append when idle, one per many when
//! busy. Each append's answer is its own, not the group's: a group can be
//! written in pieces and one piece can fail while the others are stored
//! (see "What each append's answer says" in [`super::writer::commit`]).
//!
//! The thread also runs the interval policy's timed sync and periodic
//! retention, takes retention changes ([`PartitionLog::set_retention`],
//! applied at once), and counts each commit group's records and bytes in
//! the log's [`LogStats`](super::stats::LogStats) (the fsync time is
//! counted where the sync runs, in [`Log::sync`]).
//!
//! ## Stage timings
//!
//! Every append is timed through its [stages](super::stats::Stage), which
//! follow each other without gap: `queued` from the moment its caller
//! queues it (waiting for room in the queue included) until the writer
//! takes its group; `write` until the group's staging and positioned write
//! are done; `fsync` until the commit is done; `wake` until the task that
//! waits for it runs again (recorded by that task, from the commit's end
//! carried in the answer). The log end watch moves as soon as the commit
//! is done, before the appends are answered, so a waiting consumer's
//! wake-up does not queue behind the producers' answers.
//!
//! Dropping every handle, or [`PartitionLog::close`], shuts the log
//! down cleanly (sync, clean checkpoint). A command sent while the log
//! closes gets its answer or `Closed`, never a wait without end: the
//! handles also watch for the writer thread to end (a command queued just
//! after the writer took its Close stays in the channel unanswered).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pigeon_protocol::batch::RecordBatch;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::clock::Clock;
use super::config::LogConfig;
use super::error::{LogError, LogResult};
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

/// Handle to a partition log and its writer thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PartitionLog {
    commands: flume::Sender<Command>,
    reader: LogReader,
    end: watch::Receiver<u64>,
    /// Cancelled when the writer thread has stopped (or never started).
    stopped: CancellationToken,
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

    /// Starts the writer thread of an opened log.
    pub fn start(log: Log) -> PartitionLog {
        let (commands, receiver) = flume::bounded(QUEUE_DEPTH);
        let reader = log.reader();
        let (end_tx, end) = watch::channel(reader.end_offset());
        let stopped = CancellationToken::new();
        let writer = Writer { log, end: end_tx };
        // Dropped (cancelling `stopped`) once the thread has answered its
        // last command and ended, or at once if it cannot start.
        let stopped_guard = stopped.clone().drop_guard();
        let name = format!(
            "log-{}",
            writer
                .log
                .dir()
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let _stopped = stopped_guard;
            writer.run(receiver);
        });
        if let Err(e) = spawned {
            // Without a thread every append fails with `Closed`.
            tracing::error!(error = %e, "could not start a partition writer thread");
        }
        PartitionLog {
            commands,
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
                Ok(()) => responses.push(Some(response)),
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
        answer(&self.stopped, response).await
    }

    /// Commits what is queued, shuts down cleanly, and stops the writer.
    pub async fn close(&self) -> LogResult<()> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send_async(Command::Close { reply })
            .await
            .map_err(|_| LogError::Closed)?;
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

impl Writer {
    fn run(mut self, commands: flume::Receiver<Command>) {
        let mut next_retention = Instant::now() + RETENTION_CHECK;
        loop {
            let deadline = self
                .log
                .sync_due_at()
                .map_or(next_retention, |t| t.min(next_retention));
            let first = match commands.recv_deadline(deadline) {
                Ok(command) => command,
                Err(flume::RecvTimeoutError::Timeout) => {
                    self.on_timer(&mut next_retention);
                    continue;
                }
                Err(flume::RecvTimeoutError::Disconnected) => {
                    let _ = self.close();
                    return;
                }
            };
            let mut group = vec![first];
            let mut bytes = 0;
            while bytes < MAX_GROUP_BYTES
                && let Ok(command) = commands.try_recv()
            {
                if let Command::Append { batch, .. } = &command {
                    bytes += batch.bytes().len();
                }
                group.push(command);
            }
            if let Some(reply) = self.run_group(group) {
                let _ = reply.send(self.close());
                return;
            }
        }
    }

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
}
