//! [`Log`]: the writer side of a partition log, owned by one thread.
//!
//! ## Append, step by step (what is on disk at each point)
//!
//! 1. [`Log::append`] validates limits, rolls the segment if needed, assigns
//!    the base offset and the append time, and copies the batch, restamped,
//!    into a staging buffer. Nothing is on disk; nothing is visible.
//! 2. [`Log::flush_writes`] writes the staging buffer with one positioned
//!    write. The bytes are in the page cache. Index entries for them become
//!    visible to index lookups. If the write fails (e.g. `ENOSPC`), the file
//!    is cut back to where the staged bytes began and the whole staged group
//!    fails; nothing that was acknowledged is touched.
//! 3. [`Log::sync`] runs one `fdatasync` for everything written so far
//!    (group commit). Only then, under `fsync=always`, do readers see the
//!    new batches. If it fails the log turns read-only: the kernel may have
//!    dropped the dirty pages, so retrying would pretend.
//!
//! ## A failed fdatasync ("fsyncgate")
//!
//! After a failed writeback Linux may mark the dirty pages clean: they stay
//! readable from the page cache, a later fsync (even through a new
//! descriptor, after a restart) succeeds, and the bytes are gone once the
//! pages are evicted or the power goes. So when an `fdatasync` of the active
//! segment fails, the log goes back to the last position a completed sync
//! covered: readers, index entries and the cursor forget what followed, the
//! file is cut there (which drops those pages), and a fence checkpoint
//! records the position (see [`super::checkpoint`]); recovery cuts at a
//! fence even when the cut failed. The log then refuses writes until a
//! restart. Under `fsync=always` nothing past that position was
//! acknowledged; under `interval`/`never` the appends acknowledged since the
//! last sync are dropped, as a power cut would drop them.
//!
//! A crash before 3 leaves a tail that recovery validates batch by batch and
//! cuts at the first torn or corrupt one.
//!
//! ## What each append's answer says
//!
//! A commit group can be written in several pieces (the staging buffer is
//! written out whenever it passes [`STAGE_LIMIT`], and a roll syncs what
//! came before it), so one piece can fail while others are stored. Each
//! staged append gets a ticket ([`Tracked`]); [`Log::commit_tracked`]
//! settles every ticket on its own ([`Committed::result`]): lost by a
//! failed write (its offsets are reused), or stored and as durable as the
//! policy promises, or not durable because the log turned read-only. A
//! retry of an idempotent batch staged in the same group shares its
//! original's ticket. A failed write in the last piece does not keep the
//! pieces written before it from being synced and acknowledged.
//! [`Log::append`] and [`Log::commit`] are the same without tickets:
//! `commit` fails if any append since the last commit was lost.
//!
//! ## Roll
//!
//! Flush and sync the active segment, seal its indexes (mark the segment
//! sealed so it takes no more appends, final time entry, flush, truncate to
//! exact size, sync), create the next segment's three files, sync the
//! directory, then write a checkpoint pointing at the new segment. A crash
//! anywhere in between leaves either the old checkpoint (recovery scans the
//! old segment's tail and the new, empty segment) or the new one. A failed
//! seal turns the log read-only (appending over an index file cut to size
//! would write through the map past its end); a failed create leaves the
//! old segment sealed, and the next append retries the roll.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use parking_lot::RwLock;
use pigeon_protocol::batch::{BatchHeader, RecordBatch, stamp};

use super::checkpoint::Checkpoint;
use super::clock::Clock;
use super::config::{FsyncPolicy, LogConfig};
use super::error::{LogError, LogResult};
use super::producers::{Check, EpochSource, ProducerEntry, ProducerTable, SNAPSHOT_FILE};
use super::reader::LogReader;
use super::recovery::RecoveryReport;
use super::retention::{SealedInfo, expired_prefix};
use super::segment::Segment;
use crate::io::{FileSystem, write_all_at, write_atomically};

/// Staged bytes are written out once they pass this size.
const STAGE_LIMIT: usize = 4 * 1024 * 1024;

/// What readers share with the writer.
#[derive(Debug)]
pub(crate) struct Shared {
    /// All segments, oldest first; the last one is active. Replaced as a
    /// whole (roll, retention) so readers take a snapshot without blocking.
    pub segments: RwLock<Arc<Vec<Arc<Segment>>>>,
}

