//! Step 3 of the [writer](super)'s "Append, step by step" and what each
//! append's answer says: [`Log::commit`] does the fsync policy's work for
//! the appends since the last commit (`always`: [`Log::sync`], one
//! `fdatasync` for the whole group; `interval`: the write, and a sync once
//! the oldest unsynced write is older than the interval; `never`: the
//! write), publishes what it made visible, and settles each append's
//! ticket. This module also writes the recovery checkpoints.
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
//! ## Invariants
//!
//! - Readers see a batch only once it is as durable as the policy promises:
//!   under `fsync=always` after the `fdatasync` covering it, otherwise once
//!   it is written.
//! - A completed sync records the writer's state at the synced position
//!   (`synced`), which [`fence`](super::fence) goes back to if a later
//!   sync fails.
//! - A checkpoint is written only when everything written is synced
//!   (`synced_pos == write_pos`), after the producer snapshot: recovery
//!   relies on a snapshot at or after the checkpoint's offset. No
//!   checkpoint is written once the log is read-only.
//!
//! ## Crash story
//!
//! What a crash or power cut loses is what the policy says: under
//! `fsync=always` nothing acknowledged; under `interval`/`never` the
//! appends acknowledged since the last sync, whose torn tail recovery cuts.
//! Recovery scans from the last checkpoint, written every
//! `checkpoint_interval_bytes` and at each roll (under `fsync=never` only
//! at roll, or when the data is synced anyway); a failed checkpoint write
//! only costs a longer scan. A failed `fdatasync`: see
//! [`fence`](super::fence).
//!
//! ## Zeros ahead of the appends
//!
//! An append that makes the file longer makes its `fdatasync` write the
//! file's new size too: on ext4 without a journal, as here, a second
//! synchronous write (the inode's block) after the data and before the
//! disk's cache flush. A small commit pays that in full: 1 KiB appended +
//! `fdatasync` took 216 µs at the median where the same write into bytes
//! already written (as zeros) and synced took 149 µs (`cargo bench --bench
//! log -- zeros_ahead`; docs/benchmarks.md, "Zeros ahead of the appends"). So with `preallocate` set (off by
//! default: the active segment's file then ends with its last batch, as
//! tools and tests that damage a file's end expect) and under
//! `fsync=always`, after a commit smaller than [`ZEROS_AHEAD_BELOW`] by a
//! *busy* log (at least
//! [`BUSY_WRITES_PER_SEC`] such writes in a second, [`WriteRate`]: a
//! partition whose acks wait on its syncs back to back), the writer
//! writes zeros past the
//! end of the data ([`zeros_ahead_len`]: room for about 16 more such
//! commits, 16–256 KiB), unless room for the next one is there already;
//! the commit's own `fdatasync` makes them durable with its data. The
//! next commits write into those bytes, and their syncs carry no size.
//! `Active::file_len` bounds the file's length; readers never see the
//! zeros (they read up to the published size).
//!
//! What is on disk, and what recovery does:
//! - While the log runs, the active segment's file ends in up to 256 KiB
//!   of zeros after its last batch. A crash leaves them, with or without
//!   the batches written into them since the last sync: recovery scans
//!   the active segment's tail from the checkpoint as after any unclean
//!   stop, and cuts it where the batches end (a zero length field is no
//!   batch; see [`recovery`](crate::log::recovery) step 4). The scan stops
//!   at the first zeros, so it reads no more than it did, plus at most
//!   the zeros of one read.
//! - A roll and a clean close cut the zeros off ([`Log::cut_zeros_ahead`])
//!   and sync the cut before they seal the segment or write the clean
//!   checkpoint. So a sealed segment and a cleanly closed one end with
//!   their last batch, as before. A crash between the cut and its sync
//!   leaves the segment the active one, which recovery cuts as above.
//! - A failed write of the zeros changes nothing but the speed: the file
//!   is at most that long, the next commits grow it as they did, and the
//!   roll or close cuts it. A failed cut fails the roll or close (an I/O
//!   error; the next append retries the roll); a failed sync of it is a
//!   failed fsync ([`fence`](super::fence)). A fence or a failed write
//!   cuts the file at its position, zeros included.
//! - Under `fsync=interval` and `never` no zeros are written: their
//!   appends do not wait for syncs.
//!
//! The cost: one more write of the zeros per 16 small commits, and up to
//! 256 KiB of disk per busy partition while it runs. Only busy logs pay
//! it: written for every log, the zeros cost thousands of partitions
//! with a few commits a second each more than they saved (1,000
//! partitions took a third longer to fill, and a restart after `kill -9`
//! at 10,000 partitions took 2.5–3.1 s instead of 1.2–1.4 s, cutting the
//! zeros of every partition).
//!
//! ## Idle checkpoint
//!
//! A log that takes no write for `idle_checkpoint_ms` (default 5 s) while
//! everything written is synced and its last checkpoint is behind the end
//! gets a checkpoint at its synced end ([`Log::checkpoint_if_idle`], run by
//! the writer's timer on the [pool](crate::log::pool)). It is the same
//! checkpoint as any other (producer snapshot first, index entries
//! flushed, then the checkpoint), so the crash story above holds as it
//! is; what it changes is that a crash after the traffic of a partition
//! stopped finds its checkpoint at the end: recovery scans nothing and
//! keeps that checkpoint ([recovery](crate::log::recovery) step 6), where
//! it used to scan up to `checkpoint_interval_bytes` and write a new one.
//! Its cost is bounded: at most one per log per `idle_checkpoint_ms`, and
//! none while writes keep coming (nor when the log is read-only, a seal is
//! pending, or, under `fsync=never`, the tail is not synced: it adds no
//! sync). A failed one is logged and not retried before the next write.
//!
//! [`STAGE_LIMIT`]: super::append::STAGE_LIMIT

