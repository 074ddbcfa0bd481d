//! The segments' life on the writer side: when the active segment rolls
//! ([`Log::roll`]), sealing it, deleting whole sealed segments
//! ([`Log::enforce_retention`], [`Log::trim_before`]), and the clean
//! [`Log::close`].
//!
//! ## Roll
//!
//! Under `fsync=always`: flush and sync the active segment, cut off the
//! zeros written ahead of its appends and sync the cut (see
//! [`commit`](super::commit), "Zeros ahead of the appends"), seal its
//! indexes (mark the segment sealed so it takes no more appends, final
//! time entry, flush, truncate to exact size, sync), create the next
//! segment's three files, sync the directory, then write a checkpoint
//! pointing at the new segment. A crash anywhere in between leaves either
//! the old checkpoint (recovery scans the old segment's tail and the new,
//! empty segment) or the new one. A failed seal turns the log read-only
//! (appending over an index file cut to size would write through the map
//! past its end); a failed create, or a failed reopen of the index files
//! to seal them (nothing is cut before both are open), leaves the old
//! segment sealed, and the next append retries the roll. Once the new
//! segment takes appends, the old one is released to the cache of open
//! files ([`crate::log::open_segments`]): its `.log` may then be closed
//! when cold.
//!
//! Under `fsync=never` and `interval`: write the staged batches, mark the
//! segment sealed (final time entry), create the next segment, then hand
//! the sealed segment to a background job that syncs it, seals its
//! indexes, releases it to the cache of open files, syncs the directory
//! and writes the checkpoint pointing at the new segment. Nothing on the append path waits for the disk. Each step's crash story, and what a
//! failed background sync does, is in [`super::seal`]. A roll while a
//! seal still runs waits for it first, so at most one sealed segment is
//! ever unsynced.
//!
//! ## Deleting segments
//!
//! Only whole sealed segments are deleted, oldest first; the active one
//! never is, nor one whose background seal is still running. The list readers share is replaced first, then the segment's
//! files are removed (`.log` first) and the directory synced. A crash in
//! between leaves index files whose `.log` is gone, which recovery removes,
//! or the whole segment, which the next start opens like any other.
//!
//! ## Close
//!
//! Wait for a background seal (and write its checkpoint), write and sync
//! everything appended, cut off the zeros written ahead (and sync the
//! cut), cut the active indexes to their entries, and write
//! a clean checkpoint, so that the next open scans
//! nothing. A crash before the clean checkpoint leaves the last one, and
//! recovery scans from it. A read-only log closes without writing
//! anything: its fence stays. Nor does a log opened after a clean stop and
//! never written since: the clean checkpoint it kept
//! ([`StaleCheckpoint::Clean`]) is still true (its active indexes keep
//! the room the open gave them; a clean open reads their entries up to the
//! first empty one).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::fence::SyncedPoint;
use super::{Active, Cursor, Log, StaleCheckpoint};
use crate::log::checkpoint::Checkpoint;
use crate::log::config::FsyncPolicy;
use crate::log::error::{LogError, LogResult};
use crate::log::retention::{SealedInfo, expired_prefix};
use crate::log::segment::Segment;