impl Shared {
    pub fn snapshot(&self) -> Arc<Vec<Arc<Segment>>> {
        self.segments.read().clone()
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset of its last record.
    pub last_offset: u64,
    /// Append time given to every record of the batch (ms since the epoch).
    pub timestamp: i64,
    /// The log start offset at the time of the append.
    pub log_start_offset: u64,
    /// The batch was a retry of one already appended: nothing new was
    /// written, and these are the original's offsets and time.
    pub duplicate: bool,
}

/// A staged append, until [`Log::commit_tracked`] settles it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tracked {
    /// Where the batch goes (or, for a retry, where its original went).
    pub info: AppendInfo,
    /// Whose fate the append shares; `None` for a retry of a batch already
    /// committed (nothing new to settle).
    ticket: Option<u64>,
}

/// How the appends since the last commit were settled.
#[derive(Debug, Clone)]
pub(crate) struct Committed {
    /// Tickets lost by a failed write, with its error.
    lost: Vec<(std::ops::Range<u64>, LogError)>,
    /// Tickets below this (and not lost) are stored and as durable as the
    /// policy promises.
    durable_below: u64,
    /// Why the commit failed, if it did.
    error: Option<LogError>,
}

impl Committed {
    /// What happened to one staged append.
    pub fn result(&self, tracked: &Tracked) -> LogResult<()> {
        let Some(ticket) = tracked.ticket else {
            return Ok(());
        };
        if let Some((_, error)) = self.lost.iter().find(|(r, _)| r.contains(&ticket)) {
            return Err(error.clone());
        }
        if ticket < self.durable_below {
            return Ok(());
        }
        Err(self.error.clone().unwrap_or_else(|| {
            LogError::io(
                "committing an append",
                std::io::Error::other("the append was neither stored nor failed (a bug)"),
            )
        }))
    }

    /// The first failure, if any append was lost or the commit failed.
    fn first_error(&self) -> Option<LogError> {
        self.lost
            .first()
            .map(|(_, e)| e.clone())
            .or_else(|| self.error.clone())
    }
}

/// Index entries of staged batches, pushed once their bytes are written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingEntry {
    relative_offset: u32,
    position: u32,
    /// Present when the time index gets an entry too.
    timestamp: Option<i64>,
}

/// State of the writer kept across appends; restored when a staged group
/// fails to be written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor {
    /// Offset the next batch gets.
    pub next_offset: u64,
    /// Largest timestamp assigned so far (timestamps never go back).
    pub max_timestamp: i64,
    /// Bytes appended since the last index entry.
    pub bytes_since_index: u64,
    /// Timestamp of the last time index entry.
    pub last_indexed_timestamp: i64,
    /// Relative offset of the last batch of the active segment.
    pub last_batch_relative: Option<u32>,
}

/// The writer's state where the last completed fdatasync ended, to go back
/// to when a later one fails.
#[derive(Debug, Clone, Copy)]
struct SyncedPoint {
    cursor: Cursor,
    /// Entries of the active segment's offset and time indexes then.
    index_len: usize,
    time_index_len: usize,
    /// Appends with a ticket below this were synced.
    ticket: u64,
}

impl SyncedPoint {
    fn of(active: &Active, ticket: u64) -> SyncedPoint {
        SyncedPoint {
            cursor: active.cursor,
            index_len: active.segment.index.0.len(),
            time_index_len: active.segment.time_index.0.len(),
            ticket,
        }
    }
}

/// The active segment and the writer's position in it.
#[derive(Debug)]
pub(crate) struct Active {
    pub segment: Arc<Segment>,
    /// When the segment got its first batch, for `segment_ms`.
    pub created_ms: i64,
    /// Bytes written to the file.
    pub write_pos: u64,
    /// Bytes covered by a completed fdatasync.
    pub synced_pos: u64,
    /// Position of the last checkpoint in this segment.
    pub checkpoint_pos: u64,
    pub cursor: Cursor,
}

