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
//! busy.
//!
//! The thread also runs the interval policy's timed sync and periodic
//! retention. Dropping every handle, or [`PartitionLog::close`], shuts the log
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
use super::writer::{AppendInfo, Log};
use crate::io::FileSystem;

/// Most bytes of batches staged into one commit group.
pub const MAX_GROUP_BYTES: usize = 8 * 1024 * 1024;
/// Appends that may wait for the writer before `append` itself waits.
const QUEUE_DEPTH: usize = 1024;
/// How often retention runs when nothing rolls.
const RETENTION_CHECK: Duration = Duration::from_secs(60);

enum Command {
    Append {
        batch: RecordBatch,
        reply: oneshot::Sender<LogResult<AppendInfo>>,
    },
    Retention {
        reply: oneshot::Sender<LogResult<usize>>,
    },
    Trim {
        before: u64,
        reply: oneshot::Sender<usize>,
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
        self.commands
            .send_async(Command::Append { batch, reply })
            .await
            .map_err(|_| LogError::Closed)?;
        answer(&self.stopped, response).await
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
            match self
                .commands
                .send_async(Command::Append { batch, reply })
                .await
            {
                Ok(()) => responses.push(Some(response)),
                Err(_) => responses.push(None),
            }
        }
        Submitted {
            responses,
            stopped: self.stopped.clone(),
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
    responses: Vec<Option<oneshot::Receiver<LogResult<AppendInfo>>>>,
    stopped: CancellationToken,
}

impl Submitted {
    /// One result per batch, in order, once each is as durable as the
    /// fsync policy promises ([`LogError::Closed`] for a batch the writer
    /// never took).
    pub async fn wait(self) -> Vec<LogResult<AppendInfo>> {
        let mut results = Vec::with_capacity(self.responses.len());
        for response in self.responses {
            let result = match response {
                Some(response) => answer(&self.stopped, response).await,
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
        let mut staged = Vec::with_capacity(group.len());
        let mut close = None;
        for command in group {
            match command {
                Command::Append { batch, reply } => match self.log.append(&batch) {
                    Ok(info) => staged.push((reply, info)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
                Command::Retention { reply } => {
                    let _ = reply.send(self.log.enforce_retention());
                }
                Command::Trim { before, reply } => {
                    let _ = reply.send(self.log.trim_before(before));
                }
                Command::Close { reply } => close = Some(reply),
            }
        }
        let committed = self.log.commit();
        for (reply, info) in staged {
            let _ = reply.send(committed.clone().map(|()| info));
        }
        self.end.send_replace(self.log.reader().end_offset());
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
