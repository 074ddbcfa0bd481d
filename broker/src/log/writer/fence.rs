//! After a failed `fdatasync` of the active segment: the log goes back to
//! the last synced position and refuses writes until a restart. Also the
//! read-only state itself (`Log::refuse_writes` is used by a failed seal
//! too) and the check every write makes first.
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
//! records the position (see [`checkpoint`](crate::log::checkpoint));
//! recovery cuts at a fence even when the cut failed. The log then refuses
//! writes until a restart. Under `fsync=always` nothing past that position
//! was acknowledged; under `interval`/`never` the appends acknowledged
//! since the last sync are dropped, as a power cut would drop them.
//!
//! The same happens when the background sync of a sealed segment fails
//! (see [`seal`](super::seal)): the log goes back into that segment, at its
//! last completed sync, and the next segment is emptied; the fence names
//! the sealed segment. A failed sync of the active segment while a sealed
//! one's sync runs waits for that first: if it failed too, the log goes
//! back into the sealed segment.
//!
//! ## Invariants
//!
//! - `SyncedPoint` is the writer's state (cursor, index lengths, tickets)
//!   where the last completed `fdatasync` ended; every completed sync and
//!   every roll replaces it.
//! - Once read-only, the log refuses appends, syncs (so a roll of a
//!   non-empty segment too) and checkpoints until a restart, and
//!   [`Log::close`] writes nothing, so the fence stays.
//! - A fence left by the last run is replaced by an ordinary checkpoint
//!   before the first append (which is refused while it cannot be): left in
//!   place, it would cut that append at the next start. (Recovery writes
//!   that checkpoint at open already; this is the retry when it failed.)
//!
//! ## Crash story
//!
//! The file is cut first, then the fence is written. Once the fence is on
//! disk, recovery cuts the active segment at it, unscanned, whatever the
//! page cache still holds past it. If only the cut was made, recovery scans
//! from the last checkpoint up to the cut. If neither could be made, an
//! error asks the operator to cut the file to that many bytes (or drop the
//! page cache, or reboot) before restarting.

use std::sync::atomic::Ordering;

use super::{Active, Cursor, Log, StaleCheckpoint};
use crate::log::checkpoint::Checkpoint;
use crate::log::error::{LogError, LogResult};
use crate::log::segment::Segment;

/// The writer's state where the last completed fdatasync ended, to go back
/// to when a later one fails.
#[derive(Debug, Clone, Copy)]
pub(super) struct SyncedPoint {
    cursor: Cursor,
    /// Entries of the active segment's offset and time indexes then.
    index_len: usize,
    time_index_len: usize,
    /// Appends with a ticket below this were synced.
    ticket: u64,
}

impl SyncedPoint {
    pub(super) fn of(active: &Active, ticket: u64) -> SyncedPoint {
        SyncedPoint {
            cursor: active.cursor,
            index_len: active.segment.index.0.len(),
            time_index_len: active.segment.time_index.0.len(),
            ticket,
        }
    }
}

impl Log {
    /// Turns the log read-only for `cause` (which completes "partition
    /// refuses writes since …").
    pub(super) fn refuse_writes(&mut self, cause: String) -> LogError {
        tracing::error!(dir = %self.dir.display(), %cause, "partition turns read-only");
        self.read_only = Some(cause.clone());
        *self.shared.read_only.write() = Some(cause.clone());
        LogError::ReadOnly { cause }
    }

    /// After a failed fdatasync of the active segment (see the module doc):
    /// read-only, back to the last synced position, file cut there, fence
    /// checkpoint written. If a sealed segment's background sync is
    /// unsettled, it is waited for first: when it failed too, the log goes
    /// back into that segment instead.
    pub(super) fn fsync_failed(&mut self, e: std::io::Error) -> LogError {
        let active_base = self.active.segment.base_offset;
        if let Err(sealed_failed) = self.settle_seal(true)
            && self.active.segment.base_offset != active_base
        {
            // The sealed segment's sync failed: the log went back into it.
            return sealed_failed;
        }
        let segment = self.active.segment.clone();
        let error = self.refuse_writes(format!(
            "an fsync failed (fdatasync of {}: {e})",
            segment.log_path.display()
        ));
        self.go_back_and_fence(self.synced);
        error
    }

    /// Takes the active segment back to `active.synced_pos`, where the
    /// writer's state was `synced`: readers, index entries and the cursor
    /// forget what followed, the file is cut there and a fence checkpoint
    /// records the position. The log is read-only already.
    pub(super) fn go_back_and_fence(&mut self, synced: SyncedPoint) {
        let segment = self.active.segment.clone();
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
        self.active.file_len = position;
        self.active.cursor = synced.cursor;
        self.synced = synced;
        self.durable_below = self.durable_below.min(synced.ticket);
        self.unsynced_since = None;
        let cut = segment.file().and_then(|file| file.set_len(position));
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
    }

    /// Refuses writes after a failure; replaces a fence or clean checkpoint
    /// left by the last run before the first append.
    pub(super) fn check_writable(&mut self) -> LogResult<()> {
        if let Some(cause) = &self.read_only {
            return Err(LogError::ReadOnly {
                cause: cause.clone(),
            });
        }
        if let Some(stale) = self.stale_checkpoint {
            self.try_write_checkpoint(false).map_err(|e| {
                let which = match stale {
                    StaleCheckpoint::Fence => "the fence checkpoint (left by a failed fsync)",
                    StaleCheckpoint::Clean => "the clean-shutdown checkpoint",
                };
                LogError::io(
                    format!(
                        "replacing {which} of {} before the first append",
                        self.dir.display()
                    ),
                    e,
                )
            })?;
        }
        Ok(())
    }
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
