//! The append path: steps 1 and 2 of the [writer](super)'s "Append, step
//! by step". [`Log::append`] checks a batch, answers a retry of an
//! idempotent batch with its original's offsets, rolls the segment if
//! needed, and copies the batch, restamped, into the staging buffer;
//! [`Log::flush_writes`] writes the staged group with one positioned write.
//!
//! ## Invariants
//!
//! - Offsets are assigned from the cursor, densely; a batch's bytes are
//!   copied and restamped (base offset, append time, CRC), never re-encoded.
//!   Append times never go back: each is the clock or the largest
//!   timestamp so far, whichever is later.
//! - Staged batches are neither on disk nor visible. Their index entries
//!   wait in `pending_entries` and reach the indexes only once the bytes
//!   they point at are written.
//! - The staged group is all or nothing: the cursor before its first batch
//!   (`staged_from`) and each touched producer's entry as it was before
//!   (`staged_producers`) are kept until its bytes are written, so a failed
//!   write puts both back.
//! - Staged bytes are written out once they pass `STAGE_LIMIT`, so one
//!   commit group may be written in several pieces (see
//!   [`commit`](super::commit) for what each append's answer then says).
//! - `index_entry` is shared with recovery, so that an index rebuilt from
//!   the log equals the one appends would have written.
//!
//! ## Crash story
//!
//! Staged batches live only in memory: a crash loses them, and none was
//! acknowledged. Written batches are in the page cache; under
//! `fsync=always` they are not acknowledged before the sync of step 3 (what
//! a power cut loses under each policy: see [`commit`](super::commit)). If
//! the write fails (e.g. `ENOSPC`), the file is cut back to where the
//! staged bytes began and the whole staged group fails (its tickets are
//! lost and its offsets reused); nothing that was acknowledged is touched.
//! If that cut fails too, the leftover bytes are harmless: readers stop at
//! the published size, the next write is positioned over them, and recovery
//! cuts them.

use std::time::Instant;

use pigeon_protocol::batch::{BatchHeader, RecordBatch, stamp};

use super::commit::Tracked;
use super::{AppendInfo, Cursor, Log};
use crate::io::write_all_at;
use crate::log::config::{FsyncPolicy, LogConfig};
use crate::log::error::{LogError, LogResult};
use crate::log::producers::Check;
use crate::log::segment::Segment;

/// Staged bytes are written out once they pass this size.
pub(super) const STAGE_LIMIT: usize = 4 * 1024 * 1024;

/// Index entries of staged batches, pushed once their bytes are written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingEntry {
    relative_offset: u32,
    position: u32,
    /// Present when the time index gets an entry too.
    timestamp: Option<i64>,
}

impl Log {
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

    /// Writes staged batches to the file (one positioned write).
    pub fn flush_writes(&mut self) -> LogResult<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let segment = self.active.segment.clone();
        let written = segment
            .file()
            .and_then(|file| write_all_at(file.as_ref(), &self.staged, self.active.write_pos));
        if let Err(e) = written {
            let error = LogError::io(format!("appending to {}", segment.log_path.display()), e);
            self.discard_staged(&error);
            return Err(error);
        }
        let group = self.staged.len() as u64;
        self.active.write_pos += group;
        // Before the sync that follows (fsync=always), which makes them
        // durable with the batches.
        self.write_zeros_ahead(group);
        self.staged.clear();
        self.staged_from = None;
        self.staged_producers.clear();
        for entry in self.pending_entries.drain(..) {
            segment.index.push(entry.relative_offset, entry.position);
            if let Some(ts) = entry.timestamp {
                segment.time_index.push(ts, entry.relative_offset);
            }
        }
        let now = Instant::now();
        self.unsynced_since.get_or_insert(now);
        self.idle_since = Some(now);
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
        // Zeros written ahead go too: the length is at most `write_pos` now.
        self.active.file_len = self.active.write_pos;
        if let Err(e) = segment
            .file()
            .and_then(|file| file.set_len(self.active.write_pos))
        {
            // Harmless for readers (they stop at the published size) and for
            // the next write (positioned at write_pos); recovery cuts it.
            tracing::warn!(segment = %segment.log_path.display(), error = %e, "could not cut a failed write off the segment");
        }
        self.lost
            .push((self.staged_first_ticket..self.next_ticket, error.clone()));
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

/// Pushes an entry straight into a segment's indexes (recovery: no readers yet).
pub(crate) fn push_entry(segment: &Segment, entry: PendingEntry) {
    segment.index.push(entry.relative_offset, entry.position);
    if let Some(ts) = entry.timestamp {
        segment.time_index.push(ts, entry.relative_offset);
    }
}
