//! Step 2 of [recovery](super): opening the sealed segments.
//!
//! A sealed segment before the checkpoint's segment is *trusted*: it was
//! sealed and fsynced before the checkpoint was written. Its indexes are
//! used as they are after a bounded check (`Opener::check_trusted`: the
//! first and last entries of each index, and the batches after the last
//! offset entry, about one index interval). A sealed segment that is not
//! trusted (sealed after the checkpoint), or a trusted one whose indexes
//! are missing, not a whole number of entries, or fail the check, is
//! scanned whole and its indexes rebuilt (`Opener::rebuild_sealed`).
//!
//! ## Invariants
//!
//! - A sealed segment's end offset and largest timestamp come from
//!   CRC-checked batch headers (the batches after the last offset entry,
//!   or the whole scan of a rebuild), never from an index entry.
//! - A damaged batch inside a sealed segment is left in place and logged;
//!   reads that reach it report the damage, and the segment's end is
//!   unknown (its next segment's base is assumed). A read error fails the
//!   open.
//! - Every segment opened here is marked sealed: it takes no appends.
//!
//! ## Crash story
//!
//! The check only reads. A rebuild writes its indexes into `*.tmp` files,
//! syncs them, and only then renames them over the old ones and syncs the
//! directory: a rebuild cut short leaves temp files (removed at the next
//! open, which rebuilds again), never a partial index under the real name.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Opener, empty_cursor, scan_into};
use crate::io::{OpenMode, temp_path};
use crate::log::error::{LogError, LogResult};
use crate::log::index::{MappedIndex, OffsetIndex, TimeIndex};
use crate::log::segment::{BatchScanner, ScanStop, Segment};