/// The writer of one partition log. See the module doc for the crash story.
#[derive(Debug)]
pub struct Log {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    pub(crate) fs: Arc<dyn FileSystem>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) active: Active,
    /// Batches copied in, restamped, not yet written.
    staged: Vec<u8>,
    /// Cursor before the first staged batch, to roll back a failed write.
    staged_from: Option<Cursor>,
    pending_entries: Vec<PendingEntry>,
    /// Ticket of the next staged append.
    next_ticket: u64,
    /// Ticket of the first append in `staged`.
    staged_first_ticket: u64,
    /// Appends since the last commit: `(base offset, ticket)`, so that a
    /// retry in the same group shares its original's ticket.
    unsettled: Vec<(u64, u64)>,
    /// Tickets lost by failed writes since the last commit.
    lost: Vec<(std::ops::Range<u64>, LogError)>,
    /// Tickets below this are written and as durable as the policy promises
    /// (under `fsync=always`: synced).
    durable_below: u64,
    /// Set after a failed fsync: the log refuses writes.
    read_only: Option<String>,
    /// The writer's state at `active.synced_pos`.
    synced: SyncedPoint,
    /// The checkpoint on disk is a fence (see [`super::checkpoint`]); it
    /// must be replaced before any append, or the next start would cut it.
    pub(crate) fence_pending: bool,
    /// When the oldest write not yet synced happened (interval policy).
    unsynced_since: Option<Instant>,
    /// What opening the log had to do.
    pub(crate) recovery: RecoveryReport,
    /// Idempotent producers' sequences and recent batches.
    pub(crate) producers: ProducerTable,
    /// The broker's producer registry, for fencing.
    epochs: Option<Arc<dyn EpochSource>>,
    /// Producer entries as they were before the staged group touched them.
    staged_producers: Vec<(i64, Option<ProducerEntry>)>,
}

impl Log {
    pub(crate) fn assemble(
        dir: &Path,
        config: LogConfig,
        fs: Arc<dyn FileSystem>,
        clock: Arc<dyn Clock>,
        segments: Vec<Arc<Segment>>,
        active: Active,
    ) -> Log {
        let shared = Arc::new(Shared {
            segments: RwLock::new(Arc::new(segments)),
        });
        Log {
            dir: dir.to_owned(),
            config,
            fs,
            clock,
            shared,
            staged: Vec::new(),
            staged_from: None,
            pending_entries: Vec::new(),
            next_ticket: 0,
            staged_first_ticket: 0,
            unsettled: Vec::new(),
            lost: Vec::new(),
            durable_below: 0,
            read_only: None,
            synced: SyncedPoint::of(&active, 0),
            fence_pending: false,
            unsynced_since: None,
            recovery: RecoveryReport::default(),
            producers: ProducerTable::new(),
            epochs: None,
            staged_producers: Vec::new(),
            active,
        }
    }

    /// Uses `epochs` to fence producers whose epoch is no longer current.
    pub fn with_epochs(mut self, epochs: Arc<dyn EpochSource>) -> Log {
        self.epochs = Some(epochs);
        self
    }

    /// The idempotent producer state.
    pub fn producers(&self) -> &ProducerTable {
        &self.producers
    }

    /// A reader sharing this log's segments.
    pub fn reader(&self) -> LogReader {
        LogReader::new(self.shared.clone())
    }

    /// `(segment base, bytes written)` of the active segment.
    pub fn end_position(&self) -> (u64, u64) {
        (self.active.segment.base_offset, self.active.write_pos)
    }