use std::time::{Duration, Instant};

use super::fence::SyncedPoint;
use super::{AppendInfo, Log};
use crate::io::{write_all_at, write_atomically};
use crate::log::checkpoint::Checkpoint;
use crate::log::config::FsyncPolicy;
use crate::log::error::{LogError, LogResult};
use crate::log::producers::SNAPSHOT_FILE;

/// Commits of fewer bytes than this get zeros written ahead of them (see
/// "Zeros ahead of the appends"); larger ones grow the file: their one
/// metadata write per sync is small next to their data.
pub(crate) const ZEROS_AHEAD_BELOW: u64 = 64 * 1024;

/// Small writes a second that make a log *busy*: only a busy log gets
/// zeros ahead of its appends (see "Zeros ahead of the appends").
pub(crate) const BUSY_WRITES_PER_SEC: u32 = 64;

/// Counts a log's small writes per second: busy from the
/// [`BUSY_WRITES_PER_SEC`]th write of a one-second window, and for the
/// whole next window if this one ended busy.
#[derive(Debug, Default)]
pub(crate) struct WriteRate {
    window_start: Option<Instant>,
    writes: u32,
    busy: bool,
}

impl WriteRate {
    /// Busy for the next hour, whatever the writes (tests that need zeros
    /// written ahead without racing the clock).
    #[cfg(test)]
    pub(crate) fn busy_for_an_hour() -> WriteRate {
        WriteRate {
            window_start: Some(Instant::now() + Duration::from_secs(3600)),
            writes: 0,
            busy: true,
        }
    }

    /// Counts a small write at `now`; returns whether the log is busy.
    pub(crate) fn note(&mut self, now: Instant) -> bool {
        let window = Duration::from_secs(1);
        match self.window_start {
            Some(start) if now.saturating_duration_since(start) < window => {}
            Some(start) => {
                let ended_busy = now.saturating_duration_since(start) < 2 * window
                    && self.writes >= BUSY_WRITES_PER_SEC;
                self.busy = ended_busy;
                self.window_start = Some(now);
                self.writes = 0;
            }
            None => self.window_start = Some(now),
        }
        self.writes = self.writes.saturating_add(1);
        self.busy |= self.writes >= BUSY_WRITES_PER_SEC;
        self.busy
    }
}

/// How far past the end of its data a commit of `group` bytes has zeros
/// written: room for about 16 more commits of its size, at least 16 KiB
/// and at most 256 KiB.
pub(crate) fn zeros_ahead_len(group: u64) -> u64 {
    (16 * group).clamp(16 * 1024, 256 * 1024)
}

/// A staged append, until [`Log::commit_tracked`] settles it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tracked {
    /// Where the batch goes (or, for a retry, where its original went).
    pub info: AppendInfo,
    /// Whose fate the append shares; `None` for a retry of a batch already
    /// committed (nothing new to settle).
    pub(super) ticket: Option<u64>,
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
    /// When the group's write ended and its sync began (the boundary of
    /// the `write` and `fsync` [stages](crate::log::stats::Stage)).
    pub written_at: Instant,
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