impl Log {
    pub(super) fn should_roll(&self, len: u64, count: u32) -> bool {
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
    /// have the same base offset). Under `fsync=always` the sealed segment
    /// is synced here; otherwise in the background ([`super::seal`]).
    pub fn roll(&mut self) -> LogResult<()> {
        if self.active.write_pos == 0 && self.staged.is_empty() {
            return Ok(());
        }
        // At most one sealed segment whose sync has not completed.
        self.settle_seal(true)?;
        // An owed checkpoint is superseded by this roll's.
        self.pending_seal = None;
        let background = self.config.fsync != FsyncPolicy::Always;
        if background {
            self.check_writable()?;
            self.flush_writes()?;
        } else {
            self.sync()?;
        }
        // Sealed at the end of its data, whatever the policy.
        self.cut_zeros_ahead()?;
        let old = self.active.segment.clone();
        self.seal(&old, !background)?;
        let base = self.active.cursor.next_offset;
        // Under a background seal the job syncs the directory.
        let segment = self.create_segment(base, !background)?;
        let before = (self.active.synced_pos, self.synced);
        let checkpoint = Checkpoint {
            clean: false,
            fence: false,
            segment_base: base,
            position: 0,
            next_offset: base,
            max_timestamp: self.active.cursor.max_timestamp,
        };
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
            file_len: 0,
            synced_pos: 0,
            checkpoint_pos: 0,
            cursor,
        };
        self.synced = SyncedPoint::of(&self.active, self.next_ticket);
        if !background {
            // Synced and sealed for good: its file may be closed when cold.
            old.release(self.fs.clone(), &self.config.open_segments);
        }
        if background {
            // The sealed segment's unsynced bytes are the seal's business.
            self.unsynced_since = None;
            self.producers
                .expire(self.clock.now_ms(), self.config.producer_expiry_ms);
            let snapshot = self.producers.encode(base);
            self.start_seal(old, before.0, before.1, checkpoint, snapshot);
        } else {
            self.write_checkpoint(false);
        }
        self.enforce_retention()?;
        Ok(())
    }

    /// Creates segment `base`, syncs the directory if `sync_dir`, and adds
    /// it to the list readers share. On failure nothing of it is left
    /// behind.
    fn create_segment(&mut self, base: u64, sync_dir: bool) -> LogResult<Arc<Segment>> {
        let capacity = self.config.index_capacity();
        let created =
            Segment::create(self.fs.as_ref(), &self.dir, base, capacity).and_then(|segment| {
                match sync_dir {
                    true => self.fs.sync_dir(&self.dir).map(|()| segment),
                    false => Ok(segment),
                }
            });
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
        let mut segments = self.shared.segments.write();
        let mut list = Vec::clone(&segments);
        list.push(segment.clone());
        *segments = Arc::new(list);
        Ok(segment)
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
    /// `indexes`: also seal the index files now (`fsync=always`); a
    /// background seal does that after syncing the log bytes.
    ///
    /// The index files are reopened first (they are not held open, see
    /// [`crate::log::index`]); if that fails (say `EMFILE`), nothing was
    /// changed: the error is the roll's, the segment stays sealed and the
    /// next append retries the roll, which seals the indexes not sealed
    /// yet.
    fn seal(&mut self, segment: &Segment, indexes: bool) -> LogResult<()> {
        if !segment.sealed.load(Ordering::Acquire) {
            segment.sealed.store(true, Ordering::Release);
            let cursor = &self.active.cursor;
            segment.push_final_time_entry(cursor.max_timestamp, cursor.last_batch_relative);
        }
        if !indexes {
            return Ok(());
        }
        let files = segment.open_indexes_to_seal(self.fs.as_ref())?;
        segment
            .seal_indexes_with(files)
            .map_err(|e| self.refuse_writes(format!("sealing a segment failed ({e})")))
    }

    /// Changes the retention limits (`None`: no limit of that kind); the
    /// next [`enforce_retention`](Self::enforce_retention) applies them.
    pub fn set_retention(&mut self, retention_ms: Option<u64>, retention_bytes: Option<u64>) {
        self.config.retention_ms = retention_ms;
        self.config.retention_bytes = retention_bytes;
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
        // A segment being sealed stays until its sync has completed.
        let count = match self.sealing_base() {
            Some(base) => count.min(snapshot.partition_point(|s| s.base_offset < base)),
            None => count,
        };
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
        // A background seal first: its failure is the close's.
        self.settle_seal(true)?;
        if self.read_only.is_some() {
            return Ok(());
        }
        if self.stale_checkpoint == Some(StaleCheckpoint::Clean) && self.staged.is_empty() {
            // Opened after a clean stop and never written since (the first
            // write replaces that checkpoint): it is still true.
            return Ok(());
        }
        self.sync()?;
        self.cut_zeros_ahead()?;
        self.active.segment.seal_indexes(self.fs.as_ref())?;
        self.write_checkpoint(true);
        Ok(())
    }
}