impl Opener<'_> {
    /// Opens a sealed segment. `trusted`: it precedes the checkpoint, so its
    /// indexes are used as they are if they pass [`Opener::check_trusted`];
    /// otherwise (or if they fail) it is scanned and its indexes rebuilt.
    pub(super) fn sealed(
        &mut self,
        base: u64,
        next_base: u64,
        trusted: bool,
    ) -> LogResult<Segment> {
        // Only a possibly unsynced segment is ever given up.
        self.open_sealed(base, next_base, trusted, false)?
            .ok_or_else(|| {
                LogError::io(
                    format!("opening segment {base:020}"),
                    std::io::Error::other("a sealed segment was given up (a bug)"),
                )
            })
    }

    /// Opens the sealed segment just before the last one when the
    /// checkpoint does not cover it: it may have been sealed without its
    /// sync completing ([`crate::log::writer::seal`]). It is scanned whole;
    /// `None` if it lost its tail (torn, corrupt, or ending before
    /// `next_base`): the caller recovers it as the active segment. If it
    /// checks out, it is synced.
    pub(super) fn sealed_maybe_unsynced(
        &mut self,
        base: u64,
        next_base: u64,
    ) -> LogResult<Option<Segment>> {
        self.open_sealed(base, next_base, false, true)
    }

    fn open_sealed(
        &mut self,
        base: u64,
        next_base: u64,
        trusted: bool,
        maybe_unsynced: bool,
    ) -> LogResult<Option<Segment>> {
        let [log_path, _, _] = Segment::paths(self.dir, base);
        let log = self
            .fs
            .open(&log_path, OpenMode::ReadWrite)
            .map_err(self.io_error(format!("opening {}", log_path.display())))?;
        let size = log
            .len()
            .map_err(self.io_error(format!("reading the size of {}", log_path.display())))?;
        let checked = match trusted {
            true => self.check_trusted(base, &log_path, log.as_ref(), size)?,
            false => None,
        };
        let (checked, segment) = match checked {
            Some((index, time_index, end)) => (
                true,
                Segment::assemble(
                    base,
                    log_path,
                    log,
                    index,
                    time_index,
                    size,
                    end.next_offset,
                    end.max_timestamp,
                ),
            ),
            None => {
                if trusted {
                    tracing::warn!(segment = %log_path.display(), "index files missing or damaged; rebuilding them");
                }
                // The rebuild's scan replays the producer state too.
                let rebuilt =
                    self.rebuild_sealed(base, next_base, log_path, log, size, maybe_unsynced)?;
                let Some(segment) = rebuilt else {
                    return Ok(None);
                };
                (false, segment)
            }
        };
        segment.sealed.store(true, Ordering::Release);
        self.max_timestamp = self.max_timestamp.max(segment.max_timestamp());
        if checked && self.needs_producer_walk(&segment) {
            self.walk_producers(&segment, 0, size)?;
        }
        // Synced (trusted, or synced by the rebuild): its file and maps go
        // to the caches of open segments now, not when the whole log is
        // open, so that opening a partition of many segments holds no
        // more of them open than serving it does.
        segment.release(self.fs_handle.clone(), &self.config.open_segments);
        Ok(Some(segment))
    }

    /// The indexes of a trusted sealed segment and what its end holds, if
    /// they check out; `None` when they must be rebuilt. Bounded work: the
    /// first and last entries of each index, and the batches after the
    /// last offset entry (about one index interval), whose headers give the
    /// segment's end offset and largest timestamp (CRC-checked, so never a
    /// zero from a damaged index). Every other entry is checked where a
    /// read uses it (see [`super::reader`]).
    fn check_trusted(
        &mut self,
        base: u64,
        log_path: &Path,
        log: &dyn crate::io::StorageFile,
        size: u64,
    ) -> LogResult<Option<(OffsetIndex, TimeIndex, SegmentEnd)>> {
        let [_, index_path, time_path] = Segment::paths(self.dir, base);
        let (Ok(index), Ok(time)) = (
            MappedIndex::open_sealed(self.fs, &index_path),
            MappedIndex::open_sealed(self.fs, &time_path),
        ) else {
            return Ok(None);
        };
        let (index, time_index) = (OffsetIndex(index), TimeIndex(time));
        let Some((relative, position)) = offset_index_start(&index, size) else {
            return Ok(None);
        };
        self.report.checked_tail_bytes += size - u64::from(position);
        let mut scanner =
            BatchScanner::new(log, u64::from(position), size, base + u64::from(relative));
        let mut end = SegmentEnd {
            next_offset: base + u64::from(relative),
            max_timestamp: i64::MIN,
        };
        loop {
            match scanner.next_batch() {
                Ok(Some(batch)) => {
                    end.next_offset = batch.header.next_offset();
                    end.max_timestamp = end.max_timestamp.max(batch.header.max_timestamp);
                }
                Ok(None) => break,
                Err(ScanStop::Damaged { position, reason }) => {
                    tracing::warn!(
                        segment = %log_path.display(), position, reason = %reason,
                        "the end of a sealed segment does not match its index"
                    );
                    return Ok(None);
                }
                Err(stop) => {
                    return Err(stop.into_error(log_path, "checking the end of a sealed segment"));
                }
            }
        }
        if !time_index_fits(&time_index, base, &end) {
            return Ok(None);
        }
        Ok(Some((index, time_index, end)))
    }

    /// Scans a sealed segment and writes fresh indexes for it. They are
    /// built in `*.tmp` files, synced, and only then renamed over the old
    /// ones: a rebuild cut short leaves temp files (removed at the next
    /// open, which rebuilds again), never a partial index under the real
    /// name.
    ///
    /// `maybe_unsynced`: the segment may have been sealed without its sync
    /// completing; if it lost its tail (damage, or it ends before
    /// `next_base`), nothing is renamed and `None` is returned. Otherwise
    /// it is synced before it is trusted.
    fn rebuild_sealed(
        &mut self,
        base: u64,
        next_base: u64,
        log_path: std::path::PathBuf,
        log: Arc<dyn crate::io::StorageFile>,
        size: u64,
        maybe_unsynced: bool,
    ) -> LogResult<Option<Segment>> {
        let capacity = self
            .config
            .index_capacity()
            .max((size / u64::from(self.config.index_interval_bytes)) as usize + 4);
        let [_, index_path, time_path] = Segment::paths(self.dir, base);
        let (index_tmp, time_tmp) = (temp_path(&index_path), temp_path(&time_path));
        let shown = log_path.display().to_string();
        let io = |e| LogError::io(format!("rebuilding the indexes of {shown}"), e);
        let index = OffsetIndex(MappedIndex::create(self.fs, &index_tmp, capacity).map_err(io)?);
        let time_index = TimeIndex(MappedIndex::create(self.fs, &time_tmp, capacity).map_err(io)?);
        let mut segment = Segment::assemble(
            base,
            log_path,
            log,
            index,
            time_index,
            size,
            next_base,
            i64::MIN,
        );
        self.report.rebuilt_indexes += 1;
        self.report.scanned_bytes += size;
        let mut cursor = empty_cursor(base, i64::MIN);
        let end = scan_into(
            &segment,
            self.config,
            &mut cursor,
            0,
            size,
            &mut self.producers,
            self.producers_from,
        );
        if maybe_unsynced && lost_tail(&segment, &end, cursor.next_offset, next_base) {
            drop(segment);
            self.remove_temp_indexes(&[&index_tmp, &time_tmp]);
            return Ok(None);
        }
        match end {
            // The whole segment checked out: its end is known.
            Ok(_) => segment
                .next_offset
                .store(cursor.next_offset, Ordering::Release),
            Err(ScanStop::Damaged { position, reason }) => {
                tracing::error!(
                    segment = %segment.log_path.display(), position, reason = %reason,
                    "corrupt batch inside a sealed segment; it is kept and reads that reach it report the damage"
                );
            }
            Err(stop) => return Err(stop.into_error(&segment.log_path, "rebuilding its indexes")),
        }
        if maybe_unsynced {
            // Its sync may not have completed: it is trusted from now on.
            segment
                .file()
                .and_then(|file| file.sync_data())
                .map_err(|e| LogError::io(format!("syncing {shown}"), e))?;
        }
        segment.push_final_time_entry(cursor.max_timestamp, cursor.last_batch_relative);
        // Sealed under their temp names, then renamed: from then on they
        // are known by the real names (which mapping them again uses once
        // the cache has unmapped them).
        segment.seal_indexes(self.fs)?;
        self.fs
            .rename(&index_tmp, &index_path)
            .and_then(|()| self.fs.rename(&time_tmp, &time_path))
            .and_then(|()| self.fs.sync_dir(self.dir))
            .map_err(io)?;
        segment.index.0.renamed_to(index_path);
        segment.time_index.0.renamed_to(time_path);
        segment
            .max_timestamp
            .store(cursor.max_timestamp, Ordering::Release);
        Ok(Some(segment))
    }
}