impl Log {
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
        // The write first, so that it is timed apart from the sync. A
        // failed write is kept in `lost` (settled below), as when the
        // policy's work writes; a read-only log has nothing staged.
        if self.read_only.is_none() {
            let _ = self.flush_writes();
        }
        let written_at = Instant::now();
        let error = self.commit_written().err();
        self.unsettled.clear();
        Committed {
            lost: std::mem::take(&mut self.lost),
            durable_below: self.durable_below,
            error,
            written_at,
        }
    }

    /// The policy's work for a commit.
    fn commit_written(&mut self) -> LogResult<()> {
        match self.config.fsync {
            FsyncPolicy::Always => self.sync(),
            FsyncPolicy::Interval(every) => self.flush_writes().and_then(|()| {
                // A sealed segment's background sync, if it finished.
                self.settle_seal(false)?;
                let due = self.unsynced_since.is_some_and(|t| t.elapsed() >= every);
                if due {
                    self.sync_active()
                } else {
                    self.checkpoint_if_due()
                }
            }),
            FsyncPolicy::Never => self
                .flush_writes()
                .and_then(|()| self.settle_seal(false))
                .and_then(|()| self.checkpoint_if_due()),
        }
    }

    /// When the writer's timer next has work: the interval policy's sync,
    /// or a look at a sealed segment's background sync
    /// ([`seal`](super::seal)); a [`commit`](Self::commit) then does it.
    pub fn sync_due_at(&self) -> Option<Instant> {
        let sync = match self.config.fsync {
            FsyncPolicy::Interval(every) => self.unsynced_since.map(|t| t + every),
            _ => None,
        };
        match (sync, self.seal_poll_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the idle checkpoint comes due: `idle_checkpoint_ms` after the
    /// last write, if everything written is synced (no sync is added for
    /// it, so under `fsync=never` only once a roll or sync made it so) and
    /// the last checkpoint is behind it; `None` otherwise.
    pub(crate) fn idle_checkpoint_at(&self) -> Option<Instant> {
        let a = &self.active;
        let behind = a.checkpoint_pos < a.synced_pos && a.synced_pos == a.write_pos;
        let idle_ms = self.config.idle_checkpoint_ms;
        if idle_ms == 0
            || !behind
            || !self.staged.is_empty()
            || self.read_only.is_some()
            || self.seal_pending()
        {
            return None;
        }
        self.idle_since
            .map(|at| at + Duration::from_millis(idle_ms))
    }

    /// Writes the idle checkpoint if it is due at `now` (see
    /// [`idle_checkpoint_at`](Self::idle_checkpoint_at)); returns whether
    /// it was written (or tried: a failure is logged, and not retried
    /// before the next write).
    pub fn checkpoint_if_idle(&mut self, now: Instant) -> bool {
        if self.idle_checkpoint_at().is_none_or(|at| at > now) {
            return false;
        }
        self.idle_since = None;
        self.write_checkpoint(false);
        true
    }

    /// When the writer's timer next has work: [`sync_due_at`] or the idle
    /// checkpoint, whichever comes first.
    ///
    /// [`sync_due_at`]: Self::sync_due_at
    pub fn timer_due_at(&self) -> Option<Instant> {
        match (self.sync_due_at(), self.idle_checkpoint_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Writes and fsyncs everything appended to the active segment; then
    /// publishes it. If the write of the staged batches fails, what was
    /// written before them is still synced and published, and the write's
    /// error returned. [`Log::sync`] also waits for a background seal.
    pub(crate) fn sync_active(&mut self) -> LogResult<()> {
        self.check_writable()?;
        let written = self.flush_writes();
        if self.active.synced_pos < self.active.write_pos {
            let started = Instant::now();
            let synced = self.active.segment.file().and_then(|f| f.sync_data());
            if let Err(e) = synced {
                return Err(self.fsync_failed(e));
            }
            self.shared.stats.synced(started.elapsed());
            self.active.synced_pos = self.active.write_pos;
        }
        self.synced = SyncedPoint::of(&self.active, self.next_ticket);
        self.durable_below = self.next_ticket;
        self.unsynced_since = None;
        self.publish();
        written?;
        self.checkpoint_if_due()
    }

    /// With `preallocate` and under `fsync=always`, after a write of `group`
    /// bytes smaller than [`ZEROS_AHEAD_BELOW`] by a busy log
    /// ([`WriteRate`]): unless the file
    /// already holds room for
    /// another such commit past `write_pos`, writes zeros from its end up
    /// to [`zeros_ahead_len`] past `write_pos` (not past the segment's
    /// size limit), for the commit's `fdatasync` to make durable with it.
    /// A failed write is logged and changes nothing else: the next commits
    /// then grow the file as before (see "Zeros ahead of the appends").
    pub(super) fn write_zeros_ahead(&mut self, group: u64) {
        if !self.config.preallocate
            || self.config.fsync != FsyncPolicy::Always
            || group == 0
            || group >= ZEROS_AHEAD_BELOW
        {
            return;
        }
        if !self.small_writes.note(Instant::now()) {
            return;
        }
        let a = &self.active;
        if a.file_len >= a.write_pos + group {
            return;
        }
        let start = a.file_len.max(a.write_pos);
        let end = (a.write_pos + zeros_ahead_len(group)).min(self.config.segment_bytes.max(start));
        if end <= start {
            return;
        }
        let segment = a.segment.clone();
        let zeros = [0u8; 16 * 1024];
        let written = segment.file().and_then(|file| {
            let mut pos = start;
            while pos < end {
                let len = (end - pos).min(zeros.len() as u64) as usize;
                write_all_at(file.as_ref(), &zeros[..len], pos)?;
                pos += len as u64;
            }
            Ok(())
        });
        // Either way the file is at most `end` long: a roll or a close cuts
        // it back to `write_pos`.
        self.active.file_len = end;
        if let Err(e) = written {
            tracing::debug!(segment = %segment.log_path.display(), error = %e, "could not write zeros ahead of the appends; they grow the file instead");
        }
    }

    /// Cuts the zeros written ahead off the active segment and syncs the
    /// cut (before the segment is sealed, and before a clean checkpoint
    /// says where it ends). A failed cut fails the caller; a failed sync is
    /// a failed fsync ([`fence`](super::fence)).
    pub(super) fn cut_zeros_ahead(&mut self) -> LogResult<()> {
        let a = &self.active;
        if a.file_len <= a.write_pos {
            return Ok(());
        }
        let (segment, end) = (a.segment.clone(), a.write_pos);
        segment
            .file()
            .and_then(|file| file.set_len(end))
            .map_err(|e| {
                LogError::io(
                    format!(
                        "cutting the zeros written ahead of the appends off {}",
                        segment.log_path.display()
                    ),
                    e,
                )
            })?;
        self.active.file_len = end;
        let synced = segment.file().and_then(|file| file.sync_data());
        synced.map_err(|e| self.fsync_failed(e))
    }

    /// Makes written batches visible to readers.
    pub(super) fn publish(&self) {
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
        if self.seal_pending() {
            // It would name the active segment and so trust the sealed
            // one, whose sync has not completed (see `seal`).
            return Ok(());
        }
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
    pub(super) fn try_write_checkpoint(&mut self, clean: bool) -> std::io::Result<()> {
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
        let checkpoint = self.checkpoint_here(clean);
        checkpoint.write(self.fs.as_ref(), &self.dir)?;
        self.active.checkpoint_pos = checkpoint.position;
        self.stale_checkpoint = None;
        Ok(())
    }

    /// The checkpoint that says the log is durable up to the synced end of
    /// the active segment.
    pub(crate) fn checkpoint_here(&self, clean: bool) -> Checkpoint {
        let a = &self.active;
        Checkpoint {
            clean,
            fence: false,
            segment_base: a.segment.base_offset,
            position: a.synced_pos,
            next_offset: a.cursor.next_offset,
            max_timestamp: a.cursor.max_timestamp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_is_busy_from_its_64th_small_write_in_a_second_and_for_the_next_second() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut rate = WriteRate::default();
        for n in 0..u64::from(BUSY_WRITES_PER_SEC) - 1 {
            assert!(!rate.note(ms(n)), "write {n}");
        }
        assert!(rate.note(ms(100)), "the 64th write in the window");
        // The next window starts busy, as the last one ended.
        assert!(rate.note(ms(1_100)));
        assert!(rate.note(ms(1_900)));
        // That window had 2 writes: the one after it starts idle.
        assert!(!rate.note(ms(2_200)));
        // A window that ended long ago says nothing.
        let mut rate = WriteRate::default();
        for n in 0..u64::from(BUSY_WRITES_PER_SEC) {
            rate.note(ms(n));
        }
        assert!(!rate.note(ms(10_000)), "busy ten seconds ago");
    }
}