    /// What opening the log had to do (scan, truncation, index rebuilds).
    pub fn recovery_report(&self) -> RecoveryReport {
        self.recovery
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Offset the next appended record will get (staged batches included).
    pub fn next_offset(&self) -> u64 {
        self.active.cursor.next_offset
    }

    /// Bytes of the active segment covered by a completed fsync.
    pub fn durable_position(&self) -> (u64, u64) {
        (self.active.segment.base_offset, self.active.synced_pos)
    }

    /// Appends a validated batch: stages it, restamped with its offset and
    /// the append time. It is durable and visible only after [`Log::commit`].
    pub fn append(&mut self, batch: &RecordBatch) -> LogResult<AppendInfo> {
        self.append_tracked(batch).map(|tracked| tracked.info)
    }

    /// [`append`](Self::append), with the ticket that
    /// [`commit_tracked`](Self::commit_tracked) settles.
    pub(crate) fn append_tracked(&mut self, batch: &RecordBatch) -> LogResult<Tracked> {
        self.check_writable()?;
        self.check_limits(batch)?;
        let header = *batch.header();
        if let Some(info) = self.duplicate_of(&header)? {
            // Staged in this group: it shares the original's fate.
            let ticket = self
                .unsettled
                .iter()
                .rev()
                .find(|(base, _)| *base == info.base_offset)
                .map(|(_, ticket)| *ticket);
            return Ok(Tracked { info, ticket });
        }
        let len = batch.bytes().len();
        let count = header.record_count;
        if self.should_roll(len as u64, count) {
            self.roll()?;
        }
        if self.staged.len() + len > STAGE_LIMIT {
            self.flush_writes()?;
        }
        let (base_offset, timestamp) = self.stage(batch);
        if header.producer.is_idempotent() {
            self.stage_producer(&header, base_offset, timestamp);
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.unsettled.push((base_offset, ticket));
        let info = AppendInfo {
            base_offset,
            last_offset: base_offset + u64::from(count) - 1,
            timestamp,
            log_start_offset: self.reader().start_offset(),
            duplicate: false,
        };
        Ok(Tracked {
            info,
            ticket: Some(ticket),
        })
    }

    /// Refuses a batch with a timestamp delta, or over the partition's
    /// batch size limit.
    fn check_limits(&self, batch: &RecordBatch) -> LogResult<()> {
        if batch.max_timestamp_delta() != 0 {
            return Err(LogError::TimestampDelta(batch.max_timestamp_delta()));
        }
        if batch.bytes().len() > self.config.max_batch_bytes as usize {
            return Err(LogError::InvalidBatch(
                pigeon_protocol::batch::BatchError::BadLength {
                    declared: batch.header().batch_length,
                    reason: format!(
                        "the partition's batch size limit is {} bytes",
                        self.config.max_batch_bytes
                    ),
                },
            ));
        }
        Ok(())
    }

    /// For an idempotent producer's batch: the answer to give if it is a
    /// retry of one already appended (its original offsets and time); an
    /// error if its sequence or epoch is refused.
    fn duplicate_of(&self, header: &BatchHeader) -> LogResult<Option<AppendInfo>> {
        let producer = header.producer;
        if !producer.is_idempotent() {
            return Ok(None);
        }
        let current = self
            .epochs
            .as_ref()
            .and_then(|e| e.current_epoch(producer.producer_id));
        if let Check::Duplicate(original) = self.producers.check(header, current)? {
            return Ok(Some(AppendInfo {
                base_offset: original.base_offset,
                last_offset: original.last_offset,
                timestamp: original.timestamp,
                log_start_offset: self.reader().start_offset(),
                duplicate: true,
            }));
        }
        Ok(None)
    }

    /// Copies the batch into the staging buffer, restamped with the next
    /// offset and the append time; queues its index entry, if one is due,
    /// and moves the cursor past it. Returns `(base offset, append time)`.
    fn stage(&mut self, batch: &RecordBatch) -> (u64, i64) {
        let bytes = batch.bytes();
        let len = bytes.len();
        let cursor = &mut self.active.cursor;
        if self.staged.is_empty() {
            self.staged_from = Some(*cursor);
            self.staged_first_ticket = self.next_ticket;
        }
        let base_offset = cursor.next_offset;
        let timestamp = self.clock.now_ms().max(cursor.max_timestamp);
        let position = self.active.write_pos + self.staged.len() as u64;
        let start = self.staged.len();
        self.staged.extend_from_slice(bytes);
        stamp(
            &mut self.staged[start..],
            base_offset,
            timestamp,
            timestamp,
            batch.records_crc(),
        );
        let relative = (base_offset - self.active.segment.base_offset) as u32;
        if let Some(entry) = index_entry(
            cursor,
            &self.config,
            position,
            relative,
            timestamp,
            len as u64,
        ) {
            self.pending_entries.push(entry);
        }
        cursor.next_offset += u64::from(batch.header().record_count);
        cursor.max_timestamp = timestamp;
        if self.active.write_pos == 0 && start == 0 {
            self.active.created_ms = timestamp;
        }
        (base_offset, timestamp)
    }

    /// Applies a staged idempotent batch to the producer state, first
    /// keeping the producer's entry as it was before the staged group
    /// touched it (restored if the group's write fails).
    fn stage_producer(&mut self, header: &BatchHeader, base_offset: u64, timestamp: i64) {
        let pid = header.producer.producer_id;
        if !self.staged_producers.iter().any(|(p, _)| *p == pid) {
            self.staged_producers
                .push((pid, self.producers.entry_of(pid)));
        }
        let stamped = BatchHeader {
            base_offset,
            first_timestamp: timestamp,
            max_timestamp: timestamp,
            ..*header
        };
        self.producers.apply(&stamped);
    }

    /// Makes the appends since the last commit as durable as the policy
    /// says, and visible. Fails if any of them was lost.
    pub fn commit(&mut self) -> LogResult<()> {
        match self.commit_tracked().first_error() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// [`commit`](Self::commit), saying what happened to each append.
    pub(crate) fn commit_tracked(&mut self) -> Committed {
        let error = self.commit_written().err();
        self.unsettled.clear();
        Committed {
            lost: std::mem::take(&mut self.lost),
            durable_below: self.durable_below,
            error,
        }
    }

    /// The policy's work for a commit.
    fn commit_written(&mut self) -> LogResult<()> {
        match self.config.fsync {
            FsyncPolicy::Always => self.sync(),
            FsyncPolicy::Interval(every) => self.flush_writes().and_then(|()| {
                let due = self.unsynced_since.is_some_and(|t| t.elapsed() >= every);
                if due {
                    self.sync()
                } else {
                    self.checkpoint_if_due()
                }
            }),
            FsyncPolicy::Never => self.flush_writes().and_then(|()| self.checkpoint_if_due()),
        }
    }

    /// When the interval policy next needs a sync, if it does.
    pub fn sync_due_at(&self) -> Option<Instant> {
        match self.config.fsync {
            FsyncPolicy::Interval(every) => self.unsynced_since.map(|t| t + every),
            _ => None,
        }
    }

    /// Writes staged batches to the file (one positioned write).
    pub fn flush_writes(&mut self) -> LogResult<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let segment = self.active.segment.clone();
        if let Err(e) = write_all_at(segment.log.as_ref(), &self.staged, self.active.write_pos) {
            let error = LogError::io(format!("appending to {}", segment.log_path.display()), e);
            self.discard_staged(&error);
            return Err(error);
        }
        self.active.write_pos += self.staged.len() as u64;
        self.staged.clear();
        self.staged_from = None;
        self.staged_producers.clear();
        for entry in self.pending_entries.drain(..) {
            segment.index.push(entry.relative_offset, entry.position);
            if let Some(ts) = entry.timestamp {
                segment.time_index.push(ts, entry.relative_offset);
            }
        }
        self.unsynced_since.get_or_insert_with(Instant::now);
        if self.config.fsync != FsyncPolicy::Always {
            self.durable_below = self.next_ticket;
            self.publish();
        }
        Ok(())
    }

    /// Drops the staged group after a failed write, restoring the cursor and
    /// cutting off whatever part of it reached the file.
    fn discard_staged(&mut self, error: &LogError) {
        if let Some(cursor) = self.staged_from.take() {
            self.active.cursor = cursor;
        }
        self.staged.clear();
        self.pending_entries.clear();
        for (pid, entry) in self.staged_producers.drain(..).rev() {
            self.producers.restore(pid, entry);
        }
        let segment = &self.active.segment;
        if let Err(e) = segment.log.set_len(self.active.write_pos) {
            // Harmless for readers (they stop at the published size) and for
            // the next write (positioned at write_pos); recovery cuts it.
            tracing::warn!(segment = %segment.log_path.display(), error = %e, "could not cut a failed write off the segment");
        }
        self.lost
            .push((self.staged_first_ticket..self.next_ticket, error.clone()));
    }

    /// Writes and fsyncs everything appended; then publishes it. If the
    /// write of the staged batches fails, what was written before them is
    /// still synced and published, and the write's error returned.
    pub fn sync(&mut self) -> LogResult<()> {
        self.check_writable()?;
        let written = self.flush_writes();
        if self.active.synced_pos < self.active.write_pos {
            if let Err(e) = self.active.segment.log.sync_data() {
                return Err(self.fsync_failed(e));
            }
            self.active.synced_pos = self.active.write_pos;
        }
        self.synced = SyncedPoint::of(&self.active, self.next_ticket);
        self.durable_below = self.next_ticket;
        self.unsynced_since = None;
        self.publish();
        written?;
        self.checkpoint_if_due()
    }

    /// Turns the log read-only for `cause` (which completes "partition
    /// refuses writes since …").
    fn refuse_writes(&mut self, cause: String) -> LogError {
        tracing::error!(dir = %self.dir.display(), %cause, "partition turns read-only");
        self.read_only = Some(cause.clone());
        LogError::ReadOnly { cause }
    }

    /// After a failed fdatasync of the active segment (see the module doc):
    /// read-only, back to the last synced position, file cut there, fence
    /// checkpoint written.
    fn fsync_failed(&mut self, e: std::io::Error) -> LogError {
        let segment = self.active.segment.clone();
        let error = self.refuse_writes(format!(
            "an fsync failed (fdatasync of {}: {e})",
            segment.log_path.display()
        ));
        let synced = self.synced;
        let position = self.active.synced_pos;
        let max_timestamp = if position == 0 {
            i64::MIN
        } else {
            synced.cursor.max_timestamp
        };
        if segment.size() > position {
            // Published without a sync (interval and never policies).
            retract(&segment, position, synced.cursor.next_offset, max_timestamp);
        }
        segment.index.0.truncate(synced.index_len);
        segment.time_index.0.truncate(synced.time_index_len);
        self.active.write_pos = position;
        self.active.cursor = synced.cursor;
        self.durable_below = self.durable_below.min(synced.ticket);
        self.unsynced_since = None;
        let cut = segment.log.set_len(position);
        if let Err(e) = segment
            .index
            .0
            .flush()
            .and_then(|()| segment.time_index.0.flush())
        {
            tracing::warn!(segment = %segment.log_path.display(), error = %e, "could not flush the indexes before writing the fence");
        }
        let fence = Checkpoint {
            clean: false,
            fence: true,
            segment_base: segment.base_offset,
            position,
            next_offset: synced.cursor.next_offset,
            max_timestamp: synced.cursor.max_timestamp,
        };
        let fenced = fence.write(self.fs.as_ref(), &self.dir);
        let shown = segment.log_path.display();
        match (cut, fenced) {
            (Ok(()), Ok(())) => {
                tracing::warn!(segment = %shown, position, "cut the segment back to its last synced position and fenced it")
            }
            (Err(e), Ok(())) => {
                tracing::warn!(segment = %shown, position, error = %e, "could not cut the segment back to its last synced position; the fence makes recovery cut it")
            }
            (Ok(()), Err(e)) => {
                tracing::warn!(segment = %shown, position, error = %e, "could not write the fence; the segment was cut back to its last synced position")
            }
            (Err(cut), Err(fence)) => tracing::error!(
                segment = %shown, position, cut_error = %cut, fence_error = %fence,
                "could neither cut the segment back to its last synced position nor record it: before restarting the broker, cut the file to that many bytes (or drop the page cache, or reboot), or a restart may serve bytes that never reached the disk"
            ),
        }
        error
    }

    /// Refuses writes after a failure; replaces a fence left by the last
    /// run before the first append.
    fn check_writable(&mut self) -> LogResult<()> {
        if let Some(cause) = &self.read_only {
            return Err(LogError::ReadOnly {
                cause: cause.clone(),
            });
        }
        if self.fence_pending {
            self.try_write_checkpoint(false).map_err(|e| {
                LogError::io(
                    format!(
                        "replacing the fence checkpoint of {} (left by a failed fsync) before the first append",
                        self.dir.display()
                    ),
                    e,
                )
            })?;
        }
        Ok(())
    }

    /// Makes written batches visible to readers.
    fn publish(&self) {
        let a = &self.active;
        a.segment
            .publish(a.write_pos, a.cursor.next_offset, a.cursor.max_timestamp);
    }

    /// Writes a checkpoint once `checkpoint_interval_bytes` were written
    /// since the last one. Under `fsync=never` only if the data is already
    /// synced: that policy promises no sync on the append path, so its
    /// checkpoints come at segment roll (which syncs anyway) and restart
    /// work is bounded by one segment instead.
    fn checkpoint_if_due(&mut self) -> LogResult<()> {
        let a = &self.active;
        if a.write_pos - a.checkpoint_pos < self.config.checkpoint_interval_bytes {
            return Ok(());
        }
        if a.synced_pos < a.write_pos {
            if self.config.fsync == FsyncPolicy::Never {
                return Ok(());
            }
            return self.sync();
        }
        self.write_checkpoint(false);
        Ok(())
    }

    /// Records the durable point. Needs `synced_pos == write_pos`. A failure
    /// only costs a longer scan after a crash, so it is logged, not raised.
    pub(crate) fn write_checkpoint(&mut self, clean: bool) {
        if let Err(e) = self.try_write_checkpoint(clean) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not write the recovery checkpoint (and producer snapshot)");
        }
    }

    /// [`write_checkpoint`](Self::write_checkpoint), returning the failure.
    /// Refused once the log is read-only: its in-memory state (producers)
    /// may hold batches that are not durable, and the fence must stay.
    fn try_write_checkpoint(&mut self, clean: bool) -> std::io::Result<()> {
        if let Some(cause) = &self.read_only {
            return Err(std::io::Error::other(format!(
                "no checkpoint is written once the partition refuses writes since {cause}"
            )));
        }
        // The producer snapshot goes first: recovery relies on a snapshot
        // at or after the checkpoint's offset.
        self.producers
            .expire(self.clock.now_ms(), self.config.producer_expiry_ms);
        let snapshot = self.producers.encode(self.active.cursor.next_offset);
        write_atomically(self.fs.as_ref(), &self.dir.join(SNAPSHOT_FILE), &snapshot)?;
        let a = &self.active;
        a.segment.index.0.flush()?;
        a.segment.time_index.0.flush()?;
        let checkpoint = Checkpoint {
            clean,
            fence: false,
            segment_base: a.segment.base_offset,
            position: a.synced_pos,
            next_offset: a.cursor.next_offset,
            max_timestamp: a.cursor.max_timestamp,
        };
        checkpoint.write(self.fs.as_ref(), &self.dir)?;
        self.active.checkpoint_pos = checkpoint.position;
        self.fence_pending = false;
        Ok(())
    }

    fn should_roll(&self, len: u64, count: u32) -> bool {
        let a = &self.active;
        let size = a.write_pos + self.staged.len() as u64;
        if size == 0 {
            return false;
        }
        let segment = &a.segment;
        // A segment sealed by a roll that then failed (e.g. no space for the
        // next one) takes no more appends: the roll is retried first.
        segment.sealed.load(Ordering::Acquire)
            || size + len > self.config.segment_bytes
            || self.clock.now_ms().saturating_sub(a.created_ms) >= self.config.segment_ms as i64
            || segment.index.0.len() + self.pending_entries.len() + 1 >= segment.index.0.capacity()
            || a.cursor.next_offset + u64::from(count) - segment.base_offset > u64::from(u32::MAX)
    }

    /// Seals the active segment and starts a new one at the next offset.
    /// Does nothing while the active segment is empty (a new segment would
    /// have the same base offset).
    pub fn roll(&mut self) -> LogResult<()> {
        if self.active.write_pos == 0 && self.staged.is_empty() {
            return Ok(());
        }
        self.sync()?;
        let old = self.active.segment.clone();
        self.seal(&old)?;
        let base = self.active.cursor.next_offset;
        let capacity = self.config.index_capacity();
        let created = Segment::create(self.fs.as_ref(), &self.dir, base, capacity)
            .and_then(|segment| self.fs.sync_dir(&self.dir).map(|()| segment));
        let segment = match created {
            Ok(segment) => Arc::new(segment),
            Err(e) => {
                for path in Segment::paths(&self.dir, base) {
                    let _ = self.fs.remove_file(&path);
                }
                return Err(LogError::io(
                    format!("creating segment {base:020} in {}", self.dir.display()),
                    e,
                ));
            }
        };
        segment.publish(0, base, i64::MIN);
        {
            let mut segments = self.shared.segments.write();
            let mut list = Vec::clone(&segments);
            list.push(segment.clone());
            *segments = Arc::new(list);
        }
        let cursor = Cursor {
            bytes_since_index: 0,
            last_indexed_timestamp: i64::MIN,
            last_batch_relative: None,
            ..self.active.cursor
        };
        self.active = Active {
            segment,
            created_ms: self.clock.now_ms(),
            write_pos: 0,
            synced_pos: 0,
            checkpoint_pos: 0,
            cursor,
        };
        self.synced = SyncedPoint::of(&self.active, self.next_ticket);
        self.write_checkpoint(false);
        self.enforce_retention()?;
        Ok(())
    }

    /// Final time entry, flush, truncate and sync both indexes; idempotent.
    ///
    /// The segment is marked sealed first, so it takes no appends from
    /// before its index files are cut to their entries: a later entry
    /// pushed through the map past the cut end of the file would fault,
    /// and one past the final time entry would break its order. If the
    /// seal fails half-way (say the index's fsync after the cut), the log
    /// turns read-only: the index files on disk are in an unknown state,
    /// and a restart rebuilds them from the log.
    fn seal(&mut self, segment: &Segment) -> LogResult<()> {
        if segment.sealed.load(Ordering::Acquire) {
            return Ok(());
        }
        segment.sealed.store(true, Ordering::Release);
        let cursor = &self.active.cursor;
        segment.push_final_time_entry(cursor.max_timestamp, cursor.last_batch_relative);
        segment
            .seal_indexes()
            .map_err(|e| self.refuse_writes(format!("sealing a segment failed ({e})")))
    }

    /// Deletes whole sealed segments past retention; returns how many.
    pub fn enforce_retention(&mut self) -> LogResult<usize> {
        let snapshot = self.shared.snapshot();
        let sealed: Vec<SealedInfo> = snapshot[..snapshot.len() - 1]
            .iter()
            .map(|s| SealedInfo {
                size: s.size(),
                max_timestamp: s.max_timestamp(),
            })
            .collect();
        let active_size = self.active.write_pos;
        let config = &self.config;
        let count = expired_prefix(
            &sealed,
            active_size,
            self.clock.now_ms(),
            config.retention_ms,
            config.retention_bytes,
        );
        Ok(self.delete_oldest(&snapshot, count, "retention"))
    }

    /// Deletes the sealed segments that hold only offsets below `offset`
    /// (the log is kept elsewhere up to there, e.g. a group journal whose
    /// snapshot covers it); returns how many.
    pub fn trim_before(&mut self, offset: u64) -> usize {
        let snapshot = self.shared.snapshot();
        let sealed = snapshot.len() - 1;
        let count = (0..sealed)
            .take_while(|&i| snapshot[i + 1].base_offset <= offset)
            .count();
        self.delete_oldest(&snapshot, count, "trim")
    }

    /// Removes the first `count` segments of `snapshot` from the log and
    /// their files from the disk.
    fn delete_oldest(&mut self, snapshot: &[Arc<Segment>], count: usize, why: &str) -> usize {
        if count == 0 {
            return 0;
        }
        *self.shared.segments.write() = Arc::new(snapshot[count..].to_vec());
        for segment in &snapshot[..count] {
            tracing::info!(segment = %segment.log_path.display(), why, "deleting segment");
            for path in Segment::paths(&self.dir, segment.base_offset) {
                if let Err(e) = self.fs.remove_file(&path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %path.display(), error = %e, "could not delete a segment file");
                }
            }
        }
        if let Err(e) = self.fs.sync_dir(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not sync the directory after deleting segments");
        }
        count
    }