impl Opener<'_> {
    /// Removes the temp files of a rebuild given up (the next start would
    /// remove them too).
    fn remove_temp_indexes(&self, paths: &[&Path]) {
        for tmp in paths {
            if let Err(e) = self.fs.remove_file(tmp) {
                tracing::warn!(path = %tmp.display(), error = %e, "could not remove a temp index (the next start removes it)");
            }
        }
    }
}

/// Whether a scan of a sealed `segment` that ended with `end` (the last
/// good batch's end, or where it stopped) at offset `next_offset` shows a
/// lost tail: damage, or an end before `next_base`. Logged if so.
fn lost_tail(
    segment: &Segment,
    end: &Result<u64, ScanStop>,
    next_offset: u64,
    next_base: u64,
) -> bool {
    let position = match end {
        Ok(end) if next_offset < next_base => *end,
        Err(ScanStop::Damaged { position, .. }) => *position,
        _ => return false,
    };
    tracing::warn!(
        segment = %segment.log_path.display(), position, ends_at = next_offset, next_base,
        "a segment sealed after the last checkpoint lost its unsynced tail; it is recovered as the end of the log"
    );
    true
}

/// The end of a sealed segment, read from its last batches' headers.
#[derive(Debug, Clone, Copy)]
struct SegmentEnd {
    /// Offset after its last batch.
    next_offset: u64,
    /// Largest timestamp of its batches (`i64::MIN` when empty).
    max_timestamp: i64,
}

/// Where the check of a sealed segment's end starts: its offset index's
/// last entry (`(0, 0)`, the segment start, when there is none), if the
/// first and last entries are non-zero (no entry is ever at position 0),
/// increase, and the last points inside the segment; `None` if not.
fn offset_index_start(index: &OffsetIndex, size: u64) -> Option<(u32, u32)> {
    let Some(last_at) = index.0.len().checked_sub(1) else {
        return Some((0, 0));
    };
    let (first, last) = (index.entry(0), index.entry(last_at));
    let non_zero = |(relative, position): (u32, u32)| relative > 0 && position > 0;
    let increasing = last_at == 0 || (first.0 < last.0 && first.1 < last.1);
    (non_zero(first) && non_zero(last) && increasing && u64::from(last.1) < size).then_some(last)
}

/// Whether a sealed segment's time index fits its end: present unless the
/// segment is empty, first and last entries non-zero and increasing, the
/// last one at most the segment's largest timestamp and at most its last
/// batch's offset.
fn time_index_fits(time: &TimeIndex, base: u64, end: &SegmentEnd) -> bool {
    let Some(last_at) = time.0.len().checked_sub(1) else {
        return end.next_offset == base;
    };
    let Some(last_relative) = end.next_offset.checked_sub(base + 1) else {
        return false;
    };
    let (first, last) = (time.entry(0), time.entry(last_at));
    let increasing = last_at == 0 || (first.0 < last.0 && first.1 < last.1);
    first != (0, 0)
        && last != (0, 0)
        && increasing
        && last.0 <= end.max_timestamp
        && u64::from(last.1) <= last_relative
}