    /// Clean shutdown: write, sync, cut the active indexes to their entries,
    /// and write a clean checkpoint so that the next open skips the scan.
    pub fn close(mut self) -> LogResult<()> {
        if self.read_only.is_some() {
            return Ok(());
        }
        self.sync()?;
        self.active.segment.seal_indexes()?;
        self.write_checkpoint(true);
        Ok(())
    }
}

/// The index entry the batch at `position` gets, if one is due, and the
/// bookkeeping for the next one. Shared by appends and recovery, so that a
/// rebuilt index equals the one appends would have written.
pub(crate) fn index_entry(
    cursor: &mut Cursor,
    config: &LogConfig,
    position: u64,
    relative_offset: u32,
    timestamp: i64,
    len: u64,
) -> Option<PendingEntry> {
    let mut entry = None;
    if cursor.bytes_since_index >= u64::from(config.index_interval_bytes) && position > 0 {
        let timestamp = (timestamp > cursor.last_indexed_timestamp).then_some(timestamp);
        if let Some(ts) = timestamp {
            cursor.last_indexed_timestamp = ts;
        }
        entry = Some(PendingEntry {
            relative_offset,
            position: position as u32,
            timestamp,
        });
        cursor.bytes_since_index = 0;
    }
    cursor.bytes_since_index += len;
    cursor.last_batch_relative = Some(relative_offset);
    entry
}

/// Moves what readers may see of `segment` back to `size` bytes and offsets
/// below `next_offset`; the offsets first, so that a reader does not look
/// for a batch past the size.
fn retract(segment: &Segment, size: u64, next_offset: u64, max_timestamp: i64) {
    segment.next_offset.store(next_offset, Ordering::Release);
    segment.size.store(size, Ordering::Release);
    segment
        .max_timestamp
        .store(max_timestamp, Ordering::Release);
}

/// Pushes an entry straight into a segment's indexes (recovery: no readers yet).
pub(crate) fn push_entry(segment: &Segment, entry: PendingEntry) {
    segment.index.push(entry.relative_offset, entry.position);
    if let Some(ts) = entry.timestamp {
        segment.time_index.push(ts, entry.relative_offset);
    }
}
